//! `veriml serve` and `veriml settle`: the gateway and the settlement agent (the work is done by
//! `veriml_gateway::server` and `veriml_gateway::settle`).

use crate::onchain::{runtime, ChainArgs};
use crate::Ui;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use veriml_gateway::server::{self, Gateway, ServeConfig};
use veriml_gateway::settle::{self, Outcome, SettleConfig, Settler};
use veriml_gateway::Catalogue;

/// `veriml serve`'s options.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The model catalogue (`veriml models add` writes it).
    #[arg(long, env = "VERIML_CATALOGUE", default_value = "veriml-models.json")]
    pub catalogue: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "VERIML_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The job database (SQLite; created when missing; jobs survive restarts in it).
    #[arg(long, env = "VERIML_JOBS_DB", default_value = "veriml-jobs.sqlite")]
    pub db: PathBuf,
    /// Proving workers (each proves one job at a time).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Most jobs waiting; further requests get 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// How long to wait for a TEE runner, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub runner_timeout_ms: u64,
    /// DEVELOPMENT ONLY: also trust this simulated SEV-SNP root certificate (DER) when
    /// attesting runners in simulated mode.
    #[arg(long)]
    pub tee_simulated_root: Option<PathBuf>,
    /// MSM backend of the proofs (as `veriml prove --msm`).
    #[arg(long, default_value = "auto", env = "VERIML_MSM")]
    pub msm: veriml_prover::msm::MsmChoice,
}

/// `veriml settle`'s options.
#[derive(Args, Debug, Clone)]
pub struct SettleArgs {
    /// The model catalogue the receipts are checked against.
    #[arg(long, env = "VERIML_CATALOGUE", default_value = "veriml-models.json")]
    pub catalogue: PathBuf,
    /// The InferenceRegistry contract.
    #[arg(long, env = "VERIML_INFERENCE_REGISTRY")]
    pub registry: String,
    #[command(flatten)]
    pub chain: ChainArgs,
    /// The settlement records (SQLite; created when missing).
    #[arg(long, env = "VERIML_SETTLE_DB", default_value = "veriml-settle.sqlite")]
    pub db: PathBuf,
    /// Settle the finished jobs of this gateway (those not seen before).
    #[arg(long)]
    pub gateway: Option<String>,
    /// With --gateway: keep watching it, polling every this many seconds (Ctrl-C stops).
    #[arg(long, requires = "gateway")]
    pub follow: Option<u64>,
    /// Receipt files to settle.
    pub receipts: Vec<PathBuf>,
    /// Attempts at each node call before giving up.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Seconds to wait for a sent transaction to be mined.
    #[arg(long, default_value_t = 120)]
    pub confirm_timeout: u64,
}

/// Runs the gateway until Ctrl-C or SIGTERM.
pub fn serve(ui: &Ui, a: &ServeArgs) -> Result<serde_json::Value> {
    let catalogue = Catalogue::load(&a.catalogue)?;
    let cfg = ServeConfig {
        listen: a.listen,
        db: a.db.clone(),
        workers: a.workers,
        max_queue: a.max_queue,
        max_body_bytes: a.max_body,
        runner_timeout: Duration::from_millis(a.runner_timeout_ms),
        tee_simulated_root: match &a.tee_simulated_root {
            Some(p) => {
                Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
            }
            None => None,
        },
        msm: a.msm,
        ..ServeConfig::default()
    };
    let rt = runtime()?;
    rt.block_on(async {
        let gw = Gateway::new(catalogue, cfg)?;
        if gw.requeued_at_start() > 0 {
            eprintln!(
                "veriml serve: {} interrupted job(s) queued again",
                gw.requeued_at_start()
            );
        }
        let listener = server::bind(a.listen).await?;
        let addr = listener.local_addr()?;
        if ui.json {
            // one line a script can wait for
            println!("{}", json!({"listening": addr.to_string()}));
        } else {
            eprintln!(
                "veriml serve: listening on http://{addr} ({} workers, queue of {}, jobs in {})",
                a.workers,
                a.max_queue,
                a.db.display()
            );
        }
        server::serve(gw, listener, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(json!({"stopped": true}))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn outcome_line(what: &str, o: &Outcome) -> String {
    match o {
        Outcome::Settled {
            tx_hash, gas_used, ..
        } => format!("{what}: settled in {tx_hash} ({gas_used} gas)"),
        Outcome::AlreadySettled { .. } => format!("{what}: settled before, nothing sent"),
        Outcome::Invalid { reason, .. } => format!("{what}: INVALID, not submitted: {reason}"),
        Outcome::Deferred { reason, .. } => {
            format!("{what}: deferred, tried again at the next run: {reason}")
        }
    }
}

/// Checks and settles receipts (files, and/or a gateway's finished jobs).
pub fn settle(ui: &Ui, a: &SettleArgs, allow_insecure: bool) -> Result<serde_json::Value> {
    if a.receipts.is_empty() && a.gateway.is_none() {
        bail!("nothing to settle: give receipt files or --gateway URL");
    }
    let catalogue = Catalogue::load(&a.catalogue)?;
    let registry = a
        .registry
        .parse()
        .with_context(|| format!("--registry `{}` is not an address", a.registry))?;
    let cfg = SettleConfig {
        rpc_url: a.chain.rpc.clone(),
        private_key: a.chain.private_key.clone(),
        registry,
        db: a.db.clone(),
        allow_insecure_srs: allow_insecure,
        retries: a.retries,
        backoff: Duration::from_millis(500),
        confirm_timeout: Duration::from_secs(a.confirm_timeout),
    };
    let rt = runtime()?;
    rt.block_on(async {
        let mut s = Settler::connect(cfg).await?;
        let mut results = Vec::new();
        let mut invalid = 0usize;
        for (id, outcome) in s.retry_deferred(&catalogue).await? {
            invalid += matches!(outcome, Outcome::Invalid { .. }) as usize;
            ui.say(&outcome_line(&format!("deferred {id}"), &outcome));
            results.push(json!({"deferred": id, "result": outcome}));
        }
        for path in &a.receipts {
            let what = path.display().to_string();
            let outcome = match settle::read_receipt(path) {
                Ok(r) => s.settle(&catalogue, &r).await?,
                Err(reason) => Outcome::Invalid {
                    result_id: String::new(),
                    reason,
                },
            };
            invalid += matches!(outcome, Outcome::Invalid { .. }) as usize;
            ui.say(&outcome_line(&what, &outcome));
            results.push(json!({"receipt": what, "result": outcome}));
        }
        if let Some(url) = &a.gateway {
            loop {
                for (job, outcome) in s.from_gateway(&catalogue, url).await? {
                    invalid += matches!(outcome, Outcome::Invalid { .. }) as usize;
                    ui.say(&outcome_line(&format!("job {job}"), &outcome));
                    results.push(json!({"job": job, "result": outcome}));
                }
                let Some(secs) = a.follow else { break };
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(secs)) => {},
                    _ = shutdown_signal() => break,
                }
            }
        }
        Ok::<_, anyhow::Error>(json!({
            "from": s.from().to_string(),
            "results": results,
            "invalid": invalid,
        }))
    })
}

/// `veriml tee-register`'s options.
#[derive(Args, Debug, Clone)]
pub struct TeeRegisterArgs {
    /// The TEE runner's URL.
    #[arg(long)]
    pub runner: String,
    /// The TeeRegistry contract.
    #[arg(long, env = "VERIML_TEE_REGISTRY")]
    pub registry: String,
    /// A launch measurement the runner may attest to (96 hex digits); repeat for several.
    #[arg(long, required = true)]
    pub measurement: Vec<String>,
    /// DEVELOPMENT ONLY: also trust this simulated SEV-SNP root certificate (DER).
    #[arg(long)]
    pub simulated_root: Option<PathBuf>,
    /// This attestation verifier's signing key (hex), one of the registry's verifiers.
    #[arg(long, env = "VERIML_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: String,
    /// When the registration expires (Unix seconds; default: 30 days from now). Every
    /// operator signing one registration must use the same value.
    #[arg(long)]
    pub expiry: Option<u64>,
    /// Other operators' signatures of the same registration (hex), to reach the quorum.
    #[arg(long)]
    pub signature: Vec<String>,
    /// Print this operator's signature instead of sending the registration.
    #[arg(long)]
    pub sign_only: bool,
    #[command(flatten)]
    pub chain: ChainArgs,
}

/// Attests a runner, signs its key's registration as one attestation verifier, and (unless
/// `--sign-only`) registers it in the TeeRegistry with any other signatures given.
pub fn tee_register(ui: &Ui, a: &TeeRegisterArgs) -> Result<serde_json::Value> {
    use veriml_prover::chain::{Address, Chain, B256};
    use veriml_tee::receipt::{keccak, registration_digest, EthKey};
    let measurements = a
        .measurement
        .iter()
        .map(|m| {
            hex::decode(m.trim().trim_start_matches("0x"))
                .ok()
                .and_then(|b| <[u8; 48]>::try_from(b).ok())
                .with_context(|| format!("--measurement `{m}` is not 48 bytes of hex"))
        })
        .collect::<Result<Vec<_>>>()?;
    let registry: Address = a
        .registry
        .parse()
        .with_context(|| format!("--registry `{}` is not an address", a.registry))?;
    let secret: [u8; 32] = hex::decode(a.operator_key.trim().trim_start_matches("0x"))
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("--operator-key is not 32 bytes of hex")?;
    let operator = EthKey::from_bytes(&secret).context("--operator-key is not a valid key")?;
    let root = match &a.simulated_root {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    let rt = runtime()?;
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let attested = veriml_tee::client::attest_runner(
            &http,
            &a.runner,
            &measurements,
            root.as_deref(),
        )
        .await?;
        if attested.report.simulated {
            eprintln!("WARNING: SIMULATED attestation: no hardware vouches for this runner (development only)");
        }
        let chain = Chain::connect(&a.chain.rpc, &a.chain.private_key).await?;
        let measurement_hash = keccak(&attested.report.measurement);
        let tcb = attested.tcb_word();
        let expiry = match a.expiry {
            Some(e) => e,
            None => {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs()
                    + 30 * 24 * 3600
            }
        };
        let digest = registration_digest(
            chain.chain_id,
            &registry.into_array(),
            &attested.key,
            &measurement_hash,
            tcb,
            expiry,
        );
        let own = operator.sign_digest(&digest);
        let summary = json!({
            "runner": a.runner,
            "key": format!("0x{}", hex::encode(attested.key)),
            "measurement": hex::encode(attested.report.measurement),
            "measurement_hash": format!("0x{}", hex::encode(measurement_hash)),
            "tcb": tcb,
            "expiry": expiry,
            "operator": format!("0x{}", hex::encode(operator.address())),
            "signature": format!("0x{}", hex::encode(own)),
            "simulated": attested.report.simulated,
        });
        if a.sign_only {
            ui.say(&format!(
                "runner key 0x{} attested; this operator's signature: 0x{}",
                hex::encode(attested.key),
                hex::encode(own)
            ));
            return Ok(summary);
        }
        let mut signatures = vec![own.to_vec()];
        for s in &a.signature {
            signatures.push(
                hex::decode(s.trim().trim_start_matches("0x"))
                    .with_context(|| format!("--signature `{s}` is not hex"))?,
            );
        }
        let mined = chain
            .register_enclave(
                registry,
                Address::from(attested.key),
                B256::from(measurement_hash),
                tcb,
                expiry,
                signatures,
            )
            .await?;
        ui.say(&format!(
            "runner key 0x{} registered in {} ({})",
            hex::encode(attested.key),
            registry,
            mined.tx_hash
        ));
        let mut out = summary;
        out["tx_hash"] = json!(mined.tx_hash);
        Ok(out)
    })
}
