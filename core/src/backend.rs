//! The kernels all time goes into, behind one small trait, and the one place that picks
//! an implementation.
//!
//! - [`Portable`]: scalar Rust, every target (the reference the others are tested against);
//! - `Avx2`: x86-64 AVX2 intrinsics, selected at run time (works without std);
//! - `Avx512`: x86-64 AVX-512F/BW intrinsics on sixteen lanes, selected at run time where
//!   present (the same generic kernels as AVX2 and NEON, see `vector`);
//! - `Neon`: aarch64 NEON intrinsics, always present on aarch64 (selected at compile time).
//!
//! All backends return identical words for identical inputs: every result is fully
//! reduced into [0, q), and the transform is the canonical one of [`crate::ntt`].

use core::fmt;

use crate::Error;
use crate::ntt::NttTable;
use crate::zq::{Modulus, ShoupConstant};

pub(crate) mod dot;
pub(crate) mod linear;
mod pair_rows;
mod portable;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod vector;

pub use pair_rows::PairRows;
pub use portable::Portable;
pub(crate) use portable::scaled_add_one;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use portable::{lift_one, square_tensor_one};
#[cfg(target_arch = "x86_64")]
pub use vector::avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub use vector::avx512::Avx512;
#[cfg(target_arch = "aarch64")]
pub use vector::neon::Neon;

/// Transform and pointwise kernels over residues mod one prime.
///
/// Inputs are residues in [0, q) and so are outputs. Slices passed together must have equal
/// lengths, and transform slices must have the table's length n; a mismatch is a bug in the
/// caller and panics.
pub trait Kernels {
    /// Forward negacyclic NTT in place; output in bit-reversed evaluation order.
    fn forward_ntt<S: AsRef<[u32]>>(&self, a: &mut [u32], table: &NttTable<S>);
    /// out = the forward NTT of `input`: [`Kernels::forward_ntt`] out of place, without the
    /// copy before it.
    fn forward_ntt_from<S: AsRef<[u32]>>(
        &self,
        out: &mut [u32],
        input: &[u32],
        table: &NttTable<S>,
    ) {
        check_lengths(out.len(), input.len());
        out.copy_from_slice(input);
        self.forward_ntt(out, table)
    }
    /// Inverse of [`Kernels::forward_ntt`], in place.
    fn inverse_ntt<S: AsRef<[u32]>>(&self, a: &mut [u32], table: &NttTable<S>) {
        self.inverse_ntt_times(a, table, 1)
    }
    /// [`Kernels::inverse_ntt`] times `factor` mod q (below q), at no cost: the factor joins
    /// the 1/n that the last stage multiplies by anyway.
    fn inverse_ntt_times<S: AsRef<[u32]>>(&self, a: &mut [u32], table: &NttTable<S>, factor: u32);
    /// a[i] = a[i] * b[i] mod q.
    fn mul_assign(&self, a: &mut [u32], b: &[u32], modulus: &Modulus);
    /// out[i] = input[i] read as a centered residue mod `from` (above from / 2 stands for
    /// input[i] - from), written mod `to`; both moduli between 2^29 and 2^30.
    fn lift_centered(&self, out: &mut [u32], input: &[u32], from: &Modulus, to: &Modulus);
    /// The tensor of (x0, x1) with itself in Montgomery form: x0[i] = x0[i]^2 2^-32,
    /// cross[i] = 2 x0[i] x1[i] 2^-32 and x1[i] = x1[i]^2 2^-32 mod q, in one pass (a square's
    /// products, limb by limb in NTT form; its scaling absorbs the 2^-32).
    fn square_tensor_montgomery(
        &self,
        x0: &mut [u32],
        cross: &mut [u32],
        x1: &mut [u32],
        modulus: &Modulus,
    );
    /// acc[i] = acc[i] + a[i] * b[i] mod q.
    fn mul_acc(&self, acc: &mut [u32], a: &[u32], b: &[u32], modulus: &Modulus);
    /// a[i] = a[i] * w mod q, for a constant w given with its Shoup quotient.
    fn mul_scalar_assign(&self, a: &mut [u32], w: ShoupConstant, modulus: &Modulus);
    /// out[i] = a[i] * w mod q (any a[i]): [`Kernels::mul_scalar_assign`] out of place, without
    /// the copy before it.
    fn mul_scalar(&self, out: &mut [u32], a: &[u32], w: ShoupConstant, modulus: &Modulus);
    /// a[i] = w x[i] + offsets[i] + k + a[i] mod q, or with - a[i] when `subtract`, for any
    /// x[i] and for offsets[i], k and a[i] below q: the one pass of encryption that adds the
    /// scaled message, the error and the encryption of zero.
    #[allow(clippy::too_many_arguments)]
    fn scaled_add(
        &self,
        a: &mut [u32],
        x: &[u32],
        w: ShoupConstant,
        offsets: &[u32],
        k: u32,
        subtract: bool,
        modulus: &Modulus,
    );
    /// out[c] = sum_r rows[r][c] * weights[r] * 2^-32 mod q (weights in Montgomery form);
    /// row values and weights below 2^30, q above 2^29, at most 16 rows.
    fn dot_montgomery(&self, out: &mut [u32], rows: &[&[u32]], weights: &[u32], modulus: &Modulus);
    /// Several outputs of one base conversion, each row read once for all of them:
    /// outs[j][c] = (sum_r rows[r][c] weights[j][r] + own[j][c] weights[j][rows.len()]) 2^-32
    /// mod moduli[j], where `own` is empty or holds one row for each output (read by that output
    /// only). The same words as [`Kernels::dot_montgomery`] output by output, with at most 16
    /// rows an output.
    fn dot_montgomery_outputs(
        &self,
        outs: &mut [&mut [u32]],
        rows: &[&[u32]],
        own: &[&[u32]],
        weights: &[&[u32]],
        moduli: &[Modulus],
    );
    /// v[c] = trunc(0.5 + sum_i rows[i][c] reciprocals[i]) in f64, added in row order: the
    /// wrap count of fast base conversion, identical on every backend (rows and sums below
    /// 2^31).
    fn wrap_counts(&self, v: &mut [u32], rows: &[&[u32]], reciprocals: &[f64]);
    /// r[c] = floor(1/2 + sum_i rows[i][c] f_i) exactly, for fixed-point fractions f_i of
    /// `dot::FRACTION_LIMBS` 30-bit limbs (`dot::fraction_sums`), written as
    /// low[c] = r mod 2^30 and high[c] = r >> 30: the rounding of scale-and-round. Rows below
    /// 2^30, at most 16.
    fn fraction_sums(
        &self,
        low: &mut [u32],
        high: &mut [u32],
        rows: &[&[u32]],
        fractions: &[[u32; dot::FRACTION_LIMBS]],
    );
    /// out[c] = sum_r a[r][c] * b[r][c] * 2^-32 mod q, for residues mod q, q above 2^29, at
    /// most 16 pairs.
    fn dot_pointwise_montgomery(
        &self,
        out: &mut [u32],
        a: &[&[u32]],
        b: &[&[u32]],
        modulus: &Modulus,
    );
    /// acc[c] += sum_r weights[r] * rows[r][c], exactly, for residues below 2^30 and
    /// |weights[r]| <= 2^15: a plaintext-weighted sum of ciphertext limbs. Up to 2^16 rows may
    /// be added into one accumulator before it is reduced.
    fn weighted_sum(&self, acc: &mut [i64], rows: &[&[u32]], weights: &[i32]);
    /// For every output o: accs[o][c] += sum_p lo(pair[c]) lo(w) + hi(pair[c]) hi(w) over
    /// every row `pair` of `pairs` (each as long as the accumulators)
    /// with w = weights[p * accs.len() + o] and the signed 16-bit halves of each word
    /// (operands packed by `linear::pack_pairs` and `linear::pair_major_weights`), in two's
    /// complement wrapping at 32 bits: the caller keeps the sums within i32 and reads them as
    /// such. Several outputs at once share the reads of the pairs, and pair-major weights put
    /// a pair's weights of those outputs side by side.
    fn pair_weighted_sum(&self, accs: &mut [&mut [u32]], pairs: PairRows<'_>, weights: &[u32]);
    /// lo[c] = a[c] mod 2^15 | (b[c] mod 2^15) << 16 and hi[c] = a[c] >> 15 | (b[c] >> 15) << 16
    /// for residues below 2^30: two rows packed as the operands of
    /// [`Kernels::pair_weighted_sum`].
    fn pack_pairs(&self, lo: &mut [u32], hi: &mut [u32], a: &[u32], b: &[u32]);
    /// out[i] = the i-th 30-bit field of `packed` (little-endian, eight residues to 30 bytes,
    /// `packed` 30/8 bytes an output): whether every one is below q. The loop a parser of
    /// ciphertexts spends its time in.
    fn unpack_30_bit(&self, out: &mut [u32], packed: &[u8], modulus: &Modulus) -> bool {
        check_30_bit_groups(out.len(), packed.len());
        portable::unpack_groups::<30>(packed, modulus, out)
    }
    /// out[c] = (high[c] - 2^31) 2^15 + (low[c] - 2^31) mod q: the residue of a value kept as
    /// the sums of [`Kernels::pair_weighted_sum`] over its low and high 15-bit halves, each
    /// started at 2^31 so that an i32 sum reads as a u32 (see `linear::HALF_SUM_START`).
    fn join_halves(&self, out: &mut [u32], low: &[u32], high: &[u32], modulus: &Modulus);
}

/// Panics unless the slices of one kernel call agree (a caller bug, never untrusted data).
#[inline(always)]
/// Panics unless `bytes` packs `residues` 30-bit residues in whole groups of eight.
pub(crate) fn check_30_bit_groups(residues: usize, bytes: usize) {
    assert!(
        residues.is_multiple_of(8) && bytes == residues / 8 * 30,
        "30-bit groups"
    );
}

pub(crate) fn check_lengths(a: usize, b: usize) {
    assert_eq!(a, b, "kernel operands differ in length");
}

/// One of the backends this CPU can run; the single dispatch point.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Scalar Rust.
    Portable(Portable),
    /// AVX2 intrinsics (the token proves the CPU supports them).
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2),
    /// AVX-512F/BW intrinsics (the token proves the CPU supports them).
    #[cfg(target_arch = "x86_64")]
    Avx512(Avx512),
    /// NEON intrinsics.
    #[cfg(target_arch = "aarch64")]
    Neon(Neon),
}

/// Names of every backend this build knows, available on this CPU or not.
pub const BACKEND_NAMES: &[&str] = &[
    "portable",
    #[cfg(target_arch = "x86_64")]
    "avx2",
    #[cfg(target_arch = "x86_64")]
    "avx512",
    #[cfg(target_arch = "aarch64")]
    "neon",
];

impl Backend {
    /// The fastest backend this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx512) = Avx512::new() {
            return Backend::Avx512(avx512);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = Avx2::new() {
            return Backend::Avx2(avx2);
        }
        #[cfg(target_arch = "aarch64")]
        return Backend::Neon(Neon::new());
        #[allow(unreachable_code)]
        Backend::Portable(Portable)
    }

    /// The backend called `name` ("portable", "avx2", "avx512", "neon"), if this CPU runs it.
    pub fn by_name(name: &str) -> Result<Self, Error> {
        match name {
            "portable" => return Ok(Backend::Portable(Portable)),
            #[cfg(target_arch = "x86_64")]
            "avx2" => {
                return Avx2::new()
                    .map(Backend::Avx2)
                    .ok_or(Error::BackendUnavailable { backend: "avx2" });
            }
            #[cfg(target_arch = "x86_64")]
            "avx512" => {
                return Avx512::new()
                    .map(Backend::Avx512)
                    .ok_or(Error::BackendUnavailable { backend: "avx512" });
            }
            #[cfg(target_arch = "aarch64")]
            "neon" => return Ok(Backend::Neon(Neon::new())),
            _ => {}
        }
        let backend = ["avx2", "avx512", "neon"]
            .into_iter()
            .find(|known| *known == name)
            .unwrap_or("unknown");
        Err(Error::BackendUnavailable { backend })
    }

    /// Every backend this CPU runs, portable first.
    pub fn available() -> heapless::Vec<Backend, 4> {
        BACKEND_NAMES
            .iter()
            .filter_map(|name| Backend::by_name(name).ok())
            .collect()
    }

    /// Whether the dense layers' half-word multiply-accumulates run cheaply enough against a
    /// square's transforms and scalings that a dense layer after a square pays for working
    /// on the squares' unscaled tensors (see `NetworkEvaluator`): on the x86 vector backends
    /// (AVX2 measured on an AMD EPYC; AVX-512's fused VNNI and AMX sums are cheaper still).
    /// Not on the portable backend, nor on NEON, where it was not measured.
    pub fn cheap_pair_sums(&self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(_) | Backend::Avx512(_) => true,
            _ => false,
        }
    }

    /// The backend's name.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Portable(_) => "portable",
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(_) => "avx2",
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512(_) => "avx512",
            #[cfg(target_arch = "aarch64")]
            Backend::Neon(_) => "neon",
        }
    }
}

impl Default for Backend {
    fn default() -> Self {
        Self::detect()
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Forwards a kernel call to whichever backend `self` holds.
macro_rules! dispatch {
    ($self:ident, $backend:ident => $call:expr) => {
        match $self {
            Backend::Portable($backend) => $call,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2($backend) => $call,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512($backend) => $call,
            #[cfg(target_arch = "aarch64")]
            Backend::Neon($backend) => $call,
        }
    };
}

impl Kernels for Backend {
    #[inline]
    fn forward_ntt<S: AsRef<[u32]>>(&self, a: &mut [u32], table: &NttTable<S>) {
        dispatch!(self, b => b.forward_ntt(a, table))
    }
    #[inline]
    fn forward_ntt_from<S: AsRef<[u32]>>(
        &self,
        out: &mut [u32],
        input: &[u32],
        table: &NttTable<S>,
    ) {
        dispatch!(self, b => b.forward_ntt_from(out, input, table))
    }
    #[inline]
    fn inverse_ntt_times<S: AsRef<[u32]>>(&self, a: &mut [u32], table: &NttTable<S>, factor: u32) {
        dispatch!(self, b => b.inverse_ntt_times(a, table, factor))
    }
    #[inline]
    fn mul_assign(&self, a: &mut [u32], b: &[u32], modulus: &Modulus) {
        dispatch!(self, k => k.mul_assign(a, b, modulus))
    }
    #[inline]
    fn unpack_30_bit(&self, out: &mut [u32], packed: &[u8], modulus: &Modulus) -> bool {
        dispatch!(self, k => k.unpack_30_bit(out, packed, modulus))
    }
    #[inline]
    fn lift_centered(&self, out: &mut [u32], input: &[u32], from: &Modulus, to: &Modulus) {
        dispatch!(self, k => k.lift_centered(out, input, from, to))
    }
    #[inline]
    fn square_tensor_montgomery(
        &self,
        x0: &mut [u32],
        cross: &mut [u32],
        x1: &mut [u32],
        modulus: &Modulus,
    ) {
        dispatch!(self, k => k.square_tensor_montgomery(x0, cross, x1, modulus))
    }
    #[inline]
    fn mul_acc(&self, acc: &mut [u32], a: &[u32], b: &[u32], modulus: &Modulus) {
        dispatch!(self, k => k.mul_acc(acc, a, b, modulus))
    }
    #[inline]
    fn mul_scalar_assign(&self, a: &mut [u32], w: ShoupConstant, modulus: &Modulus) {
        dispatch!(self, k => k.mul_scalar_assign(a, w, modulus))
    }
    #[inline]
    fn mul_scalar(&self, out: &mut [u32], a: &[u32], w: ShoupConstant, modulus: &Modulus) {
        dispatch!(self, k => k.mul_scalar(out, a, w, modulus))
    }
    #[inline]
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
        dispatch!(self, b => b.scaled_add(a, x, w, offsets, k, subtract, modulus))
    }
    #[inline]
    fn dot_montgomery(&self, out: &mut [u32], rows: &[&[u32]], weights: &[u32], modulus: &Modulus) {
        dispatch!(self, k => k.dot_montgomery(out, rows, weights, modulus))
    }
    #[inline]
    fn dot_montgomery_outputs(
        &self,
        outs: &mut [&mut [u32]],
        rows: &[&[u32]],
        own: &[&[u32]],
        weights: &[&[u32]],
        moduli: &[Modulus],
    ) {
        dispatch!(self, k => k.dot_montgomery_outputs(outs, rows, own, weights, moduli))
    }
    #[inline]
    fn wrap_counts(&self, v: &mut [u32], rows: &[&[u32]], reciprocals: &[f64]) {
        dispatch!(self, k => k.wrap_counts(v, rows, reciprocals))
    }
    #[inline]
    fn fraction_sums(
        &self,
        low: &mut [u32],
        high: &mut [u32],
        rows: &[&[u32]],
        fractions: &[[u32; dot::FRACTION_LIMBS]],
    ) {
        dispatch!(self, k => k.fraction_sums(low, high, rows, fractions))
    }
    #[inline]
    fn dot_pointwise_montgomery(
        &self,
        out: &mut [u32],
        a: &[&[u32]],
        b: &[&[u32]],
        modulus: &Modulus,
    ) {
        dispatch!(self, k => k.dot_pointwise_montgomery(out, a, b, modulus))
    }
    #[inline]
    fn weighted_sum(&self, acc: &mut [i64], rows: &[&[u32]], weights: &[i32]) {
        dispatch!(self, k => k.weighted_sum(acc, rows, weights))
    }
    #[inline]
    fn pair_weighted_sum(&self, accs: &mut [&mut [u32]], pairs: PairRows<'_>, weights: &[u32]) {
        dispatch!(self, k => k.pair_weighted_sum(accs, pairs, weights))
    }
    #[inline]
    fn pack_pairs(&self, lo: &mut [u32], hi: &mut [u32], a: &[u32], b: &[u32]) {
        dispatch!(self, k => k.pack_pairs(lo, hi, a, b))
    }
    #[inline]
    fn join_halves(&self, out: &mut [u32], low: &[u32], high: &[u32], modulus: &Modulus) {
        dispatch!(self, k => k.join_halves(out, low, high, modulus))
    }
}

#[cfg(test)]
mod tests;
