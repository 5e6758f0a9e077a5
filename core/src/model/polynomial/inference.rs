//! Exact plaintext inference: the reference that encrypted inference must equal. Checked
//! i128 when the bounds fit (every operation still checked, so a wrong bound surfaces as an
//! error, never as a wrapped value), big integers otherwise.

use alloc::vec::Vec;

use num_bigint::BigInt;

use super::{Layer, PolynomialNetwork};
use crate::Error;

/// The integers inference can run in.
trait Integer: Clone {
    fn from_i128(x: i128) -> Self;
    fn add(&self, other: &Self) -> Result<Self, Error>;
    fn mul(&self, other: &Self) -> Result<Self, Error>;
    fn mul_small(&self, w: i64) -> Result<Self, Error>;
}

fn overflow() -> Error {
    Error::Overflow {
        what: "plaintext inference",
    }
}

impl Integer for i128 {
    fn from_i128(x: i128) -> Self {
        x
    }
    fn add(&self, other: &Self) -> Result<Self, Error> {
        self.checked_add(*other).ok_or_else(overflow)
    }
    fn mul(&self, other: &Self) -> Result<Self, Error> {
        self.checked_mul(*other).ok_or_else(overflow)
    }
    fn mul_small(&self, w: i64) -> Result<Self, Error> {
        self.checked_mul(w as i128).ok_or_else(overflow)
    }
}

impl Integer for BigInt {
    fn from_i128(x: i128) -> Self {
        BigInt::from(x)
    }
    fn add(&self, other: &Self) -> Result<Self, Error> {
        Ok(self + other)
    }
    fn mul(&self, other: &Self) -> Result<Self, Error> {
        Ok(self * other)
    }
    fn mul_small(&self, w: i64) -> Result<Self, Error> {
        Ok(self * w)
    }
}

fn run<T: Integer>(network: &PolynomialNetwork, pixels: &[u8]) -> Result<Vec<T>, Error> {
    if pixels.len() != network.input().len() {
        return Err(Error::BufferLength {
            expected: network.input().len(),
            actual: pixels.len(),
        });
    }
    let mut x: Vec<T> = pixels
        .iter()
        .map(|&p| T::from_i128(network.quantize_pixel(p) as i128))
        .collect();
    for (i, layer) in network.layers().iter().enumerate() {
        x = match layer {
            Layer::Flatten => x,
            Layer::Polynomial { coefficients: c } => x
                .iter()
                .map(|v| {
                    // Horner: c0 + v (c1 + v (c2 + v c3)).
                    let mut acc = T::from_i128(c[3] as i128);
                    for &ck in c[..3].iter().rev() {
                        acc = acc.mul(v)?.add(&T::from_i128(ck as i128))?;
                    }
                    Ok(acc)
                })
                .collect::<Result<_, Error>>()?,
            _ => {
                let mut next = alloc::vec![T::from_i128(0); network.shapes()[i].len()];
                layer.for_each_row(network.input_shape(i), |o, taps, bias| {
                    let mut acc = T::from_i128(bias);
                    for &(j, w) in taps {
                        acc = acc.add(&x[j as usize].mul_small(w)?)?;
                    }
                    next[o] = acc;
                    Ok::<(), Error>(())
                })?;
                next
            }
        };
    }
    Ok(x)
}

impl PolynomialNetwork {
    /// Whether every value and partial value of inference fits an i128 (then
    /// [`PolynomialNetwork::logits`] works).
    pub fn fits_i128(&self) -> bool {
        self.bounds().iter().all(|b| b.partial_bits <= 126)
    }

    /// The exact logits of one image (pixels row by row, channel by channel) in checked
    /// i128: an error for networks whose bounds do not fit ([`PolynomialNetwork::fits_i128`]).
    pub fn logits(&self, pixels: &[u8]) -> Result<Vec<i128>, Error> {
        if !self.fits_i128() {
            return Err(overflow());
        }
        run::<i128>(self, pixels)
    }

    /// The exact logits in big integers, for any accepted network.
    pub fn logits_wide(&self, pixels: &[u8]) -> Result<Vec<BigInt>, Error> {
        run::<BigInt>(self, pixels)
    }

    /// The predicted class: the first largest logit (in i128 where the bounds allow it,
    /// which is many times faster than big integers).
    pub fn predict(&self, pixels: &[u8]) -> Result<usize, Error> {
        if self.fits_i128() {
            return Ok(crate::model::argmax(&self.logits(pixels)?));
        }
        Ok(crate::model::argmax(&self.logits_wide(pixels)?))
    }
}
