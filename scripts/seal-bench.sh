#!/usr/bin/env bash
# Side by side on one 8192-image batch of the CryptoNets model: our evaluator
# (`cryptonets bench batch`, 2 threads) and Microsoft SEAL 4.1 on the same network
# (benches/seal/cryptonets_seal.cpp, 2 OpenMP threads), built from the SEAL source that the
# PyPI sdist pyfhel==3.5.0 bundles (cmake; zlib, zstd, GSL and Intel HEXL off). Run by hand,
# not in CI (the SEAL build takes about 5 minutes, a run about 40 s):
#   bash scripts/seal-bench.sh [MODEL]
# Prints one JSON line: both evaluation times, measured ours / SEAL / ours in the same
# minutes, SEAL's time over the mean of ours, and one square + relinearization of a fresh
# input ciphertext in each (one thread, each library at its network's top level). Needs
# cmake, g++ and pip.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-models/cryptonets-mnist.cnmd}"
work="${SEAL_WORK:-target/seal}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
for tool in cmake g++ pip; do
    command -v "$tool" >/dev/null || { echo "seal-bench: $tool is needed (apt-get install cmake g++ python3-pip)" >&2; exit 1; }
done
data="$(bash scripts/fetch-mnist.sh)"

if [ ! -f "$work/install/lib/libseal-4.1.a" ]; then
    echo "seal-bench: building SEAL from the pyfhel 3.5.0 sdist in $work" >&2
    (cd "$work" && pip download --quiet --no-deps --no-binary pyfhel pyfhel==3.5.0 -d . && tar xzf pyfhel-3.5.0.tar.gz)
    cmake -S "$work/pyfhel-3.5.0/Pyfhel/backend/SEAL" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
        -DSEAL_USE_MSGSL=OFF -DSEAL_USE_ZLIB=OFF -DSEAL_USE_ZSTD=OFF -DSEAL_USE_INTEL_HEXL=OFF \
        -DSEAL_BUILD_DEPS=OFF -DCMAKE_INSTALL_PREFIX="$work/install" >"$work/cmake.log"
    cmake --build "$work/build" -j"$(nproc)" >"$work/build.log"
    cmake --install "$work/build" >>"$work/build.log"
fi
g++ -O3 -march=native -fopenmp -std=c++17 -I "$work/install/include/SEAL-4.1" \
    benches/seal/cryptonets_seal.cpp "$work/install/lib/libseal-4.1.a" -o "$work/cryptonets_seal"
cargo build --release -q -p cryptonets-host
primes="$(./target/release/cryptonets model info "$model" | sed -n 's/^plaintext CRT primes.*(\[\(.*\)\]).*/\1/p' | tr -d ,)"
[ -n "$primes" ] || { echo "seal-bench: no CRT primes in 'cryptonets model info $model'" >&2; exit 1; }

ours() { ./target/release/cryptonets bench batch --model "$model" --samples 3 --json; }
first="$(ours)"
seal="$(OMP_NUM_THREADS=2 "$work/cryptonets_seal" "$model" "$data" $primes)"
second="$(ours)"
python3 - "$first" "$seal" "$second" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" <<'PY'
import json, sys
first, seal, second = (json.loads(a) for a in sys.argv[1:4])
ours = [first["eval_seconds_median"], second["eval_seconds_median"]]
mean = sum(ours) / 2
print(json.dumps({
    "cpu": sys.argv[4].strip(),
    "ours_backend": first["backend"],
    "ours_threads": first["threads"],
    "ours_eval_seconds": ours,
    "seal_threads": seal["threads"],
    "seal_eval_seconds": seal["eval_seconds"],
    "seal_exact": seal["exact"],
    "seal_over_ours": round(seal["eval_seconds"] / mean, 2),
    "ours_square_relinearize_ms": first["square_relinearize_us"] / 1e3,
    "seal_square_relinearize_ms": seal["square_relinearize_ms"],
    "square_relinearize_seal_over_ours": round(
        seal["square_relinearize_ms"] * 1e3 / first["square_relinearize_us"], 2),
}))
PY
