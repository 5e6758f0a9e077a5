#!/usr/bin/env bash
# The main job on a fresh machine. Today the workspace holds the arithmetic foundation
# (Z_q, NTT backends), RNS-BFV and the trained integer model, so this builds the release
# binary, reports the CPU and backend, fetches and verifies MNIST, checks the committed model,
# and measures the NTT on every backend and the BFV operations at n = 8192. The encrypted
# MNIST pipeline (`cryptonets run`) takes its place as it lands.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release -q -p cryptonets-host
./target/release/cryptonets info
bash scripts/fetch-mnist.sh data/mnist >/dev/null
./target/release/cryptonets mnist check --data data/mnist
./target/release/cryptonets model info models/cryptonets-mnist.cnmd
./target/release/cryptonets bench ntt --n 4096,8192,16384
./target/release/cryptonets bench he
