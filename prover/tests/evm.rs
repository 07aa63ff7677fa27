//! EVM verification: the generated Solidity verifier, compiled with the project's solcjs,
//! deployed in an in-process EVM, agrees with the native verifier on valid and tampered proofs.

use std::path::PathBuf;
use std::sync::Arc;
use veriml_circuits::{compile_model, halo2_proofs::halo2curves::bn256::Fr, QuantOptions};
use veriml_prover::{
    evm::{compile_verifier, solidity_verifier, verify_in_evm, MAX_RUNTIME_CODE},
    pipeline::{self, fr_from_hex, verify_raw},
    ProverError, Srs,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn input_of(model: &str) -> Vec<f64> {
    let p = root()
        .join("fixtures/models")
        .join(model)
        .join("input.json");
    veriml_circuits::input::parse_input_json(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Every shared MLP: the verifier either fits EIP-170 and then accepts the real proof and
/// rejects tampered ones exactly like the native verifier, or it is refused as too large with a
/// typed error (never deployed half-working).
#[test]
fn generated_verifiers_agree_with_native_or_are_refused() {
    let solc = root().join("scripts/solc");
    let mut fitted = Vec::new();
    for model in ["tiny_mlp", "digits_mlp", "mnist_mlp"] {
        let opts = QuantOptions {
            input_range: (0.0, 1.0),
            ..QuantOptions::default()
        };
        let onnx = root()
            .join("fixtures/models")
            .join(model)
            .join("model.onnx");
        let (settings, compiled) = compile_model(&onnx, &opts, 6).unwrap();
        let m = Arc::new(compiled.model);
        let srs = Srs::insecure_dev(settings.circuit.k, 3);
        let keys = pipeline::setup(&settings, m.clone(), &srs).unwrap();
        let sol = solidity_verifier(&srs, keys.pk.get_vk(), settings.circuit.num_instances);
        let code = match compile_verifier(&solc, &sol) {
            Ok(code) => code,
            Err(ProverError::VerifierTooLarge { size, limit }) => {
                println!("{model}: verifier of {size} bytes refused (limit {limit})");
                assert!(size > limit);
                continue;
            }
            Err(e) => panic!("{model}: {e}"),
        };
        assert!(code.runtime_len() <= MAX_RUNTIME_CODE);
        let proof = pipeline::prove(&srs, &keys, &settings, m.clone(), &input_of(model)).unwrap();
        let inst: Vec<Fr> = proof
            .instances
            .iter()
            .map(|s| fr_from_hex(s).unwrap())
            .collect();
        let bytes = hex::decode(&proof.proof).unwrap();
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
        fitted.push(model);
    }
    assert!(
        fitted.contains(&"tiny_mlp"),
        "the smallest model must fit on chain"
    );
}
