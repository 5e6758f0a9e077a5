//! The committed model on the real MNIST test set (fetched by scripts/fetch-mnist.sh; CI does).

use cryptonets_core::model::Model;
use cryptonets_host::mnist::{self, PIXELS, Split};

#[test]
fn committed_model_scores_its_recorded_accuracy_with_integer_inference() {
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
        return;
    }
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/cryptonets-mnist.cnmd"
    ))
    .unwrap();
    let model = Model::parse(&bytes).unwrap();
    let test = mnist::load(&dir, Split::Test).unwrap();
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
