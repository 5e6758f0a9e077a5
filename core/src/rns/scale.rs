//! round(t * X / Q) for X given by its residues modulo Q (and possibly an auxiliary basis P),
//! reduced modulo each output prime, without forming X.
//!
//! With x_i the residues of X mod the primes q_i of Q and w_i the CRT weight of q_i in the
//! input basis, t X / Q = sum_i x_i (t P w_i / q_i) + (terms that are integers mod the
//! outputs). Each t P w_i / q_i splits into an integer part, reduced mod every output prime,
//! and a fraction kept as a 128-bit fixed-point number, so the rounding is exact whenever
//! Q < 2^62 and wrong by one (a negligible extra noise) only within Q 2^-63 of a tie.

use alloc::vec::Vec;

use crate::backend::{Backend, Kernels};
use crate::zq::Modulus;

/// a * b mod m for m < 2^64 (setup only).
fn mul_mod(a: u128, b: u128, m: u128) -> u128 {
    a % m * (b % m) % m
}

/// Scale-and-round from Q (optionally joined by the outputs' own basis P) to the outputs.
#[derive(Clone, Debug)]
pub struct ScaleRound {
    inputs: Vec<Modulus>,
    outputs: Vec<Modulus>,
    /// floor(t P w_i / q_i) mod output j, at [j * inputs + i].
    integer_parts: Vec<u32>,
    /// frac(t P w_i / q_i) * 2^128 as (high, low) 64-bit words.
    fractions: Vec<(u64, u64)>,
    /// With P, per output: Montgomery-form weights of the rows x_0 .. x_{k-1}, the low 30 and
    /// the high bits of the rounded fraction sum, and the output's own residue.
    dot_weights: Vec<Vec<u32>>,
}

impl ScaleRound {
    /// round(t X / Q) mod each output, for X given mod Q only (decryption: outputs = [t]).
    pub fn new(q: &[Modulus], t: u32, outputs: &[Modulus]) -> Self {
        Self::build(q, t, outputs, false)
    }

    /// round(t X / Q) mod each p_j, for X given mod Q P where P is the product of `p`
    /// (BFV multiplication).
    pub fn with_auxiliary(q: &[Modulus], t: u32, p: &[Modulus]) -> Self {
        Self::build(q, t, p, true)
    }

    fn build(q: &[Modulus], t: u32, outputs: &[Modulus], outputs_in_input: bool) -> Self {
        let k = q.len();
        let p_factor: Vec<u32> = if outputs_in_input {
            outputs.iter().map(Modulus::value).collect()
        } else {
            Vec::new()
        };
        let mut integer_parts = alloc::vec![0u32; k * outputs.len()];
        let mut fractions = Vec::with_capacity(k);
        for (i, qi) in q.iter().enumerate() {
            let qv = qi.value() as u128;
            // w_i = (product of every other input prime, P's included)^-1 mod q_i.
            let others = q
                .iter()
                .enumerate()
                .filter(|&(l, _)| l != i)
                .map(|(_, m)| m.value())
                .chain(p_factor.iter().copied());
            let w = qi.inv(others.fold(1, |acc, m| qi.mul(acc, qi.reduce(m))));
            // A = t * P * w (P = 1 without auxiliary basis), known modulo q_i * o_j.
            let a_mod = |m: u128| {
                p_factor
                    .iter()
                    .fold(mul_mod(t as u128, w as u128, m), |acc, &p| {
                        mul_mod(acc, p as u128, m)
                    })
            };
            let remainder = a_mod(qv); // A mod q_i
            for (j, o) in outputs.iter().enumerate() {
                let m = qv * o.value() as u128;
                // floor(A / q_i) mod o = ((A mod q_i o) - (A mod q_i)) / q_i.
                integer_parts[j * k + i] = ((a_mod(m) + m - remainder) % m / qv) as u32;
            }
            let high = (remainder << 64) / qv;
            let low = (((remainder << 64) % qv) << 64) / qv;
            fractions.push((high as u64, low as u64));
        }
        // With P: t Q^-1 mod p_j, the weight of the outputs' own residues.
        let own_weights: Option<Vec<u32>> = outputs_in_input.then(|| {
            outputs
                .iter()
                .map(|p| {
                    let q_mod_p = q.iter().fold(1, |acc, m| p.mul(acc, p.reduce(m.value())));
                    p.mul(p.reduce(t), p.inv(q_mod_p))
                })
                .collect()
        });
        let dot_weights = match &own_weights {
            Some(own) => outputs
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    integer_parts[j * k..(j + 1) * k]
                        .iter()
                        .copied()
                        .chain([1, p.reduce(1 << 30), own[j]])
                        .map(|w| p.to_montgomery(w))
                        .collect()
                })
                .collect(),
            None => Vec::new(),
        };
        Self {
            inputs: q.to_vec(),
            outputs: outputs.to_vec(),
            integer_parts,
            fractions,
            dot_weights,
        }
    }

    /// Scales n coefficients. `q_residues` holds the inputs' limbs; with an auxiliary basis,
    /// `own_residues` holds the outputs' limbs of the same values. Writes the outputs' limbs.
    pub fn apply(
        &self,
        backend: &Backend,
        q_residues: &[u32],
        own_residues: Option<&[u32]>,
        output: &mut [u32],
        n: usize,
    ) {
        let k = self.inputs.len();
        assert!(
            q_residues.len() == k * n && output.len() == self.outputs.len() * n,
            "limb counts"
        );
        assert_eq!(
            own_residues.is_some(),
            !self.dot_weights.is_empty(),
            "auxiliary residues"
        );
        // round(sum_i x_i frac_i) in 192-bit fixed point (high * 2^64 + low), block by block
        // so that the 128-bit partial sums stay on the stack.
        const BLOCK: usize = 256;
        let mut rounded = alloc::vec![0u64; n];
        for (block, out) in rounded.chunks_mut(BLOCK).enumerate() {
            let (mut high, mut low) = ([0u128; BLOCK], [0u128; BLOCK]);
            let range = block * BLOCK..block * BLOCK + out.len();
            for (x, &(fh, fl)) in q_residues.chunks_exact(n).zip(&self.fractions) {
                for ((h, l), &x) in high.iter_mut().zip(low.iter_mut()).zip(&x[range.clone()]) {
                    *h += x as u128 * fh as u128;
                    *l += x as u128 * fl as u128;
                }
            }
            for ((r, &h), &l) in out.iter_mut().zip(&high).zip(&low) {
                *r = ((h + (l >> 64) + (1 << 63)) >> 64) as u64;
            }
        }
        if let Some(own) = own_residues {
            // rounded < k 2^30: split into two rows below 2^30 for the dot-product kernel.
            let low_mask = (1u64 << 30) - 1;
            let rounded_low: Vec<u32> = rounded.iter().map(|&r| (r & low_mask) as u32).collect();
            let rounded_high: Vec<u32> = rounded.iter().map(|&r| (r >> 30) as u32).collect();
            for (j, (p, out)) in self
                .outputs
                .iter()
                .zip(output.chunks_exact_mut(n))
                .enumerate()
            {
                let mut rows: Vec<&[u32]> = q_residues.chunks_exact(n).collect();
                rows.extend([
                    &rounded_low[..],
                    &rounded_high[..],
                    &own[j * n..(j + 1) * n],
                ]);
                backend.dot_montgomery(out, &rows, &self.dot_weights[j], p);
            }
            return;
        }
        let mut acc = alloc::vec![0u64; n];
        for (j, (o, out)) in self
            .outputs
            .iter()
            .zip(output.chunks_exact_mut(n))
            .enumerate()
        {
            acc.iter_mut()
                .zip(&rounded)
                .for_each(|(a, &r)| *a = o.reduce_u64(r) as u64);
            for (x, &w) in q_residues
                .chunks_exact(n)
                .zip(&self.integer_parts[j * k..(j + 1) * k])
            {
                acc.iter_mut()
                    .zip(x)
                    .for_each(|(a, &x)| *a += x as u64 * w as u64);
            }
            out.iter_mut()
                .zip(&acc)
                .for_each(|(out, &a)| *out = o.reduce_u64(a));
        }
    }
}
