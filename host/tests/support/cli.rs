//! What the integration tests of the `cryptonets` binary share: running it from the
//! workspace, its output as text, temporary directories, and the MNIST data (required in
//! CI). Included with `#[path]` by each test file; each uses what it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cryptonets_host::mnist;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the binary from the workspace root.
pub fn cryptonets(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cryptonets"))
        .current_dir(workspace())
        .args(args)
        .output()
        .expect("run cryptonets")
}

/// Standard output then standard error.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh directory for one test of this process.
pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cryptonets-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// MNIST is fetched by scripts/fetch-mnist.sh (CI does); without it these tests say so, and
/// fail where CI is set.
pub fn data() -> Option<PathBuf> {
    let dir = workspace().join("data/mnist");
    match mnist::load(&dir, mnist::Split::Test) {
        Ok(_) => Some(dir),
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "MNIST is required in CI: {e}");
            eprintln!("skipping: {e}");
            None
        }
    }
}
