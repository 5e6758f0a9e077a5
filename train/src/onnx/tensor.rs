//! Constant tensors of an ONNX graph: initializers and `Constant` nodes, with their weights
//! inline or in an external data file beside the model (PyTorch's default exporter writes
//! `model.onnx` + `model.onnx.data`).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use onnx_rs::ast::{DataLocation, DataType, TensorProto};

/// The largest external data file read.
pub const MAX_EXTERNAL_BYTES: u64 = 1 << 30;
/// The most elements of one constant tensor.
pub const MAX_ELEMENTS: usize = 1 << 25;

/// A constant: dimensions and values (integers, shapes among them, are held exactly as f64).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub values: Vec<f64>,
}

impl Tensor {
    /// A 1-D tensor.
    pub fn vector(values: Vec<f64>) -> Self {
        Self {
            dims: vec![values.len()],
            values,
        }
    }

    /// The single value of a tensor of one element.
    pub fn scalar(&self) -> Option<f64> {
        match self.values.as_slice() {
            [x] => Some(*x),
            _ => None,
        }
    }

    /// The values as integers, where every one is one.
    pub fn integers(&self) -> Option<Vec<i64>> {
        self.values
            .iter()
            .map(|&v| (v.fract() == 0.0 && v.abs() < 9e15).then_some(v as i64))
            .collect()
    }
}

/// External data files, each read once.
#[derive(Default)]
pub struct External {
    dir: Option<PathBuf>,
    files: HashMap<String, std::rc::Rc<Vec<u8>>>,
}

impl External {
    /// External files are looked up in `dir` (none: a model given as bytes, which must
    /// hold its weights inline).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            files: HashMap::new(),
        }
    }

    /// The bytes of an external tensor: `location` (relative, inside the model's
    /// directory), `offset` and `length` as the ONNX external-data entries give them.
    fn bytes(&mut self, tensor: &TensorProto<'_>) -> Result<Vec<u8>, String> {
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
        let file = match self.files.get(location) {
            Some(file) => file.clone(),
            None => {
                let bytes = cryptonets_host::files::read_checked(
                    &dir.join(relative),
                    MAX_EXTERNAL_BYTES,
                    "ONNX external data file",
                )?;
                let file = std::rc::Rc::new(bytes);
                self.files.insert(location.to_string(), file.clone());
                file
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

    /// Decodes a tensor (float, double, int32 or int64; inline or external).
    pub fn decode(&mut self, tensor: &TensorProto<'_>) -> Result<Tensor, String> {
        let dims: Vec<usize> = tensor
            .dims()
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| "negative dimension".to_string()))
            .collect::<Result<_, _>>()?;
        let expected = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or("too many elements")?;
        let values: Vec<f64> = if tensor.data_location() == DataLocation::External {
            let bytes = self.bytes(tensor)?;
            let width = match tensor.data_type() {
                DataType::Float | DataType::Int32 => 4,
                DataType::Double | DataType::Int64 => 8,
                other => return Err(format!("external data of type {other:?}")),
            };
            if bytes.len() != expected.saturating_mul(width) {
                return Err(format!(
                    "{} bytes of external data for dimensions {dims:?}",
                    bytes.len()
                ));
            }
            bytes
                .chunks_exact(width)
                .map(|b| match (tensor.data_type(), b.len()) {
                    (DataType::Float, 4) => f32::from_le_bytes(b.try_into().expect("4")) as f64,
                    (DataType::Int32, 4) => i32::from_le_bytes(b.try_into().expect("4")) as f64,
                    (DataType::Double, 8) => f64::from_le_bytes(b.try_into().expect("8")),
                    _ => i64::from_le_bytes(b.try_into().expect("8")) as f64,
                })
                .collect()
        } else if expected == 0 {
            Vec::new()
        } else {
            let missing = || format!("no {:?} data", tensor.data_type());
            match tensor.data_type() {
                DataType::Float => tensor
                    .as_f32()
                    .ok_or_else(missing)?
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
                DataType::Double => tensor.as_f64().ok_or_else(missing)?.to_vec(),
                DataType::Int64 => tensor
                    .as_i64()
                    .ok_or_else(missing)?
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
                DataType::Int32 => tensor
                    .as_i32()
                    .ok_or_else(missing)?
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
                other => return Err(format!("data type {other:?}, expected a number")),
            }
        };
        if values.len() != expected {
            return Err(format!("{} values for dimensions {dims:?}", values.len()));
        }
        if values.iter().any(|x| !x.is_finite()) {
            return Err("not finite".into());
        }
        Ok(Tensor { dims, values })
    }
}
