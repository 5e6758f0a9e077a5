//! The owner's batch records (JSON): parsed or refused, never a panic; an accepted record
//! is compared with a real batch without panicking.
#![no_main]
use cryptonets_host::pipeline::{BatchFile, BatchKind, BatchRecord};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static BATCH: OnceLock<Vec<u8>> = OnceLock::new();
    let Ok(record) = BatchRecord::from_json(data) else {
        return;
    };
    let bytes = BATCH.get_or_init(|| {
        cryptonets_fuzz::image_batch(1, cryptonets_core::network::Packing::new(16).unwrap())
    });
    let batch = BatchFile::from_bytes(bytes, BatchKind::Images).expect("valid batch");
    let _ = record.check(&batch);
    let again = BatchRecord::from_json(record.to_json().as_bytes()).expect("round trip");
    assert_eq!(again, record);
});
