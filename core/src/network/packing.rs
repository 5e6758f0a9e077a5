//! Packed batches: a batch of at most n / k images puts k pixels in every input ciphertext,
//! one per block of slots, and the service separates them with Galois automorphisms. The
//! upload of a small batch shrinks k-fold (784 / k ciphertexts per channel instead of 784),
//! for k - 1 key switches per packed ciphertext on the service's side.
//!
//! The blocks are the cosets of a subgroup of the Galois group. The slots' exponents are the
//! odd residues mod 2n, {+-3^a : a < n/2}; for k = 2^r >= 2 the subgroup
//! H_k = {(-1)^u 3^(v n/k) : u < 2, v < k/2} has k elements, and the exponents 3^j, j < n/k,
//! lie in distinct cosets. Image j of block b (b = u k/2 + v) sits in the slot of exponent
//! 3^j h_b, h_b = (-1)^u 3^(v n/k); the automorphism X -> X^(h_b) moves it to the slot of
//! exponent 3^j, where block 0 keeps image j. After unpacking every pixel has its own
//! ciphertext with image j in the slot of 3^j, and the network runs as on a full batch; the
//! other slots hold pixels of other blocks, whose results the data owner ignores.
//!
//! An unpacked batch (k = 1) keeps image j in slot j.

use alloc::vec::Vec;

use super::INPUTS;
use crate::Error;
use crate::bfv::exponent_slot;

/// The densest packing the evaluation keys support by default: four pixels a ciphertext,
/// so batches of up to 2048 images at n = 8192 (three Galois keys).
pub const DEFAULT_MAX_PACKING: usize = 4;
/// The densest packing accepted at all (15 Galois keys).
pub const MAX_PACKING: usize = 16;

/// How many pixels share an input ciphertext: 1, or a power of two up to [`MAX_PACKING`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packing {
    factor: usize,
}

impl Packing {
    /// One pixel per ciphertext: a full batch, image j in slot j.
    pub const NONE: Packing = Packing { factor: 1 };

    /// `factor` pixels per ciphertext (a power of two, 1 to [`MAX_PACKING`]).
    pub fn new(factor: usize) -> Result<Self, Error> {
        if !factor.is_power_of_two() || factor > MAX_PACKING {
            return Err(Error::InvalidParameters {
                reason: "the packing factor is a power of two from 1 to 16",
            });
        }
        Ok(Self { factor })
    }

    /// The densest packing, up to `max`, that holds `images` images in n slots.
    pub fn for_batch(n: usize, images: usize, max: usize) -> Self {
        let mut factor = 1;
        while factor * 2 <= max.min(MAX_PACKING) && images <= n / (factor * 2) {
            factor *= 2;
        }
        Self { factor }
    }

    /// Pixels per ciphertext.
    pub fn factor(&self) -> usize {
        self.factor
    }

    /// Most images a batch of degree n holds.
    pub fn capacity(&self, n: usize) -> usize {
        n / self.factor
    }

    /// Input ciphertexts per channel.
    pub fn ciphertexts(&self) -> usize {
        INPUTS.div_ceil(self.factor)
    }

    /// The pixel in block `block` of ciphertext `ciphertext`, if any (the last ciphertexts'
    /// last blocks may be empty).
    pub fn pixel(&self, ciphertext: usize, block: usize) -> Option<usize> {
        let pixel = block * self.ciphertexts() + ciphertext;
        (pixel < INPUTS).then_some(pixel)
    }

    /// (ciphertext, block) of a pixel.
    pub fn position(&self, pixel: usize) -> (usize, usize) {
        (pixel % self.ciphertexts(), pixel / self.ciphertexts())
    }

    /// The Galois element h_b that moves block b to block 0 (1 for block 0).
    pub fn element(&self, n: usize, block: usize) -> usize {
        let two_n = 2 * n;
        let half = (self.factor / 2).max(1);
        let (u, v) = (block / half, block % half);
        let step = pow_mod(3, n / self.factor, two_n);
        let h = pow_mod(step, v, two_n);
        if u == 1 { two_n - h } else { h }
    }

    /// The Galois elements the service needs to unpack: those of blocks 1 to k - 1.
    pub fn elements(&self, n: usize) -> Vec<usize> {
        (1..self.factor).map(|b| self.element(n, b)).collect()
    }

    /// The slot of image `image` in block `block` (image < n / k, block < k).
    pub fn slot(&self, n: usize, image: usize, block: usize) -> usize {
        if self.factor == 1 {
            return image;
        }
        let exponent = pow_mod(3, image, 2 * n) * self.element(n, block) % (2 * n);
        exponent_slot(n, exponent)
    }

    /// The slots of images 0..images in block `block`, in order.
    pub fn slots(&self, n: usize, images: usize, block: usize) -> Vec<usize> {
        if self.factor == 1 {
            return (0..images).collect();
        }
        let (two_n, h) = (2 * n, self.element(n, block));
        let mut power = 1;
        (0..images)
            .map(|_| {
                let slot = exponent_slot(n, power * h % two_n);
                power = power * 3 % two_n;
                slot
            })
            .collect()
    }
}

/// base^exponent mod m (public values; m < 2^32).
fn pow_mod(base: usize, exponent: usize, m: usize) -> usize {
    let (mut result, mut base, mut e) = (1 % m, base % m, exponent);
    while e > 0 {
        if e & 1 == 1 {
            result = result * base % m;
        }
        base = base * base % m;
        e >>= 1;
    }
    result
}
