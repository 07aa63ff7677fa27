#!/usr/bin/env python3
"""Builds a small GPT-style decoder language model as ONNX, the way PyTorch exports one.

Token embeddings (a Gather by the integer input) plus learned position embeddings, BLOCKS
pre-LayerNorm decoder blocks (causal multi-head softmax attention, GELU MLP, residuals), a final
LayerNorm and the language-model head on the last position: one forward pass over a prompt of
SEQ token ids gives the next-token logits (the model's output). Weights are random with a fixed
seed, scaled like a freshly initialised GPT-2 (normal, std 0.02 for embeddings, 1/sqrt(fan-in)
for projections), so activations stay of order one.

Writes benchmarks/models/gpt_lm/{model.onnx, input.json, samples.json} in the layout of the
shared models; the samples' float outputs come from ONNX's reference evaluator. Needs `onnx` and
`numpy`.

    python3 benchmarks/gpt_lm.py [--out DIR] [--vocab 256] [--seq 16] [--width 64] [--heads 4]
                                 [--blocks 2] [--ff 256] [--seed 11] [--samples 8]
"""
import argparse
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(vocab, seq, width, heads, blocks, ff, seed):
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def param(arr, stem, dtype=np.float32):
        n = f"{stem}{len(inits)}"
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), n))
        return n

    def node(op, inputs, stem, **attrs):
        out = f"{stem}_out"
        nodes.append(helper.make_node(op, inputs, [out], name=f"/{stem}", **attrs))
        return out

    def normal(std, *shape):
        return rng.normal(0.0, std, size=shape)

    def linear(x, n_in, n_out, stem):
        y = node("MatMul", [x, param(normal(1.0 / np.sqrt(n_in), n_in, n_out), "w")], f"{stem}/MatMul")
        return node("Add", [y, param(normal(0.02, n_out), "b")], f"{stem}/Add")

    def layer_norm(x, stem):
        return node("LayerNormalization",
                    [x, param(1.0 + normal(0.05, width), "g"), param(normal(0.02, width), "beta")],
                    stem, axis=-1, epsilon=1e-5)

    dh = width // heads
    tok = node("Gather", [param(normal(1.0, vocab, width), "wte"), "input"], "wte", axis=0)
    h = node("Add", [tok, param(normal(0.5, 1, seq, width), "wpe")], "embed")
    keep = np.tril(np.ones((seq, seq), dtype=bool)).reshape(1, 1, seq, seq)
    for blk in range(blocks):
        s = f"h{blk}"
        a = layer_norm(h, f"{s}/ln_1")
        qkv = linear(a, width, 3 * width, f"{s}/attn/c_attn")
        q, k, v = (f"{s}/{t}" for t in "qkv")
        nodes.append(helper.make_node("Split", [qkv, param([width] * 3, "split", np.int64)], [q, k, v],
                                      name=f"/{s}/attn/split", axis=-1))
        heads_of = lambda t, perm: node("Transpose", [node("Reshape", [t, param([1, seq, heads, dh], "s", np.int64)],
                                                          f"{t}/r")], f"{t}/t", perm=perm)
        qh, kh, vh = heads_of(q, [0, 2, 1, 3]), heads_of(k, [0, 2, 3, 1]), heads_of(v, [0, 2, 1, 3])
        att = node("Div", [node("MatMul", [qh, kh], f"{s}/attn/scores"), param(np.sqrt(dh), "c")], f"{s}/attn/scale")
        att = node("Where", [param(keep, "mask", bool), att, param(-1e4, "c")], f"{s}/attn/causal")
        att = node("Softmax", [att], f"{s}/attn/softmax", axis=-1)
        ctx = node("Transpose", [node("MatMul", [att, vh], f"{s}/attn/context")], f"{s}/attn/merge_t",
                   perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, param([1, seq, width], "s", np.int64)], f"{s}/attn/merge")
        h = node("Add", [h, linear(ctx, width, width, f"{s}/attn/c_proj")], f"{s}/residual_1")
        m = linear(layer_norm(h, f"{s}/ln_2"), width, ff, f"{s}/mlp/c_fc")
        g = node("Div", [m, param(np.sqrt(2.0), "c")], f"{s}/mlp/gelu/div")
        g = node("Add", [node("Erf", [g], f"{s}/mlp/gelu/erf"), param(1.0, "c")], f"{s}/mlp/gelu/add")
        g = node("Mul", [node("Mul", [m, g], f"{s}/mlp/gelu/mul"), param(0.5, "c")], f"{s}/mlp/gelu/half")
        h = node("Add", [h, linear(g, ff, width, f"{s}/mlp/c_proj")], f"{s}/residual_2")
    # the next-token logits: the last position, final LayerNorm, the head (no bias, as GPT-2)
    last = node("Gather", [h, param(seq - 1, "last", np.int64)], "last", axis=1)
    last = layer_norm(last, "ln_f")
    node("MatMul", [last, param(normal(1.0 / np.sqrt(width), width, vocab), "lm_head")], "lm_head")
    nodes[-1].output[0] = "output"
    graph = helper.make_graph(
        nodes,
        "gpt_lm",
        [helper.make_tensor_value_info("input", TensorProto.INT64, [1, seq])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, vocab])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "models", "gpt_lm"))
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--ff", type=int, default=256)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--samples", type=int, default=8)
    a = ap.parse_args()
    model = build(a.vocab, a.seq, a.width, a.heads, a.blocks, a.ff, a.seed)
    os.makedirs(a.out, exist_ok=True)
    onnx.save(model, os.path.join(a.out, "model.onnx"))
    run = ReferenceEvaluator(model)
    rng = np.random.default_rng(a.seed + 1)
    prompts = rng.integers(0, a.vocab, size=(a.samples, 1, a.seq))
    outs = [run.run(None, {"input": p.astype(np.int64)})[0].astype(np.float64) for p in prompts]
    with open(os.path.join(a.out, "input.json"), "w") as f:
        json.dump({"input_data": [prompts[0].reshape(-1).tolist()]}, f)
    with open(os.path.join(a.out, "samples.json"), "w") as f:
        json.dump({"inputs": [p.tolist() for p in prompts], "float_outputs": [o.tolist() for o in outs]}, f)
    print(f"wrote {a.out}: vocab {a.vocab}, {a.seq} positions, width {a.width}, {a.heads} heads, "
          f"{a.blocks} blocks, logits range [{min(o.min() for o in outs):.2f}, {max(o.max() for o in outs):.2f}]")


if __name__ == "__main__":
    main()
