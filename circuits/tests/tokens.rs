//! Language models over token ids (`conv_zoo/tiny_gpt`, written by `benchmarks/gpt_lm.py`):
//! token embeddings gathered by the integer input, causal attention (the masked scores left
//! out of the softmax), next-token logits.
//! Against ONNX's reference evaluator; proven; ids outside the vocabulary refused before
//! proving and unprovable; a wrong embedding caught by the lookup argument.

mod common;
use common::*;
use std::sync::Arc;
use veriml_circuits::circuit::{plan, Fault, FaultTarget};
use veriml_circuits::quantize::{QLayer, EMBEDDING};
use veriml_circuits::{CompileError, ModelCircuit};

const MODEL: &str = "conv_zoo/tiny_gpt";

/// The token ids are their own 16-bit codes whatever input range the options give, the
/// embedding is one table of `vocab·dim` entries, and the logits follow ONNX's.
#[test]
fn a_tiny_gpt_matches_the_reference_logits() {
    let (_, compiled) = compile(MODEL);
    let q = &compiled.model;
    assert_eq!(q.input_bits, 16);
    assert_eq!(q.input_range, (0.0, 65535.0));
    assert_eq!(q.vocab(), Some(24));
    let tables: Vec<usize> = q
        .layers
        .iter()
        .filter_map(|l| match l {
            QLayer::Dense {
                lookup: Some(t), ..
            } if t.label == EMBEDDING => Some(t.table.len()),
            _ => None,
        })
        .collect();
    assert_eq!(tables, [24 * 8]);
    // the causal mask's scores are left out of the softmax: 2 heads of 1 + 2 + ... + 5 kept
    let kept: Vec<usize> = q
        .layers
        .iter()
        .filter_map(|l| match l {
            QLayer::Product { node, outputs, .. } if node.ends_with("softmax/kept") => {
                Some(*outputs)
            }
            _ => None,
        })
        .collect();
    assert_eq!(kept, [2 * 15]);
    for x in &samples(MODEL).inputs {
        assert_eq!(
            q.quantize_input(x).unwrap(),
            x.iter().map(|&v| v as i64).collect::<Vec<_>>()
        );
    }
    let max_err = reference_error(MODEL, &compiled);
    assert!(max_err < 0.05, "{max_err}");
}

#[test]
fn a_tiny_gpt_proves_and_out_of_vocabulary_ids_are_refused() {
    let (_, compiled) = compile(MODEL);
    let q = Arc::new(compiled.model);
    let p = plan(&q, 32, false).unwrap();
    let x = q.quantize_input(&samples(MODEL).inputs[1]).unwrap();
    let honest = ModelCircuit::with_input(q.clone(), p.shape, x.clone()).unwrap();
    assert_eq!(failures(p.k, &honest, honest.instances().unwrap()), None);
    // an embedding one above its table's entry, the rest following: the lookup argument
    let wrong = fault_failures(
        p.k,
        &honest,
        Fault {
            target: FaultTarget::LookupOutput,
            index: 3,
        },
    )
    .expect("a wrong embedding was accepted");
    assert!(wrong.contains("ends and zeros"), "{wrong}");
    // id 24 (the vocabulary is 0..24) is a valid 16-bit code but has no embedding
    let mut outside = x;
    outside[2] = 24;
    let e = ModelCircuit::with_input(q.clone(), p.shape, outside).unwrap_err();
    match e {
        CompileError::Input(msg) => assert!(msg.contains("token id 24"), "{msg}"),
        e => panic!("{e:?}"),
    }
}

/// The same model with the causal mask's fill value `-inf` (as some exporters write it): the
/// masked scores are left out all the same, so it compiles to the same circuit size and follows
/// the reference logits.
#[test]
fn an_infinite_mask_is_left_out_like_a_finite_one() {
    let (finite, _) = compile(MODEL);
    let (infinite, compiled) = compile("conv_zoo/tiny_gpt_inf");
    assert_eq!(infinite.circuit.rows_used, finite.circuit.rows_used);
    let max_err = reference_error("conv_zoo/tiny_gpt_inf", &compiled);
    assert!(max_err < 0.05, "{max_err}");
}
