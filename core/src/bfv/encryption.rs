//! Encryption (public-key, and secret-key with a seeded uniform half) and decryption.

use alloc::vec::Vec;

use rand_core::CryptoRng;
use zeroize::Zeroize;

use super::keys::small_to_ntt;
use super::{Ciphertext, ExpandedCiphertext, Parameters, Plaintext, PublicKey, SecretKey};
use crate::Error;
use crate::backend::Kernels;
use crate::sampling::{SeedStream, centered_binomial, small_to_residue, ternary, uniform};

/// A fresh secret-key ciphertext whose second polynomial is expanded from a 32-byte seed:
/// half the size of a [`Ciphertext`] in transit (the client's upload).
///
/// It may also be *compressed* ([`SeededCiphertext::compress`]): c0 made a multiple of the
/// last prime of Q by adding a public correction of at most half that prime, so that the
/// last limb is zero and not sent. The ciphertext stays at its level; its noise grows to
/// about q / 2 (some 25 bits of budget, which a network whose first switch goes down a
/// level anyway may not miss).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeededCiphertext {
    /// [`Parameters::id`] of the parameters it was made under.
    pub(crate) params: u64,
    pub(crate) level: usize,
    /// Limbs of Q at the top of c0 that are zero and not held (0 or 1).
    pub(crate) dropped: usize,
    /// The other `level - dropped` limbs.
    pub(crate) c0: Vec<u32>,
    pub(crate) seed: [u8; 32],
}

/// The uniform polynomial a, in NTT form modulo the first `level` primes, expanded from `seed`
/// by its [`SeedStream`] (ChaCha12, the same on every platform and backend). a is public and only needs to be
/// pseudorandom; ChaCha12 is what `rand` itself uses for its standard generator.
fn expand_seed(params: &Parameters, seed: [u8; 32], level: usize) -> Vec<u32> {
    let mut a = alloc::vec![0u32; level * params.degree()];
    expand_seed_into(params, seed, &mut a);
    a
}

/// The uniform polynomial of `seed`, limb by limb (as many limbs as `a` holds).
pub(super) fn expand_seed_into(params: &Parameters, seed: [u8; 32], a: &mut [u32]) {
    let mut rng = SeedStream::new(seed);
    for (i, limb) in a.chunks_exact_mut(params.degree()).enumerate() {
        uniform(&mut rng, &params.ciphertext_basis().moduli()[i], limb);
    }
}

/// Adds a small error polynomial to `c` in coefficient form.
fn add_error(params: &Parameters, c: &mut [u32], e: &[i8]) {
    let n = params.degree();
    for (i, limb) in c.chunks_exact_mut(n).enumerate() {
        let q = &params.ciphertext_basis().moduli()[i];
        for (c, &e) in limb.iter_mut().zip(e) {
            *c = q.add(*c, small_to_residue(e, q));
        }
    }
}

impl SeededCiphertext {
    /// The level (number of primes).
    pub fn level(&self) -> usize {
        self.level
    }

    /// The seed of the uniform polynomial.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// [`Parameters::id`] of the parameters the ciphertext was made under.
    pub fn parameters_id(&self) -> u64 {
        self.params
    }

    /// Limbs of c0 left out (zero): 1 after [`SeededCiphertext::compress`], else 0.
    pub fn dropped_limbs(&self) -> usize {
        self.dropped
    }

    /// Makes c0 a multiple of the last prime q of its Q by adding d = -[c0]_q (centered,
    /// |d| <= q / 2) to every limb, and drops that limb. c0 is public, and so is d: the
    /// ciphertext now decrypts with noise e + d. Refused at level 1 or if already done.
    pub fn compress(mut self, params: &Parameters) -> Result<Self, Error> {
        params.check_id(self.params)?;
        if self.level < 2 || self.dropped != 0 {
            return Err(Error::InvalidParameters {
                reason: "only an uncompressed ciphertext above level 1 can drop a limb",
            });
        }
        let n = params.degree();
        let moduli = params.ciphertext_basis().moduli();
        let last = self.level - 1;
        let q_last = &moduli[last];
        let top: Vec<i64> = self.c0[last * n..]
            .iter()
            .map(|&x| q_last.center(x))
            .collect();
        for (i, limb) in self.c0[..last * n].chunks_exact_mut(n).enumerate() {
            let q = &moduli[i];
            limb.iter_mut()
                .zip(&top)
                .for_each(|(x, &d)| *x = q.sub(*x, q.reduce_i64(d)));
        }
        self.c0.truncate(last * n);
        self.dropped = 1;
        Ok(self)
    }

    /// Expands the seed into a full ciphertext.
    pub fn expand(&self, params: &Parameters) -> Result<Ciphertext, Error> {
        let mut out = Ciphertext::from_parts(params, self.level, Vec::new());
        self.expand_into(params, &mut out)?;
        Ok(out)
    }

    /// Expands the seed into `out`, reusing its buffers: a batch of ciphertexts read again
    /// and again (one CRT channel after another) then needs no fresh memory.
    pub fn expand_into(&self, params: &Parameters, out: &mut Ciphertext) -> Result<(), Error> {
        self.expand_ntt_parts(params, out)?;
        params
            .ciphertext_basis()
            .inverse(params.backend(), &mut out.polys[1], 0);
        Ok(())
    }

    /// Expands the seed with a left in NTT form, as a service that squares linear
    /// combinations of its inputs takes them (see [`ExpandedCiphertext`]).
    pub fn expand_ntt(&self, params: &Parameters) -> Result<ExpandedCiphertext, Error> {
        let mut out = ExpandedCiphertext {
            inner: Ciphertext::from_parts(params, self.level, Vec::new()),
        };
        self.expand_ntt_into(params, &mut out)?;
        Ok(out)
    }

    /// [`Self::expand_ntt`] into `out`, reusing its buffers.
    pub fn expand_ntt_into(
        &self,
        params: &Parameters,
        out: &mut ExpandedCiphertext,
    ) -> Result<(), Error> {
        self.expand_ntt_parts(params, &mut out.inner)
    }

    /// c0 in coefficient form and a in NTT form, into `out`'s buffers.
    fn expand_ntt_parts(&self, params: &Parameters, out: &mut Ciphertext) -> Result<(), Error> {
        params.check_id(self.params)?;
        let len = self.level * params.degree();
        out.params = self.params;
        out.level = self.level;
        out.n = params.degree();
        out.polys.resize_with(2, Vec::new);
        out.polys[0].clear();
        out.polys[0].extend_from_slice(&self.c0);
        // The dropped limbs are zero.
        out.polys[0].resize(len, 0);
        let a = &mut out.polys[1];
        a.resize(len, 0);
        expand_seed_into(params, self.seed, a);
        Ok(())
    }
}

impl SecretKey {
    /// Secret-key encryption: (-a s + e + Delta m, a) with a expanded from a fresh seed.
    pub fn encrypt_seeded<R: CryptoRng + ?Sized>(
        &self,
        params: &Parameters,
        m: &Plaintext,
        rng: &mut R,
    ) -> Result<SeededCiphertext, Error> {
        params.check_ring(self.ring, "secret key made for another ring")?;
        params.check_plaintext(m)?;
        let (n, level) = (params.degree(), params.max_level());
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        // c0 = round(Q m / t) + e - a s: a s, then one pass adds the rest and negates it.
        let mut c0 = expand_seed(params, seed, level);
        for (i, limb) in c0.chunks_exact_mut(n).enumerate() {
            let q = &params.ciphertext_basis().moduli()[i];
            params
                .backend()
                .mul_assign(limb, &self.ntt[i * n..(i + 1) * n], q);
        }
        params
            .ciphertext_basis()
            .inverse(params.backend(), &mut c0, 0);
        let mut e = alloc::vec![0i8; n];
        centered_binomial(rng, &mut e);
        params.add_scaled_message(&mut c0, &m.coefficients, Some(&e), true);
        e.zeroize();
        let ciphertext = SeededCiphertext {
            params: params.id(),
            level,
            dropped: 0,
            c0,
            seed,
        };
        seed.zeroize();
        Ok(ciphertext)
    }

    /// Secret-key encryption, expanded to a full ciphertext.
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &self,
        params: &Parameters,
        m: &Plaintext,
        rng: &mut R,
    ) -> Result<Ciphertext, Error> {
        self.encrypt_seeded(params, m, rng)?.expand(params)
    }

    /// `Ok` if this key and `ct` belong to `params` and `ct` has a shape they allow: checked
    /// before any work with the secret.
    fn check_decryptable(&self, params: &Parameters, ct: &Ciphertext) -> Result<(), Error> {
        params.check_ring(self.ring, "secret key made for another ring")?;
        params.check_id(ct.params)?;
        let fits = ct.n == params.degree()
            && (1..=params.max_level()).contains(&ct.level)
            && (2..=3).contains(&ct.polys.len())
            && ct.polys.iter().all(|p| p.len() == ct.level * ct.n);
        match fits {
            true => Ok(()),
            false => Err(Error::Incompatible {
                reason: "ciphertext does not fit these parameters",
            }),
        }
    }

    /// c0 + c1 s (+ c2 s^2) modulo Q_L, in coefficient form: Delta m + noise.
    pub(crate) fn phase(&self, params: &Parameters, ct: &Ciphertext) -> Vec<u32> {
        let (n, level) = (params.degree(), ct.level);
        let backend = params.backend();
        let basis = params.ciphertext_basis();
        let mut acc = alloc::vec![0u32; level * n];
        let mut s_power = self.ntt[..level * n].to_vec();
        for (k, poly) in ct.polys.iter().enumerate().skip(1) {
            if k > 1 {
                for (i, limb) in s_power.chunks_exact_mut(n).enumerate() {
                    backend.mul_assign(limb, &self.ntt[i * n..(i + 1) * n], &basis.moduli()[i]);
                }
            }
            let mut c = poly.clone();
            basis.forward(backend, &mut c, 0);
            for (i, ((a, c), s)) in acc
                .chunks_exact_mut(n)
                .zip(c.chunks_exact(n))
                .zip(s_power.chunks_exact(n))
                .enumerate()
            {
                backend.mul_acc(a, c, s, &basis.moduli()[i]);
            }
        }
        s_power.zeroize();
        basis.inverse(backend, &mut acc, 0);
        for (i, (a, c)) in acc
            .chunks_exact_mut(n)
            .zip(ct.polys[0].chunks_exact(n))
            .enumerate()
        {
            let q = &basis.moduli()[i];
            a.iter_mut().zip(c).for_each(|(a, &c)| *a = q.add(*a, c));
        }
        acc
    }

    /// Decrypts: round(t (c0 + c1 s + c2 s^2) / Q) mod t.
    pub fn decrypt(&self, params: &Parameters, ct: &Ciphertext) -> Result<Plaintext, Error> {
        self.check_decryptable(params, ct)?;
        let n = params.degree();
        let mut phase = self.phase(params, ct);
        let mut coefficients = alloc::vec![0u32; n];
        params
            .level_data(ct.level)
            .decryptor
            .apply(params.backend(), &phase, &mut coefficients, n);
        phase.zeroize();
        Ok(Plaintext { coefficients })
    }

    /// Remaining noise budget in bits: log2(Q / (2 |t v mod Q|)) maximised over coefficients,
    /// where v is the phase. Decryption is correct while it is positive. A diagnostic: it runs
    /// on secret data in variable time, so never expose it to a remote party.
    pub fn noise_budget(&self, params: &Parameters, ct: &Ciphertext) -> Result<u32, Error> {
        self.check_decryptable(params, ct)?;
        let mut phase = self.phase(params, ct);
        let budget = super::noise::budget(params, &phase, ct.level);
        phase.zeroize();
        Ok(budget)
    }
}

impl PublicKey {
    /// Public-key encryption: (p0 u + e1 + Delta m, p1 u + e2) for ternary u.
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &self,
        params: &Parameters,
        m: &Plaintext,
        rng: &mut R,
    ) -> Result<Ciphertext, Error> {
        params.check_ring(self.ring, "public key made for another ring")?;
        params.check_plaintext(m)?;
        let (n, level) = (params.degree(), params.max_level());
        let backend = params.backend();
        let basis = params.ciphertext_basis();
        let mut u = alloc::vec![0i8; n];
        ternary(rng, &mut u);
        let mut u_ntt = small_to_ntt(params, &u, level);
        u.zeroize();
        let mut polys = Vec::with_capacity(2);
        for key in [&self.p0, &self.p1] {
            let mut c = key.clone();
            for (i, (c, u)) in c.chunks_exact_mut(n).zip(u_ntt.chunks_exact(n)).enumerate() {
                backend.mul_assign(c, u, &basis.moduli()[i]);
            }
            basis.inverse(backend, &mut c, 0);
            polys.push(c);
        }
        let mut e = alloc::vec![0i8; n];
        centered_binomial(rng, &mut e);
        params.add_scaled_message(&mut polys[0], &m.coefficients, Some(&e), false);
        centered_binomial(rng, &mut e);
        add_error(params, &mut polys[1], &e);
        e.zeroize();
        u_ntt.zeroize();
        Ok(Ciphertext::from_parts(params, level, polys))
    }
}
