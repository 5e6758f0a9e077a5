//! The single-image mode against plaintext inference, on every backend, one thread and
//! many, with the noise plan held against the budgets measured after every step.

use std::vec;
use std::vec::Vec;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::plan::{SingleLayout, SinglePlan, SingleStep};
use super::*;
use crate::Backend;
use crate::Error;
use crate::bfv::{BatchEncoder, Ciphertext, Evaluator, GaloisKey, SecretKey, SeededCiphertext};
use crate::model::polynomial::tests::{random_network, xorshift};
use crate::model::polynomial::{Layer, PolynomialNetwork, Shape, Window};
use crate::network::{NetworkParameters, crt_primes};

/// Toy parameters (n = 1024, below 128-bit security): 8 ciphertext primes, 2 special.
fn toy(network: &PolynomialNetwork, backend: Backend) -> NetworkParameters {
    let primes = crt_primes(network.plaintext_bits(), 1024).unwrap();
    NetworkParameters::insecure_for_tests(1024, 8, &primes, backend).unwrap()
}

/// One image through the mode: (logits, output ciphertext bytes, per-step measured and
/// estimated budgets of channel 0).
#[allow(clippy::type_complexity)]
fn run_one(
    params: &NetworkParameters,
    plan: &SinglePlan,
    network: &PolynomialNetwork,
    image: &[u8],
    seed: u64,
) -> (Vec<num_bigint::BigInt>, Vec<Vec<u8>>, Vec<(u32, f64)>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    let keys = SingleKeys::generate(params, plan, &secret, &mut rng).unwrap();
    let evaluator = SingleEvaluator::new(params, plan, &keys).unwrap();
    let mut outputs = Vec::new();
    let mut steps = Vec::new();
    for (c, p) in params.channels().iter().enumerate() {
        let m = encode_single_input(p, plan, network, image).unwrap();
        let mut seeded = secret.encrypt_seeded(p, &m, &mut rng).unwrap();
        if plan.compressed_input {
            seeded = seeded.compress(p).unwrap();
        }
        let bytes = seeded.to_bytes(p);
        let input = SeededCiphertext::from_bytes(p, &bytes)
            .unwrap()
            .expand(p)
            .unwrap();
        let out = evaluator
            .evaluate_channel_observed(c, &input, |i, parts| {
                if c == 0 {
                    let measured = parts
                        .iter()
                        .map(|ct| secret.noise_budget(p, ct).unwrap())
                        .min()
                        .unwrap();
                    steps.push((measured, plan.steps[i].budget_bits));
                }
            })
            .unwrap();
        assert!(out.iter().all(|ct| ct.level() == plan.output_level()));
        outputs.push(out);
    }
    let (logits, _) = decode_single_outputs(params, &secret, plan, &outputs).unwrap();
    let bytes = outputs
        .iter()
        .zip(params.channels())
        .flat_map(|(o, p)| o.iter().map(|ct| ct.to_bytes(p)))
        .collect();
    (logits, bytes, steps)
}

#[test]
fn rotation_elements_move_column_c_plus_r_to_column_c() {
    for n in [1024, 8192] {
        let columns = column_slots(n);
        let half = n / 2;
        assert_eq!(columns.len(), half);
        // Every slot of the first row once.
        let mut seen = columns.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), half);
        for r in [1, 2, 7, half - 1] {
            let g = rotation_element(n, r);
            for c in (0..half).step_by(61) {
                // The result's slot of column c holds the input's slot of column c + r.
                assert_eq!(
                    crate::bfv::galois_slot(n, g, columns[c] as usize),
                    columns[(c + r) % half] as usize,
                    "n {n}, r {r}, c {c}"
                );
            }
        }
        assert_eq!(rotation_element(n, 0), 1);
        assert_eq!(rotation_element(n, half), 1);
    }
}

#[test]
fn random_networks_are_exact_one_image_at_a_time_on_every_backend() {
    let (mut ran, mut refused) = (0, 0);
    let mut kinds = [0usize; 5];
    for seed in 0..80u64 {
        let Some(network) = random_network(seed) else {
            continue;
        };
        if network.plaintext_bits() > 110 {
            continue;
        }
        let layout = match SingleLayout::new(&network, 1024) {
            Ok(l) => l,
            Err(Error::InvalidParameters { .. }) => {
                refused += 1;
                continue;
            }
            Err(e) => panic!("{seed}: {e}"),
        };
        let mut next = xorshift(seed + 1);
        let image: Vec<u8> = (0..network.input().len()).map(|_| next() as u8).collect();
        let want = network.logits_wide(&image).unwrap();
        let mut reference: Option<Vec<Vec<u8>>> = None;
        for backend in Backend::available() {
            let params = toy(&network, backend);
            let plan = match SinglePlan::new(&params, layout.clone(), seed % 2 == 0) {
                Ok(p) => p,
                Err(Error::InsufficientNoiseBudget { .. }) => {
                    refused += 1;
                    break;
                }
                Err(e) => panic!("{seed}: {e}"),
            };
            let (logits, bytes, steps) = run_one(&params, &plan, &network, &image, seed);
            assert_eq!(logits, want, "seed {seed}, {backend:?}");
            // The measured budget is floored to whole bits.
            for (i, &(measured, estimated)) in steps.iter().enumerate() {
                assert!(
                    estimated <= measured as f64 + 1.0,
                    "seed {seed} step {i}: estimated {estimated}, measured {measured}"
                );
            }
            match &reference {
                None => reference = Some(bytes),
                Some(r) => assert!(r == &bytes, "seed {seed}: {backend:?} differs"),
            }
            ran += 1;
            for step in &layout.steps {
                kinds[match step {
                    SingleStep::Taps(_) => 0,
                    SingleStep::Activation { .. } => 1,
                    SingleStep::Diagonal(_) => 2,
                    SingleStep::Gather(_) => 3,
                    SingleStep::Reshape => 4,
                }] += 1;
            }
        }
    }
    assert!(ran >= 20, "only {ran} evaluations ran ({refused} refused)");
    assert!(
        kinds.iter().all(|&k| k > 0),
        "every kind of step ran: {kinds:?}"
    );
}

/// A small CryptoNets-shaped network: conv 3x3 stride 2 (padded) -> square -> dense ->
/// (x + 1)^2 -> dense, on a 1 x 9 x 9 input.
fn small_cnn() -> PolynomialNetwork {
    let mut next = xorshift(5);
    let mut w = |count: usize, range: u64| -> Vec<i16> {
        (0..count)
            .map(|_| (next() % range) as i16 - (range / 2) as i16)
            .collect()
    };
    let conv_out = 3 * 5 * 5;
    let layers = vec![
        Layer::Conv2d {
            out_channels: 3,
            window: Window {
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1, 1, 1],
            },
            weights: w(27, 15),
            biases: vec![1, -2, 3],
        },
        Layer::Polynomial {
            coefficients: [0, 0, 1, 0],
        },
        Layer::Flatten,
        Layer::Dense {
            outputs: 12,
            weights: w(12 * conv_out, 9),
            biases: (0..12).map(|b| b as i128 - 6).collect(),
        },
        Layer::Polynomial {
            coefficients: [1, 2, 1, 0],
        },
        Layer::Dense {
            outputs: 4,
            weights: w(48, 9),
            biases: vec![0, 5, -5, 1],
        },
    ];
    let input = Shape {
        channels: 1,
        height: 9,
        width: 9,
    };
    PolynomialNetwork::new(input, 15, layers).unwrap()
}

#[test]
fn the_layout_is_taps_then_diagonals_then_a_gather_with_few_keys() {
    let network = small_cnn();
    let layout = SingleLayout::new(&network, 1024).unwrap();
    let kinds: Vec<&str> = layout
        .steps
        .iter()
        .map(|s| match s {
            SingleStep::Taps(_) => "taps",
            SingleStep::Activation { .. } => "act",
            SingleStep::Diagonal(_) => "diag",
            SingleStep::Gather(_) => "gather",
            SingleStep::Reshape => "reshape",
        })
        .collect();
    assert_eq!(kinds, ["taps", "act", "reshape", "diag", "act", "gather"]);
    // The second activation's constant moves into the gather's bias.
    assert!(matches!(
        layout.steps[4],
        SingleStep::Activation {
            drop_constant: true,
            ..
        }
    ));
    let SingleStep::Taps(taps) = &layout.steps[0] else {
        unreachable!()
    };
    // Stride 2: two phases a dimension, and a 3 x 3 kernel reads 2 x 2 positions of each
    // sub-image: four digits of two values, four keys for the nine taps.
    assert_eq!(taps.tree.digits.len(), 4);
    assert!(taps.tree.digits.iter().all(|d| d.len() == 2 && d[0] == 0));
    assert_eq!(taps.tree.leaves.len(), 9);
    assert_eq!(layout.steps[0].shifts(512).len(), 4);
    // Every leaf's shift is its tap's: base of the sub-image plus its place in the grid.
    let shifts: std::collections::BTreeSet<u32> = (0..9).map(|k| taps.tree.shift(k, 512)).collect();
    assert_eq!(shifts.len(), 9);
    // The owner's layout holds every pixel once.
    let mut pixels: Vec<u32> = layout.input.iter().map(|&(p, _)| p).collect();
    pixels.sort_unstable();
    assert_eq!(pixels, (0..81).collect::<Vec<u32>>());
    let params = toy(&network, Backend::detect());
    let plan = SinglePlan::new(&params, layout, true).unwrap();
    // Horner's rule: a diagonal layer keys its babies and +-b, a gather its babies, b and -K.
    assert!(plan.keys.len() <= 3 + 3 + 30, "{:?}", plan.keys);
    let mut next = xorshift(9);
    for k in 0..3 {
        let image: Vec<u8> = (0..81).map(|_| next() as u8).collect();
        let (logits, _, _) = run_one(&params, &plan, &network, &image, k);
        assert_eq!(logits, network.logits_wide(&image).unwrap());
    }
}

#[cfg(feature = "parallel")]
#[test]
fn parallel_evaluation_is_bit_identical_to_one_thread() {
    let network = small_cnn();
    let params = toy(&network, Backend::detect());
    let plan = SinglePlan::new(&params, SingleLayout::new(&network, 1024).unwrap(), false).unwrap();
    let image: Vec<u8> = (0..81u32).map(|i| (i * 29 % 256) as u8).collect();
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    let one = pool(1).install(|| run_one(&params, &plan, &network, &image, 3).1);
    let four = pool(4).install(|| run_one(&params, &plan, &network, &image, 3).1);
    assert!(one == four);
}

#[test]
fn compressed_uploads_drop_a_limb_and_decrypt_the_same() {
    let network = small_cnn();
    let params = toy(&network, Backend::detect());
    let p = &params.channels()[0];
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let secret = SecretKey::generate(p, &mut rng);
    let values: Vec<u64> = (0..1024).map(|i| i % 97).collect();
    let m = BatchEncoder::new(p).encode(&values).unwrap();
    let seeded = secret.encrypt_seeded(p, &m, &mut rng).unwrap();
    let full = seeded.to_bytes(p);
    let compressed = seeded.clone().compress(p).unwrap();
    assert_eq!(compressed.dropped_limbs(), 1);
    let bytes = compressed.to_bytes(p);
    assert_eq!(bytes.len(), p.compressed_ciphertext_bytes());
    assert!(bytes.len() < full.len());
    let parsed = SeededCiphertext::from_bytes(p, &bytes).unwrap();
    assert_eq!(parsed, compressed);
    let ct: Ciphertext = parsed.expand(p).unwrap();
    assert_eq!(ct.level(), p.max_level());
    assert_eq!(
        BatchEncoder::new(p).decode(&secret.decrypt(p, &ct).unwrap()),
        values
    );
    // About 25 bits of budget go to the correction (q / 2 against a fresh error).
    let fresh = secret.noise_budget(p, &seeded.expand(p).unwrap()).unwrap();
    let budget = secret.noise_budget(p, &ct).unwrap();
    assert!(
        budget + 30 >= fresh && budget + 20 <= fresh,
        "{budget} of {fresh}"
    );
    // Twice, or hostile lengths and levels, are refused.
    assert!(compressed.clone().compress(p).is_err());
    assert!(SeededCiphertext::from_bytes(p, &bytes[..bytes.len() - 1]).is_err());
    for (at, value) in [(16, 0u8), (16, 99), (17, 0), (17, 2)] {
        let mut bad = bytes.clone();
        bad[at] = value;
        assert!(
            SeededCiphertext::from_bytes(p, &bad).is_err(),
            "{at} = {value}"
        );
    }
}

#[test]
fn keys_of_another_plan_or_level_are_refused_before_any_work() {
    let network = small_cnn();
    let params = toy(&network, Backend::detect());
    let plan = SinglePlan::new(&params, SingleLayout::new(&network, 1024).unwrap(), false).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    let keys = SingleKeys::generate(&params, &plan, &secret, &mut rng).unwrap();
    assert!(SingleEvaluator::new(&params, &plan, &keys).is_ok());
    // A missing key.
    let mut missing = keys.clone();
    let first = *missing.galois.keys().next().unwrap();
    missing.galois.remove(&first);
    assert!(SingleEvaluator::new(&params, &plan, &missing).is_err());
    // A key truncated below its planned level.
    let (&g, &level) = plan.keys.iter().find(|&(_, &l)| l > 1).unwrap();
    let mut low = keys.clone();
    let p = &params.channels()[0];
    let truncated = GaloisKey::new(p, &secret, g, &mut rng)
        .unwrap()
        .truncated(p, level - 1)
        .unwrap();
    low.galois.insert(g, truncated);
    assert!(SingleEvaluator::new(&params, &plan, &low).is_err());
    // No relinearization key.
    let mut no_relin = keys.clone();
    no_relin.relin = None;
    assert!(SingleEvaluator::new(&params, &plan, &no_relin).is_err());
    // Keys of other parameters (another ring).
    let other = NetworkParameters::insecure_for_tests(
        1024,
        7,
        &params.plaintext_primes(),
        Backend::detect(),
    )
    .unwrap();
    let other_secret = SecretKey::generate(&other.channels()[0], &mut rng);
    let other_plan =
        SinglePlan::new(&other, SingleLayout::new(&network, 1024).unwrap(), false).unwrap();
    let other_keys = SingleKeys::generate(&other, &other_plan, &other_secret, &mut rng).unwrap();
    assert!(SingleEvaluator::new(&params, &plan, &other_keys).is_err());
    // Diagonals encoded once are shared, and refused under other parameters.
    let shared = EncodedDiagonals::new(&params, &plan).unwrap();
    assert!(shared.bytes() > 0);
    assert!(SingleEvaluator::with_diagonals(&params, &plan, &keys, &shared).is_ok());
    let foreign = EncodedDiagonals::new(&other, &other_plan).unwrap();
    assert!(SingleEvaluator::with_diagonals(&params, &plan, &keys, &foreign).is_err());
    // A ciphertext of another channel or level is refused by the evaluator.
    let evaluator = SingleEvaluator::new(&params, &plan, &keys).unwrap();
    let image = vec![7u8; 81];
    let m = encode_single_input(p, &plan, &network, &image).unwrap();
    let mut ct = secret.encrypt(p, &m, &mut rng).unwrap();
    assert!(evaluator.evaluate_channel(1, &ct).is_err());
    Evaluator::new(p)
        .mod_switch_to_next_assign(&mut ct)
        .unwrap();
    assert!(evaluator.evaluate_channel(0, &ct).is_err());
    assert!(encode_single_input(p, &plan, &network, &image[1..]).is_err());
}

#[test]
fn wide_layers_are_refused_with_a_reason() {
    // 600 inputs do not fit a row of 512 columns at n = 1024.
    let network = PolynomialNetwork::new(
        Shape::vector(600),
        1,
        vec![Layer::Dense {
            outputs: 2,
            weights: vec![1; 1200],
            biases: vec![0, 0],
        }],
    )
    .unwrap();
    assert!(matches!(
        SingleLayout::new(&network, 1024),
        Err(Error::InvalidParameters { .. })
    ));
    assert!(SingleLayout::new(&network, 8192).is_ok());
}

#[test]
fn the_planner_takes_the_smallest_ring_that_holds_the_network() {
    // One dense layer: no multiplication, n = 4096 holds it.
    let linear = PolynomialNetwork::new(
        Shape::vector(100),
        15,
        vec![Layer::Dense {
            outputs: 10,
            weights: (0..1000).map(|i| (i % 13) as i16 - 6).collect(),
            biases: vec![3; 10],
        }],
    )
    .unwrap();
    let planned = plan::PlannedSingle::new(&linear, Backend::detect()).unwrap();
    assert_eq!(planned.params.degree(), 4096);
    // Two squares do not fit n = 4096's 109 bits: the CryptoNets shape takes 8192.
    let planned = plan::PlannedSingle::new(&small_cnn(), Backend::detect()).unwrap();
    assert_eq!(planned.params.degree(), 8192);
    // Within the 128-bit bound, special primes included.
    let c = &planned.params.channels()[0];
    let total = c.log_q() + c.special_basis().map_or(0.0, |s| s.log2());
    assert!(total <= crate::bfv::max_log_q_128(c.degree()).unwrap() as f64);
}

#[test]
fn a_device_profile_encodes_and_encrypts_as_the_owner_does_without_the_model() {
    // The CryptoNets shape: n = 8192, compressed uploads.
    let network = small_cnn();
    let planned = plan::PlannedSingle::new(&network, Backend::detect()).unwrap();
    let profile = DeviceProfile::new(&planned, &network);
    let bytes = profile.to_bytes();
    let parsed = DeviceProfile::from_bytes(&bytes).unwrap();
    assert_eq!(parsed, profile);
    let image: Vec<u8> = (0..network.input().len())
        .map(|i| (i * 37 % 256) as u8)
        .collect();
    let secret_seed = [7u8; 32];
    let mut owner_rng = ChaCha20Rng::from_seed([9; 32]);
    let mut device_rng = ChaCha20Rng::from_seed([9; 32]);
    let owner_secret = SecretKey::generate(
        &planned.params.channels()[0],
        &mut ChaCha20Rng::from_seed(secret_seed),
    );
    let n = profile.n;
    let mut scratch = crate::bfv::LimbScratch::new(n);
    // The microcontroller's path: the key from its seed, no tables, n words of message.
    let mut key = alloc::vec![0i8; n];
    crate::sampling::ternary(&mut ChaCha20Rng::from_seed(secret_seed), &mut key);
    let mut compact_rng = ChaCha20Rng::from_seed([9; 32]);
    let mut compact_scratch = crate::bfv::CompactScratch::new(n, true);
    let mut m_words = alloc::vec![0u32; n];
    for (c, p) in planned.params.channels().iter().enumerate() {
        // A host device: one channel's parameters, built from the profile alone.
        let dp = parsed
            .channel(c, Backend::Portable(Default::default()))
            .unwrap();
        assert_eq!(dp.id(), p.id());
        let device_secret = SecretKey::generate(&dp, &mut ChaCha20Rng::from_seed(secret_seed));
        let m = parsed.encode(&dp, &image).unwrap();
        assert_eq!(
            m,
            encode_single_input(p, &planned.plan, &network, &image).unwrap()
        );
        let mut upload = Vec::new();
        device_secret
            .encrypt_compressed_by_limb(&dp, &m, &mut device_rng, &mut scratch, |b| {
                upload.extend_from_slice(b);
                Ok::<(), Error>(())
            })
            .unwrap();
        // The owner on a host: the same bytes.
        let seeded = owner_secret.encrypt_seeded(p, &m, &mut owner_rng).unwrap();
        assert_eq!(upload, seeded.compress(p).unwrap().to_bytes(p));
        // A microcontroller: the same plaintext and bytes from the table-free channel.
        let compact = parsed.compact_channel(c).unwrap();
        assert_eq!(compact.id(), p.id());
        parsed.encode_into(&compact, &image, &mut m_words).unwrap();
        assert_eq!(m_words, m.coefficients);
        let mut compact_upload = Vec::new();
        compact
            .encrypt(
                &key,
                &m_words,
                true,
                &mut compact_rng,
                &mut compact_scratch,
                |b: &[u8]| {
                    compact_upload.extend_from_slice(b);
                    Ok::<(), Error>(())
                },
            )
            .unwrap();
        assert_eq!(compact_upload, upload, "channel {c}");
    }
    assert!(
        parsed
            .compact_channel(parsed.plaintext_primes.len())
            .is_err()
    );
    // A profile built by hand with a pixel precision no network has is refused.
    let mut coarse = parsed.clone();
    coarse.input_levels = 0;
    let compact = coarse.compact_channel(0).unwrap();
    assert!(coarse.encode_into(&compact, &image, &mut m_words).is_err());
    let params = coarse.channel(0, Backend::detect()).unwrap();
    assert!(coarse.encode(&params, &image).is_err());
    // Read from bytes: the levels' word follows the primes and the ids.
    let at = 24
        + (profile.q_primes.len() + profile.special_primes.len()) * 4
        + profile.plaintext_primes.len() * 12;
    assert_eq!(
        bytes[at..at + 4],
        u32::from(profile.input_levels).to_le_bytes()
    );
    for levels in [0u32, 256] {
        let mut bad = bytes.clone();
        bad[at..at + 4].copy_from_slice(&levels.to_le_bytes());
        assert!(DeviceProfile::from_bytes(&bad).is_err(), "{levels} levels");
    }
    assert!(
        parsed
            .encode_into(
                &parsed.compact_channel(0).unwrap(),
                &image[1..],
                &mut m_words
            )
            .is_err()
    );
    // Hostile profiles: every truncation, and counts or entries out of range, are refused.
    for k in 0..bytes.len() {
        assert!(DeviceProfile::from_bytes(&bytes[..k]).is_err(), "{k}");
    }
    for (at, value) in [
        (4, 1u8),
        (5, 2),
        (6, 0),
        (7, 3),
        (8, 3),
        (12, 0),
        (13, 1),
        (16, 0),
    ] {
        let mut bad = bytes.clone();
        bad[at] = value;
        assert!(DeviceProfile::from_bytes(&bad).is_err(), "{at} = {value}");
    }
    let mut bad = bytes.clone();
    let last = bad.len() - 4;
    bad[last..].copy_from_slice(&(n as u32).to_le_bytes());
    assert!(
        DeviceProfile::from_bytes(&bad).is_err(),
        "a column past the slot row"
    );
    let mut other = profile.clone();
    other.channel_ids[0] ^= 1;
    assert!(other.channel(0, Backend::detect()).is_err());
    assert!(other.compact_channel(0).is_err());
    // Primes that are not the plan's: refused by the id, or as primes, on both paths.
    for change in [1u32, 2 * n as u32] {
        for list in 0..2 {
            let mut other = profile.clone();
            let primes = [&mut other.q_primes, &mut other.special_primes][list].as_mut_slice();
            primes[0] = primes[0].wrapping_sub(change);
            assert!(
                other.channel(0, Backend::detect()).is_err(),
                "{list} {change}"
            );
            assert!(other.compact_channel(0).is_err(), "{list} {change}");
        }
    }
}
