//! `cryptonets serve` and `cryptonets client run`: the prediction service and its owner.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use cryptonets_core::Backend;
use cryptonets_core::bfv::SecretKey;
use cryptonets_core::model::argmax;
use cryptonets_core::network::single::{PlannedSingle, SingleKeys};
use cryptonets_host::bundle::{Bundle, RESULTS, UPLOADS};
use cryptonets_host::pipeline::{os_rng, peak_rss_bytes};
use cryptonets_host::service::client::ServiceClient;
use cryptonets_host::service::server::{ServeConfig, serve};
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
}

/// `cryptonets serve`: until SIGTERM or Ctrl-C, after which it accepts nothing new and
/// finishes the running jobs.
pub(crate) fn serve_command(args: &ServeArgs, backend: Backend) -> Result<(), String> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
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
        backend,
    };
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        // The first line: where clients (and tests, given port 0) connect.
        println!("listening on http://{address}");
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
    /// The owner's whole round trip against a service: keys, images encrypted one at a time,
    /// each its own job, decrypted and checked against plaintext inference.
    Run(ClientRunArgs),
    /// A bounded load test: concurrent owners, each with its own keys, sending single-image
    /// requests; prints requests per hour and the latency percentiles.
    Load(ClientLoadArgs),
}

/// `cryptonets client load`.
#[derive(Debug, Args)]
pub(crate) struct ClientLoadArgs {
    /// The service (loopback or a host you run).
    #[arg(long)]
    server: String,
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
    /// The service (such as http://127.0.0.1:8080).
    #[arg(long)]
    server: String,
    /// The model (the owner plans it as the service does; its name on the service is the
    /// file name without the extension).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Directory of the MNIST IDX files (default: data/mnist).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Test images, each its own job.
    #[arg(long, default_value_t = 10)]
    images: usize,
    /// single (one image a ciphertext); batch jobs are not served yet.
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
    accuracy: Option<f64>,
    plaintext_accuracy: Option<f64>,
    agreement: f64,
    exact_logits: f64,
    /// Submission to result fetched, per image (median and slowest).
    round_trip_seconds_per_image: f64,
    round_trip_seconds_max: f64,
    /// The service's evaluation of an image, as its job record says (median).
    latency_seconds_per_image: f64,
    keygen_seconds: f64,
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
    if !is_loopback(&args.server) {
        return Err(format!(
            "{}: the load test only runs against a service on this machine (127.0.0.1, ::1, localhost)",
            args.server
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let network = std::sync::Arc::new(read_network(&args.model)?);
    let name = args
        .model
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("a model file name")?
        .to_string();
    let planned = std::sync::Arc::new(
        PlannedSingle::new(&network, backend)
            .map_err(|e| format!("{}: no single-image plan: {e}", args.model.display()))?,
    );
    let owners = args.owners as usize;
    let total = args.requests as usize;
    let started = Instant::now();
    let threads: Vec<_> = (0..owners)
        .map(|k| {
            let (network, planned, name) = (network.clone(), planned.clone(), name.clone());
            let server = args.server.clone();
            // Owner k sends requests k, k + owners, ...
            let count = (total + owners - 1 - k) / owners;
            std::thread::spawn(move || -> Result<(Vec<f64>, usize), String> {
                let (params, plan) = (&planned.params, &planned.plan);
                let client = ServiceClient::new(&server);
                let mut rng = os_rng()?;
                let secret = SecretKey::generate(&params.channels()[0], &mut rng);
                let keys = SingleKeys::generate(params, plan, &secret, &mut rng)
                    .map_err(|e| e.to_string())?
                    .to_bytes(params);
                let registered = client.register_keys(&name, &keys)?;
                let (mut times, mut exact) = (Vec::with_capacity(count), 0);
                for r in 0..count {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let image: Vec<u8> = (0..network.input().len())
                        .map(|i| ((i * 31 + (k * 1000 + r) * 97) % 256) as u8)
                        .collect();
                    let t = Instant::now();
                    let per_channel = cryptonets_host::single_image::encrypt_image(
                        &planned, &network, &secret, &image, &mut rng,
                    )
                    .map_err(|e| e.to_string())?;
                    let upload = Bundle {
                        kind: UPLOADS,
                        id: [k as u8; 16],
                        objects: vec![per_channel.into_iter().map(|b| vec![b]).collect()],
                    }
                    .to_bytes();
                    let job = client.submit(&registered.key_id, &registered.token, &upload)?;
                    let result = client.wait(&job.job_id, &registered.token, |_| {})?;
                    times.push(t.elapsed().as_secs_f64());
                    let parts = plan.layout.output().len();
                    let object = params.channels()[0].max_ciphertext_bytes();
                    let results = Bundle::from_bytes(
                        &result,
                        RESULTS,
                        params.channels().len(),
                        parts,
                        object,
                    )?;
                    let (logits, _) = cryptonets_host::single_image::decrypt_image(
                        &planned,
                        &secret,
                        &results.objects[0],
                    )
                    .map_err(|e| e.to_string())?;
                    exact += usize::from(
                        logits == network.logits_wide(&image).map_err(|e| e.to_string())?,
                    );
                    client.delete_job(&job.job_id, &registered.token)?;
                }
                client.delete_keys(&registered.key_id, &registered.token)?;
                Ok((times, exact))
            })
        })
        .collect();
    let mut times = Vec::with_capacity(total);
    let mut exact = 0;
    for thread in threads {
        let (t, e) = thread.join().map_err(|_| "an owner's thread panicked")??;
        times.extend(t);
        exact += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let report = LoadReport {
        server: args.server.clone(),
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

/// `cryptonets client run`.
fn client_run(args: &ClientRunArgs, backend: Backend) -> Result<(), String> {
    if args.mode != Mode::Single {
        return Err("the service takes single-image jobs (--mode single) for now".into());
    }
    if args.images == 0 {
        return Err("--images must be at least 1".into());
    }
    let network = read_network(&args.model)?;
    let name = args
        .model
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("a model file name")?
        .to_string();
    let planned = PlannedSingle::new(&network, backend)
        .map_err(|e| format!("{}: no single-image plan: {e}", args.model.display()))?;
    let (params, plan) = (&planned.params, &planned.plan);
    let (images, labels) =
        network_images(&network, args.data.clone(), args.images, 100, args.json)?;
    let client = ServiceClient::new(&args.server);
    let mut rng = os_rng()?;
    let t = Instant::now();
    let secret = SecretKey::generate(&params.channels()[0], &mut rng);
    let keys = SingleKeys::generate(params, plan, &secret, &mut rng).map_err(|e| e.to_string())?;
    let key_bytes = keys.to_bytes(params);
    let keygen_seconds = t.elapsed().as_secs_f64();
    let registered = client.register_keys(&name, &key_bytes)?;
    let bar = crate::pipeline_cli::bar(images.len() as u64, "images", args.json);
    let (mut trips, mut latency, mut encrypt, mut decrypt) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut upload, mut download) = (0, 0);
    let (mut correct, mut plain_correct, mut agree, mut exact) = (0, 0, 0, 0);
    for (i, image) in images.iter().enumerate() {
        let t = Instant::now();
        let per_channel = cryptonets_host::single_image::encrypt_image(
            &planned, &network, &secret, image, &mut rng,
        )
        .map_err(|e| e.to_string())?;
        let mut id = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut rng, &mut id);
        let bundle = Bundle {
            kind: UPLOADS,
            id,
            objects: vec![per_channel.into_iter().map(|b| vec![b]).collect()],
        }
        .to_bytes();
        encrypt.push(t.elapsed().as_secs_f64());
        upload = bundle.len();
        let t = Instant::now();
        let job = client.submit(&registered.key_id, &registered.token, &bundle)?;
        let mut record = job.clone();
        let result = client.wait(&job.job_id, &registered.token, |j| record = j.clone())?;
        trips.push(t.elapsed().as_secs_f64());
        latency.push(record.eval_seconds);
        download = result.len();
        let t = Instant::now();
        let channels = params.channels().len();
        let parts = plan.layout.output().len();
        let object = params.channels()[0].max_ciphertext_bytes();
        let results = Bundle::from_bytes(&result, RESULTS, channels, parts, object)?;
        if results.id != id {
            return Err(format!(
                "job {}: the result answers another upload",
                job.job_id
            ));
        }
        let (logits, _) =
            cryptonets_host::single_image::decrypt_image(&planned, &secret, &results.objects[0])
                .map_err(|e| e.to_string())?;
        decrypt.push(t.elapsed().as_secs_f64());
        client.delete_job(&job.job_id, &registered.token)?;
        let want = network.logits_wide(image).map_err(|e| e.to_string())?;
        exact += usize::from(logits == want);
        let (got, plain) = (argmax(&logits), argmax(&want));
        agree += usize::from(got == plain);
        if let Some(labels) = &labels {
            correct += usize::from(got == labels[i] as usize);
            plain_correct += usize::from(plain == labels[i] as usize);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    client.delete_keys(&registered.key_id, &registered.token)?;
    let count = images.len();
    let fraction = |k: usize| k as f64 / count as f64;
    let trip_max = trips.iter().copied().fold(0.0, f64::max);
    let report = ClientReport {
        mode: "single",
        server: args.server.clone(),
        model: name,
        images: count,
        accuracy: labels.as_ref().map(|_| fraction(correct)),
        plaintext_accuracy: labels.as_ref().map(|_| fraction(plain_correct)),
        agreement: fraction(agree),
        exact_logits: fraction(exact),
        round_trip_seconds_per_image: median(&mut trips),
        round_trip_seconds_max: trip_max,
        latency_seconds_per_image: median(&mut latency),
        keygen_seconds,
        encrypt_seconds_per_image: median(&mut encrypt),
        decrypt_seconds_per_image: median(&mut decrypt),
        upload_bytes_per_image: upload,
        download_bytes_per_image: download,
        eval_key_bytes: key_bytes.len(),
        peak_rss_bytes: peak_rss_bytes(),
    };
    if args.json {
        crate::print_json(&report)?;
    } else {
        println!(
            "{count} images through {}: accuracy {}, agreement {:.4}, exact logits {:.4}; round trip {:.3} s an image (service {:.3} s), upload {} and download {} bytes an image",
            args.server,
            report.accuracy.map_or("n/a".into(), |a| format!("{a:.4}")),
            report.agreement,
            report.exact_logits,
            report.round_trip_seconds_per_image,
            report.latency_seconds_per_image,
            upload,
            download
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
