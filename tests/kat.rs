//! Known-answer tests: the vectors of `vectors/generate_ntt.py`, an independent big-integer
//! implementation, reproduced by every backend this machine runs.

use cryptonets_core::zq::prime::ntt_primes;
use cryptonets_core::{Backend, Kernels, Modulus, NttTable};
use cryptonets_tests::verified_vectors;
use serde::Deserialize;

#[derive(Deserialize)]
struct NttVector {
    n: usize,
    prime_bits: u32,
    prime_index: usize,
    q: u32,
    psi: u32,
    a: Vec<u32>,
    forward_a: Vec<u32>,
    b: Vec<u32>,
    product_ab: Vec<u32>,
}

#[test]
fn ntt_vectors_on_every_backend() {
    let backends = Backend::available();
    eprintln!("known-answer tests on: {backends:?}");
    for (name, data) in verified_vectors("ntt/") {
        let v: NttVector = serde_json::from_slice(&data).expect(&name);
        // The prime search and the root of unity are part of the known answer.
        assert_eq!(
            ntt_primes(v.prime_bits, v.n).nth(v.prime_index),
            Some(v.q),
            "{name}: prime"
        );
        let modulus = Modulus::new(v.q).unwrap();
        let table = NttTable::new(modulus, v.n).unwrap();
        assert_eq!(table.psi(), v.psi, "{name}: psi");
        for backend in &backends {
            let mut a = v.a.clone();
            backend.forward_ntt(&mut a, &table);
            assert!(a == v.forward_a, "{name}: forward on {backend}");
            backend.inverse_ntt(&mut a, &table);
            assert!(a == v.a, "{name}: inverse on {backend}");

            let (mut fa, mut fb) = (v.a.clone(), v.b.clone());
            backend.forward_ntt(&mut fa, &table);
            backend.forward_ntt(&mut fb, &table);
            backend.mul_assign(&mut fa, &fb, &modulus);
            backend.inverse_ntt(&mut fa, &table);
            assert!(fa == v.product_ab, "{name}: product on {backend}");
        }
    }
}
