//! Encrypted logits as the owner reads them: framing, parameters, the record check, and
//! decryption with its noise-budget check. Never a panic; a decryption that is accepted
//! gives one row of logits per image.
#![no_main]
use cryptonets_host::pipeline::{BatchFile, BatchKind, BatchRecord, decrypt_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params = cryptonets_fuzz::params();
    let Ok(batch) = BatchFile::from_bytes(data, BatchKind::Logits) else {
        return;
    };
    assert_eq!(batch.to_bytes(), data);
    let record = BatchRecord::of(&batch, None);
    record
        .check(&batch)
        .expect("a batch matches its own record");
    if let Ok(decrypted) = decrypt_batch(params, cryptonets_fuzz::secret(), &batch) {
        assert_eq!(decrypted.logits.len(), batch.header.images as usize);
    }
});
