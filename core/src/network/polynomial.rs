//! Encrypted evaluation of any [`PolynomialNetwork`] in the batch layout (one ciphertext per
//! neuron, images in the slots), built on the bfv layer's public operations only: linear
//! combinations for convolutions, pooling and dense layers, squares and products with
//! relinearization for the activations, modulus switching where the plan says.
//!
//! The plan ([`PolynomialPlan`]) estimates the noise after every layer and picks, after
//! each activation, the lowest level from which the rest of the network still keeps
//! [`MARGIN_BITS`] of budget; it refuses parameters under which decryption could fail. The
//! specialized CryptoNets evaluator ([`super::NetworkEvaluator`]) stays the fast path of the
//! fixed topology.

use alloc::vec::Vec;

use super::evaluator::{Combinations, linear_combinations_of_sets};
use super::noise::{Estimator, MARGIN_BITS, budget, log_add};
use super::{EvaluationKeys, NetworkParameters, parallel};
use crate::Error;
use crate::bfv::{BatchEncoder, Ciphertext, Evaluator, MultiplyScratch, Parameters, Plaintext};
use crate::model::polynomial::{Layer, PolynomialNetwork, Tap};

/// The plan of one layer: the level its outputs are at and their estimated noise budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerPlan {
    /// Level of the layer's outputs (after any modulus switch that follows it).
    pub level: usize,
    /// Estimated noise budget of its outputs, in bits.
    pub budget_bits: f64,
}

/// How a polynomial network is evaluated under given parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct PolynomialPlan {
    /// Estimated budget of the input ciphertexts.
    pub input_budget_bits: f64,
    /// One entry per layer.
    pub layers: Vec<LayerPlan>,
}

impl PolynomialPlan {
    /// Level of the outputs (what decryption sees).
    pub fn output_level(&self) -> usize {
        self.layers.last().map_or(1, |l| l.level)
    }

    /// Estimated budget of the outputs.
    pub fn output_budget_bits(&self) -> f64 {
        self.layers.last().map_or(0.0, |l| l.budget_bits)
    }
}

/// Per layer, what the noise estimate needs: the largest L1 norm of an affine row (with
/// the bias's rounding) or the activation's coefficients.
#[derive(Clone, Copy, Debug)]
enum Step {
    Affine { l1: u64 },
    Activation { coefficients: [i64; 4] },
    Reshape,
}

fn steps(network: &PolynomialNetwork) -> Vec<Step> {
    network
        .layers()
        .iter()
        .enumerate()
        .map(|(i, layer)| match layer {
            Layer::Flatten => Step::Reshape,
            Layer::Polynomial { coefficients } => Step::Activation {
                coefficients: *coefficients,
            },
            _ => {
                let mut l1 = 0u64;
                let _ = layer.for_each_row(network.input_shape(i), |_, taps: &[Tap], _| {
                    let sum = taps
                        .iter()
                        .fold(0u64, |acc, &(_, w)| acc.saturating_add(w.unsigned_abs()));
                    l1 = l1.max(sum);
                    Ok::<(), ()>(())
                });
                Step::Affine { l1 }
            }
        })
        .collect()
}

/// The noise after one step at `level`.
fn step_noise(e: &Estimator, step: Step, v: f64, level: usize) -> f64 {
    match step {
        Step::Reshape => v,
        Step::Affine { l1 } => e.linear(v, l1, level),
        Step::Activation { coefficients } => activation_noise(e, coefficients, v, level),
    }
}

/// The noise after the activation polynomial c0 + c1 x + c2 x^2 + c3 x^3 at `level`.
pub(super) fn activation_noise(e: &Estimator, c: [i64; 4], v: f64, level: usize) -> f64 {
    let x2 = e.relinearize(e.square(v, level), level);
    let x3 = e.relinearize(e.multiply(x2, v, level), level);
    let powers = [v, x2, x3];
    let mut out = f64::NEG_INFINITY;
    for (k, &ck) in c[1..].iter().enumerate() {
        if ck != 0 {
            out = log_add(out, e.scale(powers[k], ck.unsigned_abs()));
        }
    }
    // The constant's rounding, like a bias.
    e.linear(out, 1, level)
}

impl PolynomialPlan {
    /// Plans `network` under `params`, or refuses with the layer where the budget runs out.
    pub fn new(params: &NetworkParameters, network: &PolynomialNetwork) -> Result<Self, Error> {
        let e = Estimator::new(params);
        let top = params.channels()[0].max_level();
        let steps = steps(network);
        let fresh = e.fresh(top);
        let refuse = |i: usize, v: f64| Error::InsufficientNoiseBudget {
            layer: match network.layers()[i] {
                Layer::Conv2d { .. } => "a convolution",
                Layer::SumPool { .. } => "a pooling",
                Layer::Dense { .. } => "a dense",
                Layer::Flatten => "a flatten",
                Layer::Polynomial { .. } => "an activation",
            },
            estimated_bits: budget(v) as i32,
        };
        // Whether the steps from `from` on keep the margin at `level` without switching.
        let rest_fits = |from: usize, mut v: f64, level: usize| {
            steps[from..].iter().all(|&s| {
                v = step_noise(&e, s, v, level);
                budget(v) >= MARGIN_BITS
            })
        };
        if budget(fresh) < MARGIN_BITS || !rest_fits(0, fresh, top) {
            // Find the first layer that fails, for the message.
            let mut v = fresh;
            for (i, &s) in steps.iter().enumerate() {
                v = step_noise(&e, s, v, top);
                if budget(v) < MARGIN_BITS {
                    return Err(refuse(i, v));
                }
            }
            return Err(refuse(0, fresh));
        }
        let (mut v, mut level) = (fresh, top);
        let mut layers = Vec::with_capacity(steps.len());
        for (i, &s) in steps.iter().enumerate() {
            v = step_noise(&e, s, v, level);
            // After an activation (and at the end), switch down as far as the rest allows.
            if matches!(s, Step::Activation { .. }) || i + 1 == steps.len() {
                (v, level) = e.switch_down(v, level, |v, l| rest_fits(i + 1, v, l));
            }
            layers.push(LayerPlan {
                level,
                budget_bits: budget(v),
            });
        }
        Ok(Self {
            input_budget_bits: budget(fresh),
            layers,
        })
    }
}

/// Evaluates one polynomial network on ciphertexts: public data only (weights, the
/// relinearization key, the plan).
///
/// A whole round trip through the public API: a network of one dense layer, a quadratic
/// activation and another dense layer, evaluated on two encrypted inputs of three images
/// (toy parameters, n = 1024, for speed; [`PlannedNetwork`] chooses secure ones).
///
/// ```
/// use cryptonets_core::Backend;
/// use cryptonets_core::bfv::SecretKey;
/// use cryptonets_core::model::polynomial::{Layer, PolynomialNetwork, Shape};
/// use cryptonets_core::network::{
///     EvaluationKeys, NetworkParameters, PolynomialEvaluator, crt_primes, decrypt_outputs,
///     encode_network_inputs,
/// };
/// use rand_chacha::ChaCha20Rng;
/// use rand_core::SeedableRng;
///
/// let network = PolynomialNetwork::new(
///     Shape::vector(2),
///     255,
///     vec![
///         Layer::Dense { outputs: 2, weights: vec![1, -2, 3, 1], biases: vec![5, 0] },
///         Layer::Polynomial { coefficients: [1, 2, 1, 0] }, // (x + 1)^2
///         Layer::Dense { outputs: 2, weights: vec![1, 1, -1, 2], biases: vec![0, -7] },
///     ],
/// )?;
/// let primes = crt_primes(network.plaintext_bits(), 1024)?;
/// let params = NetworkParameters::insecure_for_tests(1024, 4, &primes, Backend::detect())?;
/// let mut rng = ChaCha20Rng::seed_from_u64(1);
/// let secret = SecretKey::generate(&params.channels()[0], &mut rng);
/// let keys = EvaluationKeys::generate(&params, &secret, 1, &mut rng)?;
/// let evaluator = PolynomialEvaluator::new(&params, &network, &keys)?;
///
/// let images: [&[u8]; 3] = [&[0, 255], &[17, 3], &[200, 100]];
/// let mut outputs = Vec::new();
/// for (c, p) in params.channels().iter().enumerate() {
///     let inputs = encode_network_inputs(p, &network, &images)?
///         .iter()
///         .map(|m| secret.encrypt(p, m, &mut rng))
///         .collect::<Result<Vec<_>, _>>()?;
///     outputs.push(evaluator.evaluate_channel(c, &inputs)?);
/// }
/// let (values, _budget) = decrypt_outputs(&params, &secret, &outputs, images.len())?;
/// for (image, got) in images.iter().zip(&values) {
///     assert_eq!(got, &network.logits(image)?);
/// }
/// # Ok::<(), cryptonets_core::Error>(())
/// ```
#[derive(Debug)]
pub struct PolynomialEvaluator<'a> {
    params: &'a NetworkParameters,
    network: &'a PolynomialNetwork,
    keys: &'a EvaluationKeys,
    plan: PolynomialPlan,
    /// Per affine layer, its rows grouped by the inputs they read.
    groups: Vec<Vec<RowGroup>>,
}

/// The most inputs of one shared pass (`linear_combinations_of_sets`).
const MAX_SHARED_ROWS: usize = 1 << 16;

/// The rows of an affine layer that read the same inputs in the same order: every output
/// channel of a convolution at one position, or every output of a dense layer. One pass over
/// the inputs' columns serves them all (`linear_combinations_of_sets`): a block of each
/// input is read once and stays in cache for every output of the group.
#[derive(Debug)]
struct RowGroup {
    /// The input neurons read.
    inputs: Vec<u32>,
    /// The output neurons written, in the order of `biases`.
    outputs: Vec<u32>,
    /// weights[o * inputs.len() + r]: output o's weight on input r (model weights, |w| <= 2^15).
    weights: Vec<i32>,
    /// One per output.
    biases: Vec<i128>,
}

/// Groups the rows of affine layer `layer` (reading `input`) by their inputs. A dense
/// layer's outputs form one group over all inputs (a zero weight costs a multiply-add, not a
/// pass of its own); a convolution's and a pooling's rows group by window.
fn row_groups(layer: &Layer, input: crate::model::polynomial::Shape) -> Vec<RowGroup> {
    if let Layer::Dense {
        outputs,
        weights,
        biases,
    } = layer
    {
        return alloc::vec![RowGroup {
            inputs: (0..input.len() as u32).collect(),
            outputs: (0..*outputs as u32).collect(),
            weights: weights.iter().map(|&w| w as i32).collect(),
            biases: biases.clone(),
        }];
    }
    let mut groups: Vec<RowGroup> = Vec::new();
    let mut by_inputs: alloc::collections::BTreeMap<Vec<u32>, usize> = Default::default();
    let _ = layer.for_each_row(input, |o, taps: &[Tap], bias| {
        let inputs: Vec<u32> = taps.iter().map(|&(j, _)| j).collect();
        let g = *by_inputs.entry(inputs).or_insert_with_key(|inputs| {
            groups.push(RowGroup {
                inputs: inputs.clone(),
                outputs: Vec::new(),
                weights: Vec::new(),
                biases: Vec::new(),
            });
            groups.len() - 1
        });
        let group = &mut groups[g];
        group.outputs.push(o as u32);
        // Layer weights are i16 and pooling's are 1.
        group.weights.extend(taps.iter().map(|&(_, w)| w as i32));
        group.biases.push(bias);
        Ok::<(), ()>(())
    });
    groups
}

impl<'a> PolynomialEvaluator<'a> {
    /// Checks the keys against the parameters and plans the network, before any work.
    pub fn new(
        params: &'a NetworkParameters,
        network: &'a PolynomialNetwork,
        keys: &'a EvaluationKeys,
    ) -> Result<Self, Error> {
        keys.check(params)?;
        if network.plaintext_bits() as f64 >= params.plaintext_bits() {
            return Err(Error::InvalidParameters {
                reason: "the plaintext CRT primes cannot hold this network's values",
            });
        }
        let plan = PolynomialPlan::new(params, network)?;
        let groups = network
            .layers()
            .iter()
            .enumerate()
            .map(|(i, layer)| match layer.is_affine() {
                true => row_groups(layer, network.input_shape(i)),
                false => Vec::new(),
            })
            .collect();
        Ok(Self {
            params,
            network,
            keys,
            plan,
            groups,
        })
    }

    /// The plan being followed.
    pub fn plan(&self) -> &PolynomialPlan {
        &self.plan
    }

    /// The network on channel `channel`'s inputs: one fresh ciphertext (size 2, top level)
    /// per input neuron; returns one ciphertext per class at the plan's output level.
    pub fn evaluate_channel(
        &self,
        channel: usize,
        inputs: &[Ciphertext],
    ) -> Result<Vec<Ciphertext>, Error> {
        let p: &Parameters = self.params.channel(channel)?;
        let top = p.max_level();
        if inputs.len() != self.network.input().len()
            || inputs
                .iter()
                .any(|c| c.parameters_id() != p.id() || c.level() != top || c.size() != 2)
        {
            return Err(Error::Incompatible {
                reason: "one fresh ciphertext of this channel per input neuron expected",
            });
        }
        let evaluator = Evaluator::new(p);
        let relin = &self.keys.relin;
        let mut level = top;
        // The first layer reads the caller's inputs in place; each later one its
        // predecessor's outputs, which are dropped as soon as the next layer is done.
        let mut owned: Option<Vec<Ciphertext>> = None;
        for (i, layer) in self.network.layers().iter().enumerate() {
            let target = self.plan.layers[i].level;
            let current: &[Ciphertext] = owned.as_deref().unwrap_or(inputs);
            let next: Vec<Ciphertext> = match layer {
                // The neuron order is already the flattened one.
                Layer::Flatten => continue,
                Layer::Polynomial { coefficients: c } => {
                    let power = |s: &mut MultiplyScratch, j: usize| -> Result<Ciphertext, Error> {
                        let x = &current[j];
                        let mut x2 = evaluator.square_to_level(x, x.level(), s)?;
                        evaluator.relinearize_assign(&mut x2, relin)?;
                        let x3 = match c[3] {
                            0 => None,
                            _ => {
                                let mut x3 = evaluator.multiply_with(&x2, x, s)?;
                                evaluator.relinearize_assign(&mut x3, relin)?;
                                Some(x3)
                            }
                        };
                        if *c == [0, 0, 1, 0] {
                            // A plain square (CryptoNets): x^2 is the output as it is.
                            while x2.level() > target {
                                evaluator.mod_switch_to_next_assign(&mut x2)?;
                            }
                            return Ok(x2);
                        }
                        let powers = [Some(x), Some(&x2), x3.as_ref()];
                        let terms: Vec<(&Ciphertext, i64)> = powers
                            .iter()
                            .zip(&c[1..])
                            .filter(|&(_, &ck)| ck != 0)
                            .filter_map(|(p, &ck)| p.map(|p| (p, ck)))
                            .collect();
                        let mut y = evaluator.linear_combination(&terms, c[0] as i128, level, 2)?;
                        while y.level() > target {
                            evaluator.mod_switch_to_next_assign(&mut y)?;
                        }
                        Ok(y)
                    };
                    let results =
                        parallel::map_init(current.len(), MultiplyScratch::default, power);
                    results.into_iter().collect::<Result<_, Error>>()?
                }
                _ => {
                    let mut next =
                        self.affine_layer(p, &evaluator, &self.groups[i], current, level)?;
                    parallel::for_each_mut(&mut next, |_, y| {
                        while y.level() > target {
                            // The plan's levels are at least 1.
                            evaluator
                                .mod_switch_to_next_assign(y)
                                .expect("a planned level above 1");
                        }
                    });
                    next
                }
            };
            owned = Some(next);
            level = target;
        }
        Ok(owned.unwrap_or_else(|| inputs.to_vec()))
    }

    /// One affine layer's outputs at `level` (before any switch), in output order: each group
    /// of rows with one window in one pass over its inputs' columns.
    fn affine_layer(
        &self,
        p: &Parameters,
        evaluator: &Evaluator<'_>,
        groups: &[RowGroup],
        current: &[Ciphertext],
        level: usize,
    ) -> Result<Vec<Ciphertext>, Error> {
        let outputs = groups.iter().map(|g| g.outputs.len()).sum::<usize>();
        let mut next: Vec<Option<Ciphertext>> = (0..outputs).map(|_| None).collect();
        // A window entirely in the padding reads nothing (its outputs are their biases), and
        // the shared pass sums at most 2^16 rows: such groups go row by row.
        let (grouped, single): (Vec<&RowGroup>, Vec<&RowGroup>) = groups
            .iter()
            .partition(|g| !g.inputs.is_empty() && g.inputs.len() <= MAX_SHARED_ROWS);
        for group in single {
            let rows = group.inputs.len();
            for (k, (&o, &bias)) in group.outputs.iter().zip(&group.biases).enumerate() {
                let terms: Vec<(&Ciphertext, i64)> = group
                    .inputs
                    .iter()
                    .zip(&group.weights[k * rows..(k + 1) * rows])
                    .map(|(&j, &w)| (&current[j as usize], w as i64))
                    .collect();
                next[o as usize] = Some(evaluator.linear_combination(&terms, bias, level, 2)?);
            }
        }
        let sets: Vec<Combinations<'_>> = grouped
            .iter()
            .map(|g| Combinations {
                rows: g.inputs.iter().map(|&j| &current[j as usize]).collect(),
                weights: &g.weights,
                biases: &g.biases,
            })
            .collect();
        if !sets.is_empty() {
            let results = linear_combinations_of_sets(p, &sets, &mut Vec::new());
            for (group, cts) in grouped.iter().zip(results) {
                for (&o, ct) in group.outputs.iter().zip(cts) {
                    next[o as usize] = Some(ct);
                }
            }
        }
        next.into_iter()
            .map(|c| {
                c.ok_or(Error::Incompatible {
                    reason: "an affine layer's rows do not cover its outputs",
                })
            })
            .collect()
    }
}

/// Per input neuron, the plaintext of a batch of `images` (each the network's input pixels,
/// channel by channel, row by row) under the parameters of one channel: image i in slot i.
pub fn encode_network_inputs(
    params: &Parameters,
    network: &PolynomialNetwork,
    images: &[&[u8]],
) -> Result<Vec<Plaintext>, Error> {
    let n = params.degree();
    let len = network.input().len();
    if images.len() > n || images.iter().any(|im| im.len() != len) {
        return Err(Error::InvalidParameters {
            reason: "at most n images, each with the network's input size",
        });
    }
    let encoder = BatchEncoder::new(params);
    parallel::map(len, |neuron| {
        let mut values = alloc::vec![0u64; n];
        for (slot, image) in images.iter().enumerate() {
            values[slot] = network.quantize_pixel(image[neuron]) as u64;
        }
        encoder.encode(&values)
    })
    .into_iter()
    .collect()
}

/// Seconds of one product (square or multiply) with relinearization, per ciphertext prime,
/// on one core at n = 8192: measured through the general evaluator on the CryptoNets network
/// (2 cores of an AMD EPYC, AVX2: 7.6 s a batch; the estimate is linear in n).
const PRODUCT_SECONDS_PER_LIMB_8192: f64 = 0.6e-3;
/// Seconds of one residue multiply-accumulate of an affine layer's shared pass (half-word
/// sums of 16 lanes, the inputs' block in cache), on one core: measured through the general
/// evaluator on two-convolution networks (Intel Xeon, AVX-512).
const SHARED_MAC_SECONDS: f64 = 0.06e-9;
/// Seconds of reading and packing one residue of an affine layer's inputs, on one core: the
/// general evaluator's first estimate of it, which its choices among ring degrees were
/// checked with (the estimate of the CryptoNets network stays above the measured time).
const READ_SECONDS: f64 = 0.35e-9;
/// What a process holds besides the layers' ciphertexts: keys, plaintexts being encrypted,
/// the images, the allocator's pools (measured: about 150 MiB on the CryptoNets network).
const BASE_BYTES: u64 = 160 << 20;

/// Ring degrees the planner considers (the batch holds n images).
pub const PLANNED_DEGREES: [usize; 3] = [8192, 16384, 32768];

impl PolynomialPlan {
    /// Estimated peak memory and time of one batch under `params` on `threads` threads
    /// (the cost model of [`super::ResourceEstimate`]: residues of the live layers, squares
    /// and multiply-accumulates at the development machine's rates).
    pub fn estimate(
        &self,
        params: &NetworkParameters,
        network: &PolynomialNetwork,
        threads: usize,
    ) -> super::ResourceEstimate {
        let p = &params.channels()[0];
        let n = p.degree() as f64;
        let channels = params.channels().len() as f64;
        let top = p.max_level();
        let mut level = top;
        let (mut seconds, mut peak) = (0.0f64, 0.0f64);
        let ciphertext = |level: usize| 2.0 * level as f64 * n * 4.0;
        // The caller's inputs stay alive through the whole channel.
        let inputs = network.input().len() as f64 * ciphertext(top);
        let mut live = 0.0;
        for (i, layer) in network.layers().iter().enumerate() {
            let out = network.shapes()[i].len() as f64;
            match layer {
                Layer::Flatten => {}
                Layer::Polynomial { coefficients } => {
                    let products = if coefficients[3] != 0 { 2.0 } else { 1.0 };
                    seconds +=
                        out * products * level as f64 * PRODUCT_SECONDS_PER_LIMB_8192 * n / 8192.0;
                }
                _ => {
                    // A group's inputs are read and packed once; every output of the group
                    // multiplies and adds on them in cache (`affine_layer`).
                    let (mut macs, mut reads) = (0f64, 0f64);
                    for group in row_groups(layer, network.input_shape(i)) {
                        macs += (group.inputs.len() * group.outputs.len()) as f64;
                        reads += group.inputs.len() as f64;
                    }
                    let residues = 2.0 * level as f64 * n;
                    seconds += residues * (macs * SHARED_MAC_SECONDS + reads * READ_SECONDS);
                }
            }
            let next = out * ciphertext(self.layers[i].level);
            peak = peak.max(inputs + live + next);
            live = next;
            level = self.layers[i].level;
        }
        let overhead = 1.0 + super::resources::OVERHEAD;
        super::ResourceEstimate {
            peak_bytes: (peak * overhead) as u64 + BASE_BYTES,
            seconds: channels * seconds / threads.max(1) as f64,
        }
    }
}

/// Everything encryption needs for a network, chosen by the planner: the parameters (ring
/// degree, ciphertext primes, CRT primes) and the evaluation plan under them.
#[derive(Clone, Debug)]
pub struct PlannedNetwork {
    /// The parameters.
    pub params: NetworkParameters,
    /// The plan under them.
    pub plan: PolynomialPlan,
    /// Its estimated cost per batch (n images) on `threads` threads.
    pub estimate: super::ResourceEstimate,
}

impl PlannedNetwork {
    /// The cheapest parameters that evaluate `network` with the margin, per image at full
    /// batches: the plan of least estimated time for `images` images (whole batches of n)
    /// among those of [`PlannedNetwork::for_degree`] for each ring degree in
    /// [`PLANNED_DEGREES`]. Refuses, with the reason of the largest degree tried, when none
    /// fits.
    pub fn new(
        network: &PolynomialNetwork,
        backend: crate::backend::Backend,
        threads: usize,
        images: usize,
    ) -> Result<Self, Error> {
        let mut best: Option<(f64, Self)> = None;
        let mut last_error = Error::InvalidParameters {
            reason: "no ring degree can hold this network",
        };
        for n in PLANNED_DEGREES {
            match Self::for_degree(network, backend, threads, n) {
                Ok(planned) => {
                    let cost = planned.estimate.seconds * images.max(1).div_ceil(n) as f64;
                    if best.as_ref().is_none_or(|(best, _)| cost < *best) {
                        best = Some((cost, planned));
                    }
                }
                Err(e) => last_error = e,
            }
        }
        best.map(|(_, planned)| planned).ok_or(last_error)
    }

    /// The cheapest plan at ring degree `n`: for each of the fewest CRT channel counts that
    /// hold the outputs (the fewest, and one or two more of smaller primes), the fewest
    /// 30-bit ciphertext primes whose plan keeps the margin within the
    /// HomomorphicEncryption.org 128-bit bound (special primes included); then the one of
    /// least estimated time. It does not depend on the batch size, so every party that
    /// knows the model and n (a key file's parameters, a batch's header) finds the same
    /// parameters. Refuses with the last reason found when none fits.
    pub fn for_degree(
        network: &PolynomialNetwork,
        backend: crate::backend::Backend,
        threads: usize,
        n: usize,
    ) -> Result<Self, Error> {
        let mut best: Option<Self> = None;
        let mut last_error = Error::InvalidParameters {
            reason: "no CRT primes of this ring degree hold the network's outputs",
        };
        let bits = network.plaintext_bits();
        let candidates = super::crt_prime_candidates(bits, n);
        let bound = crate::bfv::max_log_q_128(n).unwrap_or(0) as usize;
        let max_q = (bound / 30)
            .saturating_sub(super::SPECIAL_PRIMES)
            .min(crate::rns::MAX_LIMBS);
        for primes in candidates {
            for q in 1..=max_q {
                let params = match NetworkParameters::new(n, q, &primes, backend) {
                    Ok(p) => p,
                    Err(e) => {
                        last_error = e;
                        continue;
                    }
                };
                match PolynomialPlan::new(&params, network) {
                    Ok(plan) => {
                        let estimate = plan.estimate(&params, network, threads);
                        if best
                            .as_ref()
                            .is_none_or(|b| estimate.seconds < b.estimate.seconds)
                        {
                            best = Some(Self {
                                params,
                                plan,
                                estimate,
                            });
                        }
                        break;
                    }
                    Err(e) => last_error = e,
                }
            }
        }
        best.ok_or(last_error)
    }
}
