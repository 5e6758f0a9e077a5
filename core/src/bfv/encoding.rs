//! Batch encoding: n integers mod t in the slots of one plaintext.
//!
//! Slot i holds the evaluation of the plaintext polynomial at psi_t^(2 bitrev(i) + 1) for
//! the canonical primitive 2n-th root psi_t mod t: encoding is the inverse NTT mod t and
//! decoding the forward one, so slot-wise products are polynomial products.

use alloc::vec::Vec;

use super::{Parameters, Plaintext};
use crate::Error;
use crate::backend::Kernels;
use crate::ntt::bit_reverse;

/// The exponent e (odd, below 2n) of slot i: slot i holds m(psi_t^e).
pub fn slot_exponent(n: usize, slot: usize) -> usize {
    2 * bit_reverse(slot, n.trailing_zeros()) + 1
}

/// The slot that holds m(psi_t^e), for an odd exponent e (taken mod 2n).
pub fn exponent_slot(n: usize, exponent: usize) -> usize {
    bit_reverse((exponent % (2 * n)) / 2, n.trailing_zeros())
}

/// Encodes vectors of integers into plaintext slots and back.
#[derive(Clone, Copy, Debug)]
pub struct BatchEncoder<'a> {
    params: &'a Parameters,
}

impl<'a> BatchEncoder<'a> {
    /// An encoder for these parameters.
    pub fn new(params: &'a Parameters) -> Self {
        Self { params }
    }

    /// Encodes up to n values (reduced mod t); missing slots are zero.
    pub fn encode(&self, values: &[u64]) -> Result<Plaintext, Error> {
        let t = self.params.plaintext_modulus();
        self.encode_residues(values.iter().map(|&v| t.reduce_u64(v)), values.len())
    }

    /// Encodes up to n signed values (taken mod t).
    pub fn encode_signed(&self, values: &[i64]) -> Result<Plaintext, Error> {
        let t = self.params.plaintext_modulus();
        self.encode_residues(values.iter().map(|&v| t.reduce_i64(v)), values.len())
    }

    fn encode_residues(
        &self,
        values: impl Iterator<Item = u32>,
        len: usize,
    ) -> Result<Plaintext, Error> {
        let n = self.params.degree();
        if len > n {
            return Err(Error::InvalidParameters {
                reason: "more values than slots",
            });
        }
        let mut slots = alloc::vec![0u32; n];
        slots.iter_mut().zip(values).for_each(|(s, v)| *s = v);
        self.params
            .backend()
            .inverse_ntt(&mut slots, self.params.t_table());
        Ok(Plaintext {
            coefficients: slots,
        })
    }

    /// The n slot values, each in [0, t).
    pub fn decode(&self, plaintext: &Plaintext) -> Vec<u64> {
        self.decode_residues(plaintext)
            .into_iter()
            .map(u64::from)
            .collect()
    }

    /// The n slot values as signed integers in (-t/2, t/2].
    pub fn decode_signed(&self, plaintext: &Plaintext) -> Vec<i64> {
        let t = self.params.plaintext_modulus();
        self.decode_residues(plaintext)
            .into_iter()
            .map(|v| t.center(v))
            .collect()
    }

    fn decode_residues(&self, plaintext: &Plaintext) -> Vec<u32> {
        let mut slots = plaintext.coefficients.clone();
        self.params
            .backend()
            .forward_ntt(&mut slots, self.params.t_table());
        slots
    }
}
