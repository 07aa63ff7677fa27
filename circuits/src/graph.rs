//! The project's own small, typed graph of operations.
//!
//! ONNX import (see [`crate::import`]) reduces a model to this representation; quantization
//! (see [`crate::quantize`]) and the circuit only ever see it. Tensors are stored flat in
//! row-major order, so reshapes do not move data.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An element-wise function of one variable, sampled where the importer evaluated it: values
/// at `lo + i·step`; linear interpolation between samples and linear extrapolation beyond them
/// (exact for the linear tails of GELU, softplus and the like, flat for saturating ones).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    pub lo: f64,
    pub step: f64,
    pub values: Vec<f64>,
}

impl Samples {
    /// The function at `x`.
    pub fn eval(&self, x: f64) -> f64 {
        let n = self.values.len();
        if n == 1 {
            return self.values[0];
        }
        let t = (x - self.lo) / self.step;
        let i = (t.floor().max(0.0) as usize).min(n - 2);
        let frac = t - i as f64;
        self.values[i] + frac * (self.values[i + 1] - self.values[i])
    }
}

/// A `[rows, cols]` matrix, dense (row-major) or as the nonzeros of each row (what
/// convolutions and pooling give: most of their dense matrix is zeros). A dense one serializes
/// as a plain list, so the compiled files of dense layers read as before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Matrix<T> {
    Dense(Vec<T>),
    Sparse {
        /// Per row, `(column, value)` of its nonzeros, by column.
        nonzeros: Vec<Vec<(usize, T)>>,
    },
}

impl<T> From<Vec<T>> for Matrix<T> {
    fn from(v: Vec<T>) -> Self {
        Matrix::Dense(v)
    }
}

impl<T: Copy + Default + PartialEq> Matrix<T> {
    /// From the nonzeros of each row: sparse when at most a quarter of the entries are nonzero.
    pub fn from_rows(rows: Vec<Vec<(usize, T)>>, cols: usize) -> Self {
        let nnz: usize = rows.iter().map(Vec::len).sum();
        if nnz.saturating_mul(4) <= rows.len().saturating_mul(cols) {
            let mut rows = rows;
            rows.iter_mut().for_each(|r| {
                r.retain(|e| e.1 != T::default());
                r.sort_by_key(|e| e.0);
            });
            return Matrix::Sparse { nonzeros: rows };
        }
        let mut v = vec![T::default(); rows.len() * cols];
        for (o, r) in rows.iter().enumerate() {
            for &(j, w) in r {
                v[o * cols + j] = w;
            }
        }
        Matrix::Dense(v)
    }

    /// The nonzero entries `(column, value)` of row `o` (`cols` columns).
    pub fn row(&self, o: usize, cols: usize) -> impl Iterator<Item = (usize, T)> + '_ {
        let (dense, sparse) = match self {
            Matrix::Dense(v) => (Some(v[o * cols..(o + 1) * cols].iter().copied()), None),
            Matrix::Sparse { nonzeros } => (None, Some(nonzeros[o].iter().copied())),
        };
        dense
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|e| e.1 != T::default())
            .chain(sparse.into_iter().flatten())
    }

    /// The entry at `(o, j)`.
    pub fn get(&self, o: usize, j: usize, cols: usize) -> T {
        match self {
            Matrix::Dense(v) => v[o * cols + j],
            Matrix::Sparse { nonzeros } => nonzeros[o]
                .binary_search_by_key(&j, |e| e.0)
                .map_or(T::default(), |i| nonzeros[o][i].1),
        }
    }

    /// Every row's nonzeros.
    pub fn rows(&self, rows: usize, cols: usize) -> Vec<Vec<(usize, T)>> {
        (0..rows).map(|o| self.row(o, cols).collect()).collect()
    }

    /// Whether it is a `[rows, cols]` matrix (sparse rows sorted, in range).
    pub fn fits(&self, rows: usize, cols: usize) -> bool {
        match self {
            Matrix::Dense(v) => v.len() == rows * cols,
            Matrix::Sparse { nonzeros } => {
                nonzeros.len() == rows
                    && nonzeros.iter().all(|r| {
                        r.windows(2).all(|w| w[0].0 < w[1].0) && r.iter().all(|e| e.0 < cols)
                    })
            }
        }
    }

    /// Applies `f` to every stored entry.
    pub fn map<U: Copy + Default + PartialEq>(&self, f: impl Fn(T) -> U) -> Matrix<U> {
        match self {
            Matrix::Dense(v) => Matrix::Dense(v.iter().map(|&x| f(x)).collect()),
            Matrix::Sparse { nonzeros } => Matrix::Sparse {
                nonzeros: nonzeros
                    .iter()
                    .map(|r| r.iter().map(|&(j, x)| (j, f(x))).collect())
                    .collect(),
            },
        }
    }

    /// The stored entries (every entry of a dense matrix, the nonzeros of a sparse one).
    pub fn values(&self) -> Box<dyn Iterator<Item = T> + '_> {
        match self {
            Matrix::Dense(v) => Box::new(v.iter().copied()),
            Matrix::Sparse { nonzeros } => Box::new(nonzeros.iter().flatten().map(|e| e.1)),
        }
    }

    /// The dense entries, to edit (tests).
    pub fn dense_mut(&mut self) -> Option<&mut Vec<T>> {
        match self {
            Matrix::Dense(v) => Some(v),
            Matrix::Sparse { .. } => None,
        }
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One operation of a float model, in execution order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `y = W x + b` with `W` of shape `[outputs, inputs]`.
    Dense {
        /// Name of the ONNX node this came from.
        node: String,
        inputs: usize,
        outputs: usize,
        weights: Matrix<f32>,
        bias: Vec<f32>,
    },
    /// `y = max(x, 0)`, element-wise.
    Relu { node: String },
    /// A change of shape without moving data (`Flatten`, `Reshape`, squeezes).
    Reshape { node: String, shape: Vec<usize> },
    /// The concatenation of earlier values (0: the model input, `i + 1`: the output of op `i`),
    /// read by the next op: how a graph with branches (residual connections) is written.
    Concat { node: String, sources: Vec<usize> },
    /// `y = f(x)` element-wise for a non-linear function (`Sigmoid`, `Tanh`, `Erf`, `Exp`,
    /// GELU, ...): proven by a lookup table.
    Elementwise {
        node: String,
        /// What it computes, for reports (the ONNX op or pattern).
        label: String,
        f: Arc<Samples>,
        /// How many bits fewer than `--lookup-bits` its table needs (a function the importer
        /// cut into segments, each needing less resolution); 0 for the others.
        #[serde(default, skip_serializing_if = "is_zero")]
        coarser: u32,
    },
    /// The product of two earlier values (ids as in [`Op::Concat`]), element by element after
    /// a selection of each (how broadcasting is written): `y_o = a[left[o]] · b[right[o]]`
    /// with `a`, `b` the values `operands.0`, `operands.1`.
    Product {
        node: String,
        operands: (usize, usize),
        left: Vec<usize>,
        right: Vec<usize>,
    },
    /// Token embeddings: the model input holds integer token ids `0..vocab`, and output
    /// `t·dim + d` is `table[id_t·dim + d]` (ONNX's `Gather` of a constant `[vocab, dim]`
    /// matrix by the input). Reads the input.
    Embedding {
        node: String,
        vocab: usize,
        dim: usize,
        table: Vec<f32>,
    },
    /// A batched matrix product of two earlier values: `C[b,i,k] = Σ_j A[b,i,j]·B[b,j,k]` with
    /// `A[b,i,j] = a[left[(b·n + i)·m + j]]` and `B[b,j,k] = b[right[(b·m + j)·p + k]]`;
    /// `dims = [batch, n, m, p]`. Output `o` is `C` at position `order[o] = (b·n + i)·p + k`
    /// (`order` empty: output `o` is position `o`).
    MatMul {
        node: String,
        operands: (usize, usize),
        left: Vec<usize>,
        right: Vec<usize>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        order: Vec<usize>,
        dims: [usize; 4],
    },
}

impl Op {
    /// The values (ids as in [`Op::Concat`]) the op names explicitly: a concatenation's
    /// sources, a product's operands (other ops read the previous value).
    pub fn reads(&self) -> Vec<usize> {
        match self {
            Op::Concat { sources, .. } => sources.clone(),
            Op::Product {
                operands: (a, b), ..
            }
            | Op::MatMul {
                operands: (a, b), ..
            } => vec![*a, *b],
            _ => Vec::new(),
        }
    }

    /// The ONNX node name this op came from.
    pub fn node(&self) -> &str {
        match self {
            Op::Dense { node, .. }
            | Op::Relu { node }
            | Op::Reshape { node, .. }
            | Op::Concat { node, .. }
            | Op::Elementwise { node, .. }
            | Op::Product { node, .. }
            | Op::MatMul { node, .. }
            | Op::Embedding { node, .. } => node,
        }
    }
}

/// A float model: one input tensor, a chain of operations, one output tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub ops: Vec<Op>,
}

impl Graph {
    /// Number of scalar inputs.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Number of scalar outputs.
    pub fn output_len(&self) -> usize {
        self.output_shape.iter().product()
    }

    /// Runs the float forward pass (the reference the quantized circuit is measured against).
    pub fn forward(&self, input: &[f32]) -> Vec<f32> {
        let last = self.trace(input).pop();
        let x = last.unwrap_or_else(|| input.iter().map(|&v| v as f64).collect());
        x.into_iter().map(|v| v as f32).collect()
    }

    /// The float forward pass in `f64`, returning the activations after every op (one entry
    /// per op, in order).
    pub fn trace(&self, input: &[f32]) -> Vec<Vec<f64>> {
        let mut x: Vec<f64> = input.iter().map(|&v| v as f64).collect();
        let mut out: Vec<Vec<f64>> = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            match op {
                Op::Concat { sources, .. } => {
                    x = sources
                        .iter()
                        .flat_map(|&v| match v {
                            0 => input.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                            v => out[v - 1].clone(),
                        })
                        .collect();
                }
                Op::Dense {
                    inputs,
                    outputs,
                    weights,
                    bias,
                    ..
                } => {
                    x = (0..*outputs)
                        .map(|o| {
                            weights
                                .row(o, *inputs)
                                .map(|(j, w)| w as f64 * x[j])
                                .sum::<f64>()
                                + bias[o] as f64
                        })
                        .collect();
                }
                Op::Product {
                    operands: (a, b),
                    left,
                    right,
                    ..
                } => {
                    let value = |v: usize| match v {
                        0 => input.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                        v => out[v - 1].clone(),
                    };
                    let (a, b) = (value(*a), value(*b));
                    x = left.iter().zip(right).map(|(&i, &j)| a[i] * b[j]).collect();
                }
                Op::MatMul {
                    operands: (a, b),
                    left,
                    right,
                    order,
                    dims: [batch, n, m, p],
                    ..
                } => {
                    let value = |v: usize| match v {
                        0 => input.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                        v => out[v - 1].clone(),
                    };
                    let (a, b) = (value(*a), value(*b));
                    x = (0..batch * n * p)
                        .map(|o| {
                            let c = order.get(o).copied().unwrap_or(o);
                            let (bt, i, k) = (c / (n * p), c / p % n, c % p);
                            (0..*m)
                                .map(|j| {
                                    a[left[(bt * n + i) * m + j]] * b[right[(bt * m + j) * p + k]]
                                })
                                .sum()
                        })
                        .collect();
                }
                Op::Embedding { dim, table, .. } => {
                    x = x
                        .iter()
                        .flat_map(|&id| {
                            let row = id.round() as usize * dim;
                            table[row..row + dim].iter().map(|&v| v as f64)
                        })
                        .collect();
                }
                Op::Relu { .. } => x.iter_mut().for_each(|v| *v = v.max(0.0)),
                Op::Elementwise { f, .. } => x.iter_mut().for_each(|v| *v = f.eval(*v)),
                Op::Reshape { .. } => {}
            }
            out.push(x.clone());
        }
        out
    }

    /// Total number of multiply-accumulates of one forward pass.
    pub fn macs(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Dense {
                    inputs, outputs, ..
                } => inputs * outputs,
                Op::Product { left, .. } => left.len(),
                Op::MatMul {
                    dims: [batch, n, m, p],
                    ..
                } => batch * n * m * p,
                _ => 0,
            })
            .sum()
    }
}
