//! The `cryptonets` binary against hostile and mistaken inputs that parse: models whose
//! bounds would overflow, results of other keys or batches, edited metadata, models too
//! large to evaluate, absurd thread counts, FIFOs. Each is refused before any evaluation,
//! with a message that says why, never a panic.

#[path = "support/cli.rs"]
mod support;
use support::*;

use cryptonets_core::model::{CONV_SIDE, Model, ModelWriter};
use std::process::Command;

/// Runs and expects a clean refusal whose message contains `expected`.
fn refused(args: &[&str], expected: &str) -> String {
    let out = cryptonets(args);
    let message = text(&out);
    assert!(!out.status.success(), "{args:?} succeeded: {message}");
    assert!(
        message.contains("cryptonets: error:") || message.contains("error:"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{args:?}: {message}");
    assert!(
        message.contains(expected),
        "{args:?}: expected '{expected}' in: {message}"
    );
    message
}

fn committed() -> Vec<u8> {
    std::fs::read(workspace().join("models/cryptonets-mnist.cnmd")).unwrap()
}

/// The committed model with map 0's conv weights zeroed, its conv bias set to `bias` and,
/// if given, every first-dense weight on map 0's features set to `dense`.
fn overflowing(bias: i128, dense: Option<i16>) -> Vec<u8> {
    let bytes = committed();
    let model = Model::parse(&bytes).unwrap();
    let (maps, hidden) = (model.maps(), model.hidden());
    let features = maps * CONV_SIDE * CONV_SIDE;
    let mut writer = ModelWriter {
        maps,
        hidden,
        input_levels: model.input_levels(),
        float_accuracy: 0,
        integer_accuracy: 0,
        conv_weights: (0..maps * 25)
            .map(|i| model.conv_weight(i / 25, i % 25) as i16)
            .collect(),
        conv_biases: (0..maps).map(|m| model.conv_bias(m)).collect(),
        dense1_weights: (0..hidden * features)
            .map(|i| model.dense1_weight(i / features, i % features) as i16)
            .collect(),
        dense1_biases: (0..hidden).map(|u| model.dense1_bias(u)).collect(),
        dense2_weights: (0..10 * hidden)
            .map(|i| model.dense2_weight(i / hidden, i % hidden) as i16)
            .collect(),
        dense2_biases: (0..10).map(|c| model.dense2_bias(c)).collect(),
    };
    writer.conv_weights[..25].fill(0);
    writer.conv_biases[0] = bias;
    if let Some(w) = dense {
        for u in 0..hidden {
            writer.dense1_weights[u * features..u * features + CONV_SIDE * CONV_SIDE].fill(w);
        }
    }
    writer.to_bytes()
}

#[test]
fn models_whose_bounds_overflow_are_refused_by_every_command_before_evaluating() {
    let tmp = tempdir("overflow");
    let p = |name: &str| tmp.join(name).to_str().unwrap().to_string();
    for (name, bytes) in [
        ("bias64.cnmd", overflowing(1 << 64, None)),
        ("bias57.cnmd", overflowing(1 << 57, Some(16384))),
    ] {
        std::fs::write(tmp.join(name), bytes).unwrap();
        let model = p(name);
        refused(
            &["model", "info", &model],
            "worst-case magnitude exceeds 2^120",
        );
        refused(
            &[
                "keygen",
                "--model",
                &model,
                "--secret-key",
                &p("sk"),
                "--eval-key",
                &p("ek"),
            ],
            "worst-case magnitude exceeds 2^120",
        );
        refused(
            &[
                "eval",
                "--model",
                &model,
                "--eval-key",
                &p("ek"),
                "--input",
                &p("in"),
                "--out",
                &p("o"),
            ],
            "worst-case magnitude exceeds 2^120",
        );
        refused(
            &["run", "--model", &model, "--images", "1"],
            "worst-case magnitude exceeds 2^120",
        );
        assert!(
            !tmp.join("sk").exists(),
            "keygen wrote a key for a refused model"
        );
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn absurd_threads_fifos_and_oversized_files_are_refused_at_once() {
    let tmp = tempdir("fifo");
    let p = |name: &str| tmp.join(name).to_str().unwrap().to_string();
    refused(&["run", "--threads", "100000"], "100000");
    refused(&["run", "--threads", "0"], "threads");
    let fifo = p("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Each of these would block forever reading the FIFO if it were opened.
    refused(&["model", "info", &fifo], "not a regular file");
    refused(
        &[
            "keygen",
            "--model",
            &fifo,
            "--secret-key",
            &p("a"),
            "--eval-key",
            &p("b"),
        ],
        "not a regular file",
    );
    let out = cryptonets(&[
        "keygen",
        "--secret-key",
        &p("sk"),
        "--eval-key",
        &p("ek"),
        "--max-packing",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    refused(
        &[
            "eval",
            "--eval-key",
            &fifo,
            "--input",
            &p("x"),
            "--out",
            &p("y"),
        ],
        "not a regular file",
    );
    refused(
        &[
            "eval",
            "--eval-key",
            &p("ek"),
            "--input",
            &fifo,
            "--out",
            &p("y"),
        ],
        "not a regular file",
    );
    refused(
        &[
            "decrypt",
            "--secret-key",
            &fifo,
            "--input",
            &p("x"),
            "--record",
            &p("r"),
        ],
        "not a regular file",
    );
    refused(
        &[
            "eval",
            "--eval-key",
            &p("ek"),
            "--input",
            tmp.to_str().unwrap(),
            "--out",
            &p("y"),
        ],
        "not a regular file",
    );
    // A file larger than its format allows is refused from its size, before it is read.
    let big = std::fs::File::create(tmp.join("big")).unwrap();
    big.set_len(1 << 40).unwrap(); // sparse: a terabyte that takes no disk
    refused(&["model", "info", &p("big")], "more than a model can be");
    refused(
        &[
            "eval",
            "--eval-key",
            &p("big"),
            "--input",
            &p("x"),
            "--out",
            &p("y"),
        ],
        "more than a evaluation key can be",
    );
    refused(
        &[
            "eval",
            "--eval-key",
            &p("ek"),
            "--input",
            &p("big"),
            "--out",
            &p("y"),
        ],
        "more than a batch of encrypted images can be",
    );
    // The secret key is the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tmp.join("sk"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "secret key mode {mode:o}");
    std::fs::set_permissions(tmp.join("sk"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cryptonets(&[
        "decrypt",
        "--secret-key",
        &p("sk"),
        "--input",
        &p("x"),
        "--record",
        &p("r"),
    ]);
    assert!(
        text(&out).contains("can be read by other users"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_model_at_the_parsers_limits_is_refused_by_the_memory_plan() {
    let tmp = tempdir("huge");
    let p = |name: &str| tmp.join(name).to_str().unwrap().to_string();
    let features = 16 * CONV_SIDE * CONV_SIDE;
    let huge = ModelWriter {
        maps: 16,
        hidden: 4096,
        input_levels: 3,
        float_accuracy: 0,
        integer_accuracy: 0,
        conv_weights: vec![1; 16 * 25],
        conv_biases: vec![0; 16],
        dense1_weights: vec![1; 4096 * features],
        dense1_biases: vec![0; 4096],
        dense2_weights: vec![1; 10 * 4096],
        dense2_biases: vec![0; 10],
    }
    .to_bytes();
    std::fs::write(tmp.join("huge.cnmd"), &huge).unwrap();
    let model = p("huge.cnmd");
    let message = refused(
        &[
            "run",
            "--model",
            &model,
            "--images",
            "16",
            "--max-memory",
            "2G",
        ],
        "estimated to need",
    );
    assert!(message.contains("--max-memory"), "{message}");
    if let Some(dir) = data() {
        let data = dir.to_str().unwrap();
        let out = cryptonets(&[
            "keygen",
            "--model",
            &model,
            "--secret-key",
            &p("sk"),
            "--eval-key",
            &p("ek"),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let out = cryptonets(&[
            "encrypt",
            "--model",
            &model,
            "--secret-key",
            &p("sk"),
            "--data",
            data,
            "--count",
            "16",
            "--out",
            &p("in"),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let message = refused(
            &[
                "eval",
                "--model",
                &model,
                "--eval-key",
                &p("ek"),
                "--input",
                &p("in"),
                "--out",
                &p("o"),
                "--max-memory",
                "2G",
            ],
            "estimated to need",
        );
        assert!(message.contains("planned: peak memory"), "{message}");
        assert!(!tmp.join("o").exists());
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn results_of_other_keys_or_batches_and_edited_results_are_refused() {
    let Some(dir) = data() else { return };
    let data = dir.to_str().unwrap();
    let tmp = tempdir("results");
    let p = |name: &str| tmp.join(name).to_str().unwrap().to_string();
    for owner in ["a", "b"] {
        let out = cryptonets(&[
            "keygen",
            "--secret-key",
            &p(&format!("sk-{owner}")),
            "--eval-key",
            &p(&format!("ek-{owner}")),
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
    for (batch, offset) in [("one", "0"), ("two", "40")] {
        let out = cryptonets(&[
            "encrypt",
            "--secret-key",
            &p("sk-a"),
            "--data",
            data,
            "--offset",
            offset,
            "--count",
            "20",
            "--out",
            &p(&format!("{batch}.cnbt")),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let out = cryptonets(&[
            "eval",
            "--eval-key",
            &p("ek-a"),
            "--input",
            &p(&format!("{batch}.cnbt")),
            "--out",
            &p(&format!("{batch}.out")),
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let decrypt = |sk: &str, input: &str, record: &str| {
        cryptonets(&[
            "decrypt",
            "--json",
            "--secret-key",
            &p(sk),
            "--input",
            &p(input),
            "--record",
            &p(record),
        ])
    };
    let out = decrypt("sk-a", "one.out", "one.cnbt.record");
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["images"], 20);
    assert!(
        report["min_noise_budget_bits"].as_u64().unwrap()
            >= report["required_noise_budget_bits"].as_u64().unwrap()
    );
    // The keys of a model that needs other parameters (a fourth CRT channel, here) are
    // refused before any work.
    let mut wide = overflowing(0, None);
    let bits = Model::parse(&wide).unwrap().bounds().plaintext_bits();
    let dense2_biases = wide.len() - 160;
    wide[dense2_biases..dense2_biases + 16].copy_from_slice(&(1i128 << 80).to_le_bytes());
    assert!(Model::parse(&wide).unwrap().bounds().plaintext_bits() > bits);
    std::fs::write(tmp.join("wide.cnmd"), &wide).unwrap();
    let out = cryptonets(&[
        "keygen",
        "--model",
        &p("wide.cnmd"),
        "--secret-key",
        &p("sk-w"),
        "--eval-key",
        &p("ek-w"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    refused(
        &[
            "eval",
            "--eval-key",
            &p("ek-w"),
            "--input",
            &p("one.cnbt"),
            "--out",
            &p("x"),
        ],
        "made for another parameter set",
    );
    refused(
        &[
            "eval",
            "--model",
            &p("wide.cnmd"),
            "--eval-key",
            &p("ek-w"),
            "--input",
            &p("one.cnbt"),
            "--out",
            &p("x"),
        ],
        "other parameters",
    );

    // Another owner's key decrypts garbage: refused, naming the cause.
    let message = refused(
        &[
            "decrypt",
            "--secret-key",
            &p("sk-b"),
            "--input",
            &p("one.out"),
            "--record",
            &p("one.cnbt.record"),
        ],
        "cannot be trusted",
    );
    assert!(message.contains("wrong secret key"), "{message}");
    // The result of another batch.
    refused(
        &[
            "decrypt",
            "--secret-key",
            &p("sk-a"),
            "--input",
            &p("two.out"),
            "--record",
            &p("one.cnbt.record"),
        ],
        "another batch",
    );
    // An edited image count and an edited packing.
    let good = std::fs::read(tmp.join("one.out")).unwrap();
    let mut count = good.clone();
    count[16..20].copy_from_slice(&2048u32.to_le_bytes());
    std::fs::write(tmp.join("count.out"), count).unwrap();
    refused(
        &[
            "decrypt",
            "--secret-key",
            &p("sk-a"),
            "--input",
            &p("count.out"),
            "--record",
            &p("one.cnbt.record"),
        ],
        "image count was altered",
    );
    let mut packing = good.clone();
    packing[6] = 2;
    std::fs::write(tmp.join("packing.out"), packing).unwrap();
    refused(
        &[
            "decrypt",
            "--secret-key",
            &p("sk-a"),
            "--input",
            &p("packing.out"),
            "--record",
            &p("one.cnbt.record"),
        ],
        "packing was altered",
    );
    // Residues overwritten in the last ciphertext (a corrupted or tampered download): either
    // out of range or noise where there should be budget.
    let mut tampered = good.clone();
    let at = tampered.len() - 200;
    tampered[at..at + 96].fill(0x55);
    std::fs::write(tmp.join("tampered.out"), tampered).unwrap();
    let out = decrypt("sk-a", "tampered.out", "one.cnbt.record");
    let message = text(&out);
    assert!(!out.status.success(), "{message}");
    assert!(
        message.contains("cannot be trusted") || message.contains("malformed"),
        "{message}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A reader that is gone before the first line is written (`cryptonets model info ... |
/// true`): the process ends as Unix tools do, on SIGPIPE, without a panic message.
#[test]
fn a_closed_output_pipe_ends_the_process_without_a_panic() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cryptonets"))
        .current_dir(workspace())
        .args(["model", "info", "models/mnist-deep.cnmd"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed long before the model is read and described.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}
