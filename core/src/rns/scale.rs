//! round(t * X / Q) for X given by its residues modulo Q (and possibly an auxiliary basis P),
//! reduced modulo each output prime, without forming X.
//!
//! With x_i the residues of X mod the primes q_i of Q and w_i the CRT weight of q_i in the
//! input basis, t X / Q = sum_i x_i (t P w_i / q_i) + (terms that are integers mod the
//! outputs). Each t P w_i / q_i splits into an integer part, reduced mod every output prime,
//! and a fraction kept as a 120-bit fixed-point number (four 30-bit limbs, summed by the
//! backend's [`Kernels::fraction_sums`]), so the rounding is exact whenever Q < 2^62 and
//! wrong by one (a negligible extra noise) only within 2^-85 of a tie.

use alloc::vec::Vec;

use super::{MAX_LIMBS, grown};
use crate::backend::dot::{FRACTION_BITS, FRACTION_LIMBS, MAX_ROWS as MAX_DOT_ROWS};
use crate::backend::{Backend, Kernels};
use crate::zq::Modulus;

/// a * b mod m for m < 2^64 (setup only).
fn mul_mod(a: u128, b: u128, m: u128) -> u128 {
    a % m * (b % m) % m
}

/// The buffers of [`ScaleRound::apply_with`].
#[derive(Clone, Debug, Default)]
pub struct ScaleScratch {
    rounded: Vec<u32>,
}

/// Scale-and-round from Q (optionally joined by the outputs' own basis P) to the outputs.
#[derive(Clone, Debug)]
pub struct ScaleRound {
    inputs: Vec<Modulus>,
    outputs: Vec<Modulus>,
    /// floor(t P w_i / q_i) mod output j, at [j * inputs + i].
    integer_parts: Vec<u32>,
    /// floor(frac(t P w_i / q_i) 2^120) as four 30-bit limbs, most significant first.
    fractions: Vec<[u32; FRACTION_LIMBS]>,
    /// With P, per output: Montgomery-form weights of the rows x_0 .. x_{k-1}, the low 30 and
    /// the high bits of the rounded fraction sum, and the output's own residue.
    dot_weights: Vec<Vec<u32>>,
}

impl ScaleRound {
    /// round(t X / Q) mod each output, for X given mod Q only (decryption: outputs = [t]).
    pub fn new(q: &[Modulus], t: u32, outputs: &[Modulus]) -> Self {
        Self::build(q, t, outputs, false)
    }

    /// round(t X / Q) mod each p_j, for X given mod Q P where P is the product of `p`, in
    /// Montgomery form: every residue is X 2^-32 mod its prime (BFV multiplication's tensor,
    /// whose products are not corrected for the 2^-32; the weights here undo it).
    pub fn with_auxiliary(q: &[Modulus], t: u32, p: &[Modulus]) -> Self {
        Self::build(q, t, p, true)
    }

    fn build(q: &[Modulus], t: u32, outputs: &[Modulus], outputs_in_input: bool) -> Self {
        // With P the residues are Montgomery forms x 2^-32: each weight of an input residue
        // is taken times 2^32 mod its prime.
        let montgomery = outputs_in_input;
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
            let w = match montgomery {
                true => qi.mul(w, qi.montgomery_r().value),
                false => w,
            };
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
            // Long division of remainder / q_i in base 2^30.
            let mut rest = remainder;
            fractions.push(core::array::from_fn(|_| {
                let numerator = rest << FRACTION_BITS;
                rest = numerator % qv;
                (numerator / qv) as u32
            }));
        }
        // With P: t Q^-1 mod p_j, the weight of the outputs' own residues.
        let own_weights: Option<Vec<u32>> = outputs_in_input.then(|| {
            outputs
                .iter()
                .map(|p| {
                    let q_mod_p = q.iter().fold(1, |acc, m| p.mul(acc, p.reduce(m.value())));
                    let own = p.mul(p.reduce(t), p.inv(q_mod_p));
                    p.mul(own, p.montgomery_r().value)
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

    /// The same scaling with output j multiplied by `factors[j]` mod p_j, at no cost (folded
    /// into the weights): multiplication folds the inverse cofactors of its conversion from P
    /// back to Q here (see `BaseConverter::convert_normalized_with`).
    pub fn times_outputs(mut self, factors: &[u32]) -> Self {
        assert!(
            !self.dot_weights.is_empty() && factors.len() == self.outputs.len(),
            "one factor per output of a scaling with an auxiliary basis"
        );
        for ((weights, p), &f) in self.dot_weights.iter_mut().zip(&self.outputs).zip(factors) {
            let f = p.reduce(f);
            weights.iter_mut().for_each(|w| *w = p.mul(*w, f));
        }
        self
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
        self.apply_with(
            backend,
            q_residues,
            own_residues,
            output,
            n,
            &mut ScaleScratch::default(),
        )
    }

    /// [`Self::apply`] in `scratch`'s buffers, grown once and reused.
    pub fn apply_with(
        &self,
        backend: &Backend,
        q_residues: &[u32],
        own_residues: Option<&[u32]>,
        output: &mut [u32],
        n: usize,
        scratch: &mut ScaleScratch,
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
        // round(sum_i x_i frac_i) < k 2^30, as its low 30 and its high bits.
        let rounded = grown(&mut scratch.rounded, 2 * n);
        let (rounded_low, rounded_high) = rounded.split_at_mut(n);
        let rows: heapless::Vec<&[u32], MAX_DOT_ROWS> = q_residues.chunks_exact(n).collect();
        backend.fraction_sums(rounded_low, rounded_high, &rows, &self.fractions);
        if let Some(own) = own_residues {
            let mut rows = rows.clone();
            rows.extend([&rounded_low[..], &rounded_high[..]]);
            let own: heapless::Vec<&[u32], MAX_LIMBS> = own.chunks_exact(n).collect();
            let mut outs: heapless::Vec<&mut [u32], MAX_LIMBS> =
                output.chunks_exact_mut(n).collect();
            let weights: heapless::Vec<&[u32], MAX_LIMBS> =
                self.dot_weights.iter().map(Vec::as_slice).collect();
            backend.dot_montgomery_outputs(&mut outs, &rows, &own, &weights, &self.outputs);
            return;
        }
        let rounded: Vec<u64> = rounded_low
            .iter()
            .zip(rounded_high.iter())
            .map(|(&l, &h)| l as u64 | (h as u64) << FRACTION_BITS)
            .collect();
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
