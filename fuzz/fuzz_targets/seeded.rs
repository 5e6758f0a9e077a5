//! Seeded ciphertexts, plain or compressed (the single-image uploads): refused or read
//! faithfully, and an accepted one expands to a ciphertext of its level.
#![no_main]
use cryptonets_core::bfv::SeededCiphertext;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params = cryptonets_fuzz::two_prime_params();
    if let Ok(seeded) = SeededCiphertext::from_bytes(params, data) {
        assert_eq!(seeded.to_bytes(params), data);
        let ct = seeded
            .expand(params)
            .expect("an accepted ciphertext expands");
        assert_eq!(ct.level(), seeded.level());
    }
});
