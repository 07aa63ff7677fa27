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
    let mut root_out: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => config = args.next().map(PathBuf::from),
            "--write-simulated-root" => root_out = args.next().map(PathBuf::from),
            "--help" | "-h" => {
                println!(
                    "veriml-tee-runner --config FILE [--write-simulated-root FILE]\n\n\
                     Serves GET /health, GET /attestation?nonce=HEX, POST /v1/chat/completions\n\
                     (forwarded to the configured provider) and POST /v1/infer (local ONNX model);\n\
                     every result carries a receipt signed by a key bound to the attestation.\n\
                     Environment overrides: VERIML_TEE_LISTEN, VERIML_TEE_CHAIN_ID, VERIML_TEE_UPSTREAM_URL.\n\
                     --write-simulated-root FILE: with \"attester\": \"simulated\", write the simulated\n\
                     platform's root certificate (DER) there, for verifiers in development\n\
                     (veriml serve --tee-simulated-root, veriml tee-register --simulated-root)."
                );
                return Ok(());
            }
            other => bail!("unknown argument `{other}` (see --help)"),
        }
    }
    let path = config.context("--config FILE is required (see --help)")?;
    let cfg = Config::load(&path)?;
    let attester: Box<dyn Attester> = match cfg.attester {
        AttesterMode::Sev if root_out.is_some() => {
            bail!("--write-simulated-root is for \"attester\": \"simulated\" only")
        }
        AttesterMode::Sev => Box::new(SevGuestAttester),
        AttesterMode::Simulated => {
            eprintln!("WARNING: simulated attestation: no hardware vouches for this runner (development only)");
            let platform = SimulatedPlatform::new([0u8; 48]);
            if let Some(p) = &root_out {
                let tmp = p.with_extension("tmp");
                std::fs::write(&tmp, platform.ark_der())
                    .and_then(|()| std::fs::rename(&tmp, p))
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
            Box::new(platform)
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
