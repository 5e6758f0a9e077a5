//! The committed models on the real MNIST test set (fetched by scripts/fetch-mnist.sh; CI
//! does).

use cryptonets_core::model::Model;
use cryptonets_core::model::polynomial::PolynomialNetwork;
use cryptonets_host::mnist::{self, Dataset, PIXELS, Split};
use rayon::prelude::*;

/// The MNIST test set, or None (the test skips) outside CI when it was not fetched.
fn test_set() -> Option<Dataset> {
    let dir = mnist::default_dir();
    if !dir.join("t10k-images-idx3-ubyte").exists() {
        assert!(
            std::env::var("CI").is_err(),
            "MNIST is required in CI (CI is set): fetch it with bash scripts/fetch-mnist.sh"
        );
        eprintln!(
            "SKIPPED: no MNIST in {} (bash scripts/fetch-mnist.sh)",
            dir.display()
        );
        return None;
    }
    Some(mnist::load(&dir, Split::Test).unwrap())
}

#[test]
fn committed_model_scores_its_recorded_accuracy_with_integer_inference() {
    let Some(test) = test_set() else { return };
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/cryptonets-mnist.cnmd"
    ))
    .unwrap();
    let model = Model::parse(&bytes).unwrap();
    let correct = (0..test.len())
        .filter(|&i| {
            let pixels: &[u8; PIXELS] = test.image(i).try_into().unwrap();
            let logits = model.logits(pixels).unwrap();
            assert!(
                logits
                    .iter()
                    .all(|l| l.unsigned_abs() <= model.bounds().logits)
            );
            model.predict(pixels) == Ok(test.labels[i] as usize)
        })
        .count();
    let (float, integer) = model.recorded_accuracy();
    assert_eq!(
        correct, integer as usize,
        "integer accuracy differs from the recorded one"
    );
    assert!(correct >= 9900, "{correct} / 10000 is below 99.0%");
    assert!(
        float as usize - correct <= 20,
        "more than 0.2 points below the float network"
    );
}

/// The deeper model (models/mnist-deep.cnmd, trained by train/pytorch/deep.py) re-scored on
/// all 10,000 test images: exactly its recorded integer accuracy, at least 99.4%, and its
/// logits inside the bounds its plan was made for.
#[test]
fn deep_model_scores_its_recorded_accuracy_of_at_least_99_4_percent() {
    let Some(test) = test_set() else { return };
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/mnist-deep.cnmd"
    ))
    .unwrap();
    let network = PolynomialNetwork::parse(&bytes).unwrap();
    assert!(network.fits_i128());
    let bounds = network.bounds().last().unwrap();
    let correct = (0..test.len())
        .into_par_iter()
        .filter(|&i| {
            let logits = network.logits(test.image(i)).unwrap();
            assert!(logits.iter().all(|&l| {
                let l = num_bigint::BigInt::from(l);
                bounds.low <= l && l <= bounds.high
            }));
            cryptonets_core::model::argmax(&logits) == test.labels[i] as usize
        })
        .count();
    let (float, integer) = network.recorded_accuracy();
    assert_eq!(
        correct, integer as usize,
        "integer accuracy differs from the recorded one"
    );
    assert!(correct >= 9940, "{correct} / 10000 is below 99.4%");
    assert!(
        (float as usize).saturating_sub(correct) <= 20,
        "more than 0.2 points below the float network"
    );
}
