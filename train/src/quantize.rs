//! From the trained float network to the integer model file.
//!
//! Batch normalization folds into the preceding linear layer. Pixels become integers in
//! 0..=L; each layer's weights are scaled so that the largest is 2^bits - 1 and rounded; each
//! bias is scaled by everything its layer's input carries (input levels, earlier weight
//! scales, squared). Integer logits are then a positive multiple of the float logits up to
//! rounding, so the predicted digit is preserved where the rounding is small.

pub mod polynomial;

use cryptonets_core::model::{CLASSES, Model, ModelWriter};
use cryptonets_host::mnist::{Dataset, PIXELS};

/// The trained network in f64 with batch normalization folded in.
#[derive(Clone, Debug)]
pub struct FloatNet {
    /// [5][25]
    pub conv_w: Vec<f64>,
    /// [5]
    pub conv_b: Vec<f64>,
    /// [100][845]
    pub dense1_w: Vec<f64>,
    /// [100]
    pub dense1_b: Vec<f64>,
    /// [10][100]
    pub dense2_w: Vec<f64>,
    /// [10]
    pub dense2_b: Vec<f64>,
}

/// A trained batch normalization: z -> gamma (z - mean) / sqrt(var + eps) + beta.
#[derive(Clone, Debug)]
pub struct BatchNormStats {
    /// Scale.
    pub gamma: Vec<f64>,
    /// Shift.
    pub beta: Vec<f64>,
    /// Running mean.
    pub mean: Vec<f64>,
    /// Running variance.
    pub var: Vec<f64>,
    /// Added to the variance.
    pub eps: f64,
}

/// Folds the normalization into the linear layer before it (weight rows of `width`).
pub fn fold_batch_norm(w: &mut [f64], b: &mut [f64], width: usize, norm: &BatchNormStats) {
    for (row, bias) in b.iter_mut().enumerate() {
        let scale = norm.gamma[row] / (norm.var[row] + norm.eps).sqrt();
        w[row * width..(row + 1) * width]
            .iter_mut()
            .for_each(|x| *x *= scale);
        *bias = (*bias - norm.mean[row]) * scale + norm.beta[row];
    }
}

/// How coarse the integer model is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Precision {
    /// Pixel levels L.
    pub levels: u16,
    /// Bits of the largest conv, dense 1 and dense 2 weight magnitudes.
    pub bits: [u32; 3],
}

fn quantize(w: &[f64], bits: u32) -> (Vec<i16>, f64) {
    let max = w.iter().fold(0f64, |m, x| m.max(x.abs()));
    let scale = ((1u32 << bits) - 1) as f64 / max;
    (
        w.iter().map(|x| (x * scale).round() as i16).collect(),
        scale,
    )
}

/// The integer model of `net` at `precision` (accuracies left at zero).
pub fn integer_model(net: &FloatNet, precision: Precision) -> ModelWriter {
    let [b1, b2, b3] = precision.bits;
    let levels = precision.levels as f64;
    let (conv_weights, s1) = quantize(&net.conv_w, b1);
    let a1 = s1 * levels; // conv outputs carry this factor
    let (dense1_weights, s2) = quantize(&net.dense1_w, b2);
    let a2 = s2 * a1 * a1;
    let (dense2_weights, s3) = quantize(&net.dense2_w, b3);
    let a3 = s3 * a2 * a2;
    let round = |b: &[f64], factor: f64| b.iter().map(|x| (x * factor).round() as i128).collect();
    ModelWriter {
        maps: 5,
        hidden: 100,
        input_levels: precision.levels,
        float_accuracy: 0,
        integer_accuracy: 0,
        conv_weights,
        conv_biases: round(&net.conv_b, a1),
        dense1_weights,
        dense1_biases: round(&net.dense1_b, a2),
        dense2_weights,
        dense2_biases: round(&net.dense2_b, a3),
    }
}

/// The coarsest precision found greedily, scored on `validation` only: from 16 pixel levels
/// and 6/5/6-bit weights, each knob is coarsened while the integer model's validation
/// accuracy stays at or above `floor` (the float model's, less the trainer's `--tolerance`).
pub fn choose_precision(net: &FloatNet, validation: &Dataset, floor: f64) -> Precision {
    let evaluate = |p: Precision| -> Option<f64> {
        let bytes = integer_model(net, p).to_bytes();
        let model = Model::parse(&bytes).ok()?;
        Some(integer_accuracy(&model, validation))
    };
    let mut best = Precision {
        levels: 15,
        bits: [6, 5, 6],
    };
    eprintln!(
        "{best:?}: validation integer accuracy {:.4}",
        evaluate(best).unwrap_or(0.0)
    );
    loop {
        let candidates = [
            Precision {
                levels: best.levels / 2,
                ..best
            },
            Precision {
                bits: [best.bits[0] - 1, best.bits[1], best.bits[2]],
                ..best
            },
            Precision {
                bits: [best.bits[0], best.bits[1] - 1, best.bits[2]],
                ..best
            },
            Precision {
                bits: [best.bits[0], best.bits[1], best.bits[2] - 1],
                ..best
            },
        ];
        let accepted = candidates
            .into_iter()
            .filter(|c| c.levels >= 1 && c.bits.iter().all(|&b| b >= 2))
            .filter_map(|c| Some((c, evaluate(c)?)))
            .inspect(|(c, a)| eprintln!("{c:?}: validation integer accuracy {a:.4}"))
            .find(|&(_, a)| a >= floor);
        match accepted {
            Some((c, _)) => best = c,
            None => return best,
        }
    }
}

/// Accuracy of an integer model with the core's exact inference.
pub fn integer_accuracy(model: &Model<'_>, test: &Dataset) -> f64 {
    let correct = (0..test.len())
        .filter(|&i| {
            let pixels: &[u8; PIXELS] = test.image(i).try_into().expect("784 pixels");
            model.predict(pixels) == Ok(test.labels[i] as usize)
        })
        .count();
    correct as f64 / test.len() as f64
}

impl FloatNet {
    /// The squared convolution outputs, [map][row][column], for pixels scaled to [0, 1]
    /// (784 values, row by row).
    pub fn squared_conv(&self, x: &[f64]) -> Vec<f64> {
        let mut act = vec![0f64; 845];
        for m in 0..5 {
            for oy in 0..13 {
                for ox in 0..13 {
                    let mut z = self.conv_b[m];
                    for k in 0..25 {
                        let (y, xx) = ((2 * oy + k / 5) as i64 - 1, (2 * ox + k % 5) as i64 - 1);
                        if (0..28).contains(&y) && (0..28).contains(&xx) {
                            z += self.conv_w[m * 25 + k] * x[(y * 28 + xx) as usize];
                        }
                    }
                    act[m * 169 + oy * 13 + ox] = z * z;
                }
            }
        }
        act
    }

    /// The logits for pixels scaled to [0, 1] (784 values, row by row).
    pub fn logits(&self, x: &[f64]) -> [f64; CLASSES] {
        let act = self.squared_conv(x);
        let hidden: Vec<f64> = (0..100)
            .map(|u| {
                let z = self.dense1_b[u]
                    + (0..845)
                        .map(|f| self.dense1_w[u * 845 + f] * act[f])
                        .sum::<f64>();
                z * z
            })
            .collect();
        core::array::from_fn(|c| {
            self.dense2_b[c]
                + (0..100)
                    .map(|u| self.dense2_w[c * 100 + u] * hidden[u])
                    .sum::<f64>()
        })
    }
}

/// Test accuracy of the float network (folded), for reference.
pub fn float_accuracy(net: &FloatNet, test: &Dataset) -> f64 {
    let correct = (0..test.len())
        .filter(|&i| {
            let x: Vec<f64> = test.image(i).iter().map(|&p| p as f64 / 255.0).collect();
            let logits = net.logits(&x);
            let best = (0..CLASSES).fold(0, |b, c| if logits[c] > logits[b] { c } else { b });
            best == test.labels[i] as usize
        })
        .count();
    correct as f64 / test.len() as f64
}
