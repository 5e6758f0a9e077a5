//! The importer on files PyTorch wrote (`train/fixtures/onnx/`, made by
//! `train/pytorch/make_fixtures.py` with both exporters), against PyTorch's own outputs, and
//! on hostile variants of them.

use std::path::{Path, PathBuf};

use super::*;
use crate::quantize::polynomial::{Precision, quantize, weighted_layers};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("onnx")
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("json")
}

/// Probe k's value at (c, y, x), as the generator computes it.
fn probe(k: usize, shape: Shape) -> Vec<f64> {
    let mut v = Vec::with_capacity(shape.len());
    for c in 0..shape.channels {
        for y in 0..shape.height {
            for x in 0..shape.width {
                v.push(((k * 7919 + c * 1031 + y * 131 + x * 17) % 256) as f64 / 255.0);
            }
        }
    }
    v
}

const NETWORKS: [&str; 8] = [
    "cryptonets",
    "cryptonets_bn",
    "cryptonets_avgpool",
    "cryptonets_normalized",
    "two_conv_bn",
    "quadratic",
    "mlp",
    "rgb32",
];

#[test]
fn every_pytorch_export_imports_and_computes_what_pytorch_computed() {
    let expected = expected();
    for name in NETWORKS {
        let entry = &expected[name];
        for exporter in ["legacy", "dynamo"] {
            let file = fixtures().join(format!("{name}.{exporter}.onnx"));
            let net = import_file(&file).unwrap_or_else(|e| panic!("{name} ({exporter}): {e}"));
            let compiled = net.compile().expect("compiles");
            let logits = entry["probe_logits"].as_array().expect("probe logits");
            for (k, want) in logits.iter().enumerate() {
                let got = compiled.logits(&probe(k, net.input));
                let want: Vec<f64> = want
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * scale,
                        "{name} ({exporter}) probe {k}: {got:?} vs PyTorch {want:?}"
                    );
                }
                assert_eq!(got.len(), want.len());
            }
            // And it quantizes to a valid integer network.
            let precision = Precision {
                levels: 15,
                bits: vec![6; weighted_layers(&net)],
            };
            quantize(&net, &precision).unwrap_or_else(|e| panic!("{name} ({exporter}): {e}"));
        }
    }
}

#[test]
fn both_exporters_give_the_same_network() {
    for name in NETWORKS {
        let [a, b] = ["legacy", "dynamo"]
            .map(|e| import_file(&fixtures().join(format!("{name}.{e}.onnx"))).unwrap());
        assert_eq!(a.input, b.input, "{name}");
        assert_eq!(a.layers.len(), b.layers.len(), "{name}");
    }
}

#[test]
fn refused_operators_name_the_node_and_what_to_use() {
    for (file, op, advice) in [
        ("refused_relu.legacy.onnx", "Relu", "polynomial activations"),
        ("refused_maxpool.legacy.onnx", "MaxPool", "AvgPool2d"),
    ] {
        let err = import_file(&fixtures().join(file)).unwrap_err().to_string();
        assert!(err.contains(op) && err.contains(advice), "{err}");
    }
}

/// A copy of a fixture in a fresh directory, with its data file under another name or not.
fn copy_fixture(name: &str, data: Option<&str>) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let model = dir.path().join(format!("{name}.dynamo.onnx"));
    std::fs::copy(fixtures().join(format!("{name}.dynamo.onnx")), &model).unwrap();
    if let Some(data) = data {
        std::fs::copy(
            fixtures().join(format!("{name}.dynamo.onnx.data")),
            dir.path().join(data),
        )
        .unwrap();
    }
    (dir, model)
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(std::path::PathBuf);

    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "cryptonets-onnx-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn hostile_files_are_refused_with_a_reason() {
    // The external data file missing, or truncated.
    let (_dir, model) = copy_fixture("cryptonets", None);
    let err = import_file(&model).unwrap_err().to_string();
    assert!(
        err.contains("cannot read") && err.contains(".onnx.data"),
        "{err}"
    );
    let (dir, model) = copy_fixture("cryptonets", Some("cryptonets.dynamo.onnx.data"));
    let data = dir.path().join("cryptonets.dynamo.onnx.data");
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let err = import_file(&model).unwrap_err().to_string();
    assert!(err.contains("outside"), "{err}");
    // Bytes given without a path cannot reach external weights.
    let err = import(&std::fs::read(fixtures().join("cryptonets.dynamo.onnx")).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("import the model by its path"), "{err}");
    // A location that leaves the directory.
    let mut bytes = std::fs::read(fixtures().join("cryptonets.dynamo.onnx")).unwrap();
    let needle = b"cryptonets.dynamo.onnx.data";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("location");
    bytes[at..at + 3].copy_from_slice(b"../");
    let (dir, _) = copy_fixture("cryptonets", None);
    let escaped = dir.path().join("escaped.onnx");
    std::fs::write(&escaped, &bytes).unwrap();
    let err = import_file(&escaped).unwrap_err().to_string();
    assert!(err.contains("leaves the model's directory"), "{err}");
    // Every truncation of an inline model is refused, never a panic.
    let legacy = std::fs::read(fixtures().join("mlp.legacy.onnx")).unwrap();
    for cut in (0..legacy.len()).step_by(legacy.len() / 97 + 1) {
        assert!(import(&legacy[..cut]).is_err(), "cut at {cut}");
    }
    // Random mutations of small models (one to four bytes set to random values; attributes,
    // dimensions and op names among them): refused or imported, never a panic.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for small in [
        "rgb32.legacy.onnx",
        "two_conv_bn.legacy.onnx",
        "refused_maxpool.legacy.onnx",
    ] {
        let original = std::fs::read(fixtures().join(small)).unwrap();
        for _ in 0..3000 {
            let mut b = original.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % b.len() as u64) as usize;
                b[at] = next() as u8;
            }
            if let Ok(net) = import(&b) {
                let _ = net.compile().map(|c| c.logits(&vec![0.5; net.input.len()]));
            }
        }
    }
    // Flipped bytes: refused or imported, never a panic.
    for i in (0..legacy.len()).step_by(legacy.len() / 101 + 1) {
        let mut b = legacy.clone();
        b[i] ^= 0x5a;
        let _ = import(&b);
    }
}

/// Imported, quantized, planned with real (128-bit) parameters and evaluated encrypted: the
/// decrypted logits equal plaintext integer inference on every image. The normalized export
/// takes the per-neuron convolution biases, the 3 x 32 x 32 one multi-channel inputs.
#[test]
fn imported_networks_evaluate_exactly_under_encryption() {
    use cryptonets_core::bfv::SecretKey;
    use cryptonets_core::network::{
        EvaluationKeys, PlannedNetwork, PolynomialEvaluator, decrypt_outputs_wide,
        encode_network_inputs,
    };
    use rand_core::{Rng, SeedableRng};
    for file in ["cryptonets_normalized.legacy.onnx", "rgb32.dynamo.onnx"] {
        let net = import_file(&fixtures().join(file)).unwrap();
        let precision = Precision {
            levels: 15,
            bits: vec![5; weighted_layers(&net)],
        };
        let network = quantize(&net, &precision).unwrap();
        let planned =
            PlannedNetwork::new(&network, cryptonets_core::Backend::detect(), 2, 8).unwrap();
        let params = &planned.params;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(13);
        let images: Vec<Vec<u8>> = (0..8)
            .map(|_| {
                (0..network.input().len())
                    .map(|_| rng.next_u32() as u8)
                    .collect()
            })
            .collect();
        let pixels: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
        let secret = SecretKey::generate(&params.channels()[0], &mut rng);
        let keys = EvaluationKeys::generate(params, &secret, 1, &mut rng).unwrap();
        let evaluator = PolynomialEvaluator::new(params, &network, &keys).unwrap();
        let mut outputs = Vec::new();
        for (c, p) in params.channels().iter().enumerate() {
            let inputs = encode_network_inputs(p, &network, &pixels)
                .unwrap()
                .iter()
                .map(|m| secret.encrypt(p, m, &mut rng))
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            outputs.push(evaluator.evaluate_channel(c, &inputs).unwrap());
        }
        let (values, budget) =
            decrypt_outputs_wide(params, &secret, &outputs, pixels.len()).unwrap();
        assert!(budget >= 4, "{file}: budget {budget}");
        for (image, got) in pixels.iter().zip(&values) {
            assert_eq!(got, &network.logits_wide(image).unwrap(), "{file}");
        }
    }
}

/// At fine precision the integer network is, logit by logit, a positive multiple of the
/// float one (the quantizer's scales are right for every layer kind the fixtures hold).
#[test]
fn fine_quantization_is_a_positive_multiple_of_the_float_network() {
    for name in NETWORKS {
        let net = import_file(&fixtures().join(format!("{name}.legacy.onnx"))).unwrap();
        let compiled = net.compile().unwrap();
        let precision = Precision {
            levels: 63,
            bits: vec![7; weighted_layers(&net)],
        };
        let network = quantize(&net, &precision).unwrap();
        for k in 0..4 {
            let float = compiled.logits(&probe(k, net.input));
            // Pixels p such that p / 255 is the probe (the probe is k-th of the generator's).
            let pixels: Vec<u8> = probe(k, net.input)
                .iter()
                .map(|v| (v * 255.0).round() as u8)
                .collect();
            let integer: Vec<f64> = network
                .logits_wide(&pixels)
                .unwrap()
                .iter()
                .map(|v| v.to_string().parse::<f64>().unwrap())
                .collect();
            let top =
                crate::float_network::argmax(&float.iter().map(|v| v.abs()).collect::<Vec<_>>());
            let ratio = integer[top] / float[top];
            assert!(ratio > 0.0, "{name}: scale {ratio}");
            let max = float.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (i, f) in integer.iter().zip(&float) {
                assert!(
                    (i / ratio - f).abs() <= 0.05 * max,
                    "{name} probe {k}: {integer:?} vs {float:?}"
                );
            }
        }
    }
}

/// A network imported with a normalization outside its graph computes, on x, what the plain
/// import computes on (x - mean) / std; and for the CryptoNets network exported with and
/// without its in-graph normalization, the two imports agree.
#[test]
fn a_normalization_given_outside_the_graph_folds_like_one_inside() {
    let close = |a: &[f64], b: &[f64]| {
        let scale = a.iter().fold(1e-9f64, |m, v| m.max(v.abs()));
        a.iter().zip(b).all(|(p, q)| (p - q).abs() <= 1e-6 * scale)
    };
    let stripped = fixtures().join("cryptonets_unnormalized.legacy.onnx");
    let cases = [
        (stripped.clone(), vec![0.1307], vec![0.3081]),
        (fixtures().join("mlp.legacy.onnx"), vec![0.5], vec![0.25]),
        (
            fixtures().join("rgb32.legacy.onnx"),
            vec![0.49, 0.48, 0.45],
            vec![0.25, 0.24, 0.26],
        ),
    ];
    for (path, mean, std) in cases {
        let normalization = InputNormalization {
            mean: mean.clone(),
            std: std.clone(),
        };
        let folded = import_file_normalized(&path, Some(&normalization)).unwrap();
        let raw = import_file(&path).unwrap();
        assert_eq!(folded.input, raw.input);
        let (f, r) = (folded.compile().unwrap(), raw.compile().unwrap());
        let plane = raw.input.height * raw.input.width;
        for k in 0..4 {
            let x = probe(k, raw.input);
            let normalized: Vec<f64> = x
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let c = if mean.len() == 1 { 0 } else { i / plane };
                    (v - mean[c]) / std[c]
                })
                .collect();
            let (lf, lr) = (f.logits(&x), r.logits(&normalized));
            assert!(close(&lr, &lf), "{}: {lf:?} against {lr:?}", path.display());
            assert!(!close(&r.logits(&x), &lf), "{}", path.display());
        }
    }
    // The same network with its normalization in the graph (PyTorch's float32 constants).
    let inside = import_file(&fixtures().join("cryptonets_normalized.legacy.onnx")).unwrap();
    let outside = import_file_normalized(
        &stripped,
        Some(&InputNormalization {
            mean: vec![0.1307],
            std: vec![0.3081],
        }),
    )
    .unwrap();
    let (a, b) = (inside.compile().unwrap(), outside.compile().unwrap());
    for k in 0..4 {
        let x = probe(k, inside.input);
        assert!(close(&a.logits(&x), &b.logits(&x)));
    }
    // Values for other channel counts, or a zero deviation, are refused.
    for (mean, std) in [(vec![0.1, 0.2], vec![0.3, 0.3]), (vec![0.1], vec![0.0])] {
        let bad = InputNormalization { mean, std };
        let err = import_file_normalized(&stripped, Some(&bad)).unwrap_err();
        assert!(
            err.to_string().contains("per channel") || err.to_string().contains("non-zero"),
            "{err}"
        );
    }
}
