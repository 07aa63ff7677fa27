//! Shared helpers of the integration tests: the fixture models copied from the benchmark set.
#![allow(dead_code)]

use std::path::PathBuf;
use veriml_circuits::circuit::Fault;
use veriml_circuits::halo2_proofs::{dev::MockProver, halo2curves::bn256::Fr};
use veriml_circuits::{compile_model, CompiledModel, ModelCircuit, QuantOptions, Settings};

/// The constraints `MockProver` finds failing, as text, if any.
pub fn failures(k: u32, circuit: &ModelCircuit, instances: Vec<Fr>) -> Option<String> {
    MockProver::run(k, circuit, vec![instances])
        .unwrap()
        .verify_par()
        .err()
        .map(|e| format!("{e:?}"))
}

/// The constraints `MockProver` finds failing once `fault` is injected, checked against the
/// public words the faulted witness claims (a compound cheat's words follow it, so only the
/// constraint that guards the faulted cell can reject it).
pub fn fault_failures(k: u32, honest: &ModelCircuit, fault: Fault) -> Option<String> {
    let bad = honest.clone().with_fault(fault);
    let claimed = bad.instances().unwrap();
    failures(k, &bad, claimed)
}

pub fn fixture(model: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(model)
        .join(file)
}

pub struct Samples {
    pub inputs: Vec<Vec<f64>>,
    pub float_outputs: Vec<Vec<f64>>,
    pub labels: Option<Vec<usize>>,
}

pub fn samples(model: &str) -> Samples {
    let text = std::fs::read_to_string(fixture(model, "samples.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = |key: &str| -> Vec<Vec<f64>> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| veriml_circuits::input::flatten_numbers(x).unwrap())
            .collect()
    };
    let labels = v["labels"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_u64().unwrap() as usize).collect());
    Samples {
        inputs: rows("inputs"),
        float_outputs: rows("float_outputs"),
        labels,
    }
}

/// Input range of the benchmark models (images and features in [0, 1]).
pub fn opts() -> QuantOptions {
    QuantOptions {
        input_range: (0.0, 1.0),
        ..QuantOptions::default()
    }
}

pub fn compile(model: &str) -> (Settings, CompiledModel) {
    compile_model(&fixture(model, "model.onnx"), &opts(), &Default::default()).unwrap()
}

pub fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

/// Checks a fixture against its samples' float outputs (ONNX's reference evaluator): the
/// imported float graph within `1e-4`, the quantized model with the same top-1 on every
/// sample. Returns the quantized model's largest absolute output error.
pub fn reference_error(model: &str, compiled: &CompiledModel) -> f64 {
    let g = veriml_circuits::import::load_onnx(&fixture(model, "model.onnx")).unwrap();
    let q = &compiled.model;
    let s = samples(model);
    let mut max_err = 0f64;
    for (x, want) in s.inputs.iter().zip(&s.float_outputs) {
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        for (g, w) in g.forward(&xf).iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-4, "{model}: {g} vs {w}");
        }
        let got: Vec<f64> = q
            .forward(&q.quantize_input(x).unwrap())
            .into_iter()
            .map(|v| q.dequantize(v))
            .collect();
        assert_eq!(argmax(&got), argmax(want), "{model}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            max_err = max_err.max((g - w).abs());
        }
    }
    println!("{model}: largest abs output error {max_err:.6}");
    max_err
}
