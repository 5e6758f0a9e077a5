//! NTT, pointwise and linear-layer kernel benches, one series per backend this CPU runs.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cryptonets_benches::ntt_setup;
use cryptonets_core::backend::PairRows;
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

/// The half-word sums of the linear layers, shaped as the committed model's: a convolution
/// window (5 maps, 15 pairs of rows) and a block of the first dense layer (100 units, 213
/// pairs), over one 512-column block, single-threaded.
fn linear_sums(c: &mut Criterion) {
    let width = 512;
    let (modulus, _, poly) = ntt_setup(8192);
    // Packed halves and weight pairs as `linear::pack_pairs` and `linear::weight_pair` lay
    // them out: 16-bit halves below 2^15, signed 16-bit weights.
    let row = |r: usize| -> Vec<u32> {
        (0..width)
            .map(|c| poly[(r * 131 + c * 7) % poly.len()] & 0x7fff_7fff)
            .collect()
    };
    let weight_row = |o: usize, pairs: usize, scale: i32| -> Vec<u32> {
        (0..pairs)
            .map(|p| {
                let w = |k: usize| ((o * 31 + p * 17 + k * 5) % 61) as i32 - 30;
                let (a, b) = (w(0) * scale, w(1) * scale);
                (a as i16 as u16 as u32) | (b as i16 as u16 as u32) << 16
            })
            .collect()
    };
    for (name, outputs, pairs, scale) in [("window", 5, 15, 64), ("dense", 100, 213, 1)] {
        // Each half's pairs in one buffer, a cache line apart past their columns, as the
        // evaluator packs them: the dense layer passes them strided, a window as a list.
        let stride = width + 16;
        let packed = |first: usize| -> Vec<u32> {
            (0..pairs)
                .flat_map(|p| row(first + p).into_iter().chain([0; 16]))
                .collect()
        };
        let (low, high) = (packed(0), packed(pairs));
        let (low_rows, high_rows): (Vec<&[u32]>, Vec<&[u32]>) = (
            low.chunks_exact(stride).map(|r| &r[..width]).collect(),
            high.chunks_exact(stride).map(|r| &r[..width]).collect(),
        );
        let rows = |words: &'static str| match (name, words) {
            ("dense", "low") => PairRows::Strided {
                words: &low,
                stride,
            },
            ("dense", _) => PairRows::Strided {
                words: &high,
                stride,
            },
            (_, "low") => PairRows::Listed(&low_rows),
            _ => PairRows::Listed(&high_rows),
        };
        let weights: Vec<Vec<u32>> = (0..outputs).map(|o| weight_row(o, pairs, scale)).collect();
        // Pair-major, as the kernel takes them: pair p's weights of every output side by side.
        let weights: Vec<u32> = (0..pairs)
            .flat_map(|p| weights.iter().map(move |w| w[p]))
            .collect();
        let mut group = c.benchmark_group(format!("{name}_sums_512"));
        group.throughput(Throughput::Elements((outputs * pairs * 2 * width) as u64));
        for backend in Backend::available() {
            let mut lo_sums = vec![vec![1u32 << 31; width]; outputs];
            let mut hi_sums = lo_sums.clone();
            let mut outs = vec![vec![0u32; width]; outputs];
            // As the evaluator runs them: half sums started at 2^31, then joined mod q.
            group.bench_function(backend.name(), |b| {
                b.iter(|| {
                    for (sums, rows) in [(&mut lo_sums, rows("low")), (&mut hi_sums, rows("high"))]
                    {
                        let mut accs: Vec<&mut [u32]> =
                            sums.iter_mut().map(|s| s.as_mut_slice()).collect();
                        accs.iter_mut().for_each(|s| s.fill(1 << 31));
                        backend.pair_weighted_sum(&mut accs, rows, &weights);
                    }
                    for ((out, lo), hi) in outs.iter_mut().zip(&lo_sums).zip(&hi_sums) {
                        backend.join_halves(out, lo, hi, &modulus);
                    }
                    black_box(&outs);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, transforms, pointwise, linear_sums);
criterion_main!(benches);
