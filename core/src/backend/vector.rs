//! The NTT and pointwise kernels written once for any vector of 8 or 16 u32 lanes.
//!
//! Each SIMD backend provides [`Lanes`]: a handful of lane-wise operations and 8x8
//! transposes. The algorithms below never touch intrinsics; they are monomorphised and
//! inlined into each backend's `#[target_feature]` entry points.
//!
//! Stages whose butterfly distance is at least 8 pair whole vectors with one broadcast
//! twiddle. The three with distances 4, 2 and 1 run on blocks of 64 coefficients
//! transposed so that they too pair whole vectors, each lane with its own twiddle
//! (see `fill_tail` in [`crate::ntt`]); a 16-lane vector holds the same row of two
//! consecutive blocks, one per half.

use core::ops::Range;

use super::{PairRows, check_lengths};
use crate::ntt::{NttTable, TAIL_BLOCK, TAIL_WORDS};
use crate::zq::{Modulus, ShoupConstant};

#[cfg(all(target_arch = "x86_64", feature = "alloc"))]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

/// [`Lanes::WIDTH`] u32 lanes (8 or 16), seen as `WIDTH / 8` groups of eight for the NTT's
/// blocks. Arithmetic wraps modulo 2^32 in every lane.
pub(crate) trait Lanes: Copy {
    /// Lanes per vector: 8 or 16.
    const WIDTH: usize;
    /// Groups of eight lanes.
    const GROUPS: usize = Self::WIDTH / 8;
    /// Vector registers the kernels may plan for (16 or 32).
    const REGISTERS: usize;
    /// The first `WIDTH` words of `src` (panics if it is shorter).
    fn load(src: &[u32]) -> Self;
    /// Into the first `WIDTH` words of `dst` (panics if it is shorter).
    fn store(self, dst: &mut [u32]);
    /// Asks for the cache line of `src`'s first word ahead of its loads: a hint, which
    /// changes no result (none by default).
    #[inline(always)]
    fn prefetch(_src: &[u32]) {}
    /// Group g's eight lanes from src[g stride..g stride + 8] (panics if `src` is shorter).
    /// The default serves eight lanes, one group.
    #[inline(always)]
    fn load_groups(src: &[u32], _stride: usize) -> Self {
        Self::load(src)
    }
    /// Group g's eight lanes into dst[g stride..g stride + 8] (panics if `dst` is shorter).
    #[inline(always)]
    fn store_groups(self, dst: &mut [u32], _stride: usize) {
        self.store(dst)
    }
    /// Group g's eight lanes all values[g stride] (panics if `values` is shorter).
    #[inline(always)]
    fn splat_groups(values: &[u32], _stride: usize) -> Self {
        Self::splat(values[0])
    }
    fn splat(x: u32) -> Self;
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    /// Unsigned minimum.
    fn min(self, other: Self) -> Self;
    /// Low 32 bits of the lane products.
    fn mul_lo(self, other: Self) -> Self;
    /// High 32 bits of the unsigned 64-bit lane products.
    fn mul_hi(self, other: Self) -> Self;
    /// Transposes, in each group of eight lanes, the 8x8 matrix whose rows are the vectors.
    fn transpose(rows: &mut [Self; 8]);

    // The lanes read as WIDTH / 2 u64 (lanes 2k and 2k + 1 are the low and high words of u64 k):
    // the 64-bit accumulation of the dot-product kernels.

    /// u64 k = lane 2k of self times lane 2k of other (the odd lanes are ignored).
    fn mul_even(self, other: Self) -> Self;
    /// u64 lane sums, wrapping.
    fn add64(self, other: Self) -> Self;
    /// Each u64 shifted right by 32 bits: its high word moves to the even lane.
    fn shr64_32(self) -> Self;
    /// Each u64 shifted left by 32 bits: its low word moves to the odd lane.
    fn shl64_32(self) -> Self;
    /// The odd lanes copied into the even lanes below them, the odd lanes left unspecified:
    /// the operand of a [`Lanes::mul_even`] of the odd lanes (a shuffle where the CPU's
    /// shifts compete with its multiplies).
    #[inline(always)]
    fn odd_to_even(self) -> Self {
        self.shr64_32()
    }
    /// Bitwise and.
    fn and(self, other: Self) -> Self;
    /// Each 32-bit lane shifted right by 31 bits: its top bit.
    fn shr32_31(self) -> Self;
    /// Per 32-bit lane, the sum of the products of its signed 16-bit halves with other's
    /// (x86's `pmaddwd`); wraps only for -2^15 * -2^15 twice.
    fn madd16(self, other: Self) -> Self;
    /// self + x.madd16(w), fused where the CPU has an instruction for it.
    #[inline(always)]
    fn madd16_add(self, x: Self, w: Self) -> Self {
        self.add(x.madd16(w))
    }
    /// [`super::Kernels::unpack_30_bit`]: the portable loop, unless the lanes can permute.
    #[inline(always)]
    fn unpack_30_bit(out: &mut [u32], packed: &[u8], modulus: &Modulus) -> bool {
        super::portable::unpack_groups::<30>(packed, modulus, out)
    }
}

/// A modulus broadcast to all lanes, with the constants the kernels use.
#[derive(Clone, Copy)]
struct VectorModulus<V> {
    q: V,
    two_q: V,
    q_inv: V,
    montgomery_r: (V, V),
}

impl<V: Lanes> VectorModulus<V> {
    #[inline(always)]
    fn new(m: &Modulus) -> Self {
        let r = m.montgomery_r();
        Self {
            q: V::splat(m.value()),
            two_q: V::splat(2 * m.value()),
            q_inv: V::splat(m.q_inv()),
            montgomery_r: (V::splat(r.value), V::splat(r.quotient)),
        }
    }

    /// x - c if x >= c, else x, for x < 2c <= 2^32: the unsigned minimum of x and x - c
    /// (when x < c, x - c wraps above x). Constant-time.
    #[inline(always)]
    fn reduce_below(x: V, c: V) -> V {
        x.min(x.sub(c))
    }

    /// x * w mod q in [0, 2q) for any x (Shoup).
    #[inline(always)]
    fn mul_shoup_lazy(&self, x: V, w: V, w_quotient: V) -> V {
        x.mul_lo(w).sub(x.mul_hi(w_quotient).mul_lo(self.q))
    }

    /// a * b 2^-32 mod q in (0, 2q), for a * b < q * 2^32 (Montgomery).
    #[inline(always)]
    fn mul_montgomery_lazy(&self, a: V, b: V) -> V {
        let low = a.mul_lo(b);
        let high = a.mul_hi(b);
        let m = low.mul_lo(self.q_inv);
        // (a*b - m*q) / 2^32 is exact and lies in (-q, q); shifting by q gives (0, 2q).
        high.sub(m.mul_hi(self.q)).add(self.q)
    }

    /// a * b 2^-32 mod q in [0, q), for a * b < q * 2^32: the portable `mul_montgomery`.
    #[inline(always)]
    fn mul_montgomery(&self, a: V, b: V) -> V {
        Self::reduce_below(self.mul_montgomery_lazy(a, b), self.q)
    }

    /// a * b mod q in [0, q), for a * b < q * 2^32: Montgomery, then Shoup by 2^32 mod q.
    #[inline(always)]
    fn mul(&self, a: V, b: V) -> V {
        let reduced = self.mul_montgomery_lazy(a, b);
        let product = self.mul_shoup_lazy(reduced, self.montgomery_r.0, self.montgomery_r.1);
        Self::reduce_below(product, self.q)
    }

    /// Cooley-Tukey butterfly on the lazy range [0, 4q).
    #[inline(always)]
    fn forward_butterfly(&self, x: &mut V, y: &mut V, w: V, w_quotient: V) {
        let xr = Self::reduce_below(*x, self.two_q);
        let t = self.mul_shoup_lazy(*y, w, w_quotient);
        *x = xr.add(t);
        *y = xr.add(self.two_q).sub(t);
    }

    /// Gentleman-Sande butterfly on the lazy range [0, 2q).
    #[inline(always)]
    fn inverse_butterfly(&self, x: &mut V, y: &mut V, w: V, w_quotient: V) {
        let (u, v) = (*x, *y);
        *x = Self::reduce_below(u.add(v), self.two_q);
        *y = self.mul_shoup_lazy(u.add(self.two_q).sub(v), w, w_quotient);
    }
}

/// A butterfly applied to pairs of vectors, given their group. A trait, not a closure: a
/// closure is compiled without its caller's target features, and an intrinsic that is not
/// inlined costs a call per lane operation.
trait PairStage<V> {
    fn butterfly(&self, group: usize, x: &mut V, y: &mut V);
}

/// Runs `stage` over every pair (x, y) of vectors `distance` words apart, with its group.
#[inline(always)]
fn for_each_pair<V: Lanes>(a: &mut [u32], distance: usize, stage: &impl PairStage<V>) {
    for (group, pair) in a.chunks_exact_mut(2 * distance).enumerate() {
        let (xs, ys) = pair.split_at_mut(distance);
        let xs = xs.chunks_exact_mut(V::WIDTH);
        let ys = ys.chunks_exact_mut(V::WIDTH);
        for (xw, yw) in xs.zip(ys) {
            let (mut x, mut y) = (V::load(xw), V::load(yw));
            stage.butterfly(group, &mut x, &mut y);
            x.store(xw);
            y.store(yw);
        }
    }
}

/// One wide stage, forward (Cooley-Tukey) or inverse (Gentleman-Sande): group g's twiddle
/// broadcast.
struct WideStage<'a, V, const INVERSE: bool> {
    m: &'a VectorModulus<V>,
    values: &'a [u32],
    quotients: &'a [u32],
}

impl<V: Lanes, const INVERSE: bool> PairStage<V> for WideStage<'_, V, INVERSE> {
    #[inline(always)]
    fn butterfly(&self, g: usize, x: &mut V, y: &mut V) {
        let (w, wq) = (V::splat(self.values[g]), V::splat(self.quotients[g]));
        if INVERSE {
            self.m.inverse_butterfly(x, y, w, wq)
        } else {
            self.m.forward_butterfly(x, y, w, wq)
        }
    }
}

/// The last inverse stage with the scaling by 1/n folded in: sums times n^-1, differences
/// times (inverse twiddle 1) n^-1, both fully reduced.
struct LastInverseStage<V> {
    m: VectorModulus<V>,
    n_inv: (V, V),
    n_inv_twiddle: (V, V),
}

impl<V: Lanes> PairStage<V> for LastInverseStage<V> {
    #[inline(always)]
    fn butterfly(&self, _: usize, x: &mut V, y: &mut V) {
        let (m, (s, sq), (d, dq)) = (&self.m, self.n_inv, self.n_inv_twiddle);
        let (u, v) = (*x, *y);
        *x = VectorModulus::reduce_below(m.mul_shoup_lazy(u.add(v), s, sq), m.q);
        *y = VectorModulus::reduce_below(m.mul_shoup_lazy(u.add(m.two_q).sub(v), d, dq), m.q);
    }
}

/// The stages run on a 64-coefficient block in registers (see [`for_each_block`]).
trait BlockStages<V> {
    fn run(&self, first_block: usize, rows: &mut [V; 8], tail: TailTwiddles<'_>);
}

/// Runs `stages` on every 64-coefficient block of `a` held as eight rows of eight lanes
/// (`V::GROUPS` consecutive blocks at once, one per group of lanes), with the first block's
/// index and the blocks' tail twiddles, and stores them back.
#[inline(always)]
fn for_each_block<V: Lanes>(a: &mut [u32], tail: &[u32], stages: &impl BlockStages<V>) {
    for (index, (blocks, twiddles)) in a
        .chunks_exact_mut(TAIL_BLOCK * V::GROUPS)
        .zip(tail.chunks_exact(TAIL_WORDS * V::GROUPS))
        .enumerate()
    {
        // Written out: a closure here (as in `array::from_fn`) would not inherit the target
        // features, and its loads would not inline.
        let mut rows: [V; 8] = [
            V::load_groups(&blocks[0..], TAIL_BLOCK),
            V::load_groups(&blocks[8..], TAIL_BLOCK),
            V::load_groups(&blocks[16..], TAIL_BLOCK),
            V::load_groups(&blocks[24..], TAIL_BLOCK),
            V::load_groups(&blocks[32..], TAIL_BLOCK),
            V::load_groups(&blocks[40..], TAIL_BLOCK),
            V::load_groups(&blocks[48..], TAIL_BLOCK),
            V::load_groups(&blocks[56..], TAIL_BLOCK),
        ];
        stages.run(index * V::GROUPS, &mut rows, TailTwiddles(twiddles));
        for (r, row) in rows.iter().enumerate() {
            row.store_groups(&mut blocks[8 * r..], TAIL_BLOCK);
        }
    }
}

/// The forward transform's last six stages: three on the rows, then, transposed, three on
/// the columns, and the full reduction.
struct ForwardBlocks<'a, V> {
    m: &'a VectorModulus<V>,
    values: &'a [u32],
    quotients: &'a [u32],
    n: usize,
}

impl<V: Lanes> BlockStages<V> for ForwardBlocks<'_, V> {
    #[inline(always)]
    fn run(&self, block: usize, v: &mut [V; 8], tail: TailTwiddles<'_>) {
        let m = self.m;
        let rows = RowTwiddles {
            values: self.values,
            quotients: self.quotients,
            n: self.n,
            block,
        };
        radix8_forward(m, v, rows);
        V::transpose(v);
        radix8_forward(m, v, tail);
        for x in v.iter_mut() {
            *x = VectorModulus::reduce_below(VectorModulus::reduce_below(*x, m.two_q), m.q);
        }
        V::transpose(v);
    }
}

/// The inverse transform's first six stages: three on the transposed columns, then three
/// on the rows.
struct InverseBlocks<'a, V> {
    m: &'a VectorModulus<V>,
    values: &'a [u32],
    quotients: &'a [u32],
    n: usize,
}

impl<V: Lanes> BlockStages<V> for InverseBlocks<'_, V> {
    #[inline(always)]
    fn run(&self, block: usize, v: &mut [V; 8], tail: TailTwiddles<'_>) {
        let rows = RowTwiddles {
            values: self.values,
            quotients: self.quotients,
            n: self.n,
            block,
        };
        V::transpose(v);
        radix8_inverse(self.m, v, tail);
        V::transpose(v);
        radix8_inverse(self.m, v, rows);
    }
}

/// Seven (twiddle, quotient) vector pairs for three radix-2 stages on eight vectors, in the
/// order [`radix8_forward`] and [`radix8_inverse`] use them. Loaded where used, not before:
/// eight data vectors and fourteen twiddle vectors would not fit sixteen AVX2 registers.
trait Twiddles<V> {
    fn get(&self, k: usize) -> (V, V);
}

/// The blocks' tail twiddles, one value per lane, [`TAIL_WORDS`] per block (see `fill_tail`
/// in [`crate::ntt`]).
#[derive(Clone, Copy)]
struct TailTwiddles<'a>(&'a [u32]);

impl<V: Lanes> Twiddles<V> for TailTwiddles<'_> {
    #[inline(always)]
    fn get(&self, k: usize) -> (V, V) {
        (
            V::load_groups(&self.0[16 * k..], TAIL_WORDS),
            V::load_groups(&self.0[16 * k + 8..], TAIL_WORDS),
        )
    }
}

/// Twiddles of the three row stages (distances of 32, 16 and 8 coefficients, i.e. 4, 2 and 1
/// rows) of blocks `block`, `block + 1`, ..., each broadcast over its group of lanes.
#[derive(Clone, Copy)]
struct RowTwiddles<'a> {
    values: &'a [u32],
    quotients: &'a [u32],
    n: usize,
    block: usize,
}

impl<V: Lanes> Twiddles<V> for RowTwiddles<'_> {
    #[inline(always)]
    fn get(&self, k: usize) -> (V, V) {
        let (n, b) = (self.n, self.block);
        // The next block's twiddle of the same butterfly lies 1, 2 or 4 entries further.
        let (index, stride) = match k {
            0 => (n / 64 + b, 1),
            1 | 2 => (n / 32 + 2 * b + (k - 1), 2),
            _ => (n / 16 + 4 * b + (k - 3), 4),
        };
        (
            V::splat_groups(&self.values[index..], stride),
            V::splat_groups(&self.quotients[index..], stride),
        )
    }
}

/// Three forward stages on eight vectors: pairs 4 apart with w[0], 2 apart with w[1] (first
/// half) and w[2], 1 apart with w[3..7].
#[inline(always)]
fn radix8_forward<V: Lanes>(m: &VectorModulus<V>, v: &mut [V; 8], w: impl Twiddles<V>) {
    for c in 0..4 {
        let [x, y] = v.get_disjoint_mut([c, c + 4]).expect("distinct");
        let (t, tq) = w.get(0);
        m.forward_butterfly(x, y, t, tq);
    }
    for (c, k) in [(0, 1), (1, 1), (4, 2), (5, 2)] {
        let [x, y] = v.get_disjoint_mut([c, c + 2]).expect("distinct");
        let (t, tq) = w.get(k);
        m.forward_butterfly(x, y, t, tq);
    }
    for k in 0..4 {
        let [x, y] = v.get_disjoint_mut([2 * k, 2 * k + 1]).expect("distinct");
        let (t, tq) = w.get(3 + k);
        m.forward_butterfly(x, y, t, tq);
    }
}

/// The three stages of [`radix8_forward`] undone, in reverse order.
#[inline(always)]
fn radix8_inverse<V: Lanes>(m: &VectorModulus<V>, v: &mut [V; 8], w: impl Twiddles<V>) {
    for k in 0..4 {
        let [x, y] = v.get_disjoint_mut([2 * k, 2 * k + 1]).expect("distinct");
        let (t, tq) = w.get(3 + k);
        m.inverse_butterfly(x, y, t, tq);
    }
    for (c, k) in [(0, 1), (1, 1), (4, 2), (5, 2)] {
        let [x, y] = v.get_disjoint_mut([c, c + 2]).expect("distinct");
        let (t, tq) = w.get(k);
        m.inverse_butterfly(x, y, t, tq);
    }
    for c in 0..4 {
        let [x, y] = v.get_disjoint_mut([c, c + 4]).expect("distinct");
        let (t, tq) = w.get(0);
        m.inverse_butterfly(x, y, t, tq);
    }
}

/// Forward NTT: stages with distance >= 64 pass over memory with broadcast twiddles; each
/// 64-coefficient block then runs the last six stages in registers, three on its rows and,
/// after a transpose, three on its columns.
#[inline(always)]
pub(crate) fn forward_ntt<V: Lanes, S: AsRef<[u32]>>(a: &mut [u32], table: &NttTable<S>) {
    check_lengths(a.len(), table.n());
    forward_stages::<V, S>(a, table, 1);
}

/// [`forward_ntt`] of `input` into `out`: the first stage reads `input`, so that no copy
/// precedes the transform.
#[inline(always)]
pub(crate) fn forward_ntt_from<V: Lanes, S: AsRef<[u32]>>(
    out: &mut [u32],
    input: &[u32],
    table: &NttTable<S>,
) {
    check_lengths(out.len(), table.n());
    check_lengths(input.len(), out.len());
    let half = out.len() / 2;
    if half < 64 {
        out.copy_from_slice(input);
        return forward_ntt::<V, S>(out, table);
    }
    let m = VectorModulus::<V>::new(table.modulus());
    let (values, quotients) = table.forward_twiddles();
    let (w, wq) = (V::splat(values[1]), V::splat(quotients[1]));
    let (xs_in, ys_in) = input.split_at(half);
    let (xs, ys) = out.split_at_mut(half);
    for (((xw, yw), xi), yi) in xs
        .chunks_exact_mut(V::WIDTH)
        .zip(ys.chunks_exact_mut(V::WIDTH))
        .zip(xs_in.chunks_exact(V::WIDTH))
        .zip(ys_in.chunks_exact(V::WIDTH))
    {
        let (mut x, mut y) = (V::load(xi), V::load(yi));
        m.forward_butterfly(&mut x, &mut y, w, wq);
        x.store(xw);
        y.store(yw);
    }
    forward_stages::<V, S>(out, table, 2);
}

/// The forward transform's stages from the one with `groups` groups (a power of two) on.
#[inline(always)]
fn forward_stages<V: Lanes, S: AsRef<[u32]>>(a: &mut [u32], table: &NttTable<S>, groups: usize) {
    let n = a.len();
    let m = VectorModulus::<V>::new(table.modulus());
    let (values, quotients) = table.forward_twiddles();
    let mut groups = groups;
    let mut distance = n / (2 * groups);
    while distance >= 64 {
        let stage = WideStage::<V, false> {
            m: &m,
            values: &values[groups..2 * groups],
            quotients: &quotients[groups..2 * groups],
        };
        for_each_pair::<V>(a, distance, &stage);
        groups *= 2;
        distance /= 2;
    }
    let blocks = ForwardBlocks {
        m: &m,
        values,
        quotients,
        n,
    };
    for_each_block::<V>(a, table.forward_tail(), &blocks);
}

/// Inverse NTT: the six stages with distance <= 32 per block in registers (columns first),
/// then the wider stages over memory, the last one scaled by 1/n times `factor`.
#[inline(always)]
pub(crate) fn inverse_ntt_times<V: Lanes, S: AsRef<[u32]>>(
    a: &mut [u32],
    table: &NttTable<S>,
    factor: u32,
) {
    check_lengths(a.len(), table.n());
    let n = a.len();
    let m = VectorModulus::<V>::new(table.modulus());
    let (values, quotients) = table.inverse_twiddles();
    let blocks = InverseBlocks {
        m: &m,
        values,
        quotients,
        n,
    };
    for_each_block::<V>(a, table.inverse_tail(), &blocks);
    let mut groups = n / 128;
    let mut distance = 64;
    while groups > 1 {
        let stage = WideStage::<V, true> {
            m: &m,
            values: &values[groups..2 * groups],
            quotients: &quotients[groups..2 * groups],
        };
        for_each_pair::<V>(a, distance, &stage);
        groups /= 2;
        distance *= 2;
    }
    let (n_inv, n_inv_twiddle) = table.last_inverse_multipliers(factor);
    let last = LastInverseStage {
        m,
        n_inv: (V::splat(n_inv.value), V::splat(n_inv.quotient)),
        n_inv_twiddle: (
            V::splat(n_inv_twiddle.value),
            V::splat(n_inv_twiddle.quotient),
        ),
    };
    for_each_pair::<V>(a, n / 2, &last);
}

/// Applies `f` to every vector-sized chunk of `a` with the matching chunks of `b` and `c`,
/// then the scalar `tail` to the words that do not fill a vector.
#[inline(always)]
fn zip3<V: Lanes>(
    a: &mut [u32],
    b: &[u32],
    c: &[u32],
    f: impl Fn(V, V, V) -> V,
    tail: impl Fn(u32, u32, u32) -> u32,
) {
    let vectors = V::WIDTH * (a.len() / V::WIDTH);
    let (a_full, a_rest) = a.split_at_mut(vectors);
    let (b_full, b_rest) = b.split_at(vectors);
    let (c_full, c_rest) = c.split_at(vectors);
    for ((x, y), z) in a_full
        .chunks_exact_mut(V::WIDTH)
        .zip(b_full.chunks_exact(V::WIDTH))
        .zip(c_full.chunks_exact(V::WIDTH))
    {
        f(V::load(x), V::load(y), V::load(z)).store(x);
    }
    for ((x, &y), &z) in a_rest.iter_mut().zip(b_rest).zip(c_rest) {
        *x = tail(*x, y, z);
    }
}

#[inline(always)]
pub(crate) fn mul_assign<V: Lanes>(a: &mut [u32], b: &[u32], modulus: &Modulus) {
    check_lengths(a.len(), b.len());
    let m = VectorModulus::<V>::new(modulus);
    zip3::<V>(a, b, b, |x, y, _| m.mul(x, y), |x, y, _| modulus.mul(x, y));
}

/// The vector form of [`super::Kernels::lift_centered`]: (half - x) >> 31 is 1 exactly when
/// x > half, and selects the shift by a multiplication.
#[inline(always)]
pub(crate) fn lift_centered<V: Lanes>(
    out: &mut [u32],
    input: &[u32],
    from: &Modulus,
    to: &Modulus,
) {
    check_lengths(out.len(), input.len());
    let (half, shift) = (from.value() / 2, to.value().wrapping_sub(from.value()));
    let (h, s) = (V::splat(half), V::splat(shift));
    zip3::<V>(
        out,
        input,
        input,
        |_, x, _| x.add(h.sub(x).shr32_31().mul_lo(s)),
        |_, x, _| super::lift_one(x, half, shift),
    );
}

/// The vector form of [`super::Kernels::square_tensor_montgomery`].
#[inline(always)]
pub(crate) fn square_tensor_montgomery<V: Lanes>(
    x0: &mut [u32],
    cross: &mut [u32],
    x1: &mut [u32],
    modulus: &Modulus,
) {
    check_lengths(x0.len(), cross.len());
    check_lengths(x0.len(), x1.len());
    let m = VectorModulus::<V>::new(modulus);
    let vectors = V::WIDTH * (x0.len() / V::WIDTH);
    for c in (0..vectors).step_by(V::WIDTH) {
        let (a, b) = (V::load(&x0[c..]), V::load(&x1[c..]));
        let product = m.mul_montgomery(a, b);
        VectorModulus::reduce_below(product.add(product), m.q).store(&mut cross[c..]);
        m.mul_montgomery(a, a).store(&mut x0[c..]);
        m.mul_montgomery(b, b).store(&mut x1[c..]);
    }
    for ((a, c), b) in x0[vectors..]
        .iter_mut()
        .zip(cross[vectors..].iter_mut())
        .zip(x1[vectors..].iter_mut())
    {
        super::square_tensor_one(a, c, b, modulus);
    }
}

#[inline(always)]
pub(crate) fn mul_acc<V: Lanes>(acc: &mut [u32], a: &[u32], b: &[u32], modulus: &Modulus) {
    check_lengths(acc.len(), a.len());
    check_lengths(acc.len(), b.len());
    let m = VectorModulus::<V>::new(modulus);
    zip3::<V>(
        acc,
        a,
        b,
        |s, x, y| VectorModulus::reduce_below(s.add(m.mul(x, y)), m.q),
        |s, x, y| modulus.add(s, modulus.mul(x, y)),
    );
}

#[inline(always)]
pub(crate) fn mul_scalar_assign<V: Lanes>(a: &mut [u32], w: ShoupConstant, modulus: &Modulus) {
    let m = VectorModulus::<V>::new(modulus);
    let (wv, wq) = (V::splat(w.value), V::splat(w.quotient));
    let mut words = a.chunks_exact_mut(V::WIDTH);
    for x in &mut words {
        VectorModulus::reduce_below(m.mul_shoup_lazy(V::load(x), wv, wq), m.q).store(x);
    }
    words
        .into_remainder()
        .iter_mut()
        .for_each(|x| *x = modulus.mul_shoup(*x, w));
}

/// The vector form of [`super::Kernels::mul_scalar`].
#[inline(always)]
pub(crate) fn mul_scalar<V: Lanes>(
    out: &mut [u32],
    a: &[u32],
    w: ShoupConstant,
    modulus: &Modulus,
) {
    check_lengths(out.len(), a.len());
    let m = VectorModulus::<V>::new(modulus);
    let (wv, wq) = (V::splat(w.value), V::splat(w.quotient));
    let mut outs = out.chunks_exact_mut(V::WIDTH);
    let mut ins = a.chunks_exact(V::WIDTH);
    for (o, x) in (&mut outs).zip(&mut ins) {
        VectorModulus::reduce_below(m.mul_shoup_lazy(V::load(x), wv, wq), m.q).store(o);
    }
    for (o, &x) in outs.into_remainder().iter_mut().zip(ins.remainder()) {
        *o = modulus.mul_shoup(x, w);
    }
}

/// The vector form of [`super::linear::join_halves`], with the same results: 2^15 (high -
/// 2^31) + (low - 2^31) is, mod q, high 2^15 + low + c for the constant c = -2^31 (2^15 + 1).
#[inline(always)]
pub(crate) fn join_halves<V: Lanes>(out: &mut [u32], low: &[u32], high: &[u32], modulus: &Modulus) {
    check_lengths(out.len(), low.len());
    check_lengths(out.len(), high.len());
    let m = VectorModulus::<V>::new(modulus);
    let shift = modulus.shoup(modulus.reduce_u64(1 << 15));
    let one = modulus.shoup(1);
    let start = super::linear::HALF_SUM_START as u64;
    let c = V::splat(modulus.neg(modulus.reduce_u64(start * ((1 << 15) + 1))));
    let (s, sq) = (V::splat(shift.value), V::splat(shift.quotient));
    let (o, oq) = (V::splat(one.value), V::splat(one.quotient));
    let reduce = |x: V| VectorModulus::reduce_below(x, m.q);
    zip3::<V>(
        out,
        low,
        high,
        |_, lo, hi| {
            // Shoup's product takes any u32 and returns [0, 2q).
            let high_part = reduce(m.mul_shoup_lazy(hi, s, sq));
            let low_part = reduce(m.mul_shoup_lazy(lo, o, oq));
            reduce(reduce(high_part.add(low_part)).add(c))
        },
        |_, lo, hi| super::linear::join_half_sums(lo, hi, modulus),
    );
}

/// The vector form of [`super::Kernels::scaled_add`], with the same results.
#[inline(always)]
pub(crate) fn scaled_add<V: Lanes, const SUBTRACT: bool>(
    a: &mut [u32],
    x: &[u32],
    w: ShoupConstant,
    offsets: &[u32],
    k: u32,
    modulus: &Modulus,
) {
    check_lengths(a.len(), x.len());
    check_lengths(a.len(), offsets.len());
    let m = VectorModulus::<V>::new(modulus);
    let (wv, wq, kv) = (V::splat(w.value), V::splat(w.quotient), V::splat(k));
    let reduce = |v: V| VectorModulus::reduce_below(v, m.q);
    zip3::<V>(
        a,
        x,
        offsets,
        |a, x, o| {
            let sum = reduce(reduce(reduce(m.mul_shoup_lazy(x, wv, wq)).add(o)).add(kv));
            if SUBTRACT {
                reduce(sum.add(m.q).sub(a))
            } else {
                reduce(sum.add(a))
            }
        },
        |a, x, o| super::scaled_add_one(a, x, w, o, k, SUBTRACT, modulus),
    );
}

/// The modulus constants of [`dot_montgomery`] and [`dot_pointwise_montgomery`].
#[derive(Clone, Copy)]
struct WideModulus<V> {
    p: V,
    neg_p_inv: V,
    r32: V,
    low_words: V,
}

impl<V: Lanes> WideModulus<V> {
    #[inline(always)]
    fn new(modulus: &Modulus) -> Self {
        Self {
            p: V::splat(modulus.value()),
            neg_p_inv: V::splat(modulus.q_inv().wrapping_neg()),
            r32: V::splat(modulus.montgomery_r().value),
            low_words: V::splat(u32::MAX).shr64_32(),
        }
    }

    /// acc * 2^-32 mod p per u64 lane, in the even lanes (odd lanes zero): the vector form of
    /// the portable `fold_redc`. Two folds of the high word (a 2^32 + b = a r32 + b mod p)
    /// bring acc below 2^60 + 2^32 < p 2^32, then Montgomery reduction leaves t < 2p.
    #[inline(always)]
    fn fold_redc(&self, acc: V) -> V {
        let y = acc
            .shr64_32()
            .mul_even(self.r32)
            .add64(acc.and(self.low_words));
        let y = y.shr64_32().mul_even(self.r32).add64(y.and(self.low_words));
        // m = y (-p^-1) mod 2^32 in the low word (a 32 x 32-bit product: one instruction
        // where a full 32-bit lane multiply takes two); mul_even reads only that word.
        let m = y.mul_even(self.neg_p_inv);
        let t = y.add64(m.mul_even(self.p)).shr64_32();
        // t < 2p < 2^31 in the even lanes; the odd lanes are 0 and stay 0 (min(0, -p) = 0).
        VectorModulus::reduce_below(t, self.p)
    }

    /// acc * 2^-32 mod p per u64 lane for acc below 12 * 2^60 < 2^63.6 (at most
    /// [`SHORT_DOT_ROWS`] products), in the even lanes: acc + m p stays below 2^64, so
    /// Montgomery reduction applies directly and leaves t < 2^31.6 + p < 8p, brought below p by
    /// three conditional subtractions (of 4p, 2p, p; 4p < 2^32).
    #[inline(always)]
    fn redc_short(&self, acc: V) -> V {
        let m = acc.mul_even(self.neg_p_inv);
        let t = acc.add64(m.mul_even(self.p)).shr64_32();
        let p2 = self.p.add(self.p);
        let t = VectorModulus::reduce_below(t, p2.add(p2));
        let t = VectorModulus::reduce_below(t, p2);
        VectorModulus::reduce_below(t, self.p)
    }

    /// Joins the reduced even-coefficient and odd-coefficient halves into one vector of residues.
    #[inline(always)]
    fn join(even: V, odd: V) -> V {
        even.add(odd.shl64_32())
    }
}

/// out[c] = sum_r rows[r][c] * weights[r] * 2^-32 mod p for row values and weights below
/// 2^30, at most [`super::dot::MAX_ROWS`] rows: the even and odd coefficients of a vector
/// accumulate as u64 in two vectors, with one reduction per coefficient. Same contract and
/// results as the portable [`super::dot::dot_montgomery`].
#[inline(always)]
pub(crate) fn dot_montgomery<V: Lanes>(
    out: &mut [u32],
    rows: &[&[u32]],
    weights: &[u32],
    modulus: &Modulus,
) {
    assert!(
        rows.len() == weights.len()
            && rows.len() <= super::dot::MAX_ROWS
            && rows.iter().all(|r| r.len() == out.len()),
        "dot operands"
    );
    if rows.len() <= SHORT_DOT_ROWS {
        dot_rows::<V, true>(out, rows, weights, modulus);
    } else {
        dot_rows::<V, false>(out, rows, weights, modulus);
    }
    let tail = 2 * V::WIDTH * (out.len() / (2 * V::WIDTH));
    if tail < out.len() {
        let rest: heapless::Vec<&[u32], { super::dot::MAX_ROWS }> =
            rows.iter().map(|r| &r[tail..]).collect();
        super::dot::dot_montgomery(&mut out[tail..], &rest, weights, modulus);
    }
}

/// Rows up to which a dot product's sum stays below 2^63.6, so that Montgomery reduction needs
/// no folding first (see [`WideModulus::redc_short`]).
const SHORT_DOT_ROWS: usize = 12;

/// The vector part of [`dot_montgomery`], two vectors of coefficients a pass: each row's
/// address and weight serve both.
#[inline(always)]
fn dot_rows<V: Lanes, const SHORT: bool>(
    out: &mut [u32],
    rows: &[&[u32]],
    weights: &[u32],
    modulus: &Modulus,
) {
    let m = WideModulus::<V>::new(modulus);
    let w: heapless::Vec<V, { super::dot::MAX_ROWS }> =
        weights.iter().map(|&w| V::splat(w)).collect();
    let reduce = |acc: V| {
        if SHORT {
            m.redc_short(acc)
        } else {
            m.fold_redc(acc)
        }
    };
    let width = 2 * V::WIDTH;
    for (c, o) in out.chunks_exact_mut(width).enumerate() {
        let mut acc = [V::splat(0); 4];
        for (row, &w) in rows.iter().zip(&w) {
            let x = &row[width * c..width * (c + 1)];
            let (x0, x1) = (V::load(x), V::load(&x[V::WIDTH..]));
            acc[0] = acc[0].add64(x0.mul_even(w));
            acc[1] = acc[1].add64(x0.odd_to_even().mul_even(w));
            acc[2] = acc[2].add64(x1.mul_even(w));
            acc[3] = acc[3].add64(x1.odd_to_even().mul_even(w));
        }
        WideModulus::join(reduce(acc[0]), reduce(acc[1])).store(o);
        WideModulus::join(reduce(acc[2]), reduce(acc[3])).store(&mut o[V::WIDTH..]);
    }
}

/// [`super::Kernels::dot_montgomery_outputs`]: up to eight outputs a pass over the rows, each
/// vector of a row loaded (and its odd lanes moved down) once for all of them, instead of once
/// an output; the same sums and reductions as [`dot_montgomery`], so the same words.
#[inline(always)]
pub(crate) fn dot_montgomery_outputs<V: Lanes>(
    outs: &mut [&mut [u32]],
    rows: &[&[u32]],
    own: &[&[u32]],
    weights: &[&[u32]],
    moduli: &[Modulus],
) {
    super::dot::check_outputs(outs.len(), rows.len(), own, weights, moduli);
    let n = outs.first().map_or(0, |o| o.len());
    assert!(
        outs.iter().all(|o| o.len() == n) && rows.iter().chain(own).all(|r| r.len() == n),
        "dot operands"
    );
    let short = rows.len() + usize::from(!own.is_empty()) <= SHORT_DOT_ROWS;
    let mut start = 0;
    while start < outs.len() {
        let group = start..outs.len().min(start + DOT_OUTPUTS);
        let outs = &mut outs[group.clone()];
        let own = own.get(group.clone()).unwrap_or(&[]);
        let (weights, moduli) = (&weights[group.clone()], &moduli[group.clone()]);
        macro_rules! by_count {
            ($($j:literal)*) => {
                match (outs.len(), short) {
                    $(
                        ($j, true) => dot_outputs::<V, $j, true>(outs, rows, own, weights, moduli),
                        ($j, false) => dot_outputs::<V, $j, false>(outs, rows, own, weights, moduli),
                    )*
                    _ => unreachable!("1 to DOT_OUTPUTS outputs"),
                }
            };
        }
        by_count!(1 2 3 4 5 6 7 8);
        start = group.end;
    }
}

/// Outputs of one pass of [`dot_montgomery_outputs`]: two accumulators each (even and odd
/// coefficients), sixteen registers of AVX-512's and NEON's 32.
const DOT_OUTPUTS: usize = 8;

/// `J` outputs of [`dot_montgomery_outputs`], one vector of coefficients at a time.
#[inline(always)]
fn dot_outputs<V: Lanes, const J: usize, const SHORT: bool>(
    outs: &mut [&mut [u32]],
    rows: &[&[u32]],
    own: &[&[u32]],
    weights: &[&[u32]],
    moduli: &[Modulus],
) {
    let n = outs[0].len();
    let width = V::WIDTH;
    let done = n - n % width;
    let m: [WideModulus<V>; J] = core::array::from_fn(|j| WideModulus::new(&moduli[j]));
    let mut w = [[0u32; super::dot::MAX_ROWS]; J];
    for (w, weights) in w.iter_mut().zip(weights) {
        w[..weights.len()].copy_from_slice(weights);
    }
    let own_row = rows.len();
    for c in (0..done).step_by(width) {
        let mut acc = [[V::splat(0); 2]; J];
        for (r, row) in rows.iter().enumerate() {
            let x = V::load(&row[c..c + width]);
            let odd = x.odd_to_even();
            for (acc, w) in acc.iter_mut().zip(&w) {
                let w = V::splat(w[r]);
                acc[0] = acc[0].add64(x.mul_even(w));
                acc[1] = acc[1].add64(odd.mul_even(w));
            }
        }
        for ((acc, w), own) in acc.iter_mut().zip(&w).zip(own) {
            let x = V::load(&own[c..c + width]);
            let w = V::splat(w[own_row]);
            acc[0] = acc[0].add64(x.mul_even(w));
            acc[1] = acc[1].add64(x.odd_to_even().mul_even(w));
        }
        for ((out, acc), m) in outs.iter_mut().zip(&acc).zip(&m) {
            // No closure here: one would be compiled apart from the target features.
            let (even, odd) = if SHORT {
                (m.redc_short(acc[0]), m.redc_short(acc[1]))
            } else {
                (m.fold_redc(acc[0]), m.fold_redc(acc[1]))
            };
            WideModulus::join(even, odd).store(&mut out[c..c + width]);
        }
    }
    if done < n {
        let rest: heapless::Vec<&[u32], { super::dot::MAX_ROWS }> =
            rows.iter().map(|r| &r[done..]).collect();
        let own_rest: heapless::Vec<&[u32], DOT_OUTPUTS> = own.iter().map(|r| &r[done..]).collect();
        let mut outs_rest: heapless::Vec<&mut [u32], DOT_OUTPUTS> =
            outs.iter_mut().map(|o| &mut o[done..]).collect();
        super::dot::dot_montgomery_outputs(&mut outs_rest, &rest, &own_rest, weights, moduli);
    }
}

/// out[c] = sum_r a[r][c] * b[r][c] * 2^-32 mod p for residues mod p in (2^29, 2^30), at
/// most [`super::dot::MAX_ROWS`] pairs; the vector form of the portable
/// [`super::dot::dot_pointwise_montgomery`], with the same results.
#[inline(always)]
pub(crate) fn dot_pointwise_montgomery<V: Lanes>(
    out: &mut [u32],
    a: &[&[u32]],
    b: &[&[u32]],
    modulus: &Modulus,
) {
    let n = out.len();
    assert!(
        a.len() == b.len() && a.len() <= super::dot::MAX_ROWS,
        "at most {} pairs",
        super::dot::MAX_ROWS
    );
    assert!(a.iter().chain(b).all(|r| r.len() == n), "dot operands");
    let m = WideModulus::<V>::new(modulus);
    let (width, vectors) = (V::WIDTH, n / V::WIDTH);
    for c in 0..vectors {
        let (mut even, mut odd) = (V::splat(0), V::splat(0));
        for (x, y) in a.iter().zip(b) {
            let x = V::load(&x[width * c..width * (c + 1)]);
            let y = V::load(&y[width * c..width * (c + 1)]);
            even = even.add64(x.mul_even(y));
            odd = odd.add64(x.odd_to_even().mul_even(y.odd_to_even()));
        }
        let joined = WideModulus::join(m.fold_redc(even), m.fold_redc(odd));
        joined.store(&mut out[width * c..width * (c + 1)]);
    }
    let tail = width * vectors;
    if tail < n {
        let rest_a: heapless::Vec<&[u32], { super::dot::MAX_ROWS }> =
            a.iter().map(|r| &r[tail..]).collect();
        let rest_b: heapless::Vec<&[u32], { super::dot::MAX_ROWS }> =
            b.iter().map(|r| &r[tail..]).collect();
        super::dot::dot_pointwise_montgomery(&mut out[tail..], &rest_a, &rest_b, modulus);
    }
}

/// The vector form of [`super::linear::pair_weighted_sum`] for several outputs, with the same
/// results. Output-stationary: a tile of outputs' accumulators over a few vectors of columns
/// stays in registers while every pair streams past, each pair's load feeding the whole tile
/// and each weight broadcast once per column chunk; the accumulators are loaded and stored
/// once a call instead of once every four pairs. The weights are pair-major, so a tile reads
/// a pair's weights from one place: one pointer for the tile instead of one an output (on an
/// AMD EPYC with AVX2's 16 registers, six had spilled the pairs' pointer and kept a bounds
/// check a pair).
#[inline(always)]
pub(crate) fn pair_weighted_sum<V: Lanes>(
    accs: &mut [&mut [u32]],
    pairs: PairRows<'_>,
    weights: &[u32],
) {
    let outputs = accs.len();
    let n = accs.first().map_or(0, |a| a.len());
    let count = pairs.count(n);
    assert!(
        accs.iter().all(|a| a.len() == n)
            && count.and_then(|c| c.checked_mul(outputs)) == Some(weights.len()),
        "pair weighted sum operands"
    );
    if outputs == 0 {
        return;
    }
    // Each form of rows gives the tiles an iterator over the rows from a column on, one
    // monomorphized tile loop each: strided rows step by the stride, without a load of
    // each row's pointer and length.
    let done = match pairs {
        PairRows::Listed(rows) => pair_sums_by_shape::<V, _, _>(
            accs,
            |from, pairs: Range<usize>| rows[pairs].iter().map(move |r| &r[from..]),
            weights,
            n,
        ),
        PairRows::Strided { words, stride } => pair_sums_by_shape::<V, _, _>(
            accs,
            |from, pairs: Range<usize>| {
                words[pairs.start * stride..pairs.end * stride]
                    .chunks_exact(stride)
                    .map(move |r| &r[from..])
            },
            weights,
            n,
        ),
    };
    // Columns past the tiles' chunks, if any. Checked first: the loops over every output and
    // pair below cost the dense layer of the committed model a quarter of its time on an
    // AMD EPYC (AVX2) even with no column to run (1.55 s -> 1.10 a batch).
    if done == n {
        return;
    }
    let count = count.unwrap_or(0);
    for (o, acc) in accs.iter_mut().enumerate() {
        for (p, &w) in (0..count).zip(weights.iter().skip(o).step_by(outputs)) {
            for (a, &x) in acc[done..].iter_mut().zip(&pairs.row(p, n)[done..]) {
                *a = a.wrapping_add(super::linear::madd(x, w));
            }
        }
    }
}

/// [`pair_weighted_sum`]'s tiles for V's registers and the outputs' count; returns the
/// columns done. `rows(c, pairs)`: those rows from column c on.
#[inline(always)]
fn pair_sums_by_shape<'r, V: Lanes, R, I>(
    accs: &mut [&mut [u32]],
    rows: R,
    weights: &[u32],
    n: usize,
) -> usize
where
    R: Fn(usize, Range<usize>) -> I + Copy,
    I: Iterator<Item = &'r [u32]>,
{
    // Tiles of 5 outputs x 4 vectors (20 accumulators, 4 pair vectors and a weight: 25 of
    // AVX-512's and NEON's 32 registers). On an Intel Xeon (Ice Lake, VNNI), with the pairs
    // in blocks that stay in L1, criterion's dense block took 347 to 389 us, against 354 to
    // 542 in 4 x 4 and 342 to 387 in 6 x 4 (7 x 3 and 8 x 2 far slower), and a convolution
    // window's five maps make one tile: 2.8 to 3.4 us against 3.3 to 4.9 in 4 x 4. (Not
    // timed on NEON, which takes the same shape.) With
    // AVX2's 16: 6 x 2 for six outputs or more (12 accumulators, 2 pair vectors and a weight;
    // on an AMD EPYC, the dense layer's sums 20% faster than in 2 x 4: each pair's two
    // vectors feed three times the products, and a column chunk's pairs, 64 bytes each,
    // stay in a 32 KB L1), else 2 x 4 (the convolution's five maps).
    match V::REGISTERS {
        32.. => pair_sums_in_tiles::<V, R, I, 5, 4>(accs, rows, weights, n),
        _ if accs.len() >= 6 => pair_sums_in_tiles::<V, R, I, 6, 2>(accs, rows, weights, n),
        _ => pair_sums_in_tiles::<V, R, I, 2, 4>(accs, rows, weights, n),
    }
}

/// The C vectors at the start of `src`. Written out: loads in a closure (as in
/// `array::from_fn`) do not inherit the target features, and adding another kernel's tiles
/// to this module once had them compiled out of line, a call per load.
#[inline(always)]
fn load_vectors<V: Lanes, const C: usize>(src: &[u32]) -> [V; C] {
    let mut vectors = [V::splat(0); C];
    for (v, vector) in vectors.iter_mut().enumerate() {
        *vector = V::load(&src[v * V::WIDTH..]);
    }
    vectors
}

/// [`pair_weighted_sum`] on the first columns of `n` in chunks of C vectors, in tiles of T
/// outputs (fewer for the last ones); returns the columns done.
#[inline(always)]
fn pair_sums_in_tiles<'r, V: Lanes, R, I, const T: usize, const C: usize>(
    accs: &mut [&mut [u32]],
    rows: R,
    weights: &[u32],
    n: usize,
) -> usize
where
    R: Fn(usize, Range<usize>) -> I + Copy,
    I: Iterator<Item = &'r [u32]>,
{
    let chunk = C * V::WIDTH;
    let done = n - n % chunk;
    let outputs = accs.len();
    // The pairs in blocks whose chunk of columns stays in L1 while every tile of outputs
    // reads it (see PAIR_BLOCK_BYTES), in blocks of equal size.
    let count = weights.len() / outputs;
    let row_bytes = chunk * core::mem::size_of::<u32>();
    let blocks = (count * row_bytes).div_ceil(PAIR_BLOCK_BYTES).max(1);
    let per_block = count.div_ceil(blocks).max(1);
    for start in (0..done).step_by(chunk) {
        for first_pair in (0..count).step_by(per_block) {
            let pairs = first_pair..count.min(first_pair + per_block);
            let last_block = pairs.end == count;
            let weights = &weights[pairs.start * outputs..pairs.end * outputs];
            let mut o = 0;
            while o < outputs {
                let tile = Tile {
                    first: o,
                    outputs,
                    start,
                };
                // The next tile's accumulator lines, while this one runs, where there are
                // many outputs: a hundred outputs' rows are more streams than the hardware
                // prefetchers follow, and the dense layer's are in memory (every output's
                // sums, 118 MB for the committed model). A convolution window's few are in
                // cache, as are this chunk's in the blocks after its first.
                let next = match (o + T < outputs, last_block) {
                    (true, _) => Some((o + T, start)),
                    (false, true) => Some((0, start + chunk)),
                    (false, false) => None,
                };
                if let Some(next) = next.filter(|n| outputs >= PREFETCHED_OUTPUTS && n.1 < done) {
                    for sums in accs[next.0..].iter().take(T) {
                        // Every line the chunk touches (allocations need not start one).
                        let sums = &sums[next.1..next.1 + chunk];
                        for line in sums.chunks(16) {
                            V::prefetch(line);
                        }
                        V::prefetch(&sums[chunk - 1..]);
                    }
                }
                let rows = rows(start, pairs.clone());
                o += match outputs - o {
                    l if l >= T => pair_tile::<V, _, T, C>(accs, rows, weights, tile),
                    2.. => pair_tile::<V, _, 2, C>(accs, rows, weights, tile),
                    _ => pair_tile::<V, _, 1, C>(accs, rows, weights, tile),
                };
            }
        }
    }
    done
}

/// The bytes of a column chunk's pairs that [`pair_weighted_sum`] reads in one block: every
/// tile of outputs reads them again, so they should stay in L1 (48 KB on an Intel Xeon,
/// 32 KB on an AMD EPYC) beside the block's weights. The dense layer's 213 pairs take 54 KB
/// a chunk of AVX-512's 64 columns: on an Intel Xeon (Ice Lake), criterion's dense block in
/// 4 x 4 tiles took 434 to 448 us in one block, 352 to 356 in blocks of 16 KB (12 KB: 362
/// to 366, 24 KB: 354 to 357, 32 KB: 386 to 398). AVX2's chunks of 16 columns fit whole.
const PAIR_BLOCK_BYTES: usize = 16 * 1024;

/// The fewest outputs whose accumulators [`pair_weighted_sum`] fetches a tile ahead.
const PREFETCHED_OUTPUTS: usize = 16;

/// Where a tile of [`pair_weighted_sum`] lies: its first output of `outputs`, and its first
/// column.
#[derive(Clone, Copy)]
struct Tile {
    first: usize,
    outputs: usize,
    start: usize,
}

/// Outputs `tile.first..+T` of [`pair_weighted_sum`] on columns `tile.start..+C WIDTH`, the
/// rows' columns from `tile.start` on; returns T.
#[inline(always)]
fn pair_tile<'r, V: Lanes, I, const T: usize, const C: usize>(
    accs: &mut [&mut [u32]],
    rows: I,
    weights: &[u32],
    tile: Tile,
) -> usize
where
    I: Iterator<Item = &'r [u32]>,
{
    let width = V::WIDTH;
    let columns = tile.start..tile.start + C * width;
    let outputs = tile.first..tile.first + T;
    let accs = &mut accs[outputs.clone()];
    let mut acc = [[V::splat(0); C]; T];
    for (acc, sums) in acc.iter_mut().zip(accs.iter()) {
        *acc = load_vectors(&sums[columns.clone()]);
    }
    for (row, weights) in rows.zip(weights.chunks_exact(tile.outputs)) {
        let x: [V; C] = load_vectors(&row[..C * width]);
        let weights = &weights[outputs.clone()];
        for (acc, &w) in acc.iter_mut().zip(weights) {
            let w = V::splat(w);
            for (acc, &x) in acc.iter_mut().zip(&x) {
                *acc = acc.madd16_add(x, w);
            }
        }
    }
    for (acc, out) in acc.iter().zip(accs.iter_mut()) {
        let out = &mut out[columns.clone()];
        for (v, acc) in acc.iter().enumerate() {
            acc.store(&mut out[v * width..]);
        }
    }
    T
}

/// A backend's fused form of [`super::Kernels::pair_weighted_sum`], where its CPU has one
/// (AVX512-VNNI): it runs the sums and returns true, or returns false and leaves them.
pub(crate) trait FusedPairSums {
    fn fused_pair_weighted_sum(
        &self,
        _accs: &mut [&mut [u32]],
        _pairs: PairRows<'_>,
        _weights: &[u32],
    ) -> bool {
        false
    }
}

/// Implements [`super::Kernels`] for a backend token: each method enters a
/// `#[target_feature]` function that runs the generic kernel with the backend's lane type,
/// so that the lane operations inline with the feature enabled.
///
/// Invoking it asserts that a value of `$token` exists only where `$feature` is present.
macro_rules! kernels_via_entry_points {
    ($token:ty, $lanes:ty, $feature:literal) => {
        impl $crate::backend::Kernels for $token {
            fn forward_ntt<S: AsRef<[u32]>>(
                &self,
                a: &mut [u32],
                table: &$crate::ntt::NttTable<S>,
            ) {
                #[target_feature(enable = $feature)]
                fn entry<S: AsRef<[u32]>>(a: &mut [u32], table: &$crate::ntt::NttTable<S>) {
                    $crate::backend::vector::forward_ntt::<$lanes, S>(a, table)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(a, table)
                }
            }
            fn forward_ntt_from<S: AsRef<[u32]>>(
                &self,
                out: &mut [u32],
                input: &[u32],
                table: &$crate::ntt::NttTable<S>,
            ) {
                #[target_feature(enable = $feature)]
                fn entry<S: AsRef<[u32]>>(
                    out: &mut [u32],
                    input: &[u32],
                    table: &$crate::ntt::NttTable<S>,
                ) {
                    $crate::backend::vector::forward_ntt_from::<$lanes, S>(out, input, table)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(out, input, table)
                }
            }
            fn inverse_ntt_times<S: AsRef<[u32]>>(
                &self,
                a: &mut [u32],
                table: &$crate::ntt::NttTable<S>,
                factor: u32,
            ) {
                #[target_feature(enable = $feature)]
                fn entry<S: AsRef<[u32]>>(
                    a: &mut [u32],
                    table: &$crate::ntt::NttTable<S>,
                    factor: u32,
                ) {
                    $crate::backend::vector::inverse_ntt_times::<$lanes, S>(a, table, factor)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(a, table, factor)
                }
            }
            fn unpack_30_bit(
                &self,
                out: &mut [u32],
                packed: &[u8],
                modulus: &$crate::zq::Modulus,
            ) -> bool {
                $crate::backend::check_30_bit_groups(out.len(), packed.len());
                #[target_feature(enable = $feature)]
                fn entry(out: &mut [u32], packed: &[u8], modulus: &$crate::zq::Modulus) -> bool {
                    <$lanes as $crate::backend::vector::Lanes>::unpack_30_bit(out, packed, modulus)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(out, packed, modulus)
                }
            }
            fn mul_assign(&self, a: &mut [u32], b: &[u32], modulus: &$crate::zq::Modulus) {
                #[target_feature(enable = $feature)]
                fn entry(a: &mut [u32], b: &[u32], modulus: &$crate::zq::Modulus) {
                    $crate::backend::vector::mul_assign::<$lanes>(a, b, modulus)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(a, b, modulus)
                }
            }
            fn lift_centered(
                &self,
                out: &mut [u32],
                input: &[u32],
                from: &$crate::zq::Modulus,
                to: &$crate::zq::Modulus,
            ) {
                #[target_feature(enable = $feature)]
                fn entry(
                    out: &mut [u32],
                    input: &[u32],
                    from: &$crate::zq::Modulus,
                    to: &$crate::zq::Modulus,
                ) {
                    $crate::backend::vector::lift_centered::<$lanes>(out, input, from, to)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(out, input, from, to)
                }
            }
            fn square_tensor_montgomery(
                &self,
                x0: &mut [u32],
                cross: &mut [u32],
                x1: &mut [u32],
                modulus: &$crate::zq::Modulus,
            ) {
                #[target_feature(enable = $feature)]
                fn entry(
                    x0: &mut [u32],
                    cross: &mut [u32],
                    x1: &mut [u32],
                    modulus: &$crate::zq::Modulus,
                ) {
                    $crate::backend::vector::square_tensor_montgomery::<$lanes>(
                        x0, cross, x1, modulus,
                    )
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(x0, cross, x1, modulus)
                }
            }
            fn mul_acc(
                &self,
                acc: &mut [u32],
                a: &[u32],
                b: &[u32],
                modulus: &$crate::zq::Modulus,
            ) {
                #[target_feature(enable = $feature)]
                fn entry(acc: &mut [u32], a: &[u32], b: &[u32], modulus: &$crate::zq::Modulus) {
                    $crate::backend::vector::mul_acc::<$lanes>(acc, a, b, modulus)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(acc, a, b, modulus)
                }
            }
            fn mul_scalar_assign(
                &self,
                a: &mut [u32],
                w: $crate::zq::ShoupConstant,
                modulus: &$crate::zq::Modulus,
            ) {
                #[target_feature(enable = $feature)]
                fn entry(
                    a: &mut [u32],
                    w: $crate::zq::ShoupConstant,
                    modulus: &$crate::zq::Modulus,
                ) {
                    $crate::backend::vector::mul_scalar_assign::<$lanes>(a, w, modulus)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(a, w, modulus)
                }
            }
            fn mul_scalar(
                &self,
                out: &mut [u32],
                a: &[u32],
                w: $crate::zq::ShoupConstant,
                modulus: &$crate::zq::Modulus,
            ) {
                #[target_feature(enable = $feature)]
                fn entry(
                    out: &mut [u32],
                    a: &[u32],
                    w: $crate::zq::ShoupConstant,
                    modulus: &$crate::zq::Modulus,
                ) {
                    $crate::backend::vector::mul_scalar::<$lanes>(out, a, w, modulus)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(out, a, w, modulus)
                }
            }
            fn scaled_add(
                &self,
                a: &mut [u32],
                x: &[u32],
                w: $crate::zq::ShoupConstant,
                offsets: &[u32],
                k: u32,
                subtract: bool,
                modulus: &$crate::zq::Modulus,
            ) {
                #[target_feature(enable = $feature)]
                fn entry<const SUBTRACT: bool>(
                    a: &mut [u32],
                    x: &[u32],
                    w: $crate::zq::ShoupConstant,
                    offsets: &[u32],
                    k: u32,
                    modulus: &$crate::zq::Modulus,
                ) {
                    $crate::backend::vector::scaled_add::<$lanes, SUBTRACT>(
                        a, x, w, offsets, k, modulus,
                    )
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    if subtract {
                        entry::<true>(a, x, w, offsets, k, modulus)
                    } else {
                        entry::<false>(a, x, w, offsets, k, modulus)
                    }
                }
            }
            fn dot_montgomery(
                &self,
                out: &mut [u32],
                rows: &[&[u32]],
                weights: &[u32],
                modulus: &$crate::zq::Modulus,
            ) {
                #[target_feature(enable = $feature)]
                fn entry(
                    out: &mut [u32],
                    rows: &[&[u32]],
                    weights: &[u32],
                    modulus: &$crate::zq::Modulus,
                ) {
                    $crate::backend::vector::dot_montgomery::<$lanes>(out, rows, weights, modulus)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(out, rows, weights, modulus)
                }
            }
            fn dot_montgomery_outputs(
                &self,
                outs: &mut [&mut [u32]],
                rows: &[&[u32]],
                own: &[&[u32]],
                weights: &[&[u32]],
                moduli: &[$crate::zq::Modulus],
            ) {
                #[target_feature(enable = $feature)]
                fn entry(
                    outs: &mut [&mut [u32]],
                    rows: &[&[u32]],
                    own: &[&[u32]],
                    weights: &[&[u32]],
                    moduli: &[$crate::zq::Modulus],
                ) {
                    $crate::backend::vector::dot_montgomery_outputs::<$lanes>(
                        outs, rows, own, weights, moduli,
                    )
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(outs, rows, own, weights, moduli)
                }
            }
            fn wrap_counts(&self, v: &mut [u32], rows: &[&[u32]], reciprocals: &[f64]) {
                #[target_feature(enable = $feature)]
                fn entry(v: &mut [u32], rows: &[&[u32]], reciprocals: &[f64]) {
                    $crate::backend::dot::wrap_counts(v, rows, reciprocals)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(v, rows, reciprocals)
                }
            }
            fn fraction_sums(
                &self,
                low: &mut [u32],
                high: &mut [u32],
                rows: &[&[u32]],
                fractions: &[[u32; $crate::backend::dot::FRACTION_LIMBS]],
            ) {
                #[target_feature(enable = $feature)]
                fn entry(
                    low: &mut [u32],
                    high: &mut [u32],
                    rows: &[&[u32]],
                    fractions: &[[u32; $crate::backend::dot::FRACTION_LIMBS]],
                ) {
                    $crate::backend::dot::fraction_sums(low, high, rows, fractions)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(low, high, rows, fractions)
                }
            }
            fn dot_pointwise_montgomery(
                &self,
                out: &mut [u32],
                a: &[&[u32]],
                b: &[&[u32]],
                modulus: &$crate::zq::Modulus,
            ) {
                #[target_feature(enable = $feature)]
                fn entry(
                    out: &mut [u32],
                    a: &[&[u32]],
                    b: &[&[u32]],
                    modulus: &$crate::zq::Modulus,
                ) {
                    $crate::backend::vector::dot_pointwise_montgomery::<$lanes>(out, a, b, modulus)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(out, a, b, modulus)
                }
            }
            fn pack_pairs(&self, lo: &mut [u32], hi: &mut [u32], a: &[u32], b: &[u32]) {
                #[target_feature(enable = $feature)]
                fn entry(lo: &mut [u32], hi: &mut [u32], a: &[u32], b: &[u32]) {
                    $crate::backend::linear::pack_pairs(lo, hi, a, b)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(lo, hi, a, b)
                }
            }
            fn weighted_sum(&self, acc: &mut [i64], rows: &[&[u32]], weights: &[i32]) {
                #[target_feature(enable = $feature)]
                fn entry(acc: &mut [i64], rows: &[&[u32]], weights: &[i32]) {
                    $crate::backend::linear::weighted_sum(acc, rows, weights)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(acc, rows, weights)
                }
            }
            fn pair_weighted_sum(
                &self,
                accs: &mut [&mut [u32]],
                pairs: $crate::backend::PairRows<'_>,
                weights: &[u32],
            ) {
                #[target_feature(enable = $feature)]
                fn entry(
                    accs: &mut [&mut [u32]],
                    pairs: $crate::backend::PairRows<'_>,
                    weights: &[u32],
                ) {
                    $crate::backend::vector::pair_weighted_sum::<$lanes>(accs, pairs, weights)
                }
                use $crate::backend::vector::FusedPairSums;
                if self.fused_pair_weighted_sum(accs, pairs, weights) {
                    return;
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(accs, pairs, weights)
                }
            }
            fn join_halves(
                &self,
                out: &mut [u32],
                low: &[u32],
                high: &[u32],
                modulus: &$crate::zq::Modulus,
            ) {
                #[target_feature(enable = $feature)]
                fn entry(
                    out: &mut [u32],
                    low: &[u32],
                    high: &[u32],
                    modulus: &$crate::zq::Modulus,
                ) {
                    $crate::backend::vector::join_halves::<$lanes>(out, low, high, modulus)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(out, low, high, modulus)
                }
            }
        }
    };
}
pub(crate) use kernels_via_entry_points;

/// Lane-by-lane checks of a [`Lanes`] implementation against the scalar definitions,
/// called by each backend's tests inside its `#[target_feature]` context.
#[cfg(test)]
pub(crate) mod lane_tests {
    use super::Lanes;
    use std::vec::Vec;

    /// A lane test that cannot run on this CPU: a failure if CI named the backend in
    /// `CRYPTONETS_EXPECT_BACKENDS` (it expected this machine to exercise it), else a
    /// visible skip. (NEON is a compile-time feature: only the x86 backends can be missing.)
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn unavailable(backend: &str) {
        let expected = std::env::var("CRYPTONETS_EXPECT_BACKENDS").unwrap_or_default();
        assert!(
            !expected.split(',').any(|name| name.trim() == backend),
            "CRYPTONETS_EXPECT_BACKENDS names {backend}, but this CPU cannot run its lane tests"
        );
        std::eprintln!("SKIPPED: this CPU cannot run {backend}; its lane tests did not run");
    }

    const EDGES: [u32; 8] = [
        0,
        1,
        2,
        (1 << 30) - 1,
        1 << 31,
        u32::MAX - 1,
        u32::MAX,
        0x5555_5555,
    ];

    fn lanes<V: Lanes>(v: V) -> Vec<u32> {
        let mut out = std::vec![0; V::WIDTH];
        v.store(&mut out);
        out
    }

    #[inline(always)]
    pub(crate) fn check_all<V: Lanes>() {
        let width = V::WIDTH;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u32
        };
        for round in 0..2000 {
            let (a, b): (Vec<u32>, Vec<u32>) = match round {
                0 => (0..width)
                    .map(|i| (EDGES[i % 8], EDGES[(i + i / 8) % 8]))
                    .unzip(),
                1 => (0..width).map(|i| (EDGES[i % 8], u32::MAX)).unzip(),
                2 => (0..width).map(|i| (EDGES[i % 8], EDGES[7 - i % 8])).unzip(),
                _ => (0..width).map(|_| (next(), next())).unzip(),
            };
            let (va, vb) = (V::load(&a), V::load(&b));
            let lane = |f: fn(u32, u32) -> u32| -> Vec<u32> {
                a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect()
            };
            assert_eq!(lanes(va), a);
            assert_eq!(lanes(va.add(vb)), lane(u32::wrapping_add));
            assert_eq!(lanes(va.sub(vb)), lane(u32::wrapping_sub));
            assert_eq!(lanes(va.min(vb)), lane(u32::min));
            assert_eq!(lanes(va.mul_lo(vb)), lane(u32::wrapping_mul));
            assert_eq!(
                lanes(va.mul_hi(vb)),
                lane(|x, y| ((x as u64 * y as u64) >> 32) as u32)
            );
            assert_eq!(lanes(V::splat(a[3])), std::vec![a[3]; width]);
            let wide = |v: Vec<u32>| -> Vec<u64> {
                v.chunks_exact(2)
                    .map(|w| w[0] as u64 | (w[1] as u64) << 32)
                    .collect()
            };
            let (a64, b64) = (wide(a.clone()), wide(b.clone()));
            let lane64 = |f: &dyn Fn(u64, u64) -> u64| -> Vec<u64> {
                a64.iter().zip(&b64).map(|(&x, &y)| f(x, y)).collect()
            };
            assert_eq!(
                wide(lanes(va.mul_even(vb))),
                lane64(&|x, y| (x as u32 as u64) * (y as u32 as u64))
            );
            assert_eq!(wide(lanes(va.add64(vb))), lane64(&u64::wrapping_add));
            assert_eq!(wide(lanes(va.shr64_32())), lane64(&|x, _| x >> 32));
            // Only the even lanes are specified.
            let even = |v: Vec<u32>| -> Vec<u32> { v.into_iter().step_by(2).collect() };
            assert_eq!(
                even(lanes(va.odd_to_even())),
                even(lanes(va.shr64_32())),
                "odd_to_even"
            );
            assert_eq!(wide(lanes(va.shl64_32())), lane64(&|x, _| x << 32));
            assert_eq!(lanes(va.and(vb)), lane(|x, y| x & y));
            assert_eq!(lanes(va.shr32_31()), lane(|x, _| x >> 31));
            assert_eq!(lanes(va.madd16(vb)), lane(crate::backend::linear::madd));
            assert_eq!(
                lanes(va.madd16_add(vb, va)),
                lane(|x, y| x.wrapping_add(crate::backend::linear::madd(y, x)))
            );
        }
        // Groups: lanes 8g.. from / to / broadcast from offset g * stride.
        let stride = 24;
        let source: Vec<u32> = (0..stride * V::GROUPS).map(|i| i as u32 * 3 + 1).collect();
        let grouped: Vec<u32> = (0..width)
            .map(|i| source[(i / 8) * stride + i % 8])
            .collect();
        assert_eq!(lanes(V::load_groups(&source, stride)), grouped);
        let mut target = std::vec![0u32; stride * V::GROUPS];
        V::load(&grouped).store_groups(&mut target, stride);
        for (i, &x) in target.iter().enumerate() {
            let expected = if i % stride < 8 { source[i] } else { 0 };
            assert_eq!(x, expected, "store_groups word {i}");
        }
        let splat: Vec<u32> = (0..width).map(|i| source[(i / 8) * stride]).collect();
        assert_eq!(lanes(V::splat_groups(&source, stride)), splat);
        // Transposes: group g holds the matrix m_g[r][c] = 100 g + 8 r + c.
        let matrix = |g: usize, r: usize, c: usize| (100 * g + 8 * r + c) as u32;
        let mut rows: [V; 8] = core::array::from_fn(|r| {
            let row: Vec<u32> = (0..width).map(|i| matrix(i / 8, r, i % 8)).collect();
            V::load(&row)
        });
        V::transpose(&mut rows);
        for (c, row) in rows.iter().enumerate() {
            let expected: Vec<u32> = (0..width).map(|i| matrix(i / 8, i % 8, c)).collect();
            assert_eq!(lanes(*row), expected, "transposed row {c}");
        }
    }
}
