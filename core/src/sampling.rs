//! Samplers for keys, errors and uniform polynomials. Randomness comes only from the
//! caller's `rand_core` generator. Secret samples (ternary, centered binomial) take the same
//! time whatever they draw; uniform samples are public and use rejection.

use core::convert::Infallible;

use chacha20::ChaCha12;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use rand_core::{Rng, TryRng};

use crate::zq::Modulus;

/// The public stream a seed expands into (the uniform polynomial a of a seeded ciphertext or
/// key): ChaCha12's keystream under the seed, nonce 0, block counter from 0.
///
/// These are the very words of `rand_chacha`'s `ChaCha12Rng::from_seed(seed)`, which every
/// serialized seed has meant: that generator's 64-bit counter and 64-bit stream id read the
/// same state words while the counter is below 2^32, that is for the first 256 GiB, far beyond
/// any polynomial's needs (a test checks the two streams against each other). The `chacha20`
/// crate makes 16 blocks at a time with AVX-512 (built with the `chacha20_avx512` cfg that
/// `.cargo/config.toml` sets), where `rand_chacha` stops at AVX2: expanding a batch's seeds
/// is a tenth of its evaluation.
pub struct SeedStream(ChaCha12);

impl SeedStream {
    /// The stream of `seed`, from its start.
    pub fn new(seed: [u8; 32]) -> Self {
        Self(ChaCha12::new(&seed.into(), &[0u8; 12].into()))
    }
}

impl core::fmt::Debug for SeedStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SeedStream").finish_non_exhaustive()
    }
}

impl TryRng for SeedStream {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut word = [0u8; 4];
        self.try_fill_bytes(&mut word)?;
        Ok(u32::from_le_bytes(word))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut word = [0u8; 8];
        self.try_fill_bytes(&mut word)?;
        Ok(u64::from_le_bytes(word))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        // Panics only past 256 GiB of one seed's stream; a polynomial takes some megabytes.
        self.0.write_keystream(dst);
        Ok(())
    }
}

/// Centered binomial parameter: sums of 21 bits minus 21 bits have standard deviation
/// sqrt(21 / 2) = 3.24, the sigma = 3.2 of the HomomorphicEncryption.org standard.
pub const CBD_ETA: u32 = 21;

/// Fills `out` with values uniform in {-1, 0, 1}. Constant-time.
pub fn ternary<R: Rng + ?Sized>(rng: &mut R, out: &mut [i8]) {
    for x in out.iter_mut() {
        // floor(3 r / 2^32) is 0, 1 or 2 with bias below 2^-31, without a data-dependent branch.
        let r = rng.next_u32();
        *x = ((r as u64 * 3) >> 32) as i8 - 1;
    }
}

/// Fills `out` with centered binomial samples in [-21, 21]. Constant-time.
pub fn centered_binomial<R: Rng + ?Sized>(rng: &mut R, out: &mut [i8]) {
    const MASK: u64 = (1 << CBD_ETA) - 1;
    for x in out.iter_mut() {
        let r = rng.next_u64();
        *x = ((r & MASK).count_ones() as i32 - ((r >> CBD_ETA) & MASK).count_ones() as i32) as i8;
    }
}

/// Residue of a small signed value: v in [-q, q) to [0, q). Constant-time.
#[inline(always)]
pub fn small_to_residue(v: i8, q: &Modulus) -> u32 {
    q.reduce_once((v as i32 + q.value() as i32) as u32)
}

/// Appends the candidates below q to out[filled..].
fn accept(candidates: &[u32], q: &Modulus, out: &mut [u32], filled: &mut usize) {
    for &r in candidates {
        if r < q.value() {
            out[*filled] = r;
            *filled += 1;
        }
    }
}

/// Fills `out` with residues uniform in [0, q) by rejection on masked 32-bit words (public data).
pub fn uniform<R: Rng + ?Sized>(rng: &mut R, q: &Modulus, out: &mut [u32]) {
    let mask = u32::MAX >> q.value().leading_zeros();
    // Words are drawn in blocks, but never more than are still needed, so that the stream is
    // consumed exactly as one next_u32 per candidate would (the serialized seeds rely on it).
    // 256 words: the stream's AVX-512 code makes 16 blocks (256 words) at a time.
    let mut bytes = [0u8; 4 * 256];
    let mut filled = 0;
    while filled < out.len() {
        let words = (out.len() - filled).min(256);
        rng.fill_bytes(&mut bytes[..4 * words]);
        let (eights, rest) = bytes[..4 * words].as_chunks::<32>();
        for bytes in eights {
            let words: [u32; 8] = core::array::from_fn(|j| {
                u32::from_le_bytes(bytes[4 * j..4 * j + 4].try_into().expect("4 bytes")) & mask
            });
            // All eight are accepted but with probability about 1 - 8 (2^k - q) / 2^k: the
            // block is then copied whole (no more words were drawn than outputs remain).
            if words.iter().fold(true, |all, &r| all & (r < q.value())) {
                out[filled..filled + 8].copy_from_slice(&words);
                filled += 8;
            } else {
                accept(&words, q, out, &mut filled);
            }
        }
        let words: heapless::Vec<u32, 8> = rest
            .as_chunks::<4>()
            .0
            .iter()
            .map(|w| u32::from_le_bytes(*w) & mask)
            .collect();
        accept(&words, q, out, &mut filled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// The stream every serialized seed means: rand_chacha's ChaCha12Rng, read in pieces of
    /// every length the samplers ask for (whole words) and across block boundaries.
    #[test]
    fn seed_stream_is_rand_chacha_chacha12() {
        for seed in [
            [0u8; 32],
            [7; 32],
            core::array::from_fn(|i| (i * 37 + 1) as u8),
        ] {
            let mut reference = rand_chacha::ChaCha12Rng::from_seed(seed);
            let mut stream = SeedStream::new(seed);
            for round in 0..300 {
                let len = 4 * [1, 2, 3, 8, 15, 16, 17, 64, 255, 256, 257, 1000][round % 12];
                let (mut a, mut b) = (vec![0u8; len], vec![1u8; len]);
                reference.fill_bytes(&mut a);
                stream.fill_bytes(&mut b);
                assert_eq!(a, b, "round {round}, {len} bytes");
                assert_eq!(reference.next_u32(), stream.next_u32());
                assert_eq!(reference.next_u64(), stream.next_u64());
            }
        }
        // And a whole polynomial's residues.
        let q = Modulus::new(1_073_479_681).unwrap();
        let (mut a, mut b) = ([0u32; 8192], [0u32; 8192]);
        uniform(
            &mut rand_chacha::ChaCha12Rng::from_seed([9; 32]),
            &q,
            &mut a,
        );
        uniform(&mut SeedStream::new([9; 32]), &q, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn distributions_have_the_right_support_and_moments() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut t = [0i8; 30000];
        ternary(&mut rng, &mut t);
        for v in -1..=1 {
            let count = t.iter().filter(|&&x| x == v).count();
            assert!((9000..11000).contains(&count), "{v}: {count}");
        }
        let mut e = [0i8; 30000];
        centered_binomial(&mut rng, &mut e);
        assert!(e.iter().all(|&x| (-21..=21).contains(&x)));
        let mean = e.iter().map(|&x| x as f64).sum::<f64>() / e.len() as f64;
        let var = e.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / e.len() as f64;
        assert!(
            mean.abs() < 0.1 && (9.5..11.5).contains(&var),
            "mean {mean} var {var}"
        );
        let q = Modulus::new(1_073_479_681).unwrap();
        assert_eq!(small_to_residue(-1, &q), q.value() - 1);
        assert_eq!(small_to_residue(0, &q), 0);
        assert_eq!(small_to_residue(21, &q), 21);
        let mut u = [0u32; 1000];
        uniform(&mut rng, &q, &mut u);
        assert!(u.iter().all(|&x| x < q.value()) && u.iter().any(|&x| x > q.value() / 2));
    }
}
