//! Architecture files: a JSON description of a network of the model format's family,
//! trained with candle and folded into a [`FloatNetwork`] (batch normalization into the
//! layer before it), then quantized like an imported one.
//!
//! ```json
//! {"input": [1, 28, 28], "layers": [
//!   {"conv": {"out": 5, "kernel": 5, "stride": 2, "padding": 1}}, "batch_norm", "square",
//!   "flatten", {"dense": {"out": 100}}, "batch_norm", "square", {"dense": {"out": 10}}]}
//! ```
//!
//! Layers: `conv` (square kernel, stride, zero padding on every side), `avg_pool` (kernel,
//! stride equal to it, as candle's gradient needs, padding counted in the divisor), `dense`, `flatten`, `batch_norm`
//! (after a convolution or dense layer), and activations `square` and `quadratic` (a x^2 +
//! b x + c with trainable a, b, c, CryptoDL-style, started at x^2 / 2 + x / 2).

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Init, Linear, VarBuilder};
use cryptonets_core::model::polynomial::{MAX_LAYERS, MAX_WINDOW, Shape, Window};
use serde::Deserialize;

use crate::float_network::{FloatLayer, FloatNetwork};

/// The largest architecture file read.
pub const MAX_FILE_BYTES: u64 = 1 << 16;
/// The most outputs of a convolution or dense layer.
pub const MAX_WIDTH: usize = 4096;

/// A network description.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Channels, height, width.
    pub input: [usize; 3],
    pub layers: Vec<LayerSpec>,
}

/// One layer of a description.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Conv {
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    AvgPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    Dense {
        out: usize,
    },
    Flatten,
    BatchNorm,
    Square,
    Quadratic,
}

/// A candle module of one layer.
enum Part {
    Conv(Conv2d, Window),
    Norm(BatchNorm),
    Pool(Window),
    Dense(Linear),
    Flatten,
    Square,
    Quadratic([Tensor; 3]),
}

/// The trainable network of a description.
pub struct ArchitectureNet {
    input: Shape,
    parts: Vec<Part>,
}

fn window(kernel: usize, stride: usize, padding: usize) -> Window {
    Window {
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding: [padding; 4],
    }
}

impl Architecture {
    /// Reads and checks a description file.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let bytes =
            cryptonets_host::files::read_checked(path, MAX_FILE_BYTES, "architecture file")?;
        let arch: Self =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        arch.check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(arch)
    }

    /// The shape after every layer, checking sizes, windows and where batch normalization
    /// may stand.
    pub fn check(&self) -> Result<Vec<Shape>, String> {
        let [c, h, w] = self.input;
        let mut shape = Shape {
            channels: c,
            height: h,
            width: w,
        };
        if shape.is_empty() || c > 64 || h > 256 || w > 256 {
            return Err(format!("input {:?} out of range", self.input));
        }
        if self.layers.is_empty() || self.layers.len() > MAX_LAYERS * 2 {
            return Err("an architecture has 1 to 64 layers".into());
        }
        let mut shapes = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let fail = |e: &str| format!("layer {i} ({layer:?}): {e}");
            let windowed = |kernel: usize, stride: usize, padding: usize, channels: usize| {
                let (h, w) = window(kernel, stride, padding)
                    .output(shape.height, shape.width)
                    .map_err(|e| fail(&e.to_string()))?;
                if shape.width == 1 && shape.height == 1 && shape.channels > 1 && kernel > 1 {
                    return Err(fail("a window on a vector"));
                }
                Ok::<Shape, String>(Shape {
                    channels,
                    height: h,
                    width: w,
                })
            };
            shape = match *layer {
                LayerSpec::Conv {
                    out,
                    kernel,
                    stride,
                    padding,
                } => {
                    if !(1..=MAX_WIDTH).contains(&out) || kernel > MAX_WINDOW {
                        return Err(fail("outputs must be 1 to 4096, the kernel at most 32"));
                    }
                    windowed(kernel, stride, padding, out)?
                }
                LayerSpec::AvgPool {
                    kernel,
                    stride,
                    padding,
                } => {
                    if stride != kernel {
                        return Err(fail(
                            "mean pooling trains with its stride equal to its kernel (candle's gradient)",
                        ));
                    }
                    windowed(kernel, stride, padding, shape.channels)?
                }
                LayerSpec::Dense { out } => {
                    if !(1..=MAX_WIDTH).contains(&out) {
                        return Err(fail("outputs must be 1 to 4096"));
                    }
                    if shape.height * shape.width != 1 {
                        return Err(fail("flatten before a dense layer"));
                    }
                    Shape::vector(out)
                }
                LayerSpec::Flatten => Shape::vector(shape.len()),
                LayerSpec::BatchNorm => {
                    if !matches!(
                        i.checked_sub(1).map(|j| &self.layers[j]),
                        Some(LayerSpec::Conv { .. } | LayerSpec::Dense { .. })
                    ) {
                        return Err(fail(
                            "batch normalization follows a convolution or a dense layer",
                        ));
                    }
                    shape
                }
                LayerSpec::Square | LayerSpec::Quadratic => shape,
            };
            shapes.push(shape);
        }
        if !matches!(self.layers.last(), Some(LayerSpec::Dense { .. })) {
            return Err("the last layer must be dense (the logits)".into());
        }
        Ok(shapes)
    }
}

impl ArchitectureNet {
    /// The modules of `arch` (checked) with their variables in `vb`: layer i's under "l{i:02}",
    /// batch normalizations under "norm{i:02}" (left at their identity initialization by
    /// the trainer's seeded initialization), quadratic coefficients under "quadratic{i:02}".
    pub fn new(arch: &Architecture, vb: VarBuilder) -> candle_core::Result<Self> {
        let shapes = arch.check().map_err(candle_core::Error::Msg)?;
        let [c, h, w] = arch.input;
        let input = Shape {
            channels: c,
            height: h,
            width: w,
        };
        let mut parts = Vec::with_capacity(arch.layers.len());
        for (i, layer) in arch.layers.iter().enumerate() {
            let before = if i == 0 { input } else { shapes[i - 1] };
            parts.push(match *layer {
                LayerSpec::Conv {
                    out,
                    kernel,
                    stride,
                    padding,
                } => {
                    let cfg = Conv2dConfig {
                        padding,
                        stride,
                        ..Default::default()
                    };
                    let conv = candle_nn::conv2d(
                        before.channels,
                        out,
                        kernel,
                        cfg,
                        vb.pp(format!("l{i:02}")),
                    )?;
                    Part::Conv(conv, window(kernel, stride, padding))
                }
                LayerSpec::AvgPool {
                    kernel,
                    stride,
                    padding,
                } => Part::Pool(window(kernel, stride, padding)),
                LayerSpec::Dense { out } => Part::Dense(candle_nn::linear(
                    before.len(),
                    out,
                    vb.pp(format!("l{i:02}")),
                )?),
                LayerSpec::Flatten => Part::Flatten,
                LayerSpec::BatchNorm => Part::Norm(candle_nn::batch_norm(
                    before.channels,
                    1e-5,
                    vb.pp(format!("norm{i:02}")),
                )?),
                LayerSpec::Square => Part::Square,
                LayerSpec::Quadratic => {
                    let vb = vb.pp(format!("quadratic{i:02}"));
                    let get = |name: &str, v: f64| vb.get_with_hints(1, name, Init::Const(v));
                    Part::Quadratic([get("a", 0.5)?, get("b", 0.5)?, get("c", 0.0)?])
                }
            });
        }
        Ok(Self { input, parts })
    }

    /// The logits of a batch [N, C, H, W] (batch normalization in training mode or not).
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for part in &self.parts {
            x = match part {
                Part::Conv(conv, _) => conv.forward(&x)?,
                Part::Norm(norm) => norm.forward_t(&x, train)?,
                Part::Pool(w) => {
                    let p = w.padding[0];
                    let padded = if p > 0 {
                        x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?
                    } else {
                        x
                    };
                    padded.avg_pool2d_with_stride(
                        (w.kernel[0], w.kernel[1]),
                        (w.stride[0], w.stride[1]),
                    )?
                }
                Part::Dense(dense) => dense.forward(&x)?,
                Part::Flatten => x.flatten_from(1)?,
                Part::Square => x.sqr()?,
                Part::Quadratic([a, b, c]) => x
                    .sqr()?
                    .broadcast_mul(a)?
                    .add(&x.broadcast_mul(b)?)?
                    .broadcast_add(c)?,
            };
        }
        Ok(x)
    }

    /// The trained network in f64, batch normalization folded into the layer before it.
    pub fn folded(&self) -> candle_core::Result<FloatNetwork> {
        let values = |t: &Tensor| crate::values(t);
        let mut layers: Vec<FloatLayer> = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            match part {
                Part::Conv(conv, window) => layers.push(FloatLayer::Conv {
                    out_channels: conv.weight().dim(0)?,
                    window: *window,
                    weights: values(conv.weight())?,
                    biases: values(conv.bias().expect("conv bias"))?,
                }),
                Part::Norm(norm) => {
                    let stats = crate::batch_norm_stats(norm)?;
                    let (weights, biases) = match layers.last_mut() {
                        Some(
                            FloatLayer::Conv {
                                weights, biases, ..
                            }
                            | FloatLayer::Dense {
                                weights, biases, ..
                            },
                        ) => (weights, biases),
                        _ => unreachable!("checked: batch normalization follows a linear layer"),
                    };
                    let width = weights.len() / biases.len();
                    crate::quantize::fold_batch_norm(weights, biases, width, &stats);
                }
                Part::Pool(window) => layers.push(FloatLayer::AvgPool {
                    window: *window,
                    count_include_pad: true,
                }),
                Part::Dense(dense) => layers.push(FloatLayer::Dense {
                    outputs: dense.weight().dim(0)?,
                    weights: values(dense.weight())?,
                    biases: values(dense.bias().expect("dense bias"))?,
                }),
                Part::Flatten => layers.push(FloatLayer::Flatten),
                Part::Square => layers.push(FloatLayer::Polynomial {
                    coefficients: [0.0, 0.0, 1.0, 0.0],
                }),
                Part::Quadratic([a, b, c]) => {
                    let [a, b, c] = [a, b, c].map(|t| values(t).map(|v| v[0]));
                    layers.push(FloatLayer::Polynomial {
                        coefficients: [c?, b?, a?, 0.0],
                    });
                }
            }
        }
        Ok(FloatNetwork {
            input: self.input,
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    use super::*;

    fn cryptonets() -> Architecture {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cryptonets.json");
        Architecture::read(&path).unwrap()
    }

    /// The deeper model's architecture file (what train/pytorch/deep.py trains) describes
    /// the committed model: the same shapes, layer by layer, once batch normalization is
    /// folded away.
    #[test]
    fn the_deep_architecture_file_describes_the_committed_deep_model() {
        use cryptonets_core::model::polynomial::{Layer, PolynomialNetwork};
        let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let arch = Architecture::read(&models.join("mnist-deep.json")).unwrap();
        let described: Vec<Shape> = arch
            .check()
            .unwrap()
            .into_iter()
            .zip(&arch.layers)
            .filter(|(_, l)| !matches!(l, LayerSpec::BatchNorm | LayerSpec::Flatten))
            .map(|(s, _)| s)
            .collect();
        let bytes = std::fs::read(models.join("mnist-deep.cnmd")).unwrap();
        let network = PolynomialNetwork::parse(&bytes).unwrap();
        let committed: Vec<Shape> = network
            .layers()
            .iter()
            .zip(network.shapes())
            .filter(|(l, _)| !matches!(l, Layer::Flatten))
            .map(|(_, s)| *s)
            .collect();
        let flat = |s: &Shape| s.len();
        assert_eq!(
            described.iter().map(flat).collect::<Vec<_>>(),
            committed.iter().map(flat).collect::<Vec<_>>()
        );
        assert_eq!(described[0], committed[0]);
    }

    /// After some training steps (batch normalization statistics moved), the folded f64
    /// network computes what candle computes in evaluation mode.
    #[test]
    fn the_folded_network_computes_what_candle_computes() {
        let mut arch = cryptonets();
        // Every layer kind, and a multi-channel input.
        arch.input = [2, 12, 12];
        arch.layers = serde_json::from_str(
            r#"[{"conv": {"out": 3, "kernel": 3, "stride": 1, "padding": 1}}, "batch_norm", "quadratic",
                {"avg_pool": {"kernel": 2, "stride": 2, "padding": 1}}, "square", "flatten",
                {"dense": {"out": 7}}, "batch_norm", "square", {"dense": {"out": 4}}]"#,
        )
        .unwrap();
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let net =
            ArchitectureNet::new(&arch, VarBuilder::from_varmap(&vars, DType::F32, &dev)).unwrap();
        let mut opt = <candle_nn::SGD as candle_nn::Optimizer>::new(vars.all_vars(), 0.05).unwrap();
        let x = Tensor::rand(0f32, 1f32, (16, 2, 12, 12), &dev).unwrap();
        let y = Tensor::from_vec((0..16u32).map(|i| i % 4).collect::<Vec<_>>(), 16, &dev).unwrap();
        for _ in 0..3 {
            let l = candle_nn::loss::cross_entropy(&net.forward(&x, true).unwrap(), &y).unwrap();
            candle_nn::Optimizer::backward_step(&mut opt, &l).unwrap();
        }
        let want = net
            .forward(&x, false)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        let folded = net.folded().unwrap();
        let compiled = folded.compile().unwrap();
        let inputs = x
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_from(1)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        for (input, want) in inputs.iter().zip(&want) {
            let got = compiled.logits(input);
            let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= 1e-4 * scale, "{got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn descriptions_are_checked() {
        assert_eq!(
            cryptonets().check().unwrap().last(),
            Some(&Shape::vector(10))
        );
        for bad in [
            r#"{"input": [1, 28, 28], "layers": ["batch_norm", {"dense": {"out": 10}}]}"#,
            r#"{"input": [1, 28, 28], "layers": [{"dense": {"out": 10}}]}"#,
            r#"{"input": [1, 28, 28], "layers": ["flatten", {"dense": {"out": 10}}, "square"]}"#,
            r#"{"input": [1, 28, 28], "layers": [{"conv": {"out": 2, "kernel": 40, "stride": 1, "padding": 0}}, "flatten", {"dense": {"out": 10}}]}"#,
            r#"{"input": [1, 28, 28], "layers": ["flatten", {"dense": {"out": 100000}}]}"#,
        ] {
            let arch: Architecture = serde_json::from_str(bad).unwrap();
            assert!(arch.check().is_err(), "{bad}");
        }
        assert!(
            serde_json::from_str::<Architecture>(r#"{"input": [1, 28, 28], "layers": ["relu"]}"#)
                .is_err()
        );
    }
}
