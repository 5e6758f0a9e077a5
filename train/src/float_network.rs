//! A float polynomial network of the model format's layer family, as imported (ONNX) before
//! quantization: every scaling, normalization and batch normalization already folded in, so
//! that each layer maps one-to-one onto an integer layer of [`PolynomialNetwork`].
//!
//! [`PolynomialNetwork`]: cryptonets_core::model::polynomial::PolynomialNetwork

use cryptonets_core::model::polynomial::{Shape, Window};
use cryptonets_host::mnist::Dataset;

/// One float layer.
#[derive(Clone, Debug, PartialEq)]
pub enum FloatLayer {
    /// Convolution (groups 1), weights [out][in][ky][kx]; biases per output channel or per
    /// output neuron.
    Conv {
        out_channels: usize,
        window: Window,
        weights: Vec<f64>,
        biases: Vec<f64>,
    },
    /// Mean pooling: the divisor is the window's area, or with `count_include_pad` false the
    /// number of its cells inside the input.
    AvgPool {
        window: Window,
        count_include_pad: bool,
    },
    /// Dense layer on the flattened input, weights [out][in].
    Dense {
        outputs: usize,
        weights: Vec<f64>,
        biases: Vec<f64>,
    },
    /// To a vector.
    Flatten,
    /// c0 + c1 x + c2 x^2 + c3 x^3 on every neuron.
    Polynomial { coefficients: [f64; 4] },
}

/// An affine row: input neurons with weights, and the bias.
pub type FloatRow = (Vec<(u32, f64)>, f64);

impl FloatLayer {
    /// The output shape on `input`, or why the layer does not fit it.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, String> {
        match self {
            FloatLayer::Conv {
                out_channels,
                window,
                weights,
                biases,
            } => {
                let (h, w) = window
                    .output(input.height, input.width)
                    .map_err(|e| e.to_string())?;
                let per = input.channels * window.kernel[0] * window.kernel[1];
                if weights.len() != out_channels * per
                    || (biases.len() != *out_channels && biases.len() != out_channels * h * w)
                {
                    return Err("convolution weights do not match its shape".into());
                }
                Ok(Shape {
                    channels: *out_channels,
                    height: h,
                    width: w,
                })
            }
            FloatLayer::AvgPool { window, .. } => {
                let (h, w) = window
                    .output(input.height, input.width)
                    .map_err(|e| e.to_string())?;
                Ok(Shape {
                    channels: input.channels,
                    height: h,
                    width: w,
                })
            }
            FloatLayer::Dense {
                outputs,
                weights,
                biases,
            } => {
                if weights.len() != outputs * input.len() || biases.len() != *outputs {
                    return Err("dense weights do not match its input".into());
                }
                Ok(Shape::vector(*outputs))
            }
            FloatLayer::Flatten => Ok(Shape::vector(input.len())),
            FloatLayer::Polynomial { .. } => Ok(input),
        }
    }

    /// The rows of an affine layer (convolution, pooling, dense) on `input`, in output
    /// order; `None` for flatten and activations.
    pub fn rows(&self, input: Shape) -> Option<Vec<FloatRow>> {
        match self {
            FloatLayer::Conv {
                out_channels,
                window,
                weights,
                biases,
            } => {
                let [kh, kw] = window.kernel;
                let c_in = input.channels;
                let (oh, ow) = window.output(input.height, input.width).unwrap_or((0, 0));
                let plane_out = oh * ow;
                let per_neuron = biases.len() != *out_channels;
                Some(window_rows(
                    input,
                    window,
                    *out_channels,
                    &|_| 0..c_in,
                    &|o, c, ky, kx| weights[((o * c_in + c) * kh + ky) * kw + kx],
                    &|n| biases[if per_neuron { n } else { n / plane_out.max(1) }],
                ))
            }
            FloatLayer::AvgPool {
                window,
                count_include_pad,
            } => {
                let area = (window.kernel[0] * window.kernel[1]) as f64;
                let mut rows = window_rows(
                    input,
                    window,
                    input.channels,
                    &|o| o..o + 1,
                    &|_, _, _, _| 1.0,
                    &|_| 0.0,
                );
                for (taps, _) in &mut rows {
                    let divisor = match count_include_pad {
                        true => area,
                        false => taps.len().max(1) as f64,
                    };
                    taps.iter_mut().for_each(|t| t.1 /= divisor);
                }
                Some(rows)
            }
            FloatLayer::Dense {
                outputs,
                weights,
                biases,
            } => {
                let inputs = input.len();
                Some(
                    (0..*outputs)
                        .map(|o| {
                            let taps = weights[o * inputs..(o + 1) * inputs]
                                .iter()
                                .enumerate()
                                .filter(|&(_, &w)| w != 0.0)
                                .map(|(i, &w)| (i as u32, w))
                                .collect();
                            (taps, biases[o])
                        })
                        .collect(),
                )
            }
            FloatLayer::Flatten | FloatLayer::Polynomial { .. } => None,
        }
    }
}

/// The rows of a windowed layer with `out` output channels (core's walk over windows):
/// output channel o reads the input channels `reads(o)`, tap (o, c, ky, kx) has weight
/// `weight(..)`, output neuron n has bias `bias(n)`; taps in the padding are left out.
fn window_rows(
    input: Shape,
    window: &Window,
    out: usize,
    reads: &dyn Fn(usize) -> std::ops::Range<usize>,
    weight: &dyn Fn(usize, usize, usize, usize) -> f64,
    bias: &dyn Fn(usize) -> f64,
) -> Vec<FloatRow> {
    let mut rows = Vec::new();
    let _ = window.for_each_window(input, out, reads, |n, o, taps| {
        let taps = taps
            .iter()
            .map(|t| (t.neuron, weight(o, t.channel, t.ky, t.kx)))
            .collect();
        rows.push((taps, bias(n)));
        Ok::<(), ()>(())
    });
    rows
}

/// A float network: the input is pixels scaled to [0, 1] (p / 255), as PyTorch saw them.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatNetwork {
    pub input: Shape,
    pub layers: Vec<FloatLayer>,
}

impl FloatNetwork {
    /// Checks every layer against its input; the output shape of each layer.
    pub fn shapes(&self) -> Result<Vec<Shape>, String> {
        let mut shape = self.input;
        self.layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                shape = layer
                    .output_shape(shape)
                    .map_err(|e| format!("layer {i}: {e}"))?;
                Ok(shape)
            })
            .collect()
    }

    /// The network prepared for inference.
    pub fn compile(&self) -> Result<CompiledFloat<'_>, String> {
        let shapes = self.shapes()?;
        let rows = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| l.rows(if i == 0 { self.input } else { shapes[i - 1] }))
            .collect();
        Ok(CompiledFloat {
            network: self,
            rows,
        })
    }
}

/// A float network with the rows of its affine layers laid out.
#[derive(Debug)]
pub struct CompiledFloat<'a> {
    network: &'a FloatNetwork,
    rows: Vec<Option<Vec<FloatRow>>>,
}

impl CompiledFloat<'_> {
    /// The outputs on an input of values (pixels / 255).
    pub fn logits(&self, input: &[f64]) -> Vec<f64> {
        let mut x = input.to_vec();
        for (layer, rows) in self.network.layers.iter().zip(&self.rows) {
            if let Some(rows) = rows {
                x = rows
                    .iter()
                    .map(|(taps, b)| b + taps.iter().map(|&(i, w)| w * x[i as usize]).sum::<f64>())
                    .collect();
            } else if let FloatLayer::Polynomial { coefficients: c } = layer {
                x.iter_mut()
                    .for_each(|v| *v = c[0] + *v * (c[1] + *v * (c[2] + *v * c[3])));
            }
        }
        x
    }

    /// The predicted class of every image of a data set of the network's input shape.
    pub fn predictions(&self, set: &Dataset) -> Vec<usize> {
        use rayon::prelude::*;
        (0..set.len())
            .into_par_iter()
            .map(|i| {
                let image: Vec<f64> = set.image(i).iter().map(|&p| p as f64 / 255.0).collect();
                argmax(&self.logits(&image))
            })
            .collect()
    }

    /// Float accuracy on a data set of the network's input shape.
    pub fn accuracy(&self, set: &Dataset) -> f64 {
        let correct = self
            .predictions(set)
            .iter()
            .zip(&set.labels)
            .filter(|&(&p, &label)| p == label as usize)
            .count();
        correct as f64 / set.len().max(1) as f64
    }
}

/// Index of the largest value (the first of equals).
pub fn argmax(x: &[f64]) -> usize {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best })
}
