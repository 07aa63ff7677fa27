//! ONNX import: the only module that knows about tract.
//!
//! The model is loaded with `tract-onnx`, made typed and decluttered, then walked in
//! topological order. Nodes are matched by their op *type* (not by name):
//! - chains of affine operations on the single activation tensor (`EinSum` with a constant
//!   operand, which is what `Gemm`/`MatMul` become; `Conv` with constant kernels; sum and
//!   average pooling, sum reductions; padding, slices and concatenation with constants;
//!   `Add`/`Sub`/`Mul`/`Div` by a constant; axis changes and reshapes) are collapsed into one
//!   [`Op::Dense`] whose matrix and bias are read off by evaluating the chain on the zero vector
//!   and the unit vectors (a convolution becomes its sparse Toeplitz matrix: the circuit skips
//!   zero weights and pages its outputs, so its rows grow with the feature maps, not MACs);
//! - `Max` with a constant zero (what `Relu` becomes) is [`Op::Relu`];
//! - `MaxPool` becomes ReLU layers taking maxima of pairs (windows found by probing the op),
//!   exact in the quantized model; `Max`/`Min` with constants (what `Clip`, ReLU6 and
//!   `HardSigmoid` become) and `LeakyRelu` become one ReLU between two dense ops; consecutive
//!   dense ops are composed into one.
//!
//! Anything else is an [`CompileError::UnsupportedOp`] naming the op and its node.

use crate::error::CompileError;
use crate::graph::{Graph, Op, Samples};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::{
    array::{Pad, Slice, TypedConcat},
    binary::TypedBinOp,
    change_axes::AxisOp,
    cnn::{Conv, MaxPool, SumPool},
    einsum::EinSum,
    element_wise::ElementWiseOp,
    konst::Const,
    math::{Add, Div, Max, Min, Mul, Sub},
    nn::{LeakyRelu, Reduce, Reducer},
    source::TypedSource,
};

const SUPPORTED: &str = "VeriML supports Gemm and MatMul with constant weights, Conv, AveragePool, GlobalAveragePool, ReduceSum/ReduceMean, Pad, Slice, Concat with constants, Add/Sub/Mul/Div by constants, Relu, LeakyRelu, Clip, HardSigmoid, Max/Min with constants, MaxPool, element-wise functions of one activation (Sigmoid, Tanh, Erf, Exp, HardSwish, GELU, Softplus, ... and their compositions), Flatten, Reshape and Transpose; this operation needs its own circuit chip";

/// Where an element-wise function is sampled (beyond it, extrapolated linearly) and how finely.
const SAMPLE_RANGE: f64 = 1024.0;
const SAMPLE_STEP: f64 = 1.0 / 256.0;

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
            .is_some_and(|r| matches!(r.reducer, Reducer::Sum));
    if linear {
        return Ok(Kind::Affine);
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

/// Evaluates a chain of affine nodes on one input tensor.
fn eval_chain(
    model: &Model,
    chain: &[(usize, usize)],
    input: Tensor,
) -> Result<Tensor, CompileError> {
    let mut x = input;
    for &(id, slot) in chain {
        let node = model.node(id);
        let inputs: TVec<TValue> = node
            .inputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                if i == slot {
                    x.clone().into_tvalue()
                } else {
                    const_of(model, *o).expect("checked constant").into_tvalue()
                }
            })
            .collect();
        let out = node
            .op
            .eval_out_of_plan(inputs)
            .map_err(|e| CompileError::Structure {
                node: node.name.clone(),
                detail: format!("cannot evaluate: {e}"),
            })?
            .ok_or_else(|| unsupported(node))?;
        x = out[0].clone().into_tensor();
    }
    Ok(x)
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

/// Evaluates a chain on each unit vector of `in_shape`, handing `f` the input index and the
/// output (what a dense layer's columns and a pool's windows are read off).
fn probe_units(
    model: &Model,
    chain: &[(usize, usize)],
    in_shape: &[usize],
    node: &str,
    mut f: impl FnMut(usize, Vec<f32>),
) -> Result<(), CompileError> {
    let n_in: usize = in_shape.iter().product();
    for i in 0..n_in {
        let mut v = vec![0f32; n_in];
        v[i] = 1.0;
        let out = eval_chain(model, chain, tensor_of(in_shape, v, node)?)?;
        f(i, to_f32_vec(&out, node)?);
    }
    Ok(())
}

/// Collapses an affine chain into a dense layer by evaluating it on 0 and unit vectors.
fn dense_of_chain(
    model: &Model,
    chain: &[(usize, usize)],
    in_shape: &[usize],
) -> Result<Op, CompileError> {
    let name = model.node(chain.last().expect("non-empty").0).name.clone();
    let n_in: usize = in_shape.iter().product();
    let zero = tensor_of(in_shape, vec![0f32; n_in], &name)?;
    let bias = to_f32_vec(&eval_chain(model, chain, zero)?, &name)?;
    let n_out = bias.len();
    let mut weights = vec![0f32; n_out * n_in];
    probe_units(model, chain, in_shape, &name, |i, col| {
        for o in 0..n_out {
            weights[o * n_in + i] = col[o] - bias[o];
        }
    })?;
    Ok(Op::Dense {
        node: name,
        inputs: n_in,
        outputs: n_out,
        weights,
        bias,
    })
}

/// The window of every output of a max-pooling node, found by probing the op itself on unit
/// vectors (an input is in an output's window iff a lone 1 there makes that output 1), so
/// kernel, strides, dilations and padding need no geometry of our own.
fn pool_windows(
    model: &Model,
    node: &TypedNode,
    in_shape: &[usize],
) -> Result<Vec<Vec<usize>>, CompileError> {
    let mut windows: Vec<Vec<usize>> = Vec::new();
    probe_units(model, &[(node.id, 0)], in_shape, &node.name, |i, out| {
        if windows.is_empty() {
            windows = vec![Vec::new(); out.len()];
        }
        for (o, &y) in out.iter().enumerate() {
            if y > 0.5 {
                windows[o].push(i);
            }
        }
    })?;
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
    let mut weights = vec![0f32; rows.len() * inputs];
    for (o, (row, _)) in rows.iter().enumerate() {
        for &(i, v) in row {
            weights[o * inputs + i] += v;
        }
    }
    Op::Dense {
        node,
        inputs,
        outputs: rows.len(),
        weights,
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
    shape: &[usize],
    value: f32,
) -> Result<Vec<f32>, CompileError> {
    let n: usize = shape.iter().product();
    let t = tensor_of(shape, vec![value; n], &node.name)?;
    let out = to_f32_vec(&eval_chain(model, &[(node.id, 0)], t)?, &node.name)?;
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

/// Composes consecutive dense ops (reshapes between them move no data) into one.
fn fuse_dense(ops: Vec<Op>) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    for op in ops {
        let size = |o: &Op| match o {
            Op::Dense {
                inputs, outputs, ..
            } => Some((*inputs, *outputs)),
            _ => None,
        };
        // the work is the second op's nonzero weights times the first op's inputs
        let cheap = |i: usize| match (size(&out[i]), &op) {
            (Some((inputs, _)), Op::Dense { weights, .. }) => {
                let nonzero = weights.iter().filter(|&&w| w != 0.0).count();
                inputs.saturating_mul(nonzero) <= FUSE_BUDGET
            }
            _ => false,
        };
        let prev = out
            .iter()
            .rposition(|o| !matches!(o, Op::Reshape { .. }))
            .filter(|&i| matches!(out[i], Op::Dense { .. }) && cheap(i));
        match (op, prev) {
            (
                Op::Dense {
                    node,
                    outputs,
                    weights: w2,
                    bias: b2,
                    ..
                },
                Some(i),
            ) => {
                let Op::Dense {
                    inputs,
                    outputs: mid,
                    weights: w1,
                    bias: b1,
                    ..
                } = &out[i]
                else {
                    unreachable!("checked dense")
                };
                let (inputs, mid) = (*inputs, *mid);
                let mut weights = vec![0f32; outputs * inputs];
                let mut bias = b2.clone();
                for o in 0..outputs {
                    for m in 0..mid {
                        let v = w2[o * mid + m];
                        if v == 0.0 {
                            continue;
                        }
                        bias[o] += v * b1[m];
                        let row = &w1[m * inputs..(m + 1) * inputs];
                        for (acc, &x) in weights[o * inputs..(o + 1) * inputs].iter_mut().zip(row) {
                            *acc += v * x;
                        }
                    }
                }
                out.truncate(i);
                out.push(Op::Dense {
                    node,
                    inputs,
                    outputs,
                    weights,
                    bias,
                });
            }
            (op, _) => out.push(op),
        }
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
/// `start` while each node reads only `x`, the region's own tensors and scalars; it ends at the
/// last node where a single tensor leaves it. Returns the nodes and the output, if the region
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
    let mut values: HashMap<OutletId, TValue> = HashMap::new();
    values.insert(x, tensor_of(&[n], xs, &name)?.into_tvalue());
    let mut last = None;
    for &id in nodes {
        let node = model.node(id);
        let inputs: TVec<TValue> = node
            .inputs
            .iter()
            .map(|o| match values.get(o) {
                Some(v) => v.clone(),
                None => const_of(model, *o).expect("checked constant").into_tvalue(),
            })
            .collect();
        let out = node
            .op
            .eval_out_of_plan(inputs)
            .map_err(|e| CompileError::Structure {
                node: node.name.clone(),
                detail: format!("cannot evaluate: {e}"),
            })?
            .ok_or_else(|| unsupported(node))?;
        let v = out[0].clone();
        values.insert(OutletId::new(id, 0), v.clone());
        last = Some(v);
    }
    let ys = to_f32_vec(&last.expect("a region").into_tensor(), &name)?;
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
    let mut current = inputs[0];
    let mut current_shape = input_shape.clone();
    let mut ops: Vec<Op> = Vec::new();
    let mut chain: Vec<(usize, usize)> = Vec::new();
    let mut chain_in_shape = input_shape.clone();
    let flush = |chain: &mut Vec<(usize, usize)>,
                 ops: &mut Vec<Op>,
                 in_shape: &[usize]|
     -> Result<(), CompileError> {
        if chain.is_empty() {
            return Ok(());
        }
        let only_reshapes = chain
            .iter()
            .all(|&(id, _)| model.node(id).op_is::<AxisOp>());
        if only_reshapes {
            let last = model.node(chain.last().expect("non-empty").0);
            let shape = concrete_shape(model, OutletId::new(last.id, 0))?;
            ops.push(Op::Reshape {
                node: last.name.clone(),
                shape,
            });
        } else {
            ops.push(dense_of_chain(model, chain, in_shape)?);
        }
        chain.clear();
        Ok(())
    };
    let mut taken: HashSet<usize> = HashSet::new();
    for (pos, &id) in order.iter().enumerate() {
        let node = model.node(id);
        if node.op_is::<TypedSource>() || node.op_is::<Const>() || taken.contains(&id) {
            continue;
        }
        // a non-linear element-wise function of the activation, possibly over several nodes
        // (GELU reads `x` twice): one table lookup
        let piecewise = node
            .op_as::<ElementWiseOp>()
            .is_some_and(|e| e.0.is::<LeakyRelu>());
        let candidate = (node.op_is::<ElementWiseOp>() && !piecewise)
            || model.outlet_successors(current).len() > 1
            || node.op_is::<TypedBinOp>();
        if candidate && node.inputs.contains(&current) {
            if let Some((nodes, out)) = element_region(model, &order, pos, current) {
                flush(&mut chain, &mut ops, &chain_in_shape)?;
                let f = sample_region(model, &nodes, current)?;
                let last = model.node(out.node);
                ops.push(Op::Elementwise {
                    node: last.name.clone(),
                    label: region_label(model, &nodes),
                    f: Arc::new(f),
                });
                taken.extend(nodes);
                current = out;
                continue;
            }
        }
        let slots: Vec<usize> = node
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, o)| const_of(model, **o).is_none())
            .map(|(i, _)| i)
            .collect();
        if slots.len() != 1 || node.inputs[slots[0]] != current {
            return Err(CompileError::Structure {
                node: node.name.clone(),
                detail: "the graph is not a single chain of operations on the input (branches or several computed operands)".into(),
            });
        }
        if node.outputs.len() != 1 {
            return Err(unsupported(node));
        }
        let consumers = model.outlet_successors(current).len();
        if consumers > 1 {
            return Err(CompileError::Structure {
                node: node.name.clone(),
                detail: "a tensor is used by several nodes (branches are not supported yet)".into(),
            });
        }
        let out_shape = concrete_shape(model, OutletId::new(id, 0))?;
        let kind = classify(model, node, slots[0])?;
        match kind {
            Kind::Affine => {
                if chain.is_empty() {
                    chain_in_shape = current_shape.clone();
                }
                chain.push((id, slots[0]));
            }
            Kind::Relu => {
                flush(&mut chain, &mut ops, &chain_in_shape)?;
                ops.push(Op::Relu {
                    node: node.name.clone(),
                });
            }
            Kind::MaxConst | Kind::MinConst | Kind::Leaky(_) => {
                flush(&mut chain, &mut ops, &chain_in_shape)?;
                let n: usize = current_shape.iter().product();
                let piece = match kind {
                    Kind::Leaky(alpha) => Piece::Leaky(alpha),
                    // the constant, broadcast to the activation: the node on an extreme input
                    Kind::MaxConst => Piece::Max(extreme(model, node, &current_shape, -1e30)?),
                    _ => Piece::Min(extreme(model, node, &current_shape, 1e30)?),
                };
                ops.extend(piecewise_ops(&node.name, &piece, n));
            }
            Kind::MaxPool => {
                flush(&mut chain, &mut ops, &chain_in_shape)?;
                let windows = pool_windows(model, node, &current_shape)?;
                // after a ReLU (reshapes aside) every value is non-negative
                let nonneg = matches!(
                    ops.iter()
                        .rev()
                        .find(|op| !matches!(op, Op::Reshape { .. })),
                    Some(Op::Relu { .. })
                );
                ops.extend(max_pool_ops(
                    &node.name,
                    &windows,
                    current_shape.iter().product(),
                    nonneg,
                ));
            }
        }
        current = OutletId::new(id, 0);
        current_shape = out_shape;
    }
    flush(&mut chain, &mut ops, &chain_in_shape)?;
    let ops = fuse_dense(ops);
    if current != outputs[0] {
        return Err(CompileError::Structure {
            node: model.node(outputs[0].node).name.clone(),
            detail: "the output is not the end of the operation chain".into(),
        });
    }
    Ok(Graph {
        input_shape,
        output_shape,
        ops,
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
