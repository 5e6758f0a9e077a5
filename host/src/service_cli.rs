//! `cryptonets serve` and `cryptonets client run`: the prediction service and its owner.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum_server::tls_rustls::RustlsConfig;
use clap::{Args, Subcommand};
use cryptonets_core::Backend;
use cryptonets_core::model::argmax;
use cryptonets_host::pipeline::peak_rss_bytes;
use cryptonets_host::service::client::ServiceClient;
use cryptonets_host::service::owner::{Answer, BatchOwner, SingleOwner};
use cryptonets_host::service::server::{Listener, Role, ServeConfig, serve};
use serde::Serialize;

use crate::general_cli::{network_images, read_network};
use crate::pipeline_cli::{DEFAULT_MODEL, Mode};

/// `cryptonets serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0: any free port; the address is printed first).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The state directory: registered keys, jobs, results (created if absent).
    #[arg(long)]
    state: PathBuf,
    /// The models served: every *.cnmd file here, by file name without the extension.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// Jobs evaluated at once (each uses every core).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Jobs accepted and waiting at most (beyond: 429 with Retry-After).
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Uploads received at once at most.
    #[arg(long, default_value_t = 16)]
    max_uploads: usize,
    /// Seconds a request body may stall before the upload is cut off.
    #[arg(long, default_value_t = 30)]
    read_timeout: u64,
    /// What this process does: all (API and workers), api (accepts jobs into the state for
    /// worker processes), worker (takes jobs from the state; serves /healthz and /metrics).
    #[arg(long, value_enum, default_value_t = Role::All)]
    role: Role,
    /// Seconds after which a job claimed by a worker that stopped renewing it (it died) is
    /// queued again.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=86_400))]
    lease: u64,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Logs (standard error) as one JSON object a line, for a log collector; the level
    /// comes from RUST_LOG (default info).
    #[arg(long)]
    log_json: bool,
}

/// `cryptonets serve`: until SIGTERM or Ctrl-C, after which it accepts nothing new and
/// finishes the running jobs.
pub(crate) fn serve_command(args: &ServeArgs, backend: Backend) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_json {
        true => logs.json().try_init(),
        false => logs.try_init(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let config = ServeConfig {
        state: args.state.clone(),
        models: args.models.clone(),
        workers: args.workers,
        max_queue: args.max_queue,
        max_uploads: args.max_uploads,
        read_timeout: Duration::from_secs(args.read_timeout.max(1)),
        role: args.role,
        lease: Duration::from_secs(args.lease),
        backend,
    };
    runtime.block_on(async {
        let listener = std::net::TcpListener::bind(args.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let (listener, scheme) = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
                    format!(
                        "TLS certificate {} and key {}: {e}",
                        cert.display(),
                        key.display()
                    )
                })?;
                (Listener::Tls(listener, tls), "https")
            }
            _ => {
                let listener =
                    tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
                (Listener::Plain(listener), "http")
            }
        };
        // The first line: where clients (and tests, given port 0) connect.
        println!("listening on {scheme}://{address}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stopping: no new requests, running jobs finish");
        };
        serve(config, listener, shutdown).await
    })
}

/// `cryptonets client`.
#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// The owner's whole round trip against a service: keys, images encrypted (one job an
    /// image, or one batch job), results decrypted and checked against plaintext inference.
    Run(ClientRunArgs),
    /// A bounded load test: concurrent owners, each with its own keys, sending single-image
    /// requests; prints requests per hour and the latency percentiles.
    Load(ClientLoadArgs),
}

/// Where the service is.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The service (such as http://127.0.0.1:8080 or https://host:port).
    #[arg(long)]
    server: String,
    /// Trust only these CA certificates (PEM) for an https service, such as a private
    /// deployment's; the system's roots otherwise.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

impl ServerArgs {
    fn client(&self) -> Result<ServiceClient, String> {
        match &self.ca_cert {
            None => Ok(ServiceClient::new(&self.server)),
            Some(path) => {
                let pem = cryptonets_host::files::read_checked(path, 1 << 20, "CA certificates")?;
                ServiceClient::with_ca(&self.server, &pem)
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }
}

/// The model's name on the service: its file name without the extension.
fn model_name(model: &std::path::Path) -> Result<String, String> {
    model
        .file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{}: not a model file name", model.display()))
}

/// `cryptonets client load`.
#[derive(Debug, Args)]
pub(crate) struct ClientLoadArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The model.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Owners at once, each its own keys and its requests one after the other.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    owners: u16,
    /// Requests in all (at most 10,000).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    requests: u32,
    /// No request is started after this many seconds (at most an hour).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=3600))]
    max_seconds: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct LoadReport {
    server: String,
    owners: u16,
    requests: usize,
    exact: usize,
    seconds: f64,
    requests_per_hour: f64,
    p50_seconds: f64,
    p99_seconds: f64,
    max_seconds: f64,
}

/// `cryptonets client run`.
#[derive(Debug, Args)]
pub(crate) struct ClientRunArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The model (the owner plans it as the service does; its name on the service is the
    /// file name without the extension).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Directory of the MNIST IDX files (default: data/mnist).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Test images.
    #[arg(long, default_value_t = 10)]
    images: usize,
    /// single: each image its own job, one image a ciphertext; batch: one job, one image a
    /// slot.
    #[arg(long, value_enum, default_value_t = Mode::Single)]
    mode: Mode,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct ClientReport {
    mode: &'static str,
    server: String,
    model: String,
    images: usize,
    jobs: usize,
    accuracy: Option<f64>,
    plaintext_accuracy: Option<f64>,
    agreement: f64,
    exact_logits: f64,
    /// Submission to result fetched, per image: the median of single-image jobs, or the
    /// batch's over its images.
    round_trip_seconds_per_image: f64,
    /// The slowest job's round trip.
    round_trip_seconds_max: f64,
    /// The service's evaluation per image, as the job records say.
    latency_seconds_per_image: f64,
    /// Round trips less the service's evaluation, summed over the jobs: the time on the
    /// network and in the queue.
    network_seconds: f64,
    keygen_seconds: f64,
    encrypt_seconds_per_image: f64,
    decrypt_seconds_per_image: f64,
    upload_bytes_per_image: f64,
    download_bytes_per_image: f64,
    eval_key_bytes: usize,
    /// Keys, uploads and results: every byte of payload on the wire.
    bytes_on_wire: usize,
    peak_rss_bytes: Option<u64>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// `cryptonets client run` and `load`.
pub(crate) fn client_command(command: &ClientCommand, backend: Backend) -> Result<(), String> {
    match command {
        ClientCommand::Run(args) => client_run(args, backend),
        ClientCommand::Load(args) => client_load(args, backend),
    }
}

/// The value at fraction `q` of sorted `values`.
fn percentile(values: &[f64], q: f64) -> f64 {
    let k = ((values.len() as f64 - 1.0) * q).round() as usize;
    values.get(k).copied().unwrap_or(0.0)
}

/// Whether `url` names this machine (the load test only loads services of one's own).
fn is_loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or("");
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn client_load(args: &ClientLoadArgs, backend: Backend) -> Result<(), String> {
    let server = &args.server.server;
    if !is_loopback(server) {
        return Err(format!(
            "{server}: the load test only runs against a service on this machine (127.0.0.1, ::1, localhost)",
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let network = read_network(&args.model)?;
    let name = model_name(&args.model)?;
    let client = args.server.client()?;
    let owners = args.owners as usize;
    let total = args.requests as usize;
    let started = Instant::now();
    let results: Vec<Result<(Vec<f64>, usize), String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..owners)
            .map(|k| {
                let (network, name, client) = (network.clone(), name.clone(), client.clone());
                // Owner k sends requests k, k + owners, ...
                let count = (total + owners - 1 - k) / owners;
                scope.spawn(move || -> Result<(Vec<f64>, usize), String> {
                    let owner = SingleOwner::register(client, &name, network.clone(), backend)?;
                    let (mut times, mut exact) = (Vec::with_capacity(count), 0);
                    for r in 0..count {
                        if Instant::now() >= deadline {
                            break;
                        }
                        let image: Vec<u8> = (0..network.input().len())
                            .map(|i| ((i * 31 + (k * 1000 + r) * 97) % 256) as u8)
                            .collect();
                        let t = Instant::now();
                        let answer = owner.predict(&image, |_| {})?;
                        times.push(t.elapsed().as_secs_f64());
                        let want = network.logits_wide(&image).map_err(|e| e.to_string())?;
                        exact += usize::from(answer.logits[0] == want);
                    }
                    owner.unregister()?;
                    Ok((times, exact))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("an owner's thread panicked".into()))
            })
            .collect()
    });
    let mut times = Vec::with_capacity(total);
    let mut exact = 0;
    for result in results {
        let (t, e) = result?;
        times.extend(t);
        exact += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let report = LoadReport {
        server: server.clone(),
        owners: args.owners,
        requests: times.len(),
        exact,
        seconds,
        requests_per_hour: times.len() as f64 * 3600.0 / seconds,
        p50_seconds: percentile(&times, 0.5),
        p99_seconds: percentile(&times, 0.99),
        max_seconds: times.last().copied().unwrap_or(0.0),
    };
    if args.json {
        crate::print_json(&report)?;
    } else {
        println!(
            "{} single-image requests from {} owners in {:.1} s: {:.0} requests an hour, p50 {:.2} s, p99 {:.2} s, {} exact",
            report.requests,
            report.owners,
            report.seconds,
            report.requests_per_hour,
            report.p50_seconds,
            report.p99_seconds,
            report.exact
        );
    }
    if exact != times.len() {
        return Err(format!(
            "{} of {} answers were not exact",
            times.len() - exact,
            times.len()
        ));
    }
    Ok(())
}

/// The answers of one `client run`: the jobs' answers and the owner's key figures.
struct Answers {
    answers: Vec<Answer>,
    keygen_seconds: f64,
    eval_key_bytes: usize,
}

/// `cryptonets client run`.
fn client_run(args: &ClientRunArgs, backend: Backend) -> Result<(), String> {
    if args.images == 0 {
        return Err("--images must be at least 1".into());
    }
    let network = read_network(&args.model)?;
    let name = model_name(&args.model)?;
    let (images, labels) =
        network_images(&network, args.data.clone(), args.images, 100, args.json)?;
    let client = args.server.client()?;
    let count = images.len();
    let run = match args.mode {
        Mode::Single => {
            let owner = SingleOwner::register(client, &name, network.clone(), backend)?;
            let bar = crate::pipeline_cli::bar(count as u64, "images", args.json);
            let answers = images
                .iter()
                .map(|image| {
                    let answer = owner.predict(image, |_| {});
                    bar.inc(1);
                    answer
                })
                .collect::<Result<Vec<_>, _>>()?;
            bar.finish_and_clear();
            let run = Answers {
                answers,
                keygen_seconds: owner.keygen_seconds(),
                eval_key_bytes: owner.eval_key_bytes(),
            };
            owner.unregister()?;
            run
        }
        Mode::Batch => {
            let owner = BatchOwner::register(client, &name, network.clone(), backend, count)?;
            let bar = crate::pipeline_cli::bar(100, "batch job (percent)", args.json);
            let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
            let answer =
                owner.predict(&refs, |job| bar.set_position((job.progress * 100.0) as u64))?;
            bar.finish_and_clear();
            let run = Answers {
                answers: vec![answer],
                keygen_seconds: owner.keygen_seconds(),
                eval_key_bytes: owner.eval_key_bytes(),
            };
            owner.unregister()?;
            run
        }
    };
    let logits: Vec<&Vec<num_bigint::BigInt>> =
        run.answers.iter().flat_map(|a| &a.logits).collect();
    if logits.len() != count {
        return Err(format!("{} answers for {count} images", logits.len()));
    }
    let (mut correct, mut plain_correct, mut agree, mut exact) = (0, 0, 0, 0);
    for (i, (image, got)) in images.iter().zip(&logits).enumerate() {
        let want = network.logits_wide(image).map_err(|e| e.to_string())?;
        exact += usize::from(**got == want);
        let (got, plain) = (argmax(got), argmax(&want));
        agree += usize::from(got == plain);
        if let Some(labels) = &labels {
            correct += usize::from(got == labels[i] as usize);
            plain_correct += usize::from(plain == labels[i] as usize);
        }
    }
    let per_image = |f: &dyn Fn(&Answer) -> f64| -> f64 {
        let mut values: Vec<f64> = run
            .answers
            .iter()
            .map(|a| f(a) / a.logits.len() as f64)
            .collect();
        median(&mut values)
    };
    let total = |f: &dyn Fn(&Answer) -> f64| -> f64 { run.answers.iter().map(f).sum() };
    let fraction = |k: usize| k as f64 / count as f64;
    let upload: usize = run.answers.iter().map(|a| a.upload_bytes).sum();
    let download: usize = run.answers.iter().map(|a| a.download_bytes).sum();
    let report = ClientReport {
        mode: match args.mode {
            Mode::Single => "single",
            Mode::Batch => "batch",
        },
        server: args.server.server.clone(),
        model: name,
        images: count,
        jobs: run.answers.len(),
        accuracy: labels.as_ref().map(|_| fraction(correct)),
        plaintext_accuracy: labels.as_ref().map(|_| fraction(plain_correct)),
        agreement: fraction(agree),
        exact_logits: fraction(exact),
        round_trip_seconds_per_image: per_image(&|a| a.round_trip_seconds),
        round_trip_seconds_max: run
            .answers
            .iter()
            .map(|a| a.round_trip_seconds)
            .fold(0.0, f64::max),
        latency_seconds_per_image: per_image(&|a| a.job.eval_seconds),
        network_seconds: total(&|a| (a.round_trip_seconds - a.job.eval_seconds).max(0.0)),
        keygen_seconds: run.keygen_seconds,
        encrypt_seconds_per_image: per_image(&|a| a.encrypt_seconds),
        decrypt_seconds_per_image: per_image(&|a| a.decrypt_seconds),
        upload_bytes_per_image: upload as f64 / count as f64,
        download_bytes_per_image: download as f64 / count as f64,
        eval_key_bytes: run.eval_key_bytes,
        bytes_on_wire: run.eval_key_bytes + upload + download,
        peak_rss_bytes: peak_rss_bytes(),
    };
    if args.json {
        crate::print_json(&report)?;
    } else {
        println!(
            "{count} images ({} mode, {} jobs) through {}: accuracy {}, agreement {:.4}, exact logits {:.4}; round trip {:.3} s an image (service {:.3} s), {:.0} bytes up and {:.0} down an image",
            report.mode,
            report.jobs,
            report.server,
            report.accuracy.map_or("n/a".into(), |a| format!("{a:.4}")),
            report.agreement,
            report.exact_logits,
            report.round_trip_seconds_per_image,
            report.latency_seconds_per_image,
            report.upload_bytes_per_image,
            report.download_bytes_per_image
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
