//! ONNX files (the trainer's importer, `train/src/onnx.rs`): importing never panics, and an
//! imported float network compiles and gives finite outputs of its declared size.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(network) = cryptonets_train::onnx::import(data) else {
        return;
    };
    let Ok(compiled) = network.compile() else {
        return;
    };
    let outputs = compiled.logits(&vec![0.5; network.input.len()]);
    assert!(!outputs.is_empty());
});
