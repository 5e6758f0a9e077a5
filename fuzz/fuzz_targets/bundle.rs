//! Single-image bundles (uploads and results): refused or read faithfully, never an object
//! longer than allowed nor more images than a bundle holds.
#![no_main]
use cryptonets_host::bundle::{Bundle, MAX_BUNDLE_IMAGES, RESULTS, UPLOADS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (kind, per) in [(UPLOADS, 1), (RESULTS, 2)] {
        if let Ok(bundle) = Bundle::from_bytes(data, kind, 2, per, 4096) {
            assert_eq!(bundle.to_bytes(), data);
            assert!(bundle.objects.len() <= MAX_BUNDLE_IMAGES);
            assert!(
                bundle
                    .objects
                    .iter()
                    .flatten()
                    .flatten()
                    .all(|o| o.len() <= 4096)
            );
        }
    }
});
