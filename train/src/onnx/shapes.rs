//! Shape arithmetic on constants (Constant, Cast, Shape, Gather, Unsqueeze, Squeeze,
//! Concat) and the reshapes of activations (Flatten, Reshape).

use super::*;

impl Importer {
    pub(super) fn constant_node(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let a = node
            .attribute
            .first()
            .ok_or_else(|| unsupported(node, "Constant without a value"))?;
        let tensor = match (a.name, &a.t) {
            ("value", Some(t)) => {
                self.external
                    .decode(t)
                    .map_err(|reason| ImportError::BadTensor {
                        name: node_name(node),
                        reason,
                    })?
            }
            ("value_float", _) => Tensor {
                dims: vec![],
                values: vec![a.f as f64],
            },
            ("value_int", _) => Tensor {
                dims: vec![],
                values: vec![a.i as f64],
            },
            ("value_floats", _) => Tensor::vector(a.floats.iter().map(|&x| x as f64).collect()),
            ("value_ints", _) => Tensor::vector(a.ints.iter().map(|&x| x as f64).collect()),
            (name, _) => return Err(unsupported(node, format!("Constant with attribute {name}"))),
        };
        self.set(node, Value::Constant(tensor))
    }

    pub(super) fn cast(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let to = int_attribute(node, "to", 1);
        match node
            .input
            .first()
            .and_then(|n| self.values.get(*n))
            .cloned()
        {
            Some(Value::Constant(mut t)) => {
                // float 1, double 11, float16 10, bfloat16 16; every other type is an integer
                // or a boolean here.
                match to {
                    1 | 10 | 11 | 16 => {}
                    9 => t
                        .values
                        .iter_mut()
                        .for_each(|v| *v = (*v != 0.0) as u8 as f64),
                    _ => t.values.iter_mut().for_each(|v| *v = v.trunc()),
                }
                self.set(node, Value::Constant(t))
            }
            Some(Value::Activation(a)) if matches!(to, 1 | 11) => {
                self.set(node, Value::Activation(a))
            }
            Some(Value::Activation(_)) => Err(unsupported(
                node,
                "Cast of an activation to a non-float type",
            )),
            None => Err(unsupported(node, "input missing or unknown")),
        }
    }

    pub(super) fn shape(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let dims: Vec<f64> = match node.input.first().and_then(|n| self.values.get(*n)) {
            Some(Value::Activation(a)) => std::iter::once(1.0)
                .chain(a.dims.iter().map(|&d| d as f64))
                .collect(),
            Some(Value::Constant(t)) => t.dims.iter().map(|&d| d as f64).collect(),
            None => return Err(unsupported(node, "input missing or unknown")),
        };
        let rank = dims.len() as i64;
        let clamp = |x: i64| (if x < 0 { x + rank } else { x }).clamp(0, rank) as usize;
        let start = clamp(int_attribute(node, "start", 0));
        let end = clamp(int_attribute(node, "end", rank));
        let dims = dims.get(start..end.max(start)).unwrap_or(&[]).to_vec();
        self.set(node, Value::Constant(Tensor::vector(dims)))
    }

    pub(super) fn gather(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let data = self.constant(node, 0)?.clone();
        let indices = self.constant(node, 1)?.clone();
        if data.dims.len() != 1 || int_attribute(node, "axis", 0) != 0 {
            return Err(unsupported(
                node,
                "Gather is taken on 1-D constants (shapes) only",
            ));
        }
        let n = data.values.len() as i64;
        let picked = indices
            .integers()
            .ok_or_else(|| unsupported(node, "indices are not integers"))?
            .into_iter()
            .map(|i| {
                let i = if i < 0 { i + n } else { i };
                data.values.get(usize::try_from(i).ok()?).copied()
            })
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| unsupported(node, "index out of range"))?;
        self.set(
            node,
            Value::Constant(Tensor {
                dims: indices.dims.clone(),
                values: picked,
            }),
        )
    }

    pub(super) fn unsqueeze(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let t = self.constant(node, 0)?.clone();
        let axes = match ints_attribute(node, "axes") {
            Some(axes) => axes,
            None => match self.optional_constant(node, 1)? {
                Some(a) => a
                    .integers()
                    .ok_or_else(|| unsupported(node, "axes are not integers"))?,
                None => Vec::new(),
            },
        };
        let dims = if node.op_type == OpType::Unsqueeze {
            let rank = (t.dims.len() + axes.len()) as i64;
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&a| (if a < 0 { a + rank } else { a }) as usize)
                .collect();
            axes.sort_unstable();
            let mut dims = t.dims.clone();
            for a in axes {
                if a > dims.len() {
                    return Err(unsupported(node, "axis out of range"));
                }
                dims.insert(a, 1);
            }
            dims
        } else {
            let rank = t.dims.len() as i64;
            let axes: Vec<usize> = axes
                .iter()
                .map(|&a| (if a < 0 { a + rank } else { a }) as usize)
                .collect();
            t.dims
                .iter()
                .enumerate()
                .filter(|&(i, &d)| !(d == 1 && (axes.is_empty() || axes.contains(&i))))
                .map(|(_, &d)| d)
                .collect()
        };
        self.set(
            node,
            Value::Constant(Tensor {
                dims,
                values: t.values,
            }),
        )
    }

    pub(super) fn concat(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let mut values = Vec::new();
        for i in 0..node.input.len() {
            let t = self.constant(node, i)?;
            if t.dims.len() > 1 {
                return Err(unsupported(
                    node,
                    "Concat is taken on 1-D constants (shapes) only",
                ));
            }
            values.extend_from_slice(&t.values);
        }
        self.set(node, Value::Constant(Tensor::vector(values)))
    }

    pub(super) fn flatten_to(&mut self, node: &Node<'_>, x: Activation) -> Result<(), ImportError> {
        let features: usize = x.dims.iter().product();
        let per = features / x.dims[0];
        let polynomial = x
            .polynomial
            .expand(if x.polynomial.channels() == 1 { 1 } else { per });
        if x.dims.len() == 1 {
            return self.set_activation(node, x.dims, polynomial);
        }
        self.push(node, FloatLayer::Flatten)?;
        // The base changed shape only; live values of the old one keep their meaning but
        // not their layout, so only this one moves on.
        self.set_activation(node, vec![features], polynomial)
    }

    pub(super) fn flatten(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let x = self.activation(node, 0)?;
        if int_attribute(node, "axis", 1) != 1 {
            return Err(unsupported(node, "Flatten with an axis other than 1"));
        }
        self.flatten_to(node, x)
    }

    pub(super) fn reshape(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let x = self.activation(node, 0)?;
        let target = self
            .constant(node, 1)?
            .integers()
            .ok_or_else(|| unsupported(node, "shape is not integers"))?;
        let features: usize = x.dims.iter().product();
        let rest = &target[1.min(target.len())..];
        let known: Vec<usize> = rest
            .iter()
            .enumerate()
            .map(|(i, &d)| match d {
                0 => x.dims.get(i).copied().unwrap_or(0),
                -1 => {
                    features
                        / rest
                            .iter()
                            .filter(|&&d| d > 0)
                            .map(|&d| d as usize)
                            .product::<usize>()
                            .max(1)
                }
                d => d.max(0) as usize,
            })
            .collect();
        if known == [features]
            || (target.len() == 2 && target[0] == -1 && target[1] as usize == features)
        {
            self.flatten_to(node, x)
        } else if known == x.dims {
            self.set_activation(node, x.dims.clone(), x.polynomial)
        } else {
            Err(unsupported(
                node,
                format!(
                    "Reshape of {:?} to {target:?}: flattening to [N, features] is taken",
                    x.dims
                ),
            ))
        }
    }
}
