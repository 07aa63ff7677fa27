//! On a local anvil (Osaka rules, Base Sepolia's chain id): the TeeRegistry is deployed, the
//! runner's key is registered with a quorum of attestation-verifier signatures after they
//! check its (simulated) attestation, and its receipts are verified on-chain; a changed
//! response hash, a replayed nonce, a revoked key and an expired key all fail.

use axum::{routing::post, Json, Router};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use veriml_tee::{
    receipt::{keccak, registration_digest, EthKey, Receipt},
    report::report_data_binding,
    service::{serve, AttestationResponse, AttesterMode, Config, Runner, UpstreamConfig},
    verify::{Policy, Verifier},
    SimulatedPlatform,
};

#[path = "../../testsupport/anvil.rs"]
mod anvil;
use anvil::{CHAIN_ID, DEV_ADDRESS as DEPLOYER, DEV_KEY as DEPLOYER_KEY};

const RECEIPT_TUPLE: &str = "verifyReceipt((uint256,bytes32,bytes32,bytes32,uint64,bytes32),bytes)";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(name: &str) -> Command {
    let mut c = Command::new(root().join("node_modules/.bin").join(name));
    c.current_dir(root());
    c
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

fn cast_send(url: &str, to: &str, sig: &str, args: &[String]) -> Output {
    let mut c = tool("cast");
    c.args([
        "send",
        "--rpc-url",
        url,
        "--private-key",
        DEPLOYER_KEY,
        to,
        sig,
    ]);
    c.args(args);
    run(c)
}

fn cast_call(url: &str, to: &str, sig: &str, args: &[String]) -> Output {
    let mut c = tool("cast");
    c.args(["call", "--rpc-url", url, "--from", DEPLOYER, to, sig]);
    c.args(args);
    run(c)
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The custom error a call reverts with, by its 4-byte selector.
fn reverts_with(o: &Output, error_signature: &str) {
    assert!(
        !o.status.success(),
        "expected a revert with {error_signature}"
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let selector = hex::encode(&keccak(error_signature.as_bytes())[..4]);
    assert!(
        text.contains(&selector),
        "expected {error_signature} (0x{selector}), got: {text}"
    );
}

fn hex0x(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

fn receipt_arg(r: &Receipt) -> String {
    format!(
        "({},{},{},{},{},{})",
        r.chain_id,
        hex0x(&r.model_id),
        hex0x(&r.request_hash),
        hex0x(&r.response_hash),
        r.timestamp,
        hex0x(&r.nonce)
    )
}

async fn completion(runner: &str, content: &str) -> (Receipt, String) {
    let resp = reqwest::Client::new()
        .post(format!("{runner}/v1/chat/completions"))
        .body(format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{content}"}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Receipt =
        serde_json::from_str(resp.headers()["x-veriml-receipt"].to_str().unwrap()).unwrap();
    let sig = resp.headers()["x-veriml-signature"]
        .to_str()
        .unwrap()
        .to_string();
    (r, sig)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_verify_on_anvil_and_tampering_fails() {
    // the provider stand-in and the runner
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|Json(_): Json<serde_json::Value>| async {
            Json(serde_json::json!({"choices": [{"message": {"content": "ok"}}]}))
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let platform = SimulatedPlatform::new([0u8; 48]);
    let ark = platform.ark_der().to_vec();
    let cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        chain_id: CHAIN_ID,
        attester: AttesterMode::Simulated,
        upstream: Some(UpstreamConfig {
            base_url: provider,
            api_key_env: None,
            timeout_ms: 5_000,
        }),
        local_model: None,
    };
    let runner_state = Arc::new(Runner::new(cfg, Box::new(platform)).unwrap());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let runner = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        serve(runner_state, l, std::future::pending())
            .await
            .unwrap()
    });

    // the chain and the registry
    let node = anvil::start(&root());
    let url = node.url.clone();
    let out = run({
        let mut c = tool("forge");
        c.args([
            "create",
            "verifier-contracts/src/TeeRegistry.sol:TeeRegistry",
            "--rpc-url",
            &url,
            "--private-key",
            DEPLOYER_KEY,
            "--broadcast",
            "--constructor-args",
            DEPLOYER,
            "600",
            "30",
        ]);
        c
    });
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let registry = text
        .lines()
        .find_map(|l| l.strip_prefix("Deployed to: "))
        .expect("forge create prints the address")
        .trim()
        .to_string();
    let registry_bytes: [u8; 20] = hex::decode(registry.trim_start_matches("0x"))
        .unwrap()
        .try_into()
        .unwrap();
    let operators = [EthKey::generate(), EthKey::generate(), EthKey::generate()];
    for op in &operators {
        ok(&cast_send(
            &url,
            &registry,
            "setAttestationVerifier(address,bool)",
            &[hex0x(&op.address()), "true".into()],
        ));
    }
    ok(&cast_send(
        &url,
        &registry,
        "setQuorum(uint256)",
        &["2".into()],
    ));

    // two operators check the runner's attestation off-chain, then sign its registration
    let nonce = [7u8; 32];
    let att: AttestationResponse =
        reqwest::get(format!("{runner}/attestation?nonce={}", hex::encode(nonce)))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let unhex = |s: &str| hex::decode(s.trim_start_matches("0x")).unwrap();
    let public_key = unhex(&att.public_key);
    let policy = Policy {
        report_data: Some(report_data_binding(&public_key, &nonce)),
        ..Policy::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let verified = Verifier::amd()
        .with_simulated_root(&ark)
        .unwrap()
        .verify(
            &unhex(&att.report),
            &unhex(&att.vek),
            &att.intermediates
                .iter()
                .map(|s| unhex(s))
                .collect::<Vec<_>>(),
            None,
            &policy,
            now,
        )
        .unwrap();
    let key: [u8; 20] = unhex(&att.key).try_into().unwrap();
    let measurement_hash = keccak(&verified.measurement);
    let expiry = now + 3600;
    let digest = registration_digest(
        CHAIN_ID,
        &registry_bytes,
        &key,
        &measurement_hash,
        7,
        expiry,
    );
    // the chain computes the same digest
    let onchain = cast_call(
        &url,
        &registry,
        "registrationDigest(address,bytes32,uint64,uint64)(bytes32)",
        &[
            att.key.clone(),
            hex0x(&measurement_hash),
            "7".into(),
            expiry.to_string(),
        ],
    );
    ok(&onchain);
    assert!(String::from_utf8_lossy(&onchain.stdout).contains(&hex::encode(digest)));
    let one = format!("[{}]", hex0x(&operators[0].sign_digest(&digest)));
    reverts_with(
        &cast_call(
            &url,
            &registry,
            "registerEnclave(address,bytes32,uint64,uint64,bytes[])",
            &[
                att.key.clone(),
                hex0x(&measurement_hash),
                "7".into(),
                expiry.to_string(),
                one,
            ],
        ),
        "QuorumNotReached(uint256,uint256)",
    );
    let two = format!(
        "[{},{}]",
        hex0x(&operators[0].sign_digest(&digest)),
        hex0x(&operators[2].sign_digest(&digest))
    );
    ok(&cast_send(
        &url,
        &registry,
        "registerEnclave(address,bytes32,uint64,uint64,bytes[])",
        &[
            att.key.clone(),
            hex0x(&measurement_hash),
            "7".into(),
            expiry.to_string(),
            two,
        ],
    ));

    // a receipt verifies once
    let (receipt, sig) = completion(&runner, "hello").await;
    ok(&cast_send(
        &url,
        &registry,
        RECEIPT_TUPLE,
        &[receipt_arg(&receipt), sig.clone()],
    ));
    reverts_with(
        &cast_call(
            &url,
            &registry,
            RECEIPT_TUPLE,
            &[receipt_arg(&receipt), sig.clone()],
        ),
        "NonceUsed(bytes32)",
    );
    // a changed response hash recovers another signer: unknown key
    let (receipt2, sig2) = completion(&runner, "again").await;
    let mut changed = receipt2.clone();
    changed.response_hash = keccak(b"a different answer");
    reverts_with(
        &cast_call(
            &url,
            &registry,
            RECEIPT_TUPLE,
            &[receipt_arg(&changed), sig2.clone()],
        ),
        "UnknownKey(address)",
    );
    ok(&cast_call(
        &url,
        &registry,
        RECEIPT_TUPLE,
        &[receipt_arg(&receipt2), sig2.clone()],
    ));

    // an expired key
    ok(&run({
        let mut c = tool("cast");
        c.args(["rpc", "--rpc-url", &url, "evm_increaseTime", "7200"]);
        c
    }));
    ok(&run({
        let mut c = tool("cast");
        c.args(["rpc", "--rpc-url", &url, "evm_mine"]);
        c
    }));
    reverts_with(
        &cast_call(
            &url,
            &registry,
            RECEIPT_TUPLE,
            &[receipt_arg(&receipt2), sig2.clone()],
        ),
        "KeyExpired(address,uint64)",
    );

    // a revoked key
    ok(&cast_send(
        &url,
        &registry,
        "revokeEnclave(address)",
        std::slice::from_ref(&att.key),
    ));
    reverts_with(
        &cast_call(
            &url,
            &registry,
            RECEIPT_TUPLE,
            &[receipt_arg(&receipt2), sig2],
        ),
        "KeyRevoked(address)",
    );
}
