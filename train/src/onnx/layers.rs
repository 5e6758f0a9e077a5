//! The linear layers: Conv, AveragePool, GlobalAveragePool, ReduceMean and Gemm or MatMul.

use super::*;

impl Importer {
    /// The activation a linear layer reads, prepared: a polynomial of degree 2 or 3 becomes
    /// an activation layer; an affine value folds back into the layer before when it can.
    /// Returns the per-channel affine map (a_c, b_c) still to fold forward into the reader.
    pub(super) fn linear_input(
        &mut self,
        node: &Node<'_>,
    ) -> Result<(Activation, Option<ChannelPolynomial>), ImportError> {
        let x = self.activation(node, 0)?;
        let folded = if x.polynomial.degree() != 1 || x.polynomial.is_identity() {
            self.materialize(node, &x)?;
            true
        } else if self.fold_back(node, &x)? {
            self.generation += 1;
            true
        } else {
            false
        };
        if folded {
            let base = Activation {
                generation: self.generation,
                dims: x.dims,
                polynomial: ChannelPolynomial::identity(),
            };
            return Ok((base, None));
        }
        Ok((x.clone(), Some(x.polynomial)))
    }

    pub(super) fn conv(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let (x, pending) = self.linear_input(node)?;
        if x.dims.len() != 3 {
            return Err(unsupported(node, "Conv on a tensor that is not C x H x W"));
        }
        let w = self.constant(node, 1)?.clone();
        let bias = self.optional_constant(node, 2)?.cloned();
        if int_attribute(node, "group", 1) != 1 {
            return Err(unsupported(node, "grouped convolutions (group > 1)"));
        }
        let [out, c_in, kh, kw] = w.dims[..] else {
            return Err(unsupported(
                node,
                format!(
                    "weights of dimensions {:?}, expected [out, in, kh, kw]",
                    w.dims
                ),
            ));
        };
        if c_in != x.dims[0] || out == 0 || out > u16::MAX as usize {
            return Err(unsupported(
                node,
                format!("weights {:?} on {} input channels", w.dims, x.dims[0]),
            ));
        }
        if let Some(k) = ints_attribute(node, "kernel_shape")
            && k != [kh as i64, kw as i64]
        {
            return Err(unsupported(node, "kernel_shape differs from the weights"));
        }
        let window = window(node, [kh, kw])?;
        let input = Shape {
            channels: c_in,
            height: x.dims[1],
            width: x.dims[2],
        };
        let (oh, ow) = window
            .output(input.height, input.width)
            .map_err(|e| unsupported(node, e.to_string()))?;
        let mut weights = w.values;
        let mut biases = match bias {
            Some(b) if b.values.len() == out => b.values,
            Some(b) => {
                return Err(unsupported(
                    node,
                    format!("{} biases for {out} maps", b.values.len()),
                ));
            }
            None => vec![0.0; out],
        };
        if let Some(p) = pending {
            // Fold (a_c x + b_c) forward: weights scale per input channel; the offsets reach
            // the taps inside the image only (the padding is zero after the map), so with
            // padding every output neuron gets its own bias.
            let per = kh * kw;
            let mut offsets = vec![0.0; out * per * c_in];
            for (i, wv) in weights.iter_mut().enumerate() {
                let c = (i / per) % c_in;
                let (a, b) = p.as_affine(c);
                offsets[i] = *wv * b;
                *wv *= a;
            }
            let padded =
                window.padding.iter().any(|&p| p > 0) && (0..c_in).any(|c| p.as_affine(c).1 != 0.0);
            let layer = FloatLayer::Conv {
                out_channels: out,
                window,
                weights: offsets,
                biases: vec![0.0; out],
            };
            let shifts = layer.rows(input).expect("a convolution has rows");
            // The offset rows applied to an all-ones input: per neuron, the sum over its taps.
            let per_neuron: Vec<f64> = shifts
                .iter()
                .map(|(taps, _)| taps.iter().map(|t| t.1).sum())
                .collect();
            biases = if padded {
                (0..out * oh * ow)
                    .map(|n| biases[n / (oh * ow)] + per_neuron[n])
                    .collect()
            } else {
                (0..out)
                    .map(|o| biases[o] + per_neuron[o * oh * ow])
                    .collect()
            };
        }
        self.push(
            node,
            FloatLayer::Conv {
                out_channels: out,
                window,
                weights,
                biases,
            },
        )?;
        self.set_activation(node, vec![out, oh, ow], ChannelPolynomial::identity())
    }

    pub(super) fn pool(
        &mut self,
        node: &Node<'_>,
        window: Window,
        count_include_pad: bool,
        keep_dims: bool,
    ) -> Result<(), ImportError> {
        let x = self.activation(node, 0)?;
        if x.dims.len() != 3 {
            return Err(unsupported(
                node,
                "pooling on a tensor that is not C x H x W",
            ));
        }
        // Pooling commutes with a per-channel scale; with an offset only where the divisor
        // is the count of cells the window covers.
        let p = &x.polynomial;
        let commutes = p.degree() == 1
            && (count_include_pad
                || window.padding.iter().all(|&v| v == 0)
                || (0..p.channels()).all(|c| p.as_affine(c).1 == 0.0));
        let pending = if commutes && !p.is_identity() {
            if self.fold_back(node, &x)? {
                self.generation += 1;
                ChannelPolynomial::identity()
            } else {
                p.clone()
            }
        } else {
            self.materialize(node, &x)?;
            ChannelPolynomial::identity()
        };
        let (oh, ow) = window
            .output(x.dims[1], x.dims[2])
            .map_err(|e| unsupported(node, e.to_string()))?;
        self.push(
            node,
            FloatLayer::AvgPool {
                window,
                count_include_pad,
            },
        )?;
        let dims = if keep_dims {
            vec![x.dims[0], oh, ow]
        } else {
            vec![x.dims[0]]
        };
        if !keep_dims {
            self.push(node, FloatLayer::Flatten)?;
        }
        self.set_activation(node, dims, pending)
    }

    pub(super) fn average_pool(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let kernel = window_ints(node, "kernel_shape", 2, 0)?;
        let window = window(node, [kernel[0], kernel[1]])?;
        let count_include_pad = int_attribute(node, "count_include_pad", 0) != 0;
        if int_attribute(node, "ceil_mode", 0) != 0 {
            // Ceil mode changes the output only when the last window starts inside the input
            // but runs past the padding; refused rather than guessed.
            let x = self.activation(node, 0)?;
            if x.dims.len() == 3 {
                let fits = (0..2).all(|i| {
                    let padded = x.dims[1 + i] + window.padding[i] + window.padding[i + 2];
                    window.stride[i] > 0
                        && padded >= window.kernel[i]
                        && (padded - window.kernel[i]) % window.stride[i] == 0
                });
                if !fits {
                    return Err(unsupported(
                        node,
                        "AveragePool with ceil_mode where it changes the output",
                    ));
                }
            }
        }
        self.pool(node, window, count_include_pad, true)
    }

    pub(super) fn global_pool(
        &mut self,
        node: &Node<'_>,
        keep_dims: bool,
    ) -> Result<(), ImportError> {
        let x = self.activation(node, 0)?;
        let [_, h, w] = x.dims[..] else {
            return Err(unsupported(
                node,
                "global pooling on a tensor that is not C x H x W",
            ));
        };
        let window = Window {
            kernel: [h, w],
            stride: [1, 1],
            padding: [0; 4],
        };
        self.pool(node, window, true, keep_dims)
    }

    pub(super) fn reduce_mean(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let axes = match ints_attribute(node, "axes") {
            Some(a) => a,
            None => self
                .optional_constant(node, 1)?
                .and_then(Tensor::integers)
                .unwrap_or_default(),
        };
        let mut axes: Vec<i64> = axes
            .into_iter()
            .map(|a| if a < 0 { a + 4 } else { a })
            .collect();
        axes.sort_unstable();
        if axes != [2, 3] {
            return Err(unsupported(
                node,
                format!("ReduceMean over axes {axes:?}: the spatial axes [2, 3] are taken"),
            ));
        }
        let keep = int_attribute(node, "keepdims", 1) != 0;
        self.global_pool(node, keep)
    }

    pub(super) fn dense(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let (x, pending) = self.linear_input(node)?;
        if x.dims.len() != 1 {
            return Err(unsupported(
                node,
                format!(
                    "a dense layer on an activation of {:?}: flatten first",
                    x.dims
                ),
            ));
        }
        let inputs = x.dims[0];
        let w = self.constant(node, 1)?.clone();
        let gemm = node.op_type == OpType::Gemm;
        let (alpha, beta) = if gemm {
            (
                float_attribute(node, "alpha", 1.0),
                float_attribute(node, "beta", 1.0),
            )
        } else {
            (1.0, 1.0)
        };
        if gemm && int_attribute(node, "transA", 0) != 0 {
            return Err(unsupported(node, "Gemm with transA"));
        }
        // Stored as [outputs][inputs] when transposed (PyTorch's Linear), else [inputs][outputs].
        let transposed = gemm && int_attribute(node, "transB", 0) != 0;
        let (outputs, ok) = match (transposed, &w.dims[..]) {
            (true, [o, i]) => (*o, *i == inputs),
            (false, [i, o]) => (*o, *i == inputs),
            _ => (0, false),
        };
        if !ok || outputs == 0 {
            return Err(unsupported(
                node,
                format!("weights of dimensions {:?} on {inputs} inputs", w.dims),
            ));
        }
        let mut weights = vec![0.0; outputs * inputs];
        for o in 0..outputs {
            for i in 0..inputs {
                let v = if transposed {
                    w.values[o * inputs + i]
                } else {
                    w.values[i * outputs + o]
                };
                weights[o * inputs + i] = alpha * v;
            }
        }
        let mut biases = match self.optional_constant(node, 2)? {
            Some(b) if gemm && (b.values.len() == outputs || b.values.len() == 1) => (0..outputs)
                .map(|o| beta * b.values[if b.values.len() == 1 { 0 } else { o }])
                .collect(),
            Some(_) if gemm => {
                return Err(unsupported(node, "Gemm bias does not match the outputs"));
            }
            _ => vec![0.0; outputs],
        };
        if let Some(p) = pending {
            for o in 0..outputs {
                for i in 0..inputs {
                    let (a, b) = p.as_affine(i);
                    biases[o] += weights[o * inputs + i] * b;
                    weights[o * inputs + i] *= a;
                }
            }
        }
        self.push(
            node,
            FloatLayer::Dense {
                outputs,
                weights,
                biases,
            },
        )?;
        self.set_activation(node, vec![outputs], ChannelPolynomial::identity())
    }
}
