//! The column shape of a circuit (its halo2 `Params`), and how values are cut into checked rows.

use super::*;

/// The circuit's `Params`: everything the gates depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnShape {
    /// `F`: fixed weight columns: one per Freivalds slot of a page.
    pub weight_columns: usize,
    /// `P`: pages of `F` slots. With more than one page, the circuit has a page-power column
    /// `t`, copy constraints on `a` and a constants column (see the module documentation).
    pub pages: usize,
    /// Bytes of each part `p`, `n` of a model output (and of an output's public slot).
    pub out_limbs: usize,
    /// Bytes of each part `p`, `n` of every ReLU layer's output (the rounding gate's layout).
    pub relu_limbs: usize,
    /// Bytes of a packed model input.
    pub in_limbs: usize,
    /// Bytes per checked row: 2 (columns `b` and `g` hold the high byte and its inverse) or 1.
    pub row_bytes: usize,
    /// `J`: input words.
    pub input_words: usize,
    /// Output words (rows of the public layout's first layer after the input words).
    pub output_words: usize,
    /// Parts per input word: the public layout has `input_layers` layers of
    /// `input_words + output_words` rows.
    pub input_layers: usize,
    /// Bytes of each part `p`, `n` of the rounded value a table lookup reads (the same for
    /// every lookup layer: the lookup gate's layout); 0 when the model has no lookup (and then
    /// not written, so the shapes of models without lookups read as before).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lookup_limbs: usize,
    /// The input words are absorbed by a Poseidon sponge in the circuit (`poseidon.rs`) and
    /// only the digest is public; `false` (public input words) is not written, so the shapes
    /// of circuits with public inputs read as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hashed_input: bool,
    /// Bytes of each part `p`, `n` of every product and of its two factors (the product gate's
    /// layout, `product.rs`); 0 when the model has no product (and then not written).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub product_limbs: usize,
    /// Bytes of a product's remainder: its divisor is `2^(8·product_rem_limbs)`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub product_rem_limbs: usize,
    /// Bytes of each part `p`, `n` of every matrix product's operand values (the matrix-product
    /// gates' layout, `matmul.rs`); 0 without matrix products (and then not written).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub matmul_limbs: usize,
    /// `S`: slots between the rows of a matrix product's outputs, a power of two at least every
    /// matrix product's column count (the chain gate's `γ^S`, `matmul.rs`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub matmul_stride: usize,
}

impl Default for ColumnShape {
    fn default() -> Self {
        ColumnShape {
            weight_columns: 1,
            pages: 1,
            out_limbs: 2,
            relu_limbs: 2,
            in_limbs: 2,
            row_bytes: 2,
            input_words: 1,
            output_words: 1,
            input_layers: 1,
            lookup_limbs: 0,
            hashed_input: false,
            product_limbs: 0,
            product_rem_limbs: 0,
            matmul_limbs: 0,
            matmul_stride: 0,
        }
    }
}

fn is_zero(limbs: &usize) -> bool {
    *limbs == 0
}

/// `2^bits` as a field element.
pub(crate) fn pow2(bits: u32) -> Fr {
    let mut r = Fr::one();
    let mut left = bits;
    while left > 0 {
        let step = left.min(63);
        r *= Fr::from(1u64 << step);
        left -= step;
    }
    r
}

pub(crate) fn limbs_for(bits: u32) -> usize {
    (bits.div_ceil(LIMB_BITS) as usize).max(1)
}

pub(crate) fn bits_for(max: i128) -> u32 {
    (128 - max.unsigned_abs().leading_zeros()).max(1)
}

/// Splits `v` into parts of the given sizes; the top part keeps whatever is left, so a value
/// too large for its parts shows up as a top part out of range.
pub(crate) fn split(v: i128, bits: &[u32]) -> Vec<i128> {
    let mut out = Vec::with_capacity(bits.len());
    let mut off = 0;
    for (t, &b) in bits.iter().enumerate() {
        let part = v >> off;
        out.push(if t + 1 == bits.len() {
            part
        } else {
            part & ((1i128 << b) - 1)
        });
        off += b;
    }
    out
}

impl ColumnShape {
    /// `a, c, s, h`, `b, g` with two bytes per row, the page powers `t` with pages, and the
    /// sponge's state and message columns with a hashed input.
    pub fn advice_columns(&self) -> usize {
        2 + 2 * self.row_bytes + usize::from(self.paged()) + 4 * usize::from(self.hashed_input)
    }
    /// Bits of one full checked row.
    pub(crate) fn row_bits(&self) -> u32 {
        LIMB_BITS * self.row_bytes as u32
    }
    /// Bits of each checked row of a value of `limbs` bytes: full rows, and with two bytes per
    /// row a last 8-bit row if the byte count is odd.
    pub(crate) fn parts(&self, limbs: usize) -> Vec<u32> {
        let mut v = vec![self.row_bits(); limbs / self.row_bytes];
        if limbs % self.row_bytes == 1 {
            v.push(LIMB_BITS);
        }
        v
    }
    /// A two-byte row holding one byte (`a = 256·v`, `b = v`).
    pub(crate) fn small(&self, bits: u32) -> bool {
        self.row_bytes == 2 && bits == LIMB_BITS
    }
    /// What row `t` of a value contributes per unit of its `a`.
    pub(crate) fn factor(&self, bits: &[u32], t: usize) -> Fr {
        let f = pow2(bits[..t].iter().sum());
        if self.small(bits[t]) {
            static INV_256: std::sync::OnceLock<Fr> = std::sync::OnceLock::new();
            f * INV_256.get_or_init(|| Fr::from(256).invert().unwrap())
        } else {
            f
        }
    }
    /// Fixed columns: weights and six selectors; with pages, the page selector and the
    /// constants column; with lookups, their two selectors, table id and the table's two
    /// columns; with a hashed input, the sponge's round constants and four selectors; with
    /// products, their selector; with matrix products, their two selectors.
    pub fn fixed_columns(&self) -> usize {
        self.weight_columns
            + 6
            + 2 * usize::from(self.paged())
            + 5 * usize::from(self.lookups())
            + 5 * usize::from(self.hashed_input)
            + usize::from(self.products())
            + 2 * usize::from(self.matmuls())
    }
    /// Whether the model has matrix products of two activations (their gates).
    pub fn matmuls(&self) -> bool {
        self.matmul_limbs > 0
    }
    pub(crate) fn matmul_parts(&self) -> Vec<u32> {
        self.parts(self.matmul_limbs)
    }
    /// The model has table lookups (non-linear functions).
    pub fn lookups(&self) -> bool {
        self.lookup_limbs > 0
    }
    pub(crate) fn lookup_parts(&self) -> Vec<u32> {
        self.parts(self.lookup_limbs)
    }
    /// Whether the model has products (the product gate and its selector).
    pub fn products(&self) -> bool {
        self.product_limbs > 0
    }
    /// More than one page of slots.
    pub fn paged(&self) -> bool {
        self.pages > 1
    }
    pub(crate) fn relu_parts(&self) -> Vec<u32> {
        self.parts(self.relu_limbs)
    }
    /// Rows of one packed input (full rows each).
    pub(crate) fn in_parts(&self) -> usize {
        self.in_limbs.div_ceil(self.row_bytes)
    }
    pub(crate) fn in_slot(&self) -> u32 {
        self.row_bits() * self.in_parts() as u32
    }
    pub(crate) fn out_slot(&self) -> u32 {
        LIMB_BITS * self.out_limbs as u32 + 1
    }
    pub(crate) fn out_offset(&self) -> i128 {
        1i128 << (LIMB_BITS * self.out_limbs as u32)
    }
    /// `S`: rows of one layer of the public layout (its stride): the input words and the
    /// output words, and with a hashed input one more row first (the digest's instance row).
    pub(crate) fn stride(&self) -> usize {
        self.input_words + self.output_words + usize::from(self.hashed_input)
    }
    /// Column of the first input word in a layer of the public layout: 0, or after the
    /// digest's row and the output words with a hashed input.
    pub(crate) fn in_word_offset(&self) -> usize {
        if self.hashed_input {
            1 + self.output_words
        } else {
            0
        }
    }
    /// Row of the first output word (and its index among the public words).
    pub(crate) fn out_word_offset(&self) -> usize {
        if self.hashed_input {
            1
        } else {
            self.input_words
        }
    }
    /// Public words: the input words (or their digest) and the output words.
    pub fn public_words(&self) -> usize {
        self.out_word_offset() + self.output_words
    }
    /// First row of the sponge region (below the public layout's first layer).
    pub(crate) fn sponge_start(&self) -> usize {
        self.stride()
    }
    /// Rows the sponge region reaches (0 with public inputs).
    pub(crate) fn sponge_end(&self) -> usize {
        if self.hashed_input {
            self.sponge_start() + super::poseidon::sponge_rows(self.input_words)
        } else {
            0
        }
    }
    /// Rows of the public layout.
    pub(crate) fn input_rows(&self) -> usize {
        self.stride() * self.input_layers
    }
    /// Input rows of the public layout that hold no input (the last word's unused slots).
    pub(crate) fn padding_rows(&self, model: &QuantizedModel) -> usize {
        self.input_words * self.input_layers - model.input_len() * self.in_parts()
    }

    /// The shape of a model with `row_bytes` bytes per checked row and at most `max_columns`
    /// weight columns: byte counts from the quantizer's bounds, the input layout from the public
    /// packing, one weight column per Freivalds slot while they fit, pages of `max_columns`
    /// slots beyond.
    pub fn for_model(
        model: &QuantizedModel,
        row_bytes: usize,
        max_columns: usize,
        hashed_input: bool,
    ) -> Result<Self, CompileError> {
        Ok(Self::derive(
            model,
            &circuit_layers(model),
            row_bytes,
            max_columns,
            hashed_input,
        )?
        .0)
    }

    /// The shape and the slot assignment it comes from.
    pub(crate) fn derive(
        model: &QuantizedModel,
        layers: &[CLayer],
        row_bytes: usize,
        max_columns: usize,
        hashed_input: bool,
    ) -> Result<(Self, Slots), CompileError> {
        let mut shape = ColumnShape {
            weight_columns: 1,
            pages: 1,
            out_limbs: layers
                .last()
                .map_or(1, |l| limbs_for(bits_for(l.out_bound()))),
            relu_limbs: relu_limbs(layers),
            lookup_limbs: lookup_limbs(layers),
            product_limbs: product_limbs(layers),
            product_rem_limbs: product_rem_limbs(layers),
            matmul_limbs: matmul_limbs(layers),
            matmul_stride: matmul_stride(layers),
            // input codes have a multiple of 16 bits: whole rows in either layout, so the
            // range checks bound a code by exactly its largest value
            in_limbs: (model.input_bits / LIMB_BITS) as usize,
            row_bytes: row_bytes.clamp(1, 2),
            input_words: 1,
            output_words: 1,
            input_layers: 1,
            hashed_input,
        };
        let pk = Packing::new(&PublicLayout::of_model(model, shape));
        shape.input_words = pk.code_words;
        shape.output_words = pk.output_words;
        shape.input_layers = pk.inputs_per_word * shape.in_parts();
        let cap = max_columns.clamp(1, MAX_WEIGHT_COLUMNS);
        let assign = |page: Option<usize>| {
            Slots::assign(
                layers,
                &shape,
                model.input_len(),
                pk.output_words,
                shape.padding_rows(model),
                page,
            )
        };
        // with pages, a matrix product's batch keeps its operands' equations and its first
        // output slot in one page where it can (`Slots::assign`)
        let mut slots = assign(None)?;
        if slots.count > cap && shape.matmul_limbs > 0 {
            slots = assign(Some(cap))?;
        }
        shape.weight_columns = slots.count.min(cap);
        shape.pages = slots.count.div_ceil(shape.weight_columns);
        Ok((shape, slots))
    }
}
