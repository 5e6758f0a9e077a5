//! `cryptonets bench`: medians of repeated runs, printed as text or JSON lines.

use std::time::Instant;

use clap::{Args, Subcommand};
use cryptonets_core::zq::prime::ntt_primes;
use cryptonets_core::{Kernels, Modulus, NttTable};
use serde::Serialize;

mod batch;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Forward and inverse negacyclic NTT of one RNS limb, per backend.
    Ntt(NttArgs),
    /// BFV operations on the CryptoNets preset (n = 8192, log2 Q = 210).
    He(HeArgs),
    /// One encrypted batch of the CryptoNets model, evaluated repeatedly: the median time of
    /// every step (parse, seed expansion, the network's phases, serialization).
    Batch(batch::BatchArgs),
}

#[derive(Debug, Args)]
pub(crate) struct HeArgs {
    /// Size in bits of the plaintext modulus t (the largest such prime is used).
    #[arg(long, default_value_t = 20)]
    t_bits: u32,
    /// Timed samples per operation; the median is reported.
    #[arg(long, default_value_t = 11)]
    samples: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct HeReport {
    backend: &'static str,
    n: usize,
    log_q: f64,
    q_primes: usize,
    t_bits: u32,
    keygen_us: f64,
    encrypt_pk_us: f64,
    encrypt_sk_us: f64,
    decrypt_us: f64,
    add_us: f64,
    mul_scalar_us: f64,
    multiply_us: f64,
    square_us: f64,
    relinearize_us: f64,
    mod_switch_us: f64,
    /// Under the network's parameters (see [`galois`]).
    galois: GaloisReport,
}

/// Galois automorphisms: one Galois key's generation, one automorphism with key switching,
/// and the three of a batch packed by four on one ciphertext, hoisted.
#[derive(Debug, Serialize)]
struct GaloisReport {
    q_primes: usize,
    special_primes: usize,
    keygen_us: f64,
    apply_us: f64,
    apply_three_hoisted_us: f64,
}

#[derive(Debug, Args)]
pub(crate) struct NttArgs {
    /// Ring degrees to measure.
    #[arg(long, value_delimiter = ',', default_value = "8192")]
    n: Vec<usize>,
    /// Size in bits of the prime (at most 30).
    #[arg(long, default_value_t = 30)]
    prime_bits: u32,
    /// Timed samples per measurement; the median is reported.
    #[arg(long, default_value_t = 31)]
    samples: usize,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct NttReport {
    backend: &'static str,
    n: usize,
    prime: u32,
    prime_bits: u32,
    forward_ns: f64,
    inverse_ns: f64,
    /// n * prime_bits / forward_ns: throughput independent of the prime size.
    forward_coefficient_bits_per_ns: f64,
}

/// Median time per call of `f`, in nanoseconds. Each sample times enough calls to last
/// about a millisecond, so timer resolution does not matter.
pub(crate) fn median_ns(samples: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-9);
    let calls = ((1e-3 / once).ceil() as usize).clamp(1, 100_000);
    for _ in 0..calls {
        f(); // warm caches and clocks
    }
    let mut times: Vec<f64> = (0..samples.max(1))
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                f();
            }
            start.elapsed().as_secs_f64() * 1e9 / calls as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

pub(crate) fn run(command: BenchCommand, backend: Option<&str>) -> Result<(), String> {
    match command {
        BenchCommand::Ntt(args) => ntt(&args, backend),
        BenchCommand::He(args) => he(&args, backend),
        BenchCommand::Batch(args) => batch::batch(&args, backend),
    }
}

fn ntt(args: &NttArgs, backend: Option<&str>) -> Result<(), String> {
    let backends = crate::selected_backends(backend)?;
    for &n in &args.n {
        let prime = ntt_primes(args.prime_bits, n)
            .next()
            .ok_or_else(|| format!("no {}-bit prime = 1 mod {}", args.prime_bits, 2 * n))?;
        let modulus = Modulus::new(prime).map_err(|e| e.to_string())?;
        let table = NttTable::new(modulus, n).map_err(|e| e.to_string())?;
        let mut data: Vec<u32> = (0..n as u64)
            .map(|i| (i * 2_654_435_761 % prime as u64) as u32)
            .collect();
        for backend in &backends {
            let forward_ns = median_ns(args.samples, || backend.forward_ntt(&mut data, &table));
            let inverse_ns = median_ns(args.samples, || backend.inverse_ntt(&mut data, &table));
            let bits = modulus.bits();
            let report = NttReport {
                backend: backend.name(),
                n,
                prime,
                prime_bits: bits,
                forward_ns,
                inverse_ns,
                forward_coefficient_bits_per_ns: (n as f64 * bits as f64) / forward_ns,
            };
            if args.json {
                crate::print_json(&report)?;
            } else {
                println!(
                    "{:>8}  n = {:>5}  {}-bit prime: forward {:>9.0} ns  inverse {:>9.0} ns  ({:.2} coefficient-bits/ns)",
                    report.backend,
                    n,
                    bits,
                    forward_ns,
                    inverse_ns,
                    report.forward_coefficient_bits_per_ns
                );
            }
        }
    }
    Ok(())
}

/// Galois automorphisms under the network's parameters (five primes of Q, two special ones:
/// the seven-prime preset leaves no room for special primes).
fn galois(args: &HeArgs, backend: cryptonets_core::Backend) -> Result<GaloisReport, String> {
    use cryptonets_core::bfv::{BatchEncoder, Evaluator, GaloisKey, Parameters, SecretKey};
    use cryptonets_core::network::Packing;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    let t = ntt_primes(args.t_bits, 8192)
        .next()
        .ok_or("no such plaintext prime")?;
    let params = Parameters::builder()
        .degree(8192)
        .ciphertext_prime_sizes(30, 5)
        .special_primes(2)
        .plaintext_modulus(t)
        .backend(backend)
        .build()
        .map_err(|e| e.to_string())?;
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let sk = SecretKey::generate(&params, &mut rng);
    let keys = Packing::new(4)
        .map_err(|e| e.to_string())?
        .elements(8192)
        .into_iter()
        .map(|g| GaloisKey::new(&params, &sk, g, &mut rng))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let refs: Vec<&GaloisKey> = keys.iter().collect();
    let pt = BatchEncoder::new(&params)
        .encode(&[1, 2, 3])
        .map_err(|e| e.to_string())?;
    let a = sk
        .encrypt(&params, &pt, &mut rng)
        .map_err(|e| e.to_string())?;
    let eval = Evaluator::new(&params);
    let us = |f: &mut dyn FnMut()| median_ns(args.samples, f) / 1e3;
    Ok(GaloisReport {
        q_primes: params.max_level(),
        special_primes: 2,
        keygen_us: us(&mut || drop(GaloisKey::new(&params, &sk, 3, &mut rng))),
        apply_us: us(&mut || drop(eval.apply_galois(&a, &keys[0]))),
        apply_three_hoisted_us: us(&mut || drop(eval.apply_galois_many(&a, &refs))),
    })
}

fn he(args: &HeArgs, backend: Option<&str>) -> Result<(), String> {
    use cryptonets_core::bfv::{BatchEncoder, Evaluator, KeyGenerator, Parameters};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    let backend = crate::selected_backend(backend)?;
    let t = ntt_primes(args.t_bits, 8192)
        .next()
        .ok_or("no such plaintext prime")?;
    let params = Parameters::cryptonets_8192(t)
        .map_err(|e| e.to_string())?
        .with_backend(backend);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let us = |f: &mut dyn FnMut()| median_ns(args.samples, f) / 1e3;
    let keygen_us = us(&mut || drop(KeyGenerator::generate(&params, &mut rng)));
    let (sk, pk, rlk) = KeyGenerator::generate(&params, &mut rng);
    let encoder = BatchEncoder::new(&params);
    let values: Vec<u64> = (0..8192).map(|i| i % 100).collect();
    let pt = encoder.encode(&values).map_err(|e| e.to_string())?;
    let eval = Evaluator::new(&params);
    let a = sk
        .encrypt(&params, &pt, &mut rng)
        .map_err(|e| e.to_string())?;
    let b = pk
        .encrypt(&params, &pt, &mut rng)
        .map_err(|e| e.to_string())?;
    let product = eval.multiply(&a, &b).map_err(|e| e.to_string())?;
    let report = HeReport {
        backend: backend.name(),
        n: params.degree(),
        log_q: (params.log_q() * 100.0).round() / 100.0,
        q_primes: params.max_level(),
        t_bits: params.plaintext_modulus().bits(),
        keygen_us,
        encrypt_pk_us: us(&mut || drop(pk.encrypt(&params, &pt, &mut rng))),
        encrypt_sk_us: us(&mut || drop(sk.encrypt_seeded(&params, &pt, &mut rng))),
        decrypt_us: us(&mut || drop(sk.decrypt(&params, &a))),
        add_us: us(&mut || drop(eval.add(&a, &b))),
        mul_scalar_us: us(&mut || {
            let mut c = a.clone();
            eval.mul_scalar_assign(&mut c, 37).expect("same parameters");
        }),
        multiply_us: us(&mut || drop(eval.multiply(&a, &b))),
        square_us: us(&mut || drop(eval.square(&a))),
        relinearize_us: us(&mut || {
            let mut c = product.clone();
            eval.relinearize_assign(&mut c, &rlk).expect("size 3");
        }),
        mod_switch_us: us(&mut || {
            let mut c = a.clone();
            eval.mod_switch_to_next_assign(&mut c).expect("level 7");
        }),
        galois: galois(args, backend)?,
    };
    if args.json {
        crate::print_json(&report)?;
    } else {
        println!("{report:#?}");
    }
    Ok(())
}
