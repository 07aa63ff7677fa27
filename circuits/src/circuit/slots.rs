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
    /// its two operand layers (`A` in `(b, i, j)` order, `B` in `(b, j, k)` order); one slot
    /// an equation, its products checked by the matmul chains.
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

/// The dimensions of a matrix product: `batch` products of `n × m` and `m × p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MatDims {
    pub(crate) batch: usize,
    pub(crate) n: usize,
    pub(crate) m: usize,
    pub(crate) p: usize,
}

impl MatDims {
    /// Index of `A[b,i,j]` among the first operand's outputs.
    pub(crate) fn a(&self, b: usize, i: usize, j: usize) -> usize {
        (b * self.n + i) * self.m + j
    }
    /// Index of `B[b,j,k]` among the second operand's outputs.
    pub(crate) fn b(&self, b: usize, j: usize, k: usize) -> usize {
        (b * self.m + j) * self.p + k
    }
    /// Index of output `y[b,i,k]`.
    pub(crate) fn y(&self, b: usize, i: usize, k: usize) -> usize {
        (b * self.n + i) * self.p + k
    }
    /// Slots a batch's outputs span: row `i` from `(n − 1 − i)·stride`, `p` of them.
    pub(crate) fn span(&self, stride: usize) -> usize {
        (self.n - 1) * stride + self.p
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

/// `S`, the slots between the rows of a matrix product's outputs: the smallest power of two
/// at least every matrix product's `p` (0 without matrix products).
pub(crate) fn matmul_stride(layers: &[CLayer]) -> usize {
    layers
        .iter()
        .filter_map(|l| l.matmul)
        .map(|d| d.p.next_power_of_two())
        .max()
        .unwrap_or(0)
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
                matmul: Some(MatDims {
                    batch: *batch,
                    n: *n,
                    m: *m,
                    p: *p,
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
    // the matmul gates read the operands by rotation: one byte count for all
    let operand = matmul_limbs(&out);
    for l in 0..out.len() {
        if matmul_operand(&out, l).is_some() {
            out[l].limbs = operand;
        }
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
    /// Per matrix-product layer and batch: the batch's first output slot `σ` (`matmul.rs`).
    pub(crate) mat_base: Vec<Vec<usize>>,
}

impl Slots {
    /// Packs equations greedily into slots of at most [`SLOT_BITS`] bits. An equation's width
    /// is the bound of `|e_o|` over every witness the range checks let through (not only
    /// honest ones), plus a sign bit. A matrix product's outputs get a slot each, `S` apart by
    /// row (`matmul.rs`); with pages of `page` slots, a batch whose operands' equations and
    /// first output slot fit in one page but not in what is left of the current one starts a
    /// new page (its units live in that page, and equations outside it cost copy rows).
    pub(crate) fn assign(
        layers: &[CLayer],
        shape: &ColumnShape,
        n_in: usize,
        output_words: usize,
        padding_rows: usize,
        page: Option<usize>,
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
        let mut mat_base: Vec<Vec<usize>> = vec![Vec::new(); layers.len()];
        // greedy packing from (slots opened, bits used in the last)
        let pack = |count: &mut usize, used: &mut u32, bits: u32| {
            if *used + bits > SLOT_BITS {
                *count += 1;
                *used = 0;
            }
            let at = (*count - 1, pow2(*used));
            *used += bits;
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
                // a matrix product, per batch: the operands' equations (per `j`, `A`'s column
                // and `B`'s row, as the unit lays them out), then the outputs from a fresh slot
                let (lb, ly) = (li + 1, li + 2);
                if matmul_width(layers, ly) > SLOT_BITS {
                    return Err(CompileError::Quantization {
                        layer: ly,
                        detail: "a matrix product's equation does not fit in a slot".into(),
                    });
                }
                let stride = matmul_stride(layers);
                let operands = |b: usize| {
                    (0..dims.m).flat_map(move |j| {
                        (0..dims.n)
                            .map(move |i| (li, dims.a(b, i, j)))
                            .chain((0..dims.p).map(move |k| (lb, dims.b(b, j, k))))
                    })
                };
                for b in 0..dims.batch {
                    if let Some(f) = page {
                        // where the batch's first output slot lands from here and from the
                        // next page's start
                        let lands = |mut count: usize, mut used: u32| {
                            let first = if used + widths[li][dims.a(b, 0, 0)] > SLOT_BITS {
                                count
                            } else {
                                count - 1
                            };
                            for (m, o) in operands(b) {
                                pack(&mut count, &mut used, widths[m][o]);
                            }
                            (first / f, count / f)
                        };
                        let (from, to) = lands(count, used);
                        let next = count.div_ceil(f) * f;
                        if from != to && {
                            let (f2, t2) = lands(next, SLOT_BITS);
                            f2 == t2
                        } {
                            count = next;
                            used = SLOT_BITS;
                        }
                    }
                    for (m, o) in operands(b) {
                        layer[m][o] = pack(&mut count, &mut used, widths[m][o]);
                    }
                    let base = count;
                    count += dims.span(stride);
                    used = SLOT_BITS;
                    for i in 0..dims.n {
                        for k in 0..dims.p {
                            let o = layers[ly].mat_at(&dims, b, i, k);
                            layer[ly][o] = (base + (dims.n - 1 - i) * stride + k, Fr::one());
                        }
                    }
                    mat_base[ly].push(base);
                }
                li += 3;
                continue;
            }
            let mut alloc = |bits: u32| pack(&mut count, &mut used, bits);
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
            mat_base,
        })
    }
}
