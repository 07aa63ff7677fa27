//! Negative `MockProver` tests: every chip rejects a witness changed in one cell, and the
//! public inputs bind the model input and output.

mod common;
use common::*;
use halo2_proofs::halo2curves::bn256::Fr;
use std::sync::Arc;
use veriml_circuits::{
    circuit::{
        fr_from_i128, pack_public, unpack_public, Fault, FaultTarget, PublicInput, PublicLayout,
        PublicValues,
    },
    graph::{Graph, Op},
    halo2_proofs, ColumnShape, ModelCircuit, QuantOptions, QuantizedModel,
};

fn check(k: u32, circuit: &ModelCircuit, instances: Vec<Fr>) -> bool {
    failures(k, circuit, instances).is_none()
}

/// The circuit with one or two bytes per checked row (the two layouts the planner chooses
/// from).
fn planned(q: &QuantizedModel, row_bytes: usize) -> (ColumnShape, u32) {
    let p = veriml_circuits::circuit::plan_with(q, 64, row_bytes, false).unwrap();
    assert_eq!(p.shape.row_bytes, row_bytes);
    (p.shape, p.k)
}

const ROW_BYTES: [usize; 2] = [1, 2];

/// A small model exercising every layer kind: dense+ReLU, stand-alone ReLU, dense (identity),
/// with negative values, a zero weight and an input width that does not fill the last row.
fn small_model(row_bytes: usize) -> (Arc<QuantizedModel>, ColumnShape, u32) {
    let g = Graph {
        input_shape: vec![1, 6],
        output_shape: vec![1, 3],
        ops: vec![
            Op::Dense {
                node: "fc1".into(),
                inputs: 6,
                outputs: 4,
                weights: vec![
                    0.5, -0.25, 0.0, 0.125, -1.0, 0.75, //
                    -0.5, 0.25, 0.3, -0.125, 1.0, -0.75, //
                    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, //
                    -0.6, -0.5, -0.4, -0.3, -0.2, -0.1,
                ]
                .into(),
                bias: vec![0.1, -0.2, -3.0, 0.05],
            },
            Op::Relu { node: "r1".into() },
            Op::Reshape {
                node: "flat".into(),
                shape: vec![1, 4],
            },
            Op::Dense {
                node: "fc2".into(),
                inputs: 4,
                outputs: 4,
                weights: (0..16)
                    .map(|i| (i as f32 - 7.5) / 8.0)
                    .collect::<Vec<_>>()
                    .into(),
                bias: vec![-0.5, 0.25, 0.0, 0.5],
            },
            Op::Relu { node: "r2".into() },
            Op::Dense {
                node: "fc3".into(),
                inputs: 4,
                outputs: 3,
                weights: vec![
                    1.0, -1.0, 0.5, -0.5, 0.25, 0.75, -0.75, 0.1, -2.0, 0.0, 1.5, 0.3,
                ]
                .into(),
                bias: vec![0.0, -0.1, 0.2],
            },
        ],
    };
    let opts = QuantOptions {
        input_range: (-1.0, 1.0),
        ..QuantOptions::default()
    };
    let q = QuantizedModel::from_graph(&g, &opts).unwrap();
    let (shape, k) = planned(&q, row_bytes);
    (Arc::new(q), shape, k)
}

fn small_input(q: &QuantizedModel) -> Vec<i64> {
    q.quantize_input(&[0.9, -0.3, 0.5, -1.0, 0.2, 0.7]).unwrap()
}

#[test]
fn honest_witness_is_accepted() {
    for rb in ROW_BYTES {
        honest_witness_is_accepted_with(rb);
    }
}

fn honest_witness_is_accepted_with(row_bytes: usize) {
    let (q, shape, k) = small_model(row_bytes);
    // fc2 is followed by a ReLU: the graph fuses it; the first ReLU is fused too
    let c = ModelCircuit::with_input(q.clone(), shape, small_input(&q)).unwrap();
    assert!(check(k, &c, c.instances().unwrap()));
    // several equations share a slot, and the three layers need more than one
    assert!(
        shape.weight_columns >= 2 && shape.weight_columns < 11,
        "{shape:?}"
    );
}

/// Completeness: every corner of the declared input range proves, including inputs that drive
/// pre-activations to their most negative value (the ReLU's negative part is range-checked too).
#[test]
fn every_corner_of_the_input_range_proves() {
    for rb in ROW_BYTES {
        every_corner_proves_with(rb);
    }
}

fn every_corner_proves_with(row_bytes: usize) {
    let (q, shape, k) = small_model(row_bytes);
    for mask in 0..64u32 {
        let x: Vec<f64> = (0..6)
            .map(|i| if mask >> i & 1 == 1 { 1.0 } else { -1.0 })
            .collect();
        let c = ModelCircuit::with_input(q.clone(), shape, q.quantize_input(&x).unwrap()).unwrap();
        assert!(
            check(k, &c, c.instances().unwrap()),
            "corner {mask:06b} does not prove"
        );
    }
    let g = Graph {
        input_shape: vec![2],
        output_shape: vec![2],
        ops: vec![Op::Relu { node: "r".into() }],
    };
    let q = Arc::new(QuantizedModel::from_graph(&g, &QuantOptions::default()).unwrap());
    let (shape, k) = planned(&q, row_bytes);
    let c = ModelCircuit::with_input(q.clone(), shape, q.quantize_input(&[-1.0, 1.0]).unwrap())
        .unwrap();
    assert!(check(k, &c, c.instances().unwrap()));
}

#[test]
fn standalone_relu_layer_is_proven() {
    let g = Graph {
        input_shape: vec![3],
        output_shape: vec![2],
        ops: vec![
            Op::Relu { node: "r0".into() },
            Op::Relu { node: "r1".into() },
            Op::Dense {
                node: "fc".into(),
                inputs: 3,
                outputs: 2,
                weights: vec![1.0, -1.0, 0.5, 0.25, 0.5, -0.75].into(),
                bias: vec![0.0, 0.1],
            },
        ],
    };
    let q = Arc::new(QuantizedModel::from_graph(&g, &QuantOptions::default()).unwrap());
    // the first ReLU fuses with the diagonal layer that reads the input codes; the second
    // stands alone
    assert!(matches!(
        q.layers[1],
        veriml_circuits::quantize::QLayer::Relu { .. }
    ));
    for rb in ROW_BYTES {
        let (shape, k) = planned(&q, rb);
        let x = q.quantize_input(&[-0.5, 0.25, 1.0]).unwrap();
        let c = ModelCircuit::with_input(q.clone(), shape, x.clone()).unwrap();
        assert!(check(k, &c, c.instances().unwrap()));
        let bad = c.clone().with_fault(Fault {
            target: FaultTarget::RescalePos,
            index: 0,
        });
        assert!(!check(k, &bad, c.instances().unwrap()));
    }
}

/// Every chip, several cells each: one changed cell, or one of the compound faults, makes the
/// circuit unsatisfiable, even with public words computed from the faulted witness.
#[test]
fn one_changed_cell_is_rejected_in_every_chip() {
    for rb in ROW_BYTES {
        one_changed_cell_is_rejected_with(rb);
    }
}

fn one_changed_cell_is_rejected_with(row_bytes: usize) {
    let (q, shape, k) = small_model(row_bytes);
    let honest = ModelCircuit::with_input(q.clone(), shape, small_input(&q)).unwrap();
    let targets = [
        (FaultTarget::RunningSum, vec![0, 1, 3, 8, 40, 100, 300]),
        (FaultTarget::ByteInverse, vec![0, 2, 7, 20]),
        (FaultTarget::HighByte, vec![0, 1, 9, 30]),
        (FaultTarget::RescalePos, vec![0, 2, 4, 9]),
        (FaultTarget::RescaleNeg, vec![0, 2, 4, 9]),
        (FaultTarget::RescaleRem, vec![0, 2, 4, 10]),
        (FaultTarget::RescaleShiftQuotient, vec![0, 1, 2, 5, 8, 10]),
        (FaultTarget::RescaleBothParts, vec![0, 1, 2, 5, 6, 7]),
        (FaultTarget::PackedInput, vec![0, 3, 5]),
        (FaultTarget::InputAccumulator, vec![0, 1]),
        (FaultTarget::PublicWord, vec![0]),
        (FaultTarget::Multiplicity, vec![0, 1, 77, 255]),
        (FaultTarget::InputCarry, vec![0, 1, 4]),
        (FaultTarget::PaddingInput, vec![0, 3, 8]),
        (FaultTarget::SmallLowByte, vec![0, 1, 5, 9]),
        (FaultTarget::InputAboveRange, vec![0, 2, 5]),
    ];
    for (target, indices) in targets {
        if target == FaultTarget::SmallLowByte && row_bytes == 1 {
            continue; // no one-byte rows in a two-byte layout to fault
        }
        for index in indices {
            let failed = fault_failures(k, &honest, Fault { target, index });
            assert!(
                failed.is_some(),
                "fault {target:?} at {index} was accepted ({row_bytes} bytes per row)"
            );
            let failed = failed.unwrap();
            if target == FaultTarget::RescaleBothParts {
                // nothing but p·n = 0 sees it: the whole forward pass follows the change
                assert!(failed.contains("rounding"), "{target:?} {index}");
            }
            if target == FaultTarget::SmallLowByte {
                assert!(failed.contains("zeros"), "{target:?} {index}: {failed}");
            }
        }
    }
}

/// The shifted quotient, the input carry and p+1/n+1 are consistent everywhere else: with
/// public words computed from the faulted pass, only the range checks or `p·n = 0` object.
#[test]
fn compound_faults_change_the_claimed_output() {
    let (q, shape, _) = small_model(2);
    let honest = ModelCircuit::with_input(q.clone(), shape, small_input(&q)).unwrap();
    let words = honest.instances().unwrap();
    let mut changed = 0;
    for target in [
        FaultTarget::RescaleShiftQuotient,
        FaultTarget::RescaleBothParts,
        FaultTarget::InputCarry,
        FaultTarget::InputAboveRange,
    ] {
        for index in 0..6 {
            let bad = honest.clone().with_fault(Fault { target, index });
            changed += (bad.instances().unwrap() != words) as usize;
        }
    }
    // most of these cheats would claim another output if the circuit let them through
    assert!(
        changed >= 12,
        "only {changed} compound faults changed the words"
    );
}

#[test]
fn public_input_and_output_are_bound() {
    let (q, shape, k) = small_model(2);
    let c = ModelCircuit::with_input(q.clone(), shape, small_input(&q)).unwrap();
    let inst = c.instances().unwrap();
    // the words unpack to exactly the quantized input and output
    let v = unpack_public(&PublicLayout::of_model(&q, shape), &inst).unwrap();
    assert_eq!(v.input, PublicInput::Codes(small_input(&q)));
    assert_eq!(v.output, q.forward(&small_input(&q)));
    for i in 0..inst.len() {
        let mut bad = inst.clone();
        bad[i] += Fr::one();
        assert!(!check(k, &c, bad), "changed public word {i} accepted");
    }
    // a proof of another input's output, and of this output with another input
    let other = q
        .quantize_input(&[-0.9, 0.3, -0.5, 1.0, -0.2, -0.7])
        .unwrap();
    let mixed = pack_public(&q, &shape, &small_input(&q), &q.forward(&other));
    assert_ne!(mixed, inst);
    assert!(!check(k, &c, mixed));
    let mixed = pack_public(&q, &shape, &other, &q.forward(&small_input(&q)));
    assert!(!check(k, &c, mixed));
}

#[test]
fn integers_convert_to_field_elements_exactly() {
    use halo2_proofs::halo2curves::ff::PrimeField;
    for v in [
        0i128,
        1,
        255,
        (1 << 64) - 1,
        1 << 64,
        (1 << 64) + 12345,
        i128::MAX,
        3 << 100,
    ] {
        assert_eq!(fr_from_i128(v), Fr::from_u128(v as u128), "{v}");
        assert_eq!(fr_from_i128(-v), -Fr::from_u128(v as u128), "-{v}");
        assert_eq!(
            veriml_circuits::circuit::fr_to_i128(&fr_from_i128(-v)),
            Some(-v)
        );
    }
}

#[test]
fn packing_round_trips_and_refuses_stray_bits() {
    let (q, shape, _) = small_model(2);
    let x = small_input(&q);
    let y = q.forward(&x);
    let words = pack_public(&q, &shape, &x, &y);
    assert_eq!(
        unpack_public(&PublicLayout::of_model(&q, shape), &words),
        Some(PublicValues {
            input: PublicInput::Codes(x.clone()),
            output: y
        })
    );
    // a bit set outside every slot
    let mut bad = words.clone();
    bad[0] += fr_from_i128(1i128 << 120) * fr_from_i128(1i128 << 120);
    assert_eq!(
        unpack_public(&PublicLayout::of_model(&q, shape), &bad),
        None
    );
    assert_eq!(
        unpack_public(&PublicLayout::of_model(&q, shape), &words[1..]),
        None
    );
}

#[test]
fn real_model_honest_and_faulty() {
    let (settings, compiled) = compile("tiny_mlp");
    let q = Arc::new(compiled.model);
    let s = samples("tiny_mlp");
    let x = q.quantize_input(&s.inputs[3]).unwrap();
    let c = ModelCircuit::with_input(q.clone(), settings.circuit.shape, x).unwrap();
    let inst = c.instances().unwrap();
    assert!(check(settings.circuit.k, &c, inst.clone()));
    let bad = c.with_fault(Fault {
        target: FaultTarget::RescaleShiftQuotient,
        index: 40,
    });
    assert!(!check(settings.circuit.k, &bad, inst));
}

/// A hidden layer without ReLU: the next layer reads its output as `p − n` (both rows carry
/// its weights), and a changed `n`, or a ReLU output's `p` and `n` both raised, is rejected.
#[test]
fn hidden_identity_layer_is_proven_and_bound() {
    let g = Graph {
        input_shape: vec![3],
        output_shape: vec![2],
        ops: vec![
            Op::Dense {
                node: "fc1".into(),
                inputs: 3,
                outputs: 3,
                weights: vec![1.0, -1.0, 0.5, 0.25, 0.5, -0.75, -0.3, 0.2, 0.1].into(),
                bias: vec![-0.2, 0.1, 0.0],
            },
            Op::Dense {
                node: "fc2".into(),
                inputs: 3,
                outputs: 2,
                weights: vec![0.5, -0.5, 1.0, -1.0, 0.25, 0.75].into(),
                bias: vec![0.05, -0.1],
            },
            Op::Relu { node: "r".into() },
        ],
    };
    let q = Arc::new(QuantizedModel::from_graph(&g, &QuantOptions::default()).unwrap());
    for rb in ROW_BYTES {
        hidden_identity_with(&q, rb);
    }
}

fn hidden_identity_with(q: &Arc<QuantizedModel>, row_bytes: usize) {
    let (shape, k) = planned(q, row_bytes);
    for x in [[-0.9, 0.4, 0.7], [0.8, -0.6, -1.0], [1.0, 1.0, 1.0]] {
        let c = ModelCircuit::with_input(q.clone(), shape, q.quantize_input(&x).unwrap()).unwrap();
        let inst = c.instances().unwrap();
        assert!(check(k, &c, inst.clone()), "{x:?}");
        for (target, index) in [
            (FaultTarget::RescaleNeg, 1),
            (FaultTarget::RescalePos, 2),
            (FaultTarget::RescaleShiftQuotient, 2),
            (FaultTarget::RescaleBothParts, 3),
            (FaultTarget::RescaleBothParts, 4),
        ] {
            let failed = fault_failures(k, &c, Fault { target, index });
            assert!(failed.is_some(), "{target:?} {index} accepted");
        }
        // an identity output is read as p − n only: raising both parts changes no value, so the
        // circuit does not spend a constraint on it (and the claimed output is the same)
        let same = c.clone().with_fault(Fault {
            target: FaultTarget::RescaleBothParts,
            index: 1,
        });
        assert_eq!(same.instances().unwrap(), inst);
        assert!(check(k, &same, inst.clone()));
    }
}

/// The largest code the range checks let through decodes to the top of the declared range, for
/// narrow and wide ranges alike; the next code up is refused by the honest constructor and, when
/// forced, by the range check alone (the words follow the cheat), in both row layouts.
#[test]
fn input_codes_cover_exactly_the_declared_range() {
    for range in [(-1.0, 1.0), (0.0, 0.01), (-300.0, 50.0)] {
        let g = Graph {
            input_shape: vec![3],
            output_shape: vec![2],
            ops: vec![
                Op::Dense {
                    node: "fc".into(),
                    inputs: 3,
                    outputs: 2,
                    weights: vec![0.5, -0.25, 1.0, -1.0, 0.75, 0.125].into(),
                    bias: vec![0.1, -0.2],
                },
                Op::Relu { node: "r".into() },
            ],
        };
        let q = Arc::new(
            QuantizedModel::from_graph(
                &g,
                &QuantOptions {
                    input_range: range,
                    ..QuantOptions::default()
                },
            )
            .unwrap(),
        );
        let max = q.input_code_max();
        assert_eq!(q.decode_input(0), range.0);
        assert!((q.decode_input(max) - range.1).abs() <= 1e-12 * range.1.abs().max(1.0));
        assert!(q.decode_input(max) <= range.1);
        assert!(q.quantize_input(&[range.1, range.0, range.1]).is_ok());
        let above = range.1 + (range.1 - range.0) * 1e-6;
        assert!(q.quantize_input(&[above, range.0, range.0]).is_err());
        for rb in ROW_BYTES {
            let (shape, k) = planned(&q, rb);
            assert_eq!(shape.in_limbs as u32 * 8, q.input_bits, "{range:?}");
            assert!(ModelCircuit::with_input(q.clone(), shape, vec![max + 1, 0, 0]).is_err());
            assert!(ModelCircuit::with_input(q.clone(), shape, vec![-1, 0, 0]).is_err());
            let top = ModelCircuit::with_input(q.clone(), shape, vec![max, max, 0]).unwrap();
            let words = top.instances().unwrap();
            assert!(check(k, &top, words.clone()), "{range:?} {rb}");
            for index in 0..3 {
                let bad = top.clone().with_fault(Fault {
                    target: FaultTarget::InputAboveRange,
                    index,
                });
                let claimed = bad.instances().unwrap();
                assert_ne!(claimed, words);
                assert!(
                    !check(k, &bad, claimed),
                    "{range:?} input {index} above the range"
                );
            }
        }
    }
}

/// Pages: the same model with a few weight columns a page. The honest witness proves in both row
/// layouts, and every fault is rejected, including the copies across pages, the constant rows
/// and the page powers.
#[test]
fn paged_circuits_are_complete_and_sound() {
    for rb in ROW_BYTES {
        for cap in [1, 2, 3] {
            let (q, _, _) = small_model(rb);
            let plan = veriml_circuits::circuit::plan_with(&q, cap, rb, false).unwrap();
            let (shape, k) = (plan.shape, plan.k);
            assert_eq!(shape.weight_columns, cap);
            assert!(shape.pages > 1, "{shape:?}");
            let honest = ModelCircuit::with_input(q.clone(), shape, small_input(&q)).unwrap();
            let words = honest.instances().unwrap();
            assert!(
                check(k, &honest, words.clone()),
                "{cap} columns, {rb} bytes per row: {:?}",
                failures(k, &honest, words.clone())
            );
            for mask in [0u32, 21, 42, 63] {
                let x: Vec<f64> = (0..6)
                    .map(|i| if mask >> i & 1 == 1 { 1.0 } else { -1.0 })
                    .collect();
                let c = ModelCircuit::with_input(q.clone(), shape, q.quantize_input(&x).unwrap())
                    .unwrap();
                assert!(check(k, &c, c.instances().unwrap()), "corner {mask:06b}");
            }
            for target in [
                FaultTarget::RunningSum,
                FaultTarget::ByteInverse,
                FaultTarget::RescalePos,
                FaultTarget::RescaleNeg,
                FaultTarget::RescaleShiftQuotient,
                FaultTarget::RescaleBothParts,
                FaultTarget::PackedInput,
                FaultTarget::PublicWord,
                FaultTarget::InputCarry,
                FaultTarget::InputAboveRange,
                FaultTarget::PaddingInput,
                FaultTarget::CopyRow,
                FaultTarget::ConstantRow,
                FaultTarget::PagePower,
            ] {
                for index in [0, 1, 5, 13] {
                    assert!(
                        fault_failures(k, &honest, Fault { target, index }).is_some(),
                        "{target:?} {index} accepted ({cap} columns, {rb} bytes per row)"
                    );
                }
            }
        }
    }
}

/// Convolutional models (strided, dilated, depthwise convolutions with batch normalization and
/// pooling, folded into dense layers; one of them paged): the honest witness proves, and the
/// compound cheats (a rounding shifted by one divisor, an input carried into its neighbour, a
/// ReLU output with both parts raised, a copy across pages) are rejected.
#[test]
fn convolutional_models_prove_and_reject_cheats() {
    for model in [
        "conv_zoo/strided_dilated",
        "conv_zoo/depthwise_bn",
        "conv_zoo/maxpool",
        "conv_zoo/piecewise",
        "conv_zoo/conv1d",
        "conv_zoo/grouped",
        "conv_zoo/input_maxpool",
        "conv_zoo/resnet_block",
    ] {
        let (settings, compiled) = compile(model);
        let q = Arc::new(compiled.model);
        let (shape, k) = (settings.circuit.shape, settings.circuit.k);
        let x = q.quantize_input(&samples(model).inputs[1]).unwrap();
        let c = ModelCircuit::with_input(q.clone(), shape, x).unwrap();
        assert!(check(k, &c, c.instances().unwrap()), "{model}");
        let mut targets = vec![
            FaultTarget::RescaleShiftQuotient,
            FaultTarget::RescaleBothParts,
            FaultTarget::InputCarry,
            FaultTarget::InputAboveRange,
        ];
        if shape.paged() {
            targets.extend([FaultTarget::CopyRow, FaultTarget::PagePower]);
        }
        for target in targets {
            for index in [0, 7, 30] {
                assert!(
                    fault_failures(k, &c, Fault { target, index }).is_some(),
                    "{model}: {target:?} {index} accepted"
                );
            }
        }
    }
}
