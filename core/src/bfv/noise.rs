//! The noise budget: how far the phase is from a multiple of Delta, in bits.

use alloc::vec::Vec;

use super::Parameters;

/// log2(Q / (2 |[t v]_Q|)) for the worst coefficient of the phase v, computed with a
/// multi-word fixed-point fraction: [t v]_Q / Q = frac(sum_i y_i / q_i) with
/// y_i = [t v_i (Q/q_i)^-1]_{q_i}. Variable time (divisions): diagnostics only.
pub(crate) fn budget(params: &Parameters, phase: &[u32], level: usize) -> u32 {
    let n = params.degree();
    let moduli = &params.ciphertext_basis().moduli()[..level];
    let t = params.plaintext_modulus().value();
    // Enough 32-bit fraction words to resolve 2^-(log2 Q + 32).
    let words = (moduli.iter().map(|m| m.bits() as usize).sum::<usize>() + 63) / 32;
    let weights: Vec<u32> = moduli
        .iter()
        .enumerate()
        .map(|(i, qi)| {
            let cofactor = moduli
                .iter()
                .enumerate()
                .filter(|&(l, _)| l != i)
                .fold(1, |acc, (_, m)| qi.mul(acc, qi.reduce(m.value())));
            qi.mul(qi.reduce(t), qi.inv(cofactor))
        })
        .collect();
    let mut worst_bit = 0usize; // position of the highest set bit of |fraction| * 2^(32 words)
    let mut fraction = alloc::vec![0u32; words];
    for c in 0..n {
        fraction.iter_mut().for_each(|w| *w = 0);
        for (i, qi) in moduli.iter().enumerate() {
            let y = qi.mul(phase[i * n + c], weights[i]) as u64;
            // Long division y / q_i into `words` fraction words, added with carries.
            let q = qi.value() as u64;
            let mut remainder = y;
            let mut digits = alloc::vec![0u32; words];
            for d in digits.iter_mut() {
                let numerator = remainder << 32;
                *d = (numerator / q) as u32;
                remainder = numerator % q;
            }
            let mut carry = 0u64;
            for (f, &d) in fraction.iter_mut().zip(&digits).rev() {
                let sum = *f as u64 + d as u64 + carry;
                *f = sum as u32;
                carry = sum >> 32;
            }
        }
        // Centered: a fraction >= 1/2 stands for fraction - 1.
        if fraction[0] >> 31 == 1 {
            let mut borrow = 1u64;
            for f in fraction.iter_mut().rev() {
                let v = (!*f) as u64 + borrow;
                *f = v as u32;
                borrow = v >> 32;
            }
        }
        if let Some(first) = fraction.iter().position(|&w| w != 0) {
            let bit = (words - first) * 32 - fraction[first].leading_zeros() as usize;
            worst_bit = worst_bit.max(bit);
        }
    }
    // |fraction| < 2^(worst_bit - 32 words); budget = -1 - log2 |fraction|.
    (words * 32).saturating_sub(worst_bit + 1) as u32
}
