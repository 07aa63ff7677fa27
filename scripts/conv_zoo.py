#!/usr/bin/env python3
"""Writes the small test models of fixtures/models/conv_zoo: each an ONNX file and
samples.json with float outputs from ONNX's own reference evaluator (independent of tract and of
VeriML). Needs `onnx` and `numpy`.

    python3 scripts/conv_zoo.py [--out fixtures/models/conv_zoo]
"""
import argparse
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model(name, in_shape, layers, out_len, seed):
    """layers: (op_type, attrs, params) with params {input_index: array}; the activation is input 0."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "input"
    for i, (op, attrs, params) in enumerate(layers):
        inputs = [prev]
        for j, arr in enumerate(params):
            pname = f"p{i}_{j}"
            inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), pname))
            inputs.append(pname)
        out = "output" if i == len(layers) - 1 else f"t{i}"
        nodes.append(helper.make_node(op, inputs, [out], name=f"/{op.lower()}{i}", **attrs))
        prev = out
    g = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, out_len])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m, rng


def r(rng, *shape, scale=0.5):
    return rng.normal(0.0, scale, size=shape)


class Builder:
    """Builds a graph node by node; each call consumes and replaces the current tensor."""

    def __init__(self, rng):
        self.rng, self.nodes, self.inits, self.cur, self.n = rng, [], [], "input", 0

    def _name(self, stem):
        self.n += 1
        return f"/{stem}{self.n}"

    def _param(self, arr):
        name = f"p{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def _node(self, op, inputs, **attrs):
        name = self._name(op.lower())
        out = f"t{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def op(self, op, **attrs):
        self.cur = self._node(op, [self.cur], **attrs)

    def gemm(self, n_out, n_in, scale=0.6):
        w, b = r(self.rng, n_out, n_in, scale=scale), r(self.rng, n_out, scale=0.1)
        self.cur = self._node("Gemm", [self.cur, self._param(w), self._param(b)], transB=1)

    def conv(self, c_out, c_in, k, **attrs):
        w, b = r(self.rng, c_out, c_in, k, k), r(self.rng, c_out, scale=0.1)
        self.cur = self._node("Conv", [self.cur, self._param(w), self._param(b)], **attrs)

    def gelu(self):
        x = self.cur
        t = self._node("Div", [x, self._param(np.array(np.sqrt(2.0)))])
        t = self._node("Erf", [t])
        t = self._node("Add", [t, self._param(np.array(1.0))])
        t = self._node("Mul", [x, t])
        self.cur = self._node("Mul", [t, self._param(np.array(0.5))])

    def bin(self, op, other):
        """`cur = op(cur, other)` for another tensor of the graph (a branch)."""
        self.cur = self._node(op, [self.cur, other])

    def concat(self, other, axis=1):
        self.cur = self._node("Concat", [other, self.cur], axis=axis)

    def silu(self):
        x = self.cur
        self.cur = self._node("Mul", [x, self._node("Sigmoid", [x])])


def graph_model(name, in_shape, out_len, seed, build, rng):
    b = Builder(rng)
    build(b)
    b.nodes[-1].output[0] = "output"
    g = helper.make_graph(
        b.nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, out_len])],
        b.inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m, np.random.default_rng(seed)


def zoo():
    out = {}
    # strided, padded and dilated convolutions, then global average pooling and a dense head
    rng = np.random.default_rng(1)
    out["strided_dilated"] = model("strided_dilated", [1, 1, 9, 9], [
        ("Conv", {"strides": [2, 2], "pads": [1, 1, 1, 1]}, [r(rng, 3, 1, 3, 3), r(rng, 3, scale=0.1)]),
        ("Relu", {}, []),
        ("Conv", {"dilations": [2, 2]}, [r(rng, 2, 3, 2, 2), r(rng, 2, scale=0.1)]),
        ("Relu", {}, []),
        ("GlobalAveragePool", {}, []),
        ("Flatten", {}, []),
        ("Gemm", {"transB": 1}, [r(rng, 4, 2), r(rng, 4, scale=0.1)]),
    ], 4, 1)
    # depthwise convolution (group = channels, multiplier 2) with batch normalization,
    # average pooling, reflect padding
    rng = np.random.default_rng(2)
    out["depthwise_bn"] = model("depthwise_bn", [1, 2, 8, 8], [
        ("Pad", {"mode": "reflect"}, [np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64)]),
        ("Conv", {"group": 2}, [r(rng, 4, 1, 3, 3), r(rng, 4, scale=0.1)]),
        ("BatchNormalization", {"epsilon": 1e-5},
         [1.0 + r(rng, 4, scale=0.1), r(rng, 4, scale=0.1), r(rng, 4, scale=0.1), 1.0 + np.abs(r(rng, 4, scale=0.2))]),
        ("Relu", {}, []),
        ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}, []),
        ("Flatten", {}, []),
        ("Gemm", {"transB": 1}, [r(rng, 3, 64, scale=0.2), r(rng, 3, scale=0.1)]),
    ], 3, 2)
    # max pooling with padding and strides on signed values (no ReLU before it), then a ReLU
    # and max pooling again on non-negative values
    rng = np.random.default_rng(3)
    out["maxpool"] = model("maxpool", [1, 2, 7, 7], [
        ("Conv", {}, [r(rng, 3, 2, 2, 2), r(rng, 3, scale=0.1)]),
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, []),
        ("Relu", {}, []),
        ("MaxPool", {"kernel_shape": [2, 2], "strides": [1, 1]}, []),
        ("Flatten", {}, []),
        ("Gemm", {"transB": 1}, [r(rng, 3, 12, scale=0.3), r(rng, 3, scale=0.1)]),
    ], 3, 3)
    # piecewise-linear activations: LeakyRelu, Clip (ReLU6-like, from -0.5 to 1.5), HardSigmoid
    rng = np.random.default_rng(5)
    out["piecewise"] = model("piecewise", [1, 6], [
        ("Gemm", {"transB": 1}, [r(rng, 8, 6, scale=1.0), r(rng, 8, scale=0.3)]),
        ("LeakyRelu", {"alpha": 0.1}, []),
        ("Gemm", {"transB": 1}, [r(rng, 8, 8, scale=1.0), r(rng, 8, scale=0.3)]),
        ("Clip", {}, [np.array(-0.5, dtype=np.float32), np.array(1.5, dtype=np.float32)]),
        ("Gemm", {"transB": 1}, [r(rng, 6, 8, scale=1.0), r(rng, 6, scale=0.3)]),
        ("HardSigmoid", {"alpha": 0.3, "beta": 0.5}, []),
        ("Gemm", {"transB": 1}, [r(rng, 3, 6), r(rng, 3, scale=0.1)]),
    ], 3, 5)
    # a 1-D convolution with max pooling; a grouped, strided convolution with average pooling that counts
    # its padding and a transpose before the head; max pooling straight on the (signed) input
    rng = np.random.default_rng(11)
    out["conv1d"] = model("conv1d", [1, 2, 16], [
        ("Conv", {"pads": [1, 1]}, [r(rng, 3, 2, 3), r(rng, 3, scale=0.1)]),
        ("Relu", {}, []),
        ("MaxPool", {"kernel_shape": [2], "strides": [2]}, []),
        ("Flatten", {}, []),
        ("Gemm", {"transB": 1}, [r(rng, 4, 24), r(rng, 4, scale=0.1)]),
    ], 4, 6)
    out["grouped"] = model("grouped", [1, 4, 6, 6], [
        ("Conv", {"group": 2, "pads": [1, 1, 1, 1], "strides": [2, 2]},
         [r(rng, 4, 2, 3, 3), r(rng, 4, scale=0.1)]),
        ("Relu", {}, []),
        ("AveragePool", {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, []),
        ("Transpose", {"perm": [0, 2, 3, 1]}, []),
        ("Flatten", {}, []),
        ("Gemm", {"transB": 1}, [r(rng, 5, 64), r(rng, 5, scale=0.1)]),
    ], 5, 7)
    out["input_maxpool"] = model("input_maxpool", [1, 1, 6, 6], [
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [3, 3]}, []),
        ("Flatten", {}, []),
        ("Gemm", {"transB": 1}, [r(rng, 2, 4), r(rng, 2, scale=0.1)]),
        ("LeakyRelu", {"alpha": 0.2}, []),
    ], 2, 8)
    # softmax between two dense layers
    rng = np.random.default_rng(4)
    out["softmax"] = model("softmax", [1, 4], [
        ("Gemm", {"transB": 1}, [r(rng, 3, 4), r(rng, 3, scale=0.1)]),
        ("Softmax", {"axis": 1}, []),
        ("Gemm", {"transB": 1}, [r(rng, 2, 3), r(rng, 2, scale=0.1)]),
    ], 2, 4)
    # an operation without a chip yet (a typed error naming it and its node)
    rng = np.random.default_rng(23)
    out["argmax"] = model("argmax", [1, 4], [
        ("Gemm", {"transB": 1}, [r(rng, 3, 4), r(rng, 3, scale=0.1)]),
        ("ArgMax", {"axis": 1, "keepdims": 1}, []),
        ("Cast", {"to": TensorProto.FLOAT}, []),
        ("Gemm", {"transB": 1}, [r(rng, 2, 1), r(rng, 2, scale=0.1)]),
    ], 2, 24)
    # non-linear functions by table lookup: one-node ops, and GELU and SiLU written out as
    # PyTorch exports them (the activation read twice)
    rng = np.random.default_rng(12)
    out["activations"] = graph_model("activations", [1, 6], 3, 12, lambda b: [
        b.gemm(8, 6), b.op("Sigmoid"),
        b.gemm(8, 8), b.op("Tanh"),
        b.gemm(8, 8), b.gelu(),
        b.gemm(6, 8), b.op("HardSwish"),
        b.gemm(5, 6, scale=0.3), b.op("Exp"),
        b.gemm(3, 5),
    ], rng)
    out["silu_cnn"] = graph_model("silu_cnn", [1, 2, 6, 6], 4, 13, lambda b: [
        b.conv(3, 2, 3, pads=[1, 1, 1, 1]), b.silu(),
        b.op("AveragePool", kernel_shape=[2, 2], strides=[2, 2]),
        b.op("Flatten"), b.gemm(6, 27), b.op("Softplus"),
        b.gemm(4, 6),
    ], rng)
    # branches: a ResNet basic block (two convolutions and a skip connection, added before the
    # ReLU), then two heads on the pooled features, concatenated, one subtracted from a skip of
    # the pooled features themselves
    rng = np.random.default_rng(14)

    def resnet(b):
        b.conv(4, 2, 3, pads=[1, 1, 1, 1])
        b.op("Relu")
        skip = b.cur
        b.conv(4, 4, 3, pads=[1, 1, 1, 1])
        b.op("Relu")
        b.conv(4, 4, 3, pads=[1, 1, 1, 1])
        b.bin("Add", skip)
        b.op("Relu")
        b.op("AveragePool", kernel_shape=[2, 2], strides=[2, 2])
        b.op("Flatten")
        feats = b.cur
        b.gemm(6, 36)
        b.op("Tanh")
        left = b.cur
        b.cur = feats
        b.gemm(5, 36)
        b.op("Relu")
        b.concat(left)
        b.gemm(36, 11, scale=0.3)
        b.bin("Sub", feats)
        b.gemm(3, 36)
    out["resnet_block"] = graph_model("resnet_block", [1, 2, 6, 6], 3, 15, resnet, rng)

    # a transpose between two ReLUs (it moves data: not a reshape), then a sigmoid head
    rng = np.random.default_rng(18)
    out["transpose_relu"] = graph_model("transpose_relu", [1, 2, 3, 4], 3, 19, lambda b: [
        b.conv(3, 2, 2), b.op("Relu"),
        b.op("Transpose", perm=[0, 3, 2, 1]), b.op("Relu"),
        b.op("Flatten"), b.gemm(3, 18), b.op("Sigmoid"),
    ], rng)

    # a product of two different activations: needs its own chip (a typed error naming it)
    rng = np.random.default_rng(16)

    def gated(b):
        b.gemm(4, 5)
        left = b.cur
        b.cur = "input"
        b.gemm(4, 5)
        b.op("Sigmoid")
        b.bin("Mul", left)
        b.gemm(2, 4)
    out["gated"] = graph_model("gated", [1, 5], 2, 17, gated, rng)

    # products of two activations: gating, a broadcast scalar factor, the model input as a
    # factor; their sum and concatenation feed the head
    rng = np.random.default_rng(20)

    def products(b):
        b.gemm(6, 5)
        b.op("Relu")
        gate = b.cur
        b.cur = "input"
        b.gemm(6, 5)
        b.op("Tanh")
        b.bin("Mul", gate)
        gated = b.cur
        b.cur = "input"
        b.gemm(1, 5)
        b.bin("Mul", gated)
        scaled = b.cur
        b.cur = "input"
        b.gemm(5, 5)
        b.bin("Mul", "input")
        b.concat(scaled)
        b.gemm(3, 11)
    out["products"] = graph_model("products", [1, 5], 3, 21, products, rng)

    # quotients of two activations: element-wise, and by a broadcast [1, 1] denominator
    rng = np.random.default_rng(23)

    def divide(b):
        b.gemm(4, 5)
        num = b.cur
        b.cur = "input"
        b.gemm(4, 5)
        b.op("Sigmoid")
        den = b._node("Add", [b.cur, b._param(np.array(0.25))])
        b.cur = num
        b.bin("Div", den)
        q = b.cur
        b.cur = "input"
        b.gemm(1, 5)
        b.op("Softplus")
        s = b._node("Add", [b.cur, b._param(np.array(0.5))])
        b.cur = q
        b.bin("Div", s)
        b.gemm(2, 4)
    out["divide"] = graph_model("divide", [1, 5], 2, 24, divide, rng)
    out["attention"] = attention_block("attention", seq=5, d_in=6, width=12, heads=3, ff=16,
                                       out_len=3, seed=22)
    # causal (a constant mask through Where), 2 heads of 4, the first token's features
    # (Gather) next to the maximum over the tokens (ReduceMax) for the head
    out["causal_attention"] = attention_block("causal_attention", seq=4, d_in=5, width=8, heads=2,
                                              ff=12, out_len=4, seed=25, causal=True, pool="first_max")
    return out


def attention_block(name, seq, d_in, width, heads, ff, out_len, seed, causal=False, pool="mean"):
    """A transformer encoder block as PyTorch exports one: embedding, LayerNorm, multi-head
    softmax attention (MatMul of two activations twice), residual, LayerNorm, GELU MLP, residual,
    mean over the tokens, a linear head."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def param(arr, stem):
        n = f"{stem}{len(inits)}"
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), n))
        return n

    def ints(arr, stem):
        n = f"{stem}{len(inits)}"
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.int64), n))
        return n

    def node(op, inputs, stem, **attrs):
        out = f"{stem}_out"
        nodes.append(helper.make_node(op, inputs, [out], name=f"/{stem}", **attrs))
        return out

    def linear(x, n_in, n_out, stem, scale=0.5):
        y = node("MatMul", [x, param(r(rng, n_in, n_out, scale=scale), "w")], f"{stem}/MatMul")
        return node("Add", [param(r(rng, n_out, scale=0.1), "b"), y], f"{stem}/Add")

    def layer_norm(x, stem):
        return node("LayerNormalization",
                    [x, param(1.0 + r(rng, width, scale=0.1), "g"), param(r(rng, width, scale=0.1), "beta")],
                    stem, axis=-1, epsilon=1e-5)

    dh = width // heads
    x = node("Reshape", ["input", ints([1, seq, d_in], "shape")], "reshape_in")
    h = linear(x, d_in, width, "emb")
    a = layer_norm(h, "ln1")
    qkv = linear(a, width, 3 * width, "qkv")
    nodes.append(helper.make_node("Split", [qkv, ints([width] * 3, "split")],
                                  ["q", "k", "v"], name="/split", axis=-1))
    q = node("Transpose", [node("Reshape", ["q", ints([1, seq, heads, dh], "s")], "rq")], "tq",
             perm=[0, 2, 1, 3])
    k = node("Transpose", [node("Reshape", ["k", ints([1, seq, heads, dh], "s")], "rk")], "tk",
             perm=[0, 2, 3, 1])
    v = node("Transpose", [node("Reshape", ["v", ints([1, seq, heads, dh], "s")], "rv")], "tv",
             perm=[0, 2, 1, 3])
    scores = node("Div", [node("MatMul", [q, k], "scores"), param(np.array(np.sqrt(dh)), "c")], "scaled")
    if causal:
        keep = np.tril(np.ones((seq, seq), dtype=bool)).reshape(1, 1, seq, seq)
        kname = f"mask{len(inits)}"
        inits.append(numpy_helper.from_array(keep, kname))
        scores = node("Where", [kname, scores, param(np.array(-1e4), "c")], "causal")
    probs = node("Softmax", [scores], "softmax", axis=-1)
    ctx = node("Transpose", [node("MatMul", [probs, v], "context")], "tc", perm=[0, 2, 1, 3])
    ctx = node("Reshape", [ctx, ints([1, seq, width], "s")], "merge")
    h = node("Add", [h, linear(ctx, width, width, "o")], "residual1")
    m = linear(layer_norm(h, "ln2"), width, ff, "ff1")
    t = node("Div", [m, param(np.array(np.sqrt(2.0)), "c")], "gelu/div")
    t = node("Add", [node("Erf", [t], "gelu/erf"), param(np.array(1.0), "c")], "gelu/add")
    t = node("Mul", [node("Mul", [m, t], "gelu/mul"), param(np.array(0.5), "c")], "gelu/half")
    h = node("Add", [h, linear(t, ff, width, "ff2")], "residual2")
    if pool == "mean":
        pooled, n_pool = node("ReduceMean", [h], "pool", axes=[1], keepdims=0), width
    else:
        first = node("Gather", [h, ints(0, "i")], "first", axis=1)
        top = node("ReduceMax", [h], "top", axes=[1], keepdims=0)
        pooled, n_pool = node("Concat", [first, top], "pool", axis=1), 2 * width
    y = node("Gemm", [pooled, param(r(rng, out_len, n_pool), "w"), param(r(rng, out_len, scale=0.1), "b")],
             "head", transB=1)
    nodes[-1].output[0] = "output"
    g = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, seq, d_in])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, out_len])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m, np.random.default_rng(seed + 1)


def fix_int_inits(m):
    # Pad's pads input must be int64: rebuild that initializer
    for init in m.graph.initializer:
        for node in m.graph.node:
            if node.op_type == "Pad" and init.name == node.input[1]:
                arr = numpy_helper.to_array(init).astype(np.int64)
                init.CopyFrom(numpy_helper.from_array(arr, init.name))
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "fixtures", "models", "conv_zoo"))
    ap.add_argument("--only", help="write only this model")
    a = ap.parse_args()
    for name, (m, rng) in zoo().items():
        if a.only and name != a.only:
            continue
        m = fix_int_inits(m)
        d = os.path.join(a.out, name)
        os.makedirs(d, exist_ok=True)
        onnx.save(m, os.path.join(d, "model.onnx"))
        shape = [dim.dim_value for dim in m.graph.input[0].type.tensor_type.shape.dim]
        ev = ReferenceEvaluator(m)
        xs = rng.uniform(0.0, 1.0, size=[4] + shape).astype(np.float32)
        outs = [ev.run(None, {"input": x})[0].reshape(-1).astype(np.float64).tolist() for x in xs]
        with open(os.path.join(d, "samples.json"), "w") as f:
            json.dump({"inputs": [x.reshape(-1).tolist() for x in xs], "float_outputs": outs}, f)
        with open(os.path.join(d, "input.json"), "w") as f:
            json.dump({"input_data": [xs[0].reshape(-1).tolist()]}, f)
        print(f"{d}: {shape} -> {len(outs[0])} outputs")


if __name__ == "__main__":
    main()
