//! The halo2 circuit proving a quantized forward pass.
//!
//! # Design
//! The circuit is built to be cheap twice: for the prover (few columns, low degree, few rows)
//! and for the EVM verifier (few commitments, few public inputs). Every constraint has degree
//! at most 3, so the quotient is computed on a domain only twice the table and split in two
//! pieces; there are no halo2 lookup arguments (range checks and function tables are
//! logarithmic derivatives in the one running sum), and no copy constraints unless the model is
//! wider than one page of slots (below) or its input is hashed.
//!
//! Columns: `a`, `b`, `c` (first phase), `s`, `h`, `g` (second phase, after a challenge `γ`);
//! `b` and `g` only in the two-byte layout (below).
//!
//! **Layers read any earlier values.** A dense layer reads the concatenation of its *sources*
//! (the input codes, or the outputs of earlier layers: a residual connection, a concatenation
//! of branches); its weights sit on the rows of whatever values it reads, wherever they are, so
//! a branch costs nothing but its coefficients.
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
//! **Pages: any width with a fixed number of columns.** When a model has more slots than its
//! `F` weight columns (the planner's cap), slots are numbered globally and page `p` holds
//! slots `pF..(p+1)F`, weighted `γ^(pF + f)`. A second-phase column `t` holds `γ^(pF)` of each
//! row's page: `t = 1` on the input-word rows (page 0 starts the layout), and a 3-valued
//! fixed column `q_pg` makes `t' = t` (same page) or `t' = t·γ^F` (next page) on every
//! transition of the layout, so `t` is fixed on every row the sum reads. The running sum adds
//! `a·t·Σ_f γ^f w_f`: the polynomial part is `Σ_slots γ^slot·E_slot`, of degree `F·P − 1`. Rows
//! are laid out page by page (`t` only moves up). A value whose coefficients fall in several
//! pages keeps its own rows (range checked, in the page of its own equation, whole with the
//! rows the rounding and input gates reach by rotation) and gets a *copy row* in each other
//! page, tied to its row by halo2's copy constraints on `a`; a copy needs no range check, it
//! equals a checked cell. Constant terms of pages after the first sit on a row whose `a` is
//! tied to the constant 1 (a constants column). A model with one page has none of `t`,
//! `q_pg`, copies or constants: its circuit is the narrow one exactly.
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
//! KZG and the Fiat–Shamir transcript. With pages, `F·P` takes the place of `F` (the number of
//! slots, at most `2^24`: still below `2^-227`), and the copy constraints add halo2's
//! permutation-argument error.
//!
//! | gate | rows | constraint |
//! |---|---|---|
//! | running sum | `q_run ≠ 0` | `s' = s + a·[t·]Σ_f γ^f w_f + q_rc·(h + g) − q_tab·h` |
//! | byte inverses | `q_rc` | `h·(γ + a − 256·b) = 1`, `g·(γ + b) = 1` |
//! | table | `q_tab` | `h·(γ + w_0) = c` (`w_0` = the table value), `a = 0` |
//! | rounding | `q_blk` | `p·n = 0` for a ReLU output (`p`, `n` in the rows below) |
//! | ends, zeros | `q_z = 1` / `2` | `s = −Σ_f γ^f w_f` / `c = 0` and `a − 256·b = 0` |
//! | inputs | `q_x = 1` / `2` | `c = a + 2^16·c[+S]` / `instance = a + 2^16·c[+S]` |
//! | outputs | `q_run = 2` | `a = instance` |
//! | sponge (hashed input only) | `q_round`, `q_full`, `q_abs`, `q_dig` | see `poseidon.rs`; the input gate's `instance` is then the message column `m` |
//! | page powers (pages only) | `q_pg = 1` / `2` | `t' = t` / `t' = t·γ^F`; `t = 1` where `q_x = 2` |
//! | product (products only) | `q_mul` | `x·x' + d/2 − d·(p − n) − r = 0`, factors and product in the rows below (`product.rs`) |
//! | matmul chain, carry, sum (matrix products only) | `q_a`, `q_b` = 1 (first) / 2 | `h = t·x` / `h = t·x + γ^S·h[−L−1]`; `h = l·h[−L−1]` / `h = γ·h[−L−1]`; `s' = s + x·h` (`matmul.rs`) |
//! | lookup (lookups only) | `q_lk` | `h·(γ + θ·lid + θ²·zc + θ³·a) = 1`, `zc = p − n − op + on` below; `op·(lz − zc) = 0`, `on·(lz + zc) = 0`; `q_lr·p·n = 0` |
//!
//! With function lookups (`lookup.rs`) the running sum also adds `q_lk·h`, and the table gate's
//! `γ + w_0` becomes `γ + w_0 + θ·lid + θ²·lz + θ³·ly` (the byte rows have zeros there).
//! With matrix products (`matmul.rs`) the chain rows of `B` have `q_run = 0` and the
//! matmul sum gate moves the sum there instead (`s' = s + x·h`, a product term of Freivalds'
//! identity); the running-sum gate then only says `a·t·l = 0` on them.
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
//! **Hashed input** (`ColumnShape::hashed_input`). The layer gets one more row first and puts
//! the output words before the input words (rows `1..1+K`, then `1+K..1+K+J`); the input-word
//! gate compares each word with a message cell of the Poseidon sponge (`poseidon.rs`) instead
//! of the instance, and the sponge's digest is the first public word (row 0). The public words
//! are then the digest and the `K` output words, whatever the input size.
//!
//! # Module map
//! | file | what |
//! |---|---|
//! | `shape.rs` | [`ColumnShape`]: the circuit's `Params`, byte counts and how values are cut into rows |
//! | `slots.rs` | dense layers as the circuit sees them; equations packed into Freivalds slots |
//! | `lookup.rs` | the function-lookup chip (non-linear functions by table): columns, keys, soundness |
//! | `poseidon.rs` | the input-hash chip: Poseidon's parameters, the sponge, its gates and soundness |
//! | `product.rs` | the product chip (products of two activations): its gate and soundness |
//! | `matmul.rs` | the matrix-product chip (matrix products of two activations): gates, soundness |
//! | `public.rs` | the public words: packing and unpacking of input codes and outputs |
//! | `layout.rs` | the rows (sources, selectors, fixed weights), the statement digest, the planner |
//! | `config.rs` | columns, challenge and gates |
//! | `witness.rs` | the integer witness and the cells of both phases |
//! | `fault.rs` | deliberate wrong witnesses for the soundness tests |
//! | `field.rs` | exact integer and field conversions |
//!
//! # Statement digest
//! One row after the closing row holds [`statement_digest`] (the SHA-256 of the whole compiled
//! model) in a fixed cell under no gate. It changes nothing a proof checks, but the verifying
//! key commits to every fixed cell, so two models that differ only in what their words mean
//! (input range, code width, activation scale, shapes) have different keys.

use crate::error::CompileError;
use crate::graph::Matrix;
use crate::quantize::{QLayer, QLookup, QuantizedModel};
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

mod config;
mod fault;
mod field;
mod layout;
mod lookup;
mod matmul;
pub mod poseidon;
mod product;
mod public;
mod shape;
mod slots;
mod witness;

pub use config::ModelConfig;
pub use fault::{Fault, FaultTarget};
pub use field::{fr_from_i128, fr_to_i128};
pub use layout::{count_rows, plan, plan_with, statement_digest, Plan, RowCount};
pub use public::{
    input_digest, pack_public, unpack_public, Packing, PublicInput, PublicLayout, PublicValues,
};
pub use shape::ColumnShape;

use layout::*;
use lookup::*;
use poseidon::SpongeColumns;
use public::*;
use shape::*;
use slots::*;
use witness::*;

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
            let (j0, k0) = (self.shape.in_word_offset(), self.shape.out_word_offset());
            let mut words = match &cells.sponge {
                // the digest the (faulted) sponge region ends in
                Some(sp) => vec![sp.rows.last().expect("a sponge row")[0]],
                None => cells.c[j0..j0 + self.shape.input_words].to_vec(),
            };
            words.extend((0..self.shape.output_words).map(|k| cells.a[k0 + k]));
            return Some(words);
        }
        let layers = circuit_layers(&self.model);
        let pk = Packing::new(&PublicLayout::of_model(&self.model, self.shape));
        let wit = witness(&layers, &self.shape, input, None);
        Some(pack_values(&pk, &self.shape, &wit.u, &wit.outputs))
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
        debug_assert!(shape.paged() || layout.rows.len() == rows_of(&layout.layers, &shape));
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
                        (
                            cfg.q_tab,
                            matches!(row.src, Src::Table(_) | Src::LTable { .. }) as u64,
                        ),
                        (cfg.q_blk, row.q_blk as u64),
                    ] {
                        if v != 0 {
                            region.assign_fixed(col, r, Fr::from(v));
                        }
                    }
                }
                if let Some(lk) = cfg.lookup {
                    for (r, row) in layout.rows.iter().enumerate() {
                        for (col, v) in [
                            (lk.q_lk, Fr::from(row.q_lk as u64)),
                            (lk.lid, Fr::from(row.lid)),
                            (lk.lz, fr_from_i128(row.lz)),
                            (lk.ly, fr_from_i128(row.ly)),
                            (lk.q_lr, Fr::from(row.q_lr as u64)),
                        ] {
                            if v != Fr::zero() {
                                region.assign_fixed(col, r, v);
                            }
                        }
                    }
                }
                if let Some(q_mul) = cfg.q_mul {
                    for (r, row) in layout.rows.iter().enumerate() {
                        if row.q_mul {
                            region.assign_fixed(q_mul, r, Fr::one());
                        }
                    }
                }
                if let Some(mm) = cfg.q_mm {
                    for (r, row) in layout.rows.iter().enumerate() {
                        let (col, v) = match row.mm {
                            0 => continue,
                            v @ (matmul::CHAIN_A_FIRST | matmul::CHAIN_A) => (mm.q_a, v),
                            v => (mm.q_b, v - 2),
                        };
                        region.assign_fixed(col, r, Fr::from(v as u64));
                    }
                }
                let n = layout.rows.len();
                if let Some(q_pg) = cfg.q_pg {
                    // the transition to the next row: same page, or the next one
                    for r in 0..n - 1 {
                        let up = layout.rows[r + 1].page == layout.rows[r].page + 1;
                        region.assign_fixed(q_pg, r, Fr::from(if up { 2 } else { 1 }));
                    }
                }
                let mut a_cells = Vec::with_capacity(n);
                for (col, pick) in [(Some(cfg.a), 0), (cfg.b, 1), (Some(cfg.c), 2)] {
                    let Some(col) = col else { continue };
                    for r in 0..n {
                        let v = match &cells {
                            Some(cs) => Value::known([&cs.a, &cs.b, &cs.c][pick][r]),
                            None => Value::unknown(),
                        };
                        let cell = region.assign_advice(col, r, v).cell();
                        if pick == 0 {
                            a_cells.push(cell);
                        }
                    }
                }
                if let Some(sp) = cfg.sponge {
                    assign_sponge(&mut region, &sp, &shape, cells.as_ref())?;
                }
                if shape.paged() {
                    for (r, row) in layout.rows.iter().enumerate() {
                        match row.src {
                            Src::Copy(from) => region.constrain_equal(a_cells[from], a_cells[r]),
                            Src::One => region.constrain_constant(a_cells[r], Fr::one())?,
                            _ => {}
                        }
                    }
                }
                region.next_phase();
                let gamma = region.get_challenge(cfg.gamma);
                // without lookups θ is never used
                let theta = match cfg.lookup {
                    Some(lk) => region.get_challenge(lk.theta),
                    None => Value::known(Fr::zero()),
                };
                let second = match &cells {
                    Some(cs) => gamma
                        .zip(theta)
                        .map(|(gm, th)| second_phase(&layout, &shape, cs, gm, th, self.fault)),
                    None => Value::unknown(),
                };
                for (col, pick) in [(Some(cfg.h), 0), (cfg.g, 1), (Some(cfg.s), 2), (cfg.t, 3)] {
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

/// Assigns the sponge region of a hashed input (`poseidon.rs`): its fixed cells, the digest
/// selector on row 0, the state and message cells, and the copies tying each absorbed message
/// to the message cell of its input-word row.
fn assign_sponge(
    region: &mut halo2_proofs::circuit::Region<'_, Fr>,
    sp: &SpongeColumns,
    shape: &ColumnShape,
    cells: Option<&Cells>,
) -> Result<(), Error> {
    let (n, start, j0) = (
        shape.input_words,
        shape.sponge_start(),
        shape.in_word_offset(),
    );
    for (u, (rc, q)) in poseidon::sponge_fixed(n).into_iter().enumerate() {
        if rc != Fr::zero() {
            region.assign_fixed(sp.rc, start + u, rc);
        }
        for (col, v) in [sp.q_round, sp.q_full, sp.q_abs].into_iter().zip(q) {
            if v != 0 {
                region.assign_fixed(col, start + u, Fr::from(v));
            }
        }
    }
    region.assign_fixed(sp.q_dig, 0, Fr::one());
    let sponge = cells.map(|cs| cs.sponge.as_ref().expect("a sponge witness"));
    let rows = poseidon::sponge_rows(n);
    let mut messages = Vec::with_capacity(rows);
    for u in 0..rows {
        for (i, col) in sp.x.iter().enumerate() {
            region.assign_advice(
                *col,
                start + u,
                sponge.map_or(Value::unknown(), |s| Value::known(s.rows[u][i])),
            );
        }
        let m = sponge.map_or(Value::unknown(), |s| {
            Value::known(s.rows[u][poseidon::WIDTH])
        });
        messages.push(region.assign_advice(sp.m, start + u, m).cell());
    }
    for j in 0..n {
        let v = sponge.map_or(Value::unknown(), |s| Value::known(s.word_cells[j]));
        let word = region.assign_advice(sp.m, j0 + j, v).cell();
        region.constrain_equal(word, messages[poseidon::message_row(n, j)]);
    }
    Ok(())
}
