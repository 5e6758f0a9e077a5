//! BFV against plaintext arithmetic, a big-integer reference, and across backends.

use std::vec::Vec;

use num_bigint::{BigInt, BigUint};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::*;

/// n = 4096 with three 30-bit primes (90 bits, within the 109 allowed) and an 18-bit t.
fn small_params(backend: Backend) -> Parameters {
    small_params_with_t(backend, ntt_primes(18, 4096).next().unwrap())
}

/// [`small_params`] with plaintext modulus `t`.
fn small_params_with_t(backend: Backend, t: u32) -> Parameters {
    Parameters::builder()
        .degree(4096)
        .ciphertext_prime_sizes(30, 3)
        .plaintext_modulus(t)
        .backend(backend)
        .build()
        .unwrap()
}

fn random_slots(rng: &mut ChaCha20Rng, n: usize, t: u32) -> Vec<u64> {
    (0..n).map(|_| (rng.next_u32() % t) as u64).collect()
}

#[test]
fn parameters_enforce_the_security_bound() {
    let t = ntt_primes(20, 8192).next().unwrap();
    let preset = Parameters::cryptonets_8192(t).unwrap();
    assert!(
        preset.log_q() <= 218.0 && preset.log_q() > 200.0,
        "{}",
        preset.log_q()
    );
    let too_big = Parameters::builder()
        .degree(8192)
        .ciphertext_prime_sizes(30, 8)
        .plaintext_modulus(t)
        .build();
    assert!(matches!(too_big, Err(Error::InvalidParameters { .. })));
    let bad_t = Parameters::builder()
        .degree(8192)
        .ciphertext_prime_sizes(30, 3)
        .plaintext_modulus(12289)
        .build();
    assert!(bad_t.is_err(), "12289 is not 1 mod 16384");
    let bad_n = Parameters::builder()
        .degree(3000)
        .ciphertext_prime_sizes(30, 3)
        .plaintext_modulus(t)
        .build();
    assert!(bad_n.is_err());
    assert_eq!(max_log_q_128(16384), Some(438));
}

#[test]
fn encrypt_decrypt_and_linear_operations_on_every_backend() {
    for backend in Backend::available() {
        let params = small_params(backend);
        let (n, t) = (params.degree(), params.plaintext_modulus().value());
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (sk, pk, _) = KeyGenerator::generate(&params, &mut rng);
        let encoder = BatchEncoder::new(&params);
        let eval = Evaluator::new(&params);
        let x = random_slots(&mut rng, n, t);
        let y = random_slots(&mut rng, n, t);
        let px = encoder.encode(&x).unwrap();
        let py = encoder.encode(&y).unwrap();
        assert_eq!(encoder.decode(&px), x);

        let cx = sk.encrypt(&params, &px, &mut rng).unwrap();
        let cy = pk.encrypt(&params, &py, &mut rng).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &cx).unwrap()),
            x,
            "{backend}: sk"
        );
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &cy).unwrap()),
            y,
            "{backend}: pk"
        );
        let fresh = sk.noise_budget(&params, &cx).unwrap();
        assert!((40..90).contains(&fresh), "{backend}: fresh budget {fresh}");

        let slots = |f: &dyn Fn(u64, u64) -> u64| -> Vec<u64> {
            x.iter()
                .zip(&y)
                .map(|(&a, &b)| f(a, b) % t as u64)
                .collect()
        };
        let t64 = t as u64;
        let sum = eval.add(&cx, &cy).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &sum).unwrap()),
            slots(&|a, b| a + b)
        );
        let mut diff = cx.clone();
        eval.sub_assign(&mut diff, &cy).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &diff).unwrap()),
            slots(&|a, b| a + t64 - b)
        );
        let mut neg = cx.clone();
        eval.negate_assign(&mut neg).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &neg).unwrap()),
            slots(&|a, _| t64 - a)
        );
        let mut scaled = cx.clone();
        eval.mul_scalar_assign(&mut scaled, -7).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &scaled).unwrap()),
            slots(&|a, _| a * (t64 - 7))
        );
        let mut plain_sum = cx.clone();
        eval.add_plain_assign(&mut plain_sum, &py).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &plain_sum).unwrap()),
            slots(&|a, b| a + b)
        );
        eval.sub_plain_assign(&mut plain_sum, &py).unwrap();
        assert_eq!(encoder.decode(&sk.decrypt(&params, &plain_sum).unwrap()), x);
        let mut plain_product = cx.clone();
        eval.mul_plain_assign(&mut plain_product, &py).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &plain_product).unwrap()),
            slots(&|a, b| a * b)
        );
    }
}

#[test]
fn linear_combinations_of_small_and_wide_weights_on_every_backend() {
    // 15-bit weights take the backend's weighted sums; wider ones (and weights past t,
    // taken mod t) the u64 path. Both must decrypt to the plaintext sum, and the weighted
    // sums must give identical ciphertexts on every backend.
    let mut reference: Option<Vec<Ciphertext>> = None;
    for backend in Backend::available() {
        let params = small_params(backend);
        let (n, t) = (params.degree(), params.plaintext_modulus().value() as i128);
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let (sk, _, _) = KeyGenerator::generate(&params, &mut rng);
        let encoder = BatchEncoder::new(&params);
        let eval = Evaluator::new(&params);
        let values: Vec<Vec<u64>> = (0..20)
            .map(|_| random_slots(&mut rng, n, t as u32))
            .collect();
        let cts: Vec<Ciphertext> = values
            .iter()
            .map(|v| {
                sk.encrypt(&params, &encoder.encode(v).unwrap(), &mut rng)
                    .unwrap()
            })
            .collect();
        let small: Vec<i64> = (0..20).map(|i| (i * 3277 % 65537) - 32768).collect();
        let wide: Vec<i64> = (0..20)
            .map(|i| (i - 10) * (1 << 20) + 3 * t as i64)
            .collect();
        let mut outputs = Vec::new();
        for (weights, constant) in [(&small, -12345i128), (&wide, 1 << 40)] {
            let terms: Vec<(&Ciphertext, i64)> = cts.iter().zip(weights.iter().copied()).collect();
            let out = eval
                .linear_combination(&terms, constant, params.max_level(), 2)
                .unwrap();
            let expected: Vec<u64> = (0..n)
                .map(|slot| {
                    let sum = values
                        .iter()
                        .zip(weights.iter())
                        .map(|(v, &w)| v[slot] as i128 * w as i128)
                        .sum::<i128>()
                        + constant;
                    sum.rem_euclid(t) as u64
                })
                .collect();
            assert_eq!(
                encoder.decode(&sk.decrypt(&params, &out).unwrap()),
                expected,
                "{backend}"
            );
            outputs.push(out);
        }
        match &reference {
            None => reference = Some(outputs),
            Some(r) => assert!(
                r == &outputs,
                "{backend}: other ciphertexts than the first backend"
            ),
        }
    }
}

#[test]
fn multiply_square_relinearize_and_switch_on_every_backend() {
    for backend in Backend::available() {
        let params = small_params(backend);
        let (n, t) = (params.degree(), params.plaintext_modulus().value() as u64);
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (sk, pk, rlk) = KeyGenerator::generate(&params, &mut rng);
        let encoder = BatchEncoder::new(&params);
        let eval = Evaluator::new(&params);
        let x = random_slots(&mut rng, n, t as u32);
        let y = random_slots(&mut rng, n, t as u32);
        let cx = pk
            .encrypt(&params, &encoder.encode(&x).unwrap(), &mut rng)
            .unwrap();
        let cy = sk
            .encrypt(&params, &encoder.encode(&y).unwrap(), &mut rng)
            .unwrap();
        let product: Vec<u64> = x.iter().zip(&y).map(|(a, b)| a * b % t).collect();
        let square: Vec<u64> = x.iter().map(|a| a * a % t).collect();

        let mut c = eval.multiply(&cx, &cy).unwrap();
        assert_eq!(c.size(), 3);
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &c).unwrap()),
            product,
            "{backend}: size-3 product"
        );
        let before = sk.noise_budget(&params, &c).unwrap();
        eval.relinearize_assign(&mut c, &rlk).unwrap();
        assert_eq!(c.size(), 2);
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &c).unwrap()),
            product,
            "{backend}: relinearized"
        );
        assert!(
            sk.noise_budget(&params, &c).unwrap() + 2 >= before.min(40),
            "relinearization noise"
        );

        let mut s = eval.square(&cx).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &s).unwrap()),
            square,
            "{backend}: square"
        );
        // Size-3 ciphertexts still add and scale: relinearization can wait.
        let s2 = eval.add(&s, &eval.multiply(&cx, &cx).unwrap()).unwrap();
        let doubled: Vec<u64> = square.iter().map(|v| 2 * v % t).collect();
        assert_eq!(encoder.decode(&sk.decrypt(&params, &s2).unwrap()), doubled);
        eval.relinearize_assign(&mut s, &rlk).unwrap();

        let budget = sk.noise_budget(&params, &s).unwrap();
        eval.mod_switch_to_next_assign(&mut s).unwrap();
        assert_eq!(s.level(), 2);
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &s).unwrap()),
            square,
            "{backend}: after switching"
        );
        assert!(
            sk.noise_budget(&params, &s).unwrap() + 32 >= budget,
            "switching costs about one prime of budget at most"
        );
        // Multiplication and relinearization keep working at the lower level.
        let (mut cx2, mut cy2) = (cx.clone(), cy.clone());
        eval.mod_switch_to_next_assign(&mut cx2).unwrap();
        eval.mod_switch_to_next_assign(&mut cy2).unwrap();
        let mut low = eval.multiply(&cx2, &cy2).unwrap();
        eval.relinearize_assign(&mut low, &rlk).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &low).unwrap()),
            product,
            "{backend}: level-2 product"
        );
        assert!(sk.noise_budget(&params, &low).unwrap() > 0);
        assert!(eval.add(&s, &cx).is_err(), "levels differ");
    }
}

#[test]
fn inputs_with_a_in_ntt_form_square_to_the_same_words_on_every_backend() {
    let mut scratch = MultiplyScratch::default();
    for backend in Backend::available() {
        let params = small_params(backend);
        let (n, t) = (params.degree(), params.plaintext_modulus().value());
        let mut rng = ChaCha20Rng::seed_from_u64(15);
        let sk = SecretKey::generate(&params, &mut rng);
        let encoder = BatchEncoder::new(&params);
        let eval = Evaluator::new(&params);
        let seeded = |rng: &mut ChaCha20Rng| {
            let slots = random_slots(rng, n, t);
            sk.encrypt_seeded(&params, &encoder.encode(&slots).unwrap(), rng)
                .unwrap()
        };
        let (x, y) = (seeded(&mut rng), seeded(&mut rng));
        let mut expanded = x.expand_ntt(&params).unwrap();
        assert_eq!(
            expanded.clone().into_coefficients(&params).unwrap(),
            x.expand(&params).unwrap(),
            "{backend}: a's inverse transform"
        );
        // A linear combination, as the convolution makes: 3 x - 5 y + 2, in either form.
        let combine = |x: &Ciphertext, y: &Ciphertext| {
            let (mut x, mut y) = (x.clone(), y.clone());
            eval.mul_scalar_assign(&mut x, 3).unwrap();
            eval.mul_scalar_assign(&mut y, -5).unwrap();
            eval.add_assign(&mut x, &y).unwrap();
            x
        };
        let plain = combine(&x.expand(&params).unwrap(), &y.expand(&params).unwrap());
        let mixed = combine(&expanded.inner, &y.expand_ntt(&params).unwrap().inner);
        for level in (1..=params.max_level()).rev() {
            let expected = eval.square_to_level(&plain, level, &mut scratch).unwrap();
            let mut input = mixed.clone();
            let mut got = Ciphertext::from_parts(&params, 1, Vec::new());
            eval.square_ntt_second_to_level_into(&mut input, level, &mut scratch, &mut got)
                .unwrap();
            assert_eq!(got, expected, "{backend}: square to level {level}");
        }
        // Into a used one: the same; and another ring's parameters are refused.
        y.expand_ntt_into(&params, &mut expanded).unwrap();
        assert_eq!(expanded, y.expand_ntt(&params).unwrap());
        let other = small_params_with_t(backend, ntt_primes(18, 4096).nth(1).unwrap());
        assert!(expanded.into_coefficients(&other).is_err());
    }
}

#[test]
fn products_in_reused_scratch_equal_the_allocating_ones_on_every_backend() {
    // One scratch for every call, at every level and after larger calls: the buffers'
    // leftovers never leak into a result.
    let mut scratch = MultiplyScratch::default();
    let mut reference: Option<Vec<Vec<u32>>> = None;
    for backend in Backend::available() {
        let params = small_params(backend);
        let (n, t) = (params.degree(), params.plaintext_modulus().value());
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let sk = SecretKey::generate(&params, &mut rng);
        let encoder = BatchEncoder::new(&params);
        let eval = Evaluator::new(&params);
        let encrypt = |rng: &mut ChaCha20Rng| {
            let slots = random_slots(rng, n, t);
            sk.encrypt(&params, &encoder.encode(&slots).unwrap(), rng)
                .unwrap()
        };
        let (a, b) = (encrypt(&mut rng), encrypt(&mut rng));
        let mut words = Vec::new();
        for level in (1..=params.max_level()).rev() {
            let mut expected = eval.square(&a).unwrap();
            while expected.level() > level {
                eval.mod_switch_to_next_assign(&mut expected).unwrap();
            }
            let got = eval.square_to_level(&a, level, &mut scratch).unwrap();
            assert_eq!(got, expected, "{backend}: square to level {level}");
            words.extend((0..3).map(|k| got.poly(k).to_vec()));
        }
        let product = eval.multiply_with(&a, &b, &mut scratch).unwrap();
        assert_eq!(
            product,
            eval.multiply(&a, &b).unwrap(),
            "{backend}: product"
        );
        // A lower-level input after the top-level ones: smaller buffers than the scratch.
        let (mut low_a, mut low_b) = (a.clone(), b.clone());
        eval.mod_switch_to_next_assign(&mut low_a).unwrap();
        eval.mod_switch_to_next_assign(&mut low_b).unwrap();
        let low = eval.multiply_with(&low_a, &low_b, &mut scratch).unwrap();
        assert_eq!(
            low,
            eval.multiply(&low_a, &low_b).unwrap(),
            "{backend}: low"
        );
        assert!(eval.square_to_level(&a, 0, &mut scratch).is_err());
        assert!(
            eval.square_to_level(&low_a, params.max_level(), &mut scratch)
                .is_err(),
            "a square is never switched up"
        );
        assert!(
            eval.square_to_level(&product, 1, &mut scratch).is_err(),
            "size 3"
        );
        words.extend((0..3).map(|k| product.poly(k).to_vec()));
        match &reference {
            None => reference = Some(words),
            Some(r) => assert!(r == &words, "{backend}: words differ from portable"),
        }
    }
}

/// The integer a polynomial's limbs represent, centered mod Q.
fn compose(params: &Parameters, poly: &[u32], level: usize) -> Vec<BigInt> {
    let n = params.degree();
    let moduli = &params.ciphertext_basis().moduli()[..level];
    let q: BigUint = moduli.iter().map(|m| BigUint::from(m.value())).product();
    (0..n)
        .map(|c| {
            let mut x = BigUint::from(0u32);
            for (i, m) in moduli.iter().enumerate() {
                let qi = BigUint::from(m.value());
                let cofactor = &q / &qi;
                let inv = BigUint::from(m.inv((&cofactor % &qi).try_into().unwrap()));
                x += BigUint::from(poly[i * n + c]) * &cofactor * inv;
            }
            x %= &q;
            let x = BigInt::from(x);
            if x > BigInt::from(&q / 2u32) {
                x - BigInt::from(q.clone())
            } else {
                x
            }
        })
        .collect()
}

#[test]
fn tensor_product_matches_big_integer_reference() {
    // Q_L < 2^62 makes HPS's rounding exact, so every coefficient must match. Three primes:
    // levels 1 and 2 multiply with two and three of the top level's four auxiliary primes.
    let t = ntt_primes(17, 256).next().unwrap();
    let params = Parameters::builder()
        .degree(256)
        .ciphertext_prime_sizes(30, 3)
        .plaintext_modulus(t)
        .insecure_for_tests()
        .build()
        .unwrap();
    let limbs = |level| params.level_data(level).auxiliary_limbs;
    assert_eq!(
        (limbs(1), limbs(2), limbs(3), params.auxiliary_basis().len()),
        (2, 3, 4, 4),
        "each level's auxiliary primes"
    );
    for level in [1, 2] {
        tensor_products_at_level(&params, t, level);
    }
}

/// Random products of ciphertexts at `level` against big-integer tensors rounded by t / Q_L.
fn tensor_products_at_level(params: &Parameters, t: u32, level: usize) {
    let n = params.degree();
    let q: BigInt = params.ciphertext_basis().moduli()[..level]
        .iter()
        .map(|m| BigInt::from(m.value()))
        .product();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    for round in 0..3 {
        let random_ct = |rng: &mut ChaCha20Rng| Ciphertext {
            params: params.id(),
            level,
            n,
            polys: (0..2)
                .map(|_| {
                    let mut p = std::vec![0u32; level * n];
                    for (i, limb) in p.chunks_exact_mut(n).enumerate() {
                        crate::sampling::uniform(rng, &params.ciphertext_basis().moduli()[i], limb);
                    }
                    p
                })
                .collect(),
        };
        let a = random_ct(&mut rng);
        let b = if round == 0 {
            a.clone()
        } else {
            random_ct(&mut rng)
        };
        let second = (round > 0).then_some(&b);
        let ours = super::multiply::tensor(params, &a, second);
        if level > 1 {
            // Switched down within the product (folded into its conversion back): the words
            // of the product followed by modulus switching.
            let mut switched = ours.clone();
            Evaluator::new(params)
                .mod_switch_to_next_assign(&mut switched)
                .unwrap();
            let mut scratch = super::multiply::MultiplyScratch::default();
            let down = super::multiply::tensor_with(params, &a, second, level - 1, &mut scratch);
            assert_eq!(
                down, switched,
                "level {level}, round {round}: switched product"
            );
        }
        let (a0, a1) = (
            compose(params, &a.polys[0], level),
            compose(params, &a.polys[1], level),
        );
        let (b0, b1) = (
            compose(params, &b.polys[0], level),
            compose(params, &b.polys[1], level),
        );
        let negacyclic = |x: &[BigInt], y: &[BigInt]| -> Vec<BigInt> {
            let mut out = std::vec![BigInt::from(0); n];
            for i in 0..n {
                for j in 0..n {
                    let p = &x[i] * &y[j];
                    if i + j < n {
                        out[i + j] += p
                    } else {
                        out[i + j - n] -= p
                    }
                }
            }
            out
        };
        let c0 = negacyclic(&a0, &b0);
        let mut c1 = negacyclic(&a0, &b1);
        c1.iter_mut()
            .zip(negacyclic(&a1, &b0))
            .for_each(|(x, y)| *x += y);
        let c2 = negacyclic(&a1, &b1);
        for (k, c) in [c0, c1, c2].iter().enumerate() {
            let expected: Vec<BigInt> = c
                .iter()
                .map(|v| {
                    // round(t v / Q) for signed v: floor((2 t v + Q) / 2Q), then mod Q.
                    let num = BigInt::from(2u32 * t) * v + &q;
                    let den = BigInt::from(2u32) * &q;
                    let rounded = num.clone() / &den
                        - if num < BigInt::from(0) && (num % &den) != BigInt::from(0) {
                            1
                        } else {
                            0
                        };
                    ((rounded % &q) + &q) % &q
                })
                .collect();
            let got: Vec<BigInt> = compose(params, &ours.polys[k], level)
                .into_iter()
                .map(|v| (v + &q) % &q)
                .collect();
            assert!(
                got == expected,
                "level {level}, round {round}: polynomial {k} differs from the reference"
            );
        }
    }
}

#[test]
fn random_operation_sequences_decrypt_to_the_plaintext_computation() {
    for backend in Backend::available() {
        let params = small_params(backend);
        let (n, t) = (params.degree(), params.plaintext_modulus().value() as u64);
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let (sk, pk, rlk) = KeyGenerator::generate(&params, &mut rng);
        let encoder = BatchEncoder::new(&params);
        let eval = Evaluator::new(&params);
        for _ in 0..4 {
            let mut values = random_slots(&mut rng, n, t as u32);
            let mut ct = pk
                .encrypt(&params, &encoder.encode(&values).unwrap(), &mut rng)
                .unwrap();
            let mut multiplications = 0;
            for _ in 0..8 {
                let other = random_slots(&mut rng, n, t as u32);
                let other_ct = sk
                    .encrypt(&params, &encoder.encode(&other).unwrap(), &mut rng)
                    .unwrap();
                match rng.next_u32() % 5 {
                    0 => {
                        eval.add_assign(&mut ct, &other_ct).unwrap();
                        values
                            .iter_mut()
                            .zip(&other)
                            .for_each(|(v, o)| *v = (*v + o) % t);
                    }
                    1 => {
                        eval.sub_assign(&mut ct, &other_ct).unwrap();
                        values
                            .iter_mut()
                            .zip(&other)
                            .for_each(|(v, o)| *v = (*v + t - o) % t);
                    }
                    2 => {
                        let w = (rng.next_u32() % 512) as i64 - 256;
                        eval.mul_scalar_assign(&mut ct, w).unwrap();
                        values
                            .iter_mut()
                            .for_each(|v| *v = (*v as i64 * w).rem_euclid(t as i64) as u64);
                    }
                    3 if multiplications < 1 => {
                        multiplications += 1;
                        ct = eval.multiply(&ct, &other_ct).unwrap();
                        eval.relinearize_assign(&mut ct, &rlk).unwrap();
                        values
                            .iter_mut()
                            .zip(&other)
                            .for_each(|(v, o)| *v = *v * o % t);
                    }
                    _ => {
                        eval.add_plain_assign(&mut ct, &encoder.encode(&other).unwrap())
                            .unwrap();
                        values
                            .iter_mut()
                            .zip(&other)
                            .for_each(|(v, o)| *v = (*v + o) % t);
                    }
                }
                assert_eq!(
                    encoder.decode(&sk.decrypt(&params, &ct).unwrap()),
                    values,
                    "{backend}"
                );
            }
        }
    }
}

#[test]
fn every_backend_produces_identical_ciphertexts_for_one_seed() {
    let mut results = Vec::new();
    for backend in Backend::available() {
        let params = small_params(backend);
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (sk, pk, rlk) = KeyGenerator::generate(&params, &mut rng);
        let encoder = BatchEncoder::new(&params);
        let values: Vec<u64> = (0..params.degree() as u64).collect();
        let pt = encoder.encode(&values).unwrap();
        let a = sk.encrypt(&params, &pt, &mut rng).unwrap();
        let b = pk.encrypt(&params, &pt, &mut rng).unwrap();
        let eval = Evaluator::new(&params);
        let mut c = eval.multiply(&a, &b).unwrap();
        eval.relinearize_assign(&mut c, &rlk).unwrap();
        eval.mod_switch_to_next_assign(&mut c).unwrap();
        results.push((backend, a, b, c, pk, rlk));
    }
    let first = &results[0];
    for other in &results[1..] {
        assert!(
            other.1 == first.1 && other.2 == first.2 && other.3 == first.3,
            "{} differs from {}",
            other.0,
            first.0
        );
        assert!(
            other.4 == first.4 && other.5 == first.5,
            "{} keys differ",
            other.0
        );
    }
}

#[test]
fn serialization_round_trips_and_is_compact() {
    let params = small_params(Backend::detect());
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let (sk, pk, rlk) = KeyGenerator::generate(&params, &mut rng);
    let encoder = BatchEncoder::new(&params);
    let pt = encoder.encode(&[1, 2, 3]).unwrap();
    let seeded = sk.encrypt_seeded(&params, &pt, &mut rng).unwrap();
    let ct = pk.encrypt(&params, &pt, &mut rng).unwrap();

    let p2 = Parameters::from_bytes(&params.to_bytes()).unwrap();
    assert_eq!(p2.id(), params.id());
    assert_eq!(
        Ciphertext::from_bytes(&params, &ct.to_bytes(&params)).unwrap(),
        ct
    );
    let seeded_bytes = seeded.to_bytes(&params);
    let seeded2 = SeededCiphertext::from_bytes(&params, &seeded_bytes).unwrap();
    assert_eq!(seeded2, seeded);
    assert_eq!(
        encoder.decode(
            &sk.decrypt(&params, &seeded2.expand(&params).unwrap())
                .unwrap()
        )[..3],
        [1, 2, 3]
    );
    assert_eq!(
        PublicKey::from_bytes(&params, &pk.to_bytes(&params)).unwrap(),
        pk
    );
    assert_eq!(
        RelinearizationKey::from_bytes(&params, &rlk.to_bytes(&params)).unwrap(),
        rlk
    );
    let sk2 = SecretKey::from_bytes(&params, &sk.to_bytes(&params)).unwrap();
    assert_eq!(sk2.coefficients(), sk.coefficients());

    // 30 bits per residue: a full ciphertext is 2 * 3 * 4096 * 30 / 8 bytes plus 18.
    let full = ct.to_bytes(&params);
    assert_eq!(full.len(), 16 + 2 + 2 * 3 * 4096 * 30 / 8);
    assert_eq!(seeded_bytes.len(), 16 + 33 + 3 * 4096 * 30 / 8);
    // A size-3 ciphertext at a lower level round-trips too.
    let eval = Evaluator::new(&params);
    let mut c3 = eval.square(&ct).unwrap();
    eval.mod_switch_to_next_assign(&mut c3).unwrap();
    assert_eq!(
        Ciphertext::from_bytes(&params, &c3.to_bytes(&params)).unwrap(),
        c3
    );
    // Expanding into a used ciphertext (here size 3, one level down) gives the same result.
    seeded2.expand_into(&params, &mut c3).unwrap();
    assert_eq!(c3, seeded.expand(&params).unwrap());

    // Read straight into an expanded one (a in NTT form), compressed or not, fresh or used.
    let compressed = seeded.clone().compress(&params).unwrap();
    let compressed_bytes = compressed.to_bytes(&params);
    let mut read = ExpandedCiphertext::read_seeded(&params, &compressed_bytes).unwrap();
    assert_eq!(read, compressed.expand_ntt(&params).unwrap());
    read.read_seeded_into(&params, &seeded_bytes).unwrap();
    assert_eq!(read, seeded.expand_ntt(&params).unwrap());
    // A residue of q or more: a typed error, and the buffers left empty at level 0.
    let mut bad = seeded_bytes.clone();
    let c0_start = bad.len() - 3 * 4096 * 30 / 8;
    bad[c0_start..c0_start + 4].fill(0xff);
    assert!(ExpandedCiphertext::read_seeded(&params, &bad).is_err());
    assert!(read.read_seeded_into(&params, &bad).is_err());
    assert_eq!(read.level(), 0);
    assert!(read.into_coefficients(&params).unwrap().poly(0).is_empty());
}

#[test]
fn malformed_serialized_data_gives_typed_errors() {
    let params = small_params(Backend::detect());
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let sk = SecretKey::generate(&params, &mut rng);
    let ct = sk
        .encrypt(
            &params,
            &BatchEncoder::new(&params).encode(&[5]).unwrap(),
            &mut rng,
        )
        .unwrap();
    let good = ct.to_bytes(&params);
    let malformed = |bytes: &[u8]| {
        matches!(
            Ciphertext::from_bytes(&params, bytes),
            Err(Error::Malformed { .. })
        )
    };

    assert!(malformed(&[]));
    assert!(malformed(&good[..good.len() - 1]), "truncated");
    assert!(
        malformed(&[good.as_slice(), &[0]].concat()),
        "trailing byte"
    );
    for (index, value) in [
        (0, b'X'),
        (4, 2),
        (5, 6),
        (6, 1),
        (8, good[8] ^ 1),
        (16, 0),
        (16, 9),
        (17, 4),
    ] {
        let mut bad = good.clone();
        bad[index] = value;
        assert!(malformed(&bad), "byte {index} = {value}");
    }
    // A residue equal to its prime: set the first 30 bits of the first limb to q_0.
    let mut bad = good.clone();
    let q0 = params.ciphertext_basis().moduli()[0].value();
    let word = u32::from_le_bytes(bad[18..22].try_into().unwrap()) & !((1 << 30) - 1) | q0;
    bad[18..22].copy_from_slice(&word.to_le_bytes());
    assert!(malformed(&bad), "residue >= q");
    // The same at residues read in the middle of a group and from the last group's padded
    // copy, and q - 1 there read back as it is.
    let n = params.degree();
    let set_residue = |bytes: &mut [u8], index: usize, value: u32| {
        for b in 0..30 {
            let bit = 18 * 8 + index * 30 + b;
            let mask = 1u8 << (bit % 8);
            bytes[bit / 8] = (bytes[bit / 8] & !mask) | (((value >> b) & 1) as u8) << (bit % 8);
        }
    };
    for index in [13, n - 9, n - 1] {
        let mut bad = good.clone();
        set_residue(&mut bad, index, q0);
        assert!(malformed(&bad), "residue {index} = q");
        let mut edge = good.clone();
        set_residue(&mut edge, index, q0 - 1);
        let parsed = Ciphertext::from_bytes(&params, &edge).unwrap();
        assert_eq!(parsed.poly(0)[index], q0 - 1, "residue {index} = q - 1");
        assert_eq!(parsed.to_bytes(&params), edge, "residue {index} round trip");
    }
    // Other parameter sets, other kinds.
    let other = Parameters::builder()
        .degree(4096)
        .ciphertext_prime_sizes(30, 2)
        .plaintext_modulus(params.plaintext_modulus().value())
        .build()
        .unwrap();
    assert!(matches!(
        Ciphertext::from_bytes(&other, &good),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        PublicKey::from_bytes(&params, &good),
        Err(Error::Malformed { .. })
    ));
    let mut sk_bytes = sk.to_bytes(&params);
    sk_bytes[20] = 0b10; // code 2 is not ternary
    assert!(matches!(
        SecretKey::from_bytes(&params, &sk_bytes),
        Err(Error::Malformed { .. })
    ));
    let mut p = params.to_bytes();
    p[8] ^= 1; // the identifier no longer matches (n, t, Q)
    assert!(matches!(
        Parameters::from_bytes(&p),
        Err(Error::Malformed { .. })
    ));
    // Too many primes for 128-bit security is refused on load as well.
    let insecure = Parameters::builder()
        .degree(4096)
        .ciphertext_prime_sizes(30, 4)
        .plaintext_modulus(params.plaintext_modulus().value())
        .insecure_for_tests()
        .build()
        .unwrap();
    assert!(matches!(
        Parameters::from_bytes(&insecure.to_bytes()),
        Err(Error::InvalidParameters { .. })
    ));
}

/// Byte-level mutations of a valid serialized object: (position, xor) pairs, then an
/// optional truncation or extension. Starting from valid bytes, every check after the length
/// checks (header fields, residue ranges, ternary codes, Galois elements) is reached.
#[derive(Clone, Debug)]
pub(super) struct Mutation {
    flips: Vec<(usize, u8)>,
    resize: Option<usize>,
}

pub(super) fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
    use proptest::prelude::*;
    (
        proptest::collection::vec((any::<usize>(), 1..=255u8), 1..6),
        proptest::option::weighted(0.2, any::<usize>()),
    )
        .prop_map(|(flips, resize)| Mutation { flips, resize })
}

impl Mutation {
    /// The mutated bytes; flips land in the header (first 40 bytes) half of the time, since
    /// that is where most fields live.
    pub(super) fn apply(&self, valid: &[u8]) -> Vec<u8> {
        let mut bytes = valid.to_vec();
        for &(at, xor) in &self.flips {
            let len = if at % 2 == 0 {
                bytes.len().min(40)
            } else {
                bytes.len()
            };
            if len > 0 {
                bytes[(at / 2) % len] ^= xor;
            }
        }
        if let Some(len) = self.resize {
            bytes.resize(len % (valid.len() + 64), 0x5a);
        }
        bytes
    }
}

/// Parses `bytes` with `parse`: it must not panic, and whatever it accepts must serialize
/// back to exactly those bytes (a parser that accepts a changed object must have read it
/// faithfully, not silently repaired or misread it).
pub(super) fn parses_canonically<T>(
    bytes: &[u8],
    parse: impl Fn(&[u8]) -> Result<T, Error>,
    serialize: impl Fn(&T) -> Vec<u8>,
) -> Result<(), proptest::test_runner::TestCaseError> {
    if let Ok(object) = parse(bytes) {
        proptest::prop_assert_eq!(serialize(&object), bytes.to_vec());
    }
    Ok(())
}

/// Valid serialized objects of every kind under `small_params`, made once.
fn valid_objects() -> &'static (Parameters, [Vec<u8>; 6]) {
    static OBJECTS: std::sync::OnceLock<(Parameters, [Vec<u8>; 6])> = std::sync::OnceLock::new();
    OBJECTS.get_or_init(|| {
        let params = small_params(Backend::Portable(crate::backend::Portable));
        let mut rng = ChaCha20Rng::seed_from_u64(64);
        let (sk, pk, rk) = KeyGenerator::generate(&params, &mut rng);
        let encoder = BatchEncoder::new(&params);
        let m = encoder.encode(&[1, 2, 3]).unwrap();
        let seeded = sk.encrypt_seeded(&params, &m, &mut rng).unwrap();
        let mut ct = seeded.expand(&params).unwrap();
        Evaluator::new(&params)
            .mod_switch_to_next_assign(&mut ct)
            .unwrap();
        let objects = [
            params.to_bytes(),
            sk.to_bytes(&params).to_vec(),
            pk.to_bytes(&params),
            rk.to_bytes(&params),
            ct.to_bytes(&params),
            seeded.to_bytes(&params),
        ];
        (params, objects)
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
    #[test]
    fn mutated_objects_are_refused_or_read_faithfully(kind in 0..6usize, m in mutation()) {
        let (params, objects) = valid_objects();
        let bytes = m.apply(&objects[kind]);
        match kind {
            0 => parses_canonically(&bytes, Parameters::from_bytes, Parameters::to_bytes)?,
            1 => parses_canonically(&bytes, |b| SecretKey::from_bytes(params, b), |k| k.to_bytes(params).to_vec())?,
            2 => parses_canonically(&bytes, |b| PublicKey::from_bytes(params, b), |k| k.to_bytes(params))?,
            3 => parses_canonically(&bytes, |b| RelinearizationKey::from_bytes(params, b), |k| k.to_bytes(params))?,
            4 => parses_canonically(&bytes, |b| Ciphertext::from_bytes(params, b), |c| c.to_bytes(params))?,
            _ => parses_canonically(&bytes, |b| SeededCiphertext::from_bytes(params, b), |c| c.to_bytes(params))?,
        }
        // Every parser sees every mutant: none may panic on another kind's bytes.
        let _ = Ciphertext::from_bytes(params, &bytes);
        let _ = SeededCiphertext::from_bytes(params, &bytes);
        let _ = PublicKey::from_bytes(params, &bytes);
        let _ = RelinearizationKey::from_bytes(params, &bytes);
        let _ = SecretKey::from_bytes(params, &bytes);
        let _ = Parameters::from_bytes(&bytes);
    }
}

#[test]
fn the_mutation_harness_reaches_the_checks_after_the_length_check() {
    // A flipped residue bit deep in a ciphertext keeps the length: only the residue range
    // check (or nothing, if still in range) can refuse it.
    let (params, objects) = valid_objects();
    let mut bytes = objects[4].clone();
    let at = bytes.len() - 10;
    bytes[at..at + 4].fill(0xff);
    assert!(matches!(
        Ciphertext::from_bytes(params, &bytes),
        Err(Error::Malformed { reason }) if reason.contains("residue")
    ));
    let mut key = objects[1].clone();
    key[20] = 0b10; // a ternary code of 2
    assert!(matches!(
        SecretKey::from_bytes(params, &key),
        Err(Error::Malformed { reason }) if reason.contains("ternary")
    ));
}

/// Encryption written out limb by limb gives the bytes of `encrypt_seeded(...).to_bytes()`
/// for a generator in the same state, on every backend, in chunks of the header then one
/// limb each; a failing writer stops it with its own error; keys of another ring are refused
/// before anything is written.
#[test]
fn encryption_by_limb_writes_the_bytes_of_the_seeded_ciphertext() {
    let mut reference: Option<Vec<Vec<u8>>> = None;
    for backend in Backend::available() {
        let params = small_params(backend);
        let n = params.degree();
        let mut rng = ChaCha20Rng::seed_from_u64(41);
        let secret = SecretKey::generate(&params, &mut rng);
        let encoder = BatchEncoder::new(&params);
        let mut scratch = LimbScratch::new(n);
        let mut uploads = Vec::new();
        for image in 0..3u64 {
            let values = random_slots(&mut rng, n, params.plaintext_modulus().value());
            let m = encoder.encode(&values).unwrap();
            let mut twin = rng.clone();
            let expected = secret
                .encrypt_seeded(&params, &m, &mut twin)
                .unwrap()
                .to_bytes(&params);
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            secret
                .encrypt_seeded_by_limb(&params, &m, &mut rng, &mut scratch, |bytes| {
                    chunks.push(bytes.to_vec());
                    Ok::<(), Error>(())
                })
                .unwrap();
            assert_eq!(chunks.len(), 1 + params.max_level(), "{backend:?} {image}");
            let streamed: Vec<u8> = chunks.concat();
            assert_eq!(streamed, expected, "{backend:?} image {image}");
            // The generator ends where encrypt_seeded leaves it: the next image matches too.
            assert_eq!(rng.next_u64(), twin.next_u64());
            let ct = SeededCiphertext::from_bytes(&params, &streamed)
                .unwrap()
                .expand(&params)
                .unwrap();
            assert_eq!(
                encoder.decode(&secret.decrypt(&params, &ct).unwrap()),
                values
            );
            uploads.push(streamed);
        }
        match &reference {
            None => reference = Some(uploads),
            Some(r) => assert_eq!(r, &uploads, "{backend:?} differs"),
        }

        // A writer that fails on the second limb: its error, and nothing more written.
        #[derive(Debug, PartialEq)]
        enum Sink {
            Full,
            Crypto(Error),
        }
        impl From<Error> for Sink {
            fn from(e: Error) -> Self {
                Sink::Crypto(e)
            }
        }
        let m = encoder.encode(&[5, 6, 7]).unwrap();
        let mut calls = 0;
        let err = secret
            .encrypt_seeded_by_limb(&params, &m, &mut rng, &mut scratch, |_| {
                calls += 1;
                if calls == 3 { Err(Sink::Full) } else { Ok(()) }
            })
            .unwrap_err();
        assert_eq!((err, calls), (Sink::Full, 3));

        // A key of another ring: refused before the first byte.
        let other = Parameters::builder()
            .degree(4096)
            .ciphertext_prime_sizes(30, 2)
            .plaintext_modulus(params.plaintext_modulus().value())
            .backend(backend)
            .build()
            .unwrap();
        let foreign = SecretKey::generate(&other, &mut rng);
        let mut written = 0;
        let err = foreign
            .encrypt_seeded_by_limb(&params, &m, &mut rng, &mut scratch, |_| {
                written += 1;
                Ok::<(), Error>(())
            })
            .unwrap_err();
        assert!(matches!(err, Error::Incompatible { .. }), "{err:?}");
        assert_eq!(written, 0);
    }
    // The memory of the small client at n = 8192: five polynomials of the degree (three of
    // residues, the compression's correction, the errors) and a limb.
    assert_eq!(LimbScratch::bytes(8192), 4 * 32768 + 8192 + 32768);
}

/// The compressed upload by limb: the bytes of `encrypt_seeded(..).compress(..)`, one limb
/// fewer, every backend alike, decrypting to the message.
#[test]
fn compressed_encryption_by_limb_writes_the_bytes_of_the_compressed_ciphertext() {
    let mut reference: Option<Vec<Vec<u8>>> = None;
    for backend in Backend::available() {
        let params = small_params(backend);
        let n = params.degree();
        let mut rng = ChaCha20Rng::seed_from_u64(43);
        let secret = SecretKey::generate(&params, &mut rng);
        let encoder = BatchEncoder::new(&params);
        let mut scratch = LimbScratch::new(n);
        let mut uploads = Vec::new();
        for image in 0..3u64 {
            let values = random_slots(&mut rng, n, params.plaintext_modulus().value());
            let m = encoder.encode(&values).unwrap();
            let mut twin = rng.clone();
            let expected = secret
                .encrypt_seeded(&params, &m, &mut twin)
                .unwrap()
                .compress(&params)
                .unwrap()
                .to_bytes(&params);
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            secret
                .encrypt_compressed_by_limb(&params, &m, &mut rng, &mut scratch, |bytes| {
                    chunks.push(bytes.to_vec());
                    Ok::<(), Error>(())
                })
                .unwrap();
            assert_eq!(chunks.len(), params.max_level(), "{backend:?} {image}");
            let streamed: Vec<u8> = chunks.concat();
            assert_eq!(streamed, expected, "{backend:?} image {image}");
            assert_eq!(rng.next_u64(), twin.next_u64());
            let ct = SeededCiphertext::from_bytes(&params, &streamed)
                .unwrap()
                .expand(&params)
                .unwrap();
            assert_eq!(
                encoder.decode(&secret.decrypt(&params, &ct).unwrap()),
                values
            );
            uploads.push(streamed);
        }
        match &reference {
            None => reference = Some(uploads),
            Some(r) => assert_eq!(r, &uploads, "{backend:?} differs"),
        }
    }
}
