//! A transformer block the project has not been tuned on (`conv_zoo/attention`: 5 tokens, width
//! 12, 3 heads of 4, LayerNorm, softmax attention, GELU MLP, residuals): import against ONNX's
//! reference evaluator, accuracy, completeness, and compound cheats on the attention and
//! normalization layers, each caught by the one constraint that guards it.

mod common;
use common::*;
use std::sync::Arc;
use veriml_circuits::circuit::{plan, Fault, FaultTarget};
use veriml_circuits::quantize::{QLayer, QuantizedModel};
use veriml_circuits::{import, ModelCircuit, QuantOptions};

const MODEL: &str = "conv_zoo/attention";
const CAUSAL: &str = "conv_zoo/causal_attention";

/// Softmax alone between two dense layers: the float graph and the quantized model against
/// ONNX's reference evaluator.
#[test]
fn softmax_matches_the_reference_outputs() {
    let model = "conv_zoo/softmax";
    let g = import::load_onnx(&fixture(model, "model.onnx")).unwrap();
    let (_, compiled) = compile(model);
    let q = &compiled.model;
    let s = samples(model);
    for (x, want) in s.inputs.iter().zip(&s.float_outputs) {
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        for (g, w) in g.forward(&xf).iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
        }
        let got = q.forward(&q.quantize_input(x).unwrap());
        for (g, w) in got.iter().zip(want) {
            assert!((q.dequantize(*g) - w).abs() < 2e-3, "{g} vs {w}");
        }
    }
}

/// Both blocks; the causal one masks its scores with `Where` (a constant condition) and reads
/// the first token (`Gather`) and the maximum over the tokens (`ReduceMax`).
#[test]
fn attention_blocks_match_the_reference_outputs() {
    for model in [MODEL, CAUSAL] {
        matches_reference(model);
    }
}

fn matches_reference(model: &str) {
    let (_, compiled) = compile(model);
    // the float graph has softmax and LayerNorm rewritten (row max, exp, reciprocal, rsqrt
    // tables by segment) and still gives ONNX's outputs
    let max_err = reference_error(model, &compiled);
    // EZKL 23.0.5's largest error on digits_attn at its default calibration
    assert!(max_err < 0.05, "{model}: {max_err}");
}

/// A model with small tables (the circuit stays at k = 16 for the mock prover).
fn small(model: &str) -> (Arc<QuantizedModel>, ModelCircuit, u32) {
    let o = QuantOptions {
        lookup_bits: 8,
        ..opts()
    };
    let (_, compiled) =
        veriml_circuits::compile_model(&fixture(model, "model.onnx"), &o, &Default::default())
            .unwrap();
    let q = Arc::new(compiled.model);
    let p = plan(&q, 32, false).unwrap();
    let x = q.quantize_input(&samples(model).inputs[2]).unwrap();
    let c = ModelCircuit::with_input(q.clone(), p.shape, x).unwrap();
    (q, c, p.k)
}

/// The first fault index of layer `target` among the layers `counts` (a fault's index runs over
/// the outputs of the layers it can hit, in order).
fn first_index(q: &QuantizedModel, target: usize, counts: impl Fn(&QLayer) -> bool) -> usize {
    q.layers[..target]
        .iter()
        .filter(|l| counts(l))
        .map(outputs)
        .sum()
}

fn outputs(l: &QLayer) -> usize {
    match l {
        QLayer::Dense { outputs, .. } | QLayer::Product { outputs, .. } => *outputs,
        QLayer::Relu { len, .. } => *len,
        QLayer::MatMul {
            dims: [batch, n, _, p],
            ..
        } => batch * n * p,
    }
}

fn layer(q: &QuantizedModel, name: &str) -> usize {
    q.layers
        .iter()
        .position(|l| match l {
            QLayer::Dense { node, .. }
            | QLayer::Product { node, .. }
            | QLayer::MatMul { node, .. }
            | QLayer::Relu { node, .. } => node.ends_with(name),
        })
        .unwrap_or_else(|| panic!("no layer {name}"))
}

#[test]
fn attention_block_proves_and_rejects_compound_cheats() {
    let (q, honest, k) = small(MODEL);
    let words = honest.instances().unwrap();
    assert_eq!(failures(k, &honest, words.clone()), None);
    let product = |l: &QLayer| matches!(l, QLayer::Product { .. });
    let matmul = |l: &QLayer| matches!(l, QLayer::MatMul { .. });
    let lookup = |l: &QLayer| {
        matches!(
            l,
            QLayer::Dense {
                lookup: Some(_),
                ..
            }
        )
    };
    let any = |_: &QLayer| true;
    let cases = [
        // a softmax probability one unit higher, the context, the MLP and the output following
        (
            "a wrong softmax row",
            FaultTarget::ProductOutput,
            first_index(&q, layer(&q, "/softmax"), product) + 3,
            "\"product\"",
        ),
        // an exp entry one above its table's, the row's sum and probabilities following
        (
            "a wrong exp",
            FaultTarget::LookupOutput,
            first_index(&q, layer(&q, "/softmax/shift"), lookup) + 1,
            "ends and zeros",
        ),
        // the row maximum raised by one unit (its remainder short by a divisor), every shifted
        // score and what follows it moved: the remainder's range check
        (
            "a wrong max",
            FaultTarget::RescaleShiftQuotient,
            first_index(&q, layer(&q, "/softmax/max"), any),
            "ends and zeros",
        ),
        // a pairwise maximum with both parts raised (the same difference): p·n = 0
        (
            "a wrong pairwise max",
            FaultTarget::RescaleBothParts,
            first_index(&q, layer(&q, "/softmax/max/round0"), any) + 2,
            "rounding",
        ),
        // an rsqrt entry one above its table's, the normalized row following
        (
            "a wrong reciprocal square root",
            FaultTarget::LookupOutput,
            first_index(
                &q,
                layer(&q, "ln2.reduced_sum_dd.rms_norm/rsqrt2/in"),
                lookup,
            ),
            "ends and zeros",
        ),
        // a normalized value one unit off its product, the rest following
        (
            "a wrong normalization",
            FaultTarget::ProductOutput,
            first_index(&q, layer(&q, "ln1.reduced_sum_dd.rms_norm/scale"), product) + 4,
            "\"product\"",
        ),
        // an attention score one unit above its rounded value, the softmax, the context and
        // the output following: its packed equation in the running sum
        (
            "a wrong score",
            FaultTarget::MatMulOutput,
            first_index(&q, layer(&q, "/scores"), matmul) + 5,
            "ends and zeros",
        ),
        // a context value (probabilities times values) one unit higher, the rest following
        (
            "a wrong context",
            FaultTarget::MatMulOutput,
            first_index(&q, layer(&q, "/context"), matmul) + 7,
            "ends and zeros",
        ),
        // two units' chains over the query column changed so that their terms cancel
        (
            "a wrong chain of the queries",
            FaultTarget::MatMulChain,
            11,
            "matmul chain of A",
        ),
        // two carried key terms of one unit changed so that they cancel
        (
            "a wrong carried term",
            FaultTarget::MatMulCarry,
            4,
            "matmul carry",
        ),
    ];
    assert_caught(&honest, k, &cases);
}

/// Each case's fault is rejected, and among the failing constraints is the one named.
fn assert_caught(honest: &ModelCircuit, k: u32, cases: &[(&str, FaultTarget, usize, &str)]) {
    for &(what, target, index, by) in cases {
        let failed = fault_failures(k, honest, Fault { target, index })
            .unwrap_or_else(|| panic!("{what} was accepted"));
        assert!(failed.contains(by), "{what}: {failed}");
    }
}

/// The causal block proves; a wrong maximum over the tokens (both parts of a pairwise maximum
/// raised) is caught by `p·n = 0`, a masked score shifted by one divisor (its remainder out of
/// range) by the byte checks, which the end of the running sum sees.
#[test]
fn causal_block_proves_and_rejects_cheats() {
    let (q, honest, k) = small(CAUSAL);
    assert_eq!(failures(k, &honest, honest.instances().unwrap()), None);
    let any = |_: &QLayer| true;
    assert_caught(
        &honest,
        k,
        &[
            (
                "a wrong pairwise max over the tokens",
                FaultTarget::RescaleBothParts,
                first_index(&q, layer(&q, "/top.1/round0"), any) + 1,
                "rounding",
            ),
            (
                "a shifted masked score",
                FaultTarget::RescaleShiftQuotient,
                first_index(&q, layer(&q, "/causal"), any) + 3,
                "ends and zeros",
            ),
        ],
    );
}

/// At finer activation scales the input codes are 32 bits wide, so a layer reading them next to
/// activations (the residual into the second LayerNorm) would give their columns weights far
/// below the others' under one weight scale: the codes go through an identity layer first.
/// (Before: largest error 2.14 at `2^16` with 14-bit weights.)
#[test]
fn a_residual_from_the_input_keeps_its_precision_at_fine_scales() {
    let o = QuantOptions {
        activation_scale_bits: 16,
        weight_precision_bits: 14,
        ..opts()
    };
    let (_, compiled) =
        veriml_circuits::compile_model(&fixture(MODEL, "model.onnx"), &o, &Default::default())
            .unwrap();
    assert_eq!(compiled.model.input_bits, 32);
    let max_err = reference_error(MODEL, &compiled);
    assert!(max_err < 0.01, "{max_err}");
}
