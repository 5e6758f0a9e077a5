#!/usr/bin/env bash
# Fuzzes every parser with cargo fuzz (libFuzzer + AddressSanitizer) for SECONDS each
# (default 45), starting from valid files written by `fuzz/src/bin/seeds.rs`, and prints the
# executions per target. A crash leaves its input in fuzz/artifacts/<target>/ and fails.
# cargo-fuzz's nightly flags run on the stable toolchain with RUSTC_BOOTSTRAP=1.
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-45}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(model network onnx secret_key parameters eval_keys batch logits record idx single_keys seeded bundle device_profile)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# As `cargo fuzz run` builds by default (optimized, with debug assertions and overflow checks):
# with `--release` (without them) every run rebuilt the whole crate first.
cargo fuzz build 2>&1 | tail -1
# The seed writer is one of the crate's binaries, built (instrumented) with the targets just
# above, into cargo fuzz's directory for the host: no second build of the library. Run from
# there only, so that a writer left by an older build can never write the seeds.
host=$(rustc -vV | sed -n "s/^host: //p")
"target/$host/release/seeds"
summary=()
for target in "${targets[@]}"; do
    log=$(mktemp)
    # -len_control=0: mutate whole seeds at once (batches are ~100 KB) instead of growing
    # inputs from a few bytes; -max_len above the largest seed.
    if ! cargo fuzz run "$target" -- -max_total_time="$seconds" -len_control=0 \
        -max_len=262144 -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        if grep -q 'failed to build fuzz script' "$log"; then
            echo "fuzz: building $target failed (not a crash; see above)" >&2
        else
            echo "fuzz: $target found a crash (input in fuzz/artifacts/$target/)" >&2
        fi
        exit 1
    fi
    runs=$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' || echo '?')
    summary+=("$target: $runs executions in ${seconds} s")
    rm -f "$log"
done
printf '%s\n' "${summary[@]}"
