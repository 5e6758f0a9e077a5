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
    assert_eq!(plan["plaintext_primes"].as_array().unwrap().len(), 3);
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

    // The file pipeline does not take version 2 models yet, and says so.
    let out = cryptonets(&[
        "keygen",
        "--model",
        v2,
        "--secret-key",
        "x",
        "--eval-key",
        "y",
    ]);
    assert!(
        !out.status.success() && text(&out).contains("not supported yet"),
        "{}",
        text(&out)
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
