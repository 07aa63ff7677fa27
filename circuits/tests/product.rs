//! The product chip (`circuit/product.rs`): products of two activations, element-wise with
//! numpy broadcasting. The imported graph and the quantized model against ONNX's reference
//! evaluator; completeness in both row layouts and with pages; compound cheats caught by the
//! one constraint that guards them.

mod common;
use common::*;
use std::sync::Arc;
use veriml_circuits::circuit::{plan_with, Fault, FaultTarget};
use veriml_circuits::quantize::QLayer;
use veriml_circuits::ModelCircuit;

const MODELS: [&str; 3] = ["conv_zoo/products", "conv_zoo/gated", "conv_zoo/divide"];

/// Gating (two activations), a broadcast `[1, 1]` factor, the model input as a factor, and
/// quotients of two activations (element-wise and by a broadcast `[1, 1]` denominator):
/// the float graph reproduces ONNX's reference evaluator, each `Mul` is one product layer, and
/// the quantized model stays close with the same top-1 on every sample.
#[test]
fn products_match_the_reference_outputs() {
    for (model, products) in [
        ("conv_zoo/products", 3),
        ("conv_zoo/gated", 1),
        ("conv_zoo/divide", 2),
    ] {
        let (_, compiled) = compile(model);
        let found = compiled
            .model
            .layers
            .iter()
            .filter(|l| matches!(l, QLayer::Product { .. }))
            .count();
        assert_eq!(found, products, "{model}");
        let max_err = reference_error(model, &compiled);
        // EZKL 23.0.5's largest error on digits_cnn at its default calibration
        assert!(max_err < 0.0064, "{model}: {max_err}");
    }
}

/// The circuits of a model: both row layouts, and a paged one (one weight column a page, so the
/// factors' equations and the products' consumers sit in other pages than their blocks).
fn circuits(model: &str) -> Vec<(ModelCircuit, u32, String)> {
    let (_, compiled) = compile(model);
    let q = Arc::new(compiled.model);
    let x = q.quantize_input(&samples(model).inputs[1]).unwrap();
    let mut out = Vec::new();
    for (rb, cap) in [(1, 64), (2, 64), (2, 1)] {
        let p = plan_with(&q, cap, rb, false).unwrap();
        assert!(p.shape.products(), "{model}");
        assert_eq!(p.shape.paged(), cap == 1, "{model}");
        let c = ModelCircuit::with_input(q.clone(), p.shape, x.clone()).unwrap();
        out.push((c, p.k, format!("{model} (row bytes {rb}, cap {cap})")));
    }
    out
}

#[test]
fn products_prove_in_both_layouts_and_with_pages() {
    for model in MODELS {
        for (c, k, what) in circuits(model) {
            let words = c.instances().unwrap();
            assert_eq!(failures(k, &c, words), None, "{what}");
        }
    }
}

/// A wrong product (its remainder in range) whose later layers and public output follow it is
/// caught by the product gate alone; a wrong factor whose product follows, by the end of the
/// running sum alone (the factor's Freivalds equation); a product shifted by one divisor, by the range check
/// of its remainder.
#[test]
fn product_cheats_are_caught_by_their_own_constraint_alone() {
    for model in MODELS {
        for (honest, k, what) in circuits(model) {
            let words = honest.instances().unwrap();
            for (target, only, not) in [
                // the running sum ends where the closing row's gate says only if every equation
                // holds
                (FaultTarget::ProductOutput, "\"product\"", "ends and zeros"),
                (FaultTarget::ProductFactor, "ends and zeros", "\"product\""),
            ] {
                for index in [0, 1, 4] {
                    let c = honest.clone().with_fault(Fault { target, index });
                    let claimed = c.instances().unwrap();
                    let failed = failures(k, &c, claimed.clone())
                        .unwrap_or_else(|| panic!("{what}: {target:?} {index} accepted"));
                    assert!(
                        failed.contains(only),
                        "{what}: {target:?} {index}: {failed}"
                    );
                    assert!(
                        !failed.contains(not),
                        "{what}: {target:?} {index}: {failed}"
                    );
                    if target == FaultTarget::ProductOutput && index == 0 {
                        // the public output follows the wrong product (a compound cheat)
                        assert_ne!(claimed, words, "{what}");
                    }
                }
            }
            for index in [0, 5, 11] {
                let shifted = Fault {
                    target: FaultTarget::RescaleShiftQuotient,
                    index,
                };
                assert!(
                    fault_failures(k, &honest, shifted).is_some(),
                    "{what}: shifted {index}"
                );
            }
        }
    }
}

/// A compiled model edited so that a product loses its exact operands, or takes another
/// divisor than the others (one product gate serves all), is refused with a typed error.
#[test]
fn edited_products_are_refused() {
    let (_, compiled) = compile("conv_zoo/products");
    let q = compiled.model;
    assert!(q.validate().is_ok());
    let products: Vec<usize> = (0..q.layers.len())
        .filter(|&i| matches!(q.layers[i], QLayer::Product { .. }))
        .collect();
    let mut other_divisor = q.clone();
    if let QLayer::Product { shift, .. } = &mut other_divisor.layers[products[1]] {
        *shift += 8;
    }
    let mut rounded_operand = q.clone();
    if let QLayer::Dense { shift, .. } = &mut rounded_operand.layers[products[0] - 1] {
        *shift = 8;
    }
    for bad in [other_divisor, rounded_operand] {
        let e = bad.validate().unwrap_err();
        assert!(
            matches!(e, veriml_circuits::CompileError::Quantization { .. }),
            "{e:?}"
        );
    }
}
