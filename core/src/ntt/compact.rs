//! The same negacyclic transform as [`NttTable`](super::NttTable) with no table: each stage's
//! twiddles are generated as it runs.
//!
//! A table holds 4n words (128 KiB a prime at n = 8192); a microcontroller that encrypts
//! its own input (SEAL-Embedded's case: 136 KiB of RAM in all) cannot hold one. Stage m of
//! the forward transform uses the twiddles psi^bitrev(m + i), i < m, and
//! bitrev_{log n}(m + i) = n / 2m + (n / m) bitrev_{log m}(i): visiting the butterfly groups
//! in the order of bitrev_{log m}(i) (they are independent), the twiddle is a running product
//! psi^(n/2m) (psi^(n/m))^r, one Montgomery product a group. The transform is canonical, so
//! the outputs are bit for bit those of every backend's table-driven transform.
//!
//! Everything here is scalar and public-data friendly: the loops depend on n only, never on
//! the values (the secret key goes through the forward transform).

use crate::Error;
use crate::zq::Modulus;

use super::{MAX_DEGREE, MIN_DEGREE, bit_reverse, smallest_primitive_root};

/// The negacyclic NTT of degree n modulo one prime, with constant memory (a few words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactNtt {
    modulus: Modulus,
    n: usize,
    /// psi, the smallest primitive 2n-th root of unity, and its inverse (plain form).
    psi: u32,
    psi_inv: u32,
    /// n^-1 in Montgomery form.
    n_inv_montgomery: u32,
}

impl CompactNtt {
    /// The transform of degree n modulo q: the same checks as [`super::NttTable::new`]
    /// (n a power of two in [`MIN_DEGREE`]..=[`MAX_DEGREE`], q = 1 mod 2n).
    pub fn new(modulus: Modulus, n: usize) -> Result<Self, Error> {
        if !n.is_power_of_two() || !(MIN_DEGREE..=MAX_DEGREE).contains(&n) {
            return Err(Error::InvalidDegree { n });
        }
        let psi = smallest_primitive_root(&modulus, n)?;
        let n_inv = modulus.inv(n as u32 % modulus.value());
        Ok(Self {
            modulus,
            n,
            psi,
            psi_inv: modulus.inv(psi),
            n_inv_montgomery: modulus.to_montgomery(n_inv),
        })
    }

    /// The ring degree n.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The modulus q.
    pub fn modulus(&self) -> &Modulus {
        &self.modulus
    }

    /// The primitive 2n-th root of unity the transform evaluates at.
    pub fn psi(&self) -> u32 {
        self.psi
    }

    /// (root^(n/2m), root^(n/m)) in Montgomery form: stage m's first twiddle and its step.
    fn stage_twiddles(&self, root: u32, m: usize) -> (u32, u32) {
        let q = &self.modulus;
        let first = q.pow(root, (self.n / (2 * m)) as u64);
        (q.to_montgomery(first), q.to_montgomery(q.mul(first, first)))
    }

    /// In place: `a[i] = a(psi^(2 bitrev(i) + 1))`, residues in [0, q) in and out.
    ///
    /// # Panics
    /// If `a` does not hold n coefficients (a caller's bug: the lengths are the caller's).
    pub fn forward(&self, a: &mut [u32]) {
        assert_eq!(a.len(), self.n, "one polynomial of the transform's degree");
        let q = &self.modulus;
        let mut m = 1;
        while m < self.n {
            let half = self.n / (2 * m);
            let (mut twiddle, step) = self.stage_twiddles(self.psi, m);
            for r in 0..m {
                let group = bit_reverse(r, m.trailing_zeros());
                let (low, high) = a[2 * group * half..2 * (group + 1) * half].split_at_mut(half);
                for (x, y) in low.iter_mut().zip(high.iter_mut()) {
                    let v = q.mul_montgomery(*y, twiddle);
                    (*x, *y) = (q.add(*x, v), q.sub(*x, v));
                }
                twiddle = q.mul_montgomery(twiddle, step);
            }
            m *= 2;
        }
    }

    /// In place, the inverse of [`CompactNtt::forward`] (scaled by n^-1).
    ///
    /// # Panics
    /// If `a` does not hold n coefficients.
    pub fn inverse(&self, a: &mut [u32]) {
        assert_eq!(a.len(), self.n, "one polynomial of the transform's degree");
        let q = &self.modulus;
        let mut m = self.n / 2;
        while m >= 1 {
            let half = self.n / (2 * m);
            let (mut twiddle, step) = self.stage_twiddles(self.psi_inv, m);
            for r in 0..m {
                let group = bit_reverse(r, m.trailing_zeros());
                let (low, high) = a[2 * group * half..2 * (group + 1) * half].split_at_mut(half);
                for (x, y) in low.iter_mut().zip(high.iter_mut()) {
                    let (sum, difference) = (q.add(*x, *y), q.sub(*x, *y));
                    (*x, *y) = (sum, q.mul_montgomery(difference, twiddle));
                }
                twiddle = q.mul_montgomery(twiddle, step);
            }
            m /= 2;
        }
        for x in a.iter_mut() {
            *x = q.mul_montgomery(*x, self.n_inv_montgomery);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Kernels, Portable};
    use crate::ntt::NttTable;
    use crate::zq::prime::ntt_primes;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    /// The polynomial evaluated at psi^(2 bitrev(i) + 1), straight from the definition.
    fn naive_forward(q: &Modulus, psi: u32, a: &[u32]) -> alloc::vec::Vec<u32> {
        let n = a.len();
        (0..n)
            .map(|i| {
                let x = q.pow(psi, (2 * bit_reverse(i, n.trailing_zeros()) + 1) as u64);
                a.iter().rev().fold(0, |acc, &c| q.add(q.mul(acc, x), c))
            })
            .collect()
    }

    #[test]
    fn matches_the_tables_and_the_definition_bit_for_bit() {
        let mut rng = ChaCha20Rng::seed_from_u64(17);
        for (n, bits) in [(128, 30), (256, 20), (1024, 30), (8192, 30), (8192, 20)] {
            for q in ntt_primes(bits, n).take(2) {
                let modulus = Modulus::new(q).unwrap();
                let compact = CompactNtt::new(modulus, n).unwrap();
                let table = NttTable::new(modulus, n).unwrap();
                assert_eq!(compact.psi(), table.psi());
                let random: alloc::vec::Vec<u32> = (0..n).map(|_| rng.next_u32() % q).collect();
                // The largest residues everywhere: the products and sums at their bounds.
                let largest = alloc::vec![q - 1; n];
                for a in [random, largest] {
                    let mut ours = a.clone();
                    compact.forward(&mut ours);
                    let mut theirs = a.clone();
                    Portable.forward_ntt(&mut theirs, &table);
                    assert_eq!(ours, theirs, "forward, n = {n}, q = {q}");
                    if n <= 256 {
                        assert_eq!(ours, naive_forward(&modulus, compact.psi(), &a));
                    }
                    let mut back = ours.clone();
                    compact.inverse(&mut back);
                    Portable.inverse_ntt(&mut ours, &table);
                    assert_eq!(back, ours, "inverse, n = {n}, q = {q}");
                    assert_eq!(back, a);
                }
            }
        }
    }

    #[test]
    fn refuses_what_a_table_refuses() {
        let q = Modulus::new(ntt_primes(30, 1024).next().unwrap()).unwrap();
        assert!(matches!(
            CompactNtt::new(q, 100),
            Err(Error::InvalidDegree { .. })
        ));
        assert!(matches!(
            CompactNtt::new(q, 65536),
            Err(Error::InvalidDegree { .. })
        ));
        let not_friendly = Modulus::new(1_000_000_007).unwrap();
        assert!(matches!(
            CompactNtt::new(not_friendly, 1024),
            Err(Error::NotNttFriendly { .. })
        ));
    }
}
