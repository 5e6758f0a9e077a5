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
