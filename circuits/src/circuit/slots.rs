//! Dense layers as the circuit sees them, and their equations packed into Freivalds slots (the
//! integer bounds that make the packing carry-free are argued in the module documentation above).

use super::*;

/// A dense layer as the circuit sees it: the stand-alone ReLU becomes an identity layer with
/// weight `2^8` and the rounding half is folded into the bias. The first layer reads the input
/// codes (the quantizer folded their offset and step into its weights).
pub(crate) struct CLayer {
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
    pub(crate) weights: Matrix<i64>,
    pub(crate) bias: Vec<i128>,
    pub(crate) shift: u32,
    pub(crate) relu: bool,
    /// The layer values read, concatenated: 0 the input codes, `m + 1` layer `m`'s output.
    pub(crate) sources: Vec<usize>,
    /// Bytes of each part `p`, `n` of an output (the same for every ReLU layer, and for
    /// every lookup layer).
    pub(crate) limbs: usize,
    /// The function table the rounded value is looked up in, and its id (from 1).
    pub(crate) lookup: Option<(u64, QLookup)>,
    /// A product layer (`product.rs`): output `o` is `round(x_o·x'_o / 2^shift)` of its two
    /// operand layers, checked by the product gate; it has no equation of its own.
    pub(crate) product: bool,
    /// A matrix product (`matmul.rs`): `y[b,i,k] = round(Σ_j A[b,i,j]·B[b,j,k] / 2^shift)` of
    /// its two operand layers (`A` in `(b, i, j)` order, `B` repeated for each group of rows);
    /// its equations are packed by the group, its products checked by the matmul gates.
    pub(crate) matmul: Option<MatDims>,
    /// A matrix product's output at each position `(b·n + i)·p + k` (empty: the position).
    pub(crate) mat_out: Vec<usize>,
}

impl CLayer {
    /// The output of a matrix product at `y[b,i,k]`.
    pub(crate) fn mat_at(&self, d: &MatDims, b: usize, i: usize, k: usize) -> usize {
        let pos = d.y(b, i, k);
        self.mat_out.get(pos).copied().unwrap_or(pos)
    }
}

/// The dimensions of a matrix product and how its rows are grouped: the equations of the
/// `group` rows `i` of one group and one column `k` share a slot, `matmul_bits` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MatDims {
    pub(crate) batch: usize,
    pub(crate) n: usize,
    pub(crate) m: usize,
    pub(crate) p: usize,
    /// Rows of `A` a group holds (the last may hold fewer).
    pub(crate) group: usize,
    pub(crate) groups: usize,
}

impl MatDims {
    /// Index of `A[b,i,j]` among the first operand's outputs.
    pub(crate) fn a(&self, b: usize, i: usize, j: usize) -> usize {
        (b * self.n + i) * self.m + j
    }
    /// Index of `B[b,j,k]`'s copy for group `g` among the second operand's outputs.
    pub(crate) fn b(&self, b: usize, g: usize, j: usize, k: usize) -> usize {
        ((b * self.groups + g) * self.m + j) * self.p + k
    }
    /// `(b, g, j, k)` of an output of the second operand.
    pub(crate) fn b_of(&self, o: usize) -> (usize, usize, usize, usize) {
        let (k, rest) = (o % self.p, o / self.p);
        let (j, rest) = (rest % self.m, rest / self.m);
        (rest / self.groups, rest % self.groups, j, k)
    }
    /// Index of output `y[b,i,k]`.
    pub(crate) fn y(&self, b: usize, i: usize, k: usize) -> usize {
        (b * self.n + i) * self.p + k
    }
    /// The rows `i` of group `g`.
    pub(crate) fn rows(&self, g: usize) -> std::ops::Range<usize> {
        g * self.group..((g + 1) * self.group).min(self.n)
    }
}

/// Whether layer `l` is the first (`Some(0)`) or second (`Some(1)`) operand of a matrix
/// product, and its dimensions.
pub(crate) fn matmul_operand(layers: &[CLayer], l: usize) -> Option<(usize, MatDims)> {
    (1..=2).find_map(|d| {
        layers
            .get(l + d)
            .and_then(|m| m.matmul)
            .map(|dims| (2 - d, dims))
    })
}

/// The byte count of every matrix product's operand parts (0 without matrix products).
pub(crate) fn matmul_limbs(layers: &[CLayer]) -> usize {
    (0..layers.len())
        .filter(|&l| matmul_operand(layers, l).is_some())
        .map(|l| layers[l].limbs)
        .max()
        .unwrap_or(0)
}

/// The bits between packed matrix-product equations (0 without): the width of the widest.
pub(crate) fn matmul_bits(layers: &[CLayer]) -> usize {
    (0..layers.len())
        .map(|l| matmul_width(layers, l))
        .max()
        .unwrap_or(0) as usize
}

/// The width of a matrix product's equations `e = Σ_j A_ij·B_jk + d/2 − d·(p − n) − r`: the
/// bound `m·(2^(8·limbs) − 1)² + d/2 + d·(2^(8·out_limbs) − 1) + d` of `|e|` over every witness
/// the range checks let through, plus a sign bit (0 for other layers; above [`SLOT_BITS`]
/// when it overflows).
fn matmul_width(layers: &[CLayer], l: usize) -> u32 {
    let Some(dims) = layers[l].matmul else {
        return 0;
    };
    let x = (1i128 << (LIMB_BITS * layers[l - 2].limbs as u32)) - 1;
    let d = 1i128 << layers[l].shift;
    let out = (1i128 << (LIMB_BITS * layers[l].limbs as u32)) - 1;
    let bound = x
        .checked_mul(x)
        .and_then(|v| v.checked_mul(dims.m as i128))
        .and_then(|v| v.checked_add(d / 2))
        .and_then(|v| v.checked_add(d.checked_mul(out)?))
        .and_then(|v| v.checked_add(d));
    bound.map_or(SLOT_BITS + 1, |b| bits_for(b) + 1)
}

impl CLayer {
    /// The nonzero weights `(input, weight)` of output `o`.
    pub(crate) fn row(&self, o: usize) -> impl Iterator<Item = (usize, i64)> + '_ {
        self.weights.row(o, self.inputs)
    }
    /// The largest `|x|` a witness passing the checks can give an output: its parts' range, or
    /// the largest table entry.
    pub(crate) fn out_bound(&self) -> i128 {
        let parts = (1i128 << (LIMB_BITS * self.limbs as u32)) - 1;
        match &self.lookup {
            // a `relu + g` output adds `p·2^grid_shift`
            Some((_, t)) if t.plus_relu => t.max_abs() + (parts << t.grid_shift),
            Some((_, t)) => t.max_abs(),
            None => parts,
        }
    }
}

/// The byte count of every lookup layer's parts: the largest any of them needs (0 without
/// lookups).
pub(crate) fn lookup_limbs(layers: &[CLayer]) -> usize {
    layers
        .iter()
        .filter(|l| l.lookup.is_some())
        .map(|l| l.limbs)
        .max()
        .unwrap_or(0)
}

/// The byte count of the parts of every product and operand layer: the largest any of them
/// needs (0 without products).
pub(crate) fn product_limbs(layers: &[CLayer]) -> usize {
    (0..layers.len())
        .filter(|&l| in_product(layers, l))
        .map(|l| layers[l].limbs)
        .max()
        .unwrap_or(0)
}

/// Whether layer `l` is a product's first operand (the product is two layers on): where the
/// three layers' blocks, slots and gate start.
pub(crate) fn first_operand(layers: &[CLayer], l: usize) -> bool {
    layers.get(l + 2).is_some_and(|p| p.product)
}

/// Whether layer `l` is a product or one of its two operands.
pub(crate) fn in_product(layers: &[CLayer], l: usize) -> bool {
    (l..l + 3).any(|m| layers.get(m).is_some_and(|p| p.product))
}

/// The bytes of a product's remainder (its shift; the same for every product), 0 without.
pub(crate) fn product_rem_limbs(layers: &[CLayer]) -> usize {
    layers
        .iter()
        .filter(|l| l.product)
        .map(|l| (l.shift / LIMB_BITS) as usize)
        .max()
        .unwrap_or(0)
}

/// The byte count of every ReLU layer's parts: the largest any of them needs.
pub(crate) fn relu_limbs(layers: &[CLayer]) -> usize {
    layers
        .iter()
        .filter(|l| l.relu)
        .map(|l| l.limbs)
        .max()
        .unwrap_or(1)
}

pub(crate) fn circuit_layers(model: &QuantizedModel) -> Vec<CLayer> {
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
                lookup,
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
                sources: Vec::new(),
                limbs: limbs_for(*out_bits),
                lookup: lookup.clone().map(|t| (0, t)),
                product: false,
                matmul: None,
                mat_out: Vec::new(),
            },
            QLayer::Relu { len, out_bits, .. } => {
                let weights = Matrix::Sparse {
                    nonzeros: (0..*len).map(|j| vec![(j, 1i64 << LIMB_BITS)]).collect(),
                };
                CLayer {
                    inputs: *len,
                    outputs: *len,
                    weights,
                    bias: vec![1i128 << (LIMB_BITS - 1); *len],
                    shift: LIMB_BITS,
                    relu: true,
                    sources: Vec::new(),
                    limbs: limbs_for(*out_bits),
                    lookup: None,
                    product: false,
                    matmul: None,
                    mat_out: Vec::new(),
                }
            }
            QLayer::Product {
                outputs,
                shift,
                out_bits,
                ..
            } => CLayer {
                inputs: 2 * outputs,
                outputs: *outputs,
                weights: Matrix::Sparse {
                    nonzeros: vec![Vec::new(); *outputs],
                },
                // the rounding half, as the gate adds it
                bias: vec![1i128 << (shift - 1); *outputs],
                shift: *shift,
                relu: false,
                sources: Vec::new(),
                limbs: limbs_for(*out_bits),
                lookup: None,
                product: true,
                matmul: None,
                mat_out: Vec::new(),
            },
            QLayer::MatMul {
                dims: [batch, n, m, p],
                order,
                shift,
                out_bits,
                ..
            } => CLayer {
                inputs: batch * m * (n + p),
                outputs: batch * n * p,
                weights: Matrix::Sparse {
                    nonzeros: vec![Vec::new(); batch * n * p],
                },
                bias: vec![1i128 << (shift - 1); batch * n * p],
                shift: *shift,
                relu: false,
                sources: Vec::new(),
                limbs: limbs_for(*out_bits),
                lookup: None,
                product: false,
                // the grouping is set below, once the operands' byte counts are known
                matmul: Some(MatDims {
                    batch: *batch,
                    n: *n,
                    m: *m,
                    p: *p,
                    group: *n,
                    groups: 1,
                }),
                mat_out: {
                    let mut at = vec![0; order.len()];
                    for (o, &pos) in order.iter().enumerate() {
                        at[pos] = o;
                    }
                    at
                },
            },
        })
        .collect();
    // a stand-alone ReLU splits its input into p and n: n is as large as the input's negative
    // side (the previous layer's pre-activation bound; the first layer is always dense)
    let mut prev_bits = model.input_bits;
    for (l, q) in out.iter_mut().zip(&model.layers) {
        let bits = match q {
            QLayer::Dense {
                lookup: Some(t),
                out_bits,
                ..
            } => {
                // a `relu + g` output also adds `relu(z)·2^grid_shift`, below 2^(out_bits + shift)
                let relu = if t.plus_relu {
                    out_bits + t.grid_shift
                } else {
                    0
                };
                bits_for(t.max_abs()).max(relu) + 1
            }
            QLayer::Dense { out_bits, .. }
            | QLayer::Product { out_bits, .. }
            | QLayer::MatMul { out_bits, .. } => *out_bits,
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
    // the product gate reads both factors and the product by rotation: one byte count for all
    let product = product_limbs(&out);
    for l in 0..out.len() {
        if in_product(&out, l) {
            out[l].limbs = product;
        }
    }
    // the matmul gates read the operands by rotation: one byte count for all, at least two, so
    // that the first row of a value (where the gates use `c`) is never a one-byte row (whose
    // zero low byte also zeroes its `c`)
    let operand = matmul_limbs(&out).max(2);
    for l in 0..out.len() {
        if matmul_operand(&out, l).is_some() {
            out[l].limbs = operand;
        }
    }
    // rows of `A` a slot packs: as many equations as fit, in balanced groups; the second
    // operand repeats `B` for each group (each copy is read next to that group's packed rows)
    let bits = matmul_bits(&out).max(1);
    for l in 0..out.len() {
        let Some(mut dims) = out[l].matmul else {
            continue;
        };
        let fit = (SLOT_BITS as usize / bits).clamp(1, dims.n);
        dims.groups = dims.n.div_ceil(fit);
        dims.group = dims.n.div_ceil(dims.groups);
        out[l].matmul = Some(dims);
        let b = &mut out[l - 1];
        let rows: Vec<Vec<(usize, i64)>> = (0..b.outputs).map(|o| b.row(o).collect()).collect();
        b.weights = Matrix::Sparse {
            nonzeros: (0..dims.batch * dims.groups * dims.m * dims.p)
                .map(|o| {
                    let (bt, _, j, k) = dims.b_of(o);
                    rows[(bt * dims.m + j) * dims.p + k].clone()
                })
                .collect(),
        };
        b.outputs = dims.batch * dims.groups * dims.m * dims.p;
        b.bias = vec![0; b.outputs];
    }
    // one id per distinct table: layers with the same function table (LayerNorms' rsqrt
    // segments, softmax's exp, ...) share its rows
    let lookup = lookup_limbs(&out);
    let mut tables: Vec<QLookup> = Vec::new();
    for l in out.iter_mut() {
        if let Some(t) = l.lookup.as_mut() {
            l.limbs = lookup;
            t.0 = match tables.iter().position(|u| *u == t.1) {
                Some(i) => i as u64 + 1,
                None => {
                    tables.push(t.1.clone());
                    tables.len() as u64
                }
            };
        }
    }
    for (i, (l, q)) in out.iter_mut().zip(&model.layers).enumerate() {
        l.sources = q.sources(i);
    }
    out
}

/// Whether layer `l` is the first with its function table (which the layout then holds).
pub(crate) fn owns_table(layers: &[CLayer], l: usize) -> bool {
    match &layers[l].lookup {
        Some((id, _)) => !layers[..l]
            .iter()
            .any(|m| m.lookup.as_ref().is_some_and(|u| u.0 == *id)),
        None => false,
    }
}

/// Where input `j` of a layer comes from: `(layer value, index in it)` (0: the input codes).
pub(crate) fn input_sources(layers: &[CLayer], li: usize, n_in: usize) -> Vec<(usize, usize)> {
    layers[li]
        .sources
        .iter()
        .flat_map(|&v| {
            let width = if v == 0 { n_in } else { layers[v - 1].outputs };
            (0..width).map(move |i| (v, i))
        })
        .collect()
}

/// The largest `|x|` the checks allow for the values of a layer value: a packed input code, or
/// a layer's `p` (ReLU), `p − n` (identity) or table entry (lookup).
pub(crate) fn value_bound(layers: &[CLayer], v: usize, shape: &ColumnShape) -> i128 {
    if v == 0 {
        (1i128 << shape.in_slot()) - 1
    } else {
        layers[v - 1].out_bound()
    }
}

/// The order a layer's equations are packed into slots: by the first input each reads (stable,
/// so a dense layer keeps its order). The outputs of a convolution that read neighbouring pixels
/// then share slots and pages, whatever the channel order, so a value feeds few pages and needs
/// few copy rows (cifar_cnn: channel-major order spread each pixel's consumers over ~30 pages).
pub(crate) fn packing_order(l: &CLayer) -> Vec<usize> {
    let mut order: Vec<usize> = (0..l.outputs).collect();
    let first: Vec<usize> = (0..l.outputs)
        .map(|o| l.row(o).next().map_or(usize::MAX, |e| e.0))
        .collect();
    order.sort_by_key(|&o| first[o]);
    order
}

/// Which Freivalds slot, at which bit offset, checks each equation.
#[derive(Clone, Debug)]
pub(crate) struct Slots {
    pub(crate) count: usize,
    /// Per layer and output: the slot and `2^offset`.
    pub(crate) layer: Vec<Vec<(usize, Fr)>>,
    /// The slot of each output word (one each: a word fills a field element).
    pub(crate) words: Vec<usize>,
    /// The slot and `2^offset` of `Σ (unused input slots) = 0`, if the last word has any.
    pub(crate) padding: Option<(usize, Fr)>,
}

impl Slots {
    /// Packs equations greedily into slots of at most [`SLOT_BITS`] bits. An equation's width
    /// is the bound of `|e_o|` over every witness the range checks let through (not only
    /// honest ones), plus a sign bit.
    pub(crate) fn assign(
        layers: &[CLayer],
        shape: &ColumnShape,
        n_in: usize,
        output_words: usize,
        padding_rows: usize,
    ) -> Result<Self, CompileError> {
        // the width of every equation (none for a product: its gate checks it)
        let mut widths: Vec<Vec<u32>> = Vec::with_capacity(layers.len());
        for (li, l) in layers.iter().enumerate() {
            if l.product || l.matmul.is_some() {
                widths.push(Vec::new());
                continue;
            }
            let x: Vec<i128> = l
                .sources
                .iter()
                .flat_map(|&v| {
                    let width = if v == 0 { n_in } else { layers[v - 1].outputs };
                    std::iter::repeat_n(value_bound(layers, v, shape), width)
                })
                .collect();
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
            let mut w = Vec::with_capacity(l.outputs);
            for o in 0..l.outputs {
                let mut bound = l.bias[o].checked_abs().ok_or_else(overflow)?;
                bound = bound.checked_add(own).ok_or_else(overflow)?;
                for (j, wt) in l.row(o) {
                    let t = (wt as i128).abs().checked_mul(x[j]).ok_or_else(overflow)?;
                    bound = bound.checked_add(t).ok_or_else(overflow)?;
                }
                let bits = bits_for(bound) + 1;
                if bits > SLOT_BITS {
                    return Err(overflow());
                }
                w.push(bits);
            }
            widths.push(w);
        }
        // greedy packing, layer by layer in each layer's packing order; a product's two operands
        // output by output, so that both factors' equations share a page with their unit (the
        // second factor needs no copy row there)
        let (mut count, mut used) = (0usize, SLOT_BITS);
        let mut layer: Vec<Vec<(usize, Fr)>> = layers
            .iter()
            .map(|l| vec![(0, Fr::zero()); l.outputs])
            .collect();
        let mut alloc = |bits: u32| {
            if used + bits > SLOT_BITS {
                count += 1;
                used = 0;
            }
            let at = (count - 1, pow2(used));
            used += bits;
            at
        };
        let mut li = 0;
        while li < layers.len() {
            let l = &layers[li];
            if l.product {
                // its block sits in its first operand's unit
                layer[li] = layer[li - 2].clone();
                li += 1;
                continue;
            }
            if let Some((0, dims)) = matmul_operand(layers, li) {
                // a matrix product: per group of rows and column of `B`, the unit's operand
                // equations (`B` for every `k`, `A` for the group's rows), then per column `k`
                // the group's packed equations, `matmul_bits` apart in one slot
                let bits = matmul_bits(layers) as u32;
                let (lb, ly) = (li + 1, li + 2);
                for b in 0..dims.batch {
                    for g in 0..dims.groups {
                        for j in 0..dims.m {
                            for k in 0..dims.p {
                                let o = dims.b(b, g, j, k);
                                layer[lb][o] = alloc(widths[lb][o]);
                            }
                            for i in dims.rows(g) {
                                let o = dims.a(b, i, j);
                                layer[li][o] = alloc(widths[li][o]);
                            }
                        }
                        let rows = dims.rows(g);
                        let span = bits * rows.len() as u32;
                        if span > SLOT_BITS {
                            return Err(CompileError::Quantization {
                                layer: ly,
                                detail: "a matrix product's equation does not fit in a slot".into(),
                            });
                        }
                        for k in 0..dims.p {
                            let (slot, mu) = alloc(span);
                            for (t, i) in rows.clone().enumerate() {
                                let o = layers[ly].mat_at(&dims, b, i, k);
                                layer[ly][o] = (slot, mu * pow2(bits * t as u32));
                            }
                        }
                    }
                }
                li += 3;
                continue;
            }
            let pair = first_operand(layers, li);
            for o in packing_order(l) {
                layer[li][o] = alloc(widths[li][o]);
                if pair {
                    layer[li + 1][o] = alloc(widths[li + 1][o]);
                }
            }
            li += if pair { 2 } else { 1 };
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
