//! Worst-case bounds by interval propagation, neuron by neuron, in exact big integers: no
//! wrap anywhere, and bounds past 128 bits are fine (the plaintext is CRT-split).

use alloc::vec::Vec;

use num_bigint::BigInt;
use num_traits::{Signed, Zero};

use super::{Layer, MAX_BOUND_BITS, Shape};
use crate::Error;

/// The range of one layer's outputs over every possible input, over all its neurons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBounds {
    /// The least value any neuron takes.
    pub low: BigInt,
    /// The largest.
    pub high: BigInt,
    /// Bits of the largest magnitude (0 for a layer that is always 0).
    pub bits: u32,
    /// Bits of a bound on every partial sum and product that plaintext inference forms in
    /// this layer (|bias| + sum |w| M, or sum |c_k| M^k, for the largest input magnitude M):
    /// terms may cancel in the result, not in the partial values.
    pub partial_bits: u32,
}

/// A closed interval [lo, hi].
#[derive(Clone, Debug)]
struct Interval {
    lo: BigInt,
    hi: BigInt,
}

impl Interval {
    fn point(x: BigInt) -> Self {
        Self {
            lo: x.clone(),
            hi: x,
        }
    }

    fn scale(&self, c: i64) -> Self {
        let (a, b) = (&self.lo * c, &self.hi * c);
        match c >= 0 {
            true => Self { lo: a, hi: b },
            false => Self { lo: b, hi: a },
        }
    }

    fn add(&self, other: &Self) -> Self {
        Self {
            lo: &self.lo + &other.lo,
            hi: &self.hi + &other.hi,
        }
    }

    fn square(&self) -> Self {
        let (a, b) = (&self.lo * &self.lo, &self.hi * &self.hi);
        if !self.lo.is_negative() {
            Self { lo: a, hi: b }
        } else if !self.hi.is_positive() {
            Self { lo: b, hi: a }
        } else {
            Self {
                lo: BigInt::zero(),
                hi: a.max(b),
            }
        }
    }

    fn cube(&self) -> Self {
        Self {
            lo: &self.lo * &self.lo * &self.lo,
            hi: &self.hi * &self.hi * &self.hi,
        }
    }

    /// A sound enclosure of c0 + c1 x + c2 x^2 + c3 x^3 over the interval, term by term.
    fn polynomial(&self, c: &[i64; 4]) -> Self {
        let mut out = Interval::point(BigInt::from(c[0]));
        if c[1] != 0 {
            out = out.add(&self.scale(c[1]));
        }
        if c[2] != 0 {
            out = out.add(&self.square().scale(c[2]));
        }
        if c[3] != 0 {
            out = out.add(&self.cube().scale(c[3]));
        }
        out
    }
}

fn summarize(intervals: &[Interval], partial: &BigInt) -> Result<LayerBounds, Error> {
    let low = intervals
        .iter()
        .map(|i| &i.lo)
        .min()
        .cloned()
        .unwrap_or_default();
    let high = intervals
        .iter()
        .map(|i| &i.hi)
        .max()
        .cloned()
        .unwrap_or_default();
    let bits = low.magnitude().bits().max(high.magnitude().bits());
    if bits > MAX_BOUND_BITS {
        return Err(Error::Malformed {
            reason: "a layer's worst-case magnitude exceeds 2^200",
        });
    }
    Ok(LayerBounds {
        low,
        high,
        bits: bits as u32,
        partial_bits: partial.magnitude().bits().max(bits) as u32,
    })
}

/// The bounds of every layer (shapes already checked), for pixels quantized to
/// 0..=levels.
pub(super) fn propagate(
    input: Shape,
    levels: u16,
    layers: &[Layer],
    shapes: &[Shape],
) -> Result<Vec<LayerBounds>, Error> {
    let pixel = Interval {
        lo: BigInt::zero(),
        hi: BigInt::from(levels),
    };
    let mut current = alloc::vec![pixel; input.len()];
    let mut shape = input;
    // The largest magnitude of the current layer's values.
    let mut magnitude = BigInt::from(levels);
    let mut out = Vec::with_capacity(layers.len());
    for (layer, &next_shape) in layers.iter().zip(shapes) {
        let mut partial = magnitude.clone();
        current = match layer {
            Layer::Flatten => current,
            Layer::Polynomial { coefficients } => {
                let mut power = BigInt::from(1);
                partial = BigInt::zero();
                for &c in coefficients {
                    partial += &power * BigInt::from(c).abs();
                    power *= &magnitude;
                }
                current.iter().map(|x| x.polynomial(coefficients)).collect()
            }
            _ => {
                let mut next = alloc::vec![Interval::point(BigInt::zero()); next_shape.len()];
                let mut widest = BigInt::zero();
                layer.for_each_row(shape, |o, taps, bias| -> Result<(), Error> {
                    let mut acc = Interval::point(BigInt::from(bias));
                    let mut l1 = BigInt::zero();
                    for &(i, w) in taps {
                        acc = acc.add(&current[i as usize].scale(w));
                        l1 += w.unsigned_abs();
                    }
                    widest = widest
                        .clone()
                        .max(BigInt::from(bias).abs() + l1 * &magnitude);
                    next[o] = acc;
                    Ok(())
                })?;
                partial = widest;
                next
            }
        };
        let bounds = summarize(&current, &partial)?;
        magnitude = bounds.low.abs().max(bounds.high.abs());
        out.push(bounds);
        shape = next_shape;
    }
    Ok(out)
}
