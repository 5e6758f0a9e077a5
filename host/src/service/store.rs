//! The service's state: registered evaluation keys, accepted jobs, the queue. The API front
//! and the evaluation workers share it through [`Store`] and nothing else, so they run in
//! one process (the default) or in many, on one machine or on several; another
//! implementation of the trait (a database for the records and the queue, an object store
//! for the blobs) changes neither of them. See "Scaling out" in the README.
//!
//! [`FsStore`], the implementation here, keeps everything in a directory, each file written
//! atomically (a temporary file in the same directory, synced, renamed over the target, the
//! directory synced), so that a crash leaves the old or the new file, never half of one:
//!
//! ```text
//! STATE/keys/<key id>/meta.json    who may use the keys (a token's SHA-256), for which model
//! STATE/keys/<key id>/keys.bin     the evaluation keys as uploaded
//! STATE/jobs/<job id>/meta.json    status and progress
//! STATE/jobs/<job id>/input.bin    the encrypted images as uploaded
//! STATE/jobs/<job id>/result.bin   the encrypted results, once done
//! STATE/queue/<job id>             a job waiting for a worker (empty file)
//! STATE/running/<job id>           a job a worker claimed; its time is the worker's lease
//! STATE/tmp/                       uploads being received
//! ```
//!
//! A worker claims a job by renaming its queue entry into `running/`: of two workers (or
//! processes, on a filesystem with atomic rename) only one succeeds. It renews the lease as
//! it goes; a job whose lease ran out (its worker died) goes back to the queue. Evaluation
//! is deterministic, so a job run twice gives the same result.
//!
//! Ids are 32 lowercase hex digits; anything else from a request is refused before it
//! reaches a path.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Who may use registered keys, and for what.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyMeta {
    /// The key id (content address: SHA-256 of the model name and the keys, truncated).
    pub key_id: String,
    /// The model the keys were made for.
    pub model: String,
    /// "single" or "batch".
    pub mode: String,
    /// For batch keys: the ring degree of the plan they were made under.
    #[serde(default)]
    pub degree: Option<usize>,
    /// SHA-256 of the bearer token, hex.
    pub token_sha256: String,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
}

/// Where a job is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted, waiting for a worker.
    Queued,
    /// A worker is evaluating it.
    Running,
    /// The result can be fetched.
    Done,
    /// It cannot be evaluated (the reason is in `error`).
    Failed,
}

/// A job's record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobMeta {
    /// The job id.
    pub job_id: String,
    /// The keys it is evaluated with.
    pub key_id: String,
    /// The model.
    pub model: String,
    /// Status.
    pub status: JobStatus,
    /// Images in the upload.
    pub images: usize,
    /// Images evaluated so far.
    pub done_images: usize,
    /// Fraction of the evaluation done (images, or a batch's CRT channels).
    #[serde(default)]
    pub progress: f64,
    /// "single" or "batch".
    #[serde(default = "single_mode")]
    pub mode: String,
    /// For a batch job: the ring degree of its keys' plan.
    #[serde(default)]
    pub degree: Option<usize>,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds since the Unix epoch when accepted.
    pub created_unix: u64,
    /// Seconds of evaluation.
    pub eval_seconds: f64,
    /// Bytes of the upload and of the result.
    pub bytes_in: u64,
    /// Bytes of the result.
    pub bytes_out: u64,
}

fn single_mode() -> String {
    "single".into()
}

/// An upload being received: bytes are appended as they arrive, then it becomes a job's
/// input ([`Store::put_job`]) or is dropped (and removed).
pub trait Upload: Write + Send + std::fmt::Debug {
    /// Makes the bytes durable; called before the job is accepted.
    fn finish(&mut self) -> Result<(), String>;
    /// Where the bytes are, for the store that made it.
    fn locator(&self) -> &str;
}

/// The state the API front and the workers share. Every method is blocking (the front calls
/// them from blocking tasks).
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Registers keys (a key without its record is not registered).
    fn put_key(&self, meta: &KeyMeta, bytes: &[u8]) -> Result<(), String>;
    /// The record of keys `id`, if registered.
    fn key_meta(&self, id: &str) -> Option<KeyMeta>;
    /// The bytes of keys `id`, at most `max` of them.
    fn key_bytes(&self, id: &str, max: u64) -> Result<Vec<u8>, String>;
    /// Deletes keys `id`.
    fn delete_key(&self, id: &str) -> Result<(), String>;
    /// A new upload.
    fn new_upload(&self) -> Result<Box<dyn Upload>, String>;
    /// Accepts a job: its input is `upload`, its record `meta` (queued); it joins the queue.
    fn put_job(&self, meta: &JobMeta, upload: Box<dyn Upload>) -> Result<(), String>;
    /// Rewrites a job's record.
    fn set_job(&self, meta: &JobMeta) -> Result<(), String>;
    /// A job's record.
    fn job(&self, id: &str) -> Option<JobMeta>;
    /// A job's input, at most `max` bytes.
    fn job_input(&self, id: &str, max: u64) -> Result<Vec<u8>, String>;
    /// Stores a job's result.
    fn put_result(&self, id: &str, bytes: &[u8]) -> Result<(), String>;
    /// Reads a job's result.
    fn open_result(&self, id: &str) -> Result<Box<dyn Read + Send>, String>;
    /// Deletes a finished job.
    fn delete_job(&self, id: &str) -> Result<(), String>;
    /// Jobs waiting for a worker.
    fn queue_depth(&self) -> usize;
    /// Jobs claimed by a worker.
    fn running(&self) -> usize;
    /// Takes the oldest queued job for a worker (its record still says queued), or none.
    fn claim(&self) -> Option<String>;
    /// Renews the lease of a claimed job (the worker is alive).
    fn renew(&self, id: &str);
    /// Leaves the running set once the job's record says done or failed.
    fn release(&self, id: &str);
    /// Queues again every claimed job whose lease is older than `lease` (its worker died);
    /// returns their ids.
    fn requeue_expired(&self, lease: Duration) -> Vec<String>;
}

/// The state in a local (or shared) directory.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

/// Whether `id` is a well-formed id (32 lowercase hex digits).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

impl FsStore {
    /// Opens (creating) the state directory.
    pub fn open(root: &Path) -> Result<Self, String> {
        for dir in ["keys", "jobs", "queue", "running", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(|e| io("cannot create", &path, e))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn key_dir(&self, id: &str) -> PathBuf {
        debug_assert!(valid_id(id));
        self.root.join("keys").join(id)
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        debug_assert!(valid_id(id));
        self.root.join("jobs").join(id)
    }

    /// Writes `bytes` to `path` atomically.
    pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
        let dir = path.parent().ok_or("a file without a directory")?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
        ));
        let mut file = File::create(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| io("cannot write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| io("cannot rename to", path, e))?;
        sync_dir(dir)
    }

    /// Removes uploads left half-received by a crash of the process that owns `tmp/`
    /// (one front per state directory).
    pub fn clear_temp(&self) {
        let dir = self.root.join("tmp");
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let _ = fs::remove_file(entry.path());
        }
    }

    /// Repairs what a crash of an API process can leave: a job recorded as queued or running
    /// with neither a queue entry nor a claim (the crash fell between its record and its
    /// queue entry) is queued; a job directory without a record (never acknowledged to its
    /// owner) is removed. Returns the ids queued.
    pub fn recover(&self) -> Vec<String> {
        let mut queued = Vec::new();
        for id in self.entries("jobs").collect::<Vec<_>>() {
            let listed = ["queue", "running"]
                .iter()
                .any(|dir| self.root.join(dir).join(&id).exists());
            match self.job(&id) {
                // Not one being made right now by another front.
                None if modified_before(&self.job_dir(&id), Duration::from_secs(60)) => {
                    let _ = fs::remove_dir_all(self.job_dir(&id));
                }
                None => {}
                Some(job)
                    if !listed && matches!(job.status, JobStatus::Queued | JobStatus::Running) =>
                {
                    let entry = self.root.join("queue").join(&id);
                    if File::create(&entry).is_ok() {
                        queued.push(id);
                    }
                }
                Some(_) => {}
            }
        }
        queued
    }

    fn entries(&self, dir: &str) -> impl Iterator<Item = String> {
        fs::read_dir(self.root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|id| valid_id(id))
    }

    fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
        let file = File::open(path).map_err(|e| io("cannot read", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| io("cannot read", path, e))?
            .len();
        if len > max {
            return Err(format!("{}: {len} bytes, more than {max}", path.display()));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(max)
            .read_to_end(&mut bytes)
            .map_err(|e| io("cannot read", path, e))?;
        Ok(bytes)
    }
}

/// Whether `path` was last modified at least `age` ago.
fn modified_before(path: &Path, age: Duration) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() >= age)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

/// An upload into `STATE/tmp/`.
#[derive(Debug)]
struct FsUpload {
    file: File,
    path: PathBuf,
    locator: String,
}

impl Write for FsUpload {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.file.write(bytes)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Upload for FsUpload {
    fn finish(&mut self) -> Result<(), String> {
        self.file
            .sync_all()
            .map_err(|e| io("cannot sync", &self.path, e))
    }
    fn locator(&self) -> &str {
        &self.locator
    }
}

impl Drop for FsUpload {
    fn drop(&mut self) {
        // After put_job the file is a job's input and this finds nothing to remove.
        let _ = fs::remove_file(&self.path);
    }
}

impl Store for FsStore {
    fn put_key(&self, meta: &KeyMeta, bytes: &[u8]) -> Result<(), String> {
        let dir = self.key_dir(&meta.key_id);
        fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        Self::write_atomic(&dir.join("keys.bin"), bytes)?;
        let json = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
        Self::write_atomic(&dir.join("meta.json"), &json)
    }

    fn key_meta(&self, id: &str) -> Option<KeyMeta> {
        let bytes = Self::read_bounded(&self.key_dir(id).join("meta.json"), 1 << 16).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn key_bytes(&self, id: &str, max: u64) -> Result<Vec<u8>, String> {
        Self::read_bounded(&self.key_dir(id).join("keys.bin"), max)
    }

    fn delete_key(&self, id: &str) -> Result<(), String> {
        let dir = self.key_dir(id);
        let _ = fs::remove_file(dir.join("meta.json"));
        fs::remove_dir_all(&dir).map_err(|e| io("cannot delete", &dir, e))
    }

    fn new_upload(&self) -> Result<Box<dyn Upload>, String> {
        let locator = crate::service::random_id();
        let path = self.root.join("tmp").join(&locator);
        let file = File::create(&path).map_err(|e| io("cannot create", &path, e))?;
        Ok(Box::new(FsUpload {
            file,
            path,
            locator,
        }))
    }

    fn put_job(&self, meta: &JobMeta, mut upload: Box<dyn Upload>) -> Result<(), String> {
        let dir = self.job_dir(&meta.job_id);
        fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        upload.finish()?;
        let from = self.root.join("tmp").join(upload.locator());
        let input = dir.join("input.bin");
        fs::rename(&from, &input).map_err(|e| io("cannot move to", &input, e))?;
        self.set_job(meta)?;
        // The queue entry last: a worker never sees a job without its input and record.
        let entry = self.root.join("queue").join(&meta.job_id);
        File::create(&entry).map_err(|e| io("cannot create", &entry, e))?;
        sync_dir(&self.root.join("queue"))
    }

    fn set_job(&self, meta: &JobMeta) -> Result<(), String> {
        let json = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
        Self::write_atomic(&self.job_dir(&meta.job_id).join("meta.json"), &json)
    }

    fn job(&self, id: &str) -> Option<JobMeta> {
        let bytes = Self::read_bounded(&self.job_dir(id).join("meta.json"), 1 << 16).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn job_input(&self, id: &str, max: u64) -> Result<Vec<u8>, String> {
        Self::read_bounded(&self.job_dir(id).join("input.bin"), max)
    }

    fn put_result(&self, id: &str, bytes: &[u8]) -> Result<(), String> {
        Self::write_atomic(&self.job_dir(id).join("result.bin"), bytes)
    }

    fn open_result(&self, id: &str) -> Result<Box<dyn Read + Send>, String> {
        let path = self.job_dir(id).join("result.bin");
        let file = File::open(&path).map_err(|e| io("cannot read", &path, e))?;
        Ok(Box::new(file))
    }

    fn delete_job(&self, id: &str) -> Result<(), String> {
        let dir = self.job_dir(id);
        let _ = fs::remove_file(dir.join("meta.json"));
        fs::remove_dir_all(&dir).map_err(|e| io("cannot delete", &dir, e))
    }

    fn queue_depth(&self) -> usize {
        self.entries("queue").count()
    }

    fn running(&self) -> usize {
        self.entries("running").count()
    }

    fn claim(&self) -> Option<String> {
        // Oldest first: by the time the entry was made, then by id.
        let mut queued: Vec<(SystemTime, String)> = self
            .entries("queue")
            .filter_map(|id| {
                let time = fs::metadata(self.root.join("queue").join(&id))
                    .and_then(|m| m.modified())
                    .ok()?;
                Some((time, id))
            })
            .collect();
        queued.sort();
        for (_, id) in queued {
            let running = self.root.join("running").join(&id);
            // The rename is the claim: it fails for every other claimant.
            if fs::rename(self.root.join("queue").join(&id), &running).is_ok() {
                self.renew(&id);
                return Some(id);
            }
        }
        None
    }

    fn renew(&self, id: &str) {
        let path = self.root.join("running").join(id);
        let _ = File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()));
    }

    fn release(&self, id: &str) {
        let _ = fs::remove_file(self.root.join("running").join(id));
    }

    fn requeue_expired(&self, lease: Duration) -> Vec<String> {
        let mut requeued = Vec::new();
        for id in self.entries("running").collect::<Vec<_>>() {
            let path = self.root.join("running").join(&id);
            if modified_before(&path, lease)
                && fs::rename(&path, self.root.join("queue").join(&id)).is_ok()
                && let Some(mut job) = self.job(&id)
            {
                job.status = JobStatus::Queued;
                job.done_images = 0;
                job.progress = 0.0;
                let _ = self.set_job(&job);
                requeued.push(id);
            }
        }
        requeued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, status: JobStatus) -> JobMeta {
        JobMeta {
            job_id: id.into(),
            key_id: "0".repeat(32),
            model: "m".into(),
            status,
            images: 1,
            done_images: 0,
            progress: 0.0,
            mode: "single".into(),
            degree: None,
            error: None,
            created_unix: 0,
            eval_seconds: 0.0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    fn store(name: &str) -> (FsStore, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("cryptonets-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        (FsStore::open(&dir).unwrap(), dir)
    }

    #[test]
    fn a_job_is_claimed_once_and_an_expired_lease_queues_it_again() {
        let (store, dir) = store("claim");
        let id = "ab".repeat(16);
        let mut upload = store.new_upload().unwrap();
        upload.write_all(b"input").unwrap();
        store.put_job(&job(&id, JobStatus::Queued), upload).unwrap();
        assert_eq!(store.job_input(&id, 5).unwrap(), b"input");
        assert!(store.job_input(&id, 4).is_err(), "bounded reads");
        assert_eq!(store.queue_depth(), 1);
        // Two claimants (threads standing for processes): one gets it.
        let claims: Vec<Option<String>> = std::thread::scope(|s| {
            let a = s.spawn(|| store.claim());
            let b = s.spawn(|| store.claim());
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        assert_eq!(claims.iter().flatten().count(), 1);
        assert_eq!((store.queue_depth(), store.running()), (0, 1));
        // A fresh lease is kept; a lapsed one goes back to the queue, the record with it.
        assert!(store.requeue_expired(Duration::from_secs(3600)).is_empty());
        let mut running = job(&id, JobStatus::Running);
        running.progress = 0.5;
        store.set_job(&running).unwrap();
        assert_eq!(store.requeue_expired(Duration::ZERO), vec![id.clone()]);
        let record = store.job(&id).unwrap();
        assert_eq!((record.status, record.progress), (JobStatus::Queued, 0.0));
        assert_eq!(store.claim(), Some(id.clone()));
        store.release(&id);
        assert_eq!((store.queue_depth(), store.running()), (0, 0));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn recovery_queues_a_recorded_job_left_unqueued_and_keeps_finished_ones() {
        let (store, dir) = store("recover");
        let (lost, done) = ("cd".repeat(16), "ef".repeat(16));
        for (id, status) in [(&lost, JobStatus::Queued), (&done, JobStatus::Done)] {
            fs::create_dir_all(store.job_dir(id)).unwrap();
            store.set_job(&job(id, status)).unwrap();
        }
        // A directory without a record, just made: left alone (another front may be
        // writing it).
        let fresh = "01".repeat(16);
        fs::create_dir_all(store.job_dir(&fresh)).unwrap();
        assert_eq!(store.recover(), vec![lost.clone()]);
        assert!(store.job_dir(&fresh).exists());
        assert_eq!(store.claim(), Some(lost));
        assert_eq!(store.claim(), None);
        fs::remove_dir_all(dir).unwrap();
    }
}
