//! From a float network of the model format's family ([`FloatNetwork`]) to an integer
//! [`PolynomialNetwork`] (format v2).
//!
//! Every integer neuron is a known positive multiple of its float value (its scale): the
//! input is round(p * L / 255) = L x; a linear layer divides its weights by the scales of
//! its inputs (so that pooling's per-position divisors fold exactly into the dense layer
//! after it) and rounds them to `bits`; sum pooling multiplies the scale by the divisor; an
//! activation c_d x^d + ... + c_0 on inputs of scale s becomes the integer polynomial
//! A sign(c_d) X^d + ... + round(K c_k / s^k) X^k of scale K = A s^d / |c_d|, the smallest
//! power of two A keeping every rounded coefficient within 2^-8 of its value.

use cryptonets_core::model::polynomial::{Layer, PolynomialNetwork, Shape};
use cryptonets_host::mnist::Dataset;
use rayon::prelude::*;

use crate::float_network::{FloatLayer, FloatNetwork};

/// How coarse the integer network is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Precision {
    /// Pixel levels L.
    pub levels: u16,
    /// Bits of the largest weight magnitude, per convolution or dense layer in order.
    pub bits: Vec<u32>,
}

/// Convolution and dense layers (those with weights) of a network.
pub fn weighted_layers(net: &FloatNetwork) -> usize {
    net.layers
        .iter()
        .filter(|l| matches!(l, FloatLayer::Conv { .. } | FloatLayer::Dense { .. }))
        .count()
}

/// The scale shared by neurons `range` of `scale`, if they share one.
fn shared(scale: &[f64], range: std::ops::Range<usize>) -> Option<f64> {
    let first = scale[range.start];
    scale[range]
        .iter()
        .all(|&s| ((s - first) / first).abs() < 1e-9)
        .then_some(first)
}

fn round_bias(b: f64) -> Result<i128, String> {
    (b.is_finite() && b.abs() < 2f64.powi(120))
        .then(|| b.round() as i128)
        .ok_or_else(|| "a bias does not fit after scaling".to_string())
}

/// Weights divided by their inputs' scales, rounded so that the largest is 2^bits - 1.
fn quantize_weights(v: &[f64], bits: u32) -> (Vec<i16>, f64) {
    let max = v.iter().fold(0f64, |m, x| m.max(x.abs()));
    let sigma = if max == 0.0 {
        1.0
    } else {
        ((1u32 << bits) - 1) as f64 / max
    };
    (
        v.iter().map(|x| (x * sigma).round() as i16).collect(),
        sigma,
    )
}

/// A linear layer's integer weights (`v`: weights over input scales) and biases, and its
/// output scale.
fn quantize_affine(
    v: &[f64],
    biases: &[f64],
    bits: u32,
) -> Result<(Vec<i16>, Vec<i128>, f64), String> {
    let (weights, sigma) = quantize_weights(v, bits);
    let biases = biases
        .iter()
        .map(|b| round_bias(b * sigma))
        .collect::<Result<_, _>>()?;
    Ok((weights, biases, sigma))
}

/// The integer activation of `c` on inputs of scale `s`: coefficients and output scale.
fn quantize_polynomial(c: &[f64; 4], s: f64) -> Result<([i64; 4], f64), String> {
    let d = (1..4)
        .rev()
        .find(|&k| c[k] != 0.0)
        .ok_or("an activation of degree 0")?;
    let mut a = 1.0;
    loop {
        let k = a * s.powi(d as i32) / c[d].abs();
        let mut q = [0i64; 4];
        q[d] = (a as i64) * c[d].signum() as i64;
        let mut close = true;
        for i in 0..d {
            let exact = k * c[i] / s.powi(i as i32);
            if !exact.is_finite() || exact.abs() >= 2f64.powi(62) {
                return Err("an activation coefficient does not fit in 64 bits".into());
            }
            q[i] = exact.round() as i64;
            close &= c[i] == 0.0 || ((q[i] as f64 - exact) / exact).abs() <= 1.0 / 256.0;
        }
        if close || a >= 256.0 {
            return Ok((q, k));
        }
        a *= 2.0;
    }
}

/// The integer network of `net` at `precision`.
pub fn quantize(net: &FloatNetwork, precision: &Precision) -> Result<PolynomialNetwork, String> {
    if precision.bits.len() != weighted_layers(net)
        || precision.bits.iter().any(|&b| !(1..=15).contains(&b))
    {
        return Err("one weight precision of 1 to 15 bits per convolution or dense layer".into());
    }
    let shapes = net.shapes()?;
    let mut scale = vec![precision.levels as f64; net.input.len()];
    let mut bits = precision.bits.iter();
    let mut layers = Vec::with_capacity(net.layers.len());
    // Per neuron, what the integer network leaves out of the true integer value (an
    // activation's constant term on its way to the next linear layer's biases).
    let mut offset: Option<Vec<f64>> = None;
    for (i, layer) in net.layers.iter().enumerate() {
        let input: Shape = if i == 0 { net.input } else { shapes[i - 1] };
        let output = shapes[i];
        let plane = input.height * input.width;
        let uniform_channels = || -> Result<Vec<f64>, String> {
            (0..input.channels)
                .map(|c| shared(&scale, c * plane..(c + 1) * plane))
                .collect::<Option<Vec<f64>>>()
                .ok_or_else(|| "mean pooling whose divisor varies by position (count_include_pad = 0 over padding) must be followed by a dense layer".to_string())
        };
        let (integer, next) = match layer {
            FloatLayer::Conv {
                out_channels,
                window,
                weights,
                biases,
            } => {
                let per_channel = uniform_channels()?;
                let per = window.kernel[0] * window.kernel[1];
                let v: Vec<f64> = weights
                    .iter()
                    .enumerate()
                    .map(|(j, w)| w / per_channel[(j / per) % input.channels])
                    .collect();
                let (weights, biases, sigma) =
                    quantize_affine(&v, biases, *bits.next().expect("counted"))?;
                (
                    Layer::Conv2d {
                        out_channels: *out_channels,
                        window: *window,
                        weights,
                        biases,
                    },
                    vec![sigma; output.len()],
                )
            }
            FloatLayer::Dense {
                outputs,
                weights,
                biases,
            } => {
                let inputs = input.len();
                let v: Vec<f64> = weights
                    .iter()
                    .enumerate()
                    .map(|(j, w)| w / scale[j % inputs])
                    .collect();
                let (weights, biases, sigma) =
                    quantize_affine(&v, biases, *bits.next().expect("counted"))?;
                (
                    Layer::Dense {
                        outputs: *outputs,
                        weights,
                        biases,
                    },
                    vec![sigma; output.len()],
                )
            }
            FloatLayer::AvgPool {
                window,
                count_include_pad,
            } => {
                let per_channel = uniform_channels()?;
                let probe = FloatLayer::AvgPool {
                    window: *window,
                    count_include_pad: *count_include_pad,
                };
                let rows = probe.rows(input).expect("pooling has rows");
                // Each float row weighs its cells by 1 / divisor.
                let next = rows
                    .iter()
                    .enumerate()
                    .map(|(n, (taps, _))| {
                        let divisor = taps.first().map_or(1.0, |t| 1.0 / t.1);
                        per_channel[n / (output.height * output.width)] * divisor
                    })
                    .collect();
                (Layer::SumPool { window: *window }, next)
            }
            FloatLayer::Flatten => (Layer::Flatten, scale.clone()),
            FloatLayer::Polynomial { coefficients } => {
                let monomial = (0..4).filter(|&k| coefficients[k] != 0.0).count() == 1;
                match shared(&scale, 0..scale.len()) {
                    Some(s) => {
                        // The constant term, K c0, is of the order of s^d: it would overflow
                        // 64 bits long before the other coefficients. It is carried to the
                        // next linear layer's biases instead, where a linear layer comes
                        // before any other activation.
                        let absorbed = net.layers[i + 1..]
                            .iter()
                            .find(|l| !matches!(l, FloatLayer::Flatten | FloatLayer::AvgPool { .. }))
                            .is_some_and(|l| matches!(l, FloatLayer::Conv { .. } | FloatLayer::Dense { .. }));
                        let mut c = *coefficients;
                        if absorbed && c[0] != 0.0 {
                            c[0] = 0.0;
                        }
                        let (q, k) = quantize_polynomial(&c, s)?;
                        if c[0] != coefficients[0] {
                            offset = Some(vec![k * coefficients[0]; scale.len()]);
                        }
                        (Layer::Polynomial { coefficients: q }, vec![k; scale.len()])
                    }
                    None if monomial => {
                        let d = (1..4).find(|&k| coefficients[k] != 0.0).ok_or("an activation of degree 0")?;
                        let mut q = [0i64; 4];
                        q[d] = coefficients[d].signum() as i64;
                        let next = scale.iter().map(|s| s.powi(d as i32) / coefficients[d].abs()).collect();
                        (Layer::Polynomial { coefficients: q }, next)
                    }
                    None => return Err("an activation after mean pooling whose divisor varies by position: use count_include_pad=True, or a dense layer in between".into()),
                }
            }
        };
        let integer = match offset.take() {
            Some(off) if !matches!(layer, FloatLayer::Polynomial { .. }) => {
                absorb_offset(integer, input, off, &mut offset)?
            }
            pending => {
                offset = pending;
                integer
            }
        };
        layers.push(integer);
        scale = next;
    }
    PolynomialNetwork::new(net.input, precision.levels, layers).map_err(|e| e.to_string())
}

/// The integer value of neuron j is X_j + off_j where the network computes X_j: a linear
/// layer adds its taps' share of the offsets to its biases (per output neuron where a
/// convolution pads, per channel where they agree); pooling and flattening pass the offsets
/// on (summed over each window) in `pending`.
fn absorb_offset(
    layer: Layer,
    input: Shape,
    off: Vec<f64>,
    pending: &mut Option<Vec<f64>>,
) -> Result<Layer, String> {
    let mut sums = Vec::new();
    let _ = layer.for_each_row(input, |o, taps, _| {
        if sums.len() <= o {
            sums.resize(o + 1, 0.0);
        }
        sums[o] = taps
            .iter()
            .map(|&(j, w)| w as f64 * off[j as usize])
            .sum::<f64>();
        Ok::<(), ()>(())
    });
    match layer {
        Layer::Flatten => {
            *pending = Some(off);
            Ok(Layer::Flatten)
        }
        Layer::SumPool { window } => {
            *pending = Some(sums);
            Ok(Layer::SumPool { window })
        }
        Layer::Dense {
            outputs,
            weights,
            biases,
        } => {
            let biases = biases
                .iter()
                .zip(&sums)
                .map(|(&b, &s)| Ok(b + round_bias(s)?))
                .collect::<Result<_, String>>()?;
            Ok(Layer::Dense {
                outputs,
                weights,
                biases,
            })
        }
        Layer::Conv2d {
            out_channels,
            window,
            weights,
            biases,
        } => {
            let plane = sums.len() / out_channels;
            let per_neuron: Vec<i128> = (0..sums.len())
                .map(|n| {
                    Ok(biases[if biases.len() == out_channels {
                        n / plane
                    } else {
                        n
                    }] + round_bias(sums[n])?)
                })
                .collect::<Result<_, String>>()?;
            let per_channel = (0..out_channels).all(|o| {
                per_neuron[o * plane..(o + 1) * plane]
                    .iter()
                    .all(|&b| b == per_neuron[o * plane])
            });
            let biases = match per_channel {
                true => (0..out_channels).map(|o| per_neuron[o * plane]).collect(),
                false => per_neuron,
            };
            Ok(Layer::Conv2d {
                out_channels,
                window,
                weights,
                biases,
            })
        }
        Layer::Polynomial { .. } => {
            Err("an activation constant cannot reach a linear layer".into())
        }
    }
}

/// Accuracy of an integer network with the core's exact inference.
pub fn integer_accuracy(network: &PolynomialNetwork, set: &Dataset) -> f64 {
    let correct = (0..set.len())
        .into_par_iter()
        .filter(|&i| network.predict(set.image(i)) == Ok(set.labels[i] as usize))
        .count();
    correct as f64 / set.len().max(1) as f64
}

/// How an integer network scores against its float original on a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fidelity {
    /// Its accuracy.
    pub accuracy: f64,
    /// The fraction of images where it predicts what the float network predicts.
    pub agreement: f64,
}

/// [`Fidelity`] of `network` against the float network's `float_predictions` on `set`.
pub fn fidelity(
    network: &PolynomialNetwork,
    set: &Dataset,
    float_predictions: &[usize],
) -> Fidelity {
    let (correct, agree) = (0..set.len())
        .into_par_iter()
        .map(|i| {
            let p = network.predict(set.image(i)).ok();
            (
                (p == Some(set.labels[i] as usize)) as usize,
                (p == Some(float_predictions[i])) as usize,
            )
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let len = set.len().max(1) as f64;
    Fidelity {
        accuracy: correct as f64 / len,
        agreement: agree as f64 / len,
    }
}

/// What a precision must keep on the validation split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Requirement {
    /// Least integer accuracy.
    pub accuracy: f64,
    /// Least agreement with the float network's predictions: accuracy alone lets errors
    /// that the rounding adds on some images cancel against images it happens to fix.
    pub agreement: f64,
}

/// The coarsest precision found greedily, scored on `validation` only: from 15 pixel levels
/// and 6-bit weights (finer, up to 255 levels and 10 bits, while that start misses the
/// requirement), each knob is coarsened while the integer network keeps `required`. Fewer
/// bits mean a smaller plaintext, hence fewer CRT channels or a smaller ring.
pub fn choose_precision(
    net: &FloatNetwork,
    validation: &Dataset,
    required: Requirement,
) -> Result<Precision, String> {
    let float = net.compile()?.predictions(validation);
    let evaluate = |p: &Precision| -> Option<Fidelity> {
        Some(fidelity(&quantize(net, p).ok()?, validation, &float))
    };
    let meets = |f: &Fidelity| f.accuracy >= required.accuracy && f.agreement >= required.agreement;
    let mut best = Precision {
        levels: 15,
        bits: vec![6; weighted_layers(net)],
    };
    let mut start =
        evaluate(&best).ok_or("the network does not quantize at 15 levels and 6-bit weights")?;
    eprintln!("{best:?}: validation {start:?}");
    while !meets(&start) && best.bits[0] < 10 {
        let finer = Precision {
            levels: best.levels * 2 + 1,
            bits: best.bits.iter().map(|b| b + 1).collect(),
        };
        match evaluate(&finer) {
            Some(f) => {
                eprintln!("{finer:?}: validation {f:?}");
                (best, start) = (finer, f);
            }
            None => break,
        }
    }
    loop {
        let mut candidates = vec![Precision {
            levels: best.levels / 2,
            ..best.clone()
        }];
        for i in 0..best.bits.len() {
            let mut c = best.clone();
            c.bits[i] -= 1;
            candidates.push(c);
        }
        let accepted = candidates
            .into_iter()
            .filter(|c| c.levels >= 1 && c.bits.iter().all(|&b| b >= 2))
            .filter_map(|c| {
                let f = evaluate(&c)?;
                Some((c, f))
            })
            .inspect(|(c, f)| eprintln!("{c:?}: validation {f:?}"))
            .find(|(_, f)| meets(f));
        match accepted {
            Some((c, _)) => best = c,
            None => return Ok(best),
        }
    }
}
