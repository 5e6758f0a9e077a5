//! The integer CryptoNets model: file format, validation and exact plaintext inference.
//!
//! Topology (fixed, the paper's): 28 x 28 input with pixels quantized to
//! `0..=input_levels`; convolution 5 x 5, stride 2, padding 1, `maps` maps (13 x 13 each);
//! square; dense maps * 169 -> `hidden`; square; dense `hidden` -> 10. Mean pooling of the
//! original network is folded into the first dense layer. All weights and biases are integers,
//! so encrypted evaluation can equal this plaintext computation exactly.
//!
//! File format, version 1, little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `CNMD` |
//! | 1 | version (1) |
//! | 1 | maps |
//! | 2 | hidden units |
//! | 2 | input levels (pixel p becomes round(p * levels / 255)) |
//! | 2 | float test accuracy, in 1/10000 |
//! | 2 | integer test accuracy, in 1/10000 |
//! | 2 | reserved (0) |
//! | 2 * maps * 25 | conv weights, i16, [map][ky][kx] |
//! | 16 * maps | conv biases, i128 |
//! | 2 * hidden * maps * 169 | dense 1 weights, i16, [unit][map][y][x] |
//! | 16 * hidden | dense 1 biases, i128 |
//! | 2 * 10 * hidden | dense 2 weights, i16, [class][unit] |
//! | 16 * 10 | dense 2 biases, i128 |
//!
//! Parsing borrows the bytes (no allocation) and checks every length and the worst-case
//! magnitude of every layer, which must leave room in an i128.

use crate::Error;

#[cfg(feature = "alloc")]
pub mod polynomial;

/// Input side in pixels.
pub const SIDE: usize = 28;
/// Convolution output side: (28 + 2 - 5) / 2 + 1.
pub const CONV_SIDE: usize = 13;
/// Kernel side.
pub const KERNEL: usize = 5;
/// Classes.
pub const CLASSES: usize = 10;
const MAGIC: [u8; 4] = *b"CNMD";
const VERSION: u8 = 1;
const HEADER: usize = 16;
/// Largest worst-case magnitude accepted for any layer: keeps exact i128 arithmetic safe.
const MAX_BOUND_BITS: u32 = 120;
/// Most convolution maps (bounds the stack of plaintext inference).
pub const MAX_MAPS: usize = 16;
/// Most hidden units.
pub const MAX_HIDDEN: usize = 4096;
/// The largest model file: every layer at its limit. A reader may refuse larger files
/// before reading them.
pub const MAX_MODEL_BYTES: usize = HEADER
    + MAX_MAPS * (2 * KERNEL * KERNEL + 16)
    + MAX_HIDDEN * (2 * MAX_MAPS * CONV_SIDE * CONV_SIDE + 16)
    + 2 * CLASSES * MAX_HIDDEN
    + 16 * CLASSES;

/// A validated model borrowing its file's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    maps: usize,
    hidden: usize,
    input_levels: u16,
    float_accuracy: u16,
    integer_accuracy: u16,
    conv_w: &'a [u8],
    conv_b: &'a [u8],
    dense1_w: &'a [u8],
    dense1_b: &'a [u8],
    dense2_w: &'a [u8],
    dense2_b: &'a [u8],
    bounds: Bounds,
}

/// Worst-case absolute values of each layer's integer outputs over every possible input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Convolution outputs.
    pub conv: u128,
    /// Their squares.
    pub conv_squared: u128,
    /// First dense layer outputs.
    pub dense1: u128,
    /// Their squares.
    pub dense1_squared: u128,
    /// The logits.
    pub logits: u128,
}

impl Bounds {
    /// Bits of a signed plaintext holding every logit: the product of the CRT plaintext
    /// primes must exceed 2 * logits.
    pub fn plaintext_bits(&self) -> u32 {
        128 - self.logits.leading_zeros() + 1
    }

    /// Largest intermediate, in bits (every layer must fit the CRT plaintext space).
    pub fn max_bits(&self) -> u32 {
        let max = [
            self.conv,
            self.conv_squared,
            self.dense1,
            self.dense1_squared,
            self.logits,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        128 - max.leading_zeros() + 1
    }
}

fn malformed(reason: &'static str) -> Error {
    Error::Malformed { reason }
}

fn too_big() -> Error {
    malformed("a layer's worst-case magnitude exceeds 2^120")
}

/// A bound that was computed without overflow and is at most 2^120 - 1.
fn within_limit(bound: Option<u128>) -> Result<u128, Error> {
    bound
        .filter(|x| x >> MAX_BOUND_BITS == 0)
        .ok_or_else(too_big)
}

/// An i128 sum or product that the validated bounds keep in range; checked anyway, so that a
/// bound computed wrongly surfaces as an error, never as a wrapped logit.
fn checked(value: Option<i128>) -> Result<i128, Error> {
    value.ok_or(Error::Overflow {
        what: "plaintext inference",
    })
}

fn i16_at(bytes: &[u8], index: usize) -> i64 {
    i16::from_le_bytes([bytes[2 * index], bytes[2 * index + 1]]) as i64
}

fn i128_at(bytes: &[u8], index: usize) -> i128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[16 * index..16 * index + 16]);
    i128::from_le_bytes(b)
}

impl<'a> Model<'a> {
    /// Parses and validates a model file.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.len() < HEADER || bytes[..4] != MAGIC {
            return Err(malformed("not a cryptonets model (bad magic)"));
        }
        if bytes[4] != VERSION {
            return Err(malformed("unsupported model version"));
        }
        let word = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let maps = bytes[5] as usize;
        let hidden = word(6) as usize;
        let input_levels = word(8);
        if maps == 0
            || maps > MAX_MAPS
            || hidden == 0
            || hidden > MAX_HIDDEN
            || input_levels == 0
            || input_levels > 255
        {
            return Err(malformed("topology out of range"));
        }
        if word(14) != 0 {
            return Err(malformed("reserved bytes are not zero"));
        }
        let features = maps * CONV_SIDE * CONV_SIDE;
        let sizes = [
            2 * maps * KERNEL * KERNEL,
            16 * maps,
            2 * hidden * features,
            16 * hidden,
            2 * CLASSES * hidden,
            16 * CLASSES,
        ];
        if bytes.len() != HEADER + sizes.iter().sum::<usize>() {
            return Err(malformed("wrong model length for its topology"));
        }
        let mut parts = [&bytes[..0]; 6];
        let mut offset = HEADER;
        for (part, size) in parts.iter_mut().zip(sizes) {
            *part = &bytes[offset..offset + size];
            offset += size;
        }
        let [conv_w, conv_b, dense1_w, dense1_b, dense2_w, dense2_b] = parts;
        let mut model = Self {
            maps,
            hidden,
            input_levels,
            float_accuracy: word(10),
            integer_accuracy: word(12),
            conv_w,
            conv_b,
            dense1_w,
            dense1_b,
            dense2_w,
            dense2_b,
            bounds: Bounds {
                conv: 0,
                conv_squared: 0,
                dense1: 0,
                dense1_squared: 0,
                logits: 0,
            },
        };
        model.bounds = model.compute_bounds()?;
        Ok(model)
    }

    /// Worst cases layer by layer in checked arithmetic: any product or sum that would not
    /// fit, and any layer above 2^120, is refused (never a wrapped, too small bound that
    /// would choose too few CRT primes).
    fn compute_bounds(&self) -> Result<Bounds, Error> {
        let levels = self.input_levels as u128;
        // Per map: every input pixel can be at either extreme, biases add.
        let mut conv_map = [0u128; MAX_MAPS];
        let mut conv_map_squared = [0u128; MAX_MAPS];
        for m in 0..self.maps {
            let weights = (0..KERNEL * KERNEL)
                .try_fold(0u128, |sum, k| {
                    sum.checked_add(self.conv_weight(m, k).unsigned_abs() as u128)
                })
                .ok_or_else(too_big)?;
            let bound = weights
                .checked_mul(levels)
                .and_then(|x| x.checked_add(self.conv_bias(m).unsigned_abs()));
            conv_map[m] = within_limit(bound)?;
            conv_map_squared[m] = within_limit(conv_map[m].checked_mul(conv_map[m]))?;
        }
        let conv = conv_map[..self.maps].iter().copied().max().unwrap_or(0);
        let conv_squared = conv_map_squared[..self.maps]
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        let features = self.maps * CONV_SIDE * CONV_SIDE;
        let mut dense1 = 0u128;
        for unit in 0..self.hidden {
            let mut sum = within_limit(Some(self.dense1_bias(unit).unsigned_abs()))?;
            for f in 0..features {
                let term = (self.dense1_weight(unit, f).unsigned_abs() as u128)
                    .checked_mul(conv_map_squared[f / (CONV_SIDE * CONV_SIDE)]);
                sum = within_limit(term.and_then(|t| t.checked_add(sum)))?;
            }
            dense1 = dense1.max(sum);
        }
        let dense1_squared = within_limit(dense1.checked_mul(dense1))?;
        let mut logits = 0u128;
        for class in 0..CLASSES {
            let mut sum = within_limit(Some(self.dense2_bias(class).unsigned_abs()))?;
            for unit in 0..self.hidden {
                let term = (self.dense2_weight(class, unit).unsigned_abs() as u128)
                    .checked_mul(dense1_squared);
                sum = within_limit(term.and_then(|t| t.checked_add(sum)))?;
            }
            logits = logits.max(sum);
        }
        Ok(Bounds {
            conv,
            conv_squared,
            dense1,
            dense1_squared,
            logits,
        })
    }

    /// Convolution maps.
    pub fn maps(&self) -> usize {
        self.maps
    }

    /// Hidden units of the first dense layer.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Pixel quantization levels: pixel p (0..=255) becomes round(p * levels / 255).
    pub fn input_levels(&self) -> u16 {
        self.input_levels
    }

    /// Test accuracies recorded at training time (float network, integer network), in 1/10000.
    pub fn recorded_accuracy(&self) -> (u16, u16) {
        (self.float_accuracy, self.integer_accuracy)
    }

    /// Worst-case magnitudes of every layer.
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Weight k (ky * 5 + kx) of convolution map m.
    pub fn conv_weight(&self, map: usize, k: usize) -> i64 {
        i16_at(self.conv_w, map * KERNEL * KERNEL + k)
    }

    /// Bias of convolution map m.
    pub fn conv_bias(&self, map: usize) -> i128 {
        i128_at(self.conv_b, map)
    }

    /// Weight of feature f (map * 169 + y * 13 + x) in hidden unit `unit`.
    pub fn dense1_weight(&self, unit: usize, feature: usize) -> i64 {
        i16_at(
            self.dense1_w,
            unit * self.maps * CONV_SIDE * CONV_SIDE + feature,
        )
    }

    /// Bias of hidden unit `unit`.
    pub fn dense1_bias(&self, unit: usize) -> i128 {
        i128_at(self.dense1_b, unit)
    }

    /// Weight of hidden unit `unit` in class `class`.
    pub fn dense2_weight(&self, class: usize, unit: usize) -> i64 {
        i16_at(self.dense2_w, class * self.hidden + unit)
    }

    /// Bias of class `class`.
    pub fn dense2_bias(&self, class: usize) -> i128 {
        i128_at(self.dense2_b, class)
    }

    /// The quantized input value of a raw pixel.
    pub fn quantize_pixel(&self, pixel: u8) -> i64 {
        (pixel as i64 * self.input_levels as i64 + 127) / 255
    }

    /// The pixel a convolution output reads, with zero padding: input (y, x) in -1..=28.
    fn padded(&self, pixels: &[u8; SIDE * SIDE], y: isize, x: isize) -> i64 {
        if (0..SIDE as isize).contains(&y) && (0..SIDE as isize).contains(&x) {
            self.quantize_pixel(pixels[y as usize * SIDE + x as usize])
        } else {
            0
        }
    }

    /// Exact integer inference: the ten logits of one image. Every operation is checked;
    /// the validated bounds (< 2^120) keep them in range, so an error means a defect.
    pub fn logits(&self, pixels: &[u8; SIDE * SIDE]) -> Result<[i128; CLASSES], Error> {
        let features = self.maps * CONV_SIDE * CONV_SIDE;
        let mut squared = [0i128; MAX_MAPS * CONV_SIDE * CONV_SIDE];
        for m in 0..self.maps {
            for oy in 0..CONV_SIDE {
                for ox in 0..CONV_SIDE {
                    let mut z = self.conv_bias(m);
                    for k in 0..KERNEL * KERNEL {
                        let (y, x) = (
                            (2 * oy + k / KERNEL) as isize - 1,
                            (2 * ox + k % KERNEL) as isize - 1,
                        );
                        // |weight| <= 2^15 and pixels <= 255: the product fits an i64.
                        let product = self.conv_weight(m, k) * self.padded(pixels, y, x);
                        z = checked(z.checked_add(product as i128))?;
                    }
                    squared[m * CONV_SIDE * CONV_SIDE + oy * CONV_SIDE + ox] =
                        checked(z.checked_mul(z))?;
                }
            }
        }
        let mut logits = [0i128; CLASSES];
        for (class, logit) in logits.iter_mut().enumerate() {
            *logit = self.dense2_bias(class);
        }
        for unit in 0..self.hidden {
            let mut z = self.dense1_bias(unit);
            for (f, &s) in squared[..features].iter().enumerate() {
                let product = (self.dense1_weight(unit, f) as i128).checked_mul(s);
                z = checked(product.and_then(|p| p.checked_add(z)))?;
            }
            let a = checked(z.checked_mul(z))?;
            for (class, logit) in logits.iter_mut().enumerate() {
                let product = (self.dense2_weight(class, unit) as i128).checked_mul(a);
                *logit = checked(product.and_then(|p| p.checked_add(*logit)))?;
            }
        }
        Ok(logits)
    }

    /// The predicted digit: the first largest logit.
    pub fn predict(&self, pixels: &[u8; SIDE * SIDE]) -> Result<usize, Error> {
        Ok(argmax(&self.logits(pixels)?))
    }
}

/// Index of the first largest value.
pub fn argmax<T: PartialOrd>(values: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// Writes a model file (the inverse of [`Model::parse`]).
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, Default)]
pub struct ModelWriter {
    /// Convolution maps.
    pub maps: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Pixel levels.
    pub input_levels: u16,
    /// Float test accuracy in 1/10000.
    pub float_accuracy: u16,
    /// Integer test accuracy in 1/10000.
    pub integer_accuracy: u16,
    /// [map][25].
    pub conv_weights: alloc::vec::Vec<i16>,
    /// [map].
    pub conv_biases: alloc::vec::Vec<i128>,
    /// [unit][maps * 169].
    pub dense1_weights: alloc::vec::Vec<i16>,
    /// [unit].
    pub dense1_biases: alloc::vec::Vec<i128>,
    /// [class][unit].
    pub dense2_weights: alloc::vec::Vec<i16>,
    /// [class].
    pub dense2_biases: alloc::vec::Vec<i128>,
}

#[cfg(feature = "alloc")]
impl ModelWriter {
    /// Serializes; the result parses with [`Model::parse`] if the sizes are consistent.
    pub fn to_bytes(&self) -> alloc::vec::Vec<u8> {
        let mut out = alloc::vec::Vec::new();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.maps as u8);
        for w in [
            self.hidden as u16,
            self.input_levels,
            self.float_accuracy,
            self.integer_accuracy,
            0,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        let weights = |out: &mut alloc::vec::Vec<u8>, w: &[i16]| {
            w.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        };
        let biases = |out: &mut alloc::vec::Vec<u8>, b: &[i128]| {
            b.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        };
        weights(&mut out, &self.conv_weights);
        biases(&mut out, &self.conv_biases);
        weights(&mut out, &self.dense1_weights);
        biases(&mut out, &self.dense1_biases);
        weights(&mut out, &self.dense2_weights);
        biases(&mut out, &self.dense2_biases);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn tiny(maps: usize, hidden: usize) -> ModelWriter {
        let features = maps * CONV_SIDE * CONV_SIDE;
        ModelWriter {
            maps,
            hidden,
            input_levels: 3,
            float_accuracy: 9900,
            integer_accuracy: 9890,
            conv_weights: (0..maps * 25).map(|i| (i % 7) as i16 - 3).collect(),
            conv_biases: (0..maps).map(|i| i as i128 - 1).collect(),
            dense1_weights: (0..hidden * features).map(|i| (i % 5) as i16 - 2).collect(),
            dense1_biases: (0..hidden).map(|i| 10 * i as i128).collect(),
            dense2_weights: (0..10 * hidden).map(|i| (i % 9) as i16 - 4).collect(),
            dense2_biases: (0..10).map(|i| -(i as i128)).collect(),
        }
    }

    /// The same network written with plain loops over float-free integers, independently of
    /// `logits` (direct 2-D indexing, i128 throughout).
    fn reference(w: &ModelWriter, pixels: &[u8; 784]) -> Vec<i128> {
        let q = |p: u8| (p as i128 * w.input_levels as i128 + 127) / 255;
        let mut act = Vec::new();
        for m in 0..w.maps {
            for oy in 0..13i64 {
                for ox in 0..13i64 {
                    let mut z = w.conv_biases[m];
                    for ky in 0..5i64 {
                        for kx in 0..5i64 {
                            let (y, x) = (2 * oy + ky - 1, 2 * ox + kx - 1);
                            if (0..28).contains(&y) && (0..28).contains(&x) {
                                z += w.conv_weights[m * 25 + (ky * 5 + kx) as usize] as i128
                                    * q(pixels[(y * 28 + x) as usize]);
                            }
                        }
                    }
                    act.push(z * z);
                }
            }
        }
        let hidden: Vec<i128> = (0..w.hidden)
            .map(|u| {
                let z = w.dense1_biases[u]
                    + act
                        .iter()
                        .enumerate()
                        .map(|(f, &a)| w.dense1_weights[u * act.len() + f] as i128 * a)
                        .sum::<i128>();
                z * z
            })
            .collect();
        (0..10)
            .map(|c| {
                w.dense2_biases[c]
                    + hidden
                        .iter()
                        .enumerate()
                        .map(|(u, &h)| w.dense2_weights[c * w.hidden + u] as i128 * h)
                        .sum::<i128>()
            })
            .collect()
    }

    #[test]
    fn round_trip_and_inference_match_an_independent_reference() {
        let w = tiny(2, 3);
        let bytes = w.to_bytes();
        let model = Model::parse(&bytes).unwrap();
        assert_eq!(
            (model.maps(), model.hidden(), model.input_levels()),
            (2, 3, 3)
        );
        assert_eq!(model.recorded_accuracy(), (9900, 9890));
        let mut state = 7u32;
        for _ in 0..20 {
            let pixels: [u8; 784] = core::array::from_fn(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (state >> 24) as u8
            });
            let logits = model.logits(&pixels).unwrap();
            assert_eq!(logits.to_vec(), reference(&w, &pixels));
            let b = model.bounds();
            assert!(logits.iter().all(|l| l.unsigned_abs() <= b.logits));
        }
        // The worst case is reached by the all-extreme image of the sign pattern; at least the
        // bound must hold for the brightest and darkest images.
        for pixels in [[0u8; 784], [255u8; 784]] {
            assert!(
                model
                    .logits(&pixels)
                    .unwrap()
                    .iter()
                    .all(|l| l.unsigned_abs() <= model.bounds().logits)
            );
        }
        assert!(model.bounds().plaintext_bits() > 10);
    }

    #[test]
    fn malformed_models_give_typed_errors() {
        let good = tiny(2, 3).to_bytes();
        let bad = |bytes: &[u8]| matches!(Model::parse(bytes), Err(Error::Malformed { .. }));
        assert!(bad(&[]));
        assert!(bad(&good[..good.len() - 1]));
        assert!(bad(&[good.as_slice(), &[0]].concat()));
        for (index, value) in [(0, b'X'), (4, 9), (5, 0), (5, 17), (6, 0), (8, 0), (14, 1)] {
            let mut b = good.clone();
            b[index] = value;
            assert!(bad(&b), "byte {index} = {value}");
        }
        // Weights so large that the logits would not fit the checked range.
        let mut huge = tiny(1, 1);
        huge.conv_weights.iter_mut().for_each(|w| *w = i16::MAX);
        huge.dense1_weights.iter_mut().for_each(|w| *w = i16::MAX);
        huge.dense2_weights.iter_mut().for_each(|w| *w = i16::MAX);
        huge.input_levels = 255;
        assert!(bad(&huge.to_bytes()));
    }

    /// The two reproductions: bounds that wrapped in unchecked u128 arithmetic to a
    /// conv^2 bound of 0, so that too few CRT primes were chosen.
    #[test]
    fn bounds_that_would_wrap_are_refused() {
        let refused = |w: &ModelWriter| {
            assert_eq!(
                Model::parse(&w.to_bytes()).unwrap_err(),
                Error::Malformed {
                    reason: "a layer's worst-case magnitude exceeds 2^120"
                }
            );
        };
        // Map 0: zero weights and a bias of 2^64, so conv = 2^64 and conv^2 = 2^128.
        let mut bias = tiny(2, 3);
        bias.conv_weights[..25].iter_mut().for_each(|w| *w = 0);
        bias.conv_biases[0] = 1 << 64;
        refused(&bias);
        // A bias of 2^57 (conv^2 = 2^114) times first-dense weights of 2^14 on that map.
        let mut product = tiny(2, 3);
        product.conv_weights[..25].iter_mut().for_each(|w| *w = 0);
        product.conv_biases[0] = 1 << 57;
        for unit in 0..3 {
            product.dense1_weights[unit * 338..unit * 338 + 169]
                .iter_mut()
                .for_each(|w| *w = 16384);
        }
        refused(&product);
        // Negative extremes too.
        let mut negative = tiny(1, 1);
        negative.conv_biases[0] = i128::MIN;
        refused(&negative);
        negative.conv_biases[0] = 0;
        negative.dense2_biases[3] = i128::MIN;
        refused(&negative);
    }

    /// A model whose logits reach exactly 2^120 - 1 is accepted and inferred exactly; one
    /// more and it is refused.
    #[test]
    fn largest_accepted_bounds_are_exact() {
        let mut w = tiny(1, 1);
        w.conv_weights.iter_mut().for_each(|x| *x = 0);
        w.conv_biases[0] = 0;
        w.dense1_weights.iter_mut().for_each(|x| *x = 0);
        w.dense1_biases[0] = 1 << 59; // dense1^2 = 2^118
        w.dense2_weights.iter_mut().for_each(|x| *x = 0);
        w.dense2_weights[0] = 1;
        w.dense2_biases.iter_mut().for_each(|b| *b = 0);
        w.dense2_biases[0] = (1i128 << 120) - 1 - (1i128 << 118);
        let bytes = w.to_bytes();
        let model = Model::parse(&bytes).unwrap();
        assert_eq!(model.bounds().logits, (1u128 << 120) - 1);
        assert_eq!(model.bounds().plaintext_bits(), 121);
        let logits = model.logits(&[200u8; 784]).unwrap();
        assert_eq!(logits[0], (1i128 << 120) - 1);
        assert_eq!(logits[0], reference(&w, &[200u8; 784])[0]);
        w.dense2_biases[0] += 1;
        assert!(Model::parse(&w.to_bytes()).is_err());
        // Every weight at its extreme with the largest topology still parses to a bound or
        // a typed error, never a panic (debug builds check overflow).
        let mut huge = tiny(MAX_MAPS, 4);
        huge.conv_weights.iter_mut().for_each(|x| *x = i16::MIN);
        huge.conv_biases.iter_mut().for_each(|b| *b = i128::MAX);
        huge.input_levels = 255;
        assert!(Model::parse(&huge.to_bytes()).is_err());
    }
}
