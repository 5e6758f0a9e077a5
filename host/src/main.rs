//! `cryptonets`: the command-line front end of the CryptoNets pipeline.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod info;

/// Neural-network inference on encrypted data (CryptoNets over RNS-BFV).
#[derive(Debug, Parser)]
#[command(name = "cryptonets", version, about, propagate_version = true)]
struct Cli {
    /// Kernel backend: portable, avx2 or neon (default: the fastest this CPU runs).
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info::run(cli.backend.as_deref()),
        Command::Bench(command) => bench::run(command, cli.backend.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cryptonets: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The backends a command should use: the one named by `--backend`, or all this CPU runs.
pub(crate) fn selected_backends(
    name: Option<&str>,
) -> Result<Vec<cryptonets_core::Backend>, String> {
    match name {
        Some(name) => cryptonets_core::Backend::by_name(name)
            .map(|b| vec![b])
            .map_err(|e| {
                format!(
                    "{e} (available: {:?})",
                    cryptonets_core::Backend::available()
                )
            }),
        None => Ok(cryptonets_core::Backend::available().into_iter().collect()),
    }
}
