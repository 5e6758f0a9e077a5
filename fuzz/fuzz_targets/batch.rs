//! Batches of encrypted images as the service reads them: framing, parameters, then every
//! seeded ciphertext of every channel. Accepted batches re-serialize to the same bytes.
#![no_main]
use cryptonets_core::bfv::SeededCiphertext;
use cryptonets_host::pipeline::{BatchFile, BatchKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params = cryptonets_fuzz::params();
    let Ok(batch) = BatchFile::from_bytes(data, BatchKind::Images) else {
        return;
    };
    assert_eq!(batch.to_bytes(), data);
    if batch.check_parameters(params).is_err() {
        return;
    }
    let per_channel = batch.items.len() / params.channels().len();
    for (i, item) in batch.items.iter().enumerate() {
        let p = &params.channels()[i / per_channel];
        if let Ok(ct) = SeededCiphertext::from_bytes(p, item) {
            assert_eq!(ct.to_bytes(p), item.as_ref());
            let _ = ct
                .expand(p)
                .expect("a parsed ciphertext of these parameters expands");
        }
    }
});
