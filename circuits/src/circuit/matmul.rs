//! The matrix-product chip: `y[b,i,k] = round(Σ_j A[b,i,j]·B[b,j,k] / d)` of two activations
//! (attention's `Q·Kᵀ` and `A·V`), checked without one row per multiply-accumulate.
//!
//! # The check
//! Write `e_ik = Σ_j A_ij·B_jk + d/2 − d·(p_ik − n_ik) − r_ik` for the equation of output
//! `(i, k)` (one batch). The equations of a *group* of `G` rows `i` and one column `k` are
//! packed into one Freivalds slot, `β = matmul_bits` apart (`μ_i = μ·2^((i − i₀)·β)`):
//!
//! `E_gk = Σ_i μ_i·e_ik = μ·Σ_j B_jk·u_gj − Σ_i μ_i·(d·(p_ik − n_ik) + r_ik − d/2)`,
//! `u_gj = Σ_{i in g} 2^((i − i₀)·β)·A_ij`.
//!
//! So the slot needs, besides the outputs' parts (fixed weights as in any layer), one *product
//! cell* `P_gjk = B_jk·u_gj` per copy of `B` (weight `μ`), and the slots themselves are
//! combined with powers of the running sum's challenge `γ` like every other slot: the check is
//! Freivalds' identity with `γ`'s powers on the columns `k` and exact packing on the rows `i`.
//! Its cost is the operands (`A` once, `B` once per group), the result, and one unchecked row
//! per element of `B` per group: `⌈n/G⌉·m·p` rows instead of 13 per multiply-accumulate.
//!
//! # Layout
//! The two operand layers are exact selections (dense, `shift = 0`, `B` scaled by `d/2^S`),
//! their equations in the running sum; the second repeats `B` once per group. Per batch, group
//! and `j` one *unit* (rows kept together in one page):
//!
//! `| B_j0 | P_j0 | B_j1 | P_j1 | … | B_j(p−1) | P_j(p−1) | A_i₀j | 0 | … | A_i₁j | 0 |`
//!
//! every value `p`, `n` of `matmul_limbs ≥ 2` bytes (`L = 2·parts` rows; the first row of a
//! value is a full row, never a one-byte row, whose zero check would also zero its `c`). The
//! first-phase column `c`, free on these rows, carries `u`:
//! - Horner gate on the first row of each `A` value (`q_mh = 2`, `1` on the group's last):
//!   `c = x + 2^β·c[+L+1]` (resp. `c = x`), so `c` on the first `A` row is `u_gj` (each `A`
//!   value is followed by an empty row, so that both gates read `c` at the same rotation: one
//!   opening fewer for the verifier);
//! - product gate on the first row of each `B` value (`q_mp`): `a[+L] = x·c` (the product
//!   row) and `c = c[+L+1]` (the next `B`'s first row, or after the last the first `A` row).
//!
//! `x = Σ_t f_t·a[t] − Σ_t f_t·a[parts + t]` is the value of the block at that row. Degree 3.
//!
//! # Soundness
//! The parts of every `A` and `B` value are range checked and their equations tie them to the
//! values they select (`|x| < 2^(8·matmul_limbs)`). The Horner and carry constraints make `c`
//! on each `B` row exactly `u_gj` (a field identity, no bound needed), and the product gate
//! makes each product cell exactly `B_jk·u_gj`. Hence `E_gk` is, in the field, `Σ_i μ_i·e_ik`
//! with integers `|e_ik| < 2^(β−1)` for *any* witness passing the range checks (`β` is the
//! bound `m·(2^(8·limbs) − 1)² + d/2 + d·(2^(8·out_limbs) − 1) + d` plus a sign bit), and
//! `G·β ≤ 252`: `|E_gk|/μ < 2^251 < r/2`, so `E_gk = 0` in the field only if it is zero as an
//! integer, and then every `e_ik = 0` (the lowest nonzero one would leave a nonzero residue
//! modulo `2^β`). The slot joins the running sum like any other (module documentation of
//! `circuit`): a wrong output, a wrong product cell, a wrong carried `u` or a wrong Horner step
//! is rejected (`tests/matmul.rs` injects each).

use super::config::{c, k, select};
use super::*;

/// Declares the Horner and product gates on `a` and `c`; returns their selectors `q_mh`
/// (0, 1, 2) and `q_mp`.
pub(crate) fn configure(
    meta: &mut ConstraintSystem<Fr>,
    a: Column<Advice>,
    cc: Column<Advice>,
    shape: &ColumnShape,
) -> (Column<Fixed>, Column<Fixed>) {
    let (q_mh, q_mp) = (meta.fixed_column(), meta.fixed_column());
    let parts = shape.matmul_parts();
    let np = parts.len() as i32;
    let step = pow2(shape.matmul_bits as u32);
    let value = |m: &mut halo2_proofs::plonk::VirtualCells<'_, Fr>| {
        (0..parts.len()).fold(c(0), |acc, t| {
            let f = k(shape.factor(&parts, t));
            acc + (m.query_advice(a, Rotation(t as i32))
                - m.query_advice(a, Rotation(np + t as i32)))
                * f
        })
    };
    meta.create_gate("matmul horner", |m| {
        let [last, more, _] = select(m.query_fixed(q_mh, Rotation::cur()));
        let x = value(m);
        let (cur, next) = (
            m.query_advice(cc, Rotation::cur()),
            m.query_advice(cc, Rotation(2 * np + 1)),
        );
        vec![
            last * (cur.clone() - x.clone()),
            more * (cur - x - next * k(step)),
        ]
    });
    meta.create_gate("matmul product", |m| {
        let q = m.query_fixed(q_mp, Rotation::cur());
        let x = value(m);
        let u = m.query_advice(cc, Rotation::cur());
        vec![
            q.clone() * (m.query_advice(a, Rotation(2 * np)) - x * u.clone()),
            q * (u - m.query_advice(cc, Rotation(2 * np + 1))),
        ]
    });
    (q_mh, q_mp)
}

/// The value of the block whose first row is `r` (`p − n` of its parts).
pub(crate) fn value_at(a: &[Fr], r: usize, shape: &ColumnShape) -> Fr {
    let parts = shape.matmul_parts();
    let np = parts.len();
    (0..np).fold(Fr::zero(), |acc, t| {
        acc + (a[r + t] - a[r + np + t]) * shape.factor(&parts, t)
    })
}

/// Fills `c` on the matrix products' rows (Horner sums of `A`, the carried `u`) and their
/// product cells, from the operands' cells (a wrong operand is followed).
pub(crate) fn fill(layout: &Layout, shape: &ColumnShape, a: &mut [Fr], c: &mut [Fr]) {
    let np = shape.matmul_parts().len();
    let step = pow2(shape.matmul_bits as u32);
    // bottom up: each gate reads below itself
    for (r, row) in layout.rows.iter().enumerate().rev() {
        match row.q_mh {
            1 => c[r] = value_at(a, r, shape),
            2 => c[r] = value_at(a, r, shape) + step * c[r + 2 * np + 1],
            _ => {}
        }
        if row.q_mp {
            c[r] = c[r + 2 * np + 1];
            a[r + 2 * np] = value_at(a, r, shape) * c[r];
        }
    }
}
