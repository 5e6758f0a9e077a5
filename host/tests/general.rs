//! General polynomial networks through the `cryptonets` binary: conversion to model format
//! v2, the planner's report, and encrypted evaluation with the general evaluator, exact
//! against plaintext inference.

#[path = "support/cli.rs"]
mod support;
use support::*;

use cryptonets_core::model::polynomial::{Layer, PolynomialNetwork, Shape};

#[test]
fn v1_models_convert_plan_and_run_exactly_with_the_general_evaluator() {
    let tmp = tempdir("convert");
    let v2 = tmp.join("cryptonets-v2.cnmd");
    let v2 = v2.to_str().unwrap();
    let out = cryptonets(&["model", "convert", "models/cryptonets-mnist.cnmd", v2]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cryptonets(&["model", "info", v2]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("(version 2): input 1x28x28"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("values in [0, "), "{}", text(&out));
    let out = cryptonets(&["plan", v2, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["n"], 8192);
    // Two CRT channels: the two smallest primes that hold its 57-bit outputs.
    assert_eq!(plan["plaintext_primes"].as_array().unwrap().len(), 2);
    let kinds: Vec<&str> = plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["conv2d", "polynomial", "dense", "polynomial", "dense"]
    );
    assert!(
        plan["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["estimated_budget_bits"].as_f64().unwrap() >= 4.0)
    );

    let data = workspace().join("data/mnist/t10k-images-idx3-ubyte");
    if !data.exists() {
        assert!(std::env::var("CI").is_err(), "MNIST is required in CI");
        return;
    }
    let out = cryptonets(&["run", "--model", v2, "--images", "24", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["evaluator"], "general");
    assert_eq!(report["agreement"], 1.0);
    assert_eq!(report["exact_logits"], 1.0);
    assert!(
        report["measured_noise_budget_bits"].as_f64().unwrap()
            >= report["estimated_noise_budget_bits"].as_f64().unwrap()
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn plan_reports_multi_channel_networks_and_refuses_hopeless_ones() {
    let tmp = tempdir("plan");
    let conv = Layer::Conv2d {
        out_channels: 4,
        window: cryptonets_core::model::polynomial::Window {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1, 1, 1],
        },
        weights: (0..4 * 3 * 9).map(|i| (i % 7) as i16 - 3).collect(),
        biases: vec![1, -2, 3, 0],
    };
    let quadratic = Layer::Polynomial {
        coefficients: [1, 2, 1, 0],
    };
    let pool = Layer::SumPool {
        window: cryptonets_core::model::polynomial::Window {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0; 4],
        },
    };
    let features = 4 * 8 * 8;
    let dense = Layer::Dense {
        outputs: 10,
        weights: (0..10 * features).map(|i| (i % 5) as i16 - 2).collect(),
        biases: vec![0; 10],
    };
    let input = Shape {
        channels: 3,
        height: 32,
        width: 32,
    };
    let network = PolynomialNetwork::new(
        input,
        15,
        vec![conv, quadratic, pool, Layer::Flatten, dense],
    )
    .unwrap();
    std::fs::write(tmp.join("cifar.cnmd"), network.to_bytes()).unwrap();
    let model = tmp.join("cifar.cnmd");
    let out = cryptonets(&["plan", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("input 3x32x32"), "{}", text(&out));
    // No 3x32x32 data set ships: run feeds seeded random images and checks exactness only.
    let out = cryptonets(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--images",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["images"], 2);
    assert!(report["accuracy"].is_null(), "{report}");
    assert_eq!(report["agreement"], 1.0);
    assert_eq!(report["exact_logits"], 1.0);

    // Fifteen cubes of values that stay in {0, 1} (identity dense layers): small bounds,
    // but about 30 multiplications deep, more than any ring holds.
    let cube = Layer::Polynomial {
        coefficients: [0, 0, 0, 1],
    };
    let identity = || Layer::Dense {
        outputs: 4,
        weights: (0..16).map(|i| (i % 5 == 0) as i16).collect(),
        biases: vec![0; 4],
    };
    let mut layers = vec![identity()];
    for _ in 0..15 {
        layers.push(cube.clone());
        layers.push(identity());
    }
    let deep = PolynomialNetwork::new(Shape::vector(4), 1, layers).unwrap();
    assert!(deep.plaintext_bits() <= 2);
    std::fs::write(tmp.join("deep.cnmd"), deep.to_bytes()).unwrap();
    let out = cryptonets(&["plan", tmp.join("deep.cnmd").to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no parameters evaluate this network"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A small network on 3 x 8 x 8 inputs: a padded strided convolution, a quadratic, a sum
/// pool, a dense layer.
fn small_rgb_network() -> PolynomialNetwork {
    use cryptonets_core::model::polynomial::Window;
    let conv = Layer::Conv2d {
        out_channels: 2,
        window: Window {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1, 1, 1],
        },
        weights: (0..2 * 3 * 9).map(|i| (i % 5) as i16 - 2).collect(),
        biases: vec![3, -1],
    };
    let pool = Layer::SumPool {
        window: Window {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0; 4],
        },
    };
    let dense = Layer::Dense {
        outputs: 5,
        weights: (0..5 * 2 * 16).map(|i| (i % 7) as i16 - 3).collect(),
        biases: vec![1, 0, -1, 2, 0],
    };
    let input = Shape {
        channels: 3,
        height: 8,
        width: 8,
    };
    let quadratic = Layer::Polynomial {
        coefficients: [0, 1, 1, 0],
    };
    PolynomialNetwork::new(input, 7, vec![conv, quadratic, pool, Layer::Flatten, dense]).unwrap()
}

#[test]
fn version_2_models_go_through_keygen_encrypt_eval_and_decrypt_files() {
    let tmp = tempdir("v2-files");
    let path = |name: &str| tmp.join(name).to_str().unwrap().to_string();
    let network = small_rgb_network();
    std::fs::write(path("rgb.cnmd"), network.to_bytes()).unwrap();
    let images = 40;
    let pixels: Vec<u8> = (0..images * network.input().len())
        .map(|i| (i * 37 % 251) as u8)
        .collect();
    std::fs::write(path("pixels"), &pixels).unwrap();

    let out = cryptonets(&[
        "keygen",
        "--model",
        &path("rgb.cnmd"),
        "--images",
        "40",
        "--secret-key",
        &path("sk"),
        "--eval-key",
        &path("ek"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cryptonets(&["plan", &path("rgb.cnmd"), "--images", "40", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        text(&out).contains(&format!("\"n\":{}", plan["n"])),
        "{}",
        text(&out)
    );
    // Without --pixels, a model whose inputs are not MNIST's says what it needs.
    let out = cryptonets(&[
        "encrypt",
        "--model",
        &path("rgb.cnmd"),
        "--secret-key",
        &path("sk"),
        "--out",
        &path("batch"),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--pixels"), "{}", text(&out));
    // A file that is not whole images is refused.
    std::fs::write(path("ragged"), &pixels[..100]).unwrap();
    let out = cryptonets(&[
        "encrypt",
        "--model",
        &path("rgb.cnmd"),
        "--secret-key",
        &path("sk"),
        "--pixels",
        &path("ragged"),
        "--out",
        &path("batch"),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("whole number"), "{}", text(&out));

    let out = cryptonets(&[
        "encrypt",
        "--model",
        &path("rgb.cnmd"),
        "--secret-key",
        &path("sk"),
        "--pixels",
        &path("pixels"),
        "--out",
        &path("batch"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("40 images encrypted"), "{}", text(&out));
    let out = cryptonets(&[
        "eval",
        "--model",
        &path("rgb.cnmd"),
        "--eval-key",
        &path("ek"),
        "--input",
        &path("batch"),
        "--out",
        &path("outputs"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cryptonets(&[
        "decrypt",
        "--model",
        &path("rgb.cnmd"),
        "--secret-key",
        &path("sk"),
        "--input",
        &path("outputs"),
        "--record",
        &path("batch.record"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let predictions: Vec<usize> = report["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as usize)
        .collect();
    let expected: Vec<usize> = pixels
        .chunks(network.input().len())
        .map(|image| network.predict(image).unwrap())
        .collect();
    assert_eq!(predictions, expected);
    assert!(expected.iter().any(|&p| p != expected[0]), "{expected:?}");
    assert!(report["accuracy"].is_null());

    // Keys of another model (the CryptoNets network) match no plan of this one.
    let out = cryptonets(&[
        "keygen",
        "--secret-key",
        &path("other-sk"),
        "--eval-key",
        &path("other-ek"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cryptonets(&[
        "eval",
        "--model",
        &path("rgb.cnmd"),
        "--eval-key",
        &path("other-ek"),
        "--input",
        &path("batch"),
        "--out",
        &path("outputs2"),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no plan of this model takes this key"),
        "{}",
        text(&out)
    );
    // A batch of images is not taken where outputs are expected, nor by the CryptoNets
    // model (other shape and parameters).
    let out = cryptonets(&[
        "decrypt",
        "--model",
        &path("rgb.cnmd"),
        "--secret-key",
        &path("sk"),
        "--input",
        &path("batch"),
        "--record",
        &path("batch.record"),
    ]);
    assert!(!out.status.success());
    // (It is refused by its size before it is read.)
    assert!(
        text(&out).contains("more than a file of encrypted outputs can be"),
        "{}",
        text(&out)
    );
    let out = cryptonets(&[
        "eval",
        "--eval-key",
        &path("other-ek"),
        "--input",
        &path("batch"),
        "--out",
        &path("outputs3"),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    std::fs::remove_dir_all(&tmp).unwrap();
}
