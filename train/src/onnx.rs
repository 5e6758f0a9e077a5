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

mod attributes;
mod elementwise;
mod layers;
mod shapes;
mod symbolic;
mod tensor;

use attributes::*;

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

/// An input normalization the graph does not hold: the model was trained on
/// (x - mean) / std of the pixels x in [0, 1], one value for all channels or one per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct InputNormalization {
    /// Means (1 or C values).
    pub mean: Vec<f64>,
    /// Standard deviations (as many values as `mean`, each finite and non-zero).
    pub std: Vec<f64>,
}

/// Imports the model at `path`, reading external weights from files beside it.
pub fn import_file(path: &Path) -> Result<FloatNetwork, ImportError> {
    import_file_normalized(path, None)
}

/// [`import_file`] for a model trained on normalized inputs that its graph does not
/// normalize: the normalization is folded in as if it were the graph's first operation.
pub fn import_file_normalized(
    path: &Path,
    normalization: Option<&InputNormalization>,
) -> Result<FloatNetwork, ImportError> {
    let bytes = cryptonets_host::files::read_checked(path, MAX_EXTERNAL_BYTES, "ONNX model")
        .map_err(ImportError::Parse)?;
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    import_with(&bytes, Some(dir), normalization)
}

/// Imports a model from bytes (its weights must be inline: external data is refused).
pub fn import(bytes: &[u8]) -> Result<FloatNetwork, ImportError> {
    import_with(bytes, None, None)
}

fn import_with(
    bytes: &[u8],
    dir: Option<PathBuf>,
    normalization: Option<&InputNormalization>,
) -> Result<FloatNetwork, ImportError> {
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
    import_graph(graph, dir, normalization)
}

/// The input's value: z itself, or (z - mean) / std per channel.
fn input_polynomial(
    normalization: Option<&InputNormalization>,
    channels: usize,
) -> Result<ChannelPolynomial, ImportError> {
    let Some(InputNormalization { mean, std }) = normalization else {
        return Ok(ChannelPolynomial::identity());
    };
    if mean.len() != std.len() || !(mean.len() == 1 || mean.len() == channels) {
        return Err(ImportError::Graph(format!(
            "{} means and {} standard deviations for {channels} input channels: give one of each, or one per channel",
            mean.len(),
            std.len()
        )));
    }
    if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !s.is_finite() || *s == 0.0) {
        return Err(ImportError::Graph(
            "input means must be finite and standard deviations finite and non-zero".into(),
        ));
    }
    Ok(ChannelPolynomial::affine(
        std.iter().map(|s| 1.0 / s).collect(),
        mean.iter().zip(std).map(|(m, s)| -m / s).collect(),
    ))
}

fn import_graph(
    graph: &Graph<'_>,
    dir: Option<PathBuf>,
    normalization: Option<&InputNormalization>,
) -> Result<FloatNetwork, ImportError> {
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
            polynomial: input_polynomial(normalization, shape.channels)?,
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
