//! CryptoNets on encrypted images: the data owner's encoding, encryption and decoding, and
//! the service's evaluation of the integer model on ciphertexts only.
//!
//! Each ciphertext holds one pixel (or neuron) of up to n = 8192 images, one image per slot,
//! so one evaluation classifies a whole batch. A smaller batch (at most n / k images) is
//! uploaded packed, k pixels a ciphertext, and unpacked by the service with Galois
//! automorphisms ([`Packing`]), so that its upload shrinks with it. The logits need more plaintext bits than one
//! batching prime t has, so the network runs once per plaintext CRT prime ("channel") and
//! the owner combines the channels' residues (Garner). All channels share n and Q, so one
//! key set serves them all (keys do not depend on t).
//!
//! Evaluation ([`NetworkEvaluator`]), per channel:
//! 1. convolution: each of maps x 169 outputs is a sum of at most 25 input ciphertexts times
//!    constant-polynomial weights, plus a bias; squared at once (size 3, not relinearized);
//! 2. the squares are consumed in groups by the first dense layer, accumulated exactly (in
//!    i32 sums of 15-bit halves when the weights are small, else in i64), so neither the
//!    convolution outputs nor their squares are ever all in memory (streaming);
//! 3. the hidden units are relinearized (hidden x, instead of once per convolution output),
//!    squared, and combined by the last dense layer into 10 size-3 ciphertexts;
//! 4. those are switched down to the lowest level the noise allows: a smaller download.
//!
//! [`EvaluationPlan`] estimates the noise of every step from the parameters and the model's
//! weights before anything runs, and refuses parameters that would decrypt wrongly.

use alloc::vec::Vec;

use crate::Error;
use crate::backend::Backend;
use crate::bfv::{BatchEncoder, Ciphertext, Parameters, Plaintext, SecretKey};
use crate::model::{CLASSES, Model, SIDE};
use crate::zq::Modulus;

mod evaluator;
mod keys;
mod noise;
mod packing;
mod parallel;
mod polynomial;
mod resources;
pub mod single;

pub use evaluator::{NetworkEvaluator, Workspace};
pub use keys::EvaluationKeys;
pub use noise::{EvaluationPlan, Inputs, MARGIN_BITS, NoiseEstimate};
pub use packing::{DEFAULT_MAX_PACKING, MAX_PACKING, Packing};
pub use polynomial::{
    LayerPlan, PLANNED_DEGREES, PlannedNetwork, PolynomialEvaluator, PolynomialPlan,
    encode_network_inputs,
};
pub use resources::ResourceEstimate;

/// A step of [`NetworkEvaluator::evaluate_channel_observed`], reported as it ends. The core
/// has no clock: a host times the steps between the reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// A packed batch's inputs unpacked by Galois automorphisms.
    Unpack,
    /// The convolution: linear combinations of the input ciphertexts (one group of positions).
    Convolution,
    /// The convolution outputs squared and switched down to the hidden level.
    ConvolutionSquare,
    /// The squares accumulated into the first dense layer (and, at the end, its outputs
    /// reduced).
    HiddenDense,
    /// The hidden units relinearized and squared.
    HiddenSquare,
    /// The last dense layer: the logits.
    OutputDense,
    /// The logits switched down to the output level.
    OutputSwitch,
}

impl Phase {
    /// Every phase, in the order an evaluation reaches them.
    pub const ALL: [Phase; 7] = [
        Phase::Unpack,
        Phase::Convolution,
        Phase::ConvolutionSquare,
        Phase::HiddenDense,
        Phase::HiddenSquare,
        Phase::OutputDense,
        Phase::OutputSwitch,
    ];

    /// A short name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Unpack => "unpack",
            Phase::Convolution => "convolution",
            Phase::ConvolutionSquare => "convolution_square",
            Phase::HiddenDense => "hidden_dense",
            Phase::HiddenSquare => "hidden_relinearize_square",
            Phase::OutputDense => "output_dense",
            Phase::OutputSwitch => "output_switch",
        }
    }
}

/// Ring degree of the CryptoNets parameters: 8192 slots, so 8192 images a batch.
pub const DEGREE: usize = 8192;
/// Ciphertext primes (30 bits each) of the default parameters: log2 Q = 150, so a fresh
/// seeded ciphertext of 784 pixels in three channels uploads about 43 KiB per image.
pub const CIPHERTEXT_PRIMES: usize = 5;
/// Special primes of key switching (Galois keys): 60 bits, so that unpacking a packed batch
/// costs about three bits of noise budget; log2 Q S = 210, within the 218 bits allowed.
pub const SPECIAL_PRIMES: usize = 2;
/// Pixels of an image: one input ciphertext each, unpacked.
pub const INPUTS: usize = SIDE * SIDE;
/// Most plaintext CRT channels.
pub const MAX_CHANNELS: usize = 8;
/// Largest plaintext CRT prime, in bits: below the 30-bit primes of Q, S and P.
pub const MAX_PLAINTEXT_PRIME_BITS: u32 = 29;

/// The plaintext CRT primes for logits of `bits` signed bits: the fewest primes, each
/// 1 mod 2n (for batching) and as small as possible, whose product exceeds 2^bits. They
/// have at most 29 bits, so they never collide with a ciphertext, special or auxiliary prime
/// (all exactly 30 bits).
pub fn crt_primes(bits: u32, n: usize) -> Result<Vec<u32>, Error> {
    (1..=MAX_CHANNELS)
        .find_map(|count| crt_primes_of_count(bits, n, count).ok())
        .ok_or(Error::InvalidParameters {
            reason: "the logits need more plaintext bits than the CRT channels can hold",
        })
}

/// Exactly `count` CRT primes (each 1 mod 2n, at most 29 bits) whose product exceeds 2^bits
/// and whose largest is as small as possible: every channel's noise grows with its t (log2 t
/// bits a square, and the plan serves the worst channel), so the primes are the `count`
/// consecutive ones, in increasing order of size, that first pass the bound. More channels
/// of smaller primes cost more evaluations but less noise per multiplication, which the
/// planner weighs.
pub fn crt_primes_of_count(bits: u32, n: usize, count: usize) -> Result<Vec<u32>, Error> {
    let refused = Error::InvalidParameters {
        reason: "no such set of plaintext CRT primes",
    };
    // Each prime is below 2^29: fewer than bits / 29 of them cannot hold the bits.
    if !(1..=MAX_CHANNELS).contains(&count)
        || !n.is_power_of_two()
        || (count as u32) * MAX_PLAINTEXT_PRIME_BITS <= bits
    {
        return Err(refused);
    }
    let step = 2 * n as u64;
    let candidates = (1u64..)
        .map(|k| k * step + 1)
        .take_while(|&p| p < 1 << MAX_PLAINTEXT_PRIME_BITS)
        .filter(|&p| crate::zq::prime::is_prime(p));
    // The last `count` primes seen, smallest first.
    let mut window: heapless::Deque<u32, MAX_CHANNELS> = heapless::Deque::new();
    for p in candidates {
        if window.len() == count {
            window.pop_front();
        }
        window.push_back(p as u32).map_err(|_| refused)?;
        let product_bits: f64 = window
            .iter()
            .map(|&p| crate::rns::libm_log2(p as f64))
            .sum();
        if window.len() == count && product_bits > bits as f64 + 0.01 {
            // Largest first, as the channels have always been ordered.
            return Ok(window.iter().rev().copied().collect());
        }
    }
    Err(refused)
}

/// The CRT prime sets the planners weigh for logits of `bits` signed bits: those of the fewest
/// channels that hold them, and of up to two more channels of smaller primes (less noise a
/// multiplication, one more evaluation a channel), fewest first.
pub fn crt_prime_candidates(bits: u32, n: usize) -> impl Iterator<Item = Vec<u32>> {
    (1..=MAX_CHANNELS)
        .filter_map(move |count| crt_primes_of_count(bits, n, count).ok())
        .take(3)
}

/// Signed bits of a plaintext that holds `model`'s logits: the tighter of its own worst-case
/// magnitudes and the neuron-by-neuron interval bounds of its equivalent general network
/// (which know, for instance, that a square is never negative). Both are exact upper bounds,
/// so the logits lie within the CRT plaintext space either way.
pub fn plaintext_bits(model: &Model) -> Result<u32, Error> {
    let intervals = crate::model::polynomial::PolynomialNetwork::from_v1(model)?;
    Ok(model
        .bounds()
        .plaintext_bits()
        .min(intervals.plaintext_bits()))
}

/// One BFV parameter set per plaintext CRT prime, all with the same n and Q.
#[derive(Clone, Debug)]
pub struct NetworkParameters {
    channels: Vec<Parameters>,
}

impl NetworkParameters {
    /// The CryptoNets parameters for full batches of `model` (fresh inputs, one pixel a
    /// ciphertext): [`Self::for_inputs`].
    pub fn for_model(model: &Model, backend: Backend) -> Result<Self, Error> {
        Self::for_inputs(model, Inputs::Fresh, backend)
    }

    /// The CryptoNets parameters for batches of `model` whose inputs are `inputs` (fresh,
    /// or unpacked by key switching from a packed batch, which costs a few bits: see
    /// [`Inputs::of`]): n = 8192, [`CIPHERTEXT_PRIMES`] 30-bit primes, and the fewest CRT
    /// channels (each channel is one evaluation of the network) whose primes hold its
    /// logits and under which its [`EvaluationPlan`] for such inputs keeps the margin.
    /// Where none of up to two more channels does, the fewest, so that the evaluator
    /// refuses with the layer where the budget runs out. Every channel count shares n, Q and
    /// the special primes, so one secret key and one set of evaluation keys serve both;
    /// each batch's ciphertexts carry their own channel's parameters.
    pub fn for_inputs(model: &Model, inputs: Inputs, backend: Backend) -> Result<Self, Error> {
        Self::for_bits(model, plaintext_bits(model)?, inputs, backend)
    }

    /// [`Self::for_inputs`] of fresh and of unpacked inputs, the model's bounds computed once.
    pub fn for_fresh_and_unpacked(model: &Model, backend: Backend) -> Result<(Self, Self), Error> {
        let bits = plaintext_bits(model)?;
        Ok((
            Self::for_bits(model, bits, Inputs::Fresh, backend)?,
            Self::for_bits(model, bits, Inputs::Unpacked, backend)?,
        ))
    }

    /// [`Self::for_inputs`] for logits of `bits` signed bits.
    fn for_bits(model: &Model, bits: u32, inputs: Inputs, backend: Backend) -> Result<Self, Error> {
        let candidates = crt_prime_candidates(bits, DEGREE);
        let mut first = None;
        for primes in candidates {
            let params = Self::new(DEGREE, CIPHERTEXT_PRIMES, &primes, backend)?;
            if EvaluationPlan::with_inputs(&params, model, inputs).is_ok() {
                return Ok(params);
            }
            first.get_or_insert(params);
        }
        first.ok_or(Error::InvalidParameters {
            reason: "the logits need more plaintext bits than the CRT channels can hold",
        })
    }

    /// Parameters of degree n with `q_primes` 30-bit ciphertext primes, one channel per
    /// plaintext prime (distinct, each 1 mod 2n; validated like any [`Parameters`]).
    pub fn new(
        n: usize,
        q_primes: usize,
        plaintext_primes: &[u32],
        backend: Backend,
    ) -> Result<Self, Error> {
        Self::build(
            n,
            q_primes,
            plaintext_primes,
            SPECIAL_PRIMES,
            backend,
            false,
        )
    }

    /// As [`NetworkParameters::new`] with `special_primes` special primes (1 or 2) instead
    /// of [`SPECIAL_PRIMES`]: one special prime leaves room for one more ciphertext prime
    /// under the security bound, at the price of a few bits of key-switching noise.
    pub fn with_special_primes(
        n: usize,
        q_primes: usize,
        plaintext_primes: &[u32],
        special_primes: usize,
        backend: Backend,
    ) -> Result<Self, Error> {
        if !(1..=2).contains(&special_primes) {
            return Err(Error::InvalidParameters {
                reason: "one or two special primes",
            });
        }
        Self::build(
            n,
            q_primes,
            plaintext_primes,
            special_primes,
            backend,
            false,
        )
    }

    /// As [`NetworkParameters::new`] below 128-bit security: only for tests on toy sizes.
    #[doc(hidden)]
    pub fn insecure_for_tests(
        n: usize,
        q_primes: usize,
        plaintext_primes: &[u32],
        backend: Backend,
    ) -> Result<Self, Error> {
        Self::build(n, q_primes, plaintext_primes, SPECIAL_PRIMES, backend, true)
    }

    fn build(
        n: usize,
        q_primes: usize,
        plaintext_primes: &[u32],
        special_primes: usize,
        backend: Backend,
        insecure: bool,
    ) -> Result<Self, Error> {
        if plaintext_primes.is_empty() || plaintext_primes.len() > MAX_CHANNELS {
            return Err(Error::InvalidParameters {
                reason: "one to eight plaintext CRT primes",
            });
        }
        for (i, t) in plaintext_primes.iter().enumerate() {
            if plaintext_primes[..i].contains(t) {
                return Err(Error::InvalidParameters {
                    reason: "plaintext CRT primes must be distinct",
                });
            }
        }
        let channels = plaintext_primes
            .iter()
            .map(|&t| {
                let builder = Parameters::builder()
                    .degree(n)
                    .ciphertext_prime_sizes(30, q_primes)
                    .special_primes(special_primes)
                    .plaintext_modulus(t)
                    .backend(backend);
                if insecure {
                    builder.insecure_for_tests().build()
                } else {
                    builder.build()
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if channels[0].max_level() != q_primes {
            return Err(Error::NotEnoughPrimes {
                bits: 30,
                count: q_primes,
            });
        }
        // One key set serves every channel: the same Q and special primes throughout.
        let moduli = |p: &Parameters| {
            let special = p.special_basis().map_or(&[][..], |s| s.moduli());
            (p.ciphertext_basis().moduli().to_vec(), special.to_vec())
        };
        if channels.iter().any(|p| moduli(p) != moduli(&channels[0])) {
            return Err(Error::InvalidParameters {
                reason: "the CRT channels must share Q and the special primes",
            });
        }
        Ok(Self { channels })
    }

    /// The plaintext CRT moduli, one per channel.
    pub fn plaintext_moduli(&self) -> Vec<Modulus> {
        self.channels
            .iter()
            .map(|p| *p.plaintext_modulus())
            .collect()
    }

    /// The parameter set of channel `c`.
    pub fn channel(&self, c: usize) -> Result<&Parameters, Error> {
        self.channels.get(c).ok_or(Error::Incompatible {
            reason: "no such CRT channel",
        })
    }

    /// The parameter set of each channel.
    pub fn channels(&self) -> &[Parameters] {
        &self.channels
    }

    /// The plaintext CRT primes.
    pub fn plaintext_primes(&self) -> Vec<u32> {
        self.channels
            .iter()
            .map(|p| p.plaintext_modulus().value())
            .collect()
    }

    /// Ring degree n: the batch size.
    pub fn degree(&self) -> usize {
        self.channels[0].degree()
    }

    /// Number of ciphertext primes (the level of fresh ciphertexts).
    pub fn ciphertext_primes(&self) -> usize {
        self.channels[0].max_level()
    }

    /// log2 of the product of the plaintext primes.
    pub fn plaintext_bits(&self) -> f64 {
        self.channels
            .iter()
            .map(|p| crate::rns::libm_log2(p.plaintext_modulus().value() as f64))
            .sum()
    }

    /// The same parameters on another backend.
    pub fn with_backend(&self, backend: Backend) -> Self {
        Self {
            channels: self
                .channels
                .iter()
                .map(|p| p.with_backend(backend))
                .collect(),
        }
    }
}

/// The plaintexts of one channel: for each input ciphertext of `packing`, the quantized
/// values of its pixels in every image of the batch, each in its image's slot of its block
/// (absent images are zero).
pub fn encode_images(
    params: &Parameters,
    model: &Model,
    images: &[[u8; INPUTS]],
    packing: Packing,
) -> Result<Vec<Plaintext>, Error> {
    let n = params.degree();
    if images.len() > packing.capacity(n) {
        return Err(Error::InvalidParameters {
            reason: "more images than this packing has slots for",
        });
    }
    let slots: Vec<Vec<usize>> = (0..packing.factor())
        .map(|block| packing.slots(n, images.len(), block))
        .collect();
    let encoder = BatchEncoder::new(params);
    parallel::map(packing.ciphertexts(), |ciphertext| {
        let mut values = alloc::vec![0u64; n];
        for (block, slots) in slots.iter().enumerate() {
            if let Some(pixel) = packing.pixel(ciphertext, block) {
                for (image, &slot) in images.iter().zip(slots) {
                    values[slot] = model.quantize_pixel(image[pixel]) as u64;
                }
            }
        }
        encoder.encode(&values)
    })
    .into_iter()
    .collect()
}

/// The least noise budget, in bits, that [`decrypt_logits`] accepts in an output ciphertext:
/// the planner's margin ([`MARGIN_BITS`]), which every honest evaluation keeps by
/// construction (the committed model's outputs measure 16 to 17 bits). One bit would already
/// decrypt exactly; the margin is what makes garbage visible. A ciphertext decrypted under
/// another key, or of random residues, has every phase coefficient spread over all of Q, and
/// passes with probability about 16^-n. A changed residue randomizes one coefficient of the
/// phase, which passes with probability 1/16; k changed residues with 16^-k.
pub const MIN_OUTPUT_BUDGET_BITS: u32 = noise::MARGIN_BITS as u32;

/// Logits decrypted by [`decrypt_logits`], with the noise budget they were checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecryptedLogits {
    /// The exact logits of each image, in batch order.
    pub logits: Vec<[i128; CLASSES]>,
    /// The lowest noise budget measured over the output ciphertexts, in bits.
    pub min_budget_bits: u32,
}

/// Decrypts every channel's 10 output ciphertexts and combines the residues into the exact
/// logits of the first `count` images of a batch uploaded with `packing`. The noise budget of
/// every ciphertext is measured first (with the owner's secret key, which never leaves the
/// owner), and a result below [`MIN_OUTPUT_BUDGET_BITS`] is refused with
/// [`Error::NoiseExhausted`] rather than decrypted to garbage.
pub fn decrypt_logits(
    params: &NetworkParameters,
    secret: &SecretKey,
    outputs: &[Vec<Ciphertext>],
    count: usize,
    packing: Packing,
) -> Result<DecryptedLogits, Error> {
    if outputs.iter().any(|o| o.len() != CLASSES) {
        return Err(Error::Incompatible {
            reason: "expected 10 output ciphertexts per CRT channel",
        });
    }
    if count > packing.capacity(params.degree()) {
        return Err(Error::InvalidParameters {
            reason: "more images than this packing has slots for",
        });
    }
    let slots = packing.slots(params.degree(), count, 0);
    let (values, min_budget_bits) = decrypt_slots(params, secret, outputs, &slots)?;
    let logits = values
        .into_iter()
        .map(|v| v.try_into().expect("10 classes"))
        .collect();
    Ok(DecryptedLogits {
        logits,
        min_budget_bits,
    })
}

/// Decrypts a network's outputs (per channel, one ciphertext per output neuron) for the
/// first `count` slots of an unpacked batch, with the same noise-budget check as
/// [`decrypt_logits`]: `([image][output], least budget)`.
pub fn decrypt_outputs(
    params: &NetworkParameters,
    secret: &SecretKey,
    outputs: &[Vec<Ciphertext>],
    count: usize,
) -> Result<(Vec<Vec<i128>>, u32), Error> {
    decrypt_slots(params, secret, outputs, &unpacked_slots(params, count)?)
}

/// Decrypts every output ciphertext of every channel (checking its noise budget first) and
/// combines the residues of `slots` into exact values: `[slot][output]`.
fn decrypt_slots(
    params: &NetworkParameters,
    secret: &SecretKey,
    outputs: &[Vec<Ciphertext>],
    slots: &[usize],
) -> Result<(Vec<Vec<i128>>, u32), Error> {
    let crt = Crt::new(&params.plaintext_moduli())?;
    let (residues, budget) = decrypt_residues(params, secret, outputs)?;
    Ok((combine_slots(&residues, slots, |r| crt.combine(r))?, budget))
}

/// [`decrypt_outputs`] for outputs of any width: up to eight channels, values past 2^126.
pub fn decrypt_outputs_wide(
    params: &NetworkParameters,
    secret: &SecretKey,
    outputs: &[Vec<Ciphertext>],
    count: usize,
) -> Result<(Vec<Vec<num_bigint::BigInt>>, u32), Error> {
    let slots = unpacked_slots(params, count)?;
    let crt = WideCrt::new(&params.plaintext_moduli())?;
    let (residues, budget) = decrypt_residues(params, secret, outputs)?;
    Ok((
        combine_slots(&residues, &slots, |r| crt.combine(r))?,
        budget,
    ))
}

/// The slots of the first `count` images of an unpacked batch: image i in slot i.
fn unpacked_slots(params: &NetworkParameters, count: usize) -> Result<Vec<usize>, Error> {
    if count > params.degree() {
        return Err(Error::InvalidParameters {
            reason: "more images than slots",
        });
    }
    Ok((0..count).collect())
}

/// Per channel and output ciphertext, the decoded slots, after the noise-budget check; and
/// the least budget measured.
#[allow(clippy::type_complexity)]
pub(crate) fn decrypt_residues(
    params: &NetworkParameters,
    secret: &SecretKey,
    outputs: &[Vec<Ciphertext>],
) -> Result<(Vec<Vec<Vec<u64>>>, u32), Error> {
    let channels = params.channels();
    let width = outputs.first().map_or(0, Vec::len);
    if outputs.len() != channels.len() || width == 0 || outputs.iter().any(|o| o.len() != width) {
        return Err(Error::Incompatible {
            reason: "expected the same number of output ciphertexts in every CRT channel",
        });
    }
    let mut residues = Vec::with_capacity(channels.len());
    let mut min_budget_bits = u32::MAX;
    for (p, cts) in channels.iter().zip(outputs) {
        let encoder = BatchEncoder::new(p);
        let mut per_output = Vec::with_capacity(width);
        for ct in cts {
            let budget = secret.noise_budget(p, ct)?;
            min_budget_bits = min_budget_bits.min(budget);
            if budget < MIN_OUTPUT_BUDGET_BITS {
                return Err(Error::NoiseExhausted {
                    budget_bits: budget,
                    required_bits: MIN_OUTPUT_BUDGET_BITS,
                });
            }
            per_output.push(encoder.decode(&secret.decrypt(p, ct)?));
        }
        residues.push(per_output);
    }
    Ok((residues, min_budget_bits))
}

/// `[slot][output]` values from `residues[channel][output][slot]`.
fn combine_slots<T>(
    residues: &[Vec<Vec<u64>>],
    slots: &[usize],
    combine: impl Fn(&[u32]) -> Result<T, Error>,
) -> Result<Vec<Vec<T>>, Error> {
    let width = residues.first().map_or(0, Vec::len);
    let mut values = Vec::with_capacity(slots.len());
    for &slot in slots {
        let mut image = Vec::with_capacity(width);
        for output in 0..width {
            let r: heapless::Vec<u32, MAX_CHANNELS> = residues
                .iter()
                .map(|per_output| per_output[output][slot] as u32)
                .collect();
            image.push(combine(&r)?);
        }
        values.push(image);
    }
    Ok(values)
}

/// The moduli of a CRT reconstruction and Garner's inverses: what [`Crt`] and [`WideCrt`]
/// share.
#[derive(Clone, Debug)]
struct GarnerBasis {
    moduli: heapless::Vec<Modulus, MAX_CHANNELS>,
    /// inverses[k][j] = t_j^-1 mod t_k for j < k.
    inverses: heapless::Vec<heapless::Vec<u32, MAX_CHANNELS>, MAX_CHANNELS>,
}

impl GarnerBasis {
    /// Distinct moduli, one to [`MAX_CHANNELS`].
    fn new(moduli: &[Modulus]) -> Result<Self, Error> {
        let refuse = |reason| Err(Error::InvalidParameters { reason });
        if moduli.is_empty() || moduli.len() > MAX_CHANNELS {
            return refuse("one to eight CRT moduli");
        }
        if (1..moduli.len()).any(|k| moduli[..k].iter().any(|m| m.value() == moduli[k].value())) {
            return refuse("CRT moduli must be distinct");
        }
        let inverses = moduli
            .iter()
            .enumerate()
            .map(|(k, tk)| {
                moduli[..k]
                    .iter()
                    .map(|tj| tk.inv(tk.reduce(tj.value())))
                    .collect()
            })
            .collect();
        Ok(Self {
            moduli: moduli.iter().copied().collect(),
            inverses,
        })
    }

    /// Garner's mixed-radix digits of one residue per modulus, each below it (checked);
    /// constant time in the residues.
    fn digits(&self, residues: &[u32]) -> Result<[u32; MAX_CHANNELS], Error> {
        if residues.len() != self.moduli.len()
            || residues
                .iter()
                .zip(&self.moduli)
                .any(|(&r, t)| r >= t.value())
        {
            return Err(Error::Incompatible {
                reason: "one residue below its modulus per CRT modulus",
            });
        }
        let mut digits = [0u32; MAX_CHANNELS];
        for (k, tk) in self.moduli.iter().enumerate() {
            let mut v = residues[k];
            for (j, &inverse) in self.inverses[k].iter().enumerate() {
                v = tk.mul(tk.sub(v, tk.reduce(digits[j])), inverse);
            }
            digits[k] = v;
        }
        Ok(digits)
    }
}

/// Garner's mixed-radix reconstruction of a signed integer from residues modulo distinct
/// primes whose product is below 2^126.
#[derive(Clone, Debug)]
pub struct Crt {
    basis: GarnerBasis,
    product: u128,
}

impl Crt {
    /// Precomputes for these moduli: distinct primes, at most [`MAX_CHANNELS`], product
    /// below 2^126.
    pub fn new(moduli: &[Modulus]) -> Result<Self, Error> {
        let basis = GarnerBasis::new(moduli)?;
        let product = moduli.iter().try_fold(1u128, |acc, m| {
            acc.checked_mul(m.value() as u128).filter(|p| p >> 126 == 0)
        });
        let Some(product) = product else {
            return Err(Error::InvalidParameters {
                reason: "the product of the CRT moduli must be below 2^126",
            });
        };
        Ok(Self { basis, product })
    }

    /// The integer x in (-M/2, M/2] with x = residues[k] mod t_k, one residue per modulus
    /// (each below it). Constant time in the residues.
    pub fn combine(&self, residues: &[u32]) -> Result<i128, Error> {
        let digits = self.basis.digits(residues)?;
        let (mut x, mut radix) = (0u128, 1u128);
        for (k, tk) in self.basis.moduli.iter().enumerate() {
            x += digits[k] as u128 * radix;
            radix *= tk.value() as u128;
        }
        // x > M / 2 stands for x - M.
        let above_half = ((self.product / 2).wrapping_sub(x) >> 127) as i128;
        Ok(x as i128 - self.product as i128 * above_half)
    }
}

/// Words of a wide CRT value: eight primes below 2^30 multiply to less than 2^240.
const WIDE_WORDS: usize = 4;

/// CRT reconstruction for any number of channels up to [`MAX_CHANNELS`] (products past
/// 2^126): the value is accumulated in four 64-bit words with the same operations whatever
/// the residues (constant time up to the conversion of the result to a big integer).
#[derive(Clone, Debug)]
pub struct WideCrt {
    basis: GarnerBasis,
    /// radix[k] = t_0 ... t_{k-1}, and the product M, in words.
    radix: heapless::Vec<[u64; WIDE_WORDS], MAX_CHANNELS>,
    product: [u64; WIDE_WORDS],
}

/// a * m + acc for a word vector and a word.
fn mul_add_words(acc: &mut [u64; WIDE_WORDS], a: &[u64; WIDE_WORDS], m: u64) {
    let mut carry = 0u128;
    for (x, &y) in acc.iter_mut().zip(a) {
        let t = *x as u128 + y as u128 * m as u128 + carry;
        *x = t as u64;
        carry = t >> 64;
    }
}

/// a - b, and the borrow out (1 if b > a).
fn sub_words(a: &[u64; WIDE_WORDS], b: &[u64; WIDE_WORDS]) -> ([u64; WIDE_WORDS], u64) {
    let mut out = [0u64; WIDE_WORDS];
    let mut borrow = 0u64;
    for i in 0..WIDE_WORDS {
        let (d, b1) = a[i].overflowing_sub(b[i]);
        let (d, b2) = d.overflowing_sub(borrow);
        out[i] = d;
        borrow = (b1 | b2) as u64;
    }
    (out, borrow)
}

impl WideCrt {
    /// Precomputes for these moduli: distinct primes below 2^30, one to [`MAX_CHANNELS`].
    pub fn new(moduli: &[Modulus]) -> Result<Self, Error> {
        let basis = GarnerBasis::new(moduli)?;
        let mut radix = heapless::Vec::new();
        let mut r = [1u64, 0, 0, 0];
        for m in moduli {
            let _ = radix.push(r);
            let mut next = [0u64; WIDE_WORDS];
            mul_add_words(&mut next, &r, m.value() as u64);
            r = next;
        }
        Ok(Self {
            basis,
            radix,
            product: r,
        })
    }

    /// The integer x in (-M/2, M/2] with x = residues[k] mod t_k.
    pub fn combine(&self, residues: &[u32]) -> Result<num_bigint::BigInt, Error> {
        let digits = self.basis.digits(residues)?;
        let mut x = [0u64; WIDE_WORDS];
        for (k, r) in self.radix.iter().enumerate() {
            mul_add_words(&mut x, r, digits[k] as u64);
        }
        // x > M / 2 stands for x - M: M - x < M / 2, computed either way and selected.
        let half: [u64; WIDE_WORDS] = core::array::from_fn(|i| {
            (self.product[i] >> 1) | self.product.get(i + 1).map_or(0, |&w| w << 63)
        });
        let (_, not_above) = sub_words(&half, &x); // borrow 1 when x > M / 2
        let (negated, _) = sub_words(&self.product, &x);
        let mask = 0u64.wrapping_sub(not_above);
        let magnitude: [u64; WIDE_WORDS] =
            core::array::from_fn(|i| (negated[i] & mask) | (x[i] & !mask));
        let mut bytes = [0u8; 8 * WIDE_WORDS];
        for (chunk, w) in bytes.chunks_exact_mut(8).zip(magnitude) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let value = num_bigint::BigInt::from_bytes_le(num_bigint::Sign::Plus, &bytes);
        Ok(if not_above == 1 { -value } else { value })
    }
}

#[cfg(test)]
mod tests;
