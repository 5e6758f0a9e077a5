//! The single-image mode on the committed CryptoNets model: the service's evaluation of one
//! image's ciphertext in one CRT channel (one thread; `cryptonets run --mode single` runs
//! the channels in parallel), and the owner's encryption and decryption of it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use cryptonets_core::Backend;
// Links the benches library, and with it the allocator the binary uses.
use cryptonets_benches as _;
use cryptonets_core::bfv::SecretKey;
use cryptonets_core::model::polynomial::PolynomialNetwork;
use cryptonets_core::network::single::{
    PlannedSingle, SingleEvaluator, SingleKeys, decode_single_outputs, encode_single_input,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn single(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/cryptonets-mnist.cnmd"
    );
    let network = PolynomialNetwork::parse(&std::fs::read(path).expect("committed model"))
        .expect("valid model");
    let backend = Backend::detect();
    let planned = PlannedSingle::new(&network, backend).expect("a single-image plan");
    let (params, plan) = (&planned.params, &planned.plan);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let p = &params.channels()[0];
    let secret = SecretKey::generate(p, &mut rng);
    let keys = SingleKeys::generate(params, plan, &secret, &mut rng).expect("keys");
    let evaluator = SingleEvaluator::new(params, plan, &keys).expect("evaluator");
    let image: Vec<u8> = (0..784).map(|i| (i * 37 % 256) as u8).collect();
    let inputs: Vec<_> = params
        .channels()
        .iter()
        .map(|p| {
            let m = encode_single_input(p, plan, &network, &image).expect("encode");
            let seeded = secret.encrypt_seeded(p, &m, &mut rng).expect("encrypt");
            seeded
                .compress(p)
                .expect("compress")
                .expand(p)
                .expect("expand")
        })
        .collect();
    let outputs: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(c, ct)| evaluator.evaluate_channel(c, ct).expect("evaluate"))
        .collect();

    let mut group = c.benchmark_group("single_image");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function(format!("eval_one_channel/cryptonets-{backend}"), |bench| {
        bench.iter(|| evaluator.evaluate_channel(0, black_box(&inputs[0])))
    });
    group.bench_function(
        format!("encrypt_one_channel/cryptonets-{backend}"),
        |bench| {
            bench.iter(|| {
                let m = encode_single_input(p, plan, &network, black_box(&image)).expect("encode");
                let seeded = secret.encrypt_seeded(p, &m, &mut rng).expect("encrypt");
                seeded.compress(p).expect("compress").to_bytes(p)
            })
        },
    );
    group.bench_function(format!("decrypt/cryptonets-{backend}"), |bench| {
        bench.iter(|| decode_single_outputs(params, &secret, plan, black_box(&outputs)))
    });
    group.finish();
}

criterion_group!(benches, single);
criterion_main!(benches);
