//! `keygen`, `encrypt`, `eval` and `decrypt` for general networks (model format v2): the
//! same files as for the CryptoNets model (keys, batch, record, logits), under the model's
//! plan.
//!
//! The plan depends on the batch size only through the ring degree n, which `keygen`
//! chooses (`--images`). Every later step finds it again from the model and its key: it
//! plans the model at each ring degree ([`PlannedNetwork::for_degree`], which depends on
//! the model and n alone) and takes the parameters the key was made for. A key of another
//! model, or of other parameters, matches none and is refused.

use std::path::Path;

use cryptonets_core::Backend;
use cryptonets_core::bfv::SecretKey;
use cryptonets_core::model::argmax;
use cryptonets_core::model::polynomial::PolynomialNetwork;
use cryptonets_core::network::{
    EvaluationKeys, NetworkParameters, PLANNED_DEGREES, PlannedNetwork, PolynomialEvaluator,
};
use cryptonets_host::files::{read_checked, read_secret, write, write_secret};
use cryptonets_host::mnist;
use cryptonets_host::pipeline::{
    BatchFile, BatchKind, BatchRecord, BatchShape, MAX_RECORD_BYTES, decrypt_network_batch,
    encrypt_network_batch, evaluate_network_batch, os_rng,
};

use crate::general_cli::{plan_for, read_network};
use crate::pipeline_cli::{
    DecryptArgs, DecryptReport, EncryptArgs, EvalArgs, KeygenArgs, bar, evaluate_to_file,
    image_range, limit, record_path, test_images,
};

/// The model's plan at every ring degree that holds it.
fn plans(network: &PolynomialNetwork, backend: Backend) -> Vec<PlannedNetwork> {
    PLANNED_DEGREES
        .into_iter()
        .filter_map(|n| {
            PlannedNetwork::for_degree(network, backend, rayon::current_num_threads(), n).ok()
        })
        .collect()
}

/// The plan whose parameters `parse` accepts the key under, with what it parsed; the file
/// is read up to the largest key any plan has (`max_bytes`).
fn plan_of_key<T>(
    network: &PolynomialNetwork,
    backend: Backend,
    path: &Path,
    read: impl Fn(&Path, u64) -> Result<Vec<u8>, String>,
    max_bytes: impl Fn(&NetworkParameters) -> usize,
    parse: impl Fn(&NetworkParameters, &[u8]) -> Result<T, cryptonets_core::Error>,
) -> Result<(PlannedNetwork, T), String> {
    let plans = plans(network, backend);
    let max = plans
        .iter()
        .map(|p| max_bytes(&p.params))
        .max()
        .unwrap_or(0);
    let bytes = read(path, max as u64)?;
    let mut last = None;
    for planned in plans {
        match parse(&planned.params, &bytes) {
            Ok(parsed) => return Ok((planned, parsed)),
            Err(e) => last = Some(e),
        }
    }
    Err(format!(
        "{}: {} (no plan of this model takes this key; make keys for the model with `cryptonets keygen --model`)",
        path.display(),
        last.map_or("no ring degree holds this model".into(), |e| e.to_string())
    ))
}

fn secret_key_and_plan(
    network: &PolynomialNetwork,
    backend: Backend,
    path: &Path,
) -> Result<(PlannedNetwork, SecretKey), String> {
    plan_of_key(
        network,
        backend,
        path,
        |path, max| read_secret(path, max, "secret key").map(|b| b.to_vec()),
        |params| params.channels()[0].secret_key_bytes(),
        |params, bytes| SecretKey::from_bytes(&params.channels()[0], bytes),
    )
}

/// `keygen` for a version 2 model: the plan for `--images` images fixes the parameters.
pub(crate) fn keygen(args: &KeygenArgs, backend: Backend) -> Result<(), String> {
    let network = read_network(&args.model)?;
    let planned = plan_for(&network, backend, args.images)?;
    let params = &planned.params;
    let mut rng = os_rng()?;
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    // General networks take unpacked batches: no Galois keys.
    let eval = EvaluationKeys::generate(params, &secret, 1, &mut rng).map_err(|e| e.to_string())?;
    write_secret(&args.secret_key, &secret.to_bytes(&params.channels()[0]))?;
    let eval = eval.to_bytes(params);
    write(&args.eval_key, &eval)?;
    println!(
        "keys for n = {} (batches of up to {} images), {} ciphertext primes, plaintext CRT primes {:?}: secret key {}, evaluation key {} ({} bytes)",
        params.degree(),
        params.degree(),
        params.ciphertext_primes(),
        params.plaintext_primes(),
        args.secret_key.display(),
        args.eval_key.display(),
        eval.len()
    );
    Ok(())
}

/// The images of `encrypt`: MNIST test images for a 1 x 28 x 28 network, otherwise the raw
/// file `--pixels` (each image its C x H x W bytes, channel by channel, row by row).
fn input_images(
    network: &PolynomialNetwork,
    args: &EncryptArgs,
    n: usize,
) -> Result<Vec<Vec<u8>>, String> {
    let input = network.input();
    let len = input.len();
    if let Some(path) = &args.pixels {
        let max = (len as u64).saturating_mul(n as u64);
        let bytes = read_checked(path, max, "image pixels")?;
        if bytes.is_empty() || bytes.len() % len != 0 {
            return Err(format!(
                "{}: {} bytes is not a whole number of {}x{}x{} images ({len} bytes each)",
                path.display(),
                bytes.len(),
                input.channels,
                input.height,
                input.width
            ));
        }
        let all: Vec<&[u8]> = bytes.chunks(len).collect();
        let end = args
            .offset
            .checked_add(args.count)
            .map(|end| end.min(all.len()))
            .filter(|&end| end > args.offset)
            .ok_or_else(|| {
                format!(
                    "{}: no images from {} (the file holds {})",
                    path.display(),
                    args.offset,
                    all.len()
                )
            })?;
        return Ok(all[args.offset..end].iter().map(|i| i.to_vec()).collect());
    }
    if input != mnist::SHAPE {
        return Err(format!(
            "this model takes {}x{}x{} inputs, not MNIST's: give them with --pixels FILE",
            input.channels, input.height, input.width
        ));
    }
    let set = test_images(args.data.clone())?;
    let range = image_range(&set, args.offset, args.count, n)?;
    Ok(range.map(|i| set.image(i).to_vec()).collect())
}

/// `encrypt` for a version 2 model.
pub(crate) fn encrypt(args: &EncryptArgs, backend: Backend) -> Result<(), String> {
    let network = read_network(&args.model)?;
    let (planned, secret) = secret_key_and_plan(&network, backend, &args.secret_key)?;
    let params = &planned.params;
    let images = input_images(&network, args, params.degree())?;
    if images.len() > params.degree() {
        return Err(format!(
            "--count must be at most {} (one batch)",
            params.degree()
        ));
    }
    let pixels: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let total = (params.channels().len() * network.input().len()) as u64;
    let progress = bar(total, "encrypting", false);
    let batch = encrypt_network_batch(params, &network, &secret, &pixels, &mut os_rng()?, &|| {
        progress.inc(1)
    })
    .map_err(|e| e.to_string())?;
    progress.finish_and_clear();
    let bytes = batch.to_bytes();
    write(&args.out, &bytes)?;
    let record = args
        .record
        .clone()
        .unwrap_or_else(|| record_path(&args.out));
    let offset = args.pixels.is_none().then_some(args.offset);
    write(
        &record,
        BatchRecord::of(&batch, offset).to_json().as_bytes(),
    )?;
    println!(
        "{} images encrypted to {} ({} bytes, {:.1} KiB per image); record of the batch in {}",
        images.len(),
        args.out.display(),
        bytes.len(),
        bytes.len() as f64 / images.len() as f64 / 1024.0,
        record.display()
    );
    Ok(())
}

/// `eval` for a version 2 model: the service, with the evaluation key only.
pub(crate) fn eval(args: &EvalArgs, backend: Backend) -> Result<(), String> {
    let network = read_network(&args.model)?;
    let (planned, keys) = plan_of_key(
        &network,
        backend,
        &args.eval_key,
        |path, max| read_checked(path, max, "evaluation key"),
        EvaluationKeys::max_serialized_len,
        EvaluationKeys::from_bytes,
    )?;
    let params = &planned.params;
    let shape = BatchShape::of(&network);
    let max = BatchFile::max_len_for(params, BatchKind::Images, shape) as u64;
    let input = read_checked(&args.input, max, "batch of encrypted images")?;
    let batch = BatchFile::from_bytes_for(&input, BatchKind::Images, shape)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    batch
        .check_parameters(params)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let limit = limit(args.max_memory);
    eprintln!(
        "planned: peak memory about {:.2} GiB (limit {:.2} GiB), about {:.1} s on {} threads",
        planned.estimate.peak_bytes as f64 / (1u64 << 30) as f64,
        limit as f64 / (1u64 << 30) as f64,
        planned.estimate.seconds,
        rayon::current_num_threads()
    );
    planned
        .estimate
        .check_memory(limit)
        .map_err(|e| e.to_string())?;
    let evaluator = PolynomialEvaluator::new(params, &network, &keys).map_err(|e| e.to_string())?;
    evaluate_to_file(
        params.channels().len(),
        batch.header.images,
        &args.input,
        &args.out,
        |progress| evaluate_network_batch(params, &evaluator, &batch, progress),
    )
}

/// `decrypt` for a version 2 model.
pub(crate) fn decrypt(args: &DecryptArgs, backend: Backend) -> Result<(), String> {
    let network = read_network(&args.model)?;
    let (planned, secret) = secret_key_and_plan(&network, backend, &args.secret_key)?;
    let params = &planned.params;
    let record = read_checked(&args.record, MAX_RECORD_BYTES, "batch record")?;
    let record =
        BatchRecord::from_json(&record).map_err(|e| format!("{}: {e}", args.record.display()))?;
    let shape = BatchShape::of(&network);
    let max = BatchFile::max_len_for(params, BatchKind::Logits, shape) as u64;
    let bytes = read_checked(&args.input, max, "file of encrypted outputs")?;
    let batch = BatchFile::from_bytes_for(&bytes, BatchKind::Logits, shape)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    record
        .check(&batch)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let (outputs, budget) = decrypt_network_batch(params, &secret, &batch)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let predictions: Vec<usize> = outputs.iter().map(|o| argmax(o)).collect();
    let input = network.input();
    let mnist_shaped = input == mnist::SHAPE;
    let accuracy = crate::pipeline_cli::label_accuracy(
        args,
        record.offset,
        &predictions,
        mnist_shaped,
        params.degree(),
    )?;
    crate::pipeline_cli::finish_decrypt(
        args,
        DecryptReport {
            images: predictions.len(),
            batch_id: record.batch_id.clone(),
            packing: 1,
            min_noise_budget_bits: budget,
            required_noise_budget_bits: cryptonets_core::network::MIN_OUTPUT_BUDGET_BITS,
            predictions,
            accuracy,
        },
    )
}
