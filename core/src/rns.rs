//! Residue number system: a basis of NTT primes with its transform tables, and exact
//! conversion of centered values between two bases.
//!
//! A polynomial modulo Q = q_0 ... q_{k-1} is stored as k limbs of n residues each. The
//! conversions below never form the big integer: they follow Halevi, Polyakov and Shoup
//! ("An improved RNS variant of the BFV homomorphic encryption scheme", 2018), using one
//! floating-point sum per coefficient to find how many multiples of Q to subtract.

use alloc::vec::Vec;

use crate::Error;
use crate::backend::{Backend, Kernels};
use crate::ntt::NttTable;
use crate::zq::{Modulus, ShoupConstant};

pub mod scale;
pub mod tensor_scale;

pub use scale::{ScaleRound, ScaleScratch};
pub use tensor_scale::{TensorScale, TensorScaleScratch};

/// Most primes a basis may hold: sums of that many products of residues fit a u64.
pub const MAX_LIMBS: usize = 15;

/// A basis of distinct NTT-friendly primes for one ring degree, with their NTT tables.
#[derive(Clone, Debug)]
pub struct RnsBasis {
    n: usize,
    moduli: Vec<Modulus>,
    tables: Vec<NttTable<Vec<u32>>>,
}

impl RnsBasis {
    /// Validates the primes (distinct, each 1 mod 2n) and builds their tables.
    pub fn new(n: usize, primes: &[u32]) -> Result<Self, Error> {
        if primes.is_empty() || primes.len() > MAX_LIMBS {
            return Err(Error::InvalidParameters {
                reason: "a basis holds 1 to 15 primes",
            });
        }
        let mut moduli = Vec::with_capacity(primes.len());
        let mut tables = Vec::with_capacity(primes.len());
        for (i, &q) in primes.iter().enumerate() {
            if primes[..i].contains(&q) {
                return Err(Error::InvalidModulus {
                    value: q as u64,
                    reason: "repeated in the basis",
                });
            }
            let modulus = Modulus::new(q)?;
            tables.push(NttTable::new(modulus, n)?);
            moduli.push(modulus);
        }
        Ok(Self { n, moduli, tables })
    }

    /// Ring degree.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of primes.
    pub fn len(&self) -> usize {
        self.moduli.len()
    }

    /// Whether the basis has no primes.
    pub fn is_empty(&self) -> bool {
        self.moduli.is_empty()
    }

    /// The primes' moduli.
    pub fn moduli(&self) -> &[Modulus] {
        &self.moduli
    }

    /// The primes, in order.
    pub fn primes(&self) -> Vec<u32> {
        self.moduli().iter().map(Modulus::value).collect()
    }

    /// The NTT table of prime i.
    pub fn table(&self, i: usize) -> &NttTable<Vec<u32>> {
        &self.tables[i]
    }

    /// Sum of the primes' bit sizes (an upper bound on log2 of their product).
    pub fn bits(&self) -> u32 {
        self.moduli.iter().map(Modulus::bits).sum()
    }

    /// log2 of the product of the primes.
    pub fn log2(&self) -> f64 {
        self.moduli
            .iter()
            .map(|m| libm_log2(m.value() as f64))
            .sum()
    }

    /// Forward NTT of every limb of `data` (limb-major, `count` limbs of n words) in place.
    pub fn forward(&self, backend: &Backend, data: &mut [u32], first_limb: usize) {
        for (i, limb) in data.chunks_exact_mut(self.n).enumerate() {
            backend.forward_ntt(limb, &self.tables[first_limb + i]);
        }
    }

    /// Inverse NTT of every limb of `data` in place.
    pub fn inverse(&self, backend: &Backend, data: &mut [u32], first_limb: usize) {
        for (i, limb) in data.chunks_exact_mut(self.n).enumerate() {
            backend.inverse_ntt(limb, &self.tables[first_limb + i]);
        }
    }
}

/// The product of `primes` mod m (setup only).
pub(crate) fn product_mod<'a>(m: &Modulus, primes: impl IntoIterator<Item = &'a Modulus>) -> u32 {
    primes
        .into_iter()
        .fold(1, |acc, p| m.mul(acc, m.reduce(p.value())))
}

/// The primes of `basis` but its i-th: with [`product_mod`], the CRT cofactor of prime i.
pub(crate) fn others(basis: &[Modulus], i: usize) -> impl Iterator<Item = &Modulus> {
    basis
        .iter()
        .enumerate()
        .filter(move |&(j, _)| j != i)
        .map(|(_, m)| m)
}

/// log2 without std (the `libm` crate; used on public sizes only).
pub(crate) fn libm_log2(x: f64) -> f64 {
    libm::log2(x)
}

/// The buffers of [`BaseConverter::convert_with`].
#[derive(Clone, Debug, Default)]
pub struct ConversionScratch {
    y: Vec<u32>,
    v: Vec<u32>,
}

/// The first `len` elements of `buffer`, grown (with zeros, once) to hold them: scratch whose
/// old contents the caller overwrites.
pub(crate) fn grown(buffer: &mut Vec<u32>, len: usize) -> &mut [u32] {
    if buffer.len() < len {
        buffer.resize(len, 0);
    }
    &mut buffer[..len]
}

/// Exact conversion of centered values from basis `from` (product F) to basis `to`.
///
/// For residues x_i of X in (-F/2, F/2]: with y_i = [x_i (F/q_i)^-1]_{q_i},
/// X = sum y_i (F/q_i) - v F where v = round(sum y_i / q_i). The sum is taken in f64; it can
/// pick the wrong v only when X lies within about F * 2^-50 of +-F/2, where the two choices
/// are both representatives of the same class mod F. The sums of products run in the
/// backend's [`Kernels::dot_montgomery`], so every prime of `to` must exceed 2^29.
#[derive(Clone, Debug)]
pub struct BaseConverter {
    from: Vec<Modulus>,
    to: Vec<Modulus>,
    /// (F/q_i)^-1 mod q_i, with Shoup quotients.
    inverse_cofactors: Vec<ShoupConstant>,
    /// 1 / q_i.
    reciprocals: Vec<f64>,
    /// Per output p_j, Montgomery-form weights of the rows y_0 .. y_{k-1}, v:
    /// (F/q_i) 2^32 mod p_j and -F 2^32 mod p_j.
    weights: Vec<Vec<u32>>,
}

impl BaseConverter {
    /// Precomputes the conversion from `from` to `to` (distinct primes below 2^30, those of
    /// `to` above 2^29; at most [`MAX_LIMBS`] in `from`).
    pub fn new(from: &[Modulus], to: &[Modulus]) -> Self {
        assert!(from.len() <= MAX_LIMBS, "too many primes");
        assert!(
            to.iter().all(|p| p.bits() == 30),
            "output primes must have 30 bits"
        );
        let inverse_cofactors = from
            .iter()
            .enumerate()
            .map(|(i, q)| q.shoup(q.inv(product_mod(q, others(from, i)))))
            .collect();
        let reciprocals = from.iter().map(|q| 1.0 / q.value() as f64).collect();
        let weights = to
            .iter()
            .map(|p| {
                let product = product_mod(p, from);
                (0..from.len())
                    .map(|i| product_mod(p, others(from, i)))
                    .chain(core::iter::once(p.neg(product)))
                    .map(|w| p.to_montgomery(w))
                    .collect()
            })
            .collect();
        Self {
            from: from.to_vec(),
            to: to.to_vec(),
            inverse_cofactors,
            reciprocals,
            weights,
        }
    }

    /// Converts n coefficients: `input` holds from.len() limbs, `output` to.len() limbs.
    pub fn convert(&self, backend: &Backend, input: &[u32], output: &mut [u32], n: usize) {
        self.convert_with(backend, input, output, n, &mut ConversionScratch::default())
    }

    /// [`Self::convert`] in `scratch`'s buffers, grown once and reused: a loop of conversions
    /// allocates (and zeroes) nothing.
    pub fn convert_with(
        &self,
        backend: &Backend,
        input: &[u32],
        output: &mut [u32],
        n: usize,
        scratch: &mut ConversionScratch,
    ) {
        let k = self.from.len();
        assert!(
            input.len() == k * n && output.len() == self.to.len() * n,
            "limb counts"
        );
        // y_i = [x_i (F/q_i)^-1]_{q_i}.
        let y = grown(&mut scratch.y, k * n);
        for (i, (limb, x)) in y.chunks_exact_mut(n).zip(input.chunks_exact(n)).enumerate() {
            backend.mul_scalar(limb, x, self.inverse_cofactors[i], &self.from[i]);
        }
        self.convert_rows(backend, y, output, n, &mut scratch.v);
    }

    /// (F/q_i)^-1 mod q_i: what [`Self::convert_from_cofactored`] wants its input times.
    pub(crate) fn inverse_cofactor(&self, i: usize) -> u32 {
        self.inverse_cofactors[i].value
    }

    /// [`Self::convert_with`] from the y_i = [x_i (F/q_i)^-1]_{q_i} themselves, for a caller
    /// that has folded [`Self::inverse_cofactor`] into an earlier pass (an inverse NTT).
    pub(crate) fn convert_from_cofactored(
        &self,
        backend: &Backend,
        y: &[u32],
        output: &mut [u32],
        n: usize,
        scratch: &mut ConversionScratch,
    ) {
        assert!(
            y.len() == self.from.len() * n && output.len() == self.to.len() * n,
            "limb counts"
        );
        self.convert_rows(backend, y, output, n, &mut scratch.v);
    }

    /// The conversion from the y_i, with `v` the buffer of the wrap counts.
    fn convert_rows(
        &self,
        backend: &Backend,
        y: &[u32],
        output: &mut [u32],
        n: usize,
        v: &mut Vec<u32>,
    ) {
        // v = round(sum_i y_i / q_i).
        let mut rows: heapless::Vec<&[u32], { MAX_LIMBS + 1 }> = y.chunks_exact(n).collect();
        // y < 2^30 and the sum < k + 1; the 0.5 makes truncation round.
        let v = grown(v, n);
        backend.wrap_counts(v, &rows, &self.reciprocals);
        rows.push(v).expect("at most MAX_LIMBS rows");
        let mut outs: heapless::Vec<&mut [u32], MAX_LIMBS> = output.chunks_exact_mut(n).collect();
        let weights: heapless::Vec<&[u32], MAX_LIMBS> =
            self.weights.iter().map(Vec::as_slice).collect();
        backend.dot_montgomery_outputs(&mut outs, &rows, &[], &weights, &self.to);
    }
}
