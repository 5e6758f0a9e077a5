//! AVX-512 backend: sixteen u32 lanes in a `__m512i` (AVX-512F, and AVX-512BW for the 16-bit
//! multiply-add). The NTT's 8x8 blocks go two at a time, one per 256-bit half.
//!
//! Every intrinsic here requires AVX-512F or AVX-512BW. The lane type is used only inside
//! the `#[target_feature(enable = "avx512f,avx512bw")]` entry points that [`Avx512`]
//! implements [`crate::backend::Kernels`] with, and an [`Avx512`] value exists only after
//! run-time detection found both (via `cpufeatures`, which needs no std).
//!
//! Where the CPU also has AVX512-VNNI (Cascade Lake, Ice Lake, Sapphire Rapids, Zen 4 and
//! later), the half-word multiply-adds of the linear layers run fused (`vpdpwssd`, one
//! instruction for `pmaddwd` and its addition): the token records it, and
//! [`super::FusedPairSums`] picks that entry point. Where it also has AMX-INT8 (Sapphire
//! Rapids and later), the dense layers' sums run on tiles ([`super::amx`]) when their
//! operands suit them, else on VNNI.

use core::arch::x86_64::*;

use super::{FusedPairSums, Lanes, kernels_via_entry_points};
use crate::backend::PairRows;
use crate::zq::Modulus;

cpufeatures::new!(cpuid_avx512, "avx512f", "avx512bw");

/// Whether CPUID reports AVX512-VNNI (leaf 7, ECX bit 11). Its zmm state is the one AVX-512F
/// needs, which `cpuid_avx512` has checked the OS enables.
fn cpuid_reports_vnni() -> bool {
    __cpuid_count(7, 0).ecx >> 11 & 1 == 1
}

/// Proof that this CPU supports AVX-512F and AVX-512BW, and whether it has AVX512-VNNI;
/// obtain one with [`Avx512::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx512 {
    vnni: bool,
    amx: bool,
}

impl Avx512 {
    /// `Some` if and only if the CPU supports AVX-512F and AVX-512BW.
    pub fn new() -> Option<Self> {
        cpuid_avx512::init().get().then(|| {
            let vnni = cpuid_reports_vnni();
            Avx512 {
                vnni,
                amx: vnni && amx_available(),
            }
        })
    }

    /// This backend without its VNNI and AMX kernels, as on a CPU without them (tests run
    /// every variant).
    #[cfg(test)]
    pub(crate) fn without_vnni(self) -> Self {
        Avx512 {
            vnni: false,
            amx: false,
        }
    }

    /// This backend without its AMX kernels, as on a CPU with VNNI but no AMX.
    #[cfg(test)]
    pub(crate) fn without_amx(self) -> Self {
        Avx512 { amx: false, ..self }
    }

    /// Whether the linear layers run on fused VNNI multiply-adds.
    pub fn has_vnni(&self) -> bool {
        self.vnni
    }

    /// Whether the dense layers' half-word sums run on AMX-INT8 tiles (where their weights
    /// fit bytes).
    pub fn has_amx(&self) -> bool {
        self.amx
    }
}

/// Whether this process can run the AMX kernels (they need `alloc` for their scratch).
fn amx_available() -> bool {
    #[cfg(feature = "alloc")]
    return super::amx::available();
    #[cfg(not(feature = "alloc"))]
    false
}

kernels_via_entry_points!(Avx512, Avx512Lanes, "avx512f,avx512bw");

impl FusedPairSums for Avx512 {
    fn fused_pair_weighted_sum(
        &self,
        accs: &mut [&mut [u32]],
        pairs: PairRows<'_>,
        weights: &[u32],
    ) -> bool {
        if !self.vnni {
            return false;
        }
        #[cfg(feature = "alloc")]
        if self.amx && super::amx::pair_weighted_sum(accs, pairs, weights) {
            return true;
        }
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        fn entry(accs: &mut [&mut [u32]], pairs: PairRows<'_>, weights: &[u32]) {
            super::pair_weighted_sum::<Avx512Lanes<true>>(accs, pairs, weights)
        }
        // SAFETY: `vnni` is true only where `new` detected AVX512-VNNI besides F and BW.
        unsafe { entry(accs, pairs, weights) };
        true
    }
}

/// Sixteen lanes; `VNNI` fuses [`Lanes::madd16_add`] (used only in entry points that enable
/// AVX512-VNNI).
#[derive(Clone, Copy)]
pub(crate) struct Avx512Lanes<const VNNI: bool = false>(__m512i);

/// Where the 16 residues of 60 packed bytes lie in its 15 little-endian words: residue i's
/// bits 30 i.. start in word (30 i) / 32 at bit (30 i) % 32 and end in the next word.
const UNPACK_LOW_WORDS: [u32; 16] = unpack_table(0);
const UNPACK_HIGH_WORDS: [u32; 16] = unpack_table(1);
const UNPACK_SHIFTS: [u32; 16] = unpack_table(2);

const fn unpack_table(which: u32) -> [u32; 16] {
    let mut table = [0; 16];
    let mut i = 0;
    while i < 16 {
        let bit = 30 * i as u32;
        table[i] = match which {
            0 => bit / 32,
            1 => bit / 32 + 1,
            _ => bit % 32,
        };
        i += 1;
    }
    table
}

impl<const VNNI: bool> Lanes for Avx512Lanes<VNNI> {
    const WIDTH: usize = 16;
    const REGISTERS: usize = 32;

    /// Sixteen residues a step: their words gathered by two permutations from 15 loaded
    /// words, shifted into place lane by lane.
    #[inline(always)]
    fn unpack_30_bit(out: &mut [u32], packed: &[u8], modulus: &Modulus) -> bool {
        let whole = out.len() / 16 * 16;
        let (out_whole, out_rest) = out.split_at_mut(whole);
        let (packed_whole, packed_rest) = packed.split_at(whole / 8 * 30);
        let mut at_least_q = 0u16;
        // SAFETY: the tables are 64 bytes each; each masked load reads the 15 words (60
        // bytes) of its chunk only (masked-off lanes touch no memory); each store writes the
        // 16 words of its chunk; unaligned accesses. AVX-512F present (module documentation).
        unsafe {
            let low = _mm512_loadu_si512(UNPACK_LOW_WORDS.as_ptr().cast());
            let high = _mm512_loadu_si512(UNPACK_HIGH_WORDS.as_ptr().cast());
            let shifts = _mm512_loadu_si512(UNPACK_SHIFTS.as_ptr().cast());
            // A shift by 32 (residues that start a word) gives 0, as wanted.
            let high_shifts = _mm512_sub_epi32(_mm512_set1_epi32(32), shifts);
            let mask = _mm512_set1_epi32((1 << 30) - 1);
            let q = _mm512_set1_epi32(modulus.value() as i32);
            for (out, bytes) in out_whole
                .chunks_exact_mut(16)
                .zip(packed_whole.chunks_exact(60))
            {
                let (out, bytes) = (&mut out[..16], &bytes[..60]);
                let words = _mm512_maskz_loadu_epi32(0x7fff, bytes.as_ptr().cast());
                let x = _mm512_or_si512(
                    _mm512_srlv_epi32(_mm512_permutexvar_epi32(low, words), shifts),
                    _mm512_sllv_epi32(_mm512_permutexvar_epi32(high, words), high_shifts),
                );
                let x = _mm512_and_si512(x, mask);
                at_least_q |= _mm512_cmpge_epu32_mask(x, q);
                _mm512_storeu_si512(out.as_mut_ptr().cast(), x);
            }
        }
        let rest = crate::backend::portable::unpack_groups::<30>(packed_rest, modulus, out_rest);
        at_least_q == 0 && rest
    }

    #[inline(always)]
    fn load(src: &[u32]) -> Self {
        let src = &src[..16];
        // SAFETY: `src` is valid for reading 64 bytes and the load is unaligned; AVX-512F is
        // present wherever this type is used (module documentation).
        Self(unsafe { _mm512_loadu_si512(src.as_ptr().cast()) })
    }

    #[inline(always)]
    fn store(self, dst: &mut [u32]) {
        let dst = &mut dst[..16];
        // SAFETY: `dst` is valid for writing 64 bytes and the store is unaligned; AVX-512F
        // present.
        unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), self.0) }
    }

    #[inline(always)]
    fn prefetch(src: &[u32]) {
        // SAFETY: a prefetch reads nothing architecturally and never faults; SSE is part of
        // x86_64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().cast()) }
    }

    #[inline(always)]
    fn load_groups(src: &[u32], stride: usize) -> Self {
        let (low, high) = (&src[..8], &src[stride..stride + 8]);
        // SAFETY: both slices are valid for reading 32 bytes, unaligned loads; AVX-512F
        // (which implies AVX2) present.
        unsafe {
            let low = _mm256_loadu_si256(low.as_ptr().cast());
            let high = _mm256_loadu_si256(high.as_ptr().cast());
            Self(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high))
        }
    }

    #[inline(always)]
    fn store_groups(self, dst: &mut [u32], stride: usize) {
        let (low, high) = dst.split_at_mut(stride);
        let (low, high) = (&mut low[..8], &mut high[..8]);
        // SAFETY: both slices are valid for writing 32 bytes, unaligned stores; AVX-512F
        // present.
        unsafe {
            _mm256_storeu_si256(low.as_mut_ptr().cast(), _mm512_castsi512_si256(self.0));
            _mm256_storeu_si256(
                high.as_mut_ptr().cast(),
                _mm512_extracti64x4_epi64::<1>(self.0),
            );
        }
    }

    #[inline(always)]
    fn splat_groups(values: &[u32], stride: usize) -> Self {
        let (low, high) = (values[0], values[stride]);
        // SAFETY: AVX-512F (which implies AVX2) is present wherever this type is used.
        unsafe {
            Self(_mm512_inserti64x4::<1>(
                _mm512_set1_epi32(low as i32),
                _mm256_set1_epi32(high as i32),
            ))
        }
    }

    #[inline(always)]
    fn splat(x: u32) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_set1_epi32(x as i32) })
    }

    #[inline(always)]
    fn add(self, other: Self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_add_epi32(self.0, other.0) })
    }

    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_sub_epi32(self.0, other.0) })
    }

    #[inline(always)]
    fn min(self, other: Self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_min_epu32(self.0, other.0) })
    }

    #[inline(always)]
    fn mul_lo(self, other: Self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_mullo_epi32(self.0, other.0) })
    }

    #[inline(always)]
    fn mul_hi(self, other: Self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        unsafe {
            // Even lanes' 64-bit products, and odd lanes' after copying them down (a shuffle,
            // which runs beside the multiplies where a shift would compete with them).
            let even = _mm512_mul_epu32(self.0, other.0);
            let odd = _mm512_mul_epu32(
                _mm512_shuffle_epi32::<0xf5>(self.0),
                _mm512_shuffle_epi32::<0xf5>(other.0),
            );
            // The odd products' high words are already in the odd lanes; the even products'
            // high words are copied into the even lanes by one masked shuffle.
            Self(_mm512_mask_shuffle_epi32::<0xf5>(odd, 0x5555, even))
        }
    }

    #[inline(always)]
    fn odd_to_even(self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_shuffle_epi32::<0xf5>(self.0) })
    }

    #[inline(always)]
    fn mul_even(self, other: Self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_mul_epu32(self.0, other.0) })
    }

    #[inline(always)]
    fn add64(self, other: Self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_add_epi64(self.0, other.0) })
    }

    #[inline(always)]
    fn shr64_32(self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_srli_epi64::<32>(self.0) })
    }

    #[inline(always)]
    fn shl64_32(self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_slli_epi64::<32>(self.0) })
    }

    #[inline(always)]
    fn and(self, other: Self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_and_si512(self.0, other.0) })
    }

    #[inline(always)]
    fn shr32_31(self) -> Self {
        // SAFETY: AVX-512F is present wherever this type is used.
        Self(unsafe { _mm512_srli_epi32::<31>(self.0) })
    }

    #[inline(always)]
    fn madd16(self, other: Self) -> Self {
        // SAFETY: AVX-512BW is present wherever this type is used.
        Self(unsafe { _mm512_madd_epi16(self.0, other.0) })
    }

    #[inline(always)]
    fn madd16_add(self, x: Self, w: Self) -> Self {
        if VNNI {
            // SAFETY: this lane type with VNNI is used only inside entry points that enable
            // AVX512-VNNI, after its detection (`Avx512::fused_pair_weighted_sum`).
            Self(unsafe { _mm512_dpwssd_epi32(self.0, x.0, w.0) })
        } else {
            self.add(x.madd16(w))
        }
    }

    #[inline(always)]
    fn transpose(rows: &mut [Self; 8]) {
        let [r0, r1, r2, r3, r4, r5, r6, r7] = rows.map(|r| r.0);
        // SAFETY: AVX-512F is present wherever this type is used.
        unsafe {
            // Interleave 32-bit, then 64-bit elements within each 128-bit lane, as AVX2 does
            // in each half ...
            let t0 = _mm512_unpacklo_epi32(r0, r1);
            let t1 = _mm512_unpackhi_epi32(r0, r1);
            let t2 = _mm512_unpacklo_epi32(r2, r3);
            let t3 = _mm512_unpackhi_epi32(r2, r3);
            let t4 = _mm512_unpacklo_epi32(r4, r5);
            let t5 = _mm512_unpackhi_epi32(r4, r5);
            let t6 = _mm512_unpacklo_epi32(r6, r7);
            let t7 = _mm512_unpackhi_epi32(r6, r7);
            let u0 = _mm512_unpacklo_epi64(t0, t2);
            let u1 = _mm512_unpackhi_epi64(t0, t2);
            let u2 = _mm512_unpacklo_epi64(t1, t3);
            let u3 = _mm512_unpackhi_epi64(t1, t3);
            let u4 = _mm512_unpacklo_epi64(t4, t6);
            let u5 = _mm512_unpackhi_epi64(t4, t6);
            let u6 = _mm512_unpacklo_epi64(t5, t7);
            let u7 = _mm512_unpackhi_epi64(t5, t7);
            // ... then, in each half, join the first 128-bit lanes of a and b (columns 0-3)
            // or their second ones (columns 4-7). Indices count u64s, 8 and up from b.
            let first = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
            let second = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
            *rows = [
                Self(_mm512_permutex2var_epi64(u0, first, u4)),
                Self(_mm512_permutex2var_epi64(u1, first, u5)),
                Self(_mm512_permutex2var_epi64(u2, first, u6)),
                Self(_mm512_permutex2var_epi64(u3, first, u7)),
                Self(_mm512_permutex2var_epi64(u0, second, u4)),
                Self(_mm512_permutex2var_epi64(u1, second, u5)),
                Self(_mm512_permutex2var_epi64(u2, second, u6)),
                Self(_mm512_permutex2var_epi64(u3, second, u7)),
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
        if Avx512::new().is_none() {
            lane_tests::unavailable("avx512");
            return;
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        fn run() {
            lane_tests::check_all::<Avx512Lanes>();
        }
        // SAFETY: AVX-512F and AVX-512BW were detected just above.
        unsafe { run() }
    }

    #[test]
    fn vnni_lanes_match_scalar_definitions() {
        if !Avx512::new().is_some_and(|b| b.has_vnni()) {
            lane_tests::unavailable("avx512-vnni");
            return;
        }
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        fn run() {
            lane_tests::check_all::<Avx512Lanes<true>>();
        }
        // SAFETY: AVX-512F, AVX-512BW and AVX512-VNNI were detected just above.
        unsafe { run() }
    }
}
