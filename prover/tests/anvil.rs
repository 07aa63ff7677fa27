//! On a real node: anvil with Base's rules (`--hardfork osaka`, Base Sepolia's chain id), driven
//! over JSON-RPC with alloy. For every shared MLP the generated verifier is deployed, registered
//! in a `ModelRegistry`, and a real proof is verified by a transaction; every tampered case is
//! rejected by the registry and by the native verifier alike. Prints the gas of each step.

#[path = "../../testsupport/anvil.rs"]
mod anvil;
mod common;
use common::{evm_case, root, EvmCase};
use veriml_circuits::halo2_proofs::halo2curves::bn256::Fr;
use veriml_prover::{
    chain::{self, Chain},
    pipeline::{fr_from_hex, verify_raw},
    ProverError,
};

const GAS_CAP: u64 = 2_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn every_shared_mlp_deploys_registers_and_verifies_on_anvil() {
    let node = anvil::start(&root());
    let chain = Chain::connect(&node.url, anvil::DEV_KEY).await.unwrap();
    assert_eq!(chain.chain_id, anvil::CHAIN_ID);
    let solc = root().join("scripts/solc");
    let registry_code = chain::registry_bytecode(&solc).unwrap();
    let (registry, reg_deploy) = chain.deploy_registry(&registry_code).await.unwrap();
    println!("ModelRegistry: deploy gas {}", reg_deploy.gas_used);

    for model in ["tiny_mlp", "digits_mlp", "mnist_mlp"] {
        let EvmCase {
            settings,
            srs,
            keys,
            code,
            instances: inst,
            proof: bytes,
        } = evm_case(model, 5);
        let words: Vec<_> = inst.iter().map(chain::word).collect();

        let (verifier, dep) = chain
            .deploy(hex::decode(&code.creation).unwrap())
            .await
            .unwrap();
        let packing = veriml_circuits::circuit::Packing::new(&settings.public_layout());
        let id = chain::model_id(model);
        let reg = chain
            .register(
                registry,
                id,
                verifier,
                chain::bytes32_from_hex(&settings.model_sha256).unwrap(),
                packing.input_words as u32,
                packing.output_words as u32,
                GAS_CAP,
            )
            .await
            .unwrap();
        let direct = chain.verify_direct(verifier, &words, &bytes).await.unwrap();
        let (ih, oh) = chain::result_hashes(&words, packing.input_words);
        assert!(!chain.is_verified(registry, id, ih, oh).await.unwrap());
        let tx = chain.verify(registry, id, &words, &bytes).await.unwrap();
        assert!(chain.is_verified(registry, id, ih, oh).await.unwrap());
        println!(
            "{model}: {} public words, verifier {} bytes, deploy gas {}, register gas {}, \
             verify tx gas {} through the registry, {} calling the verifier directly",
            words.len(),
            code.runtime_len(),
            dep.gas_used,
            reg.gas_used,
            tx.gas_used,
            direct.gas_used
        );
        if model == "digits_mlp" {
            // the target of the on-chain issue, for the transaction that verifies the proof;
            // recording the result in the registry adds about 46k (22.1k of it the SSTORE)
            assert!(
                direct.gas_used <= 350_000,
                "digits verify tx {}",
                direct.gas_used
            );
        }

        // tampering: the registry rejects, and so does the native verifier
        let r = alloy::primitives::U256::from_str_radix(
            "30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001",
            16,
        )
        .unwrap();
        let mut cases: Vec<(&str, Vec<alloy::primitives::U256>, Vec<u8>)> = Vec::new();
        for pos in [0, bytes.len() / 2, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[pos] ^= 1;
            cases.push(("flipped proof byte", words.clone(), b));
        }
        let mut off_curve = bytes.clone();
        off_curve[..64].fill(0);
        off_curve[31] = 1;
        off_curve[63] = 3;
        cases.push(("off-curve point", words.clone(), off_curve));
        for i in [0, words.len() - 1] {
            let mut w = words.clone();
            w[i] += alloy::primitives::U256::from(1);
            cases.push(("changed public word", w, bytes.clone()));
        }
        let mut w = words.clone();
        w[0] += r;
        cases.push(("input + r", w, bytes.clone()));
        cases.push((
            "missing public word",
            words[..words.len() - 1].to_vec(),
            bytes.clone(),
        ));
        for (what, w, b) in cases {
            let res = chain.verify(registry, id, &w, &b).await;
            assert!(
                matches!(res, Err(ProverError::Rejected(_))),
                "{model}: {what} accepted on chain: {res:?}"
            );
            // the native verifier sees the same words (where they are field elements)
            let native: Option<Vec<Fr>> = w
                .iter()
                .map(|x| {
                    let mut le = x.to_le_bytes::<32>();
                    le.reverse();
                    fr_from_hex(&hex::encode(le))
                })
                .collect();
            if let Some(nw) = native {
                assert!(
                    verify_raw(&srs.params, keys.pk.get_vk(), &nw, &b).is_err(),
                    "{model}: {what} accepted natively"
                );
            }
        }
        // an unregistered model id
        let res = chain
            .verify(registry, chain::model_id("no such model"), &words, &bytes)
            .await;
        assert!(matches!(res, Err(ProverError::Rejected(ref s)) if s.contains("unknown model")));
    }
    // registering an address without code is refused
    let res = chain
        .register(
            registry,
            chain::model_id("eoa"),
            chain.from,
            alloy::primitives::B256::ZERO,
            1,
            1,
            GAS_CAP,
        )
        .await;
    assert!(matches!(res, Err(ProverError::Rejected(ref s)) if s.contains("no contract code")));
}
