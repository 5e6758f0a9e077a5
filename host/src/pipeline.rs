//! The three parties' steps and the files between them.
//!
//! - data owner: [`keygen`], [`encrypt_batch`] (images to an input [`BatchFile`]),
//!   [`decrypt_batch`] (an output [`BatchFile`] to logits);
//! - service: [`evaluate_batch`] (model, evaluation key and input file to output file; it
//!   never reads a secret key).
//!
//! Batch file, version 3, little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `CNBT` |
//! | 1 | version (3) |
//! | 1 | kind: 1 encrypted images, 2 encrypted logits |
//! | 1 | packing k: pixels per input ciphertext (1, 2, 4, 8 or 16; `network::Packing`) |
//! | 1 | reserved (0) |
//! | 4 | ring degree n |
//! | 1 | ciphertext primes |
//! | 1 | CRT channels c (1..=8) |
//! | 2 | reserved (0) |
//! | 4 | images in the batch (at most n / k) |
//! | 8 | ring id of the keys (`Parameters::ring_id`: n, Q, special primes) |
//! | 16 | batch id: random, chosen by the owner; the service copies it into the logits |
//! | 4 c | plaintext CRT primes |
//! | ... | per channel, one seeded ciphertext per input neuron (kind 1; 784 / k for the CryptoNets network packed k pixels a ciphertext, rounded up) or one ciphertext per output (kind 2), each as a u32 byte length and the object (`core/src/bfv/serialization.rs`) |
//!
//! The counts per channel are the network's ([`BatchShape`]): a reader knows the model, so
//! it knows them, and a file of another network's shape is refused by its length.
//!
//! Reading checks every field, that the parameters are the ones the model needs, every length
//! against the bytes present, and every ciphertext fully (`from_bytes`): never a panic, never
//! an allocation sized by an unchecked field.
//!
//! The owner keeps a [`BatchRecord`] of every batch it encrypts (batch id, image count,
//! packing, parameters) and decrypts logits only against it: a result whose count or packing
//! was edited, or that answers another batch, is refused before decryption.

use std::borrow::Cow;

use crate::phases::{self, PhaseClock};
use cryptonets_core::Error;
use cryptonets_core::bfv::Plaintext;
use cryptonets_core::bfv::serialization::LengthPrefixed;
use cryptonets_core::bfv::{
    Ciphertext, ExpandedCiphertext, Parameters, SecretKey, SeededCiphertext,
};
use cryptonets_core::model::polynomial::PolynomialNetwork;
use cryptonets_core::model::{CLASSES, Model};
use cryptonets_core::network::{
    DecryptedLogits, EvaluationKeys, INPUTS, MAX_CHANNELS, NetworkEvaluator, NetworkParameters,
    Packing, PolynomialEvaluator, Workspace, decrypt_logits, decrypt_outputs_wide, encode_images,
    encode_network_inputs,
};
use num_bigint::BigInt;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

const MAGIC: [u8; 4] = *b"CNBT";
const VERSION: u8 = 3;
const HEADER: usize = 44;

/// What a batch file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchKind {
    /// The data owner's encrypted images: per channel, one seeded ciphertext per pixel.
    Images = 1,
    /// The service's encrypted logits: per channel, one ciphertext per class.
    Logits = 2,
}

/// A network's neurons at both ends: how many ciphertexts a batch holds per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShape {
    /// Input neurons (one seeded ciphertext each, unpacked).
    pub inputs: usize,
    /// Output neurons (one ciphertext each).
    pub outputs: usize,
}

impl BatchShape {
    /// The CryptoNets network's: 784 pixels, 10 logits.
    pub const CRYPTONETS: Self = Self {
        inputs: INPUTS,
        outputs: CLASSES,
    };

    /// A general network's.
    pub fn of(network: &PolynomialNetwork) -> Self {
        Self {
            inputs: network.input().len(),
            outputs: network.classes(),
        }
    }

    fn per_channel(self, kind: BatchKind, packing: Packing) -> usize {
        match kind {
            BatchKind::Images => self.inputs.div_ceil(packing.factor()),
            BatchKind::Logits => self.outputs,
        }
    }
}

/// A batch of serialized ciphertexts, channel by channel. A parsed file borrows its
/// ciphertexts from the bytes it was read from (a batch of images is about 360 MB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchFile<'a> {
    /// What the ciphertexts are, under which parameters, for which images.
    pub header: BatchHeader,
    /// Serialized ciphertexts, the same number per channel (the [`BatchShape`]'s inputs,
    /// packed, or outputs), channel-major.
    pub items: Vec<Cow<'a, [u8]>>,
}

/// The fixed part of a batch file, before its ciphertexts: what a service checks as the
/// first bytes of an upload arrive, and what [`BatchFile::from_bytes_for`] reads first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// What the ciphertexts are.
    pub kind: BatchKind,
    /// Pixels per input ciphertext.
    pub packing: Packing,
    /// Ring degree.
    pub n: u32,
    /// Ciphertext primes of the parameters.
    pub q_primes: u8,
    /// Plaintext CRT primes, one per channel.
    pub plaintext_primes: Vec<u32>,
    /// Images in the batch.
    pub images: u32,
    /// Ring id of the parameters.
    pub ring_id: u64,
    /// The owner's random id of the batch.
    pub batch_id: [u8; 16],
}

impl BatchHeader {
    /// The longest header (eight channels): enough bytes for [`BatchHeader::parse`].
    pub const MAX_LEN: usize = HEADER + 4 * MAX_CHANNELS;

    /// Parses the header at the start of `bytes` (which may hold more); returns it and
    /// where the ciphertexts start.
    pub fn parse(bytes: &[u8], expected: BatchKind) -> Result<(Self, usize), Error> {
        if bytes.len() < HEADER || bytes[..4] != MAGIC {
            return Err(malformed("not a cryptonets batch file (bad magic)"));
        }
        if bytes[4] != VERSION {
            return Err(malformed(
                "unsupported batch file version (this build reads version 3; encrypt again)",
            ));
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
        let ring_id = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
        let batch_id: [u8; 16] = bytes[28..44].try_into().expect("16 bytes");
        let end = HEADER + 4 * channels;
        if bytes.len() < end {
            return Err(malformed("truncated batch header"));
        }
        let plaintext_primes = (0..channels).map(|c| word(HEADER + 4 * c)).collect();
        let header = Self {
            kind,
            packing,
            n,
            q_primes,
            plaintext_primes,
            images,
            ring_id,
            batch_id,
        };
        Ok((header, end))
    }

    /// Checks that the batch was made for `params`.
    pub fn check_parameters(&self, params: &NetworkParameters) -> Result<(), Error> {
        if self.n as usize != params.degree()
            || self.q_primes as usize != params.ciphertext_primes()
            || self.plaintext_primes != params.plaintext_primes()
            || self.ring_id != key_params(params).ring_id()
        {
            return Err(Error::Incompatible {
                reason: "the batch was made for other parameters than this model's",
            });
        }
        Ok(())
    }

    /// Serializes the header: what [`BatchHeader::parse`] reads.
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, self.kind as u8, self.packing.factor() as u8, 0]);
        out.extend_from_slice(&self.n.to_le_bytes());
        out.extend_from_slice(&[self.q_primes, self.plaintext_primes.len() as u8, 0, 0]);
        out.extend_from_slice(&self.images.to_le_bytes());
        out.extend_from_slice(&self.ring_id.to_le_bytes());
        out.extend_from_slice(&self.batch_id);
        for p in &self.plaintext_primes {
            out.extend_from_slice(&p.to_le_bytes());
        }
    }
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
        batch_id: [u8; 16],
        items: Vec<Vec<u8>>,
    ) -> Self {
        let items = items.into_iter().map(Cow::Owned).collect();
        let header = BatchHeader {
            kind,
            packing,
            n: params.degree() as u32,
            q_primes: params.ciphertext_primes() as u8,
            plaintext_primes: params.plaintext_primes(),
            images: images as u32,
            ring_id: key_params(params).ring_id(),
            batch_id,
        };
        Self { header, items }
    }

    /// The largest file of `kind` for `params` (unpacked, the most ciphertexts) of the
    /// CryptoNets network: what a reader may accept before reading it.
    pub fn max_len(params: &NetworkParameters, kind: BatchKind) -> usize {
        Self::max_len_for(params, kind, BatchShape::CRYPTONETS)
    }

    /// [`BatchFile::max_len`] for a network of `shape`.
    pub fn max_len_for(params: &NetworkParameters, kind: BatchKind, shape: BatchShape) -> usize {
        let p = &params.channels()[0];
        let item = match kind {
            BatchKind::Images => p.seeded_ciphertext_bytes(),
            BatchKind::Logits => p.max_ciphertext_bytes(),
        };
        let channels = params.channels().len();
        HEADER + 4 * channels + channels * shape.per_channel(kind, Packing::NONE) * (4 + item)
    }

    /// Serializes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body: usize = self.items.iter().map(|i| 4 + i.len()).sum();
        let mut out = Vec::with_capacity(HEADER + 4 * self.header.plaintext_primes.len() + body);
        self.header.write(&mut out);
        for item in &self.items {
            out.extend_from_slice(&(item.len() as u32).to_le_bytes());
            out.extend_from_slice(item);
        }
        out
    }

    /// Parses and checks the framing of a batch of the CryptoNets network (the ciphertexts
    /// themselves are checked when decoded).
    pub fn from_bytes(bytes: &'a [u8], expected: BatchKind) -> Result<Self, Error> {
        Self::from_bytes_for(bytes, expected, BatchShape::CRYPTONETS)
    }

    /// [`BatchFile::from_bytes`] for a network of `shape`.
    pub fn from_bytes_for(
        bytes: &'a [u8],
        expected: BatchKind,
        shape: BatchShape,
    ) -> Result<Self, Error> {
        let (header, offset) = BatchHeader::parse(bytes, expected)?;
        let count = header.plaintext_primes.len() * shape.per_channel(header.kind, header.packing);
        // Each item takes at least its 4-byte length: bounds the allocation by the input.
        if (bytes.len() - offset) / 4 < count {
            return Err(malformed("truncated batch"));
        }
        let mut reader = LengthPrefixed::new(bytes, offset, "truncated ciphertext in batch");
        let items = (0..count)
            .map(|_| reader.next_item().map(Cow::Borrowed))
            .collect::<Result<_, _>>()?;
        reader.finish("trailing bytes after the batch")?;
        Ok(Self { header, items })
    }

    /// Checks that the file was made for `params`.
    pub fn check_parameters(&self, params: &NetworkParameters) -> Result<(), Error> {
        self.header.check_parameters(params)
    }

    /// Serialized ciphertexts of channel c (parsing and construction give every channel
    /// the same number).
    /// Channel `c`'s serialized ciphertexts (c below the number of plaintext primes).
    pub fn channel(&self, c: usize) -> &[Cow<'a, [u8]>] {
        let per = self.items.len() / self.header.plaintext_primes.len().max(1);
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

/// Serialized secret key (zeroized when dropped).
pub fn secret_key_bytes(params: &NetworkParameters, keys: &Keys) -> Zeroizing<Vec<u8>> {
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
    let items = encrypt_channels(
        params,
        |p| encode_images(p, model, images, packing),
        secret,
        rng,
        progress,
    )?;
    Ok(BatchFile::new(
        BatchKind::Images,
        params,
        packing,
        images.len(),
        random_batch_id(rng),
        items,
    ))
}

/// Encrypts up to n images for a general network, one seeded ciphertext per input neuron
/// and channel (unpacked), as [`encrypt_batch`] does. Each image is the network's input
/// pixels, channel by channel and row by row.
pub fn encrypt_network_batch<R: CryptoRng + ?Sized>(
    params: &NetworkParameters,
    network: &PolynomialNetwork,
    secret: &SecretKey,
    images: &[&[u8]],
    rng: &mut R,
    progress: &(dyn Fn() + Sync),
) -> Result<BatchFile<'static>, Error> {
    let items = encrypt_channels(
        params,
        |p| encode_network_inputs(p, network, images),
        secret,
        rng,
        progress,
    )?;
    Ok(BatchFile::new(
        BatchKind::Images,
        params,
        Packing::NONE,
        images.len(),
        random_batch_id(rng),
        items,
    ))
}

fn random_batch_id<R: CryptoRng + ?Sized>(rng: &mut R) -> [u8; 16] {
    let mut batch_id = [0u8; 16];
    rng.fill_bytes(&mut batch_id);
    batch_id
}

/// Per channel, the plaintexts `encode` gives, each encrypted under its own ChaCha20 stream
/// seeded from `rng` and serialized: channel-major.
fn encrypt_channels<R: CryptoRng + ?Sized>(
    params: &NetworkParameters,
    encode: impl Fn(&Parameters) -> Result<Vec<Plaintext>, Error>,
    secret: &SecretKey,
    rng: &mut R,
    progress: &(dyn Fn() + Sync),
) -> Result<Vec<Vec<u8>>, Error> {
    let mut items = Vec::new();
    for p in params.channels() {
        let plaintexts = encode(p)?;
        // The seeds of the streams that draw each ciphertext's error: secret, zeroized.
        let seeds: Zeroizing<Vec<[u8; 32]>> = Zeroizing::new(
            (0..plaintexts.len())
                .map(|_| {
                    let mut seed = [0u8; 32];
                    rng.fill_bytes(&mut seed);
                    seed
                })
                .collect(),
        );
        let channel: Vec<Vec<u8>> = plaintexts
            .par_iter()
            .zip(seeds.par_iter())
            .map(|(m, seed)| {
                let mut rng = ChaCha20Rng::from_seed(*seed);
                let ct = secret.encrypt_seeded(p, m, &mut rng)?;
                progress();
                Ok(ct.to_bytes(p))
            })
            .collect::<Result<_, Error>>()?;
        items.extend(channel);
    }
    Ok(items)
}

/// The service: decodes each channel's input ciphertexts (expanding their seeds), evaluates
/// the network on them and returns the encrypted logits. Channels are processed one after
/// the other, so only one channel's inputs are expanded in memory at a time.
///
/// `clock` is told as each step ends ([`PhaseClock`]): seed expansion, the network's phases,
/// serialization.
pub fn evaluate_batch(
    params: &NetworkParameters,
    evaluator: &NetworkEvaluator<'_>,
    batch: &BatchFile<'_>,
    progress: &(dyn Fn(usize) + Sync),
    clock: &PhaseClock,
) -> Result<BatchFile<'static>, Error> {
    let mut workspace = BatchWorkspace::default();
    evaluate_batch_in(&mut workspace, params, evaluator, batch, progress, clock)
}

/// The buffers the service side fills for a batch, kept from one batch to the next: a
/// channel's expanded inputs (about 0.25 GB for the committed model) and the network's
/// [`Workspace`]. Reused, they spare every batch after the first the page faults and the
/// zeroing of fresh memory.
#[derive(Debug, Default)]
pub struct BatchWorkspace {
    inputs: Vec<ExpandedCiphertext>,
    network: Workspace,
}

/// [`evaluate_batch`] in `workspace`'s buffers, left there for the next batch.
pub fn evaluate_batch_in(
    workspace: &mut BatchWorkspace,
    params: &NetworkParameters,
    evaluator: &NetworkEvaluator<'_>,
    batch: &BatchFile<'_>,
    progress: &(dyn Fn(usize) + Sync),
    clock: &PhaseClock,
) -> Result<BatchFile<'static>, Error> {
    let network = &mut workspace.network;
    let evaluate = |c: usize, inputs: &[ExpandedCiphertext]| {
        evaluator.evaluate_expanded_in(network, c, inputs, batch.header.packing, &|phase| {
            clock.phase_done(phase)
        })
    };
    evaluate_channels(
        params,
        batch,
        progress,
        clock,
        &mut workspace.inputs,
        evaluate,
    )
}

/// [`evaluate_batch`] for a general network (unpacked batches only).
pub fn evaluate_network_batch(
    params: &NetworkParameters,
    evaluator: &PolynomialEvaluator<'_>,
    batch: &BatchFile<'_>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<BatchFile<'static>, Error> {
    if batch.header.packing != Packing::NONE {
        return Err(Error::Incompatible {
            reason: "general networks take unpacked batches (one pixel a ciphertext)",
        });
    }
    evaluate_channels(
        params,
        batch,
        progress,
        &PhaseClock::new(),
        &mut Vec::<Ciphertext>::new(),
        |c, inputs| evaluator.evaluate_channel(c, inputs),
    )
}

/// A decoded input ciphertext as an evaluator takes it: in coefficient form, or with a in
/// NTT form as it expands (the CryptoNets evaluator's, which saves two transforms).
trait Expanded: Sized + Send {
    /// Parses and expands a serialized seeded ciphertext.
    fn read(params: &Parameters, bytes: &[u8]) -> Result<Self, Error>;
    /// [`Expanded::read`] into `out`'s buffers.
    fn read_into(params: &Parameters, bytes: &[u8], out: &mut Self) -> Result<(), Error>;
    fn level(&self) -> usize;
}

impl Expanded for Ciphertext {
    fn read(params: &Parameters, bytes: &[u8]) -> Result<Self, Error> {
        SeededCiphertext::from_bytes(params, bytes)?.expand(params)
    }
    fn read_into(params: &Parameters, bytes: &[u8], out: &mut Self) -> Result<(), Error> {
        SeededCiphertext::from_bytes(params, bytes)?.expand_into(params, out)
    }
    fn level(&self) -> usize {
        Ciphertext::level(self)
    }
}

impl Expanded for ExpandedCiphertext {
    fn read(params: &Parameters, bytes: &[u8]) -> Result<Self, Error> {
        ExpandedCiphertext::read_seeded(params, bytes)
    }
    fn read_into(params: &Parameters, bytes: &[u8], out: &mut Self) -> Result<(), Error> {
        out.read_seeded_into(params, bytes)
    }
    fn level(&self) -> usize {
        ExpandedCiphertext::level(self)
    }
}

/// Per channel: the batch's ciphertexts decoded (fresh, top level) into `inputs` (whose
/// ciphertexts' buffers are reused when it holds one per input), `evaluate`d, and the
/// outputs serialized into a file of logits answering the batch.
fn evaluate_channels<T: Expanded>(
    params: &NetworkParameters,
    batch: &BatchFile<'_>,
    progress: &(dyn Fn(usize) + Sync),
    clock: &PhaseClock,
    inputs: &mut Vec<T>,
    mut evaluate: impl FnMut(usize, &[T]) -> Result<Vec<Ciphertext>, Error>,
) -> Result<BatchFile<'static>, Error> {
    batch.check_parameters(params)?;
    let mut items = Vec::new();
    let fresh = |p: &Parameters, ct: &T| match ct.level() == p.max_level() {
        true => Ok(()),
        false => Err(Error::Incompatible {
            reason: "input ciphertexts must be fresh (top level)",
        }),
    };
    // One channel's inputs at a time, read into the same buffers for every channel.
    for (c, p) in params.channels().iter().enumerate() {
        let channel = batch.channel(c);
        if inputs.len() == channel.len() {
            inputs
                .par_iter_mut()
                .zip(channel.par_iter())
                .try_for_each(|(ct, bytes)| {
                    T::read_into(p, bytes, ct)?;
                    fresh(p, ct)
                })?;
        } else {
            *inputs = channel
                .par_iter()
                .map(|bytes| {
                    let ct = T::read(p, bytes)?;
                    fresh(p, &ct).map(|()| ct)
                })
                .collect::<Result<_, Error>>()?;
        }
        clock.done(phases::EXPAND);
        let outputs = evaluate(c, inputs)?;
        items.extend(outputs.iter().map(|ct| ct.to_bytes(p)));
        clock.done(phases::SERIALIZE);
        progress(c + 1);
    }
    Ok(BatchFile::new(
        BatchKind::Logits,
        params,
        batch.header.packing,
        batch.header.images as usize,
        batch.header.batch_id,
        items,
    ))
}

/// The owner's record of a batch it encrypted: what the answer must match. Written by
/// `encrypt` beside the batch (JSON), read by `decrypt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRecord {
    /// Always `cryptonets-batch-record`.
    pub format: String,
    /// Record version (1).
    pub version: u32,
    /// The batch id, 32 hex digits.
    pub batch_id: String,
    /// Images in the batch.
    pub images: u32,
    /// Pixels per input ciphertext.
    pub packing: u32,
    /// The keys' ring id, 16 hex digits.
    pub ring_id: String,
    /// The plaintext CRT primes.
    pub plaintext_primes: Vec<u32>,
    /// The first test image of the batch, when it came from the MNIST test set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
}

/// The largest record file accepted.
pub const MAX_RECORD_BYTES: u64 = 4096;
const RECORD_FORMAT: &str = "cryptonets-batch-record";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl BatchRecord {
    /// The record of an encrypted batch.
    pub fn of(batch: &BatchFile<'_>, offset: Option<usize>) -> Self {
        Self {
            format: RECORD_FORMAT.into(),
            version: 1,
            batch_id: hex(&batch.header.batch_id),
            images: batch.header.images,
            packing: batch.header.packing.factor() as u32,
            ring_id: hex(&batch.header.ring_id.to_be_bytes()),
            plaintext_primes: batch.header.plaintext_primes.clone(),
            offset,
        }
    }

    /// Serialized (JSON, one line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }

    /// Parses a record.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let record: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("not a batch record: {e}"))?;
        if record.format != RECORD_FORMAT || record.version != 1 {
            return Err("not a version 1 cryptonets batch record".into());
        }
        Ok(record)
    }

    /// Checks that `logits` answer the batch this record describes, naming what differs.
    pub fn check(&self, logits: &BatchFile<'_>) -> Result<(), String> {
        if self.batch_id != hex(&logits.header.batch_id) {
            return Err(format!(
                "these logits answer batch {}, not batch {} of the record: they belong to another batch",
                hex(&logits.header.batch_id),
                self.batch_id
            ));
        }
        if self.images != logits.header.images {
            return Err(format!(
                "the logits claim {} images but the batch had {}: the image count was altered",
                logits.header.images, self.images
            ));
        }
        if self.packing as usize != logits.header.packing.factor() {
            return Err(format!(
                "the logits claim packing {} but the batch was packed {} pixels a ciphertext: the packing was altered",
                logits.header.packing.factor(),
                self.packing
            ));
        }
        if self.ring_id != hex(&logits.header.ring_id.to_be_bytes())
            || self.plaintext_primes != logits.header.plaintext_primes
        {
            return Err("the logits were made under other parameters than the batch".into());
        }
        Ok(())
    }
}

/// The owner: decrypts the encrypted logits of a batch, refusing a result whose noise budget
/// shows it was not honestly evaluated under this key (see `decrypt_logits`).
pub fn decrypt_batch(
    params: &NetworkParameters,
    secret: &SecretKey,
    batch: &BatchFile<'_>,
) -> Result<DecryptedLogits, Error> {
    let outputs = output_ciphertexts(params, batch)?;
    decrypt_logits(
        params,
        secret,
        &outputs,
        batch.header.images as usize,
        batch.header.packing,
    )
}

/// [`decrypt_batch`] for a general network: the exact outputs of every image (of any
/// width) and the least noise budget measured.
pub fn decrypt_network_batch(
    params: &NetworkParameters,
    secret: &SecretKey,
    batch: &BatchFile<'_>,
) -> Result<(Vec<Vec<BigInt>>, u32), Error> {
    if batch.header.packing != Packing::NONE {
        return Err(Error::Incompatible {
            reason: "general networks answer unpacked batches (one pixel a ciphertext)",
        });
    }
    let outputs = output_ciphertexts(params, batch)?;
    decrypt_outputs_wide(params, secret, &outputs, batch.header.images as usize)
}

/// The batch's output ciphertexts, channel by channel, after checking its parameters.
fn output_ciphertexts(
    params: &NetworkParameters,
    batch: &BatchFile<'_>,
) -> Result<Vec<Vec<Ciphertext>>, Error> {
    batch.check_parameters(params)?;
    params
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
        .collect()
}

/// A generator seeded by the operating system.
pub fn os_rng() -> Result<ChaCha20Rng, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness from the system: {e}"))?;
    let rng = ChaCha20Rng::from_seed(seed);
    seed.zeroize();
    Ok(rng)
}

/// Peak resident memory of this process (VmHWM), where the system reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
