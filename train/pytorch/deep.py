#!/usr/bin/env python3
"""Deeper polynomial CNNs for MNIST (CryptoDL's row): training, a small architecture search
scored on the validation split by accuracy and by the planner's encrypted cost, and the
committed model.

Run by hand (CI does not install torch; a release build of the workspace is used for the
integer import and the plans):

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch onnx onnxscript
    cargo build --release -p cryptonets-train -p cryptonets-host
    # the search: every candidate trained, imported, planned; one JSON line each
    /tmp/tv/bin/python train/pytorch/deep.py search --out target/deep-search
    # the committed model (the search's choice), retrained from its seed
    /tmp/tv/bin/python train/pytorch/deep.py final --out models

Data: the first 55,000 training images train, the last 5,000 are the validation split on
which every choice is made (epochs, architecture, the integer precision that
`cryptonets-train --onnx` picks). The search never reads the test set; `final` lets
`cryptonets-train` score the chosen model on it once.

Activations (`--act` per candidate):
- `square`: x^2 (CryptoNets);
- `quad`: a x^2 + b x + c with trainable scalars, started at the least-squares degree-2 fit
  of ReLU on [-R, R] (CryptoDL's trainable variant);
- `relu2`, `relu3`: CryptoDL's fixed approximations, the least-squares fits of ReLU of degree
  2 and 3 on [-R, R], R the observed range of the pre-activations (BatchNorm keeps them near
  unit variance; R = 4 covers more than 99.9% of them).
Stabilization: BatchNorm before every activation (folded into the layer before it by the
importer), gradient-norm clipping, a penalty on pre-activations outside [-R, R] (where the
polynomial stops approximating anything and squares blow up), random shifts and small
rotations of the training images.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import find, load_idx  # noqa: E402  (the one IDX reader of these scripts)

RANGE = 4.0
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def relu_fit(degree, r=RANGE):
    """Least-squares polynomial fit of ReLU on [-r, r] (uniform weight), lowest degree first."""
    x = np.linspace(-r, r, 4001)
    return [float(c) for c in np.polynomial.polynomial.polyfit(x, np.maximum(x, 0), degree)]


class Activation(nn.Module):
    """A polynomial activation that also records how far its inputs leave [-R, R]."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        if kind == "square":
            coefficients, trainable = [0.0, 0.0, 1.0], False
        elif kind == "quad":
            coefficients, trainable = relu_fit(2), True
        elif kind in ("relu2", "relu3"):
            coefficients, trainable = relu_fit(int(kind[-1])), False
        else:
            raise ValueError(kind)
        tensor = torch.tensor(coefficients, dtype=torch.float32)
        if trainable:
            self.coefficients = nn.Parameter(tensor)
        else:
            self.register_buffer("coefficients", tensor)
        self.penalty = torch.zeros(())

    def forward(self, x):
        if self.training:
            self.penalty = F.relu(x.abs() - RANGE).pow(2).mean()
        c = self.coefficients
        if self.kind == "square":
            return x * x
        # Horner's form; every constant is a scalar, which the importer composes exactly.
        y = c[-1]
        for k in range(len(c) - 2, -1, -1):
            y = y * x + c[k]
        return y


# The candidates: (conv1 channels, conv2 channels or 0, conv2 kernel, hidden dense width or 0,
# activation, epochs). conv1 is 5x5, stride 2, padding 1 (28 -> 13) as in CryptoNets; conv2
# has stride 2 and "same" padding (13 -> 7).
CANDIDATES = {
    "cn5_h100": (5, 0, 0, 100, "square", 30),
    "c8_c16k3": (8, 16, 3, 0, "square", 30),
    "c16_c32k3": (16, 32, 3, 0, "square", 30),
    "c16_c32k5": (16, 32, 5, 0, "square", 30),
    "c32_c32k3": (32, 32, 3, 0, "square", 30),
    "c32_c64k3": (32, 64, 3, 0, "square", 30),
    "c16_c32k3_quad": (16, 32, 3, 0, "quad", 30),
    "c16_c32k3_relu2": (16, 32, 3, 0, "relu2", 30),
    "c16_c32k3_relu3": (16, 32, 3, 0, "relu3", 30),
    "c8_c16k3_h64": (8, 16, 3, 64, "square", 30),
    # Second round, from the first's front: longer training of the best trade-offs.
    "c32_c32k3_e60": (32, 32, 3, 0, "square", 60),
    "c16_c32k5_e60": (16, 32, 5, 0, "square", 60),
    "c32_c32k5_e60": (32, 32, 5, 0, "square", 60),
}
FINAL = "c16_c32k5_e60"


def layers_of(spec):
    """A candidate as an architecture file's layer list (the format of models/cryptonets.json
    and train/src/architecture.rs, plus the activations relu2 and relu3 of this script)."""
    c1, c2, k2, hidden, act, _ = spec
    act = "quadratic" if act == "quad" else act
    layers = [{"conv": {"out": c1, "kernel": 5, "stride": 2, "padding": 1}}, "batch_norm", act]
    if c2:
        layers += [{"conv": {"out": c2, "kernel": k2, "stride": 2, "padding": k2 // 2}},
                   "batch_norm", act]
    layers.append("flatten")
    if hidden:
        layers += [{"dense": {"out": hidden}}, "batch_norm", act]
    layers.append({"dense": {"out": 10}})
    return layers


def build(layers, shape=(1, 28, 28)):
    """The PyTorch network of an architecture file's layer list."""
    modules = []
    c, h, w = shape
    for layer in layers:
        if isinstance(layer, dict) and "conv" in layer:
            k = layer["conv"]
            modules.append(nn.Conv2d(c, k["out"], k["kernel"], stride=k["stride"],
                                     padding=k["padding"]))
            c = k["out"]
            h = (h + 2 * k["padding"] - k["kernel"]) // k["stride"] + 1
            w = (w + 2 * k["padding"] - k["kernel"]) // k["stride"] + 1
        elif isinstance(layer, dict) and "avg_pool" in layer:
            k = layer["avg_pool"]
            modules.append(nn.AvgPool2d(k["kernel"], stride=k["stride"], padding=k["padding"]))
            h = (h + 2 * k["padding"] - k["kernel"]) // k["stride"] + 1
            w = (w + 2 * k["padding"] - k["kernel"]) // k["stride"] + 1
        elif isinstance(layer, dict) and "dense" in layer:
            modules.append(nn.Linear(c * h * w, layer["dense"]["out"]))
            c, h, w = layer["dense"]["out"], 1, 1
        elif layer == "flatten":
            modules.append(nn.Flatten())
        elif layer == "batch_norm":
            modules.append(nn.BatchNorm2d(c) if h * w > 1 or not isinstance(
                modules[-1], nn.Linear) else nn.BatchNorm1d(c))
        elif layer in ("square", "relu2", "relu3"):
            modules.append(Activation(layer))
        elif layer == "quadratic":
            modules.append(Activation("quad"))
        else:
            raise ValueError(f"unknown layer {layer!r}")
    return nn.Sequential(*modules)


def augment(images, generator):
    """Random shifts of up to 2 pixels and rotations of up to 10 degrees (bilinear)."""
    b = images.shape[0]
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(10)
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * (2 / 14)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, images.shape, align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def accuracy(model, images, labels):
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(images[i:i + 2000]).argmax(1) == labels[i:i + 2000]).sum())
                      for i in range(0, images.shape[0], 2000))
    return correct / images.shape[0]


def train(model, epochs, seed, data, log):
    train_x, train_y, val_x, val_y = data
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(train_x.shape[0] / 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps,
                                                   pct_start=0.2)
    activations = [m for m in model.modules() if isinstance(m, Activation)]
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(train_x.shape[0], generator=generator)
        start = time.time()
        for i in range(0, train_x.shape[0], 128):
            idx = order[i:i + 128]
            x = augment(train_x[idx], generator)
            loss = F.cross_entropy(model(x), train_y[idx])
            loss = loss + 0.1 * sum(a.penalty for a in activations)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        acc = accuracy(model, val_x, val_y)
        history.append(acc)
        log(f"  epoch {epoch + 1}/{epochs}: validation {acc:.4f} ({time.time() - start:.0f} s)")
    model.eval()
    return history


def outside_range(model, data):
    """Per activation, the fraction of its validation inputs outside [-R, R], where a fitted
    polynomial stops approximating ReLU (the range the fits and the penalty assume)."""
    val_x = data[2]
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(
        float((i[0].abs() > RANGE).float().mean()))) for m in model.modules()
        if isinstance(m, Activation)]
    model.eval()
    with torch.no_grad():
        model(val_x[:1000])
    for h in hooks:
        h.remove()
    return seen


def load(data_dir):
    train_x = torch.tensor(load_idx(find(data_dir, "train-images")), dtype=torch.float32)
    train_y = torch.tensor(load_idx(find(data_dir, "train-labels")), dtype=torch.long)
    train_x = (train_x / 255.0).unsqueeze(1)
    # The last 5,000 training images: cryptonets-train's validation split (--validation 5000).
    return train_x[:-5000], train_y[:-5000], train_x[-5000:], train_y[-5000:]


def export(model, path):
    torch.onnx.export(model, (torch.rand(2, 1, 28, 28),), path, dynamo=False,
                      input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def tool(name):
    return os.path.join(ROOT, "target", "release", name)


def import_and_plan(onnx_path, cnmd_path, data_dir, validation_only):
    command = [tool("cryptonets-train"), "--onnx", onnx_path, "--output", cnmd_path,
               "--data", data_dir]
    if validation_only:
        command.append("--validation-only")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"import_error": done.stderr.strip().splitlines()[-1:]}, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    plan = subprocess.run([tool("cryptonets"), "plan", cnmd_path, "--json"], capture_output=True,
                          text=True, check=True)
    plan = json.loads(plan.stdout)
    report["plan"] = plan
    return report, done.stderr


def measure(cnmd):
    """One encrypted batch (64 MNIST test images: a batch costs the same at any fill, and the
    first test images are all the search reads of the test set, for agreement, not accuracy)."""
    done = subprocess.run([tool("cryptonets"), "run", "--model", cnmd, "--images", "64",
                           "--json"], capture_output=True, text=True, check=True)
    run = json.loads(done.stdout)
    return {k: run[k] for k in ("eval_seconds", "predictions_per_hour", "agreement",
                                "exact_logits", "peak_rss_bytes", "n", "plaintext_primes")}


def pareto(rows):
    """Rows not dominated in (validation accuracy, predictions per hour)."""
    front = set()
    for a in rows:
        if not any(b is not a and b["acc"] >= a["acc"] and b["rate"] >= a["rate"]
                   and (b["acc"] > a["acc"] or b["rate"] > a["rate"]) for b in rows):
            front.add(a["name"])
    return front


def describe(layers):
    """An architecture's layers in a few words: conv 5x5/2 32, square, dense 10..."""
    words = []
    for layer in layers:
        if isinstance(layer, dict):
            (kind, k), = layer.items()
            if kind == "dense":
                words.append(f"dense {k['out']}")
            else:
                words.append(f"{kind} {k['kernel']}x{k['kernel']}/{k['stride']}"
                             + (f" {k['out']}" if "out" in k else ""))
        elif layer not in ("batch_norm", "flatten"):
            words.append(layer)
    return ", ".join(words)


def table(out):
    """The search's Markdown table: every candidate measured encrypted (one batch on this
    machine), the Pareto front of integer validation accuracy against predictions per hour
    marked; the measurements are cached in measured.json."""
    cache_path = os.path.join(out, "measured.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    rows = []
    for line in open(os.path.join(out, "search.jsonl")):
        r = json.loads(line)
        if "plan" not in r:
            continue
        if r["name"] not in cache:
            cache[r["name"]] = measure(r["output"])
            json.dump(cache, open(cache_path, "w"), indent=1)
        m = cache[r["name"]]
        # The plan again, with this build's cost model.
        plan = json.loads(subprocess.run([tool("cryptonets"), "plan", r["output"], "--json"],
                                         capture_output=True, text=True, check=True).stdout)
        layers = r["layers"] if "layers" in r else layers_of(r["spec"])
        epochs = r.get("epochs") or r["spec"][-1]
        rows.append({
            "name": r["name"], "layers": describe(layers), "epochs": epochs, "acc": r["validation_integer"],
            "float": r["validation_float"], "bits": r["plaintext_bits"],
            "channels": len(m["plaintext_primes"]), "n": m["n"], "seconds": m["eval_seconds"],
            "rate": m["predictions_per_hour"], "upload": plan["upload_bytes_per_image"],
            "planned": plan["estimated_seconds_per_batch"],
            "exact": m["agreement"] == 1.0 and m["exact_logits"] == 1.0,
        })
    front = pareto(rows)
    print("| candidate | layers (BatchNorm before each activation) | epochs | validation accuracy, integer (float) | plaintext bits | CRT "
          "channels | n | seconds a batch (planned) | predictions/hour | upload/image | Pareto |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: -r["rate"]):
        print(f"| {r['name']} | {r['layers']} | {r['epochs']} | {r['acc']:.4f} ({r['float']:.4f}) | {r['bits']} | "
              f"{r['channels']} | {r['n']} | {r['seconds']:.1f} ({r['planned']:.1f}) | "
              f"{r['rate'] / 1e6:.2f} M | "
              f"{r['upload'] / 1000:.1f} KB | {'yes' if r['name'] in front else ''}"
              f"{'' if r['exact'] else ' NOT EXACT'} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["search", "final", "table"])
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "mnist"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--architecture", default=os.path.join(ROOT, "models", "mnist-deep.json"),
                    help="final: the architecture file of the committed model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    if args.mode == "table":
        return table(args.out)
    data = load(args.data)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    if args.mode == "final":
        # The committed model: the architecture file, trained with the seeds and epochs the
        # search used for it (FINAL), scored once on the test set by cryptonets-train.
        architecture = json.load(open(args.architecture))
        seed = list(CANDIDATES).index(FINAL)
        jobs = [("mnist-deep", architecture["layers"], CANDIDATES[FINAL][-1], seed)]
    else:
        jobs = [(name, layers_of(spec), spec[-1], seed)
                for seed, (name, spec) in enumerate(CANDIDATES.items())
                if name in (args.only or CANDIDATES)]
    for stem, layers, epochs, seed in jobs:
        log(f"{stem}: {json.dumps(layers)}, {epochs} epochs")
        torch.manual_seed(3000 + seed)
        model = build(layers)
        history = train(model, epochs, 4000 + seed, data, log)
        onnx_path = os.path.join(args.out, f"{stem}.onnx")
        export(model, onnx_path)
        report, stderr = import_and_plan(onnx_path, os.path.join(args.out, f"{stem}.cnmd"),
                                         args.data, validation_only=args.mode == "search")
        log(stderr.strip())
        report.update(name=stem, layers=layers, epochs=epochs, float_validation=history[-1],
                      validation_by_epoch=history, outside_range=outside_range(model, data))
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
