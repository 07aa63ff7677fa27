//! `veriml`: compile an ONNX model to a halo2 circuit, set up keys, prove and verify.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use veriml_circuits::halo2_proofs::{
    halo2curves::bn256::{Fr, G1Affine},
    plonk::VerifyingKey,
};
use veriml_circuits::{settings::CompiledModel, QuantOptions, Settings};
use veriml_prover::{artifacts, evm, pipeline, ProofFile, Srs};

mod gateway;
mod onchain;

const EXAMPLE_ONNX: &[u8] = include_bytes!("../../examples/digits_mlp/model.onnx");
const EXAMPLE_INPUT: &str = include_str!("../../examples/digits_mlp/input.json");

#[derive(Parser)]
#[command(
    name = "veriml",
    version,
    about = "Verifiable AI inference: prove that an ONNX model produced an output (halo2, KZG on BN254)",
    long_about = "Verifiable AI inference: prove that an ONNX model produced an output.\n\n\
Typical flow:\n  veriml compile model.onnx -d out\n  veriml setup -d out --insecure-dev-srs   (or --srs ceremony.srs)\n  \
veriml prove -d out --input input.json\n  veriml verify -d out\n\n\
`veriml example` runs the whole flow on a bundled model."
)]
struct Cli {
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Accept keys made with an INSECURE development SRS (development and tests only): verify,
    /// verify-evm, create-evm-verifier and deploy refuse them otherwise, whatever the key
    /// header says (the parameters themselves are recognised).
    #[arg(long, global = true)]
    allow_insecure_srs: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct DirArg {
    /// Artifact folder (settings.json, model.compiled.json, kzg.srs, pk.bin, vk.bin, proof.json).
    #[arg(short = 'd', long = "dir", default_value = "veriml-out")]
    dir: PathBuf,
}

#[derive(Args, Clone)]
struct CompileOpts {
    /// Activations are fixed-point integers at scale 2^BITS.
    #[arg(long, default_value_t = 14)]
    scale_bits: u32,
    /// Bits of precision given to the largest weight of each layer.
    #[arg(long, default_value_t = 16)]
    weight_bits: u32,
    /// Range every input value must lie in, as LO,HI (LO < HI). The proof enforces it: no input
    /// outside it can be proven, and the verifying key commits to it.
    #[arg(long, default_value = "-1,1", value_parser = parse_range, allow_hyphen_values = true)]
    input_range: (f64, f64),
    /// Most fixed weight columns the circuit may have: one per Freivalds slot (a slot checks
    /// several outputs at once) while they fit, then pages of this many slots (wider models
    /// cost rows, not columns). Each column costs the EVM verifier a commitment (about 7,000
    /// gas and 300 bytes of code).
    #[arg(long, default_value_t = veriml_circuits::settings::DEFAULT_MAX_WEIGHT_COLUMNS)]
    max_weight_columns: usize,
    /// Non-linear functions (Sigmoid, Tanh, GELU, Exp, ...) are proven by table lookup, each
    /// layer's table with at most about 2^BITS entries covering every value its input can take:
    /// one more bit halves the function's input step (more accurate) and doubles its rows.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=20))]
    lookup_bits: u32,
    /// `public`: the input values are public words of the proof (packed, several per word);
    /// `hashed`: the circuit hashes the input words (Poseidon) and only the digest is public,
    /// so the EVM verifier stays small however large the input (images: every public word
    /// costs the verifier about 200 bytes of code). The proof file still lists the input;
    /// `verify` checks that it hashes to the digest.
    #[arg(long, value_enum, default_value = "public")]
    input_visibility: InputVisibility,
}

/// How a proof shows its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum InputVisibility {
    Public,
    Hashed,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile an ONNX model: writes settings.json and model.compiled.json.
    Compile {
        /// The ONNX file (one input, batch size 1).
        model: PathBuf,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        opts: CompileOpts,
    },
    /// Compile with the quantization that suits a target best, measured on sample inputs:
    /// activation scales 2^12..2^16, weight precisions of 14..18 bits and (for non-linear
    /// functions) lookup tables of 2^10..2^16 entries are each compiled and run on the samples.
    /// Writes settings.json and model.compiled.json of the one chosen. Any input inside the
    /// declared range stays provable: the samples measure, they do not narrow any bound.
    Calibrate {
        /// The ONNX file (one input, batch size 1).
        model: PathBuf,
        #[command(flatten)]
        dir: DirArg,
        /// JSON with an `inputs` list (like samples.json), each inside the input range.
        #[arg(short, long)]
        samples: PathBuf,
        /// `accuracy`: the smallest largest-absolute-error on the samples; `resources`: the
        /// smallest circuit whose top-1 agrees with the float model on every sample.
        #[arg(long, value_enum, default_value = "resources")]
        target: TargetArg,
        /// Range every input value must lie in, as LO,HI (LO < HI).
        #[arg(long, default_value = "-1,1", value_parser = parse_range, allow_hyphen_values = true)]
        input_range: (f64, f64),
        /// Most fixed weight columns (see `compile --help`).
        #[arg(long, default_value_t = veriml_circuits::settings::DEFAULT_MAX_WEIGHT_COLUMNS)]
        max_weight_columns: usize,
        /// Public input words or only their digest (see `compile --help`).
        #[arg(long, value_enum, default_value = "public")]
        input_visibility: InputVisibility,
    },
    /// Generate the proving and verifying keys (pk.bin, vk.bin) and the SRS copy (kzg.srs).
    Setup {
        #[command(flatten)]
        dir: DirArg,
        /// KZG parameters in halo2's format (e.g. from a powers-of-tau ceremony), k >= the circuit's.
        #[arg(long, conflicts_with = "insecure_dev_srs")]
        srs: Option<PathBuf>,
        /// Generate an INSECURE SRS locally (development and tests only).
        #[arg(long)]
        insecure_dev_srs: bool,
    },
    /// Prove one input: writes proof.json with the public input and output.
    Prove {
        #[command(flatten)]
        dir: DirArg,
        /// Input JSON: {"input_data": [[...floats...]]}.
        #[arg(short, long)]
        input: PathBuf,
        /// Where to write the proof (default: DIR/proof.json).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// MSM backend for the commitments: `cpu` (scalars sorted by size, batch-affine buckets),
        /// `halo2` (halo2curves' MSM), `gpu` (a CUDA build on an NVIDIA device; otherwise a
        /// warning and the CPU), `auto` (the GPU when usable, else the CPU).
        #[arg(long, default_value = "auto", env = "VERIML_MSM")]
        msm: veriml_prover::msm::MsmChoice,
    },
    /// Verify a proof with the verifying key.
    Verify {
        #[command(flatten)]
        dir: DirArg,
        /// The proof file (default: DIR/proof.json).
        #[arg(short, long)]
        proof: Option<PathBuf>,
    },
    /// Run halo2's MockProver on one input and print every failing constraint.
    Mock {
        #[command(flatten)]
        dir: DirArg,
        /// Input JSON: {"input_data": [[...floats...]]}.
        #[arg(short, long)]
        input: PathBuf,
    },
    /// Generate the Solidity verifier (DIR/Verifier.sol) and compile it, optimizer off (DIR/Verifier.json).
    CreateEvmVerifier {
        #[command(flatten)]
        dir: DirArg,
        /// A solc-compatible compiler; the project's scripts/solc wraps the pinned solcjs.
        #[arg(long, env = "VERIML_SOLC", default_value = "solc")]
        solc: PathBuf,
    },
    /// Verify a proof on the EVM; prints gas used. By default in an in-process EVM (revm, no
    /// node needed); with --rpc, by a `registry.verify` transaction to the deployment in
    /// DIR/deployment.json (see `deploy`).
    VerifyEvm {
        #[command(flatten)]
        dir: DirArg,
        /// The proof file (default: DIR/proof.json).
        #[arg(short, long)]
        proof: Option<PathBuf>,
        /// JSON-RPC endpoint: verify on that chain instead of in process.
        #[arg(long, env = "VERIML_RPC_URL")]
        rpc: Option<String>,
        /// Hex private key of the account that sends the transaction (with --rpc).
        #[arg(long, env = "VERIML_PRIVATE_KEY", hide_env_values = true)]
        private_key: Option<String>,
    },
    /// Deploy DIR/Verifier.json to a chain and register it in a ModelRegistry (a new one unless
    /// --registry is given); writes DIR/deployment.json.
    Deploy {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        chain: onchain::ChainArgs,
        #[command(flatten)]
        opts: onchain::DeployArgs,
    },
    /// Verify an AMD SEV-SNP attestation report against AMD's pinned roots and a policy.
    TeeVerify(TeeArgs),
    /// Compare the quantized model (exactly what the circuit proves) with float reference outputs;
    /// with --per-layer, every layer's float and quantized activations side by side.
    Accuracy {
        #[command(flatten)]
        dir: DirArg,
        /// JSON with `inputs` and `float_outputs` lists (and optional `labels`), like samples.json.
        #[arg(short, long)]
        samples: PathBuf,
        /// Also report each layer: largest and mean absolute error of its activations against
        /// the float model's, and the largest error relative to the layer's largest float
        /// activation. Needs --onnx.
        #[arg(long, requires = "onnx")]
        per_layer: bool,
        /// The ONNX file the folder was compiled from (its SHA-256 must match the settings').
        #[arg(long)]
        onnx: Option<PathBuf>,
    },
    /// Compile, set up, prove and verify the bundled example model (digits_mlp), end to end.
    Example {
        /// Artifact folder for the example.
        #[arg(short = 'd', long = "dir", default_value = "veriml-example")]
        dir: PathBuf,
    },
    /// Serve the gateway: `POST /v1/infer` with a model id and an input; open models are proven
    /// by a pool of workers (a job id at once, `GET /v1/jobs/{id}` or its `/events` stream for
    /// status and the receipt), closed models are forwarded to their TEE runner. Jobs live in
    /// an SQLite file and survive restarts.
    Serve(gateway::ServeArgs),
    /// Attest a TEE runner (a fresh nonce; its measurement must be one of --measurement) and
    /// sign its key's registration as an attestation verifier; then register it in the
    /// TeeRegistry (with other operators' --signature for a quorum above 1), or print the
    /// signature with --sign-only
    TeeRegister(gateway::TeeRegisterArgs),
    /// Settle inference receipts on chain: each is checked off-chain against the catalogue,
    /// then submitted to the InferenceRegistry (once; an invalid one never). Receipt files,
    /// or the finished jobs of a gateway (`--gateway URL`, `--follow SECS` to keep watching).
    Settle(gateway::SettleArgs),
    /// The model catalogue: which model id runs where (an open model's artifact folder, or a
    /// closed model behind the TEE runner)
    Models {
        /// The catalogue file (created by the first `add`).
        #[arg(long, env = "VERIML_CATALOGUE", default_value = "veriml-models.json")]
        catalogue: PathBuf,
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
}

#[derive(Subcommand)]
enum ModelsCmd {
    /// Add a model: `--dir` for an open model (a folder `compile` and `setup` wrote; its keys
    /// must match its settings), or `--provider`, `--provider-model`, `--runner` and
    /// `--measurement` for a closed model
    Add {
        /// Model id: 1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
        id: String,
        /// Open model: its artifact folder.
        #[arg(short = 'd', long, conflicts_with_all = ["provider", "provider_model", "runner", "measurement"])]
        dir: Option<PathBuf>,
        /// Closed model: base URL of the provider's OpenAI-compatible API.
        #[arg(long, requires_all = ["provider_model", "runner", "measurement"])]
        provider: Option<String>,
        /// Closed model: the model name the provider knows.
        #[arg(long)]
        provider_model: Option<String>,
        /// Closed model: URL of the TEE runner.
        #[arg(long)]
        runner: Option<String>,
        /// Closed model: an SEV-SNP launch measurement (hex, 48 bytes) the runner may attest
        /// to; repeat for several.
        #[arg(long)]
        measurement: Vec<String>,
        /// Replace an entry with the same id instead of refusing.
        #[arg(long)]
        replace: bool,
    },
    /// List the models.
    List,
    /// Show one model's entry; for an open model, check that its folder still holds it.
    Show { id: String },
    /// Remove a model.
    Remove { id: String },
    /// Write the inference receipt of an open model's proof (its input and output hashes as
    /// the registries compute them, its output, the proof file as evidence)
    Receipt {
        id: String,
        /// The proof file (`veriml prove` wrote it).
        #[arg(long)]
        proof: PathBuf,
        /// Where to write the receipt.
        #[arg(short = 'o', long, default_value = "receipt.json")]
        output: PathBuf,
    },
    /// Check an inference receipt without a chain: its hashes against its evidence, and the
    /// evidence against the model's entry (the proof against the open model's keys; the TEE
    /// receipt's signature and model name for a closed model)
    Check { receipt: PathBuf },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    Accuracy,
    Resources,
}

fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("expected LO,HI, got `{s}`"))?;
    let lo: f64 = a.trim().parse().map_err(|e| format!("bad LO `{a}`: {e}"))?;
    let hi: f64 = b.trim().parse().map_err(|e| format!("bad HI `{b}`: {e}"))?;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(format!("LO and HI must be finite with LO < HI in `{s}`"));
    }
    Ok((lo, hi))
}

pub(crate) struct Ui {
    json: bool,
}

impl Ui {
    pub(crate) fn step<T>(
        &self,
        msg: &str,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<(T, Duration)> {
        let pb = if self.json {
            ProgressBar::hidden()
        } else {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("template"),
            );
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        };
        pb.set_message(msg.to_string());
        let t = Instant::now();
        let r = f();
        let d = t.elapsed();
        pb.finish_and_clear();
        let v = r?;
        if !self.json {
            eprintln!("{msg}: done in {:.2}s", d.as_secs_f64());
        }
        Ok((v, d))
    }
    pub(crate) fn say(&self, s: &str) {
        if !self.json {
            println!("{s}");
        }
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn load_compiled(dir: &Path) -> Result<(Settings, Arc<veriml_circuits::QuantizedModel>)> {
    let sp = dir.join("settings.json");
    let settings =
        Settings::from_json(&read_text(&sp)?).with_context(|| format!("in {}", sp.display()))?;
    let mp = dir.join("model.compiled.json");
    let compiled = CompiledModel::from_json(&read_text(&mp)?)
        .with_context(|| format!("in {}", mp.display()))?;
    settings.check_model(&compiled.model)?;
    Ok((settings, Arc::new(compiled.model)))
}

/// Reads `{"input_data": [[...]]}` and flattens the single input tensor.
fn parse_input(text: &str, what: &str) -> Result<Vec<f64>> {
    veriml_circuits::input::parse_input_json(text).with_context(|| format!("in {what}"))
}

fn compile(ui: &Ui, onnx: &Path, dir: &Path, opts: &CompileOpts) -> Result<Settings> {
    let q = QuantOptions {
        activation_scale_bits: opts.scale_bits,
        weight_precision_bits: opts.weight_bits,
        input_range: opts.input_range,
        lookup_bits: opts.lookup_bits,
    };
    let ((settings, compiled), _) = ui.step("compiling", || {
        Ok(veriml_circuits::compile_model(
            onnx,
            &q,
            &veriml_circuits::settings::PlanOptions {
                max_weight_columns: opts.max_weight_columns,
                hashed_input: opts.input_visibility == InputVisibility::Hashed,
            },
        )?)
    })?;
    write_compiled(dir, &settings, &compiled)?;
    if let Some(vocab) = compiled.model.vocab() {
        ui.say(&format!(
            "the input is token ids (vocabulary {vocab}): each id is its own 16-bit code, so --input-range does not apply; an id from {vocab} up cannot be proven"
        ));
    }
    Ok(settings)
}

fn write_compiled(dir: &Path, settings: &Settings, compiled: &CompiledModel) -> Result<()> {
    artifacts::write_atomic(
        &dir.join("settings.json"),
        serde_json::to_string_pretty(settings)?.as_bytes(),
    )?;
    artifacts::write_atomic(
        &dir.join("model.compiled.json"),
        serde_json::to_string(compiled)?.as_bytes(),
    )?;
    Ok(())
}

fn calibrate(
    ui: &Ui,
    onnx: &Path,
    dir: &Path,
    samples: &Path,
    target: TargetArg,
    input_range: (f64, f64),
    plan: veriml_circuits::settings::PlanOptions,
) -> Result<serde_json::Value> {
    use veriml_circuits::calibrate::{calibrate, Target};
    let bytes = std::fs::read(onnx).with_context(|| format!("cannot read {}", onnx.display()))?;
    let graph = veriml_circuits::import::graph_from_onnx_bytes(&bytes, onnx)?;
    let what = samples.display().to_string();
    let v: serde_json::Value = serde_json::from_str(&read_text(samples)?)
        .with_context(|| format!("{what} is not JSON"))?;
    let inputs = flat_rows(&v, "inputs", &what)?;
    let target = match target {
        TargetArg::Accuracy => Target::Accuracy,
        TargetArg::Resources => Target::Resources,
    };
    let base = QuantOptions {
        input_range,
        ..QuantOptions::default()
    };
    let (cal, _) = ui.step("calibrating", || {
        calibrate(
            &graph,
            &veriml_circuits::settings::model_name_of(onnx),
            &veriml_circuits::settings::sha256_hex(&bytes),
            &base,
            &plan,
            &inputs,
            target,
        )
        .with_context(|| format!("calibrating on {what}"))
    })?;
    write_compiled(dir, &cal.settings, &cal.compiled)?;
    ui.say(&format!(
        "{:>6} {:>7} {:>7} {:>3} {:>8} {:>12} {:>6}",
        "scale", "weights", "lookup", "k", "rows", "max abs err", "top-1"
    ));
    for (i, c) in cal.candidates.iter().enumerate() {
        ui.say(&format!(
            "{:>6} {:>7} {:>7} {:>3} {:>8} {:>12.6} {:>3}/{}{}",
            format!("2^{}", c.activation_scale_bits),
            c.weight_precision_bits,
            c.lookup_bits,
            c.k,
            c.rows,
            c.max_abs_error,
            c.top1_agree,
            inputs.len(),
            if i == cal.chosen { "  <- chosen" } else { "" }
        ));
    }
    ui.say(&format!(
        "wrote the chosen compilation to {} (k = {})",
        dir.display(),
        cal.settings.circuit.k
    ));
    let mut out = settings_summary(&cal.settings);
    out["candidates"] = serde_json::to_value(&cal.candidates)?;
    out["chosen"] = json!(cal.chosen);
    out["samples"] = json!(inputs.len());
    Ok(out)
}

fn settings_summary(s: &Settings) -> serde_json::Value {
    json!({
        "model": s.model_name,
        "k": s.circuit.k,
        "rows_used": s.circuit.rows_used,
        "advice_columns": s.circuit.advice_columns,
        "fixed_columns": s.circuit.fixed_columns,
        "weight_columns": s.circuit.shape.weight_columns,
        "pages": s.circuit.shape.pages,
        "macs": s.circuit.macs,
        "public_inputs": s.circuit.num_instances,
        "input_visibility": if s.circuit.shape.hashed_input { "hashed" } else { "public" },
        "model_sha256": s.model_sha256,
    })
}

fn setup(
    ui: &Ui,
    dir: &Path,
    srs_path: Option<&Path>,
    insecure: bool,
) -> Result<serde_json::Value> {
    let (settings, model) = load_compiled(dir)?;
    let k = settings.circuit.k;
    let srs = match (srs_path, insecure) {
        (Some(p), _) => Srs::read(p)?.downsized(k)?,
        (None, true) => ui.step(&format!("generating an INSECURE development SRS (k = {k})"), || {
            Ok(Srs::insecure_dev(k, 0))
        })?.0,
        (None, false) => bail!("setup needs an SRS: pass --srs FILE (halo2 format, from a ceremony) or --insecure-dev-srs for development"),
    };
    if srs.origin.is_insecure() && !ui.json {
        eprintln!("WARNING: {}", srs.origin.label());
    }
    let (keys, d) = ui.step("generating keys", || {
        Ok(pipeline::setup(&settings, model, &srs)?)
    })?;
    let pk = keys.pk_bytes();
    let vk = keys.vk_bytes();
    artifacts::write_atomic(&dir.join("kzg.srs"), &srs.to_bytes())?;
    artifacts::write_atomic(&dir.join("pk.bin"), &pk)?;
    artifacts::write_atomic(&dir.join("vk.bin"), &vk)?;
    ui.say(&format!(
        "keys written to {} (pk {} bytes, vk {} bytes, k = {k})",
        dir.display(),
        pk.len(),
        vk.len()
    ));
    Ok(json!({
        "setup_seconds": d.as_secs_f64(),
        "pk_bytes": pk.len(),
        "vk_bytes": vk.len(),
        "k": k,
        "srs": srs.origin.label(),
        "insecure_srs": srs.origin.is_insecure(),
    }))
}

fn load_srs(dir: &Path, k: u32) -> Result<Srs> {
    let srs = Srs::read(&dir.join("kzg.srs"))?.downsized(k)?;
    Ok(srs)
}

/// The folder's verifying key and SRS, checked against each other: the SRS must be the one the
/// key was made with, and a development SRS is refused unless `allow_insecure`.
fn load_vk_and_srs(
    dir: &Path,
    settings: &Settings,
    allow_insecure: bool,
) -> Result<(VerifyingKey<G1Affine>, artifacts::KeyHeader, Srs)> {
    let (vk, header) = pipeline::read_vk(&dir.join("vk.bin"), settings)?;
    let srs = load_srs(dir, settings.circuit.k)?;
    pipeline::check_srs(&header, &srs, allow_insecure)?;
    Ok((vk, header, srs))
}

/// What every EVM path checks before a proof goes to a verifier contract, as `verify` does: the
/// proof belongs to this folder's keys, their SRS is accepted, and the proof file's readable
/// input and output are what its public words encode. Returns the words.
pub(crate) fn checked_evm_proof(
    dir: &Path,
    proof_path: &Path,
    allow_insecure: bool,
) -> Result<(Settings, ProofFile, Vec<Fr>)> {
    let (settings, _) = load_compiled(dir)?;
    let proof = ProofFile::from_json(&read_text(proof_path)?, proof_path)?;
    let (_, header) = pipeline::read_vk(&dir.join("vk.bin"), &settings)?;
    let srs = load_srs(dir, settings.circuit.k)?;
    let instances = pipeline::proof_file_words(&header, &srs, &settings, &proof, allow_insecure)?;
    pipeline::check_readable(&settings, &proof, &instances)?;
    Ok((settings, proof, instances))
}

fn prove(
    ui: &Ui,
    dir: &Path,
    input: &Path,
    out: &Path,
    msm: veriml_prover::msm::MsmChoice,
) -> Result<(ProofFile, serde_json::Value)> {
    let (settings, model) = load_compiled(dir)?;
    let data = parse_input(&read_text(input)?, &input.display().to_string())?;
    let srs = load_srs(dir, settings.circuit.k)?;
    let (keys, _) = ui.step("loading the proving key", || {
        Ok(pipeline::Keys::read_pk(&dir.join("pk.bin"), &settings)?)
    })?;
    let (params, warning) = pipeline::engine(&srs, msm)?;
    if let Some(w) = &warning {
        eprintln!("WARNING: {w}");
    }
    let (proof, d) = ui.step("proving", || {
        Ok(pipeline::prove_with(
            &srs, &params, &keys, &settings, model, &data,
        )?)
    })?;
    artifacts::write_atomic(out, proof.to_json().as_bytes())?;
    ui.say(&format!("proof written to {}", out.display()));
    ui.say(&format!("output: {:?}", proof.output));
    if proof.insecure_srs && !ui.json {
        eprintln!("WARNING: this proof uses keys from an INSECURE development SRS");
    }
    let summary = json!({
        "proof_file": out,
        "prove_seconds": d.as_secs_f64(),
        "proof_bytes": proof.proof.len() / 2,
        "output": proof.output,
        "insecure_srs": proof.insecure_srs,
        "msm": params.backend_name(),
        "msm_warning": warning,
    });
    Ok((proof, summary))
}

fn verify(
    ui: &Ui,
    dir: &Path,
    proof_path: &Path,
    allow_insecure: bool,
) -> Result<serde_json::Value> {
    let (settings, _) = load_compiled(dir)?;
    let proof = ProofFile::from_json(&read_text(proof_path)?, proof_path)?;
    // pipeline::verify checks the SRS against the key (load_vk_and_srs would do it twice)
    let (vk, header) = pipeline::read_vk(&dir.join("vk.bin"), &settings)?;
    let srs = load_srs(dir, settings.circuit.k)?;
    let (_, d) = ui.step("verifying", || {
        Ok(pipeline::verify(
            &srs,
            &vk,
            &header,
            &settings,
            &proof,
            allow_insecure,
        )?)
    })?;
    ui.say(&format!(
        "proof verified: model {} output {:?}",
        settings.model_name, proof.output
    ));
    // a hashed input: the first public word is the Poseidon digest the file's input hashes to
    let digest = settings
        .circuit
        .shape
        .hashed_input
        .then(|| proof.instances[0].clone());
    if let Some(h) = &digest {
        ui.say(&format!("input digest (Poseidon, first public word): {h}"));
    }
    if header.srs.is_insecure() && !ui.json {
        eprintln!("WARNING: verified against keys from an INSECURE development SRS");
    }
    Ok(json!({
        "verified": true,
        "verify_seconds": d.as_secs_f64(),
        "model": settings.model_name,
        "output": proof.output,
        "input_digest": digest,
        "srs": header.srs.label(),
        "insecure_srs": header.srs.is_insecure(),
    }))
}

fn flat_rows(v: &serde_json::Value, key: &str, what: &str) -> Result<Vec<Vec<f64>>> {
    let rows = v
        .get(key)
        .and_then(|r| r.as_array())
        .with_context(|| format!("{what}: missing the `{key}` list"))?;
    rows.iter()
        .map(|r| veriml_circuits::input::flatten_numbers(r).with_context(|| format!("in {what}")))
        .collect()
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Error statistics of one layer over all samples.
#[derive(Default)]
struct LayerError {
    max_abs: f64,
    sum_abs: f64,
    count: usize,
    float_max_abs: f64,
}

/// The float graph of the ONNX file a folder was compiled from, and for each quantized layer the
/// graph op whose output it is.
fn float_reference(
    onnx: &Path,
    settings: &Settings,
    model: &veriml_circuits::QuantizedModel,
) -> Result<(veriml_circuits::Graph, Vec<usize>)> {
    let bytes = std::fs::read(onnx).with_context(|| format!("cannot read {}", onnx.display()))?;
    let sha = veriml_circuits::settings::sha256_hex(&bytes);
    if sha != settings.onnx_sha256 {
        bail!(
            "{} (SHA-256 {sha}) is not the ONNX file this folder was compiled from ({})",
            onnx.display(),
            settings.onnx_sha256
        );
    }
    let graph = veriml_circuits::import::graph_from_onnx_bytes(&bytes, onnx)?;
    let sources = veriml_circuits::quantize::layer_sources(&graph);
    if sources.len() != model.layers.len() {
        bail!(
            "{} gives {} layers, the compiled model has {}",
            onnx.display(),
            sources.len(),
            model.layers.len()
        );
    }
    Ok((graph, sources))
}

fn accuracy(
    ui: &Ui,
    dir: &Path,
    samples: &Path,
    per_layer_onnx: Option<&Path>,
) -> Result<serde_json::Value> {
    let (settings, model) = load_compiled(dir)?;
    let reference = per_layer_onnx
        .map(|p| float_reference(p, &settings, &model))
        .transpose()?;
    let what = samples.display().to_string();
    let v: serde_json::Value = serde_json::from_str(&read_text(samples)?)
        .with_context(|| format!("{what} is not JSON"))?;
    let inputs = flat_rows(&v, "inputs", &what)?;
    let floats = flat_rows(&v, "float_outputs", &what)?;
    let labels: Option<Vec<u64>> = v
        .get("labels")
        .and_then(|l| l.as_array())
        .and_then(|l| l.iter().map(|x| x.as_u64()).collect());
    if inputs.len() != floats.len() {
        bail!(
            "{what}: {} inputs but {} float outputs",
            inputs.len(),
            floats.len()
        );
    }
    let (mut max_err, mut agree, mut correct) = (0f64, 0usize, 0usize);
    let mut layer_err: Vec<LayerError> = model.layers.iter().map(|_| Default::default()).collect();
    for (i, (x, want)) in inputs.iter().zip(&floats).enumerate() {
        let codes = model
            .quantize_input(x)
            .with_context(|| format!("sample {i}"))?;
        let trace = model.trace(&codes);
        let q = trace.last().cloned().unwrap_or_default();
        let got: Vec<f64> = q.iter().map(|&v| model.dequantize(v)).collect();
        if got.len() != want.len() {
            bail!(
                "sample {i}: the model has {} outputs, the sample {}",
                got.len(),
                want.len()
            );
        }
        for (g, w) in got.iter().zip(want) {
            max_err = max_err.max((g - w).abs());
        }
        agree += usize::from(argmax(&got) == argmax(want));
        if let Some(l) = &labels {
            correct += usize::from(l.get(i).copied() == Some(argmax(&got) as u64));
        }
        if let Some((graph, sources)) = &reference {
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let float = graph.trace(&xf);
            for (((e, &src), quant), l) in layer_err
                .iter_mut()
                .zip(sources)
                .zip(&trace)
                .zip(&model.layers)
            {
                // a product's operands are exact selections (the second scaled): no error of
                // their own, and no float op computes them
                if l.is_operand() {
                    continue;
                }
                for (&f, &qv) in float[src].iter().zip(quant) {
                    let d = (f - model.dequantize(qv)).abs();
                    e.max_abs = e.max_abs.max(d);
                    e.sum_abs += d;
                    e.count += 1;
                    e.float_max_abs = e.float_max_abs.max(f.abs());
                }
            }
        }
    }
    let layers: Vec<serde_json::Value> = match &reference {
        None => Vec::new(),
        Some(_) => model
            .layers
            .iter()
            .zip(&layer_err)
            .enumerate()
            .filter(|(_, (l, _))| !l.is_operand())
            .map(|(i, (l, e))| {
                let (node, outputs) = match l {
                    veriml_circuits::quantize::QLayer::Dense { node, outputs, .. } => {
                        (node, *outputs)
                    }
                    veriml_circuits::quantize::QLayer::Relu { node, len, .. } => (node, *len),
                    veriml_circuits::quantize::QLayer::Product { node, outputs, .. } => {
                        (node, *outputs)
                    }
                    veriml_circuits::quantize::QLayer::MatMul {
                        node,
                        dims: [batch, n, _, p],
                        ..
                    } => (node, batch * n * p),
                };
                let op = l.kind();
                json!({
                    "layer": i,
                    "node": node,
                    "op": op,
                    "outputs": outputs,
                    "max_abs_error": e.max_abs,
                    "mean_abs_error": e.sum_abs / e.count.max(1) as f64,
                    "relative_error": if e.float_max_abs > 0.0 { e.max_abs / e.float_max_abs } else { 0.0 },
                    "float_max_abs": e.float_max_abs,
                })
            })
            .collect(),
    };
    if !layers.is_empty() {
        ui.say(&format!(
            "{:>5}  {:<24} {:<10} {:>7}  {:>12}  {:>12}  {:>10}  {:>11}",
            "layer",
            "node",
            "op",
            "outputs",
            "max abs err",
            "mean abs err",
            "rel err",
            "float |max|"
        ));
        for l in &layers {
            ui.say(&format!(
                "{:>5}  {:<24} {:<10} {:>7}  {:>12.6}  {:>12.6}  {:>10.2e}  {:>11.4}",
                l["layer"].as_u64().unwrap_or_default(),
                l["node"].as_str().unwrap_or_default(),
                l["op"].as_str().unwrap_or_default(),
                l["outputs"].as_u64().unwrap_or_default(),
                l["max_abs_error"].as_f64().unwrap_or_default(),
                l["mean_abs_error"].as_f64().unwrap_or_default(),
                l["relative_error"].as_f64().unwrap_or_default(),
                l["float_max_abs"].as_f64().unwrap_or_default(),
            ));
        }
    }
    ui.say(&format!(
        "{} samples: largest absolute output error {max_err:.6}, top-1 agreement with float {agree}/{}{}",
        inputs.len(),
        inputs.len(),
        labels
            .as_ref()
            .map(|_| format!(", correct labels {correct}/{}", inputs.len()))
            .unwrap_or_default()
    ));
    let mut out = json!({
        "samples": inputs.len(),
        "max_abs_error": max_err,
        "top1_agreement": agree,
        "label_correct": labels.map(|_| correct),
    });
    if reference.is_some() {
        out["layers"] = serde_json::Value::Array(layers);
    }
    Ok(out)
}

fn create_evm_verifier(
    ui: &Ui,
    dir: &Path,
    solc: &Path,
    allow_insecure: bool,
) -> Result<serde_json::Value> {
    let (settings, _) = load_compiled(dir)?;
    let (vk, header, srs) = load_vk_and_srs(dir, &settings, allow_insecure)?;
    let (sol, _) = ui.step("generating the Solidity verifier", || {
        let body = evm::solidity_verifier(&srs, &vk, settings.circuit.num_instances);
        Ok(evm::generated_header(&settings.model_name, &header.settings_sha256) + &body)
    })?;
    artifacts::write_atomic(&dir.join("Verifier.sol"), sol.as_bytes())?;
    let (code, _) = ui.step("compiling it (optimizer off)", || {
        Ok(evm::compile_verifier(solc, &sol)?)
    })?;
    artifacts::write_atomic(
        &dir.join("Verifier.json"),
        serde_json::to_string_pretty(&code)?.as_bytes(),
    )?;
    ui.say(&format!(
        "verifier written to {} ({} bytes of runtime code, limit {})",
        dir.join("Verifier.sol").display(),
        code.runtime_len(),
        evm::MAX_RUNTIME_CODE
    ));
    Ok(json!({
        "solidity": dir.join("Verifier.sol"),
        "bytecode": dir.join("Verifier.json"),
        "runtime_bytes": code.runtime_len(),
        "solc_version": code.solc_version,
        "insecure_srs": header.srs.is_insecure(),
    }))
}

fn verify_evm(
    ui: &Ui,
    dir: &Path,
    proof_path: &Path,
    allow_insecure: bool,
) -> Result<serde_json::Value> {
    let (_, proof, instances) = checked_evm_proof(dir, proof_path, allow_insecure)?;
    let code: evm::Bytecode = serde_json::from_str(&read_text(&dir.join("Verifier.json"))?)
        .context("Verifier.json is not a compiled verifier; run create-evm-verifier")?;
    let bytes = veriml_prover::artifacts::hex_bytes(&proof.proof).context("proof is not hex")?;
    let ((deploy_gas, out), _) = ui.step("verifying in the in-process EVM", || {
        Ok(evm::verify_in_evm(&code, &instances, &bytes)?)
    })?;
    if !out.success {
        if ui.json {
            println!(
                "{}",
                json!({"verified": false, "gas_used": out.gas_used, "reason": out.reason})
            );
        }
        bail!(
            "the EVM verifier rejected the proof ({}; gas used {})",
            out.reason.unwrap_or_default(),
            out.gas_used
        );
    }
    ui.say(&format!(
        "proof verified by the EVM verifier: deploy gas {deploy_gas}, verify gas {}",
        out.gas_used
    ));
    Ok(json!({"verified": true, "deploy_gas": deploy_gas, "gas_used": out.gas_used}))
}

#[derive(Args)]
struct TeeArgs {
    /// The raw 1184-byte report (binary, or hex text).
    #[arg(long)]
    report: PathBuf,
    /// The VCEK or VLEK certificate (DER or PEM).
    #[arg(long)]
    vek: PathBuf,
    /// Intermediate certificates from the host (ASK, ASVK), DER or PEM bundles.
    #[arg(long)]
    intermediate: Vec<PathBuf>,
    /// Accept a guest that allows debugging (never in production).
    #[arg(long)]
    allow_debug: bool,
    /// Required VMPL (default 0); `any` accepts every level.
    #[arg(long, default_value = "0")]
    vmpl: String,
    /// Allowed launch measurement (96 hex digits); repeat for several. Default: any.
    #[arg(long)]
    measurement: Vec<String>,
    /// Expected REPORT_DATA (128 hex digits).
    #[arg(long)]
    report_data: Option<String>,
    /// DEVELOPMENT ONLY: also trust this simulated root certificate (DER).
    #[arg(long)]
    simulated_root: Option<PathBuf>,
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn hex_array<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let b = hex::decode(s.trim().trim_start_matches("0x"))
        .with_context(|| format!("{what} is not hex"))?;
    b.try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("{what} has {} bytes, expected {N}", b.len()))
}

fn tee_verify(ui: &Ui, a: &TeeArgs) -> Result<serde_json::Value> {
    use veriml_tee::verify::{pem_bundle, Policy, Verifier};
    let mut report = read_bytes(&a.report)?;
    if report.len() != veriml_tee::report::REPORT_LEN {
        if let Ok(b) = hex::decode(String::from_utf8_lossy(&report).trim()) {
            report = b;
        }
    }
    let vek = read_bytes(&a.vek)?;
    let mut intermediates = Vec::new();
    for p in &a.intermediate {
        let b = read_bytes(p)?;
        if b.starts_with(b"-----BEGIN") {
            intermediates.extend(pem_bundle(&b));
        } else {
            intermediates.push(b);
        }
    }
    let policy = Policy {
        allow_debug: a.allow_debug,
        vmpl: match a.vmpl.as_str() {
            "any" => None,
            v => Some(v.parse().context("--vmpl is a number or `any`")?),
        },
        measurements: if a.measurement.is_empty() {
            None
        } else {
            Some(
                a.measurement
                    .iter()
                    .map(|m| hex_array::<48>(m, "--measurement"))
                    .collect::<Result<_>>()?,
            )
        },
        report_data: a
            .report_data
            .as_deref()
            .map(|d| hex_array::<64>(d, "--report-data"))
            .transpose()?,
        ..Policy::default()
    };
    let mut verifier = Verifier::amd();
    if let Some(root) = &a.simulated_root {
        verifier = verifier.with_simulated_root(&read_bytes(root)?)?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let v = verifier
        .verify(&report, &vek, &intermediates, None, &policy, now)
        .context("attestation rejected")?;
    ui.say(&format!(
        "attestation verified: {:?} ({:?}), VMPL {}, TCB {:?}, measurement {}",
        v.generation,
        v.signing_key,
        v.vmpl,
        v.tcb,
        hex::encode(v.measurement)
    ));
    if v.simulated && !ui.json {
        eprintln!("WARNING: SIMULATED attestation: no hardware vouches for it (development only)");
    }
    Ok(json!({
        "verified": true,
        "generation": format!("{:?}", v.generation),
        "simulated": v.simulated,
        "signing_key": format!("{:?}", v.signing_key),
        "vmpl": v.vmpl,
        "measurement": hex::encode(v.measurement),
        "report_data": hex::encode(v.report_data),
        "chip_id": hex::encode(v.chip_id),
    }))
}

fn run(cli: Cli) -> Result<()> {
    let ui = Ui { json: cli.json };
    let out = match cli.cmd {
        Cmd::Compile { model, dir, opts } => {
            let s = compile(&ui, &model, &dir.dir, &opts)?;
            ui.say(&format!(
                "compiled {} -> {} (k = {}, {} rows, {} weight columns x {} pages, {} public words, {} MACs)",
                model.display(),
                dir.dir.display(),
                s.circuit.k,
                s.circuit.rows_used,
                s.circuit.shape.weight_columns,
                s.circuit.shape.pages,
                s.circuit.num_instances,
                s.circuit.macs
            ));
            settings_summary(&s)
        }
        Cmd::Calibrate {
            model,
            dir,
            samples,
            target,
            input_range,
            max_weight_columns,
            input_visibility,
        } => calibrate(
            &ui,
            &model,
            &dir.dir,
            &samples,
            target,
            input_range,
            veriml_circuits::settings::PlanOptions {
                max_weight_columns,
                hashed_input: input_visibility == InputVisibility::Hashed,
            },
        )?,
        Cmd::Setup {
            dir,
            srs,
            insecure_dev_srs,
        } => setup(&ui, &dir.dir, srs.as_deref(), insecure_dev_srs)?,
        Cmd::Prove {
            dir,
            input,
            output,
            msm,
        } => {
            let out = output.unwrap_or_else(|| dir.dir.join("proof.json"));
            prove(&ui, &dir.dir, &input, &out, msm)?.1
        }
        Cmd::Verify { dir, proof } => {
            let p = proof.unwrap_or_else(|| dir.dir.join("proof.json"));
            verify(&ui, &dir.dir, &p, cli.allow_insecure_srs)?
        }
        Cmd::Mock { dir, input } => {
            let (settings, model) = load_compiled(&dir.dir)?;
            let data = parse_input(&read_text(&input)?, &input.display().to_string())?;
            match pipeline::mock(&settings, model, &data) {
                Ok(r) => {
                    ui.say(&format!(
                        "all constraints satisfied (k = {}, {} rows); output {:?}",
                        r.k, r.rows_used, r.output
                    ));
                    json!({"satisfied": true, "k": r.k, "output": r.output})
                }
                Err(veriml_prover::ProverError::Unsatisfied(fails)) => {
                    if cli.json {
                        println!("{}", json!({"satisfied": false, "failures": fails}));
                    } else {
                        for f in &fails {
                            eprintln!("{f}");
                        }
                    }
                    bail!("{} constraint(s) failed", fails.len());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Cmd::Accuracy {
            dir,
            samples,
            per_layer,
            onnx,
        } => accuracy(
            &ui,
            &dir.dir,
            &samples,
            onnx.as_deref().filter(|_| per_layer),
        )?,
        Cmd::TeeVerify(args) => tee_verify(&ui, &args)?,
        Cmd::CreateEvmVerifier { dir, solc } => {
            create_evm_verifier(&ui, &dir.dir, &solc, cli.allow_insecure_srs)?
        }
        Cmd::VerifyEvm {
            dir,
            proof,
            rpc,
            private_key,
        } => {
            let p = proof.unwrap_or_else(|| dir.dir.join("proof.json"));
            match rpc {
                Some(rpc) => {
                    let Some(private_key) = private_key else {
                        bail!("--rpc needs --private-key (or VERIML_PRIVATE_KEY)");
                    };
                    let chain = onchain::ChainArgs { rpc, private_key };
                    onchain::verify(&ui, &dir.dir, &p, &chain, cli.allow_insecure_srs)?
                }
                None => verify_evm(&ui, &dir.dir, &p, cli.allow_insecure_srs)?,
            }
        }
        Cmd::Deploy { dir, chain, opts } => {
            onchain::deploy(&ui, &dir.dir, &chain, &opts, cli.allow_insecure_srs)?
        }
        Cmd::Serve(a) => gateway::serve(&ui, &a)?,
        Cmd::TeeRegister(a) => gateway::tee_register(&ui, &a)?,
        Cmd::Settle(a) => gateway::settle(&ui, &a, cli.allow_insecure_srs)?,
        Cmd::Models { catalogue, cmd } => models(&ui, &catalogue, cmd, cli.allow_insecure_srs)?,
        Cmd::Example { dir } => {
            let onnx = dir.join("digits_mlp.onnx");
            artifacts::write_atomic(&onnx, EXAMPLE_ONNX)?;
            let input = dir.join("input.json");
            artifacts::write_atomic(&input, EXAMPLE_INPUT.as_bytes())?;
            let opts = CompileOpts {
                scale_bits: 14,
                weight_bits: 16,
                input_range: (0.0, 1.0),
                max_weight_columns: veriml_circuits::settings::DEFAULT_MAX_WEIGHT_COLUMNS,
                lookup_bits: 12,
                input_visibility: InputVisibility::Public,
            };
            let s = compile(&ui, &onnx, &dir, &opts)?;
            ui.say(&format!(
                "1/4 compiled digits_mlp: k = {}, {} MACs",
                s.circuit.k, s.circuit.macs
            ));
            let st = setup(&ui, &dir, None, true)?;
            ui.say("2/4 keys generated (INSECURE development SRS: for this demo only)");
            let proof_path = dir.join("proof.json");
            let (proof, pr) = prove(
                &ui,
                &dir,
                &input,
                &proof_path,
                veriml_prover::msm::MsmChoice::Auto,
            )?;
            ui.say("3/4 proof generated");
            // the example's own development SRS, which it announced above
            let v = verify(&ui, &dir, &proof_path, true)?;
            let class = proof
                .output
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap_or(0);
            ui.say(&format!(
                "4/4 verified: the model classifies the example digit as {class}"
            ));
            json!({"settings": settings_summary(&s), "setup": st, "prove": pr, "verify": v, "predicted_class": class})
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

fn models(ui: &Ui, path: &Path, cmd: ModelsCmd, allow_insecure: bool) -> Result<serde_json::Value> {
    use veriml_gateway::{Catalogue, ClosedModel, Entry, OpenModel};
    let mut c = Catalogue::load(path)?;
    let summary = |id: &str, e: &Entry| match e {
        Entry::Open(m) => format!(
            "{id}: open, {} in {} (k = {}{})",
            m.model_name,
            m.dir.display(),
            m.k,
            m.onchain.as_ref().map_or(String::new(), |o| format!(
                ", verifier {} on chain {}",
                o.verifier, o.chain_id
            ))
        ),
        Entry::Closed(m) => format!(
            "{id}: closed, {} at {} through {} ({} measurement(s))",
            m.provider_model,
            m.provider,
            m.runner,
            m.measurements.len()
        ),
    };
    Ok(match cmd {
        ModelsCmd::Add {
            id,
            dir,
            provider,
            provider_model,
            runner,
            measurement,
            replace,
        } => {
            let entry = match (dir, provider) {
                (Some(dir), _) => Entry::Open(OpenModel::from_folder(&dir)?),
                (None, Some(provider)) => Entry::Closed(ClosedModel::new(
                    &provider,
                    provider_model.as_deref().unwrap_or_default(),
                    runner.as_deref().unwrap_or_default(),
                    &measurement,
                )?),
                (None, None) => bail!(
                    "give --dir for an open model, or --provider, --provider-model, --runner and \
                     --measurement for a closed model"
                ),
            };
            c.add(&id, entry.clone(), replace)?;
            c.save(path)?;
            ui.say(&format!(
                "added {} to {}",
                summary(&id, &entry),
                path.display()
            ));
            json!({"added": id, "entry": entry})
        }
        ModelsCmd::List => {
            if c.models.is_empty() {
                ui.say(&format!("no models in {}", path.display()));
            }
            for (id, e) in &c.models {
                ui.say(&summary(id, e));
            }
            json!({"models": c.models})
        }
        ModelsCmd::Show { id } => {
            let e = c.get(&id)?;
            let folder = match e {
                Entry::Open(m) => Some(m.check().map(|_| ()).map_err(|e| e.to_string())),
                Entry::Closed(_) => None,
            };
            ui.say(&serde_json::to_string_pretty(e)?);
            if let Some(Err(problem)) = &folder {
                ui.say(&format!("WARNING: {problem}"));
            }
            json!({"id": id, "entry": e, "folder_ok": folder.map(|r| r.is_ok())})
        }
        ModelsCmd::Remove { id } => {
            let e = c.remove(&id)?;
            c.save(path)?;
            ui.say(&format!("removed {}", summary(&id, &e)));
            json!({"removed": id})
        }
        ModelsCmd::Receipt { id, proof, output } => {
            let Entry::Open(m) = c.get(&id)? else {
                bail!("model `{id}` is a closed model: its receipts come from the TEE runner");
            };
            let settings = m.check()?;
            let p = ProofFile::from_json(&read_text(&proof)?, &proof)?;
            let r = veriml_gateway::InferenceReceipt::open(&id, &settings, p)?;
            artifacts::write_atomic(&output, serde_json::to_string_pretty(&r)?.as_bytes())?;
            ui.say(&format!(
                "receipt of {id} written to {} (input hash {}, output hash {})",
                output.display(),
                r.input_hash,
                r.output_hash
            ));
            json!({"receipt": output, "input_hash": r.input_hash, "output_hash": r.output_hash})
        }
        ModelsCmd::Check { receipt } => {
            let r = veriml_gateway::InferenceReceipt::from_json(&read_text(&receipt)?)
                .with_context(|| format!("in {}", receipt.display()))?;
            let (_, d) = ui.step("checking the receipt", || Ok(r.verify(&c, allow_insecure)?))?;
            ui.say(&format!(
                "receipt checked: model {} input hash {} output hash {}",
                r.model_id, r.input_hash, r.output_hash
            ));
            json!({"checked": true, "model_id": r.model_id, "input_hash": r.input_hash,
                   "output_hash": r.output_hash, "seconds": d.as_secs_f64()})
        }
    })
}

/// A build with the `asm` feature runs ADX and BMI2 instructions in every field multiplication:
/// refuse to start (instead of dying on an illegal instruction) on a CPU without them.
fn check_cpu() -> Result<()> {
    #[cfg(all(feature = "asm", target_arch = "x86_64"))]
    if !(std::arch::is_x86_feature_detected!("adx") && std::arch::is_x86_feature_detected!("bmi2"))
    {
        bail!(
            "this veriml was built with the `asm` feature (BN254 arithmetic in x86-64 assembly), \
             which needs a CPU with ADX and BMI2 (Intel Broadwell, AMD Zen and later); rebuild it \
             with `cargo build --release -p veriml-cli --no-default-features`"
        );
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let json = cli.json;
    if let Err(e) = check_cpu().and_then(|()| run(cli)) {
        if json {
            println!("{}", json!({"error": format!("{e:#}")}));
        } else {
            eprintln!("error: {e:#}");
        }
        std::process::exit(1);
    }
}
