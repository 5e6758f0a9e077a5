//! Plaintexts and ciphertexts.

use alloc::vec::Vec;

use super::Parameters;
use crate::Error;

/// A plaintext: n coefficients modulo t (see [`super::BatchEncoder`] for slots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plaintext {
    pub(crate) coefficients: Vec<u32>,
}

impl Plaintext {
    /// Wraps coefficients, checking there are n of them, each below t.
    pub fn from_coefficients(params: &Parameters, coefficients: Vec<u32>) -> Result<Self, Error> {
        let t = params.plaintext_modulus().value();
        if coefficients.len() != params.degree() || coefficients.iter().any(|&c| c >= t) {
            return Err(Error::InvalidParameters {
                reason: "plaintext needs n coefficients below t",
            });
        }
        Ok(Self { coefficients })
    }

    /// The coefficients, each in [0, t).
    pub fn coefficients(&self) -> &[u32] {
        &self.coefficients
    }
}

/// A BFV ciphertext: 2 (or, before relinearization, 3) polynomials in coefficient form
/// modulo the first `level` primes of Q, each stored limb by limb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ciphertext {
    /// [`Parameters::id`] of the parameters it was made under.
    pub(crate) params: u64,
    pub(crate) level: usize,
    pub(crate) n: usize,
    pub(crate) polys: Vec<Vec<u32>>,
}

impl Ciphertext {
    /// Assembles a ciphertext from polynomials of `level` limbs each (crate-internal: callers
    /// guarantee the shapes and the residue ranges).
    pub(crate) fn from_parts(params: &Parameters, level: usize, polys: Vec<Vec<u32>>) -> Self {
        let n = params.degree();
        debug_assert!(polys.iter().all(|p| p.len() == level * n));
        Self {
            params: params.id(),
            level,
            n,
            polys,
        }
    }

    /// Its polynomials' buffers, for reuse (crate-internal).
    pub(crate) fn into_polys(self) -> Vec<Vec<u32>> {
        self.polys
    }

    /// [`Parameters::id`] of the parameters the ciphertext was made under.
    pub fn parameters_id(&self) -> u64 {
        self.params
    }

    /// Number of primes of Q the ciphertext is defined modulo.
    pub fn level(&self) -> usize {
        self.level
    }

    /// Number of polynomials (2, or 3 after a multiplication without relinearization).
    pub fn size(&self) -> usize {
        self.polys.len()
    }

    /// Polynomial i, limb-major (level limbs of n residues).
    pub fn poly(&self, i: usize) -> &[u32] {
        &self.polys[i]
    }

    /// Size in bytes of the residues (the serialized size is close to this times 30/32).
    pub fn residue_bytes(&self) -> usize {
        self.polys.iter().map(|p| p.len() * 4).sum()
    }
}

/// A fresh ciphertext expanded from its seed ([`super::SeededCiphertext::expand_ntt`]) with
/// its second polynomial, the uniform a, left in the NTT form it is drawn in.
///
/// A product starts by transforming its factors to NTT form anyway, and linear maps with
/// integer weights (the network's convolution) work in either form: a service that squares
/// linear combinations of its inputs thus skips a's inverse transform at expansion; each
/// square takes a's Q limbs as they are for its tensor and inverse-transforms them only for
/// the extension to P, where it would otherwise have forward-transformed them.
/// [`Self::into_coefficients`] gives the plain ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpandedCiphertext {
    /// c0 in coefficient form, c1 in NTT form (limb by limb, each in its prime's table).
    pub(crate) inner: Ciphertext,
}

impl ExpandedCiphertext {
    /// [`Parameters::id`] of the parameters it was made under.
    pub fn parameters_id(&self) -> u64 {
        self.inner.params
    }

    /// Number of primes of Q the ciphertext is defined modulo.
    pub fn level(&self) -> usize {
        self.inner.level
    }

    /// The ciphertext in coefficient form (one inverse NTT a limb of a).
    pub fn into_coefficients(mut self, params: &Parameters) -> Result<Ciphertext, Error> {
        params.check_id(self.inner.params)?;
        params
            .ciphertext_basis()
            .inverse(params.backend(), &mut self.inner.polys[1], 0);
        Ok(self.inner)
    }
}
