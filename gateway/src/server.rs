//! `veriml serve`: the HTTP gateway (tokio + axum).
//!
//! | route | what |
//! | --- | --- |
//! | `POST /v1/infer` | `{"model": ID, "input": …}`; an open model's input is its values (a flat or nested array of numbers), a closed model's is an OpenAI-style chat request (`messages`, …) |
//! | `GET /v1/jobs/{id}` | a job: state, stage, progress, and its receipt once done |
//! | `GET /v1/jobs/{id}/events` | the same as server-sent events (`event: job`), until the job is done or failed |
//! | `GET /v1/jobs?state=done&finished_after=N&limit=N` | finished jobs in the order they finished (the settlement agent reads these); `after=SEQ` instead lists in order of acceptance |
//! | `GET /v1/models` | the catalogue's models and what input each takes |
//! | `GET /health` | queue counts |
//!
//! Open models are proven by a pool of workers: `POST /v1/infer` checks the input (shape, the
//! declared range) and answers `202` with the job at once; a full queue answers `429` with
//! `Retry-After`. Closed models are forwarded to their TEE runner and answered `200` with the
//! finished job (the receipt checked against the catalogue before it is returned; the runner's
//! key attested first: its SEV-SNP report must carry one of the catalogue's measurements for the
//! model and bind the key to a fresh nonce, else `502 runner_unattested`). Every error
//! is `{"error": KIND, "message": …}` with a 4xx (the request) or 5xx (a runner or the gateway)
//! status; a runner that does not answer within the timeout gives `504`, one that cannot be
//! reached `502`.

use crate::catalogue::{Catalogue, ClosedModel, Entry};
use crate::jobs::{Claim, Job, JobState, JobStore, Page, StoreError};
use crate::receipt::InferenceReceipt;
use axum::{
    body::Body,
    extract::{Path as UrlPath, Query, State},
    http::{header, HeaderValue, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{broadcast, Notify};
use veriml_circuits::{QuantizedModel, Settings};
use veriml_prover::engine::EngineParams;
use veriml_prover::msm::MsmChoice;
use veriml_prover::{pipeline, Srs};
use veriml_tee::client::{attest_runner, AttestClientError};
use veriml_tee::receipt::keccak;

/// How the gateway runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// The job database (created when missing).
    pub db: PathBuf,
    /// Proving workers (each proves one job at a time).
    pub workers: usize,
    /// Most queued jobs; beyond it requests get 429.
    pub max_queue: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// How long to wait for a TEE runner.
    pub runner_timeout: Duration,
    /// What `Retry-After` says when the queue is full, in seconds.
    pub retry_after_s: u64,
    /// DEVELOPMENT ONLY: a simulated SEV-SNP root certificate (DER) to trust besides AMD's, for
    /// runners in simulated mode.
    pub tee_simulated_root: Option<Vec<u8>>,
    /// The MSM backend of the workers' proofs.
    pub msm: MsmChoice,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            db: PathBuf::from("veriml-jobs.sqlite"),
            workers: 1,
            max_queue: 64,
            max_body_bytes: 1 << 20,
            runner_timeout: Duration::from_secs(60),
            retry_after_s: 5,
            tee_simulated_root: None,
            msm: MsmChoice::Auto,
        }
    }
}

/// Why the gateway cannot start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("model `{id}`: {detail}")]
    Model { id: String, detail: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("cannot listen on {addr}: {detail}")]
    Listen { addr: SocketAddr, detail: String },
    #[error("the configuration: {0}")]
    Config(String),
}

/// An open model as the gateway holds it: what checks an input at once, and the keys (loaded
/// by the first job).
struct OpenState {
    dir: PathBuf,
    settings: Settings,
    model: Arc<QuantizedModel>,
    keys: Mutex<Option<Arc<Prepared>>>,
}

/// What a worker loads once per open model: the proving key, the SRS and the prover's
/// commitment parameters (with the MSM backend).
struct Prepared {
    keys: pipeline::Keys,
    srs: Srs,
    params: EngineParams,
}

/// The gateway's shared state.
pub struct Gateway {
    catalogue: Catalogue,
    open: HashMap<String, Arc<OpenState>>,
    store: JobStore,
    cfg: ServeConfig,
    wake: Notify,
    events: broadcast::Sender<Job>,
    http: reqwest::Client,
    /// Runner URL => the address of its key, attested (report checked against the catalogue's
    /// measurements, bound to the key and a fresh nonce) when the runner was first used.
    /// The measurement it attested to is kept with it: a model sharing the runner whose
    /// catalogue entry does not list that measurement does not trust it.
    /// One lock per runner (held while it is attested, so a slow or absent runner delays only
    /// its own models' requests).
    attested: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<RunnerTrust>>>>>,
    /// Set when the gateway stops: event streams end then.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Closed-model requests in flight, at most `max_queue` (then 429).
    closed_slots: Arc<tokio::sync::Semaphore>,
    requeued: usize,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("models", &self.catalogue.models.keys().collect::<Vec<_>>())
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// A runner's attested key and the launch measurement it attested to.
type RunnerTrust = ([u8; 20], [u8; 48]);

/// An error answer: status, kind, message naming the problem.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, message)
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.kind, "message": self.message})),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// The dimensions of a regular nested array of numbers (`[]` for a number); `None` when ragged
/// or not numbers.
fn nested_shape(v: &Value) -> Option<Vec<usize>> {
    match v {
        Value::Number(_) => Some(vec![]),
        Value::Array(items) => {
            let first = items.first().map(nested_shape).unwrap_or(Some(vec![]))?;
            for it in items.iter().skip(1) {
                if nested_shape(it)? != first {
                    return None;
                }
            }
            let mut s = vec![items.len()];
            s.extend(first);
            Some(s)
        }
        _ => None,
    }
}

fn strip_ones(s: &[usize]) -> &[usize] {
    let i = s.iter().position(|&d| d != 1).unwrap_or(s.len());
    &s[i..]
}

/// Checks an open model's input: a flat array of all its values, or a nested array of the
/// model's shape (leading 1s aside), every value finite and in the declared range.
fn open_input(id: &str, m: &OpenState, input: &Value) -> Result<Vec<f64>, ApiError> {
    let want = &m.settings.input_shape;
    let n: usize = want.iter().product();
    let shape = nested_shape(input).ok_or_else(|| {
        ApiError::bad(
            "bad_input",
            format!(
                "`input` of model `{id}` must be an array of numbers (flat, or nested as {want:?})"
            ),
        )
    })?;
    let flat_ok = shape.len() == 1 && shape[0] == n;
    if !flat_ok && strip_ones(&shape) != strip_ones(want) {
        return Err(ApiError::bad(
            "bad_input_shape",
            format!("`input` has shape {shape:?}; model `{id}` takes {want:?} ({n} values)"),
        ));
    }
    let values = veriml_circuits::input::flatten_numbers(input)
        .map_err(|e| ApiError::bad("bad_input", format!("`input`: {e}")))?;
    m.model
        .quantize_input(&values)
        .map_err(|e| ApiError::bad("input_out_of_range", format!("model `{id}`: {e}")))?;
    Ok(values)
}

#[derive(Deserialize)]
struct InferBody {
    model: String,
    input: Value,
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    #[serde(default)]
    after: i64,
    finished_after: Option<i64>,
    limit: Option<usize>,
}

impl Gateway {
    /// Loads every open model of the catalogue (its folder must still hold it) and opens the
    /// job database, putting interrupted jobs back in the queue.
    pub fn new(catalogue: Catalogue, cfg: ServeConfig) -> Result<Arc<Gateway>, StartError> {
        if cfg.workers == 0 || cfg.max_queue == 0 {
            return Err(StartError::Config(
                "at least one worker and a queue of at least one job".into(),
            ));
        }
        let mut open = HashMap::new();
        for (id, entry) in &catalogue.models {
            if let Entry::Open(m) = entry {
                let fail = |detail: String| StartError::Model {
                    id: id.clone(),
                    detail,
                };
                let settings = m.check().map_err(|e| fail(e.to_string()))?;
                let mp = m.dir.join("model.compiled.json");
                let compiled = std::fs::read_to_string(&mp)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        veriml_circuits::CompiledModel::from_json(&t).map_err(|e| e.to_string())
                    })
                    .map_err(|e| fail(format!("{}: {e}", mp.display())))?;
                settings
                    .check_model(&compiled.model)
                    .map_err(|e| fail(e.to_string()))?;
                open.insert(
                    id.clone(),
                    Arc::new(OpenState {
                        dir: m.dir.clone(),
                        settings,
                        model: Arc::new(compiled.model),
                        keys: Mutex::new(None),
                    }),
                );
            }
        }
        let (store, requeued) = JobStore::open(&cfg.db)?;
        let http = reqwest::Client::builder()
            .timeout(cfg.runner_timeout)
            .connect_timeout(cfg.runner_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| StartError::Client(e.to_string()))?;
        let (events, _) = broadcast::channel(1024);
        let cfg_max_queue = cfg.max_queue;
        Ok(Arc::new(Gateway {
            catalogue,
            open,
            store,
            cfg,
            wake: Notify::new(),
            events,
            http,
            attested: Mutex::new(HashMap::new()),
            closed_slots: Arc::new(tokio::sync::Semaphore::new(cfg_max_queue)),
            stopping: tokio::sync::watch::Sender::new(false),
            requeued,
        }))
    }

    /// How many jobs an earlier process left running and this start queued again.
    pub fn requeued_at_start(&self) -> usize {
        self.requeued
    }

    /// 429 `queue_full` with `Retry-After`: `max_queue` of `what` already.
    fn busy(&self, what: &str) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!(
                "{} {what} already; retry in {} s",
                self.cfg.max_queue, self.cfg.retry_after_s
            ),
        );
        e.retry_after = Some(self.cfg.retry_after_s);
        e
    }

    /// The job store (for tools and tests).
    pub fn store(&self) -> &JobStore {
        &self.store
    }

    fn publish(&self, id: &str) {
        if let Ok(Some(job)) = self.store.get(id) {
            let _ = self.events.send(job);
        }
    }

    async fn infer(self: Arc<Self>, body: Body) -> Result<Response, ApiError> {
        let limit = self.cfg.max_body_bytes;
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
            // the limit's error, or the connection's (a client that stopped sending)
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            let mut too_large = false;
            while let Some(err) = source {
                too_large |= err.to_string().contains("length limit");
                source = err.source();
            }
            if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body is over the {limit}-byte limit"),
                )
            } else {
                ApiError::bad(
                    "unreadable_body",
                    format!("cannot read the request body: {e}"),
                )
            }
        })?;
        let req: InferBody = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad(
                "malformed_request",
                format!("expected {{\"model\": ID, \"input\": …}}: {e}"),
            )
        })?;
        let entry = self.catalogue.get(&req.model).map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_model",
                format!(
                    "no model `{}` in the catalogue (GET /v1/models lists them)",
                    req.model
                ),
            )
        })?;
        match entry {
            Entry::Open(_) => {
                let m = self.open.get(&req.model).expect("open models are loaded");
                open_input(&req.model, m, &req.input)?;
                let gw = self.clone();
                let (model, input, max) = (req.model.clone(), req.input, self.cfg.max_queue);
                let job =
                    tokio::task::spawn_blocking(move || gw.store.enqueue(&model, &input, max))
                        .await
                        .map_err(ApiError::internal)?
                        .map_err(ApiError::internal)?;
                let Some(job) = job else {
                    return Err(self.busy("proving jobs are waiting"));
                };
                self.wake.notify_one();
                let _ = self.events.send(job.clone());
                Ok((StatusCode::ACCEPTED, Json(job)).into_response())
            }
            Entry::Closed(c) => {
                let Ok(_slot) = self.closed_slots.clone().try_acquire_owned() else {
                    return Err(self.busy("closed-model requests are in flight"));
                };
                let c = c.clone();
                let receipt = self.closed(&req.model, &c, req.input.clone()).await?;
                let value = serde_json::to_value(&receipt).map_err(ApiError::internal)?;
                let gw = self.clone();
                let model = req.model.clone();
                let job = tokio::task::spawn_blocking(move || {
                    gw.store.insert_done(&model, &req.input, &value)
                })
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
                Ok((StatusCode::OK, Json(job)).into_response())
            }
        }
    }

    /// Forwards a chat request to the closed model's runner; the signed answer becomes a
    /// receipt, checked against the catalogue before it is returned.
    async fn closed(
        &self,
        id: &str,
        m: &ClosedModel,
        input: Value,
    ) -> Result<InferenceReceipt, ApiError> {
        let Value::Object(mut req) = input else {
            return Err(ApiError::bad(
                "bad_input",
                format!(
                    "`input` of closed model `{id}` must be a chat request object (`messages`, …)"
                ),
            ));
        };
        if !matches!(req.get("messages"), Some(Value::Array(a)) if !a.is_empty()) {
            return Err(ApiError::bad(
                "bad_input",
                format!("`input.messages` of closed model `{id}` must be a non-empty array"),
            ));
        }
        match req.get("model") {
            None => {
                req.insert("model".into(), Value::String(m.provider_model.clone()));
            }
            Some(Value::String(s)) if *s == m.provider_model => {}
            Some(other) => {
                return Err(ApiError::bad(
                    "bad_input",
                    format!(
                        "`input.model` is {other}, but `{id}` is `{}` (leave it out)",
                        m.provider_model
                    ),
                ))
            }
        }
        if req.get("stream").and_then(Value::as_bool) == Some(true) {
            return Err(ApiError::bad(
                "bad_input",
                "streamed completions cannot be receipted; leave out `stream`",
            ));
        }
        let body = serde_json::to_vec(&Value::Object(req)).map_err(ApiError::internal)?;
        // the request goes to an attested runner only
        let attested = self.runner_key(id, m, false).await?;
        let url = format!("{}/v1/chat/completions", m.runner.trim_end_matches('/'));
        let resp = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| runner_error(&url, self.cfg.runner_timeout, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .map_err(|e| runner_error(&url, self.cfg.runner_timeout, e))?;
        if !status.is_success() {
            // the request itself refused (by the runner or the provider): the client's to fix
            let (gw_status, kind) = match status.as_u16() {
                400 | 404 | 413 | 422 => (StatusCode::BAD_REQUEST, "request_refused"),
                429 => (StatusCode::TOO_MANY_REQUESTS, "runner_busy"),
                504 => (StatusCode::GATEWAY_TIMEOUT, "runner_error"),
                _ => (StatusCode::BAD_GATEWAY, "runner_error"),
            };
            return Err(ApiError::new(
                gw_status,
                kind,
                format!(
                    "the TEE runner at {url} answered {status}: {}",
                    text.chars().take(500).collect::<String>()
                ),
            ));
        }
        let header = |name: &str| -> Result<String, ApiError> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "runner_error",
                        format!("the TEE runner at {url} sent no {name} header"),
                    )
                })
        };
        let bad_runner = |what: &str, e: String| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "runner_error",
                format!("the TEE runner's {what}: {e}"),
            )
        };
        let tee: veriml_tee::receipt::Receipt = serde_json::from_str(&header("x-veriml-receipt")?)
            .map_err(|e| bad_runner("receipt", e.to_string()))?;
        let hex_header = |name: &str, len: usize| -> Result<Vec<u8>, ApiError> {
            let b = hex::decode(header(name)?.trim_start_matches("0x"))
                .map_err(|e| bad_runner(name, e.to_string()))?;
            if b.len() != len {
                return Err(bad_runner(name, format!("{} bytes, not {len}", b.len())));
            }
            Ok(b)
        };
        let sig: [u8; 65] = hex_header("x-veriml-signature", 65)?
            .try_into()
            .expect("65 bytes");
        let key: [u8; 20] = hex_header("x-veriml-key", 20)?
            .try_into()
            .expect("20 bytes");
        if key != attested {
            // a runner that restarted has a new key: attest it again before trusting it
            if key != self.runner_key(id, m, true).await? {
                return Err(bad_runner(
                    "answer",
                    format!(
                        "signed by 0x{}, not by the runner's attested key",
                        hex::encode(key)
                    ),
                ));
            }
        }
        if tee.request_hash != keccak(&body) {
            return Err(bad_runner(
                "receipt",
                "it signs another request than the one sent".into(),
            ));
        }
        let request = String::from_utf8(body).map_err(ApiError::internal)?;
        let receipt = InferenceReceipt::closed(id, tee, &sig, &key, Some(request), text);
        receipt
            .verify(&self.catalogue, false)
            .map_err(|e| bad_runner("answer does not check out", e.to_string()))?;
        Ok(receipt)
    }

    /// The attested key of a closed model's runner: its report must chain to AMD (or the
    /// configured simulated root), carry one of the catalogue's measurements, and bind the key
    /// with a fresh nonce. Cached per runner (with the measurement, which each model's entry must
    /// list); `again` attests anew.
    async fn runner_key(
        &self,
        id: &str,
        m: &ClosedModel,
        again: bool,
    ) -> Result<[u8; 20], ApiError> {
        let slot = self
            .attested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(m.runner.clone())
            .or_default()
            .clone();
        let mut cache = slot.lock().await;
        if !again {
            if let Some((k, measurement)) = cache.as_ref() {
                if m.measurements.contains(&hex::encode(measurement)) {
                    return Ok(*k);
                }
            }
        }
        let measurements = m
            .measurements
            .iter()
            .filter_map(|x| hex::decode(x).ok()?.try_into().ok())
            .collect::<Vec<[u8; 48]>>();
        let attested = attest_runner(
            &self.http,
            &m.runner,
            &measurements,
            self.cfg.tee_simulated_root.as_deref(),
        )
        .await
        .map_err(|e| match e {
            AttestClientError::Timeout { .. } => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "runner_timeout",
                format!("model `{id}`: {e}"),
            ),
            AttestClientError::Unreachable { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "runner_unreachable",
                format!("model `{id}`: {e}"),
            ),
            AttestClientError::Unattested { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "runner_unattested",
                format!("model `{id}`: {e}"),
            ),
        })?;
        let key = attested.key;
        *cache = Some((key, attested.report.measurement));
        Ok(key)
    }

    /// Proves one claimed job (blocking: run on a blocking thread).
    fn prove(&self, claim: &Claim) -> Result<Value, String> {
        let m = self
            .open
            .get(&claim.model_id)
            .ok_or_else(|| format!("model `{}` is no longer served", claim.model_id))?;
        let input = open_input(&claim.model_id, m, &claim.input).map_err(|e| e.message)?;
        let cached = m.keys.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let keys = match cached {
            Some(k) => k,
            None => {
                self.stage(claim, "loading the proving key", 0.05);
                let settings = &m.settings;
                let srs = Srs::read(&m.dir.join("kzg.srs"))
                    .and_then(|s| s.downsized(settings.circuit.k))
                    .map_err(|e| e.to_string())?;
                let keys = pipeline::Keys::read_pk(&m.dir.join("pk.bin"), settings)
                    .map_err(|e| e.to_string())?;
                let (params, warning) =
                    pipeline::engine(&srs, self.cfg.msm).map_err(|e| e.to_string())?;
                if let Some(w) = warning {
                    eprintln!("veriml serve: {w}");
                }
                let k = Arc::new(Prepared { keys, srs, params });
                *m.keys.lock().unwrap_or_else(|p| p.into_inner()) = Some(k.clone());
                k
            }
        };
        self.stage(claim, "proving", 0.2);
        let proof = pipeline::prove_with(
            &keys.srs,
            &keys.params,
            &keys.keys,
            &m.settings,
            m.model.clone(),
            &input,
        )
        .map_err(|e| e.to_string())?;
        self.stage(claim, "writing the receipt", 0.95);
        let receipt = InferenceReceipt::open(&claim.model_id, &m.settings, proof)
            .map_err(|e| e.to_string())?;
        serde_json::to_value(&receipt).map_err(|e| e.to_string())
    }

    fn stage(&self, claim: &Claim, stage: &str, progress: f64) {
        if let Ok(true) = self.store.progress(claim, stage, progress) {
            self.publish(&claim.id);
        }
    }

    /// One worker: claims queued jobs and proves them until the process ends.
    async fn worker(self: Arc<Self>) {
        loop {
            let notified = self.wake.notified();
            let gw = self.clone();
            let claim = tokio::task::spawn_blocking(move || gw.store.claim()).await;
            let claim = match claim {
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
                    continue;
                }
                Ok(Err(e)) => {
                    eprintln!("veriml serve: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    eprintln!("veriml serve: a worker's claim failed: {e}");
                    continue;
                }
            };
            self.publish(&claim.id);
            let gw = self.clone();
            let c = claim.clone();
            let result = tokio::task::spawn_blocking(move || gw.prove(&c))
                .await
                .unwrap_or_else(|e| Err(format!("the prover stopped: {e}")));
            let gw = self.clone();
            let c = claim.clone();
            let done = tokio::task::spawn_blocking(move || {
                gw.store.finish(&c, result.as_ref().map_err(String::as_str))
            })
            .await;
            match done {
                Ok(Ok(_)) => self.publish(&claim.id),
                Ok(Err(e)) => eprintln!("veriml serve: {e}"),
                Err(e) => eprintln!("veriml serve: recording job {}: {e}", claim.id),
            }
        }
    }

    fn job(&self, id: &str) -> Result<Job, ApiError> {
        self.store
            .get(id)
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_job",
                    format!("no job `{id}`"),
                )
            })
    }

    fn models(&self) -> Value {
        let models: Vec<Value> = self
            .catalogue
            .models
            .iter()
            .map(|(id, e)| match e {
                Entry::Open(m) => json!({
                    "id": id, "kind": "open", "input_shape": m.input_shape,
                    "output_shape": m.output_shape, "input_range": m.input_range,
                    "onchain": m.onchain,
                }),
                Entry::Closed(m) => json!({
                    "id": id, "kind": "closed", "provider_model": m.provider_model,
                    "input": "an OpenAI-style chat request (`messages`, …)",
                }),
            })
            .collect();
        json!({ "models": models })
    }
}

fn runner_error(url: &str, timeout: Duration, e: reqwest::Error) -> ApiError {
    if e.is_timeout() {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "runner_timeout",
            format!(
                "the TEE runner at {url} did not answer within {} ms",
                timeout.as_millis()
            ),
        )
    } else {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "runner_unreachable",
            format!("cannot reach the TEE runner at {url}: {e}"),
        )
    }
}

async fn infer(State(gw): State<Arc<Gateway>>, body: Body) -> Response {
    gw.infer(body).await.unwrap_or_else(|e| e.into_response())
}

async fn get_job(State(gw): State<Arc<Gateway>>, UrlPath(id): UrlPath<String>) -> Response {
    match gw.job(&id) {
        Ok(j) => Json(j).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_jobs(
    State(gw): State<Arc<Gateway>>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => {
            return ApiError::bad(
                "bad_query",
                format!("{} (state, after, finished_after, limit)", e.body_text()),
            )
            .into_response()
        }
    };
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => match serde_json::from_value::<JobState>(Value::String(s.into())) {
            Ok(st) => Some(st),
            Err(_) => {
                return ApiError::bad(
                    "bad_query",
                    format!("state `{s}` is not one of queued, running, done, failed"),
                )
                .into_response()
            }
        },
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page = match q.finished_after {
        Some(n) => Page::FinishedAfter(n),
        None => Page::AcceptedAfter(q.after),
    };
    match gw.store.list(state, page, limit) {
        Ok(jobs) => Json(json!({ "jobs": jobs })).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

async fn job_events(State(gw): State<Arc<Gateway>>, UrlPath(id): UrlPath<String>) -> Response {
    // subscribe before reading, so no change falls between the two
    let rx = gw.events.subscribe();
    let first = match gw.job(&id) {
        Ok(j) => j,
        Err(e) => return e.into_response(),
    };
    let event = |j: &Job| {
        Event::default()
            .event("job")
            .json_data(j)
            .unwrap_or_else(|_| Event::default().event("job"))
    };
    type St = (
        Option<Job>,
        broadcast::Receiver<Job>,
        Arc<Gateway>,
        String,
        bool,
    );
    let init: St = (Some(first), rx, gw, id, false);
    let stream = futures_util::stream::unfold(init, move |(pending, mut rx, gw, id, ended)| {
        async move {
            if ended {
                return None;
            }
            if let Some(j) = pending {
                let fin = j.state.is_final();
                return Some((
                    Ok::<_, std::convert::Infallible>(event(&j)),
                    (None, rx, gw, id, fin),
                ));
            }
            let mut stopping = gw.stopping.subscribe();
            loop {
                if *stopping.borrow() {
                    // the gateway is stopping: end the stream so the stop does not wait on it
                    return None;
                }
                let next = tokio::select! {
                    n = tokio::time::timeout(Duration::from_secs(5), rx.recv()) => n,
                    _ = stopping.changed() => continue,
                };
                match next {
                    Ok(Ok(j)) if j.id == id => {
                        let fin = j.state.is_final();
                        return Some((Ok(event(&j)), (None, rx, gw, id, fin)));
                    }
                    Ok(Ok(_)) => continue,
                    // missed messages, a quiet spell or a closed channel: read the job again
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => {
                        if let Ok(Some(j)) = gw.store.get(&id) {
                            if j.state.is_final() {
                                return Some((Ok(event(&j)), (None, rx, gw, id, true)));
                            }
                        }
                    }
                    Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                }
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn models(State(gw): State<Arc<Gateway>>) -> Response {
    Json(gw.models()).into_response()
}

async fn health(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.store.counts() {
        Ok([queued, running, done, failed]) => Json(json!({
            "status": "ok", "workers": gw.cfg.workers, "max_queue": gw.cfg.max_queue,
            "jobs": {"queued": queued, "running": running, "done": done, "failed": failed},
        }))
        .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route (POST /v1/infer, GET /v1/jobs/{id}, GET /v1/jobs/{id}/events, GET /v1/jobs, GET /v1/models, GET /health)",
    )
    .into_response()
}

/// The gateway's routes.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/infer", post(infer))
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(not_found)
        .with_state(gw)
}

/// Starts the workers and serves on `listener` until `shutdown` resolves. Jobs a worker is
/// proving at shutdown stay `running` in the database and are queued again at the next start.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    for _ in 0..gw.cfg.workers {
        tokio::spawn(gw.clone().worker());
    }
    let stopping = gw.stopping.clone();
    axum::serve(listener, router(gw))
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stopping.send(true);
        })
        .await
}

/// Binds the configured address (for the CLI).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Listen {
            addr,
            detail: e.to_string(),
        })
}

/// Reads the catalogue file for [`Gateway::new`].
pub fn load_catalogue(path: &Path) -> Result<Catalogue, StartError> {
    Catalogue::load(path).map_err(|e| StartError::Config(e.to_string()))
}
