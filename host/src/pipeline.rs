//! The three parties' steps and the files between them.
//!
//! - data owner: [`keygen`], [`encrypt_batch`] (images to an input [`BatchFile`]),
//!   [`decrypt_batch`] (an output [`BatchFile`] to logits);
//! - service: [`evaluate_batch`] (model, evaluation key and input file to output file; it
//!   never reads a secret key).
//!
//! Batch file, version 2, little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `CNBT` |
//! | 1 | version (2) |
//! | 1 | kind: 1 encrypted images, 2 encrypted logits |
//! | 1 | packing k: pixels per input ciphertext (1, 2, 4, 8 or 16; `network::Packing`) |
//! | 1 | reserved (0) |
//! | 4 | ring degree n |
//! | 1 | ciphertext primes |
//! | 1 | CRT channels c (1..=8) |
//! | 2 | reserved (0) |
//! | 4 | images in the batch (at most n / k) |
//! | 4 c | plaintext CRT primes |
//! | ... | per channel, 784 / k seeded ciphertexts (kind 1, rounded up) or 10 ciphertexts (kind 2), each as a u32 byte length and the object (`core/src/bfv/serialization.rs`) |
//!
//! Reading checks every field, that the parameters are the ones the model needs, every length
//! against the bytes present, and every ciphertext fully (`from_bytes`): never a panic, never
//! an allocation sized by an unchecked field.

use std::borrow::Cow;

use cryptonets_core::Error;
use cryptonets_core::bfv::{Ciphertext, Parameters, SecretKey, SeededCiphertext};
use cryptonets_core::model::{CLASSES, Model};
use cryptonets_core::network::{
    EvaluationKeys, INPUTS, MAX_CHANNELS, NetworkEvaluator, NetworkParameters, Packing,
    decrypt_logits, encode_images,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, SeedableRng};
use rayon::prelude::*;

const MAGIC: [u8; 4] = *b"CNBT";
const VERSION: u8 = 2;
const HEADER: usize = 20;

/// What a batch file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchKind {
    /// The data owner's encrypted images: per channel, one seeded ciphertext per pixel.
    Images = 1,
    /// The service's encrypted logits: per channel, one ciphertext per class.
    Logits = 2,
}

impl BatchKind {
    fn per_channel(self, packing: Packing) -> usize {
        match self {
            BatchKind::Images => packing.ciphertexts(),
            BatchKind::Logits => CLASSES,
        }
    }
}

/// A batch of serialized ciphertexts, channel by channel. A parsed file borrows its
/// ciphertexts from the bytes it was read from (a batch of images is about 360 MB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchFile<'a> {
    /// What the ciphertexts are.
    pub kind: BatchKind,
    /// Ring degree.
    pub n: u32,
    /// Pixels per input ciphertext (and so where the logits' images sit in the slots).
    pub packing: Packing,
    /// Ciphertext primes of the parameters.
    pub q_primes: u8,
    /// Plaintext CRT primes, one per channel.
    pub plaintext_primes: Vec<u32>,
    /// Images in the batch.
    pub images: u32,
    /// Serialized ciphertexts, `kind.per_channel(packing)` per channel, channel-major.
    pub items: Vec<Cow<'a, [u8]>>,
}

fn malformed(reason: &'static str) -> Error {
    Error::Malformed { reason }
}

impl<'a> BatchFile<'a> {
    fn new(
        kind: BatchKind,
        params: &NetworkParameters,
        packing: Packing,
        images: usize,
        items: Vec<Vec<u8>>,
    ) -> Self {
        let items = items.into_iter().map(Cow::Owned).collect();
        Self {
            kind,
            packing,
            n: params.degree() as u32,
            q_primes: params.ciphertext_primes() as u8,
            plaintext_primes: params.plaintext_primes(),
            images: images as u32,
            items,
        }
    }

    /// Serializes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body: usize = self.items.iter().map(|i| 4 + i.len()).sum();
        let mut out = Vec::with_capacity(HEADER + 4 * self.plaintext_primes.len() + body);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, self.kind as u8, self.packing.factor() as u8, 0]);
        out.extend_from_slice(&self.n.to_le_bytes());
        out.extend_from_slice(&[self.q_primes, self.plaintext_primes.len() as u8, 0, 0]);
        out.extend_from_slice(&self.images.to_le_bytes());
        for p in &self.plaintext_primes {
            out.extend_from_slice(&p.to_le_bytes());
        }
        for item in &self.items {
            out.extend_from_slice(&(item.len() as u32).to_le_bytes());
            out.extend_from_slice(item);
        }
        out
    }

    /// Parses and checks the framing (the ciphertexts themselves are checked when decoded).
    pub fn from_bytes(bytes: &'a [u8], expected: BatchKind) -> Result<Self, Error> {
        if bytes.len() < HEADER || bytes[..4] != MAGIC {
            return Err(malformed("not a cryptonets batch file (bad magic)"));
        }
        if bytes[4] != VERSION {
            return Err(malformed("unsupported batch file version"));
        }
        let kind = match bytes[5] {
            1 => BatchKind::Images,
            2 => BatchKind::Logits,
            _ => return Err(malformed("unknown batch kind")),
        };
        if kind != expected {
            return Err(malformed(match expected {
                BatchKind::Images => "expected encrypted images, found encrypted logits",
                BatchKind::Logits => "expected encrypted logits, found encrypted images",
            }));
        }
        if bytes[7] != 0 || bytes[14..16] != [0, 0] {
            return Err(malformed("reserved bytes are not zero"));
        }
        let packing = Packing::new(bytes[6] as usize)
            .map_err(|_| malformed("packing is not a power of two from 1 to 16"))?;
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let (n, q_primes, channels, images) = (word(8), bytes[12], bytes[13] as usize, word(16));
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(malformed("one to eight CRT channels"));
        }
        if images == 0 || images as usize > packing.capacity(n as usize) {
            return Err(malformed("image count out of range for the packing"));
        }
        let mut offset = HEADER;
        let primes_end = offset + 4 * channels;
        if bytes.len() < primes_end {
            return Err(malformed("truncated batch header"));
        }
        let plaintext_primes = (0..channels).map(|c| word(offset + 4 * c)).collect();
        offset = primes_end;
        let count = channels * kind.per_channel(packing);
        // Each item takes at least its 4-byte length: bounds the allocation by the input.
        if (bytes.len() - offset) / 4 < count {
            return Err(malformed("truncated batch"));
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            let len = bytes
                .get(offset..offset + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or(malformed("truncated batch"))?;
            offset += 4;
            let item = bytes
                .get(offset..offset.saturating_add(len))
                .ok_or(malformed("truncated ciphertext in batch"))?;
            items.push(Cow::Borrowed(item));
            offset += len;
        }
        if offset != bytes.len() {
            return Err(malformed("trailing bytes after the batch"));
        }
        Ok(Self {
            kind,
            packing,
            n,
            q_primes,
            plaintext_primes,
            images,
            items,
        })
    }

    /// Checks that the file was made for `params`.
    pub fn check_parameters(&self, params: &NetworkParameters) -> Result<(), Error> {
        if self.n as usize != params.degree()
            || self.q_primes as usize != params.ciphertext_primes()
            || self.plaintext_primes != params.plaintext_primes()
        {
            return Err(Error::Incompatible {
                reason: "the batch was made for other parameters than this model's",
            });
        }
        Ok(())
    }

    /// Serialized ciphertexts of channel c.
    fn channel(&self, c: usize) -> &[Cow<'a, [u8]>] {
        let per = self.kind.per_channel(self.packing);
        &self.items[c * per..(c + 1) * per]
    }
}

/// The data owner's keys. The secret key never leaves the owner; the evaluation keys
/// (relinearization, and Galois keys for packed batches) are the service's.
#[derive(Debug)]
pub struct Keys {
    /// Secret key (zeroized on drop).
    pub secret: SecretKey,
    /// Evaluation keys.
    pub eval: EvaluationKeys,
}

/// The key files are written under the first channel's parameters: keys depend on n, Q and
/// the special primes, which every channel shares, not on t.
fn key_params(params: &NetworkParameters) -> &Parameters {
    &params.channels()[0]
}

/// Generates the owner's keys, for batches packed up to `max_packing` pixels a ciphertext.
pub fn keygen<R: CryptoRng + ?Sized>(
    params: &NetworkParameters,
    max_packing: usize,
    rng: &mut R,
) -> Result<Keys, Error> {
    let secret = SecretKey::generate(key_params(params), rng);
    let eval = EvaluationKeys::generate(params, &secret, max_packing, rng)?;
    Ok(Keys { secret, eval })
}

/// Serialized secret key.
pub fn secret_key_bytes(params: &NetworkParameters, keys: &Keys) -> Vec<u8> {
    keys.secret.to_bytes(key_params(params))
}

/// Serialized evaluation keys.
pub fn eval_key_bytes(params: &NetworkParameters, keys: &Keys) -> Vec<u8> {
    keys.eval.to_bytes(params)
}

/// Parses a secret key file.
pub fn read_secret_key(params: &NetworkParameters, bytes: &[u8]) -> Result<SecretKey, Error> {
    SecretKey::from_bytes(key_params(params), bytes)
}

/// Parses an evaluation key file.
pub fn read_eval_key(params: &NetworkParameters, bytes: &[u8]) -> Result<EvaluationKeys, Error> {
    EvaluationKeys::from_bytes(params, bytes)
}

/// Encrypts up to n / k images packed k pixels a ciphertext (`packing`): per channel and
/// input ciphertext, one seeded secret-key ciphertext. The caller's generator seeds one
/// ChaCha20 stream per ciphertext, so they encrypt in parallel and the file depends only on
/// the caller's generator.
pub fn encrypt_batch<R: CryptoRng + ?Sized>(
    params: &NetworkParameters,
    model: &Model,
    secret: &SecretKey,
    images: &[[u8; INPUTS]],
    packing: Packing,
    rng: &mut R,
    progress: &(dyn Fn() + Sync),
) -> Result<BatchFile<'static>, Error> {
    let per_channel = packing.ciphertexts();
    let mut items = Vec::with_capacity(params.channels().len() * per_channel);
    for p in params.channels() {
        let plaintexts = encode_images(p, model, images, packing)?;
        let seeds: Vec<[u8; 32]> = (0..per_channel)
            .map(|_| {
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                seed
            })
            .collect();
        let channel: Vec<Vec<u8>> = plaintexts
            .par_iter()
            .zip(&seeds)
            .map(|(m, seed)| {
                let mut rng = ChaCha20Rng::from_seed(*seed);
                let ct = secret.encrypt_seeded(p, m, &mut rng);
                progress();
                ct.to_bytes(p)
            })
            .collect();
        items.extend(channel);
    }
    Ok(BatchFile::new(
        BatchKind::Images,
        params,
        packing,
        images.len(),
        items,
    ))
}

/// The service: decodes each channel's input ciphertexts (expanding their seeds), evaluates
/// the network on them and returns the encrypted logits. Channels are processed one after
/// the other, so only one channel's inputs are expanded in memory at a time.
pub fn evaluate_batch(
    params: &NetworkParameters,
    evaluator: &NetworkEvaluator<'_>,
    batch: &BatchFile<'_>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<BatchFile<'static>, Error> {
    batch.check_parameters(params)?;
    let mut items = Vec::with_capacity(params.channels().len() * CLASSES);
    let read = |p: &Parameters, bytes: &[u8]| {
        let seeded = SeededCiphertext::from_bytes(p, bytes)?;
        if seeded.level() != p.max_level() {
            return Err(Error::Incompatible {
                reason: "input ciphertexts must be fresh (top level)",
            });
        }
        Ok(seeded)
    };
    // One channel's inputs at a time, read into the same buffers for every channel.
    let mut inputs: Vec<Ciphertext> = Vec::new();
    for (c, p) in params.channels().iter().enumerate() {
        let channel = batch.channel(c);
        if inputs.len() == channel.len() {
            inputs
                .par_iter_mut()
                .zip(channel.par_iter())
                .try_for_each(|(ct, bytes)| read(p, bytes).map(|s| s.expand_into(p, ct)))?;
        } else {
            inputs = channel
                .par_iter()
                .map(|bytes| read(p, bytes).map(|s| s.expand(p)))
                .collect::<Result<_, Error>>()?;
        }
        let outputs = evaluator.evaluate_channel(c, &inputs, batch.packing)?;
        items.extend(outputs.iter().map(|ct| ct.to_bytes(p)));
        progress(c + 1);
    }
    Ok(BatchFile::new(
        BatchKind::Logits,
        params,
        batch.packing,
        batch.images as usize,
        items,
    ))
}

/// The owner: decrypts the encrypted logits of a batch.
pub fn decrypt_batch(
    params: &NetworkParameters,
    secret: &SecretKey,
    batch: &BatchFile<'_>,
) -> Result<Vec<[i128; CLASSES]>, Error> {
    batch.check_parameters(params)?;
    let outputs: Vec<Vec<Ciphertext>> = params
        .channels()
        .iter()
        .enumerate()
        .map(|(c, p)| {
            batch
                .channel(c)
                .iter()
                .map(|bytes| Ciphertext::from_bytes(p, bytes))
                .collect()
        })
        .collect::<Result<_, Error>>()?;
    decrypt_logits(
        params,
        secret,
        &outputs,
        batch.images as usize,
        batch.packing,
    )
}

/// A generator seeded by the operating system.
pub fn os_rng() -> Result<ChaCha20Rng, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness from the system: {e}"))?;
    Ok(ChaCha20Rng::from_seed(seed))
}

/// Peak resident memory of this process (VmHWM), where the system reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
