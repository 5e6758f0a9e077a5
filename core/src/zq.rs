//! Arithmetic modulo one prime q < 2^30.
//!
//! Residues are `u32`. The 30-bit bound leaves two spare bits so that the
//! lazy ranges [0, 2q) and [0, 4q) of Harvey's NTT butterflies fit a word,
//! and 32-bit lanes let AVX2 and NEON process 8 and 4 residues per register.
//!
//! Every operation here is constant-time in its operands: reductions use
//! arithmetic masks or `subtle`, never a branch, a table index or a division
//! on data. Only [`Modulus::pow`]'s *exponent* and [`Modulus::new`]'s
//! validation may depend on public values.

use subtle::{Choice, ConditionallySelectable};

use crate::Error;

pub mod prime;

/// Largest supported modulus size in bits (see the module documentation).
pub const MAX_MODULUS_BITS: u32 = 30;

/// An odd prime modulus q < 2^30 with its precomputed reduction constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modulus {
    q: u32,
    /// q^-1 mod 2^32, for Montgomery reduction.
    q_inv: u32,
    /// 2^32 mod q: converts a Montgomery product back with one Shoup multiply.
    r: ShoupConstant,
    /// 2^64 mod q: converts into Montgomery form.
    r2: u32,
    /// floor(2^64 / q), for Barrett reduction of 64-bit values.
    barrett: u64,
}

/// A multiplier w < q with its Shoup companion floor(w * 2^32 / q).
///
/// Multiplying by a fixed w this way costs two low and one high product and
/// needs no correction step beyond an optional final subtraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ShoupConstant {
    /// The multiplier, in [0, q).
    pub value: u32,
    /// floor(value * 2^32 / q).
    pub quotient: u32,
}

/// x - q if x >= q, else x. Requires x < 2q and q < 2^31. Branch-free.
#[inline(always)]
pub(crate) const fn reduce_once(x: u32, q: u32) -> u32 {
    let y = x.wrapping_sub(q);
    // The top bit of y is set exactly when x < q (no wrap-around otherwise, as x < 2q < 2^32).
    let borrow_mask = 0u32.wrapping_sub(y >> 31);
    y.wrapping_add(q & borrow_mask)
}

/// Montgomery REDC of t < q * 2^32: returns t * 2^-32 mod q in [0, q).
#[inline(always)]
const fn redc(t: u64, q: u32, q_inv: u32) -> u32 {
    let m = (t as u32).wrapping_mul(q_inv);
    // t - m*q is divisible by 2^32 and lies in (-q 2^32, q 2^32): its high word is in (-q, q).
    let hi = (t >> 32) as u32;
    let mq_hi = ((m as u64 * q as u64) >> 32) as u32;
    reduce_once(hi.wrapping_sub(mq_hi).wrapping_add(q), q)
}

impl Modulus {
    /// Validates q (odd prime, 3 <= q < 2^30) and precomputes its constants.
    pub fn new(q: u32) -> Result<Self, Error> {
        if q >> MAX_MODULUS_BITS != 0 {
            return Err(Error::InvalidModulus {
                value: q as u64,
                reason: "must be below 2^30",
            });
        }
        if !prime::is_prime(q as u64) || q == 2 {
            return Err(Error::InvalidModulus {
                value: q as u64,
                reason: "must be an odd prime",
            });
        }
        Ok(Self::new_unchecked_prime(q))
    }

    /// Precomputes the constants of an odd q < 2^30 already known to be prime.
    const fn new_unchecked_prime(q: u32) -> Self {
        // Newton iteration for the inverse of an odd number mod 2^32: each step doubles the
        // number of correct low bits, starting from 3 (q * q = 1 mod 8 for odd q).
        let mut q_inv = q;
        let mut i = 0;
        while i < 4 {
            q_inv = q_inv.wrapping_mul(2u32.wrapping_sub(q.wrapping_mul(q_inv)));
            i += 1;
        }
        let r = ((1u64 << 32) % q as u64) as u32;
        let r2 = ((r as u64 * r as u64) % q as u64) as u32;
        let barrett = u64::MAX / q as u64; // q is not a power of two, so this is floor(2^64 / q)
        let r_quotient = (((r as u64) << 32) / q as u64) as u32;
        Self {
            q,
            q_inv,
            r: ShoupConstant {
                value: r,
                quotient: r_quotient,
            },
            r2,
            barrett,
        }
    }

    /// The modulus q.
    #[inline(always)]
    pub const fn value(&self) -> u32 {
        self.q
    }

    /// Number of bits of q.
    pub const fn bits(&self) -> u32 {
        32 - self.q.leading_zeros()
    }

    /// q^-1 mod 2^32 (Montgomery constant).
    #[inline(always)]
    pub const fn q_inv(&self) -> u32 {
        self.q_inv
    }

    /// 2^32 mod q with its Shoup quotient.
    #[inline(always)]
    pub const fn montgomery_r(&self) -> ShoupConstant {
        self.r
    }

    /// (a + b) mod q for a, b in [0, q).
    #[inline(always)]
    pub const fn add(&self, a: u32, b: u32) -> u32 {
        reduce_once(a + b, self.q)
    }

    /// (a - b) mod q for a, b in [0, q).
    #[inline(always)]
    pub const fn sub(&self, a: u32, b: u32) -> u32 {
        reduce_once(a + self.q - b, self.q)
    }

    /// -a mod q for a in [0, q).
    #[inline(always)]
    pub const fn neg(&self, a: u32) -> u32 {
        reduce_once(self.q - a, self.q)
    }

    /// Reduces any x < 2q into [0, q).
    #[inline(always)]
    pub const fn reduce_once(&self, x: u32) -> u32 {
        reduce_once(x, self.q)
    }

    /// Reduces any 64-bit x into [0, q) (Barrett).
    #[inline(always)]
    pub const fn reduce_u64(&self, x: u64) -> u32 {
        let quotient = ((x as u128 * self.barrett as u128) >> 64) as u64;
        // quotient is floor(x / q) or one less, so the remainder is below 2q < 2^31.
        let r = x.wrapping_sub(quotient.wrapping_mul(self.q as u64)) as u32;
        reduce_once(r, self.q)
    }

    /// floor(x / q) for any 64-bit x, without a division instruction (constant time).
    #[inline(always)]
    pub const fn quotient_u64(&self, x: u64) -> u64 {
        let quotient = ((x as u128 * self.barrett as u128) >> 64) as u64;
        let r = x.wrapping_sub(quotient.wrapping_mul(self.q as u64));
        // r < 2q: one more when r >= q.
        let at_least_q = (r.wrapping_sub(self.q as u64) >> 63) ^ 1;
        quotient + at_least_q
    }

    /// Reduces any 32-bit x into [0, q).
    #[inline(always)]
    pub const fn reduce(&self, x: u32) -> u32 {
        self.reduce_u64(x as u64)
    }

    /// Reduces any signed 64-bit x into [0, q).
    #[inline(always)]
    pub const fn reduce_i64(&self, x: i64) -> u32 {
        let magnitude = self.reduce_u64(x.unsigned_abs());
        let negative_mask = 0u32.wrapping_sub((x as u64 >> 63) as u32);
        magnitude ^ ((magnitude ^ self.neg(magnitude)) & negative_mask)
    }

    /// Reduces a signed 128-bit x into [0, q): for public values (biases, constants) only,
    /// as the division and the sign branch take data-dependent time.
    pub fn reduce_i128_public(&self, x: i128) -> u32 {
        let r = (x.unsigned_abs() % self.value() as u128) as u32;
        if x < 0 { self.neg(r) } else { r }
    }

    /// a * b mod q for a, b in [0, q) (Barrett on the 60-bit product).
    #[inline(always)]
    pub const fn mul(&self, a: u32, b: u32) -> u32 {
        self.reduce_u64(a as u64 * b as u64)
    }

    /// Montgomery product a * b * 2^-32 mod q, for a * b < q * 2^32 (e.g. a, b in [0, 4q)).
    #[inline(always)]
    pub const fn mul_montgomery(&self, a: u32, b: u32) -> u32 {
        redc(a as u64 * b as u64, self.q, self.q_inv)
    }

    /// a * 2^32 mod q: Montgomery form of a in [0, q).
    #[inline(always)]
    pub const fn to_montgomery(&self, a: u32) -> u32 {
        self.mul_montgomery(a, self.r2)
    }

    /// a * 2^-32 mod q: leaves Montgomery form.
    #[inline(always)]
    pub const fn from_montgomery(&self, a: u32) -> u32 {
        redc(a as u64, self.q, self.q_inv)
    }

    /// The Shoup pair of w in [0, q).
    pub const fn shoup(&self, w: u32) -> ShoupConstant {
        ShoupConstant {
            value: w,
            quotient: (((w as u64) << 32) / self.q as u64) as u32,
        }
    }

    /// x * w mod q in the lazy range [0, 2q), for any 32-bit x.
    #[inline(always)]
    pub const fn mul_shoup_lazy(&self, x: u32, w: ShoupConstant) -> u32 {
        let estimate = ((x as u64 * w.quotient as u64) >> 32) as u32;
        x.wrapping_mul(w.value)
            .wrapping_sub(estimate.wrapping_mul(self.q))
    }

    /// x * w mod q in [0, q), for any 32-bit x.
    #[inline(always)]
    pub const fn mul_shoup(&self, x: u32, w: ShoupConstant) -> u32 {
        reduce_once(self.mul_shoup_lazy(x, w), self.q)
    }

    /// a if `choice` is 0, b if it is 1, in constant time.
    #[inline(always)]
    pub fn select(a: u32, b: u32, choice: Choice) -> u32 {
        u32::conditional_select(&a, &b, choice)
    }

    /// base^exponent mod q. Constant-time in `base`; the exponent is public.
    pub const fn pow(&self, base: u32, mut exponent: u64) -> u32 {
        let mut result = 1 % self.q;
        let mut square = base;
        while exponent > 0 {
            if exponent & 1 == 1 {
                result = self.mul(result, square);
            }
            square = self.mul(square, square);
            exponent >>= 1;
        }
        result
    }

    /// a^-1 mod q for a in [1, q) (Fermat); returns 0 for a = 0.
    pub const fn inv(&self, a: u32) -> u32 {
        self.pow(a, self.q as u64 - 2)
    }

    /// Signed representative of a in (-q/2, q/2] for a in [0, q).
    #[inline(always)]
    pub const fn center(&self, a: u32) -> i64 {
        let above_half = ((self.q >> 1).wrapping_sub(a) >> 31) as i64;
        a as i64 - self.q as i64 * above_half
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PRIMES: [u32; 4] = [3, 12289, 1_073_479_681, 998_244_353];

    fn moduli() -> impl Strategy<Value = Modulus> {
        prop::sample::select(&PRIMES[..]).prop_map(|q| Modulus::new(q).unwrap())
    }

    /// Values in [0, bound) with its edges drawn often.
    fn edgy(bound: u32) -> impl Strategy<Value = u32> {
        prop_oneof![Just(0), Just(bound - 1), Just(bound / 2), 0..bound]
    }

    #[test]
    fn rejects_bad_moduli() {
        for bad in [
            0,
            1,
            2,
            4,
            9,
            1 << 30,
            (1 << 30) + 3,
            u32::MAX,
            1_073_741_823,
        ] {
            assert!(Modulus::new(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn constants() {
        for q in PRIMES {
            let m = Modulus::new(q).unwrap();
            assert_eq!(q.wrapping_mul(m.q_inv), 1);
            assert_eq!(m.montgomery_r().value as u64, (1u64 << 32) % q as u64);
        }
    }

    proptest! {
        #[test]
        fn add_sub_neg((m, a, b) in moduli().prop_flat_map(|m| (Just(m), edgy(m.value()), edgy(m.value())))) {
            let q = m.value() as u64;
            prop_assert_eq!(m.add(a, b) as u64, (a as u64 + b as u64) % q);
            prop_assert_eq!(m.sub(a, b) as u64, (a as u64 + q - b as u64) % q);
            prop_assert_eq!(m.neg(a) as u64, (q - a as u64) % q);
        }

        #[test]
        fn products((m, a, b) in moduli().prop_flat_map(|m| (Just(m), edgy(m.value()), edgy(m.value())))) {
            let q = m.value() as u64;
            let expected = (a as u64 * b as u64 % q) as u32;
            prop_assert_eq!(m.mul(a, b), expected);
            prop_assert_eq!(m.from_montgomery(m.mul_montgomery(m.to_montgomery(a), m.to_montgomery(b))), expected);
            prop_assert_eq!(m.mul_shoup(a, m.shoup(b)), expected);
        }

        #[test]
        fn lazy_ranges((m, x, w) in moduli().prop_flat_map(|m| (Just(m), any::<u32>(), edgy(m.value())))) {
            let q = m.value() as u64;
            let expected = x as u64 * w as u64 % q;
            let lazy = m.mul_shoup_lazy(x, m.shoup(w)) as u64;
            prop_assert!(lazy < 2 * q);
            prop_assert_eq!(lazy % q, expected);
            // Montgomery accepts the whole [0, 4q) lazy range on one side.
            let a = (x as u64 % (4 * q)) as u32;
            let mont = m.mul_montgomery(a, m.to_montgomery(w));
            prop_assert_eq!(mont as u64, a as u64 * w as u64 % q);
        }

        #[test]
        fn reductions((m, x, s) in moduli().prop_flat_map(|m| (Just(m), any::<u64>(), any::<i64>()))) {
            let q = m.value() as u64;
            prop_assert_eq!(m.reduce_u64(x) as u64, x % q);
            prop_assert_eq!(m.reduce(x as u32) as u64, (x as u32) as u64 % q);
            prop_assert_eq!(m.reduce_i64(s) as i128, (s as i128).rem_euclid(q as i128));
            prop_assert_eq!(m.reduce_u64(u64::MAX) as u64, u64::MAX % q);
            let c = m.center(m.reduce_i64(s));
            prop_assert!(c > -(q as i64) / 2 - 1 && c <= q as i64 / 2);
            prop_assert_eq!((c as i128).rem_euclid(q as i128), (s as i128).rem_euclid(q as i128));
        }
    }

    #[test]
    fn select_is_exact() {
        assert_eq!(Modulus::select(5, 9, Choice::from(0)), 5);
        assert_eq!(Modulus::select(5, 9, Choice::from(1)), 9);
    }

    #[test]
    fn pow_and_inverse() {
        let m = Modulus::new(12289).unwrap();
        for a in 1..200 {
            assert_eq!(m.mul(a, m.inv(a)), 1);
        }
        assert_eq!(m.pow(7, 0), 1);
        assert_eq!(m.pow(0, 5), 0);
    }
}
