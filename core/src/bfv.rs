//! RNS-BFV: leveled, exact homomorphic encryption of polynomials modulo t with SIMD batching.
//!
//! Ciphertexts live in coefficient form modulo Q_L = q_0 ... q_{L-1}, where L is the
//! ciphertext's *level*: fresh ciphertexts use the whole chain and modulus switching drops the
//! last prime. Multiplication follows Halevi-Polyakov-Shoup with an auxiliary basis P (at
//! level L, the first primes of P that hold its tensor products: fewer at lower levels);
//! relinearization uses the RNS gadget (one digit per prime of Q).

use alloc::vec::Vec;

use zeroize::Zeroize;

use crate::Error;
use crate::backend::{Backend, Kernels};
use crate::ntt::NttTable;
use crate::rns::{BaseConverter, RnsBasis, ScaleRound, TensorScale};
use crate::sampling::CBD_ETA;
use crate::zq::prime::ntt_primes;
use crate::zq::{Modulus, ShoupConstant};

mod ciphertext;
mod encoding;
mod encryption;
mod evaluation;
mod galois;
mod keys;
mod multiply;
mod noise;
pub mod serialization;
mod streaming;

pub use ciphertext::{Ciphertext, ExpandedCiphertext, Plaintext};
pub use encoding::{BatchEncoder, exponent_slot, slot_exponent};
pub use encryption::SeededCiphertext;
pub use evaluation::Evaluator;
pub use galois::{GaloisKey, galois_slot};
pub use keys::{KeyGenerator, PublicKey, RelinearizationKey, SecretKey};
pub use multiply::MultiplyScratch;
pub use streaming::{CompactChannel, CompactScratch, LimbScratch};

/// The HomomorphicEncryption.org bound on log2 Q for 128-bit security with ternary secrets
/// (classical attacks), by ring degree. Q includes every modulus that key material uses.
pub const fn max_log_q_128(n: usize) -> Option<u32> {
    match n {
        1024 => Some(27),
        2048 => Some(54),
        4096 => Some(109),
        8192 => Some(218),
        16384 => Some(438),
        32768 => Some(881),
        _ => None,
    }
}

/// How many of `primes` (in order) a multiplication mod Q needs as its auxiliary basis P (None
/// if all of them are too few): P must hold the quotient z = (C - C_Q) / Q of the tensor
/// products C of centered inputs (see [`TensorScale`]), |C| <= n Q^2 / 2, so
/// |z| <= n Q / 2 + 15 < P / 2; with three bits of margin (which also keeps the wrap count of
/// its conversion far from a tie), log2 P > log2 Q + log2 n + 3. Scaling into P first would
/// need log2 t more.
fn auxiliary_primes_needed(log_q: f64, n: usize, primes: &[u32]) -> Option<usize> {
    let needed = auxiliary_bits_needed(log_q, n);
    let mut log_p = 0.0;
    for (count, &prime) in primes.iter().enumerate() {
        if log_p > needed {
            return Some(count);
        }
        log_p += libm_log2(prime as f64);
    }
    (log_p > needed).then_some(primes.len())
}

/// The bits an auxiliary basis must exceed for the tensor products of ciphertexts mod Q (see
/// [`auxiliary_primes_needed`]).
fn auxiliary_bits_needed(log_q: f64, n: usize) -> f64 {
    log_q + libm_log2(n as f64) + 3.0
}

/// Everything that depends on the level L (the first L primes of Q).
#[derive(Clone, Debug)]
pub(crate) struct Level {
    /// floor(Q_L / t) mod q_i.
    pub delta: Vec<ShoupConstant>,
    /// Q_L mod t: with `delta`, gives round(Q_L m / t) exactly.
    pub q_mod_t: u32,
    /// round(t X / Q_L) mod t: decryption.
    pub decryptor: ScaleRound,
    /// How many of P's primes a multiplication at this level uses (P_L, the first ones):
    /// enough to hold C / Q_L for its tensor products C (see
    /// [`auxiliary_primes_needed`]), so a lower level transforms and converts fewer limbs.
    pub auxiliary_limbs: usize,
    /// log2 P_L - (log2 Q_L + log2 n + 3): how many bits of weight the sums of tensor
    /// products that P_L holds may carry (see [`Parameters::tensor_sum_headroom`]).
    pub tensor_sum_headroom: f64,
    /// Extension of centered values from Q_L to P_L.
    pub q_to_p: BaseConverter,
    /// round(t X / Q_L) mod Q_L for a tensor product X mod Q_L P_L (Montgomery form).
    pub tensor_scale: TensorScale,
    /// `tensor_scale` with its first L - 1 outputs times q_{L-1}^-1 (none at level 1): a
    /// product's switch down to level L - 1 folded into its scaling (see
    /// `multiply::tensor_into`).
    pub tensor_scale_down: Option<TensorScale>,
    /// q_{L-1}^-1 mod q_i for i < L - 1 (modulus switching down from this level).
    pub last_inverse: Vec<ShoupConstant>,
    /// -q_{L-1}^-1 mod q_i for i < L - 1: the dropped residue's term of a switch down (see
    /// `multiply::subtract_dropped`).
    pub negated_last_inverse: Vec<ShoupConstant>,
    /// Key switching's division by the special modulus S (none without special primes):
    /// conversion of centered values from S to Q_L, and S^-1 mod q_i.
    pub special_to_q: Option<(BaseConverter, Vec<ShoupConstant>)>,
}

/// A validated BFV parameter set with its precomputed tables.
#[derive(Clone, Debug)]
pub struct Parameters {
    n: usize,
    q: RnsBasis,
    p: RnsBasis,
    /// The special primes S of key switching (Galois keys live modulo Q S).
    special: Option<RnsBasis>,
    t: Modulus,
    t_table: NttTable<Vec<u32>>,
    levels: Vec<Level>,
    backend: Backend,
    id: u64,
    ring_id: u64,
}

/// Builds [`Parameters`]: ring degree, ciphertext primes, plaintext modulus.
#[derive(Clone, Debug, Default)]
pub struct ParametersBuilder {
    n: usize,
    q_primes: Vec<u32>,
    special_primes: usize,
    t: u32,
    backend: Option<Backend>,
    insecure: bool,
}

impl ParametersBuilder {
    /// Ring degree n (power of two, 1024 to 32768).
    pub fn degree(mut self, n: usize) -> Self {
        self.n = n;
        self
    }

    /// The ciphertext primes q_0 ... q_{k-1}, each 1 mod 2n and below 2^30.
    pub fn ciphertext_primes(mut self, primes: &[u32]) -> Self {
        self.q_primes = primes.to_vec();
        self
    }

    /// `count` ciphertext primes of `bits` bits (the largest such primes, in descending order).
    pub fn ciphertext_prime_sizes(mut self, bits: u32, count: usize) -> Self {
        self.q_primes = ntt_primes(bits, self.n.max(1)).take(count).collect();
        self
    }

    /// `count` special 30-bit primes S for key switching (Galois keys): the largest NTT
    /// primes not in Q. Key-switching noise is divided by S, so rotations of fresh
    /// ciphertexts cost a few bits of budget instead of about 30 per prime; Q S counts
    /// towards the security bound.
    pub fn special_primes(mut self, count: usize) -> Self {
        self.special_primes = count;
        self
    }

    /// The plaintext modulus t: a prime 1 mod 2n (so that batching works).
    pub fn plaintext_modulus(mut self, t: u32) -> Self {
        self.t = t;
        self
    }

    /// The kernel backend (default: the fastest this CPU runs).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Allows parameters below 128-bit security: only for tests on toy sizes.
    #[doc(hidden)]
    pub fn insecure_for_tests(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Validates and precomputes.
    pub fn build(self) -> Result<Parameters, Error> {
        Parameters::new(self)
    }
}

/// Identifier of a parameter set: FNV-1a over (n, t, q primes) and, if there are any, the
/// number of special primes and the primes (a count is never a 30-bit prime, so the two
/// lists cannot be confused). Not a security feature: it lets deserialization refuse data
/// made for other parameters.
fn parameter_id(n: usize, t: u32, q: &[u32], special: &[u32]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let marker = (!special.is_empty()).then_some(special.len() as u32);
    let words = [n as u32, t]
        .into_iter()
        .chain(q.iter().copied())
        .chain(marker)
        .chain(special.iter().copied());
    for w in words {
        for b in w.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

impl Parameters {
    /// Starts a builder.
    pub fn builder() -> ParametersBuilder {
        ParametersBuilder::default()
    }

    /// The CryptoNets preset at n = 8192: seven 30-bit ciphertext primes (log2 Q = 210,
    /// below the 218 bits allowed for 128-bit security) and plaintext modulus `t`.
    pub fn cryptonets_8192(t: u32) -> Result<Self, Error> {
        Self::builder()
            .degree(8192)
            .ciphertext_prime_sizes(30, 7)
            .plaintext_modulus(t)
            .build()
    }

    fn new(b: ParametersBuilder) -> Result<Self, Error> {
        let n = b.n;
        let bound = match max_log_q_128(n) {
            Some(bound) => bound,
            None if b.insecure => u32::MAX,
            None => return Err(Error::InvalidDegree { n }),
        };
        if b.q_primes.is_empty() {
            return Err(Error::InvalidParameters {
                reason: "no ciphertext primes",
            });
        }
        if b.q_primes.iter().any(|&q| q >> 29 != 1) {
            // The base-conversion kernels fold 64-bit sums with one step that needs q > 2^29.
            return Err(Error::InvalidParameters {
                reason: "ciphertext primes must have exactly 30 bits",
            });
        }
        let q = RnsBasis::new(n, &b.q_primes)?;
        let special_primes: Vec<u32> = ntt_primes(30, n)
            .filter(|p| !b.q_primes.contains(p) && *p != b.t)
            .take(b.special_primes)
            .collect();
        if special_primes.len() != b.special_primes || b.special_primes > crate::rns::MAX_LIMBS {
            return Err(Error::NotEnoughPrimes {
                bits: 30,
                count: b.special_primes,
            });
        }
        let special = match special_primes.is_empty() {
            true => None,
            false => Some(RnsBasis::new(n, &special_primes)?),
        };
        let special_log2 = special.as_ref().map_or(0.0, RnsBasis::log2);
        if !b.insecure && q.log2() + special_log2 > bound as f64 {
            return Err(Error::InvalidParameters {
                reason: "log2 Q exceeds the HomomorphicEncryption.org bound for 128-bit security",
            });
        }
        let t = Modulus::new(b.t)?;
        if b.q_primes.iter().any(|&q| q <= b.t) {
            // Multiplication's scaling takes t / q_i as a pure fraction (see `TensorScale`).
            return Err(Error::InvalidParameters {
                reason: "t must be below every ciphertext prime",
            });
        }
        let t_table = NttTable::new(t, n)?;
        if (t.bits() as f64) + 2.0 > q.log2() {
            return Err(Error::InvalidParameters {
                reason: "Q must be larger than 4t",
            });
        }
        // P is sized for the top level; each level multiplies with the prefix it needs.
        let fresh = |p: &u32| !b.q_primes.contains(p) && !special_primes.contains(p) && *p != b.t;
        let p_primes: Vec<u32> = ntt_primes(30, n)
            .filter(fresh)
            .take(crate::rns::MAX_LIMBS + 1)
            .collect();
        let p_primes = match auxiliary_primes_needed(q.log2(), n, &p_primes) {
            Some(count) if count <= crate::rns::MAX_LIMBS => p_primes[..count].to_vec(),
            _ => {
                return Err(Error::InvalidParameters {
                    reason: "no auxiliary basis for this Q",
                });
            }
        };
        let p = RnsBasis::new(n, &p_primes)?;
        let levels = (1..=q.len())
            .map(|l| {
                let special = special.as_ref().map(RnsBasis::moduli);
                let q = &q.moduli()[..l];
                let log_q = q.iter().map(|m| libm_log2(m.value() as f64)).sum();
                let limbs = auxiliary_primes_needed(log_q, n, &p_primes)
                    .expect("a prefix of Q needs at most the primes Q needs");
                Self::level(n, q, &p.moduli()[..limbs], special, &t)
            })
            .collect();
        Ok(Self {
            n,
            id: parameter_id(n, b.t, &b.q_primes, &special_primes),
            // t = 0 is never a plaintext modulus, so a ring id never equals a parameter id.
            ring_id: parameter_id(n, 0, &b.q_primes, &special_primes),
            q,
            p,
            special,
            t,
            t_table,
            levels,
            backend: b.backend.unwrap_or_else(Backend::detect),
        })
    }

    fn level(
        n: usize,
        q: &[Modulus],
        p: &[Modulus],
        special: Option<&[Modulus]>,
        t: &Modulus,
    ) -> Level {
        let log2 =
            |basis: &[Modulus]| -> f64 { basis.iter().map(|m| libm_log2(m.value() as f64)).sum() };
        let (q_mod_t, delta) = message_scale(q, t);
        let last = q[q.len() - 1];
        let last_inverse: Vec<ShoupConstant> = q[..q.len() - 1]
            .iter()
            .map(|m| m.shoup(m.inv(m.reduce(last.value()))))
            .collect();
        let special_to_q = special.map(|s| {
            let inverses = q
                .iter()
                .map(|m| {
                    let product = s.iter().fold(1, |acc, p| m.mul(acc, m.reduce(p.value())));
                    m.shoup(m.inv(product))
                })
                .collect();
            (BaseConverter::new(s, q), inverses)
        });
        let tensor_scale = TensorScale::new(q, p, t.value());
        let tensor_scale_down = (q.len() > 1).then(|| {
            let factors: Vec<u32> = last_inverse.iter().map(|w| w.value).chain([1]).collect();
            tensor_scale.clone().times_outputs(&factors)
        });
        let negated_last_inverse = q[..q.len() - 1]
            .iter()
            .zip(&last_inverse)
            .map(|(m, w)| m.shoup(m.neg(w.value)))
            .collect();
        Level {
            delta,
            q_mod_t,
            decryptor: ScaleRound::new(q, t.value(), core::slice::from_ref(t)),
            auxiliary_limbs: p.len(),
            tensor_sum_headroom: log2(p) - auxiliary_bits_needed(log2(q), n),
            q_to_p: BaseConverter::new(q, p),
            tensor_scale,
            tensor_scale_down,
            last_inverse,
            negated_last_inverse,
            special_to_q,
        }
    }

    /// Ring degree n.
    pub fn degree(&self) -> usize {
        self.n
    }

    /// Plaintext modulus t.
    pub fn plaintext_modulus(&self) -> &Modulus {
        &self.t
    }

    /// The ciphertext basis Q (all levels).
    pub fn ciphertext_basis(&self) -> &RnsBasis {
        &self.q
    }

    /// The auxiliary basis P of multiplication at the top level (a level below multiplies
    /// with the first primes of it that it needs).
    pub fn auxiliary_basis(&self) -> &RnsBasis {
        &self.p
    }

    /// How many bits of weight a sum of a square's tensor products at `level` may carry and
    /// still be scaled exactly from the auxiliary basis of that level (none above the top
    /// level): sum_i w_i X_i with sum_i |w_i| < 2^headroom has |z| = |sum / Q_L| below P_L / 2
    /// with the single products' three bits of margin. A dense layer after a square whose
    /// outputs' |weights| sum below 2^headroom can take the unscaled tensors and scale each
    /// output once (`NetworkEvaluator`).
    pub fn tensor_sum_headroom(&self, level: usize) -> f64 {
        match level.checked_sub(1).and_then(|l| self.levels.get(l)) {
            Some(level) => level.tensor_sum_headroom,
            None => f64::NEG_INFINITY,
        }
    }

    /// The special primes of key switching, if any.
    pub fn special_basis(&self) -> Option<&RnsBasis> {
        self.special.as_ref()
    }

    /// The special primes, in order (none without key switching).
    pub fn special_primes(&self) -> Vec<u32> {
        self.special.as_ref().map_or(Vec::new(), RnsBasis::primes)
    }

    /// The limbs key material lives modulo, with their NTT tables: every prime of Q, then the
    /// special primes (if any).
    pub(crate) fn key_limbs(&self) -> Vec<(&Modulus, &NttTable<Vec<u32>>)> {
        let bases = core::iter::once(&self.q).chain(self.special.as_ref());
        bases
            .flat_map(|b| (0..b.len()).map(move |i| (&b.moduli()[i], b.table(i))))
            .collect()
    }

    /// Number of levels (primes of Q).
    pub fn max_level(&self) -> usize {
        self.q.len()
    }

    /// log2 Q at the top level.
    pub fn log_q(&self) -> f64 {
        self.q.log2()
    }

    /// The kernel backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The same parameters on another backend.
    pub fn with_backend(&self, backend: Backend) -> Self {
        Self {
            backend,
            ..self.clone()
        }
    }

    /// Identifier of (n, t, Q, special primes), stored in serialized data.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Identifier of the ring alone (n, Q, special primes), without t: keys depend on it and
    /// nothing else, so the CRT channels of a network (one t each) share one set of keys.
    /// Every key carries the ring id it was made for, and every ciphertext its parameters'
    /// [`Parameters::id`]; operations compare them before any work.
    pub fn ring_id(&self) -> u64 {
        self.ring_id
    }

    /// `Ok` if a key made for the ring `ring` fits these parameters.
    pub(crate) fn check_ring(&self, ring: u64, what: &'static str) -> Result<(), Error> {
        match ring == self.ring_id {
            true => Ok(()),
            false => Err(Error::Incompatible { reason: what }),
        }
    }

    /// `Ok` if a ciphertext made under the parameters `id` fits these parameters.
    pub(crate) fn check_id(&self, id: u64) -> Result<(), Error> {
        match id == self.id {
            true => Ok(()),
            false => Err(Error::Incompatible {
                reason: "ciphertext made under other parameters",
            }),
        }
    }

    /// `Ok` if `m` is a plaintext of these parameters: n coefficients below t.
    pub(crate) fn check_plaintext(&self, m: &Plaintext) -> Result<(), Error> {
        let t = self.t.value();
        match m.coefficients.len() == self.n && m.coefficients.iter().all(|&c| c < t) {
            true => Ok(()),
            false => Err(Error::Incompatible {
                reason: "plaintext made under other parameters",
            }),
        }
    }

    pub(crate) fn level_data(&self, level: usize) -> &Level {
        &self.levels[level - 1]
    }

    /// poly = round(Q_L m / t) + e + poly (or - poly, with `subtract`) modulo each of its
    /// limbs, for a plaintext m (coefficients in [0, t)) and an optional error e with
    /// |e| <= [`CBD_ETA`]: one vector pass a limb. Rounding rather than floor(Q_L / t) m keeps
    /// the scaling error below 1/2 instead of (Q_L mod t) m / Q_L < t: a fresh ciphertext or a
    /// plaintext bias then costs log2 t fewer bits of noise budget. Constant time in m and e.
    pub(crate) fn add_scaled_message(
        &self,
        poly: &mut [u32],
        m: &[u32],
        error: Option<&[i8]>,
        subtract: bool,
    ) {
        let n = self.n;
        let level = poly.len() / n;
        let mut offsets = alloc::vec![0u32; n];
        let bias = self.message_offsets(level, m, error, &mut offsets);
        for (i, limb) in poly.chunks_exact_mut(n).enumerate() {
            self.add_scaled_message_limb(limb, i, level, m, &offsets, bias, subtract);
        }
        offsets.zeroize();
    }

    /// The part of round(Q_L m / t) + e that is the same in every limb, into `offsets` (n
    /// words): round((Q_L mod t) m / t) + e + bias, below t + 2 CBD_ETA < every q; returns the
    /// bias (CBD_ETA with an error, else 0) that [`Parameters::add_scaled_message_limb`] takes
    /// off. Branch-free in the secret e.
    pub(crate) fn message_offsets(
        &self,
        level: usize,
        m: &[u32],
        error: Option<&[i8]>,
        offsets: &mut [u32],
    ) -> u32 {
        let data = self.level_data(level);
        match error {
            Some(e) => {
                for ((o, &x), &e) in offsets.iter_mut().zip(m).zip(e) {
                    *o = message_offset(&self.t, data.q_mod_t, x, e);
                }
                CBD_ETA
            }
            None => {
                for (o, &x) in offsets.iter_mut().zip(m) {
                    *o = rounded_fraction(&self.t, data.q_mod_t, x);
                }
                0
            }
        }
    }

    /// Limb i of [`Parameters::add_scaled_message`] at `level`, from the limb-independent
    /// `offsets` and `bias` of [`Parameters::message_offsets`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_scaled_message_limb(
        &self,
        limb: &mut [u32],
        i: usize,
        level: usize,
        m: &[u32],
        offsets: &[u32],
        bias: u32,
        subtract: bool,
    ) {
        let q = &self.q.moduli()[i];
        let delta = self.level_data(level).delta[i];
        self.backend
            .scaled_add(limb, m, delta, offsets, q.neg(bias), subtract, q);
    }

    /// poly += round(Q_L c / t) in coefficient 0 of every limb: adds the constant plaintext c
    /// (in [0, t)), which is c in every slot.
    pub(crate) fn add_scaled_constant(&self, poly: &mut [u32], c: u32) {
        let n = self.n;
        let level = poly.len() / n;
        let data = self.level_data(level);
        let rounded = rounded_fraction(&self.t, data.q_mod_t, c);
        for (i, limb) in poly.chunks_exact_mut(n).enumerate() {
            let q = &self.q.moduli()[i];
            let scaled = q.add(q.mul_shoup(c, data.delta[i]), q.reduce_once(rounded));
            limb[0] = q.add(limb[0], scaled);
        }
    }

    pub(crate) fn t_table(&self) -> &NttTable<Vec<u32>> {
        &self.t_table
    }
}

pub(crate) use crate::rns::libm_log2;

/// (Q mod t, floor(Q / t) mod each q_i) for the primes q_i of Q: the scaling of a message.
pub(crate) fn message_scale(q: &[Modulus], t: &Modulus) -> (u32, Vec<ShoupConstant>) {
    // floor(Q / t) = (Q - (Q mod t)) / t, so mod q_i it is -(Q mod t) * t^-1.
    let q_mod_t = q.iter().fold(1, |acc, m| t.mul(acc, t.reduce(m.value())));
    let delta = q
        .iter()
        .map(|m| m.shoup(m.neg(m.mul(m.reduce(q_mod_t), m.inv(m.reduce(t.value()))))))
        .collect();
    (q_mod_t, delta)
}

/// round((Q_L mod t) x / t) = floor(((Q_L mod t) x + t/2) / t) < t for x < t: with
/// floor(Q_L / t) x, the parts of round(Q_L x / t). Constant time in x.
pub(crate) fn rounded_fraction(t: &Modulus, q_mod_t: u32, x: u32) -> u32 {
    t.quotient_u64(q_mod_t as u64 * x as u64 + t.value() as u64 / 2) as u32
}

/// One coefficient of [`Parameters::message_offsets`] with an error e (|e| <= [`CBD_ETA`]):
/// round((Q_L mod t) x / t) + e + CBD_ETA, in [0, t + 2 CBD_ETA). Branch-free in e.
pub(crate) fn message_offset(t: &Modulus, q_mod_t: u32, x: u32, e: i8) -> u32 {
    debug_assert!(e.unsigned_abs() as u32 <= CBD_ETA);
    (rounded_fraction(t, q_mod_t, x) as i32 + e as i32 + CBD_ETA as i32) as u32
}

#[cfg(test)]
mod tests;
