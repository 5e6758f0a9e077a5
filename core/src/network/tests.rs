use std::vec::Vec;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::bfv::{ExpandedCiphertext, GaloisKey, SeededCiphertext, galois_slot};
use crate::model::{CONV_SIDE, ModelWriter};

/// The committed MNIST model.
const MNIST_MODEL: &[u8] = include_bytes!("../../../models/cryptonets-mnist.cnmd");

use crate::model::polynomial::tests::xorshift;

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

/// Encrypts (packed as `packing`), evaluates and decrypts `images`; returns the logits, the
/// serialized outputs and the smallest measured noise budget of the outputs.
fn run_packed(
    params: &NetworkParameters,
    model: &Model,
    images: &[[u8; INPUTS]],
    packing: Packing,
) -> (Vec<[i128; CLASSES]>, Vec<Vec<u8>>, u32) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    let keys = EvaluationKeys::generate(params, &secret, packing.factor(), &mut rng).unwrap();
    // Both choices of where the first dense layer scales (see `sums_tensors`), whatever the
    // backend would choose: the first's words are compared across backends by the callers;
    // the other's (one rounding against many) must give the same logits.
    let evaluator = NetworkEvaluator::new(params, model, &keys)
        .unwrap_or_else(|e| panic!("{e}: {:?}", EvaluationPlan::new(params, model)))
        .forcing_tensor_sums(true);
    let plan = *evaluator.plan_for(packing).unwrap();
    let sums_tensors = evaluator.sums_tensors(&params.channels()[0], plan.square_level);
    let other = NetworkEvaluator::new(params, model, &keys)
        .unwrap()
        .forcing_tensor_sums(false);
    let mut other_outputs = Vec::new();
    let mut outputs = Vec::new();
    let mut bytes = Vec::new();
    let mut budget = u32::MAX;
    let channel_inputs = |p: &Parameters, rng: &mut ChaCha20Rng| -> Vec<SeededCiphertext> {
        encode_images(p, model, images, packing)
            .unwrap()
            .iter()
            .map(|m| secret.encrypt_seeded(p, m, rng).unwrap())
            .collect()
    };
    let expand = |p: &Parameters, seeded: &[SeededCiphertext]| -> Vec<Ciphertext> {
        seeded.iter().map(|ct| ct.expand(p).unwrap()).collect()
    };
    let expand_ntt = |p: &Parameters, seeded: &[SeededCiphertext]| -> Vec<ExpandedCiphertext> {
        seeded.iter().map(|ct| ct.expand_ntt(p).unwrap()).collect()
    };
    // A workspace left dirty by another channel (other parameters, other words), reused for
    // every channel below: its results must be those of fresh buffers.
    let mut reused = Workspace::default();
    let last = params.channels().len() - 1;
    let last_params = &params.channels()[last];
    let dirty = expand(last_params, &channel_inputs(last_params, &mut rng));
    let noop = |_: Phase| {};
    evaluator
        .evaluate_channel_in(&mut reused, last, &dirty, packing, &noop)
        .unwrap();
    let same = |a: &[Ciphertext], b: &[Ciphertext], p: &Parameters| {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bytes(p) == b.to_bytes(p))
    };
    for (c, p) in params.channels().iter().enumerate() {
        let seeded = channel_inputs(p, &mut rng);
        let inputs = expand(p, &seeded);
        assert_eq!(inputs.len(), packing.ciphertexts());
        let out = evaluator.evaluate_channel(c, &inputs, packing).unwrap();
        // The same inputs with a in NTT form, as the service expands them, in the reused dirty
        // workspace: the same words as from coefficients in fresh buffers.
        let from_ntt = evaluator
            .evaluate_expanded_in(&mut reused, c, &expand_ntt(p, &seeded), packing, &noop)
            .unwrap();
        assert!(
            same(&out, &from_ntt, p),
            "channel {c}: a reused workspace or inputs with a in NTT form changed the outputs"
        );
        other_outputs.push(
            other
                .evaluate_channel_in(&mut reused, c, &inputs, packing, &noop)
                .unwrap(),
        );
        for ct in &out {
            assert_eq!(ct.level(), plan.output_level);
            budget = budget.min(secret.noise_budget(p, ct).unwrap());
            bytes.push(ct.to_bytes(p));
        }
        outputs.push(out);
    }
    let decrypted = decrypt_logits(params, &secret, &outputs, images.len(), packing).unwrap();
    assert_eq!(decrypted.min_budget_bits, budget);
    let other = decrypt_logits(params, &secret, &other_outputs, images.len(), packing).unwrap();
    assert_eq!(
        other.logits, decrypted.logits,
        "each square scaled: other logits than with tensor sums ({sums_tensors})"
    );
    (decrypted.logits, bytes, budget)
}

/// As [`run_packed`], one pixel a ciphertext.
fn run(
    params: &NetworkParameters,
    model: &Model,
    images: &[[u8; INPUTS]],
) -> (Vec<[i128; CLASSES]>, Vec<Vec<u8>>, u32) {
    run_packed(params, model, images, Packing::NONE)
}

#[test]
fn encrypted_inference_equals_plaintext_inference_on_every_backend() {
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    let images = random_images(9, 3);
    let expected: Vec<[i128; CLASSES]> = images.iter().map(|i| model.logits(i).unwrap()).collect();
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
fn convolution_outputs_are_squared_below_the_top_level_where_the_budget_allows() {
    // One prime more than the small model needs: its convolution outputs are switched down
    // before they are squared (a smaller square), and the result stays exact.
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    let images = random_images(5, 8);
    let params = toy_params(&model, 6, Backend::detect());
    let plan = EvaluationPlan::new(&params, &model).unwrap();
    let top = params.channels()[0].max_level();
    assert!(plan.square_level < top, "{plan:?}");
    assert!(plan.hidden_level <= plan.square_level, "{plan:?}");
    let (logits, _, measured) = run(&params, &model, &images);
    let expected: Vec<[i128; CLASSES]> = images.iter().map(|i| model.logits(i).unwrap()).collect();
    assert_eq!(logits, expected);
    assert!(
        plan.estimate.output <= measured as f64,
        "estimated {:.1} bits left, measured {measured}",
        plan.estimate.output
    );
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
    let expected: Vec<[i128; CLASSES]> = images.iter().map(|i| model.logits(i).unwrap()).collect();
    assert_eq!(logits, expected);
    assert!(budget > 0);
}

#[test]
fn the_mnist_model_is_exact_and_the_noise_estimate_is_conservative() {
    let model = Model::parse(MNIST_MODEL).unwrap();
    let images = random_images(6, 11);
    let params = toy_params(&model, 5, Backend::detect());
    let expected: Vec<[i128; CLASSES]> = images.iter().map(|i| model.logits(i).unwrap()).collect();
    for (packing, inputs) in [
        (Packing::NONE, Inputs::Fresh),
        (Packing::new(4).unwrap(), Inputs::Unpacked),
    ] {
        let plan = EvaluationPlan::with_inputs(&params, &model, inputs).unwrap();
        let (logits, _, measured) = run_packed(&params, &model, &images, packing);
        assert_eq!(logits, expected, "{packing:?}");
        assert!(
            plan.estimate.output <= measured as f64,
            "{packing:?}: estimated {:.1} bits left, measured {measured}",
            plan.estimate.output
        );
        // Measured, not planned: the outputs keep the margin decryption checks, and the
        // estimate is tight enough to choose levels with (within 24 bits of the truth).
        assert!(
            measured >= MIN_OUTPUT_BUDGET_BITS,
            "{packing:?}: measured {measured}"
        );
        assert!(
            measured as f64 - plan.estimate.output < 24.0,
            "{packing:?}: estimated {:.1}, measured {measured}: the estimate is too loose",
            plan.estimate.output
        );
    }
    // Unpacking costs budget: the estimate says so, by a few bits.
    let fresh = EvaluationPlan::new(&params, &model).unwrap();
    let unpacked = EvaluationPlan::with_inputs(&params, &model, Inputs::Unpacked).unwrap();
    let cost = fresh.estimate.fresh - unpacked.estimate.fresh;
    assert!((1.0..8.0).contains(&cost), "{cost}");
}

#[cfg(feature = "parallel")]
#[test]
fn parallel_evaluation_is_bit_identical_to_one_thread() {
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    let images = random_images(5, 5);
    let params = toy_params(&model, 5, Backend::detect());
    for packing in [Packing::NONE, Packing::new(4).unwrap()] {
        let in_pool = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| run_packed(&params, &model, &images, packing))
        };
        let (one, many) = (in_pool(1), in_pool(4));
        assert!(one.1 == many.1, "{packing:?}");
        assert_eq!(one.0, many.0);
    }
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
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    let keys = EvaluationKeys::generate(&params, &secret, 1, &mut rng).unwrap();
    assert!(NetworkEvaluator::new(&params, &model, &keys).is_err());
}

#[test]
fn malformed_inputs_are_refused() {
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    let params = toy_params(&model, 5, Backend::detect());
    let p = &params.channels()[0];
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let secret = SecretKey::generate(p, &mut rng);
    let keys = EvaluationKeys::generate(&params, &secret, 2, &mut rng).unwrap();
    let evaluator = NetworkEvaluator::new(&params, &model, &keys).unwrap();
    let m = BatchEncoder::new(p).encode(&[1, 2, 3]).unwrap();
    let ct = secret.encrypt(p, &m, &mut rng).unwrap();
    let too_few = std::vec![ct.clone(); INPUTS - 1];
    assert!(matches!(
        evaluator.evaluate_channel(0, &too_few, Packing::NONE),
        Err(Error::Incompatible { .. })
    ));
    let mut low = ct.clone();
    crate::bfv::Evaluator::new(p)
        .mod_switch_to_next_assign(&mut low)
        .unwrap();
    let mut wrong_level = std::vec![ct.clone(); INPUTS];
    wrong_level[100] = low;
    assert!(
        evaluator
            .evaluate_channel(0, &wrong_level, Packing::NONE)
            .is_err()
    );
    let all = std::vec![ct.clone(); INPUTS];
    assert!(evaluator.evaluate_channel(99, &all, Packing::NONE).is_err());
    // Packed by 4 while the keys unpack at most 2: no Galois keys for blocks 2 and 3.
    let four = Packing::new(4).unwrap();
    let packed = std::vec![ct.clone(); four.ciphertexts()];
    assert!(matches!(
        evaluator.evaluate_channel(0, &packed, four),
        Err(Error::Incompatible { .. })
    ));
    // 784 inputs under a packing that takes 392 are refused, as are 392 unpacked ones.
    let two = Packing::new(2).unwrap();
    assert!(evaluator.evaluate_channel(0, &all, two).is_err());
    assert!(evaluator.evaluate_channel(0, &packed[..0], two).is_err());
    assert!(
        evaluator
            .evaluate_channel(0, &std::vec![ct; two.ciphertexts()], Packing::NONE)
            .is_err()
    );
}

#[test]
fn crt_reconstructs_signed_values_exactly() {
    let primes = crt_primes(63, 8192).unwrap();
    assert_eq!(primes.len(), 3);
    assert!(primes.iter().all(|&p| p % 16384 == 1));
    let product: u128 = primes.iter().map(|&p| p as u128).product();
    assert!(product > 1 << 63);
    let moduli: Vec<Modulus> = primes.iter().map(|&p| Modulus::new(p).unwrap()).collect();
    let crt = Crt::new(&moduli).unwrap();
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
        assert_eq!(crt.combine(&residues), Ok(x));
    }
    assert!(crt_primes(400, 8192).is_err());
    // Refused, not a panic: repeated or too many moduli, a product past 2^126, residues of
    // the wrong count or range.
    assert!(Crt::new(&[moduli[0], moduli[0]]).is_err());
    assert!(Crt::new(&[]).is_err());
    let big: Vec<Modulus> = crate::zq::prime::ntt_primes(29, 8192)
        .take(5)
        .map(|p| Modulus::new(p).unwrap())
        .collect();
    assert!(Crt::new(&big).is_err());
    assert!(Crt::new(&big[..4]).is_ok());
    assert!(crt.combine(&[0, 0]).is_err());
    assert!(crt.combine(&[primes[0], 0, 0]).is_err());
    // Of all sets of a count that hold the bits, the one with the smallest largest prime:
    // the consecutive primes one step smaller no longer hold them.
    let ntt_primes_below = |p: u32, n: usize| {
        (1..)
            .map(move |k| p as i64 - k * 2 * n as i64)
            .take_while(|&c| c > 1)
            .filter(|&c| crate::zq::prime::is_prime(c as u64))
            .map(|c| c as u32)
    };
    for (bits, count, n) in [(57, 2, 8192), (57, 3, 8192), (63, 3, 8192), (90, 4, 1024)] {
        let primes = crt_primes_of_count(bits, n, count).unwrap();
        assert_eq!(primes.len(), count);
        let log = |ps: &[u32]| ps.iter().map(|&p| (p as f64).log2()).sum::<f64>();
        assert!(log(&primes) > bits as f64, "{bits} {count}: {primes:?}");
        assert!(primes.windows(2).all(|w| w[0] > w[1]));
        assert!(primes.iter().all(|&p| p % (2 * n as u32) == 1));
        let mut smaller = primes[1..].to_vec();
        smaller.extend(ntt_primes_below(primes[count - 1], n).next());
        assert_eq!(smaller.len(), count);
        assert!(
            log(&smaller) <= bits as f64 + 0.01,
            "{bits} {count}: {smaller:?}"
        );
    }
    // The plaintext primes never reach the 30 bits of the ciphertext primes.
    for bits in [20, 60, 90, 120, 200] {
        let primes = crt_primes(bits, 8192).unwrap();
        assert!(primes.iter().all(|&p| p < 1 << 29), "{bits}: {primes:?}");
    }
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
        // Sets of one size go together through one call, sharing the column blocks.
        for configurations in [
            [(4, 13, 2, 5), (15, 13, 2, 3), (4, 25, 2, 5)],
            [(4, 4, 3, 1), (15, 6, 3, 1), (4, 7, 3, 10)],
        ] {
            let mut all = Vec::new();
            for (bits, rows, size, outputs) in configurations {
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
                        Ciphertext::from_parts(params, level, polys)
                    })
                    .collect();
                let weights: Vec<i32> = (0..outputs * rows)
                    .map(|i| match i % 5 {
                        0 => -(1 << (bits - 1)),
                        1 => (1 << (bits - 1)) - 1,
                        _ => (next() % (1 << bits)) as i32 - (1 << (bits - 1)),
                    })
                    .collect();
                all.push((bits, cts, weights, std::vec![0i128; outputs]));
            }
            let sets: Vec<evaluator::Combinations<'_>> = all
                .iter()
                .map(|(_, cts, weights, biases)| evaluator::Combinations {
                    rows: cts.iter().collect(),
                    weights,
                    biases,
                })
                .collect();
            let together = evaluator::linear_combinations_of_sets(params, &sets, &mut Vec::new());
            for ((bits, cts, weights, biases), got) in all.iter().zip(&together) {
                let refs: Vec<&Ciphertext> = cts.iter().collect();
                let alone = evaluator::linear_combinations(params, &refs, weights, biases);
                assert!(
                    &alone == got,
                    "{backend}: a set alone and with others differ"
                );
                let rows = cts.len();
                for (o, ct) in got.iter().enumerate() {
                    for k in 0..ct.size() {
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
}

#[test]
fn packed_batches_are_exact_on_every_backend_with_identical_bytes() {
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    for factor in [2, 4] {
        let packing = Packing::new(factor).unwrap();
        // A full packed batch at n = 1024 (1024 / k images), so that every slot of every
        // block carries an image.
        let images = random_images(packing.capacity(1024), 40 + factor as u64);
        let expected: Vec<[i128; CLASSES]> =
            images.iter().map(|i| model.logits(i).unwrap()).collect();
        let mut reference: Option<Vec<Vec<u8>>> = None;
        for backend in Backend::available() {
            let params = toy_params(&model, 5, backend);
            let (logits, outputs, budget) = run_packed(&params, &model, &images, packing);
            assert!(logits == expected, "{backend}, packed {factor}");
            assert!(budget > 0, "{backend}");
            match &reference {
                None => reference = Some(outputs),
                Some(r) => assert!(r == &outputs, "{backend}: output bytes differ"),
            }
        }
    }
}

#[test]
fn the_packing_layout_is_a_partition_that_the_galois_elements_undo() {
    for n in [1024, 8192] {
        for factor in [1, 2, 4, 8, 16] {
            let packing = Packing::new(factor).unwrap();
            let images = packing.capacity(n);
            let mut seen = std::vec![false; n];
            for block in 0..factor {
                let slots = packing.slots(n, images, block);
                assert_eq!(slots.len(), images);
                for (image, &slot) in slots.iter().enumerate() {
                    assert_eq!(slot, packing.slot(n, image, block));
                    assert!(!seen[slot], "n {n}, k {factor}: slot {slot} used twice");
                    seen[slot] = true;
                    // sigma_h moves block `block` of image j to image j's slot of block 0.
                    let g = packing.element(n, block);
                    assert_eq!(galois_slot(n, g, packing.slot(n, image, 0)), slot);
                }
            }
            assert!(
                seen.iter().all(|&s| s),
                "every slot carries exactly one image and block"
            );
            // Every pixel has one (ciphertext, block), and back.
            for pixel in 0..INPUTS {
                let (c, b) = packing.position(pixel);
                assert_eq!(packing.pixel(c, b), Some(pixel));
            }
            assert_eq!(packing.elements(n).len(), factor - 1);
        }
        assert_eq!(Packing::for_batch(n, n, 16), Packing::NONE);
        assert_eq!(Packing::for_batch(n, n / 4, 4).factor(), 4);
        assert_eq!(Packing::for_batch(n, n / 4 + 1, 4).factor(), 2);
        assert_eq!(Packing::for_batch(n, 1, 4).factor(), 4);
        assert_eq!(Packing::for_batch(n, 1, 1), Packing::NONE);
    }
    assert_eq!(Packing::for_batch(8192, 1808, 4).ciphertexts(), 196);
    assert!(Packing::new(3).is_err() && Packing::new(32).is_err() && Packing::new(0).is_err());
}

#[test]
fn evaluation_keys_round_trip_and_refuse_corruption() {
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    let params = toy_params(&model, 3, Backend::detect());
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    let keys = EvaluationKeys::generate(&params, &secret, 4, &mut rng).unwrap();
    assert_eq!(keys.galois.len(), 3);
    assert_eq!(keys.max_packing(1024).factor(), 4);
    let serialized = keys.to_bytes(&params);
    assert_eq!(
        EvaluationKeys::from_bytes(&params, &serialized).unwrap(),
        keys
    );
    let malformed = |b: &[u8]| EvaluationKeys::from_bytes(&params, b).is_err();
    assert!(malformed(&serialized[..serialized.len() - 1]));
    assert!(malformed(&[serialized.as_slice(), &[0]].concat()));
    assert!(malformed(&[]));
    for (at, value) in [(0, b'X'), (4, 2), (5, 4), (5, 200), (6, 1)] {
        let mut bad = serialized.clone();
        bad[at] = value;
        assert!(malformed(&bad), "byte {at} = {value}");
    }
    // A repeated Galois key.
    let mut repeated = EvaluationKeys {
        relin: keys.relin.clone(),
        galois: std::vec![keys.galois[0].clone(), keys.galois[0].clone()],
    }
    .to_bytes(&params);
    assert!(malformed(&repeated));
    repeated[8] ^= 0xff; // the relinearization key's length
    assert!(malformed(&repeated));
    // Keys without Galois keys unpack nothing; with only -1, pairs.
    let only_relin = EvaluationKeys {
        relin: keys.relin.clone(),
        galois: Vec::new(),
    };
    assert_eq!(only_relin.max_packing(1024), Packing::NONE);
    let minus_one = EvaluationKeys {
        relin: keys.relin.clone(),
        galois: std::vec![GaloisKey::new(&params.channels()[0], &secret, 2047, &mut rng).unwrap()],
    };
    assert_eq!(minus_one.max_packing(1024).factor(), 2);
    assert!(EvaluationKeys::generate(&params, &secret, 3, &mut rng).is_err());
}

#[test]
fn keys_and_ciphertexts_of_other_parameters_are_refused_before_any_work() {
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    let params = toy_params(&model, 5, Backend::detect());
    let other = toy_params(&model, 6, Backend::detect());
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let foreign_secret = SecretKey::generate(&other.channels()[0], &mut rng);
    let foreign = EvaluationKeys::generate(&other, &foreign_secret, 2, &mut rng).unwrap();
    let err = NetworkEvaluator::new(&params, &model, &foreign).unwrap_err();
    assert!(std::format!("{err}").contains("other parameters"), "{err}");
    // A key of the right ring but of the wrong shape of Galois key is caught too: the
    // ring id is what keys are compared by, and every use checks it.
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    let keys = EvaluationKeys::generate(&params, &secret, 2, &mut rng).unwrap();
    assert!(NetworkEvaluator::new(&params, &model, &keys).is_ok());
    let p = &params.channels()[0];
    let q = &other.channels()[0];
    let evaluator = crate::bfv::Evaluator::new(p);
    let encoder = BatchEncoder::new(p);
    let m = encoder.encode(&[1, 2, 3]).unwrap();
    let ct = secret.encrypt(p, &m, &mut rng).unwrap();
    // Secret key, ciphertext or relinearization key of other parameters: typed errors.
    assert!(foreign_secret.encrypt(p, &m, &mut rng).is_err());
    assert!(foreign_secret.decrypt(p, &ct).is_err());
    assert!(secret.decrypt(q, &ct).is_err());
    let mut square = evaluator.square(&ct).unwrap();
    assert!(
        evaluator
            .relinearize_assign(&mut square, &foreign.relin)
            .is_err()
    );
    assert!(crate::bfv::Evaluator::new(q).square(&ct).is_err());
    assert!(evaluator.apply_galois(&ct, &foreign.galois[0]).is_err());
    // Channels share keys (a ring id has no t) but not ciphertexts (a parameter id has).
    if params.channels().len() > 1 {
        let c1 = &params.channels()[1];
        assert_eq!(c1.ring_id(), p.ring_id());
        assert_ne!(c1.id(), p.id());
        assert!(crate::bfv::Evaluator::new(c1).square(&ct).is_err());
    }
}

#[test]
fn decryption_under_another_key_or_of_altered_residues_is_refused() {
    let bytes = tiny_model();
    let model = Model::parse(&bytes).unwrap();
    let params = toy_params(&model, 5, Backend::detect());
    let images = random_images(3, 8);
    let mut rng = ChaCha20Rng::seed_from_u64(30);
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    let keys = EvaluationKeys::generate(&params, &secret, 1, &mut rng).unwrap();
    let evaluator = NetworkEvaluator::new(&params, &model, &keys).unwrap();
    let outputs: Vec<Vec<Ciphertext>> = params
        .channels()
        .iter()
        .enumerate()
        .map(|(c, p)| {
            let inputs: Vec<Ciphertext> = encode_images(p, &model, &images, Packing::NONE)
                .unwrap()
                .iter()
                .map(|m| secret.encrypt(p, m, &mut rng).unwrap())
                .collect();
            evaluator
                .evaluate_channel(c, &inputs, Packing::NONE)
                .unwrap()
        })
        .collect();
    let honest = decrypt_logits(&params, &secret, &outputs, 3, Packing::NONE).unwrap();
    assert!(honest.min_budget_bits >= MIN_OUTPUT_BUDGET_BITS);
    for (i, image) in images.iter().enumerate() {
        assert_eq!(honest.logits[i], model.logits(image).unwrap());
    }
    // Another owner's key: every coefficient of the phase is garbage.
    let stranger = SecretKey::generate(&params.channels()[0], &mut rng);
    let err = decrypt_logits(&params, &stranger, &outputs, 3, Packing::NONE).unwrap_err();
    assert!(matches!(err, Error::NoiseExhausted { .. }), "{err}");
    // Residues changed over a span of coefficients (as a corrupted or tampered download).
    let mut altered = outputs.clone();
    let q0 = params.channels()[0].ciphertext_basis().moduli()[0].value();
    for x in altered[0][3].polys[0][..64].iter_mut() {
        *x = (*x + 123_457) % q0;
    }
    let err = decrypt_logits(&params, &secret, &altered, 3, Packing::NONE).unwrap_err();
    assert!(matches!(err, Error::NoiseExhausted { .. }), "{err}");
}

#[test]
fn resource_estimates_grow_with_the_model_and_refuse_above_the_limit() {
    let small = Model::parse(MNIST_MODEL).unwrap();
    let params = NetworkParameters::for_model(&small, Backend::detect()).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    let keys = EvaluationKeys::generate(&params, &secret, 1, &mut rng).unwrap();
    let evaluator = NetworkEvaluator::new(&params, &small, &keys).unwrap();
    let estimate = evaluator.estimate(Packing::NONE, 0, 2).unwrap();
    // The committed model's full batch measures about 0.9 to 1.3 GB of peak RSS with the
    // upload held (run --json): the estimate (without the upload here) is of that order.
    assert!(
        (300 << 20..3 << 30).contains(&estimate.peak_bytes),
        "{estimate:?}"
    );
    assert!(estimate.check_memory(estimate.peak_bytes).is_ok());
    let err = estimate.check_memory(estimate.peak_bytes - 1).unwrap_err();
    assert!(matches!(err, Error::ResourceLimit { .. }));
    // The model at the parser's limits: 16 maps, 4096 hidden units.
    let features = 16 * CONV_SIDE * CONV_SIDE;
    let huge = ModelWriter {
        maps: 16,
        hidden: 4096,
        input_levels: 3,
        float_accuracy: 0,
        integer_accuracy: 0,
        conv_weights: std::vec![1; 16 * 25],
        conv_biases: std::vec![0; 16],
        dense1_weights: std::vec![1; 4096 * features],
        dense1_biases: std::vec![0; 4096],
        dense2_weights: std::vec![1; 10 * 4096],
        dense2_biases: std::vec![0; 10],
    }
    .to_bytes();
    let huge = Model::parse(&huge).unwrap();
    let params = NetworkParameters::for_model(&huge, Backend::detect()).unwrap();
    let keys = EvaluationKeys::generate(&params, &secret, 1, &mut rng).unwrap();
    let evaluator = NetworkEvaluator::new(&params, &huge, &keys).unwrap();
    let big = evaluator.estimate(Packing::NONE, 0, 2).unwrap();
    assert!(big.peak_bytes > 4 << 30, "{big:?}");
    assert!(big.peak_bytes > 4 * estimate.peak_bytes);
    assert!(
        big.seconds > 20.0 * estimate.seconds,
        "{big:?} vs {estimate:?}"
    );
}

#[test]
fn random_polynomial_networks_evaluate_exactly_under_encryption_on_every_backend() {
    use crate::model::polynomial::tests::random_network;
    let (mut ran, mut refused, mut switched) = (0, 0, 0);
    for seed in 0..60u64 {
        let Some(network) = random_network(seed) else {
            continue;
        };
        if network.plaintext_bits() > 110 {
            continue;
        }
        let primes = crt_primes(network.plaintext_bits(), 1024).unwrap();
        let len = network.input().len();
        let images: Vec<Vec<u8>> = (0..3u64)
            .map(|k| {
                let mut next = xorshift(seed * 7 + k + 1);
                (0..len).map(|_| next() as u8).collect()
            })
            .collect();
        let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
        let mut reference: Option<Vec<Vec<u8>>> = None;
        for backend in Backend::available() {
            let params = NetworkParameters::insecure_for_tests(1024, 8, &primes, backend).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let secret = SecretKey::generate(&params.channels()[0], &mut rng);
            let keys = EvaluationKeys::generate(&params, &secret, 1, &mut rng).unwrap();
            let evaluator = match PolynomialEvaluator::new(&params, &network, &keys) {
                Ok(e) => e,
                Err(Error::InsufficientNoiseBudget { .. }) => {
                    refused += 1;
                    break;
                }
                Err(e) => panic!("{seed}: {e}"),
            };
            let plan = evaluator.plan().clone();
            switched += (plan.output_level() < 8) as usize;
            let mut outputs = Vec::new();
            for (c, p) in params.channels().iter().enumerate() {
                let inputs: Vec<Ciphertext> = encode_network_inputs(p, &network, &refs)
                    .unwrap()
                    .iter()
                    .map(|m| secret.encrypt(p, m, &mut rng).unwrap())
                    .collect();
                let out = evaluator.evaluate_channel(c, &inputs).unwrap();
                assert!(out.iter().all(|ct| ct.level() == plan.output_level()));
                outputs.push(out);
            }
            let (values, budget) = decrypt_outputs(&params, &secret, &outputs, 3).unwrap();
            let (wide, _) = decrypt_outputs_wide(&params, &secret, &outputs, 3).unwrap();
            for (w, v) in wide.iter().zip(&values) {
                let v: Vec<num_bigint::BigInt> = v.iter().map(|&x| x.into()).collect();
                assert_eq!(w, &v);
            }
            for (image, got) in images.iter().zip(&values) {
                assert_eq!(
                    got,
                    &network.logits(image).unwrap(),
                    "seed {seed}, {backend:?}"
                );
            }
            assert!(
                plan.output_budget_bits() <= budget as f64,
                "{seed}: {plan:?} vs {budget}"
            );
            let bytes: Vec<Vec<u8>> = outputs
                .iter()
                .zip(params.channels())
                .flat_map(|(o, p)| o.iter().map(|ct| ct.to_bytes(p)))
                .collect();
            match &reference {
                None => reference = Some(bytes),
                Some(r) => assert_eq!(r, &bytes, "seed {seed}: {backend:?} differs"),
            }
            ran += 1;
        }
    }
    assert!(ran >= 20, "only {ran} evaluations ran ({refused} refused)");
    // The plans switch down where the budget allows: the switches are exercised too.
    assert!(
        switched >= ran / 2,
        "{switched} of {ran} plans switched down"
    );
}

#[test]
fn polynomial_plans_refuse_too_little_budget_and_keys_of_other_parameters() {
    use crate::model::polynomial::{Layer, PolynomialNetwork, Shape};
    let cube = Layer::Polynomial {
        coefficients: [1, 2, 0, 1],
    };
    let dense = Layer::Dense {
        outputs: 4,
        weights: std::vec![3; 16],
        biases: std::vec![1; 4],
    };
    let network = PolynomialNetwork::new(
        Shape::vector(4),
        15,
        std::vec![dense.clone(), cube.clone(), dense.clone(), cube, dense],
    )
    .unwrap();
    let primes = crt_primes(network.plaintext_bits(), 1024).unwrap();
    let small = NetworkParameters::insecure_for_tests(1024, 2, &primes, Backend::detect()).unwrap();
    let err = PolynomialPlan::new(&small, &network).unwrap_err();
    assert!(
        matches!(err, Error::InsufficientNoiseBudget { .. }),
        "{err}"
    );
    let big = NetworkParameters::insecure_for_tests(1024, 8, &primes, Backend::detect()).unwrap();
    let plan = PolynomialPlan::new(&big, &network).unwrap();
    // Levels never rise, and the estimate keeps the margin everywhere.
    assert!(plan.layers.windows(2).all(|w| w[1].level <= w[0].level));
    assert!(plan.layers.iter().all(|l| l.budget_bits >= MARGIN_BITS));
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let secret = SecretKey::generate(&small.channels()[0], &mut rng);
    let foreign = EvaluationKeys::generate(&small, &secret, 1, &mut rng).unwrap();
    let err = PolynomialEvaluator::new(&big, &network, &foreign).unwrap_err();
    assert!(std::format!("{err}").contains("other parameters"), "{err}");
}

#[test]
fn the_planner_picks_the_cheapest_feasible_parameters_and_refuses_what_none_holds() {
    use crate::model::polynomial::{Layer, PolynomialNetwork, Shape};
    let cryptonets = PolynomialNetwork::parse(MNIST_MODEL).unwrap();
    let planned = PlannedNetwork::new(&cryptonets, Backend::detect(), 2, 8192).unwrap();
    let p = &planned.params;
    // The CryptoNets network for 8192 images: n = 8192, two CRT channels of at most 29
    // bits (the two smallest primes that hold its 57-bit outputs, about 2^28.5 each, leave
    // the noise plan its margin with five ciphertext primes, and two channels cost two
    // thirds of three), never equal to a ciphertext or special prime, within the 128-bit
    // bound.
    assert_eq!(p.degree(), 8192);
    assert_eq!(p.channels().len(), 2);
    let first = &p.channels()[0];
    let special = first.special_basis().unwrap();
    for t in p.plaintext_primes() {
        assert!(t < 1 << 29 && t % 16384 == 1);
        assert!(
            !first
                .ciphertext_basis()
                .moduli()
                .iter()
                .any(|q| q.value() == t)
        );
        assert!(!special.moduli().iter().any(|q| q.value() == t));
    }
    assert!(first.log_q() + special.log2() <= 218.0);
    // One prime fewer cannot hold it: the planner took the fewest.
    let fewer = NetworkParameters::new(
        8192,
        first.max_level() - 1,
        &p.plaintext_primes(),
        Backend::detect(),
    )
    .unwrap();
    assert!(PolynomialPlan::new(&fewer, &cryptonets).is_err());
    assert!(planned.estimate.seconds > 0.0 && planned.estimate.peak_bytes > 100 << 20);
    // For twice as many images, a ring of 16384 slots takes them in one batch; the planner
    // takes it only where that costs less than two batches of 8192.
    let larger = PlannedNetwork::for_degree(&cryptonets, Backend::detect(), 2, 16384).unwrap();
    assert_eq!(larger.params.degree(), 16384);
    let chosen = PlannedNetwork::new(&cryptonets, Backend::detect(), 2, 16384).unwrap();
    let cheaper = match larger.estimate.seconds < 2.0 * planned.estimate.seconds {
        true => 16384,
        false => 8192,
    };
    assert_eq!(chosen.params.degree(), cheaper);
    // Whatever the batch size, the plan at the chosen degree is the one every party
    // derives from the model and n alone (keys and batch files carry n, not the batch).
    for chosen in [&planned, &larger] {
        let n = chosen.params.degree();
        let again = PlannedNetwork::for_degree(&cryptonets, Backend::detect(), 7, n).unwrap();
        assert_eq!(
            again.params.plaintext_primes(),
            chosen.params.plaintext_primes()
        );
        assert_eq!(
            again.params.channels()[0].id(),
            chosen.params.channels()[0].id()
        );
        assert_eq!(again.plan, chosen.plan);
    }

    // Deeper: cubic activations need more levels, so more primes (and a larger ring).
    let dense = |n: usize, inputs: usize| Layer::Dense {
        outputs: n,
        weights: std::vec![1; n * inputs],
        biases: std::vec![0; n],
    };
    let cube = Layer::Polynomial {
        coefficients: [0, 1, 0, 1],
    };
    let deep = PolynomialNetwork::new(
        Shape::vector(8),
        3,
        std::vec![
            dense(8, 8),
            cube.clone(),
            dense(8, 8),
            cube.clone(),
            dense(4, 8)
        ],
    )
    .unwrap();
    let planned_deep = PlannedNetwork::new(&deep, Backend::detect(), 2, 8192).unwrap();
    assert!(
        planned_deep.params.channels()[0].max_level() > first.max_level()
            || planned_deep.params.degree() > 8192
    );
    // Far too deep for any ring: refused with the noise budget's reason.
    let mut layers = std::vec![dense(8, 8)];
    for _ in 0..8 {
        layers.push(cube.clone());
        layers.push(dense(8, 8));
    }
    if let Ok(hopeless) = PolynomialNetwork::new(Shape::vector(8), 1, layers) {
        assert!(PlannedNetwork::new(&hopeless, Backend::detect(), 2, 8192).is_err());
    }
}

#[test]
fn wide_crt_reconstructs_values_past_128_bits_and_agrees_with_the_narrow_one() {
    use num_bigint::BigInt;
    let primes: Vec<u32> = crate::zq::prime::ntt_primes(29, 8192).take(8).collect();
    let moduli: Vec<Modulus> = primes.iter().map(|&p| Modulus::new(p).unwrap()).collect();
    let crt = WideCrt::new(&moduli).unwrap();
    let product: BigInt = primes.iter().map(|&p| BigInt::from(p)).product();
    let half: BigInt = &product / 2;
    let mut next = xorshift(17);
    let mut values: Vec<BigInt> = std::vec![
        BigInt::from(0),
        BigInt::from(-1),
        half.clone(),
        -&half + 1,
        (BigInt::from(1) << 200) - 3,
    ];
    for _ in 0..200 {
        let words: Vec<u32> = (0..8).map(|_| next() as u32).collect();
        let x = BigInt::from_slice(num_bigint::Sign::Plus, &words) % &product - &half;
        values.push(x);
    }
    for x in values {
        let residues: Vec<u32> = primes
            .iter()
            .map(|&p| {
                let r = ((&x % p) + p) % p;
                u32::try_from(r).unwrap()
            })
            .collect();
        assert_eq!(crt.combine(&residues).unwrap(), x);
    }
    // Three channels: the same answers as the i128 reconstruction.
    let narrow = Crt::new(&moduli[..3]).unwrap();
    let wide = WideCrt::new(&moduli[..3]).unwrap();
    for _ in 0..100 {
        let r: Vec<u32> = primes[..3].iter().map(|&p| next() as u32 % p).collect();
        assert_eq!(
            BigInt::from(narrow.combine(&r).unwrap()),
            wide.combine(&r).unwrap()
        );
    }
    assert!(wide.combine(&[0, 0]).is_err());
    assert!(WideCrt::new(&[moduli[0], moduli[0]]).is_err());
}

#[test]
fn the_committed_model_takes_the_fewest_channels_each_kind_of_batch_allows() {
    let model = Model::parse(MNIST_MODEL).unwrap();
    // Its interval bounds (57 bits) are tighter than its own worst case (64 bits).
    let bits = plaintext_bits(&model).unwrap();
    assert_eq!(bits, 57);
    assert!(bits < model.bounds().plaintext_bits());
    assert_eq!(Inputs::of(Packing::NONE), Inputs::Fresh);
    assert_eq!(Inputs::of(Packing::new(4).unwrap()), Inputs::Unpacked);
    let full = NetworkParameters::for_model(&model, Backend::detect()).unwrap();
    let packed =
        NetworkParameters::for_inputs(&model, Inputs::Unpacked, Backend::detect()).unwrap();
    // Full batches: the two smallest primes that hold 57 bits keep the margin; unpacking
    // costs a few bits that two channels do not have, and three smaller primes do.
    assert_eq!(full.channels().len(), 2);
    assert_eq!(packed.channels().len(), 3);
    assert!(EvaluationPlan::with_inputs(&full, &model, Inputs::Fresh).is_ok());
    assert!(EvaluationPlan::with_inputs(&full, &model, Inputs::Unpacked).is_err());
    assert!(EvaluationPlan::with_inputs(&packed, &model, Inputs::Unpacked).is_ok());
    for params in [&full, &packed] {
        assert!(params.plaintext_bits() > bits as f64);
        assert_eq!(params.channels()[0].ring_id(), full.channels()[0].ring_id());
    }
}

/// The largest sum of a hidden unit's |weights| in the first dense layer.
fn largest_dense1_weight_sum(model: &Model) -> u64 {
    let features = model.maps() * CONV_SIDE * CONV_SIDE;
    (0..model.hidden())
        .map(|u| {
            (0..features)
                .map(|f| model.dense1_weight(u, f).unsigned_abs())
                .sum::<u64>()
        })
        .max()
        .unwrap()
}

#[test]
fn the_first_dense_layer_scales_its_outputs_where_p_holds_its_sums_and_each_square_otherwise() {
    // The committed model at its parameters: its hidden units' |weights| sum to at most 1141
    // (10.2 bits), within the square level's 13.6 bits of headroom, so the first dense layer
    // can sum the squares' unscaled tensors (`run_packed` checks both choices exact on every
    // backend). No keys here: the aarch64 tests run under emulation.
    let model = Model::parse(MNIST_MODEL).unwrap();
    let params = NetworkParameters::for_model(&model, Backend::detect()).unwrap();
    let plan = EvaluationPlan::new(&params, &model).unwrap();
    assert_eq!(largest_dense1_weight_sum(&model), 1141);
    for p in params.channels() {
        let headroom = p.tensor_sum_headroom(plan.square_level);
        assert!((13.0..14.0).contains(&headroom), "{headroom}");
        assert!(1141f64.log2() < headroom);
        assert_eq!(p.tensor_sum_headroom(p.max_level() + 1), f64::NEG_INFINITY);
    }
    // 10-bit weights on the small model: sums of about 2^15.4, within the half-word sums; at
    // n = 4096 (14.9 bits of headroom) every square is scaled on its own even where the sums
    // are wanted, at n = 1024 (16.6 bits) they are summed where the backend's sums are cheap.
    let bytes = tiny_model_with(10);
    let model = Model::parse(&bytes).unwrap();
    let log2_sum = (largest_dense1_weight_sum(&model) as f64).log2();
    assert!(log2_sum < 16.0, "{log2_sum}");
    let primes = crt_primes(model.bounds().plaintext_bits(), 4096).unwrap();
    let large = NetworkParameters::insecure_for_tests(4096, 5, &primes, Backend::detect()).unwrap();
    let small = toy_params(&model, 5, Backend::detect());
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    for (params, fits) in [(&large, false), (&small, true)] {
        let secret = SecretKey::generate(&params.channels()[0], &mut rng);
        let keys = EvaluationKeys::generate(params, &secret, 1, &mut rng).unwrap();
        let evaluator = NetworkEvaluator::new(params, &model, &keys).unwrap();
        let square_level = evaluator.plan().square_level;
        let cheap = params.channels()[0].backend().cheap_pair_sums();
        for p in params.channels() {
            let headroom = p.tensor_sum_headroom(square_level);
            assert_eq!(log2_sum < headroom, fits, "{log2_sum} {headroom}");
            assert_eq!(evaluator.sums_tensors(p, square_level), fits && cheap);
        }
        let forced = evaluator.forcing_tensor_sums(true);
        for p in params.channels() {
            assert_eq!(forced.sums_tensors(p, square_level), fits);
        }
    }
    let images = random_images(3, 17);
    let expected: Vec<[i128; CLASSES]> = images.iter().map(|i| model.logits(i).unwrap()).collect();
    let (logits, _, budget) = run(&small, &model, &images);
    assert_eq!(logits, expected);
    assert!(budget > 0);
}
