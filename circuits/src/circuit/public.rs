//! The public words: input codes and outputs packed into few field elements, and back. With a
//! hashed input the input words stay in the circuit and the public words are their Poseidon
//! digest ([`super::poseidon::hash_words`]) and the output words.

use super::*;

/// What the public words hold: the numbers of inputs (codes) and outputs and the slot sizes
/// of the shape. Known to a verifier from the settings alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicLayout {
    pub inputs: usize,
    pub outputs: usize,
    pub shape: ColumnShape,
}

impl PublicLayout {
    pub fn of_model(model: &QuantizedModel, shape: ColumnShape) -> Self {
        PublicLayout {
            inputs: model.input_len(),
            outputs: model.output_len(),
            shape,
        }
    }
}

/// Where each value goes: `(word, bit offset)` for the input codes (among the input words),
/// then the outputs (among the public words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packing {
    pub inputs: Vec<(usize, u32)>,
    pub outputs: Vec<(usize, u32)>,
    /// Words the input codes are packed into.
    pub code_words: usize,
    /// Public words of the input: the code words, or 1 (their digest) with a hashed input.
    pub input_words: usize,
    pub output_words: usize,
    pub hashed: bool,
    /// Inputs per word (the last word may hold fewer).
    pub inputs_per_word: usize,
}

impl Packing {
    pub fn new(layout: &PublicLayout) -> Self {
        let place = |n: usize, slot: u32, first: usize| -> (Vec<(usize, u32)>, usize) {
            let per = (WORD_BITS / slot).max(1) as usize;
            let v = (0..n)
                .map(|i| (first + i / per, (i % per) as u32 * slot))
                .collect();
            (v, n.div_ceil(per))
        };
        let (inputs, code_words) = place(layout.inputs, layout.shape.in_slot(), 0);
        let hashed = layout.shape.hashed_input;
        let input_words = if hashed { 1 } else { code_words };
        let (outputs, output_words) = place(layout.outputs, layout.shape.out_slot(), input_words);
        Packing {
            inputs,
            outputs,
            code_words,
            input_words,
            output_words,
            hashed,
            inputs_per_word: (WORD_BITS / layout.shape.in_slot()).max(1) as usize,
        }
    }
    pub fn words(&self) -> usize {
        self.input_words + self.output_words
    }
}

/// Packs input codes `u` into the input words.
pub(crate) fn code_words(pk: &Packing, u: &[i128]) -> Vec<Fr> {
    let mut words = vec![Fr::zero(); pk.code_words];
    for (&(w, off), &v) in pk.inputs.iter().zip(u) {
        words[w] += fr_from_i128(v) * pow2(off);
    }
    words
}

/// The digest a hashed-input proof has for its first public word: Poseidon of the words the
/// input codes pack into.
pub fn input_digest(layout: &PublicLayout, codes: &[i64]) -> Fr {
    let u: Vec<i128> = codes.iter().map(|&x| x as i128).collect();
    super::poseidon::hash_words(&code_words(&Packing::new(layout), &u))
}

/// Packs quantized outputs into the output words.
pub(crate) fn output_words(pk: &Packing, shape: &ColumnShape, outputs: &[i128]) -> Vec<Fr> {
    let mut words = vec![Fr::zero(); pk.output_words];
    for (&(w, off), &y) in pk.outputs.iter().zip(outputs) {
        words[w - pk.input_words] += fr_from_i128(y + shape.out_offset()) * pow2(off);
    }
    words
}

/// Packs input codes `u` and outputs into the public words.
pub(crate) fn pack_values(
    pk: &Packing,
    shape: &ColumnShape,
    u: &[i128],
    outputs: &[i128],
) -> Vec<Fr> {
    let codes = code_words(pk, u);
    let mut words = if pk.hashed {
        vec![super::poseidon::hash_words(&codes)]
    } else {
        codes
    };
    words.extend(output_words(pk, shape, outputs));
    words
}

/// Packs input codes and a quantized output into the public words.
pub fn pack_public(
    model: &QuantizedModel,
    shape: &ColumnShape,
    input: &[i64],
    output: &[i64],
) -> Vec<Fr> {
    let u: Vec<i128> = input.iter().map(|&x| x as i128).collect();
    let y: Vec<i128> = output.iter().map(|&v| v as i128).collect();
    let layout = PublicLayout::of_model(model, *shape);
    pack_values(&Packing::new(&layout), shape, &u, &y)
}

/// What public words hold: the input codes (or, with a hashed input, their digest) and the
/// quantized output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicValues {
    pub input: PublicInput,
    pub output: Vec<i64>,
}

/// The input part of the public words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicInput {
    Codes(Vec<i64>),
    /// The Poseidon digest of the input words ([`input_digest`]).
    Digest(Fr),
}

/// Unpacks public words into the input codes (or their digest) and the quantized output; `None`
/// if they are not a packing of values that fit their slots (wrong count, or a bit outside
/// every slot).
pub fn unpack_public(layout: &PublicLayout, words: &[Fr]) -> Option<PublicValues> {
    let shape = layout.shape;
    let pk = Packing::new(layout);
    if words.len() != pk.words() {
        return None;
    }
    let mut used = vec![[0u8; 32]; words.len()];
    if pk.hashed {
        // the digest may be any field element
        used[0] = [0xff; 32];
    }
    // the words as little-endian 256-bit integers
    let ints: Vec<[u8; 32]> = words
        .iter()
        .map(|w| {
            let r = w.to_repr();
            let mut b = [0u8; 32];
            b.copy_from_slice(r.as_ref());
            b
        })
        .collect();
    let mut take = |w: usize, off: u32, bits: u32| -> i128 {
        let mut v = 0i128;
        for i in 0..bits {
            let bit = off + i;
            let (byte, shift) = ((bit / 8) as usize, bit % 8);
            used[w][byte] |= 1 << shift;
            if ints[w][byte] >> shift & 1 == 1 {
                v |= 1 << i;
            }
        }
        v
    };
    let input = if pk.hashed {
        PublicInput::Digest(words[0])
    } else {
        PublicInput::Codes(
            pk.inputs
                .iter()
                .map(|&(w, off)| take(w, off, shape.in_slot()) as i64)
                .collect(),
        )
    };
    let outputs: Vec<i64> = pk
        .outputs
        .iter()
        .map(|&(w, off)| (take(w, off, shape.out_slot()) - shape.out_offset()) as i64)
        .collect();
    for (w, u) in ints.iter().zip(&used) {
        if w.iter().zip(u).any(|(b, m)| b & !m != 0) {
            return None;
        }
    }
    Some(PublicValues {
        input,
        output: outputs,
    })
}
