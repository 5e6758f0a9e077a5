//! BFV known answers: with a fixed seed, every backend writes the same bytes for the
//! parameters, secret key and ciphertexts in `vectors/bfv/` (checked against
//! `vectors/SHA256SUMS`), and `vectors/decrypt_bfv.py`, which shares no code with the
//! project, decrypts those ciphertexts to the slots in `vectors/bfv/expected.json`. The
//! `galois_*` files do the same for Galois automorphisms (parameters with a special prime):
//! the script decrypts the rotated ciphertexts and checks their slots against its own
//! permutation of the fresh ones.
//!
//! `CRYPTONETS_WRITE_VECTORS=1 cargo test -p cryptonets-tests --test bfv_kat` rewrites the
//! files (then run `python3 vectors/generate_ntt.py` to refresh SHA256SUMS).

use cryptonets_core::Backend;
use cryptonets_core::bfv::{
    BatchEncoder, Evaluator, GaloisKey, KeyGenerator, Parameters, SecretKey, galois_slot,
};
use cryptonets_core::zq::prime::ntt_primes;
use cryptonets_tests::{vectors_dir, verified_vectors};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The files, in order: parameters, secret key, fresh ciphertext, product ciphertext; and
/// the expected slots of the two ciphertexts as JSON.
fn produce(backend: Backend) -> (Vec<(&'static str, Vec<u8>)>, String) {
    let t = ntt_primes(18, 4096).next().unwrap();
    let params = Parameters::builder()
        .degree(4096)
        .ciphertext_prime_sizes(30, 3)
        .plaintext_modulus(t)
        .backend(backend)
        .build()
        .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(2016);
    let (sk, pk, rlk) = KeyGenerator::generate(&params, &mut rng);
    let encoder = BatchEncoder::new(&params);
    let x: Vec<u64> = (0..4096u64).map(|i| (i * i + 7) % t as u64).collect();
    let y: Vec<u64> = (0..4096u64).map(|i| (3 * i + 1) % t as u64).collect();
    let cx = sk
        .encrypt(&params, &encoder.encode(&x).unwrap(), &mut rng)
        .unwrap();
    let cy = pk
        .encrypt(&params, &encoder.encode(&y).unwrap(), &mut rng)
        .unwrap();
    let eval = Evaluator::new(&params);
    let mut product = eval.multiply(&cx, &cy).unwrap();
    eval.relinearize_assign(&mut product, &rlk).unwrap();
    eval.mod_switch_to_next_assign(&mut product).unwrap();
    let xy: Vec<u64> = x.iter().zip(&y).map(|(a, b)| a * b % t as u64).collect();
    assert_eq!(encoder.decode(&sk.decrypt(&params, &product).unwrap()), xy);
    let files = vec![
        ("bfv/parameters.bin", params.to_bytes()),
        ("bfv/secret_key.bin", sk.to_bytes(&params).to_vec()),
        ("bfv/fresh_ciphertext.bin", cx.to_bytes(&params)),
        ("bfv/product_ciphertext.bin", product.to_bytes(&params)),
    ];
    let expected = serde_json::json!({
        "fresh_ciphertext.bin": x,
        "product_ciphertext.bin": xy,
    });
    let (mut galois_files, galois_expected) = produce_galois(backend);
    let mut files = files;
    files.append(&mut galois_files);
    files.push(("bfv/galois_expected.json", galois_expected.into_bytes()));
    (files, format!("{expected}\n"))
}

/// n = 4096, two primes of Q and one special prime: a fresh ciphertext, its images under
/// X -> X^3 (a rotation of the slot rows) and X -> X^(2n - 1) (the swap of the two rows), and
/// the expected slots of each with the elements applied.
fn produce_galois(backend: Backend) -> (Vec<(&'static str, Vec<u8>)>, String) {
    let n = 4096;
    let t = ntt_primes(18, n).next().unwrap();
    let params = Parameters::builder()
        .degree(n)
        .ciphertext_prime_sizes(30, 2)
        .special_primes(1)
        .plaintext_modulus(t)
        .backend(backend)
        .build()
        .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(2025);
    let sk = SecretKey::generate(&params, &mut rng);
    let encoder = BatchEncoder::new(&params);
    let x: Vec<u64> = (0..n as u64)
        .map(|i| (5 * i * i + 3 * i + 11) % t as u64)
        .collect();
    let fresh = sk
        .encrypt(&params, &encoder.encode(&x).unwrap(), &mut rng)
        .unwrap();
    let eval = Evaluator::new(&params);
    let mut files = vec![
        ("bfv/galois_parameters.bin", params.to_bytes()),
        ("bfv/galois_secret_key.bin", sk.to_bytes(&params).to_vec()),
        ("bfv/galois_fresh_ciphertext.bin", fresh.to_bytes(&params)),
    ];
    let mut expected =
        serde_json::json!({ "galois_fresh_ciphertext.bin": { "element": 1, "slots": x } });
    for (name, g) in [
        ("bfv/galois_rotated_3.bin", 3),
        ("bfv/galois_rotated_8191.bin", 2 * n - 1),
    ] {
        let key = GaloisKey::new(&params, &sk, g, &mut rng).unwrap();
        let rotated = eval.apply_galois(&fresh, &key).unwrap();
        let slots: Vec<u64> = (0..n).map(|i| x[galois_slot(n, g, i)]).collect();
        assert_eq!(
            encoder.decode(&sk.decrypt(&params, &rotated).unwrap()),
            slots
        );
        files.push((name, rotated.to_bytes(&params)));
        expected[name.trim_start_matches("bfv/")] =
            serde_json::json!({ "element": g, "slots": slots });
    }
    (files, format!("{expected}\n"))
}

#[test]
fn bfv_vectors_are_reproduced_bit_for_bit_on_every_backend() {
    let backends = Backend::available();
    let (reference, expected) = produce(backends[0]);
    if std::env::var("CRYPTONETS_WRITE_VECTORS").is_ok_and(|v| v == "1") {
        let dir = vectors_dir().join("bfv");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &reference {
            std::fs::write(vectors_dir().join(name), bytes).unwrap();
        }
        std::fs::write(dir.join("expected.json"), &expected).unwrap();
    }
    let recorded = verified_vectors("bfv/");
    for backend in backends {
        let (files, json) = produce(backend);
        for (name, bytes) in &files {
            let (_, stored) = recorded
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert!(
                stored == bytes,
                "{name}: {backend} writes different bytes than recorded"
            );
        }
        let (_, stored_json) = recorded
            .iter()
            .find(|(n, _)| n == "bfv/expected.json")
            .expect("expected.json");
        assert_eq!(stored_json, json.as_bytes(), "{backend}");
    }
}
