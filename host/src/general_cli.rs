//! General polynomial networks (model format v2) in the CLI: `cryptonets plan` prints the
//! planner's choice, `model convert` writes a v1 model as v2, and `run` on a v2 model
//! evaluates it with the general evaluator (one ciphertext per neuron, images in the slots).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use cryptonets_core::Backend;
use cryptonets_core::bfv::SecretKey;
use cryptonets_core::model::polynomial::{Layer, PolynomialNetwork};
use cryptonets_core::model::{MAX_MODEL_BYTES, argmax};
use cryptonets_core::network::{
    EvaluationKeys, PlannedNetwork, PolynomialEvaluator, decrypt_outputs_wide,
    encode_network_inputs,
};
use cryptonets_host::files::{read_checked, write};
use cryptonets_host::mnist;
use cryptonets_host::pipeline::{os_rng, peak_rss_bytes};
use rayon::prelude::*;
use serde::Serialize;

/// The largest v2 model file read: every layer at the format's limits is far beyond what
/// can be evaluated, so the file limit is that of the largest plannable networks.
const MAX_NETWORK_BYTES: u64 = 64 << 20;

/// Reads a model of either version as a polynomial network.
pub(crate) fn read_network(path: &Path) -> Result<PolynomialNetwork, String> {
    let max = MAX_NETWORK_BYTES.max(MAX_MODEL_BYTES as u64);
    let bytes = read_checked(path, max, "model")?;
    PolynomialNetwork::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether `bytes` start like a version 2 model file.
pub(crate) fn is_v2_header(bytes: &[u8]) -> bool {
    bytes.len() >= 5 && bytes[..4] == *b"CNMD" && bytes[4] == 2
}

/// Whether the file at `path` is a version 2 model (read from its header only; a path that
/// is not a regular file is not).
pub(crate) fn is_v2(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 5];
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut header))
            .is_ok()
        && is_v2_header(&header)
}

/// `cryptonets plan`.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The model (version 1 or 2).
    model: PathBuf,
    /// Images the plan should serve (the cost is per whole batches of n).
    #[arg(long, default_value_t = 8192)]
    images: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// batch (images in the slots) or single (one image a ciphertext).
    #[arg(long, value_enum, default_value_t = crate::pipeline_cli::Mode::Batch)]
    mode: crate::pipeline_cli::Mode,
}

#[derive(Debug, Serialize)]
struct LayerReport {
    kind: &'static str,
    shape: [usize; 3],
    level: usize,
    bound_bits: u32,
    estimated_budget_bits: f64,
}

#[derive(Debug, Serialize)]
struct PlanReport {
    model: String,
    n: usize,
    ciphertext_primes: usize,
    log_q: f64,
    special_primes: usize,
    plaintext_primes: Vec<u32>,
    plaintext_bits: u32,
    input_budget_bits: f64,
    layers: Vec<LayerReport>,
    output_level: usize,
    estimated_seconds_per_batch: f64,
    estimated_peak_bytes: u64,
    estimated_predictions_per_hour: f64,
    upload_bytes_per_image: f64,
    download_bytes_per_image: f64,
    threads: usize,
}

fn kind(layer: &Layer) -> &'static str {
    match layer {
        Layer::Conv2d { .. } => "conv2d",
        Layer::SumPool { .. } => "sum_pool",
        Layer::Dense { .. } => "dense",
        Layer::Flatten => "flatten",
        Layer::Polynomial { .. } => "polynomial",
    }
}

fn plan_report(path: &Path, network: &PolynomialNetwork, planned: &PlannedNetwork) -> PlanReport {
    let p = &planned.params;
    let first = &p.channels()[0];
    let n = p.degree();
    let channels = p.channels().len() as f64;
    let output_level = planned.plan.output_level();
    // Seeded input ciphertexts (c0 and a seed) and full outputs at the output level.
    let limb = (n * 30).div_ceil(8) as f64;
    let upload = network.input().len() as f64 * channels * (limb * first.max_level() as f64 + 53.0);
    let download = network.classes() as f64 * channels * (2.0 * limb * output_level as f64 + 22.0);
    PlanReport {
        model: path.display().to_string(),
        n,
        ciphertext_primes: first.max_level(),
        log_q: first.log_q(),
        special_primes: first.special_basis().map_or(0, |s| s.len()),
        plaintext_primes: p.plaintext_primes(),
        plaintext_bits: network.plaintext_bits(),
        input_budget_bits: planned.plan.input_budget_bits,
        layers: network
            .layers()
            .iter()
            .zip(network.shapes())
            .zip(network.bounds())
            .zip(&planned.plan.layers)
            .map(|(((layer, shape), bounds), lp)| LayerReport {
                kind: kind(layer),
                shape: [shape.channels, shape.height, shape.width],
                level: lp.level,
                bound_bits: bounds.bits,
                estimated_budget_bits: (lp.budget_bits * 10.0).round() / 10.0,
            })
            .collect(),
        output_level,
        estimated_seconds_per_batch: planned.estimate.seconds,
        estimated_peak_bytes: planned.estimate.peak_bytes,
        estimated_predictions_per_hour: n as f64 * 3600.0 / planned.estimate.seconds,
        upload_bytes_per_image: upload / n as f64,
        download_bytes_per_image: download / n as f64,
        threads: rayon::current_num_threads(),
    }
}

pub(crate) fn plan_for(
    network: &PolynomialNetwork,
    backend: Backend,
    images: usize,
) -> Result<PlannedNetwork, String> {
    PlannedNetwork::new(network, backend, rayon::current_num_threads(), images)
        .map_err(|e| format!("no parameters evaluate this network: {e}"))
}

pub(crate) fn plan_command(args: &PlanArgs, backend: Backend) -> Result<(), String> {
    if args.mode == crate::pipeline_cli::Mode::Single {
        return crate::single_cli::plan_single(&args.model, args.json, backend);
    }
    let network = read_network(&args.model)?;
    let planned = plan_for(&network, backend, args.images)?;
    let report = plan_report(&args.model, &network, &planned);
    if args.json {
        crate::print_json(&report)?;
        return Ok(());
    }
    println!(
        "{}: input {}x{}x{}, {} layers, outputs need {} signed bits",
        report.model,
        network.input().channels,
        network.input().height,
        network.input().width,
        report.layers.len(),
        report.plaintext_bits
    );
    println!(
        "parameters: n = {}, {} ciphertext primes (log2 Q = {:.0}) + {} special, plaintext CRT primes {:?}",
        report.n,
        report.ciphertext_primes,
        report.log_q,
        report.special_primes,
        report.plaintext_primes
    );
    println!("  layer          shape          level  bound bits  budget bits (estimated)");
    println!(
        "  input          {:<14} {:>5}  {:>10}  {:>6.1}",
        "", report.ciphertext_primes, 0, report.input_budget_bits
    );
    for l in &report.layers {
        let shape = format!("{}x{}x{}", l.shape[0], l.shape[1], l.shape[2]);
        println!(
            "  {:<14} {:<14} {:>5}  {:>10}  {:>6.1}",
            l.kind, shape, l.level, l.bound_bits, l.estimated_budget_bits
        );
    }
    println!(
        "estimated per batch of {}: {:.1} s on {} threads, peak memory {:.2} GiB ({:.0} predictions/hour); upload {:.1} KiB and download {:.2} KiB per image",
        report.n,
        report.estimated_seconds_per_batch,
        report.threads,
        report.estimated_peak_bytes as f64 / (1u64 << 30) as f64,
        report.estimated_predictions_per_hour,
        report.upload_bytes_per_image / 1024.0,
        report.download_bytes_per_image / 1024.0
    );
    Ok(())
}

/// `cryptonets model info` for a version 2 model: layers, shapes and bounds.
pub(crate) fn info_command(path: &Path) -> Result<(), String> {
    let network = read_network(path)?;
    let input = network.input();
    println!(
        "model: {} (version 2): input {}x{}x{}, pixels quantized to 0..={}",
        path.display(),
        input.channels,
        input.height,
        input.width,
        network.input_levels()
    );
    for ((layer, shape), bounds) in network
        .layers()
        .iter()
        .zip(network.shapes())
        .zip(network.bounds())
    {
        let detail = match layer {
            Layer::Conv2d { window, .. } | Layer::SumPool { window } => format!(
                " kernel {}x{} stride {}x{} padding {:?}",
                window.kernel[0],
                window.kernel[1],
                window.stride[0],
                window.stride[1],
                window.padding
            ),
            Layer::Polynomial { coefficients: c } => {
                format!(" {} + {} x + {} x^2 + {} x^3", c[0], c[1], c[2], c[3])
            }
            _ => String::new(),
        };
        println!(
            "  {:<10} -> {}x{}x{}{detail}; values in [{}, {}] ({} bits)",
            kind(layer),
            shape.channels,
            shape.height,
            shape.width,
            bounds.low,
            bounds.high,
            bounds.bits
        );
    }
    let (float, integer) = network.recorded_accuracy();
    println!(
        "outputs need {} signed plaintext bits; test accuracy recorded at training: float {:.2}%, integer {:.2}% (parameters: cryptonets plan {})",
        network.plaintext_bits(),
        float as f64 / 100.0,
        integer as f64 / 100.0,
        path.display()
    );
    Ok(())
}

/// `cryptonets model convert`: a model of either version, written as version 2.
pub(crate) fn convert_command(input: &Path, output: &Path) -> Result<(), String> {
    let network = read_network(input)?;
    let bytes = network.to_bytes();
    write(output, &bytes)?;
    println!(
        "{} -> {} (version 2, {} layers, {} bytes)",
        input.display(),
        output.display(),
        network.layers().len(),
        bytes.len()
    );
    Ok(())
}

/// `model score`: plaintext integer accuracy on the MNIST test set or validation split.
pub(crate) fn score_command(
    model: &Path,
    data: Option<PathBuf>,
    validation: bool,
) -> Result<(), String> {
    let network = read_network(model)?;
    let input = network.input();
    if input != mnist::SHAPE {
        return Err(format!(
            "{}: input {}x{}x{} is not MNIST's",
            model.display(),
            input.channels,
            input.height,
            input.width
        ));
    }
    let dir = data.unwrap_or_else(mnist::default_dir);
    let split = match validation {
        true => mnist::Split::Train,
        false => mnist::Split::Test,
    };
    let set = mnist::load(&dir, split).map_err(|e| e.to_string())?;
    let range = match validation {
        true => set.len().saturating_sub(mnist::VALIDATION_IMAGES)..set.len(),
        false => 0..set.len(),
    };
    let images = range.len();
    let correct = range
        .into_par_iter()
        .map(|i| {
            network
                .predict(set.image(i))
                .map(|p| p == set.labels[i] as usize)
        })
        .collect::<Result<Vec<bool>, _>>()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|&c| c)
        .count();
    println!(
        "{}: {correct} of {images} {} images correct (integer accuracy {:.4})",
        model.display(),
        if validation { "validation" } else { "test" },
        correct as f64 / images.max(1) as f64
    );
    Ok(())
}

/// What `run --json` prints for a general network.
#[derive(Debug, Serialize)]
struct GeneralRunReport {
    evaluator: &'static str,
    images: usize,
    n: usize,
    plaintext_primes: Vec<u32>,
    ciphertext_primes: usize,
    output_level: usize,
    /// None for inputs without labels (not MNIST-shaped).
    accuracy: Option<f64>,
    plaintext_accuracy: Option<f64>,
    agreement: f64,
    exact_logits: f64,
    estimated_noise_budget_bits: f64,
    measured_noise_budget_bits: u32,
    encrypt_seconds: f64,
    eval_seconds: f64,
    estimated_eval_seconds_per_batch: f64,
    decrypt_seconds: f64,
    batches: usize,
    eval_seconds_per_batch: f64,
    /// At full batches: n images per batch's evaluation time.
    predictions_per_hour: f64,
    /// This run's images per its evaluation time (a partial batch costs a full one).
    predictions_per_hour_this_run: f64,
    peak_rss_bytes: u64,
    threads: usize,
}

/// Up to `count` images for `network`: MNIST test images (with their labels) for a
/// 1 x 28 x 28 input; for any other input shape (no such data set ships here) at most
/// `max_random` seeded pseudo-random images, which test exactness but not accuracy.
#[allow(clippy::type_complexity)]
pub(crate) fn network_images(
    network: &PolynomialNetwork,
    data: Option<PathBuf>,
    count: usize,
    max_random: usize,
    quiet: bool,
) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), String> {
    let input = network.input();
    if input == mnist::SHAPE {
        let dir = data.unwrap_or_else(mnist::default_dir);
        let set = mnist::load(&dir, mnist::Split::Test).map_err(|e| e.to_string())?;
        let count = count.min(set.len());
        return Ok((
            (0..count).map(|i| set.image(i).to_vec()).collect(),
            Some(set.labels[..count].to_vec()),
        ));
    }
    // Without labels more images measure nothing more.
    let count = count.min(max_random);
    if !quiet {
        eprintln!(
            "input {}x{}x{} is not MNIST's: {count} seeded random images, exactness only",
            input.channels, input.height, input.width
        );
    }
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(2016);
    let images = (0..count)
        .map(|_| {
            let mut image = vec![0u8; input.len()];
            rand_core::Rng::fill_bytes(&mut rng, &mut image);
            image
        })
        .collect();
    Ok((images, None))
}

/// `run` on a general network: MNIST test images (seeded random ones for other input shapes)
/// in batches of up to n images under one set of keys made in process, then the same report
/// keys as `run`.
pub(crate) fn run_general(
    model: &Path,
    data: Option<PathBuf>,
    images: usize,
    json: bool,
    max_memory: u64,
    backend: Backend,
) -> Result<(), String> {
    let network = read_network(model)?;
    let planned = plan_for(&network, backend, images)?;
    let params = &planned.params;
    let n = params.degree();
    if images == 0 {
        return Err("--images must be at least 1".into());
    }
    let (images, labels) = network_images(&network, data, images, n, json)?;
    let count = images.len();
    let batches = count.div_ceil(n);
    if !json {
        eprintln!(
            "general evaluator: n = {n}, {} ciphertext primes, CRT primes {:?}; {count} images in {batches} batch(es); planned {:.1} s and {:.2} GiB a batch",
            params.channels()[0].max_level(),
            params.plaintext_primes(),
            planned.estimate.seconds,
            planned.estimate.peak_bytes as f64 / (1u64 << 30) as f64
        );
    }
    planned
        .estimate
        .check_memory(max_memory)
        .map_err(|e| e.to_string())?;
    let mut rng = os_rng()?;
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    let keys = EvaluationKeys::generate(params, &secret, 1, &mut rng).map_err(|e| e.to_string())?;
    let evaluator = PolynomialEvaluator::new(params, &network, &keys).map_err(|e| e.to_string())?;
    let pixels: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let fits_i128 = network.fits_i128();

    let (mut encrypt_s, mut eval_s, mut decrypt_s) = (0.0, 0.0, 0.0);
    let (mut correct, mut plain_correct, mut agree, mut exact) = (0, 0, 0, 0);
    let mut budget = u32::MAX;
    // One batch at a time: its ciphertexts are dropped before the next is encrypted.
    for (b, batch) in pixels.chunks(n).enumerate() {
        let mut outputs = Vec::with_capacity(params.channels().len());
        for (c, p) in params.channels().iter().enumerate() {
            let t = Instant::now();
            let plaintexts =
                encode_network_inputs(p, &network, batch).map_err(|e| e.to_string())?;
            let seeds: Vec<[u8; 32]> = plaintexts
                .iter()
                .map(|_| {
                    let mut seed = [0u8; 32];
                    rand_core::Rng::fill_bytes(&mut rng, &mut seed);
                    seed
                })
                .collect();
            let inputs = plaintexts
                .par_iter()
                .zip(&seeds)
                .map(|(m, seed)| {
                    let mut rng =
                        <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(*seed);
                    secret.encrypt(p, m, &mut rng)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            encrypt_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            outputs.push(
                evaluator
                    .evaluate_channel(c, &inputs)
                    .map_err(|e| e.to_string())?,
            );
            eval_s += t.elapsed().as_secs_f64();
        }
        let t = Instant::now();
        // Big integers: outputs may pass 128 bits (up to eight CRT channels).
        let (values, batch_budget) = decrypt_outputs_wide(params, &secret, &outputs, batch.len())
            .map_err(|e| e.to_string())?;
        decrypt_s += t.elapsed().as_secs_f64();
        budget = budget.min(batch_budget);
        for (i, encrypted) in values.iter().enumerate() {
            let image = b * n + i;
            // Checked i128 where the bounds allow it, many times faster than big integers.
            let plain = match fits_i128 {
                true => network
                    .logits(pixels[image])
                    .map(|l| l.into_iter().map(num_bigint::BigInt::from).collect()),
                false => network.logits_wide(pixels[image]),
            }
            .map_err(|e| e.to_string())?;
            if let Some(labels) = &labels {
                let label = labels[image] as usize;
                correct += (argmax(encrypted) == label) as usize;
                plain_correct += (argmax(&plain) == label) as usize;
            }
            agree += (argmax(encrypted) == argmax(&plain)) as usize;
            exact += (encrypted == &plain) as usize;
        }
        if !json {
            eprintln!(
                "batch {}/{batches}: {} images, evaluated in {eval_s:.1} s so far",
                b + 1,
                batch.len()
            );
        }
    }
    let report = GeneralRunReport {
        evaluator: "general",
        images: count,
        n,
        plaintext_primes: params.plaintext_primes(),
        ciphertext_primes: params.channels()[0].max_level(),
        output_level: evaluator.plan().output_level(),
        accuracy: labels.as_ref().map(|_| correct as f64 / count as f64),
        plaintext_accuracy: labels.as_ref().map(|_| plain_correct as f64 / count as f64),
        agreement: agree as f64 / count as f64,
        exact_logits: exact as f64 / count as f64,
        estimated_noise_budget_bits: (evaluator.plan().output_budget_bits() * 10.0).round() / 10.0,
        measured_noise_budget_bits: budget,
        encrypt_seconds: encrypt_s,
        eval_seconds: eval_s,
        estimated_eval_seconds_per_batch: planned.estimate.seconds,
        decrypt_seconds: decrypt_s,
        batches,
        eval_seconds_per_batch: eval_s / batches as f64,
        predictions_per_hour: n as f64 * 3600.0 * batches as f64 / eval_s,
        predictions_per_hour_this_run: count as f64 * 3600.0 / eval_s,
        peak_rss_bytes: peak_rss_bytes().unwrap_or(0),
        threads: rayon::current_num_threads(),
    };
    if json {
        crate::print_json(&report)?;
    } else {
        println!(
            "{} images: accuracy {} (plaintext {}), agreement {:.4}, exact logits {:.4}; noise budget {} bits ({:.1} estimated)",
            count,
            report.accuracy.map_or("n/a".into(), |a| format!("{a:.4}")),
            report
                .plaintext_accuracy
                .map_or("n/a".into(), |a| format!("{a:.4}")),
            report.agreement,
            report.exact_logits,
            budget,
            report.estimated_noise_budget_bits
        );
        println!(
            "encrypt {:.2} s, evaluate {:.2} s (all channels; {:.0} predictions/hour at full batches of {n}, {:.0} in this run), decrypt {:.2} s; peak RSS {:.0} MiB",
            encrypt_s,
            eval_s,
            report.predictions_per_hour,
            report.predictions_per_hour_this_run,
            decrypt_s,
            report.peak_rss_bytes as f64 / 1048576.0
        );
    }
    if report.agreement < 1.0 || report.exact_logits < 1.0 {
        return Err("encrypted inference differs from plaintext inference".into());
    }
    Ok(())
}
