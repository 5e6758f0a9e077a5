//! BFV operations at n = 8192, log2 Q <= 218: this crate on every backend the CPU runs, and
//! the `fhe` crate (fhe.rs) side by side on the same degree and plaintext modulus, so that
//! their ratio is measured in one run.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use cryptonets_core::Backend;
// Links the benches library, and with it the allocator the binary uses.
use cryptonets_benches as _;
use cryptonets_core::bfv::{BatchEncoder, Evaluator, GaloisKey, KeyGenerator, Parameters};
use cryptonets_core::network::Packing;
use cryptonets_core::zq::prime::ntt_primes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn plaintext_modulus() -> u32 {
    ntt_primes(20, 8192)
        .next()
        .expect("20-bit prime = 1 mod 16384")
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
}

fn cryptonets(c: &mut Criterion) {
    let mut group = c.benchmark_group("bfv_8192");
    configure(&mut group);
    for backend in Backend::available() {
        let params = Parameters::cryptonets_8192(plaintext_modulus())
            .unwrap()
            .with_backend(backend);
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (sk, pk, rlk) = KeyGenerator::generate(&params, &mut rng);
        let encoder = BatchEncoder::new(&params);
        let pt = encoder
            .encode(&(0..8192).map(|i| i % 97).collect::<Vec<u64>>())
            .unwrap();
        let eval = Evaluator::new(&params);
        let a = sk.encrypt(&params, &pt, &mut rng).unwrap();
        let b = pk.encrypt(&params, &pt, &mut rng).unwrap();
        let product = eval.multiply(&a, &b).unwrap();
        let name = |op: &str| format!("{op}/cryptonets-{backend}");
        group.bench_function(name("keygen"), |bench| {
            bench.iter(|| KeyGenerator::generate(&params, &mut rng))
        });
        group.bench_function(name("encrypt_pk"), |bench| {
            bench.iter(|| pk.encrypt(&params, &pt, &mut rng).unwrap())
        });
        group.bench_function(name("encrypt_sk"), |bench| {
            bench.iter(|| sk.encrypt_seeded(&params, &pt, &mut rng).unwrap())
        });
        group.bench_function(name("decrypt"), |bench| {
            bench.iter(|| sk.decrypt(&params, black_box(&a)).unwrap())
        });
        group.bench_function(name("add"), |bench| {
            bench.iter(|| eval.add(black_box(&a), &b).unwrap())
        });
        group.bench_function(name("mul_scalar"), |bench| {
            bench.iter(|| {
                let mut c = a.clone();
                eval.mul_scalar_assign(&mut c, 37).unwrap();
                c
            })
        });
        group.bench_function(name("multiply"), |bench| {
            bench.iter(|| eval.multiply(black_box(&a), &b).unwrap())
        });
        group.bench_function(name("square"), |bench| {
            bench.iter(|| eval.square(black_box(&a)).unwrap())
        });
        group.bench_function(name("relinearize"), |bench| {
            bench.iter(|| {
                let mut c = product.clone();
                eval.relinearize_assign(&mut c, &rlk).unwrap();
                c
            })
        });
        group.bench_function(name("mod_switch"), |bench| {
            bench.iter(|| {
                let mut c = a.clone();
                eval.mod_switch_to_next_assign(&mut c).unwrap();
                c
            })
        });
    }
    group.finish();
}

/// Galois automorphisms under the network's parameters (five primes of Q and two special
/// primes, 210 bits: Galois keys need the special primes, which the seven-prime preset has no
/// room for): one element, and the three that unpack a batch packed by four, hoisted.
fn galois(c: &mut Criterion) {
    let mut group = c.benchmark_group("bfv_8192");
    configure(&mut group);
    for backend in Backend::available() {
        let params = Parameters::builder()
            .degree(8192)
            .ciphertext_prime_sizes(30, 5)
            .special_primes(2)
            .plaintext_modulus(plaintext_modulus())
            .backend(backend)
            .build()
            .unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (sk, _, _) = KeyGenerator::generate(&params, &mut rng);
        let keys: Vec<GaloisKey> = Packing::new(4)
            .unwrap()
            .elements(8192)
            .into_iter()
            .map(|g| GaloisKey::new(&params, &sk, g, &mut rng).unwrap())
            .collect();
        let refs: Vec<&GaloisKey> = keys.iter().collect();
        let pt = BatchEncoder::new(&params)
            .encode(&(0..8192).map(|i| i % 97).collect::<Vec<u64>>())
            .unwrap();
        let a = sk.encrypt(&params, &pt, &mut rng).unwrap();
        let eval = Evaluator::new(&params);
        group.bench_function(format!("apply_galois/cryptonets-{backend}"), |bench| {
            bench.iter(|| eval.apply_galois(black_box(&a), &keys[0]).unwrap())
        });
        group.bench_function(
            format!("apply_galois_x3_hoisted/cryptonets-{backend}"),
            |bench| bench.iter(|| eval.apply_galois_many(black_box(&a), &refs).unwrap()),
        );
    }
    group.finish();
}

fn fhe_rs(c: &mut Criterion) {
    use fhe::bfv::{
        BfvParametersBuilder, Ciphertext, Encoding, Plaintext, PublicKey, RelinearizationKey,
        SecretKey,
    };
    use fhe_traits::{FheDecrypter, FheEncoder, FheEncrypter};

    let mut group = c.benchmark_group("bfv_8192");
    configure(&mut group);
    // fhe.rs's own choice of primes: four of about 54 bits, 218 bits in all.
    let params = BfvParametersBuilder::new()
        .set_degree(8192)
        .set_plaintext_modulus(plaintext_modulus() as u64)
        .set_moduli_sizes(&[54, 54, 55, 55])
        .build_arc()
        .unwrap();
    let mut rng = rand::rng();
    let sk = SecretKey::random(&params, &mut rng);
    let pk = PublicKey::new(&sk, &mut rng);
    let rk = RelinearizationKey::new(&sk, &mut rng).unwrap();
    let values: Vec<u64> = (0..8192).map(|i| i % 97).collect();
    let pt = Plaintext::try_encode(&values, Encoding::simd(), &params).unwrap();
    let a: Ciphertext = sk.try_encrypt(&pt, &mut rng).unwrap();
    let b: Ciphertext = pk.try_encrypt(&pt, &mut rng).unwrap();
    let product = &a * &b;
    group.bench_function("encrypt_pk/fhe.rs", |bench| {
        bench.iter(|| -> Ciphertext { pk.try_encrypt(&pt, &mut rng).unwrap() })
    });
    group.bench_function("encrypt_sk/fhe.rs", |bench| {
        bench.iter(|| -> Ciphertext { sk.try_encrypt(&pt, &mut rng).unwrap() })
    });
    group.bench_function("decrypt/fhe.rs", |bench| {
        bench.iter(|| sk.try_decrypt(black_box(&a)).unwrap())
    });
    group.bench_function("add/fhe.rs", |bench| bench.iter(|| black_box(&a) + &b));
    group.bench_function("multiply/fhe.rs", |bench| bench.iter(|| black_box(&a) * &b));
    group.bench_function("square/fhe.rs", |bench| bench.iter(|| black_box(&a) * &a));
    group.bench_function("relinearize/fhe.rs", |bench| {
        bench.iter(|| {
            let mut c = product.clone();
            rk.relinearizes(&mut c).unwrap();
            c
        })
    });
    // fhe.rs's row rotation (the Galois element 2n - 1), its nearest equivalent.
    let ek = fhe::bfv::EvaluationKeyBuilder::new(&sk)
        .unwrap()
        .enable_row_rotation()
        .unwrap()
        .build(&mut rng)
        .unwrap();
    group.bench_function("apply_galois/fhe.rs", |bench| {
        bench.iter(|| ek.rotates_rows(black_box(&a)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, cryptonets, galois, fhe_rs);
criterion_main!(benches);
