//! Single-image evaluation key files: refused or read faithfully (every accepted file
//! serializes back to itself).
#![no_main]
use cryptonets_core::network::single::SingleKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params = cryptonets_fuzz::params();
    if let Ok(keys) = SingleKeys::from_bytes(params, data) {
        assert_eq!(keys.to_bytes(params), data);
        assert_eq!(keys.serialized_len(params), data.len());
    }
});
