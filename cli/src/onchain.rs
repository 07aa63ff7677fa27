//! `veriml deploy` and `veriml verify-evm --rpc`: the generated verifier and the ModelRegistry on
//! a real chain over JSON-RPC (the work is done by `veriml_prover::chain`).

use crate::{checked_evm_proof, load_compiled, load_vk_and_srs, read_text, Ui};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use veriml_prover::chain::{self, Deployment};
use veriml_prover::{artifacts, evm};

/// Where to send transactions and who signs them.
#[derive(Args, Debug, Clone)]
pub struct ChainArgs {
    /// JSON-RPC endpoint of the chain (Base: https://mainnet.base.org, Base Sepolia:
    /// https://sepolia.base.org, or a local anvil).
    #[arg(long, env = "VERIML_RPC_URL")]
    pub rpc: String,
    /// Hex private key of the funded account that sends the transactions.
    #[arg(long, env = "VERIML_PRIVATE_KEY", hide_env_values = true)]
    pub private_key: String,
}

/// What `deploy` registers and how.
#[derive(Args, Debug, Clone)]
pub struct DeployArgs {
    /// An existing ModelRegistry owned by the sender; without it a new one is deployed.
    #[arg(long)]
    pub registry: Option<String>,
    /// Model id in the registry: 32 bytes of hex, or a name hashed with keccak-256
    /// (default: the model's name).
    #[arg(long)]
    pub model_id: Option<String>,
    /// Most gas the registry forwards to the verifier (100,000 to 15,000,000).
    #[arg(long, default_value_t = 2_000_000)]
    pub gas_cap: u64,
    /// A solc-compatible compiler, to compile the bundled ModelRegistry.
    #[arg(long, env = "VERIML_SOLC", default_value = "solc")]
    pub solc: PathBuf,
}

/// A tokio runtime for the commands that talk to a chain or serve HTTP.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn address(s: &str, what: &str) -> Result<chain::Address> {
    s.parse()
        .with_context(|| format!("{what} `{s}` is not an address"))
}

/// Deploys DIR/Verifier.json (and a registry unless one is given) and registers the model.
pub fn deploy(
    ui: &Ui,
    dir: &Path,
    args: &ChainArgs,
    opts: &DeployArgs,
    allow_insecure: bool,
) -> Result<serde_json::Value> {
    let DeployArgs {
        registry,
        model_id,
        gas_cap,
        solc,
    } = opts;
    let (registry, model_id, gas_cap) = (registry.as_deref(), model_id.as_deref(), *gas_cap);
    let (settings, _) = load_compiled(dir)?;
    load_vk_and_srs(dir, &settings, allow_insecure)?;
    let code: evm::Bytecode = serde_json::from_str(&read_text(&dir.join("Verifier.json"))?)
        .context("Verifier.json is not a compiled verifier; run create-evm-verifier")?;
    let packing = veriml_circuits::circuit::Packing::new(&settings.public_layout());
    let weights = chain::bytes32_from_hex(&settings.model_sha256)
        .context("the settings' model hash is not 32 bytes of hex")?;
    let id_text = model_id.unwrap_or(&settings.model_name).to_string();
    let id = chain::model_id(&id_text);
    let rt = runtime()?;
    let c = rt.block_on(chain::Chain::connect(&args.rpc, &args.private_key))?;
    let (registry, registry_deploy_gas) = match registry {
        Some(r) => (address(r, "--registry")?, None),
        None => {
            let bytecode = chain::registry_bytecode(solc)?;
            let ((addr, mined), _) = ui.step("deploying a ModelRegistry", || {
                Ok(rt.block_on(c.deploy_registry(&bytecode))?)
            })?;
            (addr, Some(mined.gas_used))
        }
    };
    let creation = hex::decode(&code.creation).context("Verifier.json bytecode is not hex")?;
    let ((verifier, dep), _) = ui.step("deploying the verifier", || {
        Ok(rt.block_on(c.deploy(creation))?)
    })?;
    let (reg, _) = ui.step("registering the model", || {
        Ok(rt.block_on(c.register(
            registry,
            id,
            verifier,
            weights,
            packing.input_words as u32,
            packing.output_words as u32,
            gas_cap,
        ))?)
    })?;
    let d = Deployment {
        chain_id: c.chain_id,
        registry: registry.to_string(),
        verifier: verifier.to_string(),
        model_id: id.to_string(),
        model_sha256: settings.model_sha256.clone(),
        input_words: packing.input_words as u32,
        output_words: packing.output_words as u32,
        gas_cap,
        verifier_deploy_gas: dep.gas_used,
        register_gas: reg.gas_used,
        registry_deploy_gas,
    };
    artifacts::write_atomic(
        &dir.join("deployment.json"),
        serde_json::to_string_pretty(&d)?.as_bytes(),
    )?;
    ui.say(&format!(
        "chain {}: verifier {} (deploy gas {}) registered as {} (`{}`) in registry {}",
        d.chain_id, d.verifier, d.verifier_deploy_gas, d.model_id, id_text, d.registry
    ));
    Ok(serde_json::to_value(&d)?)
}

/// Sends `registry.verify` for a proof file; prints the transaction's gas.
pub fn verify(
    ui: &Ui,
    dir: &Path,
    proof_path: &Path,
    args: &ChainArgs,
    allow_insecure: bool,
) -> Result<serde_json::Value> {
    let (settings, proof, instances) = checked_evm_proof(dir, proof_path, allow_insecure)?;
    let dp = dir.join("deployment.json");
    let d: Deployment = serde_json::from_str(&read_text(&dp)?)
        .with_context(|| format!("{} is not a deployment; run `veriml deploy`", dp.display()))?;
    if d.model_sha256 != settings.model_sha256 {
        bail!("{} is a deployment of another model", dp.display());
    }
    let words: Vec<_> = instances.iter().map(chain::word).collect();
    let bytes = artifacts::hex_bytes(&proof.proof).context("proof is not hex")?;
    let registry = address(&d.registry, "the deployment's registry")?;
    let id: chain::B256 = d
        .model_id
        .parse()
        .context("the deployment's model id is not 32 bytes")?;
    let rt = runtime()?;
    let c = rt.block_on(chain::Chain::connect(&args.rpc, &args.private_key))?;
    if c.chain_id != d.chain_id {
        bail!(
            "the RPC endpoint is chain {}, the deployment is on chain {}",
            c.chain_id,
            d.chain_id
        );
    }
    let (mined, _) = ui.step("sending registry.verify", || {
        Ok(rt.block_on(c.verify(registry, id, &words, &bytes))?)
    })?;
    let (ih, oh) = chain::result_hashes(&words, d.input_words as usize);
    ui.say(&format!(
        "proof verified on chain {} by registry {}: tx {} used {} gas; input hash {ih}, output hash {oh}",
        c.chain_id, d.registry, mined.tx_hash, mined.gas_used
    ));
    Ok(json!({
        "verified": true,
        "chain_id": c.chain_id,
        "tx_hash": mined.tx_hash,
        "gas_used": mined.gas_used,
        "input_hash": ih.to_string(),
        "output_hash": oh.to_string(),
    }))
}
