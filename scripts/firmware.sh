#!/usr/bin/env bash
# The owner's client on an emulated Cortex-M4: builds firmware/ for thumbv7em-none-eabihf
# (Debian's rustc with its core library sources, -Zbuild-std; rust-lld from the Rust
# toolchain, else Debian's ld.lld), runs it under qemu-system-arm -M mps2-an386 with
# semihosting, checks its upload byte for byte against the host's encryption of the same
# image under the same seeds, evaluates and decrypts it on the host, and prints one JSON
# object. Fails unless the upload is bit-exact and the prediction is the plaintext model's.
#   bash scripts/firmware.sh [TEST_IMAGE] [MODEL]   (default: the committed CryptoNets model)
#
# Instructions are counted with qemu's -icount shift=0 (one virtual nanosecond an
# instruction) and SysTick on the reference clock, 1 MHz on the mps2 boards: one tick is
# 1000 instructions (the core clock, 25 MHz, gives the same count at 40 a tick). The 64 MHz
# estimate assumes 1.3 cycles an instruction (a Cortex-M4's single-cycle ALU and
# multiplier, two-cycle loads, zero-wait-state memory).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-0}
model=${2:-models/cryptonets-mnist.cnmd}
work=target/firmware-run
mkdir -p "$work"
# The host binary: CRYPTONETS_BIN if set (CI passes the one its tests built), else built here.
cryptonets() {
    if [ -n "${CRYPTONETS_BIN:-}" ]; then
        "$CRYPTONETS_BIN" "$@"
    else
        cargo run --quiet --profile test -p cryptonets-host -- "$@"
    fi
}

cryptonets device profile --model "$model" --out "$work/profile.bin" >&2
cryptonets device input --image "$image" --out "$work/input.bin" >&2

linker=$(rustc --print sysroot 2>/dev/null)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld
[ -x "$linker" ] || linker=$(command -v ld.lld)
(
    cd firmware
    CRYPTONETS_FIRMWARE_PROFILE="$PWD/../$work/profile.bin" \
    CRYPTONETS_FIRMWARE_INPUT="$PWD/../$work/input.bin" \
    CARGO_TARGET_THUMBV7EM_NONE_EABIHF_LINKER="$linker" \
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        cargo build --quiet --release -Zbuild-std=core,alloc
)
elf=firmware/target/thumbv7em-none-eabihf/release/cryptonets-firmware

rm -f "$work/device-upload.bin"
line=$(cd "$work" && timeout 1200 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 \
    -nographic -monitor none -semihosting-config enable=on,target=native -icount shift=0 \
    -kernel "$OLDPWD/$elf" | tr -d '\r' | grep '^device ' || true)
[ -n "$line" ] || { echo "firmware: no measurements (it failed under qemu)" >&2; exit 1; }
echo "qemu: $line" >&2

check=$(cryptonets device check --model "$model" --input "$work/input.bin" --upload "$work/device-upload.bin" --json) || {
    echo "firmware: $check" >&2
    exit 1
}
sections=$(readelf -SW "$elf")
python3 - "$line" "$check" "$sections" "$model" <<'PY'
import json, sys
line, check, sections, model = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
fields = dict(kv.split("=") for kv in line.split()[1:])
size = {}
for row in sections.splitlines():
    parts = row.replace("[ ", "[").split()
    if len(parts) > 6 and parts[1].startswith("."):
        size[parts[1]] = int(parts[5], 16)
flash = sum(size.get(s, 0) for s in (".vector_table", ".text", ".rodata", ".data"))
static_ram = sum(size.get(s, 0) for s in (".data", ".bss", ".uninit"))
ticks = int(fields["total_ticks"])
instructions = ticks * 1000
# The encoding belongs to the encryption (the image becomes a plaintext there).
encrypt_instructions = (int(fields["encode_ticks"]) + int(fields["encrypt_ticks"])) * 1000
report = {
    "target": "thumbv7em-none-eabihf (Cortex-M4F), qemu-system-arm -M mps2-an386",
    "model": model,
    "n": int(fields["n"]),
    "compressed_upload": fields["compressed"] == "true",
    "channels": int(fields["channels"]),
    "upload_bytes": int(fields["upload_bytes"]),
    "ram_peak_bytes": static_ram + int(fields["heap_peak_bytes"]) + int(fields["stack_peak_bytes"]),
    "heap_peak_bytes": int(fields["heap_peak_bytes"]),
    "heap_bound_bytes": int(fields["heap_bound_bytes"]),
    "channel_heap_bytes": int(fields["channel_heap_bytes"]),
    "scratch_bytes": int(fields["scratch_bytes"]),
    "key_and_message_bytes": int(fields["key_and_message_bytes"]),
    "stack_peak_bytes": int(fields["stack_peak_bytes"]),
    "static_ram_bytes": static_ram,
    "flash_bytes": flash,
    "instructions": instructions,
    "encrypt_instructions": encrypt_instructions,
    "setup_instructions": int(fields["setup_ticks"]) * 1000,
    "encode_instructions": int(fields["encode_ticks"]) * 1000,
    "estimated_ms_at_64mhz": round(instructions * 1.3 / 64e6 * 1e3, 1),
    "estimated_encrypt_ms_at_64mhz": round(encrypt_instructions * 1.3 / 64e6 * 1e3, 1),
    "bit_exact": check["bit_exact"],
    "prediction_matches": check["prediction_matches"],
    "prediction": check["prediction"],
    "exact_logits": check["exact_logits"],
}
print(json.dumps(report))
sys.exit(0 if report["bit_exact"] and report["prediction_matches"] else 1)
PY
