//! The `cryptonets` binary as a user runs it.

use std::process::{Command, Output};

fn cryptonets(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cryptonets"))
        .args(args)
        .output()
        .expect("run cryptonets")
}

#[test]
fn info_names_version_features_and_backend() {
    let out = cryptonets(&["info"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    assert!(text.contains("cpu features:"), "{text}");
    let detected = cryptonets_core::Backend::detect().name();
    assert!(
        text.contains(&format!("backend in use: {detected}")),
        "{text}"
    );
    #[cfg(target_arch = "x86_64")]
    if let cryptonets_core::Backend::Avx512(avx512) = cryptonets_core::Backend::detect() {
        assert_eq!(text.contains("fused VNNI"), avx512.has_vnni(), "{text}");
    }

    let forced = cryptonets(&["info", "--backend", "portable"]);
    assert!(
        String::from_utf8(forced.stdout)
            .unwrap()
            .contains("backend in use: portable")
    );
}

#[test]
fn bench_he_json_reports_every_operation_with_galois_automorphisms() {
    let out = cryptonets(&["bench", "he", "--json", "--samples", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "square_us",
        "relinearize_us",
        "encrypt_sk_us",
        "multiply_us",
    ] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }
    let galois = &report["galois"];
    assert_eq!(galois["special_primes"], 2);
    for key in ["keygen_us", "apply_us", "apply_three_hoisted_us"] {
        assert!(
            galois[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }
}

#[test]
fn bench_batch_times_every_step_of_a_packed_batch() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/cryptonets-mnist.cnmd"
    );
    let out = cryptonets(&[
        "bench",
        "batch",
        "--model",
        model,
        "--images",
        "64",
        "--samples",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["images"], 64);
    assert_eq!(report["channels"], 3);
    let phases: Vec<(String, f64)> = report["phase_seconds_median"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_f64().unwrap()))
        .collect();
    let names: Vec<&str> = phases.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        cryptonets_host::phases::names(),
        "every step, in order"
    );
    // 64 images go packed four pixels a ciphertext: every step but parsing takes time.
    for (name, seconds) in &phases {
        assert!(*seconds > 0.0 || name == "parse", "{name}: {report}");
    }
    let total = report["eval_seconds_median"].as_f64().unwrap();
    let sum: f64 = phases.iter().map(|(_, s)| s).sum();
    assert!(
        (sum - total).abs() <= 0.05 * total,
        "steps {sum} s, total {total} s"
    );
    for key in ["square_to_hidden_level_us", "square_relinearize_us"] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }
}

#[test]
fn bench_ntt_json_has_one_line_per_backend_with_medians() {
    let out = cryptonets(&[
        "bench",
        "ntt",
        "--json",
        "--samples",
        "3",
        "--n",
        "1024,8192",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let backends = cryptonets_core::Backend::available();
    assert_eq!(lines.len(), 2 * backends.len());
    for backend in &backends {
        let line = lines
            .iter()
            .find(|l| l["backend"] == backend.name() && l["n"] == 8192)
            .unwrap_or_else(|| panic!("no n = 8192 line for {backend}"));
        assert_eq!(line["prime_bits"], 30);
        for key in ["forward_ns", "inverse_ns"] {
            let ns = line[key].as_f64().unwrap();
            assert!(ns > 0.0 && ns.is_finite(), "{key} = {ns}");
        }
    }
}

#[test]
fn unknown_or_unavailable_backend_is_a_clear_error() {
    let out = cryptonets(&["bench", "ntt", "--backend", "quantum"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("cryptonets: error: unknown backend 'quantum'"),
        "{err}"
    );
    assert!(err.contains("portable"), "{err}");

    // A backend this build knows but this CPU cannot run.
    let foreign = if cfg!(target_arch = "aarch64") {
        "avx2"
    } else {
        "neon"
    };
    let out = cryptonets(&["info", "--backend", foreign]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("cryptonets: error:") && err.contains(foreign),
        "{err}"
    );
}

#[test]
fn mnist_check_refuses_missing_and_corrupt_files_clearly() {
    let dir = std::env::temp_dir().join(format!("cryptonets-cli-mnist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = cryptonets(&["mnist", "check", "--data", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("cryptonets: error: cannot read") && err.contains("fetch-mnist"),
        "{err}"
    );
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
        std::fs::write(dir.join(name), b"not mnist").unwrap();
    }
    let out = cryptonets(&["mnist", "check", "--data", dir.to_str().unwrap()]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success() && err.contains("does not match its SHA-256"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn model_info_reports_the_committed_model_and_refuses_malformed_files() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/cryptonets-mnist.cnmd"
    );
    let out = cryptonets(&["model", "info", model]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "5 maps",
        "dense 100",
        "plaintext bits",
        "plaintext bits (signed logits; interval bounds of every neuron): 57",
        // Full batches take two channels, packed ones (unpacked by key switching) three.
        "plaintext CRT primes (1 mod 16384): 2",
        "packed batches (inputs unpacked by key switching): 3 CRT primes",
        "test accuracy recorded",
    ] {
        assert!(text.contains(expected), "{expected} missing in:\n{text}");
    }

    let bad = std::env::temp_dir().join(format!("cryptonets-bad-model-{}", std::process::id()));
    let mut bytes = std::fs::read(model).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&bad, &bytes).unwrap();
    let out = cryptonets(&["model", "info", bad.to_str().unwrap()]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success() && err.contains("malformed data: wrong model length"),
        "{err}"
    );
    std::fs::remove_file(&bad).unwrap();
}
