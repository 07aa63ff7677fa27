//! The matrix-product chip: `y[b,i,k] = round(Σ_j A[b,i,j]·B[b,j,k] / d)` of two activations
//! (attention's `Q·Kᵀ` and `A·V`), checked by Freivalds' identity with random vectors on both
//! sides: its cost is the operands and the result, not the multiply-accumulates.
//!
//! # The check
//! Write `e_ik = Σ_j A_ij·B_jk + d/2 − d·(p_ik − n_ik) − r_ik` for the equation of output
//! `(i, k)` of one batch (`n × m` times `m × p`). Each equation has a slot of its own: output
//! `(i, k)` is slot `σ + (n − 1 − i)·S + k`, `S` (`matmul_stride`, a power of two at least every
//! matrix product's `p`) the same for the whole circuit, `σ` the batch's first output slot.
//! The outputs' parts are weighed in their slots like any layer's (`−d`, `+d`, `−1`, the
//! constant `d/2`), and the running sum combines the slots with the powers of `γ`, so what the
//! outputs leave to the matrix product is, per batch,
//!
//! `Σ_{i,k} γ^(σ + (n−1−i)·S + k) Σ_j A_ij·B_jk = Σ_j Y_j·X_j`, with
//! `Y_j = γ^σ·Σ_i (γ^S)^(n−1−i)·A_ij` (the rows of `A` against the vector `(γ^S)^(n−1−i)`) and
//! `X_j = Σ_k γ^k·B_jk` (the columns of `B` against `γ^k`).
//!
//! So each `j` (a column of `A`, a row of `B`) costs a chain over `A`'s column, a carry over
//! `B`'s row, and its products enter the running sum term by term.
//!
//! # Layout
//! The two operand layers are exact selections (dense, `shift = 0`, `B` scaled by `d/2^S`),
//! their equations in the running sum. Per batch and `j` one *unit* (rows kept together, in the
//! page of `σ`):
//!
//! `| eA | A_0j | eA | A_1j | … | eA | A_(n−1)j | eB | B_j0 | eB | B_j1 | … | eB | B_j(p−1) |`
//!
//! every value its `p` and `n` parts (`L = 2·parts` rows), each preceded by one *chain row*
//! whose `h` (second phase, free on these rows: they are not range checked) holds the chain;
//! `x` is the value below the chain row (`Σ_t f_t·a[1+t] − Σ_t f_t·a[1+parts+t]`):
//! - `A` chain (`q_a`: 1 on the first, 2 after): `h = t·x + γ^S·h[−(L+1)]` (`h = t·x` on the
//!   first), `t` the page power `γ^(F·page)`; the last holds `t·Σ_i (γ^S)^(n−1−i)·A_ij`;
//! - `B` carry (`q_b`: 1 on the first, 2 after): `h = l·h[−(L+1)]` on the first (the last `A`
//!   chain cell is `L + 1` rows up), `l = Σ_f γ^f·w_f` the row's weight combination: the first
//!   chain row of `B` carries the weight 1 in the column of `σ`, so `t·l = γ^σ` and this cell
//!   is `Y_j`; after, `h = γ·h[−(L+1)]` (the gate reads `(l + γ)·h[−(L+1)]`, and those rows
//!   carry no weight: `l = 0`), so the `k`-th holds `γ^k·Y_j`;
//! - `B` sum (`q_b`): `s[+1] = s + x·h`. These rows have `q_run = 0`: the running-sum gate
//!   there does not move the sum (this gate does) and only says `a·t·l = 0`.
//!
//! With `q(q − 1)` as the "after the first" indicator the two selectors take three values and
//! stay of degree 1 where they multiply `t·x` and `l·h`: two fixed columns, degree 3, one more
//! rotation (`h` at `−(L+1)`), no new column or challenge; `γ^S` is `log₂ S` squarings. Rows:
//! `(n + p)·(L + 1)` a unit.
//!
//! # Soundness
//! The chain and carry gates make every chain cell a fixed function of `γ`, the page power `t`,
//! the weights and first-phase cells (field identities; no bound needed), so the terms `x·h`
//! the `B` rows add are exactly `γ^(σ + (n−1−i)·S + k)·A_ij·B_jk` summed over the unit, and
//! the running sum ends at `Σ_slots γ^slot·E_slot` plus the logarithmic-derivative terms as in
//! any circuit, with `E_slot = e_ik` for the matrix product's slots (the module documentation
//! of `circuit` argues that sum; the slots are distinct: `k < p ≤ S`). Every operand and
//! output part is range checked, so `|e_ik| < 2^(β−1)` with `β = matmul_width ≤ 252` for any
//! witness that passes the byte checks: `E_slot = 0` in the field only if `e_ik = 0`, the
//! rounded product. No chain row's `a` enters the sum: the chain rows of `A` have no weight,
//! those of `B` have `q_run = 0` (and the running-sum gate makes `a·t·l = 0` there). The
//! operand values are tied to what they select by their own equations. A wrong output (its
//! later layers following) is caught by the running sum; a chain or carry cell changed so that
//! the sum still closes, by the chain or carry gate; a wrong output made up for by moving the
//! sum on a chain row of `B`, by the sum gate (`tests/matmul.rs` injects each).

use super::config::{c, k, weight_comb};
use super::*;

/// The matrix-product gates' fixed columns: `q_a` on the chain rows of `A` (1 on the first of
/// a unit, 2 after), `q_b` on those of `B` (likewise).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatmulColumns {
    pub(crate) q_a: Column<Fixed>,
    pub(crate) q_b: Column<Fixed>,
}

/// What a row of a matrix product's unit is (`RowSpec::mm`): the value of `q_a` (1, 2) or of
/// `q_b` plus 2 (3, 4); each chain's later rows are its first plus one.
pub(crate) const CHAIN_A_FIRST: u8 = 1;
pub(crate) const CHAIN_A: u8 = 2;
pub(crate) const CHAIN_B_FIRST: u8 = 3;
pub(crate) const CHAIN_B: u8 = 4;

/// `γ^S` by `log₂ S` squarings (the EVM verifier computes each product once).
fn gamma_stride(gm: Expression<Fr>, stride: usize) -> Expression<Fr> {
    debug_assert!(stride.is_power_of_two());
    (0..stride.trailing_zeros()).fold(gm, |e, _| e.clone() * e)
}

/// Declares the chain, carry and sum gates.
#[allow(clippy::too_many_arguments)]
pub(crate) fn configure(
    meta: &mut ConstraintSystem<Fr>,
    a: Column<Advice>,
    h: Column<Advice>,
    s: Column<Advice>,
    t: Option<Column<Advice>>,
    w: &[Column<Fixed>],
    gamma: Challenge,
    shape: &ColumnShape,
) -> MatmulColumns {
    let cols = MatmulColumns {
        q_a: meta.fixed_column(),
        q_b: meta.fixed_column(),
    };
    let parts = shape.matmul_parts();
    let np = parts.len() as i32;
    let back = Rotation(-(2 * np + 1));
    let stride = shape.matmul_stride;
    let value = |m: &mut halo2_proofs::plonk::VirtualCells<'_, Fr>| {
        (0..parts.len()).fold(c(0), |acc, i| {
            let f = k(shape.factor(&parts, i));
            acc + (m.query_advice(a, Rotation(1 + i as i32))
                - m.query_advice(a, Rotation(1 + np + i as i32)))
                * f
        })
    };
    // q(q − 1): 2 after the first row of a chain, 0 on the first and off the chains
    let after = |q: Expression<Fr>| q.clone() * (q - c(1));
    meta.create_gate("matmul chain of A", |m| {
        let q = m.query_fixed(cols.q_a, Rotation::cur());
        let gm = m.query_challenge(gamma);
        let x = match t {
            Some(t) => m.query_advice(t, Rotation::cur()) * value(m),
            None => value(m),
        };
        let (cur, prev) = (m.query_advice(h, Rotation::cur()), m.query_advice(h, back));
        vec![q.clone() * (cur - x) - after(q) * gamma_stride(gm, stride) * prev]
    });
    meta.create_gate("matmul carry", |m| {
        let q = m.query_fixed(cols.q_b, Rotation::cur());
        let gm = m.query_challenge(gamma);
        // as the running sum has it: γ^σ's part below the page
        let l = weight_comb(m, w, gamma);
        let (cur, prev) = (m.query_advice(h, Rotation::cur()), m.query_advice(h, back));
        vec![q.clone() * (cur - l * prev.clone()) - after(q) * gm * prev]
    });
    meta.create_gate("matmul sum", |m| {
        let q = m.query_fixed(cols.q_b, Rotation::cur());
        let x = value(m);
        let (cur, next) = (
            m.query_advice(s, Rotation::cur()),
            m.query_advice(s, Rotation::next()),
        );
        vec![q * (next - cur - x * m.query_advice(h, Rotation::cur()))]
    });
    cols
}

/// The value of the block below chain row `r` (`p − n` of its parts).
pub(crate) fn value_below(a: &[Fr], r: usize, shape: &ColumnShape) -> Fr {
    let parts = shape.matmul_parts();
    let np = parts.len();
    (0..np).fold(Fr::zero(), |acc, i| {
        acc + (a[r + 1 + i] - a[r + 1 + np + i]) * shape.factor(&parts, i)
    })
}

/// Fills the chain cells `h` of the `A` rows (`side_a`) or the carries of the `B` rows, from
/// the first-phase cells, the page powers `t` and the weight combinations `l`, top down (each
/// reads the chain row `L + 1` above it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn fill(
    layout: &Layout,
    shape: &ColumnShape,
    a: &[Fr],
    comb: &dyn Fn(&RowSpec) -> Fr,
    t: &[Fr],
    gamma: Fr,
    side_a: bool,
    h: &mut [Fr],
) {
    let back = 2 * shape.matmul_parts().len() + 1;
    let gs = gamma.pow_vartime([shape.matmul_stride as u64]);
    for (r, row) in layout.rows.iter().enumerate() {
        // the carry gate reads `l` as `γ^σ`'s part on the first carry and as 0 after it
        debug_assert!(
            row.mm == 0 || (row.mm == CHAIN_B_FIRST) != row.w.is_empty(),
            "chain row {r} weights"
        );
        h[r] = match (row.mm, side_a) {
            (CHAIN_A_FIRST, true) => t[r] * value_below(a, r, shape),
            (CHAIN_A, true) => t[r] * value_below(a, r, shape) + gs * h[r - back],
            (CHAIN_B_FIRST, false) => comb(row) * h[r - back],
            (CHAIN_B, false) => gamma * h[r - back],
            _ => continue,
        };
    }
}
