//! The halo2 circuit proving a quantized forward pass.
//!
//! # Design
//! The circuit is built to be cheap twice: for the prover (few committed columns) and for the
//! EVM verifier (few commitments, few public inputs). It has two advice columns:
//!
//! - `a` (first phase) holds every value of the forward pass: layer inputs, accumulators,
//!   rescaling parts, 8-bit limb decompositions and the packed public words;
//! - `s` (second phase) is one running sum that checks every matrix-vector product at once
//!   with a random challenge `γ` drawn after `a` is committed (Freivalds' check).
//!
//! For a dense layer `z = W x + b` the circuit does not multiply row by row. It checks
//! `Σ_o γ^o (W x + b − z)_o = 0` with `z` and `x` already committed, which is wrong with
//! probability at most `outputs / |F|` when any `z_o` is wrong. The outputs are split into
//! groups of `F` (`weight_columns`); a group costs one row per input, in which `a` holds the
//! input and the fixed columns `w[0..F]` hold the group's weights for that input:
//!
//! | gate | rows | constraint |
//! |---|---|---|
//! | multiply-accumulate | `q_mac = 1` | `s' = s + a·Σ_f γ^f w_f` |
//! | Horner step | `q_blk ≠ 0` | `s' = γ·s − (a − w_0)` (`a` = `z`, `w_0` = bias) |
//! | rescale | `q_blk = 1` (2: a public word, Horner step only) | `z = d·(p − n) + r`, `p·n = 0` |
//! | range | `s_lo`, `s_top` | `a − 256·a' ∈ [0, 256)` (a limb), top limb `a ∈ [0, 256)` |
//! | zero / public | `q_z ∈ {1, 2}` | `s = 0` / `a = instance` |
//!
//! A group first runs one Horner step per output (its *block*), from the last output to the
//! first, then its multiply-accumulate rows; blocks of several groups and layers chain in one
//! running sum, which starts and ends at zero. Each output's block holds `z`, the remainder `r`
//! and the two parts `p, n` of the rounded quotient, each followed by its 8-bit limbs (running
//! sums checked against a 256-entry table), at fixed offsets from `z`. The rounding is folded
//! into the bias (`z = W x + b + d/2`, `q = floor(z / d)`), so a block needs only `d` besides
//! the bias. A ReLU output is `p`; an identity output is `p − n`, which its consumer reads in
//! two rows (`p`, then `n` with the weight negated). A stand-alone ReLU is an identity layer
//! with weight `2^8`.
//!
//! # Public values
//! The quantized input and output are packed into few field elements (*words*), each value in
//! a slot of `8·limbs` (inputs, offset by the input minimum) or `8·out_limbs + 1` bits
//! (outputs, offset by `2^(8·out_limbs)`), at most [`WORD_BITS`] bits per word. The packing is
//! one more linear layer checked by the same running sum, and every packed value is range
//! checked, so the words determine the values. The words sit in the first rows of `a`, where
//! a gate ties them to the single instance column: the EVM verifier sees a handful of public
//! inputs however large the model, and the instance column needs no copy constraints.

use crate::quantize::{QLayer, QuantizedModel};
use halo2_proofs::{
    circuit::{Cell, Layouter, Region, SimpleFloorPlanner, Value},
    halo2curves::{bn256::Fr, ff::PrimeField},
    plonk::{
        Advice, Challenge, Circuit, Column, ConstraintSystem, Error, Expression, FirstPhase, Fixed,
        SecondPhase,
    },
    poly::Rotation,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Rows at the end of the table reserved for halo2's blinding factors (with margin).
pub const RESERVED_ROWS: usize = 8;
/// Bits per range-check limb; the lookup table holds `0..2^LIMB_BITS`.
pub const LIMB_BITS: u32 = 8;
/// Largest number of bits packed into one public word (below the 254-bit field).
pub const WORD_BITS: u32 = 250;
/// Smallest `k` the circuit uses (the lookup table needs 256 rows).
pub const MIN_K: u32 = 9;
/// Largest `k` the circuit uses.
pub const MAX_K: u32 = 24;
/// Largest number of weight columns the planner considers.
pub const MAX_WEIGHT_COLUMNS: usize = 64;

const TABLE_SIZE: usize = 1 << LIMB_BITS;

/// The circuit's `Params`: its column count and the limb counts that fix the block layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnShape {
    /// `F`: fixed weight columns, i.e. outputs checked per multiply-accumulate row (≥ 2).
    pub weight_columns: usize,
    /// Limbs of the rescaling remainder (`8·rem_limbs` ≥ every layer's shift).
    pub rem_limbs: usize,
    /// Limbs of each part `p`, `n` of a rounded output.
    pub out_limbs: usize,
    /// Limbs of each packed model input.
    pub in_limbs: usize,
}

impl Default for ColumnShape {
    fn default() -> Self {
        ColumnShape {
            weight_columns: 2,
            rem_limbs: 2,
            out_limbs: 3,
            in_limbs: 2,
        }
    }
}

/// `2^bits` as a field element.
fn pow2(bits: u32) -> Fr {
    let mut r = Fr::one();
    let mut left = bits;
    while left > 0 {
        let step = left.min(120);
        r *= Fr::from_u128(1u128 << step);
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

impl ColumnShape {
    /// The shape of a model with `weight_columns` weight columns.
    pub fn for_model(model: &QuantizedModel, weight_columns: usize) -> Self {
        let mut rem = 1;
        let mut out = 1;
        for l in &model.layers {
            match l {
                QLayer::Dense {
                    shift, out_bits, ..
                } => {
                    rem = rem.max(limbs_for(*shift));
                    out = out.max(limbs_for(*out_bits));
                }
                QLayer::Relu { out_bits, .. } => out = out.max(limbs_for(*out_bits)),
            }
        }
        let span = model.input_max as i128 - model.input_min as i128;
        // a stand-alone ReLU on the input splits the input itself into p and n
        let mag = (model.input_min as i128)
            .abs()
            .max((model.input_max as i128).abs());
        out = out.max(limbs_for(bits_for(mag)));
        ColumnShape {
            weight_columns: weight_columns.max(2),
            rem_limbs: rem,
            out_limbs: out,
            in_limbs: limbs_for(bits_for(span.max(1))),
        }
    }
    pub fn advice_columns(&self) -> usize {
        2
    }
    /// Fixed columns: weights, four selectors, two limb selectors and the table.
    pub fn fixed_columns(&self) -> usize {
        self.weight_columns + 6
    }
    /// Rows of one output's block: `z`, then the limbs of `r`, `p` and `n`.
    pub fn block_rows(&self) -> usize {
        1 + self.rem_limbs + 2 * self.out_limbs
    }
    fn rem_at(&self) -> i32 {
        1
    }
    fn pos_at(&self) -> i32 {
        1 + self.rem_limbs as i32
    }
    fn neg_at(&self) -> i32 {
        1 + (self.rem_limbs + self.out_limbs) as i32
    }
    fn in_slot(&self) -> u32 {
        LIMB_BITS * self.in_limbs as u32
    }
    fn out_slot(&self) -> u32 {
        LIMB_BITS * self.out_limbs as u32 + 1
    }
    fn out_offset(&self) -> i128 {
        1i128 << (LIMB_BITS * self.out_limbs as u32)
    }
}

/// What the public words hold: the numbers of inputs and outputs, the input offset and the
/// slot sizes of the shape. Known to a verifier from the settings alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicLayout {
    pub inputs: usize,
    pub outputs: usize,
    /// Quantized input minimum: input slots hold `x − input_min`.
    pub input_min: i64,
    pub shape: ColumnShape,
}

impl PublicLayout {
    pub fn of_model(model: &QuantizedModel, shape: ColumnShape) -> Self {
        PublicLayout {
            inputs: model.input_len(),
            outputs: model.output_len(),
            input_min: model.input_min,
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
        }
    }
    pub fn words(&self) -> usize {
        self.input_words + self.output_words
    }
}

/// Packs offset inputs `u = x − input_min` and outputs into words.
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

/// Packs a quantized input and output into the public words.
pub fn pack_public(
    model: &QuantizedModel,
    shape: &ColumnShape,
    input: &[i64],
    output: &[i64],
) -> Vec<Fr> {
    let u: Vec<i128> = input
        .iter()
        .map(|&x| x as i128 - model.input_min as i128)
        .collect();
    let y: Vec<i128> = output.iter().map(|&v| v as i128).collect();
    let layout = PublicLayout::of_model(model, *shape);
    pack_values(&Packing::new(&layout), shape, &u, &y)
}

/// Unpacks public words into the quantized input and output; `None` if they are not a
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
        .map(|&(w, off)| (take(w, off, shape.in_slot()) + layout.input_min as i128) as i64)
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
/// weight `2^8`, the rounding half is folded into the bias, and the first layer reads the
/// packed (offset) inputs.
struct CLayer {
    inputs: usize,
    outputs: usize,
    weights: Vec<i64>,
    bias: Vec<i128>,
    shift: u32,
    relu: bool,
    /// The inputs are identity outputs `p − n`: each takes two rows (`p`, then `n` negated).
    signed_inputs: bool,
}

impl CLayer {
    fn w(&self, o: usize, j: usize) -> i64 {
        self.weights[o * self.inputs + j]
    }
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
            },
            QLayer::Relu { len, .. } => {
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
                }
            }
        })
        .collect();
    for i in 1..out.len() {
        out[i].signed_inputs = !out[i - 1].relu;
    }
    // the first layer reads u = x - input_min
    if let Some(first) = out.first_mut() {
        let min = model.input_min as i128;
        for o in 0..first.outputs {
            let row_sum: i128 = (0..first.inputs).map(|j| first.w(o, j) as i128).sum();
            first.bias[o] += min * row_sum;
        }
    }
    out
}

/// Inputs with a nonzero weight in a group: one multiply-accumulate row each (two when the
/// inputs are signed).
fn group_inputs(layer: &CLayer, outs: std::ops::Range<usize>) -> Vec<usize> {
    (0..layer.inputs)
        .filter(|&j| outs.clone().any(|o| layer.w(o, j) != 0))
        .collect()
}

fn group_rows(layer: &CLayer, outs: std::ops::Range<usize>) -> usize {
    group_inputs(layer, outs).len() * if layer.signed_inputs { 2 } else { 1 }
}

fn groups(outputs: usize, f: usize) -> Vec<std::ops::Range<usize>> {
    (0..outputs.div_ceil(f))
        .rev()
        .map(|g| g * f..((g + 1) * f).min(outputs))
        .collect()
}

/// Rows a model needs, for a given shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCount {
    /// Rows used, public rows included.
    pub used: usize,
    /// Public inputs (packed words).
    pub instances: usize,
}

impl RowCount {
    pub fn rows(&self) -> usize {
        self.used
    }
    /// Smallest `k` whose table fits all rows plus the reserved blinding rows.
    pub fn k(&self) -> u32 {
        let need = self.used.max(TABLE_SIZE) + RESERVED_ROWS;
        let mut k = MIN_K;
        while (1usize << k) < need {
            k += 1;
        }
        k
    }
}

/// Counts rows without building anything (the same walk as [`ModelCircuit::synthesize`]).
pub fn count_rows(model: &QuantizedModel, shape: ColumnShape) -> RowCount {
    let pk = Packing::new(&PublicLayout::of_model(model, shape));
    let w = pk.words();
    let layers = circuit_layers(model);
    let signed_out = layers.last().is_some_and(|l| !l.relu);
    let mut rows = w // public rows
        + w // one Horner row per word
        + model.input_len() * shape.in_limbs
        + model.output_len() * if signed_out { 2 } else { 1 }
        + 1; // the closing zero row
    for layer in &layers {
        for g in groups(layer.outputs, shape.weight_columns) {
            rows += g.len() * shape.block_rows() + group_rows(layer, g);
        }
    }
    RowCount {
        used: rows,
        instances: w,
    }
}

/// A column shape, its row count and the `k` it gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub shape: ColumnShape,
    pub rows: RowCount,
    pub k: u32,
}

/// How many table rows one weight column is worth in [`plan`]'s cost.
pub const ROWS_PER_WEIGHT_COLUMN: u64 = 256;

/// Picks the number of weight columns `F` (at most `max_weight_columns`).
///
/// Proving cost grows with `2^k` (two advice columns, the lookup and the quotient are
/// committed at every row), while a weight column only adds a fixed column: free for the
/// prover, but one more commitment for the EVM verifier (about 7,000 gas and 300 bytes of
/// code, measured). For proofs meant for the EVM (`evm`), `2^k + 256·F` is minimised: counting a
/// column as 256 rows keeps small models on few columns (cheap to verify, still fast to prove)
/// and lets large ones use more columns to halve `2^k`. Off chain only `2^k` counts. Ties go to
/// fewer columns.
pub fn plan(model: &QuantizedModel, max_weight_columns: usize, evm: bool) -> Plan {
    let max_f = max_weight_columns.clamp(2, MAX_WEIGHT_COLUMNS);
    let widest = model
        .layers
        .iter()
        .map(|l| match l {
            QLayer::Dense { outputs, .. } => *outputs,
            QLayer::Relu { len, .. } => *len,
        })
        .max()
        .unwrap_or(2);
    let per_column = if evm { ROWS_PER_WEIGHT_COLUMN } else { 0 };
    let cost = |p: &Plan| (1u64 << p.k) + per_column * p.shape.weight_columns as u64;
    let mut best: Option<Plan> = None;
    for f in 2..=max_f.min(widest.max(2)) {
        let shape = ColumnShape::for_model(model, f);
        let rows = count_rows(model, shape);
        let k = rows.k();
        let p = Plan { shape, rows, k };
        if best.as_ref().is_none_or(|b| cost(&p) < cost(b)) {
            best = Some(p);
        }
    }
    best.expect("at least one shape is allowed")
}

/// Columns, challenge and gates of the circuit.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    a: Column<Advice>,
    s: Column<Advice>,
    w: Vec<Column<Fixed>>,
    q_mac: Column<Fixed>,
    q_blk: Column<Fixed>,
    q_z: Column<Fixed>,
    s_lo: Column<Fixed>,
    s_top: Column<Fixed>,
    table: Column<Fixed>,
    gamma: Challenge,
    shape: ColumnShape,
}

fn c(v: u64) -> Expression<Fr> {
    Expression::Constant(Fr::from(v))
}

impl ModelConfig {
    /// Declares the columns and gates for a shape.
    pub fn configure(meta: &mut ConstraintSystem<Fr>, shape: ColumnShape) -> Self {
        assert!(shape.weight_columns >= 2, "blocks use w[0] and w[1]");
        let a = meta.advice_column_in(FirstPhase);
        let gamma = meta.challenge_usable_after(FirstPhase);
        let s = meta.advice_column_in(SecondPhase);
        let w: Vec<_> = (0..shape.weight_columns)
            .map(|_| meta.fixed_column())
            .collect();
        let [q_mac, q_blk, q_z, s_lo, s_top, table] = [(); 6].map(|_| meta.fixed_column());
        let instance = meta.instance_column();
        meta.enable_equality(a);

        meta.create_gate("multiply-accumulate", |m| {
            let q = m.query_fixed(q_mac, Rotation::cur());
            let g = m.query_challenge(gamma);
            // Σ_f γ^f w_f by Horner's rule
            let mut comb = m.query_fixed(*w.last().expect("w"), Rotation::cur());
            for wc in w.iter().rev().skip(1) {
                comb = comb * g.clone() + m.query_fixed(*wc, Rotation::cur());
            }
            let (cur, next) = (
                m.query_advice(s, Rotation::cur()),
                m.query_advice(s, Rotation::next()),
            );
            let x = m.query_advice(a, Rotation::cur());
            vec![q * (next - cur - x * comb)]
        });

        let (rem_at, pos_at, neg_at) = (shape.rem_at(), shape.pos_at(), shape.neg_at());
        meta.create_gate("block", |m| {
            let q = m.query_fixed(q_blk, Rotation::cur());
            let g = m.query_challenge(gamma);
            let (cur, next) = (
                m.query_advice(s, Rotation::cur()),
                m.query_advice(s, Rotation::next()),
            );
            let z = m.query_advice(a, Rotation::cur());
            let r = m.query_advice(a, Rotation(rem_at));
            let p = m.query_advice(a, Rotation(pos_at));
            let n = m.query_advice(a, Rotation(neg_at));
            let bias = m.query_fixed(w[0], Rotation::cur());
            let d = m.query_fixed(w[1], Rotation::cur());
            // q_blk: 1 an output's block (Horner step and rounding), 2 a public word (Horner only)
            let rescale = q.clone() * (c(2) - q.clone());
            vec![
                q * (next - g * cur + z.clone() - bias),
                rescale.clone() * (z - d * (p.clone() - n.clone()) - r),
                rescale * p * n,
            ]
        });

        meta.create_gate("zero and public", |m| {
            let q = m.query_fixed(q_z, Rotation::cur());
            // q_z: 1 running sum is zero, 2 `a` is the public word of this row
            let half = Expression::Constant(Fr::from(2).invert().unwrap());
            let zero = q.clone() * (c(2) - q.clone());
            let public = q.clone() * (q - c(1)) * half;
            vec![
                zero * m.query_advice(s, Rotation::cur()),
                public
                    * (m.query_advice(a, Rotation::cur())
                        - m.query_instance(instance, Rotation::cur())),
            ]
        });

        meta.lookup_any("8-bit limb", |m| {
            let lo = m.query_fixed(s_lo, Rotation::cur());
            let top = m.query_fixed(s_top, Rotation::cur());
            let (cur, next) = (
                m.query_advice(a, Rotation::cur()),
                m.query_advice(a, Rotation::next()),
            );
            let limb = lo * (cur.clone() - c(TABLE_SIZE as u64) * next) + top * cur;
            vec![(limb, m.query_fixed(table, Rotation::cur()))]
        });

        ModelConfig {
            a,
            s,
            w,
            q_mac,
            q_blk,
            q_z,
            s_lo,
            s_top,
            table,
            gamma,
            shape,
        }
    }
}

/// Which witness cell a [`Fault`] changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultTarget {
    /// A layer input copied into a multiply-accumulate row.
    MacInput,
    /// A cell of the second-phase running sum.
    RunningSum,
    /// The accumulator `z` of an output's block.
    Accumulator,
    /// The positive part `p` of a rounded output.
    RescalePos,
    /// The negative part `n` of a rounded output.
    RescaleNeg,
    /// The remainder `r` of a rounding.
    RescaleRem,
    /// Quotient one higher and remainder one divisor lower: satisfies the rescale gate itself,
    /// only the range check on the remainder stops it.
    RescaleShiftQuotient,
    /// A limb running-sum cell (after the first) of any range check.
    RangeLimb,
    /// A packed model input value.
    PackedInput,
    /// A public word cell.
    PublicWord,
    /// A model input moved by one slot unit into its neighbour: the packed word is unchanged,
    /// only the range check of the input stops it (the witness is otherwise honest).
    InputCarry,
}

const FAULT_KINDS: usize = 11;

/// A deliberate wrong witness, for soundness tests: the `index`-th cell of `target` is
/// increased by one (see [`FaultTarget`] for the two compound faults). A circuit with a fault
/// must never verify.
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
}

/// Converts a signed integer to a field element.
pub fn fr_from_i128(v: i128) -> Fr {
    if v >= 0 {
        Fr::from_u128(v as u128)
    } else {
        -Fr::from_u128(v.unsigned_abs())
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
            model,
            shape,
            input: None,
            fault: None,
        }
    }

    /// A circuit with the witness of one quantized input.
    pub fn with_input(model: Arc<QuantizedModel>, shape: ColumnShape, input: Vec<i64>) -> Self {
        ModelCircuit {
            model,
            shape,
            input: Some(input),
            fault: None,
        }
    }

    /// Injects a wrong witness cell (soundness tests).
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    pub fn shape(&self) -> ColumnShape {
        self.shape
    }

    /// The public inputs: the packed words of the quantized input and output.
    pub fn instances(&self) -> Option<Vec<Fr>> {
        let input = self.input.as_ref()?;
        let output = self.model.forward(input);
        Some(pack_public(&self.model, &self.shape, input, &output))
    }
}

/// Witness values of one output's block.
#[derive(Clone, Copy, Default)]
struct BlockVals {
    z: i128,
    r: i128,
    p: i128,
    n: i128,
}

impl BlockVals {
    fn out(&self, relu: bool) -> i128 {
        if relu {
            self.p
        } else {
            self.p - self.n
        }
    }
}

/// The integer witness: packed inputs, each layer's inputs and block values.
struct Witness {
    u: Vec<i128>,
    layer_x: Vec<Vec<i128>>,
    blocks: Vec<Vec<BlockVals>>,
}

fn witness(layers: &[CLayer], u: Vec<i128>) -> Witness {
    let mut x = u.clone();
    let mut layer_x = Vec::new();
    let mut blocks = Vec::new();
    for l in layers {
        let b: Vec<BlockVals> = (0..l.outputs)
            .map(|o| {
                let z = (0..l.inputs).fold(l.bias[o], |acc, j| acc + l.w(o, j) as i128 * x[j]);
                let q = z.div_euclid(1i128 << l.shift);
                let r = z - (q << l.shift);
                let (p, n) = (q.max(0), (-q).max(0));
                BlockVals { z, r, p, n }
            })
            .collect();
        layer_x.push(x);
        x = b.iter().map(|v| v.out(l.relu)).collect();
        blocks.push(b);
    }
    Witness { u, layer_x, blocks }
}

/// A row of the running sum, recorded in the first phase and evaluated once `γ` is known.
enum Step {
    /// `s' = s + a·Σ_f γ^f w_f`
    Mac(Value<Fr>, Vec<Fr>),
    /// `s' = γ·s − (a − bias)`
    Horner(Value<Fr>, Fr),
}

struct Filler<'a, 'r> {
    cfg: &'a ModelConfig,
    region: &'a mut Region<'r, Fr>,
    row: usize,
    steps: Vec<Step>,
    fault: Option<Fault>,
    counters: [usize; FAULT_KINDS],
}

impl Filler<'_, '_> {
    fn hit(&mut self, target: FaultTarget) -> bool {
        let slot = target as usize;
        let hit =
            matches!(self.fault, Some(f) if f.target == target && f.index == self.counters[slot]);
        self.counters[slot] += 1;
        hit
    }

    /// Assigns `a` at `row`, adding one if this is the faulted cell of `target`.
    fn a(&mut self, row: usize, v: Value<i128>, target: Option<FaultTarget>) -> Cell {
        let bump = target.is_some_and(|t| self.hit(t));
        let v = v.map(|v| fr_from_i128(v) + if bump { Fr::one() } else { Fr::zero() });
        self.region.assign_advice(self.cfg.a, row, v).cell()
    }

    fn fixed(&mut self, col: Column<Fixed>, row: usize, v: Fr) {
        self.region.assign_fixed(col, row, v);
    }

    /// Writes the running-sum limbs of `v` (already in `a` at `row`) below it: `limbs` rows
    /// from `row`, the last one a top limb.
    fn limbs(&mut self, row: usize, v: Value<i128>, limbs: usize) {
        for i in 0..limbs {
            if i > 0 {
                let part = v.map(|v| v >> (LIMB_BITS * i as u32));
                self.a(row + i, part, Some(FaultTarget::RangeLimb));
            }
            let sel = if i + 1 == limbs {
                self.cfg.s_top
            } else {
                self.cfg.s_lo
            };
            self.fixed(sel, row + i, Fr::one());
        }
    }

    /// One multiply-accumulate row reading `x` (assigned here) with the weights `ws`.
    fn mac_row(&mut self, x: Value<i128>, ws: &[i64], target: Option<FaultTarget>) -> Cell {
        let row = self.row;
        let cell = self.a(row, x, target);
        // the running sum follows the honest value: a faulted cell must then break a gate
        let v = x.map(fr_from_i128);
        let mut wf = Vec::with_capacity(ws.len());
        for (f, &wv) in ws.iter().enumerate() {
            let fv = fr_from_i128(wv as i128);
            if wv != 0 {
                self.fixed(self.cfg.w[f], row, fv);
            }
            wf.push(fv);
        }
        self.fixed(self.cfg.q_mac, row, Fr::one());
        self.steps.push(Step::Mac(v, wf));
        self.row += 1;
        cell
    }

    /// A carry row inside a block: the running sum passes unchanged (`q_mac = 1`, no weight).
    fn carry(&mut self, row: usize) {
        self.fixed(self.cfg.q_mac, row, Fr::one());
        self.steps.push(Step::Mac(Value::known(Fr::zero()), vec![]));
    }

    /// One output's block at the current row. Returns the cells of `p` and `n`.
    fn block(&mut self, v: Value<BlockVals>, bias: i128, shift: u32) -> (Cell, Cell) {
        let sh = self.cfg.shape;
        let row = self.row;
        let shifted = self.hit(FaultTarget::RescaleShiftQuotient);
        let v = v.map(|mut b| {
            if shifted {
                // q + 1 with r − d: the rescale equation still holds
                if b.n > 0 {
                    b.n -= 1;
                } else {
                    b.p += 1;
                }
                b.r -= 1i128 << shift;
            }
            b
        });
        self.a(row, v.map(|b| b.z), Some(FaultTarget::Accumulator));
        let r_row = row + sh.rem_at() as usize;
        self.a(r_row, v.map(|b| b.r), Some(FaultTarget::RescaleRem));
        self.limbs(r_row, v.map(|b| b.r), (shift / LIMB_BITS) as usize);
        let mut cells = Vec::with_capacity(2);
        for (at, t, pick) in [
            (sh.pos_at(), FaultTarget::RescalePos, 0),
            (sh.neg_at(), FaultTarget::RescaleNeg, 1),
        ] {
            let pr = row + at as usize;
            let val = v.map(|b| if pick == 0 { b.p } else { b.n });
            cells.push(self.a(pr, val, Some(t)));
            self.limbs(pr, val, sh.out_limbs);
        }
        self.fixed(self.cfg.q_blk, row, Fr::one());
        self.fixed(self.cfg.w[0], row, fr_from_i128(bias));
        self.fixed(self.cfg.w[1], row, Fr::from_u128(1u128 << shift));
        self.steps.push(Step::Horner(
            v.map(|b| fr_from_i128(b.z)),
            fr_from_i128(bias),
        ));
        for i in 1..sh.block_rows() {
            self.carry(row + i);
        }
        self.row += sh.block_rows();
        (cells[0], cells[1])
    }
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
        let model = &self.model;
        let shape = self.shape;
        let layers = circuit_layers(model);
        let packing = Packing::new(&PublicLayout::of_model(model, shape));
        let n_in = model.input_len();
        let n_words = packing.words();

        // the honest witness (with the input-carry fault applied to the packed inputs)
        let wit = self.input.as_ref().map(|x| {
            let mut u: Vec<i128> = x
                .iter()
                .map(|&v| v as i128 - model.input_min as i128)
                .collect();
            if let Some(Fault {
                target: FaultTarget::InputCarry,
                index,
            }) = self.fault
            {
                if index + 1 < u.len() && u[index + 1] > 0 {
                    u[index] += 1i128 << shape.in_slot();
                    u[index + 1] -= 1;
                }
            }
            witness(&layers, u)
        });
        let words: Option<Vec<Fr>> = wit.as_ref().map(|wt| {
            let outs: Vec<i128> = wt
                .blocks
                .last()
                .expect("a layer")
                .iter()
                .map(|b| b.out(layers.last().expect("a layer").relu))
                .collect();
            pack_values(&packing, &shape, &wt.u, &outs)
        });
        let known = |f: &dyn Fn(&Witness) -> i128| -> Value<i128> {
            match &wit {
                Some(w) => Value::known(f(w)),
                None => Value::unknown(),
            }
        };

        layouter.assign_region(
            || "model",
            |mut region| {
                for (i, v) in (0..TABLE_SIZE).enumerate() {
                    region.assign_fixed(cfg.table, i, Fr::from(v as u64));
                }
                let mut f = Filler {
                    cfg: &cfg,
                    region: &mut region,
                    row: 0,
                    steps: Vec::new(),
                    fault: self.fault,
                    counters: [0; FAULT_KINDS],
                };
                // public rows
                let mut public_cells = Vec::with_capacity(n_words);
                for w in 0..n_words {
                    let v = match &words {
                        Some(ws) => Value::known(ws[w]),
                        None => Value::unknown(),
                    };
                    let cell = f.region.assign_advice(cfg.a, w, v).cell();
                    f.fixed(cfg.q_z, w, Fr::from(2));
                    public_cells.push(cell);
                }
                f.row = n_words;
                let chain_start = f.row;
                f.fixed(cfg.q_z, chain_start, Fr::one());

                // the packing layer: one group per word, last word first
                let mut input_cells: Vec<Option<Cell>> = vec![None; n_in];
                let mut output_links: Vec<(Cell, usize, usize)> = Vec::new();
                for w in (0..n_words).rev() {
                    let row = f.row;
                    let mut bias = Fr::zero();
                    for &(ww, off) in &packing.outputs {
                        if ww == w {
                            bias += fr_from_i128(shape.out_offset()) * pow2(off);
                        }
                    }
                    let word_v = match &words {
                        Some(ws) => Value::known(ws[w]),
                        None => Value::unknown(),
                    };
                    let bump = f.hit(FaultTarget::PublicWord);
                    let word_v = word_v.map(|x| if bump { x + Fr::one() } else { x });
                    let cell = f.region.assign_advice(cfg.a, row, word_v).cell();
                    f.region.constrain_equal(cell, public_cells[w]);
                    f.fixed(cfg.q_blk, row, Fr::from(2));
                    f.fixed(cfg.w[0], row, bias);
                    f.steps.push(Step::Horner(word_v, bias));
                    f.row += 1;
                    for (j, &(ww, off)) in packing.inputs.iter().enumerate() {
                        if ww != w {
                            continue;
                        }
                        let u = known(&|wt| wt.u[j]);
                        let start = f.row;
                        let coef = pow2(off);
                        let cell = f.a(start, u, Some(FaultTarget::PackedInput));
                        f.fixed(cfg.w[0], start, coef);
                        f.fixed(cfg.q_mac, start, Fr::one());
                        f.steps.push(Step::Mac(u.map(fr_from_i128), vec![coef]));
                        f.limbs(start, u, shape.in_limbs);
                        for i in 1..shape.in_limbs {
                            f.carry(start + i);
                        }
                        f.row += shape.in_limbs;
                        input_cells[j] = Some(cell);
                    }
                    let last = layers.last().expect("a layer");
                    for (i, &(ww, off)) in packing.outputs.iter().enumerate() {
                        if ww != w {
                            continue;
                        }
                        // `p`, and `−n` for an identity output
                        let parts: &[(usize, i128)] = if last.relu {
                            &[(0, 1)]
                        } else {
                            &[(0, 1), (1, -1)]
                        };
                        for &(part, sign) in parts {
                            let y = known(&|wt| {
                                let b = wt.blocks.last().expect("a layer")[i];
                                if part == 0 {
                                    b.p
                                } else {
                                    b.n
                                }
                            });
                            let coef = pow2(off) * fr_from_i128(sign);
                            let row = f.row;
                            let cell = f.a(row, y, None);
                            f.fixed(cfg.w[0], row, coef);
                            f.fixed(cfg.q_mac, row, Fr::one());
                            f.steps.push(Step::Mac(y.map(fr_from_i128), vec![coef]));
                            f.row += 1;
                            output_links.push((cell, i, part));
                        }
                    }
                }

                // the model layers; each value is one cell, or two (`p`, `n`) for identity outputs
                let mut src: Vec<(Cell, Option<Cell>)> = input_cells
                    .into_iter()
                    .map(|c| (c.expect("every input is packed"), None))
                    .collect();
                for (li, layer) in layers.iter().enumerate() {
                    let mut outs: Vec<Option<(Cell, Cell)>> = vec![None; layer.outputs];
                    for g in groups(layer.outputs, shape.weight_columns) {
                        for o in g.clone().rev() {
                            let v = match &wit {
                                Some(wt) => Value::known(wt.blocks[li][o]),
                                None => Value::unknown(),
                            };
                            outs[o] = Some(f.block(v, layer.bias[o], layer.shift));
                        }
                        for j in group_inputs(layer, g.clone()) {
                            let ws: Vec<i64> = g.clone().map(|o| layer.w(o, j)).collect();
                            if layer.signed_inputs {
                                // x = p − n: one row for p, one for n with the weights negated
                                let prev = li - 1;
                                let pv = known(&|wt| wt.blocks[prev][j].p);
                                let nv = known(&|wt| wt.blocks[prev][j].n);
                                let neg: Vec<i64> = ws.iter().map(|w| -w).collect();
                                let cp = f.mac_row(pv, &ws, Some(FaultTarget::MacInput));
                                let cn = f.mac_row(nv, &neg, Some(FaultTarget::MacInput));
                                f.region.constrain_equal(cp, src[j].0);
                                f.region
                                    .constrain_equal(cn, src[j].1.expect("signed input"));
                            } else {
                                let x = known(&|wt| wt.layer_x[li][j]);
                                let cell = f.mac_row(x, &ws, Some(FaultTarget::MacInput));
                                f.region.constrain_equal(cell, src[j].0);
                            }
                        }
                    }
                    src = outs
                        .into_iter()
                        .map(|c| {
                            let (p, n) = c.expect("every output has a block");
                            (p, (!layer.relu).then_some(n))
                        })
                        .collect();
                }
                for (cell, i, part) in output_links {
                    let target = if part == 0 {
                        src[i].0
                    } else {
                        src[i].1.expect("identity output")
                    };
                    f.region.constrain_equal(cell, target);
                }
                let end = f.row;
                f.fixed(cfg.q_z, end, Fr::one());

                // second phase: the running sum
                f.region.next_phase();
                let gamma = f.region.get_challenge(cfg.gamma);
                let mut acc = Value::known(Fr::zero());
                let steps = std::mem::take(&mut f.steps);
                for (i, step) in steps.iter().enumerate() {
                    let row = chain_start + i;
                    let bump = f.hit(FaultTarget::RunningSum);
                    let shown = acc.map(|v| if bump { v + Fr::one() } else { v });
                    f.region.assign_advice(cfg.s, row, shown);
                    acc = match step {
                        Step::Mac(x, ws) => acc.zip(*x).zip(gamma).map(|((s, x), g)| {
                            let mut comb = Fr::zero();
                            for wv in ws.iter().rev() {
                                comb = comb * g + wv;
                            }
                            s + x * comb
                        }),
                        Step::Horner(z, bias) => {
                            acc.zip(*z).zip(gamma).map(|((s, z), g)| g * s - (z - bias))
                        }
                    };
                }
                debug_assert_eq!(chain_start + steps.len(), end);
                f.region.assign_advice(cfg.s, end, acc);
                Ok(())
            },
        )
    }
}
