//! Model file format, version 2, little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `CNMD` |
//! | 1 | version (2) |
//! | 1 | layers L (1 to 32) |
//! | 2 | input levels (pixel p becomes round(p * levels / 255)) |
//! | 2, 2, 2 | input channels, height, width |
//! | 2, 2 | float and integer test accuracy, in 1/10000 |
//! | 2 | reserved (0) |
//! | L x ... | the layers, each a kind byte and its fields |
//!
//! | kind | fields |
//! | --- | --- |
//! | 1 convolution | out channels: u16; kernel h, w, stride h, w, padding top, left, bottom, right: u8 each; weights i16 [out][in][ky][kx]; biases i128 [out] |
//! | 2 sum pooling | kernel h, w, stride h, w, padding top, left, bottom, right: u8 each |
//! | 3 dense | outputs: u32; weights i16 [out][in]; biases i128 [out] |
//! | 4 flatten | (none) |
//! | 5 polynomial | c0, c1, c2, c3: i64 (c0 + c1 x + c2 x^2 + c3 x^3, degree 1 to 3) |
//! | 6 convolution, a bias per output neuron | as kind 1, but biases i128 [out][y][x] |
//!
//! Parsing derives every length from the shapes of the layers before it (checked), compares
//! it with the bytes left before allocating anything, and validates the network as a whole
//! ([`PolynomialNetwork::new`]): never a panic, never an allocation from an unchecked size.

use alloc::vec::Vec;

use super::{Layer, PolynomialNetwork, Shape, Window};
use crate::Error;

const MAGIC: [u8; 4] = *b"CNMD";
const VERSION: u8 = 2;
const HEADER: usize = 20;

fn malformed(reason: &'static str) -> Error {
    Error::Malformed { reason }
}

/// A cursor over the bytes that refuses to read past the end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.bytes.len() < n {
            return Err(malformed("truncated model"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `count` i16 values, after checking that their bytes are present.
    fn i16s(&mut self, count: Option<usize>) -> Result<Vec<i16>, Error> {
        let bytes = count
            .and_then(|c| c.checked_mul(2))
            .ok_or(malformed("layer too large"))?;
        let b = self.take(bytes)?;
        Ok(b.chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    fn i128s(&mut self, count: Option<usize>) -> Result<Vec<i128>, Error> {
        let bytes = count
            .and_then(|c| c.checked_mul(16))
            .ok_or(malformed("layer too large"))?;
        let b = self.take(bytes)?;
        Ok(b.chunks_exact(16)
            .map(|c| i128::from_le_bytes(c.try_into().expect("16 bytes")))
            .collect())
    }

    fn window(&mut self) -> Result<Window, Error> {
        let b = self.take(8)?;
        let [kh, kw, sh, sw, top, left, bottom, right] = core::array::from_fn(|i| b[i] as usize);
        Ok(Window {
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [top, left, bottom, right],
        })
    }
}

/// Parses a version 2 file.
pub(super) fn parse(bytes: &[u8]) -> Result<PolynomialNetwork, Error> {
    let mut r = Reader { bytes };
    if r.take(4)? != MAGIC {
        return Err(malformed("not a cryptonets model (bad magic)"));
    }
    if r.u8()? != VERSION {
        return Err(malformed("unsupported model version"));
    }
    let count = r.u8()? as usize;
    if count == 0 || count > super::MAX_LAYERS {
        return Err(malformed("a network has 1 to 32 layers"));
    }
    let levels = r.u16()?;
    let input = Shape {
        channels: r.u16()? as usize,
        height: r.u16()? as usize,
        width: r.u16()? as usize,
    };
    let (float, integer) = (r.u16()?, r.u16()?);
    if r.u16()? != 0 {
        return Err(malformed("reserved bytes are not zero"));
    }
    if input.is_empty() || input.len() > super::MAX_NEURONS {
        return Err(malformed("input shape empty or too large"));
    }
    let mut layers = Vec::with_capacity(count);
    let mut shape = input;
    let mut weights = 0usize;
    for _ in 0..count {
        let layer = match r.u8()? {
            kind @ (1 | 6) => {
                let out_channels = r.u16()? as usize;
                let window = r.window()?;
                let biases = match kind {
                    1 => Some(out_channels),
                    _ => {
                        let (h, w) = window.output(shape.height, shape.width)?;
                        out_channels.checked_mul(h * w)
                    }
                };
                let per = window.kernel[0] * window.kernel[1] * shape.channels;
                let count = out_channels.checked_mul(per);
                weights = weights.saturating_add(count.unwrap_or(usize::MAX));
                if weights > super::MAX_WEIGHTS {
                    return Err(malformed("too many weights"));
                }
                Layer::Conv2d {
                    out_channels,
                    window,
                    weights: r.i16s(count)?,
                    biases: r.i128s(biases)?,
                }
            }
            2 => Layer::SumPool {
                window: r.window()?,
            },
            3 => {
                let outputs = r.u32()? as usize;
                let count = outputs.checked_mul(shape.len());
                weights = weights.saturating_add(count.unwrap_or(usize::MAX));
                if weights > super::MAX_WEIGHTS || outputs > super::MAX_NEURONS {
                    return Err(malformed("too many weights"));
                }
                Layer::Dense {
                    outputs,
                    weights: r.i16s(count)?,
                    biases: r.i128s(Some(outputs))?,
                }
            }
            4 => Layer::Flatten,
            5 => {
                let b = r.take(32)?;
                Layer::Polynomial {
                    coefficients: core::array::from_fn(|i| {
                        i64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes"))
                    }),
                }
            }
            _ => return Err(malformed("unknown layer kind")),
        };
        shape = layer.output_shape(shape)?;
        layers.push(layer);
    }
    if !r.bytes.is_empty() {
        return Err(malformed("trailing bytes after the last layer"));
    }
    let mut network = PolynomialNetwork::new(input, levels, layers)?;
    network.set_recorded_accuracy(float, integer);
    Ok(network)
}

fn window_bytes(w: &Window, out: &mut Vec<u8>) {
    let fields = [w.kernel[0], w.kernel[1], w.stride[0], w.stride[1]]
        .into_iter()
        .chain(w.padding);
    out.extend(fields.map(|x| x as u8));
}

fn weight_bytes(weights: &[i16], biases: &[i128], out: &mut Vec<u8>) {
    weights
        .iter()
        .for_each(|w| out.extend_from_slice(&w.to_le_bytes()));
    biases
        .iter()
        .for_each(|b| out.extend_from_slice(&b.to_le_bytes()));
}

impl PolynomialNetwork {
    /// Parses a model file of either version: version 1 (the CryptoNets topology) loads as
    /// its equivalent network.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        match bytes.get(4) {
            Some(1) => Self::from_v1(&super::super::Model::parse(bytes)?),
            _ => parse(bytes),
        }
    }

    /// Serializes as version 2 (the inverse of [`PolynomialNetwork::parse`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, self.layers().len() as u8]);
        let (float, integer) = self.recorded_accuracy();
        let input = self.input();
        for field in [
            self.input_levels(),
            input.channels as u16,
            input.height as u16,
            input.width as u16,
            float,
            integer,
            0,
        ] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        debug_assert_eq!(out.len(), HEADER);
        for layer in self.layers() {
            match layer {
                Layer::Conv2d {
                    out_channels,
                    window,
                    weights,
                    biases,
                } => {
                    out.push(if biases.len() == *out_channels { 1 } else { 6 });
                    out.extend_from_slice(&(*out_channels as u16).to_le_bytes());
                    window_bytes(window, &mut out);
                    weight_bytes(weights, biases, &mut out);
                }
                Layer::SumPool { window } => {
                    out.push(2);
                    window_bytes(window, &mut out);
                }
                Layer::Dense {
                    outputs,
                    weights,
                    biases,
                } => {
                    out.push(3);
                    out.extend_from_slice(&(*outputs as u32).to_le_bytes());
                    weight_bytes(weights, biases, &mut out);
                }
                Layer::Flatten => out.push(4),
                Layer::Polynomial { coefficients } => {
                    out.push(5);
                    coefficients
                        .iter()
                        .for_each(|c| out.extend_from_slice(&c.to_le_bytes()));
                }
            }
        }
        out
    }
}
