//! The runner service: serves its attestation, forwards OpenAI-compatible chat completions to
//! an upstream provider, runs a local ONNX model, and signs a receipt for every result.
//!
//! Receipts travel in response headers so the body is returned byte for byte:
//! `x-veriml-receipt` (JSON [`Receipt`]), `x-veriml-signature` (`0x` + 65 bytes) and
//! `x-veriml-key` (the signing key's address). `response_hash` is `keccak256` of the body bytes
//! and `request_hash` of the request body bytes.

use crate::attester::Attester;
use crate::receipt::{keccak, EthKey, Receipt};
use crate::report::report_data_binding;
use axum::{
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the runner's attestation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttesterMode {
    /// `/dev/sev-guest`.
    Sev,
    /// The simulated platform (development; verifiers reject it unless told otherwise).
    Simulated,
}

/// The upstream provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamConfig {
    /// Base URL, e.g. `https://api.example.com`; `/v1/chat/completions` is appended.
    pub base_url: String,
    /// Name of the environment variable holding the API key (sent as a bearer token).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// A model served locally; its weights stay inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalModelConfig {
    pub name: String,
    pub path: String,
}

/// Runner configuration (a JSON file, with environment overrides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub listen: SocketAddr,
    /// Chain whose `TeeRegistry` checks the receipts (8453 Base, 84532 Base Sepolia).
    pub chain_id: u64,
    pub attester: AttesterMode,
    #[serde(default)]
    pub upstream: Option<UpstreamConfig>,
    #[serde(default)]
    pub local_model: Option<LocalModelConfig>,
}

/// Why the configuration or start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("bad configuration {path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("bad environment variable {name}: {detail}")]
    Env { name: &'static str, detail: String },
    #[error("cannot load the local model {path}: {detail}")]
    Model { path: String, detail: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("cannot obtain the runner's attestation at start: {0}")]
    Attestation(#[from] crate::attester::AttestError),
}

impl Config {
    /// Reads a JSON configuration file, then applies `VERIML_TEE_LISTEN`,
    /// `VERIML_TEE_CHAIN_ID` and `VERIML_TEE_UPSTREAM_URL` when set.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let mut cfg: Config = serde_json::from_str(&text).map_err(|e| ConfigError::Parse {
            path: p,
            detail: e.to_string(),
        })?;
        if let Ok(v) = std::env::var("VERIML_TEE_LISTEN") {
            cfg.listen = v.parse().map_err(|e| ConfigError::Env {
                name: "VERIML_TEE_LISTEN",
                detail: format!("{e}"),
            })?;
        }
        if let Ok(v) = std::env::var("VERIML_TEE_CHAIN_ID") {
            cfg.chain_id = v.parse().map_err(|e| ConfigError::Env {
                name: "VERIML_TEE_CHAIN_ID",
                detail: format!("{e}"),
            })?;
        }
        if let Ok(v) = std::env::var("VERIML_TEE_UPSTREAM_URL") {
            match &mut cfg.upstream {
                Some(u) => u.base_url = v,
                None => {
                    cfg.upstream = Some(UpstreamConfig {
                        base_url: v,
                        api_key_env: None,
                        timeout_ms: default_timeout_ms(),
                    })
                }
            }
        }
        Ok(cfg)
    }
}

/// The running service's state.
pub struct Runner {
    cfg: Config,
    key: EthKey,
    attester: Box<dyn Attester>,
    /// Obtained at start (nonce: the start time), served when a caller brings no nonce.
    startup: AttestationResponse,
    http: reqwest::Client,
    local: Option<(String, veriml_circuits::Graph)>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("key", &self.key)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize)]
struct ErrorDetail {
    message: String,
    r#type: &'static str,
}

fn error(status: StatusCode, kind: &'static str, message: String) -> Response {
    (
        status,
        Json(ErrorBody {
            error: ErrorDetail {
                message,
                r#type: kind,
            },
        }),
    )
        .into_response()
}

impl Runner {
    /// Creates the signing key (fresh, inside the guest) and loads the local model.
    pub fn new(cfg: Config, attester: Box<dyn Attester>) -> Result<Runner, ConfigError> {
        let timeout = cfg
            .upstream
            .as_ref()
            .map(|u| u.timeout_ms)
            .unwrap_or_else(default_timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout))
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        let local = match &cfg.local_model {
            Some(m) => {
                let g = veriml_circuits::import::load_onnx(Path::new(&m.path)).map_err(|e| {
                    ConfigError::Model {
                        path: m.path.clone(),
                        detail: e.to_string(),
                    }
                })?;
                Some((m.name.clone(), g))
            }
            None => None,
        };
        let key = EthKey::generate();
        let nonce = format!("veriml-runner-start-{}", now()).into_bytes();
        let startup = attestation_response(&key, attester.as_ref(), &nonce)?;
        Ok(Runner {
            cfg,
            key,
            attester,
            startup,
            http,
            local,
        })
    }

    /// The address of the key that signs receipts.
    pub fn key_address(&self) -> [u8; 20] {
        self.key.address()
    }

    fn receipt(&self, model: &str, request: &[u8], response: &[u8]) -> (Receipt, [u8; 65]) {
        let mut nonce = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let r = Receipt {
            chain_id: self.cfg.chain_id,
            model_id: keccak(model.as_bytes()),
            request_hash: keccak(request),
            response_hash: keccak(response),
            timestamp: now(),
            nonce,
        };
        let sig = self.key.sign_digest(&r.digest());
        (r, sig)
    }

    fn signed(&self, model: &str, request: &[u8], status: StatusCode, body: Vec<u8>) -> Response {
        let (r, sig) = self.receipt(model, request, &body);
        let mut headers = HeaderMap::new();
        let receipt = serde_json::to_string(&r).expect("receipt serializes");
        for (name, value) in [
            ("x-veriml-receipt", receipt),
            ("x-veriml-signature", format!("0x{}", hex::encode(sig))),
            (
                "x-veriml-key",
                format!("0x{}", hex::encode(self.key.address())),
            ),
            ("content-type", "application/json".to_string()),
        ] {
            headers.insert(name, HeaderValue::from_str(&value).expect("ascii header"));
        }
        (status, headers, body).into_response()
    }
}

/// `GET /health`
async fn health(State(r): State<Arc<Runner>>) -> Response {
    Json(serde_json::json!({
        "status": "ok",
        "key": format!("0x{}", hex::encode(r.key.address())),
        "attester": r.cfg.attester,
        "upstream": r.cfg.upstream.is_some(),
        "local_model": r.local.as_ref().map(|m| m.0.clone()),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct NonceQuery {
    nonce: Option<String>,
}

fn attestation_response(
    key: &EthKey,
    attester: &dyn Attester,
    nonce: &[u8],
) -> Result<AttestationResponse, crate::attester::AttestError> {
    let pk = key.public_key();
    let a = attester.attest(report_data_binding(&pk, nonce))?;
    Ok(AttestationResponse {
        report: format!("0x{}", hex::encode(&a.report)),
        vek: format!("0x{}", hex::encode(&a.vek)),
        intermediates: a
            .intermediates
            .iter()
            .map(|c| format!("0x{}", hex::encode(c)))
            .collect(),
        simulated: a.simulated,
        key: format!("0x{}", hex::encode(key.address())),
        public_key: format!("0x{}", hex::encode(&pk)),
        nonce: format!("0x{}", hex::encode(nonce)),
    })
}

/// What `GET /attestation` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttestationResponse {
    /// `0x` + hex of the raw report.
    pub report: String,
    pub vek: String,
    pub intermediates: Vec<String>,
    pub simulated: bool,
    /// The receipt key: address and SEC1 public key; REPORT_DATA binds the public key and nonce.
    pub key: String,
    pub public_key: String,
    pub nonce: String,
}

/// `GET /attestation?nonce=HEX`: a fresh report binding the signing key to the caller's
/// nonce; without a nonce, the report obtained at start.
async fn attestation(State(r): State<Arc<Runner>>, Query(q): Query<NonceQuery>) -> Response {
    let Some(nonce) = q.nonce else {
        return Json(r.startup.clone()).into_response();
    };
    let nonce = match hex::decode(nonce.trim_start_matches("0x")) {
        Ok(n) if (16..=64).contains(&n.len()) => n,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "nonce must be 16 to 64 bytes of hex".into(),
            )
        }
    };
    let runner = r.clone();
    let att = tokio::task::spawn_blocking(move || {
        attestation_response(&runner.key, runner.attester.as_ref(), &nonce)
    })
    .await;
    match att {
        Ok(Ok(a)) => Json(a).into_response(),
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "attestation_error",
            e.to_string(),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "attestation_error",
            e.to_string(),
        ),
    }
}

/// `POST /v1/chat/completions`: forwarded to the upstream provider, response signed.
async fn chat(State(r): State<Arc<Runner>>, body: Bytes) -> Response {
    let Some(up) = &r.cfg.upstream else {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "no upstream provider is configured".into(),
        );
    };
    let model = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => match v.get("model").and_then(|m| m.as_str()) {
            Some(m) => m.to_string(),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "the request has no `model` string".into(),
                )
            }
        },
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("the request is not JSON: {e}"),
            )
        }
    };
    let url = format!("{}/v1/chat/completions", up.base_url.trim_end_matches('/'));
    let mut req = r
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone());
    if let Some(var) = &up.api_key_env {
        match std::env::var(var) {
            Ok(k) => req = req.bearer_auth(k),
            Err(_) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "configuration_error",
                    format!("the API key variable {var} is not set"),
                )
            }
        }
    }
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) if e.is_timeout() => {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("the provider did not answer within {} ms", up.timeout_ms),
            )
        }
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("cannot reach the provider: {e}"),
            )
        }
    };
    let status = resp.status();
    let bytes = match resp.bytes().await {
        Ok(b) => b.to_vec(),
        Err(e) if e.is_timeout() => {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                e.to_string(),
            )
        }
        Err(e) => return error(StatusCode::BAD_GATEWAY, "upstream_error", e.to_string()),
    };
    if !status.is_success() {
        return error(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!(
                "the provider answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            ),
        );
    }
    r.signed(&model, &body, StatusCode::OK, bytes)
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    input: Vec<f32>,
}

/// `POST /v1/infer`: the local model on `{"input": [...]}`.
async fn infer(State(r): State<Arc<Runner>>, body: Bytes) -> Response {
    let Some((name, graph)) = &r.local else {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "no local model is configured".into(),
        );
    };
    let req: InferRequest = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("expected {{\"input\": [numbers]}}: {e}"),
            )
        }
    };
    if req.input.len() != graph.input_len() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!(
                "the model takes {} inputs, got {}",
                graph.input_len(),
                req.input.len()
            ),
        );
    }
    let output = graph.forward(&req.input);
    let out = serde_json::to_vec(&serde_json::json!({ "model": name, "output": output }))
        .expect("output serializes");
    r.signed(name, &body, StatusCode::OK, out)
}

/// The service's routes.
pub fn router(runner: Arc<Runner>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/attestation", get(attestation))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/infer", post(infer))
        .with_state(runner)
}

/// Serves on a bound listener until `shutdown` resolves.
pub async fn serve(
    runner: Arc<Runner>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(runner))
        .with_graceful_shutdown(shutdown)
        .await
}
