//! `cryptonets`: the command-line front end of the CryptoNets pipeline.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cryptonets_core::Backend;
use cryptonets_core::backend::BACKEND_NAMES;

/// BFV operations allocate half-megabyte buffers; mimalloc keeps freed pages instead of
/// returning them to the kernel and faulting them in again on the next call.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod device_cli;
mod general_cli;
mod general_files;
mod info;
mod pipeline_cli;
#[cfg(feature = "service")]
mod service_cli;
mod single_cli;
mod single_files;
use cryptonets_host::mnist;

/// Neural-network inference on encrypted data (CryptoNets over RNS-BFV).
#[derive(Debug, Parser)]
#[command(name = "cryptonets", version, about, propagate_version = true)]
struct Cli {
    /// Kernel backend: portable, avx2, avx512 or neon (default: the fastest this CPU runs).
    #[arg(long, global = true)]
    backend: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version, the CPU features detected and the backend in use.
    Info,
    /// Measure the kernels.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The MNIST data set.
    #[command(subcommand)]
    Mnist(MnistCommand),
    /// Integer CryptoNets models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// The microcontroller client's host side: its profile of a model, its input, the check
    /// of what it encrypted.
    #[command(subcommand)]
    Device(device_cli::DeviceCommand),
    /// Data owner: generate a secret key and the service's evaluation key.
    Keygen(pipeline_cli::KeygenArgs),
    /// Data owner: encrypt a batch of MNIST test images (one image per slot).
    Encrypt(pipeline_cli::EncryptArgs),
    /// Service: evaluate the model on an encrypted batch (reads no secret key).
    Eval(pipeline_cli::EvalArgs),
    /// Data owner: decrypt encrypted logits into digits (and accuracy, given the labels).
    Decrypt(pipeline_cli::DecryptArgs),
    /// Plan a model: the parameters, levels, noise and cost the planner chooses.
    Plan(general_cli::PlanArgs),
    /// The whole pipeline in one process on MNIST test images, with a timing, traffic and
    /// memory report.
    Run(pipeline_cli::RunArgs),
    #[cfg(feature = "service")]
    /// Service: serve the models over HTTP to owners with evaluation keys.
    Serve(service_cli::ServeArgs),
    #[cfg(feature = "service")]
    /// Data owner: use a running service.
    #[command(subcommand)]
    Client(service_cli::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Print a model's topology, worst-case magnitudes, plaintext bits, CRT primes and accuracy.
    Info {
        /// The model file (for example models/cryptonets-mnist.cnmd).
        file: std::path::PathBuf,
    },
    /// Score a model (version 1 or 2) with plaintext integer inference on MNIST: the test set,
    /// or the validation split every training choice is made on (the last 5,000 training
    /// images).
    Score {
        /// The model file.
        file: std::path::PathBuf,
        /// Directory of the IDX files (default: data/mnist).
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        /// Score on the validation split instead of the test set.
        #[arg(long)]
        validation: bool,
    },
    /// Write a model (version 1 or 2) as a version 2 file.
    Convert {
        /// The model to read.
        input: std::path::PathBuf,
        /// Where to write the version 2 model.
        output: std::path::PathBuf,
    },
}

fn model_info(file: &std::path::Path) -> Result<(), String> {
    use cryptonets_core::model::{MAX_MODEL_BYTES, Model};
    if general_cli::is_v2(file) {
        return general_cli::info_command(file);
    }
    let bytes = cryptonets_host::files::read_checked(file, MAX_MODEL_BYTES as u64, "model")?;
    let model = Model::parse(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let b = model.bounds();
    let bits = |x: u128| 128 - x.leading_zeros();
    println!("model: {} ({} bytes)", file.display(), bytes.len());
    println!(
        "topology: 28x28 input ({} pixel levels) -> conv 5x5 stride 2 pad 1, {} maps (13x13) -> square -> dense {} -> square -> dense 10",
        model.input_levels() + 1,
        model.maps(),
        model.hidden()
    );
    println!(
        "worst-case magnitudes (bits): conv {}, conv^2 {}, dense1 {}, dense1^2 {}, logits {}",
        bits(b.conv),
        bits(b.conv_squared),
        bits(b.dense1),
        bits(b.dense1_squared),
        bits(b.logits)
    );
    let needed = cryptonets_core::network::plaintext_bits(&model)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    println!(
        "plaintext bits (signed logits; interval bounds of every neuron): {needed} (every layer's worst case: {})",
        b.max_bits()
    );
    // The parameters the pipeline uses, from the same functions.
    let (params, packed) = cryptonets_core::network::NetworkParameters::for_fresh_and_unpacked(
        &model,
        Backend::detect(),
    )
    .map_err(|e| format!("{}: {e}", file.display()))?;
    let primes = params.plaintext_primes();
    println!(
        "plaintext CRT primes (1 mod {}): {} ({primes:?}); n = {}, {} ciphertext primes",
        2 * params.degree(),
        primes.len(),
        params.degree(),
        params.ciphertext_primes()
    );
    println!(
        "packed batches (inputs unpacked by key switching): {} CRT primes ({:?})",
        packed.channels().len(),
        packed.plaintext_primes()
    );
    let (float, integer) = model.recorded_accuracy();
    println!(
        "test accuracy recorded at training: float {:.2}%, integer {:.2}%",
        float as f64 / 100.0,
        integer as f64 / 100.0
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
enum MnistCommand {
    /// Verify the checksums of the raw IDX files, parse them and summarise them.
    Check {
        /// Directory of the four IDX files (default: data/mnist, filled by scripts/fetch-mnist.sh).
        #[arg(long)]
        data: Option<std::path::PathBuf>,
    },
}

fn mnist_check(data: Option<std::path::PathBuf>) -> Result<(), String> {
    let dir = data.unwrap_or_else(mnist::default_dir);
    for (name, split) in [("train", mnist::Split::Train), ("test", mnist::Split::Test)] {
        let set = mnist::load(&dir, split).map_err(|e| e.to_string())?;
        let mut counts = [0usize; 10];
        set.labels.iter().for_each(|&l| counts[l as usize] += 1);
        println!(
            "{name}: {} images of {}x{} verified; per digit {:?}",
            set.len(),
            mnist::SIDE,
            mnist::SIDE,
            counts
        );
    }
    Ok(())
}

/// Prints one report as a line of JSON (the `--json` output of every command).
pub(crate) fn print_json(report: &impl serde::Serialize) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string(report).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn main() -> ExitCode {
    // Output piped into `head` and closed early ends the process quietly, as for any Unix
    // tool, instead of a panic on the next print.
    sigpipe::reset();
    let cli = Cli::parse();
    let backend = match selected_backend(cli.backend.as_deref()) {
        Ok(backend) => backend,
        Err(message) => {
            eprintln!("cryptonets: error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Info => info::run(cli.backend.as_deref()),
        Command::Bench(command) => bench::run(command, cli.backend.as_deref()),
        Command::Mnist(MnistCommand::Check { data }) => mnist_check(data),
        Command::Model(ModelCommand::Info { file }) => model_info(&file),
        Command::Model(ModelCommand::Score {
            file,
            data,
            validation,
        }) => general_cli::score_command(&file, data, validation),
        Command::Model(ModelCommand::Convert { input, output }) => {
            general_cli::convert_command(&input, &output)
        }
        Command::Plan(args) => general_cli::plan_command(&args, backend),
        Command::Device(command) => device_cli::device_command(&command, backend),
        Command::Keygen(args) => pipeline_cli::keygen_command(&args, backend),
        Command::Encrypt(args) => pipeline_cli::encrypt_command(&args, backend),
        Command::Eval(args) => pipeline_cli::eval_command(&args, backend),
        Command::Decrypt(args) => pipeline_cli::decrypt_command(&args, backend),
        Command::Run(args) => pipeline_cli::run_command(&args, backend),
        #[cfg(feature = "service")]
        Command::Serve(args) => service_cli::serve_command(&args, backend),
        #[cfg(feature = "service")]
        Command::Client(command) => service_cli::client_command(&command, backend),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cryptonets: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The backend named by `--backend`, or the fastest this CPU runs.
pub(crate) fn selected_backend(name: Option<&str>) -> Result<Backend, String> {
    match name {
        None => Ok(Backend::detect()),
        Some(name) if !BACKEND_NAMES.contains(&name) => Err(format!(
            "unknown backend '{name}' (this build knows: {})",
            BACKEND_NAMES.join(", ")
        )),
        Some(name) => Backend::by_name(name).map_err(|e| {
            let available: Vec<&str> = Backend::available().iter().map(|b| b.name()).collect();
            format!("{e} (available here: {})", available.join(", "))
        }),
    }
}

/// The backends a measurement should cover: the one named by `--backend`, or all this CPU runs.
pub(crate) fn selected_backends(name: Option<&str>) -> Result<Vec<Backend>, String> {
    match name {
        Some(_) => selected_backend(name).map(|b| vec![b]),
        None => Ok(Backend::available().into_iter().collect()),
    }
}
