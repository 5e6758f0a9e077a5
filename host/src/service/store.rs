//! The service's state in a directory: registered evaluation keys and accepted jobs, each
//! file written atomically (a temporary file in the same directory, synced, renamed over
//! the target, the directory synced), so that a crash leaves either the old or the new
//! file, never half of one.
//!
//! ```text
//! STATE/keys/<key id>/meta.json    who may use the keys (a token's SHA-256), for which model
//! STATE/keys/<key id>/keys.bin     the evaluation keys as uploaded
//! STATE/jobs/<job id>/meta.json    status and progress
//! STATE/jobs/<job id>/input.bin    the encrypted images as uploaded
//! STATE/jobs/<job id>/result.bin   the encrypted results, once done
//! STATE/tmp/                       uploads being received
//! ```
//!
//! Ids are 32 lowercase hex digits; anything else from a request is refused before it
//! reaches a path.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who may use registered keys, and for what.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyMeta {
    /// The key id (content address: SHA-256 of the model name and the keys, truncated).
    pub key_id: String,
    /// The model the keys were made for.
    pub model: String,
    /// "single".
    pub mode: String,
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

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
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

impl Store {
    /// Opens (creating) the state directory.
    pub fn open(root: &Path) -> Result<Self, String> {
        for dir in ["keys", "jobs", "tmp"] {
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

    /// A fresh file for an upload being received, and its path.
    pub fn temp_file(&self) -> Result<(File, PathBuf), String> {
        let path = self.root.join("tmp").join(crate::service::random_id());
        let file = File::create(&path).map_err(|e| io("cannot create", &path, e))?;
        Ok((file, path))
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
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("cannot sync", dir, e))
    }

    /// Registers keys: their record and bytes, the record last (a key without a record is
    /// not registered).
    pub fn put_key(&self, meta: &KeyMeta, bytes: &[u8]) -> Result<(), String> {
        let dir = self.key_dir(&meta.key_id);
        fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        Self::write_atomic(&dir.join("keys.bin"), bytes)?;
        let json = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
        Self::write_atomic(&dir.join("meta.json"), &json)
    }

    /// The record of keys `id`, if registered.
    pub fn key_meta(&self, id: &str) -> Option<KeyMeta> {
        let bytes = fs::read(self.key_dir(id).join("meta.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The bytes of keys `id`.
    pub fn key_bytes(&self, id: &str) -> Result<Vec<u8>, String> {
        let path = self.key_dir(id).join("keys.bin");
        fs::read(&path).map_err(|e| io("cannot read", &path, e))
    }

    /// Deletes keys `id` (record first).
    pub fn delete_key(&self, id: &str) -> Result<(), String> {
        let dir = self.key_dir(id);
        let _ = fs::remove_file(dir.join("meta.json"));
        fs::remove_dir_all(&dir).map_err(|e| io("cannot delete", &dir, e))
    }

    /// Accepts a job: moves its upload in, then writes its record.
    pub fn put_job(&self, meta: &JobMeta, upload: &Path) -> Result<(), String> {
        let dir = self.job_dir(&meta.job_id);
        fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        let input = dir.join("input.bin");
        File::open(upload)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("cannot sync", upload, e))?;
        fs::rename(upload, &input).map_err(|e| io("cannot move to", &input, e))?;
        self.set_job(meta)
    }

    /// Rewrites a job's record.
    pub fn set_job(&self, meta: &JobMeta) -> Result<(), String> {
        let json = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
        Self::write_atomic(&self.job_dir(&meta.job_id).join("meta.json"), &json)
    }

    /// A job's record.
    pub fn job(&self, id: &str) -> Option<JobMeta> {
        let bytes = fs::read(self.job_dir(id).join("meta.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The path of a job's upload.
    pub fn job_input(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("input.bin")
    }

    /// The path of a job's result.
    pub fn job_result(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("result.bin")
    }

    /// Deletes a job.
    pub fn delete_job(&self, id: &str) -> Result<(), String> {
        let dir = self.job_dir(id);
        let _ = fs::remove_file(dir.join("meta.json"));
        fs::remove_dir_all(&dir).map_err(|e| io("cannot delete", &dir, e))
    }

    /// Every job not finished (queued, or running when the service stopped), oldest first:
    /// what a restart resumes.
    pub fn unfinished_jobs(&self) -> Vec<JobMeta> {
        let mut jobs: Vec<JobMeta> = fs::read_dir(self.root.join("jobs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|id| valid_id(id))
            .filter_map(|id| self.job(&id))
            .filter(|j| matches!(j.status, JobStatus::Queued | JobStatus::Running))
            .collect();
        jobs.sort_by(|a, b| (a.created_unix, &a.job_id).cmp(&(b.created_unix, &b.job_id)));
        jobs
    }

    /// Counts of jobs by status.
    pub fn job_counts(&self) -> [usize; 4] {
        let mut counts = [0; 4];
        for entry in fs::read_dir(self.root.join("jobs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(job) = entry.file_name().to_str().and_then(|id| self.job(id)) {
                counts[job.status as usize] += 1;
            }
        }
        counts
    }

    /// Removes uploads left half-received by a crash.
    pub fn clear_temp(&self) {
        let dir = self.root.join("tmp");
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let _ = fs::remove_file(entry.path());
        }
    }
}
