//! MNIST IDX files: images and labels parsed or refused, and a pair checked together.
//! The first byte splits the rest into an image file and a label file.
#![no_main]
use cryptonets_host::mnist;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize * rest.len()) / 255;
    let (images, labels) = rest.split_at(at.min(rest.len()));
    let _ = mnist::parse_images(images);
    let _ = mnist::parse_labels(labels);
    if let Ok(set) = mnist::parse(
        std::path::Path::new("fuzz"),
        mnist::Split::Test,
        images,
        labels,
    ) {
        assert_eq!(set.labels.len(), set.len());
        assert!(set.labels.iter().all(|&l| l < 10));
    }
});
