//! round(t * X / Q) for X given by its residues modulo Q, reduced modulo each output prime
//! (decryption: the output is t itself), without forming X.
//!
//! With x_i the residues of X mod the primes q_i of Q and w_i = (Q/q_i)^-1 mod q_i,
//! t X / Q = sum_i x_i (t w_i / q_i) - (a multiple of t, which vanishes mod t). Each
//! t w_i / q_i splits into an integer part, reduced mod every output prime,
//! and a fraction kept as a 90-bit fixed-point number (three 30-bit limbs, summed by the
//! backend's [`Kernels::fraction_sums`]), so the rounding is exact whenever Q < 2^55 and
//! wrong by one (a negligible extra noise) only within 2^-56 of a tie.

use alloc::vec::Vec;

use super::{grown, others, product_mod};
use crate::backend::dot::{FRACTION_BITS, FRACTION_LIMBS, MAX_ROWS as MAX_DOT_ROWS};
use crate::backend::{Backend, Kernels};
use crate::zq::Modulus;

/// a * b mod m for m < 2^64 (setup only).
fn mul_mod(a: u128, b: u128, m: u128) -> u128 {
    a % m * (b % m) % m
}

/// floor(numerator / q 2^90) for numerator < q, as three 30-bit limbs, most significant
/// first: long division in base 2^30 (setup only).
pub(crate) fn fraction_limbs(numerator: u128, q: u128) -> [u32; FRACTION_LIMBS] {
    let mut rest = numerator;
    core::array::from_fn(|_| {
        let shifted = rest << FRACTION_BITS;
        rest = shifted % q;
        (shifted / q) as u32
    })
}

/// The buffers of [`ScaleRound::apply_with`].
#[derive(Clone, Debug, Default)]
pub struct ScaleScratch {
    rounded: Vec<u32>,
}

/// Scale-and-round from Q to the outputs.
#[derive(Clone, Debug)]
pub struct ScaleRound {
    inputs: Vec<Modulus>,
    outputs: Vec<Modulus>,
    /// floor(t w_i / q_i) mod output j, at [j * inputs + i].
    integer_parts: Vec<u32>,
    /// floor(frac(t w_i / q_i) 2^90) as three 30-bit limbs, most significant first.
    fractions: Vec<[u32; FRACTION_LIMBS]>,
}

impl ScaleRound {
    /// round(t X / Q) mod each output, for X given mod Q (decryption: outputs = [t]).
    pub fn new(q: &[Modulus], t: u32, outputs: &[Modulus]) -> Self {
        let k = q.len();
        let mut integer_parts = alloc::vec![0u32; k * outputs.len()];
        let mut fractions = Vec::with_capacity(k);
        for (i, qi) in q.iter().enumerate() {
            let qv = qi.value() as u128;
            // w_i = (product of every other prime)^-1 mod q_i.
            let w = qi.inv(product_mod(qi, others(q, i)));
            // A = t w_i, known modulo q_i o_j.
            let a_mod = |m: u128| mul_mod(t as u128, w as u128, m);
            let remainder = a_mod(qv); // A mod q_i
            for (j, o) in outputs.iter().enumerate() {
                let m = qv * o.value() as u128;
                // floor(A / q_i) mod o = ((A mod q_i o) - (A mod q_i)) / q_i.
                integer_parts[j * k + i] = ((a_mod(m) + m - remainder) % m / qv) as u32;
            }
            fractions.push(fraction_limbs(remainder, qv));
        }
        Self {
            inputs: q.to_vec(),
            outputs: outputs.to_vec(),
            integer_parts,
            fractions,
        }
    }

    /// Scales n coefficients: `q_residues` holds the inputs' limbs; writes the outputs' limbs.
    pub fn apply(&self, backend: &Backend, q_residues: &[u32], output: &mut [u32], n: usize) {
        self.apply_with(backend, q_residues, output, n, &mut ScaleScratch::default())
    }

    /// [`Self::apply`] in `scratch`'s buffers, grown once and reused.
    pub fn apply_with(
        &self,
        backend: &Backend,
        q_residues: &[u32],
        output: &mut [u32],
        n: usize,
        scratch: &mut ScaleScratch,
    ) {
        let k = self.inputs.len();
        assert!(
            q_residues.len() == k * n && output.len() == self.outputs.len() * n,
            "limb counts"
        );
        // round(sum_i x_i frac_i) < k 2^30, as its low 30 and its high bits.
        let rounded = grown(&mut scratch.rounded, 2 * n);
        let (rounded_low, rounded_high) = rounded.split_at_mut(n);
        let rows: heapless::Vec<&[u32], MAX_DOT_ROWS> = q_residues.chunks_exact(n).collect();
        backend.fraction_sums(rounded_low, rounded_high, &rows, &self.fractions);
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
