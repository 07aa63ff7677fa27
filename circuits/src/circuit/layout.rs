//! The rows of a circuit (sources, selectors, fixed weights), the statement digest, row counts and
//! the planner that picks the shape and `k`.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    P,
    N,
    R,
    /// The table entry of a lookup layer's output (one row, before its `p`).
    Y,
    /// How far a lookup layer's rounded value lies above (`OP`) or below (`ON`) its clamp.
    OP,
    ON,
}

/// What a row's `a` cell holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Src {
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
    /// A copy of the row at this index (in another page; a copy constraint ties them).
    Copy(usize),
    /// The constant 1 (a constants-column copy): carries a page's constant terms.
    One,
    /// Entry `i` of lookup layer `l`'s function table (`a = 0`, `c` = multiplicity).
    LTable {
        l: usize,
        i: usize,
    },
    /// A chain row of matrix product `l`'s unit `(b, j)` (`a = 0`, read by nothing; its `h`
    /// holds the chain, `matmul.rs`).
    Chain {
        l: usize,
        b: usize,
        j: usize,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct RowSpec {
    pub(crate) src: Src,
    /// Range-checked (`q_rc`).
    pub(crate) checked: bool,
    /// An 8-bit part (`a = 256·v`, `b = v`).
    pub(crate) small: bool,
    pub(crate) q_run: u8,
    pub(crate) q_x: u8,
    pub(crate) q_z: u8,
    pub(crate) q_blk: bool,
    /// Nonzero weights `(slot, value)` while the layout is built; `(column, value)` of the row's
    /// page once it is paged.
    pub(crate) w: Vec<(usize, Fr)>,
    /// The page whose slots this row's weights are in (`t = γ^(F·page)`).
    pub(crate) page: usize,
    /// A lookup row (`q_lk`): its `a` is the table entry of the rounded value in the rows below.
    pub(crate) q_lk: bool,
    /// The function table id of a lookup row or a function-table row (0 elsewhere).
    pub(crate) lid: u64,
    /// A function-table row's entry: the rounded value and what it maps to.
    pub(crate) lz: i128,
    pub(crate) ly: i128,
    /// A `relu + g` lookup row: `p·n = 0` below it.
    pub(crate) q_lr: bool,
    /// The first row of a product's first factor's block: the product gate (`product.rs`).
    pub(crate) q_mul: bool,
    /// A matrix product's chain row: `matmul::CHAIN_A_FIRST`, `CHAIN_A`, `CHAIN_B_FIRST`,
    /// `CHAIN_B` (0 elsewhere).
    pub(crate) mm: u8,
}

impl RowSpec {
    pub(crate) fn new(src: Src) -> Self {
        RowSpec {
            src,
            checked: false,
            small: false,
            q_run: 1,
            q_x: 0,
            q_z: 0,
            q_blk: false,
            w: Vec::new(),
            page: 0,
            q_lk: false,
            lid: 0,
            lz: 0,
            ly: 0,
            q_lr: false,
            q_mul: false,
            mm: 0,
        }
    }
    pub(crate) fn add(&mut self, slot: usize, v: Fr) {
        // coefficients mostly arrive in slot order: the last entry first
        if let Some(e) = self.w.last_mut().filter(|e| e.0 == slot) {
            e.1 += v;
            return;
        }
        match self.w.iter_mut().find(|e| e.0 == slot) {
            Some(e) => e.1 += v,
            None => self.w.push((slot, v)),
        }
    }
}

/// The rows of a circuit: sources, selectors and weights (the same for every input).
pub(crate) struct Layout {
    pub(crate) rows: Vec<RowSpec>,
    pub(crate) packing: Packing,
    pub(crate) layers: Vec<CLayer>,
}

impl Layout {
    /// The layout of a model; `digest` goes in the statement-digest cell (any value will do
    /// where only the rows are counted).
    pub(crate) fn build(
        model: &QuantizedModel,
        shape: &ColumnShape,
        digest: Fr,
    ) -> Result<Self, CompileError> {
        let layers = circuit_layers(model);
        let slots = checked_slots(model, &layers, shape)?;
        let packing = Packing::new(&PublicLayout::of_model(model, *shape));
        let in_parts = shape.in_parts();
        let per = packing.inputs_per_word;
        let (j_in, n_in, stride) = (shape.input_words, model.input_len(), shape.stride());
        let (j0, k0) = (shape.in_word_offset(), shape.out_word_offset());
        let in_row = |i: usize, t: usize| ((i % per) * in_parts + t) * stride + j0 + i / per;
        // the public layout: layer m holds part m of every input word, the first layer the
        // output words too (before the input words with a hashed input, after a row for the
        // digest, so that the public words are the instance's first rows)
        let mut rows = Vec::new();
        for r in 0..shape.input_rows() {
            let (m, j) = (r / stride, r % stride);
            let mut row;
            if (j0..j0 + j_in).contains(&j) {
                let i = (j - j0) * per + m / in_parts;
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
            } else if m == 0 && (k0..k0 + shape.output_words).contains(&j) {
                row = RowSpec::new(Src::OutWord(j - k0));
                row.q_run = 2;
            } else {
                row = RowSpec::new(Src::Zero);
            }
            rows.push(row);
        }
        // the accumulators of the last layer read `c = 0` one stride below
        rows.extend((0..j0).map(|_| RowSpec::new(Src::Zero)));
        for _ in 0..j_in {
            let mut row = RowSpec::new(Src::Zero);
            row.q_z = 2;
            rows.push(row);
        }
        // rows that gates tie by rotation stay together, in the page of their own equation: the
        // public layout (page 0), and each output's block
        let mut units: Vec<(usize, usize, usize)> = vec![(0, rows.len(), 0)];
        let mut blocks: Vec<Vec<[usize; 4]>> = layers
            .iter()
            .map(|l| vec![[usize::MAX; 4]; l.outputs])
            .collect();
        // the rows of output `o` of layer `l`: `p`, `n` and `r` (and a lookup's entry row and
        // clamp overflows); returns where `p`, `n`, `r` and the entry start
        let push_block = |rows: &mut Vec<RowSpec>, l: usize, o: usize| {
            let layer = &layers[l];
            let out_bits = shape.parts(layer.limbs);
            let rem_bits = shape.parts((layer.shift / LIMB_BITS) as usize);
            let mut at = [usize::MAX; 4];
            // a lookup output: its entry first, the gate reads `p`, `n` and the clamp's
            // overflows below it
            if let Some((id, t)) = &layer.lookup {
                at[3] = rows.len();
                let mut row = RowSpec::new(Src::Block {
                    l,
                    o,
                    part: Part::Y,
                    t: 0,
                });
                row.q_lk = true;
                row.lid = *id;
                row.lz = clamp_bound(t);
                row.q_lr = t.plus_relu;
                rows.push(row);
            }
            let mut parts = vec![(Part::P, Some(0)), (Part::N, Some(1))];
            if layer.lookup.is_some() {
                parts.extend([(Part::OP, None), (Part::ON, None)]);
            }
            parts.push((Part::R, Some(2)));
            for (part, index) in parts {
                if let Some(i) = index {
                    at[i] = rows.len();
                }
                let bits = if part == Part::R {
                    &rem_bits
                } else {
                    &out_bits
                };
                for (t, &b) in bits.iter().enumerate() {
                    let mut row = RowSpec::new(Src::Block { l, o, part, t });
                    row.checked = true;
                    row.small = shape.small(b);
                    // a one-byte row of a two-byte layout: its low byte must be zero
                    row.q_z = if row.small { 2 } else { 0 };
                    row.q_blk = layer.relu && part == Part::P && t == 0;
                    // the product gate sits on the first row of the first factor's block and
                    // reads forward (rotations the other gates query too)
                    row.q_mul = first_operand(&layers, l) && part == Part::P && t == 0;
                    rows.push(row);
                }
            }
            at
        };
        let mut l = 0;
        while l < layers.len() {
            if let Some((0, dims)) = matmul_operand(&layers, l) {
                // a matrix product: per batch and `j` one unit in the page of the batch's first
                // output slot: `A`'s column, then `B`'s row, each value after its chain row
                let (lb, ly) = (l + 1, l + 2);
                for b in 0..dims.batch {
                    let base = slots.mat_base[ly][b];
                    for j in 0..dims.m {
                        let start = rows.len();
                        // a chain row, first of its chain or not
                        let chain = |first: bool, mm_first: u8| {
                            let mut row = RowSpec::new(Src::Chain { l: ly, b, j });
                            row.mm = if first { mm_first } else { mm_first + 1 };
                            row
                        };
                        for i in 0..dims.n {
                            rows.push(chain(i == 0, matmul::CHAIN_A_FIRST));
                            let o = dims.a(b, i, j);
                            blocks[l][o] = push_block(&mut rows, l, o);
                        }
                        for k in 0..dims.p {
                            let mut chain = chain(k == 0, matmul::CHAIN_B_FIRST);
                            // the sum gate moves the running sum here; on the first, `t·l = γ^σ`
                            chain.q_run = 0;
                            if k == 0 {
                                chain.add(base, Fr::one());
                            }
                            rows.push(chain);
                            let o = dims.b(b, j, k);
                            blocks[lb][o] = push_block(&mut rows, lb, o);
                        }
                        units.push((start, rows.len() - start, base / shape.weight_columns));
                    }
                }
                l += 2;
                continue;
            }
            // a product and its two operands: their blocks output by output, so that the
            // product gate reads both factors by rotation; one unit, in the first operand's page
            let group = if first_operand(&layers, l) { 3 } else { 1 };
            for o in 0..layers[l].outputs {
                let start = rows.len();
                for (m, starts) in blocks.iter_mut().enumerate().skip(l).take(group) {
                    starts[o] = push_block(&mut rows, m, o);
                }
                let page = slots.layer[l][o].0 / shape.weight_columns;
                units.push((start, rows.len() - start, page));
            }
            l += group;
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
            // a product's equation is its gate
            if layer.product {
                continue;
            }
            let d = pow2(layer.shift);
            let out_bits = shape.parts(layer.limbs);
            let rem_bits = shape.parts((layer.shift / LIMB_BITS) as usize);
            let srcs = input_sources(&layers, li, n_in);
            for o in 0..layer.outputs {
                let (slot, mu) = slots.layer[li][o];
                consts[slot] += mu * fr_from_i128(layer.bias[o]);
                for (j, w) in layer.row(o) {
                    let (v, i) = srcs[j];
                    let coef = mu * fr_from_i128(w as i128);
                    if v == 0 {
                        for t in 0..in_parts {
                            rows[in_row(i, t)].add(slot, coef * pow2(shape.row_bits() * t as u32));
                        }
                        continue;
                    }
                    // a layer's output: its table entry, its `p` (ReLU) or `p − n`
                    let src = &layers[v - 1];
                    let [p0, n0, _, y0] = blocks[v - 1][i];
                    if let Some((_, t)) = &src.lookup {
                        rows[y0].add(slot, coef);
                        if t.plus_relu {
                            let bits = shape.parts(src.limbs);
                            add_value(&mut rows, p0, &bits, slot, coef * pow2(t.grid_shift));
                        }
                    } else {
                        let bits = shape.parts(src.limbs);
                        add_value(&mut rows, p0, &bits, slot, coef);
                        if !src.relu {
                            add_value(&mut rows, n0, &bits, slot, -coef);
                        }
                    }
                }
                let [p0, n0, r0, _] = blocks[li][o];
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
            let [p0, n0, _, y0] = blocks[last][m];
            if let Some((_, t)) = &layers[last].lookup {
                rows[y0].add(slot, -coef);
                if t.plus_relu {
                    add_value(&mut rows, p0, &out_bits, slot, -coef * pow2(t.grid_shift));
                }
            } else {
                add_value(&mut rows, p0, &out_bits, slot, -coef);
                if !layers[last].relu {
                    add_value(&mut rows, n0, &out_bits, slot, coef);
                }
            }
            consts[slot] -= coef * fr_from_i128(shape.out_offset());
        }
        for (k, &slot) in slots.words.iter().enumerate() {
            rows[k0 + k].add(slot, Fr::one());
        }
        let mut rows = paginate(rows, &units, &consts, shape);
        for t in 0..TABLE_SIZE {
            let mut row = RowSpec::new(Src::Table(t));
            row.w.push((0, Fr::from(t as u64)));
            row.page = shape.pages - 1;
            rows.push(row);
        }
        // the function tables: (id, rounded value, entry) on fixed columns
        for (l, layer) in layers.iter().enumerate() {
            let Some((id, t)) = &layer.lookup else {
                continue;
            };
            if !owns_table(&layers, l) {
                continue;
            }
            for (i, &y) in t.table.iter().enumerate() {
                let mut row = RowSpec::new(Src::LTable { l, i });
                row.lid = *id;
                row.lz = t.z_min as i128 + i as i128;
                row.ly = y as i128;
                row.page = shape.pages - 1;
                rows.push(row);
            }
        }
        // the closing row: the sum must end at minus its weights (page 0's constants; the other
        // pages' are on their constant rows)
        let mut end = RowSpec::new(Src::Zero);
        end.q_run = 0;
        end.q_z = 1;
        end.page = shape.pages - 1;
        for (slot, v) in consts.iter().enumerate().take(shape.weight_columns) {
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
        digest_row.page = shape.pages - 1;
        digest_row.w.push((0, digest));
        rows.push(digest_row);
        Ok(Layout {
            rows,
            packing,
            layers,
        })
    }
}

/// Lays the rows out page by page (`F` slots a page). Each unit (rows tied by rotations) stays
/// whole in its home page and keeps the weights of that page's slots; for every other page a
/// row has weights in, a copy row in that page carries them. Pages after the first get a row
/// holding 1 for their constant terms (page 0's are the closing row's). With one page this
/// changes nothing. Weights become `(column, value)`.
fn paginate(
    rows: Vec<RowSpec>,
    units: &[(usize, usize, usize)],
    consts: &[Fr],
    shape: &ColumnShape,
) -> Vec<RowSpec> {
    let f = shape.weight_columns;
    let mut homes: Vec<Vec<RowSpec>> = vec![Vec::new(); shape.pages];
    let mut copies: Vec<Vec<RowSpec>> = vec![Vec::new(); shape.pages];
    // where each original row lands: (page, index among the page's home rows)
    let mut placed = vec![(0usize, 0usize); rows.len()];
    let mut rows: Vec<Option<RowSpec>> = rows.into_iter().map(Some).collect();
    for &(start, len, home) in units {
        for (r, slot) in rows.iter_mut().enumerate().skip(start).take(len) {
            let mut row = slot.take().expect("each row in one unit");
            let mut own = Vec::new();
            let mut others: Vec<(usize, Vec<(usize, Fr)>)> = Vec::new();
            for (slot, v) in row.w.drain(..) {
                let (page, col) = (slot / f, slot % f);
                if page == home {
                    own.push((col, v));
                } else {
                    match others.iter_mut().find(|o| o.0 == page) {
                        Some(o) => o.1.push((col, v)),
                        None => others.push((page, vec![(col, v)])),
                    }
                }
            }
            row.w = own;
            row.page = home;
            placed[r] = (home, homes[home].len());
            homes[home].push(row);
            for (page, w) in others {
                let mut copy = RowSpec::new(Src::Copy(r));
                copy.w = w;
                copy.page = page;
                copies[page].push(copy);
            }
        }
    }
    debug_assert!(rows.iter().all(Option::is_none), "every row is in a unit");
    let mut start_of = vec![0usize; shape.pages];
    let mut out: Vec<RowSpec> = Vec::new();
    for (page, (home, copy)) in homes.into_iter().zip(copies).enumerate() {
        start_of[page] = out.len();
        let empty = home.is_empty() && copy.is_empty();
        out.extend(home);
        out.extend(copy);
        let constants: Vec<(usize, Fr)> = if page == 0 {
            Vec::new()
        } else {
            consts[(page * f).min(consts.len())..((page + 1) * f).min(consts.len())]
                .iter()
                .enumerate()
                .filter(|(_, v)| !bool::from(v.is_zero()))
                .map(|(col, v)| (col, *v))
                .collect()
        };
        if !constants.is_empty() || empty {
            let mut row = RowSpec::new(if constants.is_empty() {
                Src::Zero
            } else {
                Src::One
            });
            row.w = constants;
            row.page = page;
            out.push(row);
        }
    }
    // copies name their source by its final index
    for row in out.iter_mut() {
        if let Src::Copy(r) = row.src {
            let (page, i) = placed[r];
            row.src = Src::Copy(start_of[page] + i);
        }
    }
    out
}

/// The clamp bound a lookup row holds in `lz`: the table's clamp `c`, or for a table without
/// one a bound just outside it (no value in the table can then claim to be clamped).
pub(crate) fn clamp_bound(t: &QLookup) -> i128 {
    match t.clamp {
        Some(c) => c as i128,
        None => {
            (t.z_min as i128)
                .abs()
                .max(t.z_min as i128 + t.table.len() as i128)
                + 1
        }
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

/// The slot assignment of a model, refusing a shape that is not the one the model derives.
fn checked_slots(
    model: &QuantizedModel,
    layers: &[CLayer],
    shape: &ColumnShape,
) -> Result<Slots, CompileError> {
    let (expected, slots) = ColumnShape::derive(
        model,
        layers,
        shape.row_bytes,
        shape.weight_columns,
        shape.hashed_input,
    )?;
    if expected != *shape {
        return Err(CompileError::Format {
            what: "settings",
            detail: "the circuit shape does not match the model".into(),
        });
    }
    Ok(slots)
}

/// Counts the rows of the layout [`ModelCircuit::synthesize`] uses without assigning anything.
/// With one page it counts from the shape alone, without the coefficients (a thousandth of the
/// time for mnist_mlp; synthesis asserts that the layout has exactly these rows); with pages
/// the copies depend on which slots each value feeds, so it builds the layout.
pub fn count_rows(model: &QuantizedModel, shape: ColumnShape) -> Result<RowCount, CompileError> {
    let used = if shape.paged() {
        Layout::build(model, &shape, Fr::zero())?.rows.len()
    } else {
        let layers = circuit_layers(model);
        checked_slots(model, &layers, &shape)?;
        rows_of(&layers, &shape)
    };
    let mut cs = ConstraintSystem::<Fr>::default();
    ModelConfig::configure(&mut cs, shape);
    Ok(RowCount {
        used: used.max(shape.sponge_end()),
        instances: shape.public_words(),
        reserved: cs.minimum_rows(),
    })
}

/// Rows of [`Layout::build`] with one page: the public layout and the zero rows below it, `p`,
/// `n` and `r` of every output (and the entry row of a lookup output), the byte table, the
/// function tables, the closing row and the digest row.
pub(crate) fn rows_of(layers: &[CLayer], shape: &ColumnShape) -> usize {
    let blocks: usize = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let value = shape.parts(l.limbs).len();
            let rem = shape.parts((l.shift / LIMB_BITS) as usize).len();
            // a lookup layer: per output an entry row and two overflows, and its table (held by
            // the first layer with it)
            let lookup = l.lookup.as_ref().map_or(0, |(_, t)| {
                l.outputs * (1 + 2 * value) + t.table.len() * usize::from(owns_table(layers, i))
            });
            l.outputs * (2 * value + rem) + lookup
        })
        .sum();
    // a chain row before each operand value of a matrix product
    let products: usize = (0..layers.len())
        .filter(|&l| matmul_operand(layers, l).is_some())
        .map(|l| layers[l].outputs)
        .sum();
    shape.input_rows()
        + shape.in_word_offset()
        + shape.input_words
        + blocks
        + products
        + TABLE_SIZE
        + 2
}

/// A column shape, its row count and the `k` it gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub shape: ColumnShape,
    pub rows: RowCount,
    pub k: u32,
}

/// Plans the circuit of a model: its shape (one weight column per slot, pages of
/// `max_weight_columns` slots beyond that), rows and `k`. Each weight column is one more
/// commitment for the verifier (about 7,000 gas and 300 bytes of EVM code); pages cost rows
/// (copies of the values that feed them) and a few fixed columns, whatever the width.
///
/// With `hashed_input` the input words are absorbed by a Poseidon sponge in the circuit and only
/// their digest is public (`poseidon.rs`): a verifier that stays small whatever the input size,
/// for about 200 rows per two input words.
pub fn plan(
    model: &QuantizedModel,
    max_weight_columns: usize,
    hashed_input: bool,
) -> Result<Plan, CompileError> {
    // two bytes per row halve the rows; one byte per row saves two advice columns (for the
    // prover two commitments, for the EVM verifier about 14,000 gas): taken when `k` allows
    let mut best: Option<Plan> = None;
    for row_bytes in [2, 1] {
        let mut cap = max_weight_columns.min(MAX_WEIGHT_COLUMNS);
        let mut p = plan_with(model, cap, row_bytes, hashed_input)?;
        // a paged circuit with fewer columns a page has more copy rows but less work per row for
        // the prover and a smaller verifier: take the fewest columns that keep `k`
        while p.shape.paged() && cap > MIN_PAGE_COLUMNS {
            cap /= 2;
            let q = plan_with(model, cap, row_bytes, hashed_input)?;
            if q.k > p.k {
                break;
            }
            p = q;
        }
        if best.as_ref().is_none_or(|b| p.k <= b.k) {
            best = Some(p);
        }
    }
    Ok(best.expect("two plans"))
}

/// The fewest weight columns a page the planner tries.
pub const MIN_PAGE_COLUMNS: usize = 4;

/// Plans the circuit with a given number of bytes per checked row.
pub fn plan_with(
    model: &QuantizedModel,
    max_weight_columns: usize,
    row_bytes: usize,
    hashed_input: bool,
) -> Result<Plan, CompileError> {
    let shape = ColumnShape::for_model(model, row_bytes, max_weight_columns, hashed_input)?;
    let rows = count_rows(model, shape)?;
    let k = rows.k();
    Ok(Plan { shape, rows, k })
}
