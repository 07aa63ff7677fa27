//! The function-lookup chip: non-linear element-wise functions proven by table lookups in the
//! running sum. Completeness over the declared input range, and rejection of wrong entries,
//! entries from another table, wrong multiplicities and inverses, with compound cheats whose
//! whole forward pass and public words follow the wrong entry.

mod common;
use common::*;
use std::sync::Arc;
use veriml_circuits::{
    circuit::{plan_with, Fault, FaultTarget},
    graph::{Graph, Op, Samples},
    quantize::QLayer,
    ColumnShape, ModelCircuit, QuantOptions, QuantizedModel,
};

fn sampled(f: impl Fn(f64) -> f64) -> Arc<Samples> {
    let (lo, step) = (-16.0, 1.0 / 256.0);
    Arc::new(Samples {
        lo,
        step,
        values: (0..=8192).map(|i| f(lo + i as f64 * step)).collect(),
    })
}

fn act(node: &str, label: &str, f: impl Fn(f64) -> f64) -> Op {
    Op::Elementwise {
        node: node.into(),
        label: label.into(),
        f: sampled(f),
        coarser: 0,
    }
}

fn dense(node: &str, inputs: usize, outputs: usize, seed: f32) -> Op {
    Op::Dense {
        node: node.into(),
        inputs,
        outputs,
        weights: (0..inputs * outputs)
            .map(|i| ((i as f32 + seed) * 0.77).sin())
            .collect::<Vec<_>>()
            .into(),
        bias: (0..outputs).map(|i| 0.1 * i as f32 - 0.15).collect(),
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Dense → sigmoid, dense → tanh, a ReLU on the tanh, dense → sigmoid as the output: two
/// lookups in a row of layers, a stand-alone ReLU reading a lookup, a lookup producing the
/// public output, and two tables that map some rounded values differently.
fn lookup_model(lookup_bits: u32) -> Arc<QuantizedModel> {
    let g = Graph {
        input_shape: vec![1, 5],
        output_shape: vec![1, 3],
        ops: vec![
            dense("fc1", 5, 4, 0.0),
            act("sig1", "Sigmoid", sigmoid),
            dense("fc2", 4, 4, 1.0),
            act("tanh2", "Tanh", f64::tanh),
            Op::Relu { node: "r".into() },
            dense("fc3", 4, 3, 2.0),
            act("sig3", "Sigmoid", sigmoid),
        ],
    };
    let opts = QuantOptions {
        input_range: (-1.0, 1.0),
        lookup_bits,
        ..QuantOptions::default()
    };
    Arc::new(QuantizedModel::from_graph(&g, &opts).unwrap())
}

fn tables(q: &QuantizedModel) -> usize {
    q.layers
        .iter()
        .filter(|l| {
            matches!(
                l,
                QLayer::Dense {
                    lookup: Some(_),
                    ..
                }
            )
        })
        .count()
}

/// Five inputs, each −1, 1, 0.3 or −0.45 by two bits of `mask`.
fn corner(mask: u32) -> Vec<f64> {
    (0..5)
        .map(|i| [-1.0, 1.0, 0.3, -0.45][(mask >> (2 * i) & 3) as usize])
        .collect()
}

fn input(q: &QuantizedModel, mask: u32) -> Vec<i64> {
    q.quantize_input(&corner(mask)).unwrap()
}

/// Dense 5 → 6 with weights 8 times larger (its values reach far beyond where the function
/// changes), the function, dense 6 → 2: the float graph and its quantized model.
fn wide_then(f: Op) -> (Graph, Arc<QuantizedModel>) {
    let mut first = dense("fc1", 5, 6, 0.5);
    if let Op::Dense { weights, .. } = &mut first {
        weights
            .dense_mut()
            .unwrap()
            .iter_mut()
            .for_each(|w| *w *= 8.0);
    }
    let g = Graph {
        input_shape: vec![1, 5],
        output_shape: vec![1, 2],
        ops: vec![first, f, dense("fc2", 6, 2, 3.0)],
    };
    let opts = QuantOptions {
        input_range: (-1.0, 1.0),
        ..QuantOptions::default()
    };
    let q = Arc::new(QuantizedModel::from_graph(&g, &opts).unwrap());
    (g, q)
}

/// The shapes a model is planned with: one and two bytes per row, and a paged one.
fn shapes(q: &QuantizedModel) -> Vec<(ColumnShape, u32)> {
    let mut out = Vec::new();
    for (rb, cap) in [(1, 64), (2, 64), (2, 2)] {
        let p = plan_with(q, cap, rb, false).unwrap();
        out.push((p.shape, p.k));
    }
    assert!(out[2].0.paged());
    out
}

#[test]
fn lookups_follow_the_float_model_and_prove_everywhere() {
    let q = lookup_model(10);
    assert_eq!(tables(&q), 3);
    // the quantized forward pass tracks the float one
    let g_x = [0.3f32, -0.45, 1.0, -1.0, 0.3];
    let x = q
        .quantize_input(&g_x.iter().map(|&v| v as f64).collect::<Vec<_>>())
        .unwrap();
    let got: Vec<f64> = q.forward(&x).iter().map(|&v| q.dequantize(v)).collect();
    assert!(got.iter().all(|v| (0.0..=1.0).contains(v)), "{got:?}");
    for (rb_shape, k) in shapes(&q) {
        assert!(rb_shape.lookups());
        for mask in [0u32, 0x3ff, 0x155, 0x2aa, 0x0f0, 0x1e7] {
            let c = ModelCircuit::with_input(q.clone(), rb_shape, input(&q, mask)).unwrap();
            let words = c.instances().unwrap();
            assert_eq!(
                failures(k, &c, words),
                None,
                "input {mask:x} with {rb_shape:?}"
            );
        }
    }
}

#[test]
fn wrong_table_entries_are_rejected() {
    let q = lookup_model(10);
    for (shape, k) in shapes(&q) {
        let honest = ModelCircuit::with_input(q.clone(), shape, input(&q, 0x2aa)).unwrap();
        let words = honest.instances().unwrap();
        for target in [
            FaultTarget::LookupOutput,
            FaultTarget::LookupOtherTable,
            FaultTarget::LookupMultiplicity,
            FaultTarget::LookupInverse,
            FaultTarget::RescaleShiftQuotient,
        ] {
            let mut changed = 0;
            // 8, 9, 10: the output layer's lookups (the public words show them directly)
            for index in [0, 3, 5, 8, 9, 10] {
                let bad = honest.clone().with_fault(Fault { target, index });
                let claimed = bad.instances().unwrap();
                changed += usize::from(claimed != words);
                let failed = failures(k, &bad, claimed);
                assert!(
                    failed.is_some(),
                    "{target:?} {index} accepted with {shape:?}"
                );
                let failed = failed.unwrap();
                if matches!(
                    target,
                    FaultTarget::LookupOutput | FaultTarget::LookupOtherTable
                ) {
                    // every gate holds: only the running sum's total (the lookup argument)
                    // does not
                    assert!(
                        failed.contains("ends and zeros")
                            && !failed.contains("\"lookup\"")
                            && !failed.contains("rounding"),
                        "{target:?} {index}: {failed}"
                    );
                }
            }
            if target == FaultTarget::LookupOutput {
                // the output layer's cheats would claim other outputs if they got through
                assert!(changed >= 3, "{target:?}: {changed} changed the words");
            }
        }
    }
}

/// The table id in the lookup key is what keeps one layer's table from serving another: the
/// cheat that takes another table's entry for the same rounded value changes the output.
#[test]
fn an_entry_from_another_table_changes_the_claim_and_is_rejected() {
    let q = lookup_model(10);
    let p = plan_with(&q, 64, 2, false).unwrap();
    let mut found = 0;
    for mask in [0u32, 0x3ff, 0x155, 0x2aa] {
        let honest = ModelCircuit::with_input(q.clone(), p.shape, input(&q, mask)).unwrap();
        let words = honest.instances().unwrap();
        for index in 0..11 {
            let bad = honest.clone().with_fault(Fault {
                target: FaultTarget::LookupOtherTable,
                index,
            });
            let claimed = bad.instances().unwrap();
            if claimed != words {
                found += 1;
                assert!(failures(p.k, &bad, claimed).is_some(), "{mask:x} {index}");
            }
        }
    }
    assert!(
        found >= 4,
        "only {found} cross-table cheats changed the words"
    );
}

/// A function straight on the input, and after a ReLU: each gets an identity layer whose
/// rounding the lookup reads.
#[test]
fn functions_without_a_dense_layer_before_them_prove() {
    let g = Graph {
        input_shape: vec![3],
        output_shape: vec![3],
        ops: vec![
            act("e", "Exp", f64::exp),
            Op::Relu { node: "r".into() },
            act("t", "Tanh", f64::tanh),
        ],
    };
    let q = Arc::new(QuantizedModel::from_graph(&g, &QuantOptions::default()).unwrap());
    assert_eq!(tables(&q), 2);
    let x = q.quantize_input(&[-1.0, 0.25, 1.0]).unwrap();
    let got: Vec<f64> = q.forward(&x).iter().map(|&v| q.dequantize(v)).collect();
    for (g, x) in got.iter().zip([-1.0f64, 0.25, 1.0]) {
        assert!((g - x.exp().tanh()).abs() < 2e-3, "{g} vs {x}");
    }
    for (shape, k) in shapes(&q) {
        let c = ModelCircuit::with_input(q.clone(), shape, x.clone()).unwrap();
        assert_eq!(failures(k, &c, c.instances().unwrap()), None, "{shape:?}");
        let bad = c.with_fault(Fault {
            target: FaultTarget::LookupOutput,
            index: 4,
        });
        assert!(failures(k, &bad, bad.instances().unwrap()).is_some());
    }
}

/// The ONNX models of the conv zoo with Sigmoid, Tanh, GELU, HardSwish, Exp, SiLU and Softplus.
#[test]
fn onnx_activation_models_prove_and_reject_cheats() {
    for model in ["conv_zoo/activations", "conv_zoo/silu_cnn"] {
        let (settings, compiled) = compile(model);
        let q = Arc::new(compiled.model);
        let (shape, k) = (settings.circuit.shape, settings.circuit.k);
        assert!(shape.lookups(), "{model}");
        let x = q.quantize_input(&samples(model).inputs[2]).unwrap();
        let c = ModelCircuit::with_input(q.clone(), shape, x).unwrap();
        assert_eq!(failures(k, &c, c.instances().unwrap()), None, "{model}");
        for target in [
            FaultTarget::LookupOutput,
            FaultTarget::LookupOtherTable,
            FaultTarget::RescaleShiftQuotient,
        ] {
            for index in [0, 9] {
                assert!(
                    fault_failures(k, &c, Fault { target, index }).is_some(),
                    "{model}: {target:?} {index} accepted"
                );
            }
        }
    }
}

/// A saturating function (tanh) after a layer whose values reach far beyond its saturation: the
/// table covers only the clamp `[−c, c]`, the rounded value is clamped in the circuit, and a
/// clamped value claimed one step inside the clamp (its entry and the forward pass following)
/// is rejected by the clamp constraints alone.
#[test]
fn clamped_lookups_are_exact_and_proven() {
    let (g, q) = wide_then(act("t", "Tanh", f64::tanh));
    let QLayer::Dense {
        lookup: Some(t), ..
    } = &q.layers[0]
    else {
        panic!("a lookup layer")
    };
    let c = t.clamp.expect("tanh saturates: clamped");
    assert_eq!(t.table.len() as i64, 2 * c + 1);
    let mut rejected = 0;
    for mask in [0u32, 0x3ff, 0x155, 0x2aa] {
        let x = corner(mask);
        let want = g.forward(&x.iter().map(|&v| v as f32).collect::<Vec<_>>());
        let codes = q.quantize_input(&x).unwrap();
        for (w, got) in want.iter().zip(q.forward(&codes)) {
            assert!((*w as f64 - q.dequantize(got)).abs() < 2e-3, "{w} vs {got}");
        }
        for (shape, k) in shapes(&q) {
            let honest = ModelCircuit::with_input(q.clone(), shape, codes.clone()).unwrap();
            assert_eq!(failures(k, &honest, honest.instances().unwrap()), None);
            for index in 0..6 {
                let bad = honest.clone().with_fault(Fault {
                    target: FaultTarget::LookupClampInside,
                    index,
                });
                // the fault applies to clamped outputs only; elsewhere the witness is honest
                if let Some(failed) = failures(k, &bad, bad.instances().unwrap()) {
                    assert!(
                        failed.contains("\"lookup\"") && !failed.contains("ends and zeros"),
                        "{failed}"
                    );
                    rejected += 1;
                }
            }
        }
    }
    assert!(rejected >= 6, "only {rejected} clamp cheats applied");
}

/// A function that does not saturate but is `relu` plus one that does (SiLU = `x·sigmoid(x)`):
/// the table holds `g = f − relu` over its clamp only, the output adds the exact `relu(z)`
/// (`p`, with `p·n = 0`), and `p` and `n` both raised with the forward pass following — the
/// rounded value unchanged, the output one grid step higher — is rejected by `p·n = 0` alone.
#[test]
fn relu_plus_a_saturating_table_is_exact_and_sound() {
    let silu = |x: f64| x * sigmoid(x);
    let (g, q) = wide_then(act("s", "Silu", silu));
    let QLayer::Dense {
        lookup: Some(t), ..
    } = &q.layers[0]
    else {
        panic!("a lookup layer")
    };
    assert!(t.plus_relu && t.clamp.is_some(), "{}", t.table.len());
    for mask in [0u32, 0x3ff, 0x155, 0x2aa] {
        let x = corner(mask);
        let want = g.forward(&x.iter().map(|&v| v as f32).collect::<Vec<_>>());
        let codes = q.quantize_input(&x).unwrap();
        for (w, got) in want.iter().zip(q.forward(&codes)) {
            assert!((*w as f64 - q.dequantize(got)).abs() < 0.02, "{w} vs {got}");
        }
        for (shape, k) in shapes(&q) {
            let honest = ModelCircuit::with_input(q.clone(), shape, codes.clone()).unwrap();
            assert_eq!(failures(k, &honest, honest.instances().unwrap()), None);
            for index in 0..6 {
                let bad = honest.clone().with_fault(Fault {
                    target: FaultTarget::RescaleBothParts,
                    index,
                });
                let failed = failures(k, &bad, bad.instances().unwrap()).expect("rejected");
                assert!(
                    failed.contains("\"lookup\"") && !failed.contains("ends and zeros"),
                    "{failed}"
                );
            }
        }
    }
}
