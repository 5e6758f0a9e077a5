//! `cryptonets device`: the host's side of a microcontroller client (`firmware/`,
//! `scripts/firmware.sh`). `profile` writes what the device needs of a model's single-image
//! plan; `input` writes the image and seeds built into the firmware; `check` encrypts the
//! same image under the same seeds on the host, compares the device's upload byte for byte,
//! then evaluates the device's upload as the service would and decrypts it, against the
//! plaintext model.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use cryptonets_core::Backend;
use cryptonets_core::bfv::SecretKey;
use cryptonets_core::model::argmax;
use cryptonets_core::network::single::{DeviceProfile, PlannedSingle, SingleEvaluator, SingleKeys};
use cryptonets_host::files::{read_checked, read_secret, write, write_secret};
use cryptonets_host::mnist;
use cryptonets_host::pipeline::os_rng;
use cryptonets_host::single_image::{decrypt_image, encrypt_image, evaluate_image};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;

use crate::general_cli::read_network;
use crate::pipeline_cli::DEFAULT_MODEL;

/// `cryptonets device`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// Write a model's device profile (its single-image plan's parameters and input layout).
    Profile(ProfileArgs),
    /// Write a device's input: an MNIST test image and fresh secret-key and encryption seeds
    /// (a secret file, 0600).
    Input(InputArgs),
    /// Check a device's upload against the host's encryption of the same input, then
    /// evaluate and decrypt it against the plaintext model.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ProfileArgs {
    /// The model.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Where to write the profile.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct InputArgs {
    /// Directory of the MNIST IDX files (default: data/mnist).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The test image.
    #[arg(long, default_value_t = 0)]
    image: usize,
    /// Where to write the input (784 pixels, the secret key's seed, the encryption's seed).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The model.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// The device's input (`device input`).
    #[arg(long)]
    input: PathBuf,
    /// What the device wrote: its compressed seeded ciphertexts, channel after channel.
    #[arg(long)]
    upload: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Pixels, then two 32-byte seeds.
const SEEDS: usize = 64;

#[derive(Debug, Serialize)]
struct CheckReport {
    upload_bytes: usize,
    bit_exact: bool,
    prediction: usize,
    plaintext_prediction: usize,
    prediction_matches: bool,
    exact_logits: bool,
}

pub(crate) fn device_command(command: &DeviceCommand, backend: Backend) -> Result<(), String> {
    match command {
        DeviceCommand::Profile(args) => {
            let network = read_network(&args.model)?;
            let planned = PlannedSingle::new(&network, backend)
                .map_err(|e| format!("{}: no single-image plan: {e}", args.model.display()))?;
            let profile = DeviceProfile::new(&planned, &network).to_bytes();
            write(&args.out, &profile)?;
            println!(
                "device profile of {} ({} bytes): n = {}, {} channels, {} uploads",
                args.model.display(),
                profile.len(),
                planned.params.degree(),
                planned.params.channels().len(),
                match planned.plan.compressed_input {
                    true => "compressed",
                    false => "uncompressed",
                }
            );
            Ok(())
        }
        DeviceCommand::Input(args) => {
            let dir = args.data.clone().unwrap_or_else(mnist::default_dir);
            let set = mnist::load(&dir, mnist::Split::Test).map_err(|e| e.to_string())?;
            if args.image >= set.len() {
                return Err(format!("--image must be below {}", set.len()));
            }
            let mut input = set.image(args.image).to_vec();
            let mut seeds = zeroize::Zeroizing::new([0u8; SEEDS]);
            getrandom::fill(&mut seeds[..]).map_err(|e| e.to_string())?;
            input.extend_from_slice(&seeds[..]);
            write_secret(&args.out, &input)?;
            println!(
                "test image {} (label {}) and fresh seeds in {}",
                args.image,
                set.labels[args.image],
                args.out.display()
            );
            Ok(())
        }
        DeviceCommand::Check(args) => check(args, backend),
    }
}

fn check(args: &CheckArgs, backend: Backend) -> Result<(), String> {
    let network = read_network(&args.model)?;
    let planned = PlannedSingle::new(&network, backend)
        .map_err(|e| format!("{}: no single-image plan: {e}", args.model.display()))?;
    let (params, plan) = (&planned.params, &planned.plan);
    let pixels = network.input().len();
    let input = read_secret(&args.input, (pixels + SEEDS) as u64, "device input")?;
    if input.len() != pixels + SEEDS {
        return Err(format!(
            "{}: {} bytes, not {pixels} pixels and two seeds",
            args.input.display(),
            input.len()
        ));
    }
    let (image, seeds) = input.split_at(pixels);
    let seed = |s: &[u8]| -> [u8; 32] { s.try_into().expect("32 bytes") };
    let secret = SecretKey::generate(
        &params.channels()[0],
        &mut ChaCha20Rng::from_seed(seed(&seeds[..32])),
    );
    let mut rng = ChaCha20Rng::from_seed(seed(&seeds[32..]));
    let host =
        encrypt_image(&planned, &network, &secret, image, &mut rng).map_err(|e| e.to_string())?;
    let expected: usize = host.iter().map(Vec::len).sum();
    let upload = read_checked(&args.upload, expected as u64, "device upload")?;
    let bit_exact = upload == host.concat();
    // The device's upload, channel by channel (split as the host's: compressed or not, as
    // the plan says), through the service's evaluation.
    let mut objects = Vec::new();
    let mut rest = &upload[..];
    for expected in &host {
        let len = expected.len().min(rest.len());
        let (object, tail) = rest.split_at(len);
        objects.push(vec![object.to_vec()]);
        rest = tail;
    }
    let keys =
        SingleKeys::generate(params, plan, &secret, &mut os_rng()?).map_err(|e| e.to_string())?;
    let evaluator = SingleEvaluator::new(params, plan, &keys).map_err(|e| e.to_string())?;
    let outputs = evaluate_image(&planned, &evaluator, &objects)
        .map_err(|e| format!("the device's upload: {e}"))?;
    let (logits, _) = decrypt_image(&planned, &secret, &outputs).map_err(|e| e.to_string())?;
    let want = network.logits_wide(image).map_err(|e| e.to_string())?;
    let report = CheckReport {
        upload_bytes: upload.len(),
        bit_exact,
        prediction: argmax(&logits),
        plaintext_prediction: argmax(&want),
        prediction_matches: argmax(&logits) == argmax(&want),
        exact_logits: logits == want,
    };
    if args.json {
        crate::print_json(&report)?;
    } else {
        println!(
            "device upload of {} bytes: bit-exact with the host {}, prediction {} (plaintext {}), exact logits {}",
            report.upload_bytes,
            report.bit_exact,
            report.prediction,
            report.plaintext_prediction,
            report.exact_logits
        );
    }
    if !(report.bit_exact && report.prediction_matches && report.exact_logits) {
        return Err("the device's upload does not match the host's".into());
    }
    Ok(())
}
