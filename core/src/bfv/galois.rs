//! Galois automorphisms X -> X^g and the key switching that brings their results back under
//! the secret key: the permutations of a batch's slots.
//!
//! sigma_g(c0 + c1 s) = sigma_g(c0) + sigma_g(c1) sigma_g(s), so the automorphism alone
//! turns a ciphertext under s into one under sigma_g(s). The Galois key of g holds, for every
//! prime q_i of Q, an encryption of S g_i sigma_g(s) modulo Q S (g_i the CRT idempotent of
//! q_i, S the product of the special primes). Key switching takes the digits
//! d_i = [sigma_g(c1)]_{q_i} (centered), forms sum_i d_i key_i modulo Q_L S and divides by
//! S with rounding: the key errors, multiplied by digits as large as q_i / 2, shrink by S,
//! and what is left is the rounding's noise of about sqrt(n), a few bits above a fresh
//! ciphertext's.
//!
//! Hoisting: sum_i sigma_g(d_i) K_i = sigma_g(sum_i d_i sigma_g^-1(K_i)), and in the NTT
//! domain sigma_g is a permutation of the evaluations. Keys are therefore held permuted by
//! sigma_g^-1, so that one decomposition of c1 (and its NTTs, most of the work) serves every
//! element applied to the same ciphertext ([`Evaluator::apply_galois_many`]); sigma_g itself
//! is applied once, to the result, in coefficient form.
//!
//! On slots ([`super::BatchEncoder`]): slot i holds m(psi^e) for its exponent
//! e = [`slot_exponent`]`(n, i)`, and sigma_g(m)(psi^e) = m(psi^(e g)), so the result's slot
//! of exponent e holds the input's slot of exponent e g mod 2n.

use alloc::vec::Vec;

use rand_core::CryptoRng;
use zeroize::Zeroize;

use super::encoding::slot_exponent;
use super::keys::{error_minus_product, small_to_ntt, small_to_ntt_over};
use super::multiply::ntt_digits;
use super::{Ciphertext, Evaluator, Parameters, SecretKey};
use crate::Error;
use crate::backend::Kernels;
use crate::ntt::NttTable;
use crate::sampling::{SeedStream, centered_binomial, uniform};
use crate::zq::Modulus;

/// One digit of a Galois key: (k0, k1) = (-k1 s + e + S g_i sigma_g(s), k1) in NTT form
/// modulo Q S (the limbs of Q, then the special ones), held permuted by sigma_g^-1 (see the
/// module doc); k1 is expanded from `seed`, so a serialized key carries k0 and the seed only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GaloisDigit {
    pub seed: [u8; 32],
    pub k0: Vec<u32>,
    pub k1: Vec<u32>,
}

/// positions[i] = the evaluation that sigma_g moves to position i in the NTT domain:
/// NTT(sigma_g(a))[i] = NTT(a)[positions[i]] (the same bit-reversed order for every prime).
fn ntt_positions(n: usize, element: usize) -> Vec<u32> {
    (0..n).map(|i| galois_slot(n, element, i) as u32).collect()
}

/// Every limb of `poly` (NTT form) permuted by sigma_g^-1: out[positions[i]] = poly[i].
pub(crate) fn to_hoisting_order(poly: &[u32], positions: &[u32]) -> Vec<u32> {
    let n = positions.len();
    let mut out = alloc::vec![0u32; poly.len()];
    for (o, p) in out.chunks_exact_mut(n).zip(poly.chunks_exact(n)) {
        positions
            .iter()
            .zip(p)
            .for_each(|(&at, &x)| o[at as usize] = x);
    }
    out
}

/// The inverse of [`to_hoisting_order`]: the key as serialized.
pub(crate) fn from_hoisting_order(poly: &[u32], positions: &[u32]) -> Vec<u32> {
    let n = positions.len();
    let mut out = alloc::vec![0u32; poly.len()];
    for (o, p) in out.chunks_exact_mut(n).zip(poly.chunks_exact(n)) {
        o.iter_mut()
            .zip(positions)
            .for_each(|(x, &at)| *x = p[at as usize]);
    }
    out
}

/// A digit as kept in memory, from k0 as serialized and the seed of k1.
pub(crate) fn digit_from_parts(
    params: &Parameters,
    element: usize,
    levels: usize,
    seed: [u8; 32],
    k0: &[u32],
) -> GaloisDigit {
    let n = params.degree();
    let positions = ntt_positions(n, element);
    // k1 over the key's limbs only: Q_levels, then the special primes.
    let mut k1 = expand_key_seed(params, seed);
    k1.drain(levels * n..params.max_level() * n);
    GaloisDigit {
        seed,
        k0: to_hoisting_order(k0, &positions),
        k1: to_hoisting_order(&k1, &positions),
    }
}

/// k0 of a digit as serialized (in the NTT order of every other polynomial).
pub(crate) fn serialized_k0(params: &Parameters, element: usize, digit: &GaloisDigit) -> Vec<u32> {
    from_hoisting_order(&digit.k0, &ntt_positions(params.degree(), element))
}

/// The key switching key of one Galois element g: what [`Evaluator::apply_galois`] needs
/// to apply X -> X^g to a ciphertext. Public (the service's).
///
/// A key may serve only the lower levels ([`GaloisKey::truncated`]): one digit per prime
/// of Q_l, each modulo Q_l S. A rotation done late in a network, at a low level, needs no
/// more, and its key is a fraction of the size (the single-image mode's keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GaloisKey {
    /// [`Parameters::ring_id`] of the ring it was made for.
    pub(crate) ring: u64,
    pub(crate) element: usize,
    pub(crate) digits: Vec<GaloisDigit>,
}

/// Checks that g is a Galois element of degree n other than the identity: odd, in (1, 2n).
pub(crate) fn check_element(n: usize, element: usize) -> Result<(), Error> {
    if element.is_multiple_of(2) || element <= 1 || element >= 2 * n {
        return Err(Error::InvalidParameters {
            reason: "a Galois element is odd and between 1 and 2n (exclusive)",
        });
    }
    Ok(())
}

/// out = sigma_g(input) for one polynomial (one limb) in coefficient form: coefficient i goes
/// to i g mod 2n, negated past n (X^n = -1). The positions depend only on the public g, not on
/// the values (so it is constant time for the secret key too).
fn automorphism<T: Copy>(
    out: &mut [T],
    input: &[T],
    element: usize,
    negate_if: impl Fn(T, bool) -> T,
) {
    let n = input.len();
    let mask = 2 * n - 1;
    let mut j = 0;
    for &x in input {
        // Without a branch on j: the sign of X^(i g) flips in no regular pattern.
        out[j & (n - 1)] = negate_if(x, j >= n);
        j = (j + element) & mask;
    }
}

/// The slot permutation of sigma_g: the result's slot i holds the input's slot
/// `galois_slot(n, g, i)`.
pub fn galois_slot(n: usize, element: usize, slot: usize) -> usize {
    super::encoding::exponent_slot(n, slot_exponent(n, slot) * element % (2 * n))
}

/// k1 of a Galois key digit: uniform in NTT form modulo Q S from `seed` (ChaCha12, as the
/// seeded ciphertexts).
pub(crate) fn expand_key_seed(params: &Parameters, seed: [u8; 32]) -> Vec<u32> {
    let n = params.degree();
    let limbs = params.key_limbs();
    let mut a = alloc::vec![0u32; limbs.len() * n];
    let mut rng = SeedStream::new(seed);
    for (limb, (q, _)) in a.chunks_exact_mut(n).zip(&limbs) {
        uniform(&mut rng, q, limb);
    }
    a
}

impl GaloisKey {
    /// Derives the Galois key of `element` from the secret key. The parameters need special
    /// primes ([`super::ParametersBuilder::special_primes`]).
    pub fn new<R: CryptoRng + ?Sized>(
        params: &Parameters,
        secret: &SecretKey,
        element: usize,
        rng: &mut R,
    ) -> Result<Self, Error> {
        let (n, levels) = (params.degree(), params.max_level());
        params.check_ring(secret.ring, "secret key made for another ring")?;
        check_element(n, element)?;
        let special = params.special_basis().ok_or(Error::InvalidParameters {
            reason: "Galois keys need special primes",
        })?;
        let limbs = params.key_limbs();
        // s modulo Q S in NTT form.
        let mut s = small_to_ntt_over(params, &limbs, &secret.coefficients);
        let mut rotated = alloc::vec![0i8; n];
        automorphism(&mut rotated, &secret.coefficients, element, |x, negate| {
            // x or -x, by a mask of all ones or zeros.
            let mask = -(negate as i8);
            (x ^ mask).wrapping_sub(mask)
        });
        let mut rotated_ntt = small_to_ntt(params, &rotated, levels);
        rotated.zeroize();
        let mut e = alloc::vec![0i8; n];
        let positions = ntt_positions(n, element);
        let digits = (0..levels)
            .map(|i| {
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                let k1 = expand_key_seed(params, seed);
                centered_binomial(rng, &mut e);
                let mut k0 = error_minus_product(params, &limbs, &e, &k1, &s);
                // + S sigma_g(s) in limb i (S g_i sigma_g(s) is zero modulo every other prime).
                let q = &limbs[i].0;
                let s_mod_q = special
                    .moduli()
                    .iter()
                    .fold(1, |acc, p| q.mul(acc, q.reduce(p.value())));
                let factor = q.shoup(s_mod_q);
                k0[i * n..(i + 1) * n]
                    .iter_mut()
                    .zip(&rotated_ntt[i * n..(i + 1) * n])
                    .for_each(|(k, &r)| *k = q.add(*k, q.mul_shoup(r, factor)));
                GaloisDigit {
                    seed,
                    k0: to_hoisting_order(&k0, &positions),
                    k1: to_hoisting_order(&k1, &positions),
                }
            })
            .collect();
        e.zeroize();
        s.zeroize();
        rotated_ntt.zeroize();
        Ok(Self {
            ring: params.ring_id(),
            element,
            digits,
        })
    }

    /// [`Parameters::ring_id`] of the ring the key was made for.
    pub fn ring_id(&self) -> u64 {
        self.ring
    }

    /// The Galois element g.
    pub fn element(&self) -> usize {
        self.element
    }

    /// The highest ciphertext level the key switches (the number of its digits).
    pub fn level(&self) -> usize {
        self.digits.len()
    }

    /// The key restricted to ciphertexts of at most `level` primes: the digits of q_0 to
    /// q_{level-1}, each kept modulo Q_level S. The CRT idempotent of q_i is 1 modulo q_i and
    /// 0 modulo the other primes of Q, whichever prefix of Q it is taken in, so the limbs
    /// kept are exactly those of the key made for Q_level.
    pub fn truncated(mut self, params: &Parameters, level: usize) -> Result<Self, Error> {
        let (n, top) = (params.degree(), self.digits.len());
        if !(1..=top).contains(&level) {
            return Err(Error::InvalidParameters {
                reason: "a Galois key can only be truncated to a level it has",
            });
        }
        self.digits.truncate(level);
        for digit in &mut self.digits {
            for poly in [&mut digit.k0, &mut digit.k1] {
                poly.drain(level * n..top * n);
            }
        }
        Ok(self)
    }

    /// Index, in this key's digits, of limb `k` of Q S as numbered by
    /// [`Parameters::key_limbs`] (a prime of Q below the key's level, or a special prime).
    fn limb_index(&self, k: usize, top: usize) -> usize {
        if k < top {
            k
        } else {
            self.digits.len() + (k - top)
        }
    }
}

/// Key switching of d (coefficient form, `level` limbs) by several keys at once, before
/// their automorphisms: for each key, (sum_i d_i k0_i, sum_i d_i k1_i) with the key's digits
/// in hoisting order, modulo Q_level S, divided by S and rounded, modulo Q_level in
/// coefficient form. The digits' lifts and NTTs are shared by all keys.
fn switch_keys(
    params: &Parameters,
    d: &[u32],
    level: usize,
    keys: &[&GaloisKey],
) -> Vec<[Vec<u32>; 2]> {
    let n = params.degree();
    let backend = params.backend();
    let all = params.key_limbs();
    let top = params.max_level();
    // The limbs of Q_level S, each with its index in the keys.
    let limbs: Vec<(usize, &Modulus, &NttTable<Vec<u32>>)> = (0..level)
        .chain(top..all.len())
        .map(|k| (k, all[k].0, all[k].1))
        .collect();
    let moduli = &params.ciphertext_basis().moduli()[..level];
    let mut sums: Vec<[Vec<u32>; 2]> = keys
        .iter()
        .map(|_| [0, 1].map(|_| alloc::vec![0u32; limbs.len() * n]))
        .collect();
    let mut digits = alloc::vec![0u32; level * n];
    for (j, &(k, m, table)) in limbs.iter().enumerate() {
        ntt_digits(params, d, moduli, m, table, &mut digits);
        let rows: Vec<&[u32]> = digits.chunks_exact(n).collect();
        let montgomery = m.shoup(m.montgomery_r().value);
        for (key, sums) in keys.iter().zip(sums.iter_mut()) {
            for (half, sum) in sums.iter_mut().enumerate() {
                let at = key.limb_index(k, top);
                let key_rows: Vec<&[u32]> = key.digits[..level]
                    .iter()
                    .map(|digit| {
                        let poly = if half == 0 { &digit.k0 } else { &digit.k1 };
                        &poly[at * n..(at + 1) * n]
                    })
                    .collect();
                let out = &mut sum[j * n..(j + 1) * n];
                backend.dot_pointwise_montgomery(out, &rows, &key_rows, m);
                backend.inverse_ntt(out, table);
                // The dot product's 2^-32, undone.
                backend.mul_scalar_assign(out, montgomery, m);
            }
        }
    }
    let (converter, inverses) = params
        .level_data(level)
        .special_to_q
        .as_ref()
        .expect("checked: special primes");
    let mut correction = alloc::vec![0u32; level * n];
    for sum in sums.iter_mut().flatten() {
        let (q_part, s_part) = sum.split_at_mut(level * n);
        converter.convert(backend, s_part, &mut correction, n);
        // (x - [x]_S) / S modulo each q_i: the rounded quotient.
        for (i, (limb, c)) in q_part
            .chunks_exact_mut(n)
            .zip(correction.chunks_exact(n))
            .enumerate()
        {
            let q = &moduli[i];
            limb.iter_mut().zip(c).for_each(|(x, &c)| *x = q.sub(*x, c));
            backend.mul_scalar_assign(limb, inverses[i], q);
        }
        sum.truncate(level * n);
    }
    sums
}

impl Evaluator<'_> {
    /// Checks that `key` has the shape of a Galois key of these parameters.
    pub fn check_galois_key(&self, key: &GaloisKey) -> Result<(), Error> {
        let params = self.params;
        params.check_ring(key.ring, "Galois key made for another ring")?;
        let levels = key.digits.len();
        let limbs = levels + params.special_basis().map_or(0, |s| s.len());
        if params.special_basis().is_none()
            || check_element(params.degree(), key.element).is_err()
            || !(1..=params.max_level()).contains(&levels)
            || key
                .digits
                .iter()
                .any(|d| d.k0.len() != limbs * params.degree() || d.k1.len() != d.k0.len())
        {
            return Err(Error::Incompatible {
                reason: "Galois key does not fit these parameters",
            });
        }
        Ok(())
    }

    /// sigma_g(ct) under the secret key again, with the Galois key of g: a ciphertext of
    /// sigma_g(m), whose slots are m's permuted ([`galois_slot`]). ct has size 2, any level.
    pub fn apply_galois(&self, ct: &Ciphertext, key: &GaloisKey) -> Result<Ciphertext, Error> {
        let [rotated] = <[_; 1]>::try_from(self.apply_galois_many(ct, &[key])?).expect("one key");
        Ok(rotated)
    }

    /// [`Evaluator::apply_galois`] for several keys on the same ciphertext, sharing the
    /// decomposition of c1 (hoisting): about half the work of one call per key for three.
    pub fn apply_galois_many(
        &self,
        ct: &Ciphertext,
        keys: &[&GaloisKey],
    ) -> Result<Vec<Ciphertext>, Error> {
        self.check(ct)?;
        if ct.size() != 2 {
            return Err(Error::Incompatible {
                reason: "Galois automorphisms take ciphertexts of size 2",
            });
        }
        for key in keys {
            self.check_galois_key(key)?;
            if key.level() < ct.level() {
                return Err(Error::Incompatible {
                    reason: "Galois key truncated below the ciphertext's level",
                });
            }
        }
        let params = self.params;
        let (n, level) = (params.degree(), ct.level());
        let moduli = &params.ciphertext_basis().moduli()[..level];
        let rotate = |poly: &[u32], element: usize| {
            let mut out = alloc::vec![0u32; level * n];
            for ((o, x), q) in out
                .chunks_exact_mut(n)
                .zip(poly.chunks_exact(n))
                .zip(moduli)
            {
                automorphism(o, x, element, |x, negate| {
                    // Public data: a plain mask (`subtle`'s barriers made the switch 30% slower).
                    let mask = 0u32.wrapping_sub(negate as u32);
                    (x & !mask) | (q.neg(x) & mask)
                });
            }
            out
        };
        let switched = switch_keys(params, ct.poly(1), level, keys);
        Ok(keys
            .iter()
            .zip(switched)
            .map(|(key, [mut s0, s1])| {
                // sigma_g(c0) + sigma_g(s0) = sigma_g(c0 + s0), and sigma_g(s1).
                for (i, (s, c)) in s0
                    .chunks_exact_mut(n)
                    .zip(ct.poly(0).chunks_exact(n))
                    .enumerate()
                {
                    let q = &moduli[i];
                    s.iter_mut().zip(c).for_each(|(s, &c)| *s = q.add(*s, c));
                }
                let c0 = rotate(&s0, key.element);
                let c1 = rotate(&s1, key.element);
                Ciphertext::from_parts(params, level, alloc::vec![c0, c1])
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
