//! NEON backend: eight u32 lanes in two `uint32x4_t`.
//!
//! NEON is part of every aarch64 target this crate builds for, so the backend is chosen at
//! compile time and [`Neon`] can always be constructed there.

use core::arch::aarch64::*;

use super::{FusedPairSums, Lanes, kernels_via_entry_points};

/// The NEON backend (always available on aarch64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Neon(());

impl Neon {
    /// NEON is mandatory on aarch64.
    pub fn new() -> Self {
        Neon(())
    }
}

kernels_via_entry_points!(Neon, NeonLanes, "neon");

impl FusedPairSums for Neon {}

#[derive(Clone, Copy)]
pub(crate) struct NeonLanes(uint32x4_t, uint32x4_t);

/// Transposes a 4x4 block given as four rows.
#[inline(always)]
fn transpose4(x: [uint32x4_t; 4]) -> [uint32x4_t; 4] {
    // SAFETY: NEON is present on every aarch64 target (module documentation).
    unsafe {
        // Pairs of 32-bit elements first, then pairs of 64-bit halves.
        let t0 = vtrn1q_u32(x[0], x[1]);
        let t1 = vtrn2q_u32(x[0], x[1]);
        let t2 = vtrn1q_u32(x[2], x[3]);
        let t3 = vtrn2q_u32(x[2], x[3]);
        let (t0, t1, t2, t3) = (
            vreinterpretq_u64_u32(t0),
            vreinterpretq_u64_u32(t1),
            vreinterpretq_u64_u32(t2),
            vreinterpretq_u64_u32(t3),
        );
        [
            vreinterpretq_u32_u64(vtrn1q_u64(t0, t2)),
            vreinterpretq_u32_u64(vtrn1q_u64(t1, t3)),
            vreinterpretq_u32_u64(vtrn2q_u64(t0, t2)),
            vreinterpretq_u32_u64(vtrn2q_u64(t1, t3)),
        ]
    }
}

impl Lanes for NeonLanes {
    const WIDTH: usize = 8;
    const REGISTERS: usize = 32;

    #[inline(always)]
    fn load(src: &[u32]) -> Self {
        let src = &src[..8];
        // SAFETY: `src` is valid for reading 8 words; NEON loads need no alignment.
        unsafe { Self(vld1q_u32(src.as_ptr()), vld1q_u32(src.as_ptr().add(4))) }
    }

    #[inline(always)]
    fn store(self, dst: &mut [u32]) {
        let dst = &mut dst[..8];
        // SAFETY: `dst` is valid for writing 8 words; NEON stores need no alignment.
        unsafe {
            vst1q_u32(dst.as_mut_ptr(), self.0);
            vst1q_u32(dst.as_mut_ptr().add(4), self.1);
        }
    }

    #[inline(always)]
    fn splat(x: u32) -> Self {
        // SAFETY: NEON is present on every aarch64 target.
        unsafe { Self(vdupq_n_u32(x), vdupq_n_u32(x)) }
    }

    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: NEON is present on every aarch64 target.
        unsafe { Self(vaddq_u32(self.0, o.0), vaddq_u32(self.1, o.1)) }
    }

    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: NEON is present on every aarch64 target.
        unsafe { Self(vsubq_u32(self.0, o.0), vsubq_u32(self.1, o.1)) }
    }

    #[inline(always)]
    fn min(self, o: Self) -> Self {
        // SAFETY: NEON is present on every aarch64 target.
        unsafe { Self(vminq_u32(self.0, o.0), vminq_u32(self.1, o.1)) }
    }

    #[inline(always)]
    fn mul_lo(self, o: Self) -> Self {
        // SAFETY: NEON is present on every aarch64 target.
        unsafe { Self(vmulq_u32(self.0, o.0), vmulq_u32(self.1, o.1)) }
    }

    #[inline(always)]
    fn mul_hi(self, o: Self) -> Self {
        #[inline(always)]
        fn high_words(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
            // SAFETY: NEON is present on every aarch64 target.
            unsafe {
                let low = vmull_u32(vget_low_u32(a), vget_low_u32(b));
                let high = vmull_high_u32(a, b);
                // The odd 32-bit elements of the 64-bit products are their high words.
                vuzp2q_u32(vreinterpretq_u32_u64(low), vreinterpretq_u32_u64(high))
            }
        }
        Self(high_words(self.0, o.0), high_words(self.1, o.1))
    }

    #[inline(always)]
    fn mul_even(self, o: Self) -> Self {
        #[inline(always)]
        fn even_products(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
            // SAFETY: NEON is present wherever this type is used (module documentation).
            unsafe {
                // The narrowing move keeps the low (even) word of each u64.
                let (a, b) = (
                    vmovn_u64(vreinterpretq_u64_u32(a)),
                    vmovn_u64(vreinterpretq_u64_u32(b)),
                );
                vreinterpretq_u32_u64(vmull_u32(a, b))
            }
        }
        Self(even_products(self.0, o.0), even_products(self.1, o.1))
    }

    #[inline(always)]
    fn add64(self, o: Self) -> Self {
        #[inline(always)]
        fn add(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
            // SAFETY: NEON is present wherever this type is used.
            unsafe {
                vreinterpretq_u32_u64(vaddq_u64(
                    vreinterpretq_u64_u32(a),
                    vreinterpretq_u64_u32(b),
                ))
            }
        }
        Self(add(self.0, o.0), add(self.1, o.1))
    }

    #[inline(always)]
    fn shr64_32(self) -> Self {
        #[inline(always)]
        fn shr(a: uint32x4_t) -> uint32x4_t {
            // SAFETY: NEON is present wherever this type is used.
            unsafe { vreinterpretq_u32_u64(vshrq_n_u64::<32>(vreinterpretq_u64_u32(a))) }
        }
        Self(shr(self.0), shr(self.1))
    }

    #[inline(always)]
    fn shl64_32(self) -> Self {
        #[inline(always)]
        fn shl(a: uint32x4_t) -> uint32x4_t {
            // SAFETY: NEON is present wherever this type is used.
            unsafe { vreinterpretq_u32_u64(vshlq_n_u64::<32>(vreinterpretq_u64_u32(a))) }
        }
        Self(shl(self.0), shl(self.1))
    }

    #[inline(always)]
    fn and(self, o: Self) -> Self {
        // SAFETY: NEON is present wherever this type is used.
        unsafe { Self(vandq_u32(self.0, o.0), vandq_u32(self.1, o.1)) }
    }

    #[inline(always)]
    fn shr32_31(self) -> Self {
        // SAFETY: NEON is present wherever this type is used.
        unsafe { Self(vshrq_n_u32::<31>(self.0), vshrq_n_u32::<31>(self.1)) }
    }

    #[inline(always)]
    fn madd16(self, o: Self) -> Self {
        #[inline(always)]
        fn madd(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
            // SAFETY: NEON is present wherever this type is used.
            unsafe {
                let (a, b) = (vreinterpretq_s16_u32(a), vreinterpretq_s16_u32(b));
                // Products of halves 0-3 and 4-7, then sums of neighbours: lane k gets the
                // products of halves 2k and 2k + 1, as pmaddwd.
                let low = vmull_s16(vget_low_s16(a), vget_low_s16(b));
                let high = vmull_high_s16(a, b);
                vreinterpretq_u32_s32(vpaddq_s32(low, high))
            }
        }
        Self(madd(self.0, o.0), madd(self.1, o.1))
    }

    #[inline(always)]
    fn transpose(rows: &mut [Self; 8]) {
        // Quadrants: rows 0-3 / 4-7 by halves 0 (.0) / 1 (.1). The transpose swaps the
        // off-diagonal quadrants and transposes each.
        let top_left = transpose4([rows[0].0, rows[1].0, rows[2].0, rows[3].0]);
        let top_right = transpose4([rows[0].1, rows[1].1, rows[2].1, rows[3].1]);
        let bottom_left = transpose4([rows[4].0, rows[5].0, rows[6].0, rows[7].0]);
        let bottom_right = transpose4([rows[4].1, rows[5].1, rows[6].1, rows[7].1]);
        for i in 0..4 {
            rows[i] = Self(top_left[i], bottom_left[i]);
            rows[4 + i] = Self(top_right[i], bottom_right[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::vector::lane_tests;

    #[test]
    fn lanes_match_scalar_definitions() {
        lane_tests::check_all::<NeonLanes>();
    }
}
