//! Fixed-point quantization of a [`Graph`] and the integer forward pass the circuit proves.
//!
//! Scheme (recorded in the settings file as [`QUANT_SCHEME`]):
//! - every activation is an integer at one power-of-two scale `2^S` (`activation_scale_bits`);
//! - each dense layer has its own weight scale `2^s` chosen from its largest weight, so that
//!   the largest weight uses at least `weight_precision_bits` bits, with `s` rounded up to a
//!   multiple of 8 (the circuit checks the rescaling remainder in 8-bit limbs); the bias is
//!   stored at `2^(S+s)`;
//! - the accumulator at scale `2^(S+s)` is brought back to `2^S` by rounding division
//!   `q = floor((acc + 2^(s-1)) / 2^s)`, with the remainder range-checked in the circuit;
//! - ReLU after a dense layer is fused into that rescaling;
//! - the model input is not quantized at `2^S` but as a *code* `u` of `input_bits` bits (a
//!   multiple of 16): the declared range `[lo, hi]` is cut into `2^B − 1` equal steps and
//!   `x = lo + u·(hi − lo)/(2^B − 1)`. Every code in `[0, 2^B − 1]` is an input inside the
//!   range and every input inside the range has a code, so the circuit's byte range checks on
//!   `u` enforce the declared range exactly, with no check of their own. The step and `lo` are
//!   folded into the first layer (`W x + b = (W·step) u + (b + W·lo)`), which is why a model
//!   starting with a ReLU gets a diagonal first layer. `B` is the bit count of the range at
//!   scale `2^S` rounded up to 16, so inputs are never coarser than activations.
//!
//! Every activation gets a proven bound (`out_bits`) from interval arithmetic over the declared
//! input range, so any input inside that range can be proven.

use crate::error::CompileError;
use crate::graph::{Graph, Matrix, Op, Samples};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashSet;

/// Identifier of the quantization scheme implemented here.
pub const QUANT_SCHEME: &str = "pow2-fixed-point/round-half-up/range-coded-input/v3";

/// Largest scale, in bits, accepted for activations or weights.
pub const MAX_SCALE_BITS: u32 = 24;

/// Largest weight scale of a layer: a layer of small weights (or one feeding a lookup on a
/// coarse grid, its weights times `2^−grid_shift`) keeps its weights' precision up to here.
pub const MAX_SHIFT_BITS: u32 = 40;

/// Weight scales are multiples of this many bits (the circuit's range-check limb).
pub const SHIFT_STEP: u32 = 8;

/// Input codes have a multiple of this many bits (one full checked row in either row layout).
pub const INPUT_BITS_STEP: u32 = 16;

/// Largest input code width.
pub const MAX_INPUT_BITS: u32 = 48;

/// Largest lookup table of one layer, in bits of its entry count.
pub const MAX_LOOKUP_BITS: u32 = 20;
/// The largest token id code: token ids (a model whose input is embedded) are 16-bit codes,
/// each its own id.
pub const TOKEN_CODE_MAX: u32 = (1 << 16) - 1;
/// The label of a token-embedding table.
pub const EMBEDDING: &str = "embedding";

/// Options of the quantizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantOptions {
    /// Activations (and the model input) are integers at scale `2^activation_scale_bits`.
    pub activation_scale_bits: u32,
    /// Bits given to the largest weight of each layer.
    pub weight_precision_bits: u32,
    /// Range every input value is declared to lie in (`lo < hi`). The proof enforces it: no
    /// input outside it can be proven, whoever builds the witness.
    pub input_range: (f64, f64),
    /// A layer with a non-linear function proves it with a table of at most about
    /// `2^lookup_bits` entries covering every value its input can take: more bits, a finer
    /// input grid (more accurate) and more rows.
    pub lookup_bits: u32,
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions {
            activation_scale_bits: 14,
            weight_precision_bits: 16,
            input_range: (-1.0, 1.0),
            lookup_bits: 12,
        }
    }
}

/// One layer of a quantized model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum QLayer {
    /// `y = rescale(W x + b)`, optionally followed by ReLU.
    Dense {
        node: String,
        inputs: usize,
        outputs: usize,
        /// Weights at scale `2^shift`, `[outputs, inputs]` (dense, or the nonzeros of each row).
        weights: Matrix<i64>,
        /// Bias at scale `2^(S + shift)`.
        bias: Vec<i64>,
        /// Weight scale bits, removed again by the rounding division.
        shift: u32,
        relu: bool,
        /// Every pre-activation value `y` (before the ReLU) satisfies `|y| < 2^out_bits`.
        out_bits: u32,
        /// A non-linear function applied to the rounded value by table lookup (then `relu`
        /// is false).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lookup: Option<QLookup>,
        /// The values the layer reads, concatenated: 0 is the input codes, `l + 1` the output
        /// of layer `l`. Empty: the previous layer's output (the input codes for the first).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sources: Vec<usize>,
    },
    /// Stand-alone ReLU (not preceded by a dense layer).
    Relu {
        node: String,
        len: usize,
        out_bits: u32,
    },
    /// The element-wise product of the two layers before it, rescaled:
    /// `y_o = round(x_o · x'_o / 2^shift)`. Those two layers are its *operands*: dense layers
    /// with `shift = 0` selecting (and broadcasting) the factors, the second scaled by
    /// `2^(shift − S)` so that the product returns to the activation scale.
    Product {
        node: String,
        outputs: usize,
        /// A multiple of 8 (the remainder is range checked in whole bytes), at least `S`.
        shift: u32,
        /// Every output satisfies `|y| < 2^out_bits`.
        out_bits: u32,
    },
    /// A batched matrix product of the two layers before it, rescaled:
    /// `y[b,i,k] = round(Σ_j A[b,i,j]·B[b,j,k] / 2^shift)`, `dims = [batch, n, m, p]`. Its two
    /// operands are exact selections like a product's: the first outputs `A` in `(b, i, j)`
    /// order, the second `B` in `(b, j, k)` order scaled by `2^(shift − S)`.
    MatMul {
        node: String,
        dims: [usize; 4],
        /// Output `o` is `y` at position `order[o] = (b·n + i)·p + k` (empty: at `o`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        order: Vec<usize>,
        /// A multiple of 8, at least `S`.
        shift: u32,
        /// Every output satisfies `|y| < 2^out_bits`.
        out_bits: u32,
    },
}

impl QLayer {
    /// The layer values layer `l` reads, concatenated (0: the input codes, `m + 1`: layer `m`'s
    /// output); a stand-alone ReLU reads the previous layer.
    pub fn sources(&self, l: usize) -> Vec<usize> {
        match self {
            QLayer::Dense { sources, .. } if !sources.is_empty() => sources.clone(),
            // the two operand layers before it
            QLayer::Product { .. } | QLayer::MatMul { .. } => vec![l - 1, l],
            _ => vec![l],
        }
    }

    /// Whether it is one of a product's two operand layers (an exact selection of the factors,
    /// the only dense layers without rounding).
    pub fn is_operand(&self) -> bool {
        matches!(self, QLayer::Dense { shift: 0, .. })
    }

    /// What the layer computes, for reports: `dense`, `dense+relu`, `dense+Sigmoid` (a lookup),
    /// `relu`, `product`.
    pub fn kind(&self) -> String {
        match self {
            QLayer::Dense {
                lookup: Some(t), ..
            } => format!("dense+{}", t.label),
            QLayer::Dense { relu: true, .. } => "dense+relu".into(),
            QLayer::Dense { .. } => "dense".into(),
            QLayer::Relu { .. } => "relu".into(),
            QLayer::Product { .. } => "product".into(),
            QLayer::MatMul { .. } => "matmul".into(),
        }
    }
}

/// A lookup table: a layer's output is `table[z − z_min]` for its rounded value `z`, every
/// value `z` can take (by the interval bounds) having an entry. `z` is at scale `2^(S − grid_shift)`
/// (the layer's weights carry the extra `2^−grid_shift`), entries at the activation scale `2^S`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QLookup {
    /// What the table computes (the ONNX op or pattern).
    pub label: String,
    pub grid_shift: u32,
    pub z_min: i64,
    pub table: Vec<i64>,
    /// For a function flat beyond `±c` (sigmoid, tanh, erf, ...): the rounded value is clamped
    /// to `[−c, c]` before the lookup and the table covers that, whatever the interval bounds
    /// of `z` (the circuit proves the clamp), less any side the interval bounds do not reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamp: Option<i64>,
    /// The function is `relu(x) + g(x)` with `g` tabled (GELU, SiLU, softplus: linear on the
    /// right, flat on the left, so `g` saturates and can be clamped): the output adds the
    /// exact `relu(z)·2^grid_shift`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plus_relu: bool,
}

impl QLookup {
    /// The entry for `z` (clamped to the table: the declared clamp, or for a table without one
    /// only reached for inputs outside the declared range, which cannot be proven anyway).
    pub fn get(&self, z: i128) -> i64 {
        let i = (z - self.z_min as i128).clamp(0, self.table.len() as i128 - 1);
        self.table[i as usize]
    }
    /// The layer's output for the rounded value `z`: the entry, plus `relu(z)` at the
    /// activation scale for a `relu + g` table.
    pub fn apply(&self, z: i128) -> i64 {
        let relu = if self.plus_relu {
            (z.max(0) << self.grid_shift) as i64
        } else {
            0
        };
        self.get(z) + relu
    }
    /// The largest `|entry|`.
    pub fn max_abs(&self) -> i128 {
        self.table
            .iter()
            .map(|&v| (v as i128).abs())
            .max()
            .unwrap_or(0)
    }
}

/// A quantized model: what the circuit is built from (the "compiled circuit" file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizedModel {
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub activation_scale_bits: u32,
    /// The declared input range `[lo, hi]`.
    pub input_range: (f64, f64),
    /// Bits of an input code: codes are `0..2^input_bits`, code `u` stands for
    /// `lo + u·(hi − lo)/(2^input_bits − 1)`.
    pub input_bits: u32,
    pub layers: Vec<QLayer>,
}

fn bits_for(max_abs: i128) -> u32 {
    // smallest b with max_abs < 2^b, at least 1
    (128 - max_abs.unsigned_abs().leading_zeros()).max(1)
}

fn round_div_pow2(v: i128, shift: u32) -> i128 {
    if shift == 0 {
        v
    } else {
        (v + (1i128 << (shift - 1))).div_euclid(1i128 << shift)
    }
}

/// Quantizes a float value at scale `2^bits`.
pub fn quantize_value(v: f64, bits: u32) -> i64 {
    (v * (1u64 << bits) as f64).round() as i64
}

/// For each layer [`QuantizedModel::from_graph`] makes of `graph`, the index of the graph op
/// after which the float activations are that layer's output (per-layer accuracy reports
/// compare the two); empty if the graph does not quantize with default options.
pub fn layer_sources(graph: &Graph) -> Vec<usize> {
    QuantizedModel::build(graph, &QuantOptions::default())
        .map(|(_, src)| src)
        .unwrap_or_default()
}

/// The input code width for a range: the bits of `hi − lo` at scale `2^S`, rounded up to a
/// multiple of [`INPUT_BITS_STEP`].
fn input_bits_for(range: (f64, f64), scale_bits: u32) -> u32 {
    let span =
        quantize_value(range.1, scale_bits) as i128 - quantize_value(range.0, scale_bits) as i128;
    bits_for(span.max(1)).div_ceil(INPUT_BITS_STEP) * INPUT_BITS_STEP
}

/// Builds the layers of a quantized model one by one.
struct Builder<'o> {
    opts: &'o QuantOptions,
    lo: f64,
    /// One input code unit, in activation units.
    step: f64,
    /// Interval bounds of each layer value: the input codes, then each layer's output.
    bounds: Vec<Vec<(i128, i128)>>,
    layers: Vec<QLayer>,
    /// Per layer, the graph op whose output it is.
    src: Vec<usize>,
    /// The layer value holding the input at the activation scale, once a layer needed it.
    input_layer: Option<usize>,
}

impl Builder<'_> {
    /// A dense layer reading the concatenation of layer values `srcs`, with the ReLU or
    /// function `act` fused.
    #[allow(clippy::too_many_arguments)]
    fn dense(
        &mut self,
        node: &str,
        inputs: usize,
        outputs: usize,
        mut rows: Vec<Vec<(usize, f64)>>,
        mut bias: Vec<f64>,
        srcs: Vec<usize>,
        act: Option<&Op>,
        src_op: usize,
    ) -> Result<(), CompileError> {
        // a layer reading the input codes next to activations: the codes' columns (weights times
        // the code step, tiny at fine scales) would share one weight scale with the others and
        // lose their precision, so an identity layer first brings the codes to the activation
        // scale
        let srcs = if srcs.len() > 1 && srcs.contains(&0) {
            let x = self.input_values(src_op)?;
            srcs.iter().map(|&v| if v == 0 { x } else { v }).collect()
        } else {
            srcs
        };
        let idx = self.layers.len();
        let bounds: Vec<(i128, i128)> = srcs
            .iter()
            .flat_map(|&v| self.bounds[v].iter().copied())
            .collect();
        if inputs != bounds.len() || rows.len() != outputs || bias.len() != outputs {
            return Err(CompileError::Structure {
                node: node.into(),
                detail: format!(
                    "dense layer expects {inputs} inputs but receives {}",
                    bounds.len()
                ),
            });
        }
        if !rows
            .iter()
            .flatten()
            .map(|e| &e.1)
            .chain(bias.iter())
            .all(|w| w.is_finite())
        {
            return Err(CompileError::Quantization {
                layer: idx,
                detail: format!("node `{node}` has a NaN or infinite parameter"),
            });
        }
        // the columns reading the input codes: `W x + b = (W·step) u + (b + W·lo)`
        let mut col = 0;
        for &v in &srcs {
            let width = self.bounds[v].len();
            if v == 0 {
                for (row, b) in rows.iter_mut().zip(bias.iter_mut()) {
                    for e in row.iter_mut().filter(|e| (col..col + width).contains(&e.0)) {
                        *b += self.lo * e.1;
                        e.1 *= self.step;
                    }
                }
            }
            col += width;
        }
        let s = self.opts.activation_scale_bits;
        let (relu, f, table_bits) = match act {
            Some(Op::Relu { .. }) => (true, None, 0),
            Some(Op::Elementwise {
                label, f, coarser, ..
            }) => (
                false,
                Some((label, f)),
                self.opts.lookup_bits.saturating_sub(*coarser).max(4),
            ),
            _ => (false, None, 0),
        };
        // what is tabled, where it saturates (within half an output unit), and whether the
        // output adds an exact relu: a function that does not saturate but is relu plus one that
        // does tables the latter
        let tol = (-(s as f64) - 1.0).exp2();
        let minus_relu = |f: &Samples| Samples {
            lo: f.lo,
            step: f.step,
            values: f
                .values
                .iter()
                .enumerate()
                .map(|(i, &y)| y - (f.lo + i as f64 * f.step).max(0.0))
                .collect(),
        };
        let f = f.map(|(label, f)| match saturation(f, tol) {
            Some(x) => (label, Cow::Borrowed(&**f), Some(x), false),
            None => {
                let g = minus_relu(f);
                match saturation(&g, tol) {
                    Some(x) => (label, Cow::Owned(g), Some(x), true),
                    None => (label, Cow::Borrowed(&**f), None, false),
                }
            }
        });
        // a table reads the rounded value on a grid coarse enough for the table to cover every
        // value it can take: `2^−grid_shift` of the activation unit
        let grid_shift = match &f {
            Some((_, _, saturates, _)) => {
                let mut span = float_span(&rows, &bias, &bounds, s);
                if let Some(x) = saturates {
                    span = span.min(2.0 * (x * (s as f64).exp2() + 1.0));
                }
                grid_shift_for(span, table_bits)
            }
            None => 0,
        };
        let g = (-(grid_shift as f64)).exp2();
        rows.iter_mut().flatten().for_each(|e| e.1 *= g);
        bias.iter_mut().for_each(|b| *b *= g);
        let (wq, bq, shift, zb) =
            quantize_dense(&rows, &bias, &bounds, s, self.opts.weight_precision_bits);
        let wq = Matrix::from_rows(wq, inputs);
        // the rescale chip range-checks both parts of the pre-activation value, so the bound is
        // taken before the ReLU clamps it
        let max_abs = zb
            .iter()
            .map(|b| b.0.abs().max(b.1.abs()))
            .max()
            .unwrap_or(0);
        let out_bits = bits_for(max_abs);
        if out_bits > 100 {
            return Err(CompileError::Quantization {
                layer: idx,
                detail: format!("activations of `{node}` need {out_bits} bits"),
            });
        }
        let (lookup, out) = match f {
            Some((label, f, saturates, plus_relu)) => {
                let mut t = lookup_table(label, &f, saturates, &zb, grid_shift, s, table_bits)
                    .map_err(|detail| CompileError::Quantization {
                        layer: idx,
                        detail: format!("node `{node}`: {detail}"),
                    })?;
                t.plus_relu = plus_relu;
                let (lo, hi) = t.table.iter().fold((i128::MAX, i128::MIN), |m, &v| {
                    (m.0.min(v as i128), m.1.max(v as i128))
                });
                let out = zb
                    .iter()
                    .map(|&(_, zh)| {
                        let relu = if plus_relu {
                            zh.max(0) << grid_shift
                        } else {
                            0
                        };
                        (lo, hi + relu)
                    })
                    .collect();
                (Some(t), out)
            }
            None => (
                None,
                zb.iter()
                    .map(|&(l, h)| if relu { (l.max(0), h.max(0)) } else { (l, h) })
                    .collect(),
            ),
        };
        self.bounds.push(out);
        self.layers.push(QLayer::Dense {
            node: node.into(),
            inputs,
            outputs,
            weights: wq,
            bias: bq,
            shift,
            relu,
            out_bits,
            lookup,
            // the previous layer (or the input, for the first) is implied
            sources: if srcs == [idx] { Vec::new() } else { srcs },
        });
        self.src.push(src_op);
        Ok(())
    }

    /// The element-wise product `a[left[o]] · b[right[o]]` of layer values `a`, `b`: two
    /// operand layers (exact selections, `shift = 0`; the second scaled by `2^(shift − S)`),
    /// then the product layer, rounded back to the activation scale.
    fn product(
        &mut self,
        node: &str,
        (a, b): (usize, usize),
        left: &[usize],
        right: &[usize],
        src_op: usize,
    ) -> Result<(), CompileError> {
        let n = left.len();
        if right.len() != n {
            return Err(CompileError::Structure {
                node: node.into(),
                detail: "the factors of a product do not match its output".into(),
            });
        }
        let (shift, factors) = self.operands(node, (a, b), (left, right), src_op)?;
        // interval product: the extremes are at the corners
        let out: Vec<(i128, i128)> = factors[0]
            .iter()
            .zip(&factors[1])
            .map(|(&(al, ah), &(bl, bh))| {
                let c = [al * bl, al * bh, ah * bl, ah * bh];
                let (lo, hi) = (*c.iter().min().unwrap(), *c.iter().max().unwrap());
                (round_div_pow2(lo, shift), round_div_pow2(hi, shift))
            })
            .collect();
        self.push_rescaled(node, out, src_op, |out_bits| QLayer::Product {
            node: node.into(),
            outputs: n,
            shift,
            out_bits,
        })
    }

    /// The two operand layers of a product or a matrix product: exact selections `a[left[o]]`
    /// and `b[right[o]]·2^(shift − S)` (`shift`: `S` rounded up to whole bytes, returned with
    /// the operands' interval bounds).
    #[allow(clippy::type_complexity)]
    fn operands(
        &mut self,
        node: &str,
        (a, b): (usize, usize),
        (left, right): (&[usize], &[usize]),
        src_op: usize,
    ) -> Result<(u32, Vec<Vec<(i128, i128)>>), CompileError> {
        let s = self.opts.activation_scale_bits;
        let shift = s.div_ceil(SHIFT_STEP).max(1) * SHIFT_STEP;
        let mut operands = [(a, left, 0u32), (b, right, shift - s)];
        for (v, idx, _) in operands.iter_mut() {
            if idx.iter().any(|&i| i >= self.bounds[*v].len()) {
                return Err(CompileError::Structure {
                    node: node.into(),
                    detail: "the factors of a product do not match its operands".into(),
                });
            }
            // the input codes are not at the activation scale: an identity layer converts them
            if *v == 0 {
                *v = self.input_values(src_op)?;
            }
        }
        let mut factors = Vec::with_capacity(2);
        for (k, (v, idx, scale)) in operands.into_iter().enumerate() {
            let n = idx.len();
            let bounds: Vec<(i128, i128)> = idx
                .iter()
                .map(|&i| {
                    let (lo, hi) = self.bounds[v][i];
                    (lo << scale, hi << scale)
                })
                .collect();
            let max_abs = bounds.iter().map(|b| b.0.abs().max(b.1.abs())).max();
            let weights = Matrix::Sparse {
                nonzeros: idx.iter().map(|&i| vec![(i, 1i64 << scale)]).collect(),
            };
            let idx_layer = self.layers.len();
            self.layers.push(QLayer::Dense {
                node: format!("{node}/{}", ["a", "b"][k]),
                inputs: self.bounds[v].len(),
                outputs: n,
                weights,
                bias: vec![0; n],
                shift: 0,
                relu: false,
                out_bits: bits_for(max_abs.unwrap_or(0)),
                lookup: None,
                sources: if v == idx_layer { Vec::new() } else { vec![v] },
            });
            self.src.push(src_op);
            factors.push(bounds.clone());
            self.bounds.push(bounds);
        }
        Ok((shift, factors))
    }

    /// The batched matrix product `y[b,i,k] = Σ_j a[left[(b·n+i)·m+j]]·b[right[(b·m+j)·p+k]]`
    /// of layer values `a`, `b`: two operand layers, then the matrix-product layer, rounded
    /// back to the activation scale.
    fn matmul(
        &mut self,
        node: &str,
        (a, b): (usize, usize),
        (left, right): (&[usize], &[usize]),
        order: &[usize],
        dims: [usize; 4],
        src_op: usize,
    ) -> Result<(), CompileError> {
        let [batch, n, m, p] = dims;
        if left.len() != batch * n * m
            || right.len() != batch * m * p
            || batch * n * m * p == 0
            || !is_order(order, batch * n * p)
        {
            return Err(CompileError::Structure {
                node: node.into(),
                detail: "the operands of a matrix product do not match its dimensions".into(),
            });
        }
        let (shift, f) = self.operands(node, (a, b), (left, right), src_op)?;
        let corner = |(al, ah): (i128, i128), (bl, bh): (i128, i128)| {
            let c = [al * bl, al * bh, ah * bl, ah * bh];
            (*c.iter().min().unwrap(), *c.iter().max().unwrap())
        };
        let out: Vec<(i128, i128)> = (0..batch * n * p)
            .map(|o| {
                let c = order.get(o).copied().unwrap_or(o);
                let (bt, i, k) = (c / (n * p), c / p % n, c % p);
                let (lo, hi) = (0..m)
                    .map(|j| corner(f[0][(bt * n + i) * m + j], f[1][(bt * m + j) * p + k]))
                    .fold((0i128, 0i128), |acc, c| (acc.0 + c.0, acc.1 + c.1));
                (round_div_pow2(lo, shift), round_div_pow2(hi, shift))
            })
            .collect();
        self.push_rescaled(node, out, src_op, |out_bits| QLayer::MatMul {
            node: node.into(),
            dims,
            order: order.to_vec(),
            shift,
            out_bits,
        })
    }

    /// Adds a product or matrix-product layer with the interval bounds of its outputs (refused
    /// beyond 100 bits).
    fn push_rescaled(
        &mut self,
        node: &str,
        out: Vec<(i128, i128)>,
        src_op: usize,
        layer: impl FnOnce(u32) -> QLayer,
    ) -> Result<(), CompileError> {
        let max_abs = out.iter().map(|b| b.0.abs().max(b.1.abs())).max();
        let out_bits = bits_for(max_abs.unwrap_or(0));
        if out_bits > 100 {
            return Err(CompileError::Quantization {
                layer: self.layers.len(),
                detail: format!("the products of `{node}` need {out_bits} bits"),
            });
        }
        self.layers.push(layer(out_bits));
        self.src.push(src_op);
        self.bounds.push(out);
        Ok(())
    }

    /// Token embeddings: output `t·dim + d` looks up `z = dim·id_t + d` (exact: the token ids
    /// are their own codes) in one table of `vocab·dim` entries. Ids from `vocab` up have no
    /// entry, so no proof exists for them.
    fn embedding(
        &mut self,
        node: &str,
        vocab: usize,
        dim: usize,
        table: &[f32],
        src_op: usize,
    ) -> Result<(), CompileError> {
        let s = self.opts.activation_scale_bits;
        let seq = self.bounds[0].len();
        let bad = |detail: String| CompileError::Quantization {
            layer: self.layers.len(),
            detail,
        };
        if table.len() != vocab * dim || vocab == 0 || dim == 0 {
            return Err(bad(format!(
                "`{node}`: the embedding matrix is not {vocab} x {dim}"
            )));
        }
        if vocab * dim > 1 << MAX_LOOKUP_BITS {
            return Err(bad(format!(
                "`{node}`: {vocab} x {dim} embeddings are more than 2^{MAX_LOOKUP_BITS} table entries"
            )));
        }
        let scale = (s as f64).exp2();
        let entries: Vec<i64> = table
            .iter()
            .map(|&v| {
                let y = v as f64 * scale;
                if y.is_finite() && y.abs() < 2f64.powi(60) {
                    Ok(y.round() as i64)
                } else {
                    Err(bad(format!(
                        "`{node}`: embedding {v} is out of the fixed-point range"
                    )))
                }
            })
            .collect::<Result<_, _>>()?;
        const SHIFT: u32 = SHIFT_STEP;
        let outputs = seq * dim;
        let weights = Matrix::Sparse {
            nonzeros: (0..outputs)
                .map(|o| vec![(o / dim, (dim as i64) << SHIFT)])
                .collect(),
        };
        let bias = (0..outputs).map(|o| ((o % dim) as i64) << SHIFT).collect();
        // the rounded value any code gives (the lookup refuses those above the table)
        let z_max = (TOKEN_CODE_MAX as i128 + 1) * dim as i128;
        let bounds = (0..outputs)
            .map(|o| {
                let column = entries.iter().skip(o % dim).step_by(dim);
                let lo = column.clone().min().copied().unwrap_or(0);
                let hi = column.max().copied().unwrap_or(0);
                (lo as i128, hi as i128)
            })
            .collect();
        self.layers.push(QLayer::Dense {
            node: node.into(),
            inputs: seq,
            outputs,
            weights,
            bias,
            shift: SHIFT,
            relu: false,
            out_bits: bits_for(z_max),
            lookup: Some(QLookup {
                label: EMBEDDING.into(),
                grid_shift: s,
                z_min: 0,
                table: entries,
                clamp: None,
                plus_relu: false,
            }),
            sources: vec![0],
        });
        self.src.push(src_op);
        self.bounds.push(bounds);
        Ok(())
    }

    /// The layer value holding the model input at the activation scale (an identity layer on the
    /// codes, added the first time a layer needs it).
    fn input_values(&mut self, src_op: usize) -> Result<usize, CompileError> {
        if let Some(v) = self.input_layer {
            return Ok(v);
        }
        let w = self.bounds[0].len();
        self.dense(
            "input",
            w,
            w,
            identity(w),
            vec![0.0; w],
            vec![0],
            None,
            src_op,
        )?;
        self.input_layer = Some(self.layers.len());
        Ok(self.layers.len())
    }

    /// A stand-alone ReLU on the last layer's output.
    fn relu(&mut self, node: &str, src_op: usize) -> Result<(), CompileError> {
        let bounds: Vec<(i128, i128)> = self
            .bounds
            .last()
            .expect("a layer")
            .iter()
            .map(|b| (b.0.max(0), b.1.max(0)))
            .collect();
        let max_abs = bounds.iter().map(|b| b.1).max().unwrap_or(0);
        self.layers.push(QLayer::Relu {
            node: node.into(),
            len: bounds.len(),
            out_bits: bits_for(max_abs),
        });
        self.bounds.push(bounds);
        self.src.push(src_op);
        Ok(())
    }
}

/// The rows of an `n × n` identity matrix.
fn identity(n: usize) -> Vec<Vec<(usize, f64)>> {
    (0..n).map(|j| vec![(j, 1.0)]).collect()
}

/// Quantizes a dense layer's weights (at a scale `2^shift` giving the largest weight
/// `precision` bits, a multiple of 8) and bias (at `2^(S + shift)`), and bounds each output's
/// rounded value by interval arithmetic over the inputs' bounds. Weights are the nonzeros of
/// each row.
#[allow(clippy::type_complexity)]
fn quantize_dense(
    rows: &[Vec<(usize, f64)>],
    bias: &[f64],
    bounds: &[(i128, i128)],
    s: u32,
    precision: u32,
) -> (Vec<Vec<(usize, i64)>>, Vec<i64>, u32, Vec<(i128, i128)>) {
    let max_w = rows.iter().flatten().fold(0f64, |m, e| m.max(e.1.abs()));
    let mag = if max_w > 0.0 {
        max_w.log2().ceil() as i64
    } else {
        0
    };
    // the circuit range-checks the rescaling remainder in whole 8-bit limbs, so the weight
    // scale is rounded up to a multiple of 8 bits
    let shift = (precision as i64 - 1 - mag).clamp(1, MAX_SHIFT_BITS as i64) as u32;
    let shift = shift.div_ceil(SHIFT_STEP) * SHIFT_STEP;
    let wq: Vec<Vec<(usize, i64)>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|&(j, w)| (j, quantize_value(w, shift)))
                .collect()
        })
        .collect();
    let bq: Vec<i64> = bias.iter().map(|&b| quantize_value(b, s + shift)).collect();
    let zb = wq
        .iter()
        .zip(&bq)
        .map(|(row, &b)| {
            let (mut alo, mut ahi) = (b as i128, b as i128);
            for &(k, w) in row {
                let (l, h) = bounds[k];
                let (a, b) = (w as i128 * l, w as i128 * h);
                alo += a.min(b);
                ahi += a.max(b);
            }
            (round_div_pow2(alo, shift), round_div_pow2(ahi, shift))
        })
        .collect();
    (wq, bq, shift, zb)
}

/// The width of the interval every `W x + b` of a float layer lies in (over all outputs and
/// the inputs' integer bounds), at scale `2^S`.
fn float_span(rows: &[Vec<(usize, f64)>], bias: &[f64], bounds: &[(i128, i128)], s: u32) -> f64 {
    let scale = (s as f64).exp2();
    let (lo, hi) = rows
        .iter()
        .zip(bias)
        .map(|(row, &b)| {
            row.iter()
                .fold((b * scale, b * scale), |(lo, hi), &(k, w)| {
                    let (l, h) = bounds[k];
                    let (a, b) = (w * l as f64, w * h as f64);
                    (lo + a.min(b), hi + a.max(b))
                })
        })
        .fold((f64::MAX, f64::MIN), |m, b| (m.0.min(b.0), m.1.max(b.1)));
    (hi - lo).max(0.0)
}

/// The smallest grid shift `e` whose grid `2^e` (activation units) covers an interval of width
/// `span` with at most `2^table_bits` points (a few more for the rounding of the weights).
fn grid_shift_for(span: f64, table_bits: u32) -> u32 {
    let points = (table_bits.min(MAX_LOOKUP_BITS) as f64).exp2();
    let mut e = 0u32;
    while (span / (e as f64).exp2()).ceil() + 5.0 > points && e < 64 {
        e += 1;
    }
    e
}

/// The table of a function over the rounded values `z` a layer can take: entry
/// `round(f(z·2^(e − S))·2^S)`; for a function flat beyond `±saturates` (see [`saturation`]),
/// only the clamp around that.
fn lookup_table(
    label: &str,
    f: &Samples,
    saturates: Option<f64>,
    zb: &[(i128, i128)],
    grid_shift: u32,
    s: u32,
    table_bits: u32,
) -> Result<QLookup, String> {
    let mut z_min = zb.iter().map(|b| b.0).min().unwrap_or(0);
    let mut z_max = zb.iter().map(|b| b.1).max().unwrap_or(0);
    // a function flat beyond ±x needs no entries beyond it: clamp there (the table still needs
    // no entries the rounded value cannot reach on the other side)
    let unit = (grid_shift as f64 - s as f64).exp2();
    let clamp = saturates
        .map(|x| (x / unit).ceil() as i128 + 1)
        .filter(|&c| z_min < -c || z_max > c);
    if let Some(c) = clamp {
        // (an interval wholly beyond one side clamps every value to that side: one entry)
        (z_min, z_max) = (z_min.clamp(-c, c), z_max.clamp(-c, c));
    }
    let len = z_max - z_min + 1;
    if len > 1i128 << MAX_LOOKUP_BITS.min(table_bits + 1) {
        return Err(format!(
            "its function table would need {len} entries (more than 2^{})",
            MAX_LOOKUP_BITS.min(table_bits + 1)
        ));
    }
    let scale = (s as f64).exp2();
    let table = (z_min..=z_max)
        .map(|z| {
            let y = f.eval(z as f64 * unit) * scale;
            if y.is_finite() && y.abs() < 2f64.powi(60) {
                Ok(y.round() as i64)
            } else {
                Err(format!(
                    "{label}({}) = {} is out of the fixed-point range",
                    z as f64 * unit,
                    y / scale
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(QLookup {
        label: label.to_string(),
        grid_shift,
        z_min: z_min as i64,
        table,
        clamp: clamp.map(|c| c as i64),
        plus_relu: false,
    })
}

/// The smallest `x` beyond which a sampled function stays within `tol` of its values at the
/// ends of the samples, when it is flat there on both sides (it then saturates: sigmoid, tanh,
/// erf, hard sigmoid); `None` for a function that keeps changing at either end (GELU, exp).
fn saturation(f: &Samples, tol: f64) -> Option<f64> {
    let v = &f.values;
    let n = v.len();
    if n < 3 {
        return None;
    }
    let (left, right) = (v[0], v[n - 1]);
    // flat at both ends: the extrapolation adds nothing
    if (v[1] - left).abs() > tol / 64.0 || (v[n - 2] - right).abs() > tol / 64.0 {
        return None;
    }
    let first = v.iter().position(|&y| (y - left).abs() > tol)?;
    let last = v.iter().rposition(|&y| (y - right).abs() > tol)?;
    let x_left = f.lo + (first.saturating_sub(1)) as f64 * f.step;
    let x_right = f.lo + (last + 1) as f64 * f.step;
    Some(x_left.abs().max(x_right.abs()))
}

impl QuantizedModel {
    /// Quantizes a float graph.
    pub fn from_graph(graph: &Graph, opts: &QuantOptions) -> Result<Self, CompileError> {
        Self::build(graph, opts).map(|(m, _)| m)
    }

    /// Quantizes a float graph; also returns, for each layer, the graph op whose output it is.
    fn build(graph: &Graph, opts: &QuantOptions) -> Result<(Self, Vec<usize>), CompileError> {
        let s = opts.activation_scale_bits;
        if s > MAX_SCALE_BITS || opts.weight_precision_bits > MAX_SCALE_BITS {
            return Err(CompileError::Quantization {
                layer: 0,
                detail: format!("scale bits above the maximum of {MAX_SCALE_BITS}"),
            });
        }
        // token ids (an embedding reads the input) are their own 16-bit codes
        let tokens = graph
            .ops
            .iter()
            .any(|op| matches!(op, Op::Embedding { .. }));
        let (lo, hi) = if tokens {
            (0.0, TOKEN_CODE_MAX as f64)
        } else {
            opts.input_range
        };
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(CompileError::Quantization {
                layer: 0,
                detail: format!(
                    "invalid input range [{lo}, {hi}]: it needs finite bounds with lo < hi"
                ),
            });
        }
        let input_bits = if tokens {
            TOKEN_CODE_MAX.count_ones()
        } else {
            input_bits_for((lo, hi), s)
        };
        if input_bits > MAX_INPUT_BITS {
            return Err(CompileError::Quantization {
                layer: 0,
                detail: format!(
                    "the input range [{lo}, {hi}] at scale 2^{s} needs {input_bits}-bit input codes, more than {MAX_INPUT_BITS}"
                ),
            });
        }
        let code_max = (1u64 << input_bits) - 1;
        let step = (hi - lo) * (1u64 << s) as f64 / code_max as f64;
        let n_in = graph.input_len();
        let mut b = Builder {
            opts,
            lo,
            step,
            // interval bounds of every layer value: the input codes, then each layer's output
            bounds: vec![vec![(0, code_max as i128); n_in]],
            layers: Vec::new(),
            src: Vec::new(),
            input_layer: None,
        };
        // graph values (0: the input, i + 1: op i's output) to layer values (0: the input
        // codes, l + 1: layer l's output); a concatenation waits for the op that reads it
        let mut at: Vec<Option<usize>> = vec![Some(0)];
        let mut concat: Option<Vec<usize>> = None;
        let referenced: HashSet<usize> = graph.ops.iter().flat_map(Op::reads).collect();
        let ops = &graph.ops;
        let mut i = 0;
        while i < ops.len() {
            // what op i reads: a concatenation, or the previous value
            let reads = |concat: &mut Option<Vec<usize>>, at: &[Option<usize>]| match concat.take()
            {
                Some(v) => Ok(v),
                None => at[i]
                    .map(|v| vec![v])
                    .ok_or_else(|| CompileError::Structure {
                        node: ops[i].node().to_string(),
                        detail: "reads a value no layer computes".into(),
                    }),
            };
            match &ops[i] {
                Op::Reshape { .. } => at.push(at[i]),
                Op::Embedding {
                    node,
                    vocab,
                    dim,
                    table,
                } => {
                    if reads(&mut concat, &at)? != [0] {
                        return Err(CompileError::Structure {
                            node: node.clone(),
                            detail: "token embeddings read the model input itself".into(),
                        });
                    }
                    b.embedding(node, *vocab, *dim, table, i)?;
                    at.push(Some(b.layers.len()));
                }
                Op::Concat { sources, .. } => {
                    let v = sources
                        .iter()
                        .map(|&g| at.get(g).copied().flatten())
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| CompileError::Structure {
                            node: ops[i].node().to_string(),
                            detail: "concatenates a value computed later or never".into(),
                        })?;
                    concat = Some(v);
                    at.push(None);
                }
                Op::Dense {
                    node,
                    inputs,
                    outputs,
                    weights,
                    bias,
                } => {
                    let srcs = reads(&mut concat, &at)?;
                    // a ReLU or function right after it (reshapes aside) is fused, unless
                    // another op reads the value in between
                    let j = (i + 1..ops.len())
                        .find(|&j| !matches!(ops[j], Op::Reshape { .. }))
                        .filter(|&j| {
                            matches!(ops[j], Op::Relu { .. } | Op::Elementwise { .. })
                                && (i + 1..=j).all(|v| !referenced.contains(&v))
                        });
                    let act = j.map(|j| &ops[j]);
                    let w = weights.rows(*outputs, *inputs);
                    let w = w
                        .into_iter()
                        .map(|r| r.into_iter().map(|(j, v)| (j, v as f64)).collect())
                        .collect();
                    let bs: Vec<f64> = bias.iter().map(|&v| v as f64).collect();
                    b.dense(node, *inputs, *outputs, w, bs, srcs, act, j.unwrap_or(i))?;
                    let l = b.layers.len();
                    for _ in i..=j.unwrap_or(i) {
                        at.push(Some(l));
                    }
                    i = j.unwrap_or(i) + 1;
                    continue;
                }
                Op::Product {
                    node,
                    operands: (ga, gb),
                    left,
                    right,
                } => {
                    let (a, b_) = operand_values(node, (*ga, *gb), &mut concat, &at)?;
                    b.product(node, (a, b_), left, right, i)?;
                    at.push(Some(b.layers.len()));
                }
                Op::MatMul {
                    node,
                    operands: (ga, gb),
                    left,
                    right,
                    order,
                    dims,
                } => {
                    let (a, b_) = operand_values(node, (*ga, *gb), &mut concat, &at)?;
                    b.matmul(node, (a, b_), (left, right), order, *dims, i)?;
                    at.push(Some(b.layers.len()));
                }
                op @ (Op::Relu { .. } | Op::Elementwise { .. }) => {
                    let srcs = reads(&mut concat, &at)?;
                    let prev = b.layers.len();
                    if matches!(op, Op::Relu { .. }) && srcs == [prev] && prev > 0 {
                        b.relu(op.node(), i)?;
                    } else {
                        // an identity layer the ReLU or the function is fused into (on the
                        // input, it reads the codes)
                        let n: usize = srcs.iter().map(|&v| b.bounds[v].len()).sum();
                        let w = identity(n);
                        let name = if srcs == [0] {
                            "input".to_string()
                        } else {
                            format!("{}/in", op.node())
                        };
                        b.dense(&name, n, n, w, vec![0.0; n], srcs, Some(op), i)?;
                    }
                    at.push(Some(b.layers.len()));
                }
            }
            i += 1;
        }
        // the output is the last layer's
        let last = match concat.take() {
            Some(v) => Some(v),
            None => at[ops.len()]
                .filter(|&v| v != b.layers.len())
                .map(|v| vec![v]),
        };
        if let Some(srcs) = last {
            let n: usize = srcs.iter().map(|&v| b.bounds[v].len()).sum();
            let w = identity(n);
            b.dense(
                "output",
                n,
                n,
                w,
                vec![0.0; n],
                srcs,
                None,
                ops.len().saturating_sub(1),
            )?;
        }
        if b.layers.is_empty() {
            return Err(CompileError::Structure {
                node: "graph".into(),
                detail: "the model computes nothing the circuit could prove (no layer)".into(),
            });
        }
        let bounds = b.bounds.last().expect("a layer");
        if bounds.len() != graph.output_len() {
            return Err(CompileError::Structure {
                node: "output".into(),
                detail: format!(
                    "graph computes {} values but the output has {}",
                    bounds.len(),
                    graph.output_len()
                ),
            });
        }
        let layers = b.layers;
        let src = b.src;
        Ok((
            QuantizedModel {
                input_shape: graph.input_shape.clone(),
                output_shape: graph.output_shape.clone(),
                activation_scale_bits: s,
                input_range: (lo, hi),
                input_bits,
                layers,
            },
            src,
        ))
    }

    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Checks the structure (a file may have been edited): shapes chain, vector lengths,
    /// scale and bound limits. The circuit relies on these.
    pub fn validate(&self) -> Result<(), CompileError> {
        let bad = |layer: usize, detail: String| Err(CompileError::Quantization { layer, detail });
        if self.activation_scale_bits > MAX_SCALE_BITS {
            return bad(0, "activation scale too large".into());
        }
        let (lo, hi) = self.input_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return bad(0, format!("invalid input range [{lo}, {hi}]"));
        }
        if self.input_bits == 0
            || !self.input_bits.is_multiple_of(INPUT_BITS_STEP)
            || self.input_bits > MAX_INPUT_BITS
        {
            return bad(
                0,
                format!(
                    "input codes of {} bits (a multiple of {INPUT_BITS_STEP} up to {MAX_INPUT_BITS} expected)",
                    self.input_bits
                ),
            );
        }
        if !matches!(self.layers.first(), Some(QLayer::Dense { .. })) {
            return bad(
                0,
                "the first layer must be dense (it reads the input codes)".into(),
            );
        }
        // the width of every layer value: the input, then each layer's output
        let mut widths = vec![self.input_len()];
        let mut width = self.input_len();
        for (i, layer) in self.layers.iter().enumerate() {
            match layer {
                QLayer::Dense {
                    inputs,
                    outputs,
                    weights,
                    bias,
                    shift,
                    out_bits,
                    relu,
                    lookup,
                    ..
                } => {
                    let srcs = layer.sources(i);
                    if srcs.iter().any(|&v| v > i) {
                        return bad(i, "reads a value computed later".into());
                    }
                    width = srcs.iter().map(|&v| widths[v]).sum();
                    if let Some(t) = lookup {
                        if *relu
                            || t.table.is_empty()
                            || t.table.len() > 1 << (MAX_LOOKUP_BITS + 1)
                            || t.table.iter().any(|v| v.unsigned_abs() >= 1 << 60)
                            || t.clamp.is_some_and(|c| {
                                // the table within the clamp, reaching it on at least one side
                                let top = t.z_min + t.table.len() as i64 - 1;
                                c <= 0 || t.z_min < -c || top > c || (t.z_min != -c && top != c)
                            })
                        {
                            return bad(i, "lookup table empty, too large or with a ReLU".into());
                        }
                    }
                    if *inputs != width || *inputs == 0 || *outputs == 0 {
                        return bad(i, format!("takes {inputs} inputs, receives {width}"));
                    }
                    if !weights.fits(*outputs, *inputs) || bias.len() != *outputs {
                        return bad(i, "weight or bias count does not match the shape".into());
                    }
                    if *shift > MAX_SHIFT_BITS || *out_bits == 0 || *out_bits > 100 {
                        return bad(i, "scale or bound out of limits".into());
                    }
                    // a product's operands select exactly (no rounding); every other dense
                    // layer rescales
                    // (the product checks that both layers before it are operands)
                    let operand = [i + 1, i + 2].iter().any(|&j| {
                        matches!(
                            self.layers.get(j),
                            Some(QLayer::Product { .. } | QLayer::MatMul { .. })
                        )
                    });
                    if operand {
                        if *shift != 0 || lookup.is_some() || *relu {
                            return bad(i, "a product's operand layer must select exactly".into());
                        }
                    } else if *shift == 0 || shift % SHIFT_STEP != 0 {
                        return bad(i, format!("weight scale {shift} is not a multiple of 8"));
                    }
                    width = *outputs;
                }
                QLayer::Product {
                    outputs,
                    shift,
                    out_bits,
                    ..
                } => {
                    let operands = i >= 2
                        && [i - 2, i - 1].iter().all(|&j| {
                            matches!(&self.layers[j], QLayer::Dense { outputs: o, shift: 0, .. } if o == outputs)
                        });
                    if !operands {
                        return bad(
                            i,
                            "a product must follow its two operand layers, of its width".into(),
                        );
                    }
                    // one product gate serves all: one divisor
                    let first_shift = self.layers.iter().find_map(|l| match l {
                        QLayer::Product { shift, .. } => Some(*shift),
                        _ => None,
                    });
                    if *shift < self.activation_scale_bits.max(SHIFT_STEP)
                        || first_shift != Some(*shift)
                        || shift % SHIFT_STEP != 0
                        || *shift > MAX_SHIFT_BITS
                        || *out_bits == 0
                        || *out_bits > 100
                    {
                        return bad(i, "product scale or bound out of limits".into());
                    }
                    width = *outputs;
                }
                QLayer::MatMul {
                    dims: [batch, n, m, p],
                    order,
                    shift,
                    out_bits,
                    ..
                } => {
                    if !is_order(order, batch * n * p) {
                        return bad(
                            i,
                            "a matrix product's output order is not a permutation".into(),
                        );
                    }
                    let sizes = [batch * n * m, batch * m * p];
                    let operands = i >= 2
                        && [i - 2, i - 1].iter().zip(sizes).all(|(&j, size)| {
                            matches!(&self.layers[j], QLayer::Dense { outputs: o, shift: 0, .. } if *o == size)
                        });
                    if !operands || sizes.contains(&0) || *p == 0 {
                        return bad(
                            i,
                            "a matrix product must follow its two operand layers, of its dimensions"
                                .into(),
                        );
                    }
                    if *shift < self.activation_scale_bits.max(SHIFT_STEP)
                        || shift % SHIFT_STEP != 0
                        || *shift > MAX_SHIFT_BITS
                        || *out_bits == 0
                        || *out_bits > 100
                    {
                        return bad(i, "matrix product scale or bound out of limits".into());
                    }
                    width = batch * n * p;
                }
                QLayer::Relu { len, out_bits, .. } => {
                    if *len != width || *out_bits == 0 || *out_bits > 100 {
                        return bad(i, "relu length or bound does not match".into());
                    }
                }
            }
            widths.push(width);
        }
        // an operand layer is read by its product alone (the circuit lays it out for that
        // product only)
        for (i, layer) in self.layers.iter().enumerate() {
            for v in layer.sources(i) {
                let Some(op) = v.checked_sub(1) else { continue };
                let consumer = (op + 1..=op + 2).find(|&j| {
                    matches!(
                        self.layers.get(j),
                        Some(QLayer::Product { .. } | QLayer::MatMul { .. })
                    )
                });
                if self.layers[op].is_operand() && consumer.is_some_and(|c| c != i) {
                    return bad(i, format!("reads layer {op}, the operand of a product"));
                }
            }
        }
        if width != self.output_len() {
            return bad(
                self.layers.len() - 1,
                format!(
                    "computes {width} outputs, the output shape has {}",
                    self.output_len()
                ),
            );
        }
        Ok(())
    }

    pub fn output_len(&self) -> usize {
        self.output_shape.iter().product()
    }

    /// The largest input code, `2^input_bits − 1`.
    pub fn input_code_max(&self) -> i64 {
        (1i64 << self.input_bits) - 1
    }

    /// Codes float inputs, refusing values outside the declared input range.
    pub fn quantize_input(&self, input: &[f64]) -> Result<Vec<i64>, CompileError> {
        if input.len() != self.input_len() {
            return Err(CompileError::Input(format!(
                "expected {} input values (shape {:?}), got {}",
                self.input_len(),
                self.input_shape,
                input.len()
            )));
        }
        let (lo, hi) = self.input_range;
        input
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if !v.is_finite() {
                    return Err(CompileError::Input(format!("input value {i} is not finite")));
                }
                if v < lo || v > hi {
                    return Err(CompileError::Input(format!(
                        "input value {i} = {v} is outside the range [{lo}, {hi}] declared at compile time"
                    )));
                }
                Ok(encode_input_code(self.input_range, self.input_bits, v))
            })
            .collect()
    }

    /// Checks that input codes can be proven: the right count, each in `[0, 2^input_bits − 1]`.
    pub fn check_codes(&self, codes: &[i64]) -> Result<(), CompileError> {
        if codes.len() != self.input_len() {
            return Err(CompileError::Input(format!(
                "expected {} input codes, got {}",
                self.input_len(),
                codes.len()
            )));
        }
        let max = self.input_code_max();
        if let Some(vocab) = self.vocab() {
            if let Some(i) = codes.iter().position(|&u| !(0..vocab as i64).contains(&u)) {
                return Err(CompileError::Input(format!(
                    "input {i} is token id {}, outside the vocabulary of {vocab}",
                    codes[i]
                )));
            }
        }
        match codes.iter().position(|&u| !(0..=max).contains(&u)) {
            Some(i) => Err(CompileError::Input(format!(
                "input code {i} = {} is outside [0, {max}], the declared range [{}, {}]",
                codes[i], self.input_range.0, self.input_range.1
            ))),
            None => Ok(()),
        }
    }

    /// The vocabulary size of a model whose input is token ids (read by an embedding table).
    pub fn vocab(&self) -> Option<usize> {
        self.layers.iter().find_map(|l| match l {
            QLayer::Dense {
                inputs,
                outputs,
                lookup: Some(t),
                ..
            } if t.label == EMBEDDING && *inputs > 0 => {
                Some(t.table.len() / (outputs / inputs).max(1))
            }
            _ => None,
        })
    }

    /// The input value a code stands for.
    pub fn decode_input(&self, u: i64) -> f64 {
        decode_input_code(self.input_range, self.input_bits, u)
    }

    /// Converts an integer activation back to a float.
    pub fn dequantize(&self, v: i64) -> f64 {
        v as f64 / (1u64 << self.activation_scale_bits) as f64
    }

    /// The integer forward pass: exactly the values the circuit constrains.
    pub fn forward(&self, input: &[i64]) -> Vec<i64> {
        self.trace(input).pop().unwrap_or_else(|| input.to_vec())
    }

    /// The integer forward pass, returning the activations after every layer.
    pub fn trace(&self, input: &[i64]) -> Vec<Vec<i64>> {
        let mut out: Vec<Vec<i64>> = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let x: Vec<i64> = layer
                .sources(l)
                .iter()
                .flat_map(|&v| if v == 0 { input } else { &out[v - 1][..] })
                .copied()
                .collect();
            let x = match layer {
                QLayer::Dense {
                    inputs,
                    outputs,
                    weights,
                    bias,
                    shift,
                    relu,
                    lookup,
                    ..
                } => (0..*outputs)
                    .map(|o| {
                        let acc = weights
                            .row(o, *inputs)
                            .fold(bias[o] as i128, |a, (j, w)| a + w as i128 * x[j] as i128);
                        let q = round_div_pow2(acc, *shift);
                        match lookup {
                            Some(t) => t.apply(q),
                            None if *relu => q.max(0) as i64,
                            None => q as i64,
                        }
                    })
                    .collect(),
                QLayer::Relu { .. } => x.iter().map(|&v| v.max(0)).collect(),
                QLayer::Product { outputs, shift, .. } => (0..*outputs)
                    .map(|o| round_div_pow2(x[o] as i128 * x[outputs + o] as i128, *shift) as i64)
                    .collect(),
                QLayer::MatMul {
                    dims: [batch, n, m, p],
                    order,
                    shift,
                    ..
                } => {
                    let a_len = batch * n * m;
                    (0..batch * n * p)
                        .map(|o| {
                            let c = order.get(o).copied().unwrap_or(o);
                            let (b, i, k) = (c / (n * p), c / p % n, c % p);
                            let acc: i128 = (0..*m)
                                .map(|j| {
                                    x[(b * n + i) * m + j] as i128
                                        * x[a_len + (b * m + j) * p + k] as i128
                                })
                                .sum();
                            round_div_pow2(acc, *shift) as i64
                        })
                        .collect()
                }
            };
            out.push(x);
        }
        out
    }

    /// SHA-256 of the canonical JSON of the whole compiled model: the layers, the input range
    /// and code width, the activation scale and the shapes, i.e. everything that determines the
    /// circuit and what its public words mean. Settings, keys and proofs record it, and the
    /// circuit puts it in a fixed cell, so the verifying key commits to it.
    pub fn sha256(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("model serializes");
        hex::encode(Sha256::digest(bytes))
    }

    /// Total multiply-accumulates: the stored weights of the dense layers (every entry of a
    /// dense matrix, the nonzeros of a sparse one) and one per product.
    pub fn macs(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                QLayer::Dense { weights, .. } => weights.values().count(),
                QLayer::Relu { .. } => 0,
                QLayer::Product { outputs, .. } => *outputs,
                QLayer::MatMul {
                    dims: [batch, n, m, p],
                    ..
                } => batch * n * m * p,
            })
            .sum()
    }
}

/// The code nearest to an input value (clamped to the codes): the inverse of
/// [`decode_input_code`] on its values.
pub fn encode_input_code(range: (f64, f64), bits: u32, v: f64) -> i64 {
    let max = (1i64 << bits) - 1;
    let u = ((v - range.0) / (range.1 - range.0) * max as f64).round() as i64;
    u.clamp(0, max)
}

/// The input value code `u` stands for, for a range and code width (`u` in range or not).
pub fn decode_input_code(range: (f64, f64), bits: u32, u: i64) -> f64 {
    let max = ((1u64 << bits) - 1) as f64;
    range.0 + (range.1 - range.0) * (u as f64 / max)
}

/// The layer values a product or matrix product multiplies (graph values `ga`, `gb`): refused
/// when a concatenation is pending (it reads its two operands only) or a value is computed
/// later or never.
fn operand_values(
    node: &str,
    (ga, gb): (usize, usize),
    concat: &mut Option<Vec<usize>>,
    at: &[Option<usize>],
) -> Result<(usize, usize), CompileError> {
    let bad = |detail: &str| CompileError::Structure {
        node: node.into(),
        detail: detail.into(),
    };
    if concat.take().is_some() {
        return Err(bad("a product reads its two operands, not a concatenation"));
    }
    let value = |g: usize| {
        at.get(g)
            .copied()
            .flatten()
            .ok_or_else(|| bad("multiplies a value computed later or never"))
    };
    Ok((value(ga)?, value(gb)?))
}

/// Whether `order` is empty or a permutation of `0..len`.
fn is_order(order: &[usize], len: usize) -> bool {
    if order.is_empty() {
        return true;
    }
    let mut seen = vec![false; len];
    order.len() == len
        && order
            .iter()
            .all(|&c| c < len && !std::mem::replace(&mut seen[c], true))
}

/// Splits `acc` into the rounded quotient and the remainder of the rescaling.
pub fn rescale_parts(acc: i128, shift: u32) -> (i128, i128) {
    let q = round_div_pow2(acc, shift);
    let half = if shift == 0 { 0 } else { 1i128 << (shift - 1) };
    let r = acc + half - (q << shift);
    (q, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Graph {
        Graph {
            input_shape: vec![1, 2],
            output_shape: vec![1, 2],
            ops: vec![
                Op::Dense {
                    node: "fc".into(),
                    inputs: 2,
                    outputs: 2,
                    weights: vec![0.5, -0.25, 1.0, 0.75].into(),
                    bias: vec![0.1, -2.0],
                },
                Op::Relu { node: "r".into() },
            ],
        }
    }

    #[test]
    fn rescale_parts_reconstruct() {
        for acc in [-1000i128, -17, -1, 0, 1, 15, 16, 17, 999] {
            for shift in [0u32, 1, 4, 7] {
                let (q, r) = rescale_parts(acc, shift);
                assert!(r >= 0 && r < (1 << shift).max(1));
                let half = if shift == 0 { 0 } else { 1 << (shift - 1) };
                assert_eq!(acc + half, (q << shift) + r);
            }
        }
    }

    #[test]
    fn quantized_forward_tracks_float() {
        let g = toy();
        let q = QuantizedModel::from_graph(&g, &QuantOptions::default()).unwrap();
        let x = [0.3, -0.7];
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let want = g.forward(&xf);
        let got = q.forward(&q.quantize_input(&x).unwrap());
        for (w, g) in want.iter().zip(&got) {
            assert!((*w as f64 - q.dequantize(*g)).abs() < 2e-3, "{w} vs {g}");
        }
        assert!(matches!(q.layers[0], QLayer::Dense { relu: true, .. }));
    }

    #[test]
    fn input_outside_range_is_refused() {
        let q = QuantizedModel::from_graph(&toy(), &QuantOptions::default()).unwrap();
        let e = q.quantize_input(&[0.0, 3.0]).unwrap_err();
        assert!(e.to_string().contains("outside the range"), "{e}");
        assert!(q.quantize_input(&[0.0]).is_err());
        assert!(q.quantize_input(&[f64::NAN, 0.0]).is_err());
    }

    /// Each layer's source op is where the float graph has that layer's output: fused ReLUs,
    /// reshapes in between, a ReLU first (the diagonal input layer) and a ReLU standing alone.
    #[test]
    fn layer_sources_align_float_and_quantized_traces() {
        let dense = |node: &str, n: usize| Op::Dense {
            node: node.into(),
            inputs: n,
            outputs: n,
            weights: (0..n * n)
                .map(|i| (i as f32 * 0.37).sin())
                .collect::<Vec<_>>()
                .into(),
            bias: (0..n).map(|i| 0.1 * i as f32 - 0.1).collect(),
        };
        let relu = |node: &str| Op::Relu { node: node.into() };
        let reshape = Op::Reshape {
            node: "flat".into(),
            shape: vec![1, 3],
        };
        let g = Graph {
            input_shape: vec![1, 3],
            output_shape: vec![1, 3],
            ops: vec![
                relu("r0"),
                dense("fc1", 3),
                reshape,
                relu("r1"),
                relu("r2"),
                dense("fc2", 3),
            ],
        };
        assert_eq!(layer_sources(&g), vec![0, 3, 4, 5]);
        let q = QuantizedModel::from_graph(&g, &QuantOptions::default()).unwrap();
        assert_eq!(q.layers.len(), 4);
        let x = [0.3, -0.7, 0.9];
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let float = g.trace(&xf);
        let quant = q.trace(&q.quantize_input(&x).unwrap());
        for (l, &src) in layer_sources(&g).iter().enumerate() {
            for (f, &v) in float[src].iter().zip(&quant[l]) {
                assert!((f - q.dequantize(v)).abs() < 2e-3, "layer {l}: {f} vs {v}");
            }
        }
    }

    #[test]
    fn bounds_cover_extreme_inputs() {
        let g = toy();
        let q = QuantizedModel::from_graph(&g, &QuantOptions::default()).unwrap();
        let QLayer::Dense { out_bits, .. } = &q.layers[0] else {
            panic!()
        };
        for x in [[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]] {
            let y = q.forward(&q.quantize_input(&x).unwrap());
            assert!(y.iter().all(|v| v.unsigned_abs() < 1u64 << out_bits));
        }
    }
}
