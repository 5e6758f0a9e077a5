//! `cryptonets run --mode single`: one image at a time, each its own upload, evaluation and
//! download (the LoLa-style layouts of `cryptonets_core::network::single`), one key set for
//! the owner reused for its images. Every message crosses as bytes: the owner's seeded
//! ciphertexts are serialized and parsed by the service, the service's outputs serialized
//! and parsed by the owner, so the traffic reported is what a network would carry.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cryptonets_core::Backend;
use cryptonets_core::bfv::{Ciphertext, SecretKey, SeededCiphertext};
use cryptonets_core::model::argmax;
use cryptonets_core::network::single::{
    PlannedSingle, SingleEvaluator, SingleKeys, SingleStep, decode_single_outputs,
};
use cryptonets_host::pipeline::{os_rng, peak_rss_bytes};
use rayon::prelude::*;
use serde::Serialize;

use crate::general_cli::{network_images, read_network};

/// What `run --mode single --json` prints.
#[derive(Debug, Serialize)]
struct SingleReport {
    mode: &'static str,
    model: String,
    images: usize,
    backend: &'static str,
    threads: usize,
    n: usize,
    ciphertext_primes: usize,
    special_primes: usize,
    log_q: f64,
    compressed_upload: bool,
    plaintext_primes: Vec<u32>,
    /// The plan: kinds of steps, rotations keyed, estimated latency.
    steps: Vec<&'static str>,
    galois_keys: usize,
    estimated_latency_seconds: f64,
    accuracy: Option<f64>,
    plaintext_accuracy: Option<f64>,
    agreement: f64,
    exact_logits: f64,
    estimated_noise_budget_bits: f64,
    measured_noise_budget_bits: u32,
    keygen_seconds: f64,
    /// Server evaluation of one image (all channels), median and slowest.
    latency_seconds_per_image: f64,
    latency_seconds_max: f64,
    encrypt_seconds_per_image: f64,
    decrypt_seconds_per_image: f64,
    upload_bytes_per_image: usize,
    download_bytes_per_image: usize,
    eval_key_bytes: usize,
    peak_rss_bytes: Option<u64>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn step_kind(step: &SingleStep) -> &'static str {
    match step {
        SingleStep::Taps(_) => "taps",
        SingleStep::Activation { .. } => "activation",
        SingleStep::Diagonal(_) => "diagonal",
        SingleStep::Gather(_) => "gather",
        SingleStep::Reshape => "reshape",
    }
}

/// `run --mode single` on any model the single-image planner accepts.
pub(crate) fn run_single(
    model: &Path,
    data: Option<PathBuf>,
    images: usize,
    json: bool,
    backend: Backend,
) -> Result<(), String> {
    if images == 0 {
        return Err("--images must be at least 1".into());
    }
    let network = read_network(model)?;
    let threads = rayon::current_num_threads();
    let planned = PlannedSingle::new(&network, backend)
        .map_err(|e| format!("{}: no single-image plan: {e}", model.display()))?;
    let (params, plan) = (&planned.params, &planned.plan);
    let first = &params.channels()[0];
    let (images, labels) = network_images(&network, data, images, 100, json)?;
    if !json {
        eprintln!(
            "single-image mode: n = {}, {} ciphertext primes + {} special, CRT primes {:?}, {} Galois keys; {} images; planned {:.2} s an image",
            params.degree(),
            first.max_level(),
            first.special_basis().map_or(0, |s| s.len()),
            params.plaintext_primes(),
            plan.keys.len(),
            images.len(),
            plan.estimate_seconds(params, threads),
        );
    }
    let mut rng = os_rng()?;
    let t = Instant::now();
    let secret = SecretKey::generate(first, &mut rng);
    let keys = SingleKeys::generate(params, plan, &secret, &mut rng).map_err(|e| e.to_string())?;
    let keygen_seconds = t.elapsed().as_secs_f64();
    let evaluator = SingleEvaluator::new(params, plan, &keys).map_err(|e| e.to_string())?;

    let (mut encrypt, mut latency, mut decrypt) = (Vec::new(), Vec::new(), Vec::new());
    let (mut upload, mut download) = (0usize, 0usize);
    let (mut correct, mut plain_correct, mut agree, mut exact) = (0, 0, 0, 0);
    let mut budget = u32::MAX;
    for (i, image) in images.iter().enumerate() {
        // The owner: one seeded ciphertext per channel, as bytes.
        let t = Instant::now();
        let uploads = cryptonets_host::single_image::encrypt_image(
            &planned, &network, &secret, image, &mut rng,
        )
        .map_err(|e| e.to_string())?;
        encrypt.push(t.elapsed().as_secs_f64());
        upload = uploads.iter().map(Vec::len).sum();
        // The service: parse, evaluate every channel, serialize.
        let t = Instant::now();
        let replies = uploads
            .par_iter()
            .enumerate()
            .map(
                |(c, bytes)| -> Result<Vec<Vec<u8>>, cryptonets_core::Error> {
                    let p = &params.channels()[c];
                    let input = SeededCiphertext::from_bytes(p, bytes)?.expand(p)?;
                    let outputs = evaluator.evaluate_channel(c, &input)?;
                    Ok(outputs.iter().map(|ct| ct.to_bytes(p)).collect())
                },
            )
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        latency.push(t.elapsed().as_secs_f64());
        download = replies.iter().flatten().map(Vec::len).sum();
        // The owner: parse, decrypt, combine.
        let t = Instant::now();
        let outputs = replies
            .iter()
            .zip(params.channels())
            .map(|(cts, p)| cts.iter().map(|b| Ciphertext::from_bytes(p, b)).collect())
            .collect::<Result<Vec<Vec<_>>, _>>()
            .map_err(|e| e.to_string())?;
        let (logits, measured) =
            decode_single_outputs(params, &secret, plan, &outputs).map_err(|e| e.to_string())?;
        decrypt.push(t.elapsed().as_secs_f64());
        budget = budget.min(measured);
        let want = network.logits_wide(image).map_err(|e| e.to_string())?;
        exact += usize::from(logits == want);
        let (got, plain) = (argmax(&logits), argmax(&want));
        agree += usize::from(got == plain);
        if let Some(labels) = &labels {
            correct += usize::from(got == labels[i] as usize);
            plain_correct += usize::from(plain == labels[i] as usize);
        }
        if !json && (i + 1) % 10 == 0 {
            eprintln!("{} of {} images", i + 1, images.len());
        }
    }
    let count = images.len();
    let fraction = |k: usize| k as f64 / count as f64;
    let latency_max = latency.iter().copied().fold(0.0, f64::max);
    let report = SingleReport {
        mode: "single",
        model: model.display().to_string(),
        images: count,
        backend: backend.name(),
        threads,
        n: params.degree(),
        ciphertext_primes: first.max_level(),
        special_primes: first.special_basis().map_or(0, |s| s.len()),
        log_q: first.log_q(),
        compressed_upload: plan.compressed_input,
        plaintext_primes: params.plaintext_primes(),
        steps: plan.layout.steps.iter().map(step_kind).collect(),
        galois_keys: plan.keys.len(),
        estimated_latency_seconds: plan.estimate_seconds(params, threads),
        accuracy: labels.as_ref().map(|_| fraction(correct)),
        plaintext_accuracy: labels.as_ref().map(|_| fraction(plain_correct)),
        agreement: fraction(agree),
        exact_logits: fraction(exact),
        estimated_noise_budget_bits: (plan.output_budget_bits() * 10.0).round() / 10.0,
        measured_noise_budget_bits: budget,
        keygen_seconds,
        latency_seconds_per_image: median(&mut latency),
        latency_seconds_max: latency_max,
        encrypt_seconds_per_image: median(&mut encrypt),
        decrypt_seconds_per_image: median(&mut decrypt),
        upload_bytes_per_image: upload,
        download_bytes_per_image: download,
        eval_key_bytes: keys.serialized_len(params),
        peak_rss_bytes: peak_rss_bytes(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        let kib = |b: usize| b as f64 / 1024.0;
        println!(
            "{count} images one at a time: accuracy {}, agreement {:.4}, exact logits {:.4}",
            report
                .accuracy
                .map_or("n/a (no labels)".into(), |a| format!("{a:.4}")),
            report.agreement,
            report.exact_logits,
        );
        println!(
            "latency {:.3} s an image (median; slowest {:.3} s), encrypt {:.3} s, decrypt {:.3} s",
            report.latency_seconds_per_image,
            latency_max,
            report.encrypt_seconds_per_image,
            report.decrypt_seconds_per_image,
        );
        println!(
            "upload {:.1} KiB, download {:.1} KiB an image; evaluation keys {:.1} MiB ({} Galois keys); noise budget {} bits (estimated {:.1})",
            kib(upload),
            kib(download),
            kib(report.eval_key_bytes) / 1024.0,
            plan.keys.len(),
            budget,
            report.estimated_noise_budget_bits,
        );
    }
    if exact != count {
        return Err(format!(
            "{} of {count} images decrypted to other logits than plaintext inference",
            count - exact
        ));
    }
    Ok(())
}

/// One step of `plan --mode single`.
#[derive(Debug, Serialize)]
struct StepReport {
    kind: &'static str,
    /// Ciphertexts of its output (parts).
    parts: usize,
    input_level: usize,
    level: usize,
    estimated_budget_bits: f64,
    /// Key switches (rotations), plaintext-vector products and scalar terms.
    rotations: usize,
    plaintext_products: usize,
}

/// What `plan --mode single` prints.
#[derive(Debug, Serialize)]
struct SinglePlanReport {
    model: String,
    n: usize,
    ciphertext_primes: usize,
    special_primes: usize,
    log_q: f64,
    plaintext_primes: Vec<u32>,
    compressed_upload: bool,
    input_budget_bits: f64,
    steps: Vec<StepReport>,
    galois_keys: usize,
    eval_key_bytes: usize,
    upload_bytes_per_image: usize,
    estimated_latency_seconds: f64,
    threads: usize,
}

/// `plan --mode single`: the layouts, levels, noise, keys and sizes of the single-image plan.
pub(crate) fn plan_single(model: &Path, json: bool, backend: Backend) -> Result<(), String> {
    let network = read_network(model)?;
    let planned = PlannedSingle::new(&network, backend)
        .map_err(|e| format!("{}: no single-image plan: {e}", model.display()))?;
    let (params, plan) = (&planned.params, &planned.plan);
    let first = &params.channels()[0];
    let threads = rayon::current_num_threads();
    let steps = plan
        .layout
        .steps
        .iter()
        .zip(&plan.steps)
        .zip(&plan.layout.parts)
        .map(|((step, p), parts)| {
            let (rotations, products) = match step {
                SingleStep::Taps(t) => (t.tree.switches(), 0),
                SingleStep::Diagonal(d) => {
                    let (lo, hi) = d.giant_range();
                    (
                        d.trees.iter().map(|t| t.switches()).sum::<usize>() + (hi - lo) as usize,
                        d.giants.iter().map(|g| g.diagonals.len()).sum(),
                    )
                }
                SingleStep::Gather(g) => (
                    g.tree.switches()
                        + g.weights.iter().map(Vec::len).sum::<usize>()
                        + g.weights.len(),
                    0,
                ),
                _ => (0, 0),
            };
            StepReport {
                kind: step_kind(step),
                parts: parts.len(),
                input_level: p.input_level,
                level: p.level,
                estimated_budget_bits: (p.budget_bits * 10.0).round() / 10.0,
                rotations,
                plaintext_products: products,
            }
        })
        .collect();
    let report = SinglePlanReport {
        model: model.display().to_string(),
        n: params.degree(),
        ciphertext_primes: first.max_level(),
        special_primes: first.special_basis().map_or(0, |s| s.len()),
        log_q: first.log_q(),
        plaintext_primes: params.plaintext_primes(),
        compressed_upload: plan.compressed_input,
        input_budget_bits: (plan.input_budget_bits * 10.0).round() / 10.0,
        steps,
        galois_keys: plan.keys.len(),
        eval_key_bytes: SingleKeys::serialized_len_for(params, plan),
        upload_bytes_per_image: plan.upload_bytes(params),
        estimated_latency_seconds: plan.estimate_seconds(params, threads),
        threads,
    };
    if json {
        return crate::print_json(&report);
    }
    println!(
        "{}: one image a ciphertext: n = {}, {} ciphertext primes (log2 Q = {:.0}) + {} special, plaintext CRT primes {:?}{}",
        report.model,
        report.n,
        report.ciphertext_primes,
        report.log_q,
        report.special_primes,
        report.plaintext_primes,
        if report.compressed_upload {
            ", uploads drop their last limb"
        } else {
            ""
        }
    );
    println!("  step        parts  level  budget bits (estimated)  rotations  plaintext products");
    println!(
        "  input           1  {:>5}  {:>6.1}",
        report.ciphertext_primes, report.input_budget_bits
    );
    for s in &report.steps {
        println!(
            "  {:<10} {:>6}  {:>5}  {:>6.1}  {:>26}  {:>18}",
            s.kind, s.parts, s.level, s.estimated_budget_bits, s.rotations, s.plaintext_products
        );
    }
    println!(
        "{} Galois keys, evaluation keys {:.1} MiB; upload {:.1} KiB an image; estimated {:.2} s an image on {} threads",
        report.galois_keys,
        report.eval_key_bytes as f64 / (1 << 20) as f64,
        report.upload_bytes_per_image as f64 / 1024.0,
        report.estimated_latency_seconds,
        report.threads
    );
    Ok(())
}
