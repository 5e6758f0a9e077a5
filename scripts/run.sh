#!/usr/bin/env bash
# The main job on a fresh machine. Today the workspace holds the arithmetic foundation
# (Z_q, NTT backends) and RNS-BFV, so this builds the release binary, reports the CPU and
# backend, and measures the NTT on every backend and the BFV operations at n = 8192. The
# encrypted MNIST pipeline takes its place as it lands.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release -q -p cryptonets-host
./target/release/cryptonets info
./target/release/cryptonets bench ntt --n 4096,8192,16384
./target/release/cryptonets bench he
