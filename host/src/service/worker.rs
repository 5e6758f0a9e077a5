//! The evaluation workers: they claim queued jobs from the [`Store`], evaluate them (single
//! images or a batch) and store the results. They run in the API's process
//! (`serve --role all`) or in processes of their own (`serve --role worker`) that share the
//! state with the front.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cryptonets_core::network::single::{SingleEvaluator, SingleKeys};
use cryptonets_core::network::{EvaluationKeys, PolynomialEvaluator};
use tokio::sync::{Notify, Semaphore};

use super::models::ServedModel;
use super::server::Shared;
use super::store::{JobMeta, JobStatus};
use crate::bundle::{Bundle, RESULTS, UPLOADS};
use crate::pipeline::{BatchFile, BatchKind, BatchShape, evaluate_network_batch};

/// How often an idle worker looks at a queue other processes fill (jobs accepted by this
/// process wake it at once).
const POLL: Duration = Duration::from_millis(250);

/// Claims and runs jobs, at most `workers` at once, until `stop`; then waits for the running
/// ones (queued jobs stay in the store for the next start).
pub(crate) async fn run_workers(shared: Arc<Shared>, stop: Arc<Notify>) {
    let workers = Arc::new(Semaphore::new(shared.config.workers.max(1)));
    let mut running = tokio::task::JoinSet::new();
    let mut last_sweep = Instant::now();
    'outer: loop {
        let permit = tokio::select! {
            permit = workers.clone().acquire_owned() => permit,
            _ = stop.notified() => break,
        };
        let Ok(permit) = permit else { break };
        let job_id = loop {
            if last_sweep.elapsed() >= shared.config.lease / 2 {
                // Jobs whose worker died (its lease ran out) are queued again.
                let store = shared.store.clone();
                let lease = shared.config.lease;
                for id in tokio::task::spawn_blocking(move || store.requeue_expired(lease))
                    .await
                    .unwrap_or_default()
                {
                    tracing::warn!(job = %id, "lease expired: queued again");
                }
                last_sweep = Instant::now();
            }
            let store = shared.store.clone();
            if let Ok(Some(id)) = tokio::task::spawn_blocking(move || store.claim()).await {
                break id;
            }
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.notified() => break 'outer,
            }
        };
        let worker = shared.clone();
        running.spawn_blocking(move || {
            let _permit = permit;
            run_job(&worker, &job_id);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// Evaluates one claimed job, renewing its lease meanwhile; its record says how it ended.
fn run_job(shared: &Shared, job_id: &str) {
    let store = &shared.store;
    let Some(mut job) = store.job(job_id) else {
        store.release(job_id);
        return;
    };
    job.status = JobStatus::Running;
    job.done_images = 0;
    job.progress = 0.0;
    if store.set_job(&job).is_err() {
        return;
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let heartbeat = {
        let (store, id, every) = (store.clone(), job_id.to_string(), shared.config.lease / 4);
        std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(every)
            {
                store.renew(&id);
            }
        })
    };
    let started = Instant::now();
    // A panic is a bug; it fails this job (instead of leaving it claimed, to be run and
    // panic again after every lease) and the service goes on.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match shared.models.get(&job.model) {
            None => Err("the job's model is no longer served".to_string()),
            Some(model) if job.mode == "batch" => evaluate_batch(shared, model, &mut job),
            Some(model) => evaluate_single(shared, model, &mut job),
        }
    }))
    .unwrap_or_else(|_| Err("internal error: the evaluation panicked".to_string()));
    match outcome {
        Ok(bytes_out) => {
            job.status = JobStatus::Done;
            job.bytes_out = bytes_out;
            job.progress = 1.0;
            shared.metrics.jobs_done.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(job = %job_id, error = %e, "failed");
            job.status = JobStatus::Failed;
            job.error = Some(e);
            shared.metrics.jobs_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    job.eval_seconds = started.elapsed().as_secs_f64();
    shared
        .metrics
        .eval_micros
        .fetch_add((job.eval_seconds * 1e6) as u64, Ordering::Relaxed);
    let _ = store.set_job(&job);
    let _ = done_tx.send(());
    let _ = heartbeat.join();
    store.release(job_id);
    tracing::info!(job = %job_id, status = ?job.status, seconds = job.eval_seconds, "finished");
}

fn evaluate_single(shared: &Shared, model: &ServedModel, job: &mut JobMeta) -> Result<u64, String> {
    let planned = model
        .single
        .as_ref()
        .ok_or("the model has no single-image plan")?;
    let (params, plan) = (&planned.params, &planned.plan);
    let keys = shared
        .store
        .key_bytes(
            &job.key_id,
            SingleKeys::serialized_len_for(params, plan) as u64,
        )
        .map_err(|_| "the job's keys were deleted".to_string())?;
    let keys = SingleKeys::from_bytes(params, &keys).map_err(|e| e.to_string())?;
    let evaluator = SingleEvaluator::with_diagonals(params, plan, &keys, model.diagonals()?)
        .map_err(|e| e.to_string())?;
    let channels = params.channels().len();
    let object = params.channels()[0].seeded_ciphertext_bytes();
    let bytes = shared
        .store
        .job_input(&job.job_id, max_single_upload(channels, object))?;
    let uploads = Bundle::from_bytes(&bytes, UPLOADS, channels, 1, object)?;
    drop(bytes);
    let mut results = Vec::with_capacity(uploads.objects.len());
    for (i, image) in uploads.objects.iter().enumerate() {
        let outputs = crate::single_image::evaluate_image(planned, &evaluator, image)
            .map_err(|e| format!("image {i}: {e}"))?;
        results.push(outputs);
        job.done_images = i + 1;
        job.progress = job.done_images as f64 / uploads.objects.len() as f64;
        shared.metrics.images.fetch_add(1, Ordering::Relaxed);
        let _ = shared.store.set_job(job);
    }
    let bundle = Bundle {
        kind: RESULTS,
        id: uploads.id,
        objects: results,
    }
    .to_bytes();
    shared.store.put_result(&job.job_id, &bundle)?;
    Ok(bundle.len() as u64)
}

fn evaluate_batch(shared: &Shared, model: &ServedModel, job: &mut JobMeta) -> Result<u64, String> {
    let degree = job.degree.ok_or("a batch job without a ring degree")?;
    let planned = model
        .batch_plan(degree)
        .ok_or("the model has no batch plan of the keys' ring degree")?;
    let params = &planned.params;
    let keys = shared
        .store
        .key_bytes(
            &job.key_id,
            EvaluationKeys::max_serialized_len(params) as u64,
        )
        .map_err(|_| "the job's keys were deleted".to_string())?;
    let keys = EvaluationKeys::from_bytes(params, &keys).map_err(|e| e.to_string())?;
    let evaluator =
        PolynomialEvaluator::new(params, &model.network, &keys).map_err(|e| e.to_string())?;
    let shape = BatchShape::of(&model.network);
    let max = BatchFile::max_len_for(params, BatchKind::Images, shape) as u64;
    let bytes = shared.store.job_input(&job.job_id, max)?;
    let batch = BatchFile::from_bytes_for(&bytes, BatchKind::Images, shape)
        .map_err(|e| format!("the batch: {e}"))?;
    let channels = params.channels().len();
    let record = std::sync::Mutex::new(job.clone());
    let result = evaluate_network_batch(params, &evaluator, &batch, &|c| {
        if let Ok(mut record) = record.lock() {
            record.progress = c as f64 / channels as f64;
            let _ = shared.store.set_job(&record);
        }
    })
    .map_err(|e| e.to_string())?;
    drop(batch);
    drop(bytes);
    job.done_images = job.images;
    shared
        .metrics
        .images
        .fetch_add(job.images as u64, Ordering::Relaxed);
    let bytes = result.to_bytes();
    shared.store.put_result(&job.job_id, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Most images in one single-image job.
pub const MAX_JOB_IMAGES: usize = 256;

/// The largest single-image upload: [`MAX_JOB_IMAGES`] images of `channels` seeded
/// ciphertexts of at most `object` bytes.
pub(crate) fn max_single_upload(channels: usize, object: usize) -> u64 {
    (crate::bundle::HEADER + MAX_JOB_IMAGES * channels * (4 + object)) as u64
}
