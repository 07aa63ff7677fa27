//! End to end on one machine: the runner (simulated attestation) in front of a local HTTP
//! server standing in for the provider; a client gets a completion and its receipt and checks
//! both the receipt and the attestation off-chain.

use axum::{routing::post, Json, Router};
use std::sync::Arc;
use std::time::Duration;
use veriml_tee::{
    receipt::{keccak, recover, Receipt},
    report::report_data_binding,
    service::{
        serve, AttestationResponse, AttesterMode, Config, LocalModelConfig, Runner, UpstreamConfig,
    },
    verify::{Policy, Verifier, VerifyError},
    SimulatedPlatform,
};

async fn fake_provider() -> String {
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|Json(req): Json<serde_json::Value>| async move {
                Json(serde_json::json!({
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": req["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}]
                }))
            }),
        )
        .route(
            "/slow/v1/chat/completions",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/broken/v1/chat/completions",
            post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "provider down") }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

async fn start_runner(upstream: &str, timeout_ms: u64) -> (String, Vec<u8>) {
    let platform = SimulatedPlatform::new([0u8; 48]);
    let ark = platform.ark_der().to_vec();
    let cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        chain_id: 84532,
        attester: AttesterMode::Simulated,
        upstream: Some(UpstreamConfig {
            base_url: upstream.into(),
            api_key_env: None,
            timeout_ms,
        }),
        local_model: Some(LocalModelConfig {
            name: "tiny_mlp".into(),
            path: concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../fixtures/models/tiny_mlp/model.onnx"
            )
            .into(),
        }),
    };
    let runner = Arc::new(Runner::new(cfg, Box::new(platform)).unwrap());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { serve(runner, l, std::future::pending()).await.unwrap() });
    (format!("http://{addr}"), ark)
}

async fn post_chat(runner: &str, body: &'static str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{runner}/v1/chat/completions"))
        .body(body)
        .send()
        .await
        .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()[name].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_receipt_and_attestation_verify_off_chain() {
    let provider = fake_provider().await;
    let (runner, ark) = start_runner(&provider, 2_000).await;
    let client = reqwest::Client::new();

    let health: serde_json::Value = client
        .get(format!("{runner}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    let request = br#"{"model":"gpt-test","messages":[{"role":"user","content":"2+2?"}]}"#.to_vec();
    let resp = client
        .post(format!("{runner}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let receipt: Receipt = serde_json::from_str(&header(&resp, "x-veriml-receipt")).unwrap();
    let sig = hex::decode(header(&resp, "x-veriml-signature").trim_start_matches("0x")).unwrap();
    let key = header(&resp, "x-veriml-key");
    let body = resp.bytes().await.unwrap().to_vec();
    let completion: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(completion["choices"][0]["message"]["content"], "4");

    // the receipt covers exactly these bytes, this chain and this model
    assert_eq!(receipt.response_hash, keccak(&body));
    assert_eq!(receipt.request_hash, keccak(&request));
    assert_eq!(receipt.model_id, keccak(b"gpt-test"));
    assert_eq!(receipt.chain_id, 84532);
    assert!(receipt.timestamp.abs_diff(now()) < 60);
    let signer = recover(&receipt.digest(), &sig).unwrap();
    assert_eq!(format!("0x{}", hex::encode(signer)), key);
    let mut changed = receipt.clone();
    changed.response_hash = keccak(b"something else");
    assert_ne!(recover(&changed.digest(), &sig).unwrap(), signer);

    // the attestation binds that key to our nonce
    let nonce = [0x5au8; 32];
    let att: AttestationResponse = client
        .get(format!("{runner}/attestation?nonce={}", hex::encode(nonce)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(att.simulated);
    assert_eq!(att.key, key);
    let unhex = |s: &str| hex::decode(s.trim_start_matches("0x")).unwrap();
    let public_key = unhex(&att.public_key);
    let report = unhex(&att.report);
    let vek = unhex(&att.vek);
    let inter: Vec<Vec<u8>> = att.intermediates.iter().map(|s| unhex(s)).collect();
    let policy = Policy {
        report_data: Some(report_data_binding(&public_key, &nonce)),
        measurements: Some(vec![[0u8; 48]]),
        ..Policy::default()
    };
    let dev = Verifier::amd().with_simulated_root(&ark).unwrap();
    let ok = dev
        .verify(&report, &vek, &inter, None, &policy, now())
        .unwrap();
    assert!(ok.simulated);
    // the public key in the attestation is the receipt key
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&public_key).unwrap();
    assert_eq!(veriml_tee::receipt::address_of(&vk), signer);
    // a production verifier refuses the simulated platform; another nonce is refused
    assert_eq!(
        Verifier::amd().verify(&report, &vek, &inter, None, &policy, now()),
        Err(VerifyError::ChainNotTrusted)
    );
    let other = Policy {
        report_data: Some(report_data_binding(&public_key, &[0u8; 32])),
        ..policy.clone()
    };
    assert_eq!(
        dev.verify(&report, &vek, &inter, None, &other, now()),
        Err(VerifyError::ReportData)
    );
    let bad = client
        .get(format!("{runner}/attestation?nonce=zz"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // local inference, signed the same way
    let input: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
    let req = serde_json::to_vec(&serde_json::json!({ "input": input })).unwrap();
    let resp = client
        .post(format!("{runner}/v1/infer"))
        .body(req.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let receipt: Receipt = serde_json::from_str(&header(&resp, "x-veriml-receipt")).unwrap();
    let sig = hex::decode(header(&resp, "x-veriml-signature").trim_start_matches("0x")).unwrap();
    let body = resp.bytes().await.unwrap().to_vec();
    assert_eq!(receipt.response_hash, keccak(&body));
    assert_eq!(recover(&receipt.digest(), &sig).unwrap(), signer);
    let out: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let graph = veriml_circuits::import::load_onnx(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/models/tiny_mlp/model.onnx"
    )))
    .unwrap();
    let want = graph.forward(&input);
    let got: Vec<f32> = out["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got, want);
    let wrong = client
        .post(format!("{runner}/v1/infer"))
        .body(r#"{"input":[1,2]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_clear_errors_without_receipts() {
    let provider = fake_provider().await;
    let body = r#"{"model":"m","messages":[]}"#;

    let (runner, _) = start_runner(&format!("{provider}/slow"), 300).await;
    let resp = post_chat(&runner, body).await;
    assert_eq!(resp.status(), 504);
    assert!(resp.headers().get("x-veriml-receipt").is_none());
    let e: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["type"], "upstream_timeout");

    let (runner, _) = start_runner(&format!("{provider}/broken"), 2_000).await;
    let resp = post_chat(&runner, body).await;
    assert_eq!(resp.status(), 502);
    let e: serde_json::Value = resp.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("500"));

    // nothing listens there
    let (runner, _) = start_runner("http://127.0.0.1:9", 2_000).await;
    let resp = post_chat(&runner, body).await;
    assert_eq!(resp.status(), 502);

    let resp = post_chat(&runner, "not json").await;
    assert_eq!(resp.status(), 400);
}
