//! Ciphertext multiplication (Halevi-Polyakov-Shoup) and relinearization, in full RNS.
//!
//! 1. extend each input polynomial from Q to Q u P (exact centered conversion);
//! 2. tensor in the NTT domain of every prime of Q u P;
//! 3. scale by t/Q and round, straight into P;
//! 4. convert back from P to Q.

use alloc::vec::Vec;

use super::{Ciphertext, Parameters, RelinearizationKey};
use crate::backend::Kernels;
use crate::ntt::NttTable;
use crate::zq::Modulus;

/// A polynomial mod Q_L extended to Q_L u P, in NTT form (Q limbs first).
fn extend_to_ntt(params: &Parameters, poly: &[u32], level: usize) -> Vec<u32> {
    let n = params.degree();
    let l = params.auxiliary_basis().len();
    let mut out = Vec::with_capacity((level + l) * n);
    out.extend_from_slice(poly);
    out.resize((level + l) * n, 0);
    let (q_part, p_part) = out.split_at_mut(level * n);
    params
        .level_data(level)
        .q_to_p
        .convert(params.backend(), poly, p_part, n);
    params
        .ciphertext_basis()
        .forward(params.backend(), q_part, 0);
    params
        .auxiliary_basis()
        .forward(params.backend(), p_part, 0);
    out
}

/// Tensor product of a with b (or with itself), rescaled: a size-3 ciphertext mod Q_L.
pub(crate) fn tensor(params: &Parameters, a: &Ciphertext, b: Option<&Ciphertext>) -> Ciphertext {
    let (n, level) = (params.degree(), a.level);
    let backend = params.backend();
    let moduli: Vec<_> = params.ciphertext_basis().moduli()[..level]
        .iter()
        .chain(params.auxiliary_basis().moduli())
        .copied()
        .collect();
    let mut c0 = extend_to_ntt(params, &a.polys[0], level);
    let mut c2 = extend_to_ntt(params, &a.polys[1], level);
    let mut c1 = c0.clone();
    match b {
        Some(b) => {
            let b0 = extend_to_ntt(params, &b.polys[0], level);
            let b1 = extend_to_ntt(params, &b.polys[1], level);
            // (a0 b0, a0 b1 + a1 b0, a1 b1), with c1 = a0 and c2 = a1 on entry.
            for (i, m) in moduli.iter().enumerate() {
                let r = i * n..(i + 1) * n;
                backend.mul_assign(&mut c1[r.clone()], &b1[r.clone()], m);
                backend.mul_acc(&mut c1[r.clone()], &c2[r.clone()], &b0[r.clone()], m);
                backend.mul_assign(&mut c0[r.clone()], &b0[r.clone()], m);
                backend.mul_assign(&mut c2[r.clone()], &b1[r], m);
            }
        }
        None => {
            // (a0^2, 2 a0 a1, a1^2).
            for (i, m) in moduli.iter().enumerate() {
                let r = i * n..(i + 1) * n;
                backend.mul_assign(&mut c1[r.clone()], &c2[r.clone()], m);
                c1[r.clone()].iter_mut().for_each(|x| *x = m.add(*x, *x));
                backend.square_assign(&mut c0[r.clone()], m);
                backend.square_assign(&mut c2[r], m);
            }
        }
    }
    let level_data = params.level_data(level);
    let l = params.auxiliary_basis().len();
    let mut scaled = alloc::vec![0u32; l * n];
    let polys = [c0, c1, c2]
        .into_iter()
        .map(|mut c| {
            let (q_part, p_part) = c.split_at_mut(level * n);
            params.ciphertext_basis().inverse(backend, q_part, 0);
            params.auxiliary_basis().inverse(backend, p_part, 0);
            level_data
                .scale
                .apply(backend, q_part, Some(p_part), &mut scaled, n);
            let mut out = alloc::vec![0u32; level * n];
            level_data.p_to_q.convert(backend, &scaled, &mut out, n);
            out
        })
        .collect();
    Ciphertext::from_parts(params, level, polys)
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
