//! ONNX import: the only module that knows about tract.
//!
//! The model is loaded with `tract-onnx`, made typed and decluttered, then walked in
//! topological order (`Walk`). Nodes are matched by their op *type* (not by name):
//! - affine operations (`EinSum` with a constant operand, which is what `Gemm`/`MatMul` become;
//!   `Conv` with constant kernels; sum and average pooling, sum reductions; padding, slices and
//!   concatenations; `Add`/`Sub` of two activations and `Add`/`Sub`/`Mul`/`Div` by a constant;
//!   axis changes and reshapes) stay *pending*: each computed tensor is affine in a set of
//!   *materialized* values (the input and the outputs of non-linear ops). When a non-linear op or
//!   the output needs one, the region between its sources and it becomes one [`Op::Dense`] over
//!   the concatenation of the sources ([`Op::Concat`] names them when they are not just the
//!   previous op's output), its matrix and bias read off by evaluating the region on the zero
//!   vector and the unit vectors (a convolution becomes its sparse Toeplitz matrix: the circuit
//!   skips zero weights and pages its outputs, so its rows grow with the feature maps, not MACs;
//!   a residual connection becomes the columns of the skipped value);
//! - `Max` with a constant zero (what `Relu` becomes) is [`Op::Relu`];
//! - `MaxPool` becomes ReLU layers taking maxima of pairs (windows found by probing the op),
//!   exact in the quantized model; `Max`/`Min` with constants (what `Clip`, ReLU6 and
//!   `HardSigmoid` become) and `LeakyRelu` become one ReLU between two dense ops;
//! - any other element-wise function of one activation, over one node or several (GELU written
//!   out, SiLU, softplus), is sampled into an [`Op::Elementwise`] (proven by table lookup);
//! - `Mul` of two computed tensors is an [`Op::Product`] of the two materialized values, each
//!   output naming the element of each factor numpy broadcasting pairs with it; `Div` of two is
//!   the numerator times the denominator's reciprocal (an [`Op::Elementwise`] table);
//! - consecutive dense ops are composed into one.
//!
//! - an `EinSum` of two computed tensors (attention's `Q·Kᵀ` and `A·V`): its multiply-accumulates
//!   are read off by probing the op; a batched matrix product (in any output order) is an
//!   [`Op::MatMul`] (the matrix-product chip), any other bilinear form one product per
//!   multiply-accumulate and a dense op summing them;
//! - `Softmax` and `RmsNorm` (what tract makes of `LayerNormalization` once the mean is
//!   subtracted) are written with those ops (see [`softmax_ops`], [`rms_norm_ops`]).
//!
//! Anything else (`ArgMax`, `TopK`, ...) is an
//! [`CompileError::UnsupportedOp`] naming the op and its node.

use crate::error::CompileError;
use crate::graph::{Graph, Matrix, Op, Samples};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::{
    array::{
        CumSum, Gather, GatherElements, MultiBroadcastTo, Pad, Slice, StridedSlice, Tile,
        TypedConcat,
    },
    binary::TypedBinOp,
    cast::Cast,
    change_axes::AxisOp,
    cnn::{Conv, MaxPool, SumPool},
    einsum::EinSum,
    element_wise::ElementWiseOp,
    konst::Const,
    logic::Iff,
    math::{Add, Div, Max, Min, Mul, Sub},
    nn::{LeakyRelu, Reduce, Reducer, RmsNorm, Softmax, SoftmaxKind},
    source::TypedSource,
};

const SUPPORTED: &str = "VeriML supports Gemm and MatMul with constant weights, Conv, AveragePool, GlobalAveragePool, ReduceSum/ReduceMean, Pad, Slice, Concat with constants, Gather/Expand/Tile/CumSum with constant indices, Where with a constant condition, ReduceMax/ReduceMin, Add/Sub/Mul/Div by constants, Mul and Div of two activations (with broadcasting), MatMul of two activations, token embeddings (Gather of a constant matrix by integer token ids), Softmax, LayerNormalization, Relu, LeakyRelu, Clip, HardSigmoid, Max/Min with constants, MaxPool, element-wise functions of one activation (Sigmoid, Tanh, Erf, Exp, HardSwish, GELU, Softplus, ... and their compositions), Flatten, Reshape and Transpose; this operation needs its own circuit chip";

/// Where an element-wise function is sampled (beyond it, extrapolated linearly) and how finely.
const SAMPLE_RANGE: f64 = 1024.0;
const SAMPLE_STEP: f64 = 1.0 / 256.0;
/// Where the reciprocal square root of a normalization is cut into tables (each a factor 4
/// apart); means of squares above the last are clamped to it.
const RSQRT_SEGMENTS: [f64; 11] = [
    0.0,
    1.0 / 256.0,
    1.0 / 64.0,
    1.0 / 16.0,
    0.25,
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
];
/// `1/v`, with the denominators within `2^-8` of zero taken as `±2^-8` (`+` at zero): a
/// quotient by an activation that can vanish has no finite value there.
fn reciprocal(v: f64) -> f64 {
    const SMALLEST: f64 = 1.0 / 256.0;
    if v.abs() < SMALLEST {
        if v < 0.0 {
            -1.0 / SMALLEST
        } else {
            1.0 / SMALLEST
        }
    } else {
        1.0 / v
    }
}

/// A softmax input that is a constant at or below this (a mask's fill value: `-1e4`, `-1e9`,
/// the lowest float, `-inf`) has probability 0: left out of the softmax.
const MASKED_SCORE: f32 = -1e3;
/// Bits fewer than `--lookup-bits` each rsqrt segment's table gets: a segment spans a factor 4,
/// so 2^10 entries keep the relative error below 0.1% (at the defaults digits_attn's largest
/// output error is 0.024 with them, 0.023 with factor-16 segments of 2^12 entries, which took
/// 12k more rows).
const RSQRT_COARSER: u32 = 2;

type Model = TypedModel;

fn unsupported(node: &TypedNode) -> CompileError {
    CompileError::UnsupportedOp {
        op: node.op.name().to_string(),
        node: node.name.clone(),
        needed: SUPPORTED.into(),
    }
}

fn concrete_shape(model: &Model, outlet: OutletId) -> Result<Vec<usize>, CompileError> {
    let node = model.node(outlet.node);
    let fact = model
        .outlet_fact(outlet)
        .map_err(|e| CompileError::Structure {
            node: node.name.clone(),
            detail: e.to_string(),
        })?;
    fact.shape
        .as_concrete()
        .map(|s| s.to_vec())
        .ok_or_else(|| CompileError::DynamicShape {
            node: node.name.clone(),
            detail: format!("shape {:?}", fact.shape),
        })
}

fn const_of(model: &Model, outlet: OutletId) -> Option<Arc<Tensor>> {
    model
        .node(outlet.node)
        .op_as::<Const>()
        .map(|c| c.val().clone())
}

/// How a node acts on the activation tensor.
enum Kind {
    Affine,
    Relu,
    MaxPool,
    /// `max(x, c)` with a constant `c` (not all zero).
    MaxConst,
    /// `min(x, c)` with a constant `c`.
    MinConst,
    /// `x` if positive, else `alpha·x`.
    Leaky(f32),
    /// The maximum (`true`: the minimum) over axes.
    ReduceMax(Vec<usize>, bool),
}

fn classify(model: &Model, node: &TypedNode, var_slot: usize) -> Result<Kind, CompileError> {
    let others_const = node
        .inputs
        .iter()
        .enumerate()
        .all(|(i, o)| i == var_slot || const_of(model, *o).is_some());
    if !others_const {
        return Err(CompileError::Structure {
            node: node.name.clone(),
            detail: "the node combines two computed tensors; VeriML handles chains with one activation tensor and constant weights".into(),
        });
    }
    // linear in the activation (constant weights, selections, sums): folded into a dense layer
    let linear = node.op_is::<EinSum>()
        || node.op_is::<AxisOp>()
        || node.op_is::<Conv>()
        || node.op_is::<SumPool>()
        || node.op_is::<Pad>()
        || node.op_is::<Slice>()
        || node.op_is::<TypedConcat>()
        || node
            .op_as::<Reduce>()
            .is_some_and(|r| matches!(r.reducer, Reducer::Sum))
        // selections and repetitions of the activation by constant indices or shapes
        || ((node.op_is::<Gather>()
            || node.op_is::<GatherElements>()
            || node.op_is::<StridedSlice>()
            || node.op_is::<CumSum>())
            && var_slot == 0)
        || node.op_is::<MultiBroadcastTo>()
        || node.op_is::<Tile>()
        // `Where` with a constant condition and a constant on one side (a causal mask)
        || (node.op_is::<Iff>() && var_slot != 0)
        // a cast between float types
        || node.op_as::<Cast>().is_some_and(|c| c.to.is_float());
    if linear {
        return Ok(Kind::Affine);
    }
    if let Some(r) = node.op_as::<Reduce>() {
        match r.reducer {
            Reducer::Max => return Ok(Kind::ReduceMax(r.axes.to_vec(), false)),
            Reducer::Min => return Ok(Kind::ReduceMax(r.axes.to_vec(), true)),
            _ => {}
        }
    }
    if node
        .op_as::<MaxPool>()
        .is_some_and(|m| m.with_index_outputs.is_none())
    {
        return Ok(Kind::MaxPool);
    }
    if let Some(bin) = node.op_as::<TypedBinOp>() {
        let m = &bin.0;
        if m.is::<Add>() || m.is::<Sub>() || m.is::<Mul>() || (m.is::<Div>() && var_slot == 0) {
            return Ok(Kind::Affine);
        }
        if m.is::<Max>() {
            let other = node.inputs[1 - var_slot];
            if let Some(t) = const_of(model, other) {
                let zero = t
                    .cast_to::<f32>()
                    .map(|t| {
                        t.to_plain_array_view::<f32>()
                            .map(|a| a.iter().all(|&v| v == 0.0))
                            .unwrap_or(false)
                    })
                    .unwrap_or(false);
                return Ok(if zero { Kind::Relu } else { Kind::MaxConst });
            }
        }
        if m.is::<Min>() {
            return Ok(Kind::MinConst);
        }
    }
    if let Some(leaky) = node
        .op_as::<ElementWiseOp>()
        .and_then(|e| e.0.downcast_ref::<LeakyRelu>())
    {
        return Ok(Kind::Leaky(leaky.alpha));
    }
    Err(unsupported(node))
}

fn to_f32_vec(t: &Tensor, node: &str) -> Result<Vec<f32>, CompileError> {
    let t = t.cast_to::<f32>().map_err(|e| CompileError::Structure {
        node: node.into(),
        detail: e.to_string(),
    })?;
    t.to_plain_array_view::<f32>()
        .map(|a| a.iter().copied().collect())
        .map_err(|e| CompileError::Structure {
            node: node.into(),
            detail: e.to_string(),
        })
}

/// A tensor of the given shape and values; `node` names it in errors.
fn tensor_of(shape: &[usize], values: Vec<f32>, node: &str) -> Result<Tensor, CompileError> {
    tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), values)
        .map(|a| a.into_tensor())
        .map_err(|e| CompileError::Structure {
            node: node.into(),
            detail: e.to_string(),
        })
}

/// A node's output with its computed input `x` set to `values` (its other inputs constants).
fn eval_node(
    model: &Model,
    node: &TypedNode,
    x: OutletId,
    values: Vec<f32>,
) -> Result<Vec<f32>, CompileError> {
    let shape = concrete_shape(model, x)?;
    let mut memo = HashMap::from([(x, tensor_of(&shape, values, &node.name)?.into_tvalue())]);
    let out = eval_from(model, OutletId::new(node.id, 0), &mut memo)?;
    to_f32_vec(&out.into_tensor(), &node.name)
}

/// Runs one node on its input values.
fn run_node(node: &TypedNode, inputs: TVec<TValue>) -> Result<TVec<TValue>, CompileError> {
    node.op
        .eval_out_of_plan(inputs)
        .map_err(|e| CompileError::Structure {
            node: node.name.clone(),
            detail: format!("cannot evaluate: {e}"),
        })?
        .ok_or_else(|| unsupported(node))
}

/// Evaluates `target` from the given values of some outlets (and the model's constants).
fn eval_from(
    model: &Model,
    target: OutletId,
    memo: &mut HashMap<OutletId, TValue>,
) -> Result<TValue, CompileError> {
    if let Some(v) = memo.get(&target) {
        return Ok(v.clone());
    }
    if let Some(c) = const_of(model, target) {
        return Ok(c.into_tvalue());
    }
    let node = model.node(target.node);
    if node.op_is::<TypedSource>() {
        return Err(CompileError::Structure {
            node: node.name.clone(),
            detail: "an affine region reads the model input it does not start from".into(),
        });
    }
    let mut inputs: TVec<TValue> = TVec::new();
    for &o in &node.inputs {
        inputs.push(eval_from(model, o, memo)?);
    }
    let v = run_node(node, inputs)?[target.slot].clone();
    memo.insert(target, v.clone());
    Ok(v)
}

/// The dense op computing `target`, an affine function of the outlets `sources` (their values
/// concatenated), read off by evaluating the region between them on 0 and on unit vectors.
fn dense_of_region(
    model: &Model,
    sources: &[OutletId],
    target: OutletId,
) -> Result<Op, CompileError> {
    let name = model.node(target.node).name.clone();
    let shapes: Vec<Vec<usize>> = sources
        .iter()
        .map(|&o| concrete_shape(model, o))
        .collect::<Result<_, _>>()?;
    let widths: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
    let n_in: usize = widths.iter().sum();
    // the region's output with input `unit` (a global index) set to 1, or none
    let eval = |unit: Option<usize>| -> Result<Vec<f32>, CompileError> {
        let mut memo = HashMap::new();
        let mut base = 0;
        for ((&o, shape), &w) in sources.iter().zip(&shapes).zip(&widths) {
            let mut v = vec![0f32; w];
            if let Some(u) = unit.filter(|&u| (base..base + w).contains(&u)) {
                v[u - base] = 1.0;
            }
            memo.insert(o, tensor_of(shape, v, &name)?.into_tvalue());
            base += w;
        }
        to_f32_vec(&eval_from(model, target, &mut memo)?.into_tensor(), &name)
    };
    let bias = eval(None)?;
    let n_out = bias.len();
    let mut rows: Vec<Vec<(usize, f32)>> = vec![Vec::new(); n_out];
    for i in 0..n_in {
        let col = eval(Some(i))?;
        for o in 0..n_out {
            let w = col[o] - bias[o];
            if w != 0.0 {
                rows[o].push((i, w));
            }
        }
    }
    Ok(Op::Dense {
        node: name,
        inputs: n_in,
        outputs: n_out,
        weights: Matrix::from_rows(rows, n_in),
        bias,
    })
}

/// The window of every output of a max-pooling node, found by probing the op itself on unit
/// vectors (an input is in an output's window iff a lone 1 there makes that output 1), so
/// kernel, strides, dilations and padding need no geometry of our own.
fn pool_windows(
    model: &Model,
    node: &TypedNode,
    x: OutletId,
) -> Result<Vec<Vec<usize>>, CompileError> {
    let mut windows: Vec<Vec<usize>> = Vec::new();
    let n_in: usize = concrete_shape(model, x)?.iter().product();
    for i in 0..n_in {
        let mut v = vec![0f32; n_in];
        v[i] = 1.0;
        let out = eval_node(model, node, x, v)?;
        if windows.is_empty() {
            windows = vec![Vec::new(); out.len()];
        }
        for (o, &y) in out.iter().enumerate() {
            if y > 0.5 {
                windows[o].push(i);
            }
        }
    }
    if windows.iter().any(Vec::is_empty) {
        return Err(CompileError::Structure {
            node: node.name.clone(),
            detail: "an output of the pooling window sees no input".into(),
        });
    }
    Ok(windows)
}

/// Max pooling as ReLU layers: each round takes the maximum of pairs, `max(a, b) = a + relu(b − a)`
/// when the inputs are non-negative (after a ReLU), else `relu(a) − relu(−a) + relu(b − a)`;
/// windows are padded to one power of two by repeating a member. Every weight is ±1, so the
/// quantized maximum is exact; the last linear map is left for [`fuse_dense`].
fn max_pool_ops(node: &str, windows: &[Vec<usize>], n_in: usize, nonneg: bool) -> Vec<Op> {
    // each output's candidates as sparse linear forms over the current vector
    // every window padded to the same power of two (edge windows of a padded pool are smaller)
    let size = windows
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(1)
        .next_power_of_two();
    let mut cands: Vec<Vec<Vec<(usize, f32)>>> = windows
        .iter()
        .map(|w| {
            let mut c: Vec<Vec<(usize, f32)>> = w.iter().map(|&i| vec![(i, 1.0)]).collect();
            c.resize(size, c[0].clone());
            c
        })
        .collect();
    let mut ops = Vec::new();
    let mut width = n_in;
    // a round's rows have no biases
    let dense = |rows: &[Vec<(usize, f32)>], width: usize, name: String| {
        let rows: Vec<_> = rows.iter().map(|r| (r.clone(), 0.0)).collect();
        sparse_dense(name, width, &rows)
    };
    let neg = |f: &[(usize, f32)]| f.iter().map(|&(i, v)| (i, -v)).collect::<Vec<_>>();
    let mut round = 0;
    while cands.iter().any(|c| c.len() > 1) {
        let mut rows: Vec<Vec<(usize, f32)>> = Vec::new();
        let mut next = Vec::with_capacity(cands.len());
        for c in &cands {
            let mut out = Vec::with_capacity(c.len() / 2);
            for pair in c.chunks(2) {
                let (a, b) = (&pair[0], &pair[1]);
                let mut diff = b.clone();
                diff.extend(neg(a));
                let at = rows.len();
                if nonneg {
                    rows.push(a.clone());
                    rows.push(diff);
                    out.push(vec![(at, 1.0), (at + 1, 1.0)]);
                } else {
                    rows.push(a.clone());
                    rows.push(neg(a));
                    rows.push(diff);
                    out.push(vec![(at, 1.0), (at + 1, -1.0), (at + 2, 1.0)]);
                }
            }
            next.push(out);
        }
        ops.push(dense(&rows, width, format!("{node}/round{round}")));
        ops.push(Op::Relu {
            node: format!("{node}/round{round}/relu"),
        });
        width = rows.len();
        cands = next;
        round += 1;
    }
    let last: Vec<Vec<(usize, f32)>> = cands.into_iter().map(|mut c| c.remove(0)).collect();
    ops.push(dense(&last, width, node.to_string()));
    ops
}

/// A dense op from sparse rows: each `(row, bias)` with the row as `(input, weight)` pairs.
fn sparse_dense(node: String, inputs: usize, rows: &[(Vec<(usize, f32)>, f32)]) -> Op {
    // an input named twice in a row (a window padded with a repeated member) adds up
    let merged: Vec<Vec<(usize, f32)>> = rows
        .iter()
        .map(|(row, _)| {
            let mut r = row.clone();
            r.sort_by_key(|e| e.0);
            let mut out: Vec<(usize, f32)> = Vec::with_capacity(r.len());
            for (i, v) in r {
                match out.last_mut() {
                    Some(last) if last.0 == i => last.1 += v,
                    _ => out.push((i, v)),
                }
            }
            out
        })
        .collect();
    Op::Dense {
        node,
        inputs,
        outputs: rows.len(),
        weights: Matrix::from_rows(merged, inputs),
        bias: rows.iter().map(|r| r.1).collect(),
    }
}

/// A piecewise-linear element-wise op, written with ReLUs.
enum Piece {
    /// `max(x, c) = c + relu(x − c)`.
    Max(Vec<f32>),
    /// `min(x, c) = c − relu(c − x)`.
    Min(Vec<f32>),
    /// `relu(x) − alpha·relu(−x)`.
    Leaky(f32),
}

/// The output of a node on an input filled with `value` (a max or min with a constant then gives
/// the constant, broadcast to the activation's shape).
fn extreme(
    model: &Model,
    node: &TypedNode,
    x: OutletId,
    value: f32,
) -> Result<Vec<f32>, CompileError> {
    let n: usize = concrete_shape(model, x)?.iter().product();
    let out = eval_node(model, node, x, vec![value; n])?;
    if out.len() != n || out.iter().any(|v| !v.is_finite()) {
        return Err(CompileError::Structure {
            node: node.name.clone(),
            detail: "the constant of this max or min does not broadcast to the activation".into(),
        });
    }
    Ok(out)
}

/// Dense ops around one ReLU computing a piecewise-linear op on `n` values; [`fuse_dense`]
/// composes the outer ones with their neighbours.
fn piecewise_ops(node: &str, piece: &Piece, n: usize) -> Vec<Op> {
    let dense = |name: String, inputs: usize, rows: Vec<(Vec<(usize, f32)>, f32)>| {
        sparse_dense(name, inputs, &rows)
    };
    let relu = Op::Relu {
        node: format!("{node}/relu"),
    };
    let pre = format!("{node}/in");
    match piece {
        Piece::Max(c) => vec![
            dense(pre, n, (0..n).map(|i| (vec![(i, 1.0)], -c[i])).collect()),
            relu,
            dense(
                node.into(),
                n,
                (0..n).map(|i| (vec![(i, 1.0)], c[i])).collect(),
            ),
        ],
        Piece::Min(c) => vec![
            dense(pre, n, (0..n).map(|i| (vec![(i, -1.0)], c[i])).collect()),
            relu,
            dense(
                node.into(),
                n,
                (0..n).map(|i| (vec![(i, -1.0)], c[i])).collect(),
            ),
        ],
        Piece::Leaky(alpha) => vec![
            dense(
                pre,
                n,
                (0..2 * n)
                    .map(|o| (vec![(o % n, if o < n { 1.0 } else { -1.0 })], 0.0))
                    .collect(),
            ),
            relu,
            dense(
                node.into(),
                2 * n,
                (0..n)
                    .map(|i| (vec![(i, 1.0), (n + i, -alpha)], 0.0))
                    .collect(),
            ),
        ],
    }
}

/// Most multiply-adds [`fuse_dense`] spends composing two dense ops; above it they stay apart
/// (the second reads the first's output as an identity layer).
const FUSE_BUDGET: usize = 1 << 30;

/// Composes a dense op with the dense op right before it when it reads only that op's output
/// and nothing else reads it; renumbers the values concatenations read.
fn fuse_dense(ops: Vec<Op>) -> Vec<Op> {
    let referenced: HashSet<usize> = ops.iter().flat_map(Op::reads).collect();
    // old value id -> new value id
    let mut map: Vec<usize> = vec![0];
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        // the work: for each nonzero weight of the second op, the nonzeros of the first op's row
        let fusable = match (out.last(), &op) {
            (
                Some(Op::Dense {
                    inputs,
                    weights: w1,
                    ..
                }),
                Op::Dense {
                    inputs: mid,
                    outputs,
                    weights: w2,
                    ..
                },
            ) => {
                let row_nnz: Vec<usize> = (0..*mid).map(|m| w1.row(m, *inputs).count()).collect();
                let work: usize = (0..*outputs)
                    .flat_map(|o| w2.row(o, *mid).map(|(m, _)| row_nnz[m]).collect::<Vec<_>>())
                    .sum();
                !referenced.contains(&i) && work <= FUSE_BUDGET
            }
            _ => false,
        };
        // the values it names, renumbered
        let mut op = op;
        match &mut op {
            Op::Concat { sources, .. } => sources.iter_mut().for_each(|v| *v = map[*v]),
            Op::Product { operands, .. } | Op::MatMul { operands, .. } => {
                *operands = (map[operands.0], map[operands.1]);
            }
            _ => {}
        }
        match (op, fusable) {
            (
                Op::Dense {
                    node,
                    outputs,
                    weights: w2,
                    bias: b2,
                    ..
                },
                true,
            ) => {
                let Some(Op::Dense {
                    inputs,
                    outputs: mid,
                    weights: w1,
                    bias: b1,
                    ..
                }) = out.pop()
                else {
                    unreachable!("checked dense")
                };
                let mut bias = b2.clone();
                let mut acc = vec![0f32; inputs];
                let mut rows = Vec::with_capacity(outputs);
                for (o, b) in bias.iter_mut().enumerate() {
                    let mut touched: Vec<usize> = Vec::new();
                    for (m, v) in w2.row(o, mid) {
                        *b += v * b1[m];
                        for (j, x) in w1.row(m, inputs) {
                            if acc[j] == 0.0 {
                                touched.push(j);
                            }
                            acc[j] += v * x;
                        }
                    }
                    touched.sort_unstable();
                    touched.dedup();
                    rows.push(
                        touched
                            .into_iter()
                            .map(|j| (j, std::mem::take(&mut acc[j])))
                            .filter(|e| e.1 != 0.0)
                            .collect(),
                    );
                }
                out.push(Op::Dense {
                    node,
                    inputs,
                    outputs,
                    weights: Matrix::from_rows(rows, inputs),
                    bias,
                });
                // the first op's value is gone (nothing reads it)
                map[i] = usize::MAX;
            }
            (op, _) => out.push(op),
        }
        map.push(out.len());
    }
    out
}

/// A node that maps each element on its own: a unary element-wise op, or a binary op whose
/// constant operand is a single number.
fn elementwise(model: &Model, node: &TypedNode) -> bool {
    if node.op_is::<ElementWiseOp>() {
        return true;
    }
    node.op_is::<TypedBinOp>()
        && node
            .inputs
            .iter()
            .all(|o| const_of(model, *o).is_none_or(|t| t.len() == 1))
}

/// A region of element-wise nodes computing one function of the activation `x`: GELU's
/// `x·½·(1 + erf(x/√2))`, a sigmoid, `exp` then `log`... Taken greedily in evaluation order from
/// `start` (passing over nodes of other branches) while each node reading the region reads only
/// `x`, the region's own tensors and scalars; it ends at the last node where a single tensor
/// leaves it. Returns the nodes and the output, if the region
/// holds a non-linear node.
fn element_region(
    model: &Model,
    order: &[usize],
    start: usize,
    x: OutletId,
) -> Option<(Vec<usize>, OutletId)> {
    let shape = concrete_shape(model, x).ok()?;
    let mut inside: HashSet<OutletId> = HashSet::from([x]);
    let mut nodes: Vec<usize> = Vec::new();
    let mut best = None;
    let mut nonlinear = false;
    for &id in &order[start..] {
        let node = model.node(id);
        if node.op_is::<Const>() {
            continue;
        }
        // nodes of other branches are passed over
        if !node.inputs.iter().any(|o| inside.contains(o)) {
            continue;
        }
        let reads_inside = node
            .inputs
            .iter()
            .all(|o| inside.contains(o) || const_of(model, *o).is_some());
        let out = OutletId::new(id, 0);
        if !reads_inside
            || node.outputs.len() != 1
            || !elementwise(model, node)
            || concrete_shape(model, out).ok()? != shape
        {
            break;
        }
        // a function of one variable, or two activations combined (`x·sigmoid(x)`); a ReLU or
        // a clip alone stays exact ReLU layers
        nonlinear |= match node.op_as::<ElementWiseOp>() {
            Some(e) => !e.0.is::<LeakyRelu>(),
            None => node.inputs.iter().filter(|o| inside.contains(o)).count() > 1,
        };
        nodes.push(id);
        inside.insert(out);
        // the tensors still read outside the region
        let taken: HashSet<usize> = nodes.iter().copied().collect();
        let leaving: Vec<OutletId> = inside
            .iter()
            .filter(|o| {
                let succ = model.outlet_successors(**o);
                succ.iter().any(|s| !taken.contains(&s.node))
                    || model.output_outlets().is_ok_and(|outs| outs.contains(o))
            })
            .copied()
            .collect();
        if leaving == [out] && nonlinear {
            best = Some((nodes.clone(), out));
        }
    }
    best
}

/// Samples the function a region computes at `SAMPLE_RANGE`/`SAMPLE_STEP` points, by
/// evaluating its nodes.
fn sample_region(model: &Model, nodes: &[usize], x: OutletId) -> Result<Samples, CompileError> {
    let name = model.node(*nodes.last().expect("a region")).name.clone();
    let n = (2.0 * SAMPLE_RANGE / SAMPLE_STEP) as usize + 1;
    let xs: Vec<f32> = (0..n)
        .map(|i| (-SAMPLE_RANGE + i as f64 * SAMPLE_STEP) as f32)
        .collect();
    let mut memo = HashMap::from([(x, tensor_of(&[n], xs, &name)?.into_tvalue())]);
    let out = eval_from(
        model,
        OutletId::new(*nodes.last().expect("a region"), 0),
        &mut memo,
    )?;
    let ys = to_f32_vec(&out.into_tensor(), &name)?;
    if ys.len() != n {
        return Err(CompileError::Structure {
            node: name,
            detail: "the element-wise function does not keep its input's shape".into(),
        });
    }
    Ok(Samples {
        lo: -SAMPLE_RANGE,
        step: SAMPLE_STEP,
        values: ys.iter().map(|&v| v as f64).collect(),
    })
}

/// A name for an element-wise region: its ops, e.g. `Erf·Mul` for GELU.
fn region_label(model: &Model, nodes: &[usize]) -> String {
    let mut names: Vec<String> = Vec::new();
    for &id in nodes {
        let node = model.node(id);
        let name = match node.op_as::<ElementWiseOp>() {
            Some(e) => e.0.name(),
            None => node.op.name().to_string(),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join("·")
}

/// A function sampled like an element-wise region (`SAMPLE_RANGE`, `SAMPLE_STEP`).
fn sampled(f: impl Fn(f64) -> f64) -> Arc<Samples> {
    sampled_on(SAMPLE_RANGE, (2.0 * SAMPLE_RANGE / SAMPLE_STEP) as usize, f)
}

/// A function sampled at `n + 1` points over `[−range, range]` (it is extrapolated linearly
/// beyond: for a function flat outside, exactly).
fn sampled_on(range: f64, n: usize, f: impl Fn(f64) -> f64) -> Arc<Samples> {
    let step = 2.0 * range / n as f64;
    Arc::new(Samples {
        lo: -range,
        step,
        values: (0..=n).map(|i| f(-range + i as f64 * step)).collect(),
    })
}

/// The groups a reduction over `axes` of a tensor of shape `shape` makes (flat indices of the
/// elements sharing every other coordinate), and the group of every element.
fn reduction_groups(shape: &[usize], axes: &[usize]) -> (Vec<Vec<usize>>, Vec<usize>) {
    let n: usize = shape.iter().product();
    let mut key_of = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of = Vec::with_capacity(n);
    for flat in 0..n {
        let (mut rest, mut key) = (flat, Vec::with_capacity(shape.len()));
        for (axis, &d) in shape.iter().enumerate().rev() {
            if !axes.contains(&axis) {
                key.push(rest % d);
            }
            rest /= d;
        }
        let g = *key_of.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(flat);
        group_of.push(g);
    }
    (groups, group_of)
}

/// The multiply-accumulates of a node bilinear in its two computed inputs `a`, `b` (a matrix
/// product of two activations): for each output, the pairs (element of `a`, element of `b`) it
/// sums. Read off by evaluating the node with `a` a unit vector and `b` numbered `1, 2, ...`
/// (each output then holds the number of the one element it pairs with), and checked on
/// random integer operands: a node that is not a sum of such products is refused.
#[allow(clippy::type_complexity)]
fn bilinear_pairs(
    model: &Model,
    node: &TypedNode,
    a: OutletId,
    b: OutletId,
) -> Result<Vec<Vec<(usize, usize)>>, CompileError> {
    let (sa, sb) = (concrete_shape(model, a)?, concrete_shape(model, b)?);
    let (na, nb): (usize, usize) = (sa.iter().product(), sb.iter().product());
    let run = |va: Vec<f32>, vb: Vec<f32>| -> Result<Vec<f32>, CompileError> {
        let mut memo = HashMap::from([
            (a, tensor_of(&sa, va, &node.name)?.into_tvalue()),
            (b, tensor_of(&sb, vb, &node.name)?.into_tvalue()),
        ]);
        let out = eval_from(model, OutletId::new(node.id, 0), &mut memo)?;
        to_f32_vec(&out.into_tensor(), &node.name)
    };
    let refuse = || {
        CompileError::UnsupportedOp {
        op: node.op.name().to_string(),
        node: node.name.clone(),
        needed: "a bilinear operation VeriML could not read as sums of products of one element of each operand".into(),
    }
    };
    if nb >= 1 << 24 {
        return Err(refuse());
    }
    let numbered: Vec<f32> = (1..=nb).map(|q| q as f32).collect();
    let mut pairs: Vec<Vec<(usize, usize)>> = Vec::new();
    for p in 0..na {
        let mut unit = vec![0f32; na];
        unit[p] = 1.0;
        let out = run(unit, numbered.clone())?;
        pairs.resize(out.len(), Vec::new());
        for (o, &v) in out.iter().enumerate() {
            if v != 0.0 {
                if v.fract() != 0.0 || v < 1.0 || v as usize > nb {
                    return Err(refuse());
                }
                pairs[o].push((p, v as usize - 1));
            }
        }
    }
    // the pairs must reproduce the node on other operands
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut small = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 7) as f32 - 3.0
            })
            .collect()
    };
    let (ra, rb) = (small(na), small(nb));
    let out = run(ra.clone(), rb.clone())?;
    let agrees = out.len() == pairs.len()
        && out.iter().zip(&pairs).all(|(&v, ps)| {
            let want: f32 = ps.iter().map(|&(p, q)| ra[p] * rb[q]).sum();
            (v - want).abs() < 1e-3
        });
    if !agrees {
        return Err(refuse());
    }
    Ok(pairs)
}

/// `Gather` of a constant `[vocab, dim]` matrix (axis 0) by the model input, an integer tensor
/// of token ids: an [`Op::Embedding`].
fn embedding_op(
    model: &Model,
    node: &TypedNode,
    axis: usize,
    table: &Tensor,
    ids: OutletId,
    input: OutletId,
) -> Result<Op, CompileError> {
    let refuse = |detail: &str| {
        CompileError::UnsupportedOp {
        op: node.op.name().to_string(),
        node: node.name.clone(),
        needed: format!(
            "a Gather of a computed tensor needs constant indices, or it gathers token embeddings: rows (axis 0) of a constant [vocab, dim] matrix by the model input itself, an integer tensor ({detail})"
        ),
    }
    };
    let ids_type = model
        .outlet_fact(ids)
        .map_err(|e| CompileError::Structure {
            node: node.name.clone(),
            detail: e.to_string(),
        })?
        .datum_type;
    if ids != input || !ids_type.is_integer() {
        return Err(refuse("these indices are not the integer model input"));
    }
    if axis != 0 || table.rank() != 2 {
        return Err(refuse("the data is not a matrix gathered along axis 0"));
    }
    let (vocab, dim) = (table.shape()[0], table.shape()[1]);
    let values = to_f32_vec(table, &node.name)?;
    Ok(Op::Embedding {
        node: node.name.clone(),
        vocab,
        dim,
        table: values,
    })
}

/// Reads the multiply-accumulates of a bilinear node as a batched matrix product
/// `C[b,i,k] = Σ_j A[b,i,j]·B[b,j,k]`: the rows of `A` are the sets of first-operand elements
/// the outputs read, the columns of `B` the sets of second-operand elements, the batches the
/// connected groups of rows and columns. Returns the element of the first operand each
/// `A[b,i,j]` is, the element of the second each `B[b,j,k]` is, the position `(b·n + i)·p + k`
/// of each output (empty when every output is already there) and `[batch, n, m, p]`; `None`
/// when the pairs have another structure (then one product per multiply-accumulate proves the
/// node). Every output's pairs are checked against the structure found.
#[allow(clippy::type_complexity)]
fn matmul_structure(
    pairs: &[Vec<(usize, usize)>],
) -> Option<(Vec<usize>, Vec<usize>, Vec<usize>, [usize; 4])> {
    let total = pairs.len();
    let m = pairs.first()?.len();
    if m == 0 || pairs.iter().any(|ps| ps.len() != m) {
        return None;
    }
    let sorted = |o: usize, side: bool| {
        let mut v: Vec<usize> = pairs[o]
            .iter()
            .map(|e| if side { e.1 } else { e.0 })
            .collect();
        v.sort_unstable();
        v
    };
    // number the distinct rows and columns in order of appearance
    let number = |side: bool| {
        let mut ids: HashMap<Vec<usize>, usize> = HashMap::new();
        let of: Vec<usize> = (0..total)
            .map(|o| {
                let next = ids.len();
                *ids.entry(sorted(o, side)).or_insert(next)
            })
            .collect();
        (of, ids.len())
    };
    let ((row, rows), (col, cols)) = (number(false), number(true));
    // batches: rows and columns joined by the outputs (union-find over rows, then columns)
    let mut parent: Vec<usize> = (0..rows + cols).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for o in 0..total {
        let (a, b) = (find(&mut parent, row[o]), find(&mut parent, rows + col[o]));
        parent[a] = b;
    }
    let mut batch_of: HashMap<usize, usize> = HashMap::new();
    let mut members: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
    for x in 0..rows + cols {
        let root = find(&mut parent, x);
        let next = batch_of.len();
        let b = *batch_of.entry(root).or_insert(next);
        if b == members.len() {
            members.push((Vec::new(), Vec::new()));
        }
        if x < rows {
            members[b].0.push(x);
        } else {
            members[b].1.push(x - rows);
        }
    }
    let (batch, n, p) = (members.len(), members[0].0.len(), members[0].1.len());
    if n * p * batch != total || members.iter().any(|(r, c)| r.len() != n || c.len() != p) {
        return None;
    }
    // position of each row and column in its batch; the output at each (b, i, k)
    let mut index_of = vec![0; rows + cols];
    for (r, c) in &members {
        for (i, &x) in r.iter().enumerate() {
            index_of[x] = i;
        }
        for (k, &x) in c.iter().enumerate() {
            index_of[rows + x] = k;
        }
    }
    let mut at = vec![usize::MAX; total];
    let mut out = vec![0; total];
    for o in 0..total {
        let b = batch_of[&find(&mut parent, row[o])];
        let pos = (b * n + index_of[row[o]]) * p + index_of[rows + col[o]];
        if at[pos] != usize::MAX {
            return None;
        }
        at[pos] = o;
        out[o] = pos;
    }
    let (mut left, mut right) = (vec![0; batch * n * m], vec![0; batch * m * p]);
    for b in 0..batch {
        let at = |i: usize, k: usize| at[(b * n + i) * p + k];
        // j numbers the elements of B's first column; row i of A pairs with them in (i, 0),
        // column k of B with row 0 of A in (0, k)
        let col0 = sorted(at(0, 0), true);
        if col0.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        for i in 0..n {
            for &(x, y) in &pairs[at(i, 0)] {
                let j = col0.binary_search(&y).ok()?;
                left[(b * n + i) * m + j] = x;
            }
        }
        for k in 0..p {
            for &(x, y) in &pairs[at(0, k)] {
                let j = (0..m).find(|&j| left[b * n * m + j] == x)?;
                right[(b * m + j) * p + k] = y;
            }
        }
        for i in 0..n {
            for k in 0..p {
                let mut want: Vec<(usize, usize)> = (0..m)
                    .map(|j| (left[(b * n + i) * m + j], right[(b * m + j) * p + k]))
                    .collect();
                let mut got = pairs[at(i, k)].clone();
                want.sort_unstable();
                got.sort_unstable();
                if want != got {
                    return None;
                }
            }
        }
    }
    if out.iter().enumerate().all(|(o, &pos)| o == pos) {
        out.clear();
    }
    Some((left, right, out, [batch, n, m, p]))
}

/// For every element of a tensor of shape `out`, the flat index of the element of a tensor of
/// shape `shape` that numpy broadcasting pairs with it (trailing axes aligned, axes of size 1
/// repeated).
fn broadcast_index(shape: &[usize], out: &[usize], node: &str) -> Result<Vec<usize>, CompileError> {
    let bad = || CompileError::Structure {
        node: node.into(),
        detail: format!("shape {shape:?} does not broadcast to {out:?}"),
    };
    if shape.len() > out.len() {
        return Err(bad());
    }
    let pad = out.len() - shape.len();
    let dims: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(shape.iter().copied())
        .collect();
    if dims.iter().zip(out).any(|(&d, &o)| d != o && d != 1) {
        return Err(bad());
    }
    let n: usize = out.iter().product();
    Ok((0..n)
        .map(|flat| {
            let (mut rest, mut idx, mut stride) = (flat, 0, 1);
            for (&d, &o) in dims.iter().zip(out).rev() {
                let i = rest % o;
                rest /= o;
                if d != 1 {
                    idx += i * stride;
                }
                stride *= d;
            }
            idx
        })
        .collect())
}

/// Builds the graph's ops: non-linear nodes become ops on *materialized* values (the model
/// input and the ops' outputs); affine nodes stay pending, as a set of materialized sources,
/// until a non-linear node or the output needs them, and are then one dense op over the
/// concatenation of their sources (how residual connections and concatenations of branches
/// become dense layers).
struct Walk<'m> {
    model: &'m Model,
    ops: Vec<Op>,
    /// Materialized outlets and their value ids (0: the input, `i + 1`: op `i`'s output).
    mat: HashMap<OutletId, usize>,
    /// Affine outlets not materialized yet, with the materialized outlets they depend on.
    pending: HashMap<OutletId, Vec<OutletId>>,
}

impl Walk<'_> {
    /// The value id of an outlet, materializing it (a dense op over its sources) if pending.
    fn value(&mut self, x: OutletId) -> Result<usize, CompileError> {
        if let Some(&v) = self.mat.get(&x) {
            return Ok(v);
        }
        let sources = self
            .pending
            .get(&x)
            .cloned()
            .ok_or_else(|| CompileError::Structure {
                node: self.model.node(x.node).name.clone(),
                detail: "a value that is neither computed nor affine in computed values".into(),
            })?;
        let ids: Vec<usize> = sources.iter().map(|o| self.mat[o]).collect();
        if ids != [self.ops.len()] {
            self.ops.push(Op::Concat {
                node: format!("{}/in", self.model.node(x.node).name),
                sources: ids,
            });
        }
        self.ops.push(dense_of_region(self.model, &sources, x)?);
        let v = self.ops.len();
        self.mat.insert(x, v);
        Ok(v)
    }

    /// Makes `x` the value the next op reads (the previous op's output).
    fn ready(&mut self, x: OutletId) -> Result<usize, CompileError> {
        let v = self.value(x)?;
        if v != self.ops.len() {
            self.ops.push(Op::Concat {
                node: format!("{}/read", self.model.node(x.node).name),
                sources: vec![v],
            });
        }
        Ok(v)
    }

    /// The materialized outlets an outlet depends on.
    fn sources_of(&self, x: OutletId) -> Option<Vec<OutletId>> {
        if self.mat.contains_key(&x) {
            return Some(vec![x]);
        }
        self.pending.get(&x).cloned()
    }
}

/// Softmax over `axes`, numerically stable and every step proven: the maximum of each group by
/// rounds of ReLUs (exact), `e = exp(min(s − max, 0))` by table (the `min` only makes the
/// function flat on both sides so its table is clamped: `s − max ≤ 0` holds for every honest
/// and every accepted witness), the group sums, their reciprocals `1/max(sum, 1)` by table (a
/// sum is at least the entry of the maximum, `exp(0) = 1`), and the products `e · (1/sum)`.
fn softmax_ops(
    w: &mut Walk<'_>,
    node: &TypedNode,
    x: OutletId,
    axes: &[usize],
) -> Result<(), CompileError> {
    let shape = concrete_shape(w.model, x)?;
    let (mut groups, mut group_of) = reduction_groups(&shape, axes);
    let (n, name) = (group_of.len(), node.name.clone());
    let scores = w.ready(x)?;
    // masked scores (a causal mask's fill value: a constant far below any score) have
    // probability exactly 0: they are left out (a group they would empty keeps them), and when
    // nothing else reads the scores their constants are dropped too
    let mut masked = vec![false; n];
    let only_reader = w.model.outlet_successors(x).len() == 1
        && !w.model.output_outlets().is_ok_and(|o| o.contains(&x));
    if let Some(Op::Dense {
        inputs,
        weights,
        bias,
        ..
    }) = scores.checked_sub(1).and_then(|i| w.ops.get_mut(i))
    {
        // a constant row (a `-inf` fill probes as NaN weights: -inf minus -inf)
        for (i, m) in masked.iter_mut().enumerate() {
            *m = weights.row(i, *inputs).all(|(_, v)| v.is_nan()) && bias[i] <= MASKED_SCORE;
        }
        for g in &groups {
            if g.iter().all(|&i| masked[i]) {
                g.iter().for_each(|&i| masked[i] = false);
            }
        }
        if only_reader && masked.contains(&true) {
            let mut rows = weights.rows(n, *inputs);
            for (i, _) in masked.iter().enumerate().filter(|(_, &m)| m) {
                rows[i].clear();
                bias[i] = 0.0;
            }
            *weights = Matrix::from_rows(rows, *inputs);
        }
    }
    // the unmasked scores, numbered
    let kept: Vec<usize> = (0..n).filter(|&i| !masked[i]).collect();
    let mut at = vec![usize::MAX; n];
    for (k, &i) in kept.iter().enumerate() {
        at[i] = k;
    }
    if kept.len() < n {
        for g in groups.iter_mut() {
            g.retain(|&i| !masked[i]);
        }
    }
    w.ops
        .extend(max_pool_ops(&format!("{name}/max"), &groups, n, false));
    let max = w.ops.len();
    w.ops.push(Op::Concat {
        node: format!("{name}/shift/in"),
        sources: vec![scores, max],
    });
    let shift: Vec<_> = kept
        .iter()
        .map(|&i| (vec![(i, 1.0), (n + group_of[i], -1.0)], 0.0))
        .collect();
    w.ops.push(sparse_dense(
        format!("{name}/shift"),
        n + groups.len(),
        &shift,
    ));
    w.ops.push(Op::Elementwise {
        node: format!("{name}/exp"),
        label: "Exp".into(),
        f: sampled(|v| v.min(0.0).exp()),
        coarser: 0,
    });
    let e = w.ops.len();
    let sums: Vec<_> = groups
        .iter()
        .map(|g| (g.iter().map(|&i| (at[i], 1.0)).collect(), 0.0))
        .collect();
    w.ops
        .push(sparse_dense(format!("{name}/sum"), kept.len(), &sums));
    w.ops.push(Op::Elementwise {
        node: format!("{name}/reciprocal"),
        label: "Reciprocal".into(),
        f: sampled(|v| 1.0 / v.max(1.0)),
        coarser: 0,
    });
    let recip = w.ops.len();
    group_of = kept.iter().map(|&i| group_of[i]).collect();
    if kept.len() == n {
        w.ops.push(Op::Product {
            node: name,
            operands: (e, recip),
            left: (0..n).collect(),
            right: group_of,
        });
        return Ok(());
    }
    w.ops.push(Op::Product {
        node: format!("{name}/kept"),
        operands: (e, recip),
        left: (0..kept.len()).collect(),
        right: group_of,
    });
    // the masked probabilities are zeros
    let rows: Vec<_> = (0..n)
        .map(|i| match masked[i] {
            true => (Vec::new(), 0.0),
            false => (vec![(at[i], 1.0)], 0.0),
        })
        .collect();
    w.ops.push(sparse_dense(name, kept.len(), &rows));
    Ok(())
}

/// `x / sqrt(mean(x²) + eps)` over `axis` (what tract makes of LayerNormalization once the mean
/// is subtracted; scale and shift stay affine): the squares (products), their means, the
/// reciprocal square root by table, and the products with it.
fn rms_norm_ops(
    w: &mut Walk<'_>,
    node: &TypedNode,
    x: OutletId,
    axis: usize,
    eps: f64,
) -> Result<(), CompileError> {
    let shape = concrete_shape(w.model, x)?;
    let (groups, group_of) = reduction_groups(&shape, &[axis]);
    let (n, name) = (group_of.len(), node.name.clone());
    let v = w.value(x)?;
    w.ops.push(Op::Product {
        node: format!("{name}/square"),
        operands: (v, v),
        left: (0..n).collect(),
        right: (0..n).collect(),
    });
    let means: Vec<_> = groups
        .iter()
        .map(|g| {
            let k = 1.0 / g.len() as f32;
            (g.iter().map(|&i| (i, k)).collect(), 0.0)
        })
        .collect();
    w.ops.push(sparse_dense(format!("{name}/mean"), n, &means));
    let ms = w.ops.len();
    // rsqrt changes by orders of magnitude over the means a layer can see: one table per
    // segment [t_k, t_(k+1)] (the function clamped to it, so flat outside and tabled at the
    // resolution the segment needs; each table reads the mean minus the segment's middle, so
    // that its symmetric clamp covers exactly the segment), the segments summed: a relative
    // error bounded alike from 2^-8 to the last bound, beyond which the mean is clamped
    let rsqrt = move |m: f64| 1.0 / (m + eps).sqrt();
    let mut parts = Vec::with_capacity(RSQRT_SEGMENTS.len());
    for (k, seg) in RSQRT_SEGMENTS.windows(2).enumerate() {
        let (lo, hi) = (seg[0], seg[1]);
        let mid = (lo + hi) / 2.0;
        let base = if k == 0 { 0.0 } else { rsqrt(lo) };
        w.ops.push(Op::Concat {
            node: format!("{name}/rsqrt{k}/in"),
            sources: vec![ms],
        });
        w.ops.push(sparse_dense(
            format!("{name}/rsqrt{k}/in"),
            groups.len(),
            &(0..groups.len())
                .map(|g| (vec![(g, 1.0)], -mid as f32))
                .collect::<Vec<_>>(),
        ));
        w.ops.push(Op::Elementwise {
            node: format!("{name}/rsqrt{k}"),
            label: format!("Rsqrt[{lo}, {hi}]"),
            // flat beyond ±(hi − lo)/2: sampled finely over twice that, the clamp's corners on
            // sample points
            f: sampled_on(hi - lo, 1 << 16, move |u| {
                rsqrt((u + mid).clamp(lo, hi)) - base
            }),
            coarser: RSQRT_COARSER,
        });
        parts.push(w.ops.len());
    }
    w.ops.push(Op::Concat {
        node: format!("{name}/rsqrt/in"),
        sources: parts.clone(),
    });
    let sum: Vec<_> = (0..groups.len())
        .map(|g| {
            let row = (0..parts.len())
                .map(|k| (k * groups.len() + g, 1.0))
                .collect();
            (row, 0.0)
        })
        .collect();
    w.ops.push(sparse_dense(
        format!("{name}/rsqrt"),
        parts.len() * groups.len(),
        &sum,
    ));
    let r = w.ops.len();
    w.ops.push(Op::Product {
        node: format!("{name}/scale"),
        operands: (v, r),
        left: (0..n).collect(),
        right: group_of,
    });
    // |x_i| ≤ sqrt(len · mean(x²)): every output lies within ±sqrt(len), which interval
    // arithmetic cannot see (it bounds x and the reciprocal apart). A clamp the circuit
    // enforces (two ReLU layers) makes it a bound for every later layer; it only acts on the
    // rounding of nearly constant rows.
    let len = groups.iter().map(Vec::len).max().unwrap_or(1) as f32;
    let bound = len.sqrt() * 1.0625 + 0.0625;
    w.ops.extend(piecewise_ops(
        &format!("{name}/floor"),
        &Piece::Max(vec![-bound; n]),
        n,
    ));
    w.ops
        .extend(piecewise_ops(&name, &Piece::Min(vec![bound; n]), n));
    Ok(())
}

/// Reduces a loaded, typed and decluttered tract model to the project's [`Graph`].
fn graph_from_typed(model: &Model) -> Result<Graph, CompileError> {
    let inputs = model.input_outlets().map_err(|e| CompileError::Structure {
        node: "input".into(),
        detail: e.to_string(),
    })?;
    let outputs = model
        .output_outlets()
        .map_err(|e| CompileError::Structure {
            node: "output".into(),
            detail: e.to_string(),
        })?;
    if inputs.len() != 1 || outputs.len() != 1 {
        return Err(CompileError::Structure {
            node: "graph".into(),
            detail: format!(
                "{} inputs and {} outputs; VeriML proves models with exactly one of each",
                inputs.len(),
                outputs.len()
            ),
        });
    }
    let input_shape = concrete_shape(model, inputs[0])?;
    let output_shape = concrete_shape(model, outputs[0])?;
    let order = model.eval_order().map_err(|e| CompileError::Structure {
        node: "graph".into(),
        detail: e.to_string(),
    })?;
    let mut w = Walk {
        model,
        ops: Vec::new(),
        mat: HashMap::from([(inputs[0], 0)]),
        pending: HashMap::new(),
    };
    let mut taken: HashSet<usize> = HashSet::new();
    'nodes: for (pos, &id) in order.iter().enumerate() {
        let node = model.node(id);
        if node.op_is::<TypedSource>() || node.op_is::<Const>() || taken.contains(&id) {
            continue;
        }
        if node.outputs.len() != 1 {
            return Err(unsupported(node));
        }
        let out = OutletId::new(id, 0);
        let computed: Vec<(usize, OutletId)> = node
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, o)| const_of(model, **o).is_none())
            .map(|(i, o)| (i, *o))
            .collect();
        if computed.is_empty() {
            return Err(CompileError::Structure {
                node: node.name.clone(),
                detail: "computes from constants only (not folded by the importer)".into(),
            });
        }
        // token embeddings: a constant [vocab, dim] matrix gathered by the (integer) input
        if let Some(g) = node.op_as::<Gather>() {
            let indices = node.inputs.get(1).copied();
            if let (Some(table), Some(ids)) = (const_of(model, node.inputs[0]), indices) {
                if computed.len() == 1 && computed[0].1 == ids {
                    let op = embedding_op(model, node, g.axis, &table, ids, inputs[0])?;
                    w.ready(ids)?;
                    w.ops.push(op);
                    w.mat.insert(out, w.ops.len());
                    continue;
                }
            }
        }
        // a non-linear element-wise function of one activation, possibly over several nodes
        // (GELU reads `x` twice): one table lookup
        let piecewise = node
            .op_as::<ElementWiseOp>()
            .is_some_and(|e| e.0.is::<LeakyRelu>());
        let candidate = (node.op_is::<ElementWiseOp>() && !piecewise)
            || node.op_is::<TypedBinOp>()
            || computed
                .iter()
                .any(|(_, x)| model.outlet_successors(*x).len() > 1);
        if candidate {
            for &(_, x) in &computed {
                if let Some((nodes, region_out)) = element_region(model, &order, pos, x) {
                    let f = sample_region(model, &nodes, x)?;
                    w.ready(x)?;
                    w.ops.push(Op::Elementwise {
                        node: model.node(region_out.node).name.clone(),
                        label: region_label(model, &nodes),
                        f: Arc::new(f),
                        coarser: 0,
                    });
                    w.mat.insert(region_out, w.ops.len());
                    taken.extend(nodes);
                    continue 'nodes;
                }
            }
        }
        if computed.len() > 1 {
            // sums, differences and concatenations of activations are affine in them
            let linear = node.op_is::<TypedConcat>()
                || node
                    .op_as::<TypedBinOp>()
                    .is_some_and(|b| b.0.is::<Add>() || b.0.is::<Sub>());
            if node.op_is::<EinSum>() && computed.len() == 2 {
                // a product of two activations summed over an axis: a batched matrix product,
                // or else one product per multiply-accumulate and their sums
                let (xa, xb) = (computed[0].1, computed[1].1);
                let pairs = bilinear_pairs(model, node, xa, xb)?;
                let (va, vb) = (w.value(xa)?, w.value(xb)?);
                // a batched matrix product (either operand first): the matrix-product chip
                let swapped: Vec<Vec<(usize, usize)>> = pairs
                    .iter()
                    .map(|ps| ps.iter().map(|&(p, q)| (q, p)).collect())
                    .collect();
                let found = matmul_structure(&pairs)
                    .map(|m| (m, (va, vb)))
                    .or_else(|| matmul_structure(&swapped).map(|m| (m, (vb, va))));
                if let Some(((left, right, order, dims), operands)) = found {
                    w.ops.push(Op::MatMul {
                        node: node.name.clone(),
                        operands,
                        left,
                        right,
                        order,
                        dims,
                    });
                    w.mat.insert(out, w.ops.len());
                    continue;
                }
                let (mut left, mut right, mut rows) = (Vec::new(), Vec::new(), Vec::new());
                for ps in &pairs {
                    let row = ps
                        .iter()
                        .map(|&(p, q)| {
                            left.push(p);
                            right.push(q);
                            (left.len() - 1, 1.0)
                        })
                        .collect();
                    rows.push((row, 0.0));
                }
                w.ops.push(Op::Product {
                    node: format!("{}/macs", node.name),
                    operands: (va, vb),
                    left,
                    right,
                });
                let macs = pairs.iter().map(Vec::len).sum();
                w.ops.push(sparse_dense(node.name.clone(), macs, &rows));
                w.mat.insert(out, w.ops.len());
                continue;
            }
            let product = node.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Mul>());
            let divide = node.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Div>());
            if (product || (divide && computed[0].0 == 0)) && computed.len() == 2 {
                // the product of two activations, broadcast like numpy: each output reads one
                // element of each factor; a quotient is the numerator times the denominator's
                // reciprocal (by table)
                let (xa, xb) = (computed[0].1, computed[1].1);
                let (sa, sb) = (concrete_shape(model, xa)?, concrete_shape(model, xb)?);
                let so = concrete_shape(model, out)?;
                let (left, right) = (
                    broadcast_index(&sa, &so, &node.name)?,
                    broadcast_index(&sb, &so, &node.name)?,
                );
                let va = w.value(xa)?;
                let vb = if divide {
                    w.ready(xb)?;
                    w.ops.push(Op::Elementwise {
                        node: format!("{}/reciprocal", node.name),
                        label: "Reciprocal".into(),
                        f: sampled(reciprocal),
                        coarser: 0,
                    });
                    w.ops.len()
                } else {
                    w.value(xb)?
                };
                w.ops.push(Op::Product {
                    node: node.name.clone(),
                    operands: (va, vb),
                    left,
                    right,
                });
                w.mat.insert(out, w.ops.len());
                continue;
            }
            if !linear {
                return Err(CompileError::UnsupportedOp {
                    op: node.op.name().to_string(),
                    node: node.name.clone(),
                    needed: "a product of two activations (attention's MatMul, gating) needs its own chip; VeriML supports sums, differences and concatenations of activations, and element-wise functions of one activation".into(),
                });
            }
            let mut srcs: Vec<OutletId> = Vec::new();
            for &(_, x) in &computed {
                for s in w.sources_of(x).expect("an earlier node") {
                    if !srcs.contains(&s) {
                        srcs.push(s);
                    }
                }
            }
            w.pending.insert(out, srcs);
            continue;
        }
        let (slot, x) = computed[0];
        if let Some(sm) = node.op_as::<Softmax>() {
            if sm.kind != SoftmaxKind::Softmax {
                return Err(unsupported(node));
            }
            softmax_ops(&mut w, node, x, &sm.axes)?;
            w.mat.insert(out, w.ops.len());
            continue;
        }
        if let Some(rn) = node.op_as::<RmsNorm>() {
            let eps = rn
                .eps
                .cast_to_scalar::<f32>()
                .map_err(|e| CompileError::Structure {
                    node: node.name.clone(),
                    detail: format!("epsilon: {e}"),
                })? as f64;
            rms_norm_ops(&mut w, node, x, rn.axis, eps)?;
            w.mat.insert(out, w.ops.len());
            continue;
        }
        let kind = classify(model, node, slot)?;
        match kind {
            Kind::Affine => {
                // squeezes and reshapes of a computed value keep its data order: the same value
                let keeps_order = node
                    .op_as::<AxisOp>()
                    .is_some_and(|a| !matches!(a, AxisOp::Move(..)));
                match w.mat.get(&x) {
                    Some(&v) if keeps_order => {
                        w.mat.insert(out, v);
                    }
                    _ => {
                        let srcs = w.sources_of(x).expect("an earlier node");
                        w.pending.insert(out, srcs);
                    }
                }
            }
            Kind::Relu => {
                w.ready(x)?;
                w.ops.push(Op::Relu {
                    node: node.name.clone(),
                });
                w.mat.insert(out, w.ops.len());
            }
            Kind::MaxConst | Kind::MinConst | Kind::Leaky(_) => {
                let shape = concrete_shape(model, x)?;
                let n: usize = shape.iter().product();
                let piece = match kind {
                    Kind::Leaky(alpha) => Piece::Leaky(alpha),
                    // the constant, broadcast to the activation: the node on an extreme input
                    Kind::MaxConst => Piece::Max(extreme(model, node, x, -1e30)?),
                    _ => Piece::Min(extreme(model, node, x, 1e30)?),
                };
                w.ready(x)?;
                w.ops.extend(piecewise_ops(&node.name, &piece, n));
                w.mat.insert(out, w.ops.len());
            }
            Kind::ReduceMax(axes, min) => {
                // the maximum of each group by rounds of ReLUs (the minimum: of the negations)
                let shape = concrete_shape(model, x)?;
                let (groups, _) = reduction_groups(&shape, &axes);
                let n: usize = shape.iter().product();
                let v = w.ready(x)?;
                let nonneg = !min && v > 0 && matches!(w.ops[v - 1], Op::Relu { .. });
                let negate = |name: String| {
                    let rows: Vec<_> = (0..n).map(|i| (vec![(i, -1.0)], 0.0)).collect();
                    sparse_dense(name, n, &rows)
                };
                if min {
                    w.ops.push(negate(format!("{}/neg", node.name)));
                }
                w.ops.extend(max_pool_ops(&node.name, &groups, n, nonneg));
                if min {
                    let k = groups.len();
                    let rows: Vec<_> = (0..k).map(|i| (vec![(i, -1.0)], 0.0)).collect();
                    w.ops
                        .push(sparse_dense(format!("{}/min", node.name), k, &rows));
                }
                w.mat.insert(out, w.ops.len());
            }
            Kind::MaxPool => {
                let shape = concrete_shape(model, x)?;
                let windows = pool_windows(model, node, x)?;
                let v = w.ready(x)?;
                // the output of a ReLU is non-negative
                let nonneg = v > 0 && matches!(w.ops[v - 1], Op::Relu { .. });
                w.ops.extend(max_pool_ops(
                    &node.name,
                    &windows,
                    shape.iter().product(),
                    nonneg,
                ));
                w.mat.insert(out, w.ops.len());
            }
        }
    }
    w.ready(outputs[0])?;
    if w.ops.is_empty() {
        return Err(CompileError::Structure {
            node: "graph".into(),
            detail: "the model computes nothing the circuit could prove (no layer)".into(),
        });
    }
    Ok(Graph {
        input_shape,
        output_shape,
        ops: fuse_dense(w.ops),
    })
}

/// Loads an ONNX model from bytes; `path` names it in errors.
pub fn graph_from_onnx_bytes(bytes: &[u8], path: &Path) -> Result<Graph, CompileError> {
    let load = |reason: String| CompileError::Load {
        path: path.to_path_buf(),
        reason,
    };
    let onnx = tract_onnx::onnx();
    let inference = onnx
        .model_for_read(&mut &bytes[..])
        .map_err(|e| load(format!("{e:#}")))?;
    let typed = inference.into_typed().map_err(|e| {
        let msg = format!("{e:#}");
        // tract names the failing node in its message; keep it whole
        load(format!("cannot type the graph: {msg}"))
    })?;
    let typed = typed
        .into_decluttered()
        .map_err(|e| load(format!("cannot simplify the graph: {e:#}")))?;
    graph_from_typed(&typed)
}

/// Loads an ONNX file.
pub fn load_onnx(path: &Path) -> Result<Graph, CompileError> {
    let bytes = std::fs::read(path).map_err(|e| CompileError::Load {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    graph_from_onnx_bytes(&bytes, path)
}
