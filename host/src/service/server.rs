//! `cryptonets serve`: the HTTP API (axum on tokio, HTTP/1.1 and HTTP/2, TLS with rustls
//! when given a certificate) in front of the [`Store`] the workers take jobs from.
//!
//! Routes (described in `host/openapi.json`, which a test keeps in sync with [`ROUTES`]):
//! `GET /healthz`, `GET /metrics`, `GET /v1/models`, `POST /v1/keys?model=NAME&mode=MODE`,
//! `DELETE /v1/keys/{key_id}`, `POST /v1/jobs?key_id=ID`, `GET /v1/jobs/{job_id}`,
//! `GET /v1/jobs/{job_id}/result`, `DELETE /v1/jobs/{job_id}`. Errors are JSON
//! `{"error": "..."}` with a 4xx status for anything the client sent.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cryptonets_core::Backend;
use cryptonets_core::network::EvaluationKeys;
use cryptonets_core::network::single::SingleKeys;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use super::models::{ServedModel, load_models};
use super::store::{FsStore, JobMeta, JobStatus, KeyMeta, Store, now_unix, valid_id};
use super::worker::{MAX_JOB_IMAGES, max_single_upload, run_workers};
use super::{random_id, sha256_hex};
use crate::bundle::{Bundle, HEADER, UPLOADS};
use crate::pipeline::{BatchFile, BatchHeader, BatchKind, BatchShape};

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

/// What a process of the service does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The API and the workers (the default: one process).
    All,
    /// The API only: jobs wait in the store for worker processes.
    Api,
    /// Workers only, serving `/healthz` and `/metrics`: they take the jobs an API process
    /// accepted into the same store.
    Worker,
}

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The state directory.
    pub state: PathBuf,
    /// The directory of models served (every `*.cnmd`).
    pub models: PathBuf,
    /// What this process does.
    pub role: Role,
    /// Jobs evaluated at once.
    pub workers: usize,
    /// Jobs accepted and not yet running, at most.
    pub max_queue: usize,
    /// Uploads received at once, at most.
    pub max_uploads: usize,
    /// Longest wait for the next piece of a request body.
    pub read_timeout: Duration,
    /// A claimed job whose worker has not renewed its lease for this long is queued again.
    pub lease: Duration,
    /// The kernels.
    pub backend: Backend,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: AtomicU64,
    bad_requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    pub(crate) eval_micros: AtomicU64,
    pub(crate) images: AtomicU64,
    pub(crate) jobs_done: AtomicU64,
    pub(crate) jobs_failed: AtomicU64,
    jobs_accepted: AtomicU64,
}

/// What the API and the workers of one process share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServeConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) models: BTreeMap<String, Arc<ServedModel>>,
    pub(crate) metrics: Metrics,
    /// Told when this process queues a job, so that its idle workers start at once.
    pub(crate) wake: Notify,
    uploads: tokio::sync::Semaphore,
}

/// Where the service listens.
#[derive(Debug)]
pub enum Listener {
    /// Plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge).
    Plain(tokio::net::TcpListener),
    /// HTTPS with rustls (HTTP/1.1 and HTTP/2 by ALPN).
    Tls(std::net::TcpListener, axum_server::tls_rustls::RustlsConfig),
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

/// Serves on `listener` until `shutdown` resolves; then stops accepting and lets running
/// jobs finish (queued ones stay queued in the state directory for the next start).
pub async fn serve(
    config: ServeConfig,
    listener: Listener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let store = FsStore::open(&config.state)?;
    if config.role != Role::Worker {
        store.clear_temp();
        for id in store.recover() {
            tracing::warn!(job = %id, "recorded but not queued (a crash): queued");
        }
    }
    if config.role == Role::All {
        // The only process on this state: whatever was claimed belonged to a process that
        // died. Evaluation is deterministic, so running it again gives the same result.
        for id in store.requeue_expired(Duration::ZERO) {
            tracing::info!(job = %id, "resumed");
        }
    }
    let models = load_models(&config.models, config.backend)?;
    let shared = Arc::new(Shared {
        uploads: tokio::sync::Semaphore::new(config.max_uploads.max(1)),
        store: Arc::new(store),
        models,
        metrics: Metrics::default(),
        wake: Notify::new(),
        config,
    });
    let stop = Arc::new(Notify::new());
    let workers = (shared.config.role != Role::Api)
        .then(|| tokio::spawn(run_workers(shared.clone(), stop.clone())));
    let router = router(shared.clone());
    match listener {
        Listener::Plain(listener) => axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| e.to_string())?,
        Listener::Tls(listener, tls) => {
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                stopper.graceful_shutdown(Some(Duration::from_secs(30)));
            });
            axum_server::from_tcp_rustls(listener, tls)
                .map_err(|e| e.to_string())?
                .handle(handle)
                .serve(router.into_make_service())
                .await
                .map_err(|e| e.to_string())?
        }
    }
    // Stop claiming jobs; wait for the running ones.
    stop.notify_waiters();
    stop.notify_one();
    if let Some(workers) = workers {
        let _ = workers.await;
    }
    Ok(())
}

fn router(shared: Arc<Shared>) -> Router {
    let counted = |router: Router<Arc<Shared>>| {
        router
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
            .layer(axum::middleware::from_fn_with_state(shared.clone(), count))
            .with_state(shared.clone())
    };
    let base = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics));
    if shared.config.role == Role::Worker {
        return counted(base);
    }
    let max_keys = shared
        .models
        .values()
        .map(|m| m.max_key_bytes())
        .max()
        .unwrap_or(0);
    counted(
        base.route("/v1/models", get(models))
            .route(
                "/v1/keys",
                post(register_keys).layer(DefaultBodyLimit::max(max_keys + 1024)),
            )
            .route("/v1/keys/{key_id}", delete(delete_keys))
            .route(
                "/v1/jobs",
                // Bounded per job by its keys' plan, as it streams in.
                post(submit_job).layer(DefaultBodyLimit::disable()),
            )
            .route("/v1/jobs/{job_id}", get(job_status).delete(delete_job))
            .route("/v1/jobs/{job_id}/result", get(job_result)),
    )
}

async fn count(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    shared.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    if response.status().is_client_error() {
        shared.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
    }
    response
}

/// Runs a store operation off the async threads.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&dyn Store) -> T + Send + 'static,
) -> ApiResult<T> {
    let store = shared.store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(internal)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> ApiResult<impl IntoResponse> {
    let m = &shared.metrics;
    let (queued, running) = blocking(&shared, |s| (s.queue_depth(), s.running())).await?;
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, String)]| {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            text.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed).to_string();
    metric(
        "cryptonets_requests_total",
        "counter",
        "HTTP requests.",
        &[("", load(&m.requests))],
    );
    metric(
        "cryptonets_bad_requests_total",
        "counter",
        "Requests answered with a 4xx status.",
        &[("", load(&m.bad_requests))],
    );
    metric(
        "cryptonets_queue_depth",
        "gauge",
        "Jobs accepted and waiting for a worker (every process of this state).",
        &[("", queued.to_string())],
    );
    metric(
        "cryptonets_jobs",
        "gauge",
        "Jobs queued or running (every process of this state).",
        &[
            ("{status=\"queued\"}", queued.to_string()),
            ("{status=\"running\"}", running.to_string()),
        ],
    );
    metric(
        "cryptonets_jobs_total",
        "counter",
        "Jobs accepted by this process, and finished by its workers, by outcome.",
        &[
            ("{status=\"accepted\"}", load(&m.jobs_accepted)),
            ("{status=\"done\"}", load(&m.jobs_done)),
            ("{status=\"failed\"}", load(&m.jobs_failed)),
        ],
    );
    metric(
        "cryptonets_eval_seconds_total",
        "counter",
        "Seconds of evaluation by this process's workers.",
        &[(
            "",
            format!("{:.6}", m.eval_micros.load(Ordering::Relaxed) as f64 / 1e6),
        )],
    );
    metric(
        "cryptonets_images_total",
        "counter",
        "Images evaluated by this process's workers.",
        &[("", load(&m.images))],
    );
    metric(
        "cryptonets_bytes_in_total",
        "counter",
        "Bytes of keys and uploads received.",
        &[("", load(&m.bytes_in))],
    );
    metric(
        "cryptonets_bytes_out_total",
        "counter",
        "Bytes of results sent.",
        &[("", load(&m.bytes_out))],
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

#[derive(Serialize)]
struct SingleInfo {
    n: usize,
    ciphertext_primes: usize,
    special_primes: usize,
    plaintext_primes: Vec<u32>,
    galois_keys: usize,
    eval_key_bytes: usize,
    upload_bytes_per_image: usize,
}

#[derive(Serialize)]
struct BatchInfo {
    n: usize,
    max_images: usize,
    ciphertext_primes: usize,
    plaintext_primes: Vec<u32>,
    max_upload_bytes: usize,
}

#[derive(Serialize)]
struct ModelInfo {
    name: String,
    input: [usize; 3],
    classes: usize,
    single: Option<SingleInfo>,
    batch: Vec<BatchInfo>,
}

async fn models(State(shared): State<Arc<Shared>>) -> Json<Vec<ModelInfo>> {
    let info = |m: &ServedModel| {
        let input = m.network.input();
        let shape = BatchShape::of(&m.network);
        ModelInfo {
            name: m.name.clone(),
            input: [input.channels, input.height, input.width],
            classes: m.network.classes(),
            single: m.single.as_ref().map(|p| {
                let (params, plan) = (&p.params, &p.plan);
                let first = &params.channels()[0];
                SingleInfo {
                    n: params.degree(),
                    ciphertext_primes: first.max_level(),
                    special_primes: first.special_basis().map_or(0, |s| s.len()),
                    plaintext_primes: params.plaintext_primes(),
                    galois_keys: plan.keys.len(),
                    eval_key_bytes: SingleKeys::serialized_len_for(params, plan),
                    upload_bytes_per_image: plan.upload_bytes(params),
                }
            }),
            batch: m
                .batch
                .iter()
                .map(|p| BatchInfo {
                    n: p.params.degree(),
                    max_images: p.params.degree(),
                    ciphertext_primes: p.params.ciphertext_primes(),
                    plaintext_primes: p.params.plaintext_primes(),
                    max_upload_bytes: BatchFile::max_len_for(&p.params, BatchKind::Images, shape),
                })
                .collect(),
        }
    };
    Json(shared.models.values().map(|m| info(m)).collect())
}

/// The two ways to submit work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum JobMode {
    /// One image a ciphertext (rotations): many owners, one image each.
    Single,
    /// One image a slot: one owner's batch of up to n images.
    Batch,
}

impl JobMode {
    /// "single" or "batch".
    pub fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Batch => "batch",
        }
    }
}

#[derive(Deserialize)]
struct KeysQuery {
    model: String,
    mode: Option<JobMode>,
}

/// What registering keys answers: the key id and the bearer token that alone may use them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Registered {
    /// The keys' id.
    pub key_id: String,
    /// The bearer token (shown once; the service keeps its hash).
    pub token: String,
}

fn model(shared: &Shared, name: &str) -> ApiResult<Arc<ServedModel>> {
    shared
        .models
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no model named {name:?}")))
}

/// Whether `bytes` is a serialized secret key (`bfv::serialization`'s header: magic, version,
/// kind 2), which the service refuses to receive.
fn is_secret_key(bytes: &[u8]) -> bool {
    bytes.len() >= 16 && &bytes[..4] == b"CNET" && bytes[5] == 2
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// Checks evaluation keys against the model's plan for `mode`; for batch keys, returns the
/// ring degree of the plan they fit.
fn check_keys(model: &ServedModel, mode: JobMode, body: &[u8]) -> ApiResult<Option<usize>> {
    match mode {
        JobMode::Single => {
            let planned = model.single.as_ref().ok_or_else(|| {
                bad(format!(
                    "model {:?} has no single-image plan; use mode=batch",
                    model.name
                ))
            })?;
            let (params, plan) = (&planned.params, &planned.plan);
            let keys = SingleKeys::from_bytes(params, body)
                .map_err(|e| bad(format!("single-image evaluation keys: {e}")))?;
            keys.check(params, plan)
                .map_err(|e| bad(format!("evaluation keys of another model's plan: {e}")))?;
            Ok(None)
        }
        JobMode::Batch => {
            let mut last = None;
            for planned in &model.batch {
                match EvaluationKeys::from_bytes(&planned.params, body) {
                    Ok(_) => return Ok(Some(planned.params.degree())),
                    Err(e) => last = Some(e),
                }
            }
            Err(bad(format!(
                "batch evaluation keys: {} (none of this model's batch plans takes them)",
                last.map_or("the model has no batch plan".into(), |e| e.to_string())
            )))
        }
    }
}

async fn register_keys(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<KeysQuery>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    let model = model(&shared, &query.model)?;
    let mode = query.mode.unwrap_or(JobMode::Single);
    shared
        .metrics
        .bytes_in
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    if is_secret_key(&body) {
        return Err(bad(
            "this is a secret key: it never leaves its owner; send the evaluation keys (keygen --eval-key)",
        ));
    }
    let checked = {
        let (model, body) = (model.clone(), body.clone());
        tokio::task::spawn_blocking(move || check_keys(&model, mode, &body))
            .await
            .map_err(internal)?
    };
    let degree = checked?;
    let mut address = model.name.as_bytes().to_vec();
    address.push(0);
    address.extend_from_slice(mode.name().as_bytes());
    address.push(0);
    address.extend_from_slice(&body);
    let key_id = sha256_hex(&address)[..32].to_string();
    let known = {
        let id = key_id.clone();
        blocking(&shared, move |s| s.key_meta(&id).is_some()).await?
    };
    if known {
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
        mode: mode.name().into(),
        degree,
        token_sha256: sha256_hex(token.as_bytes()),
        created_unix: now_unix(),
    };
    blocking(&shared, move |s| s.put_key(&meta, &body))
        .await?
        .map_err(internal)?;
    tracing::info!(key = %key_id, model = %model.name, mode = mode.name(), "keys registered");
    Ok((StatusCode::CREATED, Json(Registered { key_id, token })))
}

/// The keys `key_id` if the request's bearer token is theirs; 404 otherwise (whether the
/// keys exist is not told to someone without their token).
async fn authorize(shared: &Arc<Shared>, headers: &HeaderMap, key_id: &str) -> ApiResult<KeyMeta> {
    let denied = || ApiError::new(StatusCode::NOT_FOUND, "no such keys for this token");
    if !valid_id(key_id) {
        return Err(bad("a key id is 32 hex digits"));
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
    let id = key_id.to_string();
    let meta = blocking(shared, move |s| s.key_meta(&id))
        .await?
        .ok_or_else(denied)?;
    let presented = sha256_hex(token.as_bytes());
    if bool::from(presented.as_bytes().ct_eq(meta.token_sha256.as_bytes())) {
        Ok(meta)
    } else {
        Err(denied())
    }
}

async fn delete_keys(
    State(shared): State<Arc<Shared>>,
    UrlPath(key_id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    authorize(&shared, &headers, &key_id).await?;
    blocking(&shared, move |s| s.delete_key(&key_id))
        .await?
        .map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct JobQuery {
    key_id: String,
}

/// Checks an upload's first bytes and returns its image count.
type HeaderCheck = Box<dyn Fn(&[u8]) -> ApiResult<usize> + Send + Sync>;

/// What an upload must be, from its keys: its largest size and how its header is checked.
struct Expected {
    max: u64,
    check: HeaderCheck,
}

fn expected_upload(model: &ServedModel, key: &KeyMeta) -> ApiResult<Expected> {
    let gone = || internal("the keys' plan is no longer served");
    if key.mode == "batch" {
        let planned = key
            .degree
            .and_then(|n| model.batch_plan(n))
            .ok_or_else(gone)?;
        let params = planned.params.clone();
        let max =
            BatchFile::max_len_for(&params, BatchKind::Images, BatchShape::of(&model.network));
        return Ok(Expected {
            max: max as u64,
            check: Box::new(move |bytes| {
                let (header, _) = BatchHeader::parse(bytes, BatchKind::Images)
                    .map_err(|e| bad(format!("upload: {e}")))?;
                header
                    .check_parameters(&params)
                    .map_err(|e| bad(format!("upload: {e}")))?;
                Ok(header.images as usize)
            }),
        });
    }
    let planned = model.single.as_ref().ok_or_else(gone)?;
    let channels = planned.params.channels().len();
    let object = planned.params.channels()[0].seeded_ciphertext_bytes();
    Ok(Expected {
        max: max_single_upload(channels, object),
        check: Box::new(move |bytes| {
            let images = Bundle::check_header(bytes, UPLOADS, channels, 1)
                .map_err(|e| bad(format!("upload: {e}")))?;
            if images > MAX_JOB_IMAGES {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a job holds at most {MAX_JOB_IMAGES} images"),
                ));
            }
            Ok(images)
        }),
    })
}

/// A refused upload's body is read and dropped up to this many bytes (a few single-image
/// uploads), so that a client that sends before it reads gets the answer instead of a reset
/// connection; beyond, the connection is closed.
const DRAIN_BYTES: usize = 4 << 20;

async fn drain(body: Body, timeout: Duration) {
    drain_stream(body.into_data_stream(), timeout).await;
}

async fn drain_stream(mut stream: axum::body::BodyDataStream, timeout: Duration) {
    let mut drained = 0;
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(chunk)) = stream.next().await {
            drained += chunk.len();
            if drained > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

async fn submit_job(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<JobQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<JobMeta>)> {
    match admit(&shared, &query, &headers).await {
        Ok((key, model, expected, permit)) => {
            receive(&shared, key, &model, expected, body, permit).await
        }
        Err(e) => {
            drain(body, shared.config.read_timeout).await;
            Err(e)
        }
    }
}

/// Whether a job may be uploaded now: its keys and token, its model, room in the queue and
/// an upload slot.
async fn admit<'a>(
    shared: &'a Arc<Shared>,
    query: &JobQuery,
    headers: &HeaderMap,
) -> ApiResult<(
    KeyMeta,
    Arc<ServedModel>,
    Expected,
    tokio::sync::SemaphorePermit<'a>,
)> {
    let key = authorize(shared, headers, &query.key_id).await?;
    let model = model(shared, &key.model)?;
    let expected = expected_upload(&model, &key)?;
    let queued = blocking(shared, |s| s.queue_depth()).await?;
    if queued >= shared.config.max_queue {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "the queue is full",
        ));
    }
    let permit = shared
        .uploads
        .try_acquire()
        .map_err(|_| ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many uploads at once"))?;
    Ok((key, model, expected, permit))
}

/// Streams an admitted upload into the store and queues its job.
async fn receive(
    shared: &Arc<Shared>,
    key: KeyMeta,
    model: &ServedModel,
    expected: Expected,
    body: Body,
    _permit: tokio::sync::SemaphorePermit<'_>,
) -> ApiResult<(StatusCode, Json<JobMeta>)> {
    // Streamed into the store, never held whole; a stalled sender is cut off.
    let mut upload = blocking(shared, |s| s.new_upload())
        .await?
        .map_err(internal)?;
    let header_len = HEADER.max(BatchHeader::MAX_LEN);
    let mut received = 0u64;
    let mut header_bytes = Vec::with_capacity(header_len);
    let mut stream = body.into_data_stream();
    let result: ApiResult<()> = async {
        loop {
            let next = tokio::time::timeout(shared.config.read_timeout, stream.next())
                .await
                .map_err(|_| ApiError::new(StatusCode::REQUEST_TIMEOUT, "the upload stalled"))?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| bad(format!("upload: {e}")))?;
            received += chunk.len() as u64;
            if received > expected.max {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "this upload is larger than a job may be ({} bytes)",
                        expected.max
                    ),
                ));
            }
            if header_bytes.len() < header_len {
                let take = (header_len - header_bytes.len()).min(chunk.len());
                header_bytes.extend_from_slice(&chunk[..take]);
                // A bad header is refused before the rest is received.
                if header_bytes.len() == header_len {
                    (expected.check)(&header_bytes)?;
                }
            }
            // Local files take these writes at memory speed; a remote store would buffer.
            upload.write_all(&chunk).map_err(internal)?;
        }
        Ok(())
    }
    .await;
    shared
        .metrics
        .bytes_in
        .fetch_add(received, Ordering::Relaxed);
    if let Err(e) = result {
        // A refused header is answered after the rest of a small body (as a refusal before
        // it is); a body too large or stalled is cut off.
        let cut_off = e.0 == StatusCode::REQUEST_TIMEOUT || received > expected.max;
        if !cut_off {
            drain_stream(stream, shared.config.read_timeout).await;
        }
        return Err(e);
    }
    // The header's shape (every object is parsed by the worker).
    let images = (expected.check)(&header_bytes)?;
    let job = JobMeta {
        job_id: random_id(),
        key_id: key.key_id.clone(),
        model: model.name.clone(),
        mode: key.mode.clone(),
        degree: key.degree,
        status: JobStatus::Queued,
        images,
        done_images: 0,
        progress: 0.0,
        error: None,
        created_unix: now_unix(),
        eval_seconds: 0.0,
        bytes_in: received,
        bytes_out: 0,
    };
    let accepted = job.clone();
    blocking(shared, move |s| s.put_job(&accepted, upload))
        .await?
        .map_err(internal)?;
    shared.metrics.jobs_accepted.fetch_add(1, Ordering::Relaxed);
    shared.wake.notify_one();
    tracing::info!(job = %job.job_id, mode = %job.mode, images, "accepted");
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// The job `job_id` if the request's token is its keys'.
async fn authorized_job(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    job_id: &str,
) -> ApiResult<JobMeta> {
    let denied = || ApiError::new(StatusCode::NOT_FOUND, "no such job for this token");
    if !valid_id(job_id) {
        return Err(bad("a job id is 32 hex digits"));
    }
    let id = job_id.to_string();
    let job = blocking(shared, move |s| s.job(&id))
        .await?
        .ok_or_else(denied)?;
    authorize(shared, headers, &job.key_id)
        .await
        .map_err(|_| denied())?;
    Ok(job)
}

#[derive(Deserialize)]
struct StatusQuery {
    /// Long poll: answer once the job's status or progress changes, or after this many
    /// seconds (at most 30).
    wait: Option<f64>,
}

/// Longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(30);

async fn job_status(
    State(shared): State<Arc<Shared>>,
    UrlPath(job_id): UrlPath<String>,
    Query(query): Query<StatusQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<JobMeta>> {
    let first = authorized_job(&shared, &headers, &job_id).await?;
    let wait = query
        .wait
        .filter(|w| w.is_finite() && *w > 0.0)
        .map_or(Duration::ZERO, |w| Duration::from_secs_f64(w).min(MAX_WAIT));
    let deadline = tokio::time::Instant::now() + wait;
    let mut job = first.clone();
    while matches!(job.status, JobStatus::Queued | JobStatus::Running)
        && (job.status, job.progress) == (first.status, first.progress)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let id = job_id.clone();
        // Deleted meanwhile (by its owner): the last record seen.
        match blocking(&shared, move |s| s.job(&id)).await? {
            Some(now) => job = now,
            None => break,
        }
    }
    Ok(Json(job))
}

async fn job_result(
    State(shared): State<Arc<Shared>>,
    UrlPath(job_id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let job = authorized_job(&shared, &headers, &job_id).await?;
    if job.status != JobStatus::Done {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("the job is {:?}, not done", job.status).to_lowercase(),
        ));
    }
    let reader = blocking(&shared, move |s| s.open_result(&job_id))
        .await?
        .map_err(internal)?;
    shared
        .metrics
        .bytes_out
        .fetch_add(job.bytes_out, Ordering::Relaxed);
    // Streamed from the store in chunks, on a blocking thread.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        loop {
            let mut chunk = vec![0u8; 1 << 20];
            match std::io::Read::read(&mut reader, &mut chunk) {
                Ok(0) => break,
                Ok(k) => {
                    chunk.truncate(k);
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let stream = tokio_stream_of(rx);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(job.bytes_out)),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A stream of the chunks `rx` receives.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn delete_job(
    State(shared): State<Arc<Shared>>,
    UrlPath(job_id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let job = authorized_job(&shared, &headers, &job_id).await?;
    if matches!(job.status, JobStatus::Queued | JobStatus::Running) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the job is not finished; delete it once it is",
        ));
    }
    blocking(&shared, move |s| s.delete_job(&job_id))
        .await?
        .map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}
