//! The halo2 circuit proving a quantized forward pass.
//!
//! # Design
//! The circuit is built to be cheap twice: for the prover (few columns, low degree, few rows)
//! and for the EVM verifier (few commitments, few public inputs). Every constraint has degree
//! at most 3, so the quotient is computed on a domain only twice the table and split in two
//! pieces; there are no lookup arguments and no copy constraints.
//!
//! Columns: `a`, `b`, `c` (first phase), `s`, `h`, `g` (second phase, after a challenge `γ`);
//! `b` and `g` only in the two-byte layout (below).
//!
//! **Freivalds' check in one running sum.** Every dense layer `z = W x + b` is checked as a
//! whole: with `z = d·(p − n) + r` (rounding division by `d = 2^shift`), each output
//! gives an equation `e_o = Σ_j w_oj x_j + b_o − d·(p_o − n_o) − r_o = 0`. The range checks
//! below bound every `|e_o|` for *any* witness that passes them, so several equations fit
//! side by side in one field element without carries: `E_f = Σ_m 2^(off_m)·e_m` (a *slot*,
//! at most 252 bits) is zero only if every `e_m` is. The slots are combined with powers of
//! `γ`: `Σ_f γ^f E_f = 0` (soundness error below). Every value sits in exactly one row of `a`, and the fixed columns `w[0..F]` of that row hold
//! its coefficient in each slot (its weights in the next layer, `−d` in its own equation...),
//! so the running sum is `s' = s + a·Σ_f γ^f w_f`: one row per value, whatever the number of
//! outputs reading it, and no copies.
//!
//! **Range checks by logarithmic derivatives, in the same sum.** A checked row holds a value
//! `a < 2^16` and its high byte `b`; the second-phase cells `h = 1/(γ + a − 256·b)` and
//! `g = 1/(γ + b)` are added to the running sum, and the 256 table rows subtract
//! `m_t/(γ + t)` with the multiplicity `m_t` committed in `c`. The total is zero for every `γ`
//! only if each byte is in the table (the rational terms cannot cancel the polynomial part, so
//! one sum with one challenge checks both). In the two-byte layout an 8-bit part is held as
//! `a = 256·v`, `b = v` with its low byte forced to zero (`q_z = 2`). With one byte per row,
//! `b` and `g` do not exist and `h = 1/(γ + a)`. The unused input slots of the last word are
//! range checked and one more packed equation says their sum is zero.
//!
//! **Soundness error of the one running sum.** `γ` is drawn after `a`, `b`, `c` are committed.
//! The gates force the sum to end at `T(γ) = P(γ) + Σ_i 1/(γ + β_i) − Σ_t m_t/(γ + t)`, where
//! `P(γ) = Σ_f γ^f E_f` has degree at most `F − 1`, the `β_i` are the checked bytes (`b` and
//! `a − 256·b` of every checked row) and `t` runs over the 256 table values. Let `V` be the
//! distinct values among the `β_i` and the table, `d = |V| ≤ row_bytes·rows + 256 ≤ 2n + 256`
//! (`n = 2^k`). Multiplying by `D(γ) = Π_{v∈V} (γ + v)` gives a polynomial
//! `N(γ) = P(γ)·D(γ) + Σ_{v∈V} c_v·Π_{v'≠v} (γ + v')` of degree at most `F − 1 + d`, where
//! `c_v` is the number of bytes equal to `v` minus its multiplicity (0 outside the table).
//! If some `c_v ≠ 0`, `N(−v) ≠ 0`; otherwise every byte is in the table, the range bounds
//! hold, and `N = P·D` is zero only if every equation is. So a wrong witness gives a nonzero
//! `N` and passes with probability at most `(F − 1 + d)/r ≤ (F + 2n + 256)/r` over `γ` (a
//! `γ` equal to some `−v` leaves the prover no inverse, which only hurts the prover). For
//! `k ≤ 24`, `F ≤ 64` that is below `2^-228`, before the usual terms of the PLONK argument,
//! KZG and the Fiat–Shamir transcript.
//!
//! | gate | rows | constraint |
//! |---|---|---|
//! | running sum | `q_run ≠ 0` | `s' = s + a·Σ_f γ^f w_f + q_rc·(h + g) − q_tab·h` |
//! | byte inverses | `q_rc` | `h·(γ + a − 256·b) = 1`, `g·(γ + b) = 1` |
//! | table | `q_tab` | `h·(γ + w_0) = c` (`w_0` = the table value), `a = 0` |
//! | rounding | `q_blk` | `p·n = 0` for a ReLU output (`p`, `n` in the rows below) |
//! | ends, zeros | `q_z = 1` / `2` | `s = −Σ_f γ^f w_f` / `c = 0` and `a − 256·b = 0` |
//! | inputs | `q_x = 1` / `2` | `c = a + 2^16·c[+S]` / `instance = a + 2^16·c[+S]` |
//! | outputs | `q_run = 2` | `a = instance` |
//!
//! A ReLU output is `p` (hence `p·n = 0`); an identity output is read as `p − n` by its
//! consumer and its public slot, so it needs no such gate.
//!
//! The sum starts at `−Σ_f γ^f w_f` of the first row and must end at `−Σ_f γ^f w_f` of the
//! last, whose weights are the first row's plus every slot's constant terms (biases).
//!
//! # Public values
//! The input codes and the quantized output are packed into few field elements (*words*), each
//! value in a slot of `8·in_limbs` (input codes, a multiple of 16 bits) or `8·out_limbs + 1`
//! bits (outputs, offset by `2^(8·out_limbs)`), at most [`WORD_BITS`] bits per word (`2^16`
//! above stands for `2^(8·row_bytes)`). An input code `u` stands for
//! `lo + u·(hi − lo)/(2^(8·in_limbs) − 1)` (see [`crate::quantize`]): the range checks of its
//! rows bound it by `2^(8·in_limbs) − 1` exactly, so the proof itself enforces the declared
//! input range, on chain too, where nobody decodes the words. The public layout has one layer of `S = J + K` rows per input
//! part: part `m` of input word `j` is in row `m·S + j`, and `c` accumulates each word from its
//! last part up, so `c` of the first `J` rows would be the input words; the gate compares them
//! with the instance column instead, and `J` zero rows below the layout end the accumulation.
//! The `K` output words sit in rows `J..J+K` of the first layer, tied to the instance in place;
//! each is one more equation of the running sum. Every packed value is range checked, so the
//! words determine the values.
//!
//! # Statement digest
//! One row after the closing row holds [`statement_digest`] (the SHA-256 of the whole compiled
//! model) in a fixed cell under no gate. It changes nothing a proof checks, but the verifying
//! key commits to every fixed cell, so two models that differ only in what their words mean
//! (input range, code width, activation scale, shapes) have different keys.

use crate::error::CompileError;
use crate::quantize::{QLayer, QuantizedModel};
use halo2_proofs::{
    circuit::{Layouter, SimpleFloorPlanner, Value},
    halo2curves::{
        bn256::Fr,
        ff::{Field, PrimeField},
    },
    plonk::{
        Advice, Challenge, Circuit, Column, ConstraintSystem, Error, Expression, FirstPhase, Fixed,
        Instance, SecondPhase,
    },
    poly::Rotation,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Bits per range-check byte; the table holds `0..2^LIMB_BITS`.
pub const LIMB_BITS: u32 = 8;
/// Largest number of bits packed into one public word (below the 254-bit field).
pub const WORD_BITS: u32 = 250;
/// Largest number of bits of one Freivalds slot (`|E_f| < 2^252 < r/2`).
pub const SLOT_BITS: u32 = 252;
/// Smallest `k` the circuit uses (the table needs 256 rows).
pub const MIN_K: u32 = 9;
/// Largest `k` the circuit uses.
pub const MAX_K: u32 = 24;
/// Largest number of weight columns (slots) a circuit may have.
pub const MAX_WEIGHT_COLUMNS: usize = 64;

const TABLE_SIZE: usize = 1 << LIMB_BITS;

/// The circuit's `Params`: everything the gates depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnShape {
    /// `F`: fixed weight columns, one per Freivalds slot.
    pub weight_columns: usize,
    /// Bytes of each part `p`, `n` of a model output (and of an output's public slot).
    pub out_limbs: usize,
    /// Bytes of each part `p`, `n` of every ReLU layer's output (the rounding gate's layout).
    pub relu_limbs: usize,
    /// Bytes of a packed model input.
    pub in_limbs: usize,
    /// Bytes per checked row: 2 (columns `b` and `g` hold the high byte and its inverse) or 1.
    pub row_bytes: usize,
    /// `J`: input words.
    pub input_words: usize,
    /// Output words (rows of the public layout's first layer after the input words).
    pub output_words: usize,
    /// Parts per input word: the public layout has `input_layers` layers of
    /// `input_words + output_words` rows.
    pub input_layers: usize,
}

impl Default for ColumnShape {
    fn default() -> Self {
        ColumnShape {
            weight_columns: 1,
            out_limbs: 2,
            relu_limbs: 2,
            in_limbs: 2,
            row_bytes: 2,
            input_words: 1,
            output_words: 1,
            input_layers: 1,
        }
    }
}

/// `2^bits` as a field element.
fn pow2(bits: u32) -> Fr {
    let mut r = Fr::one();
    let mut left = bits;
    while left > 0 {
        let step = left.min(63);
        r *= Fr::from(1u64 << step);
        left -= step;
    }
    r
}

fn limbs_for(bits: u32) -> usize {
    (bits.div_ceil(LIMB_BITS) as usize).max(1)
}

fn bits_for(max: i128) -> u32 {
    (128 - max.unsigned_abs().leading_zeros()).max(1)
}

/// Splits `v` into parts of the given sizes; the top part keeps whatever is left, so a value
/// too large for its parts shows up as a top part out of range.
fn split(v: i128, bits: &[u32]) -> Vec<i128> {
    let mut out = Vec::with_capacity(bits.len());
    let mut off = 0;
    for (t, &b) in bits.iter().enumerate() {
        let part = v >> off;
        out.push(if t + 1 == bits.len() {
            part
        } else {
            part & ((1i128 << b) - 1)
        });
        off += b;
    }
    out
}

impl ColumnShape {
    /// `a, c, s, h`, and `b, g` with two bytes per row.
    pub fn advice_columns(&self) -> usize {
        2 + 2 * self.row_bytes
    }
    /// Bits of one full checked row.
    fn row_bits(&self) -> u32 {
        LIMB_BITS * self.row_bytes as u32
    }
    /// Bits of each checked row of a value of `limbs` bytes: full rows, and with two bytes per
    /// row a last 8-bit row if the byte count is odd.
    fn parts(&self, limbs: usize) -> Vec<u32> {
        let mut v = vec![self.row_bits(); limbs / self.row_bytes];
        if limbs % self.row_bytes == 1 {
            v.push(LIMB_BITS);
        }
        v
    }
    /// A two-byte row holding one byte (`a = 256·v`, `b = v`).
    fn small(&self, bits: u32) -> bool {
        self.row_bytes == 2 && bits == LIMB_BITS
    }
    /// What row `t` of a value contributes per unit of its `a`.
    fn factor(&self, bits: &[u32], t: usize) -> Fr {
        let f = pow2(bits[..t].iter().sum());
        if self.small(bits[t]) {
            static INV_256: std::sync::OnceLock<Fr> = std::sync::OnceLock::new();
            f * INV_256.get_or_init(|| Fr::from(256).invert().unwrap())
        } else {
            f
        }
    }
    /// Fixed columns: weights and six selectors.
    pub fn fixed_columns(&self) -> usize {
        self.weight_columns + 6
    }
    fn relu_parts(&self) -> Vec<u32> {
        self.parts(self.relu_limbs)
    }
    /// Rows of one packed input (full rows each).
    fn in_parts(&self) -> usize {
        self.in_limbs.div_ceil(self.row_bytes)
    }
    fn in_slot(&self) -> u32 {
        self.row_bits() * self.in_parts() as u32
    }
    fn out_slot(&self) -> u32 {
        LIMB_BITS * self.out_limbs as u32 + 1
    }
    fn out_offset(&self) -> i128 {
        1i128 << (LIMB_BITS * self.out_limbs as u32)
    }
    /// `S`: rows of one layer of the public layout (its stride).
    fn stride(&self) -> usize {
        self.input_words + self.output_words
    }
    /// Rows of the public layout.
    fn input_rows(&self) -> usize {
        self.stride() * self.input_layers
    }
    /// Input rows of the public layout that hold no input (the last word's unused slots).
    fn padding_rows(&self, model: &QuantizedModel) -> usize {
        self.input_words * self.input_layers - model.input_len() * self.in_parts()
    }

    /// The shape of a model with `row_bytes` bytes per checked row: byte counts from the
    /// quantizer's bounds, the input layout from the public packing and one weight column per
    /// Freivalds slot.
    pub fn for_model(model: &QuantizedModel, row_bytes: usize) -> Result<Self, CompileError> {
        Ok(Self::derive(model, &circuit_layers(model), row_bytes)?.0)
    }

    /// The shape and the slot assignment it comes from.
    fn derive(
        model: &QuantizedModel,
        layers: &[CLayer],
        row_bytes: usize,
    ) -> Result<(Self, Slots), CompileError> {
        let mut shape = ColumnShape {
            weight_columns: 1,
            out_limbs: layers.last().map_or(1, |l| l.limbs),
            relu_limbs: relu_limbs(layers),
            // input codes have a multiple of 16 bits: whole rows in either layout, so the
            // range checks bound a code by exactly its largest value
            in_limbs: (model.input_bits / LIMB_BITS) as usize,
            row_bytes: row_bytes.clamp(1, 2),
            input_words: 1,
            output_words: 1,
            input_layers: 1,
        };
        let pk = Packing::new(&PublicLayout::of_model(model, shape));
        shape.input_words = pk.input_words;
        shape.output_words = pk.output_words;
        shape.input_layers = pk.inputs_per_word * shape.in_parts();
        let slots = Slots::assign(layers, &shape, pk.output_words, shape.padding_rows(model))?;
        shape.weight_columns = slots.count;
        Ok((shape, slots))
    }
}

/// What the public words hold: the numbers of inputs (codes) and outputs and the slot sizes
/// of the shape. Known to a verifier from the settings alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicLayout {
    pub inputs: usize,
    pub outputs: usize,
    pub shape: ColumnShape,
}

impl PublicLayout {
    pub fn of_model(model: &QuantizedModel, shape: ColumnShape) -> Self {
        PublicLayout {
            inputs: model.input_len(),
            outputs: model.output_len(),
            shape,
        }
    }
}

/// Where each public value goes: `(word, bit offset)` for the inputs, then the outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packing {
    pub inputs: Vec<(usize, u32)>,
    pub outputs: Vec<(usize, u32)>,
    pub input_words: usize,
    pub output_words: usize,
    /// Inputs per word (the last word may hold fewer).
    pub inputs_per_word: usize,
}

impl Packing {
    pub fn new(layout: &PublicLayout) -> Self {
        let place = |n: usize, slot: u32, first: usize| -> (Vec<(usize, u32)>, usize) {
            let per = (WORD_BITS / slot).max(1) as usize;
            let v = (0..n)
                .map(|i| (first + i / per, (i % per) as u32 * slot))
                .collect();
            (v, n.div_ceil(per))
        };
        let (inputs, input_words) = place(layout.inputs, layout.shape.in_slot(), 0);
        let (outputs, output_words) = place(layout.outputs, layout.shape.out_slot(), input_words);
        Packing {
            inputs,
            outputs,
            input_words,
            output_words,
            inputs_per_word: (WORD_BITS / layout.shape.in_slot()).max(1) as usize,
        }
    }
    pub fn words(&self) -> usize {
        self.input_words + self.output_words
    }
}

/// Packs input codes `u` and outputs into words.
fn pack_values(pk: &Packing, shape: &ColumnShape, u: &[i128], outputs: &[i128]) -> Vec<Fr> {
    let mut words = vec![Fr::zero(); pk.words()];
    for (&(w, off), &v) in pk.inputs.iter().zip(u) {
        words[w] += fr_from_i128(v) * pow2(off);
    }
    for (&(w, off), &y) in pk.outputs.iter().zip(outputs) {
        words[w] += fr_from_i128(y + shape.out_offset()) * pow2(off);
    }
    words
}

/// Packs input codes and a quantized output into the public words.
pub fn pack_public(
    model: &QuantizedModel,
    shape: &ColumnShape,
    input: &[i64],
    output: &[i64],
) -> Vec<Fr> {
    let u: Vec<i128> = input.iter().map(|&x| x as i128).collect();
    let y: Vec<i128> = output.iter().map(|&v| v as i128).collect();
    let layout = PublicLayout::of_model(model, *shape);
    pack_values(&Packing::new(&layout), shape, &u, &y)
}

/// Unpacks public words into the input codes and the quantized output; `None` if they are not a
/// packing of values that fit their slots (wrong count, or a bit outside every slot).
pub fn unpack_public(layout: &PublicLayout, words: &[Fr]) -> Option<(Vec<i64>, Vec<i64>)> {
    let shape = layout.shape;
    let pk = Packing::new(layout);
    if words.len() != pk.words() {
        return None;
    }
    // the words as little-endian 256-bit integers
    let ints: Vec<[u8; 32]> = words
        .iter()
        .map(|w| {
            let r = w.to_repr();
            let mut b = [0u8; 32];
            b.copy_from_slice(r.as_ref());
            b
        })
        .collect();
    let mut used = vec![[0u8; 32]; words.len()];
    let mut take = |w: usize, off: u32, bits: u32| -> i128 {
        let mut v = 0i128;
        for i in 0..bits {
            let bit = off + i;
            let (byte, shift) = ((bit / 8) as usize, bit % 8);
            used[w][byte] |= 1 << shift;
            if ints[w][byte] >> shift & 1 == 1 {
                v |= 1 << i;
            }
        }
        v
    };
    let inputs: Vec<i64> = pk
        .inputs
        .iter()
        .map(|&(w, off)| take(w, off, shape.in_slot()) as i64)
        .collect();
    let outputs: Vec<i64> = pk
        .outputs
        .iter()
        .map(|&(w, off)| (take(w, off, shape.out_slot()) - shape.out_offset()) as i64)
        .collect();
    for (w, u) in ints.iter().zip(&used) {
        if w.iter().zip(u).any(|(b, m)| b & !m != 0) {
            return None;
        }
    }
    Some((inputs, outputs))
}

/// A dense layer as the circuit sees it: the stand-alone ReLU becomes an identity layer with
/// weight `2^8` and the rounding half is folded into the bias. The first layer reads the input
/// codes (the quantizer folded their offset and step into its weights).
struct CLayer {
    inputs: usize,
    outputs: usize,
    weights: Vec<i64>,
    bias: Vec<i128>,
    shift: u32,
    relu: bool,
    /// The inputs are identity outputs `p − n`: each takes two rows (`p`, then `n` negated).
    signed_inputs: bool,
    /// Bytes of each part `p`, `n` of an output (the same for every ReLU layer).
    limbs: usize,
}

impl CLayer {
    fn w(&self, o: usize, j: usize) -> i64 {
        self.weights[o * self.inputs + j]
    }
}

/// The byte count of every ReLU layer's parts: the largest any of them needs.
fn relu_limbs(layers: &[CLayer]) -> usize {
    layers
        .iter()
        .filter(|l| l.relu)
        .map(|l| l.limbs)
        .max()
        .unwrap_or(1)
}

fn circuit_layers(model: &QuantizedModel) -> Vec<CLayer> {
    let mut out: Vec<CLayer> = model
        .layers
        .iter()
        .map(|l| match l {
            QLayer::Dense {
                inputs,
                outputs,
                weights,
                bias,
                shift,
                relu,
                out_bits,
                ..
            } => CLayer {
                inputs: *inputs,
                outputs: *outputs,
                weights: weights.clone(),
                bias: bias
                    .iter()
                    .map(|&b| b as i128 + if *shift > 0 { 1i128 << (shift - 1) } else { 0 })
                    .collect(),
                shift: *shift,
                relu: *relu,
                signed_inputs: false,
                limbs: limbs_for(*out_bits),
            },
            QLayer::Relu { len, out_bits, .. } => {
                let mut weights = vec![0i64; len * len];
                for j in 0..*len {
                    weights[j * len + j] = 1 << LIMB_BITS;
                }
                CLayer {
                    inputs: *len,
                    outputs: *len,
                    weights,
                    bias: vec![1i128 << (LIMB_BITS - 1); *len],
                    shift: LIMB_BITS,
                    relu: true,
                    signed_inputs: false,
                    limbs: limbs_for(*out_bits),
                }
            }
        })
        .collect();
    // a stand-alone ReLU splits its input into p and n: n is as large as the input's negative
    // side (the previous layer's pre-activation bound; the first layer is always dense)
    let mut prev_bits = model.input_bits;
    for (l, q) in out.iter_mut().zip(&model.layers) {
        let bits = match q {
            QLayer::Dense { out_bits, .. } => *out_bits,
            QLayer::Relu { out_bits, .. } => {
                l.limbs = l.limbs.max(limbs_for(prev_bits));
                *out_bits
            }
        };
        prev_bits = bits;
    }
    let relu = relu_limbs(&out);
    for l in out.iter_mut().filter(|l| l.relu) {
        l.limbs = relu;
    }
    for i in 1..out.len() {
        out[i].signed_inputs = !out[i - 1].relu;
    }
    out
}

/// The largest `|x|` the range checks allow for the inputs of layer `li`: a packed input, or
/// the previous layer's `p` (ReLU) or `p − n` (identity).
fn layer_source_bound(layers: &[CLayer], li: usize, shape: &ColumnShape) -> i128 {
    if li == 0 {
        (1i128 << shape.in_slot()) - 1
    } else {
        (1i128 << (LIMB_BITS * layers[li - 1].limbs as u32)) - 1
    }
}

/// Which Freivalds slot, at which bit offset, checks each equation.
#[derive(Clone, Debug)]
struct Slots {
    count: usize,
    /// Per layer and output: the slot and `2^offset`.
    layer: Vec<Vec<(usize, Fr)>>,
    /// The slot of each output word (one each: a word fills a field element).
    words: Vec<usize>,
    /// The slot and `2^offset` of `Σ (unused input slots) = 0`, if the last word has any.
    padding: Option<(usize, Fr)>,
}

impl Slots {
    /// Packs equations greedily into slots of at most [`SLOT_BITS`] bits. An equation's width
    /// is the bound of `|e_o|` over every witness the range checks let through (not only
    /// honest ones), plus a sign bit.
    fn assign(
        layers: &[CLayer],
        shape: &ColumnShape,
        output_words: usize,
        padding_rows: usize,
    ) -> Result<Self, CompileError> {
        let (mut count, mut used) = (0usize, SLOT_BITS);
        let mut layer = Vec::with_capacity(layers.len());
        for (li, l) in layers.iter().enumerate() {
            let x = layer_source_bound(layers, li, shape);
            let out_max = (1i128 << (LIMB_BITS * l.limbs as u32)) - 1;
            let overflow = || CompileError::Quantization {
                layer: li,
                detail: "the bound of a layer equation overflows 127 bits".into(),
            };
            let d = 1i128 << l.shift;
            let own = d
                .checked_mul(out_max)
                .and_then(|v| v.checked_add(d))
                .ok_or_else(overflow)?;
            let mut v = Vec::with_capacity(l.outputs);
            for o in 0..l.outputs {
                let mut bound = l.bias[o].checked_abs().ok_or_else(overflow)?;
                bound = bound.checked_add(own).ok_or_else(overflow)?;
                for j in 0..l.inputs {
                    let t = (l.w(o, j) as i128)
                        .abs()
                        .checked_mul(x)
                        .ok_or_else(overflow)?;
                    bound = bound.checked_add(t).ok_or_else(overflow)?;
                }
                let bits = bits_for(bound) + 1;
                if bits > SLOT_BITS {
                    return Err(overflow());
                }
                if used + bits > SLOT_BITS {
                    count += 1;
                    used = 0;
                }
                v.push((count - 1, pow2(used)));
                used += bits;
            }
            layer.push(v);
        }
        // the unused input slots are range checked, so they are all zero if their sum is
        let mut padding = None;
        if padding_rows > 0 {
            let bound = padding_rows as i128 * ((1i128 << shape.row_bits()) - 1);
            let bits = bits_for(bound) + 1;
            if used + bits > SLOT_BITS {
                count += 1;
                used = 0;
            }
            padding = Some((count - 1, pow2(used)));
        }
        let words = (count..count + output_words).collect();
        count += output_words;
        Ok(Slots {
            count,
            layer,
            words,
            padding,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    P,
    N,
    R,
}

/// What a row's `a` cell holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    Zero,
    /// Part `t` of packed input `i`.
    Input {
        i: usize,
        t: usize,
    },
    /// Part `t` of `p`, `n` or `r` of output `o` of layer `l`.
    Block {
        l: usize,
        o: usize,
        part: Part,
        t: usize,
    },
    /// Output word `k`.
    OutWord(usize),
    /// Table row `t` (`a = 0`, `c` = multiplicity).
    Table(usize),
}

#[derive(Clone, Debug)]
struct RowSpec {
    src: Src,
    /// Range-checked (`q_rc`).
    checked: bool,
    /// An 8-bit part (`a = 256·v`, `b = v`).
    small: bool,
    q_run: u8,
    q_x: u8,
    q_z: u8,
    q_blk: bool,
    /// Nonzero weights `(slot, value)`.
    w: Vec<(usize, Fr)>,
}

impl RowSpec {
    fn new(src: Src) -> Self {
        RowSpec {
            src,
            checked: false,
            small: false,
            q_run: 1,
            q_x: 0,
            q_z: 0,
            q_blk: false,
            w: Vec::new(),
        }
    }
    fn add(&mut self, slot: usize, v: Fr) {
        match self.w.iter_mut().find(|e| e.0 == slot) {
            Some(e) => e.1 += v,
            None => self.w.push((slot, v)),
        }
    }
}

/// The rows of a circuit: sources, selectors and weights (the same for every input).
struct Layout {
    rows: Vec<RowSpec>,
    packing: Packing,
    layers: Vec<CLayer>,
}

impl Layout {
    /// The layout of a model; `digest` goes in the statement-digest cell (any value will do
    /// where only the rows are counted).
    fn build(
        model: &QuantizedModel,
        shape: &ColumnShape,
        digest: Fr,
    ) -> Result<Self, CompileError> {
        let layers = circuit_layers(model);
        let (expected, slots) = ColumnShape::derive(model, &layers, shape.row_bytes)?;
        if expected != *shape {
            return Err(CompileError::Format {
                what: "settings",
                detail: "the circuit shape does not match the model".into(),
            });
        }
        let packing = Packing::new(&PublicLayout::of_model(model, *shape));
        let in_parts = shape.in_parts();
        let per = packing.inputs_per_word;
        let (j_in, n_in, stride) = (shape.input_words, model.input_len(), shape.stride());
        let in_row = |i: usize, t: usize| ((i % per) * in_parts + t) * stride + i / per;
        // the public layout: layer m holds part m of every input word, then (first layer only)
        // the output words
        let mut rows = Vec::new();
        for r in 0..shape.input_rows() {
            let (m, j) = (r / stride, r % stride);
            let mut row;
            if j < j_in {
                let i = j * per + m / in_parts;
                row = RowSpec::new(if i < n_in {
                    Src::Input { i, t: m % in_parts }
                } else {
                    Src::Zero
                });
                if let (Src::Zero, Some((slot, mu))) = (row.src, slots.padding) {
                    row.add(slot, mu);
                }
                row.checked = true;
                row.q_x = if m == 0 { 2 } else { 1 };
            } else if m == 0 {
                row = RowSpec::new(Src::OutWord(j - j_in));
                row.q_run = 2;
            } else {
                row = RowSpec::new(Src::Zero);
            }
            rows.push(row);
        }
        // the accumulators of the last layer read `c = 0` one stride below
        for _ in 0..j_in {
            let mut row = RowSpec::new(Src::Zero);
            row.q_z = 2;
            rows.push(row);
        }
        let mut blocks: Vec<Vec<[usize; 3]>> = Vec::with_capacity(layers.len());
        for (l, layer) in layers.iter().enumerate() {
            let out_bits = shape.parts(layer.limbs);
            let rem_bits = shape.parts((layer.shift / LIMB_BITS) as usize);
            let mut starts = Vec::with_capacity(layer.outputs);
            for o in 0..layer.outputs {
                let mut at = [0; 3];
                for (pi, (part, bits)) in [
                    (Part::P, &out_bits),
                    (Part::N, &out_bits),
                    (Part::R, &rem_bits),
                ]
                .into_iter()
                .enumerate()
                {
                    at[pi] = rows.len();
                    for (t, &b) in bits.iter().enumerate() {
                        let mut row = RowSpec::new(Src::Block { l, o, part, t });
                        row.checked = true;
                        row.small = shape.small(b);
                        // a one-byte row of a two-byte layout: its low byte must be zero
                        row.q_z = if row.small { 2 } else { 0 };
                        row.q_blk = layer.relu && part == Part::P && t == 0;
                        rows.push(row);
                    }
                }
                starts.push(at);
            }
            blocks.push(starts);
        }
        for t in 0..TABLE_SIZE {
            let mut row = RowSpec::new(Src::Table(t));
            row.w.push((0, Fr::from(t as u64)));
            rows.push(row);
        }

        // coefficients
        let mut consts = vec![Fr::zero(); slots.count];
        let add_value =
            |rows: &mut Vec<RowSpec>, start: usize, bits: &[u32], slot: usize, c: Fr| {
                for t in 0..bits.len() {
                    rows[start + t].add(slot, c * shape.factor(bits, t));
                }
            };
        for (li, layer) in layers.iter().enumerate() {
            let d = pow2(layer.shift);
            let out_bits = shape.parts(layer.limbs);
            let rem_bits = shape.parts((layer.shift / LIMB_BITS) as usize);
            let in_bits = (li > 0).then(|| shape.parts(layers[li - 1].limbs));
            for o in 0..layer.outputs {
                let (slot, mu) = slots.layer[li][o];
                consts[slot] += mu * fr_from_i128(layer.bias[o]);
                for j in 0..layer.inputs {
                    let w = layer.w(o, j);
                    if w == 0 {
                        continue;
                    }
                    let coef = mu * fr_from_i128(w as i128);
                    match &in_bits {
                        None => {
                            for t in 0..in_parts {
                                rows[in_row(j, t)]
                                    .add(slot, coef * pow2(shape.row_bits() * t as u32));
                            }
                        }
                        Some(bits) => {
                            let [p0, n0, _] = blocks[li - 1][j];
                            add_value(&mut rows, p0, bits, slot, coef);
                            if layer.signed_inputs {
                                add_value(&mut rows, n0, bits, slot, -coef);
                            }
                        }
                    }
                }
                let [p0, n0, r0] = blocks[li][o];
                add_value(&mut rows, p0, &out_bits, slot, -mu * d);
                add_value(&mut rows, n0, &out_bits, slot, mu * d);
                add_value(&mut rows, r0, &rem_bits, slot, -mu);
            }
        }
        let last = layers.len() - 1;
        let out_bits = shape.parts(layers[last].limbs);
        for (m, &(k, off)) in packing.outputs.iter().enumerate() {
            let slot = slots.words[k - packing.input_words];
            let coef = pow2(off);
            let [p0, n0, _] = blocks[last][m];
            add_value(&mut rows, p0, &out_bits, slot, -coef);
            if !layers[last].relu {
                add_value(&mut rows, n0, &out_bits, slot, coef);
            }
            consts[slot] -= coef * fr_from_i128(shape.out_offset());
        }
        for (k, &slot) in slots.words.iter().enumerate() {
            rows[j_in + k].add(slot, Fr::one());
        }
        // the closing row: the sum must end at minus its weights
        let mut end = RowSpec::new(Src::Zero);
        end.q_run = 0;
        end.q_z = 1;
        for (slot, v) in consts.iter().enumerate() {
            let first = rows[0]
                .w
                .iter()
                .find(|e| e.0 == slot)
                .map_or(Fr::zero(), |e| e.1);
            if *v + first != Fr::zero() {
                end.w.push((slot, *v + first));
            }
        }
        rows[0].q_z = 1;
        rows.push(end);
        // the statement digest in a fixed cell that no gate reads: the verifying key commits
        // to the whole compiled model (input range, code width, scales, shapes), not only to
        // the weights the other fixed cells hold
        let mut digest_row = RowSpec::new(Src::Zero);
        digest_row.q_run = 0;
        digest_row.w.push((0, digest));
        rows.push(digest_row);
        Ok(Layout {
            rows,
            packing,
            layers,
        })
    }
}

/// The model's SHA-256 ([`QuantizedModel::sha256`]) as a field element (its first 31 bytes,
/// little-endian, so it is always below the modulus). The circuit puts it in a fixed cell.
pub fn statement_digest(model: &QuantizedModel) -> Fr {
    let bytes = hex::decode(model.sha256()).expect("hex digest");
    let mut repr = [0u8; 32];
    repr[..31].copy_from_slice(&bytes[..31]);
    Fr::from_repr(repr).expect("31 bytes are below the modulus")
}

/// Rows a model needs, for a given shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCount {
    /// Rows used, the closing row included.
    pub used: usize,
    /// Public inputs (packed words).
    pub instances: usize,
    /// Rows halo2 keeps for blinding at the end of the table.
    pub reserved: usize,
}

impl RowCount {
    pub fn rows(&self) -> usize {
        self.used
    }
    /// Smallest `k` whose table fits all rows plus the blinding rows.
    pub fn k(&self) -> u32 {
        let need = self.used + self.reserved;
        let mut k = MIN_K;
        while (1usize << k) < need {
            k += 1;
        }
        k
    }
}

/// Counts rows without assigning anything (the layout [`ModelCircuit::synthesize`] uses).
/// Counts from the shape alone, without the coefficients (a thousandth of the time for
/// mnist_mlp); synthesis asserts that the layout has exactly these rows.
pub fn count_rows(model: &QuantizedModel, shape: ColumnShape) -> Result<RowCount, CompileError> {
    let layers = circuit_layers(model);
    if ColumnShape::derive(model, &layers, shape.row_bytes)?.0 != shape {
        return Err(CompileError::Format {
            what: "settings",
            detail: "the circuit shape does not match the model".into(),
        });
    }
    let mut cs = ConstraintSystem::<Fr>::default();
    ModelConfig::configure(&mut cs, shape);
    Ok(RowCount {
        used: rows_of(&layers, &shape),
        instances: shape.input_words + shape.output_words,
        reserved: cs.minimum_rows(),
    })
}

/// Rows of [`Layout::build`]: the public layout and the zero rows below it, `p`, `n` and `r` of
/// every output, the table, the closing row and the digest row.
fn rows_of(layers: &[CLayer], shape: &ColumnShape) -> usize {
    let blocks: usize = layers
        .iter()
        .map(|l| {
            let value = shape.parts(l.limbs).len();
            let rem = shape.parts((l.shift / LIMB_BITS) as usize).len();
            l.outputs * (2 * value + rem)
        })
        .sum();
    shape.input_rows() + shape.input_words + blocks + TABLE_SIZE + 2
}

/// A column shape, its row count and the `k` it gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub shape: ColumnShape,
    pub rows: RowCount,
    pub k: u32,
}

/// Plans the circuit of a model: its shape (one weight column per slot), rows and `k`.
/// Refuses models needing more than `max_weight_columns` slots: each weight column is one more
/// commitment for the verifier (about 7,000 gas and 300 bytes of EVM code).
pub fn plan(model: &QuantizedModel, max_weight_columns: usize) -> Result<Plan, CompileError> {
    // two bytes per row halve the rows; one byte per row saves two advice columns (for the
    // prover two commitments, for the EVM verifier about 14,000 gas): taken when `k` allows
    let mut best: Option<Plan> = None;
    for row_bytes in [2, 1] {
        let p = plan_with(model, max_weight_columns, row_bytes)?;
        if best.as_ref().is_none_or(|b| p.k <= b.k) {
            best = Some(p);
        }
    }
    Ok(best.expect("two plans"))
}

/// Plans the circuit with a given number of bytes per checked row.
pub fn plan_with(
    model: &QuantizedModel,
    max_weight_columns: usize,
    row_bytes: usize,
) -> Result<Plan, CompileError> {
    let shape = ColumnShape::for_model(model, row_bytes)?;
    let cap = max_weight_columns.min(MAX_WEIGHT_COLUMNS);
    if shape.weight_columns > cap {
        return Err(CompileError::Structure {
            node: "graph".into(),
            detail: format!(
                "the model needs {} weight columns (Freivalds slots), more than the {cap} allowed; \
                 raise --max-weight-columns (at most {MAX_WEIGHT_COLUMNS})",
                shape.weight_columns
            ),
        });
    }
    let rows = count_rows(model, shape)?;
    let k = rows.k();
    Ok(Plan { shape, rows, k })
}

/// Columns, challenge and gates of the circuit.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    a: Column<Advice>,
    /// High bytes (two bytes per row only).
    b: Option<Column<Advice>>,
    c: Column<Advice>,
    s: Column<Advice>,
    h: Column<Advice>,
    /// Inverses of the high bytes (two bytes per row only).
    g: Option<Column<Advice>>,
    w: Vec<Column<Fixed>>,
    q_run: Column<Fixed>,
    q_rc: Column<Fixed>,
    q_tab: Column<Fixed>,
    q_blk: Column<Fixed>,
    q_z: Column<Fixed>,
    q_x: Column<Fixed>,
    gamma: Challenge,
    shape: ColumnShape,
}

fn c(v: u64) -> Expression<Fr> {
    Expression::Constant(Fr::from(v))
}

fn k(v: Fr) -> Expression<Fr> {
    Expression::Constant(v)
}

/// For a selector taking the values 0, 1, 2: expressions that are 1 on value 1 (resp. 2, resp.
/// either) and 0 elsewhere (degree 2).
fn select(q: Expression<Fr>) -> [Expression<Fr>; 3] {
    let half = k(Fr::from(2).invert().unwrap());
    [
        q.clone() * (c(2) - q.clone()),
        q.clone() * (q.clone() - c(1)) * half.clone(),
        q.clone() * (c(3) - q) * half,
    ]
}

impl ModelConfig {
    /// Declares the columns and gates for a shape.
    pub fn configure(meta: &mut ConstraintSystem<Fr>, shape: ColumnShape) -> Self {
        let wide = shape.row_bytes == 2;
        let a = meta.advice_column_in(FirstPhase);
        let b = wide.then(|| meta.advice_column_in(FirstPhase));
        let c_ = meta.advice_column_in(FirstPhase);
        let gamma = meta.challenge_usable_after(FirstPhase);
        let [s, h] = [(); 2].map(|_| meta.advice_column_in(SecondPhase));
        let g = wide.then(|| meta.advice_column_in(SecondPhase));
        let w: Vec<_> = (0..shape.weight_columns.max(1))
            .map(|_| meta.fixed_column())
            .collect();
        let [q_run, q_rc, q_tab, q_blk, q_z, q_x] = [(); 6].map(|_| meta.fixed_column());
        let instance: Column<Instance> = meta.instance_column();

        // Σ_f γ^f w_f by Horner's rule
        let comb = |m: &mut halo2_proofs::plonk::VirtualCells<'_, Fr>| {
            let gm = m.query_challenge(gamma);
            let mut e = m.query_fixed(*w.last().expect("w"), Rotation::cur());
            for wc in w.iter().rev().skip(1) {
                e = e * gm.clone() + m.query_fixed(*wc, Rotation::cur());
            }
            e
        };

        meta.create_gate("running sum and output words", |m| {
            let [_, tie, any] = select(m.query_fixed(q_run, Rotation::cur()));
            let l = comb(m);
            let (cur, next) = (
                m.query_advice(s, Rotation::cur()),
                m.query_advice(s, Rotation::next()),
            );
            let x = m.query_advice(a, Rotation::cur());
            let hv = m.query_advice(h, Rotation::cur());
            let inverses = match g {
                Some(g) => hv.clone() + m.query_advice(g, Rotation::cur()),
                None => hv.clone(),
            };
            let rc = m.query_fixed(q_rc, Rotation::cur());
            let tab = m.query_fixed(q_tab, Rotation::cur());
            let word = m.query_advice(a, Rotation::cur());
            let inst = m.query_instance(instance, Rotation::cur());
            vec![
                any * (next - cur) - x * l - rc * inverses + tab * hv,
                tie * (word - inst),
            ]
        });

        meta.create_gate("byte inverses", |m| {
            let q = m.query_fixed(q_rc, Rotation::cur());
            let gm = m.query_challenge(gamma);
            let x = m.query_advice(a, Rotation::cur());
            let hv = m.query_advice(h, Rotation::cur());
            match (b, g) {
                (Some(b), Some(g)) => {
                    let hi = m.query_advice(b, Rotation::cur());
                    let lo = x - hi.clone() * c(TABLE_SIZE as u64);
                    vec![
                        q.clone() * (hv * (gm.clone() + lo) - c(1)),
                        q * (m.query_advice(g, Rotation::cur()) * (gm + hi) - c(1)),
                    ]
                }
                _ => vec![q * (hv * (gm + x) - c(1))],
            }
        });

        meta.create_gate("table", |m| {
            let q = m.query_fixed(q_tab, Rotation::cur());
            let gm = m.query_challenge(gamma);
            let t = m.query_fixed(w[0], Rotation::cur());
            vec![
                q.clone()
                    * (m.query_advice(h, Rotation::cur()) * (gm + t)
                        - m.query_advice(c_, Rotation::cur())),
                q * m.query_advice(a, Rotation::cur()),
            ]
        });

        let out_bits = shape.relu_parts();
        meta.create_gate("rounding", |m| {
            let q = m.query_fixed(q_blk, Rotation::cur());
            let rows = out_bits.len() as i32;
            let mut value = |first: i32| {
                (0..out_bits.len()).fold(c(0), |acc, t| {
                    acc + m.query_advice(a, Rotation(first + t as i32))
                        * k(shape.factor(&out_bits, t))
                })
            };
            let p = value(0);
            let n = value(rows);
            vec![q * p * n]
        });

        meta.create_gate("ends and zeros", |m| {
            let [sum, zero, _] = select(m.query_fixed(q_z, Rotation::cur()));
            let l = comb(m);
            let x = m.query_advice(a, Rotation::cur());
            let low = match b {
                Some(b) => x - m.query_advice(b, Rotation::cur()) * c(TABLE_SIZE as u64),
                None => x,
            };
            vec![
                sum * (m.query_advice(s, Rotation::cur()) + l),
                zero.clone() * m.query_advice(c_, Rotation::cur()),
                zero * low,
            ]
        });

        let stride = shape.stride() as i32;
        meta.create_gate("input words", |m| {
            let [acc, word, _] = select(m.query_fixed(q_x, Rotation::cur()));
            let rest = m.query_advice(a, Rotation::cur())
                + m.query_advice(c_, Rotation(stride)) * k(pow2(shape.row_bits()));
            vec![
                acc * (m.query_advice(c_, Rotation::cur()) - rest.clone()),
                word * (m.query_instance(instance, Rotation::cur()) - rest),
            ]
        });

        ModelConfig {
            a,
            b,
            c: c_,
            s,
            h,
            g,
            w,
            q_run,
            q_rc,
            q_tab,
            q_blk,
            q_z,
            q_x,
            gamma,
            shape,
        }
    }
}

/// Which witness cell a [`Fault`] changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultTarget {
    /// A cell of the second-phase running sum.
    RunningSum,
    /// A byte inverse `h` of a checked row.
    ByteInverse,
    /// The high byte `b` of a checked row.
    HighByte,
    /// The (first part of the) positive part `p` of a rounded output.
    RescalePos,
    /// The negative part `n` of a rounded output.
    RescaleNeg,
    /// The remainder `r` of a rounding.
    RescaleRem,
    /// Quotient one higher and remainder one divisor lower, the rest of the forward pass
    /// following: only the range check on the remainder stops it.
    RescaleShiftQuotient,
    /// `p` and `n` both one higher (the rounded value unchanged, a ReLU output one higher), the
    /// rest of the forward pass and the public output following: only `p·n = 0` stops it.
    RescaleBothParts,
    /// A packed model input part.
    PackedInput,
    /// An accumulator cell of the input layout.
    InputAccumulator,
    /// An output word cell.
    PublicWord,
    /// A table multiplicity.
    Multiplicity,
    /// A model input moved by one slot unit into its neighbour, the rest of the forward pass
    /// following: the packed word is unchanged, only the range check of the input stops it.
    InputCarry,
    /// An unused input slot of the last word set to one, its word following: only the
    /// zero-sum equation of the unused slots stops it.
    PaddingInput,
    /// The low byte of a one-byte row in the two-byte layout set to one (`a = 256·v + 1`).
    SmallLowByte,
    /// A model input set to the code one above the largest (an input just above the declared
    /// range), the rest of the forward pass and the public words following: only the range
    /// check of the input stops it.
    InputAboveRange,
}

/// A deliberate wrong witness, for soundness tests: the `index`-th cell of `target` (modulo
/// their number) is increased by one (see [`FaultTarget`] for the compound faults). A circuit
/// with a fault must never verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub target: FaultTarget,
    pub index: usize,
}

/// The circuit of one quantized model, with or without a witness.
#[derive(Clone, Debug)]
pub struct ModelCircuit {
    model: Arc<QuantizedModel>,
    shape: ColumnShape,
    /// The quantized input; `None` for key generation.
    input: Option<Vec<i64>>,
    fault: Option<Fault>,
    /// [`statement_digest`] of the model, computed once.
    digest: Fr,
}

/// Converts a signed integer to a field element.
pub fn fr_from_i128(v: i128) -> Fr {
    let m = fr_from_u128(v.unsigned_abs());
    if v >= 0 {
        m
    } else {
        -m
    }
}

/// `Fr::from_u128` is 64 field doublings; two 64-bit conversions are much cheaper.
fn fr_from_u128(v: u128) -> Fr {
    let lo = Fr::from(v as u64);
    match (v >> 64) as u64 {
        0 => lo,
        hi => Fr::from(hi) * Fr::from_raw([0, 1, 0, 0]) + lo,
    }
}

/// Reads a field element back as a signed integer of at most 127 bits, if it is one.
pub fn fr_to_i128(f: &Fr) -> Option<i128> {
    let small = |f: &Fr| {
        let repr = f.to_repr();
        let bytes: &[u8] = repr.as_ref();
        if bytes[16..].iter().any(|&b| b != 0) || bytes[15] & 0x80 != 0 {
            return None;
        }
        let mut lo = [0u8; 16];
        lo.copy_from_slice(&bytes[..16]);
        Some(i128::from_le_bytes(lo))
    };
    small(f).or_else(|| small(&-*f).map(|v| -v))
}

impl ModelCircuit {
    /// A circuit for key generation (no witness).
    pub fn keygen(model: Arc<QuantizedModel>, shape: ColumnShape) -> Self {
        ModelCircuit {
            digest: statement_digest(&model),
            model,
            shape,
            input: None,
            fault: None,
        }
    }

    /// A circuit with the witness of one input, given as codes
    /// ([`QuantizedModel::quantize_input`]); refuses codes outside the declared range.
    pub fn with_input(
        model: Arc<QuantizedModel>,
        shape: ColumnShape,
        input: Vec<i64>,
    ) -> Result<Self, CompileError> {
        model.check_codes(&input)?;
        Ok(ModelCircuit {
            digest: statement_digest(&model),
            model,
            shape,
            input: Some(input),
            fault: None,
        })
    }

    /// Injects a wrong witness (soundness tests).
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    pub fn shape(&self) -> ColumnShape {
        self.shape
    }

    /// The public inputs: the packed words of the quantized input and output. With a compound
    /// fault these are the words of the faulted forward pass, so that only the fault's own
    /// constraint can reject it.
    pub fn instances(&self) -> Option<Vec<Fr>> {
        let input = self.input.as_ref()?;
        if self.fault.is_some() {
            // the words the (faulted) cells hold
            let layout = Layout::build(&self.model, &self.shape, self.digest).ok()?;
            let wit = witness(&layout.layers, &self.shape, input, self.fault);
            let cells = first_phase(&layout, &self.shape, &wit, self.fault);
            let mut words = cells.c[..self.shape.input_words].to_vec();
            words.extend((0..self.shape.output_words).map(|k| cells.a[self.shape.input_words + k]));
            return Some(words);
        }
        let layers = circuit_layers(&self.model);
        let pk = Packing::new(&PublicLayout::of_model(&self.model, self.shape));
        let wit = witness(&layers, &self.shape, input, None);
        Some(pack_values(&pk, &self.shape, &wit.u, &wit.outputs))
    }
}

/// Witness values of one output's rounding.
#[derive(Clone, Copy, Default)]
struct BlockVals {
    p: i128,
    n: i128,
    r: i128,
}

/// The integer witness: packed inputs, each layer's rounding parts and the model output.
struct Witness {
    u: Vec<i128>,
    blocks: Vec<Vec<BlockVals>>,
    outputs: Vec<i128>,
}

fn witness(layers: &[CLayer], shape: &ColumnShape, input: &[i64], fault: Option<Fault>) -> Witness {
    let mut u: Vec<i128> = input.iter().map(|&v| v as i128).collect();
    // inputs per word, as the public layout has them
    let per = shape.input_layers / shape.in_parts();
    let hit = |target: FaultTarget, total: usize| match fault {
        Some(f) if f.target == target && total > 0 => Some(f.index % total),
        _ => None,
    };
    if let Some(i) = hit(FaultTarget::InputAboveRange, u.len()) {
        // one above the largest code: an input just outside the declared range
        u[i] = 1i128 << shape.in_slot();
    }
    if let Some(i) = hit(FaultTarget::InputCarry, u.len().saturating_sub(1)) {
        // the next slot of the same word, if it can give one unit
        if (i + 1) % per != 0 && u[i + 1] > 0 {
            u[i] += 1i128 << shape.in_slot();
            u[i + 1] -= 1;
        }
    }
    let total_blocks: usize = layers.iter().map(|l| l.outputs).sum();
    let shifted = hit(FaultTarget::RescaleShiftQuotient, total_blocks);
    let both = hit(FaultTarget::RescaleBothParts, total_blocks);
    let mut x = u.clone();
    let mut blocks = Vec::with_capacity(layers.len());
    let mut seen = 0;
    for l in layers {
        let b: Vec<BlockVals> = (0..l.outputs)
            .map(|o| {
                let z = (0..l.inputs).fold(l.bias[o], |acc, j| acc + l.w(o, j) as i128 * x[j]);
                let mut q = z.div_euclid(1i128 << l.shift);
                let mut r = z - (q << l.shift);
                let mut extra = 0;
                if shifted == Some(seen) {
                    q += 1;
                    r -= 1i128 << l.shift;
                }
                if both == Some(seen) {
                    extra = 1;
                }
                seen += 1;
                BlockVals {
                    p: q.max(0) + extra,
                    n: (-q).max(0) + extra,
                    r,
                }
            })
            .collect();
        x = b
            .iter()
            .map(|v| if l.relu { v.p } else { v.p - v.n })
            .collect();
        blocks.push(b);
    }
    Witness {
        u,
        blocks,
        outputs: x,
    }
}

/// Inverts every nonzero element in place with one field inversion.
fn batch_invert(v: &mut [Fr]) {
    let mut prefix = Vec::with_capacity(v.len());
    let mut acc = Fr::one();
    for x in v.iter() {
        prefix.push(acc);
        if !bool::from(x.is_zero()) {
            acc *= x;
        }
    }
    let mut inv = acc.invert().unwrap_or(Fr::zero());
    for (x, p) in v.iter_mut().zip(prefix).rev() {
        if !bool::from(x.is_zero()) {
            let xi = inv * p;
            inv *= *x;
            *x = xi;
        }
    }
}

/// First-phase cell values of every row.
struct Cells {
    a: Vec<Fr>,
    b: Vec<Fr>,
    c: Vec<Fr>,
}

fn first_phase(layout: &Layout, shape: &ColumnShape, wit: &Witness, fault: Option<Fault>) -> Cells {
    let rows = &layout.rows;
    let n = rows.len();
    let (mut a, mut b, mut c) = (
        vec![Fr::zero(); n],
        vec![Fr::zero(); n],
        vec![Fr::zero(); n],
    );
    let in_bits = vec![shape.row_bits(); shape.in_parts()];
    let words = pack_values(&layout.packing, shape, &wit.u, &wit.outputs);
    for (r, row) in rows.iter().enumerate() {
        let v = match row.src {
            Src::Zero | Src::Table(_) => 0,
            Src::Input { i, t } => split(wit.u[i], &in_bits)[t],
            Src::Block { l, o, part, t } => {
                let bv = wit.blocks[l][o];
                let out_bits = shape.parts(layout.layers[l].limbs);
                match part {
                    Part::P => split(bv.p, &out_bits)[t],
                    Part::N => split(bv.n, &out_bits)[t],
                    Part::R => {
                        let rem = shape.parts((layout.layers[l].shift / LIMB_BITS) as usize);
                        split(bv.r, &rem)[t]
                    }
                }
            }
            Src::OutWord(k) => {
                a[r] = words[layout.packing.input_words + k];
                continue;
            }
        };
        if row.small {
            a[r] = fr_from_i128(v << LIMB_BITS);
            b[r] = fr_from_i128(v);
        } else {
            a[r] = fr_from_i128(v);
            if shape.row_bytes == 2 {
                b[r] = fr_from_i128(v >> LIMB_BITS);
            }
        }
    }
    let (j_in, stride, region) = (shape.input_words, shape.stride(), shape.input_rows());
    // the `index`-th row (modulo their number) a fault may change
    let pick = |target: FaultTarget, pred: &dyn Fn(usize, &RowSpec) -> bool| -> Option<usize> {
        let f = fault.filter(|f| f.target == target)?;
        let hits: Vec<usize> = (0..n).filter(|&r| pred(r, &rows[r])).collect();
        (!hits.is_empty()).then(|| hits[f.index % hits.len()])
    };
    let in_layout = |r: usize| r < region && r % stride < j_in;
    let accumulator = |r: usize| r >= stride && in_layout(r);
    // before the accumulators and multiplicities, which follow it
    if let Some(r) = pick(FaultTarget::PaddingInput, &|r, row| {
        in_layout(r) && row.src == Src::Zero
    }) {
        a[r] += Fr::one();
    }
    // input accumulators, from the last part of each word up (the first part's accumulator is
    // the word itself, which the gate reads from the instance column instead)
    for r in (0..region).rev().filter(|&r| in_layout(r)) {
        let below = if r + stride < region {
            c[r + stride]
        } else {
            Fr::zero()
        };
        c[r] = a[r] + pow2(shape.row_bits()) * below;
    }
    // multiplicities of both bytes of every checked row
    let table_start = rows
        .iter()
        .position(|r| matches!(r.src, Src::Table(_)))
        .expect("a table");
    let mut counts = [0u64; TABLE_SIZE];
    for (r, row) in rows.iter().enumerate() {
        if !row.checked {
            continue;
        }
        let lo = a[r] - b[r] * Fr::from(TABLE_SIZE as u64);
        for byte in [lo, b[r]].into_iter().take(shape.row_bytes) {
            if let Some(v) = fr_to_i128(&byte).filter(|v| (0..TABLE_SIZE as i128).contains(v)) {
                counts[v as usize] += 1;
            }
        }
    }
    for (t, &m) in counts.iter().enumerate() {
        c[table_start + t] = Fr::from(m);
    }
    let mut cells = Cells { a, b, c };
    let first_part = |want: Part| move |_: usize, row: &RowSpec| matches!(row.src, Src::Block { part, t: 0, .. } if part == want);
    let one = Fr::one();
    let wide = shape.row_bytes == 2;
    // (target, rows it may hit, column: 0 a, 1 b, 2 c, amount)
    type Pred<'p> = Box<dyn Fn(usize, &RowSpec) -> bool + 'p>;
    let cell_faults: [(FaultTarget, Pred, usize, Fr); 9] = [
        // with one byte per row the byte itself, out of the table
        (
            FaultTarget::HighByte,
            Box::new(|_, row| row.checked),
            if wide { 1 } else { 0 },
            if wide {
                one
            } else {
                Fr::from(TABLE_SIZE as u64)
            },
        ),
        (
            FaultTarget::RescalePos,
            Box::new(first_part(Part::P)),
            0,
            one,
        ),
        (
            FaultTarget::RescaleNeg,
            Box::new(first_part(Part::N)),
            0,
            one,
        ),
        (
            FaultTarget::RescaleRem,
            Box::new(first_part(Part::R)),
            0,
            one,
        ),
        (
            FaultTarget::PackedInput,
            Box::new(|_, row| matches!(row.src, Src::Input { .. })),
            0,
            one,
        ),
        (
            FaultTarget::InputAccumulator,
            Box::new(|r, _| accumulator(r)),
            2,
            one,
        ),
        (
            FaultTarget::PublicWord,
            Box::new(|_, row| matches!(row.src, Src::OutWord(_))),
            0,
            one,
        ),
        (
            FaultTarget::Multiplicity,
            Box::new(|_, row| matches!(row.src, Src::Table(_))),
            2,
            one,
        ),
        (
            FaultTarget::SmallLowByte,
            Box::new(|_, row| row.small),
            0,
            one,
        ),
    ];
    for (target, pred, col, amount) in cell_faults {
        if let Some(r) = pick(target, &*pred) {
            let column = match col {
                0 => &mut cells.a,
                1 => &mut cells.b,
                _ => &mut cells.c,
            };
            column[r] += amount;
        }
    }
    cells
}

/// Second-phase cell values: byte inverses `h`, `g` and the running sum `s`.
fn second_phase(
    layout: &Layout,
    wide: bool,
    cells: &Cells,
    gamma: Fr,
    fault: Option<Fault>,
) -> [Vec<Fr>; 3] {
    let rows = &layout.rows;
    let n = rows.len();
    let mut h = vec![Fr::zero(); n];
    let mut g = vec![Fr::zero(); n];
    for (r, row) in rows.iter().enumerate() {
        if row.checked {
            h[r] = gamma + cells.a[r] - cells.b[r] * Fr::from(TABLE_SIZE as u64);
            if wide {
                g[r] = gamma + cells.b[r];
            }
        } else if let Src::Table(t) = row.src {
            h[r] = gamma + Fr::from(t as u64);
        }
    }
    batch_invert(&mut h);
    batch_invert(&mut g);
    for (r, row) in rows.iter().enumerate() {
        if matches!(row.src, Src::Table(_)) {
            h[r] *= cells.c[r];
        }
    }
    if let Some(
        f @ Fault {
            target: FaultTarget::ByteInverse,
            ..
        },
    ) = fault
    {
        let checked: Vec<usize> = (0..n).filter(|&r| rows[r].checked).collect();
        h[checked[f.index % checked.len()]] += Fr::one();
    }
    let max_slot = rows
        .iter()
        .flat_map(|r| r.w.iter().map(|e| e.0))
        .max()
        .unwrap_or(0);
    let mut powers = vec![Fr::one(); max_slot + 1];
    for i in 1..powers.len() {
        powers[i] = powers[i - 1] * gamma;
    }
    let comb = |row: &RowSpec| {
        row.w
            .iter()
            .fold(Fr::zero(), |acc, &(f, v)| acc + powers[f] * v)
    };
    let mut s = vec![Fr::zero(); n];
    s[0] = -comb(&rows[0]);
    for r in 0..n - 1 {
        let mut next = s[r] + cells.a[r] * comb(&rows[r]);
        if rows[r].checked {
            next += h[r] + g[r];
        }
        if matches!(rows[r].src, Src::Table(_)) {
            next -= h[r];
        }
        s[r + 1] = next;
    }
    if let Some(
        f @ Fault {
            target: FaultTarget::RunningSum,
            ..
        },
    ) = fault
    {
        s[f.index % n] += Fr::one();
    }
    [h, g, s]
}

impl Circuit<Fr> for ModelCircuit {
    type Config = ModelConfig;
    type FloorPlanner = SimpleFloorPlanner;
    type Params = ColumnShape;

    fn without_witnesses(&self) -> Self {
        ModelCircuit {
            model: self.model.clone(),
            shape: self.shape,
            input: None,
            fault: None,
            digest: self.digest,
        }
    }

    fn params(&self) -> ColumnShape {
        self.shape
    }

    fn configure_with_params(meta: &mut ConstraintSystem<Fr>, shape: ColumnShape) -> ModelConfig {
        ModelConfig::configure(meta, shape)
    }

    fn configure(meta: &mut ConstraintSystem<Fr>) -> ModelConfig {
        ModelConfig::configure(meta, ColumnShape::default())
    }

    fn synthesize(&self, cfg: ModelConfig, mut layouter: impl Layouter<Fr>) -> Result<(), Error> {
        let shape = self.shape;
        debug_assert_eq!(shape, cfg.shape);
        let layout =
            Layout::build(&self.model, &shape, self.digest).map_err(|_| Error::Synthesis)?;
        debug_assert_eq!(layout.rows.len(), rows_of(&layout.layers, &shape));
        let cells = self.input.as_ref().map(|input| {
            let wit = witness(&layout.layers, &shape, input, self.fault);
            first_phase(&layout, &shape, &wit, self.fault)
        });
        layouter.assign_region(
            || "model",
            |mut region| {
                for (r, row) in layout.rows.iter().enumerate() {
                    for &(f, v) in &row.w {
                        region.assign_fixed(cfg.w[f], r, v);
                    }
                    for (col, v) in [
                        (cfg.q_run, row.q_run as u64),
                        (cfg.q_x, row.q_x as u64),
                        (cfg.q_z, row.q_z as u64),
                        (cfg.q_rc, row.checked as u64),
                        (cfg.q_tab, matches!(row.src, Src::Table(_)) as u64),
                        (cfg.q_blk, row.q_blk as u64),
                    ] {
                        if v != 0 {
                            region.assign_fixed(col, r, Fr::from(v));
                        }
                    }
                }
                let n = layout.rows.len();
                for (col, pick) in [(Some(cfg.a), 0), (cfg.b, 1), (Some(cfg.c), 2)] {
                    let Some(col) = col else { continue };
                    for r in 0..n {
                        let v = match &cells {
                            Some(cs) => Value::known([&cs.a, &cs.b, &cs.c][pick][r]),
                            None => Value::unknown(),
                        };
                        region.assign_advice(col, r, v);
                    }
                }
                region.next_phase();
                let gamma = region.get_challenge(cfg.gamma);
                let second = match &cells {
                    Some(cs) => gamma
                        .map(|gm| second_phase(&layout, shape.row_bytes == 2, cs, gm, self.fault)),
                    None => Value::unknown(),
                };
                for (col, pick) in [(Some(cfg.h), 0), (cfg.g, 1), (Some(cfg.s), 2)] {
                    let Some(col) = col else { continue };
                    for r in 0..n {
                        region.assign_advice(col, r, second.as_ref().map(|v| v[pick][r]));
                    }
                }
                Ok(())
            },
        )
    }
}
