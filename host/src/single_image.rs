//! One image's messages in the single-image mode, as bytes: the owner's upload (a seeded
//! ciphertext per CRT channel), the service's evaluation of it (its output ciphertexts per
//! channel), and the owner's decryption of those. What the file commands, `run --mode
//! single`, the service and its client share.

use cryptonets_core::Error;
use cryptonets_core::bfv::{Ciphertext, SecretKey, SeededCiphertext};
use cryptonets_core::model::polynomial::PolynomialNetwork;
use cryptonets_core::network::single::{
    PlannedSingle, SingleEvaluator, decode_single_outputs, encode_single_input,
};
use rayon::prelude::*;

/// The owner's upload of one image: per channel, its seeded ciphertext (compressed where
/// the plan says) as bytes.
pub fn encrypt_image(
    planned: &PlannedSingle,
    network: &PolynomialNetwork,
    secret: &SecretKey,
    image: &[u8],
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<Vec<Vec<u8>>, Error> {
    let plan = &planned.plan;
    planned
        .params
        .channels()
        .iter()
        .map(|p| {
            let m = encode_single_input(p, plan, network, image)?;
            let seeded = secret.encrypt_seeded(p, &m, rng)?;
            let seeded = match plan.compressed_input {
                true => seeded.compress(p)?,
                false => seeded,
            };
            Ok(seeded.to_bytes(p))
        })
        .collect()
}

/// The service's evaluation of one uploaded image (per channel, its objects: one seeded
/// ciphertext), the channels in parallel: per channel, the output ciphertexts as bytes.
pub fn evaluate_image(
    planned: &PlannedSingle,
    evaluator: &SingleEvaluator<'_>,
    image: &[Vec<Vec<u8>>],
) -> Result<Vec<Vec<Vec<u8>>>, Error> {
    let (params, plan) = (&planned.params, &planned.plan);
    if image.len() != params.channels().len() || image.iter().any(|o| o.len() != 1) {
        return Err(Error::Incompatible {
            reason: "one seeded ciphertext per channel expected",
        });
    }
    image
        .par_iter()
        .enumerate()
        .map(|(c, objects)| {
            let p = &params.channels()[c];
            let input = SeededCiphertext::from_bytes(p, &objects[0])?;
            if input.dropped_limbs() != usize::from(plan.compressed_input) {
                return Err(Error::Incompatible {
                    reason: "an upload compressed otherwise than the plan says",
                });
            }
            let out = evaluator.evaluate_channel(c, &input.expand(p)?)?;
            Ok(out.iter().map(|ct| ct.to_bytes(p)).collect())
        })
        .collect()
}

/// The owner's decryption of one image's results (per channel, its output ciphertexts as
/// bytes): the exact logits and the least noise budget measured.
pub fn decrypt_image(
    planned: &PlannedSingle,
    secret: &SecretKey,
    image: &[Vec<Vec<u8>>],
) -> Result<(Vec<num_bigint::BigInt>, u32), Error> {
    let params = &planned.params;
    let outputs = image
        .iter()
        .zip(params.channels())
        .map(|(objects, p)| {
            objects
                .iter()
                .map(|b| Ciphertext::from_bytes(p, b))
                .collect()
        })
        .collect::<Result<Vec<Vec<_>>, _>>()?;
    decode_single_outputs(params, secret, &planned.plan, &outputs)
}
