//! The product chip: products of two activations (`Mul` of two computed tensors, with
//! broadcasting; gating), the first operation whose output is not linear in earlier values.
//!
//! # Layout
//! A product layer `y_o = round(x_o·x'_o / d)` (`d = 2^(8·product_rem_limbs)`) comes with two
//! *operand* layers: ordinary dense layers without rounding (`shift = 0`) whose weights select
//! (and broadcast) the factors `x_o` and `x'_o` from any earlier values, the second one scaled
//! by `d / 2^S` so that the product returns to the activation scale `2^S`. Their equations
//! `e_o = Σ_j w_oj v_j − (p_o − n_o) = 0` are Freivalds equations like any layer's, in the one
//! running sum. The blocks of the three layers are laid out output by output,
//!
//! `| p(x_o) | n(x_o) | p(x'_o) | n(x'_o) | p(y_o) | n(y_o) | r(y_o) |`
//!
//! (every part of `product_limbs` bytes, the remainder of `product_rem_limbs`), one unit in the
//! first operand's page, and the product gate on the first row of `p(x_o)` reads all seven
//! values by forward rotations (the lookup and rounding gates query most of them too; each
//! rotation of `a` no other gate queries costs the EVM verifier one more evaluation):
//!
//! `q_mul · (x·x' + d/2 − d·(p − n) − r) = 0`, `x = p(x_o) − n(x_o)`, `x' = p(x'_o) − n(x'_o)`.
//!
//! Degree 3 (the selector and the two factors). The product layer has no equation in the
//! running sum; its output is read by later layers as `p − n`, like any identity output.
//!
//! # Soundness
//! Every part is range checked (`< 2^(8·limbs)`) by the byte checks of its rows, so for any
//! witness that passes them `|x|, |x'|, |p − n| < 2^(8·product_limbs)` and `0 ≤ r < d`. The
//! quantizer bounds every value by at most 100 bits, so `product_limbs ≤ 13` and
//! `|x·x'| + d/2 + d·|p − n| + r < 2^210 + 2^(8·rem + 105) < r_F/2`: the gate's field equation
//! is the integer equation `x·x' + d/2 = d·(p − n) + r` with `0 ≤ r < d`, whose only solution
//! is `p − n = ⌊(x·x' + d/2)/d⌋`, the rounded product. The factors are tied to the values they
//! select by the operands' Freivalds equations (bounded like every equation, so they pack into
//! slots without carries: the module documentation of `circuit`). A wrong product, a wrong
//! factor or a remainder of `d` or more is therefore rejected: by this gate, by the running
//! sum, or by the byte checks respectively (`tests/product.rs` injects each, with the rest of
//! the forward pass and the public words following the wrong value).

use super::config::{c, k};
use super::*;

/// Declares the product gate on `a` and returns its selector.
pub(crate) fn configure(
    meta: &mut ConstraintSystem<Fr>,
    a: Column<Advice>,
    shape: &ColumnShape,
) -> Column<Fixed> {
    let q_mul = meta.fixed_column();
    let parts = shape.parts(shape.product_limbs);
    let rem = shape.parts(shape.product_rem_limbs);
    let np = parts.len() as i32;
    let d = pow2(LIMB_BITS * shape.product_rem_limbs as u32);
    let half = d * Fr::from(2).invert().unwrap();
    let shape = *shape;
    meta.create_gate("product", |m| {
        let q = m.query_fixed(q_mul, Rotation::cur());
        let mut value = |first: i32, bits: &[u32]| {
            (0..bits.len()).fold(c(0), |acc, t| {
                acc + m.query_advice(a, Rotation(first + t as i32)) * k(shape.factor(bits, t))
            })
        };
        let x = value(0, &parts) - value(np, &parts);
        let x2 = value(2 * np, &parts) - value(3 * np, &parts);
        let y = value(4 * np, &parts) - value(5 * np, &parts);
        let r = value(6 * np, &rem);
        vec![q * (x * x2 + k(half) - k(d) * y - r)]
    });
    q_mul
}
