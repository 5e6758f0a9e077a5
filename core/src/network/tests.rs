use std::vec::Vec;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::bfv::KeyGenerator;
use crate::model::{CONV_SIDE, ModelWriter};

/// The committed MNIST model.
const MNIST_MODEL: &[u8] = include_bytes!("../../../models/cryptonets-mnist.cnmd");

fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// A small random model: 1 map, 4 hidden units, weights like the trained model's.
fn tiny_model() -> Vec<u8> {
    tiny_model_with(4)
}

/// The small model with first-dense weights of `dense1_bits` bits.
fn tiny_model_with(dense1_bits: u32) -> Vec<u8> {
    let mut next = xorshift(99);
    let mut small = |bits: u32| (next() % (1 << bits)) as i16 - (1 << (bits - 1)) as i16;
    let features = CONV_SIDE * CONV_SIDE;
    ModelWriter {
        maps: 1,
        hidden: 4,
        input_levels: 3,
        float_accuracy: 0,
        integer_accuracy: 0,
        conv_weights: (0..25).map(|_| small(3)).collect(),
        conv_biases: std::vec![5],
        dense1_weights: (0..4 * features).map(|_| small(dense1_bits)).collect(),
        dense1_biases: std::vec![-300, 7, 0, 12345],
        dense2_weights: (0..40).map(|_| small(5)).collect(),
        dense2_biases: (0..10).map(|c| c * 1000 - 4000).collect(),
    }
    .to_bytes()
}

fn random_images(count: usize, seed: u64) -> Vec<[u8; INPUTS]> {
    let mut next = xorshift(seed);
    (0..count)
        .map(|i| {
            core::array::from_fn(|_| match i % 4 {
                0 => 0,
                1 => 255,
                _ => (next() % 256) as u8,
            })
        })
        .collect()
}

/// Toy-size parameters (n = 1024) with the model's CRT primes.
fn toy_params(model: &Model, q_primes: usize, backend: Backend) -> NetworkParameters {
    let primes = crt_primes(model.bounds().plaintext_bits(), 1024).unwrap();
    NetworkParameters::insecure_for_tests(1024, q_primes, &primes, backend).unwrap()
}

/// Encrypts, evaluates and decrypts `images`; returns the logits, the serialized outputs and
/// the smallest measured noise budget of the outputs.
fn run(
    params: &NetworkParameters,
    model: &Model,
    images: &[[u8; INPUTS]],
) -> (Vec<[i128; CLASSES]>, Vec<Vec<u8>>, u32) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (secret, _, relin) = KeyGenerator::generate(&params.channels()[0], &mut rng);
    let evaluator = NetworkEvaluator::new(params, model, &relin)
        .unwrap_or_else(|e| panic!("{e}: {:?}", EvaluationPlan::new(params, model)));
    let mut outputs = Vec::new();
    let mut bytes = Vec::new();
    let mut budget = u32::MAX;
    for (c, p) in params.channels().iter().enumerate() {
        let inputs: Vec<Ciphertext> = encode_images(p, model, images)
            .unwrap()
            .iter()
            .map(|m| secret.encrypt(p, m, &mut rng))
            .collect();
        let out = evaluator.evaluate_channel(c, &inputs).unwrap();
        for ct in &out {
            assert_eq!(ct.level(), evaluator.plan().output_level);
            budget = budget.min(secret.noise_budget(p, ct));
            bytes.push(ct.to_bytes(p));
        }
        outputs.push(out);
    }
    let logits = decrypt_logits(params, &secret, &outputs, images.len()).unwrap();
    (logits, bytes, budget)
}

#[test]
fn encrypted_inference_equals_plaintext_inference_on_every_backend() {
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    let images = random_images(9, 3);
    let expected: Vec<[i128; CLASSES]> = images.iter().map(|i| model.logits(i)).collect();
    let mut reference: Option<Vec<Vec<u8>>> = None;
    for backend in Backend::available() {
        let params = toy_params(&model, 5, backend);
        let (logits, outputs, budget) = run(&params, &model, &images);
        assert_eq!(logits, expected, "{backend}");
        assert!(budget > 0, "{backend}");
        match &reference {
            None => reference = Some(outputs),
            Some(r) => assert!(
                r == &outputs,
                "{backend}: output bytes differ from portable"
            ),
        }
    }
}

#[test]
fn large_weights_take_the_64_bit_path_and_stay_exact() {
    // 13-bit weights: a group's sum of |weights| exceeds 2^16, so the first dense layer
    // accumulates in 64 bits instead of 16-bit halves.
    let bytes = tiny_model_with(13);
    let model = Model::parse(&bytes).unwrap();
    let images = random_images(5, 21);
    let params = toy_params(&model, 5, Backend::detect());
    let (logits, _, budget) = run(&params, &model, &images);
    let expected: Vec<[i128; CLASSES]> = images.iter().map(|i| model.logits(i)).collect();
    assert_eq!(logits, expected);
    assert!(budget > 0);
}

#[test]
fn the_mnist_model_is_exact_and_the_noise_estimate_is_conservative() {
    let model = Model::parse(MNIST_MODEL).unwrap();
    let images = random_images(6, 11);
    let params = toy_params(&model, 5, Backend::detect());
    let plan = EvaluationPlan::new(&params, &model).unwrap();
    let (logits, _, measured) = run(&params, &model, &images);
    let expected: Vec<[i128; CLASSES]> = images.iter().map(|i| model.logits(i)).collect();
    assert_eq!(logits, expected);
    assert!(
        plan.estimate.output <= measured as f64,
        "estimated {:.1} bits left, measured {measured}",
        plan.estimate.output
    );
    assert!(plan.estimate.output >= noise::MARGIN_BITS);
}

#[cfg(feature = "parallel")]
#[test]
fn parallel_evaluation_is_bit_identical_to_one_thread() {
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    let images = random_images(5, 5);
    let params = toy_params(&model, 5, Backend::detect());
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| run(&params, &model, &images));
    let many = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap()
        .install(|| run(&params, &model, &images));
    assert!(one.1 == many.1);
    assert_eq!(one.0, many.0);
}

#[test]
fn too_few_ciphertext_primes_are_refused_before_evaluating() {
    let model = Model::parse(MNIST_MODEL).unwrap();
    let params = toy_params(&model, 2, Backend::detect());
    let err = EvaluationPlan::new(&params, &model).unwrap_err();
    assert!(
        matches!(err, Error::InsufficientNoiseBudget { .. }),
        "{err}"
    );
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (_, _, relin) = KeyGenerator::generate(&params.channels()[0], &mut rng);
    assert!(NetworkEvaluator::new(&params, &model, &relin).is_err());
}

#[test]
fn malformed_inputs_are_refused() {
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    let params = toy_params(&model, 5, Backend::detect());
    let p = &params.channels()[0];
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (secret, _, relin) = KeyGenerator::generate(p, &mut rng);
    let evaluator = NetworkEvaluator::new(&params, &model, &relin).unwrap();
    let m = BatchEncoder::new(p).encode(&[1, 2, 3]).unwrap();
    let ct = secret.encrypt(p, &m, &mut rng);
    let too_few = std::vec![ct.clone(); INPUTS - 1];
    assert!(matches!(
        evaluator.evaluate_channel(0, &too_few),
        Err(Error::Incompatible { .. })
    ));
    let mut low = ct.clone();
    crate::bfv::Evaluator::new(p)
        .mod_switch_to_next_assign(&mut low)
        .unwrap();
    let mut wrong_level = std::vec![ct.clone(); INPUTS];
    wrong_level[100] = low;
    assert!(evaluator.evaluate_channel(0, &wrong_level).is_err());
    let all = std::vec![ct; INPUTS];
    assert!(evaluator.evaluate_channel(99, &all).is_err());
}

#[test]
fn crt_reconstructs_signed_values_exactly() {
    let primes = crt_primes(63, 8192).unwrap();
    assert_eq!(primes.len(), 3);
    assert!(primes.iter().all(|&p| p % 16384 == 1));
    let product: u128 = primes.iter().map(|&p| p as u128).product();
    assert!(product > 1 << 63);
    let moduli: Vec<Modulus> = primes.iter().map(|&p| Modulus::new(p).unwrap()).collect();
    let crt = Crt::new(&moduli);
    let half = (product / 2) as i128;
    let mut next = xorshift(5);
    let values = [0i128, 1, -1, half, -half + 1, (1 << 62) - 1, -(1 << 62) + 1]
        .into_iter()
        .chain((0..1000).map(|_| (next() as i128 - (1 << 63)) >> 1));
    for x in values {
        let residues: Vec<u32> = primes
            .iter()
            .map(|&p| x.rem_euclid(p as i128) as u32)
            .collect();
        assert_eq!(crt.combine(&residues), x);
    }
    assert!(crt_primes(400, 8192).is_err());
}

#[test]
fn linear_combinations_are_exact_on_half_word_and_wide_sums() {
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    let mut next = xorshift(5);
    for backend in Backend::available() {
        let network = toy_params(&model, 3, backend);
        let params = &network.channels()[0];
        let (n, level) = (params.degree(), params.max_level());
        let moduli = &params.ciphertext_basis().moduli()[..level];
        // 4-bit weights take the half-word sums, 15-bit ones (sums above 2^16) the i64 path.
        for (bits, rows, size, outputs) in
            [(4, 13, 2, 5), (4, 4, 3, 1), (15, 13, 2, 3), (15, 6, 3, 1)]
        {
            let cts: Vec<Ciphertext> = (0..rows)
                .map(|_| {
                    let polys = (0..size)
                        .map(|_| {
                            (0..level * n)
                                .map(|i| match i % 7 {
                                    0 => moduli[i / n].value() - 1,
                                    _ => (next() % moduli[i / n].value() as u64) as u32,
                                })
                                .collect()
                        })
                        .collect();
                    Ciphertext::from_parts(n, level, polys)
                })
                .collect();
            let weights: Vec<i32> = (0..outputs * rows)
                .map(|i| match i % 5 {
                    0 => -(1 << (bits - 1)),
                    1 => (1 << (bits - 1)) - 1,
                    _ => (next() % (1 << bits)) as i32 - (1 << (bits - 1)),
                })
                .collect();
            let refs: Vec<&Ciphertext> = cts.iter().collect();
            let got =
                evaluator::linear_combinations(params, &refs, &weights, &std::vec![0; outputs]);
            for (o, ct) in got.iter().enumerate() {
                for k in 0..size {
                    for (i, &value) in ct.poly(k).iter().enumerate() {
                        let q = moduli[i / n].value() as i128;
                        let sum: i128 = (0..rows)
                            .map(|r| weights[o * rows + r] as i128 * cts[r].poly(k)[i] as i128)
                            .sum();
                        assert_eq!(
                            value as i128,
                            sum.rem_euclid(q),
                            "{backend}: {bits}-bit weights, output {o}, poly {k}, coefficient {i}"
                        );
                    }
                }
            }
        }
    }
}
