//! BFV against plaintext arithmetic, a big-integer reference, and across backends.

use std::vec::Vec;

use num_bigint::{BigInt, BigUint};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::*;

/// n = 4096 with three 30-bit primes (90 bits, within the 109 allowed) and an 18-bit t.
fn small_params(backend: Backend) -> Parameters {
    let t = ntt_primes(18, 4096).next().unwrap();
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

        let cx = sk.encrypt(&params, &px, &mut rng);
        let cy = pk.encrypt(&params, &py, &mut rng);
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &cx)),
            x,
            "{backend}: sk"
        );
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &cy)),
            y,
            "{backend}: pk"
        );
        let fresh = sk.noise_budget(&params, &cx);
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
            encoder.decode(&sk.decrypt(&params, &sum)),
            slots(&|a, b| a + b)
        );
        let mut diff = cx.clone();
        eval.sub_assign(&mut diff, &cy).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &diff)),
            slots(&|a, b| a + t64 - b)
        );
        let mut neg = cx.clone();
        eval.negate_assign(&mut neg).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &neg)),
            slots(&|a, _| t64 - a)
        );
        let mut scaled = cx.clone();
        eval.mul_scalar_assign(&mut scaled, -7).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &scaled)),
            slots(&|a, _| a * (t64 - 7))
        );
        let mut plain_sum = cx.clone();
        eval.add_plain_assign(&mut plain_sum, &py).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &plain_sum)),
            slots(&|a, b| a + b)
        );
        eval.sub_plain_assign(&mut plain_sum, &py).unwrap();
        assert_eq!(encoder.decode(&sk.decrypt(&params, &plain_sum)), x);
        let mut plain_product = cx.clone();
        eval.mul_plain_assign(&mut plain_product, &py).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &plain_product)),
            slots(&|a, b| a * b)
        );
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
        let cx = pk.encrypt(&params, &encoder.encode(&x).unwrap(), &mut rng);
        let cy = sk.encrypt(&params, &encoder.encode(&y).unwrap(), &mut rng);
        let product: Vec<u64> = x.iter().zip(&y).map(|(a, b)| a * b % t).collect();
        let square: Vec<u64> = x.iter().map(|a| a * a % t).collect();

        let mut c = eval.multiply(&cx, &cy).unwrap();
        assert_eq!(c.size(), 3);
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &c)),
            product,
            "{backend}: size-3 product"
        );
        let before = sk.noise_budget(&params, &c);
        eval.relinearize_assign(&mut c, &rlk).unwrap();
        assert_eq!(c.size(), 2);
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &c)),
            product,
            "{backend}: relinearized"
        );
        assert!(
            sk.noise_budget(&params, &c) + 2 >= before.min(40),
            "relinearization noise"
        );

        let mut s = eval.square(&cx).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &s)),
            square,
            "{backend}: square"
        );
        // Size-3 ciphertexts still add and scale: relinearization can wait.
        let s2 = eval.add(&s, &eval.multiply(&cx, &cx).unwrap()).unwrap();
        let doubled: Vec<u64> = square.iter().map(|v| 2 * v % t).collect();
        assert_eq!(encoder.decode(&sk.decrypt(&params, &s2)), doubled);
        eval.relinearize_assign(&mut s, &rlk).unwrap();

        let budget = sk.noise_budget(&params, &s);
        eval.mod_switch_to_next_assign(&mut s).unwrap();
        assert_eq!(s.level(), 2);
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &s)),
            square,
            "{backend}: after switching"
        );
        assert!(
            sk.noise_budget(&params, &s) + 32 >= budget,
            "switching costs about one prime of budget at most"
        );
        // Multiplication and relinearization keep working at the lower level.
        let (mut cx2, mut cy2) = (cx.clone(), cy.clone());
        eval.mod_switch_to_next_assign(&mut cx2).unwrap();
        eval.mod_switch_to_next_assign(&mut cy2).unwrap();
        let mut low = eval.multiply(&cx2, &cy2).unwrap();
        eval.relinearize_assign(&mut low, &rlk).unwrap();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &low)),
            product,
            "{backend}: level-2 product"
        );
        assert!(sk.noise_budget(&params, &low) > 0);
        assert!(eval.add(&s, &cx).is_err(), "levels differ");
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
    // Q < 2^62 makes HPS's rounding exact, so every coefficient must match.
    let t = ntt_primes(17, 256).next().unwrap();
    let params = Parameters::builder()
        .degree(256)
        .ciphertext_prime_sizes(30, 2)
        .plaintext_modulus(t)
        .insecure_for_tests()
        .build()
        .unwrap();
    let n = params.degree();
    let q: BigInt = params
        .ciphertext_basis()
        .moduli()
        .iter()
        .map(|m| BigInt::from(m.value()))
        .product();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    for round in 0..3 {
        let random_ct = |rng: &mut ChaCha20Rng| Ciphertext {
            level: 2,
            n,
            polys: (0..2)
                .map(|_| {
                    let mut p = std::vec![0u32; 2 * n];
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
        let ours = if round == 0 {
            super::multiply::tensor(&params, &a, None)
        } else {
            super::multiply::tensor(&params, &a, Some(&b))
        };
        let (a0, a1) = (
            compose(&params, &a.polys[0], 2),
            compose(&params, &a.polys[1], 2),
        );
        let (b0, b1) = (
            compose(&params, &b.polys[0], 2),
            compose(&params, &b.polys[1], 2),
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
            let got: Vec<BigInt> = compose(&params, &ours.polys[k], 2)
                .into_iter()
                .map(|v| (v + &q) % &q)
                .collect();
            assert!(
                got == expected,
                "round {round}: polynomial {k} differs from the reference"
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
            let mut ct = pk.encrypt(&params, &encoder.encode(&values).unwrap(), &mut rng);
            let mut multiplications = 0;
            for _ in 0..8 {
                let other = random_slots(&mut rng, n, t as u32);
                let other_ct = sk.encrypt(&params, &encoder.encode(&other).unwrap(), &mut rng);
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
                    encoder.decode(&sk.decrypt(&params, &ct)),
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
        let a = sk.encrypt(&params, &pt, &mut rng);
        let b = pk.encrypt(&params, &pt, &mut rng);
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
