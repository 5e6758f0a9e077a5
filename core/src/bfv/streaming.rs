//! Seeded secret-key encryption written out one RNS limb at a time: the small client.
//!
//! A device that encrypts its own input (a board with a sensor, a phone) holds one plaintext
//! and sends a [`SeededCiphertext`]: c0 and the 32-byte seed of the uniform half. c0 is
//! computed and serialized limb by limb (c0_i = -a_i s + e + round(Q m / t) mod q_i), so the
//! memory is that of one limb and a few polynomials of the degree, whatever the number of
//! primes, and nothing of the ciphertext is held whole. The bytes are exactly those of
//! [`SeededCiphertext::to_bytes`] for [`SecretKey::encrypt_seeded`] with the same random
//! generator: the service reads them like any other upload.

use alloc::vec::Vec;

use rand_core::CryptoRng;
use zeroize::Zeroize;

use super::keys::small_to_ntt_limb;
use super::serialization::{compressed_ciphertext_header, pack_limb, seeded_ciphertext_header};
use super::{Parameters, Plaintext, SecretKey};
use crate::Error;
use crate::backend::Kernels;
use crate::sampling::{SeedStream, centered_binomial, uniform};

#[cfg(doc)]
use super::SeededCiphertext;

mod compact;
pub use compact::{CompactChannel, CompactScratch};

/// The buffers of [`SecretKey::encrypt_seeded_by_limb`], made once for a ring degree and
/// reused for every image: [`LimbScratch::bytes`] is all the encryption holds besides the
/// key and the plaintext. The secret parts (s in NTT form, the error, the offsets that carry
/// it) are zeroized after every encryption and on drop.
#[derive(Debug, Default)]
pub struct LimbScratch {
    /// a_i, then c0_i.
    limb: Vec<u32>,
    /// s mod q_i in NTT form.
    secret: Vec<u32>,
    /// round((Q mod t) m / t) + e + bias, the same in every limb.
    offsets: Vec<u32>,
    error: Vec<i8>,
    /// The compression's correction -[c0]_q of the last prime (public, like c0).
    correction: Vec<i32>,
    /// One packed limb.
    packed: Vec<u8>,
}

impl LimbScratch {
    /// Buffers for ring degree `n`.
    pub fn new(n: usize) -> Self {
        Self {
            limb: alloc::vec![0; n],
            secret: alloc::vec![0; n],
            offsets: alloc::vec![0; n],
            error: alloc::vec![0; n],
            correction: alloc::vec![0; n],
            packed: Vec::with_capacity((n * 32).div_ceil(8)),
        }
    }

    /// The bytes these buffers take for ring degree `n`: four polynomials of 32-bit words
    /// (three of residues, the compression's correction), one of i8 errors and one packed
    /// limb of at most 32 bits a residue.
    pub fn bytes(n: usize) -> usize {
        4 * 4 * n + n + (n * 32).div_ceil(8)
    }

    fn fit(&mut self, n: usize) {
        for v in [&mut self.limb, &mut self.secret, &mut self.offsets] {
            v.resize(n, 0);
        }
        self.error.resize(n, 0);
        self.correction.resize(n, 0);
    }

    fn wipe(&mut self) {
        self.limb.zeroize();
        self.secret.zeroize();
        self.offsets.zeroize();
        self.error.zeroize();
        self.correction.zeroize();
        self.packed.zeroize();
    }
}

impl Drop for LimbScratch {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl SecretKey {
    /// Secret-key encryption of `m` at the top level, serialized as it is computed: `write`
    /// receives the header (with the level and the seed), then c0 limb by limb. The bytes
    /// are those of `self.encrypt_seeded(params, m, rng)?.to_bytes(params)` for a generator
    /// in the same state (the seed, then the error, are drawn in the same order), in the
    /// memory of `scratch` ([`LimbScratch::bytes`]). An error of `write` stops the encryption
    /// and is returned.
    ///
    /// ```
    /// use cryptonets_core::bfv::{BatchEncoder, LimbScratch, Parameters, SecretKey, SeededCiphertext};
    /// use rand_chacha::ChaCha20Rng;
    /// use rand_core::SeedableRng;
    ///
    /// let params = Parameters::cryptonets_8192(65537)?;
    /// let mut rng = ChaCha20Rng::seed_from_u64(7);
    /// let secret = SecretKey::generate(&params, &mut rng);
    /// let m = BatchEncoder::new(&params).encode(&[1, 2, 3])?;
    /// let mut scratch = LimbScratch::new(params.degree());
    /// let mut upload = Vec::new();
    /// secret.encrypt_seeded_by_limb(&params, &m, &mut rng, &mut scratch, |bytes| {
    ///     upload.extend_from_slice(bytes); // a UART, a socket...
    ///     Ok::<(), cryptonets_core::Error>(())
    /// })?;
    /// let ct = SeededCiphertext::from_bytes(&params, &upload)?.expand(&params)?;
    /// assert_eq!(secret.decrypt(&params, &ct)?, m);
    /// # Ok::<(), cryptonets_core::Error>(())
    /// ```
    pub fn encrypt_seeded_by_limb<R, E>(
        &self,
        params: &Parameters,
        m: &Plaintext,
        rng: &mut R,
        scratch: &mut LimbScratch,
        write: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        R: CryptoRng + ?Sized,
        E: From<Error>,
    {
        self.encrypt_limbs(params, m, rng, scratch, false, write)
    }

    /// [`SecretKey::encrypt_seeded_by_limb`] with the last limb dropped: the bytes of
    /// `self.encrypt_seeded(params, m, rng)?.compress(params)?.to_bytes(params)` for a
    /// generator in the same state. The last limb of c0 is computed first (the uniform
    /// stream run through the others to reach it), its correction kept (one more polynomial
    /// of the degree), and every other limb written out corrected.
    pub fn encrypt_compressed_by_limb<R, E>(
        &self,
        params: &Parameters,
        m: &Plaintext,
        rng: &mut R,
        scratch: &mut LimbScratch,
        write: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        R: CryptoRng + ?Sized,
        E: From<Error>,
    {
        if params.max_level() < 2 {
            return Err(Error::InvalidParameters {
                reason: "only an uncompressed ciphertext above level 1 can drop a limb",
            }
            .into());
        }
        self.encrypt_limbs(params, m, rng, scratch, true, write)
    }

    fn encrypt_limbs<R, E>(
        &self,
        params: &Parameters,
        m: &Plaintext,
        rng: &mut R,
        scratch: &mut LimbScratch,
        compress: bool,
        mut write: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        R: CryptoRng + ?Sized,
        E: From<Error>,
    {
        params.check_ring(self.ring, "secret key made for another ring")?;
        params.check_plaintext(m)?;
        let (n, level) = (params.degree(), params.max_level());
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        scratch.fit(n);
        centered_binomial(rng, &mut scratch.error);
        let bias = params.message_offsets(
            level,
            &m.coefficients,
            Some(&scratch.error),
            &mut scratch.offsets,
        );
        scratch.error.zeroize();
        let moduli = params.ciphertext_basis().moduli();
        // c0 mod q_i into scratch.limb, the stream of a positioned at limb i.
        let limb = |scratch: &mut LimbScratch, stream: &mut SeedStream, i: usize| {
            let q = &moduli[i];
            let table = params.ciphertext_basis().table(i);
            uniform(stream, q, &mut scratch.limb);
            small_to_ntt_limb(params, q, table, &self.coefficients, &mut scratch.secret);
            let backend = params.backend();
            backend.mul_assign(&mut scratch.limb, &scratch.secret, q);
            backend.inverse_ntt(&mut scratch.limb, table);
            params.add_scaled_message_limb(
                &mut scratch.limb,
                i,
                level,
                &m.coefficients,
                &scratch.offsets,
                bias,
                true,
            );
        };
        let result = (|| {
            let kept = if compress { level - 1 } else { level };
            if compress {
                // The last limb first: a through the other limbs, then limb L - 1.
                let mut stream = SeedStream::new(seed);
                for q in &moduli[..kept] {
                    uniform(&mut stream, q, &mut scratch.limb);
                }
                limb(scratch, &mut stream, kept);
                let last = &moduli[kept];
                for (d, &x) in scratch.correction.iter_mut().zip(&scratch.limb) {
                    *d = -(last.center(x) as i32);
                }
                write(&compressed_ciphertext_header(
                    params.id(),
                    level,
                    1,
                    &seed,
                    0,
                ))?;
            } else {
                write(&seeded_ciphertext_header(params.id(), level, &seed, 0))?;
            }
            // a is the same ChaCha12 stream as SeededCiphertext::expand reads, limb by limb.
            let mut stream = SeedStream::new(seed);
            for (i, q) in moduli.iter().enumerate().take(kept) {
                limb(scratch, &mut stream, i);
                if compress {
                    for (x, &d) in scratch.limb.iter_mut().zip(&scratch.correction) {
                        *x = q.add(*x, q.reduce_i64(d as i64));
                    }
                }
                scratch.packed.clear();
                pack_limb(q, &scratch.limb, &mut scratch.packed);
                write(&scratch.packed)?;
            }
            Ok(())
        })();
        scratch.wipe();
        seed.zeroize();
        result
    }
}
