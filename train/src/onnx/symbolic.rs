//! What a value of the graph is, in terms of the tensor the last layer outputs (the base
//! z): a polynomial of degree at most 3 applied neuron by neuron, whose coefficients are
//! the same for every channel or one per channel. Elementwise Add, Sub, Mul, Div, Pow and
//! BatchNormalization compose here; a layer reading the value folds or materializes it.

/// c_0 + c_1 z + c_2 z^2 + c_3 z^3, each c_k a vector of one entry (every channel) or of
/// one entry per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelPolynomial {
    coefficients: [Vec<f64>; 4],
}

/// The length two coefficient vectors broadcast to.
fn broadcast(a: usize, b: usize) -> Result<usize, String> {
    match (a, b) {
        (1, n) | (n, 1) => Ok(n),
        (m, n) if m == n => Ok(n),
        (m, n) => Err(format!("{m} and {n} channels do not broadcast")),
    }
}

fn at(v: &[f64], c: usize) -> f64 {
    if v.len() == 1 { v[0] } else { v[c] }
}

impl ChannelPolynomial {
    /// z itself.
    pub fn identity() -> Self {
        Self {
            coefficients: [vec![0.0], vec![1.0], vec![0.0], vec![0.0]],
        }
    }

    /// a_c z + b_c.
    pub fn affine(a: Vec<f64>, b: Vec<f64>) -> Self {
        Self {
            coefficients: [b, a, vec![0.0], vec![0.0]],
        }
    }

    /// Channels the coefficients distinguish (1 when uniform).
    pub fn channels(&self) -> usize {
        self.coefficients.iter().map(Vec::len).max().unwrap_or(1)
    }

    /// The highest power with a non-zero coefficient.
    pub fn degree(&self) -> usize {
        (0..4)
            .rev()
            .find(|&k| self.coefficients[k].iter().any(|&c| c != 0.0))
            .unwrap_or(0)
    }

    pub fn is_identity(&self) -> bool {
        *self == Self::identity()
            || (self.degree() == 1
                && self.coefficients[0].iter().all(|&c| c == 0.0)
                && self.coefficients[1].iter().all(|&c| c == 1.0))
    }

    /// The coefficients when they are the same on every channel.
    pub fn uniform(&self) -> Option<[f64; 4]> {
        let mut out = [0.0; 4];
        for (k, v) in self.coefficients.iter().enumerate() {
            let tolerance = 1e-12 * v.iter().fold(0f64, |m, c| m.max(c.abs()));
            if v.iter().any(|&c| (c - v[0]).abs() > tolerance) {
                return None;
            }
            out[k] = v[0];
        }
        Some(out)
    }

    /// Coefficient k on channel c.
    pub fn coefficient(&self, k: usize, c: usize) -> f64 {
        at(&self.coefficients[k], c)
    }

    /// (a_c z + b_c) of a polynomial of degree at most 1.
    pub fn as_affine(&self, c: usize) -> (f64, f64) {
        (self.coefficient(1, c), self.coefficient(0, c))
    }

    fn zip(&self, other: &Self, f: impl Fn(f64, f64) -> f64) -> Result<Self, String> {
        let mut coefficients: [Vec<f64>; 4] = Default::default();
        for (out, (a, b)) in coefficients
            .iter_mut()
            .zip(self.coefficients.iter().zip(&other.coefficients))
        {
            let n = broadcast(a.len(), b.len())?;
            *out = (0..n).map(|c| f(at(a, c), at(b, c))).collect();
        }
        Ok(Self { coefficients })
    }

    pub fn add(&self, other: &Self) -> Result<Self, String> {
        self.zip(other, |a, b| a + b)
    }

    pub fn sub(&self, other: &Self) -> Result<Self, String> {
        self.zip(other, |a, b| a - b)
    }

    /// s_c p(z) + t_c.
    pub fn scale_shift(&self, s: &[f64], t: &[f64]) -> Result<Self, String> {
        let n = broadcast(broadcast(self.channels(), s.len())?, t.len())?;
        let mut coefficients: [Vec<f64>; 4] = Default::default();
        for (k, out) in coefficients.iter_mut().enumerate() {
            *out = (0..n)
                .map(|c| at(s, c) * self.coefficient(k, c) + if k == 0 { at(t, c) } else { 0.0 })
                .collect();
        }
        Ok(Self { coefficients })
    }

    /// The product, refused above degree 3.
    pub fn mul(&self, other: &Self) -> Result<Self, String> {
        if self.degree() + other.degree() > 3 {
            return Err(
                "the product has degree above 3 (activations are polynomials of degree 1 to 3)"
                    .into(),
            );
        }
        let n = broadcast(self.channels(), other.channels())?;
        // Degrees add up to at most 3, so i + j never passes 3.
        let coefficients = std::array::from_fn(|k| {
            (0..n)
                .map(|c| {
                    (0..=k)
                        .map(|i| self.coefficient(i, c) * other.coefficient(k - i, c))
                        .sum()
                })
                .collect()
        });
        Ok(Self { coefficients })
    }

    /// p(alpha_c z + beta_c): the same value written over a new base z' where
    /// z = alpha_c z' + beta_c.
    pub fn substitute(&self, alpha: &[f64], beta: &[f64]) -> Result<Self, String> {
        let inner = Self::affine(alpha.to_vec(), beta.to_vec());
        let mut power = Self::affine(vec![0.0], vec![1.0]); // 1
        let n = broadcast(self.channels(), inner.channels())?;
        let mut out = Self {
            coefficients: std::array::from_fn(|_| vec![0.0; n]),
        };
        for k in 0..=self.degree() {
            let ck = self.coefficients[k].clone();
            out = out.add(&power.scale_shift(&ck, &[0.0])?)?;
            if k < self.degree() {
                power = power.mul(&inner)?;
            }
        }
        Ok(out)
    }

    /// Coefficients per channel repeated `per` times: the same value after flattening C
    /// channels of `per` neurons each into C * per features.
    pub fn expand(&self, per: usize) -> Self {
        Self {
            coefficients: self.coefficients.clone().map(|v| {
                if v.len() == 1 {
                    v
                } else {
                    v.iter()
                        .flat_map(|&c| std::iter::repeat_n(c, per))
                        .collect()
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(p: &ChannelPolynomial, c: usize, z: f64) -> f64 {
        (0..4).map(|k| p.coefficient(k, c) * z.powi(k as i32)).sum()
    }

    #[test]
    fn composition_matches_evaluation() {
        let x = ChannelPolynomial::affine(vec![2.0, -0.5], vec![1.0, 3.0]);
        let sq = x.mul(&x).unwrap();
        let cube = sq.mul(&x).unwrap();
        for c in 0..2 {
            for z in [-1.5, 0.0, 0.25, 2.0] {
                let v = eval(&x, c, z);
                assert!((eval(&cube, c, z) - v * v * v).abs() < 1e-12);
            }
        }
        assert!(cube.mul(&x).is_err());
        // z = alpha z' + beta: p(z) = q(z').
        let q = cube.substitute(&[0.5, 4.0], &[-1.0, 0.5]).unwrap();
        for c in 0..2 {
            for z2 in [-1.0, 0.3, 1.7] {
                let z = [0.5, 4.0][c] * z2 + [-1.0, 0.5][c];
                assert!((eval(&q, c, z2) - eval(&cube, c, z)).abs() < 1e-9);
            }
        }
        let flat = x.expand(3);
        assert_eq!(flat.channels(), 6);
        assert_eq!(flat.as_affine(4), (-0.5, 3.0));
        assert!(ChannelPolynomial::identity().is_identity());
        assert_eq!(sq.degree(), 2);
        assert!(
            ChannelPolynomial::affine(vec![1.0; 3], vec![1.0; 2])
                .add(&x)
                .is_err()
        );
    }
}
