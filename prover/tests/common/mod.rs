//! Shared helpers of the prover's integration tests: fixture paths and inputs, and a model
//! made ready for the EVM (keys, compiled verifier, one proof).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use veriml_circuits::{
    compile_model, halo2_proofs::halo2curves::bn256::Fr, QuantOptions, Settings,
};
use veriml_prover::{
    evm::{compile_verifier, solidity_verifier, Bytecode},
    pipeline::{self, fr_from_hex, Keys},
    Srs,
};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn fixture(model: &str, file: &str) -> PathBuf {
    root().join("fixtures/models").join(model).join(file)
}

pub fn input_of(model: &str) -> Vec<f64> {
    veriml_circuits::input::parse_input_json(
        &std::fs::read_to_string(fixture(model, "input.json")).unwrap(),
    )
    .unwrap()
}

/// The benchmark models' input range, [0, 1].
pub fn opts() -> QuantOptions {
    QuantOptions {
        input_range: (0.0, 1.0),
        ..QuantOptions::default()
    }
}

/// A shared model compiled with the default settings, its keys, its compiled EVM verifier and
/// a proof of its input.json.
pub struct EvmCase {
    pub settings: Settings,
    pub srs: Srs,
    pub keys: Keys,
    pub code: Bytecode,
    pub instances: Vec<Fr>,
    pub proof: Vec<u8>,
}

pub fn evm_case(model: &str, srs_seed: u64) -> EvmCase {
    let (settings, compiled) =
        compile_model(&fixture(model, "model.onnx"), &opts(), &Default::default()).unwrap();
    let m = Arc::new(compiled.model);
    let srs = Srs::insecure_dev(settings.circuit.k, srs_seed);
    let keys = pipeline::setup(&settings, m.clone(), &srs).unwrap();
    let sol = solidity_verifier(&srs, keys.pk.get_vk(), settings.circuit.num_instances);
    let code = compile_verifier(&root().join("scripts/solc"), &sol)
        .unwrap_or_else(|e| panic!("{model}: {e}"));
    let proof = pipeline::prove(&srs, &keys, &settings, m, &input_of(model)).unwrap();
    EvmCase {
        instances: proof
            .instances
            .iter()
            .map(|s| fr_from_hex(s).unwrap())
            .collect(),
        proof: hex::decode(&proof.proof).unwrap(),
        settings,
        srs,
        keys,
        code,
    }
}
