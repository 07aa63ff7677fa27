//! The matrix-product chip (`circuit/matmul.rs`): attention's `Q·Kᵀ` and `A·V` as one layer
//! each, read off the ONNX graph whatever the output order; completeness in both row layouts;
//! cheats caught by the constraint that guards them; edited models refused.

mod common;
use common::*;
use std::sync::Arc;
use veriml_circuits::circuit::{plan_with, Fault, FaultTarget};
use veriml_circuits::quantize::{QLayer, QuantizedModel};
use veriml_circuits::{ModelCircuit, QuantOptions};

const MODEL: &str = "conv_zoo/attention";

fn matmuls(q: &QuantizedModel) -> Vec<usize> {
    (0..q.layers.len())
        .filter(|&i| matches!(q.layers[i], QLayer::MatMul { .. }))
        .collect()
}

/// 5 tokens, 3 heads of 4: the scores `[3, 5, 4, 5]` in the graph's order, the context
/// `[3, 5, 5, 4]` with the heads' transpose folded into the output order.
#[test]
fn attention_products_are_one_matmul_layer_each() {
    let (_, compiled) = compile(MODEL);
    let q = &compiled.model;
    let found: Vec<([usize; 4], bool)> = matmuls(q)
        .into_iter()
        .map(|i| match &q.layers[i] {
            QLayer::MatMul { dims, order, .. } => (*dims, order.is_empty()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(found, [([3, 5, 4, 5], true), ([3, 5, 5, 4], false)]);
    assert!(!q
        .layers
        .iter()
        .any(|l| matches!(l, QLayer::Product { node, .. } if node.contains("scores") || node.contains("context"))));
}

/// The circuit in both row layouts (small tables, so the mock prover stays at a small `k`).
fn circuits() -> Vec<(ModelCircuit, u32, String)> {
    let o = QuantOptions {
        lookup_bits: 8,
        ..opts()
    };
    let (_, compiled) =
        veriml_circuits::compile_model(&fixture(MODEL, "model.onnx"), &o, &Default::default())
            .unwrap();
    let q = Arc::new(compiled.model);
    let x = q.quantize_input(&samples(MODEL).inputs[3]).unwrap();
    [1, 2]
        .into_iter()
        .map(|rb| {
            let p = plan_with(&q, 16, rb, false).unwrap();
            assert!(p.shape.matmuls());
            let c = ModelCircuit::with_input(q.clone(), p.shape, x.clone()).unwrap();
            (c, p.k, format!("row bytes {rb}"))
        })
        .collect()
}

/// A wrong output whose later layers and public words follow is caught by its equation (the
/// end of the running sum) and by no matmul gate; the compound cheats that keep the running sum
/// closed (two units' chains of `A` changed so that their terms cancel, two carried terms of
/// one unit likewise, a wrong output made up for by moving the sum on a chain row of `B`) each
/// by their own gate and not by the end of the sum.
#[test]
fn matmuls_prove_and_cheats_are_caught_by_their_own_constraint() {
    for (honest, k, what) in circuits() {
        let words = honest.instances().unwrap();
        assert_eq!(failures(k, &honest, words.clone()), None, "{what}");
        for (target, by, not) in [
            (FaultTarget::MatMulOutput, "ends and zeros", "matmul"),
            (
                FaultTarget::MatMulChain,
                "matmul chain of A",
                "ends and zeros",
            ),
            (FaultTarget::MatMulCarry, "matmul carry", "ends and zeros"),
            (FaultTarget::MatMulSum, "matmul sum", "ends and zeros"),
        ] {
            for index in [0, 7, 40, 99] {
                let failed = fault_failures(k, &honest, Fault { target, index })
                    .unwrap_or_else(|| panic!("{what}: {target:?} {index} accepted"));
                assert!(failed.contains(by), "{what}: {target:?} {index}: {failed}");
                assert!(
                    !failed.contains(not),
                    "{what}: {target:?} {index}: {failed}"
                );
            }
        }
        // the public output follows wrong scores (compound cheats; one unit of a score may
        // round away before the output)
        let follows = (75..150).any(|index| {
            let bad = honest.clone().with_fault(Fault {
                target: FaultTarget::MatMulOutput,
                index,
            });
            bad.instances().unwrap() != words
        });
        assert!(follows, "{what}");
    }
}

/// A compiled model edited so that a matrix product's output order repeats a position, its
/// dimensions disagree with its operands, an operand rounds, another layer reads an operand, or
/// the product does not round (divisor 1), is refused with a typed error.
#[test]
fn edited_matmuls_are_refused() {
    let (_, compiled) = compile(MODEL);
    let q = compiled.model;
    assert!(q.validate().is_ok());
    let at = matmuls(&q);
    let mut repeated = q.clone();
    if let QLayer::MatMul { order, .. } = &mut repeated.layers[at[1]] {
        order[1] = order[0];
    }
    let mut other_dims = q.clone();
    if let QLayer::MatMul { dims, .. } = &mut other_dims.layers[at[0]] {
        dims[2] += 1;
    }
    let mut rounded_operand = q.clone();
    if let QLayer::Dense { shift, .. } = &mut rounded_operand.layers[at[0] - 2] {
        *shift = 8;
    }
    // the layer reading the context reads the scores' first operand (as wide) instead: the
    // circuit lays operands out for their product only
    let mut operand_read = q.clone();
    let reader = (0..q.layers.len())
        .find(|&j| j != at[1] && q.layers[j].sources(j).contains(&(at[1] + 1)))
        .unwrap();
    if let QLayer::Dense { sources, .. } = &mut operand_read.layers[reader] {
        *sources = q.layers[reader]
            .sources(reader)
            .into_iter()
            .map(|v| if v == at[1] + 1 { at[0] - 1 } else { v })
            .collect();
    }
    assert!(q.validate().is_ok());
    let mut no_rounding = q.clone();
    if let QLayer::MatMul { shift, .. } = &mut no_rounding.layers[at[0]] {
        *shift = 0;
    }
    no_rounding.activation_scale_bits = 0;
    for (bad, says) in [
        (repeated, "permutation"),
        (other_dims, "dimensions"),
        (rounded_operand, "select exactly"),
        (operand_read, "operand of a product"),
        (no_rounding, "scale or bound"),
    ] {
        match bad.validate().unwrap_err() {
            veriml_circuits::CompileError::Quantization { detail, .. } => {
                assert!(detail.contains(says), "{detail}")
            }
            e => panic!("{e:?}"),
        }
    }
}

/// digits_attn at the defaults: its `[2, 8, 8, 8]` products in a paged circuit (the chain
/// chains weigh `γ^σ` through the page power): it proves, and every compound cheat in a later
/// batch is rejected by its own gate.
#[test]
fn matmuls_in_a_paged_circuit_prove_and_reject_cheats() {
    let model = "digits_attn";
    let (settings, compiled) = compile(model);
    let shape = settings.circuit.shape;
    assert!(shape.paged());
    assert_eq!(shape.matmul_stride, 8);
    let q = Arc::new(compiled.model);
    let x = q.quantize_input(&samples(model).inputs[5]).unwrap();
    let honest = ModelCircuit::with_input(q, shape, x).unwrap();
    let k = settings.circuit.k;
    assert_eq!(failures(k, &honest, honest.instances().unwrap()), None);
    for (target, by) in [
        (FaultTarget::MatMulChain, "matmul chain of A"),
        (FaultTarget::MatMulCarry, "matmul carry"),
        (FaultTarget::MatMulSum, "matmul sum"),
        (FaultTarget::MatMulOutput, "ends and zeros"),
    ] {
        let index = 3;
        let failed = fault_failures(k, &honest, Fault { target, index })
            .unwrap_or_else(|| panic!("{target:?} {index} accepted"));
        assert!(failed.contains(by), "{target:?}: {failed}");
    }
}
