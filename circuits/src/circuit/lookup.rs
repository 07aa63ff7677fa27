//! The function-lookup chip: a non-linear element-wise function (`Sigmoid`, `Tanh`, GELU,
//! `Exp`, ...) applied to a dense layer's rounded output by lookup in a fixed table.
//!
//! **Layout.** A lookup layer is a dense layer whose rounded value `z = p − n` (rows `p`, `n`,
//! `r` as for any dense output, the remainder range-checked, and the clamp's `op`, `on` between
//! `n` and `r`) is not read by the next layer; instead one *entry row* just above its `p`
//! holds `y = T(clamp(z))` in `a`, and the next layer (or the output word) reads `y`. Each distinct table is laid out once, after the byte
//! table (layers with identical tables share its id and rows): one row per value `z` its input can take (the quantizer's interval bounds for every
//! input in the declared range, so every honest witness finds its entry), with the table id,
//! `z` and `T(z)` in fixed columns `lid`, `lz`, `ly` (the verifying key commits to them).
//!
//! **Argument.** A second challenge `θ`, drawn with `γ` after the first phase, keys each entry
//! as `κ(id, z, y) = γ + θ·id + θ²·z + θ³·y`. An entry row has `h = 1/κ(id, p − n, a)` (the
//! `lookup` gate, `z` read by rotation from the rows below it) and adds `h` to the
//! running sum; a table row holds `h = m/κ(id, lz, ly)` with its multiplicity `m` in `c` (the
//! `table` gate, shared with the byte table, whose rows have `lid = lz = ly = 0`) and subtracts
//! it. So the sum is the byte range checks' logarithmic derivative with more terms, and the
//! module documentation's argument carries over with `V` counting the keys as well:
//! - Fix `θ`. The keys are field elements known once the first phase is committed. If some
//!   entry row's key is not a table row's key (or multiplicities disagree), the rational part
//!   does not cancel, and the sum ends at zero with probability at most `(F·P − 1 + d)/r` over
//!   `γ`, `d` now counting the distinct keys too (at most `n` more).
//! - Keys equal, triples different: `κ(id, z, y) − κ(id', z', y')` is a nonzero polynomial of
//!   degree at most 3 in `θ` whenever the triples differ, so for the at most `n·|T|` pairs of an
//!   entry row and a table row it vanishes with probability at most `3·n·|T|/r` over `θ`. A key
//!   is never one of the byte values either: `id ≥ 1` makes it a non-constant polynomial in `θ`
//!   (probability `3·n·256/r`).
//! - So except with probability below `2^−200` (`k ≤ 24`), every entry row holds exactly
//!   `(id, z, T_id(z))` for its own layer's table: the *table id* (one per distinct table) is
//!   what keeps another table from answering (`FaultTarget::LookupOtherTable`), and `y` needs no range check, since
//!   it equals a table entry, whose bound the next layer's equations are sized with.
//!
//! **Clamp.** A function flat beyond `±c` (sigmoid, tanh, erf, hard sigmoid: within half an
//! output unit) has a table over `[−c, c]` only, however loose the interval bounds of `z`:
//! the lookup reads `zc = z − op + on` with `op`, `on` range-checked (below `n`, in the block)
//! and the gate requires `op·(c − zc) = 0` and `on·(c + zc) = 0`, `c` in `lz` of the entry
//! row. Since `zc` is in the table, `|zc| ≤ c`; `op > 0` forces `zc = c`, `on > 0` forces
//! `zc = −c` (both cannot hold), so `z > c` gives `zc = c` (`op = 0` would need `zc = z > c`),
//! `z < −c` gives `zc = −c`, and `|z| ≤ c` gives `zc = z` (`op > 0` would need
//! `z = c + op > c`): `zc = clamp(z, −c, c)` exactly (`FaultTarget::LookupClampInside`). A
//! table without a clamp holds `c` = one more than its largest `|z|` there, outside the table,
//! so `op` and `on` can only be 0.
//!
//! **ReLU plus a table.** A function that does not saturate but is `relu(x) + g(x)` with `g`
//! saturating (GELU, SiLU, softplus, ELU, hard swish: linear on the right, flat on the left)
//! tables `g` (clamped as above) and adds `relu(z)·2^grid_shift` exactly: the entry row also
//! sets `q_lr`, whose constraint `p·n = 0` makes `p = relu(z)` (the argument of the ReLU
//! layers), and the readers of the output weigh `p` by `2^grid_shift` next to the entry
//! (`FaultTarget::RescaleBothParts` on such a layer is caught by this constraint alone).
//!
//! Every gate stays of degree 3: `q_lk·h·(… θ³·y)` and `q_tab·h·(… θ³·ly)`. A model without
//! lookups has none of these columns, nor `θ`: its circuit is unchanged.

use super::*;

/// The columns and challenge of the function lookups.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LookupColumns {
    pub(crate) theta: Challenge,
    pub(crate) q_lk: Column<Fixed>,
    pub(crate) lid: Column<Fixed>,
    pub(crate) lz: Column<Fixed>,
    pub(crate) ly: Column<Fixed>,
    /// A `relu + g` lookup: `p·n = 0` makes `p` the exact `relu(z)` the output adds.
    pub(crate) q_lr: Column<Fixed>,
}

impl LookupColumns {
    pub(crate) fn configure(meta: &mut ConstraintSystem<Fr>) -> Self {
        LookupColumns {
            theta: meta.challenge_usable_after(FirstPhase),
            q_lk: meta.fixed_column(),
            lid: meta.fixed_column(),
            lz: meta.fixed_column(),
            ly: meta.fixed_column(),
            q_lr: meta.fixed_column(),
        }
    }
}

/// The clamped value a lookup row at `r` reads: `p − n − op + on` from the rows below it.
pub(crate) fn lookup_input(a: &[Fr], r: usize, shape: &ColumnShape) -> Fr {
    let bits = shape.lookup_parts();
    let k = bits.len();
    (0..k).fold(Fr::zero(), |acc, t| {
        let at = |m: usize| a[r + 1 + m * k + t];
        acc + (at(0) - at(1) - at(2) + at(3)) * shape.factor(&bits, t)
    })
}

/// `γ + θ·id + θ²·z + θ³·y`: the key of a function-table entry.
pub(crate) fn lookup_key(gamma: Fr, theta: Fr, id: u64, z: Fr, y: Fr) -> Fr {
    gamma + theta * (Fr::from(id) + theta * (z + theta * y))
}
