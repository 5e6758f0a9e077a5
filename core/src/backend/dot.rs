//! Montgomery dot products across limbs: the kernel of RNS base conversion.
//!
//! Written once as plain loops over 64-bit accumulators; each backend instantiates it inside
//! its `#[target_feature]` entry point, where the compiler vectorizes it for that target.

use crate::zq::Modulus;

/// Coefficients per block: the accumulators stay in L1.
const BLOCK: usize = 256;
/// Most rows: 16 products below 2^60 stay below 2^64.
pub(crate) const MAX_ROWS: usize = 16;

/// out[c] = sum_r rows[r][c] * weights[r] * 2^-32 mod p, for row values and weights below 2^30
/// and p above 2^29; at most [`MAX_ROWS`] rows.
#[inline(always)]
pub(crate) fn dot_montgomery(out: &mut [u32], rows: &[&[u32]], weights: &[u32], modulus: &Modulus) {
    assert!(
        rows.len() == weights.len() && rows.iter().all(|r| r.len() == out.len()),
        "dot operands"
    );
    // A row count fixed at compile time makes the sum of a coefficient straight-line code,
    // so the loop over coefficients vectorizes; one instantiation per count avoids padding.
    macro_rules! by_count {
        ($($rows:literal)*) => {
            match rows.len() {
                $($rows => dot_fixed::<$rows>(out, rows, weights, modulus),)*
                _ => panic!("1 to {MAX_ROWS} rows"),
            }
        };
    }
    by_count!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

/// [`super::Kernels::dot_montgomery_outputs`] output by output: its definition, and the
/// portable backend's form.
#[inline(always)]
pub(crate) fn dot_montgomery_outputs(
    outs: &mut [&mut [u32]],
    rows: &[&[u32]],
    own: &[&[u32]],
    weights: &[&[u32]],
    moduli: &[Modulus],
) {
    check_outputs(outs.len(), rows.len(), own, weights, moduli);
    for (j, out) in outs.iter_mut().enumerate() {
        let mut all: heapless::Vec<&[u32], MAX_ROWS> = rows.iter().copied().collect();
        if let Some(&row) = own.get(j) {
            all.push(row).expect("at most MAX_ROWS rows");
        }
        dot_montgomery(out, &all, weights[j], &moduli[j]);
    }
}

/// Panics unless the operands of [`dot_montgomery_outputs`] agree (a caller bug).
#[inline(always)]
pub(crate) fn check_outputs(
    outputs: usize,
    rows: usize,
    own: &[&[u32]],
    weights: &[&[u32]],
    moduli: &[Modulus],
) {
    let per_output = rows + usize::from(!own.is_empty());
    assert!(
        weights.len() == outputs
            && moduli.len() == outputs
            && (own.is_empty() || own.len() == outputs)
            && per_output <= MAX_ROWS
            && weights.iter().all(|w| w.len() == per_output),
        "dot outputs' operands"
    );
}

#[inline(always)]
fn dot_fixed<const ROWS: usize>(
    out: &mut [u32],
    rows: &[&[u32]],
    weights: &[u32],
    modulus: &Modulus,
) {
    // Everything below is u64 lane arithmetic; the `as u32 as u64` make each product a
    // visible 32 x 32 -> 64-bit multiply, which vectorizes.
    let n = out.len();
    let p = modulus.value() as u64;
    let neg_p_inv = modulus.q_inv().wrapping_neg() as u64;
    let r32 = modulus.montgomery_r().value as u64;
    let w: [u64; ROWS] = core::array::from_fn(|r| weights.get(r).map_or(0, |&w| w as u64));
    let zeros = [0u32; BLOCK];
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let x: [&[u32]; ROWS] = core::array::from_fn(|r| {
            rows.get(r)
                .map_or(&zeros[..len], |row| &row[start..start + len])
        });
        for (c, o) in out[start..start + len].iter_mut().enumerate() {
            let mut acc = 0u64;
            for r in 0..ROWS {
                acc += x[r][c] as u64 * w[r];
            }
            *o = fold_redc(acc, p, neg_p_inv, r32);
        }
        start += len;
    }
}

/// acc * 2^-32 mod p for any 64-bit acc, p in (2^29, 2^30): two folds of the high word
/// (a 2^32 + b = a r32 + b mod p) bring acc below 2^60 + 2^32 < p 2^32, then Montgomery
/// reduction and one conditional subtraction. Branch-free u64 lane arithmetic.
#[inline(always)]
fn fold_redc(acc: u64, p: u64, neg_p_inv: u64, r32: u64) -> u32 {
    const LOW: u64 = 0xffff_ffff;
    let y = ((acc >> 32) as u32 as u64) * r32 + (acc & LOW);
    let y = ((y >> 32) as u32 as u64) * r32 + (y & LOW);
    let m = ((y as u32 as u64) * neg_p_inv) as u32 as u64;
    let t = (y + m * p) >> 32; // below 2p
    (t - (p & ((t >= p) as u64).wrapping_neg())) as u32
}

/// out[c] = sum_r a[r][c] * b[r][c] * 2^-32 mod p, for residues mod p in (2^29, 2^30); at
/// most [`MAX_ROWS`] pairs. One reduction per coefficient instead of one per product.
#[inline(always)]
pub(crate) fn dot_pointwise_montgomery(
    out: &mut [u32],
    a: &[&[u32]],
    b: &[&[u32]],
    modulus: &Modulus,
) {
    let n = out.len();
    assert!(
        a.len() == b.len() && a.len() <= MAX_ROWS,
        "at most {MAX_ROWS} pairs"
    );
    assert!(a.iter().chain(b).all(|r| r.len() == n), "dot operands");
    let p = modulus.value() as u64;
    let neg_p_inv = modulus.q_inv().wrapping_neg() as u64;
    let r32 = modulus.montgomery_r().value as u64;
    let mut acc = [0u64; BLOCK];
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        acc[..len].iter_mut().for_each(|x| *x = 0);
        for (x, y) in a.iter().zip(b) {
            for ((s, &x), &y) in acc[..len]
                .iter_mut()
                .zip(&x[start..start + len])
                .zip(&y[start..start + len])
            {
                *s += x as u64 * y as u64;
            }
        }
        for (o, &s) in out[start..start + len].iter_mut().zip(&acc[..len]) {
            *o = fold_redc(s, p, neg_p_inv, r32);
        }
        start += len;
    }
}

/// Bits of one limb of a [`FRACTION_LIMBS`]-limb fixed-point fraction.
pub const FRACTION_BITS: u32 = 30;
/// Limbs of a fixed-point fraction: 90 bits. A sum of at most 16 rows below 2^30 times
/// fractions truncated to 90 bits is then within 2^-56 of the exact one: its rounding is
/// exact for Q < 2^55 and otherwise wrong by one (a negligible extra noise) only for sums
/// within 2^-56 of a tie, of which there are about 2^-55 Q among Q. Four limbs (120 bits)
/// cost a quarter more products for exactness nothing here needs.
pub const FRACTION_LIMBS: usize = 3;

/// r[c] = floor(1/2 + sum_i rows[i][c] f_i) for fractions f_i = sum_l fractions[i][l]
/// 2^(-30 (l + 1)) (limbs below 2^30, most significant first), exactly (for these f_i); written as
/// low[c] = r mod 2^30 and high[c] = r >> 30. Rows below 2^30, at most 16 of them: each limb's
/// sum of products stays below 2^64, and every carry is propagated before rounding.
#[inline(always)]
pub(crate) fn fraction_sums(
    low: &mut [u32],
    high: &mut [u32],
    rows: &[&[u32]],
    fractions: &[[u32; FRACTION_LIMBS]],
) {
    assert!(
        rows.len() == fractions.len()
            && rows.len() <= 16
            && low.len() == high.len()
            && rows.iter().all(|r| r.len() == low.len()),
        "fraction sum operands"
    );
    const MASK: u64 = (1 << FRACTION_BITS) - 1;
    let mut start = 0;
    while start < low.len() {
        let len = BLOCK.min(low.len() - start);
        let mut acc = [[0u64; BLOCK]; FRACTION_LIMBS];
        for (row, f) in rows.iter().zip(fractions) {
            for (limb, &w) in acc.iter_mut().zip(f) {
                for (a, &x) in limb[..len].iter_mut().zip(&row[start..start + len]) {
                    *a += x as u64 * w as u64;
                }
            }
        }
        // Carries from the least significant limb up, then + 1/2 (2^29 units of the top
        // limb) and the integer part. The limbs' sums stay below 2^64 - 2^35 + 16, their
        // carries below 2^34.
        for c in 0..len {
            let mut carry = 0;
            for limb in acc[1..].iter().rev() {
                carry = (limb[c] + carry) >> FRACTION_BITS;
            }
            let t0 = acc[0][c] + carry;
            let r = (t0 + (1 << (FRACTION_BITS - 1))) >> FRACTION_BITS;
            low[start + c] = (r & MASK) as u32;
            high[start + c] = (r >> FRACTION_BITS) as u32;
        }
        start += len;
    }
}

/// trunc(s) for 0 <= s < 2^31, in operations that vectorize (`s as u32` saturates, and its
/// NaN and range checks keep the loop scalar): s + 2^52 - 2^52 is s rounded to the nearest
/// integer, exactly; one less if that is above s; and an integer below 2^31 plus 2^52 has
/// itself as its low mantissa bits.
#[inline(always)]
fn truncate(s: f64) -> u32 {
    const SHIFT: f64 = (1u64 << 52) as f64;
    let nearest = s + SHIFT - SHIFT;
    let below = nearest - if nearest > s { 1.0 } else { 0.0 };
    (below + SHIFT).to_bits() as u32
}

/// v[c] = trunc(0.5 + sum_i rows[i][c] * reciprocals[i]) in f64, added in row order (so every
/// backend rounds alike): the fast base conversion's count of wraps of the CRT sum, for rows
/// below 2^31 and sums below 2^31.
#[inline(always)]
pub(crate) fn wrap_counts(v: &mut [u32], rows: &[&[u32]], reciprocals: &[f64]) {
    assert!(
        rows.len() == reciprocals.len() && rows.iter().all(|r| r.len() == v.len()),
        "wrap count operands"
    );
    let mut start = 0;
    while start < v.len() {
        let len = BLOCK.min(v.len() - start);
        let mut sum = [0.5f64; BLOCK];
        for (row, &r) in rows.iter().zip(reciprocals) {
            // Rows fit i32, whose conversions to f64 are single vector instructions.
            for (s, &y) in sum[..len].iter_mut().zip(&row[start..start + len]) {
                *s += y as i32 as f64 * r;
            }
        }
        for (v, &s) in v[start..start + len].iter_mut().zip(&sum[..len]) {
            *v = truncate(s);
        }
        start += len;
    }
}
