//! Secret, public and relinearization keys.

use alloc::vec::Vec;

use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::Parameters;
use crate::Error;
use crate::backend::Kernels;
use crate::ntt::NttTable;
use crate::sampling::{centered_binomial, small_to_residue, ternary, uniform};
use crate::zq::Modulus;

/// The secret key: a ternary polynomial. Zeroized on drop.
#[derive(Clone)]
pub struct SecretKey {
    /// [`Parameters::ring_id`] of the ring it was made for.
    pub(crate) ring: u64,
    pub(crate) coefficients: Vec<i8>,
    /// s in NTT form modulo every prime of Q, limb by limb.
    pub(crate) ntt: Vec<u32>,
}

impl Zeroize for SecretKey {
    fn zeroize(&mut self) {
        self.coefficients.zeroize();
        self.ntt.zeroize();
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl core::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The public key (p0, p1) = (-a s + e, a), in NTT form modulo Q.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub(crate) ring: u64,
    pub(crate) p0: Vec<u32>,
    pub(crate) p1: Vec<u32>,
}

/// Relinearization key: for each prime q_i of Q, an encryption of g_i s^2 where g_i is the
/// CRT idempotent of q_i (1 mod q_i, 0 mod the others). NTT form modulo Q.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelinearizationKey {
    pub(crate) ring: u64,
    pub(crate) digits: Vec<(Vec<u32>, Vec<u32>)>,
}

/// Lifts a small signed polynomial to NTT form modulo the first `level` primes of Q.
pub(crate) fn small_to_ntt(params: &Parameters, small: &[i8], level: usize) -> Vec<u32> {
    small_to_ntt_over(params, &params.key_limbs()[..level], small)
}

/// Lifts a small signed polynomial to NTT form modulo each of `limbs`.
pub(crate) fn small_to_ntt_over(
    params: &Parameters,
    limbs: &[(&Modulus, &NttTable<Vec<u32>>)],
    small: &[i8],
) -> Vec<u32> {
    let n = params.degree();
    let mut out = alloc::vec![0u32; limbs.len() * n];
    for (limb, (q, table)) in out.chunks_exact_mut(n).zip(limbs) {
        small_to_ntt_limb(params, q, table, small, limb);
    }
    out
}

/// One limb of [`small_to_ntt_over`], into `limb`.
pub(crate) fn small_to_ntt_limb(
    params: &Parameters,
    q: &Modulus,
    table: &NttTable<Vec<u32>>,
    small: &[i8],
    limb: &mut [u32],
) {
    limb.iter_mut()
        .zip(small)
        .for_each(|(x, &s)| *x = small_to_residue(s, q));
    params.backend().forward_ntt(limb, table);
}

/// e - a s modulo each of `limbs`, for a and s in NTT form over them: the first half of an
/// encryption of zero.
pub(crate) fn error_minus_product(
    params: &Parameters,
    limbs: &[(&Modulus, &NttTable<Vec<u32>>)],
    e: &[i8],
    a: &[u32],
    s: &[u32],
) -> Vec<u32> {
    let n = params.degree();
    let mut b = small_to_ntt_over(params, limbs, e);
    let mut a_s = alloc::vec![0u32; n];
    for (((b, a), s), (q, _)) in b
        .chunks_exact_mut(n)
        .zip(a.chunks_exact(n))
        .zip(s.chunks_exact(n))
        .zip(limbs)
    {
        a_s.copy_from_slice(a);
        params.backend().mul_assign(&mut a_s, s, q);
        b.iter_mut().zip(&a_s).for_each(|(b, &x)| *b = q.sub(*b, x));
    }
    a_s.zeroize();
    b
}

/// (-a s + e, a) in NTT form at the top level, for a fresh uniform a and error e.
fn encrypt_zero_ntt<R: CryptoRng + ?Sized>(
    params: &Parameters,
    s_ntt: &[u32],
    rng: &mut R,
) -> (Vec<u32>, Vec<u32>) {
    let (n, level) = (params.degree(), params.max_level());
    let mut a = alloc::vec![0u32; level * n];
    for (i, limb) in a.chunks_exact_mut(n).enumerate() {
        uniform(rng, &params.ciphertext_basis().moduli()[i], limb);
    }
    let mut e_small = alloc::vec![0i8; n];
    centered_binomial(rng, &mut e_small);
    let b = error_minus_product(params, &params.key_limbs()[..level], &e_small, &a, s_ntt);
    e_small.zeroize();
    (b, a)
}

impl SecretKey {
    /// Samples a ternary secret.
    pub fn generate<R: CryptoRng + ?Sized>(params: &Parameters, rng: &mut R) -> Self {
        let mut coefficients = alloc::vec![0i8; params.degree()];
        ternary(rng, &mut coefficients);
        let ntt = small_to_ntt(params, &coefficients, params.max_level());
        Self {
            ring: params.ring_id(),
            coefficients,
            ntt,
        }
    }

    /// [`Parameters::ring_id`] of the ring the key was made for.
    pub fn ring_id(&self) -> u64 {
        self.ring
    }

    /// The ternary coefficients (for export to an external decryptor; handle with care).
    pub fn coefficients(&self) -> &[i8] {
        &self.coefficients
    }

    /// Rebuilds a secret key from ternary coefficients.
    pub fn from_coefficients(
        params: &Parameters,
        coefficients: Vec<i8>,
    ) -> Result<Self, crate::Error> {
        // Branches on validity only: a malformed key is rejected as a whole.
        if coefficients.len() != params.degree()
            || coefficients.iter().any(|c| !(-1..=1).contains(c))
        {
            let mut coefficients = coefficients;
            coefficients.zeroize();
            return Err(crate::Error::InvalidParameters {
                reason: "secret key needs n ternary coefficients",
            });
        }
        let ntt = small_to_ntt(params, &coefficients, params.max_level());
        Ok(Self {
            ring: params.ring_id(),
            coefficients,
            ntt,
        })
    }

    /// s^2 in NTT form modulo the first `level` primes.
    pub(crate) fn square_ntt(&self, params: &Parameters, level: usize) -> Vec<u32> {
        let n = params.degree();
        let mut s2 = self.ntt[..level * n].to_vec();
        for (i, limb) in s2.chunks_exact_mut(n).enumerate() {
            let q = &params.ciphertext_basis().moduli()[i];
            let s = &self.ntt[i * n..(i + 1) * n];
            params.backend().mul_assign(limb, s, q);
        }
        s2
    }
}

impl PublicKey {
    /// Derives a public key from the secret key.
    pub fn new<R: CryptoRng + ?Sized>(
        params: &Parameters,
        secret: &SecretKey,
        rng: &mut R,
    ) -> Result<Self, Error> {
        params.check_ring(secret.ring, "secret key made for another ring")?;
        let (p0, p1) = encrypt_zero_ntt(params, &secret.ntt, rng);
        Ok(Self {
            ring: params.ring_id(),
            p0,
            p1,
        })
    }

    /// [`Parameters::ring_id`] of the ring the key was made for.
    pub fn ring_id(&self) -> u64 {
        self.ring
    }
}

impl RelinearizationKey {
    /// Derives the relinearization key from the secret key.
    pub fn new<R: CryptoRng + ?Sized>(
        params: &Parameters,
        secret: &SecretKey,
        rng: &mut R,
    ) -> Result<Self, Error> {
        params.check_ring(secret.ring, "secret key made for another ring")?;
        let n = params.degree();
        let mut s2 = secret.square_ntt(params, params.max_level());
        let digits = (0..params.max_level())
            .map(|i| {
                let (mut k0, k1) = encrypt_zero_ntt(params, &secret.ntt, rng);
                // g_i s^2 is s^2 in limb i and zero elsewhere.
                let q = &params.ciphertext_basis().moduli()[i];
                let limb = &mut k0[i * n..(i + 1) * n];
                limb.iter_mut()
                    .zip(&s2[i * n..(i + 1) * n])
                    .for_each(|(k, &s)| *k = q.add(*k, s));
                (k0, k1)
            })
            .collect();
        s2.zeroize();
        Ok(Self {
            ring: params.ring_id(),
            digits,
        })
    }

    /// [`Parameters::ring_id`] of the ring the key was made for.
    pub fn ring_id(&self) -> u64 {
        self.ring
    }
}

/// Generates the three keys of a data owner in one call.
#[derive(Debug)]
pub struct KeyGenerator;

impl KeyGenerator {
    /// (secret key, public key, relinearization key).
    pub fn generate<R: CryptoRng + ?Sized>(
        params: &Parameters,
        rng: &mut R,
    ) -> (SecretKey, PublicKey, RelinearizationKey) {
        let secret = SecretKey::generate(params, rng);
        let public = PublicKey::new(params, &secret, rng).expect("a key of these parameters");
        let relin =
            RelinearizationKey::new(params, &secret, rng).expect("a key of these parameters");
        (secret, public, relin)
    }
}
