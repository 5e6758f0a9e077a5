//! Serialized BFV parameters: validated (128-bit security included) or refused; accepted
//! ones re-serialize to the same bytes.
#![no_main]
use cryptonets_core::bfv::Parameters;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = Parameters::from_bytes(data) {
        assert_eq!(params.to_bytes(), data);
    }
});
