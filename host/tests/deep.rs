//! The committed deeper model (models/mnist-deep.cnmd) evaluated encrypted through the CLI:
//! one batch of MNIST test images, exact. Its own test binary, so that its few GiB of
//! ciphertexts do not overlap the other tests' memory.

#[path = "support/cli.rs"]
mod support;

use support::{cryptonets, data, text};

#[test]
fn the_deep_model_runs_encrypted_exactly_on_mnist() {
    let Some(dir) = data() else { return };
    let out = cryptonets(&[
        "run",
        "--model",
        "models/mnist-deep.cnmd",
        "--images",
        "32",
        "--data",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["images"], 32);
    assert_eq!(report["agreement"], 1.0);
    assert_eq!(report["exact_logits"], 1.0);
    assert_eq!(report["accuracy"], report["plaintext_accuracy"]);
    // The plan's budget estimate is a lower bound of what decryption measures.
    let measured = report["measured_noise_budget_bits"].as_f64().unwrap();
    let estimated = report["estimated_noise_budget_bits"].as_f64().unwrap();
    assert!(estimated <= measured, "{report}");
}

#[test]
fn model_score_rescores_the_deep_model_on_the_validation_split_and_the_test_set() {
    let Some(dir) = data() else { return };
    let dir = dir.to_str().unwrap();
    let out = cryptonets(&[
        "model",
        "score",
        "models/mnist-deep.cnmd",
        "--data",
        dir,
        "--validation",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("4974 of 5000 validation images correct"),
        "{}",
        text(&out)
    );
    let out = cryptonets(&["model", "score", "models/mnist-deep.cnmd", "--data", dir]);
    assert!(
        text(&out).contains("9950 of 10000 test images correct (integer accuracy 0.9950)"),
        "{}",
        text(&out)
    );
    // Not MNIST's input shape: refused with the reason.
    let out = cryptonets(&["model", "score", "Cargo.toml", "--data", dir]);
    assert!(!out.status.success());
}
