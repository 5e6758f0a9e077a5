//! Integer linear combinations of residue rows with small signed weights: the plaintext
//! weights of CryptoNets' convolution and dense layers applied to ciphertext residues.
//!
//! Written once as plain loops over i64 accumulators; each backend instantiates it inside its
//! `#[target_feature]` entry point, where the compiler vectorizes it for that target.

/// Coefficients per block: the accumulators of a block stay in L1 while rows stream past.
const BLOCK: usize = 512;

/// Largest weight magnitude: with residues below 2^31, 2^16 products of at most
/// 2^15 * 2^31 stay below 2^62, so callers may add up to 2^16 rows before reducing.
pub(crate) const MAX_WEIGHT: i32 = 1 << 15;

/// acc[c] += sum_r weights[r] * rows[r][c], exactly, for rows below 2^31 and
/// |weights[r]| <= [`MAX_WEIGHT`].
#[inline(always)]
pub(crate) fn weighted_sum(acc: &mut [i64], rows: &[&[u32]], weights: &[i32]) {
    let n = acc.len();
    assert!(
        rows.len() == weights.len() && rows.iter().all(|r| r.len() == n),
        "weighted sum operands"
    );
    assert!(
        weights
            .iter()
            .all(|w| w.unsigned_abs() <= MAX_WEIGHT as u32),
        "weights above 2^15"
    );
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let acc = &mut acc[start..start + len];
        // Four rows a pass: one load and store of the accumulators per four products.
        let mut quads = rows.chunks_exact(4).zip(weights.chunks_exact(4));
        for (r, w) in &mut quads {
            let (x0, x1, x2, x3) = (
                &r[0][start..start + len],
                &r[1][start..start + len],
                &r[2][start..start + len],
                &r[3][start..start + len],
            );
            let w = [w[0] as i64, w[1] as i64, w[2] as i64, w[3] as i64];
            for c in 0..len {
                // `as i32 as i64` marks 32 x 32 -> 64-bit signed products, which vectorize.
                acc[c] += (x0[c] as i32 as i64) * w[0]
                    + (x1[c] as i32 as i64) * w[1]
                    + (x2[c] as i32 as i64) * w[2]
                    + (x3[c] as i32 as i64) * w[3];
            }
        }
        let tail = rows.len() - rows.len() % 4;
        for (row, &w) in rows[tail..].iter().zip(&weights[tail..]) {
            let x = &row[start..start + len];
            for (a, &x) in acc.iter_mut().zip(x) {
                *a += (x as i32 as i64) * w as i64;
            }
        }
        start += len;
    }
}

/// Packs the 15-bit halves of two rows of residues (below 2^30) into 16-bit pairs:
/// lo[c] = a[c] mod 2^15 | (b[c] mod 2^15) << 16 and hi[c] = a[c] >> 15 | (b[c] >> 15) << 16,
/// the operand layout of [`pair_weighted_sum`].
/// Written as a plain loop that each backend's entry point vectorizes for its target.
#[inline(always)]
pub(crate) fn pack_pairs(lo: &mut [u32], hi: &mut [u32], a: &[u32], b: &[u32]) {
    assert!(
        hi.len() == lo.len() && a.len() == lo.len() && b.len() == lo.len(),
        "pack operands"
    );
    const LOW: u32 = (1 << 15) - 1;
    for (((lo, hi), &a), &b) in lo.iter_mut().zip(hi.iter_mut()).zip(a).zip(b) {
        *lo = (a & LOW) | (b & LOW) << 16;
        *hi = (a >> 15) | (b >> 15) << 16;
    }
}

/// The weight pair of rows (a, b) for [`pair_weighted_sum`]: w_a | w_b << 16 as i16 halves.
#[cfg_attr(not(feature = "alloc"), allow(dead_code))]
pub(crate) fn weight_pair(w_a: i32, w_b: i32) -> u32 {
    (w_a as i16 as u16 as u32) | (w_b as i16 as u16 as u32) << 16
}

/// The weights of [`pair_weighted_sum`] for outputs whose rows of weights are `per_output`
/// (one weight per row of inputs, all of one length): pair-major, pair p's weight pairs of
/// every output side by side at p * outputs.., an odd last input paired with weight 0.
#[cfg(feature = "alloc")]
pub(crate) fn pair_major_weights(per_output: &[&[i32]]) -> alloc::vec::Vec<u32> {
    let inputs = per_output.first().map_or(0, |w| w.len());
    assert!(
        per_output.iter().all(|w| w.len() == inputs),
        "one weight per input"
    );
    let at = |w: &[i32], i: usize| w.get(i).copied().unwrap_or(0);
    (0..inputs.div_ceil(2))
        .flat_map(|p| {
            per_output
                .iter()
                .map(move |w| weight_pair(at(w, 2 * p), at(w, 2 * p + 1)))
        })
        .collect()
}

/// acc[c] += sum_p lo16(pairs[p][c]) lo16(w_p) + hi16(pairs[p][c]) hi16(w_p) with
/// w_p = weights[p * outputs + output] (pair-major, as [`pair_major_weights`] lays them out),
/// 16-bit halves read as signed: two products per 32-bit lane, the shape of x86's `pmaddwd`.
/// Sums wrap at 32 bits (two's complement); the caller keeps them within i32.
#[inline(always)]
pub(crate) fn pair_weighted_sum(
    acc: &mut [u32],
    pairs: super::PairRows<'_>,
    weights: &[u32],
    outputs: usize,
    output: usize,
) {
    let n = acc.len();
    let count = pairs.count(n);
    assert!(
        output < outputs && count.and_then(|c| c.checked_mul(outputs)) == Some(weights.len()),
        "pair weighted sum operands"
    );
    let count = count.unwrap_or(0);
    let weight = |p: usize| weights[p * outputs + output];
    let row = |p: usize| pairs.row(p, n);
    let quads = count / 4;
    for q in 0..quads {
        let (p0, p1, p2, p3) = (row(4 * q), row(4 * q + 1), row(4 * q + 2), row(4 * q + 3));
        let w = [
            weight(4 * q),
            weight(4 * q + 1),
            weight(4 * q + 2),
            weight(4 * q + 3),
        ];
        for c in 0..n {
            acc[c] = acc[c]
                .wrapping_add(madd(p0[c], w[0]))
                .wrapping_add(madd(p1[c], w[1]))
                .wrapping_add(madd(p2[c], w[2]))
                .wrapping_add(madd(p3[c], w[3]));
        }
    }
    for p in 4 * quads..count {
        let w = weight(p);
        for (a, &x) in acc.iter_mut().zip(row(p)) {
            *a = a.wrapping_add(madd(x, w));
        }
    }
}

/// lo16(x) lo16(w) + hi16(x) hi16(w) on signed halves, as 32-bit two's complement.
#[inline(always)]
pub(crate) fn madd(x: u32, w: u32) -> u32 {
    ((x as i16 as i32) * (w as i16 as i32) + ((x >> 16) as i16 as i32) * ((w >> 16) as i16 as i32))
        as u32
}

/// Where the half-word sums of [`pair_weighted_sum`] start: an i32 sum s is then held as the
/// u32 s + 2^31, which [`join_halves`] reads without a sign.
pub(crate) const HALF_SUM_START: u32 = 1 << 31;

/// out[c] = (high[c] - 2^31) 2^15 + (low[c] - 2^31) mod q, exactly (below 2^47 in magnitude).
pub(crate) fn join_halves(out: &mut [u32], low: &[u32], high: &[u32], modulus: &crate::Modulus) {
    super::check_lengths(out.len(), low.len());
    super::check_lengths(out.len(), high.len());
    for ((o, &lo), &hi) in out.iter_mut().zip(low).zip(high) {
        *o = join_half_sums(lo, hi, modulus);
    }
}

/// One coefficient of [`join_halves`].
#[inline(always)]
pub(crate) fn join_half_sums(low: u32, high: u32, modulus: &crate::Modulus) -> u32 {
    let start = HALF_SUM_START as i64;
    modulus.reduce_i64(((high as i64 - start) << 15) + (low as i64 - start))
}
