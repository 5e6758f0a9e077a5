//! `keygen`, `encrypt`, `eval` and `decrypt` with `--mode single`: the single-image mode's
//! files. Both parties plan the model ([`PlannedSingle::new`] depends on the model alone),
//! so the keys, uploads and results need carry no parameters: every object in them names
//! its parameter set and is refused under another.
//!
//! Uploads and results are bundles of objects ([`cryptonets_host::bundle`]).
//!
//! The owner keeps OUT.record (JSON: the bundle id, image count and first test image), and
//! `decrypt` checks the results against it.

use std::path::Path;
use std::time::Instant;

use cryptonets_core::Backend;
use cryptonets_core::bfv::SecretKey;
use cryptonets_core::model::argmax;
use cryptonets_core::model::polynomial::PolynomialNetwork;
use cryptonets_core::network::single::{PlannedSingle, SingleEvaluator, SingleKeys};
use cryptonets_host::files::{read_checked, read_secret, write, write_secret};
use cryptonets_host::pipeline::os_rng;
use serde::{Deserialize, Serialize};

use cryptonets_host::bundle::{Bundle, HEADER, MAX_BUNDLE_IMAGES, RESULTS, UPLOADS};
use cryptonets_host::single_image;

use crate::general_cli::read_network;
use crate::pipeline_cli::{
    DecryptArgs, DecryptReport, EncryptArgs, EvalArgs, KeygenArgs, finish_decrypt, image_range,
    label_accuracy, record_path, test_images,
};

/// The owner's record of an uploads bundle.
#[derive(Debug, Serialize, Deserialize)]
struct SingleRecord {
    mode: String,
    bundle_id: String,
    images: usize,
    offset: Option<usize>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn plan(
    network: &PolynomialNetwork,
    backend: Backend,
    model: &Path,
) -> Result<PlannedSingle, String> {
    PlannedSingle::new(network, backend)
        .map_err(|e| format!("{}: no single-image plan: {e}", model.display()))
}

fn read_secret_key(planned: &PlannedSingle, path: &Path) -> Result<SecretKey, String> {
    let p = &planned.params.channels()[0];
    let bytes = read_secret(path, p.secret_key_bytes() as u64, "secret key")?;
    SecretKey::from_bytes(p, &bytes).map_err(|e| {
        format!(
            "{}: {e} (not a key of this model's single-image parameters; make one with `cryptonets keygen --mode single`)",
            path.display()
        )
    })
}

/// `keygen --mode single`: the secret key and exactly the evaluation keys the plan needs.
pub(crate) fn keygen(args: &KeygenArgs, backend: Backend) -> Result<(), String> {
    let network = read_network(&args.model)?;
    let planned = plan(&network, backend, &args.model)?;
    let (params, plan) = (&planned.params, &planned.plan);
    let mut rng = os_rng()?;
    let t = Instant::now();
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    let keys = SingleKeys::generate(params, plan, &secret, &mut rng).map_err(|e| e.to_string())?;
    let seconds = t.elapsed().as_secs_f64();
    write_secret(&args.secret_key, &secret.to_bytes(&params.channels()[0]))?;
    let bytes = keys.to_bytes(params);
    write(&args.eval_key, &bytes)?;
    println!(
        "single-image keys for n = {}, {} ciphertext primes, plaintext CRT primes {:?}: secret key {}, evaluation keys {} ({} bytes: {} Galois keys{}) in {seconds:.2} s",
        params.degree(),
        params.ciphertext_primes(),
        params.plaintext_primes(),
        args.secret_key.display(),
        args.eval_key.display(),
        bytes.len(),
        keys.galois.len(),
        if keys.relin.is_some() {
            " and relinearization"
        } else {
            ""
        },
    );
    Ok(())
}

/// The images of `encrypt --mode single`: MNIST test images, or `--pixels` for another
/// input shape.
fn images(network: &PolynomialNetwork, args: &EncryptArgs) -> Result<Vec<Vec<u8>>, String> {
    let input = network.input();
    if let Some(path) = &args.pixels {
        let len = input.len();
        let max = (len as u64).saturating_mul(MAX_BUNDLE_IMAGES as u64);
        let bytes = read_checked(path, max, "image pixels")?;
        if bytes.is_empty() || bytes.len() % len != 0 {
            return Err(format!(
                "{}: {} bytes is not a whole number of {len}-byte images",
                path.display(),
                bytes.len()
            ));
        }
        let all: Vec<&[u8]> = bytes.chunks(len).collect();
        let end = args.offset.saturating_add(args.count).min(all.len());
        if end <= args.offset {
            return Err(format!(
                "{}: no images from {}",
                path.display(),
                args.offset
            ));
        }
        return Ok(all[args.offset..end].iter().map(|i| i.to_vec()).collect());
    }
    if input != cryptonets_host::mnist::SHAPE {
        return Err("this model's input is not MNIST's: give the images with --pixels FILE".into());
    }
    let set = test_images(args.data.clone())?;
    let range = image_range(&set, args.offset, args.count, MAX_BUNDLE_IMAGES)?;
    Ok(range.map(|i| set.image(i).to_vec()).collect())
}

/// `encrypt --mode single`: one seeded (compressed where planned) ciphertext per image and
/// channel, and the owner's record.
pub(crate) fn encrypt(args: &EncryptArgs, backend: Backend) -> Result<(), String> {
    let network = read_network(&args.model)?;
    let planned = plan(&network, backend, &args.model)?;
    let secret = read_secret_key(&planned, &args.secret_key)?;
    let images = images(&network, args)?;
    let mut rng = os_rng()?;
    let mut id = [0u8; 16];
    rand_core::Rng::fill_bytes(&mut rng, &mut id);
    let t = Instant::now();
    let mut objects = Vec::with_capacity(images.len());
    for image in &images {
        let per_channel = single_image::encrypt_image(&planned, &network, &secret, image, &mut rng)
            .map_err(|e| e.to_string())?;
        objects.push(per_channel.into_iter().map(|bytes| vec![bytes]).collect());
    }
    let seconds = t.elapsed().as_secs_f64();
    let bundle = Bundle {
        kind: UPLOADS,
        id,
        objects,
    };
    let bytes = bundle.to_bytes();
    write(&args.out, &bytes)?;
    let record = args
        .record
        .clone()
        .unwrap_or_else(|| record_path(&args.out));
    let record_json = SingleRecord {
        mode: "single".into(),
        bundle_id: hex(&id),
        images: images.len(),
        offset: args.pixels.is_none().then_some(args.offset),
    };
    write(
        &record,
        serde_json::to_string(&record_json)
            .map_err(|e| e.to_string())?
            .as_bytes(),
    )?;
    println!(
        "{} images encrypted one by one in {seconds:.2} s: {} ({} bytes, {} an image), record {}",
        images.len(),
        args.out.display(),
        bytes.len(),
        (bytes.len() - HEADER) / images.len(),
        record.display()
    );
    Ok(())
}

/// What `eval --mode single --json` would print; printed as text.
#[derive(Debug, Serialize)]
struct EvalReport {
    mode: &'static str,
    images: usize,
    latency_seconds_per_image: f64,
    latency_seconds_max: f64,
    eval_seconds: f64,
    threads: usize,
}

/// `eval --mode single`: every image of the bundle, its channels in parallel.
pub(crate) fn eval(args: &EvalArgs, backend: Backend) -> Result<(), String> {
    let network = read_network(&args.model)?;
    let planned = plan(&network, backend, &args.model)?;
    let (params, plan) = (&planned.params, &planned.plan);
    let max_keys = SingleKeys::serialized_len_for(params, plan);
    let keys = read_checked(&args.eval_key, max_keys as u64, "evaluation keys")?;
    let keys = SingleKeys::from_bytes(params, &keys)
        .map_err(|e| format!("{}: {e}", args.eval_key.display()))?;
    let evaluator = SingleEvaluator::new(params, plan, &keys).map_err(|e| {
        format!(
            "{}: {e} (keys of another model or mode? make them with `cryptonets keygen --mode single`)",
            args.eval_key.display()
        )
    })?;
    let p = &params.channels()[0];
    let channels = params.channels().len();
    let object = p.seeded_ciphertext_bytes();
    let max = HEADER + MAX_BUNDLE_IMAGES * channels * (4 + object);
    let bytes = read_checked(&args.input, max as u64, "encrypted images")?;
    let uploads = Bundle::from_bytes(&bytes, UPLOADS, channels, 1, object)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let started = Instant::now();
    let mut latency = Vec::with_capacity(uploads.objects.len());
    let mut results = Vec::with_capacity(uploads.objects.len());
    for image in &uploads.objects {
        let t = Instant::now();
        let outputs = single_image::evaluate_image(&planned, &evaluator, image)
            .map_err(|e| format!("{}: {e}", args.input.display()))?;
        latency.push(t.elapsed().as_secs_f64());
        results.push(outputs);
    }
    let eval_seconds = started.elapsed().as_secs_f64();
    let bundle = Bundle {
        kind: RESULTS,
        id: uploads.id,
        objects: results,
    };
    write(&args.out, &bundle.to_bytes())?;
    let max_latency = latency.iter().copied().fold(0.0, f64::max);
    latency.sort_by(f64::total_cmp);
    let report = EvalReport {
        mode: "single",
        images: latency.len(),
        latency_seconds_per_image: latency[latency.len() / 2],
        latency_seconds_max: max_latency,
        eval_seconds,
        threads: rayon::current_num_threads(),
    };
    println!(
        "{} images evaluated one by one: {:.3} s an image (median; slowest {:.3} s), {:.2} s in all on {} threads; results {}",
        report.images,
        report.latency_seconds_per_image,
        report.latency_seconds_max,
        report.eval_seconds,
        report.threads,
        args.out.display()
    );
    Ok(())
}

/// `decrypt --mode single`: the logits of every image, checked against the owner's record.
pub(crate) fn decrypt(args: &DecryptArgs, backend: Backend) -> Result<(), String> {
    let network = read_network(&args.model)?;
    let planned = plan(&network, backend, &args.model)?;
    let (params, plan) = (&planned.params, &planned.plan);
    let secret = read_secret_key(&planned, &args.secret_key)?;
    let record = read_checked(&args.record, 4096, "record")?;
    let record: SingleRecord = serde_json::from_slice(&record)
        .map_err(|e| format!("{}: not a single-image record: {e}", args.record.display()))?;
    let p = &params.channels()[0];
    let channels = params.channels().len();
    let parts = plan.layout.output().len();
    let object = p.max_ciphertext_bytes();
    let max = HEADER + MAX_BUNDLE_IMAGES * channels * parts * (4 + object);
    let bytes = read_checked(&args.input, max as u64, "encrypted results")?;
    let results = Bundle::from_bytes(&bytes, RESULTS, channels, parts, object)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    if hex(&results.id) != record.bundle_id || results.objects.len() != record.images {
        return Err(format!(
            "{}: these results answer another upload than {} ({} images, id {})",
            args.input.display(),
            args.record.display(),
            record.images,
            record.bundle_id
        ));
    }
    let mut predictions = Vec::with_capacity(results.objects.len());
    let mut min_budget = u32::MAX;
    for (i, image) in results.objects.iter().enumerate() {
        let (logits, budget) = single_image::decrypt_image(&planned, &secret, image)
            .map_err(|e| format!("{}: image {i}: {e}", args.input.display()))?;
        min_budget = min_budget.min(budget);
        predictions.push(argmax(&logits));
    }
    let input = network.input();
    let accuracy = label_accuracy(
        args,
        record.offset,
        &predictions,
        (input.channels, input.height, input.width) == (1, 28, 28),
        MAX_BUNDLE_IMAGES,
    )?;
    let report = DecryptReport {
        images: predictions.len(),
        batch_id: record.bundle_id.clone(),
        packing: 1,
        min_noise_budget_bits: min_budget,
        required_noise_budget_bits: cryptonets_core::network::MIN_OUTPUT_BUDGET_BITS,
        predictions,
        accuracy,
    };
    finish_decrypt(args, report)
}
