//! Elementwise arithmetic (Add, Sub, Mul, Div, Pow, BatchNormalization): values kept as
//! polynomials of the base, folded into the layer before or turned into activations.

use super::*;

impl Importer {
    /// A constant as per-channel values against an activation of `dims`: one value, or one
    /// per channel (per feature for a vector), broadcast over the batch and the plane.
    pub(super) fn per_channel(
        node: &Node<'_>,
        t: &Tensor,
        dims: &[usize],
    ) -> Result<Vec<f64>, ImportError> {
        if t.values.len() == 1 {
            return Ok(t.values.clone());
        }
        // Right-aligned broadcasting against [N, dims...]: only the channel axis may be > 1.
        let rank = dims.len() + 1;
        if t.dims.len() > rank {
            return Err(unsupported(
                node,
                format!(
                    "constant of dimensions {:?} has more axes than the activation",
                    t.dims
                ),
            ));
        }
        let offset = rank - t.dims.len();
        let varying: Vec<usize> = t
            .dims
            .iter()
            .enumerate()
            .filter(|&(_, &d)| d != 1)
            .map(|(i, _)| i + offset)
            .collect();
        match varying.as_slice() {
            [1] if t.values.len() == dims[0] => Ok(t.values.clone()),
            _ => Err(unsupported(
                node,
                format!(
                    "constant of dimensions {:?} against an activation of {dims:?}: only one \
                     value per channel is taken (not per pixel)",
                    t.dims
                ),
            )),
        }
    }

    pub(super) fn arithmetic(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let get = |i: usize| node.input.get(i).and_then(|n| self.values.get(*n)).cloned();
        let (a, b) = match (get(0), get(1)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(unsupported(node, "input missing or unknown")),
        };
        let op = node.op_type.clone();
        let err = |e: String| unsupported(node, e);
        match (a, b) {
            (Value::Constant(x), Value::Constant(y)) => {
                let f = |u: f64, v: f64| match op {
                    OpType::Add => u + v,
                    OpType::Sub => u - v,
                    OpType::Mul => u * v,
                    _ => u / v,
                };
                let (big, small, swapped) = if x.values.len() >= y.values.len() {
                    (&x, &y, false)
                } else {
                    (&y, &x, true)
                };
                if small.values.len() != 1 && small.values.len() != big.values.len() {
                    return Err(unsupported(
                        node,
                        "arithmetic on constants of different shapes",
                    ));
                }
                let values = big
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, &u)| {
                        let v = small.values[if small.values.len() == 1 { 0 } else { i }];
                        if swapped { f(v, u) } else { f(u, v) }
                    })
                    .collect();
                self.set(
                    node,
                    Value::Constant(Tensor {
                        dims: big.dims.clone(),
                        values,
                    }),
                )
            }
            (Value::Activation(x), Value::Activation(y)) => {
                if x.generation != self.generation || y.generation != self.generation {
                    return Err(unsupported(
                        node,
                        "reads a value from before the last layer: the network must be a chain",
                    ));
                }
                if x.dims != y.dims {
                    return Err(unsupported(node, "activations of different shapes"));
                }
                let (mut p, mut q) = (x.polynomial, y.polynomial);
                if op == OpType::Mul && (p.uniform().is_none() || q.uniform().is_none()) {
                    // A product of per-channel affine values (batch normalization, then a
                    // square): fold the affine map into the layer before, then multiply.
                    (p, q) = self.rebase_for_product(node, &x.dims, &p, &q)?;
                }
                let r = match op {
                    OpType::Add => p.add(&q),
                    OpType::Sub => p.sub(&q),
                    OpType::Mul => p.mul(&q),
                    _ => Err("division by an activation is not a polynomial".into()),
                }
                .map_err(err)?;
                self.set_activation(node, x.dims, r)
            }
            (Value::Activation(x), Value::Constant(c))
            | (Value::Constant(c), Value::Activation(x)) => {
                let constant_first = matches!(get(0), Some(Value::Constant(_)));
                if x.generation != self.generation {
                    return Err(unsupported(
                        node,
                        "reads a value from before the last layer: the network must be a chain",
                    ));
                }
                let k = Self::per_channel(node, &c, &x.dims)?;
                let mut p = x.polynomial.clone();
                if k.len() > 1 && p.degree() > 1 {
                    // Per-channel constants on a polynomial of degree 2 or 3: the polynomial
                    // becomes an activation layer first.
                    self.materialize(node, &x)?;
                    p = ChannelPolynomial::identity();
                }
                let zeros = vec![0.0; k.len()];
                let r = match (op, constant_first) {
                    (OpType::Add, _) => p.scale_shift(&[1.0], &k),
                    (OpType::Sub, false) => {
                        p.scale_shift(&[1.0], &k.iter().map(|v| -v).collect::<Vec<_>>())
                    }
                    (OpType::Sub, true) => p.scale_shift(&[-1.0], &k),
                    (OpType::Mul, _) => p.scale_shift(&k, &zeros),
                    (OpType::Div, false) => {
                        if k.contains(&0.0) {
                            return Err(unsupported(node, "division by zero"));
                        }
                        p.scale_shift(&k.iter().map(|v| 1.0 / v).collect::<Vec<_>>(), &zeros)
                    }
                    _ => Err("a constant divided by an activation is not a polynomial".into()),
                }
                .map_err(err)?;
                let generation = self.generation;
                self.set(
                    node,
                    Value::Activation(Activation {
                        generation,
                        dims: x.dims,
                        polynomial: r,
                    }),
                )
            }
        }
    }

    /// Before multiplying per-channel affine values p and q of the base: folds p's affine
    /// map (q's if p is uniform) into the layer that output the base, and returns p and q
    /// written over the new base.
    pub(super) fn rebase_for_product(
        &mut self,
        node: &Node<'_>,
        dims: &[usize],
        p: &ChannelPolynomial,
        q: &ChannelPolynomial,
    ) -> Result<(ChannelPolynomial, ChannelPolynomial), ImportError> {
        let pivot = if p.uniform().is_none() { p } else { q };
        if pivot.degree() != 1 {
            return Err(unsupported(
                node,
                "a product of per-channel polynomials of degree above 1",
            ));
        }
        let channels = pivot.channels();
        let (a, b): (Vec<f64>, Vec<f64>) = (0..channels).map(|c| pivot.as_affine(c)).unzip();
        if a.contains(&0.0) {
            return Err(unsupported(node, "a channel scaled by zero"));
        }
        let pivot_act = Activation {
            generation: self.generation,
            dims: dims.to_vec(),
            polynomial: pivot.clone(),
        };
        let folded_back = self.fold_back(node, &pivot_act)?;
        // z_old = (z_new - b) / a over the new base.
        let alpha: Vec<f64> = a.iter().map(|a| 1.0 / a).collect();
        let beta: Vec<f64> = a.iter().zip(&b).map(|(a, b)| -b / a).collect();
        let rewrite = |r: &ChannelPolynomial| {
            r.substitute(&alpha, &beta)
                .map_err(|e| unsupported(node, e))
        };
        if folded_back {
            self.rewrite_live(&alpha, &beta);
            // The pivot is the new base itself (exactly, not up to rounding).
            let or_base = |r: &ChannelPolynomial| match r == pivot {
                true => Ok(ChannelPolynomial::identity()),
                false => rewrite(r),
            };
            Ok((or_base(p)?, or_base(q)?))
        } else {
            Err(unsupported(
                node,
                "a per-channel scaling before a product that cannot fold into a layer before it",
            ))
        }
    }

    /// Rewrites every live activation over a base whose layer was just changed to output
    /// a z + b (z_old = alpha z_new + beta).
    pub(super) fn rewrite_live(&mut self, alpha: &[f64], beta: &[f64]) {
        let generation = self.generation;
        for value in self.values.values_mut() {
            if let Value::Activation(a) = value
                && a.generation == generation
            {
                match a.polynomial.substitute(alpha, beta) {
                    Ok(p) => a.polynomial = p,
                    // Not expressible over the new base: out of reach from now on.
                    Err(_) => a.generation = usize::MAX,
                }
            }
        }
    }

    /// Folds a per-channel affine value (a_c z + b_c) into the layer that output z, when that
    /// layer is a convolution or a dense layer (exact: its rows are scaled and shifted).
    /// Returns whether it did.
    pub(super) fn fold_back(
        &mut self,
        node: &Node<'_>,
        act: &Activation,
    ) -> Result<bool, ImportError> {
        let p = &act.polynomial;
        let channels = match self.layers.last() {
            Some(FloatLayer::Conv { out_channels, .. }) if act.dims.len() == 3 => *out_channels,
            Some(FloatLayer::Dense { outputs, .. }) => *outputs,
            _ => return Ok(false),
        };
        if p.channels() != 1 && p.channels() != channels {
            return Err(unsupported(
                node,
                "per-channel constants do not match the channels",
            ));
        }
        match self.layers.last_mut() {
            Some(FloatLayer::Conv {
                out_channels,
                weights,
                biases,
                ..
            }) => {
                let per = weights.len() / *out_channels;
                let plane = biases.len() / *out_channels;
                for o in 0..*out_channels {
                    let (a, b) = p.as_affine(o);
                    weights[o * per..(o + 1) * per]
                        .iter_mut()
                        .for_each(|w| *w *= a);
                    biases[o * plane..(o + 1) * plane]
                        .iter_mut()
                        .for_each(|x| *x = a * *x + b);
                }
            }
            Some(FloatLayer::Dense {
                outputs,
                weights,
                biases,
            }) => {
                let per = weights.len() / *outputs;
                for o in 0..*outputs {
                    let (a, b) = p.as_affine(o);
                    weights[o * per..(o + 1) * per]
                        .iter_mut()
                        .for_each(|w| *w *= a);
                    biases[o] = a * biases[o] + b;
                }
            }
            _ => unreachable!("checked above"),
        }
        Ok(true)
    }

    /// Makes `act` the base itself: folds an affine value back, or adds an activation layer
    /// (degree 2 or 3, the same on every channel) or a per-channel scaling layer.
    pub(super) fn materialize(
        &mut self,
        node: &Node<'_>,
        act: &Activation,
    ) -> Result<(), ImportError> {
        let p = &act.polynomial;
        if p.is_identity() {
            return Ok(());
        }
        match p.degree() {
            0 => Err(unsupported(
                node,
                "a constant where an activation is expected",
            )),
            1 => {
                let channels = p.channels();
                let (a, b): (Vec<f64>, Vec<f64>) = (0..channels).map(|c| p.as_affine(c)).unzip();
                if self.fold_back(node, act)? {
                    let generation = self.generation;
                    let is_base: Vec<String> = self
                        .values
                        .iter()
                        .filter(|(_, v)| matches!(v, Value::Activation(live) if live.generation == generation && live.polynomial == *p))
                        .map(|(k, _)| k.clone())
                        .collect();
                    if !a.contains(&0.0) {
                        let alpha: Vec<f64> = a.iter().map(|a| 1.0 / a).collect();
                        let beta: Vec<f64> = a.iter().zip(&b).map(|(a, b)| -b / a).collect();
                        self.rewrite_live(&alpha, &beta);
                    } else {
                        self.generation += 1;
                    }
                    // Those values are the new base itself (exactly, not up to rounding).
                    for name in is_base {
                        if let Some(Value::Activation(live)) = self.values.get_mut(&name) {
                            live.polynomial = ChannelPolynomial::identity();
                        }
                    }
                    return Ok(());
                }
                if let (Some(c), Some(FloatLayer::Polynomial { coefficients })) =
                    (p.uniform(), self.layers.last_mut())
                {
                    // a q(x) + b is still a polynomial of the activation layer's input.
                    coefficients.iter_mut().for_each(|k| *k *= c[1]);
                    coefficients[0] += c[0];
                    self.generation += 1;
                    return Ok(());
                }
                // A per-channel scaling layer: a 1 x 1 convolution or a diagonal dense layer.
                let base = self.base;
                let layer = if act.dims.len() == 3 {
                    let c = base.channels;
                    let mut weights = vec![0.0; c * c];
                    (0..c).for_each(|i| weights[i * c + i] = p.coefficient(1, i));
                    FloatLayer::Conv {
                        out_channels: c,
                        window: Window {
                            kernel: [1, 1],
                            stride: [1, 1],
                            padding: [0; 4],
                        },
                        weights,
                        biases: (0..c).map(|i| p.coefficient(0, i)).collect(),
                    }
                } else {
                    let f = base.len();
                    if f.saturating_mul(f) > cryptonets_core::model::polynomial::MAX_WEIGHTS {
                        return Err(unsupported(
                            node,
                            "a per-feature scaling of too many features to hold as a layer",
                        ));
                    }
                    let mut weights = vec![0.0; f * f];
                    (0..f).for_each(|i| weights[i * f + i] = p.coefficient(1, i));
                    FloatLayer::Dense {
                        outputs: f,
                        weights,
                        biases: (0..f).map(|i| p.coefficient(0, i)).collect(),
                    }
                };
                self.push(node, layer)
            }
            _ => {
                let coefficients = p.uniform().ok_or_else(|| {
                    unsupported(
                        node,
                        "an activation polynomial that differs between channels",
                    )
                })?;
                self.push(node, FloatLayer::Polynomial { coefficients })
            }
        }
    }

    pub(super) fn pow(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let x = self.activation(node, 0)?;
        let e = self
            .constant(node, 1)?
            .scalar()
            .filter(|e| [1.0, 2.0, 3.0].contains(e))
            .ok_or_else(|| unsupported(node, "Pow with an exponent other than 1, 2 or 3"))?;
        let mut p = x.polynomial.clone();
        let mut q = p.clone();
        if e > 1.0 && p.uniform().is_none() {
            (p, q) = self.rebase_for_product(node, &x.dims, &p, &q)?;
        }
        let mut r = p.clone();
        for _ in 1..e as usize {
            r = r.mul(&q).map_err(|e| unsupported(node, e))?;
        }
        self.set_activation(node, x.dims, r)
    }

    pub(super) fn batch_norm(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        if int_attribute(node, "training_mode", 0) != 0 {
            return Err(unsupported(
                node,
                "BatchNormalization in training mode: export in eval mode",
            ));
        }
        let x = self.activation(node, 0)?;
        let channels = x.dims[0];
        let get = |i: usize| -> Result<Vec<f64>, ImportError> {
            let t = self.constant(node, i)?;
            if t.values.len() != channels {
                return Err(unsupported(
                    node,
                    format!("{} statistics for {channels} channels", t.values.len()),
                ));
            }
            Ok(t.values.clone())
        };
        let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
        let eps = float_attribute(node, "epsilon", 1e-5);
        let scale: Vec<f64> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + eps).sqrt())
            .collect();
        let shift: Vec<f64> = (0..channels)
            .map(|c| beta[c] - mean[c] * scale[c])
            .collect();
        if scale.iter().chain(&shift).any(|v| !v.is_finite()) {
            return Err(unsupported(node, "statistics that are not finite"));
        }
        let mut p = x.polynomial.clone();
        if p.degree() > 1 {
            self.materialize(node, &x)?;
            p = ChannelPolynomial::identity();
        }
        let r = p
            .scale_shift(&scale, &shift)
            .map_err(|e| unsupported(node, e))?;
        self.set_activation(node, x.dims, r)
    }
}
