//! Evaluation key files: refused or read faithfully, and accepted keys pass the checks the
//! evaluator makes before any work.
#![no_main]
use cryptonets_core::network::EvaluationKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params = cryptonets_fuzz::params();
    if let Ok(keys) = EvaluationKeys::from_bytes(params, data) {
        assert_eq!(keys.to_bytes(params), data);
        keys.check(params)
            .expect("parsed keys fit their parameters");
    }
});
