//! AVX2 backend: eight u32 lanes in a `__m256i`.
//!
//! Every intrinsic here requires AVX2. The lane type is used only inside the
//! `#[target_feature(enable = "avx2")]` entry points that [`Avx2`] implements
//! [`crate::backend::Kernels`] with, and an [`Avx2`] value exists only after run-time
//! detection found AVX2 (via `cpufeatures`, which needs no std).

use core::arch::x86_64::*;

use super::{FusedPairSums, Lanes, kernels_via_entry_points};

cpufeatures::new!(cpuid_avx2, "avx2");

/// Proof that this CPU supports AVX2; obtain one with [`Avx2::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx2(());

impl Avx2 {
    /// `Some` if and only if the CPU supports AVX2.
    pub fn new() -> Option<Self> {
        cpuid_avx2::init().get().then_some(Avx2(()))
    }
}

kernels_via_entry_points!(Avx2, Avx2Lanes, "avx2");

impl FusedPairSums for Avx2 {}

#[derive(Clone, Copy)]
pub(crate) struct Avx2Lanes(__m256i);

impl Lanes for Avx2Lanes {
    const WIDTH: usize = 8;
    const REGISTERS: usize = 16;

    #[inline(always)]
    fn load(src: &[u32]) -> Self {
        let src = &src[..8];
        // SAFETY: `src` is valid for reading 32 bytes and the load is unaligned; AVX2 is
        // present wherever this type is used (module documentation).
        Self(unsafe { _mm256_loadu_si256(src.as_ptr().cast()) })
    }

    #[inline(always)]
    fn store(self, dst: &mut [u32]) {
        let dst = &mut dst[..8];
        // SAFETY: `dst` is valid for writing 32 bytes and the store is unaligned; AVX2 present.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), self.0) }
    }

    #[inline(always)]
    fn prefetch(src: &[u32]) {
        // SAFETY: a prefetch reads nothing architecturally and never faults; SSE is part of
        // x86_64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().cast()) }
    }

    #[inline(always)]
    fn splat(x: u32) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_set1_epi32(x as i32) })
    }

    #[inline(always)]
    fn add(self, other: Self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_add_epi32(self.0, other.0) })
    }

    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_sub_epi32(self.0, other.0) })
    }

    #[inline(always)]
    fn min(self, other: Self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_min_epu32(self.0, other.0) })
    }

    #[inline(always)]
    fn mul_lo(self, other: Self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_mullo_epi32(self.0, other.0) })
    }

    #[inline(always)]
    fn mul_hi(self, other: Self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        unsafe {
            // _mm256_mul_epu32 multiplies the even lanes into 64-bit products; shifting both
            // operands right by 32 bits brings the odd lanes there.
            let even = _mm256_mul_epu32(self.0, other.0);
            let odd = _mm256_mul_epu32(
                _mm256_srli_epi64::<32>(self.0),
                _mm256_srli_epi64::<32>(other.0),
            );
            // High words: even products' are copied down by a shuffle (port 5, which the
            // multiplies and shifts do not use); odd products' are already in odd lanes.
            let even_high = _mm256_shuffle_epi32::<0b11_11_01_01>(even);
            Self(_mm256_blend_epi32::<0b1010_1010>(even_high, odd))
        }
    }

    #[inline(always)]
    fn mul_even(self, other: Self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_mul_epu32(self.0, other.0) })
    }

    #[inline(always)]
    fn add64(self, other: Self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_add_epi64(self.0, other.0) })
    }

    #[inline(always)]
    fn shr64_32(self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_srli_epi64::<32>(self.0) })
    }

    #[inline(always)]
    fn shl64_32(self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_slli_epi64::<32>(self.0) })
    }

    #[inline(always)]
    fn and(self, other: Self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_and_si256(self.0, other.0) })
    }

    #[inline(always)]
    fn shr32_31(self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_srli_epi32::<31>(self.0) })
    }

    #[inline(always)]
    fn madd16(self, other: Self) -> Self {
        // SAFETY: AVX2 is present wherever this type is used.
        Self(unsafe { _mm256_madd_epi16(self.0, other.0) })
    }

    #[inline(always)]
    fn transpose(rows: &mut [Self; 8]) {
        let [r0, r1, r2, r3, r4, r5, r6, r7] = rows.map(|r| r.0);
        // SAFETY: AVX2 is present wherever this type is used.
        unsafe {
            // Interleave 32-bit, then 64-bit elements within each 128-bit half ...
            let t0 = _mm256_unpacklo_epi32(r0, r1);
            let t1 = _mm256_unpackhi_epi32(r0, r1);
            let t2 = _mm256_unpacklo_epi32(r2, r3);
            let t3 = _mm256_unpackhi_epi32(r2, r3);
            let t4 = _mm256_unpacklo_epi32(r4, r5);
            let t5 = _mm256_unpackhi_epi32(r4, r5);
            let t6 = _mm256_unpacklo_epi32(r6, r7);
            let t7 = _mm256_unpackhi_epi32(r6, r7);
            let u0 = _mm256_unpacklo_epi64(t0, t2);
            let u1 = _mm256_unpackhi_epi64(t0, t2);
            let u2 = _mm256_unpacklo_epi64(t1, t3);
            let u3 = _mm256_unpackhi_epi64(t1, t3);
            let u4 = _mm256_unpacklo_epi64(t4, t6);
            let u5 = _mm256_unpackhi_epi64(t4, t6);
            let u6 = _mm256_unpacklo_epi64(t5, t7);
            let u7 = _mm256_unpackhi_epi64(t5, t7);
            // ... then join the halves: low halves give columns 0-3, high halves 4-7.
            *rows = [
                Self(_mm256_permute2x128_si256::<0x20>(u0, u4)),
                Self(_mm256_permute2x128_si256::<0x20>(u1, u5)),
                Self(_mm256_permute2x128_si256::<0x20>(u2, u6)),
                Self(_mm256_permute2x128_si256::<0x20>(u3, u7)),
                Self(_mm256_permute2x128_si256::<0x31>(u0, u4)),
                Self(_mm256_permute2x128_si256::<0x31>(u1, u5)),
                Self(_mm256_permute2x128_si256::<0x31>(u2, u6)),
                Self(_mm256_permute2x128_si256::<0x31>(u3, u7)),
            ];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::vector::lane_tests;

    #[test]
    fn lanes_match_scalar_definitions() {
        if Avx2::new().is_none() {
            lane_tests::unavailable("avx2");
            return;
        }
        #[target_feature(enable = "avx2")]
        fn run() {
            lane_tests::check_all::<Avx2Lanes>();
        }
        // SAFETY: AVX2 was detected just above.
        unsafe { run() }
    }
}
