//! Version 2 model files (general polynomial networks): parsing never panics, and an
//! accepted network's checked bounds hold for the plaintext inference it allows (the exact
//! outputs stay within the last layer's interval), on networks small enough to run.
#![no_main]
use cryptonets_core::model::polynomial::PolynomialNetwork;
use libfuzzer_sys::fuzz_target;

/// Neurons (all layers) above which inference is skipped: parsing is what is fuzzed, and a
/// large valid network would only slow the run down.
const MAX_RUN_NEURONS: usize = 1 << 12;

fuzz_target!(|data: &[u8]| {
    let Ok(network) = PolynomialNetwork::parse(data) else {
        return;
    };
    let neurons: usize = network.shapes().iter().map(|s| s.len()).sum();
    if neurons + network.input().len() > MAX_RUN_NEURONS {
        return;
    }
    // The single-image layout of any accepted network: refused, or every column inside a
    // row, the owner's columns distinct.
    if let Ok(layout) = cryptonets_core::network::single::plan::SingleLayout::new(&network, 1024) {
        let columns = 512u32;
        let mut input: Vec<u32> = layout.input.iter().map(|&(_, c)| c).collect();
        assert!(input.iter().all(|&c| c < columns));
        input.sort_unstable();
        input.dedup();
        assert_eq!(input.len(), layout.input.len());
        assert!(
            layout
                .parts
                .iter()
                .flatten()
                .all(|p| p.columns.iter().all(|&c| c < columns))
        );
    }
    let bounds = network
        .bounds()
        .last()
        .expect("a network has layers")
        .clone();
    let len = network.input().len();
    for image in [
        vec![0u8; len],
        vec![255u8; len],
        (0..len).map(|i| (i * 37 % 256) as u8).collect(),
    ] {
        // Checked i128 where the bounds allow it (the path `predict` takes), big integers
        // otherwise; both within the bounds, and equal where both run.
        let outputs = network
            .logits_wide(&image)
            .expect("inference within the checked bounds");
        if network.fits_i128() {
            let narrow = network.logits(&image).expect("fits i128");
            assert!(
                narrow
                    .iter()
                    .zip(&outputs)
                    .all(|(n, w)| num_bigint::BigInt::from(*n) == *w)
            );
        }
        assert_eq!(outputs.len(), network.classes());
        assert!(
            outputs
                .iter()
                .all(|o| *o >= bounds.low && *o <= bounds.high)
        );
    }
});
