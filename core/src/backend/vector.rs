//! The NTT and pointwise kernels written once for any 8-lane vector of u32.
//!
//! Each SIMD backend provides [`Lanes8`]: a handful of lane-wise operations and an 8x8
//! transpose. The algorithms below never touch intrinsics; they are monomorphised and
//! inlined into each backend's `#[target_feature]` entry points.
//!
//! Stages whose butterfly distance is at least 8 pair whole vectors with one broadcast
//! twiddle. The three with distances 4, 2 and 1 run on blocks of 64 coefficients
//! transposed so that they too pair whole vectors, each lane with its own twiddle
//! (see `fill_tail` in [`crate::ntt`]).

use super::check_lengths;
use crate::ntt::{NttTable, TAIL_BLOCK, TAIL_WORDS};
use crate::zq::{Modulus, ShoupConstant};

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

/// Eight u32 lanes. Arithmetic wraps modulo 2^32 in every lane.
pub(crate) trait Lanes8: Copy {
    fn load(src: &[u32; 8]) -> Self;
    fn store(self, dst: &mut [u32; 8]);
    fn splat(x: u32) -> Self;
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    /// Unsigned minimum.
    fn min(self, other: Self) -> Self;
    /// Low 32 bits of the lane products.
    fn mul_lo(self, other: Self) -> Self;
    /// High 32 bits of the unsigned 64-bit lane products.
    fn mul_hi(self, other: Self) -> Self;
    /// Transposes the 8x8 matrix whose rows are the vectors.
    fn transpose(rows: &mut [Self; 8]);

    // The lanes read as four u64 (lanes 2k and 2k + 1 are the low and high words of u64 k):
    // the 64-bit accumulation of the dot-product kernels.

    /// u64 k = lane 2k of self times lane 2k of other (the odd lanes are ignored).
    fn mul_even(self, other: Self) -> Self;
    /// u64 lane sums, wrapping.
    fn add64(self, other: Self) -> Self;
    /// Each u64 shifted right by 32 bits: its high word moves to the even lane.
    fn shr64_32(self) -> Self;
    /// Each u64 shifted left by 32 bits: its low word moves to the odd lane.
    fn shl64_32(self) -> Self;
    /// Bitwise and.
    fn and(self, other: Self) -> Self;
    /// Per 32-bit lane, the sum of the products of its signed 16-bit halves with other's
    /// (x86's `pmaddwd`); wraps only for -2^15 * -2^15 twice.
    fn madd16(self, other: Self) -> Self;
}

/// A modulus broadcast to all lanes, with the constants the kernels use.
#[derive(Clone, Copy)]
struct VectorModulus<V> {
    q: V,
    two_q: V,
    q_inv: V,
    montgomery_r: (V, V),
}

impl<V: Lanes8> VectorModulus<V> {
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

    /// a * b mod q in [0, q), for a * b < q * 2^32: Montgomery, then Shoup by 2^32 mod q.
    #[inline(always)]
    fn mul(&self, a: V, b: V) -> V {
        let low = a.mul_lo(b);
        let high = a.mul_hi(b);
        let m = low.mul_lo(self.q_inv);
        // (a*b - m*q) / 2^32 is exact and lies in (-q, q); shifting by q gives (0, 2q).
        let reduced = high.sub(m.mul_hi(self.q)).add(self.q);
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

/// Runs `butterfly` over every pair (x, y) of vectors `distance` words apart in group `i`.
#[inline(always)]
fn for_each_pair<V: Lanes8>(
    a: &mut [u32],
    distance: usize,
    mut butterfly: impl FnMut(usize, &mut V, &mut V),
) {
    for (group, pair) in a.chunks_exact_mut(2 * distance).enumerate() {
        let (xs, ys) = pair.split_at_mut(distance);
        let (xs, _) = xs.as_chunks_mut::<8>();
        let (ys, _) = ys.as_chunks_mut::<8>();
        for (xw, yw) in xs.iter_mut().zip(ys.iter_mut()) {
            let (mut x, mut y) = (V::load(xw), V::load(yw));
            butterfly(group, &mut x, &mut y);
            x.store(xw);
            y.store(yw);
        }
    }
}

/// Runs `stages` on every 64-coefficient block of `a` held as eight 8-lane rows, with the
/// block's index and its tail twiddles, and stores it back.
#[inline(always)]
fn for_each_block<V: Lanes8>(
    a: &mut [u32],
    tail: &[u32],
    mut stages: impl FnMut(usize, &mut [V; 8], TailTwiddles<'_>),
) {
    for (index, (block, twiddles)) in a
        .chunks_exact_mut(TAIL_BLOCK)
        .zip(tail.chunks_exact(TAIL_WORDS))
        .enumerate()
    {
        let (words, _) = block.as_chunks_mut::<8>();
        let mut rows: [V; 8] = core::array::from_fn(|r| V::load(&words[r]));
        let (tw, _) = twiddles.as_chunks::<8>();
        stages(index, &mut rows, TailTwiddles(tw));
        for (r, row) in rows.iter().enumerate() {
            row.store(&mut words[r]);
        }
    }
}

/// Seven (twiddle, quotient) vector pairs for three radix-2 stages on eight vectors, in the
/// order [`radix8_forward`] and [`radix8_inverse`] use them. Loaded where used, not before:
/// eight data vectors and fourteen twiddle vectors would not fit sixteen AVX2 registers.
trait Twiddles<V> {
    fn get(&self, k: usize) -> (V, V);
}

/// A block's tail twiddles, one value per lane (see `fill_tail` in [`crate::ntt`]).
#[derive(Clone, Copy)]
struct TailTwiddles<'a>(&'a [[u32; 8]]);

impl<V: Lanes8> Twiddles<V> for TailTwiddles<'_> {
    #[inline(always)]
    fn get(&self, k: usize) -> (V, V) {
        (V::load(&self.0[2 * k]), V::load(&self.0[2 * k + 1]))
    }
}

/// Block `block`'s twiddles for its three row stages (distances of 32, 16 and 8
/// coefficients, i.e. 4, 2 and 1 rows), broadcast.
#[derive(Clone, Copy)]
struct RowTwiddles<'a> {
    values: &'a [u32],
    quotients: &'a [u32],
    n: usize,
    block: usize,
}

impl<V: Lanes8> Twiddles<V> for RowTwiddles<'_> {
    #[inline(always)]
    fn get(&self, k: usize) -> (V, V) {
        let (n, b) = (self.n, self.block);
        let index = match k {
            0 => n / 64 + b,
            1 | 2 => n / 32 + 2 * b + (k - 1),
            _ => n / 16 + 4 * b + (k - 3),
        };
        (
            V::splat(self.values[index]),
            V::splat(self.quotients[index]),
        )
    }
}

/// Three forward stages on eight vectors: pairs 4 apart with w[0], 2 apart with w[1] (first
/// half) and w[2], 1 apart with w[3..7].
#[inline(always)]
fn radix8_forward<V: Lanes8>(m: &VectorModulus<V>, v: &mut [V; 8], w: impl Twiddles<V>) {
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
fn radix8_inverse<V: Lanes8>(m: &VectorModulus<V>, v: &mut [V; 8], w: impl Twiddles<V>) {
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
pub(crate) fn forward_ntt<V: Lanes8, S: AsRef<[u32]>>(a: &mut [u32], table: &NttTable<S>) {
    check_lengths(a.len(), table.n());
    let n = a.len();
    let m = VectorModulus::<V>::new(table.modulus());
    let (values, quotients) = table.forward_twiddles();
    let mut groups = 1;
    let mut distance = n / 2;
    while distance >= 64 {
        let (w, wq) = (&values[groups..2 * groups], &quotients[groups..2 * groups]);
        for_each_pair::<V>(a, distance, |g, x, y| {
            m.forward_butterfly(x, y, V::splat(w[g]), V::splat(wq[g]))
        });
        groups *= 2;
        distance /= 2;
    }
    for_each_block::<V>(a, table.forward_tail(), |b, v, tail| {
        radix8_forward(
            &m,
            v,
            RowTwiddles {
                values,
                quotients,
                n,
                block: b,
            },
        );
        V::transpose(v);
        radix8_forward(&m, v, tail);
        for x in v.iter_mut() {
            *x = VectorModulus::reduce_below(VectorModulus::reduce_below(*x, m.two_q), m.q);
        }
        V::transpose(v);
    });
}

/// Inverse NTT: the six stages with distance <= 32 per block in registers (columns first),
/// then the wider stages over memory, the last one scaled by 1/n.
#[inline(always)]
pub(crate) fn inverse_ntt<V: Lanes8, S: AsRef<[u32]>>(a: &mut [u32], table: &NttTable<S>) {
    check_lengths(a.len(), table.n());
    let n = a.len();
    let m = VectorModulus::<V>::new(table.modulus());
    let (values, quotients) = table.inverse_twiddles();
    for_each_block::<V>(a, table.inverse_tail(), |b, v, tail| {
        V::transpose(v);
        radix8_inverse(&m, v, tail);
        V::transpose(v);
        radix8_inverse(
            &m,
            v,
            RowTwiddles {
                values,
                quotients,
                n,
                block: b,
            },
        );
    });
    let mut groups = n / 128;
    let mut distance = 64;
    while groups > 1 {
        let (w, wq) = (&values[groups..2 * groups], &quotients[groups..2 * groups]);
        for_each_pair::<V>(a, distance, |g, x, y| {
            m.inverse_butterfly(x, y, V::splat(w[g]), V::splat(wq[g]))
        });
        groups /= 2;
        distance *= 2;
    }
    let (n_inv, n_inv_twiddle) = (table.n_inv(), table.n_inv_twiddle());
    let (s, sq) = (V::splat(n_inv.value), V::splat(n_inv.quotient));
    let (d, dq) = (
        V::splat(n_inv_twiddle.value),
        V::splat(n_inv_twiddle.quotient),
    );
    for_each_pair::<V>(a, n / 2, |_, x, y| {
        let (u, v) = (*x, *y);
        *x = VectorModulus::reduce_below(m.mul_shoup_lazy(u.add(v), s, sq), m.q);
        *y = VectorModulus::reduce_below(m.mul_shoup_lazy(u.add(m.two_q).sub(v), d, dq), m.q);
    });
}

/// Applies `f` to every 8-word chunk of `a` with the matching chunks of `b` and `c`, then the
/// scalar `tail` to the words that do not fill a vector.
#[inline(always)]
fn zip3<V: Lanes8>(
    a: &mut [u32],
    b: &[u32],
    c: &[u32],
    f: impl Fn(V, V, V) -> V,
    tail: impl Fn(u32, u32, u32) -> u32,
) {
    let (a8, a_rest) = a.as_chunks_mut::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    let (c8, c_rest) = c.as_chunks::<8>();
    for ((x, y), z) in a8.iter_mut().zip(b8).zip(c8) {
        f(V::load(x), V::load(y), V::load(z)).store(x);
    }
    for ((x, &y), &z) in a_rest.iter_mut().zip(b_rest).zip(c_rest) {
        *x = tail(*x, y, z);
    }
}

#[inline(always)]
pub(crate) fn mul_assign<V: Lanes8>(a: &mut [u32], b: &[u32], modulus: &Modulus) {
    check_lengths(a.len(), b.len());
    let m = VectorModulus::<V>::new(modulus);
    zip3::<V>(a, b, b, |x, y, _| m.mul(x, y), |x, y, _| modulus.mul(x, y));
}

#[inline(always)]
pub(crate) fn mul_acc<V: Lanes8>(acc: &mut [u32], a: &[u32], b: &[u32], modulus: &Modulus) {
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
pub(crate) fn mul_scalar_assign<V: Lanes8>(a: &mut [u32], w: ShoupConstant, modulus: &Modulus) {
    let m = VectorModulus::<V>::new(modulus);
    let (wv, wq) = (V::splat(w.value), V::splat(w.quotient));
    let (a8, rest) = a.as_chunks_mut::<8>();
    for x in a8 {
        VectorModulus::reduce_below(m.mul_shoup_lazy(V::load(x), wv, wq), m.q).store(x);
    }
    rest.iter_mut().for_each(|x| *x = modulus.mul_shoup(*x, w));
}

/// The vector form of [`super::linear::join_halves`], with the same results: 2^15 (high -
/// 2^31) + (low - 2^31) is, mod q, high 2^15 + low + c for the constant c = -2^31 (2^15 + 1).
#[inline(always)]
pub(crate) fn join_halves<V: Lanes8>(
    out: &mut [u32],
    low: &[u32],
    high: &[u32],
    modulus: &Modulus,
) {
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

/// The modulus constants of [`dot_montgomery`] and [`dot_pointwise_montgomery`].
#[derive(Clone, Copy)]
struct WideModulus<V> {
    p: V,
    neg_p_inv: V,
    r32: V,
    low_words: V,
}

impl<V: Lanes8> WideModulus<V> {
    #[inline(always)]
    fn new(modulus: &Modulus) -> Self {
        Self {
            p: V::splat(modulus.value()),
            neg_p_inv: V::splat(modulus.q_inv().wrapping_neg()),
            r32: V::splat(modulus.montgomery_r().value),
            low_words: V::load(&[u32::MAX, 0, u32::MAX, 0, u32::MAX, 0, u32::MAX, 0]),
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
        let m = y.mul_lo(self.neg_p_inv);
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
        let m = acc.mul_lo(self.neg_p_inv);
        let t = acc.add64(m.mul_even(self.p)).shr64_32();
        let p2 = self.p.add(self.p);
        let t = VectorModulus::reduce_below(t, p2.add(p2));
        let t = VectorModulus::reduce_below(t, p2);
        VectorModulus::reduce_below(t, self.p)
    }

    /// Joins the reduced even-coefficient and odd-coefficient halves into eight residues.
    #[inline(always)]
    fn join(even: V, odd: V) -> V {
        even.add(odd.shl64_32())
    }
}

/// out[c] = sum_r rows[r][c] * weights[r] * 2^-32 mod p for row values and weights below
/// 2^30, at most [`super::dot::MAX_ROWS`] rows: the even and odd coefficients of eight
/// accumulate as u64 in two vectors, with one reduction per coefficient. Same contract and
/// results as the portable [`super::dot::dot_montgomery`].
#[inline(always)]
pub(crate) fn dot_montgomery<V: Lanes8>(
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
    let pairs = out.len() / 16;
    let tail = 16 * pairs;
    if tail < out.len() {
        let rest: heapless::Vec<&[u32], { super::dot::MAX_ROWS }> =
            rows.iter().map(|r| &r[tail..]).collect();
        super::dot::dot_montgomery(&mut out[tail..], &rest, weights, modulus);
    }
}

/// Rows up to which a dot product's sum stays below 2^63.6, so that Montgomery reduction needs
/// no folding first (see [`WideModulus::redc_short`]).
const SHORT_DOT_ROWS: usize = 12;

/// The vector part of [`dot_montgomery`], 16 coefficients a pass: each row's address and
/// weight serve two vectors.
#[inline(always)]
fn dot_rows<V: Lanes8, const SHORT: bool>(
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
    let (out16, _) = out.as_chunks_mut::<16>();
    for (c, o) in out16.iter_mut().enumerate() {
        let mut acc = [V::splat(0); 4];
        for (row, &w) in rows.iter().zip(&w) {
            let (x, _) = row[16 * c..16 * c + 16].as_chunks::<8>();
            let (x0, x1) = (V::load(&x[0]), V::load(&x[1]));
            acc[0] = acc[0].add64(x0.mul_even(w));
            acc[1] = acc[1].add64(x0.shr64_32().mul_even(w));
            acc[2] = acc[2].add64(x1.mul_even(w));
            acc[3] = acc[3].add64(x1.shr64_32().mul_even(w));
        }
        let (o, _) = o.as_chunks_mut::<8>();
        WideModulus::join(reduce(acc[0]), reduce(acc[1])).store(&mut o[0]);
        WideModulus::join(reduce(acc[2]), reduce(acc[3])).store(&mut o[1]);
    }
}

/// out[c] = sum_r a[r][c] * b[r][c] * 2^-32 mod p for residues mod p in (2^29, 2^30), at
/// most [`super::dot::MAX_ROWS`] pairs; the vector form of the portable
/// [`super::dot::dot_pointwise_montgomery`], with the same results.
#[inline(always)]
pub(crate) fn dot_pointwise_montgomery<V: Lanes8>(
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
    let vectors = n / 8;
    for c in 0..vectors {
        let (mut even, mut odd) = (V::splat(0), V::splat(0));
        for (x, y) in a.iter().zip(b) {
            let x = V::load(x[8 * c..8 * c + 8].try_into().expect("8 words"));
            let y = V::load(y[8 * c..8 * c + 8].try_into().expect("8 words"));
            even = even.add64(x.mul_even(y));
            odd = odd.add64(x.shr64_32().mul_even(y.shr64_32()));
        }
        let joined = WideModulus::join(m.fold_redc(even), m.fold_redc(odd));
        joined.store((&mut out[8 * c..8 * c + 8]).try_into().expect("8 words"));
    }
    let tail = 8 * vectors;
    if tail < n {
        let rest_a: heapless::Vec<&[u32], { super::dot::MAX_ROWS }> =
            a.iter().map(|r| &r[tail..]).collect();
        let rest_b: heapless::Vec<&[u32], { super::dot::MAX_ROWS }> =
            b.iter().map(|r| &r[tail..]).collect();
        super::dot::dot_pointwise_montgomery(&mut out[tail..], &rest_a, &rest_b, modulus);
    }
}

/// The vector form of [`super::linear::pair_weighted_sum`] for several outputs, with the same
/// results: tiles of four outputs over four pairs a pass, so that each load of a pair feeds
/// four products and each load of an accumulator four.
#[inline(always)]
pub(crate) fn pair_weighted_sum<V: Lanes8>(
    accs: &mut [&mut [u32]],
    pairs: &[&[u32]],
    weights: &[&[u32]],
) {
    assert_eq!(accs.len(), weights.len(), "one weight row per output");
    let n = accs.first().map_or(0, |a| a.len());
    assert!(
        accs.iter().all(|a| a.len() == n)
            && pairs.iter().all(|r| r.len() == n)
            && weights.iter().all(|w| w.len() == pairs.len()),
        "pair weighted sum operands"
    );
    let vectors = n / 8;
    let mut outputs = accs.chunks_mut(4).zip(weights.chunks(4));
    for (accs, weights) in &mut outputs {
        let tile = accs.len();
        let mut acc8: [&mut [[u32; 8]]; 4] = [&mut [], &mut [], &mut [], &mut []];
        for (slot, acc) in acc8.iter_mut().zip(accs.iter_mut()) {
            *slot = &mut acc.as_chunks_mut::<8>().0[..vectors];
        }
        let mut p = 0;
        while p < pairs.len() {
            let quad = (pairs.len() - p).min(4);
            // Missing pairs and outputs of a partial tile have weight 0.
            let w: [[V; 4]; 4] = core::array::from_fn(|o| {
                core::array::from_fn(|r| {
                    V::splat(if o < tile && r < quad {
                        weights[o][p + r]
                    } else {
                        0
                    })
                })
            });
            let x_rows: [&[[u32; 8]]; 4] =
                core::array::from_fn(|r| &pairs[p + r.min(quad - 1)].as_chunks::<8>().0[..vectors]);
            for c in 0..vectors {
                let x: [V; 4] = core::array::from_fn(|r| V::load(&x_rows[r][c]));
                for (o, acc) in acc8.iter_mut().enumerate().take(tile) {
                    let sum = V::load(&acc[c])
                        .add(x[0].madd16(w[o][0]))
                        .add(x[1].madd16(w[o][1]))
                        .add(x[2].madd16(w[o][2]))
                        .add(x[3].madd16(w[o][3]));
                    sum.store(&mut acc[c]);
                }
            }
            p += quad;
        }
    }
    let done = 8 * vectors;
    for (acc, weights) in accs.iter_mut().zip(weights) {
        for (p, &w) in pairs.iter().zip(weights.iter()) {
            for (a, &x) in acc[done..].iter_mut().zip(&p[done..]) {
                *a = a.wrapping_add(super::linear::madd(x, w));
            }
        }
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
            fn inverse_ntt<S: AsRef<[u32]>>(
                &self,
                a: &mut [u32],
                table: &$crate::ntt::NttTable<S>,
            ) {
                #[target_feature(enable = $feature)]
                fn entry<S: AsRef<[u32]>>(a: &mut [u32], table: &$crate::ntt::NttTable<S>) {
                    $crate::backend::vector::inverse_ntt::<$lanes, S>(a, table)
                }
                // SAFETY: a token exists only where the feature is present.
                #[allow(unused_unsafe)]
                unsafe {
                    entry(a, table)
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
                pairs: &[&[u32]],
                weights: &[&[u32]],
            ) {
                #[target_feature(enable = $feature)]
                fn entry(accs: &mut [&mut [u32]], pairs: &[&[u32]], weights: &[&[u32]]) {
                    $crate::backend::vector::pair_weighted_sum::<$lanes>(accs, pairs, weights)
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

/// Lane-by-lane checks of a [`Lanes8`] implementation against the scalar definitions,
/// called by each backend's tests inside its `#[target_feature]` context.
#[cfg(test)]
pub(crate) mod lane_tests {
    use super::Lanes8;

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

    fn lanes<V: Lanes8>(v: V) -> [u32; 8] {
        let mut out = [0; 8];
        v.store(&mut out);
        out
    }

    #[inline(always)]
    pub(crate) fn check_all<V: Lanes8>() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u32
        };
        for round in 0..2000 {
            let (a, b): ([u32; 8], [u32; 8]) = match round {
                0 => (EDGES, EDGES),
                1 => (EDGES, [u32::MAX; 8]),
                2 => (EDGES, core::array::from_fn(|i| EDGES[7 - i])),
                _ => (
                    core::array::from_fn(|_| next()),
                    core::array::from_fn(|_| next()),
                ),
            };
            let (va, vb) = (V::load(&a), V::load(&b));
            let lane =
                |f: fn(u32, u32) -> u32| -> [u32; 8] { core::array::from_fn(|i| f(a[i], b[i])) };
            assert_eq!(lanes(va), a);
            assert_eq!(lanes(va.add(vb)), lane(u32::wrapping_add));
            assert_eq!(lanes(va.sub(vb)), lane(u32::wrapping_sub));
            assert_eq!(lanes(va.min(vb)), lane(u32::min));
            assert_eq!(lanes(va.mul_lo(vb)), lane(u32::wrapping_mul));
            assert_eq!(
                lanes(va.mul_hi(vb)),
                lane(|x, y| ((x as u64 * y as u64) >> 32) as u32)
            );
            assert_eq!(lanes(V::splat(a[3])), [a[3]; 8]);
            let wide = |v: [u32; 8]| -> [u64; 4] {
                core::array::from_fn(|k| v[2 * k] as u64 | (v[2 * k + 1] as u64) << 32)
            };
            let (a64, b64) = (wide(a), wide(b));
            let lane64 = |f: &dyn Fn(u64, u64) -> u64| -> [u64; 4] {
                core::array::from_fn(|k| f(a64[k], b64[k]))
            };
            assert_eq!(
                wide(lanes(va.mul_even(vb))),
                lane64(&|x, y| (x as u32 as u64) * (y as u32 as u64))
            );
            assert_eq!(wide(lanes(va.add64(vb))), lane64(&u64::wrapping_add));
            assert_eq!(wide(lanes(va.shr64_32())), lane64(&|x, _| x >> 32));
            assert_eq!(wide(lanes(va.shl64_32())), lane64(&|x, _| x << 32));
            assert_eq!(lanes(va.and(vb)), lane(|x, y| x & y));
            assert_eq!(lanes(va.madd16(vb)), lane(crate::backend::linear::madd));
        }
        let matrix: [[u32; 8]; 8] =
            core::array::from_fn(|r| core::array::from_fn(|c| (r * 8 + c) as u32));
        let mut rows = matrix.map(|row| V::load(&row));
        V::transpose(&mut rows);
        for (c, row) in rows.iter().enumerate() {
            assert_eq!(lanes(*row), core::array::from_fn(|r| matrix[r][c]));
        }
    }
}
