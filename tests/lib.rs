//! Shared helpers of the integration tests: locating and verifying the known-answer files.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The workspace's `vectors/` directory.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("vectors")
}

/// The files listed in `vectors/SHA256SUMS` under `prefix`, each read and checked against
/// its recorded digest (a mismatch panics: the vectors were altered or truncated).
pub fn verified_vectors(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let dir = vectors_dir();
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("vectors/SHA256SUMS");
    let files: Vec<(String, Vec<u8>)> = sums
        .lines()
        .filter_map(|line| line.split_once("  "))
        .filter(|(_, name)| name.starts_with(prefix))
        .map(|(digest, name)| {
            let data = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let actual = Sha256::digest(&data);
            let actual: String = actual.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(
                actual, digest,
                "{name} does not match its SHA-256 in vectors/SHA256SUMS"
            );
            (name.to_string(), data)
        })
        .collect();
    assert!(
        !files.is_empty(),
        "no vectors under {prefix} in vectors/SHA256SUMS"
    );
    files
}
