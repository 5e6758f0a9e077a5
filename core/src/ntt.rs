//! Tables for the negacyclic number-theoretic transform over Z_q[X]/(X^n + 1).
//!
//! The transform is the one every backend computes, bit for bit:
//! `forward(a)[i] = a(psi^(2 * bitrev(i) + 1)) mod q`, with `psi` the *smallest*
//! primitive 2n-th root of unity mod q and `bitrev` the log2(n)-bit reversal.
//! Choosing the smallest root makes the transform canonical, so an independent
//! generator can reproduce the known-answer vectors in `vectors/`.
//!
//! Forward uses Cooley-Tukey butterflies on bit-reversed powers of psi and
//! Harvey's lazy ranges ([0, 4q) between stages); inverse uses Gentleman-Sande
//! butterflies on powers of psi^-1 ([0, 2q) between stages) with the scaling by
//! n^-1 folded into its last stage. Both take and return residues in [0, q).

use crate::Error;
use crate::zq::{Modulus, ShoupConstant};

mod compact;
pub use compact::CompactNtt;

/// Smallest supported ring degree: two 64-coefficient blocks, so that the last inverse stage
/// (which carries the 1/n scaling) always lies outside a block.
pub const MIN_DEGREE: usize = 128;
/// Largest supported ring degree.
pub const MAX_DEGREE: usize = 32768;

/// Coefficients per tail block: 8 rows of 8 lanes, transposed so that the last
/// three stages (distances 4, 2, 1) pair whole vectors instead of lanes.
pub(crate) const TAIL_BLOCK: usize = 64;
/// Words of tail twiddles per block: (8 + 2 * 8 + 4 * 8) twiddles, each with its Shoup quotient.
/// Only targets with a vector backend store them (a Cortex-M has no use for 7n/2 words).
pub(crate) const TAIL_WORDS: usize = if HAS_VECTOR_BACKEND { 112 } else { 0 };
const HAS_VECTOR_BACKEND: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Twiddle factors and constants of the negacyclic NTT of degree n modulo one prime.
///
/// `S` is the storage: a `Vec<u32>` with the `alloc` feature ([`NttTable::new`]), or
/// any caller-provided buffer of [`NttTable::storage_len`] words ([`NttTable::new_in`]).
#[derive(Clone, Debug)]
pub struct NttTable<S> {
    modulus: Modulus,
    n: usize,
    psi: u32,
    /// n^-1, applied to the sums of the last inverse stage.
    n_inv: ShoupConstant,
    /// psi^-(n/2) * n^-1 (inverse twiddle 1 times n^-1), for the differences of that stage.
    n_inv_twiddle: ShoupConstant,
    storage: S,
}

/// Reverses the low `bits` bits of i.
pub(crate) const fn bit_reverse(i: usize, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        i.reverse_bits() >> (usize::BITS - bits)
    }
}

/// The smallest primitive 2n-th root of unity mod q. Public data: variable time.
pub fn smallest_primitive_root(modulus: &Modulus, n: usize) -> Result<u32, Error> {
    let q = modulus.value();
    let order = 2 * n as u64;
    if !n.is_power_of_two() || !(q as u64 - 1).is_multiple_of(order) {
        return Err(Error::NotNttFriendly { modulus: q, n });
    }
    let cofactor = (q as u64 - 1) / order;
    // Some g^cofactor has order exactly 2n: x^n = -1. At least half of all g qualify.
    let root = (2..q)
        .map(|g| modulus.pow(g, cofactor))
        .find(|&x| modulus.pow(x, n as u64) == q - 1)
        .ok_or(Error::NotNttFriendly { modulus: q, n })?;
    // The primitive 2n-th roots are exactly root^k for odd k.
    let root_squared = modulus.mul(root, root);
    let mut power = root;
    let mut smallest = root;
    for _ in 0..n {
        smallest = smallest.min(power);
        power = modulus.mul(power, root_squared);
    }
    Ok(smallest)
}

impl<S> NttTable<S> {
    /// Words of storage a table of degree n needs.
    pub const fn storage_len(n: usize) -> usize {
        4 * n + 2 * (n / TAIL_BLOCK) * TAIL_WORDS
    }

    /// The ring degree n.
    #[inline(always)]
    pub fn n(&self) -> usize {
        self.n
    }

    /// The modulus q.
    #[inline(always)]
    pub fn modulus(&self) -> &Modulus {
        &self.modulus
    }

    /// The primitive 2n-th root of unity the transform evaluates at.
    pub fn psi(&self) -> u32 {
        self.psi
    }

    /// The last inverse stage's two multipliers, [`Self::n_inv`] and [`Self::n_inv_twiddle`],
    /// times `factor` (below q): an inverse transform whose output is also multiplied by it.
    pub(crate) fn last_inverse_multipliers(&self, factor: u32) -> (ShoupConstant, ShoupConstant) {
        let m = &self.modulus;
        if factor == 1 {
            return (self.n_inv, self.n_inv_twiddle);
        }
        (
            m.shoup(m.mul(self.n_inv.value, factor)),
            m.shoup(m.mul(self.n_inv_twiddle.value, factor)),
        )
    }
}

impl<S: AsRef<[u32]>> NttTable<S> {
    fn section(&self, index: usize) -> &[u32] {
        let n = self.n;
        let tail = (n / TAIL_BLOCK) * TAIL_WORDS;
        let start = [0, n, 2 * n, 3 * n, 4 * n, 4 * n + tail, 4 * n + 2 * tail][index];
        let end = [n, 2 * n, 3 * n, 4 * n, 4 * n + tail, 4 * n + 2 * tail][index];
        &self.storage.as_ref()[start..end]
    }

    /// Bit-reversed powers psi^bitrev(i) and their Shoup quotients (forward, stage by stage).
    #[inline(always)]
    pub(crate) fn forward_twiddles(&self) -> (&[u32], &[u32]) {
        (self.section(0), self.section(1))
    }

    /// Bit-reversed powers psi^-bitrev(i) and their Shoup quotients.
    #[inline(always)]
    pub(crate) fn inverse_twiddles(&self) -> (&[u32], &[u32]) {
        (self.section(2), self.section(3))
    }

    /// Per-lane twiddles of the last three forward stages, [`TAIL_WORDS`] per block.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[inline(always)]
    pub(crate) fn forward_tail(&self) -> &[u32] {
        self.section(4)
    }

    /// Per-lane twiddles of the first three inverse stages, [`TAIL_WORDS`] per block.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[inline(always)]
    pub(crate) fn inverse_tail(&self) -> &[u32] {
        self.section(5)
    }
}

impl<S: AsRef<[u32]> + AsMut<[u32]>> NttTable<S> {
    /// Builds the table in caller-provided storage of exactly [`Self::storage_len`] words.
    ///
    /// Errors if n is not a power of two in [`MIN_DEGREE`]..=[`MAX_DEGREE`], if q is not
    /// 1 mod 2n, or if the storage has the wrong length.
    pub fn new_in(modulus: Modulus, n: usize, mut storage: S) -> Result<Self, Error> {
        if !n.is_power_of_two() || !(MIN_DEGREE..=MAX_DEGREE).contains(&n) {
            return Err(Error::InvalidDegree { n });
        }
        let expected = Self::storage_len(n);
        let actual = storage.as_ref().len();
        if actual != expected {
            return Err(Error::BufferLength { expected, actual });
        }
        let psi = smallest_primitive_root(&modulus, n)?;
        let psi_inv = modulus.inv(psi);
        let log_n = n.trailing_zeros();
        let words = storage.as_mut();
        let (powers, tails) = words.split_at_mut(4 * n);
        let (forward, inverse) = powers.split_at_mut(2 * n);
        for (root, table) in [(psi, &mut *forward), (psi_inv, &mut *inverse)] {
            let (values, quotients) = table.split_at_mut(n);
            let mut power = 1;
            for i in 0..n {
                let slot = bit_reverse(i, log_n);
                values[slot] = power;
                quotients[slot] = modulus.shoup(power).quotient;
                power = modulus.mul(power, root);
            }
        }
        if HAS_VECTOR_BACKEND {
            let (forward_tail, inverse_tail) = tails.split_at_mut(tails.len() / 2);
            fill_tail(forward, forward_tail, n);
            fill_tail(inverse, inverse_tail, n);
        }

        let n_inv = modulus.inv(n as u32 % modulus.value());
        let n_inv_twiddle = modulus.mul(n_inv, inverse[1]);
        Ok(Self {
            modulus,
            n,
            psi,
            n_inv: modulus.shoup(n_inv),
            n_inv_twiddle: modulus.shoup(n_inv_twiddle),
            storage,
        })
    }
}

/// Lays out the twiddles of the three stages with distances 4, 2 and 1 for transposed blocks.
///
/// In block b, after the 8x8 transpose, lane r of vector c holds coefficient 64b + 8r + c.
/// The butterfly group of that coefficient at distance t is (64b + 8r + c) / 2t, which
/// for each pair of vectors depends on the lane r only: one twiddle vector per pair.
fn fill_tail(powers: &[u32], tail: &mut [u32], n: usize) {
    let (values, quotients) = powers.split_at(n);
    for (block, out) in tail.chunks_exact_mut(TAIL_WORDS).enumerate() {
        let mut words = out.chunks_exact_mut(8);
        // (stage base m = n / 2t, groups per row, twiddle vectors at this stage)
        for (m, per_row) in [(n / 8, 1), (n / 4, 2), (n / 2, 4)] {
            for k in 0..per_row {
                let index = |r: usize| m + (block * 8 + r) * per_row + k;
                let w = words.next().expect("layout has room");
                w.iter_mut()
                    .enumerate()
                    .for_each(|(r, x)| *x = values[index(r)]);
                let wq = words.next().expect("layout has room");
                wq.iter_mut()
                    .enumerate()
                    .for_each(|(r, x)| *x = quotients[index(r)]);
            }
        }
    }
}

#[cfg(feature = "alloc")]
impl NttTable<alloc::vec::Vec<u32>> {
    /// Builds a table that owns its storage.
    pub fn new(modulus: Modulus, n: usize) -> Result<Self, Error> {
        let len = if n.is_power_of_two() && n <= MAX_DEGREE {
            Self::storage_len(n)
        } else {
            0
        };
        Self::new_in(modulus, n, alloc::vec![0; len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zq::prime::ntt_primes;

    #[test]
    fn roots_are_smallest_and_primitive() {
        for n in [128, 1024, 8192] {
            let q = ntt_primes(30, n).next().unwrap();
            let m = Modulus::new(q).unwrap();
            let psi = smallest_primitive_root(&m, n).unwrap();
            assert_eq!(m.pow(psi, n as u64), q - 1);
            if n == 128 {
                for x in 2..psi {
                    assert_ne!(m.pow(x, n as u64), q - 1, "{x} is a smaller root");
                }
            }
        }
    }

    #[test]
    fn rejects_bad_degrees_and_moduli() {
        let m = Modulus::new(ntt_primes(30, 1024).next().unwrap()).unwrap();
        for n in [0, 1, 32, 64, 100, 65536] {
            assert!(matches!(
                NttTable::new(m, n),
                Err(Error::InvalidDegree { .. })
            ));
        }
        let not_friendly = Modulus::new(1_000_000_007).unwrap();
        assert!(matches!(
            NttTable::new(not_friendly, 1024),
            Err(Error::NotNttFriendly { .. })
        ));
        let mut short = [0u32; 10];
        assert!(matches!(
            NttTable::new_in(m, 128, &mut short[..]),
            Err(Error::BufferLength { .. })
        ));
    }

    #[test]
    fn builds_in_caller_storage() {
        let m = Modulus::new(ntt_primes(30, 128).next().unwrap()).unwrap();
        let mut buffer = [0u32; NttTable::<&mut [u32]>::storage_len(128)];
        let table = NttTable::new_in(m, 128, &mut buffer[..]).unwrap();
        let owned = NttTable::new(m, 128).unwrap();
        assert_eq!(&*table.storage, owned.storage.as_slice());
    }
}
