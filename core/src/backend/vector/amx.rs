//! AMX-INT8 tiles (Sapphire Rapids and later) for the dense layers' half-word sums: one
//! `tdpbsud` multiplies a 16 x 64 tile of signed bytes by a 64 x 16 tile of unsigned bytes
//! into 16 x 16 i32 sums, 16,384 multiply-adds, where AVX512-VNNI's `vpdpwssd` does 32.
//!
//! [`pair_weighted_sum`] computes exactly what [`crate::backend::Kernels::pair_weighted_sum`]
//! defines, when every weight's 16-bit halves lie in [-128, 127] (the trained models' dense
//! weights do) and there are at least 32 outputs and 64 pairs (the dense layers; the
//! convolution's few maps would leave most of each product unused); otherwise it declines
//! and the caller takes the VNNI path. A pair word holds
//! two 16-bit halves x = b0 + 2^8 b1 (b0 unsigned, b1 signed), so with a weight w on that
//! half, sum x w = sum b0 w + 2^8 sum b1 w. The kernel regroups the bytes of two pair words
//! (four halves) into one word of their low bytes and one of their high bytes, so that a
//! weight tile of four signed bytes a group serves both: the low sums are one `tdpbsud`
//! (signed weights times unsigned bytes), the high ones one `tdpbssd` (both signed). Both
//! are exact i32 sums; the accumulators take low + 2^8 high, wrapping as the definition does.
//!
//! The tiles are used through `asm!` (the intrinsics are not stable). The kernel configures
//! them on entry and releases them on exit. Linux hands out the tile state only to
//! processes that ask for it (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`available`] asks once,
//! and AMX is used only where CPUID reports AMX-TILE and AMX-INT8, XCR0 has the tile state
//! enabled and the kernel granted it.

use core::arch::asm;
use core::arch::x86_64::{
    __cpuid_count, _MM_HINT_T0, _mm_prefetch, _mm512_add_epi32, _mm512_loadu_si512,
    _mm512_slli_epi32, _mm512_storeu_si512,
};

use crate::backend::PairRows;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

/// Rows of a tile, and u32 words (groups of four bytes, or i32 sums) in a row of 64 bytes.
const TILE: usize = 16;
/// Pairs in a tile's 64 bytes of a row: two pair words' bytes regrouped as four inputs.
const CHUNK_PAIRS: usize = 2 * TILE;
/// Pair chunks of one pass (256 pairs): with as many output tiles, its weight tiles take
/// 64 KB of stack (in L1 and L2), and its data tiles 2 KB a chunk for every 16 columns.
const MAX_CHUNKS: usize = 8;
/// Output tiles of one pass (128 outputs).
const MAX_OUTPUT_TILES: usize = 8;
/// The fewest outputs and pairs worth the tiles.
const MIN_OUTPUTS: usize = 32;
const MIN_PAIRS: usize = 64;
/// How far ahead of the products the accumulators' lines are fetched, in columns.
const PREFETCH_COLUMNS: usize = 4 * TILE;
/// Bytes between a tile's rows in this module's `[u32; 256]` buffers.
const ROW_BYTES: usize = 4 * TILE;

/// 0: not yet known; 1: unavailable; 2: available.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Whether this process can run AMX-INT8 tiles: asks Linux for the tile state the first
/// time.
pub(crate) fn available() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let ok = detect();
            STATE.store(if ok { 2 } else { 1 }, Ordering::Relaxed);
            ok
        }
        state => state == 2,
    }
}

#[cfg(target_os = "linux")]
fn detect() -> bool {
    // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 25 AMX-INT8; leaf 1 ECX bit 27 OSXSAVE.
    let leaf7 = __cpuid_count(7, 0);
    let osxsave = __cpuid_count(1, 0).ecx >> 27 & 1 == 1;
    if leaf7.edx >> 24 & 3 != 3 || !osxsave {
        return false;
    }
    let (xcr0_low, _xcr0_high): (u32, u32);
    // SAFETY: OSXSAVE is set, so XGETBV is enabled; reading XCR0 has no side effect.
    unsafe {
        asm!("xgetbv", in("ecx") 0, out("eax") xcr0_low, out("edx") _xcr0_high,
             options(nomem, nostack, preserves_flags));
    }
    // XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA): the OS saves the tile state.
    if xcr0_low >> 17 & 3 != 3 {
        return false;
    }
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) only grants this process the
    // tile state (or fails, returning a negative errno); it touches no memory of ours.
    unsafe {
        asm!("syscall",
             inlateout("rax") SYS_ARCH_PRCTL => ret,
             in("rdi") ARCH_REQ_XCOMP_PERM,
             in("rsi") XFEATURE_XTILEDATA,
             lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn detect() -> bool {
    false
}

/// Whether the 16-bit halves of a weight pair both lie in [-128, 127].
#[inline(always)]
fn halves_are_bytes(w: u32) -> bool {
    let byte = |h: u32| ((h as u16 as i16 as i32 + 128) as u32) < 256;
    // `&`, not `&&`: no branch, so that the callers' folds vectorize.
    byte(w & 0xffff) & byte(w >> 16)
}

/// The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> Self {
        let mut config = [0u8; 64];
        config[0] = 1;
        for tile in 0..8 {
            config[16 + 2 * tile] = ROW_BYTES as u8;
            config[48 + tile] = TILE as u8;
        }
        Self(config)
    }
}

/// [`crate::backend::Kernels::pair_weighted_sum`] on AMX tiles, if `available()` and every
/// weight's halves lie in [-128, 127]; returns false, touching nothing, otherwise.
pub(crate) fn pair_weighted_sum(
    accs: &mut [&mut [u32]],
    pairs: PairRows<'_>,
    weights: &[u32],
) -> bool {
    let outputs = accs.len();
    let n = accs.first().map_or(0, |a| a.len());
    let Some(count) = pairs.count(n) else {
        return false;
    };
    let shapes =
        count.checked_mul(outputs) == Some(weights.len()) && accs.iter().all(|a| a.len() == n);
    // Fewer outputs or pairs than a tile's leave most of each product unused: VNNI does
    // better there (the convolution's few maps).
    if !shapes || outputs < MIN_OUTPUTS || count < MIN_PAIRS || n < TILE {
        return false;
    }
    let bytes = weights.iter().fold(true, |ok, &w| ok & halves_are_bytes(w));
    if !bytes || !available() {
        return false;
    }
    // The passes lay out each output's weights as a tile row: regrouped by output once a
    // call (a pair's weights of every output are side by side in the kernel's operand).
    let rows: Vec<Vec<u32>> = (0..outputs)
        .map(|o| weights.iter().skip(o).step_by(outputs).copied().collect())
        .collect();
    let weights: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    // The passes take a row's slice each (they read pairs two by two, a tile row each).
    let pairs: Vec<&[u32]> = (0..count).map(|p| pairs.row(p, n)).collect();
    let pass_pairs = MAX_CHUNKS * CHUNK_PAIRS;
    let pass_outputs = MAX_OUTPUT_TILES * TILE;
    with_data_buffer(|data| {
        for (accs, weights) in accs
            .chunks_mut(pass_outputs)
            .zip(weights.chunks(pass_outputs))
        {
            for (c, pairs) in pairs.chunks(pass_pairs).enumerate() {
                // SAFETY: AMX-INT8 tiles are granted to this process (`available`), and
                // AVX-512F and BW are present wherever this is called (from the AVX-512
                // backend's token).
                unsafe { pass_sums(accs, pairs, weights, c * pass_pairs, data) };
            }
        }
    });
    true
}

#[cfg(feature = "std")]
std::thread_local! {
    /// Each thread's data tiles, kept between calls: a dense layer calls the kernel once a
    /// column block, and a fresh buffer would be zeroed (half a megabyte) every time.
    static DATA: core::cell::RefCell<Vec<u32>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// `f` over this thread's data buffer (with `std`; else a fresh one), whatever it holds.
fn with_data_buffer(f: impl FnOnce(&mut Vec<u32>)) {
    #[cfg(feature = "std")]
    DATA.with_borrow_mut(f);
    #[cfg(not(feature = "std"))]
    f(&mut Vec::new());
}

/// The four bytes of a weight pair's halves (each in [-128, 127]) for two adjacent pair
/// words `w` and `v`: w's low half, w's high half, v's low half, v's high half.
#[inline(always)]
fn weight_group(w: u32, v: u32) -> u32 {
    let bytes = |w: u32| (w & 0xff) | (w >> 8 & 0xff00);
    bytes(w) | bytes(v) << 16
}

/// The low bytes and the high bytes of the four halves of two adjacent pair words x and y
/// (x = a0 a1 b0 b1, y = c0 c1 d0 d1 from the least significant byte): (a0 b0 c0 d0) and
/// (a1 b1 c1 d1), the operands of the low and high sums.
#[inline(always)]
fn data_groups(x: u32, y: u32) -> (u32, u32) {
    let low = (x & 0xff) | (x >> 8 & 0xff00) | (y & 0xff) << 16 | (y << 8 & 0xff00_0000);
    let high = (x >> 8 & 0xff) | (x >> 16 & 0xff00) | (y & 0xff00) << 8 | (y & 0xff00_0000);
    (low, high)
}

/// One pass: at most `MAX_OUTPUT_TILES` tiles of outputs and `MAX_CHUNKS` chunks of pairs,
/// whose weights are `weights[o][first..]`.
///
/// The data tiles of every column are regrouped first, pair row by pair row (each read
/// once, in order); then output tiles go two at a time across the columns, so that each
/// accumulator row is read and written in order too. (Columns outside and outputs inside
/// ran 30% slower in the batch: a hundred accumulator rows at once are more streams than
/// the prefetchers follow.)
///
/// # Safety
/// AMX-INT8 tiles must be available to this process and AVX-512F and BW to this CPU.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pass_sums(
    accs: &mut [&mut [u32]],
    pairs: &[&[u32]],
    weights: &[&[u32]],
    first: usize,
    data: &mut Vec<u32>,
) {
    let n = accs[0].len();
    let count = pairs.len();
    let (chunks, output_tiles) = (count.div_ceil(CHUNK_PAIRS), accs.len().div_ceil(TILE));
    let columns = n - n % TILE;
    // weight_tiles[t * MAX_CHUNKS + c]: row r holds output 16 t + r's weight groups of
    // pairs 32 c.. (zero past the outputs and pairs).
    let mut weight_tiles = [[0u32; TILE * TILE]; MAX_OUTPUT_TILES * MAX_CHUNKS];
    for (o, weights) in weights.iter().enumerate() {
        let weights = &weights[first..first + count];
        let (t, r) = (o / TILE, o % TILE);
        for (c, pairs) in weights.chunks(CHUNK_PAIRS).enumerate() {
            let row = &mut weight_tiles[t * MAX_CHUNKS + c][r * TILE..(r + 1) * TILE];
            let mut groups = pairs.chunks_exact(2);
            for (group, w) in row.iter_mut().zip(&mut groups) {
                *group = weight_group(w[0], w[1]);
            }
            if let [w] = groups.remainder() {
                row[pairs.len() / 2] = weight_group(*w, 0);
            }
        }
    }
    // The data tiles: for column block b (16 columns) and chunk c, the tile of low bytes at
    // data[(b * chunks + c) * 2 * 256..] and the high bytes' after it; row g holds pairs
    // 32 c + 2 g and 32 c + 2 g + 1. Rows past the pairs keep whatever the buffer held: their
    // weights are zero, so they add nothing (and the buffer is zeroed only where it grows).
    let tile_words = TILE * TILE;
    let block_words = chunks * 2 * tile_words;
    data.resize(columns / TILE * block_words, 0);
    let zeros = [0u32; TILE];
    for (g, two) in pairs.chunks(2).enumerate() {
        let (c, row) = (g / TILE, g % TILE);
        let x = two[0];
        let y = two.get(1).copied();
        for (b, block) in data.chunks_exact_mut(block_words).enumerate() {
            let column = b * TILE;
            let low_at = c * 2 * tile_words + row * TILE;
            let high_at = low_at + tile_words;
            let x: &[u32; TILE] = x[column..column + TILE].try_into().expect("16 columns");
            let y: &[u32; TILE] = y.map_or(&zeros, |y| {
                y[column..column + TILE].try_into().expect("16 columns")
            });
            let (low, high) = block.split_at_mut(high_at);
            let low: &mut [u32; TILE] =
                (&mut low[low_at..low_at + TILE]).try_into().expect("a row");
            let high: &mut [u32; TILE] = (&mut high[..TILE]).try_into().expect("a row");
            for i in 0..TILE {
                (low[i], high[i]) = data_groups(x[i], y[i]);
            }
        }
    }
    // The sums of two output tiles: low and high of the first, then of the second.
    let mut sums = [[0u32; TILE * TILE]; 4];
    let config = TileConfig::new();
    // SAFETY: the configuration is a valid palette-1 layout (64 aligned bytes).
    unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly)) };
    // Two output tiles at a time (sums in tiles 0, 1 and 5, 6), so that each data tile
    // loaded serves four products. Without a second output tile, tiles 5 and 6 repeat the
    // first one's sums, unread.
    for t in (0..output_tiles).step_by(2) {
        let second = (t + 1).min(output_tiles - 1);
        let rows = accs.len().min((t + 2) * TILE) - t * TILE;
        for (b, block) in data.chunks_exact(block_words).enumerate() {
            let column = b * TILE;
            // SAFETY: the tiles are configured.
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm5",
                    "tilezero tmm6",
                    options(nostack, nomem)
                )
            };
            for (c, tiles) in block.chunks_exact(2 * tile_words).enumerate() {
                // SAFETY: each load reads 16 rows of 64 bytes of a 1 KB tile.
                unsafe {
                    asm!(
                        "tileloadd tmm3, [{low} + {s}*1]",
                        "tileloadd tmm4, [{high} + {s}*1]",
                        "tileloadd tmm2, [{w0} + {s}*1]",
                        "tdpbsud tmm0, tmm2, tmm3",
                        "tdpbssd tmm1, tmm2, tmm4",
                        "tileloadd tmm7, [{w1} + {s}*1]",
                        "tdpbsud tmm5, tmm7, tmm3",
                        "tdpbssd tmm6, tmm7, tmm4",
                        w0 = in(reg) weight_tiles[t * MAX_CHUNKS + c].as_ptr(),
                        w1 = in(reg) weight_tiles[second * MAX_CHUNKS + c].as_ptr(),
                        low = in(reg) tiles[..tile_words].as_ptr(),
                        high = in(reg) tiles[tile_words..].as_ptr(),
                        s = in(reg) ROW_BYTES,
                        options(nostack, readonly),
                    )
                };
            }
            // SAFETY: each store writes 16 rows of 64 bytes into a 1 KB buffer.
            unsafe {
                asm!(
                    "tilestored [{l0} + {s}*1], tmm0",
                    "tilestored [{h0} + {s}*1], tmm1",
                    "tilestored [{l1} + {s}*1], tmm5",
                    "tilestored [{h1} + {s}*1], tmm6",
                    l0 = in(reg) sums[0].as_mut_ptr(),
                    h0 = in(reg) sums[1].as_mut_ptr(),
                    l1 = in(reg) sums[2].as_mut_ptr(),
                    h1 = in(reg) sums[3].as_mut_ptr(),
                    s = in(reg) ROW_BYTES,
                    options(nostack),
                )
            };
            // The rows' lines a few blocks ahead: 32 streams, more than the prefetchers
            // follow on their own.
            let ahead = column + PREFETCH_COLUMNS;
            if ahead < columns {
                for acc in &accs[t * TILE..t * TILE + rows] {
                    _mm_prefetch::<_MM_HINT_T0>(acc[ahead..].as_ptr().cast());
                }
            }
            for r in 0..rows {
                let (low, high) = (&sums[2 * (r / TILE)], &sums[2 * (r / TILE) + 1]);
                let at = (r % TILE) * TILE;
                add_sums(
                    &mut accs[t * TILE + r][column..column + TILE],
                    &low[at..at + TILE],
                    &high[at..at + TILE],
                );
            }
        }
    }
    // SAFETY: returns the tiles to their initial state.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
    // Columns past the last whole tile, by the definition.
    if columns == n {
        return;
    }
    for (acc, weights) in accs.iter_mut().zip(weights) {
        for (pair, &w) in pairs.iter().zip(&weights[first..first + count]) {
            for (a, &x) in acc[columns..].iter_mut().zip(&pair[columns..]) {
                *a = a.wrapping_add(super::super::linear::madd(x, w));
            }
        }
    }
}

/// acc[i] += low[i] + 2^8 high[i] on 16 words, wrapping.
#[inline]
#[target_feature(enable = "avx512f")]
fn add_sums(acc: &mut [u32], low: &[u32], high: &[u32]) {
    let (acc, low, high) = (&mut acc[..TILE], &low[..TILE], &high[..TILE]);
    // SAFETY: each slice holds 16 words (64 bytes); the loads and the store are unaligned.
    unsafe {
        let sum = _mm512_add_epi32(
            _mm512_loadu_si512(low.as_ptr().cast()),
            _mm512_slli_epi32::<8>(_mm512_loadu_si512(high.as_ptr().cast())),
        );
        let a = _mm512_loadu_si512(acc.as_ptr().cast());
        _mm512_storeu_si512(acc.as_mut_ptr().cast(), _mm512_add_epi32(a, sum));
    }
}
