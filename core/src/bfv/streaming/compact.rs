//! The small client's encryption without [`Parameters`]: a device with a hundred-odd KiB of
//! RAM (SEAL-Embedded's nRF52840 has 256 KiB, and spends 136) cannot hold a parameter set's
//! NTT tables (4n words a prime) nor its base converters. [`CompactChannel`] keeps the primes,
//! the message scaling and the identifier of one CRT channel; its transforms generate their
//! twiddles on the fly ([`CompactNtt`]), the uniform half is streamed from its seed into its
//! product with s in the one work polynomial, and the message offsets are computed as each
//! coefficient is written. The bytes are those of [`SecretKey::encrypt_seeded_by_limb`] and
//! [`SecretKey::encrypt_compressed_by_limb`] under the same key and generator: every value is
//! a canonical residue, whatever computed it.

use alloc::vec::Vec;

use rand_core::CryptoRng;
use zeroize::Zeroize;

use super::super::serialization::{
    PACK_CHUNK, PACKED_CHUNK_BYTES, compressed_ciphertext_header, pack_chunk,
    seeded_ciphertext_header,
};
use super::super::{libm_log2, max_log_q_128, message_offset, message_scale, parameter_id};
use crate::Error;
use crate::backend::scaled_add_one;
use crate::ntt::CompactNtt;
use crate::rns::MAX_LIMBS;
use crate::sampling::{CBD_ETA, SeedStream, centered_binomial, small_to_residue, uniform};
use crate::zq::{Modulus, ShoupConstant};

#[cfg(doc)]
use super::super::{BatchEncoder, Parameters, SecretKey};

/// One CRT channel's encryption parameters for a small device: ring degree, ciphertext
/// primes with their table-free transforms, the plaintext modulus, the message scaling and
/// the [`Parameters::id`] they make. Its memory is a few words a prime.
#[derive(Clone, Debug)]
pub struct CompactChannel {
    n: usize,
    /// Each ciphertext prime's transform and floor(Q / t) mod it.
    q: Vec<(CompactNtt, ShoupConstant)>,
    t: CompactNtt,
    /// Q mod t.
    q_mod_t: u32,
    id: u64,
    ring_id: u64,
}

/// The buffers of [`CompactChannel::encrypt`]: one polynomial of residues (a, then a s, then
/// c0, one limb at a time), the error, and for a compressed upload the last limb's
/// correction. Made once, reused for every image and channel; the secret parts are zeroized
/// after every encryption and on drop.
#[derive(Debug)]
pub struct CompactScratch {
    work: Vec<u32>,
    error: Vec<i8>,
    correction: Vec<i32>,
}

impl CompactScratch {
    /// Buffers for ring degree n (with the correction only if uploads are `compressed`).
    pub fn new(n: usize, compressed: bool) -> Self {
        Self {
            work: alloc::vec![0; n],
            error: alloc::vec![0; n],
            correction: alloc::vec![0; if compressed { n } else { 0 }],
        }
    }

    /// The bytes [`CompactScratch::new`] allocates: 5n (9n compressed).
    pub fn bytes(n: usize, compressed: bool) -> usize {
        4 * n + n + if compressed { 4 * n } else { 0 }
    }

    /// Zeroes the buffers and keeps them (a `Vec`'s own zeroize would also empty it).
    fn wipe(&mut self) {
        self.work.as_mut_slice().zeroize();
        self.error.as_mut_slice().zeroize();
        self.correction.as_mut_slice().zeroize();
    }
}

impl Drop for CompactScratch {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl CompactChannel {
    /// The channel of ring degree `n`, ciphertext primes `q_primes` (30 bits each, 1 mod 2n),
    /// the special primes of its keys (they count toward security and enter the identifier)
    /// and plaintext modulus `t` (a prime 1 mod 2n). Checks what [`Parameters`] checks of
    /// these: the primes, their distinctness, Q > 4t, and the 128-bit bound on log2 Q S.
    pub fn new(n: usize, q_primes: &[u32], special: &[u32], t: u32) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidParameters { reason };
        if q_primes.is_empty() || q_primes.len() + special.len() > MAX_LIMBS {
            return Err(invalid("one to fifteen primes in Q and S together"));
        }
        let all = || q_primes.iter().chain(special);
        if all().any(|&p| p >> 29 != 1) {
            return Err(invalid("ciphertext primes must have exactly 30 bits"));
        }
        if all()
            .enumerate()
            .any(|(i, p)| all().skip(i + 1).any(|r| r == p))
            || all().any(|&p| p == t)
        {
            return Err(invalid("the primes of Q, S and t must be distinct"));
        }
        let bound = max_log_q_128(n).ok_or(Error::InvalidDegree { n })?;
        let log_qs: f64 = all().map(|&p| libm_log2(p as f64)).sum();
        if log_qs > bound as f64 {
            return Err(invalid(
                "log2 Q exceeds the HomomorphicEncryption.org bound for 128-bit security",
            ));
        }
        for &p in special {
            // Only their identity matters here, but a composite is no NTT prime of a key.
            CompactNtt::new(Modulus::new(p)?, n)?;
        }
        let moduli = q_primes
            .iter()
            .map(|&p| Modulus::new(p))
            .collect::<Result<Vec<_>, _>>()?;
        let t = CompactNtt::new(Modulus::new(t)?, n)?;
        let log_q: f64 = q_primes.iter().map(|&p| libm_log2(p as f64)).sum();
        if t.modulus().bits() as f64 + 2.0 > log_q {
            return Err(invalid("Q must be larger than 4t"));
        }
        let (q_mod_t, delta) = message_scale(&moduli, t.modulus());
        let q = moduli
            .iter()
            .zip(delta)
            .map(|(&m, d)| Ok((CompactNtt::new(m, n)?, d)))
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            n,
            q,
            t,
            q_mod_t,
            id: parameter_id(n, t.modulus().value(), q_primes, special),
            ring_id: parameter_id(n, 0, q_primes, special),
        })
    }

    /// The ring degree n.
    pub fn degree(&self) -> usize {
        self.n
    }

    /// The plaintext modulus t.
    pub fn plaintext_modulus(&self) -> &Modulus {
        self.t.modulus()
    }

    /// The [`Parameters::id`] of the same parameters: stored in every upload.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The [`Parameters::ring_id`] of the same parameters.
    pub fn ring_id(&self) -> u64 {
        self.ring_id
    }

    /// Encodes in place: slot values (in [0, t), slot order) to the coefficients of their
    /// plaintext, those of [`BatchEncoder::encode`].
    pub fn encode_slots(&self, slots: &mut [u32]) -> Result<(), Error> {
        self.check_message(slots)?;
        self.t.inverse(slots);
        Ok(())
    }

    fn check_message(&self, m: &[u32]) -> Result<(), Error> {
        let t = self.t.modulus().value();
        // One branch on validity, none on the values.
        let below = m.iter().fold(true, |all, &x| all & (x < t));
        match m.len() == self.n && below {
            true => Ok(()),
            false => Err(Error::InvalidParameters {
                reason: "a message of n coefficients below t",
            }),
        }
    }

    /// Seeded secret-key encryption of the plaintext coefficients `m` under the ternary key
    /// `secret` ([`SecretKey::coefficients`]) at the top level, written out as it is computed:
    /// the header with the seed, then c0 one limb at a time, each limb in chunks of 64
    /// residues. With `compressed`, the last limb is dropped
    /// ([`SecretKey::encrypt_compressed_by_limb`]), else every limb is written
    /// ([`SecretKey::encrypt_seeded_by_limb`]); the bytes are theirs for a generator in the
    /// same state. Besides `secret` and `m` it holds only `scratch`. An error of `write`
    /// stops it and is returned.
    pub fn encrypt<R, E>(
        &self,
        secret: &[i8],
        m: &[u32],
        compressed: bool,
        rng: &mut R,
        scratch: &mut CompactScratch,
        mut write: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        R: CryptoRng + ?Sized,
        E: From<Error>,
    {
        let n = self.n;
        let ternary = secret
            .iter()
            .fold(true, |all, &s| all & (-1..=1).contains(&s));
        if secret.len() != n || !ternary {
            return Err(Error::InvalidParameters {
                reason: "a secret key of n ternary coefficients",
            }
            .into());
        }
        self.check_message(m)?;
        let level = self.q.len();
        if compressed && level < 2 {
            return Err(Error::InvalidParameters {
                reason: "only an uncompressed ciphertext above level 1 can drop a limb",
            }
            .into());
        }
        if scratch.work.len() != n
            || scratch.error.len() != n
            || (compressed && scratch.correction.len() != n)
        {
            return Err(Error::InvalidParameters {
                reason: "scratch made for another ring degree or without the correction",
            }
            .into());
        }
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        centered_binomial(rng, &mut scratch.error);
        let result = (|| {
            let kept = if compressed { level - 1 } else { level };
            if compressed {
                // The last limb first: the uniform stream run through the others to reach it.
                let mut stream = SeedStream::new(seed);
                let mut skipped = [0u32; PACK_CHUNK];
                for (ntt, _) in &self.q[..kept] {
                    for _ in 0..n / PACK_CHUNK {
                        uniform(&mut stream, ntt.modulus(), &mut skipped);
                    }
                }
                self.limb(kept, secret, m, &mut stream, scratch);
                let last = self.q[kept].0.modulus();
                for (d, &x) in scratch.correction.iter_mut().zip(&scratch.work) {
                    *d = -(last.center(x) as i32);
                }
                write(&compressed_ciphertext_header(self.id, level, 1, &seed, 0))?;
            } else {
                write(&seeded_ciphertext_header(self.id, level, &seed, 0))?;
            }
            let mut stream = SeedStream::new(seed);
            let mut packed = [0u8; PACKED_CHUNK_BYTES];
            for i in 0..kept {
                self.limb(i, secret, m, &mut stream, scratch);
                let q = self.q[i].0.modulus();
                if compressed {
                    for (x, &d) in scratch.work.iter_mut().zip(&scratch.correction) {
                        // |d| <= q_last / 2 < 2^29 < q: q added to a negative d is its residue.
                        let residue = (d as u32).wrapping_add(q.value() & (d >> 31) as u32);
                        *x = q.add(*x, residue);
                    }
                }
                for chunk in scratch.work.chunks(PACK_CHUNK) {
                    let written = pack_chunk(q.bits(), chunk, &mut packed);
                    write(&packed[..written])?;
                }
            }
            Ok(())
        })();
        scratch.wipe();
        seed.zeroize();
        result
    }

    /// c0 mod q_i = round(Q m / t) + e - a s into `scratch.work`, the uniform stream of a
    /// positioned at limb i. s enters in Montgomery form (s 2^32), so that the Montgomery
    /// product with a, drawn straight into the NTT domain, is a s.
    fn limb(
        &self,
        i: usize,
        secret: &[i8],
        m: &[u32],
        stream: &mut SeedStream,
        scratch: &mut CompactScratch,
    ) {
        let (ntt, delta) = &self.q[i];
        let q = ntt.modulus();
        let r = q.montgomery_r();
        for (x, &s) in scratch.work.iter_mut().zip(secret) {
            *x = q.mul_shoup(small_to_residue(s, q), r);
        }
        ntt.forward(&mut scratch.work);
        let mut a = [0u32; PACK_CHUNK];
        for chunk in scratch.work.chunks_mut(PACK_CHUNK) {
            uniform(stream, q, &mut a[..chunk.len()]);
            for (x, &a) in chunk.iter_mut().zip(&a) {
                *x = q.mul_montgomery(*x, a);
            }
        }
        ntt.inverse(&mut scratch.work);
        let (t, bias) = (self.t.modulus(), q.neg(CBD_ETA));
        for ((x, &m), &e) in scratch.work.iter_mut().zip(m).zip(&scratch.error) {
            let offset = message_offset(t, self.q_mod_t, m, e);
            *x = scaled_add_one(*x, m, *delta, offset, bias, true, q);
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    use super::*;
    use crate::backend::Backend;
    use crate::bfv::{BatchEncoder, LimbScratch, Parameters, SecretKey, SeededCiphertext};
    use crate::sampling::ternary;

    /// The host's parameters and the device's channel of the same primes.
    fn both(
        n: usize,
        primes: usize,
        special: usize,
        backend: Backend,
    ) -> (Parameters, CompactChannel) {
        let t = crate::zq::prime::ntt_primes(20, n).nth(1).unwrap();
        let params = Parameters::builder()
            .degree(n)
            .ciphertext_prime_sizes(30, primes)
            .special_primes(special)
            .plaintext_modulus(t)
            .backend(backend)
            .build()
            .unwrap();
        let (q, s) = (params.ciphertext_basis().primes(), params.special_primes());
        let channel = CompactChannel::new(n, &q, &s, t).unwrap();
        (params, channel)
    }

    #[test]
    fn encrypts_the_bytes_of_the_host_on_every_backend_in_constant_memory() {
        for backend in Backend::available() {
            for (n, primes, special) in [(4096, 2, 1), (8192, 6, 1), (8192, 3, 2)] {
                let (params, channel) = both(n, primes, special, backend);
                assert_eq!(
                    (channel.id(), channel.ring_id()),
                    (params.id(), params.ring_id())
                );
                let t = params.plaintext_modulus().value();
                let mut rng = ChaCha20Rng::seed_from_u64(n as u64 + primes as u64);
                // The key from a seed, as a device derives it.
                let key_seed: [u8; 32] = core::array::from_fn(|i| i as u8 ^ 0x5a);
                let secret = SecretKey::generate(&params, &mut ChaCha20Rng::from_seed(key_seed));
                let mut coefficients = alloc::vec![0i8; n];
                ternary(&mut ChaCha20Rng::from_seed(key_seed), &mut coefficients);
                assert_eq!(coefficients, secret.coefficients());

                let slots: Vec<u64> = (0..n).map(|_| rng.next_u64() % t as u64).collect();
                let m = BatchEncoder::new(&params).encode(&slots).unwrap();
                let mut ours: Vec<u32> = slots.iter().map(|&v| v as u32).collect();
                channel.encode_slots(&mut ours).unwrap();
                assert_eq!(ours, m.coefficients, "encoding, n = {n}");

                for compressed in [false, true] {
                    let mut twin = rng.clone();
                    let mut host = Vec::new();
                    let mut limbs = LimbScratch::new(n);
                    let host_sink = |b: &[u8]| {
                        host.extend_from_slice(b);
                        Ok::<(), Error>(())
                    };
                    if compressed {
                        secret.encrypt_compressed_by_limb(
                            &params, &m, &mut twin, &mut limbs, host_sink,
                        )
                    } else {
                        secret.encrypt_seeded_by_limb(&params, &m, &mut twin, &mut limbs, host_sink)
                    }
                    .unwrap();
                    let mut scratch = CompactScratch::new(n, compressed);
                    let mut device = Vec::new();
                    let device_sink = |b: &[u8]| {
                        device.extend_from_slice(b);
                        Ok::<(), Error>(())
                    };
                    channel
                        .encrypt(
                            &coefficients,
                            &ours,
                            compressed,
                            &mut rng,
                            &mut scratch,
                            device_sink,
                        )
                        .unwrap();
                    assert_eq!(
                        device, host,
                        "{backend:?} n = {n} compressed = {compressed}"
                    );
                    assert_eq!(
                        rng.next_u64(),
                        twin.next_u64(),
                        "the generator ends where the host's does"
                    );
                    let ct = SeededCiphertext::from_bytes(&params, &device)
                        .unwrap()
                        .expand(&params)
                        .unwrap();
                    assert_eq!(secret.decrypt(&params, &ct).unwrap(), m);
                    assert_eq!(scratch.work.len(), n);
                    assert!(scratch.work.iter().all(|&x| x == 0));
                    assert!(scratch.error.iter().all(|&x| x == 0));
                    assert!(scratch.correction.iter().all(|&x| x == 0));
                }
            }
        }
    }

    #[test]
    fn refuses_bad_primes_keys_messages_and_scratch() {
        let (params, channel) = both(4096, 2, 1, Backend::Portable(crate::backend::Portable));
        let (q, s) = (params.ciphertext_basis().primes(), params.special_primes());
        let t = params.plaintext_modulus().value();
        let twenty_nine_bits = crate::zq::prime::ntt_primes(29, 4096).next().unwrap();
        for (q, s, t) in [
            (&[][..], &s[..], t),
            (&[q[0], q[0]][..], &s[..], t),
            (&[q[0], s[0]][..], &s[..], t),
            (&[q[0], twenty_nine_bits][..], &s[..], t),
            (&q[..], &s[..], q[0]),
            (&[q[0], q[1], 1_073_479_681 + 2][..], &s[..], t),
            (
                &[
                    q[0],
                    q[1],
                    crate::zq::prime::ntt_primes(30, 4096).nth(5).unwrap(),
                ][..],
                &s[..],
                t,
            ),
            (&q[..], &s[..], t + 2),
        ] {
            assert!(
                CompactChannel::new(4096, q, s, t).is_err(),
                "{q:?} {s:?} {t}"
            );
        }
        assert!(CompactChannel::new(1000, &q, &s, t).is_err());

        let n = 4096;
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let secret = alloc::vec![1i8; n];
        let m = alloc::vec![1u32; n];
        let mut scratch = CompactScratch::new(n, true);
        let mut run = |secret: &[i8], m: &[u32], scratch: &mut CompactScratch| {
            let mut written = 0;
            let result = channel.encrypt(secret, m, true, &mut rng, scratch, |b: &[u8]| {
                written += b.len();
                Ok::<(), Error>(())
            });
            (result, written)
        };
        assert!(matches!(run(&secret, &m, &mut scratch), (Ok(()), w) if w > 0));
        let mut two = secret.clone();
        two[7] = 2;
        let mut big = m.clone();
        big[9] = t;
        for (secret, m) in [
            (&secret[1..], &m[..]),
            (&two[..], &m[..]),
            (&secret[..], &big[..]),
        ] {
            assert!(matches!(run(secret, m, &mut scratch), (Err(_), 0)));
        }
        assert!(matches!(
            run(&secret, &m, &mut CompactScratch::new(n, false)),
            (Err(_), 0)
        ));
        assert!(matches!(
            run(&secret, &m, &mut CompactScratch::new(2 * n, true)),
            (Err(_), 0)
        ));
        let mut slots = big.clone();
        assert!(channel.encode_slots(&mut slots).is_err());
        assert_eq!(slots, big, "a refused message is left as it was");

        // A writer failing on the second write: its error, nothing more written.
        let mut calls = 0;
        let result = channel.encrypt(&secret, &m, false, &mut rng, &mut scratch, |_: &[u8]| {
            calls += 1;
            match calls {
                1 => Ok(()),
                _ => Err(Error::Malformed { reason: "full" }),
            }
        });
        assert_eq!(result, Err(Error::Malformed { reason: "full" }));
        assert_eq!(calls, 2);
    }
}
