//! Galois automorphisms against the plaintext automorphism, slot by slot, on every backend.

use std::vec::Vec;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::*;
use crate::Backend;
use crate::bfv::{BatchEncoder, Plaintext, RelinearizationKey};
use crate::zq::prime::ntt_primes;

/// n = 4096: two 30-bit primes of Q and one special prime (90 bits, within the 109 allowed).
fn params_4096(backend: Backend) -> Parameters {
    Parameters::builder()
        .degree(4096)
        .ciphertext_prime_sizes(30, 2)
        .special_primes(1)
        .plaintext_modulus(ntt_primes(18, 4096).next().unwrap())
        .backend(backend)
        .build()
        .unwrap()
}

/// Toy size (n = 1024, below 128-bit security): three primes of Q and two special primes,
/// so that the division by S goes through a two-prime conversion.
fn toy_params(backend: Backend) -> Parameters {
    Parameters::builder()
        .degree(1024)
        .ciphertext_prime_sizes(30, 3)
        .special_primes(2)
        .plaintext_modulus(ntt_primes(17, 1024).next().unwrap())
        .backend(backend)
        .insecure_for_tests()
        .build()
        .unwrap()
}

fn random_slots(rng: &mut ChaCha20Rng, n: usize, t: u32) -> Vec<u64> {
    (0..n).map(|_| (rng.next_u32() % t) as u64).collect()
}

/// A secret key, random slots and their fresh encryption, from one seed.
fn encrypted_slots(
    params: &Parameters,
    rng: &mut ChaCha20Rng,
) -> (SecretKey, Vec<u64>, Ciphertext) {
    let secret = SecretKey::generate(params, rng);
    let values = random_slots(rng, params.degree(), params.plaintext_modulus().value());
    let m = BatchEncoder::new(params).encode(&values).unwrap();
    let ct = secret.encrypt(params, &m, rng).unwrap();
    (secret, values, ct)
}

/// Elements worth testing: -1 (the row swap), 3 and a power of 3 (column rotations), their
/// products with -1, and 2n - 3^(n/4) (a packing element).
fn elements(n: usize) -> Vec<usize> {
    let two_n = 2 * n;
    let power = |k: usize| (0..k).fold(1usize, |acc, _| acc * 3 % two_n);
    std::vec![
        two_n - 1,
        3,
        power(n / 4),
        two_n - 3,
        two_n - power(n / 4),
        power(7)
    ]
}

#[test]
fn the_slot_permutation_is_the_automorphism_of_the_plaintext() {
    let params = params_4096(Backend::detect());
    let (n, t) = (params.degree(), params.plaintext_modulus());
    let encoder = BatchEncoder::new(&params);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let values = random_slots(&mut rng, n, t.value());
    let m = encoder.encode(&values).unwrap();
    for g in elements(n) {
        // sigma_g on the coefficients mod t, by the definition X^i -> X^(i g) with X^n = -1.
        let mut coefficients = std::vec![0u32; n];
        for (i, &c) in m.coefficients().iter().enumerate() {
            let j = i * g % (2 * n);
            if j < n {
                coefficients[j] = c;
            } else {
                coefficients[j - n] = t.neg(c);
            }
        }
        let rotated = encoder.decode(&Plaintext::from_coefficients(&params, coefficients).unwrap());
        for (i, &v) in rotated.iter().enumerate() {
            assert_eq!(v, values[galois_slot(n, g, i)], "g = {g}, slot {i}");
        }
    }
    // The exponents of the slots are exactly the odd residues mod 2n.
    let mut exponents: Vec<usize> = (0..n).map(|i| slot_exponent(n, i)).collect();
    exponents.sort_unstable();
    assert!(exponents.iter().enumerate().all(|(i, &e)| e == 2 * i + 1));
    assert!((0..n).all(|i| crate::bfv::exponent_slot(n, slot_exponent(n, i)) == i));
}

#[test]
fn apply_galois_permutes_the_slots_on_every_backend_with_identical_bytes() {
    for make in [params_4096 as fn(Backend) -> Parameters, toy_params] {
        let mut reference: Option<Vec<Vec<u8>>> = None;
        for backend in Backend::available() {
            let params = make(backend);
            let n = params.degree();
            let encoder = BatchEncoder::new(&params);
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            let (secret, values, fresh) = encrypted_slots(&params, &mut rng);
            let fresh_budget = secret.noise_budget(&params, &fresh).unwrap();
            let eval = Evaluator::new(&params);
            let mut bytes = Vec::new();
            for g in elements(n) {
                let key = GaloisKey::new(&params, &secret, g, &mut rng).unwrap();
                assert_eq!(key.element(), g);
                let rotated = eval.apply_galois(&fresh, &key).unwrap();
                let got = encoder.decode(&secret.decrypt(&params, &rotated).unwrap());
                for (i, &v) in got.iter().enumerate() {
                    assert_eq!(
                        v,
                        values[galois_slot(n, g, i)],
                        "{backend}: g = {g}, slot {i}"
                    );
                }
                // The division by S leaves only the rounding's noise: a few bits.
                let budget = secret.noise_budget(&params, &rotated).unwrap();
                assert!(
                    budget + 8 >= fresh_budget,
                    "{backend}: g = {g}: {budget} bits left of {fresh_budget}"
                );
                // One level down works too (digits and keys restricted to Q_L).
                let mut low = fresh.clone();
                eval.mod_switch_to_next_assign(&mut low).unwrap();
                let rotated_low = eval.apply_galois(&low, &key).unwrap();
                assert_eq!(rotated_low.level(), low.level());
                assert_eq!(
                    encoder.decode(&secret.decrypt(&params, &rotated_low).unwrap()),
                    got,
                    "{backend}: g = {g}, one level down"
                );
                bytes.push(rotated.to_bytes(&params));
                bytes.push(key.to_bytes(&params));
            }
            match &reference {
                None => reference = Some(bytes),
                Some(r) => assert!(r == &bytes, "{backend} writes other bytes than portable"),
            }
        }
    }
}

#[test]
fn galois_keys_compose() {
    // sigma_g then sigma_h is sigma_(g h): two key switches in a row still decrypt.
    let params = toy_params(Backend::detect());
    let n = params.degree();
    let encoder = BatchEncoder::new(&params);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (secret, values, ct) = encrypted_slots(&params, &mut rng);
    let eval = Evaluator::new(&params);
    let (g, h) = (3, 2 * n - 1);
    let kg = GaloisKey::new(&params, &secret, g, &mut rng).unwrap();
    let kh = GaloisKey::new(&params, &secret, h, &mut rng).unwrap();
    let twice = eval
        .apply_galois(&eval.apply_galois(&ct, &kg).unwrap(), &kh)
        .unwrap();
    let got = encoder.decode(&secret.decrypt(&params, &twice).unwrap());
    for (i, &v) in got.iter().enumerate() {
        assert_eq!(v, values[galois_slot(n, g * h % (2 * n), i)]);
    }
}

#[test]
fn galois_keys_refuse_what_they_cannot_do() {
    let params = params_4096(Backend::detect());
    let n = params.degree();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let secret = SecretKey::generate(&params, &mut rng);
    for bad in [0, 1, 2, 2 * n, 2 * n + 1, 4] {
        assert!(
            GaloisKey::new(&params, &secret, bad, &mut rng).is_err(),
            "{bad}"
        );
    }
    // Without special primes there is no key switching.
    let plain = Parameters::builder()
        .degree(4096)
        .ciphertext_prime_sizes(30, 2)
        .plaintext_modulus(params.plaintext_modulus().value())
        .build()
        .unwrap();
    let plain_secret = SecretKey::generate(&plain, &mut rng);
    assert!(GaloisKey::new(&plain, &plain_secret, 3, &mut rng).is_err());
    let key = GaloisKey::new(&params, &secret, 3, &mut rng).unwrap();
    let ct = plain_secret
        .encrypt(
            &plain,
            &BatchEncoder::new(&plain).encode(&[1]).unwrap(),
            &mut rng,
        )
        .unwrap();
    assert!(Evaluator::new(&plain).apply_galois(&ct, &key).is_err());
    // Size-3 ciphertexts are refused.
    let ct = secret
        .encrypt(
            &params,
            &BatchEncoder::new(&params).encode(&[1]).unwrap(),
            &mut rng,
        )
        .unwrap();
    let eval = Evaluator::new(&params);
    let square = eval.square(&ct).unwrap();
    assert!(eval.apply_galois(&square, &key).is_err());
}

#[test]
fn special_primes_count_towards_the_security_bound() {
    let t = ntt_primes(20, 8192).next().unwrap();
    let build = |q: usize, s: usize| {
        Parameters::builder()
            .degree(8192)
            .ciphertext_prime_sizes(30, q)
            .special_primes(s)
            .plaintext_modulus(t)
            .build()
    };
    // 5 + 2 primes: 210 bits, allowed; 7 + 1: 240 bits, refused.
    let ok = build(5, 2).unwrap();
    let special = ok.special_basis().unwrap();
    assert_eq!(special.len(), 2);
    assert!(special.moduli().iter().all(|p| {
        !ok.ciphertext_basis().moduli().contains(p) && !ok.auxiliary_basis().moduli().contains(p)
    }));
    assert!(matches!(build(7, 1), Err(Error::InvalidParameters { .. })));
    // Without special primes, the identifier is the one of (n, t, Q) alone: parameters and
    // the data serialized under them keep their identity.
    assert_ne!(build(5, 2).unwrap().id(), build(5, 0).unwrap().id());
    assert_ne!(build(5, 2).unwrap().id(), build(5, 1).unwrap().id());
}

#[test]
fn galois_keys_and_parameters_with_special_primes_round_trip_and_refuse_corruption() {
    let params = toy_params(Backend::detect());
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let secret = SecretKey::generate(&params, &mut rng);
    let key = GaloisKey::new(&params, &secret, 3, &mut rng).unwrap();
    let bytes = key.to_bytes(&params);
    assert_eq!(GaloisKey::from_bytes(&params, &bytes).unwrap(), key);
    // Seeded: k0 and the seed, not k1.
    let limbs = params.max_level() + 2;
    assert_eq!(
        bytes.len(),
        16 + 4 + params.max_level() * (32 + limbs * 1024 * 30 / 8)
    );
    let p = Parameters::from_bytes(&params.to_bytes());
    // Toy parameters are below the security bound: refused on load, but parsed that far.
    assert!(matches!(p, Err(Error::InvalidParameters { .. })), "{p:?}");
    let secure = params_4096(Backend::detect());
    let restored = Parameters::from_bytes(&secure.to_bytes()).unwrap();
    assert_eq!(restored.id(), secure.id());
    assert_eq!(
        restored.special_basis().unwrap().moduli(),
        secure.special_basis().unwrap().moduli()
    );
    // A count of zero special primes is never written: refused, as is a truncated list.
    let plain = Parameters::builder()
        .degree(4096)
        .ciphertext_prime_sizes(30, 2)
        .plaintext_modulus(secure.plaintext_modulus().value())
        .build()
        .unwrap();
    assert!(Parameters::from_bytes(&[plain.to_bytes().as_slice(), &[0]].concat()).is_err());
    let with_special = secure.to_bytes();
    assert!(Parameters::from_bytes(&with_special[..with_special.len() - 4]).is_err());
    let mut other_special = secure.to_bytes();
    let at = other_special.len() - 4;
    other_special[at] ^= 2;
    assert!(Parameters::from_bytes(&other_special).is_err());
    let malformed = |b: &[u8]| {
        matches!(
            GaloisKey::from_bytes(&params, b),
            Err(Error::Malformed { .. })
        )
    };
    assert!(malformed(&bytes[..bytes.len() - 1]));
    assert!(malformed(&[bytes.as_slice(), &[0]].concat()));
    let mut even = bytes.clone();
    even[16] = 4;
    assert!(malformed(&even), "an even element");
    let mut residue = bytes.clone();
    residue[16 + 4 + 32..16 + 4 + 32 + 8].fill(0xff);
    assert!(malformed(&residue), "a residue above its prime");
    // A relinearization key is not a Galois key, nor the reverse.
    let relin = RelinearizationKey::new(&params, &secret, &mut rng).unwrap();
    assert!(malformed(&relin.to_bytes(&params)));
    assert!(RelinearizationKey::from_bytes(&params, &bytes).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(150))]
    #[test]
    fn mutated_galois_keys_are_refused_or_read_faithfully(m in crate::bfv::tests::mutation()) {
        static KEY: std::sync::OnceLock<(Parameters, Vec<u8>)> = std::sync::OnceLock::new();
        let (params, valid) = KEY.get_or_init(|| {
            let params = toy_params(Backend::Portable(crate::backend::Portable));
            let mut rng = ChaCha20Rng::seed_from_u64(6);
            let secret = SecretKey::generate(&params, &mut rng);
            let key = GaloisKey::new(&params, &secret, 3, &mut rng).unwrap();
            let bytes = key.to_bytes(&params);
            (params, bytes)
        });
        let bytes = m.apply(valid);
        crate::bfv::tests::parses_canonically(
            &bytes,
            |b| GaloisKey::from_bytes(params, b),
            |k| k.to_bytes(params),
        )?;
        let _ = Parameters::from_bytes(&bytes);
    }
}

#[test]
fn hoisted_automorphisms_equal_one_at_a_time_on_every_backend() {
    for backend in Backend::available() {
        let params = toy_params(backend);
        let n = params.degree();
        let encoder = BatchEncoder::new(&params);
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let (secret, values, ct) = encrypted_slots(&params, &mut rng);
        let keys: Vec<GaloisKey> = elements(n)
            .into_iter()
            .map(|g| GaloisKey::new(&params, &secret, g, &mut rng).unwrap())
            .collect();
        let refs: Vec<&GaloisKey> = keys.iter().collect();
        let eval = Evaluator::new(&params);
        let many = eval.apply_galois_many(&ct, &refs).unwrap();
        assert_eq!(many.len(), keys.len());
        for (key, rotated) in keys.iter().zip(&many) {
            assert_eq!(rotated, &eval.apply_galois(&ct, key).unwrap(), "{backend}");
            let got = encoder.decode(&secret.decrypt(&params, rotated).unwrap());
            assert!(
                got.iter()
                    .enumerate()
                    .all(|(i, &v)| v == values[galois_slot(n, key.element(), i)]),
                "{backend}: g = {}",
                key.element()
            );
        }
        assert!(eval.apply_galois_many(&ct, &[]).unwrap().is_empty());
    }
}

#[test]
fn truncated_keys_switch_like_full_ones_at_their_levels() {
    // A key truncated to level l rotates a ciphertext of level l to the same ciphertext as
    // the full key, is refused above l, and round-trips through its (shorter) bytes.
    let params = toy_params(Backend::detect());
    let n = params.degree();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let (secret, _, fresh) = encrypted_slots(&params, &mut rng);
    let eval = Evaluator::new(&params);
    let g = elements(n)[1];
    let full = GaloisKey::new(&params, &secret, g, &mut rng).unwrap();
    for level in 1..params.max_level() {
        let mut low = fresh.clone();
        while low.level() > level {
            eval.mod_switch_to_next_assign(&mut low).unwrap();
        }
        let key = full.clone().truncated(&params, level).unwrap();
        assert_eq!(key.level(), level);
        assert_eq!(
            eval.apply_galois(&low, &key).unwrap(),
            eval.apply_galois(&low, &full).unwrap(),
            "level {level}"
        );
        assert!(eval.apply_galois(&fresh, &key).is_err(), "level {level}");
        let bytes = key.to_bytes(&params);
        assert_eq!(bytes.len(), params.galois_key_bytes_at(level));
        assert!(bytes.len() < full.to_bytes(&params).len());
        assert_eq!(GaloisKey::from_bytes(&params, &bytes).unwrap(), key);
    }
    assert!(full.clone().truncated(&params, 0).is_err());
    assert!(full.truncated(&params, params.max_level() + 1).is_err());
}
