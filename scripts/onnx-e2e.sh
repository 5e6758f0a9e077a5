#!/usr/bin/env bash
# The issue's done-when for every committed PyTorch export (train/fixtures/onnx): import with
# cryptonets-train, print the plan, run 256 MNIST test images encrypted, and print one line
# per export: PyTorch's float accuracy on those images, ours encrypted, agreement, timings;
# then 16 images one at a time (`run --mode single`) and a line for that mode.
# Run by hand (release build, a few minutes per export): bash scripts/onnx-e2e.sh [NAME...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-mnist.sh >/dev/null
cargo build --release -q -p cryptonets-train -p cryptonets-host
out="${OUT:-target/onnx-e2e}"
mkdir -p "$out"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(cryptonets cryptonets_bn cryptonets_avgpool cryptonets_normalized two_conv_bn quadratic mlp rgb32)
for name in "${names[@]}"; do
    for exporter in legacy dynamo; do
        tag="$name.$exporter"
        ./target/release/cryptonets-train --onnx "train/fixtures/onnx/$tag.onnx" --output "$out/$tag.cnmd" >"$out/$tag.train.json" 2>"$out/$tag.train.log"
        ./target/release/cryptonets plan "$out/$tag.cnmd" --images 256 --json >"$out/$tag.plan.json"
        ./target/release/cryptonets run --model "$out/$tag.cnmd" --images 256 --json >"$out/$tag.run.json"
        ./target/release/cryptonets run --mode single --model "$out/$tag.cnmd" --images 16 --json >"$out/$tag.single.json"
        python3 - "$name" "$tag" "$out" <<'PY'
import json, sys
name, tag, out = sys.argv[1:]
exp = json.load(open("train/fixtures/onnx/expected.json"))[name]
run = json.load(open(f"{out}/{tag}.run.json"))
plan = json.load(open(f"{out}/{tag}.plan.json"))
torch = exp.get("float_accuracy_first_256")
acc = run["accuracy"]
ok = run["agreement"] == 1.0 and run["exact_logits"] == 1.0 and (torch is None or acc >= torch - 0.005)
print(f"{tag:32} torch {torch if torch is None else round(torch, 4)!s:7} encrypted {acc if acc is None else round(acc, 4)!s:7} "
      f"agreement {run['agreement']} exact {run['exact_logits']} n {run['n']} "
      f"crt {len(run['plaintext_primes'])} bits {plan['plaintext_bits']} eval {run['eval_seconds']:.1f} s "
      f"(planned {run['estimated_eval_seconds_per_batch']:.1f}) rss {run['peak_rss_bytes'] / 2**30:.2f} GiB {'ok' if ok else 'FAIL'}")
one = json.load(open(f"{out}/{tag}.single.json"))
ok = one["agreement"] == 1.0 and one["exact_logits"] == 1.0
print(f"{tag:32} single: agreement {one['agreement']} exact {one['exact_logits']} n {one['n']} "
      f"crt {len(one['plaintext_primes'])} latency {one['latency_seconds_per_image']:.2f} s "
      f"upload {one['upload_bytes_per_image'] / 1024:.0f} KiB keys {one['eval_key_bytes'] / 2**20:.1f} MiB "
      f"steps {','.join(one['steps'])} {'ok' if ok else 'FAIL'}")
PY
    done
done
