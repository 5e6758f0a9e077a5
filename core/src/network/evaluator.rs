//! The service side: the integer model evaluated on ciphertexts, channel by channel.

use alloc::vec::Vec;

use super::noise::{EvaluationPlan, Inputs};
use super::{EvaluationKeys, INPUTS, NetworkParameters, Packing, Phase, parallel};
use crate::Error;
use crate::backend::linear::{HALF_SUM_START, pair_major_weights};
use crate::backend::{Backend, Kernels, PairRows};
use crate::bfv::{
    Ciphertext, Evaluator, ExpandedCiphertext, GaloisKey, MultiplyScratch, Parameters,
};
use crate::model::{CLASSES, CONV_SIDE, KERNEL, Model, SIDE};

/// Convolution positions (each with every map) squared and handed to the first dense layer at a
/// time: bounds the memory of the squares (each about 3 x level x n x 4 bytes) while leaving
/// every core work. The dense layer reads and writes all its accumulators (about 100 MB for
/// the committed model) once a group, so few groups matter: three rows of positions (five
/// groups) took the layer from 0.55 to 0.45 s a batch against one row (thirteen groups); with
/// the fused VNNI sums, half the positions (two groups) took it from 0.39 to 0.34 s against
/// five, for about 100 MB more of squares.
pub(super) const GROUP_POSITIONS: usize = 85;
/// A convolution window's taps as laid out: its rows of six columns.
const WINDOW_TAPS: usize = KERNEL * (KERNEL + 1);
/// The window tap of a column outside the image: a zero ciphertext.
const PADDING: u16 = u16::MAX;
/// Columns of a linear combination computed at a time, one task each: the blocks of a group's
/// input rows (up to 17 rows of pixels, 476 ciphertexts, 0.9 MB) and outputs (425, 0.8 MB)
/// stay in a 2 MB L2.
const LINEAR_BLOCK: usize = 512;
/// Columns a dense-layer task accumulates: its rows and accumulators stay in L2.
const COLUMNS: usize = 512;

/// The distance between two packed pairs of a column block: one cache line more than its
/// columns, so that the same columns of successive pairs fall in different L1 sets (at
/// 2 KB apart they shared two of the 64 sets of a 32 KB L1).
const PAIR_STRIDE: usize = COLUMNS + 16;

/// The form of the inputs' second polynomial (a), as the evaluation receives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SecondPoly {
    Coefficients,
    /// [`ExpandedCiphertext`]s: the convolution's outputs have c1 in NTT form too.
    Ntt,
}

/// Evaluates one model under one set of network parameters. Holds only public data: the
/// weights, the evaluation keys and the plans; it never sees a secret key.
#[derive(Debug)]
pub struct NetworkEvaluator<'a> {
    params: &'a NetworkParameters,
    keys: &'a EvaluationKeys,
    plan: EvaluationPlan,
    /// The plan of packed batches, whose inputs are unpacked by key switching first (an
    /// error where the parameters leave too little budget for it).
    unpacked_plan: Result<EvaluationPlan, Error>,
    /// Per convolution position, the input pixels of its window's rows inside the image, six
    /// columns a row (`PADDING` outside the image; see `new`).
    windows: Vec<heapless::Vec<u16, WINDOW_TAPS>>,
    /// Per position, the weights of every map on its window: [map][tap of `windows`] (0 on
    /// each row's sixth column).
    window_weights: Vec<Vec<i32>>,
    /// [map].
    conv_bias: Vec<i128>,
    maps: usize,
    /// [unit][feature].
    dense1: Vec<i32>,
    dense1_bias: Vec<i128>,
    /// [class][unit].
    dense2: Vec<i32>,
    dense2_bias: Vec<i128>,
    hidden: usize,
    /// Whether every hidden unit's |weights| sum below 2^16, so that the first dense layer
    /// runs on half-word sums (see [`Accumulators`]).
    dense1_halves: bool,
    /// log2 of the largest sum of a hidden unit's |weights| (minus infinity if all are 0):
    /// where the square level's auxiliary basis has that much headroom
    /// ([`Parameters::tensor_sum_headroom`]), the first dense layer sums the squares' unscaled
    /// tensors and scales each hidden unit once.
    dense1_log2_weight_sum: f64,
    /// Tests force the choice of [`Self::sums_tensors`] (None: by the backend's kernels).
    forced_tensor_sums: Option<bool>,
}

/// The large buffers one channel's evaluation fills (convolution outputs, their squares, the
/// first dense layer's accumulators, the hidden units: about 0.45 GB for the committed
/// model), kept between calls: a loop of channels and batches that passes the same
/// workspace reuses them instead of faulting fresh pages in (and having them zeroed) on
/// every call. Holds only public data, every word of it overwritten before it is read.
#[derive(Debug, Default)]
pub struct Workspace {
    /// Polynomial buffers: convolution outputs, then the hidden layer's ciphertexts.
    polys: Vec<Vec<u32>>,
    /// Squares of a group of convolution outputs.
    squares: Vec<Ciphertext>,
    /// The first dense layer's accumulator buffers.
    sums: Vec<Vec<u32>>,
    /// Unscaled tensors of a group's squares, where the dense layer scales its outputs.
    tensors: Vec<[Vec<u32>; 3]>,
}

impl<'a> NetworkEvaluator<'a> {
    /// Prepares the evaluation of `model`; refuses parameters whose noise budget would not
    /// last through the network (see [`EvaluationPlan`]).
    pub fn new(
        params: &'a NetworkParameters,
        model: &Model,
        keys: &'a EvaluationKeys,
    ) -> Result<Self, Error> {
        keys.check(params)?;
        let plan = EvaluationPlan::new(params, model)?;
        let unpacked_plan = EvaluationPlan::with_inputs(params, model, Inputs::Unpacked);
        let maps = model.maps();
        let features = maps * CONV_SIDE * CONV_SIDE;
        // Window tap (ky, kx) covers pixel (2 oy + ky - 1, 2 ox + kx - 1): padding of one. Each
        // kernel row inside the image is laid out as six columns, the sixth of weight 0, so that
        // its pairs are the pixels (2j - 1, 2j) of its image row for j = ox, ox + 1, ox + 2:
        // the same pairs for every window on that row, packed once a block
        // ([`linear_combinations_of_sets`]). Columns outside the image read `PADDING`.
        let (windows, window_weights): (Vec<_>, Vec<_>) = (0..CONV_SIDE * CONV_SIDE)
            .map(|position| {
                let (oy, ox) = (position / CONV_SIDE, position % CONV_SIDE);
                let taps: heapless::Vec<(u16, Option<usize>), WINDOW_TAPS> = (0..KERNEL)
                    .filter_map(|ky| {
                        let y = (2 * oy + ky) as isize - 1;
                        (0..SIDE as isize).contains(&y).then_some((y as usize, ky))
                    })
                    .flat_map(|(y, ky)| {
                        (0..KERNEL + 1).map(move |kx| {
                            let x = (2 * ox + kx) as isize - 1;
                            let pixel = match (0..SIDE as isize).contains(&x) {
                                true => (y * SIDE + x as usize) as u16,
                                false => PADDING,
                            };
                            (pixel, (kx < KERNEL).then_some(ky * KERNEL + kx))
                        })
                    })
                    .collect();
                let weights = (0..maps)
                    .flat_map(|map| {
                        taps.iter()
                            .map(move |&(_, k)| k.map_or(0, |k| model.conv_weight(map, k) as i32))
                    })
                    .collect::<Vec<_>>();
                (taps.iter().map(|&(p, _)| p).collect(), weights)
            })
            .unzip();
        let hidden = model.hidden();
        let dense1: Vec<i32> = (0..hidden * features)
            .map(|i| model.dense1_weight(i / features, i % features) as i32)
            .collect();
        let dense1_halves = fits_half_sums(dense1.chunks_exact(features));
        let largest_weight_sum = dense1
            .chunks_exact(features)
            .map(|w| w.iter().map(|x| x.unsigned_abs() as u64).sum::<u64>())
            .max()
            .unwrap_or(0);
        Ok(Self {
            params,
            keys,
            plan,
            unpacked_plan,
            windows,
            window_weights,
            conv_bias: (0..maps).map(|map| model.conv_bias(map)).collect(),
            maps,
            dense1,
            dense1_bias: (0..hidden).map(|u| model.dense1_bias(u)).collect(),
            dense2: (0..CLASSES * hidden)
                .map(|i| model.dense2_weight(i / hidden, i % hidden) as i32)
                .collect(),
            dense2_bias: (0..CLASSES).map(|c| model.dense2_bias(c)).collect(),
            hidden,
            dense1_halves,
            dense1_log2_weight_sum: libm::log2(largest_weight_sum as f64),
            forced_tensor_sums: None,
        })
    }

    pub(super) fn params(&self) -> &NetworkParameters {
        self.params
    }

    pub(super) fn maps(&self) -> usize {
        self.maps
    }

    pub(super) fn hidden(&self) -> usize {
        self.hidden
    }

    /// Whether the first dense layer sums the unscaled tensors of squares at `square_level` of
    /// `params` (see `evaluate`): on half-word sums, where that level's auxiliary basis holds
    /// them, and where the backend's sums are cheap ([`Backend::cheap_pair_sums`]). The layer
    /// then works on Q u P (11 limbs for the committed model) instead of the hidden level's Q
    /// (4), so it pays only where its multiply-accumulates cost little against the squares'
    /// transforms and scalings. Measured on an AMD EPYC (AVX2, 2 cores), three alternating
    /// rounds: the squares 1.24 to 1.54 s a batch -> 0.44 to 0.52, the dense layer 0.56 to
    /// 0.80 -> 1.31 to 1.58; the two together 6% faster relative to the unchanged steps.
    pub(super) fn sums_tensors(&self, params: &Parameters, square_level: usize) -> bool {
        let cheap_sums = self
            .forced_tensor_sums
            .unwrap_or_else(|| params.backend().cheap_pair_sums());
        cheap_sums
            && self.dense1_halves
            && self.dense1_log2_weight_sum < params.tensor_sum_headroom(square_level)
    }

    /// This evaluator with the first dense layer summing squares' tensors where the
    /// auxiliary basis allows (`true`), or never (`false`), whatever the backend.
    #[cfg(test)]
    pub(super) fn forcing_tensor_sums(mut self, sums: bool) -> Self {
        self.forced_tensor_sums = Some(sums);
        self
    }

    /// The levels and noise estimates the evaluation of a full batch follows.
    pub fn plan(&self) -> &EvaluationPlan {
        &self.plan
    }

    /// Those of a packed batch: its inputs are unpacked by key switching first.
    pub fn unpacked_plan(&self) -> Result<&EvaluationPlan, Error> {
        self.unpacked_plan.as_ref().map_err(|e| *e)
    }

    /// The plan a batch of this packing follows.
    pub fn plan_for(&self, packing: Packing) -> Result<&EvaluationPlan, Error> {
        match packing.factor() {
            1 => Ok(&self.plan),
            _ => self.unpacked_plan(),
        }
    }

    /// Checks that `inputs` are what channel `channel` takes: one fresh ciphertext per input
    /// of the packing, size 2, at the top level of these parameters.
    fn check_inputs(
        &self,
        params: &Parameters,
        inputs: &[&Ciphertext],
        packing: Packing,
    ) -> Result<(), Error> {
        for ct in inputs {
            params.check_id(ct.parameters_id())?;
        }
        if inputs.len() != packing.ciphertexts() {
            return Err(Error::Incompatible {
                reason: "expected one input ciphertext per pixel (784), or per packed group of pixels",
            });
        }
        let n = params.degree();
        let level = params.max_level();
        if inputs.iter().any(|ct| {
            ct.size() != 2 || ct.level() != level || (0..2).any(|k| ct.poly(k).len() != level * n)
        }) {
            return Err(Error::Incompatible {
                reason: "input ciphertexts must be fresh (size 2, top level) for these parameters",
            });
        }
        Ok(())
    }

    /// Evaluates the network on channel `channel`'s input ciphertexts (784, or 784 / k for
    /// a batch packed k pixels a ciphertext) and returns its 10 output ciphertexts (size 3,
    /// at the plan's output level).
    pub fn evaluate_channel(
        &self,
        channel: usize,
        inputs: &[Ciphertext],
        packing: Packing,
    ) -> Result<Vec<Ciphertext>, Error> {
        self.evaluate_channel_observed(channel, inputs, packing, &|_| {})
    }

    /// [`Self::evaluate_channel`], calling `phase_done` as each step of the evaluation ends
    /// (several times for the steps that alternate group by group), so that a caller with a
    /// clock can tell where the time goes.
    pub fn evaluate_channel_observed(
        &self,
        channel: usize,
        inputs: &[Ciphertext],
        packing: Packing,
        phase_done: &dyn Fn(Phase),
    ) -> Result<Vec<Ciphertext>, Error> {
        let mut workspace = Workspace::default();
        self.evaluate_channel_in(&mut workspace, channel, inputs, packing, phase_done)
    }

    /// [`Self::evaluate_channel_observed`] in `workspace`'s buffers, which it leaves there for
    /// the next call (any channel, any batch, any parameters).
    pub fn evaluate_channel_in(
        &self,
        workspace: &mut Workspace,
        channel: usize,
        inputs: &[Ciphertext],
        packing: Packing,
        phase_done: &dyn Fn(Phase),
    ) -> Result<Vec<Ciphertext>, Error> {
        let params = self.params.channel(channel)?;
        let rows: Vec<&Ciphertext> = inputs.iter().collect();
        self.check_inputs(params, &rows, packing)?;
        let plan = self.plan_for(packing)?;
        if packing.factor() == 1 {
            let form = SecondPoly::Coefficients;
            return Ok(self.evaluate(workspace, params, &rows, form, plan, phase_done));
        }
        let n = params.degree();
        let keys = (1..packing.factor())
            .map(|block| {
                self.keys
                    .galois_key(packing.element(n, block))
                    .ok_or(Error::Incompatible {
                        reason: "the evaluation key has no Galois key for this packing",
                    })
            })
            .collect::<Result<Vec<&GaloisKey>, Error>>()?;
        let evaluator = Evaluator::new(params);
        // Every block of a packed ciphertext at once: one decomposition for all keys.
        let blocks = parallel::map(inputs.len(), |c| {
            evaluator.apply_galois_many(&inputs[c], &keys)
        });
        let blocks = blocks.into_iter().collect::<Result<Vec<_>, Error>>()?;
        // Block 0 of a packed ciphertext is already in place: it is used as it is.
        let unpacked: Vec<&Ciphertext> = (0..INPUTS)
            .map(|pixel| match packing.position(pixel) {
                (ciphertext, 0) => &inputs[ciphertext],
                (ciphertext, block) => &blocks[ciphertext][block - 1],
            })
            .collect();
        phase_done(Phase::Unpack);
        let form = SecondPoly::Coefficients;
        Ok(self.evaluate(workspace, params, &unpacked, form, plan, phase_done))
    }

    /// [`Self::evaluate_channel_in`] on inputs as their seeds expand, a left in NTT form
    /// ([`ExpandedCiphertext`], `SeededCiphertext::expand_ntt`): the convolution runs on a as
    /// it is, and each square of its outputs inverse-transforms a's Q limbs for the extension
    /// instead of forward-transforming them for the tensor, so the expansion's inverse
    /// transforms are saved. Packed inputs, unpacked by key switching first, are brought to
    /// coefficient form (copies) and evaluated as [`Self::evaluate_channel_in`] does.
    pub fn evaluate_expanded_in(
        &self,
        workspace: &mut Workspace,
        channel: usize,
        inputs: &[ExpandedCiphertext],
        packing: Packing,
        phase_done: &dyn Fn(Phase),
    ) -> Result<Vec<Ciphertext>, Error> {
        let params = self.params.channel(channel)?;
        let rows: Vec<&Ciphertext> = inputs.iter().map(|ct| &ct.inner).collect();
        self.check_inputs(params, &rows, packing)?;
        let plan = self.plan_for(packing)?;
        if packing.factor() == 1 {
            let form = SecondPoly::Ntt;
            return Ok(self.evaluate(workspace, params, &rows, form, plan, phase_done));
        }
        let inputs = parallel::map(inputs.len(), |c| {
            inputs[c].clone().into_coefficients(params)
        });
        let inputs = inputs.into_iter().collect::<Result<Vec<_>, Error>>()?;
        self.evaluate_channel_in(workspace, channel, &inputs, packing, phase_done)
    }

    /// The network on one channel's 784 checked inputs, one pixel each, their second
    /// polynomials in form `second`.
    fn evaluate(
        &self,
        workspace: &mut Workspace,
        params: &Parameters,
        inputs: &[&Ciphertext],
        second: SecondPoly,
        plan: &EvaluationPlan,
        phase_done: &dyn Fn(Phase),
    ) -> Vec<Ciphertext> {
        let evaluator = Evaluator::new(params);
        let hidden_level = plan.hidden_level;
        let (maps, positions, n) = (self.maps, self.windows.len(), params.degree());
        let features = maps * positions;

        // Convolution (every map of a window at once, sharing the reads of its pixels),
        // square, switch down, and stream into the first dense layer. Where the square level's
        // auxiliary basis holds the layer's sums of tensors, the squares stay unscaled tensors
        // over Q u P in NTT form and the layer scales its outputs: a convolution output costs
        // its extension's transforms only (22 NTTs against 55 for the committed model), and
        // the 100 hidden units take the scalings instead of the 845 squares. One rounding
        // instead of a weighted sum of them: the plan's noise bound holds a fortiori.
        let square_level = plan.square_level;
        let summed = self.sums_tensors(params, square_level);
        let limbs = match summed {
            true => square_level + params.level_data(square_level).auxiliary_limbs,
            false => hidden_level,
        };
        let mut dense1 = Accumulators::new(
            params,
            self.hidden,
            self.dense1_halves,
            3,
            limbs,
            &mut workspace.sums,
        );
        // The buffers of one group's convolution outputs and squares serve the next groups
        // (and the next calls, through the workspace): each is overwritten whole, so none is
        // zeroed, and the pages are touched once.
        let spare = &mut workspace.polys;
        let squares = &mut workspace.squares;
        let top = inputs[0].level();
        let zero = Ciphertext::from_parts(params, top, alloc::vec![alloc::vec![0; top * n]; 2]);
        let mut start = 0;
        while start < positions {
            let group = GROUP_POSITIONS.min(positions - start);
            // convs[i * maps + map] is feature map * positions + start + i. Squared in a second
            // pass, one task per square, so that every core has work to the end of the group.
            let windows: Vec<Combinations<'_>> = (start..start + group)
                .map(|position| Combinations {
                    rows: self.windows[position]
                        .iter()
                        .map(|&p| match p {
                            PADDING => &zero,
                            p => inputs[p as usize],
                        })
                        .collect(),
                    weights: &self.window_weights[position],
                    biases: &self.conv_bias,
                })
                .collect();
            let mut convs: Vec<Ciphertext> = linear_combinations_of_sets(params, &windows, spare)
                .into_iter()
                .flatten()
                .collect();
            phase_done(Phase::Convolution);
            // With a in NTT form, a square at the inputs' level starts from it as it is; a
            // switch down first needs coefficients.
            let squares_from_ntt = second == SecondPoly::Ntt && plan.square_level == top;
            parallel::for_each_mut(&mut convs, |_, conv| {
                if second == SecondPoly::Ntt && !squares_from_ntt {
                    params
                        .ciphertext_basis()
                        .inverse(params.backend(), &mut conv.polys[1], 0);
                }
                while conv.level() > plan.square_level {
                    evaluator
                        .mod_switch_to_next_assign(conv)
                        .expect("level above 1");
                }
            });
            // The squares as rows of the dense layer: unscaled tensors, or ciphertexts at the
            // hidden level.
            let rows: Vec<&[Vec<u32>]> = if summed {
                let tensors = &mut workspace.tensors;
                tensors.resize_with(tensors.len().max(convs.len()), Default::default);
                let mut pairs: Vec<(&mut Ciphertext, &mut [Vec<u32>; 3])> =
                    convs.iter_mut().zip(tensors.iter_mut()).collect();
                parallel::for_each_mut_init(&mut pairs, MultiplyScratch::default, |s, _, pair| {
                    let (conv, out) = pair;
                    evaluator
                        .square_unscaled_into(conv, squares_from_ntt, s, out)
                        .expect("checked shape");
                });
                drop(pairs);
                tensors[..convs.len()].iter().map(|t| &t[..]).collect()
            } else {
                squares.truncate(convs.len());
                while squares.len() < convs.len() {
                    // Zeroed by the allocator: fresh pages are faulted in by the parallel
                    // squares.
                    let polys = (0..3)
                        .map(|_| alloc::vec![0u32; hidden_level * n])
                        .collect();
                    squares.push(Ciphertext::from_parts(params, hidden_level, polys));
                }
                let mut pairs: Vec<(&mut Ciphertext, &mut Ciphertext)> =
                    convs.iter_mut().zip(squares.iter_mut()).collect();
                parallel::for_each_mut_init(&mut pairs, MultiplyScratch::default, |s, _, pair| {
                    let (conv, out) = pair;
                    match squares_from_ntt {
                        true => {
                            evaluator.square_ntt_second_to_level_into(conv, hidden_level, s, out)
                        }
                        false => evaluator.square_to_level_into(conv, hidden_level, s, out),
                    }
                    .expect("checked shape and level")
                });
                drop(pairs);
                squares.iter().map(|ct| &ct.polys[..]).collect()
            };
            spare.extend(convs.into_iter().flat_map(Ciphertext::into_polys));
            phase_done(Phase::ConvolutionSquare);
            dense1.add_group(params, &rows, |unit, i| {
                let feature = (i % maps) * positions + start + i / maps;
                self.dense1[unit * features + feature]
            });
            phase_done(Phase::HiddenDense);
            start += group;
        }
        let pool = &mut workspace.polys;
        let hidden = match summed {
            true => dense1.started().finish_tensors(
                params,
                square_level,
                hidden_level,
                &self.dense1_bias,
                &mut workspace.sums,
                pool,
            ),
            false => dense1
                .started()
                .finish(params, &self.dense1_bias, &mut workspace.sums, pool),
        };
        phase_done(Phase::HiddenDense);

        // Relinearize and square the hidden units, each square over buffers of the pool.
        let mut units: Vec<(Ciphertext, Ciphertext)> = hidden
            .into_iter()
            .map(|unit| {
                let polys = (0..3)
                    .map(|_| take_buffer(pool, hidden_level * n))
                    .collect();
                (unit, Ciphertext::from_parts(params, hidden_level, polys))
            })
            .collect();
        parallel::for_each_mut_init(&mut units, MultiplyScratch::default, |s, _, unit| {
            let (unit, square) = unit;
            evaluator
                .relinearize_assign(unit, &self.keys.relin)
                .expect("checked shape");
            evaluator
                .square_to_level_into(unit, unit.level(), s, square)
                .expect("size 2");
        });
        phase_done(Phase::HiddenSquare);

        // Last dense layer, then down to the output level.
        let rows: Vec<&Ciphertext> = units.iter().map(|(_, square)| square).collect();
        let mut logits = linear_combinations(params, &rows, &self.dense2, &self.dense2_bias);
        pool.extend(
            units.into_iter().flat_map(|(unit, square)| {
                unit.into_polys().into_iter().chain(square.into_polys())
            }),
        );
        phase_done(Phase::OutputDense);
        parallel::for_each_mut(&mut logits, |_, logit| {
            while logit.level() > plan.output_level {
                evaluator
                    .mod_switch_to_next_assign(logit)
                    .expect("level above 1");
            }
        });
        phase_done(Phase::OutputSwitch);
        logits
    }
}

/// One set of linear combinations of ciphertexts: for each output o,
/// biases[o] + sum_r weights[o * rows + r] rows[r] (weights of at most 2^15 in magnitude, at
/// most 2^16 rows; the rows of one size and level).
pub(super) struct Combinations<'a> {
    pub rows: Vec<&'a Ciphertext>,
    pub weights: &'a [i32],
    pub biases: &'a [i128],
}

/// The outputs of one set of [`Combinations`].
pub(super) fn linear_combinations(
    params: &Parameters,
    rows: &[&Ciphertext],
    weights: &[i32],
    biases: &[i128],
) -> Vec<Ciphertext> {
    let set = Combinations {
        rows: rows.to_vec(),
        weights,
        biases,
    };
    linear_combinations_of_sets(params, &[set], &mut Vec::new())
        .pop()
        .expect("one set")
}

/// The outputs of several sets of [`Combinations`] whose rows have one size and level, set by
/// set. Column block by column block, one task a block on every core: a block of the rows is
/// read once (from memory shared by the sets, such as overlapping convolution windows) and
/// stays in cache while every output of every set reads it. On half-word sums for the sets
/// whose outputs' |weights| sum below 2^16 (see [`Accumulators`]), else on i64. The outputs'
/// polynomials take their buffers from `spare` first (whatever they hold: every word is
/// written), then from new allocations.
pub(super) fn linear_combinations_of_sets(
    params: &Parameters,
    sets: &[Combinations<'_>],
    spare: &mut Vec<Vec<u32>>,
) -> Vec<Vec<Ciphertext>> {
    let first = sets[0].rows[0];
    let (n, level, size) = (params.degree(), first.level(), first.size());
    let moduli = &params.ciphertext_basis().moduli()[..level];
    for set in sets {
        assert_eq!(
            set.weights.len(),
            set.biases.len() * set.rows.len(),
            "weights per output and row"
        );
    }
    let width = LINEAR_BLOCK.min(n);
    let plane = level * n;
    // polys[set][output][poly], cut into blocks[b][set][output] of `width` columns.
    let mut polys: Vec<Vec<Vec<Vec<u32>>>> = sets
        .iter()
        .map(|set| {
            (0..set.biases.len())
                .map(|_| (0..size).map(|_| take_buffer(spare, plane)).collect())
                .collect()
        })
        .collect();
    let blocks_per_poly = plane / width;
    let mut blocks: Vec<Vec<Vec<&mut [u32]>>> = (0..size * blocks_per_poly)
        .map(|_| sets.iter().map(|_| Vec::new()).collect())
        .collect();
    for (s, outputs) in polys.iter_mut().enumerate() {
        for output in outputs.iter_mut() {
            for (k, poly) in output.iter_mut().enumerate() {
                for (b, chunk) in poly.chunks_exact_mut(width).enumerate() {
                    blocks[k * blocks_per_poly + b][s].push(chunk);
                }
            }
        }
    }
    let pair_weights: Vec<Option<Vec<u32>>> = sets
        .iter()
        .map(|set| {
            let per_output: Vec<&[i32]> = set.weights.chunks_exact(set.rows.len()).collect();
            fits_half_sums(per_output.iter().copied()).then(|| pair_major_weights(&per_output))
        })
        .collect();
    let shared = SharedPairs::of(sets, &pair_weights);
    let most_outputs = sets.iter().map(|s| s.biases.len()).max().unwrap_or(0);
    let scratch = || LinearBlock::new(shared.pairs.len(), most_outputs, width);
    parallel::for_each_mut_init_coarse(&mut blocks, scratch, |scratch, b, outs| {
        let (k, offset) = (b / blocks_per_poly, (b % blocks_per_poly) * width);
        let q = &moduli[offset / n];
        scratch.pack(params.backend(), &shared.pairs, k, offset..offset + width);
        for (s, (set, outs)) in sets.iter().zip(outs.iter_mut()).enumerate() {
            match &pair_weights[s] {
                Some(weights) => scratch.half_sums(params, &shared.of_set[s], weights, outs, q),
                None => {
                    let limbs: Vec<&[u32]> = set
                        .rows
                        .iter()
                        .map(|ct| &ct.poly(k)[offset..offset + width])
                        .collect();
                    scratch.wide_sums(params, &limbs, set.weights, outs, q);
                }
            }
        }
    });
    drop(blocks);
    let t = params.plaintext_modulus();
    let mut outputs: Vec<(Vec<Vec<u32>>, i128)> = polys
        .into_iter()
        .zip(sets)
        .flat_map(|(outputs, set)| outputs.into_iter().zip(set.biases.iter().copied()))
        .collect();
    parallel::for_each_mut(&mut outputs, |_, (polys, bias)| {
        params.add_scaled_constant(&mut polys[0], t.reduce_i128_public(*bias))
    });
    let mut outputs = outputs.into_iter();
    sets.iter()
        .map(|set| {
            (&mut outputs)
                .take(set.biases.len())
                .map(|(polys, _)| Ciphertext::from_parts(params, level, polys))
                .collect()
        })
        .collect()
}

/// Whether every output's weights (one row each) have magnitudes summing below 2^16: its
/// half-word sums then stay within i32 (a half is below 2^15).
fn fits_half_sums<'w>(mut weight_rows: impl Iterator<Item = &'w [i32]>) -> bool {
    weight_rows.all(|w| w.iter().map(|x| x.unsigned_abs() as u64).sum::<u64>() < 1 << 16)
}

/// The row pairs of the sets that run on half-word sums, each distinct pair (by the identity
/// of its two rows) packed once a column block and read by every set that has it: windows
/// laid out alike (the convolution's, see `NetworkEvaluator::new`) share most of theirs.
struct SharedPairs<'a> {
    /// The first row and the second (none: zeros, for an odd row count).
    pairs: Vec<(&'a Ciphertext, Option<&'a Ciphertext>)>,
    /// Per set, its pairs' indices in `pairs` (none for a set on i64 sums).
    of_set: Vec<Vec<usize>>,
}

impl<'a> SharedPairs<'a> {
    fn of(sets: &[Combinations<'a>], pair_weights: &[Option<Vec<u32>>]) -> Self {
        let address = |ct: Option<&Ciphertext>| ct.map_or(0, |ct| ct as *const Ciphertext as usize);
        let mut index = alloc::collections::BTreeMap::new();
        let mut pairs = Vec::new();
        let of_set = sets
            .iter()
            .zip(pair_weights)
            .map(|(set, weights)| match weights {
                None => Vec::new(),
                Some(_) => set
                    .rows
                    .chunks(2)
                    .map(|p| {
                        let pair = (p[0], p.get(1).copied());
                        *index
                            .entry((address(Some(pair.0)), address(pair.1)))
                            .or_insert_with(|| {
                                pairs.push(pair);
                                pairs.len() - 1
                            })
                    })
                    .collect(),
            })
            .collect();
        Self { pairs, of_set }
    }
}

/// The scratch of [`linear_combinations_of_sets`] for one column block: the packed half-word
/// pairs ([`SharedPairs`]) and the outputs' half sums, or one i64 accumulator per column.
struct LinearBlock {
    low_pairs: Vec<u32>,
    high_pairs: Vec<u32>,
    low_sums: Vec<u32>,
    high_sums: Vec<u32>,
    zeros: Vec<u32>,
    wide: Vec<i64>,
}

impl LinearBlock {
    fn new(pairs: usize, outputs: usize, width: usize) -> Self {
        Self {
            low_pairs: alloc::vec![0; pairs * width],
            high_pairs: alloc::vec![0; pairs * width],
            low_sums: alloc::vec![0; outputs * width],
            high_sums: alloc::vec![0; outputs * width],
            zeros: alloc::vec![0; width],
            wide: alloc::vec![0; width],
        }
    }

    /// Packs `columns` of polynomial k of every pair.
    fn pack(
        &mut self,
        backend: &Backend,
        pairs: &[(&Ciphertext, Option<&Ciphertext>)],
        k: usize,
        columns: core::ops::Range<usize>,
    ) {
        let width = columns.len();
        for ((first, second), (lo, hi)) in pairs.iter().zip(
            self.low_pairs
                .chunks_exact_mut(width)
                .zip(self.high_pairs.chunks_exact_mut(width)),
        ) {
            let second = second.map_or(&self.zeros[..width], |ct| &ct.poly(k)[columns.clone()]);
            backend.pack_pairs(lo, hi, &first.poly(k)[columns.clone()], second);
        }
    }

    /// outs[o] = sum_p of the pairs `pairs` (indices of the packed ones) times the weight pairs
    /// of output o (pair-major, `pair_major_weights`), mod q, on half-word sums.
    fn half_sums(
        &mut self,
        params: &Parameters,
        pairs: &[usize],
        pair_weights: &[u32],
        outs: &mut [&mut [u32]],
        q: &crate::Modulus,
    ) {
        let backend = params.backend();
        let width = self.zeros.len();
        for (packed, sums) in [
            (&self.low_pairs, &mut self.low_sums),
            (&self.high_pairs, &mut self.high_sums),
        ] {
            let packed: Vec<&[u32]> = pairs
                .iter()
                .map(|&p| &packed[p * width..(p + 1) * width])
                .collect();
            let mut accs: Vec<&mut [u32]> = sums.chunks_exact_mut(width).take(outs.len()).collect();
            accs.iter_mut().for_each(|s| s.fill(HALF_SUM_START));
            backend.pair_weighted_sum(&mut accs, PairRows::Listed(&packed), pair_weights);
        }
        for ((out, lo), hi) in outs
            .iter_mut()
            .zip(self.low_sums.chunks_exact(width))
            .zip(self.high_sums.chunks_exact(width))
        {
            backend.join_halves(out, lo, hi, q);
        }
    }

    /// outs[o] = sum_r weights[o * rows + r] limbs[r] mod q on i64 sums.
    fn wide_sums(
        &mut self,
        params: &Parameters,
        limbs: &[&[u32]],
        weights: &[i32],
        outs: &mut [&mut [u32]],
        q: &crate::Modulus,
    ) {
        let backend = params.backend();
        let acc = &mut self.wide[..limbs[0].len()];
        for (o, out) in outs.iter_mut().enumerate() {
            acc.fill(0);
            backend.weighted_sum(acc, limbs, &weights[o * limbs.len()..(o + 1) * limbs.len()]);
            out.iter_mut()
                .zip(acc.iter())
                .for_each(|(x, &a)| *x = q.reduce_i64(a));
        }
    }
}

/// Exact accumulators of a dense layer's outputs (size-3 ciphertexts at one level, or square
/// tensors over Q u P), filled group by group of inputs.
///
/// With small weights (the trained models'), every product runs on the 15-bit halves of the
/// residues, two per 32-bit lane (`pmaddwd`), into one i32 accumulator per half, held with
/// an offset of 2^31 as a u32 (`HALF_SUM_START`): exact for the whole layer when each
/// output's |weights| sum below 2^16, since a half is below 2^15. Each task packs its columns of a group once and reuses them for every output. Otherwise the
/// sums are i64 (`weighted_sum`).
struct Accumulators {
    sums: Sums,
    size: usize,
    /// Limbs of a polynomial.
    limbs: usize,
    /// Whether the half-word sums still hold whatever their buffers held: the first group
    /// starts each task's block at `HALF_SUM_START` just before summing into it, while the
    /// block is in that core's cache, instead of a pass over all of them first.
    unstarted: bool,
}

/// [output][poly][limb][coefficient], flattened per output.
enum Sums {
    Halves {
        low: Vec<Vec<u32>>,
        high: Vec<Vec<u32>>,
    },
    Wide(Vec<Vec<i64>>),
}

/// One task's columns of every output.
enum Block<'s> {
    Halves(Vec<(&'s mut [u32], &'s mut [u32])>),
    Wide(Vec<&'s mut [i64]>),
}

impl Accumulators {
    /// `halves`: every output's |weights| sum below 2^16 over all its inputs.
    /// The half-word sums take their buffers from `pool` first (see [`Workspace`]).
    fn new(
        params: &Parameters,
        outputs: usize,
        halves: bool,
        size: usize,
        limbs: usize,
        pool: &mut Vec<Vec<u32>>,
    ) -> Self {
        let len = size * limbs * params.degree();
        let sums = if halves {
            let mut buffers: Vec<Vec<u32>> = (0..2 * outputs)
                .map(|_| pool.pop().unwrap_or_default())
                .collect();
            // Sized on every core (fresh pages are faulted in there), not started: the first
            // group starts them block by block. A pass here wrote about 100 MB for the
            // committed model, which the first group then read back from memory.
            parallel::for_each_mut(&mut buffers, |_, sums| sums.resize(len, HALF_SUM_START));
            let high = buffers.split_off(outputs);
            Sums::Halves { low: buffers, high }
        } else {
            Sums::Wide((0..outputs).map(|_| alloc::vec![0i64; len]).collect())
        };
        Self {
            sums,
            size,
            limbs,
            unstarted: halves,
        }
    }

    /// Starts every half-word sum if no group has: the outputs of a layer without inputs.
    fn started(mut self) -> Self {
        if core::mem::take(&mut self.unstarted)
            && let Sums::Halves { low, high } = &mut self.sums
        {
            low.iter_mut()
                .chain(high.iter_mut())
                .for_each(|sums| sums.fill(HALF_SUM_START));
        }
        self
    }

    /// sums[o] += sum_i weight(o, i) inputs[i] (each input's polynomials), in column blocks
    /// on every core.
    fn add_group(
        &mut self,
        params: &Parameters,
        inputs: &[&[Vec<u32>]],
        weight: impl Fn(usize, usize) -> i32 + Sync + Send,
    ) {
        let backend = params.backend();
        let plane = self.limbs * params.degree();
        let blocks_per_output = self.size * plane / COLUMNS;
        let (outputs, halves) = match &self.sums {
            Sums::Halves { low, .. } => (low.len(), true),
            Sums::Wide(sums) => (sums.len(), false),
        };
        // blocks[b]: columns b * COLUMNS.. of every output.
        let mut blocks: Vec<Block<'_>> = match &mut self.sums {
            Sums::Halves { low, high } => {
                let mut blocks: Vec<Vec<_>> = (0..blocks_per_output).map(|_| Vec::new()).collect();
                for (low, high) in low.iter_mut().zip(high.iter_mut()) {
                    let columns = low
                        .chunks_exact_mut(COLUMNS)
                        .zip(high.chunks_exact_mut(COLUMNS));
                    for (b, pair) in columns.enumerate() {
                        blocks[b].push(pair);
                    }
                }
                blocks.into_iter().map(Block::Halves).collect()
            }
            Sums::Wide(sums) => {
                let mut blocks: Vec<Vec<_>> = (0..blocks_per_output).map(|_| Vec::new()).collect();
                for sums in sums.iter_mut() {
                    for (b, block) in sums.chunks_exact_mut(COLUMNS).enumerate() {
                        blocks[b].push(block);
                    }
                }
                blocks.into_iter().map(Block::Wide).collect()
            }
        };
        let weights: Vec<Vec<i32>> = (0..outputs)
            .map(|o| (0..inputs.len()).map(|i| weight(o, i)).collect())
            .collect();
        let pair_weights: Vec<u32> = if halves {
            let per_output: Vec<&[i32]> = weights.iter().map(Vec::as_slice).collect();
            pair_major_weights(&per_output)
        } else {
            Vec::new()
        };
        let first_group = core::mem::take(&mut self.unstarted);
        // Each task's packed pairs, grown once and overwritten block after block.
        let packed = || (Vec::<u32>::new(), Vec::<u32>::new());
        parallel::for_each_mut_init_coarse(&mut blocks, packed, |(lo, hi), b, block| {
            let start = b * COLUMNS;
            let (k, offset) = (start / plane, start % plane);
            let rows: Vec<&[u32]> = inputs
                .iter()
                .map(|polys| &polys[k][offset..offset + COLUMNS])
                .collect();
            match block {
                Block::Wide(block) => {
                    for (o, sums) in block.iter_mut().enumerate() {
                        backend.weighted_sum(sums, &rows, &weights[o]);
                    }
                }
                Block::Halves(block) => {
                    let pairs = rows.len().div_ceil(2);
                    let zeros = [0u32; COLUMNS];
                    lo.resize(pairs * PAIR_STRIDE, 0);
                    hi.resize(pairs * PAIR_STRIDE, 0);
                    for (p, (lo, hi)) in lo
                        .chunks_exact_mut(PAIR_STRIDE)
                        .zip(hi.chunks_exact_mut(PAIR_STRIDE))
                        .enumerate()
                    {
                        let second = rows.get(2 * p + 1).copied().unwrap_or(&zeros);
                        backend.pack_pairs(
                            &mut lo[..COLUMNS],
                            &mut hi[..COLUMNS],
                            rows[2 * p],
                            second,
                        );
                    }
                    let (mut sums_lo, mut sums_hi): (Vec<&mut [u32]>, Vec<&mut [u32]>) = block
                        .iter_mut()
                        .map(|(lo, hi)| (&mut **lo, &mut **hi))
                        .unzip();
                    if first_group {
                        for sums in sums_lo.iter_mut().chain(sums_hi.iter_mut()) {
                            sums.fill(HALF_SUM_START);
                        }
                    }
                    for (sums, words) in [(&mut sums_lo, &lo), (&mut sums_hi, &hi)] {
                        let pairs = PairRows::Strided {
                            words,
                            stride: PAIR_STRIDE,
                        };
                        backend.pair_weighted_sum(sums, pairs, &pair_weights);
                    }
                }
            }
        });
    }

    /// Reduces every output mod q and adds its bias: the layer's output ciphertexts, over
    /// buffers from `polys_pool`. The half-word sums' buffers go back to `pool`.
    fn finish(
        self,
        params: &Parameters,
        biases: &[i128],
        pool: &mut Vec<Vec<u32>>,
        polys_pool: &mut Vec<Vec<u32>>,
    ) -> Vec<Ciphertext> {
        let n = params.degree();
        let (size, level) = (self.size, self.limbs);
        let moduli = &params.ciphertext_basis().moduli()[..level];
        let t = params.plaintext_modulus();
        let backend = params.backend();
        let outputs = match &self.sums {
            Sums::Halves { low, .. } => low.len(),
            Sums::Wide(sums) => sums.len(),
        };
        let mut polys: Vec<Vec<Vec<u32>>> = (0..outputs)
            .map(|_| {
                (0..size)
                    .map(|_| take_buffer(polys_pool, level * n))
                    .collect()
            })
            .collect();
        // polys[k] limb l from the sums' columns (k level + l) n.., every word written.
        let fill = |o: usize,
                    polys: &mut Vec<Vec<u32>>,
                    limb: &dyn Fn(usize, &mut [u32], &crate::Modulus)| {
            for (k, poly) in polys.iter_mut().enumerate() {
                for (l, (out, q)) in poly.chunks_exact_mut(n).zip(moduli).enumerate() {
                    limb((k * level + l) * n, out, q);
                }
            }
            params.add_scaled_constant(&mut polys[0], t.reduce_i128_public(biases[o]));
        };
        match self.sums {
            Sums::Halves { low, high } => {
                parallel::for_each_mut(&mut polys, |o, polys| {
                    fill(o, polys, &|at, out, q| {
                        backend.join_halves(out, &low[o][at..at + n], &high[o][at..at + n], q)
                    })
                });
                pool.extend(low.into_iter().chain(high));
            }
            Sums::Wide(sums) => parallel::for_each_mut(&mut polys, |o, polys| {
                fill(o, polys, &|at, out, q| {
                    out.iter_mut()
                        .zip(&sums[o][at..at + n])
                        .for_each(|(x, &a)| *x = q.reduce_i64(a))
                })
            }),
        }
        polys
            .into_iter()
            .map(|polys| Ciphertext::from_parts(params, level, polys))
            .collect()
    }

    /// [`Self::finish`] for sums of square tensors of level `top` (see
    /// `Evaluator::square_unscaled_into`, half-word sums only): each output is scaled by
    /// t/Q_top and switched down to `level` once, then its bias is added.
    fn finish_tensors(
        self,
        params: &Parameters,
        top: usize,
        level: usize,
        biases: &[i128],
        pool: &mut Vec<Vec<u32>>,
        polys_pool: &mut Vec<Vec<u32>>,
    ) -> Vec<Ciphertext> {
        let (n, limbs) = (params.degree(), self.limbs);
        let evaluator = Evaluator::new(params);
        let t = params.plaintext_modulus();
        let backend = params.backend();
        let Sums::Halves { low, high } = self.sums else {
            unreachable!("tensors are summed on half-word sums")
        };
        let mut outputs: Vec<Ciphertext> = (0..low.len())
            .map(|_| {
                let polys = (0..self.size)
                    .map(|_| take_buffer(polys_pool, level * n))
                    .collect();
                Ciphertext::from_parts(params, level, polys)
            })
            .collect();
        parallel::for_each_mut_init(&mut outputs, MultiplyScratch::default, |s, o, out| {
            let join = |k: usize, i: usize, limb: &mut [u32], q: &crate::Modulus| {
                let at = (k * limbs + i) * n;
                backend.join_halves(limb, &low[o][at..at + n], &high[o][at..at + n], q)
            };
            evaluator
                .scale_tensor_sum_into(top, level, &join, s, out)
                .expect("levels of the plan");
            params.add_scaled_constant(&mut out.polys[0], t.reduce_i128_public(biases[o]));
        });
        pool.extend(low.into_iter().chain(high));
        outputs
    }
}

/// A buffer of `len` words from `pool` (whatever it holds: the caller writes every word), or
/// a new one zeroed by the allocator: fresh pages need no clearing here, so their first
/// writes, in the callers' parallel tasks, fault them in on every core.
fn take_buffer(pool: &mut Vec<Vec<u32>>, len: usize) -> Vec<u32> {
    match pool.pop() {
        Some(mut buffer) => {
            buffer.resize(len, 0);
            buffer
        }
        None => alloc::vec![0u32; len],
    }
}
