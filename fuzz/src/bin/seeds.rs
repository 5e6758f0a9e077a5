//! Writes the seed corpus of every fuzz target into `corpus/<target>/`: valid files of each
//! format (under the fuzzing parameters, plus the committed model and the real parameters),
//! so that mutations start past the magic and length checks.

use std::borrow::Cow;
use std::path::Path;

use cryptonets_core::Backend;
use cryptonets_core::bfv::Parameters;
use cryptonets_core::network::{INPUTS, NetworkParameters, Packing};
use cryptonets_fuzz::{N, eval_keys, image_batch, params, secret, tiny_model};
use cryptonets_host::pipeline::{BatchFile, BatchHeader, BatchKind, BatchRecord};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn main() {
    let p = params();
    let channel = &p.channels()[0];

    write("model", "tiny", &tiny_model());
    let committed = std::fs::read("../models/cryptonets-mnist.cnmd").expect("committed model");
    write("model", "committed", &committed);

    // Version 2: the tiny model converted, and a small network of every layer kind (the
    // committed network, 100 times larger, would spend the time on its interval bounds).
    let general = cryptonets_core::model::polynomial::PolynomialNetwork::parse(&tiny_model())
        .expect("the tiny model as version 2");
    write("network", "tiny", &general.to_bytes());
    write(
        "network",
        "small",
        &cryptonets_fuzz::small_network().to_bytes(),
    );

    // ONNX: PyTorch's own exports (the small ones, weights inline; a dynamo graph whose
    // weights are external, which bytes alone cannot resolve; two refused networks).
    for name in [
        "two_conv_bn.legacy.onnx",
        "rgb32.legacy.onnx",
        "two_conv_bn.dynamo.onnx",
        "refused_relu.legacy.onnx",
        "refused_maxpool.legacy.onnx",
    ] {
        let bytes = std::fs::read(Path::new("../train/fixtures/onnx").join(name))
            .expect("committed ONNX fixture");
        write("onnx", name, &bytes);
    }

    write("secret_key", "key", &secret().to_bytes(channel));

    write("parameters", "fuzz", &channel.to_bytes());
    let real = NetworkParameters::new(8192, 5, &[4079617, 4046849, 3850241], Backend::detect())
        .expect("real parameters");
    write("parameters", "cryptonets", &real.channels()[0].to_bytes());
    let plain = Parameters::builder()
        .degree(4096)
        .ciphertext_prime_sizes(30, 3)
        .plaintext_modulus(40961)
        .build()
        .expect("n = 4096 parameters");
    write("parameters", "no-special", &plain.to_bytes());

    write("eval_keys", "packing-2", &eval_keys().to_bytes(p));

    // Single-image keys: relinearization and two Galois keys, one truncated.
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let relin = cryptonets_core::bfv::RelinearizationKey::new(channel, secret(), &mut rng)
        .expect("relinearization key");
    let galois = [3usize, 9]
        .into_iter()
        .map(|g| {
            let key = cryptonets_core::bfv::GaloisKey::new(channel, secret(), g, &mut rng)
                .expect("Galois key");
            (g, key)
        })
        .collect();
    let single = cryptonets_core::network::single::SingleKeys {
        relin: Some(relin),
        galois,
    };
    write("single_keys", "keys", &single.to_bytes(p));

    // The device profile of the committed model's single-image plan.
    let network = cryptonets_core::model::polynomial::PolynomialNetwork::parse(&committed)
        .expect("the committed model as version 2");
    let planned = cryptonets_core::network::single::PlannedSingle::new(&network, Backend::detect())
        .expect("the committed model's single-image plan");
    write(
        "device_profile",
        "committed",
        &cryptonets_core::network::single::DeviceProfile::new(&planned, &network).to_bytes(),
    );

    // Seeded ciphertexts under two primes, plain and compressed.
    let two = cryptonets_fuzz::two_prime_params();
    let two_secret = cryptonets_core::bfv::SecretKey::generate(two, &mut rng);
    let m = cryptonets_core::bfv::BatchEncoder::new(two)
        .encode(&[1, 2, 3])
        .expect("slots");
    let seeded = two_secret
        .encrypt_seeded(two, &m, &mut rng)
        .expect("encrypt");
    write("seeded", "plain", &seeded.to_bytes(two));
    write(
        "seeded",
        "compressed",
        &seeded.compress(two).expect("compress").to_bytes(two),
    );

    // Bundles: uploads and results of two channels.
    let bundle = |kind, per| cryptonets_host::bundle::Bundle {
        kind,
        id: [9; 16],
        objects: vec![vec![vec![vec![1, 2, 3, 4]; per]; 2]; 3],
    };
    write(
        "bundle",
        "uploads",
        &bundle(cryptonets_host::bundle::UPLOADS, 1).to_bytes(),
    );
    write(
        "bundle",
        "results",
        &bundle(cryptonets_host::bundle::RESULTS, 2).to_bytes(),
    );

    let packed = image_batch(1, Packing::new(16).expect("16"));
    write("batch", "packed-16", &packed);

    // Logits: ten fresh ciphertexts a channel.
    let batch = BatchFile::from_bytes(&packed, BatchKind::Images).expect("valid batch");
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let items = p
        .channels()
        .iter()
        .flat_map(|c| {
            let encoder = cryptonets_core::bfv::BatchEncoder::new(c);
            let m = encoder.encode(&[7; 4]).expect("slots");
            (0..10)
                .map(|_| {
                    secret()
                        .encrypt(c, &m, &mut rng)
                        .expect("encrypt")
                        .to_bytes(c)
                })
                .collect::<Vec<_>>()
        })
        .map(Cow::Owned)
        .collect();
    let logits = BatchFile {
        header: BatchHeader {
            kind: BatchKind::Logits,
            ..batch.header.clone()
        },
        items,
    };
    write("logits", "fresh", &logits.to_bytes());

    write(
        "record",
        "record",
        BatchRecord::of(&batch, Some(0)).to_json().as_bytes(),
    );

    // IDX: a split byte, then 3 images and their labels.
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28];
    images.extend((0..3 * INPUTS).map(|i| (i % 256) as u8));
    let labels = [0, 0, 8, 1, 0, 0, 0, 3, 4, 2, 9];
    let split = (images.len() * 255).div_ceil(images.len() + labels.len()) as u8;
    let mut idx = vec![split];
    idx.extend(&images);
    idx.extend(labels);
    write("idx", "three", &idx);
    eprintln!("seeds written to corpus/ (n = {N})");
}
