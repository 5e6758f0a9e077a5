//! Fixtures shared by the fuzz targets and the seed writer: small parameters (n = 256, one
//! 30-bit ciphertext prime, two CRT channels; insecure, for speed only) and valid objects
//! made under them, so that mutated inputs stay small and every check past the length
//! checks is reached quickly.

use std::sync::OnceLock;

use cryptonets_core::Backend;
use cryptonets_core::bfv::SecretKey;
use cryptonets_core::model::{CONV_SIDE, ModelWriter};
use cryptonets_core::network::{EvaluationKeys, INPUTS, NetworkParameters, Packing};
use cryptonets_core::zq::prime::ntt_primes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Ring degree of the fuzzing parameters.
pub const N: usize = 256;

/// The fuzzing parameters (portable backend: deterministic and sanitizer-friendly).
pub fn params() -> &'static NetworkParameters {
    static PARAMS: OnceLock<NetworkParameters> = OnceLock::new();
    PARAMS.get_or_init(|| {
        let primes: Vec<u32> = ntt_primes(17, N).take(2).collect();
        NetworkParameters::insecure_for_tests(N, 1, &primes, Backend::Portable(Default::default()))
            .expect("fuzzing parameters")
    })
}

/// Parameters with two ciphertext primes (n = 256, one CRT channel): a seeded ciphertext
/// can drop its last limb under them.
pub fn two_prime_params() -> &'static cryptonets_core::bfv::Parameters {
    static PARAMS: OnceLock<NetworkParameters> = OnceLock::new();
    &PARAMS
        .get_or_init(|| {
            let primes: Vec<u32> = ntt_primes(17, N).take(1).collect();
            NetworkParameters::insecure_for_tests(
                N,
                2,
                &primes,
                Backend::Portable(Default::default()),
            )
            .expect("two-prime parameters")
        })
        .channels()[0]
}

/// A fixed secret key under [`params`].
pub fn secret() -> &'static SecretKey {
    static SECRET: OnceLock<SecretKey> = OnceLock::new();
    SECRET.get_or_init(|| {
        SecretKey::generate(&params().channels()[0], &mut ChaCha20Rng::seed_from_u64(1))
    })
}

/// Evaluation keys for packings up to 2 under [`params`].
pub fn eval_keys() -> EvaluationKeys {
    EvaluationKeys::generate(params(), secret(), 2, &mut ChaCha20Rng::seed_from_u64(2))
        .expect("keys")
}

/// A small valid model: 1 map, 2 hidden units.
pub fn tiny_model() -> Vec<u8> {
    let features = CONV_SIDE * CONV_SIDE;
    ModelWriter {
        maps: 1,
        hidden: 2,
        input_levels: 3,
        float_accuracy: 9000,
        integer_accuracy: 8900,
        conv_weights: (0..25).map(|i| (i % 7) as i16 - 3).collect(),
        conv_biases: vec![5],
        dense1_weights: (0..2 * features).map(|i| (i % 5) as i16 - 2).collect(),
        dense1_biases: vec![-30, 7],
        dense2_weights: (0..20).map(|i| (i % 9) as i16 - 4).collect(),
        dense2_biases: (0..10).map(|c| c * 100 - 400).collect(),
    }
    .to_bytes()
}

/// A small valid version 2 network of every layer kind: 2 x 6 x 6 input, a padded
/// strided convolution, a cubic, a padded sum pool, flatten, dense.
pub fn small_network() -> cryptonets_core::model::polynomial::PolynomialNetwork {
    use cryptonets_core::model::polynomial::{Layer, PolynomialNetwork, Shape, Window};
    let layers = vec![
        Layer::Conv2d {
            out_channels: 3,
            window: Window {
                kernel: [3, 3],
                stride: [2, 1],
                padding: [1, 0, 1, 2],
            },
            weights: (0..3 * 2 * 9).map(|i| (i % 7) as i16 - 3).collect(),
            biases: vec![4, -2, 0],
        },
        Layer::Polynomial {
            coefficients: [1, -2, 0, 1],
        },
        Layer::SumPool {
            window: Window {
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0, 1, 1, 0],
            },
        },
        Layer::Flatten,
    ];
    let input = Shape {
        channels: 2,
        height: 6,
        width: 6,
    };
    let flat = PolynomialNetwork::new(input, 5, layers.clone())
        .expect("small layers")
        .shapes()
        .last()
        .expect("layers")
        .len();
    let mut layers = layers;
    layers.push(Layer::Dense {
        outputs: 4,
        weights: (0..4 * flat).map(|i| (i % 5) as i16 - 2).collect(),
        biases: vec![1, 2, 3, 4],
    });
    PolynomialNetwork::new(input, 5, layers).expect("small network")
}

/// A batch of `count` encrypted images (pixel values i * 7 mod 256) packed `packing`.
pub fn image_batch(count: usize, packing: Packing) -> Vec<u8> {
    let model_bytes = tiny_model();
    let model = cryptonets_core::model::Model::parse(&model_bytes).expect("tiny model");
    let images: Vec<[u8; INPUTS]> = (0..count)
        .map(|k| core::array::from_fn(|i| ((i * 7 + k) % 256) as u8))
        .collect();
    let batch = cryptonets_host::pipeline::encrypt_batch(
        params(),
        &model,
        secret(),
        &images,
        packing,
        &mut ChaCha20Rng::seed_from_u64(3),
        &|| {},
    )
    .expect("batch");
    batch.to_bytes()
}
