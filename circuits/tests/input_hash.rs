//! The hashed input (`compile --input-visibility hashed`): the circuit absorbs the input words
//! in a Poseidon sponge and only the digest is public. Completeness for input counts that give
//! one, an even and an odd number of words, in both row layouts and paged; the digest and the
//! output words bind; each sponge cheat whose digest follows is caught by its own constraint.

mod common;
use common::*;
use halo2_proofs::halo2curves::bn256::Fr;
use std::sync::Arc;
use veriml_circuits::{
    circuit::{
        input_digest, poseidon, unpack_public, Fault, FaultTarget, PublicInput, PublicLayout,
    },
    graph::{Graph, Op},
    halo2_proofs, ColumnShape, ModelCircuit, QuantOptions, QuantizedModel,
};

/// `inputs -> 5 (ReLU) -> 3`, weights of both signs.
fn model(inputs: usize) -> Arc<QuantizedModel> {
    let g = Graph {
        input_shape: vec![1, inputs],
        output_shape: vec![1, 3],
        ops: vec![
            Op::Dense {
                node: "fc1".into(),
                inputs,
                outputs: 5,
                weights: (0..5 * inputs)
                    .map(|i| ((i * 37 % 23) as f32 - 11.0) / 16.0)
                    .collect::<Vec<_>>()
                    .into(),
                bias: vec![0.1, -0.2, 0.3, 0.0, -0.05],
            },
            Op::Relu { node: "r1".into() },
            Op::Dense {
                node: "fc2".into(),
                inputs: 5,
                outputs: 3,
                weights: (0..15)
                    .map(|i| (i as f32 - 7.0) / 8.0)
                    .collect::<Vec<_>>()
                    .into(),
                bias: vec![0.5, -0.25, 0.0],
            },
        ],
    };
    Arc::new(QuantizedModel::from_graph(&g, &QuantOptions::default()).unwrap())
}

fn codes(q: &QuantizedModel, seed: usize) -> Vec<i64> {
    let x: Vec<f64> = (0..q.input_len())
        .map(|i| (((i + seed) * 13 % 17) as f64 - 8.0) / 8.0)
        .collect();
    q.quantize_input(&x).unwrap()
}

fn hashed(q: &QuantizedModel, cap: usize, row_bytes: usize) -> (ColumnShape, u32) {
    let p = veriml_circuits::circuit::plan_with(q, cap, row_bytes, true).unwrap();
    assert!(p.shape.hashed_input);
    (p.shape, p.k)
}

#[test]
fn hashed_inputs_prove_and_the_digest_and_outputs_bind() {
    // 16-bit codes, 15 per word: 1, 2, 3 and 5 input words
    for (inputs, words) in [(6, 1), (30, 2), (40, 3), (64, 5)] {
        let q = model(inputs);
        for (cap, rb) in [(64, 2), (64, 1), (1, 2)] {
            let (shape, k) = hashed(&q, cap, rb);
            assert_eq!(shape.input_words, words);
            assert_eq!(shape.paged(), cap == 1, "{shape:?}");
            let x = codes(&q, 0);
            let c = ModelCircuit::with_input(q.clone(), shape, x.clone()).unwrap();
            let inst = c.instances().unwrap();
            let layout = PublicLayout::of_model(&q, shape);
            assert_eq!(inst.len(), 1 + shape.output_words);
            assert_eq!(inst[0], input_digest(&layout, &x));
            let v = unpack_public(&layout, &inst).unwrap();
            assert_eq!(v.input, PublicInput::Digest(inst[0]));
            assert_eq!(v.output, q.forward(&x));
            let what = format!("{inputs} inputs, {rb} bytes a row, cap {cap}");
            assert_eq!(failures(k, &c, inst.clone()), None, "{what}");
            for i in 0..inst.len() {
                let mut bad = inst.clone();
                bad[i] += Fr::one();
                assert!(failures(k, &c, bad).is_some(), "word {i} changed, {what}");
            }
            // the digest of another input with this output
            let mut other = inst.clone();
            other[0] = input_digest(&layout, &codes(&q, 1));
            assert_ne!(other[0], inst[0]);
            assert!(failures(k, &c, other).is_some(), "{what}");
        }
    }
}

#[test]
fn sponge_cheats_are_caught_by_their_own_constraint_alone() {
    let q = model(64);
    let (shape, k) = hashed(&q, 64, 2);
    let honest = ModelCircuit::with_input(q.clone(), shape, codes(&q, 0)).unwrap();
    let digest = honest.instances().unwrap()[0];
    let rounds = poseidon::FULL_ROUNDS + poseidon::PARTIAL_ROUNDS;
    // rounds of the first, second and last permutation, full and partial
    let mut cases: Vec<(FaultTarget, usize, &str)> =
        [0, 3, 4, 30, 60, 61, 64, 65, 130, 3 * rounds - 1]
            .into_iter()
            .map(|r| (FaultTarget::SpongeRound, r, "poseidon round"))
            .collect();
    for j in 0..shape.input_words {
        cases.push((FaultTarget::SpongeMessage, j, "Equality constraint"));
        cases.push((FaultTarget::SpongeWord, j, "input words"));
    }
    for (target, index, only) in cases {
        let c = honest.clone().with_fault(Fault { target, index });
        let words = c.instances().unwrap();
        // the public digest follows the cheat: the digest gate is satisfied
        assert_ne!(words[0], digest, "{target:?} {index}");
        let failed =
            failures(k, &c, words).unwrap_or_else(|| panic!("{target:?} at {index} was accepted"));
        assert!(failed.contains(only), "{target:?} {index}: {failed}");
        for other in [
            "poseidon round",
            "poseidon absorption",
            "poseidon digest",
            "input words",
            "Equality constraint",
        ] {
            if other != only {
                assert!(!failed.contains(other), "{target:?} {index}: {failed}");
            }
        }
    }
}

#[test]
fn input_cheats_are_still_caught_with_a_hashed_input() {
    let q = model(40);
    for rb in [1, 2] {
        let (shape, k) = hashed(&q, 64, rb);
        let honest = ModelCircuit::with_input(q.clone(), shape, codes(&q, 2)).unwrap();
        for target in [
            FaultTarget::PackedInput,
            FaultTarget::InputAccumulator,
            FaultTarget::InputCarry,
            FaultTarget::InputAboveRange,
            FaultTarget::PaddingInput,
            FaultTarget::PublicWord,
            FaultTarget::RescaleBothParts,
        ] {
            // indices in the first (ReLU) layer, where p + 1, n + 1 is a cheat
            for index in [0, 1, 3] {
                assert!(
                    fault_failures(k, &honest, Fault { target, index }).is_some(),
                    "{target:?} at {index} accepted ({rb} bytes a row)"
                );
            }
        }
    }
}

#[test]
fn a_public_input_shape_is_written_as_before() {
    let q = model(30);
    let public = veriml_circuits::circuit::plan_with(&q, 64, 2, false).unwrap();
    let text = serde_json::to_string(&public.shape).unwrap();
    assert!(!text.contains("hashed_input"), "{text}");
    let (shape, _) = hashed(&q, 64, 2);
    let back: ColumnShape = serde_json::from_str(&serde_json::to_string(&shape).unwrap()).unwrap();
    assert_eq!(back, shape);
    // hashing costs columns and rows, never public words
    assert_eq!(shape.public_words(), 1 + shape.output_words);
    assert_eq!(public.shape.public_words(), 2 + public.shape.output_words);
    assert_eq!(
        shape.advice_columns(),
        public.shape.advice_columns() + 4,
        "{shape:?}"
    );
}
