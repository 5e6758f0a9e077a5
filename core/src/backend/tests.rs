//! Every backend against schoolbook and naive-evaluation references and bit-exact against
//! the portable backend.

use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::ntt::bit_reverse;
use crate::zq::prime::ntt_primes;

fn xorshift(seed: u64) -> impl FnMut() -> u32 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 16) as u32
    }
}

/// Every backend this CPU runs, plus its AVX-512 backend without the AMX kernels and without
/// the VNNI ones where it has them (a CPU without them takes those paths).
fn backend_variants() -> Vec<Backend> {
    let available = Backend::available().into_iter();
    #[cfg(target_arch = "x86_64")]
    let without = Backend::available().into_iter().flat_map(|b| match b {
        Backend::Avx512(avx512) => [
            avx512.has_amx().then(|| avx512.without_amx()),
            avx512.has_vnni().then(|| avx512.without_vnni()),
        ]
        .into_iter()
        .flatten()
        .map(Backend::Avx512)
        .collect(),
        _ => Vec::new(),
    });
    #[cfg(not(target_arch = "x86_64"))]
    let without = core::iter::empty();
    available.chain(without).collect()
}

/// The name of a backend variant in test messages.
fn variant_name(backend: &Backend) -> std::string::String {
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512(avx512) => std::format!(
            "avx512{}{}",
            if avx512.has_vnni() { "+vnni" } else { "" },
            if avx512.has_amx() { "+amx" } else { "" }
        ),
        other => std::string::ToString::to_string(other.name()),
    }
}

fn random_poly(n: usize, q: u32, seed: u64) -> Vec<u32> {
    let mut next = xorshift(seed);
    (0..n).map(|_| next() % q).collect()
}

/// Inputs that sit on the edges of every lazy range.
fn edge_polys(n: usize, q: u32) -> Vec<Vec<u32>> {
    std::vec![
        std::vec![0; n],
        std::vec![q - 1; n],
        (0..n).map(|i| if i % 2 == 0 { q - 1 } else { 0 }).collect(),
        (0..n).map(|i| [0, 1, q - 1, q / 2, q - 2][i % 5]).collect(),
    ]
}

/// The moduli the tests cover: the largest and a mid-range 30-bit prime, and a small
/// plaintext-sized prime.
fn test_moduli(n: usize) -> Vec<Modulus> {
    let mut primes: Vec<u32> = ntt_primes(30, n).take(1).collect();
    primes.extend(ntt_primes(29, n).nth(5));
    primes.extend(ntt_primes(18, n).next());
    primes
        .into_iter()
        .map(|q| Modulus::new(q).unwrap())
        .collect()
}

fn schoolbook_negacyclic(a: &[u32], b: &[u32], m: &Modulus) -> Vec<u32> {
    let n = a.len();
    let q = m.value() as u64;
    let mut out = std::vec![0u64; n];
    for (i, &x) in a.iter().enumerate() {
        for (j, &y) in b.iter().enumerate() {
            let p = x as u64 * y as u64 % q;
            let k = (i + j) % n;
            out[k] = if i + j < n {
                (out[k] + p) % q
            } else {
                (out[k] + q - p) % q
            };
        }
    }
    out.into_iter().map(|x| x as u32).collect()
}

fn naive_forward(a: &[u32], m: &Modulus, psi: u32) -> Vec<u32> {
    let n = a.len();
    let bits = n.trailing_zeros();
    (0..n)
        .map(|i| {
            let x = m.pow(psi, 2 * bit_reverse(i, bits) as u64 + 1);
            // Horner evaluation of a at x.
            a.iter().rev().fold(0, |acc, &c| m.add(m.mul(acc, x), c))
        })
        .collect()
}

#[test]
fn every_backend_matches_naive_references() {
    for backend in Backend::available() {
        for n in [128, 256, 512] {
            for m in test_moduli(n) {
                let table = NttTable::new(m, n).unwrap();
                let (a, b) = (random_poly(n, m.value(), 1), random_poly(n, m.value(), 2));
                let mut fa = a.clone();
                backend.forward_ntt(&mut fa, &table);
                assert_eq!(
                    fa,
                    naive_forward(&a, &m, table.psi()),
                    "{backend} forward n={n}"
                );
                let mut fb = b.clone();
                backend.forward_ntt(&mut fb, &table);
                backend.mul_assign(&mut fa, &fb, &m);
                backend.inverse_ntt(&mut fa, &table);
                assert_eq!(
                    fa,
                    schoolbook_negacyclic(&a, &b, &m),
                    "{backend} product n={n}"
                );
            }
        }
    }
}

#[test]
fn every_backend_is_bit_exact_with_portable_and_round_trips() {
    let portable = Backend::Portable(Portable);
    for backend in Backend::available() {
        for n in [128, 256, 1024, 4096, 8192, 32768] {
            for m in test_moduli(n) {
                let table = NttTable::new(m, n).unwrap();
                let mut inputs = edge_polys(n, m.value());
                inputs.push(random_poly(n, m.value(), n as u64));
                for input in inputs {
                    let (mut ours, mut reference) = (input.clone(), input.clone());
                    backend.forward_ntt(&mut ours, &table);
                    portable.forward_ntt(&mut reference, &table);
                    assert_eq!(ours, reference, "{backend} forward n={n} q={}", m.value());
                    assert!(ours.iter().all(|&x| x < m.value()));
                    // Out of place, over a buffer that held other words.
                    let mut from = std::vec![u32::MAX; n];
                    backend.forward_ntt_from(&mut from, &input, &table);
                    assert_eq!(from, reference, "{backend} forward out of place n={n}");
                    backend.inverse_ntt(&mut ours, &table);
                    assert_eq!(ours, input, "{backend} inverse(forward) n={n}");
                    // The inverse on its own, from arbitrary (not NTT-produced) input.
                    let (mut ours, mut reference) = (input.clone(), input.clone());
                    backend.inverse_ntt(&mut ours, &table);
                    portable.inverse_ntt(&mut reference, &table);
                    assert_eq!(ours, reference, "{backend} inverse n={n}");
                    // Times a factor: the plain inverse's words, each times it mod q.
                    for factor in [0, 1, 2, m.value() - 1, m.value() / 3] {
                        let mut times = input.clone();
                        backend.inverse_ntt_times(&mut times, &table, factor);
                        let expected: Vec<u32> =
                            reference.iter().map(|&x| m.mul(x, factor)).collect();
                        assert_eq!(times, expected, "{backend} inverse times {factor} n={n}");
                    }
                }
            }
        }
    }
}

/// The halves' packing against its definition, on residues up to 2^30 - 1 and lengths that
/// leave partial vectors.
#[test]
fn pack_pairs_matches_its_definition_on_every_backend() {
    for backend in Backend::available() {
        for len in [0usize, 1, 7, 16, 17, 512, 2053] {
            let a = random_poly(len, 1 << 30, len as u64 + 1);
            let mut b = random_poly(len, 1 << 30, len as u64 + 2);
            b.iter_mut().step_by(5).for_each(|x| *x = (1 << 30) - 1);
            let (mut lo, mut hi) = (std::vec![7u32; len], std::vec![7u32; len]);
            backend.pack_pairs(&mut lo, &mut hi, &a, &b);
            for c in 0..len {
                let (x, y) = (a[c], b[c]);
                assert_eq!(
                    lo[c],
                    (x & 0x7fff) | (y & 0x7fff) << 16,
                    "{backend} lo {len}"
                );
                assert_eq!(hi[c], (x >> 15) | (y >> 15) << 16, "{backend} hi {len}");
            }
        }
    }
}

/// Lengths that leave a scalar remainder after the 8-lane chunks.
#[test]
fn pointwise_kernels_match_scalar_on_edges_and_remainders() {
    for backend in Backend::available() {
        for m in test_moduli(128) {
            let q = m.value();
            for len in [0, 1, 7, 8, 9, 63, 64, 1000] {
                for (sa, sb) in [(3u64, 4u64), (5, 6)] {
                    let mut a = random_poly(len, q, sa);
                    let mut b = random_poly(len, q, sb);
                    let edges = [0, 1, q - 1, q - 2, q / 2];
                    a.iter_mut()
                        .step_by(3)
                        .zip(edges.iter().cycle())
                        .for_each(|(x, &e)| *x = e);
                    b.iter_mut()
                        .step_by(2)
                        .zip(edges.iter().rev().cycle())
                        .for_each(|(x, &e)| *x = e);
                    let c = random_poly(len, q, sa + sb);
                    let expect = |f: &dyn Fn(usize) -> u64| -> Vec<u32> {
                        (0..len).map(|i| f(i) as u32).collect()
                    };
                    let q64 = q as u64;

                    let mut product = a.clone();
                    backend.mul_assign(&mut product, &b, &m);
                    assert_eq!(
                        product,
                        expect(&|i| a[i] as u64 * b[i] as u64 % q64),
                        "{backend} mul"
                    );

                    // The square's tensor in Montgomery form, against u64 products times
                    // (2^32)^-1 mod q.
                    let r_inv = m.inv(((1u64 << 32) % q64) as u32) as u64;
                    let (mut x0, mut x1) = (a.clone(), b.clone());
                    let mut cross = c.clone();
                    backend.square_tensor_montgomery(&mut x0, &mut cross, &mut x1, &m);
                    let montgomery = |x: u64, y: u64| x * y % q64 * r_inv % q64;
                    assert_eq!(
                        (x0, cross, x1),
                        (
                            expect(&|i| montgomery(a[i] as u64, a[i] as u64)),
                            expect(&|i| montgomery(2 * a[i] as u64, b[i] as u64)),
                            expect(&|i| montgomery(b[i] as u64, b[i] as u64)),
                        ),
                        "{backend} square tensor"
                    );

                    let mut acc = c.clone();
                    backend.mul_acc(&mut acc, &a, &b, &m);
                    assert_eq!(
                        acc,
                        expect(&|i| (c[i] as u64 + a[i] as u64 * b[i] as u64) % q64),
                        "{backend} mul_acc"
                    );

                    // scaled_add with x over all of u32 (the message words).
                    let x: Vec<u32> = (0..len)
                        .map(|i| match i % 4 {
                            0 => u32::MAX,
                            1 => 0,
                            _ => c[i].wrapping_mul(2654435761),
                        })
                        .collect();
                    for (w, k, subtract) in [
                        (q - 1, q - 1, true),
                        (a.first().copied().unwrap_or(3), 0, false),
                    ] {
                        let mut sum = a.clone();
                        backend.scaled_add(&mut sum, &x, m.shoup(w), &b, k, subtract, &m);
                        let scaled =
                            |i: usize| (x[i] as u64 * w as u64 + b[i] as u64 + k as u64) % q64;
                        assert_eq!(
                            sum,
                            expect(&|i| if subtract {
                                (scaled(i) + q64 - a[i] as u64) % q64
                            } else {
                                (scaled(i) + a[i] as u64) % q64
                            }),
                            "{backend} scaled_add (subtract: {subtract})"
                        );
                    }

                    for w in [0, 1, q - 1, b.first().copied().unwrap_or(5)] {
                        let mut scaled = a.clone();
                        backend.mul_scalar_assign(&mut scaled, m.shoup(w), &m);
                        assert_eq!(
                            scaled,
                            expect(&|i| a[i] as u64 * w as u64 % q64),
                            "{backend} mul_scalar_assign"
                        );
                        // Out of place, from any word (the Shoup product takes all of u32).
                        let mut out = std::vec![7u32; x.len()];
                        backend.mul_scalar(&mut out, &x, m.shoup(w), &m);
                        assert_eq!(
                            out,
                            expect(&|i| x[i] as u64 * w as u64 % q64),
                            "{backend} mul_scalar"
                        );
                    }
                }
            }
        }
    }
}

/// CI names the backends it expects this machine to exercise; a missing one fails loudly
/// instead of passing with fewer backends tested.
#[test]
fn expected_backends_are_exercised() {
    let available = Backend::available();
    std::eprintln!("backends exercised by these tests: {:?}", available);
    if let Ok(expected) = std::env::var("CRYPTONETS_EXPECT_BACKENDS") {
        for name in expected.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            // "avx512-vnni": the AVX-512 backend with its fused multiply-adds; "avx512-amx":
            // with its AMX-INT8 tiles.
            let runs = |b: &Backend| match (name, b) {
                #[cfg(target_arch = "x86_64")]
                ("avx512-vnni", Backend::Avx512(avx512)) => avx512.has_vnni(),
                #[cfg(target_arch = "x86_64")]
                ("avx512-amx", Backend::Avx512(avx512)) => avx512.has_amx(),
                _ => b.name() == name,
            };
            assert!(
                available.iter().any(runs),
                "CI expects the {name} backend, but this machine cannot run it (available: {available:?})"
            );
        }
    }
}

#[test]
fn backend_selection() {
    assert_eq!(Backend::by_name("portable").unwrap().name(), "portable");
    assert!(matches!(
        Backend::by_name("nope"),
        Err(Error::BackendUnavailable { backend: "unknown" })
    ));
    assert_eq!(Backend::available()[0].name(), "portable");
    assert!(Backend::available().contains(&Backend::detect()));
    #[cfg(target_arch = "aarch64")]
    assert_eq!(Backend::detect().name(), "neon");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_polynomials_agree_across_backends(
        seed in any::<u64>(),
        log_n in 7u32..=10,
        index in 0usize..3,
    ) {
        let n = 1usize << log_n;
        let m = test_moduli(n)[index];
        let table = NttTable::new(m, n).unwrap();
        let a = random_poly(n, m.value(), seed);
        let b = random_poly(n, m.value(), seed ^ 0xabcdef);
        let mut results = Vec::new();
        for backend in Backend::available() {
            let (mut fa, mut fb) = (a.clone(), b.clone());
            backend.forward_ntt(&mut fa, &table);
            backend.forward_ntt(&mut fb, &table);
            backend.mul_assign(&mut fa, &fb, &m);
            backend.inverse_ntt(&mut fa, &table);
            results.push(fa);
        }
        if n <= 128 {
            prop_assert_eq!(&results[0], &schoolbook_negacyclic(&a, &b, &m));
        }
        for r in &results[1..] {
            prop_assert_eq!(r, &results[0]);
        }
    }
}

#[test]
fn dot_montgomery_matches_naive_sums_on_every_backend() {
    let portable = Backend::Portable(Portable);
    for m in test_moduli(128).into_iter().filter(|m| m.bits() == 30) {
        let p = m.value() as u128;
        let r_inv = m.inv(m.montgomery_r().value) as u128;
        for rows_count in 1..=16usize {
            for len in [1, 7, 255, 256, 257, 1000] {
                let mut rows: Vec<Vec<u32>> = (0..rows_count)
                    .map(|r| random_poly(len, 1 << 30, (rows_count * 1000 + r + len) as u64))
                    .collect();
                // The largest values the kernel accepts, to push every accumulator to its bound.
                rows[0]
                    .iter_mut()
                    .step_by(2)
                    .for_each(|x| *x = (1 << 30) - 1);
                let mut weights = random_poly(rows_count, m.value(), rows_count as u64);
                weights[0] = m.value() - 1;
                let views: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
                let expected: Vec<u32> = (0..len)
                    .map(|c| {
                        let sum: u128 = rows
                            .iter()
                            .zip(&weights)
                            .map(|(row, &w)| row[c] as u128 * w as u128)
                            .sum();
                        (sum % p * r_inv % p) as u32
                    })
                    .collect();
                let mut reference = std::vec![0u32; len];
                portable.dot_montgomery(&mut reference, &views, &weights, &m);
                assert_eq!(
                    reference, expected,
                    "portable, {rows_count} rows, len {len}"
                );
                for backend in Backend::available() {
                    let mut out = std::vec![0u32; len];
                    backend.dot_montgomery(&mut out, &views, &weights, &m);
                    assert_eq!(out, expected, "{backend}, {rows_count} rows, len {len}");
                }
            }
        }
    }
}

/// Several outputs at once, each with its own prime and weights, with and without a row of
/// its own: the naive sums, output by output, on every backend (counts of outputs around the
/// vector kernel's eight a pass, rows on both sides of its short reduction, lengths with and
/// without a tail).
#[test]
fn dot_montgomery_outputs_match_naive_sums_on_every_backend() {
    let moduli: Vec<Modulus> = ntt_primes(30, 128)
        .take(9)
        .map(|q| Modulus::new(q).unwrap())
        .collect();
    assert_eq!(moduli.len(), 9, "test primes");
    for shared in [1usize, 5, 11, 12, 15] {
        for with_own in [false, true] {
            for outputs in [1usize, 4, 7, 8, 9] {
                for len in [7usize, 256, 1000] {
                    let seed = (shared * 1000 + outputs * 10 + len) as u64;
                    let mut rows: Vec<Vec<u32>> = (0..shared)
                        .map(|r| random_poly(len, 1 << 30, seed + r as u64))
                        .collect();
                    rows[0]
                        .iter_mut()
                        .step_by(2)
                        .for_each(|x| *x = (1 << 30) - 1);
                    let own: Vec<Vec<u32>> = (0..if with_own { outputs } else { 0 })
                        .map(|j| random_poly(len, 1 << 30, seed + 100 + j as u64))
                        .collect();
                    let per_output = shared + usize::from(with_own);
                    let weights: Vec<Vec<u32>> = (0..outputs)
                        .map(|j| {
                            let mut w =
                                random_poly(per_output, moduli[j].value(), seed + 200 + j as u64);
                            w[0] = moduli[j].value() - 1;
                            w
                        })
                        .collect();
                    let expected: Vec<Vec<u32>> = (0..outputs)
                        .map(|j| {
                            let m = &moduli[j];
                            let p = m.value() as u128;
                            let r_inv = m.inv(m.montgomery_r().value) as u128;
                            (0..len)
                                .map(|c| {
                                    let own_term = own
                                        .get(j)
                                        .map_or(0, |o| o[c] as u128 * weights[j][shared] as u128);
                                    let sum: u128 = rows
                                        .iter()
                                        .zip(&weights[j])
                                        .map(|(row, &w)| row[c] as u128 * w as u128)
                                        .sum::<u128>()
                                        + own_term;
                                    (sum % p * r_inv % p) as u32
                                })
                                .collect()
                        })
                        .collect();
                    let row_views: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
                    let own_views: Vec<&[u32]> = own.iter().map(Vec::as_slice).collect();
                    let weight_views: Vec<&[u32]> = weights.iter().map(Vec::as_slice).collect();
                    for backend in Backend::available() {
                        let mut outs = std::vec![std::vec![0u32; len]; outputs];
                        let mut views: Vec<&mut [u32]> =
                            outs.iter_mut().map(Vec::as_mut_slice).collect();
                        backend.dot_montgomery_outputs(
                            &mut views,
                            &row_views,
                            &own_views,
                            &weight_views,
                            &moduli[..outputs],
                        );
                        assert!(
                            outs == expected,
                            "{backend}: {shared} rows, own {with_own}, {outputs} outputs, len {len}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn dot_pointwise_montgomery_matches_naive_sums_on_every_backend() {
    let portable = Backend::Portable(Portable);
    for m in test_moduli(128).into_iter().filter(|m| m.bits() == 30) {
        let (q, p) = (m.value(), m.value() as u128);
        let r_inv = m.inv(m.montgomery_r().value) as u128;
        for pairs in 1..=16usize {
            for len in [1, 255, 256, 257, 1000] {
                let edge = |seed: u64| {
                    let mut v = random_poly(len, q, seed);
                    v.iter_mut().step_by(3).for_each(|x| *x = q - 1);
                    v
                };
                let a: Vec<Vec<u32>> = (0..pairs).map(|r| edge((pairs * 100 + r) as u64)).collect();
                let b: Vec<Vec<u32>> = (0..pairs)
                    .map(|r| edge((pairs * 100 + r + 50) as u64))
                    .collect();
                let (av, bv): (Vec<&[u32]>, Vec<&[u32]>) = (
                    a.iter().map(Vec::as_slice).collect(),
                    b.iter().map(Vec::as_slice).collect(),
                );
                let expected: Vec<u32> = (0..len)
                    .map(|c| {
                        let sum: u128 = a
                            .iter()
                            .zip(&b)
                            .map(|(x, y)| x[c] as u128 * y[c] as u128)
                            .sum();
                        (sum % p * r_inv % p) as u32
                    })
                    .collect();
                let mut reference = std::vec![0u32; len];
                portable.dot_pointwise_montgomery(&mut reference, &av, &bv, &m);
                assert_eq!(reference, expected, "portable, {pairs} pairs, len {len}");
                for backend in Backend::available() {
                    let mut out = std::vec![0u32; len];
                    backend.dot_pointwise_montgomery(&mut out, &av, &bv, &m);
                    assert_eq!(out, expected, "{backend}, {pairs} pairs, len {len}");
                }
            }
        }
    }
}

#[test]
fn weighted_sum_matches_naive_sums_on_every_backend() {
    for rows_count in [0usize, 1, 3, 4, 5, 9, 25, 64] {
        for len in [1, 7, 511, 512, 513, 1500] {
            let rows: Vec<Vec<u32>> = (0..rows_count)
                .map(|r| {
                    let mut row = random_poly(len, 1 << 30, (rows_count * 7919 + r + len) as u64);
                    // Extremes of the accepted range in every other position.
                    row.iter_mut().step_by(2).for_each(|x| *x = (1 << 30) - 1);
                    row
                })
                .collect();
            let mut next = xorshift(rows_count as u64 + 17);
            let weights: Vec<i32> = (0..rows_count)
                .map(|r| match r % 5 {
                    0 => 1 << 15,
                    1 => -(1 << 15),
                    _ => (next() % (1 << 16)) as i32 - (1 << 15),
                })
                .collect();
            let views: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
            let start: Vec<i64> = (0..len).map(|c| c as i64 * 1_000_003 - 7).collect();
            let expected: Vec<i64> = (0..len)
                .map(|c| {
                    start[c]
                        + rows
                            .iter()
                            .zip(&weights)
                            .map(|(row, &w)| row[c] as i64 * w as i64)
                            .sum::<i64>()
                })
                .collect();
            for backend in Backend::available() {
                let mut acc = start.clone();
                backend.weighted_sum(&mut acc, &views, &weights);
                assert_eq!(acc, expected, "{backend}, {rows_count} rows, len {len}");
            }
        }
    }
}

#[test]
fn pair_weighted_sum_matches_naive_sums_on_every_backend() {
    use super::linear::{pack_pairs, pair_major_weights};
    for rows_count in [2usize, 6, 8, 10, 64] {
        for len in [1, 7, 2048, 2053] {
            let rows: Vec<Vec<u32>> = (0..rows_count)
                .map(|r| {
                    let mut row = random_poly(len, 1 << 30, (rows_count * 31 + r + len) as u64);
                    row.iter_mut().step_by(3).for_each(|x| *x = (1 << 30) - 1);
                    row
                })
                .collect();
            let (mut lo, mut hi) = (Vec::new(), Vec::new());
            for pair in rows.chunks_exact(2) {
                let (mut l, mut h) = (std::vec![0u32; len], std::vec![0u32; len]);
                pack_pairs(&mut l, &mut h, &pair[0], &pair[1]);
                lo.push(l);
                hi.push(h);
            }
            let lo: Vec<&[u32]> = lo.iter().map(Vec::as_slice).collect();
            let hi: Vec<&[u32]> = hi.iter().map(Vec::as_slice).collect();
            // Output counts that fill, split and leave partial tiles (of 6, 4, 2 and 1).
            for outputs in [1usize, 3, 4, 6, 7, 10, 13, 16] {
                let mut next = xorshift((len * 7 + rows_count * 3 + outputs) as u64);
                let weights: Vec<Vec<i32>> = (0..outputs)
                    .map(|o| {
                        (0..rows_count)
                            .map(|r| match (r + o) % 4 {
                                0 => 255,
                                1 => -256,
                                _ => (next() % 512) as i32 - 256,
                            })
                            .collect()
                    })
                    .collect();
                let rows_of_weights: Vec<&[i32]> = weights.iter().map(Vec::as_slice).collect();
                let packed = pair_major_weights(&rows_of_weights);
                let start: Vec<u32> = (0..len).map(|c| (c as i32 - 1000) as u32).collect();
                for backend in backend_variants() {
                    let mut acc_lo: Vec<Vec<u32>> = std::vec![start.clone(); outputs];
                    let mut acc_hi = acc_lo.clone();
                    let mut views: Vec<&mut [u32]> =
                        acc_lo.iter_mut().map(Vec::as_mut_slice).collect();
                    backend.pair_weighted_sum(&mut views, PairRows::Listed(&lo), &packed);
                    let mut views: Vec<&mut [u32]> =
                        acc_hi.iter_mut().map(Vec::as_mut_slice).collect();
                    backend.pair_weighted_sum(&mut views, PairRows::Listed(&hi), &packed);
                    for (o, weights) in weights.iter().enumerate() {
                        for c in 0..len {
                            let expected: i64 = rows
                                .iter()
                                .zip(weights)
                                .map(|(row, &w)| row[c] as i64 * w as i64)
                                .sum();
                            let delta = |acc: &[u32]| acc[c].wrapping_sub(start[c]) as i32 as i64;
                            let got = delta(&acc_hi[o]) * (1 << 15) + delta(&acc_lo[o]);
                            assert_eq!(
                                got, expected,
                                "{backend}, {rows_count} rows, {outputs} outputs, len {len}, \
                                 output {o}, column {c}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The dense layer's shape of [`Kernels::pair_weighted_sum`]: pairs at one stride in one
/// buffer (passed strided and as a list) and weights whose halves fit bytes, the operands the AMX tiles take. Arbitrary
/// pair words, so that both halves' signs count; output and pair counts around the tiles'
/// (16 outputs, 32 pairs) and the passes' (128 outputs, 256 pairs) and below the AMX
/// kernel's least (32 outputs, 64 pairs), and columns past the last whole tile.
#[test]
fn byte_weight_pair_sums_match_the_definition_on_every_backend() {
    for (pairs_count, outputs, len) in [
        (0usize, 3usize, 32usize),
        (1, 1, 16),
        (17, 15, 48),
        (64, 32, 16),
        (65, 33, 37),
        (95, 47, 64),
        (213, 100, 512),
        (600, 129, 48),
    ] {
        let mut next = xorshift((pairs_count * 131 + outputs * 7 + len) as u64);
        let stride = len + 3;
        let buffer: Vec<u32> = (0..pairs_count * stride)
            .map(|i| match i % 11 {
                0 => 0x8000_8000,
                1 => 0x7fff_ffff,
                2 => u32::MAX,
                _ => next() ^ next() << 16,
            })
            .collect();
        let pairs: Vec<&[u32]> = (0..pairs_count)
            .map(|p| &buffer[p * stride..p * stride + len])
            .collect();
        let weights: Vec<Vec<u32>> = (0..outputs)
            .map(|o| {
                (0..pairs_count)
                    .map(|p| {
                        let mut half = |k: usize| match (k + o) % 5 {
                            0 => -128,
                            1 => 127,
                            _ => (next() % 256) as i32 - 128,
                        };
                        super::linear::weight_pair(half(2 * p), half(2 * p + 1))
                    })
                    .collect()
            })
            .collect();
        let pair_major = pair_major(&weights, pairs_count);
        let start: Vec<u32> = (0..len)
            .map(|c| (c as u32).wrapping_mul(0x9e37_79b9))
            .collect();
        let mut expected = std::vec![start.clone(); outputs];
        for (acc, w) in expected.iter_mut().zip(&weights) {
            for (pair, &w) in pairs.iter().zip(w.iter()) {
                for (a, &x) in acc.iter_mut().zip(pair.iter()) {
                    *a = a.wrapping_add(super::linear::madd(x, w));
                }
            }
        }
        let forms = [
            ("listed", PairRows::Listed(&pairs)),
            (
                "strided",
                PairRows::Strided {
                    words: &buffer,
                    stride,
                },
            ),
        ];
        for backend in backend_variants() {
            for (form, rows) in forms {
                let mut accs = std::vec![start.clone(); outputs];
                let mut views: Vec<&mut [u32]> = accs.iter_mut().map(Vec::as_mut_slice).collect();
                backend.pair_weighted_sum(&mut views, rows, &pair_major);
                assert!(
                    accs == expected,
                    "{}: {pairs_count} {form} pairs, {outputs} outputs, {len} columns",
                    variant_name(&backend)
                );
            }
        }
    }
}

/// Weight pairs given output by output (`rows[o][p]`) in the kernels' pair-major layout.
fn pair_major(rows: &[Vec<u32>], pairs: usize) -> Vec<u32> {
    (0..pairs)
        .flat_map(|p| rows.iter().map(move |w| w[p]))
        .collect()
}

/// The AMX kernel takes at least 32 outputs and 64 pairs whose weights' halves fit bytes,
/// wherever the pairs lie, and declines the others (the callers then take the VNNI path,
/// tested above), touching nothing.
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_pair_sums_take_byte_weights_in_dense_shapes_only() {
    use super::vector::amx;
    if !amx::available() {
        super::vector::lane_tests::unavailable("avx512-amx");
        return;
    }
    let len = 64;
    let buffer: Vec<u32> = (0..70 * len as u32)
        .map(|i| i.wrapping_mul(0x0101_0101))
        .collect();
    let strided: Vec<&[u32]> = buffer.chunks_exact(len).collect();
    let mut scattered: Vec<&[u32]> = strided.clone();
    scattered.swap(3, 40);
    let weights = |w: u32, outputs: usize| std::vec![std::vec![w; 70]; outputs];
    let byte = super::linear::weight_pair(-128, 127);
    let wide = super::linear::weight_pair(128, 1);
    for (pairs, weights, taken) in [
        (&strided[..], weights(byte, 32), true),
        (&scattered[..], weights(byte, 33), true),
        (&strided[..], weights(wide, 32), false),
        (&strided[..], weights(byte, 31), false),
        (&strided[..63], weights(byte, 32), false),
    ] {
        let outputs = weights.len();
        let pair_major = pair_major(&weights, pairs.len());
        let start = std::vec![7u32; len];
        let mut accs = std::vec![start.clone(); outputs];
        let mut views: Vec<&mut [u32]> = accs.iter_mut().map(Vec::as_mut_slice).collect();
        assert_eq!(
            amx::pair_weighted_sum(&mut views, PairRows::Listed(pairs), &pair_major),
            taken,
            "{} pairs, {outputs} outputs",
            pairs.len()
        );
        let mut expected = std::vec![start.clone(); outputs];
        if taken {
            for (acc, w) in expected.iter_mut().zip(&weights) {
                for (pair, &w) in pairs.iter().zip(w.iter()) {
                    for (a, &x) in acc.iter_mut().zip(pair.iter()) {
                        *a = a.wrapping_add(super::linear::madd(x, w));
                    }
                }
            }
        }
        assert_eq!(accs, expected);
    }
}

#[test]
fn join_halves_matches_naive_values_on_every_backend() {
    let edges = [
        0u32,
        1,
        (1 << 31) - 1,
        1 << 31,
        (1 << 31) + 1,
        u32::MAX - 1,
        u32::MAX,
    ];
    for m in test_moduli(64) {
        for len in [1usize, 7, 8, 49, 2053] {
            let mut next = xorshift(len as u64 * 131 + m.value() as u64);
            let (low, high): (Vec<u32>, Vec<u32>) = (0..len)
                .map(|c| match c % 3 {
                    0 => (edges[c % edges.len()], edges[(c / 3) % edges.len()]),
                    _ => (next(), next()),
                })
                .unzip();
            for backend in Backend::available() {
                let mut out = std::vec![u32::MAX; len];
                backend.join_halves(&mut out, &low, &high, &m);
                for c in 0..len {
                    let value =
                        (high[c] as i128 - (1 << 31)) * (1 << 15) + low[c] as i128 - (1 << 31);
                    assert_eq!(
                        out[c] as i128,
                        value.rem_euclid(m.value() as i128),
                        "{backend} q {} len {len} column {c}",
                        m.value()
                    );
                }
            }
        }
    }
}

#[test]
fn lift_centered_matches_naive_lifts_on_every_backend() {
    // The ciphertext primes: 30 bits, so that a centered residue of one fits every other.
    let moduli: Vec<Modulus> = ntt_primes(30, 64)
        .take(3)
        .map(|q| Modulus::new(q).unwrap())
        .collect();
    for from in &moduli {
        for to in &moduli {
            let (f, t) = (from.value(), to.value());
            for len in [1usize, 7, 16, 33, 1000] {
                let mut next = xorshift((len as u64) << 32 | f as u64 ^ t as u64);
                let edges = [0, 1, f / 2 - 1, f / 2, f / 2 + 1, f - 2, f - 1];
                let input: Vec<u32> = (0..len)
                    .map(|i| {
                        if i % 2 == 0 {
                            edges[(i / 2) % edges.len()]
                        } else {
                            next() % f
                        }
                    })
                    .collect();
                for backend in Backend::available() {
                    let mut out = std::vec![u32::MAX; len];
                    backend.lift_centered(&mut out, &input, from, to);
                    for (i, (&o, &x)) in out.iter().zip(&input).enumerate() {
                        let centered = if x > f / 2 {
                            x as i64 - f as i64
                        } else {
                            x as i64
                        };
                        assert_eq!(
                            o as i64,
                            centered.rem_euclid(t as i64),
                            "{backend} from {f} to {t} len {len} index {i}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn wrap_counts_match_scalar_sums_on_every_backend() {
    let moduli = test_moduli(64);
    let reciprocals: Vec<f64> = moduli.iter().map(|q| 1.0 / q.value() as f64).collect();
    for len in [1usize, 7, 256, 257, 1000] {
        let rows: Vec<Vec<u32>> = moduli
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let mut row = random_poly(len, q.value(), (len * 3 + i) as u64);
                row.iter_mut().step_by(4).for_each(|x| *x = q.value() - 1);
                row
            })
            .collect();
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let expected: Vec<u32> = (0..len)
            .map(|c| {
                let mut sum = 0.5f64;
                for (row, &r) in rows.iter().zip(&reciprocals) {
                    sum += row[c] as i32 as f64 * r;
                }
                sum as i32 as u32
            })
            .collect();
        // The counts themselves: within one of the exact sum's floor.
        for (c, &v) in expected.iter().enumerate() {
            let exact: f64 = rows
                .iter()
                .zip(&moduli)
                .map(|(row, q)| row[c] as f64 / q.value() as f64)
                .sum();
            assert!(
                (v as f64 - exact).abs() <= 0.5 + 1e-9,
                "column {c}: {v} vs {exact}"
            );
        }
        for backend in Backend::available() {
            let mut v = std::vec![u32::MAX; len];
            backend.wrap_counts(&mut v, &refs, &reciprocals);
            assert_eq!(v, expected, "{backend} len {len}");
        }
    }
}

#[test]
fn fraction_sums_round_exactly_on_every_backend() {
    use num_bigint::BigUint;
    let limit = (1u32 << 30) - 1;
    for (rows, len) in [(1usize, 1usize), (5, 300), (12, 257), (16, 256)] {
        // Extremes first (every limb and row at its largest, so that each limb's sum and its
        // carries reach their bounds), then random values.
        let values: Vec<Vec<u32>> = (0..rows)
            .map(|i| {
                let mut row = random_poly(len, limit, (rows * 7 + i) as u64);
                row[0] = limit;
                if len > 1 {
                    row[1] = 0;
                }
                row
            })
            .collect();
        let fractions: Vec<[u32; dot::FRACTION_LIMBS]> = (0..rows)
            .map(|i| match i % 3 {
                0 => [limit; dot::FRACTION_LIMBS],
                1 => core::array::from_fn(|l| if l == 0 { 1 << 29 } else { 0 }),
                _ => core::array::from_fn(|l| random_poly(1, limit, (i * 4 + l) as u64)[0]),
            })
            .collect();
        let refs: Vec<&[u32]> = values.iter().map(Vec::as_slice).collect();
        // floor(1/2 + sum x_i F_i / 2^bits) with big integers.
        let bits = 30 * dot::FRACTION_LIMBS as u32;
        let expected: Vec<u64> = (0..len)
            .map(|c| {
                let mut sum = BigUint::from(1u8) << (bits - 1);
                for (row, f) in values.iter().zip(&fractions) {
                    let big_f = f.iter().fold(BigUint::from(0u8), |acc, &l| {
                        (acc << 30u32) + BigUint::from(l)
                    });
                    sum += big_f * BigUint::from(row[c]);
                }
                let r: BigUint = sum >> bits;
                r.to_u64_digits().first().copied().unwrap_or(0)
            })
            .collect();
        for backend in Backend::available() {
            let (mut low, mut high) = (std::vec![u32::MAX; len], std::vec![u32::MAX; len]);
            backend.fraction_sums(&mut low, &mut high, &refs, &fractions);
            for c in 0..len {
                let got = low[c] as u64 | (high[c] as u64) << 30;
                assert!(low[c] < 1 << 30, "{backend}: low half in range");
                assert_eq!(got, expected[c], "{backend}: {rows} rows, column {c}");
            }
        }
    }
}

/// The parser's 30-bit unpacking on every backend against a bit-by-bit reading: residues below
/// q come out and pass; q or 2^30 - 1 at any place of a vector's chunk come out as they are
/// and fail the check. Counts that leave the vector kernels a scalar tail.
#[test]
fn unpacking_30_bit_residues_matches_a_bit_reader_on_every_backend() {
    let pack = |values: &[u32]| {
        let mut bytes = std::vec![0u8; values.len() / 8 * 30];
        for (i, &v) in values.iter().enumerate() {
            for b in 0..30 {
                let bit = 30 * i + b;
                bytes[bit / 8] |= ((v >> b & 1) as u8) << (bit % 8);
            }
        }
        bytes
    };
    let q = test_moduli(1024)[0];
    assert_eq!(q.bits(), 30);
    for backend in Backend::available() {
        for count in [8usize, 16, 24, 40, 8192] {
            let values = random_poly(count, q.value(), count as u64);
            let mut out = std::vec![u32::MAX; count];
            assert!(
                backend.unpack_30_bit(&mut out, &pack(&values), &q),
                "{backend}"
            );
            assert_eq!(out, values, "{backend}: {count} residues");
            for place in (0..count.min(40)).chain([count - 1]) {
                for bad in [q.value(), (1 << 30) - 1] {
                    let mut with_bad = values.clone();
                    with_bad[place] = bad;
                    let mut out = std::vec![0u32; count];
                    let ok = backend.unpack_30_bit(&mut out, &pack(&with_bad), &q);
                    assert!(!ok, "{backend}: {bad} at {place} of {count} passed");
                    assert_eq!(out, with_bad, "{backend}: {bad} at {place} of {count}");
                }
            }
        }
    }
}
