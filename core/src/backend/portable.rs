//! Scalar backend: plain Rust on every target, Cortex-M included, and the reference every
//! SIMD backend must match bit for bit.

use super::{Kernels, check_lengths};
use crate::ntt::NttTable;
use crate::zq::{Modulus, ShoupConstant, reduce_once};

/// One coefficient of [`Kernels::square_tensor_montgomery`]: (a, b) -> (a^2, 2 a b, b^2) 2^-32
/// mod q, written over a, cross and b.
#[inline(always)]
pub(crate) fn square_tensor_one(a: &mut u32, cross: &mut u32, b: &mut u32, modulus: &Modulus) {
    let product = modulus.mul_montgomery(*a, *b);
    *cross = modulus.add(product, product);
    *a = modulus.mul_montgomery(*a, *a);
    *b = modulus.mul_montgomery(*b, *b);
}

/// One coefficient of [`Kernels::lift_centered`]: x > half stands for x - from, which is
/// x + (to - from) mod `to` (|x - from| < 2^29 < to). Branch-free.
#[inline(always)]
pub(crate) fn lift_one(x: u32, half: u32, shift: u32) -> u32 {
    let above = half.wrapping_sub(x) >> 31;
    x.wrapping_add(shift & 0u32.wrapping_sub(above))
}

/// One coefficient of [`Kernels::scaled_add`].
#[inline(always)]
pub(crate) fn scaled_add_one(
    a: u32,
    x: u32,
    w: ShoupConstant,
    offset: u32,
    k: u32,
    subtract: bool,
    modulus: &Modulus,
) -> u32 {
    let sum = modulus.add(modulus.add(modulus.mul_shoup(x, w), offset), k);
    if subtract {
        modulus.sub(sum, a)
    } else {
        modulus.add(sum, a)
    }
}

/// The portable scalar backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Portable;

impl Kernels for Portable {
    fn forward_ntt<S: AsRef<[u32]>>(&self, a: &mut [u32], table: &NttTable<S>) {
        check_lengths(a.len(), table.n());
        let m = table.modulus();
        let q = m.value();
        let two_q = 2 * q;
        let (values, quotients) = table.forward_twiddles();
        let mut groups = 1;
        let mut distance = a.len() / 2;
        while distance >= 1 {
            for (group, pair) in a.chunks_exact_mut(2 * distance).enumerate() {
                let w = ShoupConstant {
                    value: values[groups + group],
                    quotient: quotients[groups + group],
                };
                let (xs, ys) = pair.split_at_mut(distance);
                for (x, y) in xs.iter_mut().zip(ys) {
                    // Harvey: x, y in [0, 4q) -> x', y' in [0, 4q).
                    let xr = reduce_once(*x, two_q);
                    let t = m.mul_shoup_lazy(*y, w);
                    *x = xr + t;
                    *y = xr + two_q - t;
                }
            }
            groups *= 2;
            distance /= 2;
        }
        for x in a.iter_mut() {
            *x = m.reduce_once(reduce_once(*x, two_q));
        }
    }

    fn inverse_ntt_times<S: AsRef<[u32]>>(&self, a: &mut [u32], table: &NttTable<S>, factor: u32) {
        check_lengths(a.len(), table.n());
        let m = table.modulus();
        let two_q = 2 * m.value();
        let (values, quotients) = table.inverse_twiddles();
        let n = a.len();
        let mut groups = n / 2;
        let mut distance = 1;
        while groups > 1 {
            for (group, pair) in a.chunks_exact_mut(2 * distance).enumerate() {
                let w = ShoupConstant {
                    value: values[groups + group],
                    quotient: quotients[groups + group],
                };
                let (xs, ys) = pair.split_at_mut(distance);
                for (x, y) in xs.iter_mut().zip(ys) {
                    // Gentleman-Sande: x, y in [0, 2q) -> x', y' in [0, 2q).
                    let (u, v) = (*x, *y);
                    *x = reduce_once(u + v, two_q);
                    *y = m.mul_shoup_lazy(u + two_q - v, w);
                }
            }
            groups /= 2;
            distance *= 2;
        }
        // Last stage with the 1/n scaling (and the factor) folded in.
        let (xs, ys) = a.split_at_mut(n / 2);
        let (n_inv, n_inv_twiddle) = table.last_inverse_multipliers(factor);
        for (x, y) in xs.iter_mut().zip(ys) {
            let (u, v) = (*x, *y);
            *x = m.mul_shoup(u + v, n_inv);
            *y = m.mul_shoup(u + two_q - v, n_inv_twiddle);
        }
    }

    fn mul_assign(&self, a: &mut [u32], b: &[u32], modulus: &Modulus) {
        check_lengths(a.len(), b.len());
        a.iter_mut()
            .zip(b)
            .for_each(|(x, &y)| *x = modulus.mul(*x, y));
    }

    fn lift_centered(&self, out: &mut [u32], input: &[u32], from: &Modulus, to: &Modulus) {
        check_lengths(out.len(), input.len());
        let (half, shift) = (from.value() / 2, to.value().wrapping_sub(from.value()));
        for (o, &x) in out.iter_mut().zip(input) {
            *o = lift_one(x, half, shift);
        }
    }

    fn square_tensor_montgomery(
        &self,
        x0: &mut [u32],
        cross: &mut [u32],
        x1: &mut [u32],
        modulus: &Modulus,
    ) {
        check_lengths(x0.len(), cross.len());
        check_lengths(x0.len(), x1.len());
        for ((a, c), b) in x0.iter_mut().zip(cross.iter_mut()).zip(x1.iter_mut()) {
            square_tensor_one(a, c, b, modulus);
        }
    }

    fn mul_acc(&self, acc: &mut [u32], a: &[u32], b: &[u32], modulus: &Modulus) {
        check_lengths(acc.len(), a.len());
        check_lengths(acc.len(), b.len());
        for ((s, &x), &y) in acc.iter_mut().zip(a).zip(b) {
            *s = modulus.add(*s, modulus.mul(x, y));
        }
    }

    fn mul_scalar_assign(&self, a: &mut [u32], w: ShoupConstant, modulus: &Modulus) {
        a.iter_mut().for_each(|x| *x = modulus.mul_shoup(*x, w));
    }

    fn mul_scalar(&self, out: &mut [u32], a: &[u32], w: ShoupConstant, modulus: &Modulus) {
        check_lengths(out.len(), a.len());
        for (o, &x) in out.iter_mut().zip(a) {
            *o = modulus.mul_shoup(x, w);
        }
    }

    fn scaled_add(
        &self,
        a: &mut [u32],
        x: &[u32],
        w: ShoupConstant,
        offsets: &[u32],
        k: u32,
        subtract: bool,
        modulus: &Modulus,
    ) {
        check_lengths(a.len(), x.len());
        check_lengths(a.len(), offsets.len());
        for ((a, &x), &o) in a.iter_mut().zip(x).zip(offsets) {
            *a = scaled_add_one(*a, x, w, o, k, subtract, modulus);
        }
    }

    fn dot_montgomery(&self, out: &mut [u32], rows: &[&[u32]], weights: &[u32], modulus: &Modulus) {
        super::dot::dot_montgomery(out, rows, weights, modulus)
    }

    fn dot_montgomery_outputs(
        &self,
        outs: &mut [&mut [u32]],
        rows: &[&[u32]],
        own: &[&[u32]],
        weights: &[&[u32]],
        moduli: &[Modulus],
    ) {
        super::dot::dot_montgomery_outputs(outs, rows, own, weights, moduli)
    }

    fn wrap_counts(&self, v: &mut [u32], rows: &[&[u32]], reciprocals: &[f64]) {
        super::dot::wrap_counts(v, rows, reciprocals)
    }

    fn fraction_sums(
        &self,
        low: &mut [u32],
        high: &mut [u32],
        rows: &[&[u32]],
        fractions: &[[u32; super::dot::FRACTION_LIMBS]],
    ) {
        super::dot::fraction_sums(low, high, rows, fractions)
    }

    fn dot_pointwise_montgomery(
        &self,
        out: &mut [u32],
        a: &[&[u32]],
        b: &[&[u32]],
        modulus: &Modulus,
    ) {
        super::dot::dot_pointwise_montgomery(out, a, b, modulus)
    }

    fn weighted_sum(&self, acc: &mut [i64], rows: &[&[u32]], weights: &[i32]) {
        super::linear::weighted_sum(acc, rows, weights)
    }

    fn pair_weighted_sum(
        &self,
        accs: &mut [&mut [u32]],
        pairs: super::PairRows<'_>,
        weights: &[u32],
    ) {
        let outputs = accs.len();
        for (o, acc) in accs.iter_mut().enumerate() {
            super::linear::pair_weighted_sum(acc, pairs, weights, outputs, o)
        }
    }

    fn pack_pairs(&self, lo: &mut [u32], hi: &mut [u32], a: &[u32], b: &[u32]) {
        super::linear::pack_pairs(lo, hi, a, b)
    }

    fn join_halves(&self, out: &mut [u32], low: &[u32], high: &[u32], modulus: &Modulus) {
        super::linear::join_halves(out, low, high, modulus)
    }
}

/// Writes the residues of `bits` bits packed in `limb` (groups of eight residues in `bits`
/// bytes; `out` holds 8 residues per group) to `out`; whether every one is below q. Each
/// residue is read from a little-endian 8-byte window at its first byte, with no branch on
/// the data: the loop the parser spends its time in, compiled for each common size.
pub(crate) fn unpack_groups<const BITS: usize>(limb: &[u8], q: &Modulus, out: &mut [u32]) -> bool {
    const { assert!(BITS <= 32, "windows of 8 bytes") };
    let mask = (1u64 << BITS) - 1;
    let mut at_least_q = 0u32;
    let mut group = |bytes: &[u8], out: &mut [u32]| {
        // One length check for the eight windows.
        let bytes = &bytes[..BITS + 8];
        for (i, x) in out.iter_mut().enumerate() {
            let bit = i * BITS;
            let window: [u8; 8] = bytes[bit / 8..bit / 8 + 8].try_into().expect("8 bytes");
            *x = ((u64::from_le_bytes(window) >> (bit % 8)) & mask) as u32;
            at_least_q |= (*x >= q.value()) as u32;
        }
    };
    // Windows may reach 8 bytes past a group's end: the last group reads a padded copy.
    let mut outs = out.chunks_exact_mut(8);
    let mut groups = limb.chunks_exact(BITS);
    for (bytes, out) in limb.windows(BITS + 8).step_by(BITS).zip(&mut outs) {
        group(bytes, out);
        groups.next();
    }
    for (bytes, out) in groups.zip(outs) {
        let mut padded = [0u8; 40];
        padded[..BITS].copy_from_slice(bytes);
        group(&padded, out);
    }
    at_least_q == 0
}
