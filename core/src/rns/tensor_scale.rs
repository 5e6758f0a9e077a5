//! round(t X / Q) mod Q for a tensor product X given by its residues modulo Q and an
//! auxiliary basis P: the scaling step of BFV multiplication, straight back into Q.
//!
//! The auxiliary basis only has to hold the quotient X / Q, not the scaled product t X / Q:
//! with x~_i = [x_i (Q/q_i)^-1]_{q_i}, the integer X_Q = sum_i x~_i (Q/q_i) equals X mod Q,
//! so z = (X - X_Q) / Q is an integer of magnitude at most |X| / Q + k (k primes in Q), and
//!
//!   round(t X / Q) = t z + round(sum_i x~_i t / q_i).
//!
//! z mod p_j = (x_j - X_Q) Q^-1 is a sum of residues (one pass over the rows for every prime
//! of P), z itself follows by exact centered conversion from P (one wrap count), and the
//! rounded sum is the fixed-point [`Kernels::fraction_sums`] of the x~_i with the fractions
//! t / q_i (t is below every q_i). A product of two ciphertexts of Q has |X| <= n Q^2 / 2,
//! so P needs about log2 Q + log2 n bits where scaling into P first (the textbook
//! Halevi-Polyakov-Shoup order) needs log2 t more: for the CryptoNets parameters, one prime
//! of P fewer, so five fewer NTTs a square.

use alloc::vec::Vec;

use super::scale::fraction_limbs;
use super::{MAX_LIMBS, grown, others, product_mod};
use crate::backend::dot::{FRACTION_BITS, FRACTION_LIMBS, MAX_ROWS as MAX_DOT_ROWS};
use crate::backend::{Backend, Kernels};
use crate::zq::Modulus;

/// The buffers of [`TensorScale::apply`], grown once and reused.
#[derive(Clone, Debug, Default)]
pub struct TensorScaleScratch {
    /// round(sum_i x~_i t / q_i), as its low 30 and its high bits.
    rounded: Vec<u32>,
    /// [z (P/p_j)^-1]_{p_j}, limb by limb.
    quotient: Vec<u32>,
    /// The wrap count of the quotient's conversion from P.
    wraps: Vec<u32>,
    /// The first pass's sums where the rows take two (a large P).
    partial: Vec<u32>,
}

/// round(t X / Q) mod each output prime (the primes of Q, or a multiple of them; see
/// [`TensorScale::times_outputs`]), for X given in Montgomery form (X 2^-32) modulo Q and P.
#[derive(Clone, Debug)]
pub struct TensorScale {
    q: Vec<Modulus>,
    p: Vec<Modulus>,
    /// [(Q/q_i)^-1 2^32]_{q_i}: x~_i from a Montgomery-form residue.
    cofactors: Vec<u32>,
    /// frac(t / q_i) as three 30-bit limbs, most significant first.
    fractions: Vec<[u32; FRACTION_LIMBS]>,
    /// Per p_j, Montgomery-form weights of the rows x~_0 .. x~_{k-1} and of the own residue
    /// x_j 2^-32: -q_i^-1 (P/p_j)^-1 and 2^32 Q^-1 (P/p_j)^-1 mod p_j, so that the sum is
    /// [z (P/p_j)^-1]_{p_j}.
    quotient_weights: Vec<Vec<u32>>,
    /// 1 / p_j.
    reciprocals: Vec<f64>,
    /// Per output q_k, Montgomery-form weights of the rows [z (P/p_j)^-1]_{p_j}, the wrap count
    /// v and the rounded sum's low and high bits: t P/p_j, -t P, 1 and 2^30 mod q_k.
    output_weights: Vec<Vec<u32>>,
    /// Where those rows exceed one pass of the dot product (more than 13 primes in P): per
    /// output, the weights of the rows after the first pass's, then 1 for the first pass's sum
    /// (its own row in the second pass).
    second_pass_weights: Vec<Vec<u32>>,
}

impl TensorScale {
    /// The scaling for products of ciphertexts modulo the primes `q`, with the auxiliary
    /// primes `p` (all below 2^30, every prime of `q` and `p` above 2^29, t below every prime
    /// of `q`, at most [`MAX_LIMBS`] in each basis).
    pub fn new(q: &[Modulus], p: &[Modulus], t: u32) -> Self {
        assert!(
            q.len() <= MAX_LIMBS && p.len() <= MAX_LIMBS,
            "too many primes"
        );
        assert!(
            q.iter().chain(p).all(|m| m.bits() == 30),
            "the primes must have 30 bits"
        );
        assert!(
            q.iter().all(|m| t < m.value()),
            "t below every ciphertext prime"
        );
        // x~_i from a Montgomery-form residue x_i 2^-32: times (Q/q_i)^-1 2^32.
        let cofactors = q
            .iter()
            .enumerate()
            .map(|(i, qi)| {
                let cofactor = product_mod(qi, others(q, i));
                qi.mul(qi.inv(cofactor), qi.montgomery_r().value)
            })
            .collect();
        // t / q_i has no integer part (t < q_i).
        let fractions = q
            .iter()
            .map(|qi| fraction_limbs(t as u128, qi.value() as u128))
            .collect();
        let quotient_weights = p
            .iter()
            .enumerate()
            .map(|(j, pj)| {
                let cofactor_inverse = pj.inv(product_mod(pj, others(p, j)));
                let q_inverse = pj.inv(product_mod(pj, q));
                q.iter()
                    .map(|qi| pj.neg(pj.mul(pj.inv(pj.reduce(qi.value())), cofactor_inverse)))
                    .chain([pj.mul(pj.mul(q_inverse, cofactor_inverse), pj.montgomery_r().value)])
                    .map(|w| pj.to_montgomery(w))
                    .collect()
            })
            .collect();
        let output_weights = q
            .iter()
            .map(|qk| {
                let t_mod = qk.reduce(t);
                let tp = qk.mul(t_mod, product_mod(qk, p));
                (0..p.len())
                    .map(|j| qk.mul(t_mod, product_mod(qk, others(p, j))))
                    .chain([qk.neg(tp), 1, qk.reduce(1 << FRACTION_BITS)])
                    .map(|w| qk.to_montgomery(w))
                    .collect()
            })
            .collect();
        Self {
            q: q.to_vec(),
            p: p.to_vec(),
            cofactors,
            fractions,
            quotient_weights,
            reciprocals: p.iter().map(|m| 1.0 / m.value() as f64).collect(),
            output_weights,
            second_pass_weights: Vec::new(),
        }
        .with_second_pass()
    }

    /// Fills `second_pass_weights` from `output_weights` where one pass cannot take every row.
    fn with_second_pass(mut self) -> Self {
        let rows = self.p.len() + 3;
        self.second_pass_weights = match rows > MAX_DOT_ROWS {
            true => self
                .output_weights
                .iter()
                .zip(&self.q)
                .map(|(w, q)| {
                    let mut tail = w[MAX_DOT_ROWS..].to_vec();
                    tail.push(q.to_montgomery(1));
                    tail
                })
                .collect(),
            false => Vec::new(),
        };
        self
    }

    /// The same scaling with output k multiplied by `factors[k]` mod q_k, at no cost (folded
    /// into the weights): a product's switch down by the last prime of Q folds that prime's
    /// inverse in here.
    pub fn times_outputs(mut self, factors: &[u32]) -> Self {
        assert_eq!(factors.len(), self.q.len(), "one factor per output");
        for ((weights, q), &f) in self.output_weights.iter_mut().zip(&self.q).zip(factors) {
            let f = q.reduce(f);
            weights.iter_mut().for_each(|w| *w = q.mul(*w, f));
        }
        self.with_second_pass()
    }

    /// The factor [(Q/q_i)^-1 2^32]_{q_i} that turns the Montgomery-form residue x_i 2^-32
    /// into x~_i, which [`Self::apply`] takes: a caller folds it into the step that makes its
    /// input (a product's inverse NTT, see [`Kernels::inverse_ntt_times`]).
    pub fn cofactor(&self, i: usize) -> u32 {
        self.cofactors[i]
    }

    /// Scales n coefficients: `q_residues` holds x~_i = X 2^-32 [`Self::cofactor`] i mod each
    /// prime q_i of Q, `p_residues` X 2^-32 mod each prime of P, both fully reduced; writes
    /// one limb per prime of Q to `output`.
    pub fn apply(
        &self,
        backend: &Backend,
        q_residues: &[u32],
        p_residues: &[u32],
        output: &mut [u32],
        n: usize,
        scratch: &mut TensorScaleScratch,
    ) {
        let (k, l) = (self.q.len(), self.p.len());
        assert!(
            q_residues.len() == k * n && p_residues.len() == l * n && output.len() == k * n,
            "limb counts"
        );
        let reduced: heapless::Vec<&[u32], MAX_DOT_ROWS> = q_residues.chunks_exact(n).collect();
        let rounded = grown(&mut scratch.rounded, 2 * n);
        let (rounded_low, rounded_high) = rounded.split_at_mut(n);
        backend.fraction_sums(rounded_low, rounded_high, &reduced, &self.fractions);

        let quotient = grown(&mut scratch.quotient, l * n);
        {
            let own: heapless::Vec<&[u32], MAX_LIMBS> = p_residues.chunks_exact(n).collect();
            let mut outs: heapless::Vec<&mut [u32], MAX_LIMBS> =
                quotient.chunks_exact_mut(n).collect();
            let weights: heapless::Vec<&[u32], MAX_LIMBS> =
                self.quotient_weights.iter().map(Vec::as_slice).collect();
            backend.dot_montgomery_outputs(&mut outs, &reduced, &own, &weights, &self.p);
        }

        let wraps = grown(&mut scratch.wraps, n);
        let mut rows: heapless::Vec<&[u32], { MAX_LIMBS + 3 }> = quotient.chunks_exact(n).collect();
        backend.wrap_counts(wraps, &rows, &self.reciprocals);
        rows.extend([&wraps[..], &rounded_low[..], &rounded_high[..]]);
        let mut outs: heapless::Vec<&mut [u32], MAX_LIMBS> = output.chunks_exact_mut(n).collect();
        if rows.len() <= MAX_DOT_ROWS {
            let weights: heapless::Vec<&[u32], MAX_LIMBS> =
                self.output_weights.iter().map(Vec::as_slice).collect();
            backend.dot_montgomery_outputs(&mut outs, &rows, &[], &weights, &self.q);
            return;
        }
        // A large P: the first rows' sums, then the others' with those sums as own rows.
        let (first, rest) = rows.split_at(MAX_DOT_ROWS);
        let partial = grown(&mut scratch.partial, self.q.len() * n);
        let mut partial_outs: heapless::Vec<&mut [u32], MAX_LIMBS> =
            partial.chunks_exact_mut(n).collect();
        let weights: heapless::Vec<&[u32], MAX_LIMBS> = self
            .output_weights
            .iter()
            .map(|w| &w[..MAX_DOT_ROWS])
            .collect();
        backend.dot_montgomery_outputs(&mut partial_outs, first, &[], &weights, &self.q);
        drop(partial_outs);
        let own: heapless::Vec<&[u32], MAX_LIMBS> = partial.chunks_exact(n).collect();
        let weights: heapless::Vec<&[u32], MAX_LIMBS> =
            self.second_pass_weights.iter().map(Vec::as_slice).collect();
        backend.dot_montgomery_outputs(&mut outs, rest, &own, &weights, &self.q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zq::prime::ntt_primes;
    use num_bigint::{BigInt, BigUint, Sign};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};
    use std::vec::Vec;

    /// x mod m, in [0, m).
    fn residue(x: &BigInt, m: u32) -> u32 {
        let m = BigInt::from(m);
        (((x % &m) + &m) % &m).try_into().unwrap()
    }

    /// round(t x / Q) mod m (ties up), from the exact rational.
    fn expected(x: &BigInt, t: u32, q: &BigInt, m: u32) -> u32 {
        let num = BigInt::from(2 * t as u64) * x + q;
        let den = BigInt::from(2u32) * q;
        let floor = &num / &den
            - if num.sign() == Sign::Minus && &num % &den != BigInt::from(0) {
                1
            } else {
                0
            };
        residue(&floor, m)
    }

    /// Products at the largest magnitude a tensor reaches (n Q^2 / 2, both signs), zero, small
    /// values and random ones: every output word equals the big-integer rounding, on every
    /// backend, with and without folded output factors. The CryptoNets shape (5 primes in Q,
    /// 6 in P), and large P (14 and 15 primes: the conversion back in two passes). Then sums
    /// of such products with |weights| summing to 2^13, as the first dense layer scales them
    /// (`Parameters::tensor_sum_headroom`: 13.6 bits for the CryptoNets shape at n = 8192).
    #[test]
    fn scaling_matches_big_integer_rounding_on_every_backend() {
        for (q_primes, p_primes) in [(5, 6), (1, 14), (3, 15)] {
            scaling_matches_big_integer_rounding(q_primes, p_primes, 1);
        }
        scaling_matches_big_integer_rounding(5, 6, 1 << 13);
    }

    /// The scaling of values up to `weight_sum` times a tensor's largest magnitude.
    fn scaling_matches_big_integer_rounding(q_primes: usize, p_primes: usize, weight_sum: u32) {
        let n = 64usize;
        let degree = 8192usize;
        let primes: Vec<Modulus> = ntt_primes(30, degree)
            .take(q_primes + p_primes)
            .map(|p| Modulus::new(p).unwrap())
            .collect();
        let (q, p) = primes.split_at(q_primes);
        let t = ntt_primes(29, degree).next().unwrap();
        let q_big: BigInt = q.iter().map(|m| BigInt::from(m.value())).product();
        let bound = BigInt::from(weight_sum) * BigInt::from(degree) * &q_big * &q_big / 2u32;
        // P must hold z = (X - X_Q) / Q with room for the wrap count: 8 n Q.
        let p_big: BigInt = p.iter().map(|m| BigInt::from(m.value())).product();
        assert!(p_big > BigInt::from(8 * degree) * BigInt::from(weight_sum) * &q_big);
        let factors: Vec<u32> = q.iter().map(|m| m.value() - 3).collect();
        let plain = TensorScale::new(q, p, t);
        let scaled = TensorScale::new(q, p, t).times_outputs(&factors);
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let words = bound.bits().div_ceil(32) as usize;
        let xs: Vec<BigInt> = (0..n)
            .map(|c| match c {
                0 => bound.clone(),
                1 => -bound.clone(),
                2 => BigInt::from(0),
                3 | 4 => BigInt::from(c as i32 - 5),
                5 => &q_big / (2 * t),
                _ => {
                    let digits: Vec<u32> = (0..words).map(|_| rng.next_u32()).collect();
                    let x = BigInt::from(BigUint::from_slice(&digits)) % &bound;
                    if rng.next_u32() & 1 == 1 { -x } else { x }
                }
            })
            .collect();
        // Montgomery-form residues: x 2^-32 mod each prime.
        let montgomery = |m: &Modulus| -> Vec<u32> {
            let r_inv = m.inv(m.montgomery_r().value);
            xs.iter()
                .map(|x| m.mul(residue(x, m.value()), r_inv))
                .collect()
        };
        let q_residues: Vec<u32> = q.iter().flat_map(montgomery).collect();
        let p_residues: Vec<u32> = p.iter().flat_map(montgomery).collect();
        for backend in Backend::available() {
            for (scale, scaled_outputs) in [(&plain, false), (&scaled, true)] {
                let mut input = q_residues.clone();
                for (i, (limb, m)) in input.chunks_exact_mut(n).zip(q).enumerate() {
                    limb.iter_mut()
                        .for_each(|x| *x = m.mul(*x, scale.cofactor(i)));
                }
                let mut output = std::vec![0u32; q.len() * n];
                let mut scratch = TensorScaleScratch::default();
                scale.apply(&backend, &input, &p_residues, &mut output, n, &mut scratch);
                for (k, m) in q.iter().enumerate() {
                    for (c, x) in xs.iter().enumerate() {
                        let mut want = expected(x, t, &q_big, m.value());
                        if scaled_outputs {
                            want = m.mul(want, factors[k]);
                        }
                        assert_eq!(
                            output[k * n + c],
                            want,
                            "{backend:?} output {k} coefficient {c}"
                        );
                    }
                }
            }
        }
    }
}
