//! The halo2 circuit proving a quantized forward pass.
//!
//! # Layout
//! One region, filled row by row by three chips that share columns:
//!
//! | columns | chip | gate |
//! |---|---|---|
//! | `a[0..K]`, `c`, fixed `w[0..K]`, `fb`, `q_mac` | multiply-accumulate | `q_mac·(c' − (q_mac − 1)·c − Σ wᵢ·aᵢ − fb) = 0` |
//! | `c`, `a[0..4]`, fixed `d`, `h`, `q_rq` | rescale (+ ReLU) | `q_rq·(c + h − d·(a₁ − a₂) − a₃) = 0`, `q_rq·a₁·a₂ = 0`, `q_rq·(a₀ − a₁ + (q_rq − 1)·a₂) = 0` |
//! | `z[0..Z]`, fixed `q_bit`, `q_zero` | range check | `q_bit·δ·(δ − 1) = 0` with `δ = z − 2z'`, `q_zero·z = 0` |
//!
//! Weights and biases live in fixed columns, so the verifying key binds the model. A dot
//! product of `n` inputs takes `⌈n/K⌉` rows: each row adds `K` products to the running sum in
//! `c`; the row after a dot product is its rescale row, whose `c` holds the finished sum, so
//! `c` needs no copy constraints (one permutation column less). Selectors carry two meanings to
//! save fixed columns (each one costs the EVM verifier): `q_mac` is 1 on the first row of a
//! sum (the previous `c` is ignored) and 2 on the rows that continue it; `q_rq` is 1 for
//! ReLU (`a₀ = p`) and 2 for identity (`a₀ = p − n`).
//! The rescaling row proves `acc + h = d·q + r` with `q = p − n`, `p·n = 0`, and range checks
//! `p, n < 2^B` and `0 ≤ r < d`, so `q = round(acc / d)` is the only value that satisfies it;
//! `a₀` holds the output. A stand-alone ReLU is a one-term sum with weight 1 followed by a
//! rescale row with `d = 1`. Range checks decompose a value into bits with
//! a running sum in a `z` column that must end at zero.
//!
//! The single instance column holds the quantized model input followed by its output.

use crate::quantize::{rescale_parts, QLayer, QuantizedModel};
use halo2_proofs::{
    circuit::{Cell, Layouter, Region, SimpleFloorPlanner, Value},
    halo2curves::{bn256::Fr, ff::PrimeField},
    plonk::{Advice, Circuit, Column, ConstraintSystem, Error, Expression, Fixed, Instance},
    poly::Rotation,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Rows at the end of the table reserved for halo2's blinding factors (with margin).
pub const RESERVED_ROWS: usize = 8;
/// Smallest `k` the circuit uses.
pub const MIN_K: u32 = 6;
/// Largest `k` the circuit uses.
pub const MAX_K: u32 = 24;

/// Column counts of the circuit: the circuit's `Params`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnShape {
    /// `K`: input columns of the multiply-accumulate chip (at least 4).
    pub mac_columns: usize,
    /// `Z`: running-sum columns of the range-check chip.
    pub range_columns: usize,
}

impl Default for ColumnShape {
    fn default() -> Self {
        ColumnShape {
            mac_columns: 4,
            range_columns: 1,
        }
    }
}

impl ColumnShape {
    pub fn advice_columns(&self) -> usize {
        self.mac_columns + 1 + self.range_columns
    }
    /// Columns under copy constraints: the mac inputs, the range checks and the instance.
    pub fn permutation_columns(&self) -> usize {
        self.mac_columns + self.range_columns + 1
    }
    pub fn fixed_columns(&self) -> usize {
        self.mac_columns + 5 + 2 * self.range_columns
    }
}

/// Rows a model needs in each part of the table, for a given column shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCount {
    /// Rows of the multiply-accumulate and rescale chips.
    pub main_rows: usize,
    /// Rows of the busiest range-check column.
    pub range_rows: usize,
    /// Public inputs (model input and output values).
    pub instances: usize,
}

impl RowCount {
    pub fn rows(&self) -> usize {
        self.main_rows.max(self.range_rows).max(self.instances)
    }
    /// Smallest `k` whose table fits all rows plus the reserved blinding rows.
    pub fn k(&self) -> u32 {
        let need = self.rows() + RESERVED_ROWS;
        let mut k = MIN_K;
        while (1usize << k) < need {
            k += 1;
        }
        k
    }
}

/// Counts rows without building anything (the same walk as [`ModelCircuit::synthesize`]).
pub fn count_rows(model: &QuantizedModel, shape: ColumnShape) -> RowCount {
    let k = shape.mac_columns;
    let mut main = 0usize;
    let mut z = vec![0usize; shape.range_columns];
    let mut push_rc = |bits: u32| {
        let i = (0..z.len()).min_by_key(|&i| z[i]).unwrap_or(0);
        z[i] += bits as usize + 1;
    };
    for layer in &model.layers {
        match layer {
            QLayer::Dense {
                inputs,
                outputs,
                shift,
                out_bits,
                ..
            } => {
                main += outputs * (inputs.div_ceil(k).max(1) + 1);
                for _ in 0..*outputs {
                    push_rc(*shift);
                    push_rc(*out_bits);
                    push_rc(*out_bits);
                }
            }
            QLayer::Relu { len, out_bits, .. } => {
                main += 2 * len;
                for _ in 0..*len {
                    push_rc(0);
                    push_rc(*out_bits);
                    push_rc(*out_bits);
                }
            }
        }
    }
    RowCount {
        main_rows: main,
        range_rows: z.into_iter().max().unwrap_or(0),
        instances: model.input_len() + model.output_len(),
    }
}

/// A column shape, its row count and the `k` it gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub shape: ColumnShape,
    pub rows: RowCount,
    pub k: u32,
    /// Relative proving cost estimated by the cost model (column-rows, weighted).
    pub cost: f64,
}

/// Picks the column shape with the lowest estimated proving cost.
///
/// The cost model counts the polynomials the prover commits to, times the table height `2^k`:
/// each advice column (an FFT and an MSM) and each column under copy constraints (a grand
/// product of the permutation argument, one per column at degree 3) weigh 1; each fixed column
/// (only evaluated) weighs 0.25. Profiling `mnist_mlp` showed MSMs and the permutation
/// argument dominate. At most `max_advice` advice columns are used: the generated EVM verifier
/// grows with every column.
pub fn plan(model: &QuantizedModel, max_advice: usize) -> Plan {
    let mut best: Option<Plan> = None;
    for mac_columns in 4..=12 {
        for range_columns in 1..=3 {
            let shape = ColumnShape {
                mac_columns,
                range_columns,
            };
            if shape.advice_columns() > max_advice.max(6) {
                continue;
            }
            let rows = count_rows(model, shape);
            let k = rows.k();
            let cost = (1u64 << k) as f64
                * (shape.advice_columns() as f64
                    + shape.permutation_columns() as f64
                    + 0.25 * shape.fixed_columns() as f64);
            let better = match &best {
                None => true,
                Some(b) => cost < b.cost * 0.999,
            };
            if better {
                best = Some(Plan {
                    shape,
                    rows,
                    k,
                    cost,
                });
            }
        }
    }
    best.expect("at least one shape is allowed")
}

/// Columns and gates of the circuit.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    a: Vec<Column<Advice>>,
    c: Column<Advice>,
    z: Vec<Column<Advice>>,
    w: Vec<Column<Fixed>>,
    fb: Column<Fixed>,
    q_mac: Column<Fixed>,
    q_rq: Column<Fixed>,
    d: Column<Fixed>,
    h: Column<Fixed>,
    q_bit: Vec<Column<Fixed>>,
    q_zero: Vec<Column<Fixed>>,
    instance: Column<Instance>,
}

impl ModelConfig {
    /// Declares the columns and gates for a column shape.
    pub fn configure(meta: &mut ConstraintSystem<Fr>, shape: ColumnShape) -> Self {
        assert!(
            shape.mac_columns >= 4,
            "the rescale chip needs 4 mac columns"
        );
        assert!(shape.range_columns >= 1);
        let a: Vec<_> = (0..shape.mac_columns)
            .map(|_| meta.advice_column())
            .collect();
        let c = meta.advice_column();
        let z: Vec<_> = (0..shape.range_columns)
            .map(|_| meta.advice_column())
            .collect();
        let w: Vec<_> = (0..shape.mac_columns)
            .map(|_| meta.fixed_column())
            .collect();
        let [fb, q_mac, q_rq, d, h] = [(); 5].map(|_| meta.fixed_column());
        let q_bit: Vec<_> = z.iter().map(|_| meta.fixed_column()).collect();
        let q_zero: Vec<_> = z.iter().map(|_| meta.fixed_column()).collect();
        let instance = meta.instance_column();
        for col in a.iter().chain(z.iter()) {
            meta.enable_equality(*col);
        }
        meta.enable_equality(instance);

        meta.create_gate("multiply-accumulate", |m| {
            let q = m.query_fixed(q_mac, Rotation::cur());
            let bias = m.query_fixed(fb, Rotation::cur());
            let cur = m.query_advice(c, Rotation::cur());
            let next = m.query_advice(c, Rotation::next());
            let mut sum = bias;
            for (ac, wc) in a.iter().zip(&w) {
                sum = sum
                    + m.query_fixed(*wc, Rotation::cur()) * m.query_advice(*ac, Rotation::cur());
            }
            let one = Expression::Constant(Fr::one());
            vec![q.clone() * (next - (q - one) * cur - sum)]
        });

        meta.create_gate("rescale", |m| {
            let q = m.query_fixed(q_rq, Rotation::cur());
            let [out, p, n, r] = [0, 1, 2, 3].map(|i| m.query_advice(a[i], Rotation::cur()));
            let acc = m.query_advice(c, Rotation::cur());
            let [dd, hh] = [d, h].map(|col| m.query_fixed(col, Rotation::cur()));
            let one = Expression::Constant(Fr::one());
            vec![
                q.clone() * (acc + hh - dd * (p.clone() - n.clone()) - r),
                q.clone() * p.clone() * n.clone(),
                q.clone() * (out - p + (q - one) * n),
            ]
        });

        for (zi, &zc) in z.iter().enumerate() {
            let (qb, qz) = (q_bit[zi], q_zero[zi]);
            meta.create_gate("range-check bit", |m| {
                let q = m.query_fixed(qb, Rotation::cur());
                let delta = m.query_advice(zc, Rotation::cur())
                    - Expression::Constant(Fr::from(2)) * m.query_advice(zc, Rotation::next());
                vec![q * delta.clone() * (delta - Expression::Constant(Fr::one()))]
            });
            meta.create_gate("range-check end", |m| {
                vec![m.query_fixed(qz, Rotation::cur()) * m.query_advice(zc, Rotation::cur())]
            });
        }

        ModelConfig {
            a,
            c,
            z,
            w,
            fb,
            q_mac,
            q_rq,
            d,
            h,
            q_bit,
            q_zero,
            instance,
        }
    }
}

/// Which chip's witness cell a [`Fault`] changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultTarget {
    /// An input cell of the multiply-accumulate chip.
    MacInput,
    /// A running-sum cell of the multiply-accumulate chip.
    MacSum,
    /// The positive part `p` of the rescale chip.
    RescalePos,
    /// The negative part `n` of the rescale chip.
    RescaleNeg,
    /// The remainder `r` of the rescale chip.
    RescaleRem,
    /// The output cell of the rescale chip.
    RescaleOut,
    /// Quotient one higher and remainder one divisor lower: satisfies the rescale gate itself,
    /// only the range check on the remainder stops it.
    RescaleShiftQuotient,
    /// A running-sum cell of the range-check chip.
    RangeBit,
}

/// A deliberate wrong witness, for soundness tests: the `index`-th cell of `target` is
/// increased by one (or, for [`FaultTarget::RescaleShiftQuotient`], the `index`-th rescale row
/// is rebalanced). A circuit with a fault must never verify.
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

    /// The public inputs: the quantized input followed by the quantized output.
    pub fn instances(&self) -> Option<Vec<Fr>> {
        let input = self.input.as_ref()?;
        let output = self.model.forward(input);
        Some(
            input
                .iter()
                .chain(&output)
                .map(|&v| fr_from_i128(v as i128))
                .collect(),
        )
    }
}

/// Where an activation lives: a public input row or an advice cell.
#[derive(Clone, Copy, Debug)]
enum Src {
    Instance(usize),
    Cell(Cell),
}

struct Filler<'a, 'r> {
    cfg: &'a ModelConfig,
    region: &'a mut Region<'r, Fr>,
    row: usize,
    zrows: Vec<usize>,
    instance_links: Vec<(Cell, usize)>,
    fault: Option<Fault>,
    counters: [usize; 8],
}

impl Filler<'_, '_> {
    fn maybe_fault(&mut self, target: FaultTarget, v: Value<Fr>) -> Value<Fr> {
        let slot = target as usize;
        let hit =
            matches!(self.fault, Some(f) if f.target == target && f.index == self.counters[slot]);
        self.counters[slot] += 1;
        if hit {
            v.map(|x| x + Fr::one())
        } else {
            v
        }
    }

    fn advice(
        &mut self,
        col: Column<Advice>,
        row: usize,
        v: Value<Fr>,
        t: Option<FaultTarget>,
    ) -> Cell {
        let v = match t {
            Some(t) => self.maybe_fault(t, v),
            None => v,
        };
        self.region.assign_advice(col, row, v).cell()
    }

    fn fixed(&mut self, col: Column<Fixed>, row: usize, v: Fr) {
        self.region.assign_fixed(col, row, v);
    }

    fn link(&mut self, cell: Cell, src: Src) {
        match src {
            Src::Instance(row) => self.instance_links.push((cell, row)),
            Src::Cell(other) => self.region.constrain_equal(cell, other),
        }
    }

    /// Proves `0 <= value < 2^bits` for the value in `cell`.
    fn range_check(&mut self, cell: Cell, value: Value<i128>, bits: u32) {
        let zi = (0..self.zrows.len())
            .min_by_key(|&i| self.zrows[i])
            .unwrap_or(0);
        let col = self.cfg.z[zi];
        let start = self.zrows[zi];
        for j in 0..=bits {
            let v = value.map(|v| fr_from_i128(v >> j));
            let c = self.advice(col, start + j as usize, v, Some(FaultTarget::RangeBit));
            if j == 0 {
                self.region.constrain_equal(c, cell);
            }
            if j < bits {
                self.fixed(self.cfg.q_bit[zi], start + j as usize, Fr::one());
            } else {
                self.fixed(self.cfg.q_zero[zi], start + j as usize, Fr::one());
            }
        }
        self.zrows[zi] = start + bits as usize + 1;
    }

    /// One neuron: the dot product `bias + Σ wᵢ·x[idxᵢ]` (`terms` lists `(idx, w)`), then the
    /// rescale row `out = relu?(round(acc / 2^shift))` with its range checks. The sum lands in
    /// `c` of the rescale row, so it needs no copy. Returns the output cell and value.
    #[allow(clippy::too_many_arguments)]
    fn neuron(
        &mut self,
        x: &[Src],
        xv: Option<&[i64]>,
        terms: &[(usize, i64)],
        bias: i64,
        shift: u32,
        relu: bool,
        bits: u32,
    ) -> (Cell, Value<i128>) {
        let kk = self.cfg.a.len();
        // the first row's c is ignored by the gate (q_mac = 1); give it a value
        let start = self.row;
        self.advice(self.cfg.c, start, Value::known(Fr::zero()), None);
        let mut acc: Value<i128> = match xv {
            Some(_) => Value::known(bias as i128),
            None => Value::unknown(),
        };
        for (r, chunk) in terms.chunks(kk).enumerate() {
            let row = start + r;
            // 1: a new sum starts here; 2: the sum continues
            self.fixed(self.cfg.q_mac, row, Fr::from(if r == 0 { 1 } else { 2 }));
            if r == 0 && bias != 0 {
                self.fixed(self.cfg.fb, row, fr_from_i128(bias as i128));
            }
            for (i, &(idx, w)) in chunk.iter().enumerate() {
                let v = match xv {
                    Some(xs) => Value::known(xs[idx]),
                    None => Value::unknown(),
                };
                let cell = self.advice(
                    self.cfg.a[i],
                    row,
                    v.map(|v| fr_from_i128(v as i128)),
                    Some(FaultTarget::MacInput),
                );
                self.link(cell, x[idx]);
                if w != 0 {
                    self.fixed(self.cfg.w[i], row, fr_from_i128(w as i128));
                }
                acc = acc.zip(v).map(|(a, v)| a + w as i128 * v as i128);
            }
            self.advice(
                self.cfg.c,
                row + 1,
                acc.map(fr_from_i128),
                Some(FaultTarget::MacSum),
            );
        }
        let row = start + terms.len().div_ceil(kk).max(1);
        if terms.is_empty() {
            // a constant neuron: one start row with only the bias
            self.fixed(self.cfg.q_mac, start, Fr::one());
            self.fixed(self.cfg.fb, start, fr_from_i128(bias as i128));
            self.advice(
                self.cfg.c,
                row,
                acc.map(fr_from_i128),
                Some(FaultTarget::MacSum),
            );
        }
        self.row = row + 1;

        // the rescale row
        // q_rq: 1 for ReLU, 2 for identity
        self.fixed(self.cfg.q_rq, row, Fr::from(if relu { 1 } else { 2 }));
        self.fixed(self.cfg.d, row, Fr::from_u128(1u128 << shift));
        if shift > 0 {
            self.fixed(self.cfg.h, row, Fr::from_u128(1u128 << (shift - 1)));
        }
        let parts = acc.map(|a| {
            let (q, r) = rescale_parts(a, shift);
            (q.max(0), (-q).max(0), r)
        });
        let slot = FaultTarget::RescaleShiftQuotient as usize;
        let shifted = matches!(self.fault, Some(f) if f.target == FaultTarget::RescaleShiftQuotient && f.index == self.counters[slot]);
        self.counters[slot] += 1;
        let parts = parts.map(|(p, n, r)| match shifted {
            // q + 1 with r - d: the rescale equation still holds
            true if n > 0 => (p, n - 1, r - (1i128 << shift)),
            true => (p + 1, n, r - (1i128 << shift)),
            false => (p, n, r),
        });
        let out = parts.map(|(p, n, _)| if relu { p } else { p - n });
        let out_cell = self.advice(
            self.cfg.a[0],
            row,
            out.map(fr_from_i128),
            Some(FaultTarget::RescaleOut),
        );
        let p_cell = self.advice(
            self.cfg.a[1],
            row,
            parts.map(|x| fr_from_i128(x.0)),
            Some(FaultTarget::RescalePos),
        );
        let n_cell = self.advice(
            self.cfg.a[2],
            row,
            parts.map(|x| fr_from_i128(x.1)),
            Some(FaultTarget::RescaleNeg),
        );
        let r_cell = self.advice(
            self.cfg.a[3],
            row,
            parts.map(|x| fr_from_i128(x.2)),
            Some(FaultTarget::RescaleRem),
        );
        self.range_check(r_cell, parts.map(|x| x.2), shift);
        self.range_check(p_cell, parts.map(|x| x.0), bits);
        self.range_check(n_cell, parts.map(|x| x.1), bits);
        (out_cell, out)
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
        let n_in = model.input_len();
        let trace = self.input.as_ref().map(|x| model.trace(x));
        let links = layouter.assign_region(
            || "model",
            |mut region| {
                let mut f = Filler {
                    cfg: &cfg,
                    region: &mut region,
                    row: 0,
                    zrows: vec![0; cfg.z.len()],
                    instance_links: Vec::new(),
                    fault: self.fault,
                    counters: [0; 8],
                };
                let mut x: Vec<Src> = (0..n_in).map(Src::Instance).collect();
                let mut xv: Option<Vec<i64>> = self.input.clone();
                for (li, layer) in model.layers.iter().enumerate() {
                    let outs: Vec<Cell> = match layer {
                        QLayer::Dense {
                            inputs,
                            outputs,
                            weights,
                            bias,
                            shift,
                            relu,
                            out_bits,
                            ..
                        } => (0..*outputs)
                            .map(|o| {
                                let terms: Vec<(usize, i64)> = weights
                                    [o * inputs..(o + 1) * inputs]
                                    .iter()
                                    .copied()
                                    .enumerate()
                                    .collect();
                                f.neuron(
                                    &x,
                                    xv.as_deref(),
                                    &terms,
                                    bias[o],
                                    *shift,
                                    *relu,
                                    *out_bits,
                                )
                                .0
                            })
                            .collect(),
                        // ReLU alone: each value passes through a one-term sum with weight 1
                        QLayer::Relu { len, out_bits, .. } => (0..*len)
                            .map(|j| {
                                f.neuron(&x, xv.as_deref(), &[(j, 1)], 0, 0, true, *out_bits)
                                    .0
                            })
                            .collect(),
                    };
                    x = outs.into_iter().map(Src::Cell).collect();
                    xv = trace.as_ref().map(|t| t[li].clone());
                }
                // the model output becomes public, after the input
                for (o, src) in x.iter().enumerate() {
                    if let Src::Cell(cell) = src {
                        f.instance_links.push((*cell, n_in + o));
                    }
                }
                Ok(std::mem::take(&mut f.instance_links))
            },
        )?;
        for (cell, row) in links {
            layouter.constrain_instance(cell, cfg.instance, row);
        }
        Ok(())
    }
}
