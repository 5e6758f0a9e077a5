//! `keygen`, `encrypt`, `eval`, `decrypt` and `run`: the encrypted MNIST pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use cryptonets_core::Backend;
use cryptonets_core::model::{MAX_MODEL_BYTES, Model, argmax};
use cryptonets_core::network::{
    DEFAULT_MAX_PACKING, EvaluationKeys, INPUTS, Inputs, NetworkEvaluator, NetworkParameters,
    Packing, ResourceEstimate,
};
use cryptonets_host::files::{read_checked, read_secret, write, write_secret};
use cryptonets_host::mnist;
use cryptonets_host::phases::{self, PhaseClock};
use cryptonets_host::pipeline::{
    BatchFile, BatchKind, BatchRecord, BatchWorkspace, MAX_RECORD_BYTES, decrypt_batch,
    encrypt_batch, eval_key_bytes, evaluate_batch, evaluate_batch_in, keygen, os_rng,
    peak_rss_bytes, read_eval_key, read_secret_key, secret_key_bytes,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// The committed model, relative to the working directory.
pub(crate) const DEFAULT_MODEL: &str = "models/cryptonets-mnist.cnmd";

/// Most worker threads `--threads` accepts.
pub(crate) const MAX_THREADS: usize = 1024;

fn read_secret_key_file(
    params: &NetworkParameters,
    path: &Path,
) -> Result<cryptonets_core::bfv::SecretKey, String> {
    let max = params.channels()[0].secret_key_bytes() as u64;
    let bytes = read_secret(path, max, "secret key")?;
    read_secret_key(params, &bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_eval_key_file(params: &NetworkParameters, path: &Path) -> Result<EvaluationKeys, String> {
    let max = EvaluationKeys::max_serialized_len(params) as u64;
    let bytes = read_checked(path, max, "evaluation key")?;
    read_eval_key(params, &bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_batch_file(
    params: &NetworkParameters,
    path: &Path,
    kind: BatchKind,
) -> Result<Vec<u8>, String> {
    let what = match kind {
        BatchKind::Images => "batch of encrypted images",
        BatchKind::Logits => "file of encrypted logits",
    };
    read_checked(path, BatchFile::max_len(params, kind) as u64, what)
}

/// A memory size: bytes, or with a suffix K, M, G or T (powers of 1024; `KiB` etc. too).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (for example 8G, 512M or 1000000)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("'{text}': unknown unit (use K, M, G or T)")),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(bytes as u64)
}

/// The default memory limit: what the system reports available (MemAvailable), or 4 GiB
/// where it does not.
pub(crate) fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        })
        .unwrap_or(4 << 30)
}

pub(crate) fn limit(max_memory: Option<u64>) -> u64 {
    max_memory.unwrap_or_else(available_memory)
}

fn describe(estimate: &ResourceEstimate, limit: u64) -> String {
    format!(
        "planned: peak memory about {:.2} GiB (limit {:.2} GiB), about {:.1} s on {} threads",
        estimate.peak_bytes as f64 / (1u64 << 30) as f64,
        limit as f64 / (1u64 << 30) as f64,
        estimate.seconds,
        rayon::current_num_threads()
    )
}

/// A model file with its parsed view and parameters.
pub(crate) struct Loaded {
    bytes: Vec<u8>,
    /// The parameters of full batches (one pixel a ciphertext); the keys' (every packing
    /// shares n, Q and the special primes).
    pub(crate) params: NetworkParameters,
    /// Those of packed batches, whose inputs are unpacked by key switching first: that
    /// costs noise, so they may need more CRT channels.
    packed: NetworkParameters,
}

impl Loaded {
    pub(crate) fn new(path: &Path, backend: Backend) -> Result<Self, String> {
        let bytes = read_checked(path, MAX_MODEL_BYTES as u64, "model")?;
        let model = Model::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let (params, packed) = NetworkParameters::for_fresh_and_unpacked(&model, backend)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            bytes,
            params,
            packed,
        })
    }

    pub(crate) fn model(&self) -> Model<'_> {
        Model::parse(&self.bytes).expect("parsed before")
    }

    /// The parameters of batches of `packing`.
    pub(crate) fn params_for(&self, packing: Packing) -> &NetworkParameters {
        match Inputs::of(packing) {
            Inputs::Fresh => &self.params,
            Inputs::Unpacked => &self.packed,
        }
    }

    /// The parameters of the packing with the most channels: what bounds a batch's size.
    fn widest(&self) -> &NetworkParameters {
        [&self.params, &self.packed]
            .into_iter()
            .max_by_key(|p| p.channels().len())
            .expect("two")
    }
}

pub(crate) fn test_images(data: Option<PathBuf>) -> Result<mnist::Dataset, String> {
    let dir = data.unwrap_or_else(mnist::default_dir);
    mnist::load(&dir, mnist::Split::Test).map_err(|e| e.to_string())
}

fn image_array(set: &mnist::Dataset, i: usize) -> [u8; INPUTS] {
    set.image(i).try_into().expect("28 x 28 pixels")
}

pub(crate) fn bar(len: u64, message: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_message(message.to_string());
    bar.set_style(
        ProgressStyle::with_template("{msg:24} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar
}

/// `cryptonets keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// The model (its logits fix the plaintext CRT primes and so the parameters).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub(crate) model: PathBuf,
    /// Where to write the secret key (keep it private).
    #[arg(long)]
    pub(crate) secret_key: PathBuf,
    /// Where to write the evaluation keys for the service (relinearization, and the Galois
    /// keys that unpack small batches).
    #[arg(long)]
    pub(crate) eval_key: PathBuf,
    /// Densest packing of small batches the service will unpack: 1, 2, 4, 8 or 16 pixels a
    /// ciphertext (k - 1 Galois keys, about 1 MiB each).
    #[arg(long, default_value_t = DEFAULT_MAX_PACKING, value_parser = parse_packing)]
    pub(crate) max_packing: usize,
    /// Images a batch will hold, for a version 2 model: its plan (the ring degree n, so the
    /// keys) is chosen for them. The CryptoNets model (version 1) always takes n = 8192.
    #[arg(long, default_value_t = 8192)]
    pub(crate) images: usize,
    /// batch (images in the slots) or single (one image a ciphertext, `run --mode single`'s
    /// layouts and keys).
    #[arg(long, value_enum, default_value_t = Mode::Batch)]
    pub(crate) mode: Mode,
}

fn parse_packing(text: &str) -> Result<usize, String> {
    let k: usize = text.parse().map_err(|e| format!("{e}"))?;
    Packing::new(k)
        .map(|p| p.factor())
        .map_err(|e| e.to_string())
}

pub(crate) fn keygen_command(args: &KeygenArgs, backend: Backend) -> Result<(), String> {
    if args.mode == Mode::Single {
        return crate::single_files::keygen(args, backend);
    }
    if crate::general_cli::is_v2(&args.model) {
        return crate::general_files::keygen(args, backend);
    }
    let loaded = Loaded::new(&args.model, backend)?;
    let keys =
        keygen(&loaded.params, args.max_packing, &mut os_rng()?).map_err(|e| e.to_string())?;
    write_secret(&args.secret_key, &secret_key_bytes(&loaded.params, &keys))?;
    let eval = eval_key_bytes(&loaded.params, &keys);
    write(&args.eval_key, &eval)?;
    println!(
        "keys for n = {}, {} ciphertext primes, plaintext CRT primes {:?} (packed batches: {:?}): secret key {}, evaluation key {} ({} bytes)",
        loaded.params.degree(),
        loaded.params.ciphertext_primes(),
        loaded.params.plaintext_primes(),
        loaded.packed.plaintext_primes(),
        args.secret_key.display(),
        args.eval_key.display(),
        eval.len()
    );
    Ok(())
}

/// `cryptonets encrypt`.
#[derive(Debug, Args)]
pub(crate) struct EncryptArgs {
    /// The model the images will be evaluated with.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub(crate) model: PathBuf,
    /// The secret key (from `cryptonets keygen`).
    #[arg(long)]
    pub(crate) secret_key: PathBuf,
    /// Directory of the MNIST IDX files (default: data/mnist).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// First test image.
    #[arg(long, default_value_t = 0)]
    pub(crate) offset: usize,
    /// Number of test images (at most n, one batch).
    #[arg(long, default_value_t = 8192)]
    pub(crate) count: usize,
    /// For a version 2 model whose input is not MNIST's: the images, raw (each its C x H x W
    /// bytes, channel by channel, row by row, one image after the other); `--offset` and
    /// `--count` pick from them.
    #[arg(long)]
    pub(crate) pixels: Option<PathBuf>,
    /// Densest packing to use (as given to keygen): a batch of at most 8192 / k images goes
    /// k pixels a ciphertext, k times smaller.
    #[arg(long, default_value_t = DEFAULT_MAX_PACKING, value_parser = parse_packing)]
    pub(crate) max_packing: usize,
    /// Where to write the encrypted batch.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Where to keep the owner's record of the batch, which `decrypt` checks the logits
    /// against (default: OUT.record).
    #[arg(long)]
    pub(crate) record: Option<PathBuf>,
    /// batch (images in the slots) or single (one image a ciphertext, `run --mode single`'s
    /// layouts and keys).
    #[arg(long, value_enum, default_value_t = Mode::Batch)]
    pub(crate) mode: Mode,
}

pub(crate) fn record_path(batch: &Path) -> PathBuf {
    let mut name = batch.as_os_str().to_owned();
    name.push(".record");
    PathBuf::from(name)
}

pub(crate) fn image_range(
    set: &mnist::Dataset,
    offset: usize,
    count: usize,
    n: usize,
) -> Result<std::ops::Range<usize>, String> {
    if count == 0 || count > n {
        return Err(format!("--count must be between 1 and {n} (one batch)"));
    }
    let end = offset
        .checked_add(count)
        .filter(|&end| end <= set.len())
        .ok_or_else(|| {
            format!(
                "images {offset}..{} are outside the {} test images",
                offset.saturating_add(count),
                set.len()
            )
        })?;
    Ok(offset..end)
}

pub(crate) fn encrypt_command(args: &EncryptArgs, backend: Backend) -> Result<(), String> {
    if args.mode == Mode::Single {
        return crate::single_files::encrypt(args, backend);
    }
    if crate::general_cli::is_v2(&args.model) {
        return crate::general_files::encrypt(args, backend);
    }
    if args.pixels.is_some() {
        return Err("--pixels is for version 2 models with non-MNIST inputs".into());
    }
    let loaded = Loaded::new(&args.model, backend)?;
    let secret = read_secret_key_file(&loaded.params, &args.secret_key)?;
    let set = test_images(args.data.clone())?;
    let range = image_range(&set, args.offset, args.count, loaded.params.degree())?;
    let images: Vec<[u8; INPUTS]> = range.map(|i| image_array(&set, i)).collect();
    let packing = Packing::for_batch(loaded.params.degree(), images.len(), args.max_packing);
    let params = loaded.params_for(packing);
    let total = (params.channels().len() * packing.ciphertexts()) as u64;
    let progress = bar(total, "encrypting", false);
    let batch = encrypt_batch(
        params,
        &loaded.model(),
        &secret,
        &images,
        packing,
        &mut os_rng()?,
        &|| progress.inc(1),
    )
    .map_err(|e| e.to_string())?;
    progress.finish_and_clear();
    let bytes = batch.to_bytes();
    write(&args.out, &bytes)?;
    let record = args
        .record
        .clone()
        .unwrap_or_else(|| record_path(&args.out));
    write(
        &record,
        BatchRecord::of(&batch, Some(args.offset))
            .to_json()
            .as_bytes(),
    )?;
    println!(
        "{} images encrypted, {} pixels a ciphertext, to {} ({} bytes, {:.1} KiB per image); record of the batch in {}",
        images.len(),
        packing.factor(),
        args.out.display(),
        bytes.len(),
        bytes.len() as f64 / images.len() as f64 / 1024.0,
        record.display()
    );
    Ok(())
}

/// `cryptonets eval`.
#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// The model.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub(crate) model: PathBuf,
    /// The evaluation key (never the secret key).
    #[arg(long)]
    pub(crate) eval_key: PathBuf,
    /// The encrypted batch (from `cryptonets encrypt`).
    #[arg(long)]
    pub(crate) input: PathBuf,
    /// Where to write the encrypted logits.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Refuse batches whose planned peak memory is above this (bytes, or K, M, G, T;
    /// default: the memory the system reports available).
    #[arg(long, value_parser = parse_size)]
    pub(crate) max_memory: Option<u64>,
    /// batch (images in the slots) or single (one image a ciphertext, `run --mode single`'s
    /// layouts and keys).
    #[arg(long, value_enum, default_value_t = Mode::Batch)]
    pub(crate) mode: Mode,
}

pub(crate) fn eval_command(args: &EvalArgs, backend: Backend) -> Result<(), String> {
    if args.mode == Mode::Single {
        return crate::single_files::eval(args, backend);
    }
    if crate::general_cli::is_v2(&args.model) {
        return crate::general_files::eval(args, backend);
    }
    let loaded = Loaded::new(&args.model, backend)?;
    let keys = read_eval_key_file(&loaded.params, &args.eval_key)?;
    let model = loaded.model();
    let input = read_batch_file(loaded.widest(), &args.input, BatchKind::Images)?;
    let batch = BatchFile::from_bytes(&input, BatchKind::Images)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let params = loaded.params_for(batch.header.packing);
    batch
        .check_parameters(params)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let evaluator = NetworkEvaluator::new(params, &model, &keys).map_err(|e| e.to_string())?;
    let limit = limit(args.max_memory);
    let estimate = evaluator
        .estimate(
            batch.header.packing,
            input.len() as u64,
            rayon::current_num_threads(),
        )
        .map_err(|e| e.to_string())?;
    eprintln!("{}", describe(&estimate, limit));
    estimate.check_memory(limit).map_err(|e| e.to_string())?;
    evaluate_to_file(
        params.channels().len(),
        batch.header.images,
        &args.input,
        &args.out,
        |progress| evaluate_batch(params, &evaluator, &batch, progress, &PhaseClock::new()),
    )
}

/// Runs the service's `evaluate` (a progress bar over the channels), writes the encrypted
/// outputs to `out` and says so.
pub(crate) fn evaluate_to_file(
    channels: usize,
    images: u32,
    input: &Path,
    out: &Path,
    evaluate: impl FnOnce(&(dyn Fn(usize) + Sync)) -> Result<BatchFile<'static>, cryptonets_core::Error>,
) -> Result<(), String> {
    let start = Instant::now();
    let progress = bar(channels as u64, "evaluating channels", false);
    let result = evaluate(&|c| progress.set_position(c as u64))
        .map_err(|e| format!("{}: {e}", input.display()))?;
    progress.finish_and_clear();
    let bytes = result.to_bytes();
    write(out, &bytes)?;
    println!(
        "evaluated {images} images in {:.2} s; encrypted outputs in {} ({} bytes)",
        start.elapsed().as_secs_f64(),
        out.display(),
        bytes.len()
    );
    Ok(())
}

/// `cryptonets decrypt`.
#[derive(Debug, Args)]
pub(crate) struct DecryptArgs {
    /// The model.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub(crate) model: PathBuf,
    /// The secret key.
    #[arg(long)]
    pub(crate) secret_key: PathBuf,
    /// The encrypted logits (from `cryptonets eval`).
    #[arg(long)]
    pub(crate) input: PathBuf,
    /// Directory of the MNIST files, to report accuracy against the labels.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// First test image of the batch (as given to `encrypt`), for the labels.
    #[arg(long)]
    pub(crate) offset: Option<usize>,
    /// Write the predicted digits here, one per line.
    #[arg(long)]
    pub(crate) predictions: Option<PathBuf>,
    /// The owner's record of the batch (written by `encrypt` as BATCH.record): the logits
    /// must answer that batch, with its image count and packing.
    #[arg(long)]
    pub(crate) record: PathBuf,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub(crate) json: bool,
    /// batch (images in the slots) or single (one image a ciphertext, `run --mode single`'s
    /// layouts and keys).
    #[arg(long, value_enum, default_value_t = Mode::Batch)]
    pub(crate) mode: Mode,
}

/// What `decrypt --json` prints.
#[derive(Debug, Serialize)]
pub(crate) struct DecryptReport {
    pub(crate) images: usize,
    pub(crate) batch_id: String,
    pub(crate) packing: usize,
    pub(crate) min_noise_budget_bits: u32,
    pub(crate) required_noise_budget_bits: u32,
    pub(crate) predictions: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) accuracy: Option<f64>,
}

pub(crate) fn decrypt_command(args: &DecryptArgs, backend: Backend) -> Result<(), String> {
    if args.mode == Mode::Single {
        return crate::single_files::decrypt(args, backend);
    }
    if crate::general_cli::is_v2(&args.model) {
        return crate::general_files::decrypt(args, backend);
    }
    let loaded = Loaded::new(&args.model, backend)?;
    let secret = read_secret_key_file(&loaded.params, &args.secret_key)?;
    let record = read_checked(&args.record, MAX_RECORD_BYTES, "batch record")?;
    let record =
        BatchRecord::from_json(&record).map_err(|e| format!("{}: {e}", args.record.display()))?;
    let bytes = read_batch_file(loaded.widest(), &args.input, BatchKind::Logits)?;
    let batch = BatchFile::from_bytes(&bytes, BatchKind::Logits)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    record
        .check(&batch)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let decrypted = decrypt_batch(loaded.params_for(batch.header.packing), &secret, &batch)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let predictions: Vec<usize> = decrypted.logits.iter().map(|l| argmax(l)).collect();
    let accuracy = label_accuracy(
        args,
        record.offset,
        &predictions,
        true,
        loaded.params.degree(),
    )?;
    let report = DecryptReport {
        images: predictions.len(),
        batch_id: record.batch_id.clone(),
        packing: batch.header.packing.factor(),
        min_noise_budget_bits: decrypted.min_budget_bits,
        required_noise_budget_bits: cryptonets_core::network::MIN_OUTPUT_BUDGET_BITS,
        predictions,
        accuracy,
    };
    finish_decrypt(args, report)
}

/// The accuracy of `predictions` on the MNIST test labels from the first image (`--offset`,
/// else the record's), when the owner asks for it (an offset or a data directory) and the
/// model reads MNIST images; at most `max` images.
pub(crate) fn label_accuracy(
    args: &DecryptArgs,
    recorded_offset: Option<usize>,
    predictions: &[usize],
    mnist_shaped: bool,
    max: usize,
) -> Result<Option<f64>, String> {
    match args.offset.or(recorded_offset) {
        Some(offset) if mnist_shaped && (args.offset.is_some() || args.data.is_some()) => {
            let set = test_images(args.data.clone())?;
            let range = image_range(&set, offset, predictions.len(), max)?;
            let correct = range
                .zip(predictions)
                .filter(|&(i, &p)| set.labels[i] as usize == p)
                .count();
            Ok(Some(correct as f64 / predictions.len() as f64))
        }
        _ => Ok(None),
    }
}

/// Writes the predictions where asked and prints the report of `decrypt`.
pub(crate) fn finish_decrypt(args: &DecryptArgs, report: DecryptReport) -> Result<(), String> {
    if let Some(path) = &args.predictions {
        let text: String = report
            .predictions
            .iter()
            .map(|p| format!("{p}\n"))
            .collect();
        write(path, text.as_bytes())?;
    }
    if args.json {
        crate::print_json(&report)?;
        return Ok(());
    }
    let shown: Vec<String> = report
        .predictions
        .iter()
        .take(20)
        .map(|p| p.to_string())
        .collect();
    println!(
        "{} predictions: {}{}",
        report.images,
        shown.join(" "),
        if report.images > 20 { " ..." } else { "" }
    );
    println!(
        "noise budget left in the outputs: {} bits at least (results below {} bits are refused)",
        report.min_noise_budget_bits, report.required_noise_budget_bits
    );
    if let Some(accuracy) = report.accuracy {
        println!("accuracy: {accuracy:.4} on {} images", report.images);
    }
    Ok(())
}

/// `cryptonets run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The model.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Directory of the MNIST IDX files (default: data/mnist).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Test images to classify (default: all 10,000).
    #[arg(long, default_value_t = 10_000)]
    images: usize,
    /// Images per batch (at most n = 8192, one per slot).
    #[arg(long, default_value_t = 8192)]
    batch_size: usize,
    /// Worker threads (default: one per core; at most 1024).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=MAX_THREADS as i64))]
    threads: Option<u16>,
    /// Refuse to start if a batch's planned peak memory is above this (bytes, or K, M, G, T;
    /// default: the memory the system reports available).
    #[arg(long, value_parser = parse_size)]
    max_memory: Option<u64>,
    /// Densest packing of small batches: a batch of at most 8192 / k images is uploaded k
    /// pixels a ciphertext and unpacked by the service (k - 1 Galois keys); 1 turns it off.
    #[arg(long, default_value_t = DEFAULT_MAX_PACKING, value_parser = parse_packing)]
    max_packing: usize,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
    /// batch: images in the slots of one key's batches; single: one image at a time, each
    /// its own ciphertext per channel, evaluated with rotations (many owners' mode).
    #[arg(long, value_enum, default_value_t = Mode::Batch)]
    mode: Mode,
}

/// How images are packed into ciphertexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// One image per slot, a pixel per ciphertext.
    Batch,
    /// One image per ciphertext.
    Single,
}

/// What `run --json` prints.
#[derive(Debug, Serialize)]
struct RunReport {
    images: usize,
    batch_size: usize,
    batches: usize,
    backend: &'static str,
    threads: usize,
    n: usize,
    log_q: f64,
    /// Those of the first batch (a packed batch may need more channels than a full one).
    plaintext_primes: Vec<u32>,
    /// Per batch: pixels a ciphertext, and CRT channels.
    packing: Vec<usize>,
    channels: Vec<usize>,
    hidden_level: usize,
    output_level: usize,
    accuracy: f64,
    plaintext_accuracy: f64,
    agreement: f64,
    exact_logits: f64,
    estimated_noise_budget_bits: f64,
    measured_noise_budget_bits: u32,
    keygen_seconds: f64,
    encrypt_seconds_per_batch: f64,
    eval_seconds_per_batch: f64,
    eval_seconds_full_batch: Option<f64>,
    /// Seconds per step of the evaluation, per batch (`cryptonets_host::phases`).
    eval_phase_seconds_per_batch: BTreeMap<&'static str, f64>,
    decrypt_seconds_per_batch: f64,
    latency_seconds_per_batch: f64,
    predictions_per_hour: f64,
    predictions_per_hour_this_run: f64,
    upload_bytes_per_image: f64,
    upload_bytes_per_image_full_batch: Option<f64>,
    upload_bytes_per_image_with_keys: f64,
    download_bytes_per_image: f64,
    eval_key_bytes: usize,
    peak_rss_bytes: u64,
    planned_peak_bytes: u64,
    planned_eval_seconds_per_batch: f64,
    max_memory_bytes: u64,
}

pub(crate) fn run_command(args: &RunArgs, backend: Backend) -> Result<(), String> {
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads as usize)
            .build_global()
            .map_err(|e| format!("cannot start {threads} threads: {e}"))?;
    }
    if args.mode == Mode::Single {
        return crate::single_cli::run_single(
            &args.model,
            args.data.clone(),
            args.images,
            args.json,
            backend,
        );
    }
    if crate::general_cli::is_v2(&args.model) {
        return crate::general_cli::run_general(
            &args.model,
            args.data.clone(),
            args.images,
            args.json,
            limit(args.max_memory),
            backend,
        );
    }
    let loaded = Loaded::new(&args.model, backend)?;
    let params = &loaded.params;
    let model = loaded.model();
    let n = params.degree();
    if args.batch_size == 0 || args.batch_size > n {
        return Err(format!("--batch-size must be between 1 and {n}"));
    }
    let set = test_images(args.data.clone())?;
    let total = args.images.min(set.len());
    if total == 0 {
        return Err("--images must be at least 1".into());
    }
    let quiet = args.json;
    let memory_limit = limit(args.max_memory);
    let (mut planned_peak, mut planned_seconds) = (0u64, 0.0f64);
    let mut rng = os_rng()?;

    let start = Instant::now();
    let keys = keygen(params, args.max_packing, &mut rng).map_err(|e| e.to_string())?;
    let keygen_seconds = start.elapsed().as_secs_f64();
    let eval_key = eval_key_bytes(params, &keys);
    // The service works from the serialized keys, as it would after receiving them.
    let service_keys = read_eval_key(params, &eval_key).map_err(|e| e.to_string())?;
    // One evaluator for full batches, one for packed ones (their parameters may differ).
    let evaluators = [&loaded.params, &loaded.packed]
        .map(|params| NetworkEvaluator::new(params, &model, &service_keys));
    let evaluator_for = |packing: Packing| -> Result<&NetworkEvaluator<'_>, String> {
        evaluators[(Inputs::of(packing) == Inputs::Unpacked) as usize]
            .as_ref()
            .map_err(|e| e.to_string())
    };
    let secret =
        read_secret_key(params, &secret_key_bytes(params, &keys)).map_err(|e| e.to_string())?;

    let (mut encrypt_s, mut eval_s, mut decrypt_s) = (0.0, 0.0, 0.0);
    let (mut upload, mut download) = (0usize, 0usize);
    let mut full_batch_upload: Option<usize> = None;
    let (mut full_batches, mut full_batch_eval_s) = (0usize, 0.0);
    let clock = PhaseClock::new();
    let mut estimated_budget = f64::INFINITY;
    let (mut correct, mut plain_correct, mut agree, mut exact) = (0usize, 0usize, 0usize, 0usize);
    let mut measured_budget = u32::MAX;
    let (mut hidden_level, mut output_level) = (0, 0);
    let mut channels = Vec::with_capacity(total.div_ceil(args.batch_size));
    let mut plaintext_primes = None;
    let batches: Vec<std::ops::Range<usize>> = (0..total)
        .step_by(args.batch_size)
        .map(|s| s..(s + args.batch_size).min(total))
        .collect();
    let mut packings = Vec::with_capacity(batches.len());
    // The service side keeps its buffers from one batch to the next.
    let mut workspace = BatchWorkspace::default();
    for (b, range) in batches.iter().enumerate() {
        let images: Vec<[u8; INPUTS]> = range.clone().map(|i| image_array(&set, i)).collect();
        let label = format!("batch {}/{}", b + 1, batches.len());
        let packing = Packing::for_batch(n, images.len(), args.max_packing);
        packings.push(packing.factor());
        let (params, evaluator) = (loaded.params_for(packing), evaluator_for(packing)?);
        channels.push(params.channels().len());
        plaintext_primes.get_or_insert_with(|| params.plaintext_primes());
        let batch_plan = evaluator.plan_for(packing).map_err(|e| e.to_string())?;
        // The upload's size is known from the parameters: plan before encrypting anything.
        let upload_estimate = (params.channels().len() * packing.ciphertexts()) as u64
            * (4 + params.channels()[0].seeded_ciphertext_bytes() as u64);
        let estimate = evaluator
            .estimate(packing, upload_estimate, rayon::current_num_threads())
            .map_err(|e| e.to_string())?;
        if !quiet && b == 0 {
            eprintln!("{}", describe(&estimate, memory_limit));
        }
        estimate
            .check_memory(memory_limit)
            .map_err(|e| e.to_string())?;
        planned_peak = planned_peak.max(estimate.peak_bytes);
        planned_seconds += estimate.seconds;
        hidden_level = hidden_level.max(batch_plan.hidden_level);
        output_level = output_level.max(batch_plan.output_level);
        estimated_budget = estimated_budget.min(batch_plan.estimate.output);

        // Data owner: encrypt and serialize (the upload).
        let progress = bar(
            (params.channels().len() * packing.ciphertexts()) as u64,
            &format!("{label}: encrypt"),
            quiet,
        );
        let t = Instant::now();
        let batch = encrypt_batch(params, &model, &secret, &images, packing, &mut rng, &|| {
            progress.inc(1)
        })
        .map_err(|e| e.to_string())?;
        let upload_bytes = batch.to_bytes();
        let record = BatchRecord::of(&batch, Some(range.start));
        drop(batch);
        encrypt_s += t.elapsed().as_secs_f64();
        progress.finish_and_clear();
        upload += upload_bytes.len();
        let full = images.len() == args.batch_size;
        if full {
            full_batch_upload = Some(upload_bytes.len());
        }

        // Service: parse, evaluate, serialize (the download).
        let progress = bar(
            params.channels().len() as u64,
            &format!("{label}: evaluate"),
            quiet,
        );
        let t = Instant::now();
        clock.restart();
        let received =
            BatchFile::from_bytes(&upload_bytes, BatchKind::Images).map_err(|e| e.to_string())?;
        clock.done(phases::PARSE);
        let result = evaluate_batch_in(
            &mut workspace,
            params,
            evaluator,
            &received,
            &|c| progress.set_position(c as u64),
            &clock,
        )
        .map_err(|e| e.to_string())?;
        drop(received);
        drop(upload_bytes);
        let download_bytes = result.to_bytes();
        clock.done(phases::SERIALIZE);
        let seconds = t.elapsed().as_secs_f64();
        eval_s += seconds;
        if full {
            full_batches += 1;
            full_batch_eval_s += seconds;
        }
        progress.finish_and_clear();
        download += download_bytes.len();

        // Data owner: decrypt.
        let t = Instant::now();
        let outputs =
            BatchFile::from_bytes(&download_bytes, BatchKind::Logits).map_err(|e| e.to_string())?;
        record.check(&outputs)?;
        let decrypted = decrypt_batch(params, &secret, &outputs).map_err(|e| e.to_string())?;
        decrypt_s += t.elapsed().as_secs_f64();
        measured_budget = measured_budget.min(decrypted.min_budget_bits);
        let logits = decrypted.logits;

        for (i, (image, encrypted)) in range.clone().zip(&logits).enumerate() {
            let plain = model.logits(&images[i]).map_err(|e| e.to_string())?;
            let predicted = argmax(encrypted);
            correct += (predicted == set.labels[image] as usize) as usize;
            plain_correct += (argmax(&plain) == set.labels[image] as usize) as usize;
            agree += (predicted == argmax(&plain)) as usize;
            exact += (encrypted == &plain) as usize;
        }
        if !quiet {
            eprintln!(
                "{label}: {} images, running accuracy {:.4}, agreement {:.4}",
                images.len(),
                correct as f64 / range.end as f64,
                agree as f64 / range.end as f64
            );
        }
    }
    let count = batches.len() as f64;
    let report = RunReport {
        images: total,
        batch_size: args.batch_size,
        batches: batches.len(),
        backend: params.channels()[0].backend().name(),
        threads: rayon::current_num_threads(),
        n,
        log_q: params.channels()[0].log_q(),
        plaintext_primes: plaintext_primes.unwrap_or_default(),
        packing: packings,
        channels,
        hidden_level,
        output_level,
        accuracy: correct as f64 / total as f64,
        plaintext_accuracy: plain_correct as f64 / total as f64,
        agreement: agree as f64 / total as f64,
        exact_logits: exact as f64 / total as f64,
        estimated_noise_budget_bits: (estimated_budget * 10.0).round() / 10.0,
        measured_noise_budget_bits: measured_budget,
        keygen_seconds,
        encrypt_seconds_per_batch: encrypt_s / count,
        eval_seconds_per_batch: eval_s / count,
        eval_seconds_full_batch: (full_batches > 0)
            .then(|| full_batch_eval_s / full_batches as f64),
        eval_phase_seconds_per_batch: clock
            .seconds()
            .into_iter()
            .map(|(name, s)| (name, s / count))
            .collect(),
        decrypt_seconds_per_batch: decrypt_s / count,
        latency_seconds_per_batch: (encrypt_s + eval_s + decrypt_s) / count,
        predictions_per_hour: match full_batches {
            0 => total as f64 * 3600.0 / eval_s,
            _ => args.batch_size as f64 * 3600.0 / (full_batch_eval_s / full_batches as f64),
        },
        predictions_per_hour_this_run: total as f64 * 3600.0 / eval_s,
        upload_bytes_per_image: upload as f64 / total as f64,
        upload_bytes_per_image_full_batch: full_batch_upload
            .map(|bytes| bytes as f64 / args.batch_size as f64),
        upload_bytes_per_image_with_keys: (upload + eval_key.len()) as f64 / total as f64,
        download_bytes_per_image: download as f64 / total as f64,
        eval_key_bytes: eval_key.len(),
        peak_rss_bytes: peak_rss_bytes().unwrap_or(0),
        planned_peak_bytes: planned_peak,
        planned_eval_seconds_per_batch: planned_seconds / count,
        max_memory_bytes: memory_limit,
    };
    if args.json {
        crate::print_json(&report)?;
    } else {
        print_report(&report);
    }
    if report.agreement < 1.0 || report.exact_logits < 1.0 {
        return Err("encrypted inference differs from plaintext inference".into());
    }
    Ok(())
}

fn print_report(r: &RunReport) {
    println!(
        "CryptoNets on encrypted MNIST: {} test images in {} batches of up to {}",
        r.images, r.batches, r.batch_size
    );
    println!(
        "parameters: n = {}, log2 Q = {:.0}, plaintext CRT primes {:?}; backend {}, {} threads",
        r.n, r.log_q, r.plaintext_primes, r.backend, r.threads
    );
    println!(
        "pixels per input ciphertext, batch by batch: {:?} (small batches packed, unpacked by the service)",
        r.packing
    );
    println!(
        "accuracy {:.4} (plaintext integer model {:.4}); encrypted = plaintext prediction on {:.4} of images, logits exact on {:.4}",
        r.accuracy, r.plaintext_accuracy, r.agreement, r.exact_logits
    );
    println!(
        "noise budget left in the outputs: {} bits measured, {:.1} estimated before evaluating",
        r.measured_noise_budget_bits, r.estimated_noise_budget_bits
    );
    println!(
        "time per batch: encrypt {:.2} s, evaluate {:.2} s (server, all channels; {} a full batch), decrypt {:.2} s; latency {:.2} s; keygen {:.2} s",
        r.encrypt_seconds_per_batch,
        r.eval_seconds_per_batch,
        r.eval_seconds_full_batch
            .map_or("none".into(), |s| format!("{s:.2} s")),
        r.decrypt_seconds_per_batch,
        r.latency_seconds_per_batch,
        r.keygen_seconds
    );
    let phases: Vec<String> = phases::names()
        .into_iter()
        .filter_map(|name| {
            let s = r.eval_phase_seconds_per_batch.get(name)?;
            (*s > 0.0).then(|| format!("{name} {s:.2}"))
        })
        .collect();
    println!("evaluation by step, s per batch: {}", phases.join(", "));
    println!(
        "throughput: {:.0} predictions/hour at full batches ({:.0} in this run)",
        r.predictions_per_hour, r.predictions_per_hour_this_run
    );
    println!(
        "traffic per image: upload {:.1} KiB ({} in full batches, {:.1} KiB with the evaluation keys), download {:.2} KiB; evaluation keys {:.1} MiB",
        r.upload_bytes_per_image / 1024.0,
        r.upload_bytes_per_image_full_batch
            .map_or("none".into(), |b| format!("{:.1} KiB", b / 1024.0)),
        r.upload_bytes_per_image_with_keys / 1024.0,
        r.download_bytes_per_image / 1024.0,
        r.eval_key_bytes as f64 / 1048576.0
    );
    println!(
        "peak memory (RSS): {:.0} MiB (planned {:.0} MiB a batch, limit {:.0} MiB); evaluation planned at {:.1} s a batch",
        r.peak_rss_bytes as f64 / 1048576.0,
        r.planned_peak_bytes as f64 / 1048576.0,
        r.max_memory_bytes as f64 / 1048576.0,
        r.planned_eval_seconds_per_batch
    );
}
