//! Puts memory.x where cortex-m-rt's link.x finds it, and rebuilds when the built-in input
//! changes.
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::copy("memory.x", out.join("memory.x")).expect("memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=CRYPTONETS_FIRMWARE_INPUT");
    if let Some(input) = std::env::var_os("CRYPTONETS_FIRMWARE_INPUT") {
        println!("cargo:rerun-if-changed={}", PathBuf::from(input).display());
    }
}
