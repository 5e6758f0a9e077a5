//! Import of float polynomial CNNs from ONNX, as PyTorch 2.x writes them (the default
//! dynamo exporter, weights in `model.onnx.data` beside the model, and `dynamo=False`,
//! weights inline; opsets 13 to 20).
//!
//! The graph is walked in its (topological) node order as a chain: at every point one
//! tensor z is what the last layer output (at first, the input), and every activation value
//! of the graph is a polynomial of z applied neuron by neuron ([`ChannelPolynomial`]), so
//! that elementwise arithmetic with constants (input normalization, batch normalization,
//! `a x^2 + b x + c`, `Pow`) composes exactly. A layer that reads a value folds an affine
//! value into the layer before it (batch normalization after a convolution) or into itself
//! (normalization before a convolution: a bias per output neuron where the convolution pads),
//! and turns a polynomial of degree 2 or 3 into an activation layer. Shape arithmetic on
//! constants (Shape, Gather, Unsqueeze, Concat, Cast...) is evaluated.
//!
//! Taken: Conv (groups 1, any kernel, stride, pads), BatchNormalization, AveragePool (any
//! kernel, stride, pads, `count_include_pad` either way), GlobalAveragePool, ReduceMean over
//! the spatial axes, Flatten, Reshape, Gemm, MatMul, Add, Sub, Mul, Div, Neg, Pow (exponent 1
//! to 3), Constant, Identity, Dropout, Cast, Shape, Gather, Unsqueeze, Squeeze, Concat.
//! Every other operator is refused with an error that names the node and says what to use.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use cryptonets_core::model::polynomial::{MAX_LAYERS, MAX_NEURONS, Shape, Window};
use onnx_rs::ast::{Attribute, Dimension, Graph, Node, OpType, TypeValue};

use crate::float_network::{FloatLayer, FloatNetwork};

mod symbolic;
mod tensor;

pub use symbolic::ChannelPolynomial;
pub use tensor::{MAX_EXTERNAL_BYTES, Tensor};

/// The most nodes of a graph.
pub const MAX_NODES: usize = 10_000;

/// Why an ONNX file could not be imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportError {
    /// Not a parsable ONNX protobuf.
    Parse(String),
    /// The model has no graph.
    NoGraph,
    /// An operator outside the supported family.
    UnsupportedOperator {
        node: String,
        op: String,
        instead: &'static str,
    },
    /// A supported operator used in a way the model format cannot take.
    Unsupported { node: String, reason: String },
    /// A constant that is missing or not of the expected shape.
    BadTensor { name: String, reason: String },
    /// The graph as a whole (input, output, size).
    Graph(String),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse(e) => write!(f, "not a valid ONNX file: {e}"),
            Self::NoGraph => write!(f, "the ONNX model has no graph"),
            Self::UnsupportedOperator { node, op, instead } => {
                write!(
                    f,
                    "unsupported ONNX operator {op} (node '{node}'): {instead}"
                )
            }
            Self::Unsupported { node, reason } => write!(f, "node '{node}': {reason}"),
            Self::BadTensor { name, reason } => write!(f, "tensor '{name}': {reason}"),
            Self::Graph(reason) => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for ImportError {}

/// What to use instead of an operator the model format cannot hold.
fn instead(op: &OpType) -> &'static str {
    match op.to_string().as_str() {
        "Relu" | "LeakyRelu" | "PRelu" | "Elu" | "Selu" | "Gelu" | "Sigmoid" | "Tanh"
        | "Softplus" | "HardSigmoid" | "HardSwish" | "Clip" => {
            "encrypted networks take polynomial activations only: use x * x, or a x^2 + b x + c \
             (for example a polynomial fit of this activation, trained in its place)"
        }
        "MaxPool" | "GlobalMaxPool" => "use AvgPool2d (mean pooling is linear; max is not)",
        "Softmax" | "LogSoftmax" => {
            "remove it before exporting: the predicted class is the argmax of the logits, which \
             it does not change"
        }
        _ => {
            "the model format takes Conv, BatchNorm, AvgPool, Linear, Flatten and polynomial \
             activations (see `train/src/onnx.rs`)"
        }
    }
}

/// A value of the graph.
#[derive(Clone, Debug)]
enum Value {
    Constant(Tensor),
    Activation(Activation),
}

/// A value computed from the base: its ONNX dimensions without the batch ([C, H, W] or
/// [F]) and the polynomial of the base it is.
#[derive(Clone, Debug)]
struct Activation {
    generation: usize,
    dims: Vec<usize>,
    polynomial: ChannelPolynomial,
}

/// The walk: the layers so far and the graph's values.
struct Importer {
    external: tensor::External,
    values: HashMap<String, Value>,
    input: Shape,
    layers: Vec<FloatLayer>,
    /// The shape the last layer outputs (the base).
    base: Shape,
    /// Bumped whenever the base changes: older activations cannot be read any more.
    generation: usize,
}

/// Imports the model at `path`, reading external weights from files beside it.
pub fn import_file(path: &Path) -> Result<FloatNetwork, ImportError> {
    let bytes = cryptonets_host::files::read_checked(path, MAX_EXTERNAL_BYTES, "ONNX model")
        .map_err(ImportError::Parse)?;
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    import_with(&bytes, Some(dir))
}

/// Imports a model from bytes (its weights must be inline).
#[cfg(test)]
pub fn import(bytes: &[u8]) -> Result<FloatNetwork, ImportError> {
    import_with(bytes, None)
}

fn import_with(bytes: &[u8], dir: Option<PathBuf>) -> Result<FloatNetwork, ImportError> {
    let model = onnx_rs::parse(bytes).map_err(|e| ImportError::Parse(e.to_string()))?;
    let graph = model.graph.as_ref().ok_or(ImportError::NoGraph)?;
    if let Some(op) = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        && !(7..=22).contains(&op.version)
    {
        return Err(ImportError::Graph(format!(
            "opset {} is not supported (13 to 20 are tested)",
            op.version
        )));
    }
    import_graph(graph, dir)
}

fn import_graph(graph: &Graph<'_>, dir: Option<PathBuf>) -> Result<FloatNetwork, ImportError> {
    if graph.node.len() > MAX_NODES {
        return Err(ImportError::Graph(format!(
            "{} nodes: at most {MAX_NODES} are taken",
            graph.node.len()
        )));
    }
    let mut external = tensor::External::new(dir);
    let mut values = HashMap::new();
    for t in &graph.initializer {
        let tensor = external
            .decode(t)
            .map_err(|reason| ImportError::BadTensor {
                name: t.name().to_string(),
                reason,
            })?;
        values.insert(t.name().to_string(), Value::Constant(tensor));
    }
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !values.contains_key(i.name))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(ImportError::Graph(format!(
            "the graph has {} inputs besides its weights: one image input is taken",
            inputs.len()
        )));
    };
    let dims = declared_dims(input)?;
    let (shape, act_dims) = match dims.as_slice() {
        [_, c, h, w] => (
            Shape {
                channels: *c,
                height: *h,
                width: *w,
            },
            vec![*c, *h, *w],
        ),
        [_, f] => (Shape::vector(*f), vec![*f]),
        _ => {
            return Err(ImportError::Graph(format!(
                "input '{}' has dimensions {dims:?}: [N, C, H, W] or [N, F] is taken",
                input.name
            )));
        }
    };
    if shape.is_empty() || shape.len() > MAX_NEURONS || shape.channels > u16::MAX as usize {
        return Err(ImportError::Graph(format!(
            "input shape {dims:?} out of range"
        )));
    }
    values.insert(
        input.name.to_string(),
        Value::Activation(Activation {
            generation: 0,
            dims: act_dims,
            polynomial: ChannelPolynomial::identity(),
        }),
    );
    let mut importer = Importer {
        external,
        values,
        input: shape,
        layers: Vec::new(),
        base: shape,
        generation: 0,
    };
    for node in &graph.node {
        importer.node(node)?;
        if importer.layers.len() > MAX_LAYERS {
            return Err(unsupported(node, format!("more than {MAX_LAYERS} layers")));
        }
    }
    let output = match graph.output.as_slice() {
        [output] => output.name,
        _ => {
            return Err(ImportError::Graph(format!(
                "the graph has {} outputs: one (the logits) is taken",
                graph.output.len()
            )));
        }
    };
    importer.finish(output)
}

/// An input's declared dimensions, the batch (symbolic or not) first.
fn declared_dims(input: &onnx_rs::ast::ValueInfo<'_>) -> Result<Vec<usize>, ImportError> {
    let undeclared = || {
        ImportError::Graph(format!(
            "input '{}' does not declare its shape (export with an example input)",
            input.name
        ))
    };
    let Some(TypeValue::Tensor(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(undeclared());
    };
    let shape = tensor.shape.as_ref().ok_or_else(undeclared)?;
    shape
        .dim
        .iter()
        .enumerate()
        .map(|(i, d)| match d.value {
            Dimension::Value(v) if v > 0 => Ok(v as usize),
            Dimension::Param(_) if i == 0 => Ok(1),
            _ => Err(ImportError::Graph(format!(
                "input '{}': dimension {i} is not a positive number",
                input.name
            ))),
        })
        .collect()
}

fn unsupported(node: &Node<'_>, reason: impl Into<String>) -> ImportError {
    ImportError::Unsupported {
        node: node_name(node),
        reason: reason.into(),
    }
}

fn node_name(node: &Node<'_>) -> String {
    if node.name.is_empty() {
        format!("{} -> {}", node.op_type, node.output.join(", "))
    } else {
        node.name.to_string()
    }
}

fn attribute<'n>(node: &'n Node<'_>, name: &str) -> Option<&'n Attribute<'n>> {
    node.attribute.iter().find(|a| a.name == name)
}

fn int_attribute(node: &Node<'_>, name: &str, default: i64) -> i64 {
    attribute(node, name).map_or(default, |a| a.i)
}

fn ints_attribute(node: &Node<'_>, name: &str) -> Option<Vec<i64>> {
    attribute(node, name).map(|a| a.ints.clone())
}

fn float_attribute(node: &Node<'_>, name: &str, default: f64) -> f64 {
    attribute(node, name).map_or(default, |a| a.f as f64)
}

/// A small non-negative integer attribute list of `len` entries (`default` if absent).
fn window_ints(
    node: &Node<'_>,
    name: &str,
    len: usize,
    default: usize,
) -> Result<Vec<usize>, ImportError> {
    match ints_attribute(node, name) {
        None => Ok(vec![default; len]),
        Some(v) if v.len() == len && v.iter().all(|&x| (0..=4096).contains(&x)) => {
            Ok(v.into_iter().map(|x| x as usize).collect())
        }
        Some(v) => Err(unsupported(
            node,
            format!("{name} {v:?}: {len} small non-negative values are taken"),
        )),
    }
}

fn auto_pad_ok(node: &Node<'_>) -> Result<(), ImportError> {
    match attribute(node, "auto_pad").map_or(&b"NOTSET"[..], |a| a.s) {
        b"" | b"NOTSET" | b"VALID" => Ok(()),
        other => Err(unsupported(
            node,
            format!(
                "auto_pad {}: give explicit pads",
                String::from_utf8_lossy(other)
            ),
        )),
    }
}

/// Kernel, stride and pads of a Conv or AveragePool node (ONNX pads are [top, left, bottom,
/// right], the order of [`Window::padding`]).
fn window(node: &Node<'_>, kernel: [usize; 2]) -> Result<Window, ImportError> {
    auto_pad_ok(node)?;
    let strides = window_ints(node, "strides", 2, 1)?;
    let pads = window_ints(node, "pads", 4, 0)?;
    if window_ints(node, "dilations", 2, 1)? != [1, 1] {
        return Err(unsupported(node, "dilations other than 1"));
    }
    Ok(Window {
        kernel,
        stride: [strides[0], strides[1]],
        padding: [pads[0], pads[1], pads[2], pads[3]],
    })
}

impl Importer {
    fn constant(&self, node: &Node<'_>, index: usize) -> Result<&Tensor, ImportError> {
        match node.input.get(index).and_then(|n| self.values.get(*n)) {
            Some(Value::Constant(t)) => Ok(t),
            Some(Value::Activation(_)) => Err(unsupported(
                node,
                format!("input {index} must be a constant (weights stored in the file)"),
            )),
            None => Err(unsupported(
                node,
                format!("input {index} is missing or unknown"),
            )),
        }
    }

    fn optional_constant(
        &self,
        node: &Node<'_>,
        index: usize,
    ) -> Result<Option<&Tensor>, ImportError> {
        match node.input.get(index) {
            Some(name) if !name.is_empty() => self.constant(node, index).map(Some),
            _ => Ok(None),
        }
    }

    /// Input `index` as an activation of the current base.
    fn activation(&self, node: &Node<'_>, index: usize) -> Result<Activation, ImportError> {
        match node.input.get(index).and_then(|n| self.values.get(*n)) {
            Some(Value::Activation(a)) if a.generation == self.generation => Ok(a.clone()),
            Some(Value::Activation(_)) => Err(unsupported(
                node,
                "reads a value from before the last layer: the network must be a chain \
                 (no skip connections)",
            )),
            Some(Value::Constant(_)) => Err(unsupported(
                node,
                format!("input {index} is a constant where an activation is expected"),
            )),
            None => Err(unsupported(
                node,
                format!("input {index} is missing or unknown"),
            )),
        }
    }

    fn set(&mut self, node: &Node<'_>, value: Value) -> Result<(), ImportError> {
        let name = node
            .output
            .first()
            .ok_or_else(|| unsupported(node, "no output"))?;
        self.values.insert(name.to_string(), value);
        Ok(())
    }

    fn set_activation(
        &mut self,
        node: &Node<'_>,
        dims: Vec<usize>,
        polynomial: ChannelPolynomial,
    ) -> Result<(), ImportError> {
        let generation = self.generation;
        self.set(
            node,
            Value::Activation(Activation {
                generation,
                dims,
                polynomial,
            }),
        )
    }

    /// A new layer: the base is its output, older values are out of reach.
    fn push(&mut self, node: &Node<'_>, layer: FloatLayer) -> Result<(), ImportError> {
        self.base = layer
            .output_shape(self.base)
            .map_err(|e| unsupported(node, e))?;
        if self.base.len() > MAX_NEURONS {
            return Err(unsupported(node, "the layer's output has too many neurons"));
        }
        self.layers.push(layer);
        self.generation += 1;
        Ok(())
    }

    fn node(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        use OpType as Op;
        match &node.op_type {
            Op::Constant => self.constant_node(node),
            Op::Identity | Op::Dropout => {
                let value = node
                    .input
                    .first()
                    .and_then(|n| self.values.get(*n))
                    .cloned()
                    .ok_or_else(|| unsupported(node, "input missing or unknown"))?;
                self.set(node, value)
            }
            Op::Cast => self.cast(node),
            Op::Shape => self.shape(node),
            Op::Gather => self.gather(node),
            Op::Unsqueeze | Op::Squeeze => self.unsqueeze(node),
            Op::Concat => self.concat(node),
            Op::Add | Op::Sub | Op::Mul | Op::Div => self.arithmetic(node),
            Op::Neg => {
                let a = self.activation(node, 0)?;
                let p = a
                    .polynomial
                    .scale_shift(&[-1.0], &[0.0])
                    .map_err(|e| unsupported(node, e))?;
                self.set_activation(node, a.dims, p)
            }
            Op::Pow => self.pow(node),
            Op::BatchNormalization => self.batch_norm(node),
            Op::Conv => self.conv(node),
            Op::AveragePool => self.average_pool(node),
            Op::GlobalAveragePool => self.global_pool(node, true),
            Op::ReduceMean => self.reduce_mean(node),
            Op::Flatten => self.flatten(node),
            Op::Reshape => self.reshape(node),
            Op::Gemm | Op::MatMul => self.dense(node),
            other => Err(ImportError::UnsupportedOperator {
                node: node_name(node),
                op: other.to_string(),
                instead: instead(other),
            }),
        }
    }

    fn constant_node(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    fn cast(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    fn shape(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    fn gather(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    fn unsqueeze(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    fn concat(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    /// A constant as per-channel values against an activation of `dims`: one value, or one
    /// per channel (per feature for a vector), broadcast over the batch and the plane.
    fn per_channel(node: &Node<'_>, t: &Tensor, dims: &[usize]) -> Result<Vec<f64>, ImportError> {
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

    fn arithmetic(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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
    fn rebase_for_product(
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
    fn rewrite_live(&mut self, alpha: &[f64], beta: &[f64]) {
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
    fn fold_back(&mut self, node: &Node<'_>, act: &Activation) -> Result<bool, ImportError> {
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
    fn materialize(&mut self, node: &Node<'_>, act: &Activation) -> Result<(), ImportError> {
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

    fn pow(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    fn batch_norm(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    /// The activation a linear layer reads, prepared: a polynomial of degree 2 or 3 becomes
    /// an activation layer; an affine value folds back into the layer before when it can.
    /// Returns the per-channel affine map (a_c, b_c) still to fold forward into the reader.
    fn linear_input(
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

    fn conv(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    fn pool(
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

    fn average_pool(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    fn global_pool(&mut self, node: &Node<'_>, keep_dims: bool) -> Result<(), ImportError> {
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

    fn reduce_mean(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    fn flatten_to(&mut self, node: &Node<'_>, x: Activation) -> Result<(), ImportError> {
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

    fn flatten(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let x = self.activation(node, 0)?;
        if int_attribute(node, "axis", 1) != 1 {
            return Err(unsupported(node, "Flatten with an axis other than 1"));
        }
        self.flatten_to(node, x)
    }

    fn reshape(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    fn dense(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
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

    fn finish(mut self, output: &str) -> Result<FloatNetwork, ImportError> {
        let x = match self.values.get(output) {
            Some(Value::Activation(a)) => a.clone(),
            _ => {
                return Err(ImportError::Graph(format!(
                    "the output '{output}' is not computed from the input"
                )));
            }
        };
        if x.generation != self.generation {
            return Err(ImportError::Graph(
                "the output is not the end of the chain".into(),
            ));
        }
        let end = Node {
            name: "output",
            op_type: OpType::Identity,
            ..Default::default()
        };
        self.materialize(&end, &x)?;
        let network = FloatNetwork {
            input: self.input,
            layers: self.layers,
        };
        network.shapes().map_err(ImportError::Graph)?;
        if !matches!(
            network.layers.last(),
            Some(FloatLayer::Dense { .. } | FloatLayer::Conv { .. })
        ) {
            return Err(ImportError::Graph(
                "the network must end with a linear layer (the logits)".into(),
            ));
        }
        Ok(network)
    }
}

#[cfg(test)]
mod tests;
