"""Writes cryptonets_unnormalized.legacy.onnx: PyTorch's export of cryptonets_normalized with
its first operations, (x - 0.1307) / 0.3081, removed, as a model trained on normalized
pixels but exported without the normalization looks. The importer takes the normalization
from --input-mean / --input-std instead (train/src/onnx/tests.rs).

    python3 -m venv /tmp/ov && /tmp/ov/bin/pip install onnx
    /tmp/ov/bin/python train/pytorch/strip_normalization.py
"""

from pathlib import Path

import onnx

here = Path(__file__).resolve().parent.parent / "fixtures" / "onnx"
model = onnx.load(str(here / "cryptonets_normalized.legacy.onnx"))
graph = model.graph
ops = [n.op_type for n in graph.node[:5]]
assert ops == ["Constant", "Sub", "Constant", "Div", "Conv"], ops
image = graph.input[0].name
normalized = graph.node[3].output[0]
del graph.node[:4]
for node in graph.node:
    node.input[:] = [image if name == normalized else name for name in node.input]
onnx.checker.check_model(model)
onnx.save(model, str(here / "cryptonets_unnormalized.legacy.onnx"))
print("wrote", here / "cryptonets_unnormalized.legacy.onnx")
