//! The prediction service (`cryptonets serve`) and its client (`cryptonets client`): owners
//! register evaluation keys (never a secret key) and submit encrypted images; a bounded
//! queue feeds a bounded pool of workers; results are fetched, and keys and results
//! deleted, with the bearer token registration returned. The state (keys, jobs, uploads,
//! results) lives in a directory with atomic writes, so a restart after a crash finishes
//! every accepted job.

pub mod client;
pub mod models;
pub mod owner;
pub mod server;
pub mod store;
pub mod worker;

/// 32 lowercase hex digits from the operating system's generator: job and upload ids.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random generator");
    hex(&bytes)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}
