#!/usr/bin/env python3
"""Trains small polynomial networks in PyTorch and exports each with both ONNX exporters.

These are the committed fixtures of the ONNX importer (`train/fixtures/onnx/`): files written
by PyTorch itself, not by this project, so that the importer is tested on what a user brings.
Run by hand (CI does not install torch):

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch onnx onnxscript
    /tmp/tv/bin/python train/pytorch/make_fixtures.py --data data/mnist --out train/fixtures/onnx

Networks are trained on the first 55,000 training images: the last 5,000 are the validation
split on which `cryptonets-train --onnx` chooses the precision. For each network NAME it writes NAME.dynamo.onnx (+ NAME.dynamo.onnx.data: the default
exporter keeps the weights in an external file) and NAME.legacy.onnx (`dynamo=False`, weights
inline), and records in expected.json: PyTorch's float accuracy on the first 256 MNIST test
images and on all 10,000, and PyTorch's logits on four synthetic probe images that the Rust
tests regenerate (pixel (c, y, x) of probe k is ((k * 7919 + c * 1031 + y * 131 + x * 17) % 256) / 255).
"""
import argparse
import gzip
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(data_dir, stem):
    for name in os.listdir(data_dir):
        if name.startswith(stem):
            return os.path.join(data_dir, name)
    raise FileNotFoundError(stem)


class Square(nn.Module):
    def forward(self, x):
        return x * x


class PowSquare(nn.Module):
    """x ** 2: exported as Pow with a constant exponent."""

    def forward(self, x):
        return torch.pow(x, 2)


class Quadratic(nn.Module):
    """a x^2 + b x + c with trainable scalars (CryptoDL-style), started near x^2 + x/2."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))
        self.b = nn.Parameter(torch.tensor(0.5))
        self.c = nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        return self.a * x * x + self.b * x + self.c


class Normalize(nn.Module):
    def forward(self, x):
        return (x - 0.1307) / 0.3081


class FlattenView(nn.Module):
    """x.view(x.size(0), -1): the shape is computed in the graph (Shape, Gather, Concat...)."""

    def forward(self, x):
        return x.view(x.size(0), -1)


class MatMulLinear(nn.Module):
    """x @ W + b written out: exported as MatMul then Add."""

    def __init__(self, inputs, outputs):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(inputs, outputs) / inputs ** 0.5)
        self.bias = nn.Parameter(torch.zeros(outputs))

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.bias


def cryptonets_conv():
    return nn.Conv2d(1, 5, 5, stride=2, padding=1)


def networks():
    return {
        "cryptonets": lambda: nn.Sequential(
            cryptonets_conv(), Square(), nn.Flatten(), nn.Linear(845, 100), Square(),
            nn.Linear(100, 10)),
        "cryptonets_bn": lambda: nn.Sequential(
            cryptonets_conv(), nn.BatchNorm2d(5), Square(), nn.Flatten(), nn.Linear(845, 100),
            nn.BatchNorm1d(100), Square(), nn.Linear(100, 10)),
        "cryptonets_avgpool": lambda: nn.Sequential(
            cryptonets_conv(), Square(), nn.AvgPool2d(3, stride=1, padding=1), nn.Flatten(),
            nn.Linear(845, 100), Square(), nn.Linear(100, 10)),
        "cryptonets_normalized": lambda: nn.Sequential(
            Normalize(), cryptonets_conv(), Square(), nn.Flatten(), nn.Linear(845, 100),
            Square(), nn.Dropout(0.1), nn.Linear(100, 10)),
        "two_conv_bn": lambda: nn.Sequential(
            nn.Conv2d(1, 4, 5, stride=2, padding=1), nn.BatchNorm2d(4), Square(),
            nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), PowSquare(),
            nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), FlattenView(),
            nn.Linear(8 * 4 * 4, 10)),
        "quadratic": lambda: nn.Sequential(
            cryptonets_conv(), Quadratic(), nn.Flatten(), nn.Linear(845, 100), Quadratic(),
            nn.Linear(100, 10)),
        "mlp": lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(784, 128), Square(), MatMulLinear(128, 64), Square(),
            nn.Linear(64, 10)),
        "rgb32": lambda: nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), Square(),
            nn.Conv2d(6, 8, 3, stride=2, padding=(1, 0)), PowSquare(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(8, 10)),
    }


def refused():
    """Networks the importer must refuse, naming the operator: untrained, legacy export only."""
    return {
        "refused_relu": lambda: nn.Sequential(
            nn.Conv2d(1, 2, 5, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(2 * 13 * 13, 10)),
        "refused_maxpool": lambda: nn.Sequential(
            nn.Conv2d(1, 2, 5, stride=2, padding=1), Square(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(2 * 6 * 6, 10)),
    }


def probes(shape):
    c, h, w = shape
    k, ci, y, x = np.meshgrid(np.arange(4), np.arange(c), np.arange(h), np.arange(w),
                              indexing="ij")
    return torch.tensor(((k * 7919 + ci * 1031 + y * 131 + x * 17) % 256) / 255.0,
                        dtype=torch.float32)


def accuracy(model, images, labels):
    with torch.no_grad():
        pred = model(images).argmax(dim=1)
    return float((pred == labels).float().mean())


def train(model, images, labels, epochs, seed):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = images.shape[0]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, epochs * 2 // 3), gamma=0.1)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n)
        for start in range(0, n, 64):
            idx = order[start:start + 64]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        sched.step()
    model.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--out", default="train/fixtures/onnx")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    train_x = torch.tensor(load_idx(find(args.data, "train-images")), dtype=torch.float32)
    train_y = torch.tensor(load_idx(find(args.data, "train-labels")), dtype=torch.long)
    test_x = torch.tensor(load_idx(find(args.data, "t10k-images")), dtype=torch.float32)
    test_y = torch.tensor(load_idx(find(args.data, "t10k-labels")), dtype=torch.long)
    # The last 5,000 training images are held out, as cryptonets-train's validation split
    # (--validation 5000): it chooses the integer precision on images the network never saw.
    train_x, train_y = train_x[:-5000], train_y[:-5000]
    train_x = (train_x / 255.0).unsqueeze(1)
    test_x = (test_x / 255.0).unsqueeze(1)
    expected_path = os.path.join(args.out, "expected.json")
    expected = json.load(open(expected_path)) if os.path.exists(expected_path) else {}
    for name, make in refused().items():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(7)
        model = make().eval()
        torch.onnx.export(model, (torch.rand(1, 1, 28, 28),),
                          os.path.join(args.out, f"{name}.legacy.onnx"), dynamo=False,
                          input_names=["input"], output_names=["logits"])
    for seed, (name, make) in enumerate(networks().items()):
        if args.only and name not in args.only:
            continue
        torch.manual_seed(1000 + seed)
        model = make()
        shape = (3, 32, 32) if name == "rgb32" else (1, 28, 28)
        if name == "rgb32":
            # No colour data set ships here: random weights and statistics, exactness only.
            with torch.no_grad():
                model(torch.rand(256, *shape))  # BatchNorm running statistics
            model.train()
            with torch.no_grad():
                for _ in range(10):
                    model(torch.rand(64, *shape))
            model.eval()
            entry = {"input": list(shape)}
        else:
            train(model, train_x, train_y, args.epochs, 2000 + seed)
            entry = {
                "input": list(shape),
                "float_accuracy_first_256": accuracy(model, test_x[:256], test_y[:256]),
                "float_accuracy_test": accuracy(model, test_x, test_y),
            }
        probe = probes(shape)
        with torch.no_grad():
            entry["probe_logits"] = model(probe).tolist()
        example = (torch.rand(2, *shape),)
        legacy = os.path.join(args.out, f"{name}.legacy.onnx")
        # Without constant folding the legacy exporter keeps BatchNormalization nodes and
        # computes shapes in the graph (Shape, Gather, Unsqueeze, Concat).
        fold = name not in ("cryptonets_bn", "two_conv_bn", "rgb32")
        torch.onnx.export(model, example, legacy, dynamo=False, input_names=["input"],
                          do_constant_folding=fold,
                          output_names=["logits"], opset_version=13 + seed % 5,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        dynamo = os.path.join(args.out, f"{name}.dynamo.onnx")
        program = torch.onnx.export(model, example, dynamo, dynamo=True,
                                    input_names=["input"], output_names=["logits"],
                                    external_data=True)
        entry["legacy_opset"] = 13 + seed % 5
        entry["torch"] = torch.__version__
        expected[name] = entry
        print(name, {k: v for k, v in entry.items() if k != "probe_logits"}, flush=True)
    with open(expected_path, "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
