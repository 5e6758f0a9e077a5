//! NTT and pointwise-kernel benches, one series per backend this CPU runs.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cryptonets_benches::ntt_setup;
use cryptonets_core::{Backend, Kernels};

fn transforms(c: &mut Criterion) {
    for (name, inverse) in [("ntt_forward", false), ("ntt_inverse", true)] {
        let mut group = c.benchmark_group(name);
        for n in [4096, 8192, 16384] {
            let (_, table, mut poly) = ntt_setup(n);
            group.throughput(Throughput::Elements(n as u64));
            for backend in Backend::available() {
                group.bench_function(BenchmarkId::new(backend.name(), n), |b| {
                    b.iter(|| {
                        if inverse {
                            backend.inverse_ntt(black_box(&mut poly), &table)
                        } else {
                            backend.forward_ntt(black_box(&mut poly), &table)
                        }
                    })
                });
            }
        }
        group.finish();
    }
}

fn pointwise(c: &mut Criterion) {
    let n = 8192;
    let (modulus, _, poly) = ntt_setup(n);
    let other: Vec<u32> = poly.iter().rev().copied().collect();
    let mut group = c.benchmark_group("pointwise_8192");
    group.throughput(Throughput::Elements(n as u64));
    for backend in Backend::available() {
        let mut acc = poly.clone();
        group.bench_function(BenchmarkId::new("mul", backend.name()), |b| {
            b.iter(|| backend.mul_assign(black_box(&mut acc), &other, &modulus))
        });
        group.bench_function(BenchmarkId::new("mul_acc", backend.name()), |b| {
            b.iter(|| backend.mul_acc(black_box(&mut acc), &poly, &other, &modulus))
        });
        let w = modulus.shoup(12345);
        group.bench_function(BenchmarkId::new("mul_scalar", backend.name()), |b| {
            b.iter(|| backend.mul_scalar_assign(black_box(&mut acc), w, &modulus))
        });
    }
    group.finish();
}

criterion_group!(benches, transforms, pointwise);
criterion_main!(benches);
