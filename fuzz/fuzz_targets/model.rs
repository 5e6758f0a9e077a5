//! Model files: parsing never panics, and an accepted model's checked bounds hold for the
//! plaintext inference it allows (the exact logits stay within them).
#![no_main]
use cryptonets_core::model::Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = Model::parse(data) else {
        return;
    };
    let bounds = model.bounds();
    let _ = cryptonets_core::network::crt_primes(bounds.plaintext_bits(), 8192);
    for image in [
        [0u8; 784],
        [255u8; 784],
        core::array::from_fn(|i| (i * 37 % 256) as u8),
    ] {
        let logits = model
            .logits(&image)
            .expect("inference within the checked bounds");
        assert!(logits.iter().all(|l| l.unsigned_abs() <= bounds.logits));
    }
});
