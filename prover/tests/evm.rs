//! EVM verification: the generated Solidity verifier, compiled with the project's solcjs,
//! deployed in an in-process EVM, agrees with the native verifier on valid and tampered proofs.

mod common;
use common::{evm_case, opts, root, EvmCase};
use std::sync::Arc;
use veriml_circuits::halo2_proofs::halo2curves::bn256::Fr;
use veriml_prover::{
    evm::{compile_verifier, solidity_verifier, verify_in_evm, MAX_RUNTIME_CODE},
    pipeline::{self, verify_raw},
    ProverError, Srs,
};

/// Every shared MLP, compiled with the default settings: the verifier fits EIP-170, accepts the
/// real proof and rejects tampered ones exactly like the native verifier. The digits model's
/// verify transaction stays within the 350,000 gas target (gas is deterministic, not a timing).
#[test]
fn generated_verifiers_fit_and_agree_with_native() {
    for model in ["tiny_mlp", "digits_mlp", "mnist_mlp"] {
        let EvmCase {
            srs,
            keys,
            code,
            instances: inst,
            proof: bytes,
            ..
        } = evm_case(model, 3);
        assert!(code.runtime_len() <= MAX_RUNTIME_CODE);
        let (deploy_gas, out) = verify_in_evm(&code, &inst, &bytes).unwrap();
        println!(
            "{model}: runtime {} bytes, deploy gas {deploy_gas}, verify gas {}",
            code.runtime_len(),
            out.gas_used
        );
        assert!(
            out.success,
            "{model}: valid proof rejected on chain: {:?}",
            out.reason
        );
        if model == "digits_mlp" {
            assert!(
                out.gas_used <= 350_000,
                "digits_mlp verify gas {}",
                out.gas_used
            );
        }
        // tampered proofs and public inputs: both verifiers reject, every time
        let mut cases: Vec<(Vec<Fr>, Vec<u8>)> = Vec::new();
        for pos in [0, 100, bytes.len() / 2, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[pos] ^= 1;
            cases.push((inst.clone(), b));
        }
        for i in [0, inst.len() - 1] {
            let mut t = inst.clone();
            t[i] += Fr::one();
            cases.push((t, bytes.clone()));
        }
        cases.push((inst.clone(), bytes[..bytes.len() - 32].to_vec()));
        for (i, b) in cases {
            let native = verify_raw(&srs.params, keys.pk.get_vk(), &i, &b).is_ok();
            let onchain = verify_in_evm(&code, &i, &b).unwrap().1.success;
            assert!(
                !native && !onchain,
                "{model}: tampered case accepted (native {native}, evm {onchain})"
            );
        }
    }
}

/// A verifier over the size limit is refused with a typed error, never deployed half-working.
#[test]
fn oversized_verifier_is_refused() {
    // one layer of 240 outputs: about 50 Freivalds slots, one weight column (commitment) each
    let (inputs, outputs) = (8, 240);
    let graph = veriml_circuits::Graph {
        input_shape: vec![1, inputs],
        output_shape: vec![1, outputs],
        ops: vec![veriml_circuits::graph::Op::Dense {
            node: "wide".into(),
            inputs,
            outputs,
            weights: (0..inputs * outputs)
                .map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0)
                .collect::<Vec<_>>()
                .into(),
            bias: vec![0.0; outputs],
        }],
    };
    let (settings, compiled) = veriml_circuits::settings::compile_graph(
        &graph,
        "wide",
        "00",
        &opts(),
        &veriml_circuits::settings::PlanOptions {
            max_weight_columns: veriml_circuits::circuit::MAX_WEIGHT_COLUMNS,
            hashed_input: false,
        },
    )
    .unwrap();
    assert!(settings.circuit.shape.weight_columns > 40);
    let srs = Srs::insecure_dev(settings.circuit.k, 3);
    let keys = pipeline::setup(&settings, Arc::new(compiled.model), &srs).unwrap();
    let sol = solidity_verifier(&srs, keys.pk.get_vk(), settings.circuit.num_instances);
    match compile_verifier(&root().join("scripts/solc"), &sol) {
        Err(ProverError::VerifierTooLarge { size, limit }) => {
            assert!(size > limit && limit == MAX_RUNTIME_CODE)
        }
        other => panic!(
            "expected VerifierTooLarge, got {:?}",
            other.map(|c| c.runtime_len())
        ),
    }
}
