#!/usr/bin/env python3
"""Builds the wide benchmark MLP, 784-1024-1024-10 with ReLU (random weights, fixed seed), as ONNX.

Writes benchmarks/models/wide_mlp/{model.onnx, input.json, samples.json} in the layout of the shared
models (samples with the float model's outputs, computed here in float64). Needs `onnx` and `numpy`
(the benchmark harness installs them into its virtual environment).

    python3 benchmarks/wide_mlp.py [--out DIR] [--widths 784,1024,1024,10] [--seed 7]
"""
import argparse
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(widths, seed):
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "input"
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        # scaled so that activations stay of order one through the layers
        w = rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(n_out, n_in)).astype(np.float32)
        b = rng.normal(0.0, 0.05, size=(n_out,)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "output" if i == len(widths) - 2 else f"h{i}"
        gemm_out = out if out == "output" else f"g{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [gemm_out], name=f"/fc{i}/Gemm", transB=1))
        if out != "output":
            nodes.append(helper.make_node("Relu", [gemm_out], [out], name=f"/relu{i}/Relu"))
        prev = out
    graph = helper.make_graph(
        nodes,
        "wide_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, widths[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, widths[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def forward(model, x):
    params = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    h = x.astype(np.float64)
    for node in model.graph.node:
        if node.op_type == "Gemm":
            h = h @ params[node.input[1]].T + params[node.input[2]]
        elif node.op_type == "Relu":
            h = np.maximum(h, 0.0)
    return h


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "models", "wide_mlp"))
    ap.add_argument("--widths", default="784,1024,1024,10")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--samples", type=int, default=16)
    a = ap.parse_args()
    widths = [int(w) for w in a.widths.split(",")]
    model = build(widths, a.seed)
    os.makedirs(a.out, exist_ok=True)
    onnx.save(model, os.path.join(a.out, "model.onnx"))
    rng = np.random.default_rng(a.seed + 1)
    xs = rng.uniform(0.0, 1.0, size=(a.samples, widths[0]))
    with open(os.path.join(a.out, "input.json"), "w") as f:
        json.dump({"input_data": [xs[0].tolist()]}, f)
    with open(os.path.join(a.out, "samples.json"), "w") as f:
        json.dump({"inputs": [[x.tolist()] for x in xs],
                   "float_outputs": [forward(model, x[None, :])[0].tolist() for x in xs]}, f)
    print(f"wrote {a.out}: widths {widths}, {sum(i * o + o for i, o in zip(widths[:-1], widths[1:]))} parameters")


if __name__ == "__main__":
    main()
