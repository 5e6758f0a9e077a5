//! Import of a float CryptoNets network from ONNX (for example one trained in PyTorch).
//!
//! The graph must compute, on a [N, 1, 28, 28] input of pixels scaled to [0, 1]:
//! Conv(5 maps, 5x5, stride 2, pads 1 before) -> square -> [AveragePool] -> Flatten ->
//! dense 100 -> square -> dense 10, where
//! - a square is `Mul(x, x)` or `Pow(x, 2)`;
//! - a dense layer is `Gemm` (with `alpha`, `beta`, `transB`), or `MatMul` then `Add`;
//! - a bias may also come as an `Add` after `Conv`;
//! - `Flatten`, `Reshape` (to a flat row), `Identity` and `Dropout` pass values through;
//! - `Constant` nodes (a tensor `value`) stand for initializers, as PyTorch writes the
//!   exponent of `Pow` and the shape of `Reshape`;
//! - mean pooling is folded into the first dense layer, as CryptoNets does.
//!
//! Every other operator, shape or attribute is refused with an error that names it.
//!
//! Weights may live in an external data file, as PyTorch's default (dynamo) exporter writes
//! them (`model.onnx` + `model.onnx.data`): [`import_file`] resolves each tensor's
//! `location` beside the model, refusing locations that leave its directory, files that are
//! not regular or larger than [`MAX_EXTERNAL_BYTES`], and ranges outside the file.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use onnx_rs::ast::{
    Attribute, DataLocation, DataType, Dimension, Graph, Node, OpType, TensorProto, TypeValue,
    ValueInfo,
};

use crate::quantize::FloatNet;

const MAPS: usize = 5;
const KERNEL: usize = 5;
const SIDE: usize = 28;
const CONV_SIDE: usize = 13;
const CONV_OUTPUTS: usize = MAPS * CONV_SIDE * CONV_SIDE;
const HIDDEN: usize = 100;
const CLASSES: usize = 10;

/// Why an ONNX file could not be imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportError {
    /// Not a parsable ONNX protobuf.
    Parse(String),
    /// The model has no graph.
    NoGraph,
    /// An operator outside the supported family.
    UnsupportedOperator { node: String, op: String },
    /// A supported operator used in a way this topology cannot take.
    Unsupported { node: String, reason: String },
    /// A weight that is not a float initializer of the expected shape.
    BadTensor { name: String, reason: String },
    /// The graph ends before the network is complete.
    Incomplete(&'static str),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse(e) => write!(f, "not a valid ONNX file: {e}"),
            Self::NoGraph => write!(f, "the ONNX model has no graph"),
            Self::UnsupportedOperator { node, op } => write!(
                f,
                "unsupported ONNX operator {op} (node '{node}'); supported: Conv, Gemm, MatMul, \
                 Add, Mul or Pow as square, AveragePool, Flatten, Reshape, Identity, Dropout"
            ),
            Self::Unsupported { node, reason } => write!(f, "node '{node}': {reason}"),
            Self::BadTensor { name, reason } => write!(f, "tensor '{name}': {reason}"),
            Self::Incomplete(missing) => write!(f, "the graph ends before {missing}"),
        }
    }
}

impl std::error::Error for ImportError {}

/// Where the walk through the graph is: what the value flowing along the chain holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The image.
    Input,
    /// Convolution outputs (a bias may still be added).
    Conv,
    /// Their squares, [5, side, side] after `pooled` pooling.
    ConvSquared,
    /// First dense layer outputs.
    Dense1,
    /// Their squares.
    HiddenSquared,
    /// The logits.
    Dense2,
}

/// The float network read so far.
struct Builder<'g> {
    /// Where external weights are read from.
    external: External,
    initializers: HashMap<&'g str, &'g TensorProto<'g>>,
    stage: Stage,
    /// Name of the value flowing along the chain.
    current: String,
    conv_w: Vec<f64>,
    conv_b: Vec<f64>,
    /// Each pooled feature as a weighted sum of the 845 squared conv outputs.
    pooling: Option<Vec<Vec<(usize, f64)>>>,
    dense: [(Vec<f64>, Vec<f64>); 2],
}

/// Reads the float network from ONNX bytes.
#[cfg(test)]
pub fn import(bytes: &[u8]) -> Result<FloatNet, ImportError> {
    import_with(bytes, None)
}

/// The largest external data file read.
pub const MAX_EXTERNAL_BYTES: u64 = 1 << 30;

/// Imports the model at `path`, reading external weights from files beside it.
pub fn import_file(path: &Path) -> Result<FloatNet, ImportError> {
    let bytes = cryptonets_host::files::read_checked(path, MAX_EXTERNAL_BYTES, "ONNX model")
        .map_err(ImportError::Parse)?;
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    import_with(&bytes, Some(dir))
}

fn import_with(bytes: &[u8], dir: Option<PathBuf>) -> Result<FloatNet, ImportError> {
    let model = onnx_rs::parse(bytes).map_err(|e| ImportError::Parse(e.to_string()))?;
    let graph = model.graph.as_ref().ok_or(ImportError::NoGraph)?;
    import_graph(graph, dir)
}

/// External data files, each read once.
#[derive(Default)]
struct External {
    dir: Option<PathBuf>,
    files: std::cell::RefCell<HashMap<String, std::rc::Rc<Vec<u8>>>>,
}

impl External {
    /// The bytes of an external tensor: `location` (relative, inside the model's
    /// directory), `offset` and `length` as the ONNX external-data entries give them.
    fn bytes(&self, tensor: &TensorProto<'_>) -> Result<Vec<u8>, String> {
        let entry = |key: &str| {
            tensor
                .external_data()
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value)
        };
        let location = entry("location").ok_or("external data without a location")?;
        let number = |key: &str| -> Result<Option<u64>, String> {
            entry(key)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("external data {key} '{v}' is not a number"))
                })
                .transpose()
        };
        let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
        let relative = Path::new(location);
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "external data location '{location}' leaves the model's directory"
            ));
        }
        let dir = self.dir.as_ref().ok_or(
            "weights are in an external data file: import the model by its path (--onnx FILE)",
        )?;
        let file = {
            let mut files = self.files.borrow_mut();
            match files.get(location) {
                Some(file) => file.clone(),
                None => {
                    let bytes = cryptonets_host::files::read_checked(
                        &dir.join(relative),
                        MAX_EXTERNAL_BYTES,
                        "ONNX external data file",
                    )?;
                    let file = std::rc::Rc::new(bytes);
                    files.insert(location.to_string(), file.clone());
                    file
                }
            }
        };
        let start = usize::try_from(offset).map_err(|_| "offset too large")?;
        let end = match length {
            Some(len) => start.checked_add(usize::try_from(len).map_err(|_| "length too large")?),
            None => Some(file.len()),
        };
        end.and_then(|end| file.get(start..end))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("external data range outside '{location}'"))
    }
}

fn import_graph(graph: &Graph<'_>, dir: Option<PathBuf>) -> Result<FloatNet, ImportError> {
    let mut initializers: HashMap<&str, &TensorProto<'_>> =
        graph.initializer.iter().map(|t| (t.name(), t)).collect();
    // `Constant` nodes (PyTorch writes exponents and shapes so) are initializers named by
    // their output.
    for node in graph.node.iter().filter(|n| n.op_type == OpType::Constant) {
        let tensor = attribute(node, "value").and_then(|a| a.t.as_ref());
        match (node.output.first(), tensor) {
            (Some(&name), Some(tensor)) => {
                initializers.insert(name, tensor);
            }
            _ => {
                return Err(unsupported(
                    node,
                    "a Constant is taken with a tensor `value` attribute only",
                ));
            }
        }
    }
    let input = graph
        .input
        .iter()
        .find(|i| !initializers.contains_key(i.name))
        .ok_or(ImportError::Incomplete("an input"))?;
    check_input_shape(input)?;
    let input = input.name;
    let mut builder = Builder {
        external: External {
            dir,
            ..Default::default()
        },
        initializers,
        stage: Stage::Input,
        current: input.to_string(),
        conv_w: Vec::new(),
        conv_b: Vec::new(),
        pooling: None,
        dense: Default::default(),
    };
    for node in graph.node.iter().filter(|n| n.op_type != OpType::Constant) {
        builder.node(node)?;
    }
    builder.finish()
}

/// Where the file declares the input's shape, it must be one 28 x 28 channel per image.
fn check_input_shape(input: &ValueInfo<'_>) -> Result<(), ImportError> {
    let Some(TypeValue::Tensor(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    let Some(shape) = &tensor.shape else {
        return Ok(());
    };
    let dims: Vec<Option<i64>> = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Dimension::Value(v) => Some(v),
            Dimension::Param(_) => None,
        })
        .collect();
    let side = Some(SIDE as i64);
    match dims.as_slice() {
        [_, Some(1), h, w] if *h == side && *w == side => Ok(()),
        _ => Err(ImportError::BadTensor {
            name: input.name.to_string(),
            reason: format!("input shape {dims:?}, expected [N, 1, 28, 28]"),
        }),
    }
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

impl<'g> Builder<'g> {
    /// A float initializer's values and dimensions.
    fn tensor(&self, name: &str) -> Result<(Vec<f64>, Vec<usize>), ImportError> {
        let bad = |reason: &str| ImportError::BadTensor {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let tensor = self.initializers.get(name).ok_or_else(|| {
            bad("not a constant initializer (weights must be stored in the file)")
        })?;
        let dims: Vec<usize> = tensor
            .dims()
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| bad("negative dimension")))
            .collect::<Result<_, _>>()?;
        let expected = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("too many elements"))?;
        if tensor.data_location() == DataLocation::External {
            if tensor.data_type() != DataType::Float {
                return Err(bad("external data that is not float"));
            }
            let bytes = self.external.bytes(tensor).map_err(|e| bad(&e))?;
            if bytes.len() != expected.saturating_mul(4) {
                return Err(bad(&format!(
                    "{} bytes of external data for dimensions {dims:?}",
                    bytes.len()
                )));
            }
            let values = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect();
            return Ok((values, dims));
        }
        let values: Vec<f64> = match tensor.data_type() {
            DataType::Float => tensor
                .as_f32()
                .ok_or_else(|| bad("no float data"))?
                .iter()
                .map(|&x| x as f64)
                .collect(),
            DataType::Double => tensor
                .as_f64()
                .ok_or_else(|| bad("no double data"))?
                .to_vec(),
            DataType::Int64 => tensor
                .as_i64()
                .ok_or_else(|| bad("no int64 data"))?
                .iter()
                .map(|&x| x as f64)
                .collect(),
            other => return Err(bad(&format!("data type {other:?}, expected float"))),
        };
        if values.len() != expected {
            return Err(bad(&format!(
                "{} values for dimensions {dims:?}",
                values.len()
            )));
        }
        if values.iter().any(|x| !x.is_finite()) {
            return Err(bad("not finite"));
        }
        Ok((values, dims))
    }

    /// The node's single chain input, checked to be the current value.
    fn expect_chain_input(&self, node: &Node<'_>, index: usize) -> Result<(), ImportError> {
        match node.input.get(index) {
            Some(&name) if name == self.current => Ok(()),
            Some(name) => Err(unsupported(
                node,
                format!(
                    "input '{name}' is not the value computed so far ('{}'): the network must be a chain",
                    self.current
                ),
            )),
            None => Err(unsupported(node, "missing input")),
        }
    }

    fn advance(&mut self, node: &Node<'_>, stage: Stage) -> Result<(), ImportError> {
        self.current = node
            .output
            .first()
            .ok_or_else(|| unsupported(node, "no output"))?
            .to_string();
        self.stage = stage;
        Ok(())
    }

    fn node(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        use OpType as Op;
        match &node.op_type {
            Op::Identity | Op::Dropout | Op::Flatten | Op::Reshape => {
                self.expect_chain_input(node, 0)?;
                self.pass_through(node)
            }
            Op::Conv => self.conv(node),
            Op::Mul => {
                self.expect_chain_input(node, 0)?;
                self.expect_chain_input(node, 1)?;
                self.square(node)
            }
            Op::Pow => {
                self.expect_chain_input(node, 0)?;
                let exponent = node
                    .input
                    .get(1)
                    .ok_or_else(|| unsupported(node, "Pow without exponent"))?;
                match self.tensor(exponent)?.0.as_slice() {
                    [e] if *e == 2.0 => self.square(node),
                    _ => Err(unsupported(node, "Pow with an exponent other than 2")),
                }
            }
            Op::AveragePool => self.average_pool(node),
            Op::Gemm | Op::MatMul => self.dense(node),
            Op::Add => self.add_bias(node),
            other => Err(ImportError::UnsupportedOperator {
                node: node_name(node),
                op: other.to_string(),
            }),
        }
    }

    fn pass_through(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        if node.op_type == OpType::Reshape && !matches!(self.stage, Stage::ConvSquared) {
            return Err(unsupported(
                node,
                "Reshape is taken only as the flattening before the first dense layer",
            ));
        }
        if node.op_type == OpType::Reshape {
            let shape = node
                .input
                .get(1)
                .ok_or_else(|| unsupported(node, "Reshape without shape"))?;
            let (target, _) = self.tensor(shape)?;
            if target.len() != 2 || target[0] > 1.0 {
                return Err(unsupported(
                    node,
                    format!("Reshape to {target:?}, expected a flat row [N or -1 or 0, features]"),
                ));
            }
        }
        let stage = self.stage;
        self.advance(node, stage)
    }

    fn conv(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        if self.stage != Stage::Input {
            return Err(unsupported(node, "only one Conv, on the input image"));
        }
        self.expect_chain_input(node, 0)?;
        let weights = node
            .input
            .get(1)
            .ok_or_else(|| unsupported(node, "Conv without weights"))?;
        let (w, dims) = self.tensor(weights)?;
        if dims != [MAPS, 1, KERNEL, KERNEL] {
            return Err(unsupported(
                node,
                format!("Conv weights {dims:?}, expected [5, 1, 5, 5]"),
            ));
        }
        let strides = ints_attribute(node, "strides").unwrap_or_else(|| vec![1, 1]);
        let dilations = ints_attribute(node, "dilations").unwrap_or_else(|| vec![1, 1]);
        let pads = ints_attribute(node, "pads").unwrap_or_else(|| vec![0; 4]);
        let auto_pad = attribute(node, "auto_pad").map_or(&b"NOTSET"[..], |a| a.s);
        let group = int_attribute(node, "group", 1);
        // Output (i, j) reads input (2i + ky - 1, 2j + kx - 1): one padded row and column in
        // front; at the end 0 or 1 (both give 13 outputs, the second one never read).
        let pads_ok = pads.len() == 4 && pads[0] == 1 && pads[1] == 1 && pads[2] == pads[3];
        if strides != [2, 2]
            || dilations != [1, 1]
            || group != 1
            || !(auto_pad.is_empty() || auto_pad == b"NOTSET")
            || !pads_ok
            || !(0..=1).contains(&pads[2])
        {
            return Err(unsupported(
                node,
                format!(
                    "Conv with strides {strides:?}, pads {pads:?}, dilations {dilations:?}, \
                     group {group}: expected strides [2, 2], pads [1, 1, 0 or 1, 0 or 1]"
                ),
            ));
        }
        self.conv_w = w;
        self.conv_b = match node.input.get(2) {
            Some(bias) if !bias.is_empty() => self.vector(bias, MAPS)?,
            _ => vec![0.0; MAPS],
        };
        self.advance(node, Stage::Conv)
    }

    /// A bias-like initializer holding `len` values (any leading or trailing unit dims).
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f64>, ImportError> {
        let (values, dims) = self.tensor(name)?;
        if values.len() != len || dims.iter().filter(|&&d| d != 1).count() > 1 {
            return Err(ImportError::BadTensor {
                name: name.to_string(),
                reason: format!("shape {dims:?}, expected {len} values"),
            });
        }
        Ok(values)
    }

    fn square(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let next = match self.stage {
            Stage::Conv => Stage::ConvSquared,
            Stage::Dense1 => Stage::HiddenSquared,
            _ => {
                return Err(unsupported(
                    node,
                    "a square must follow the convolution or the first dense layer",
                ));
            }
        };
        self.advance(node, next)
    }

    fn average_pool(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        self.expect_chain_input(node, 0)?;
        if self.stage != Stage::ConvSquared || self.pooling.is_some() {
            return Err(unsupported(
                node,
                "mean pooling is taken once, after the squared convolution",
            ));
        }
        let kernel = ints_attribute(node, "kernel_shape")
            .ok_or_else(|| unsupported(node, "AveragePool without kernel_shape"))?;
        let strides = ints_attribute(node, "strides").unwrap_or_else(|| vec![1, 1]);
        let pads = ints_attribute(node, "pads").unwrap_or_else(|| vec![0; 4]);
        let count_pad = int_attribute(node, "count_include_pad", 0) != 0;
        let ceil = int_attribute(node, "ceil_mode", 0) != 0;
        let auto_pad = attribute(node, "auto_pad").map_or(&b"NOTSET"[..], |a| a.s);
        let small = |v: &[i64], lo: i64| v.iter().all(|&x| (lo..=CONV_SIDE as i64).contains(&x));
        if kernel.len() != 2
            || strides.len() != 2
            || pads.len() != 4
            || !small(&kernel, 1)
            || !small(&strides, 1)
            || !small(&pads, 0)
            || ceil
            || !(auto_pad.is_empty() || auto_pad == b"NOTSET")
        {
            return Err(unsupported(
                node,
                format!(
                    "AveragePool with kernel {kernel:?}, strides {strides:?}, pads {pads:?}, \
                     ceil_mode {ceil}: expected 2-d windows without ceil mode or auto padding"
                ),
            ));
        }
        let [kh, kw, sh, sw] = [kernel[0], kernel[1], strides[0], strides[1]].map(|x| x as usize);
        let [top, left, bottom, right] = [pads[0], pads[1], pads[2], pads[3]].map(|x| x as usize);
        let (padded_h, padded_w) = (CONV_SIDE + top + bottom, CONV_SIDE + left + right);
        if padded_h < kh || padded_w < kw {
            return Err(unsupported(node, "pooling window larger than the image"));
        }
        let (out_h, out_w) = ((padded_h - kh) / sh + 1, (padded_w - kw) / sw + 1);
        let mut pooled = Vec::with_capacity(MAPS * out_h * out_w);
        for map in 0..MAPS {
            for oy in 0..out_h {
                for ox in 0..out_w {
                    let cells: Vec<usize> = (0..kh * kw)
                        .filter_map(|k| {
                            let y = (oy * sh + k / kw).checked_sub(top)?;
                            let x = (ox * sw + k % kw).checked_sub(left)?;
                            (y < CONV_SIDE && x < CONV_SIDE)
                                .then_some(map * CONV_SIDE * CONV_SIDE + y * CONV_SIDE + x)
                        })
                        .collect();
                    let divisor = if count_pad {
                        kh * kw
                    } else {
                        cells.len().max(1)
                    };
                    pooled.push(
                        cells
                            .into_iter()
                            .map(|c| (c, 1.0 / divisor as f64))
                            .collect(),
                    );
                }
            }
        }
        self.pooling = Some(pooled);
        self.advance(node, Stage::ConvSquared)
    }

    fn dense(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        self.expect_chain_input(node, 0)?;
        let (layer, next) = match self.stage {
            Stage::ConvSquared => (0, Stage::Dense1),
            Stage::HiddenSquared => (1, Stage::Dense2),
            _ => {
                return Err(unsupported(
                    node,
                    "a dense layer must follow a squared layer",
                ));
            }
        };
        let inputs = match (layer, &self.pooling) {
            (0, Some(pooled)) => pooled.len(),
            (0, None) => CONV_OUTPUTS,
            _ => HIDDEN,
        };
        let outputs = [HIDDEN, CLASSES][layer];
        let weights = node
            .input
            .get(1)
            .ok_or_else(|| unsupported(node, "dense layer without weights"))?;
        let (w, dims) = self.tensor(weights)?;
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
        let expected = if transposed {
            [outputs, inputs]
        } else {
            [inputs, outputs]
        };
        if dims != expected {
            return Err(unsupported(
                node,
                format!("weights {dims:?}, expected {expected:?}"),
            ));
        }
        let mut rows = vec![0.0; outputs * inputs];
        for o in 0..outputs {
            for i in 0..inputs {
                let x = if transposed {
                    w[o * inputs + i]
                } else {
                    w[i * outputs + o]
                };
                rows[o * inputs + i] = alpha * x;
            }
        }
        let bias = match node.input.get(2) {
            Some(bias) if gemm && !bias.is_empty() => self
                .vector(bias, outputs)?
                .into_iter()
                .map(|b| beta * b)
                .collect(),
            _ => vec![0.0; outputs],
        };
        if layer == 0
            && let Some(pooled) = self.pooling.take()
        {
            rows = fold_pooling(&rows, &pooled, outputs);
        }
        self.dense[layer] = (rows, bias);
        self.advance(node, next)
    }

    fn add_bias(&mut self, node: &Node<'_>) -> Result<(), ImportError> {
        let other = match node.input.as_slice() {
            [a, b] if *a == self.current => b,
            [a, b] if *b == self.current => a,
            _ => {
                return Err(unsupported(
                    node,
                    "Add must add a constant bias to the value computed so far",
                ));
            }
        };
        let len = match self.stage {
            Stage::Conv => MAPS,
            Stage::Dense1 => HIDDEN,
            Stage::Dense2 => CLASSES,
            _ => {
                return Err(unsupported(
                    node,
                    "Add is taken only as the bias of a linear layer",
                ));
            }
        };
        let values = self.vector(other, len)?;
        let bias = match self.stage {
            Stage::Conv => &mut self.conv_b,
            Stage::Dense1 => &mut self.dense[0].1,
            _ => &mut self.dense[1].1,
        };
        bias.iter_mut().zip(values).for_each(|(b, v)| *b += v);
        let stage = self.stage;
        self.advance(node, stage)
    }

    fn finish(self) -> Result<FloatNet, ImportError> {
        if self.stage != Stage::Dense2 {
            return Err(ImportError::Incomplete(match self.stage {
                Stage::Input => "the convolution",
                Stage::Conv => "the first square",
                Stage::ConvSquared => "the first dense layer",
                Stage::Dense1 => "the second square",
                _ => "the output layer",
            }));
        }
        let [(dense1_w, dense1_b), (dense2_w, dense2_b)] = self.dense;
        Ok(FloatNet {
            conv_w: self.conv_w,
            conv_b: self.conv_b,
            dense1_w,
            dense1_b,
            dense2_w,
            dense2_b,
        })
    }
}

/// Dense weights over pooled features rewritten over the 845 squared conv outputs.
fn fold_pooling(rows: &[f64], pooled: &[Vec<(usize, f64)>], outputs: usize) -> Vec<f64> {
    let mut folded = vec![0.0; outputs * CONV_OUTPUTS];
    for o in 0..outputs {
        for (feature, cells) in pooled.iter().enumerate() {
            let w = rows[o * pooled.len() + feature];
            for &(cell, share) in cells {
                folded[o * CONV_OUTPUTS + cell] += w * share;
            }
        }
    }
    folded
}

#[cfg(test)]
mod tests;
