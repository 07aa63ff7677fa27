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
            QLayer::Dense { out_bits, .. } | QLayer::Product { out_bits, .. } => *out_bits,
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
    let lookup = lookup_limbs(&out);
    let mut id = 0;
    for l in out.iter_mut() {
        if let Some(t) = l.lookup.as_mut() {
            l.limbs = lookup;
            id += 1;
            t.0 = id;
        }
    }
    for (i, (l, q)) in out.iter_mut().zip(&model.layers).enumerate() {
        l.sources = q.sources(i);
    }
    out
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
            if l.product {
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
