//! `cryptonets bench`: medians of repeated runs, printed as text or JSON lines.

use std::time::Instant;

use clap::{Args, Subcommand};
use cryptonets_core::zq::prime::ntt_primes;
use cryptonets_core::{Kernels, Modulus, NttTable};
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Forward and inverse negacyclic NTT of one RNS limb, per backend.
    Ntt(NttArgs),
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
                println!(
                    "{}",
                    serde_json::to_string(&report).map_err(|e| e.to_string())?
                );
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
