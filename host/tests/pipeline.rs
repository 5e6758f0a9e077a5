//! The encrypted pipeline through the `cryptonets` binary, on a small batch of real MNIST
//! test images: keygen, encrypt, eval, decrypt agree with plaintext integer inference, and
//! eval refuses corrupted or foreign batches with a clear message.

#[path = "support/cli.rs"]
mod support;
use support::*;

use cryptonets_core::model::{Model, argmax};
use cryptonets_host::mnist;

#[test]
fn keygen_encrypt_eval_decrypt_equals_plaintext_inference() {
    let Some(dir) = data() else { return };
    let tmp = tempdir("pipeline");
    let p = |name: &str| tmp.join(name).to_str().unwrap().to_string();
    let data = dir.to_str().unwrap();
    let out = cryptonets(&["keygen", "--secret-key", &p("sk"), "--eval-key", &p("ek")]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cryptonets(&[
        "encrypt",
        "--secret-key",
        &p("sk"),
        "--data",
        data,
        "--offset",
        "100",
        "--count",
        "12",
        "--out",
        &p("in.cnbt"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cryptonets(&[
        "eval",
        "--eval-key",
        &p("ek"),
        "--input",
        &p("in.cnbt"),
        "--out",
        &p("out.cnbt"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cryptonets(&[
        "decrypt",
        "--secret-key",
        &p("sk"),
        "--input",
        &p("out.cnbt"),
        "--record",
        &p("in.cnbt.record"),
        "--data",
        data,
        "--offset",
        "100",
        "--predictions",
        &p("labels.txt"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("accuracy: "), "{}", text(&out));

    let model_bytes = std::fs::read(workspace().join("models/cryptonets-mnist.cnmd")).unwrap();
    let model = Model::parse(&model_bytes).unwrap();
    let set = mnist::load(&dir, mnist::Split::Test).unwrap();
    let expected: Vec<String> = (100..112)
        .map(|i| argmax(&model.logits(set.image(i).try_into().unwrap()).unwrap()).to_string())
        .collect();
    let got = std::fs::read_to_string(tmp.join("labels.txt")).unwrap();
    assert_eq!(got.lines().collect::<Vec<_>>(), expected);

    // A flipped bit in a ciphertext residue, a truncated file and a batch for other
    // parameters are refused with a message, not a panic.
    let good = std::fs::read(tmp.join("in.cnbt")).unwrap();
    // Eight bytes of ones make a 30-bit residue above every prime.
    let mut corrupted = good.clone();
    let at = corrupted.len() - 40;
    corrupted[at..at + 8].fill(0xff);
    let mut foreign = good.clone();
    foreign[44] ^= 0x02; // the first plaintext CRT prime
    assert_eq!(good[6], 4, "12 images go packed 4 pixels a ciphertext");
    let mut repacked = good.clone();
    repacked[6] = 2; // as many ciphertexts as packing by 4 has, read as packed by 2
    let mut bad_packing = good.clone();
    bad_packing[6] = 3;
    for (name, bytes) in [
        ("corrupted", corrupted),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("foreign", foreign),
        ("repacked", repacked),
        ("bad-packing", bad_packing),
        ("empty", Vec::new()),
    ] {
        std::fs::write(tmp.join(name), bytes).unwrap();
        let out = cryptonets(&[
            "eval",
            "--eval-key",
            &p("ek"),
            "--input",
            &p(name),
            "--out",
            &p("x"),
        ]);
        let message = text(&out);
        assert!(!out.status.success(), "{name}: {message}");
        assert!(message.contains("cryptonets: error:"), "{name}: {message}");
        assert!(!message.contains("panicked"), "{name}: {message}");
    }
    // The evaluation key is not a secret key and vice versa.
    let out = cryptonets(&[
        "eval",
        "--eval-key",
        &p("sk"),
        "--input",
        &p("in.cnbt"),
        "--out",
        &p("x"),
    ]);
    assert!(
        !out.status.success() && text(&out).contains("not a cryptonets evaluation key"),
        "{}",
        text(&out)
    );

    // Keys that unpack nothing: the packed batch is refused, and says why; a batch encrypted
    // unpacked (--max-packing 1) evaluates with them.
    let out = cryptonets(&[
        "keygen",
        "--max-packing",
        "1",
        "--secret-key",
        &p("sk1"),
        "--eval-key",
        &p("ek1"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let encrypt = |max_packing: &str, out_file: &str| {
        cryptonets(&[
            "encrypt",
            "--secret-key",
            &p("sk1"),
            "--data",
            data,
            "--offset",
            "100",
            "--count",
            "3",
            "--max-packing",
            max_packing,
            "--out",
            &p(out_file),
        ])
    };
    let out = encrypt("4", "packed.cnbt");
    assert!(out.status.success(), "{}", text(&out));
    let out = cryptonets(&[
        "eval",
        "--eval-key",
        &p("ek1"),
        "--input",
        &p("packed.cnbt"),
        "--out",
        &p("x"),
    ]);
    assert!(
        !out.status.success() && text(&out).contains("no Galois key for this packing"),
        "{}",
        text(&out)
    );
    let out = encrypt("1", "unpacked.cnbt");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(tmp.join("unpacked.cnbt")).unwrap()[6], 1);
    let out = cryptonets(&[
        "eval",
        "--eval-key",
        &p("ek1"),
        "--input",
        &p("unpacked.cnbt"),
        "--out",
        &p("unpacked-out.cnbt"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cryptonets(&[
        "decrypt",
        "--secret-key",
        &p("sk1"),
        "--input",
        &p("unpacked-out.cnbt"),
        "--record",
        &p("unpacked.cnbt.record"),
        "--predictions",
        &p("labels1.txt"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let got = std::fs::read_to_string(tmp.join("labels1.txt")).unwrap();
    assert_eq!(got.lines().collect::<Vec<_>>(), expected[..3]);
    let out = cryptonets(&[
        "keygen",
        "--max-packing",
        "3",
        "--secret-key",
        "x",
        "--eval-key",
        "y",
    ]);
    assert!(
        !out.status.success() && text(&out).contains("power of two"),
        "{}",
        text(&out)
    );
}

#[test]
fn run_json_reports_exact_agreement_on_a_small_batch() {
    let Some(dir) = data() else { return };
    let run = |max_packing: &str| {
        let out = cryptonets(&[
            "run",
            "--json",
            "--images",
            "40",
            "--batch-size",
            "30",
            "--max-packing",
            max_packing,
            "--data",
            dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("one JSON object");
        check_report(&report);
        report
    };
    let packed = run("4");
    let unpacked = run("1");
    assert_eq!(packed["packing"], serde_json::json!([4, 4]));
    assert_eq!(unpacked["packing"], serde_json::json!([1, 1]));
    // Four pixels a ciphertext: a quarter of the ciphertexts (196 of 784 per channel), in
    // three channels where full batches take two (unpacking costs noise).
    assert_eq!(packed["channels"], serde_json::json!([3, 3]));
    assert_eq!(unpacked["channels"], serde_json::json!([2, 2]));
    let ratio = unpacked["upload_bytes_per_image"].as_f64().unwrap()
        / packed["upload_bytes_per_image"].as_f64().unwrap();
    assert!((ratio - 4.0 * 2.0 / 3.0).abs() < 0.01, "{ratio}");
    assert!(packed["eval_key_bytes"].as_f64() > unpacked["eval_key_bytes"].as_f64());
}

fn check_report(report: &serde_json::Value) {
    assert_eq!(report["images"], 40);
    assert_eq!(report["batch_size"], 30);
    assert_eq!(report["batches"], 2);
    assert_eq!(report["agreement"], 1.0);
    assert_eq!(report["exact_logits"], 1.0);
    for key in [
        "accuracy",
        "eval_seconds_per_batch",
        "encrypt_seconds_per_batch",
        "predictions_per_hour",
        "upload_bytes_per_image",
        "download_bytes_per_image",
        "peak_rss_bytes",
        "threads",
        "upload_bytes_per_image_full_batch",
        "upload_bytes_per_image_with_keys",
        "eval_seconds_full_batch",
    ] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }
    assert!(
        report["measured_noise_budget_bits"].as_f64().unwrap()
            >= report["estimated_noise_budget_bits"].as_f64().unwrap()
    );
}

#[test]
fn missing_data_and_bad_models_give_clear_errors() {
    let out = cryptonets(&["run", "--images", "1", "--data", "/nonexistent/mnist"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("fetch-mnist.sh"), "{}", text(&out));
    let tmp = tempdir("badmodel");
    std::fs::write(tmp.join("m"), b"CNMD not a model").unwrap();
    let out = cryptonets(&[
        "keygen",
        "--model",
        tmp.join("m").to_str().unwrap(),
        "--secret-key",
        "/dev/null",
        "--eval-key",
        "/dev/null",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("malformed"), "{}", text(&out));
}
