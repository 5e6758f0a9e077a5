//! Secret key files: refused or read faithfully (re-serialized to the same bytes).
#![no_main]
use cryptonets_core::bfv::SecretKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params = &cryptonets_fuzz::params().channels()[0];
    if let Ok(key) = SecretKey::from_bytes(params, data) {
        assert_eq!(&key.to_bytes(params)[..], data);
    }
});
