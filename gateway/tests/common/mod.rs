//! What the gateway's tests share: an open model's folder, a stand-in provider and a TEE runner
//! in simulated mode.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use veriml_prover::{pipeline, Srs};

/// The bundled digits model compiled, set up (development SRS) and proven into `dir`, as
/// `veriml compile`/`setup`/`prove` would: its settings and proof file.
pub fn open_folder(dir: &Path) -> (veriml_circuits::Settings, veriml_prover::ProofFile) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits_mlp");
    let opts = veriml_circuits::QuantOptions {
        input_range: (0.0, 1.0),
        ..Default::default()
    };
    let (settings, compiled) =
        veriml_circuits::compile_model(&root.join("model.onnx"), &opts, &Default::default())
            .unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    write(
        "settings.json",
        serde_json::to_string_pretty(&settings).unwrap().as_bytes(),
    );
    write(
        "model.compiled.json",
        serde_json::to_string(&compiled).unwrap().as_bytes(),
    );
    let srs = Srs::insecure_dev(settings.circuit.k, 1);
    write("kzg.srs", &srs.to_bytes());
    let model = Arc::new(compiled.model);
    let keys = pipeline::setup(&settings, model.clone(), &srs).unwrap();
    write("pk.bin", &keys.pk_bytes());
    write("vk.bin", &keys.vk_bytes());
    let text = std::fs::read_to_string(root.join("input.json")).unwrap();
    let input = veriml_circuits::input::parse_input_json(&text).unwrap();
    let proof = pipeline::prove(&srs, &keys, &settings, model, &input).unwrap();
    (settings, proof)
}

/// A stand-in OpenAI-compatible provider on loopback: answers every chat completion with
/// `reply` after `delay`. Returns its base URL.
pub async fn start_provider(reply: &'static str, delay: Duration) -> String {
    use axum::{routing::post, Json, Router};
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |Json(req): Json<serde_json::Value>| async move {
            tokio::time::sleep(delay).await;
            Json(serde_json::json!({
                "object": "chat.completion",
                "model": req["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}],
            }))
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

/// The launch measurement of the simulated runners.
pub const MEASUREMENT: [u8; 48] = [0x11; 48];

/// A TEE runner on a simulated `platform` (chain `chain_id`) forwarding to `provider`; returns
/// its URL.
pub async fn start_runner(
    provider: &str,
    chain_id: u64,
    platform: veriml_tee::SimulatedPlatform,
) -> String {
    use veriml_tee::service::{serve, AttesterMode, Config, Runner, UpstreamConfig};
    let cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        chain_id,
        attester: AttesterMode::Simulated,
        upstream: Some(UpstreamConfig {
            base_url: provider.to_string(),
            api_key_env: None,
            timeout_ms: 5_000,
        }),
        local_model: None,
    };
    let runner = Arc::new(Runner::new(cfg, Box::new(platform)).unwrap());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { serve(runner, l, std::future::pending()).await.unwrap() });
    url
}
