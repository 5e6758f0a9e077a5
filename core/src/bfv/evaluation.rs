//! Homomorphic operations on ciphertexts. None of them needs a secret key.

use alloc::vec::Vec;

use super::{Ciphertext, MultiplyScratch, Parameters, Plaintext, RelinearizationKey};
use crate::Error;
use crate::backend::Kernels;

/// Evaluates operations under one parameter set.
#[derive(Clone, Copy, Debug)]
pub struct Evaluator<'a> {
    pub(crate) params: &'a Parameters,
}

fn same_shape(a: &Ciphertext, b: &Ciphertext) -> Result<(), Error> {
    if a.params != b.params {
        return Err(Error::Incompatible {
            reason: "ciphertexts made under different parameters",
        });
    }
    if a.level != b.level {
        return Err(Error::Incompatible {
            reason: "ciphertexts are at different levels",
        });
    }
    if a.n != b.n {
        return Err(Error::Incompatible {
            reason: "ciphertexts have different degrees",
        });
    }
    Ok(())
}

impl<'a> Evaluator<'a> {
    /// An evaluator for these parameters.
    pub fn new(params: &'a Parameters) -> Self {
        Self { params }
    }

    pub(super) fn check(&self, ct: &Ciphertext) -> Result<(), Error> {
        self.params.check_id(ct.params)?;
        if ct.n != self.params.degree() || ct.level == 0 || ct.level > self.params.max_level() {
            return Err(Error::Incompatible {
                reason: "ciphertext does not fit these parameters",
            });
        }
        Ok(())
    }

    /// Applies `f(modulus, x, y)` to matching residues of polynomials of `a` and `b`.
    fn zip_polys(
        &self,
        a: &mut Ciphertext,
        b: &Ciphertext,
        f: impl Fn(&crate::Modulus, u32, u32) -> u32,
    ) {
        let n = self.params.degree();
        let size = a.size().max(b.size());
        a.polys.resize_with(size, || alloc::vec![0; b.level * n]);
        for (pa, pb) in a.polys.iter_mut().zip(&b.polys) {
            for (i, (la, lb)) in pa.chunks_exact_mut(n).zip(pb.chunks_exact(n)).enumerate() {
                let q = &self.params.ciphertext_basis().moduli()[i];
                la.iter_mut().zip(lb).for_each(|(x, &y)| *x = f(q, *x, y));
            }
        }
    }

    /// a += b (sizes 2 or 3, same level).
    pub fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<(), Error> {
        self.check(a)?;
        same_shape(a, b)?;
        self.zip_polys(a, b, |q, x, y| q.add(x, y));
        Ok(())
    }

    /// a + b.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, Error> {
        let mut sum = a.clone();
        self.add_assign(&mut sum, b)?;
        Ok(sum)
    }

    /// a -= b.
    pub fn sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<(), Error> {
        self.check(a)?;
        same_shape(a, b)?;
        self.zip_polys(a, b, |q, x, y| q.sub(x, y));
        Ok(())
    }

    /// a = -a.
    pub fn negate_assign(&self, a: &mut Ciphertext) -> Result<(), Error> {
        self.check(a)?;
        let n = self.params.degree();
        for p in a.polys.iter_mut() {
            for (i, limb) in p.chunks_exact_mut(n).enumerate() {
                let q = &self.params.ciphertext_basis().moduli()[i];
                limb.iter_mut().for_each(|x| *x = q.neg(*x));
            }
        }
        Ok(())
    }

    /// ct += m (plaintext): c0 += round(Q m / t).
    pub fn add_plain_assign(&self, ct: &mut Ciphertext, m: &Plaintext) -> Result<(), Error> {
        self.check(ct)?;
        self.params.check_plaintext(m)?;
        self.params
            .add_scaled_message(&mut ct.polys[0], &m.coefficients, None, false);
        Ok(())
    }

    /// ct -= m (plaintext): c0 += round(Q (t - m) / t), which is -round(Q m / t) mod Q.
    pub fn sub_plain_assign(&self, ct: &mut Ciphertext, m: &Plaintext) -> Result<(), Error> {
        self.check(ct)?;
        self.params.check_plaintext(m)?;
        let t = self.params.plaintext_modulus();
        let negated: Vec<u32> = m.coefficients.iter().map(|&c| t.neg(c)).collect();
        self.params
            .add_scaled_message(&mut ct.polys[0], &negated, None, false);
        Ok(())
    }

    /// ct *= w for an integer w (taken mod t, centered): the constant-polynomial weight of
    /// CryptoNets' linear layers. Multiplies every slot by w.
    pub fn mul_scalar_assign(&self, ct: &mut Ciphertext, w: i64) -> Result<(), Error> {
        self.check(ct)?;
        let t = self.params.plaintext_modulus();
        let w = t.center(t.reduce_i64(w));
        let n = self.params.degree();
        let backend = self.params.backend();
        for p in ct.polys.iter_mut() {
            for (i, limb) in p.chunks_exact_mut(n).enumerate() {
                let q = &self.params.ciphertext_basis().moduli()[i];
                backend.mul_scalar_assign(limb, q.shoup(q.reduce_i64(w)), q);
            }
        }
        Ok(())
    }

    /// ct += c for an integer constant c (taken mod t): c in every slot.
    pub fn add_constant_assign(&self, ct: &mut Ciphertext, c: i128) -> Result<(), Error> {
        self.check(ct)?;
        let t = self.params.plaintext_modulus();
        self.params
            .add_scaled_constant(&mut ct.polys[0], t.reduce_i128_public(c));
        Ok(())
    }

    /// sum_i w_i a_i + c: a linear layer's output in one pass per limb. Every term is a
    /// ciphertext of these parameters at `level` with `size` polynomials; weights and the
    /// constant are taken mod t (weights centered, as [`Evaluator::mul_scalar_assign`]).
    /// With no terms the result is the trivial encryption of c (the evaluator knows c).
    /// Residues are multiplied into u64 sums, reduced every 15 terms (15 products below
    /// 2^60 and a reduced residue stay below 2^64).
    pub fn linear_combination(
        &self,
        terms: &[(&Ciphertext, i64)],
        constant: i128,
        level: usize,
        size: usize,
    ) -> Result<Ciphertext, Error> {
        let params = self.params;
        if level == 0 || level > params.max_level() || !(2..=3).contains(&size) {
            return Err(Error::Incompatible {
                reason: "a linear combination's level or size does not fit these parameters",
            });
        }
        for (ct, _) in terms {
            self.check(ct)?;
            if ct.level != level || ct.size() != size {
                return Err(Error::Incompatible {
                    reason: "the terms of a linear combination differ in level or size",
                });
            }
        }
        let n = params.degree();
        let t = params.plaintext_modulus();
        let centered: Vec<i64> = terms
            .iter()
            .map(|&(_, w)| t.center(t.reduce_i64(w)))
            .collect();
        let mut polys = alloc::vec![alloc::vec![0u32; level * n]; size];
        let moduli = &params.ciphertext_basis().moduli()[..level];
        // Weights of at most 15 bits (every layer weight of a model): the backend's exact
        // weighted sums in i64, reduced once (the same residues as the path below).
        if centered.iter().all(|w| w.unsigned_abs() <= 1 << 15) && terms.len() <= 1 << 16 {
            let weights: Vec<i32> = centered.iter().map(|&w| w as i32).collect();
            let backend = params.backend();
            let mut acc = alloc::vec![0i64; n];
            let mut rows: Vec<&[u32]> = Vec::with_capacity(terms.len());
            for (i, q) in moduli.iter().enumerate() {
                for (k, out) in polys.iter_mut().enumerate() {
                    acc.iter_mut().for_each(|a| *a = 0);
                    rows.clear();
                    rows.extend(terms.iter().map(|(ct, _)| &ct.polys[k][i * n..(i + 1) * n]));
                    backend.weighted_sum(&mut acc, &rows, &weights);
                    out[i * n..(i + 1) * n]
                        .iter_mut()
                        .zip(&acc)
                        .for_each(|(o, &a)| *o = q.reduce_i64(a));
                }
            }
            let mut out = Ciphertext::from_parts(params, level, polys);
            self.add_constant_assign(&mut out, constant)?;
            return Ok(out);
        }
        let mut acc = alloc::vec![0u64; n];
        for (i, q) in moduli.iter().enumerate() {
            let weights: Vec<u64> = centered.iter().map(|&w| q.reduce_i64(w) as u64).collect();
            for (k, out) in polys.iter_mut().enumerate() {
                acc.iter_mut().for_each(|a| *a = 0);
                for (chunk, ws) in terms.chunks(15).zip(weights.chunks(15)) {
                    for ((ct, _), &w) in chunk.iter().zip(ws) {
                        let limb = &ct.polys[k][i * n..(i + 1) * n];
                        acc.iter_mut()
                            .zip(limb)
                            .for_each(|(a, &x)| *a += x as u64 * w);
                    }
                    acc.iter_mut().for_each(|a| *a = q.reduce_u64(*a) as u64);
                }
                out[i * n..(i + 1) * n]
                    .iter_mut()
                    .zip(&acc)
                    .for_each(|(o, &a)| *o = a as u32);
            }
        }
        let mut out = Ciphertext::from_parts(params, level, polys);
        self.add_constant_assign(&mut out, constant)?;
        Ok(out)
    }

    /// ct *= m for a plaintext m (slot-wise product with m's slots).
    pub fn mul_plain_assign(&self, ct: &mut Ciphertext, m: &Plaintext) -> Result<(), Error> {
        self.check(ct)?;
        self.params.check_plaintext(m)?;
        let (n, level) = (self.params.degree(), ct.level);
        let basis = self.params.ciphertext_basis();
        let backend = self.params.backend();
        let t = self.params.plaintext_modulus();
        // The centered lift of m to Q_L, in NTT form: small coefficients keep the noise small.
        let mut lifted = alloc::vec![0u32; level * n];
        for (i, limb) in lifted.chunks_exact_mut(n).enumerate() {
            let q = &basis.moduli()[i];
            limb.iter_mut()
                .zip(&m.coefficients)
                .for_each(|(x, &c)| *x = q.reduce_i64(t.center(c)));
        }
        basis.forward(backend, &mut lifted, 0);
        for p in ct.polys.iter_mut() {
            basis.forward(backend, p, 0);
            for (i, (limb, l)) in p
                .chunks_exact_mut(n)
                .zip(lifted.chunks_exact(n))
                .enumerate()
            {
                backend.mul_assign(limb, l, &basis.moduli()[i]);
            }
            basis.inverse(backend, p, 0);
        }
        Ok(())
    }

    /// a * b as a size-3 ciphertext (both of size 2, same level).
    pub fn multiply(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, Error> {
        self.multiply_with(a, b, &mut MultiplyScratch::default())
    }

    /// [`Self::multiply`] in `scratch` (reused across calls, so a loop of products allocates
    /// only their outputs).
    pub fn multiply_with(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
        scratch: &mut MultiplyScratch,
    ) -> Result<Ciphertext, Error> {
        self.check(a)?;
        same_shape(a, b)?;
        if a.size() != 2 || b.size() != 2 {
            return Err(Error::Incompatible {
                reason: "multiply takes ciphertexts of size 2",
            });
        }
        Ok(super::multiply::tensor_with(
            self.params,
            a,
            Some(b),
            a.level,
            scratch,
        ))
    }

    /// a^2 as a size-3 ciphertext (cheaper than multiply(a, a)).
    pub fn square(&self, a: &Ciphertext) -> Result<Ciphertext, Error> {
        self.square_to_level(a, a.level, &mut MultiplyScratch::default())
    }

    /// The square of a size-2 ciphertext switched down to `level` (1 to a's level): the
    /// ciphertext of [`Self::square`] followed by [`Self::mod_switch_to_next_assign`] until
    /// `level`, computed in `scratch` (reused across calls, so a loop of squares allocates
    /// only their outputs) and never written at full size.
    pub fn square_to_level(
        &self,
        a: &Ciphertext,
        level: usize,
        scratch: &mut MultiplyScratch,
    ) -> Result<Ciphertext, Error> {
        let mut out = Ciphertext::from_parts(self.params, level, Vec::new());
        self.square_to_level_into(a, level, scratch, &mut out)?;
        Ok(out)
    }

    /// [`Self::square_to_level`] written over `out`, whatever ciphertext it held (its buffers
    /// are reused, so that a loop of squares over recycled outputs allocates nothing).
    pub fn square_to_level_into(
        &self,
        a: &Ciphertext,
        level: usize,
        scratch: &mut MultiplyScratch,
        out: &mut Ciphertext,
    ) -> Result<(), Error> {
        self.check(a)?;
        if a.size() != 2 {
            return Err(Error::Incompatible {
                reason: "square takes a ciphertext of size 2",
            });
        }
        if !(1..=a.level).contains(&level) {
            return Err(Error::Incompatible {
                reason: "a square can only be switched down, to level 1 or more",
            });
        }
        super::multiply::tensor_into(self.params, a, None, level, scratch, out);
        Ok(())
    }

    /// [`Self::square_to_level_into`] of a size-2 ciphertext whose c1 is in NTT form (a linear
    /// combination of [`super::ExpandedCiphertext`]s' polynomials, which the type of `a` cannot
    /// say: crate-internal). `a`'s c1 is left holding scratch values.
    pub(crate) fn square_ntt_second_to_level_into(
        &self,
        a: &mut Ciphertext,
        level: usize,
        scratch: &mut MultiplyScratch,
        out: &mut Ciphertext,
    ) -> Result<(), Error> {
        self.check(a)?;
        if a.size() != 2 || !(1..=a.level).contains(&level) {
            return Err(Error::Incompatible {
                reason: "square takes a ciphertext of size 2, switched down to level 1 or more",
            });
        }
        super::multiply::square_ntt_second_into(self.params, a, level, scratch, out);
        Ok(())
    }

    /// The unscaled tensor of `a`'s square over Q_L u P_L in NTT and Montgomery form, written
    /// over `out` (see `multiply::square_unscaled_into`; crate-internal, as the tensor has no
    /// type of its own). `a`'s c1 is in NTT form if `second_in_ntt`, and then left holding
    /// scratch values.
    pub(crate) fn square_unscaled_into(
        &self,
        a: &mut Ciphertext,
        second_in_ntt: bool,
        scratch: &mut MultiplyScratch,
        out: &mut [Vec<u32>; 3],
    ) -> Result<(), Error> {
        self.check(a)?;
        if a.size() != 2 {
            return Err(Error::Incompatible {
                reason: "square takes a ciphertext of size 2",
            });
        }
        super::multiply::square_unscaled_into(self.params, a, second_in_ntt, scratch, out);
        Ok(())
    }

    /// `out` = a sum of square tensors of level `top` (limbs written by `fill`, see
    /// `multiply::scale_tensor_sum_into`) scaled by t/Q_top and switched down to `level`. The
    /// caller keeps the sum within [`Parameters::tensor_sum_headroom`].
    pub(crate) fn scale_tensor_sum_into(
        &self,
        top: usize,
        level: usize,
        fill: &super::multiply::TensorLimbs<'_>,
        scratch: &mut MultiplyScratch,
        out: &mut Ciphertext,
    ) -> Result<(), Error> {
        if !(1..=top).contains(&level) || top > self.params.max_level() {
            return Err(Error::Incompatible {
                reason: "a tensor is scaled from a level of the parameters, down to 1 or more",
            });
        }
        super::multiply::scale_tensor_sum_into(self.params, top, level, fill, scratch, out);
        Ok(())
    }

    /// Turns a size-3 ciphertext into a size-2 one encrypting the same plaintext.
    pub fn relinearize_assign(
        &self,
        ct: &mut Ciphertext,
        key: &RelinearizationKey,
    ) -> Result<(), Error> {
        self.check(ct)?;
        if ct.size() != 3 {
            return Err(Error::Incompatible {
                reason: "relinearization takes a ciphertext of size 3",
            });
        }
        self.params
            .check_ring(key.ring, "relinearization key made for another ring")?;
        if key.digits.len() != self.params.max_level() {
            return Err(Error::Incompatible {
                reason: "relinearization key does not fit these parameters",
            });
        }
        super::multiply::relinearize(self.params, ct, key);
        Ok(())
    }

    /// Drops the last prime of the ciphertext's modulus: c' = (c - [c]_{q_last}) / q_last.
    /// The plaintext is unchanged; the ciphertext shrinks and so does its absolute noise.
    pub fn mod_switch_to_next_assign(&self, ct: &mut Ciphertext) -> Result<(), Error> {
        self.check(ct)?;
        if ct.level < 2 {
            return Err(Error::Incompatible {
                reason: "no prime left to switch away",
            });
        }
        let n = self.params.degree();
        let level = ct.level;
        let mut lifted = alloc::vec![0u32; n];
        for p in ct.polys.iter_mut() {
            super::multiply::switch_down(self.params, p, level, &mut lifted);
            p.truncate((level - 1) * n);
        }
        ct.level -= 1;
        Ok(())
    }
}
