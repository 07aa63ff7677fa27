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
//! - ReLU after a dense layer is fused into that rescaling.
//!
//! Every activation gets a proven bound (`out_bits`) from interval arithmetic over the declared
//! input range, so any input inside that range can be proven.

use crate::error::CompileError;
use crate::graph::{Graph, Op};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Identifier of the quantization scheme implemented here.
pub const QUANT_SCHEME: &str = "pow2-fixed-point/round-half-up/v2";

/// Largest scale, in bits, accepted for activations or weights.
pub const MAX_SCALE_BITS: u32 = 24;

/// Weight scales are multiples of this many bits (the circuit's range-check limb).
pub const SHIFT_STEP: u32 = 8;

/// Options of the quantizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantOptions {
    /// Activations (and the model input) are integers at scale `2^activation_scale_bits`.
    pub activation_scale_bits: u32,
    /// Bits given to the largest weight of each layer.
    pub weight_precision_bits: u32,
    /// Range every input value is declared to lie in; inputs outside are refused.
    pub input_range: (f64, f64),
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions {
            activation_scale_bits: 14,
            weight_precision_bits: 16,
            input_range: (-1.0, 1.0),
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
        /// Weights at scale `2^shift`, `[outputs, inputs]` row-major.
        weights: Vec<i64>,
        /// Bias at scale `2^(S + shift)`.
        bias: Vec<i64>,
        /// Weight scale bits, removed again by the rounding division.
        shift: u32,
        relu: bool,
        /// Every pre-activation value `y` (before the ReLU) satisfies `|y| < 2^out_bits`.
        out_bits: u32,
    },
    /// Stand-alone ReLU (not preceded by a dense layer).
    Relu {
        node: String,
        len: usize,
        out_bits: u32,
    },
}

/// A quantized model: what the circuit is built from (the "compiled circuit" file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizedModel {
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub activation_scale_bits: u32,
    /// Quantized input bound: every input integer lies in `[input_min, input_max]`.
    pub input_min: i64,
    pub input_max: i64,
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

impl QuantizedModel {
    /// Quantizes a float graph.
    pub fn from_graph(graph: &Graph, opts: &QuantOptions) -> Result<Self, CompileError> {
        let s = opts.activation_scale_bits;
        if s > MAX_SCALE_BITS || opts.weight_precision_bits > MAX_SCALE_BITS {
            return Err(CompileError::Quantization {
                layer: 0,
                detail: format!("scale bits above the maximum of {MAX_SCALE_BITS}"),
            });
        }
        let (lo, hi) = opts.input_range;
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(CompileError::Quantization {
                layer: 0,
                detail: format!("invalid input range [{lo}, {hi}]"),
            });
        }
        let input_min = quantize_value(lo, s);
        let input_max = quantize_value(hi, s);
        let n_in = graph.input_len();
        // interval bounds of every current activation, as integers
        let mut bounds: Vec<(i128, i128)> = vec![(input_min as i128, input_max as i128); n_in];
        let mut layers: Vec<QLayer> = Vec::new();
        let mut i = 0;
        while i < graph.ops.len() {
            let idx = layers.len();
            match &graph.ops[i] {
                Op::Dense {
                    node,
                    inputs,
                    outputs,
                    weights,
                    bias,
                } => {
                    if *inputs != bounds.len() {
                        return Err(CompileError::Structure {
                            node: node.clone(),
                            detail: format!(
                                "dense layer expects {inputs} inputs but receives {}",
                                bounds.len()
                            ),
                        });
                    }
                    let max_w = weights.iter().fold(0f64, |m, &w| m.max((w as f64).abs()));
                    if !weights.iter().chain(bias.iter()).all(|w| w.is_finite()) {
                        return Err(CompileError::Quantization {
                            layer: idx,
                            detail: format!("node `{node}` has a NaN or infinite parameter"),
                        });
                    }
                    let mag = if max_w > 0.0 {
                        max_w.log2().ceil() as i64
                    } else {
                        0
                    };
                    // the circuit range-checks the rescaling remainder in whole 8-bit
                    // limbs, so the weight scale is rounded up to a multiple of 8 bits
                    let shift = (opts.weight_precision_bits as i64 - 1 - mag)
                        .clamp(1, MAX_SCALE_BITS as i64) as u32;
                    let shift = shift.div_ceil(SHIFT_STEP) * SHIFT_STEP;
                    let wq: Vec<i64> = weights
                        .iter()
                        .map(|&w| quantize_value(w as f64, shift))
                        .collect();
                    let bq: Vec<i64> = bias
                        .iter()
                        .map(|&b| quantize_value(b as f64, s + shift))
                        .collect();
                    let relu = matches!(graph.ops.get(i + 1), Some(Op::Relu { .. }));
                    let mut new_bounds = Vec::with_capacity(*outputs);
                    // the rescale chip range-checks both parts of the pre-activation value, so
                    // the bound is taken before the ReLU clamps it
                    let mut max_abs: i128 = 0;
                    for o in 0..*outputs {
                        let (mut alo, mut ahi) = (bq[o] as i128, bq[o] as i128);
                        for (k, &w) in wq[o * inputs..(o + 1) * inputs].iter().enumerate() {
                            let (l, h) = bounds[k];
                            let (a, b) = (w as i128 * l, w as i128 * h);
                            alo += a.min(b);
                            ahi += a.max(b);
                        }
                        let (mut qlo, mut qhi) =
                            (round_div_pow2(alo, shift), round_div_pow2(ahi, shift));
                        max_abs = max_abs.max(qlo.abs()).max(qhi.abs());
                        if relu {
                            qlo = qlo.max(0);
                            qhi = qhi.max(0);
                        }
                        new_bounds.push((qlo, qhi));
                    }
                    let out_bits = bits_for(max_abs);
                    if out_bits > 100 {
                        return Err(CompileError::Quantization {
                            layer: idx,
                            detail: format!("activations of `{node}` need {out_bits} bits"),
                        });
                    }
                    bounds = new_bounds;
                    layers.push(QLayer::Dense {
                        node: node.clone(),
                        inputs: *inputs,
                        outputs: *outputs,
                        weights: wq,
                        bias: bq,
                        shift,
                        relu,
                        out_bits,
                    });
                    i += if relu { 2 } else { 1 };
                }
                Op::Relu { node } => {
                    bounds
                        .iter_mut()
                        .for_each(|b| *b = (b.0.max(0), b.1.max(0)));
                    let max_abs = bounds.iter().map(|b| b.1).max().unwrap_or(0);
                    layers.push(QLayer::Relu {
                        node: node.clone(),
                        len: bounds.len(),
                        out_bits: bits_for(max_abs),
                    });
                    i += 1;
                }
                Op::Reshape { .. } => i += 1,
            }
        }
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
        Ok(QuantizedModel {
            input_shape: graph.input_shape.clone(),
            output_shape: graph.output_shape.clone(),
            activation_scale_bits: s,
            input_min,
            input_max,
            layers,
        })
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
        if self.input_min > self.input_max {
            return bad(0, "empty input range".into());
        }
        if self.layers.is_empty() {
            return bad(0, "no layers".into());
        }
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
                    ..
                } => {
                    if *inputs != width || *inputs == 0 || *outputs == 0 {
                        return bad(i, format!("takes {inputs} inputs, receives {width}"));
                    }
                    if weights.len() != inputs * outputs || bias.len() != *outputs {
                        return bad(i, "weight or bias count does not match the shape".into());
                    }
                    if *shift > MAX_SCALE_BITS || *out_bits == 0 || *out_bits > 100 {
                        return bad(i, "scale or bound out of limits".into());
                    }
                    if *shift == 0 || shift % SHIFT_STEP != 0 {
                        return bad(i, format!("weight scale {shift} is not a multiple of 8"));
                    }
                    width = *outputs;
                }
                QLayer::Relu { len, out_bits, .. } => {
                    if *len != width || *out_bits == 0 || *out_bits > 100 {
                        return bad(i, "relu length or bound does not match".into());
                    }
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

    /// Quantizes float inputs, refusing values outside the declared input range.
    pub fn quantize_input(&self, input: &[f64]) -> Result<Vec<i64>, CompileError> {
        if input.len() != self.input_len() {
            return Err(CompileError::Input(format!(
                "expected {} input values (shape {:?}), got {}",
                self.input_len(),
                self.input_shape,
                input.len()
            )));
        }
        input
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if !v.is_finite() {
                    return Err(CompileError::Input(format!("input value {i} is not finite")));
                }
                let q = quantize_value(v, self.activation_scale_bits);
                if q < self.input_min || q > self.input_max {
                    return Err(CompileError::Input(format!(
                        "input value {i} = {v} is outside the range [{}, {}] declared at compile time",
                        self.dequantize(self.input_min),
                        self.dequantize(self.input_max)
                    )));
                }
                Ok(q)
            })
            .collect()
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
        let mut x: Vec<i64> = input.to_vec();
        let mut out = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            x = match layer {
                QLayer::Dense {
                    inputs,
                    outputs,
                    weights,
                    bias,
                    shift,
                    relu,
                    ..
                } => (0..*outputs)
                    .map(|o| {
                        let acc = dense_acc(&weights[o * inputs..(o + 1) * inputs], &x, bias[o]);
                        let q = round_div_pow2(acc, *shift);
                        let q = if *relu { q.max(0) } else { q };
                        q as i64
                    })
                    .collect(),
                QLayer::Relu { .. } => x.iter().map(|&v| v.max(0)).collect(),
            };
            out.push(x.clone());
        }
        out
    }

    /// SHA-256 of the canonical JSON of the quantized layers: binds the weights.
    pub fn weights_sha256(&self) -> String {
        let bytes = serde_json::to_vec(&self.layers).expect("layers serialize");
        hex::encode(Sha256::digest(bytes))
    }

    /// Total multiply-accumulates.
    pub fn macs(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                QLayer::Dense {
                    inputs, outputs, ..
                } => inputs * outputs,
                QLayer::Relu { .. } => 0,
            })
            .sum()
    }
}

/// `bias + sum(w * x)` in 128-bit integers.
pub fn dense_acc(weights: &[i64], x: &[i64], bias: i64) -> i128 {
    weights
        .iter()
        .zip(x)
        .fold(bias as i128, |a, (&w, &v)| a + w as i128 * v as i128)
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
                    weights: vec![0.5, -0.25, 1.0, 0.75],
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
