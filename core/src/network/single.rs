//! One image at a time (LoLa-style): the slots of one ciphertext per CRT channel hold one
//! image, and the layers are evaluated with rotations (Galois automorphisms), plaintext
//! products and scalar weights, so that many owners, each with one image and its own key,
//! are served without filling a batch.
//!
//! The slots are used in *rotation order*: column c of the first row is the slot of
//! exponent 3^c mod 2n, so that the automorphism of 3^r moves every column c + r to c
//! ([`rotation_element`]), cyclically over the n / 2 columns. A layer's values live in one
//! or more ciphertexts (*parts*), each holding some neurons at some columns; the other
//! columns may hold anything (*garbage*), which no later step reads with a non-zero weight.
//!
//! The steps ([`plan::SingleStep`]):
//! - **Taps** (a convolution or pooling as the first layer): the owner lays the image out as
//!   its stride's polyphase sub-images, so that every kernel tap is one rotation of the input
//!   and an output channel is a sum of rotations times *scalar* weights (a scalar costs the
//!   noise of its size, a plaintext vector about log2 t + log2 n / 2 bits). One part per
//!   output channel.
//! - **Activation**: the polynomial on every part, slot by slot.
//! - **Diagonal** (any affine layer): y = sum_r d_r * rot(x, r) over the offsets r between the
//!   input's and the output's columns, baby-step giant-step (the rotations of each input part
//!   by the baby steps are hoisted: one key-switching decomposition serves them all). The
//!   output is compact (columns 0 to out - 1) and *clean*: zero elsewhere.
//! - **Gather** (a small affine layer on a clean compact input, such as the last dense
//!   layer): output o at column o K is sum_u w[o][u] rot(x, u - o K), scalar weights only;
//!   the windows of the outputs do not overlap because the input is zero past K.
//!
//! Exactness is that of the batch evaluator: every step is an integer polynomial map of the
//! slots, and the planner refuses parameters under which decryption could fail.

pub mod device;
pub mod evaluate;
pub mod keys;
pub mod plan;

pub use device::DeviceProfile;
pub use evaluate::{EncodedDiagonals, SingleEvaluator, decode_single_outputs, encode_single_input};
pub use keys::SingleKeys;
pub use plan::{Part, PlannedSingle, SinglePlan, SingleStep};

/// The Galois element that rotates the columns left by `r` (column c receives column
/// c + r, modulo n / 2): 3^r mod 2n.
pub fn rotation_element(n: usize, r: usize) -> usize {
    let two_n = 2 * n as u64;
    let (mut result, mut base, mut e) = (1u64, 3u64, (r % (n / 2)) as u64);
    while e > 0 {
        if e & 1 == 1 {
            result = result * base % two_n;
        }
        base = base * base % two_n;
        e >>= 1;
    }
    result as usize
}

/// The slot of each column of the first row: slot_of[c] holds m(psi^(3^c)).
pub fn column_slots(n: usize) -> alloc::vec::Vec<u32> {
    let two_n = 2 * n;
    let mut e = 1usize;
    (0..n / 2)
        .map(|_| {
            let slot = crate::bfv::exponent_slot(n, e) as u32;
            e = e * 3 % two_n;
            slot
        })
        .collect()
}

#[cfg(test)]
mod tests;
