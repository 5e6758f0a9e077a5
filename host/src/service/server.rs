//! `cryptonets serve`: the HTTP API (axum on tokio), the job queue and its workers.
//!
//! Routes (described in `host/openapi.json`, which a test keeps in sync with [`ROUTES`]):
//! `GET /healthz`, `GET /metrics`, `GET /v1/models`, `POST /v1/keys?model=NAME`,
//! `DELETE /v1/keys/{key_id}`, `POST /v1/jobs?key_id=ID`, `GET /v1/jobs/{job_id}`,
//! `GET /v1/jobs/{job_id}/result`, `DELETE /v1/jobs/{job_id}`. Errors are JSON
//! `{"error": "..."}` with a 4xx status for anything the client sent.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cryptonets_core::Backend;
use cryptonets_core::model::polynomial::PolynomialNetwork;
use cryptonets_core::network::single::{
    EncodedDiagonals, PlannedSingle, SingleEvaluator, SingleKeys,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, mpsc};

use super::store::{JobMeta, JobStatus, KeyMeta, Store, now_unix, valid_id};
use super::{random_id, sha256_hex};
use crate::bundle::{Bundle, HEADER, RESULTS, UPLOADS};

/// Every route, as (method, path): what `host/openapi.json` must describe.
pub const ROUTES: [(&str, &str); 9] = [
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/v1/models"),
    ("post", "/v1/keys"),
    ("delete", "/v1/keys/{key_id}"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs/{job_id}"),
    ("get", "/v1/jobs/{job_id}/result"),
    ("delete", "/v1/jobs/{job_id}"),
];

/// Most images in one job.
pub const MAX_JOB_IMAGES: usize = 256;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The state directory.
    pub state: PathBuf,
    /// The directory of models served (every `*.cnmd`).
    pub models: PathBuf,
    /// Jobs evaluated at once.
    pub workers: usize,
    /// Jobs accepted and not yet running, at most.
    pub max_queue: usize,
    /// Uploads received at once, at most.
    pub max_uploads: usize,
    /// Longest wait for the next piece of a request body.
    pub read_timeout: Duration,
    /// The kernels.
    pub backend: Backend,
}

/// A model served, with its single-image plan and its diagonals, encoded once for every
/// owner.
#[derive(Debug)]
struct Model {
    name: String,
    network: PolynomialNetwork,
    planned: PlannedSingle,
    diagonals: EncodedDiagonals,
}

#[derive(Debug, Default)]
struct Metrics {
    requests: AtomicU64,
    bad_requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    eval_micros: AtomicU64,
    images: AtomicU64,
}

#[derive(Debug)]
struct App {
    config: ServeConfig,
    store: Store,
    models: BTreeMap<String, Arc<Model>>,
    queue: mpsc::Sender<String>,
    queued: AtomicUsize,
    uploads: Semaphore,
    metrics: Metrics,
}

/// An error answered to the client: a status and a JSON body naming the problem.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Loads the models of `dir` that have a single-image plan.
fn load_models(dir: &Path, backend: Backend) -> Result<BTreeMap<String, Arc<Model>>, String> {
    let mut models = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cnmd"))
        .collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let bytes = crate::files::read_checked(&path, 64 << 20, "model")?;
        let network = match PolynomialNetwork::parse(&bytes) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(model = %path.display(), error = %e, "not served");
                continue;
            }
        };
        match PlannedSingle::new(&network, backend) {
            Ok(planned) => {
                let diagonals = EncodedDiagonals::new(&planned.params, &planned.plan)
                    .map_err(|e| format!("{name}: {e}"))?;
                tracing::info!(
                    model = %name,
                    n = planned.params.degree(),
                    diagonal_bytes = diagonals.bytes(),
                    "serving"
                );
                models.insert(
                    name.clone(),
                    Arc::new(Model {
                        name,
                        network,
                        planned,
                        diagonals,
                    }),
                );
            }
            Err(e) => tracing::warn!(model = %name, error = %e, "no single-image plan"),
        }
    }
    if models.is_empty() {
        return Err(format!("{}: no model to serve", dir.display()));
    }
    Ok(models)
}

/// Serves on `listener` until `shutdown` resolves; then stops accepting and lets running
/// jobs finish. Jobs left unfinished by an earlier process are queued again first.
pub async fn serve(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let store = Store::open(&config.state)?;
    store.clear_temp();
    let models = load_models(&config.models, config.backend)?;
    let (tx, rx) = mpsc::channel::<String>(config.max_queue.max(1) + 1024);
    let app = Arc::new(App {
        uploads: Semaphore::new(config.max_uploads.max(1)),
        store,
        models,
        queue: tx,
        queued: AtomicUsize::new(0),
        metrics: Metrics::default(),
        config,
    });
    // Resume: every job accepted and not finished runs again (evaluation is deterministic,
    // so a job interrupted while running gives the same result).
    for mut job in app.store.unfinished_jobs() {
        job.status = JobStatus::Queued;
        job.done_images = 0;
        app.store.set_job(&job)?;
        app.queued.fetch_add(1, Ordering::SeqCst);
        app.queue
            .send(job.job_id.clone())
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(job = %job.job_id, "resumed");
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let workers = tokio::spawn(run_workers(app.clone(), rx, stop.clone()));
    let router = router(app.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| e.to_string())?;
    // Stop taking jobs off the queue (they stay queued in the state directory for the next
    // start); wait for the running ones.
    stop.notify_one();
    let _ = workers.await;
    Ok(())
}

fn router(app: Arc<App>) -> Router {
    let max_keys = app
        .models
        .values()
        .map(|m| SingleKeys::serialized_len_for(&m.planned.params, &m.planned.plan))
        .max()
        .unwrap_or(0);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route(
            "/v1/keys",
            post(register_keys).layer(DefaultBodyLimit::max(max_keys + 1024)),
        )
        .route("/v1/keys/{key_id}", delete(delete_keys))
        .route(
            "/v1/jobs",
            post(submit_job).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/jobs/{job_id}", get(job_status).delete(delete_job))
        .route("/v1/jobs/{job_id}/result", get(job_result))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(axum::middleware::from_fn_with_state(app.clone(), count))
        .with_state(app)
}

async fn count(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    if response.status().is_client_error() {
        app.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
    }
    response
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let m = &app.metrics;
    let counts = app.store.job_counts();
    let mut text = String::new();
    let line = |text: &mut String, name: &str, kind: &str, help: &str, value: String| {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    line(
        &mut text,
        "cryptonets_requests_total",
        "counter",
        "HTTP requests.",
        m.requests.load(Ordering::Relaxed).to_string(),
    );
    line(
        &mut text,
        "cryptonets_bad_requests_total",
        "counter",
        "Requests answered with a 4xx status.",
        m.bad_requests.load(Ordering::Relaxed).to_string(),
    );
    line(
        &mut text,
        "cryptonets_queue_depth",
        "gauge",
        "Jobs accepted and waiting for a worker.",
        app.queued.load(Ordering::Relaxed).to_string(),
    );
    text.push_str("# HELP cryptonets_jobs Jobs in the state directory by status.\n# TYPE cryptonets_jobs gauge\n");
    for (status, n) in ["queued", "running", "done", "failed"].iter().zip(counts) {
        text.push_str(&format!("cryptonets_jobs{{status=\"{status}\"}} {n}\n"));
    }
    line(
        &mut text,
        "cryptonets_eval_seconds_total",
        "counter",
        "Seconds of evaluation.",
        format!("{:.6}", m.eval_micros.load(Ordering::Relaxed) as f64 / 1e6),
    );
    line(
        &mut text,
        "cryptonets_images_total",
        "counter",
        "Images evaluated.",
        m.images.load(Ordering::Relaxed).to_string(),
    );
    line(
        &mut text,
        "cryptonets_bytes_in_total",
        "counter",
        "Bytes of keys and uploads received.",
        m.bytes_in.load(Ordering::Relaxed).to_string(),
    );
    line(
        &mut text,
        "cryptonets_bytes_out_total",
        "counter",
        "Bytes of results sent.",
        m.bytes_out.load(Ordering::Relaxed).to_string(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[derive(Serialize)]
struct ModelInfo {
    name: String,
    input: [usize; 3],
    classes: usize,
    mode: &'static str,
    n: usize,
    ciphertext_primes: usize,
    special_primes: usize,
    plaintext_primes: Vec<u32>,
    galois_keys: usize,
    eval_key_bytes: usize,
    upload_bytes_per_image: usize,
}

async fn models(State(app): State<Arc<App>>) -> Json<Vec<ModelInfo>> {
    Json(
        app.models
            .values()
            .map(|m| {
                let (params, plan) = (&m.planned.params, &m.planned.plan);
                let first = &params.channels()[0];
                let input = m.network.input();
                ModelInfo {
                    name: m.name.clone(),
                    input: [input.channels, input.height, input.width],
                    classes: m.network.classes(),
                    mode: "single",
                    n: params.degree(),
                    ciphertext_primes: first.max_level(),
                    special_primes: first.special_basis().map_or(0, |s| s.len()),
                    plaintext_primes: params.plaintext_primes(),
                    galois_keys: plan.keys.len(),
                    eval_key_bytes: SingleKeys::serialized_len_for(params, plan),
                    upload_bytes_per_image: plan.upload_bytes(params),
                }
            })
            .collect(),
    )
}

#[derive(Deserialize)]
struct KeysQuery {
    model: String,
}

/// What registering keys answers: the key id and the bearer token that alone may use them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Registered {
    /// The keys' id.
    pub key_id: String,
    /// The bearer token (shown once; the service keeps its hash).
    pub token: String,
}

fn model(app: &App, name: &str) -> ApiResult<Arc<Model>> {
    app.models
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no model named {name:?}")))
}

/// Whether `bytes` is a serialized secret key (`bfv::serialization`'s header: magic, version,
/// kind 2), which the service refuses to receive.
fn is_secret_key(bytes: &[u8]) -> bool {
    bytes.len() >= 16 && &bytes[..4] == b"CNET" && bytes[5] == 2
}

async fn register_keys(
    State(app): State<Arc<App>>,
    Query(query): Query<KeysQuery>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    let model = model(&app, &query.model)?;
    app.metrics
        .bytes_in
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    if is_secret_key(&body) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "this is a secret key: it never leaves its owner; send the evaluation keys (keygen --mode single --eval-key)",
        ));
    }
    let (params, plan) = (&model.planned.params, &model.planned.plan);
    let keys = SingleKeys::from_bytes(params, &body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("evaluation keys: {e}")))?;
    keys.check(params, plan).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("evaluation keys of another model's plan: {e}"),
        )
    })?;
    let mut address = model.name.as_bytes().to_vec();
    address.push(0);
    address.extend_from_slice(&body);
    let key_id = sha256_hex(&address)[..32].to_string();
    if app.store.key_meta(&key_id).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "these keys are registered already (with the token returned then)",
        ));
    }
    let mut token = [0u8; 32];
    getrandom::fill(&mut token).map_err(internal)?;
    let token = super::hex(&token);
    let meta = KeyMeta {
        key_id: key_id.clone(),
        model: model.name.clone(),
        mode: "single".into(),
        token_sha256: sha256_hex(token.as_bytes()),
        created_unix: now_unix(),
    };
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || store.put_key(&meta, &body))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    tracing::info!(key = %key_id, model = %model.name, "keys registered");
    Ok((StatusCode::CREATED, Json(Registered { key_id, token })))
}

/// The keys `key_id` if the request's bearer token is theirs; 404 otherwise (whether the
/// keys exist is not told to someone without their token).
fn authorize(app: &App, headers: &HeaderMap, key_id: &str) -> ApiResult<KeyMeta> {
    let denied = || ApiError::new(StatusCode::NOT_FOUND, "no such keys for this token");
    if !valid_id(key_id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a key id is 32 hex digits",
        ));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "an Authorization: Bearer token is required",
            )
        })?;
    let meta = app.store.key_meta(key_id).ok_or_else(denied)?;
    let presented = sha256_hex(token.as_bytes());
    if bool::from(presented.as_bytes().ct_eq(meta.token_sha256.as_bytes())) {
        Ok(meta)
    } else {
        Err(denied())
    }
}

async fn delete_keys(
    State(app): State<Arc<App>>,
    UrlPath(key_id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    authorize(&app, &headers, &key_id)?;
    app.store.delete_key(&key_id).map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct JobQuery {
    key_id: String,
}

async fn submit_job(
    State(app): State<Arc<App>>,
    Query(query): Query<JobQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<JobMeta>)> {
    let key = authorize(&app, &headers, &query.key_id)?;
    let model = model(&app, &key.model)?;
    if app.queued.load(Ordering::SeqCst) >= app.config.max_queue {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "the queue is full",
        ));
    }
    let _permit = app
        .uploads
        .try_acquire()
        .map_err(|_| ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many uploads at once"))?;
    let params = &model.planned.params;
    let channels = params.channels().len();
    let object = params.channels()[0].seeded_ciphertext_bytes();
    let max = (HEADER + MAX_JOB_IMAGES * channels * (4 + object)) as u64;
    // Streamed to a file, never held whole; a stalled sender is cut off.
    let (mut file, path) = app.store.temp_file().map_err(internal)?;
    let mut received = 0u64;
    let mut header_bytes = Vec::with_capacity(HEADER);
    let mut stream = body.into_data_stream();
    let result: ApiResult<()> = async {
        loop {
            let next = tokio::time::timeout(app.config.read_timeout, stream.next())
                .await
                .map_err(|_| ApiError::new(StatusCode::REQUEST_TIMEOUT, "the upload stalled"))?;
            let Some(chunk) = next else { break };
            let chunk = chunk
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("upload: {e}")))?;
            received += chunk.len() as u64;
            if received > max {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a job holds at most {MAX_JOB_IMAGES} images ({max} bytes)"),
                ));
            }
            if header_bytes.len() < HEADER {
                let take = (HEADER - header_bytes.len()).min(chunk.len());
                header_bytes.extend_from_slice(&chunk[..take]);
            }
            file.write_all(&chunk).map_err(internal)?;
        }
        Ok(())
    }
    .await;
    app.metrics.bytes_in.fetch_add(received, Ordering::Relaxed);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    // The header's shape now; every object is parsed by the worker.
    let images = Bundle::check_header(&header_bytes, UPLOADS, channels, 1)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("upload: {e}")))
        .and_then(|images| match images <= MAX_JOB_IMAGES {
            true => Ok(images),
            false => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a job holds at most {MAX_JOB_IMAGES} images"),
            )),
        });
    let images = match images {
        Ok(i) => i,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let job = JobMeta {
        job_id: random_id(),
        key_id: key.key_id.clone(),
        model: model.name.clone(),
        status: JobStatus::Queued,
        images,
        done_images: 0,
        error: None,
        created_unix: now_unix(),
        eval_seconds: 0.0,
        bytes_in: received,
        bytes_out: 0,
    };
    let store = app.store.clone();
    let accepted = job.clone();
    tokio::task::spawn_blocking(move || store.put_job(&accepted, &path))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    app.queued.fetch_add(1, Ordering::SeqCst);
    app.queue.send(job.job_id.clone()).await.map_err(internal)?;
    tracing::info!(job = %job.job_id, images, "accepted");
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// The job `job_id` if the request's token is its keys'.
fn authorized_job(app: &App, headers: &HeaderMap, job_id: &str) -> ApiResult<JobMeta> {
    if !valid_id(job_id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a job id is 32 hex digits",
        ));
    }
    let job = app
        .store
        .job(job_id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such job for this token"))?;
    authorize(app, headers, &job.key_id)
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "no such job for this token"))?;
    Ok(job)
}

async fn job_status(
    State(app): State<Arc<App>>,
    UrlPath(job_id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Json<JobMeta>> {
    Ok(Json(authorized_job(&app, &headers, &job_id)?))
}

async fn job_result(
    State(app): State<Arc<App>>,
    UrlPath(job_id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let job = authorized_job(&app, &headers, &job_id)?;
    if job.status != JobStatus::Done {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("the job is {:?}, not done", job.status).to_lowercase(),
        ));
    }
    let file = tokio::fs::File::open(app.store.job_result(&job_id))
        .await
        .map_err(internal)?;
    app.metrics
        .bytes_out
        .fetch_add(job.bytes_out, Ordering::Relaxed);
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn delete_job(
    State(app): State<Arc<App>>,
    UrlPath(job_id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let job = authorized_job(&app, &headers, &job_id)?;
    if matches!(job.status, JobStatus::Queued | JobStatus::Running) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the job is not finished; delete it once it is",
        ));
    }
    app.store.delete_job(&job_id).map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes jobs off the queue, at most `workers` at once, each on a blocking thread, until
/// `stop`; then waits for the running ones.
async fn run_workers(
    app: Arc<App>,
    mut rx: mpsc::Receiver<String>,
    stop: Arc<tokio::sync::Notify>,
) {
    let workers = Arc::new(Semaphore::new(app.config.workers.max(1)));
    let mut running = tokio::task::JoinSet::new();
    loop {
        // A worker first, then a job: a job taken off the queue starts at once.
        let permit = tokio::select! {
            permit = workers.clone().acquire_owned() => permit,
            _ = stop.notified() => break,
        };
        let Ok(permit) = permit else { break };
        let job_id = tokio::select! {
            job = rx.recv() => job,
            _ = stop.notified() => break,
        };
        let Some(job_id) = job_id else { break };
        app.queued.fetch_sub(1, Ordering::SeqCst);
        let worker_app = app.clone();
        running.spawn_blocking(move || {
            let _permit = permit;
            run_job(&worker_app, &job_id);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// Evaluates one job; its record says how it ended.
fn run_job(app: &App, job_id: &str) {
    let Some(mut job) = app.store.job(job_id) else {
        return;
    };
    job.status = JobStatus::Running;
    job.done_images = 0;
    if app.store.set_job(&job).is_err() {
        return;
    }
    let started = Instant::now();
    match evaluate_job(app, &mut job) {
        Ok(bytes_out) => {
            job.status = JobStatus::Done;
            job.bytes_out = bytes_out;
        }
        Err(e) => {
            tracing::warn!(job = %job_id, error = %e, "failed");
            job.status = JobStatus::Failed;
            job.error = Some(e);
        }
    }
    job.eval_seconds = started.elapsed().as_secs_f64();
    app.metrics
        .eval_micros
        .fetch_add((job.eval_seconds * 1e6) as u64, Ordering::Relaxed);
    let _ = app.store.set_job(&job);
    tracing::info!(job = %job_id, status = ?job.status, seconds = job.eval_seconds, "finished");
}

fn evaluate_job(app: &App, job: &mut JobMeta) -> Result<u64, String> {
    let model = app
        .models
        .get(&job.model)
        .ok_or("the job's model is no longer served")?;
    let (params, plan) = (&model.planned.params, &model.planned.plan);
    let keys = app
        .store
        .key_bytes(&job.key_id)
        .map_err(|_| "the job's keys were deleted".to_string())?;
    let keys = SingleKeys::from_bytes(params, &keys).map_err(|e| e.to_string())?;
    let evaluator = SingleEvaluator::with_diagonals(params, plan, &keys, &model.diagonals)
        .map_err(|e| e.to_string())?;
    let channels = params.channels().len();
    let object = params.channels()[0].seeded_ciphertext_bytes();
    let bytes = std::fs::read(app.store.job_input(&job.job_id)).map_err(|e| e.to_string())?;
    let uploads = Bundle::from_bytes(&bytes, UPLOADS, channels, 1, object)?;
    drop(bytes);
    let mut results = Vec::with_capacity(uploads.objects.len());
    for (i, image) in uploads.objects.iter().enumerate() {
        let outputs = crate::single_image::evaluate_image(&model.planned, &evaluator, image)
            .map_err(|e| format!("image {i}: {e}"))?;
        results.push(outputs);
        job.done_images = i + 1;
        app.metrics.images.fetch_add(1, Ordering::Relaxed);
        let _ = app.store.set_job(job);
    }
    let bundle = Bundle {
        kind: RESULTS,
        id: uploads.id,
        objects: results,
    }
    .to_bytes();
    Store::write_atomic(&app.store.job_result(&job.job_id), &bundle)?;
    Ok(bundle.len() as u64)
}
