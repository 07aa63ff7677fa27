//! `veriml-tee-runner --config runner.json`: the TEE runner service.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use veriml_tee::{
    service::{serve, AttesterMode, Config, Runner},
    Attester, SevGuestAttester, SimulatedPlatform,
};

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut config: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => config = args.next().map(PathBuf::from),
            "--help" | "-h" => {
                println!(
                    "veriml-tee-runner --config FILE\n\n\
                     Serves GET /health, GET /attestation?nonce=HEX, POST /v1/chat/completions\n\
                     (forwarded to the configured provider) and POST /v1/infer (local ONNX model);\n\
                     every result carries a receipt signed by a key bound to the attestation.\n\
                     Environment overrides: VERIML_TEE_LISTEN, VERIML_TEE_CHAIN_ID, VERIML_TEE_UPSTREAM_URL."
                );
                return Ok(());
            }
            other => bail!("unknown argument `{other}` (see --help)"),
        }
    }
    let path = config.context("--config FILE is required (see --help)")?;
    let cfg = Config::load(&path)?;
    let attester: Box<dyn Attester> = match cfg.attester {
        AttesterMode::Sev => Box::new(SevGuestAttester),
        AttesterMode::Simulated => {
            eprintln!("WARNING: simulated attestation: no hardware vouches for this runner (development only)");
            Box::new(SimulatedPlatform::new([0u8; 48]))
        }
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let runner = Arc::new(Runner::new(cfg, attester)?);
    println!(
        "listening on {} with receipt key 0x{}",
        listener.local_addr()?,
        hex::encode(runner.key_address())
    );
    serve(runner, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
