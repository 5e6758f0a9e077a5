//! The single-image plan: where every layer's values live (parts and columns), the steps
//! that compute them, the rotations they need (the owner makes Galois keys for exactly
//! those, each at the highest level it is used at), the level and the noise after every
//! step, and the parameters chosen for this mode.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::rotation_element;
use crate::Error;
use crate::backend::Backend;
use crate::model::polynomial::{Layer, PolynomialNetwork, Shape, Tap};
use crate::network::noise::{Estimator, MARGIN_BITS, budget};
use crate::network::polynomial::activation_noise;
use crate::network::{NetworkParameters, crt_prime_candidates};

/// Some neurons of a layer in one ciphertext: neuron `neurons[k]` at column `columns[k]`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Part {
    /// Neuron indices of the layer.
    pub neurons: Vec<u32>,
    /// Their columns.
    pub columns: Vec<u32>,
}

impl Part {
    /// Neurons `0..count` at columns `0..count`.
    fn compact(count: usize) -> Self {
        Self {
            neurons: (0..count as u32).collect(),
            columns: (0..count as u32).collect(),
        }
    }

    fn is_compact(&self) -> bool {
        self.columns
            .iter()
            .zip(&self.neurons)
            .enumerate()
            .all(|(k, (&c, &j))| c as usize == k && j as usize == k)
    }
}

/// A bias: one constant for every column, or values at given columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bias {
    /// The same constant everywhere (garbage columns included).
    Constant(i128),
    /// Values at these columns, zero elsewhere.
    Columns(Vec<(u32, i128)>),
}

/// Rotations of one ciphertext as a tree of hoisted ones: each rotation (a *leaf*) is the
/// sum of one value of every *digit*, and the ciphertext of every prefix is rotated by the
/// next digit's values together (one key-switching decomposition for them all). The keys
/// are the digits' values, sum (D_i - 1) of them for up to prod D_i rotations; a leaf is at
/// most one key switch a digit away from the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationTree {
    /// Each digit's column shifts, the first 0.
    pub digits: Vec<Vec<u32>>,
    /// The rotations used: one value index per digit.
    pub leaves: Vec<Vec<u8>>,
}

impl RotationTree {
    /// The tree of distinct `shifts` in two digits: shift = low + high with low below a base
    /// of about the square root of the largest shift, and high a multiple of it.
    fn of_shifts(shifts: &[u32]) -> Self {
        let max = shifts.iter().copied().max().unwrap_or(0);
        let base = (2..).find(|b: &u32| b * b > max).unwrap_or(2);
        let digit = |part: &dyn Fn(u32) -> u32| -> Vec<u32> {
            let values: BTreeSet<u32> = shifts.iter().map(|&s| part(s)).collect();
            core::iter::once(0)
                .chain(values.into_iter().filter(|&v| v != 0))
                .collect()
        };
        let lows = digit(&|s| s % base);
        let highs = digit(&|s| s / base * base);
        let index = |list: &[u32], v: u32| list.iter().position(|&x| x == v).unwrap_or(0) as u8;
        Self {
            leaves: shifts
                .iter()
                .map(|&s| alloc::vec![index(&lows, s % base), index(&highs, s / base * base)])
                .collect(),
            digits: alloc::vec![lows, highs],
        }
    }

    /// The column shift of leaf `k`.
    pub fn shift(&self, k: usize, columns: u32) -> u32 {
        let sum: u64 = self.leaves[k]
            .iter()
            .zip(&self.digits)
            .map(|(&i, d)| d[i as usize] as u64)
            .sum();
        (sum % columns as u64) as u32
    }

    /// The keys' shifts: every digit's non-zero values.
    fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.digits.iter().flatten().copied().filter(|&v| v != 0)
    }

    /// Key switches to reach every leaf: per digit, each distinct prefix of a leaf with a
    /// non-zero value there.
    pub fn switches(&self) -> usize {
        (0..self.digits.len())
            .map(|d| {
                self.leaves
                    .iter()
                    .filter(|l| l[d] != 0)
                    .map(|l| &l[..=d])
                    .collect::<BTreeSet<_>>()
                    .len()
            })
            .sum()
    }
}

/// The first layer as rotations of the owner's polyphase layout and scalar weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapsStep {
    /// The taps' rotations of the input: digits channel, row phase, column phase, kernel row
    /// / stride, kernel column / stride (those with more than one value).
    pub tree: RotationTree,
    /// Per output part (channel): (leaf of the tree, weight).
    pub maps: Vec<Vec<(u32, i64)>>,
    /// Per output part.
    pub biases: Vec<Bias>,
}

/// The plaintext vector of one (giant step, input part, baby step), its values at the
/// columns given, already rotated back by the giant step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagonal {
    /// Input part.
    pub part: u32,
    /// Baby step (rotation of the input part).
    pub baby: u32,
    /// (column, weight).
    pub values: Vec<(u32, i64)>,
}

/// A giant step: the products rotated together by g b.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GiantStep {
    /// g (the shift is g b columns).
    pub index: i32,
    /// Its diagonals.
    pub diagonals: Vec<Diagonal>,
}

/// An affine layer by diagonals: y = sum_g rot(P_g, g b), P_g = sum d * rot(x_part, baby),
/// the giant steps g (negative for offsets past the row's end) summed by Horner's rule with
/// the two keys of +b and -b.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagonalStep {
    /// Per input part, its baby steps (sorted).
    pub babies: Vec<Vec<u32>>,
    /// Per input part, the tree of its baby steps (leaves in the order of `babies`).
    pub trees: Vec<RotationTree>,
    /// The baby size b.
    pub baby: u32,
    /// The giant steps, by increasing g.
    pub giants: Vec<GiantStep>,
    /// At the output columns only (the output stays clean).
    pub bias: Vec<(u32, i128)>,
}

impl DiagonalStep {
    /// The lowest and highest giant index, 0 included.
    pub fn giant_range(&self) -> (i32, i32) {
        let lo = self.giants.first().map_or(0, |g| g.index.min(0));
        let hi = self.giants.last().map_or(0, |g| g.index.max(0));
        (lo, hi)
    }
}

/// A small affine layer on a clean compact input, scalar weights only: output o is
/// T_o = sum_g rot(U_og, g b) with U_og = sum_b w[o][g b + b'] rot(x, b') (Horner's rule in
/// g with the key of b), and the outputs are placed by Horner's rule in o with the key of
/// -spacing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatherStep {
    /// Baby steps: rotations of the input by 0..babies.
    pub babies: u32,
    /// Their tree (leaf b is baby step b).
    pub tree: RotationTree,
    /// Output spacing K (output o at column o K).
    pub spacing: u32,
    /// weights[o][g]: U_og as (baby, weight) terms.
    pub weights: Vec<Vec<Vec<(u32, i64)>>>,
    /// At the output columns.
    pub bias: Vec<(u32, i128)>,
}

/// One step of the single-image evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SingleStep {
    /// The first layer from the owner's layout.
    Taps(TapsStep),
    /// The activation on every part; its constant is left to the next step's bias when
    /// `drop_constant` (so that zero columns stay zero).
    Activation {
        /// c0..c3.
        coefficients: [i64; 4],
        /// Whether c0 is folded into the next layer.
        drop_constant: bool,
    },
    /// An affine layer by diagonals.
    Diagonal(DiagonalStep),
    /// A small affine layer by scalar gathers.
    Gather(GatherStep),
    /// Flatten: nothing moves.
    Reshape,
}

impl SingleStep {
    /// The rotations (column shifts, in a row of `columns`) the step applies.
    pub fn shifts(&self, columns: u32) -> BTreeSet<u32> {
        let mut shifts = BTreeSet::new();
        match self {
            SingleStep::Taps(t) => shifts.extend(t.tree.keys()),
            SingleStep::Diagonal(d) => {
                d.trees.iter().for_each(|t| shifts.extend(t.keys()));
                let (lo, hi) = d.giant_range();
                if hi > 0 {
                    shifts.insert(d.baby);
                }
                if lo < 0 {
                    shifts.insert(columns - d.baby);
                }
            }
            SingleStep::Gather(g) => {
                shifts.extend(g.tree.keys());
                if g.weights.iter().any(|w| w.len() > 1) {
                    shifts.insert(g.babies);
                }
                if g.weights.len() > 1 {
                    shifts.insert(columns - g.spacing);
                }
            }
            _ => {}
        }
        shifts.remove(&0);
        shifts
    }
}

/// The layout of a network in this mode at ring degree n: the owner's input columns, and
/// per layer its step and the parts of its output. Independent of the primes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SingleLayout {
    /// Ring degree.
    pub n: usize,
    /// The owner's input: (input neuron, column).
    pub input: Vec<(u32, u32)>,
    /// One step per layer.
    pub steps: Vec<SingleStep>,
    /// The output parts of each step.
    pub parts: Vec<Vec<Part>>,
}

/// (input neuron, column) of the owner's layout.
type InputColumns = Vec<(u32, u32)>;
/// (column, weight) of one plaintext vector.
type ColumnWeights = Vec<(u32, i64)>;

fn refuse(reason: &'static str) -> Error {
    Error::InvalidParameters { reason }
}

impl SingleLayout {
    /// Lays `network` out at degree n, or refuses (a layer wider than n / 2 columns).
    pub fn new(network: &PolynomialNetwork, n: usize) -> Result<Self, Error> {
        let columns = n / 2;
        let layers = network.layers();
        let input_shape = network.input();
        let mut steps: Vec<SingleStep> = Vec::with_capacity(layers.len());
        let mut all_parts: Vec<Vec<Part>> = Vec::with_capacity(layers.len());
        let (input, mut parts) = match &layers[0] {
            Layer::Conv2d { .. } | Layer::SumPool { .. } => {
                let (input, step, parts) = taps(&layers[0], input_shape, columns)?;
                steps.push(SingleStep::Taps(step));
                all_parts.push(parts.clone());
                (input, parts)
            }
            _ => {
                if input_shape.len() > columns {
                    return Err(refuse("the input has more values than a row has slots"));
                }
                let input = (0..input_shape.len() as u32).map(|i| (i, i)).collect();
                (input, alloc::vec![Part::compact(input_shape.len())])
            }
        };
        // Whether the current values are compact and zero at every other column, or would
        // be if the activation at this index left its constant to the next layer.
        let mut clean = steps.is_empty();
        let mut constant_at: Option<usize> = None;
        for (i, layer) in layers.iter().enumerate().skip(steps.len()) {
            let shape = network.input_shape(i);
            let step = match layer {
                Layer::Flatten => SingleStep::Reshape,
                Layer::Polynomial { coefficients } => {
                    constant_at = (clean && coefficients[0] != 0).then_some(i);
                    clean &= coefficients[0] == 0;
                    SingleStep::Activation {
                        coefficients: *coefficients,
                        drop_constant: false,
                    }
                }
                _ => {
                    let out = network.shapes()[i].len();
                    let gatherable = (clean || constant_at.is_some())
                        && parts.len() == 1
                        && parts[0].is_compact()
                        && out.checked_mul(parts[0].neurons.len().max(1)) <= Some(columns);
                    if gatherable {
                        let constant = match constant_at {
                            Some(a) => {
                                if let SingleStep::Activation {
                                    coefficients,
                                    drop_constant,
                                } = &mut steps[a]
                                {
                                    *drop_constant = true;
                                    coefficients[0]
                                } else {
                                    0
                                }
                            }
                            None => 0,
                        };
                        let (step, part) = gather(layer, shape, columns, constant)?;
                        parts = alloc::vec![part];
                        clean = false;
                        constant_at = None;
                        SingleStep::Gather(step)
                    } else {
                        if out > columns {
                            return Err(refuse("a layer has more values than a row has slots"));
                        }
                        let step = diagonal(layer, shape, &parts, columns)?;
                        parts = alloc::vec![Part::compact(out)];
                        clean = true;
                        constant_at = None;
                        SingleStep::Diagonal(step)
                    }
                }
            };
            if !matches!(layer, Layer::Polynomial { .. } | Layer::Flatten) {
                constant_at = None;
            }
            steps.push(step);
            all_parts.push(parts.clone());
        }
        Ok(Self {
            n,
            input,
            steps,
            parts: all_parts,
        })
    }

    /// The parts of the network's output.
    pub fn output(&self) -> &[Part] {
        self.parts.last().map_or(&[], |p| p.as_slice())
    }
}

/// The first layer (a convolution or pooling) from the owner's polyphase layout: sub-image
/// (c, a, b) holds the padded input's pixels (s y + a, s x + b) of channel c, row by row in
/// a grid of the sub-images' width G; output (y, x) of every channel is at column y G + x,
/// and kernel tap (c, ky, kx) is the input rotated by the tap's sub-image base plus
/// (ky / s) G + kx / s.
fn taps(
    layer: &Layer,
    input: Shape,
    columns: usize,
) -> Result<(InputColumns, TapsStep, Vec<Part>), Error> {
    let (window, out_channels) = match layer {
        Layer::Conv2d {
            window,
            out_channels,
            ..
        } => (*window, *out_channels),
        Layer::SumPool { window } => (*window, input.channels),
        _ => return Err(refuse("the first layer is not windowed")),
    };
    let [sh, sw] = window.stride;
    let [kh, kw] = window.kernel;
    let [top, left, bottom, right] = window.padding;
    let (ph, pw) = (input.height + top + bottom, input.width + left + right);
    let (hs, ws) = (ph.div_ceil(sh), pw.div_ceil(sw));
    let sub = hs * ws;
    let total = input.channels * sh * sw * sub;
    if total > columns {
        return Err(refuse(
            "the first layer's polyphase layout has more values than a row has slots",
        ));
    }
    let base = |c: usize, a: usize, b: usize| ((c * sh + a) * sw + b) * sub;
    let mut layout = Vec::new();
    for c in 0..input.channels {
        for a in 0..sh {
            for b in 0..sw {
                for y in 0..hs {
                    for x in 0..ws {
                        let (py, px) = (sh * y + a, sw * x + b);
                        if py < top || px < left {
                            continue;
                        }
                        let (py, px) = (py - top, px - left);
                        if py < input.height && px < input.width {
                            let neuron = (c * input.height + py) * input.width + px;
                            layout.push((neuron as u32, (base(c, a, b) + y * ws + x) as u32));
                        }
                    }
                }
            }
        }
    }
    let (oh, ow) = window.output(input.height, input.width)?;
    // The digits of a tap's rotation base(c, ky % sh, kx % sw) + (ky / sh) ws + kx / sw.
    let all_digits: [Vec<u32>; 5] = [
        (0..input.channels).map(|c| base(c, 0, 0) as u32).collect(),
        (0..sh).map(|a| base(0, a, 0) as u32).collect(),
        (0..sw).map(|b| base(0, 0, b) as u32).collect(),
        (0..kh.div_ceil(sh)).map(|y| (y * ws) as u32).collect(),
        (0..kw.div_ceil(sw)).map(|x| x as u32).collect(),
    ];
    let kept: Vec<usize> = (0..5).filter(|&d| all_digits[d].len() > 1).collect();
    let mut leaves: Vec<Vec<u8>> = Vec::new();
    let mut rotation = |c: usize, ky: usize, kx: usize| -> u32 {
        let all = [c, ky % sh, kx % sw, ky / sh, kx / sw];
        let leaf: Vec<u8> = kept.iter().map(|&d| all[d] as u8).collect();
        match leaves.iter().position(|l| *l == leaf) {
            Some(k) => k as u32,
            None => {
                leaves.push(leaf);
                (leaves.len() - 1) as u32
            }
        }
    };
    let mut maps = Vec::with_capacity(out_channels);
    let mut biases = Vec::with_capacity(out_channels);
    let out_columns: Vec<u32> = (0..oh)
        .flat_map(|y| (0..ow).map(move |x| (y * ws + x) as u32))
        .collect();
    for o in 0..out_channels {
        let mut terms = Vec::new();
        match layer {
            Layer::Conv2d {
                weights, biases: b, ..
            } => {
                for c in 0..input.channels {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let w = weights[((o * input.channels + c) * kh + ky) * kw + kx];
                            if w != 0 {
                                terms.push((rotation(c, ky, kx), w as i64));
                            }
                        }
                    }
                }
                biases.push(if b.len() == out_channels {
                    Bias::Constant(b[o])
                } else {
                    Bias::Columns(
                        out_columns
                            .iter()
                            .enumerate()
                            .map(|(k, &col)| (col, b[o * oh * ow + k]))
                            .collect(),
                    )
                });
            }
            _ => {
                for ky in 0..kh {
                    for kx in 0..kw {
                        terms.push((rotation(o, ky, kx), 1));
                    }
                }
                biases.push(Bias::Constant(0));
            }
        }
        maps.push(terms);
    }
    let parts = (0..out_channels)
        .map(|o| Part {
            neurons: (0..(oh * ow) as u32)
                .map(|k| (o * oh * ow) as u32 + k)
                .collect(),
            columns: out_columns.clone(),
        })
        .collect();
    Ok((
        layout,
        TapsStep {
            tree: RotationTree {
                digits: kept.iter().map(|&d| all_digits[d].clone()).collect(),
                leaves,
            },
            maps,
            biases,
        },
        parts,
    ))
}

/// The rows of an affine layer: (output, taps, bias).
fn rows(layer: &Layer, input: Shape) -> Vec<(usize, Vec<Tap>, i128)> {
    let mut rows = Vec::new();
    let _ = layer.for_each_row(input, |o, taps: &[Tap], bias| {
        rows.push((o, taps.to_vec(), bias));
        Ok::<(), ()>(())
    });
    rows
}

/// An affine layer by baby-step giant-step diagonals into a compact clean output.
fn diagonal(
    layer: &Layer,
    input: Shape,
    parts: &[Part],
    columns: usize,
) -> Result<DiagonalStep, Error> {
    // Where every input neuron is.
    let mut place = alloc::vec![None; input.len()];
    for (q, part) in parts.iter().enumerate() {
        for (&j, &c) in part.neurons.iter().zip(&part.columns) {
            place[j as usize] = Some((q as u32, c));
        }
    }
    let rows = rows(layer, input);
    // Every (output, part, offset, weight).
    let mut entries: Vec<(u32, u32, u32, i64)> = Vec::new();
    for (o, taps, _) in &rows {
        for &(i, w) in taps {
            let (q, c) = place[i as usize].ok_or(refuse("an input neuron has no place"))?;
            let r = ((c as usize + columns - o % columns) % columns) as u32;
            entries.push((*o as u32, q, r, w));
        }
    }
    // Offsets past half a row are negative ones: x[c + r] with r - columns.
    let signed = |r: u32| -> i64 {
        if r as usize > columns / 2 {
            r as i64 - columns as i64
        } else {
            r as i64
        }
    };
    let offsets: BTreeSet<(u32, i64)> =
        entries.iter().map(|&(_, q, r, _)| (q, signed(r))).collect();
    let split = |r: i64, b: i64| (r.div_euclid(b), r.rem_euclid(b));
    // The baby size of least key-switching work: the babies of every part (hoisted: about
    // a third of a key switch each) plus the giants (each from the lowest to the highest is
    // one key switch of Horner's rule).
    let cost = |b: u32| {
        let babies: BTreeSet<(u32, i64)> = offsets
            .iter()
            .map(|&(q, r)| (q, split(r, b as i64).1))
            .collect();
        let lo = offsets
            .iter()
            .map(|&(_, r)| split(r, b as i64).0)
            .min()
            .unwrap_or(0);
        let hi = offsets
            .iter()
            .map(|&(_, r)| split(r, b as i64).0)
            .max()
            .unwrap_or(0);
        babies.len() as i64 + 3 * (hi.max(0) - lo.min(0))
    };
    let baby = (1..=64u32).min_by_key(|&b| (cost(b), b)).unwrap_or(1);
    let mut babies: Vec<BTreeSet<u32>> = alloc::vec![BTreeSet::new(); parts.len()];
    // giants[g][(part, baby)]: the values of one diagonal.
    let mut giants: BTreeMap<i32, BTreeMap<(u32, u32), ColumnWeights>> = BTreeMap::new();
    for &(o, q, r, w) in &entries {
        let (g, b) = split(signed(r), baby as i64);
        babies[q as usize].insert(b as u32);
        // The diagonal rotated back by the giant step: output column o moves to o + g b.
        let column = (o as i64 + g * baby as i64).rem_euclid(columns as i64) as u32;
        giants
            .entry(g as i32)
            .or_default()
            .entry((q, b as u32))
            .or_default()
            .push((column, w));
    }
    let babies: Vec<Vec<u32>> = babies
        .into_iter()
        .map(|b| b.into_iter().collect())
        .collect();
    Ok(DiagonalStep {
        trees: babies.iter().map(|b| RotationTree::of_shifts(b)).collect(),
        babies,
        baby,
        giants: giants
            .into_iter()
            .map(|(index, diagonals)| GiantStep {
                index,
                diagonals: diagonals
                    .into_iter()
                    .map(|((part, baby), values)| Diagonal { part, baby, values })
                    .collect(),
            })
            .collect(),
        bias: rows.iter().map(|(o, _, b)| (*o as u32, *b)).collect(),
    })
}

/// A small affine layer on a clean compact input of `in` columns: output o at column o in,
/// sum_u w[o][u] rot(x, u - o in) = sum_g rot(sum_b w[o][g + b] rot(x, b), g - o in).
fn gather(
    layer: &Layer,
    input: Shape,
    columns: usize,
    constant: i64,
) -> Result<(GatherStep, Part), Error> {
    let width = input.len().max(1);
    let babies = (1..).find(|b: &usize| b * b >= width).unwrap_or(1) as u32;
    let giants = width.div_ceil(babies as usize);
    let rows = rows(layer, input);
    let mut bias = Vec::with_capacity(rows.len());
    let mut weights = Vec::with_capacity(rows.len());
    for (o, taps, b) in &rows {
        let spot = (o * width % columns) as u32;
        let mut row_sum: i128 = 0;
        let mut per_giant: Vec<Vec<(u32, i64)>> = alloc::vec![Vec::new(); giants];
        for &(u, w) in taps {
            per_giant[(u / babies) as usize].push((u % babies, w));
            row_sum += w as i128;
        }
        weights.push(per_giant);
        // The activation's constant on every input: c0 times the row's weights.
        let folded = row_sum
            .checked_mul(constant as i128)
            .and_then(|c| c.checked_add(*b))
            .ok_or(refuse("a bias overflows"))?;
        bias.push((spot, folded));
    }
    let part = Part {
        neurons: rows.iter().map(|(o, _, _)| *o as u32).collect(),
        columns: bias.iter().map(|&(c, _)| c).collect(),
    };
    Ok((
        GatherStep {
            babies: babies.min(width as u32),
            tree: RotationTree::of_shifts(&(0..babies.min(width as u32)).collect::<Vec<_>>()),
            spacing: width as u32,
            weights,
            bias,
        },
        part,
    ))
}

/// The plan of one step under parameters: its output level and estimated budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepPlan {
    /// Level of the step's input (where its rotations run).
    pub input_level: usize,
    /// Level of its outputs, after any switch that follows.
    pub level: usize,
    /// Estimated budget of its outputs.
    pub budget_bits: f64,
}

/// A layout planned under parameters: levels, noise, keys.
#[derive(Clone, Debug, PartialEq)]
pub struct SinglePlan {
    /// The layout.
    pub layout: SingleLayout,
    /// Whether the owner drops the input's last limb (`SeededCiphertext::compress`): one
    /// limb less to upload, for noise the plan accounts for.
    pub compressed_input: bool,
    /// Estimated budget of a fresh input.
    pub input_budget_bits: f64,
    /// One per step.
    pub steps: Vec<StepPlan>,
    /// The Galois elements needed, each with the highest level it is applied at.
    pub keys: BTreeMap<usize, usize>,
}

/// The noise after `count` key switches in a row on noise v at `level`: each adds its
/// rounding and key noise.
fn switches(e: &Estimator, v: f64, level: usize, count: usize) -> f64 {
    if count == 0 {
        return v;
    }
    let each = e.unpack(f64::NEG_INFINITY, level);
    crate::network::noise::log_add(v, each + crate::rns::libm_log2(count as f64))
}

/// The estimated noise after `step` on noise v at `level`.
fn step_noise(e: &Estimator, step: &SingleStep, v: f64, level: usize) -> f64 {
    let log2 = crate::rns::libm_log2;
    match step {
        SingleStep::Reshape => v,
        SingleStep::Activation { coefficients, .. } => activation_noise(e, *coefficients, v, level),
        SingleStep::Taps(t) => {
            let l1 = t
                .maps
                .iter()
                .map(|m| m.iter().map(|&(_, w)| w.unsigned_abs()).sum::<u64>())
                .max()
                .unwrap_or(1);
            // A key switch a digit, in a row.
            e.linear(switches(e, v, level, t.tree.digits.len()), l1, level)
        }
        SingleStep::Diagonal(d) => {
            // The products' noises are the input's (rotated) times independent-looking
            // plaintexts: they add like independent terms, sqrt(count) (one bit of margin).
            let products: usize = d.giants.iter().map(|g| g.diagonals.len()).sum();
            let depth = d.trees.iter().map(|t| t.digits.len()).max().unwrap_or(0);
            let summed = e.plain_product(switches(e, v, level, depth))
                + log2(products.max(1) as f64) / 2.0
                + 1.0;
            let (lo, hi) = d.giant_range();
            e.linear(switches(e, summed, level, (hi - lo) as usize), 1, level)
        }
        SingleStep::Gather(g) => {
            let l1: u64 = g
                .weights
                .iter()
                .flatten()
                .flatten()
                .map(|&(_, w)| w.unsigned_abs())
                .sum();
            let giants = g.weights.iter().map(Vec::len).max().unwrap_or(1);
            let rotated = switches(e, v, level, g.tree.digits.len());
            e.linear(
                switches(
                    e,
                    rotated + log2(l1.max(1) as f64),
                    level,
                    giants + g.weights.len(),
                ),
                1,
                level,
            )
        }
    }
}

impl SinglePlan {
    /// Plans `layout` under `params`: after every step, the lowest
    /// level from which the rest keeps [`MARGIN_BITS`]; refuses when none does.
    pub fn new(
        params: &NetworkParameters,
        layout: SingleLayout,
        compressed_input: bool,
    ) -> Result<Self, Error> {
        if params.degree() != layout.n {
            return Err(refuse("a layout of another ring degree"));
        }
        if params.channels()[0].special_basis().is_none() {
            return Err(refuse("rotations need parameters with special primes"));
        }
        let e = Estimator::new(params);
        let top = params.channels()[0].max_level();
        let fresh = match compressed_input {
            true if top >= 2 => e.fresh_compressed(top),
            true => return Err(refuse("a one-prime input cannot drop a limb")),
            false => e.fresh(top),
        };
        let steps = &layout.steps;
        let rest_fits = |from: usize, mut v: f64, level: usize| {
            steps[from..].iter().all(|s| {
                v = step_noise(&e, s, v, level);
                budget(v) >= MARGIN_BITS
            })
        };
        if budget(fresh) < MARGIN_BITS || !rest_fits(0, fresh, top) {
            let mut v = fresh;
            let mut spent = 0;
            for (i, s) in steps.iter().enumerate() {
                v = step_noise(&e, s, v, top);
                spent = i;
                if budget(v) < MARGIN_BITS {
                    break;
                }
            }
            return Err(Error::InsufficientNoiseBudget {
                layer: match steps.get(spent) {
                    Some(SingleStep::Activation { .. }) => "an activation",
                    Some(SingleStep::Reshape) => "a flatten",
                    _ => "an affine layer",
                },
                estimated_bits: budget(v) as i32,
            });
        }
        let (mut v, mut level) = (fresh, top);
        let mut planned = Vec::with_capacity(steps.len());
        let mut keys: BTreeMap<usize, usize> = BTreeMap::new();
        for (i, s) in steps.iter().enumerate() {
            let input_level = level;
            for shift in s.shifts((layout.n / 2) as u32) {
                let g = rotation_element(layout.n, shift as usize);
                let at = keys.entry(g).or_insert(level);
                *at = (*at).max(level);
            }
            v = step_noise(&e, s, v, level);
            if !matches!(s, SingleStep::Reshape) {
                (v, level) = e.switch_down(v, level, |v, l| rest_fits(i + 1, v, l));
            }
            planned.push(StepPlan {
                input_level,
                level,
                budget_bits: budget(v),
            });
        }
        Ok(Self {
            layout,
            compressed_input,
            input_budget_bits: budget(fresh),
            steps: planned,
            keys,
        })
    }

    /// Level of the outputs.
    pub fn output_level(&self) -> usize {
        self.steps.last().map_or(1, |s| s.level)
    }

    /// Estimated budget of the outputs.
    pub fn output_budget_bits(&self) -> f64 {
        self.steps.last().map_or(0.0, |s| s.budget_bits)
    }

    /// Serialized bytes of one image's upload: a seeded ciphertext per channel.
    pub fn upload_bytes(&self, params: &NetworkParameters) -> usize {
        let p = &params.channels()[0];
        let one = match self.compressed_input {
            true => p.compressed_ciphertext_bytes(),
            false => p.seeded_ciphertext_bytes(),
        };
        one * params.channels().len()
    }

    /// Whether a relinearization key is needed (an activation of degree 2 or more).
    pub fn needs_relinearization(&self) -> bool {
        self.layout.steps.iter().any(|s| {
            matches!(s, SingleStep::Activation { coefficients, .. }
                if coefficients[2] != 0 || coefficients[3] != 0)
        })
    }

    /// Serialized bytes of the evaluation keys: the relinearization key and each Galois key
    /// at its level.
    pub fn eval_key_bytes(&self, params: &NetworkParameters) -> usize {
        let p = &params.channels()[0];
        let relin = if self.needs_relinearization() {
            p.relinearization_key_bytes()
        } else {
            0
        };
        relin
            + self
                .keys
                .values()
                .map(|&l| p.galois_key_bytes_at(l))
                .sum::<usize>()
    }

    /// Estimated seconds of one image on `threads` threads, and the operation counts behind
    /// it: key switches, plaintext products and products of ciphertexts, over all channels.
    pub fn estimate_seconds(&self, params: &NetworkParameters, threads: usize) -> f64 {
        let p = &params.channels()[0];
        let n = p.degree() as f64;
        let special = p.special_basis().map_or(0, |s| s.len()) as f64;
        // One NTT of n residues, and one multiply-accumulate (the development machine's).
        let ntt = 14e-6 * n / 8192.0 * (libm::log2(n) / 13.0);
        let mac = 0.4e-9;
        let switch = |level: usize, hoisted: bool| {
            let (l, s) = (level as f64, special);
            let digits = if hoisted { 0.0 } else { l * (l + s) };
            (digits + 2.0 * (l + s)) * ntt + 2.0 * l * (l + s) * n * mac
        };
        let mut seconds = 0.0;
        let mut parts = 1usize;
        for (s, plan) in self.layout.steps.iter().zip(&self.steps) {
            let l = plan.input_level;
            let lf = l as f64;
            seconds += match s {
                SingleStep::Reshape => 0.0,
                SingleStep::Activation { coefficients, .. } => {
                    let products = if coefficients[3] != 0 { 2.0 } else { 1.0 };
                    parts as f64 * products * lf * 0.6e-3 * n / 8192.0
                }
                SingleStep::Taps(t) => {
                    let terms: usize = t.maps.iter().map(|m| m.len()).sum();
                    let nodes = t.tree.switches() as f64;
                    // One decomposition a rotated prefix, the rest hoisted.
                    nodes / 3.0 * switch(l, false)
                        + nodes * switch(l, true)
                        + terms as f64 * 2.0 * lf * n * mac
                }
                SingleStep::Diagonal(d) => {
                    let babies: usize = d.trees.iter().map(RotationTree::switches).sum();
                    let products: usize = d.giants.iter().map(|g| g.diagonals.len()).sum();
                    let (lo, hi) = d.giant_range();
                    parts as f64 * switch(l, false)
                        + babies as f64 * switch(l, true)
                        + d.giants.len() as f64 * 2.0 * lf * ntt
                        + (hi - lo) as f64 * switch(l, false)
                        + products as f64 * ((1.0 + lf) * ntt + 2.0 * lf * n * mac)
                }
                SingleStep::Gather(g) => {
                    let terms: usize = g.weights.iter().flatten().map(Vec::len).sum();
                    let giants: usize = g.weights.iter().map(Vec::len).sum();
                    switch(l, false)
                        + g.babies as f64 * switch(l, true)
                        + (giants + g.weights.len()) as f64 * switch(l, false)
                        + terms as f64 * 2.0 * lf * n * mac
                }
            };
            parts = match s {
                SingleStep::Taps(t) => t.maps.len(),
                SingleStep::Diagonal(_) | SingleStep::Gather(_) => 1,
                _ => parts,
            };
        }
        let channels = params.channels().len();
        seconds * channels as f64 / threads.clamp(1, channels) as f64
    }
}

/// The thread count the planner's latency estimates compare parameters at.
pub const REFERENCE_THREADS: usize = 2;

/// Ring degrees the single-image planner considers.
pub const SINGLE_DEGREES: [usize; 3] = [4096, 8192, 16384];

/// Parameters and plan for this mode, chosen by the planner.
#[derive(Clone, Debug)]
pub struct PlannedSingle {
    /// The parameters.
    pub params: NetworkParameters,
    /// The plan under them.
    pub plan: SinglePlan,
    /// Estimated seconds of one image on [`REFERENCE_THREADS`] threads.
    pub seconds: f64,
}

impl PlannedSingle {
    /// The parameters of least estimated latency per image on [`REFERENCE_THREADS`]
    /// threads: for each ring degree whose rows hold the layout, each CRT prime set of
    /// [`crt_prime_candidates`], one or two special primes, the fewest ciphertext primes
    /// that plan within the 128-bit bound (and the input compressed where the noise allows).
    /// The choice depends on the network alone, so that the owner and the service, each
    /// planning the model, find the same parameters. Refuses with the last reason found
    /// when nothing fits.
    pub fn new(network: &PolynomialNetwork, backend: Backend) -> Result<Self, Error> {
        let threads = REFERENCE_THREADS;
        let mut best: Option<Self> = None;
        let mut last_error = refuse("no ring degree holds this network in one ciphertext");
        for n in SINGLE_DEGREES {
            let layout = match SingleLayout::new(network, n) {
                Ok(l) => l,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            let bound = crate::bfv::max_log_q_128(n).unwrap_or(0) as usize;
            for primes in crt_prime_candidates(network.plaintext_bits(), n) {
                for special in [1, 2] {
                    let max_q = (bound / 30)
                        .saturating_sub(special)
                        .min(crate::rns::MAX_LIMBS);
                    for q in 1..=max_q {
                        let params = match NetworkParameters::with_special_primes(
                            n, q, &primes, special, backend,
                        ) {
                            Ok(p) => p,
                            Err(e) => {
                                last_error = e;
                                continue;
                            }
                        };
                        match SinglePlan::new(&params, layout.clone(), false) {
                            Ok(plan) => {
                                // The same with the input's last limb dropped, if the noise
                                // allows: a smaller upload for nothing else.
                                let plan =
                                    SinglePlan::new(&params, layout.clone(), true).unwrap_or(plan);
                                let seconds = plan.estimate_seconds(&params, threads);
                                if best.as_ref().is_none_or(|b| seconds < b.seconds) {
                                    best = Some(Self {
                                        params,
                                        plan,
                                        seconds,
                                    });
                                }
                                break;
                            }
                            Err(e) => last_error = e,
                        }
                    }
                }
            }
            if best.is_some() {
                // A larger ring only costs more.
                break;
            }
        }
        best.ok_or(last_error)
    }
}
