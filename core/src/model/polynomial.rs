//! General polynomial CNNs (model format v2): an input of C x H x W pixels and a sequence of
//! layers from one family, convolutions, sum pooling, dense layers, flattening and
//! polynomial activations of degree 1 to 3 with integer coefficients, all on integers so
//! that encrypted evaluation can equal plaintext inference exactly.
//!
//! Every layer is, neuron by neuron, either an integer affine map of the previous layer's
//! neurons ([`Layer::for_each_row`]: convolution, pooling and dense layers alike) or the
//! same polynomial applied to each neuron. Bounds are worst-case intervals propagated per
//! neuron in exact big-integer arithmetic ([`bounds`]); plaintext inference runs in checked
//! i128 when the bounds allow it and in big integers otherwise ([`inference`]). Average
//! pooling, batch normalization and input scalings are folded into integer weights before a
//! model is written (sum pooling is what the format holds).
//!
//! Version 1 files (the fixed CryptoNets topology, [`super::Model`]) load as the equivalent
//! network ([`PolynomialNetwork::from_v1`]). The v2 layout is in [`format`].

use alloc::vec::Vec;

use crate::Error;

pub mod bounds;
pub mod format;
pub mod inference;

pub use bounds::LayerBounds;

/// Most layers in a network.
pub const MAX_LAYERS: usize = 32;
/// Most neurons of any layer's output (and of the input).
pub const MAX_NEURONS: usize = 1 << 20;
/// Most weights in a network, over all layers.
pub const MAX_WEIGHTS: usize = 1 << 25;
/// Largest kernel side, stride and padding.
pub const MAX_WINDOW: usize = 32;
/// Most classes (outputs of the last layer).
pub const MAX_OUTPUTS: usize = 1024;
/// Largest worst-case magnitude of any neuron, in bits: the plaintext is CRT-split over at
/// most eight primes below 2^29, so about 230 bits can be held; 200 leaves margin.
pub const MAX_BOUND_BITS: u64 = 200;

/// A tensor shape: channels x height x width (a vector is n x 1 x 1). Neurons are indexed
/// channel-major, then row, then column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl Shape {
    /// A vector of `n` neurons.
    pub const fn vector(n: usize) -> Self {
        Self {
            channels: n,
            height: 1,
            width: 1,
        }
    }

    /// Number of neurons.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the shape holds no neuron.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A sliding window: kernel, stride and zero padding (top, left, bottom, right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Zero padding on the top, left, bottom and right.
    pub padding: [usize; 4],
}

impl Window {
    /// Output height and width on an input of `height` x `width`, refusing windows outside
    /// the limits or larger than the padded input.
    pub fn output(&self, height: usize, width: usize) -> Result<(usize, usize), Error> {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [top, left, bottom, right] = self.padding;
        let in_range = |x: usize| (1..=MAX_WINDOW).contains(&x);
        if !(in_range(kh) && in_range(kw) && in_range(sh) && in_range(sw))
            || self.padding.iter().any(|&p| p >= MAX_WINDOW)
            || top >= kh
            || bottom >= kh
            || left >= kw
            || right >= kw
        {
            return Err(Error::Malformed {
                reason: "window kernel, stride or padding out of range",
            });
        }
        let padded_h = height + top + bottom;
        let padded_w = width + left + right;
        if padded_h < kh || padded_w < kw {
            return Err(Error::Malformed {
                reason: "window larger than its padded input",
            });
        }
        Ok(((padded_h - kh) / sh + 1, (padded_w - kw) / sw + 1))
    }

    /// The input position (row, column) of kernel tap (ky, kx) for output (oy, ox), or None
    /// where it falls in the padding.
    pub fn tap(&self, input: Shape, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<usize> {
        let y = (oy * self.stride[0] + ky).checked_sub(self.padding[0])?;
        let x = (ox * self.stride[1] + kx).checked_sub(self.padding[1])?;
        (y < input.height && x < input.width).then_some(y * input.width + x)
    }

    /// Calls `row(neuron, out_channel, taps)` for every output neuron of a windowed layer
    /// with `out_channels` output channels on `input` (a shape [`Window::output`] accepts),
    /// in output order ([out][y][x]). Output channel o reads the input channels `reads(o)`
    /// (all of them for a convolution, its own for pooling); taps in the padding are left
    /// out. The one walk over windows that convolutions and pooling share, integer (here)
    /// and float (the trainer's).
    pub fn for_each_window<E>(
        &self,
        input: Shape,
        out_channels: usize,
        reads: impl Fn(usize) -> core::ops::Range<usize>,
        mut row: impl FnMut(usize, usize, &[WindowTap]) -> Result<(), E>,
    ) -> Result<(), E> {
        let plane = input.height * input.width;
        let (oh, ow) = self.output(input.height, input.width).unwrap_or((0, 0));
        let [kh, kw] = self.kernel;
        let mut taps = Vec::new();
        for o in 0..out_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    taps.clear();
                    for channel in reads(o) {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                if let Some(p) = self.tap(input, oy, ox, ky, kx) {
                                    taps.push(WindowTap {
                                        neuron: (channel * plane + p) as u32,
                                        channel,
                                        ky,
                                        kx,
                                    });
                                }
                            }
                        }
                    }
                    row((o * oh + oy) * ow + ox, o, &taps)?;
                }
            }
        }
        Ok(())
    }
}

/// One tap of a window: the input neuron it reads, and the input channel and kernel
/// position its weight belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowTap {
    /// Index of the input neuron ([channel][y][x]).
    pub neuron: u32,
    /// Its input channel.
    pub channel: usize,
    /// Kernel row.
    pub ky: usize,
    /// Kernel column.
    pub kx: usize,
}

/// One layer of a polynomial network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layer {
    /// 2-D convolution (groups 1): weights [out][in][ky][kx]; one bias per output channel,
    /// or one per output neuron ([out][y][x]), as an input normalization folded into a
    /// padded convolution needs: the padding is zero after the normalization, so the folded
    /// offset reaches only the taps inside the image.
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Kernel, stride and padding.
        window: Window,
        /// Integer weights.
        weights: Vec<i16>,
        /// Integer biases, per output channel or per output neuron.
        biases: Vec<i128>,
    },
    /// Sum pooling per channel (average pooling is this with 1 / area folded into the next
    /// layer); padding contributes zeros.
    SumPool {
        /// Kernel, stride and padding.
        window: Window,
    },
    /// Dense layer on the flattened input: weights [out][in].
    Dense {
        /// Outputs.
        outputs: usize,
        /// Integer weights.
        weights: Vec<i16>,
        /// Integer biases.
        biases: Vec<i128>,
    },
    /// Reshapes to a vector (neuron order unchanged).
    Flatten,
    /// c0 + c1 x + c2 x^2 + c3 x^3 on every neuron, of degree 1 to 3 (the highest non-zero
    /// coefficient).
    Polynomial {
        /// c0, c1, c2, c3.
        coefficients: [i64; 4],
    },
}

/// A tap of an affine row: input neuron and weight.
pub type Tap = (u32, i64);

impl Layer {
    /// The shape this layer outputs for `input`, checking the layer against it.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, Error> {
        let malformed = |reason| Err(Error::Malformed { reason });
        let shape = match self {
            Layer::Conv2d {
                out_channels,
                window,
                weights,
                biases,
            } => {
                let (h, w) = window.output(input.height, input.width)?;
                let per_output = input.channels * window.kernel[0] * window.kernel[1];
                let per_neuron = out_channels.saturating_mul(h * w);
                if *out_channels == 0
                    || weights.len() != out_channels.saturating_mul(per_output)
                    || (biases.len() != *out_channels && biases.len() != per_neuron)
                {
                    return malformed("convolution weights or biases do not match its shape");
                }
                Shape {
                    channels: *out_channels,
                    height: h,
                    width: w,
                }
            }
            Layer::SumPool { window } => {
                let (h, w) = window.output(input.height, input.width)?;
                Shape {
                    channels: input.channels,
                    height: h,
                    width: w,
                }
            }
            Layer::Dense {
                outputs,
                weights,
                biases,
            } => {
                if *outputs == 0
                    || weights.len() != outputs.saturating_mul(input.len())
                    || biases.len() != *outputs
                {
                    return malformed("dense weights or biases do not match its shape");
                }
                Shape::vector(*outputs)
            }
            Layer::Flatten => Shape::vector(input.len()),
            Layer::Polynomial { coefficients } => {
                if coefficients[1..].iter().all(|&c| c == 0) {
                    return malformed("an activation polynomial has degree 1 to 3");
                }
                input
            }
        };
        if shape.is_empty() || shape.len() > MAX_NEURONS {
            return malformed("a layer's output is empty or has too many neurons");
        }
        Ok(shape)
    }

    /// Whether the layer is an affine map of its input (convolution, pooling, dense).
    pub fn is_affine(&self) -> bool {
        matches!(
            self,
            Layer::Conv2d { .. } | Layer::SumPool { .. } | Layer::Dense { .. }
        )
    }

    /// The polynomial's degree (1 to 3) for an activation, 1 for every other layer.
    pub fn degree(&self) -> u32 {
        match self {
            Layer::Polynomial { coefficients } => {
                (1..4).rev().find(|&d| coefficients[d] != 0).unwrap_or(1) as u32
            }
            _ => 1,
        }
    }

    /// Calls `row(output, taps, bias)` for every output neuron of an affine layer on
    /// `input` (a shape [`Layer::output_shape`] accepted), in output order; `taps` lists the
    /// input neurons and weights of the row (taps in the padding are left out). Does nothing
    /// for flatten and activations.
    pub fn for_each_row<E>(
        &self,
        input: Shape,
        mut row: impl FnMut(usize, &[Tap], i128) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut taps: Vec<Tap> = Vec::new();
        match self {
            Layer::Conv2d {
                out_channels,
                window,
                weights,
                biases,
            } => {
                let [kh, kw] = window.kernel;
                let per_neuron = biases.len() != *out_channels;
                window.for_each_window(
                    input,
                    *out_channels,
                    |_| 0..input.channels,
                    |o, oc, window_taps| {
                        taps.clear();
                        taps.extend(window_taps.iter().map(|t| {
                            let w = weights
                                [((oc * input.channels + t.channel) * kh + t.ky) * kw + t.kx];
                            (t.neuron, w as i64)
                        }));
                        row(o, &taps, biases[if per_neuron { o } else { oc }])
                    },
                )?;
            }
            Layer::SumPool { window } => {
                window.for_each_window(
                    input,
                    input.channels,
                    |c| c..c + 1,
                    |o, _, window_taps| {
                        taps.clear();
                        taps.extend(window_taps.iter().map(|t| (t.neuron, 1)));
                        row(o, &taps, 0)
                    },
                )?;
            }
            Layer::Dense {
                outputs,
                weights,
                biases,
            } => {
                let inputs = input.len();
                for o in 0..*outputs {
                    taps.clear();
                    let w = &weights[o * inputs..(o + 1) * inputs];
                    taps.extend(
                        w.iter()
                            .enumerate()
                            .filter(|&(_, &w)| w != 0)
                            .map(|(i, &w)| (i as u32, w as i64)),
                    );
                    row(o, &taps, biases[o])?;
                }
            }
            Layer::Flatten | Layer::Polynomial { .. } => {}
        }
        Ok(())
    }

    fn weight_count(&self) -> usize {
        match self {
            Layer::Conv2d { weights, .. } | Layer::Dense { weights, .. } => weights.len(),
            _ => 0,
        }
    }
}

/// A validated polynomial network: shapes checked layer by layer, worst-case bounds of every
/// layer computed and within [`MAX_BOUND_BITS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolynomialNetwork {
    input: Shape,
    input_levels: u16,
    layers: Vec<Layer>,
    /// Output shape of each layer.
    shapes: Vec<Shape>,
    bounds: Vec<LayerBounds>,
    float_accuracy: u16,
    integer_accuracy: u16,
}

impl PolynomialNetwork {
    /// Validates a network: input shape and quantization, every layer against its input,
    /// the limits, and the worst-case bounds of every layer over all inputs.
    pub fn new(input: Shape, input_levels: u16, layers: Vec<Layer>) -> Result<Self, Error> {
        let malformed = |reason| Err(Error::Malformed { reason });
        if input.is_empty() || input.len() > MAX_NEURONS {
            return malformed("input shape empty or too large");
        }
        if input_levels == 0 || input_levels > 255 {
            return malformed("input levels must be 1 to 255");
        }
        if layers.is_empty() || layers.len() > MAX_LAYERS {
            return malformed("a network has 1 to 32 layers");
        }
        let weights = layers
            .iter()
            .try_fold(0usize, |acc, l| acc.checked_add(l.weight_count()));
        if weights.is_none_or(|w| w > MAX_WEIGHTS) {
            return malformed("too many weights");
        }
        let mut shapes = Vec::with_capacity(layers.len());
        let mut shape = input;
        for layer in &layers {
            shape = layer.output_shape(shape)?;
            shapes.push(shape);
        }
        if shape.len() > MAX_OUTPUTS || shape.height != 1 || shape.width != 1 {
            return malformed("the last layer must output a vector of at most 1024 classes");
        }
        let bounds = bounds::propagate(input, input_levels, &layers, &shapes)?;
        Ok(Self {
            input,
            input_levels,
            layers,
            shapes,
            bounds,
            float_accuracy: 0,
            integer_accuracy: 0,
        })
    }

    /// The equivalent network of a version 1 (CryptoNets topology) model: convolution 5 x 5,
    /// stride 2, padding 1 on the top and left; square; dense; square; dense.
    pub fn from_v1(model: &super::Model<'_>) -> Result<Self, Error> {
        use super::{CLASSES, CONV_SIDE, KERNEL};
        let (maps, hidden) = (model.maps(), model.hidden());
        let features = maps * CONV_SIDE * CONV_SIDE;
        let square = Layer::Polynomial {
            coefficients: [0, 0, 1, 0],
        };
        let layers = alloc::vec![
            Layer::Conv2d {
                out_channels: maps,
                window: Window {
                    kernel: [KERNEL, KERNEL],
                    stride: [2, 2],
                    padding: [1, 1, 0, 0],
                },
                weights: (0..maps * KERNEL * KERNEL)
                    .map(|i| model.conv_weight(i / 25, i % 25) as i16)
                    .collect(),
                biases: (0..maps).map(|m| model.conv_bias(m)).collect(),
            },
            square.clone(),
            Layer::Dense {
                outputs: hidden,
                weights: (0..hidden * features)
                    .map(|i| model.dense1_weight(i / features, i % features) as i16)
                    .collect(),
                biases: (0..hidden).map(|u| model.dense1_bias(u)).collect(),
            },
            square,
            Layer::Dense {
                outputs: CLASSES,
                weights: (0..CLASSES * hidden)
                    .map(|i| model.dense2_weight(i / hidden, i % hidden) as i16)
                    .collect(),
                biases: (0..CLASSES).map(|c| model.dense2_bias(c)).collect(),
            },
        ];
        let input = Shape {
            channels: 1,
            height: super::SIDE,
            width: super::SIDE,
        };
        let mut network = Self::new(input, model.input_levels(), layers)?;
        (network.float_accuracy, network.integer_accuracy) = model.recorded_accuracy();
        Ok(network)
    }

    /// The input shape.
    pub fn input(&self) -> Shape {
        self.input
    }

    /// Pixel p (0..=255) becomes round(p * levels / 255).
    pub fn input_levels(&self) -> u16 {
        self.input_levels
    }

    /// The integer a pixel is quantized to.
    pub fn quantize_pixel(&self, pixel: u8) -> i64 {
        (pixel as i64 * self.input_levels as i64 + 127) / 255
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The output shape of each layer.
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// The input shape of layer `i`.
    pub fn input_shape(&self, i: usize) -> Shape {
        match i {
            0 => self.input,
            _ => self.shapes[i - 1],
        }
    }

    /// Classes (outputs of the last layer).
    pub fn classes(&self) -> usize {
        self.shapes.last().map_or(0, Shape::len)
    }

    /// The worst-case bounds of each layer's outputs.
    pub fn bounds(&self) -> &[LayerBounds] {
        &self.bounds
    }

    /// Signed bits of a plaintext that holds the outputs (the product of the CRT primes
    /// must exceed 2^bits). Intermediate layers may be larger: every layer is a polynomial
    /// over the integers, so computed modulo the product T of the CRT primes the outputs are
    /// right modulo T, and exact when they lie in (-T/2, T/2).
    pub fn plaintext_bits(&self) -> u32 {
        self.bounds.last().map_or(1, |b| b.bits + 1)
    }

    /// Float and integer test accuracy recorded at training, in 1/10000.
    pub fn recorded_accuracy(&self) -> (u16, u16) {
        (self.float_accuracy, self.integer_accuracy)
    }

    /// Records the accuracies measured at training.
    pub fn set_recorded_accuracy(&mut self, float: u16, integer: u16) {
        (self.float_accuracy, self.integer_accuracy) = (float, integer);
    }
}

#[cfg(test)]
pub(crate) mod tests;
