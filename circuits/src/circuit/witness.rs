//! The witness: the integer forward pass with its rounding parts, then the cell values of both
//! phases (faults injected where the tests ask).

use super::*;

/// Witness values of one output's rounding.
#[derive(Clone, Copy, Default)]
pub(crate) struct BlockVals {
    pub(crate) p: i128,
    pub(crate) n: i128,
    pub(crate) r: i128,
    /// The table entry of a lookup output.
    pub(crate) y: i128,
    /// A lookup output's rounded value above / below its clamp (`z = zc + op − on`).
    pub(crate) op: i128,
    pub(crate) on: i128,
}

/// The integer witness: packed inputs, each layer's rounding parts and the model output.
pub(crate) struct Witness {
    pub(crate) u: Vec<i128>,
    pub(crate) blocks: Vec<Vec<BlockVals>>,
    pub(crate) outputs: Vec<i128>,
}

pub(crate) fn witness(
    layers: &[CLayer],
    shape: &ColumnShape,
    input: &[i64],
    fault: Option<Fault>,
) -> Witness {
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
    let total_lookups: usize = layers
        .iter()
        .filter(|l| l.lookup.is_some())
        .map(|l| l.outputs)
        .sum();
    let wrong_entry = hit(FaultTarget::LookupOutput, total_lookups);
    let other_table = hit(FaultTarget::LookupOtherTable, total_lookups);
    let clamp_inside = hit(FaultTarget::LookupClampInside, total_lookups);
    let mut seen_lookups = 0;
    let total_products: usize = layers.iter().filter(|l| l.product).map(|l| l.outputs).sum();
    let wrong_product = hit(FaultTarget::ProductOutput, total_products);
    let wrong_factor = hit(FaultTarget::ProductFactor, total_products);
    let (mut seen_products, mut seen_factors) = (0, 0);
    let total_matmul: usize = layers
        .iter()
        .filter(|l| l.matmul.is_some())
        .map(|l| l.outputs)
        .sum();
    // (the sum fault makes up for the wrong output in the running sum, below)
    let wrong_matmul =
        hit(FaultTarget::MatMulOutput, total_matmul).or(hit(FaultTarget::MatMulSum, total_matmul));
    let mut seen_matmul = 0;
    // every layer value: the input codes, then each layer's output
    let mut vals: Vec<Vec<i128>> = vec![u.clone()];
    let mut blocks = Vec::with_capacity(layers.len());
    let mut seen = 0;
    for (li, l) in layers.iter().enumerate() {
        let factor = first_operand(layers, li);
        let x: Vec<i128> = l
            .sources
            .iter()
            .flat_map(|&v| vals[v].iter().copied())
            .collect();
        // a matrix product's outputs: the position (b·n + i)·p + k of each
        let mut pos_of: Vec<usize> = (0..l.outputs).collect();
        for (pos, &o) in l.mat_out.iter().enumerate() {
            pos_of[o] = pos;
        }
        let b: Vec<BlockVals> = (0..l.outputs)
            .map(|o| {
                let z = if let Some(d) = l.matmul {
                    let c = pos_of[o];
                    let (bt, i, k) = (c / (d.n * d.p), c / d.p % d.n, c % d.p);
                    let a_len = d.batch * d.n * d.m;
                    (0..d.m).fold(l.bias[o], |acc, j| {
                        acc + x[d.a(bt, i, j)] * x[a_len + d.b(bt, j, k)]
                    })
                } else if l.product {
                    l.bias[o] + x[o] * x[l.outputs + o]
                } else {
                    l.row(o)
                        .fold(l.bias[o], |acc, (j, w)| acc + w as i128 * x[j])
                };
                let mut q = z.div_euclid(1i128 << l.shift);
                let mut r = z - (q << l.shift);
                if l.product {
                    // the product one higher, its remainder unchanged: only the gate stops it
                    if wrong_product == Some(seen_products) {
                        q += 1;
                    }
                    seen_products += 1;
                }
                if l.matmul.is_some() {
                    if wrong_matmul == Some(seen_matmul) {
                        q += 1;
                    }
                    seen_matmul += 1;
                }
                if factor {
                    // a factor one higher, the product following: only its equation stops it
                    if wrong_factor == Some(seen_factors) {
                        q += 1;
                    }
                    seen_factors += 1;
                }
                let mut extra = 0;
                if shifted == Some(seen) {
                    q += 1;
                    r -= 1i128 << l.shift;
                }
                if both == Some(seen) {
                    extra = 1;
                }
                seen += 1;
                let (mut y, mut op, mut on) = (0, 0, 0);
                if let Some((id, t)) = &l.lookup {
                    let c = clamp_bound(t);
                    let mut zc = q.clamp(-c, c);
                    if clamp_inside == Some(seen_lookups) && zc != q {
                        // clamped, but claimed one step inside the clamp
                        zc -= zc.signum();
                    }
                    (op, on) = ((q - zc).max(0), (zc - q).max(0));
                    y = t.get(zc) as i128;
                    if wrong_entry == Some(seen_lookups) {
                        y += 1;
                    }
                    if other_table == Some(seen_lookups) {
                        // the entry another table has for the same rounded value
                        let other =
                            layers
                                .iter()
                                .filter_map(|m| m.lookup.as_ref())
                                .find(|(i, u)| {
                                    i != id
                                        && (u.z_min as i128
                                            ..u.z_min as i128 + u.table.len() as i128)
                                            .contains(&q)
                                        && u.get(q) as i128 != y
                                });
                        if let Some((_, u)) = other {
                            y = u.get(q) as i128;
                        }
                    }
                    seen_lookups += 1;
                }
                BlockVals {
                    p: q.max(0) + extra,
                    n: (-q).max(0) + extra,
                    r,
                    y,
                    op,
                    on,
                }
            })
            .collect();
        let y = b
            .iter()
            .map(|v| {
                if let Some((_, t)) = &l.lookup {
                    v.y + if t.plus_relu { v.p << t.grid_shift } else { 0 }
                } else if l.relu {
                    v.p
                } else {
                    v.p - v.n
                }
            })
            .collect();
        vals.push(y);
        blocks.push(b);
    }
    Witness {
        u,
        blocks,
        outputs: vals.pop().expect("a layer"),
    }
}

/// Inverts every nonzero element in place with one field inversion.
pub(crate) fn batch_invert(v: &mut [Fr]) {
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
pub(crate) struct Cells {
    pub(crate) a: Vec<Fr>,
    pub(crate) b: Vec<Fr>,
    pub(crate) c: Vec<Fr>,
    /// With a hashed input: the sponge region and the message cells of the input-word rows.
    pub(crate) sponge: Option<SpongeCells>,
}

/// The hashed input's cells (`poseidon.rs`).
pub(crate) struct SpongeCells {
    pub(crate) rows: Vec<poseidon::SpongeRow>,
    /// `m` of each input-word row.
    pub(crate) word_cells: Vec<Fr>,
}

pub(crate) fn first_phase(
    layout: &Layout,
    shape: &ColumnShape,
    wit: &Witness,
    fault: Option<Fault>,
) -> Cells {
    let rows = &layout.rows;
    let n = rows.len();
    let (mut a, mut b, mut c) = (
        vec![Fr::zero(); n],
        vec![Fr::zero(); n],
        vec![Fr::zero(); n],
    );
    let in_bits = vec![shape.row_bits(); shape.in_parts()];
    // the output-word rows (the input words are accumulated in `c` below)
    let out_words = output_words(&layout.packing, shape, &wit.outputs);
    for (r, row) in rows.iter().enumerate() {
        let v = match row.src {
            // copies are filled once every fault is in (they follow their source); nothing
            // reads a chain row's `a` (its `h` is second phase)
            Src::Zero | Src::Table(_) | Src::Copy(_) | Src::LTable { .. } | Src::Chain { .. } => 0,
            Src::One => 1,
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
                    Part::Y => {
                        a[r] = fr_from_i128(bv.y);
                        continue;
                    }
                    Part::OP => split(bv.op, &out_bits)[t],
                    Part::ON => split(bv.on, &out_bits)[t],
                }
            }
            Src::OutWord(k) => {
                a[r] = out_words[k];
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
    let j0 = shape.in_word_offset();
    // the `index`-th row (modulo their number) a fault may change
    let pick = |target: FaultTarget, pred: &dyn Fn(usize, &RowSpec) -> bool| -> Option<usize> {
        let f = fault.filter(|f| f.target == target)?;
        let hits: Vec<usize> = (0..n).filter(|&r| pred(r, &rows[r])).collect();
        (!hits.is_empty()).then(|| hits[f.index % hits.len()])
    };
    let in_layout = |r: usize| r < region && (j0..j0 + j_in).contains(&(r % stride));
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
    // multiplicities of the function tables: each lookup row's (rounded value, entry), when the
    // table has it
    // (by table id: layers with the same table share its rows)
    let mut table_rows: std::collections::HashMap<u64, usize> = Default::default();
    for (r, row) in rows.iter().enumerate() {
        if let Src::LTable { i: 0, .. } = row.src {
            table_rows.insert(row.lid, r);
        }
    }
    for (r, row) in rows.iter().enumerate() {
        let Src::Block {
            l, part: Part::Y, ..
        } = row.src
        else {
            continue;
        };
        let Some((id, t)) = &layout.layers[l].lookup else {
            continue;
        };
        let Some(&first) = table_rows.get(id) else {
            continue;
        };
        let z = fr_to_i128(&lookup_input(&a, r, shape));
        let y = fr_to_i128(&a[r]);
        if let (Some(z), Some(y)) = (z, y) {
            let i = z - t.z_min as i128;
            if (0..t.table.len() as i128).contains(&i) && t.table[i as usize] as i128 == y {
                c[first + i as usize] += Fr::one();
            }
        }
    }
    let mut cells = Cells {
        a,
        b,
        c,
        sponge: None,
    };
    let first_part = |want: Part| move |_: usize, row: &RowSpec| matches!(row.src, Src::Block { part, t: 0, .. } if part == want);
    let one = Fr::one();
    let wide = shape.row_bytes == 2;
    // (target, rows it may hit, column: 0 a, 1 b, 2 c, amount)
    type Pred<'p> = Box<dyn Fn(usize, &RowSpec) -> bool + 'p>;
    let cell_faults: [(FaultTarget, Pred, usize, Fr); 10] = [
        (
            FaultTarget::LookupMultiplicity,
            Box::new(|_, row| matches!(row.src, Src::LTable { .. })),
            2,
            one,
        ),
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
    for (r, row) in rows.iter().enumerate() {
        if let Src::Copy(from) = row.src {
            cells.a[r] = cells.a[from];
        }
    }
    let is_copy = |_: usize, row: &RowSpec| matches!(row.src, Src::Copy(_));
    let is_one = |_: usize, row: &RowSpec| row.src == Src::One;
    for (target, pred) in [
        (
            FaultTarget::CopyRow,
            &is_copy as &dyn Fn(usize, &RowSpec) -> bool,
        ),
        (FaultTarget::ConstantRow, &is_one),
    ] {
        if let Some(r) = pick(target, pred) {
            cells.a[r] += one;
        }
    }
    if shape.hashed_input {
        // the words the input gate reads off `c`, absorbed as they are (unless a fault says)
        let mut word_cells = cells.c[j0..j0 + j_in].to_vec();
        let hit = |target: FaultTarget| fault.filter(|f| f.target == target).map(|f| f.index);
        if let Some(i) = hit(FaultTarget::SpongeWord) {
            word_cells[i % j_in] += one;
        }
        let mut absorbed = word_cells.clone();
        if let Some(i) = hit(FaultTarget::SpongeMessage) {
            absorbed[i % j_in] += one;
        }
        let rounds = j_in.div_ceil(2) * (poseidon::FULL_ROUNDS + poseidon::PARTIAL_ROUNDS);
        let bump = hit(FaultTarget::SpongeRound).map(|i| i % rounds);
        cells.sponge = Some(SpongeCells {
            rows: poseidon::sponge_witness(&absorbed, bump),
            word_cells,
        });
    }
    cells
}

/// Second-phase cell values: byte inverses `h`, `g`, the running sum `s` and the page powers
/// `t = γ^(F·page)`.
pub(crate) fn second_phase(
    layout: &Layout,
    shape: &ColumnShape,
    cells: &Cells,
    gamma: Fr,
    theta: Fr,
    fault: Option<Fault>,
) -> [Vec<Fr>; 4] {
    let wide = shape.row_bytes == 2;
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
        } else if row.q_lk {
            let z = lookup_input(&cells.a, r, shape);
            h[r] = lookup_key(gamma, theta, row.lid, z, cells.a[r]);
        } else if matches!(row.src, Src::LTable { .. }) {
            h[r] = lookup_key(
                gamma,
                theta,
                row.lid,
                fr_from_i128(row.lz),
                fr_from_i128(row.ly),
            );
        }
    }
    batch_invert(&mut h);
    batch_invert(&mut g);
    for (r, row) in rows.iter().enumerate() {
        if matches!(row.src, Src::Table(_) | Src::LTable { .. }) {
            h[r] *= cells.c[r];
        }
    }
    if let Some(
        f @ Fault {
            target: FaultTarget::LookupInverse,
            ..
        },
    ) = fault
    {
        let hits: Vec<usize> = (0..n).filter(|&r| rows[r].q_lk).collect();
        if !hits.is_empty() {
            h[hits[f.index % hits.len()]] += Fr::one();
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
    let step = powers
        .get(shape.weight_columns)
        .copied()
        .unwrap_or_else(|| gamma.pow_vartime([shape.weight_columns as u64]));
    let mut page_power = vec![Fr::one(); shape.pages];
    for p in 1..shape.pages {
        page_power[p] = page_power[p - 1] * step;
    }
    let mut t: Vec<Fr> = rows.iter().map(|row| page_power[row.page]).collect();
    if let Some(
        f @ Fault {
            target: FaultTarget::PagePower,
            ..
        },
    ) = fault
    {
        t[f.index % n] += Fr::one();
    }
    if shape.matmuls() {
        matmul_chains(layout, shape, cells, &comb, &t, gamma, fault, &mut h);
    }
    let mut s = vec![Fr::zero(); n];
    s[0] = -comb(&rows[0]);
    for r in 0..n - 1 {
        if rows[r].mm >= matmul::CHAIN_B_FIRST {
            // a matrix product's term `x·h` (`q_run = 0` here)
            s[r + 1] = s[r] + matmul::value_below(&cells.a, r, shape) * h[r];
            continue;
        }
        let mut next = s[r] + cells.a[r] * t[r] * comb(&rows[r]);
        if rows[r].checked {
            next += h[r] + g[r];
        }
        if rows[r].q_lk {
            next += h[r];
        }
        if matches!(rows[r].src, Src::Table(_) | Src::LTable { .. }) {
            next -= h[r];
        }
        s[r + 1] = next;
    }
    if let Some(f) = fault.filter(|f| f.target == FaultTarget::MatMulSum) {
        // the wrong output's loss made up on a chain row of `B`: the sum from there on moves by
        // what the closing row would otherwise miss
        let b_rows: Vec<usize> = (0..n)
            .filter(|&r| rows[r].mm >= matmul::CHAIN_B_FIRST)
            .collect();
        let end = rows
            .iter()
            .rposition(|row| row.q_z == 1)
            .expect("a closing row");
        if let Some(&r) = b_rows.get(f.index % b_rows.len().max(1)) {
            let miss = s[end] + comb(&rows[end]);
            for v in &mut s[r + 1..] {
                *v -= miss;
            }
        }
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
    [h, g, s, t]
}

/// The matrix products' chain and carry cells in `h` (`matmul.rs`), with the compound faults:
/// the first chain cell of `A` of one unit one higher (its chain following) and the last of
/// another changed so that the sum does not change (the carries following), or two carry cells
/// of one unit (the first may be one) changed so that their terms cancel.
#[allow(clippy::too_many_arguments)]
fn matmul_chains(
    layout: &Layout,
    shape: &ColumnShape,
    cells: &Cells,
    comb: &dyn Fn(&RowSpec) -> Fr,
    t: &[Fr],
    gamma: Fr,
    fault: Option<Fault>,
    h: &mut [Fr],
) {
    let rows = &layout.rows;
    let a = &cells.a;
    let back = 2 * shape.matmul_parts().len() + 1;
    let x = |r: usize| matmul::value_below(a, r, shape);
    let is_b = |r: usize| r < rows.len() && rows[r].mm >= matmul::CHAIN_B_FIRST;
    matmul::fill(layout, shape, a, comb, t, gamma, true, h);
    if let Some(f) = fault.filter(|f| f.target == FaultTarget::MatMulChain) {
        // per unit: its first and last chain rows of `A` and `W = l·Σ_k γ^k·B_k`, the factor
        // of its terms in the sum
        let units: Vec<(usize, usize, Fr)> = (0..rows.len())
            .filter(|&r| rows[r].mm == matmul::CHAIN_B_FIRST)
            .map(|first| {
                let (mut w, mut g, mut r) = (Fr::zero(), Fr::one(), first);
                while is_b(r) && (r == first || rows[r].mm == matmul::CHAIN_B) {
                    w += g * x(r);
                    g *= gamma;
                    r += back;
                }
                let mut top = first - back;
                while rows[top].mm != matmul::CHAIN_A_FIRST {
                    top -= back;
                }
                (top, first - back, comb(&rows[first]) * w)
            })
            .filter(|u| u.2 != Fr::zero())
            .collect();
        if units.len() >= 2 {
            let (u1, u2) = (
                units[f.index % units.len()],
                units[(f.index + 1) % units.len()],
            );
            // the first cell of one unit's chain one higher, the rest of its chain following;
            // the last cell of another unit's chain cancels the change of the sum
            let old = h[u1.1];
            h[u1.0] += Fr::one();
            let gs = gamma.pow_vartime([shape.matmul_stride as u64]);
            let mut r = u1.0 + back;
            while r <= u1.1 {
                h[r] = t[r] * x(r) + gs * h[r - back];
                r += back;
            }
            let change = (h[u1.1] - old) * u1.2;
            h[u2.1] -= change * u2.2.invert().unwrap_or(Fr::zero());
        }
    }
    matmul::fill(layout, shape, a, comb, t, gamma, false, h);
    if let Some(f) = fault.filter(|f| f.target == FaultTarget::MatMulCarry) {
        let pairs: Vec<usize> = (0..rows.len())
            .filter(|&r| {
                matches!(rows[r].mm, matmul::CHAIN_B_FIRST | matmul::CHAIN_B)
                    && is_b(r + back)
                    && rows[r + back].mm == matmul::CHAIN_B
                    && x(r) != Fr::zero()
                    && x(r + back) != Fr::zero()
            })
            .collect();
        if !pairs.is_empty() {
            let r = pairs[f.index % pairs.len()];
            let (x1, x2) = (x(r), x(r + back));
            h[r] += x2;
            h[r + back] -= x1;
        }
    }
}
