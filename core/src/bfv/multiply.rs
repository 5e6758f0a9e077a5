//! Ciphertext multiplication (Halevi-Polyakov-Shoup) and relinearization, in full RNS.
//!
//! 1. extend each input polynomial from Q to Q u P (exact centered conversion);
//! 2. tensor in the NTT domain of every prime of Q u P, in Montgomery form (times 2^-32);
//! 3. scale by t/Q and round, straight back into Q ([`TensorScale`]: P only holds the
//!    quotient of the product by Q, so it needs about log2 t bits fewer than in the textbook
//!    order, which scales into P and converts back; the weights undo step 2's 2^-32).
//!
//! Q is the input's level's modulus Q_L and P that level's auxiliary primes P_L (see
//! `Level::auxiliary_limbs`): a product at a lower level transforms fewer limbs.

use alloc::vec::Vec;

use super::{Ciphertext, Parameters, RelinearizationKey};
use crate::backend::Kernels;
use crate::ntt::NttTable;
use crate::rns::{ConversionScratch, TensorScale, TensorScaleScratch, grown};
use crate::zq::Modulus;

/// The buffers of one multiplication ([`tensor_with`]), grown once and reused: a loop of
/// squares (the convolution's, one scratch per worker) then allocates only its outputs.
#[derive(Clone, Debug, Default)]
pub struct MultiplyScratch {
    /// The tensor's three polynomials over Q_L u P_L, in NTT form, then in coefficient form.
    c0: Vec<u32>,
    c1: Vec<u32>,
    c2: Vec<u32>,
    /// The second factor's polynomials over Q_L u P_L (multiplication, not squaring).
    b0: Vec<u32>,
    b1: Vec<u32>,
    /// One limb of a product of two ciphertexts (not squaring).
    product: Vec<u32>,
    conversion: ConversionScratch,
    scaling: ScalingScratch,
}

/// The buffers of [`scale_tensor_into`].
#[derive(Clone, Debug, Default)]
struct ScalingScratch {
    /// The rescaled polynomial mod Q_L, before switching down.
    full: Vec<u32>,
    lifted: Vec<u32>,
    scale: TensorScaleScratch,
}

/// `out` = the polynomial mod Q_L extended to Q_L u P_L, in NTT form (Q limbs first).
fn extend_to_ntt(
    params: &Parameters,
    poly: &[u32],
    level: usize,
    out: &mut Vec<u32>,
    conversion: &mut ConversionScratch,
) {
    let n = params.degree();
    let l = params.level_data(level).auxiliary_limbs;
    let out = grown(out, (level + l) * n);
    let (q_part, p_part) = out.split_at_mut(level * n);
    let backend = params.backend();
    params
        .level_data(level)
        .q_to_p
        .convert_with(backend, poly, p_part, n, conversion);
    let basis = params.ciphertext_basis();
    for (i, (limb, input)) in q_part
        .chunks_exact_mut(n)
        .zip(poly.chunks_exact(n))
        .enumerate()
    {
        backend.forward_ntt_from(limb, input, basis.table(i));
    }
    params.auxiliary_basis().forward(backend, p_part, 0);
}

/// [`extend_to_ntt`] of a polynomial given in NTT form mod Q_L: its Q limbs are copied and
/// only P's are transformed. `poly` is left holding the conversion's input
/// y_i = x_i (Q_L/q_i)^-1 mod q_i in coefficient form: the inverse NTT brings that factor in
/// with its 1/n.
fn extend_ntt_to_ntt(
    params: &Parameters,
    poly: &mut [u32],
    level: usize,
    out: &mut Vec<u32>,
    conversion: &mut ConversionScratch,
) {
    let n = params.degree();
    let level_data = params.level_data(level);
    let out = grown(out, (level + level_data.auxiliary_limbs) * n);
    let (q_part, p_part) = out.split_at_mut(level * n);
    q_part.copy_from_slice(poly);
    let backend = params.backend();
    let q_to_p = &level_data.q_to_p;
    for (i, limb) in poly.chunks_exact_mut(n).enumerate() {
        let table = params.ciphertext_basis().table(i);
        backend.inverse_ntt_times(limb, table, q_to_p.inverse_cofactor(i));
    }
    q_to_p.convert_from_cofactored(backend, poly, p_part, n, conversion);
    params.auxiliary_basis().forward(backend, p_part, 0);
}

/// Tensor product of a with b (or with itself), rescaled: a size-3 ciphertext mod Q_L (what
/// the big-integer reference test checks; the evaluator calls [`tensor_with`]).
#[cfg(test)]
pub(crate) fn tensor(params: &Parameters, a: &Ciphertext, b: Option<&Ciphertext>) -> Ciphertext {
    tensor_with(params, a, b, a.level, &mut MultiplyScratch::default())
}

/// [`tensor`] in `scratch`, its output switched down to `level` (at most a's): the same
/// ciphertext as the product followed by modulus switching, without the full-size output.
pub(crate) fn tensor_with(
    params: &Parameters,
    a: &Ciphertext,
    b: Option<&Ciphertext>,
    level: usize,
    scratch: &mut MultiplyScratch,
) -> Ciphertext {
    let mut out = Ciphertext::from_parts(params, level, Vec::new());
    tensor_into(params, a, b, level, scratch, &mut out);
    out
}

/// [`tensor_with`] written over `out`, whatever it held: its polynomials' buffers are reused
/// (grown if short), so that a loop of squares over recycled outputs allocates nothing.
pub(crate) fn tensor_into(
    params: &Parameters,
    a: &Ciphertext,
    b: Option<&Ciphertext>,
    level: usize,
    scratch: &mut MultiplyScratch,
    out: &mut Ciphertext,
) {
    let (top, s) = (a.level, scratch);
    extend_to_ntt(params, &a.polys[0], top, &mut s.c0, &mut s.conversion);
    extend_to_ntt(params, &a.polys[1], top, &mut s.c2, &mut s.conversion);
    tensor_extended(params, top, b, level, s, out);
}

/// [`tensor_into`] for the square of a ciphertext whose c1 is in NTT form (a linear
/// combination of [`super::ExpandedCiphertext`]s): c1's Q limbs need no forward transform.
/// `a`'s c1 is left holding scratch values.
pub(crate) fn square_ntt_second_into(
    params: &Parameters,
    a: &mut Ciphertext,
    level: usize,
    scratch: &mut MultiplyScratch,
    out: &mut Ciphertext,
) {
    let (top, s) = (a.level, scratch);
    extend_to_ntt(params, &a.polys[0], top, &mut s.c0, &mut s.conversion);
    extend_ntt_to_ntt(params, &mut a.polys[1], top, &mut s.c2, &mut s.conversion);
    tensor_extended(params, top, None, level, s, out);
}

/// The rest of [`tensor_into`], once `scratch.c0` and `scratch.c2` hold a's polynomials
/// extended to Q_top u P_top in NTT form.
fn tensor_extended(
    params: &Parameters,
    top: usize,
    b: Option<&Ciphertext>,
    level: usize,
    scratch: &mut MultiplyScratch,
    out: &mut Ciphertext,
) {
    let n = params.degree();
    debug_assert!((1..=top).contains(&level), "a level at most the input's");
    let backend = params.backend();
    let level_data = params.level_data(top);
    let l = level_data.auxiliary_limbs;
    let moduli = params.ciphertext_basis().moduli()[..top]
        .iter()
        .chain(&params.auxiliary_basis().moduli()[..l]);
    let s = scratch;
    let width = (top + l) * n;
    let c1 = grown(&mut s.c1, width);
    let (c0, c2) = (&mut s.c0[..width], &mut s.c2[..width]);
    // The products in Montgomery form (times 2^-32 mod each prime): the scaling's weights
    // absorb the factor (`TensorScale`), so no product is corrected for it.
    match b {
        Some(b) => {
            extend_to_ntt(params, &b.polys[0], top, &mut s.b0, &mut s.conversion);
            extend_to_ntt(params, &b.polys[1], top, &mut s.b1, &mut s.conversion);
            let product = grown(&mut s.product, n);
            // (a0 b0, a0 b1 + a1 b0, a1 b1), with c0 = a0 and c2 = a1 on entry.
            for (i, m) in moduli.enumerate() {
                let r = i * n..(i + 1) * n;
                let (b0, b1) = (&s.b0[r.clone()], &s.b1[r.clone()]);
                let (a0, a1) = (&c0[r.clone()], &c2[r.clone()]);
                backend.dot_pointwise_montgomery(&mut c1[r.clone()], &[a0, a1], &[b1, b0], m);
                backend.dot_pointwise_montgomery(product, &[a0], &[b0], m);
                c0[r.clone()].copy_from_slice(product);
                backend.dot_pointwise_montgomery(product, &[a1], &[b1], m);
                c2[r].copy_from_slice(product);
            }
        }
        None => {
            // (a0^2, 2 a0 a1, a1^2), limb by limb in one pass.
            for (i, m) in moduli.enumerate() {
                let r = i * n..(i + 1) * n;
                backend.square_tensor_montgomery(
                    &mut c0[r.clone()],
                    &mut c1[r.clone()],
                    &mut c2[r],
                    m,
                );
            }
        }
    }
    scale_tensor_into(params, top, level, [c0, c1, c2], &mut s.scaling, out);
}

/// The unscaled tensor of a square: (a0^2, 2 a0 a1, a1^2) over Q_L u P_L (L = a's level), in
/// NTT form and Montgomery form (times 2^-32), written over `out`'s three buffers (grown if
/// short). Linear combinations of such tensors with integer weights are tensors of the same
/// form, and [`scale_tensor_sum_into`] scales one of them once where P_L holds it
/// ([`Parameters::tensor_sum_headroom`]): a dense layer after a square scales its outputs
/// instead of its inputs. `a`'s c1 is in NTT form if `second_in_ntt` (and then left holding
/// scratch values).
pub(crate) fn square_unscaled_into(
    params: &Parameters,
    a: &mut Ciphertext,
    second_in_ntt: bool,
    scratch: &mut MultiplyScratch,
    out: &mut [Vec<u32>; 3],
) {
    let (top, n) = (a.level, params.degree());
    let l = params.level_data(top).auxiliary_limbs;
    let [c0, c1, c2] = out;
    let conversion = &mut scratch.conversion;
    extend_to_ntt(params, &a.polys[0], top, c0, conversion);
    match second_in_ntt {
        true => extend_ntt_to_ntt(params, &mut a.polys[1], top, c2, conversion),
        false => extend_to_ntt(params, &a.polys[1], top, c2, conversion),
    }
    let width = (top + l) * n;
    let c1 = grown(c1, width);
    let moduli = params.ciphertext_basis().moduli()[..top]
        .iter()
        .chain(&params.auxiliary_basis().moduli()[..l]);
    for ((m, c0), (c1, c2)) in moduli
        .zip(c0[..width].chunks_exact_mut(n))
        .zip(c1.chunks_exact_mut(n).zip(c2[..width].chunks_exact_mut(n)))
    {
        params.backend().square_tensor_montgomery(c0, c1, c2, m);
    }
}

/// Writes limb i of polynomial k of a sum of tensors: `fill(k, i, limb, q_i)`.
pub(crate) type TensorLimbs<'a> = dyn Fn(usize, usize, &mut [u32], &Modulus) + Sync + 'a;

/// `out` = the sum of tensors of level `top` (as [`square_unscaled_into`] makes them) scaled
/// by t/Q_top and switched down to `level`; `fill(k, i, limb, q_i)` writes limb i of the
/// sum's polynomial k (the primes of Q_top, then those of P_top), fully reduced.
pub(crate) fn scale_tensor_sum_into(
    params: &Parameters,
    top: usize,
    level: usize,
    fill: &TensorLimbs<'_>,
    scratch: &mut MultiplyScratch,
    out: &mut Ciphertext,
) {
    let n = params.degree();
    let l = params.level_data(top).auxiliary_limbs;
    let width = (top + l) * n;
    let moduli: Vec<&Modulus> = params.ciphertext_basis().moduli()[..top]
        .iter()
        .chain(&params.auxiliary_basis().moduli()[..l])
        .collect();
    let s = scratch;
    let polys = [
        grown(&mut s.c0, width),
        grown(&mut s.c1, width),
        grown(&mut s.c2, width),
    ];
    for (k, poly) in polys.into_iter().enumerate() {
        for (i, (limb, q)) in poly.chunks_exact_mut(n).zip(&moduli).enumerate() {
            fill(k, i, limb, q);
        }
    }
    let (c0, c1, c2) = (&mut s.c0[..width], &mut s.c1[..width], &mut s.c2[..width]);
    scale_tensor_into(params, top, level, [c0, c1, c2], &mut s.scaling, out);
}

/// `out` = a tensor over Q_top u P_top (NTT and Montgomery form, overwritten) scaled by
/// t/Q_top, rounded, and switched down to `level`.
fn scale_tensor_into(
    params: &Parameters,
    top: usize,
    level: usize,
    tensor: [&mut [u32]; 3],
    scratch: &mut ScalingScratch,
    out: &mut Ciphertext,
) {
    let n = params.degree();
    let backend = params.backend();
    let level_data = params.level_data(top);
    let s = scratch;
    let full = grown(&mut s.full, top * n);
    let lifted = grown(&mut s.lifted, n);
    out.params = params.id();
    out.level = level;
    out.n = n;
    out.polys.resize_with(3, Vec::new);
    for (c, poly) in tensor.into_iter().zip(out.polys.iter_mut()) {
        poly.resize(level * n, 0);
        let (q_part, p_part) = c.split_at_mut(top * n);
        // The Q limbs come out times the scaling's cofactors, as it takes them.
        let scaling = &level_data.tensor_scale;
        for (i, limb) in q_part.chunks_exact_mut(n).enumerate() {
            let table = params.ciphertext_basis().table(i);
            backend.inverse_ntt_times(limb, table, scaling.cofactor(i));
        }
        params.auxiliary_basis().inverse(backend, p_part, 0);
        let rescale = |scaling: &TensorScale, out: &mut [u32], scratch: &mut TensorScaleScratch| {
            scaling.apply(backend, q_part, p_part, out, n, scratch)
        };
        if level == top {
            // Straight into the output: no full-size copy.
            rescale(&level_data.tensor_scale, poly, &mut s.scale);
            continue;
        }
        if let (true, Some(down)) = (level + 1 == top, &level_data.tensor_scale_down) {
            // One level down, into the output itself (its buffer holds Q_top for a moment):
            // y_i q_last^-1 from the scaling, then the last residue's term.
            poly.resize(top * n, 0);
            rescale(down, poly, &mut s.scale);
            subtract_dropped(params, poly, top, lifted);
            poly.truncate(level * n);
            continue;
        }
        rescale(&level_data.tensor_scale, full, &mut s.scale);
        for from in (level + 1..=top).rev() {
            switch_down(params, &mut full[..from * n], from, lifted);
        }
        poly.copy_from_slice(&full[..level * n]);
    }
}

/// One polynomial mod Q_from (from limbs) switched to Q_{from - 1} in place, in its first
/// from - 1 limbs: x' = (x - [x]_{q_last}) / q_last, the last residue lifted centered.
pub(crate) fn switch_down(params: &Parameters, poly: &mut [u32], from: usize, above: &mut [u32]) {
    let n = params.degree();
    let moduli = params.ciphertext_basis().moduli();
    let inverses = &params.level_data(from).last_inverse;
    let backend = params.backend();
    for ((limb, q), &w) in poly[..(from - 1) * n]
        .chunks_exact_mut(n)
        .zip(moduli)
        .zip(inverses)
    {
        backend.mul_scalar_assign(limb, w, q);
    }
    subtract_dropped(params, poly, from, above);
}

/// The dropped residue's term of a switch down from Q_from, given y_i = x_i q_last^-1 in the
/// first from - 1 limbs: x'_i = y_i - r q_last^-1 for the last residue r lifted centered,
/// that is y_i - y_last q_last^-1 + [y_last > q_last / 2] (one pass a limb; `above` holds the
/// comparison).
pub(crate) fn subtract_dropped(
    params: &Parameters,
    poly: &mut [u32],
    from: usize,
    above: &mut [u32],
) {
    let n = params.degree();
    let moduli = params.ciphertext_basis().moduli();
    let negated_inverses = &params.level_data(from).negated_last_inverse;
    let backend = params.backend();
    let (kept, last) = poly[..from * n].split_at_mut((from - 1) * n);
    let half = moduli[from - 1].value() / 2;
    above
        .iter_mut()
        .zip(last.iter())
        .for_each(|(above, &r)| *above = (r > half) as u32);
    for ((limb, q), &w) in kept.chunks_exact_mut(n).zip(moduli).zip(negated_inverses) {
        backend.scaled_add(limb, last, w, above, 0, false, q);
    }
}

/// digits[i] = NTT mod `to` of [d]_{q_i}: the gadget digits of `d` (coefficient form, one limb
/// per prime of `from`), each read as a centered residue and lifted to `to`.
pub(crate) fn ntt_digits(
    params: &Parameters,
    d: &[u32],
    from: &[Modulus],
    to: &Modulus,
    table: &NttTable<Vec<u32>>,
    digits: &mut [u32],
) {
    let n = params.degree();
    let backend = params.backend();
    for ((qi, limb), digit) in from
        .iter()
        .zip(d.chunks_exact(n))
        .zip(digits.chunks_exact_mut(n))
    {
        if qi == to {
            digit.copy_from_slice(limb);
        } else {
            backend.lift_centered(digit, limb, qi, to);
        }
        backend.forward_ntt(digit, table);
    }
}

/// c0 += sum_i d_i k0_i, c1 += sum_i d_i k1_i for the digits d_i = [c2]_{q_i} (centered).
/// Limb by limb: all digits lifted to q_j and transformed, then one lazy dot product per key
/// half (a single reduction per coefficient), transformed back and added corrected by 2^32
/// for its Montgomery factor (the inverse NTT is linear, so the correction can follow it).
pub(crate) fn relinearize(params: &Parameters, ct: &mut Ciphertext, key: &RelinearizationKey) {
    let (n, level) = (params.degree(), ct.level);
    let backend = params.backend();
    let basis = params.ciphertext_basis();
    let moduli = &basis.moduli()[..level];
    let c2 = ct.polys.pop().expect("size 3");
    let mut digits = alloc::vec![0u32; level * n];
    let mut sum = alloc::vec![0u32; n];
    let zeros = alloc::vec![0u32; n];
    for (j, qj) in moduli.iter().enumerate() {
        let montgomery = qj.shoup(qj.montgomery_r().value);
        ntt_digits(params, &c2, moduli, qj, basis.table(j), &mut digits);
        let digit_rows: Vec<&[u32]> = digits.chunks_exact(n).collect();
        let r = j * n..(j + 1) * n;
        for (k, poly) in ct.polys.iter_mut().enumerate() {
            let key_rows: Vec<&[u32]> = key.digits[..level]
                .iter()
                .map(|d| {
                    if k == 0 {
                        &d.0[r.clone()]
                    } else {
                        &d.1[r.clone()]
                    }
                })
                .collect();
            backend.dot_pointwise_montgomery(&mut sum, &digit_rows, &key_rows, qj);
            backend.inverse_ntt(&mut sum, basis.table(j));
            // poly limb += 2^32 INTT(sum), in one pass.
            backend.scaled_add(&mut poly[r.clone()], &sum, montgomery, &zeros, 0, false, qj);
        }
    }
}
