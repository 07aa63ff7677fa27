//! The model catalogue: which model id runs where.
//!
//! One JSON file (`veriml-models.json` by default), written atomically:
//!
//! ```json
//! {"format": "veriml-catalogue", "version": 1, "models": {
//!   "digits": {"kind": "open", "dir": "/srv/veriml/digits", "model_name": "digits_mlp", ...},
//!   "gpt-4o": {"kind": "closed", "provider": "https://api.openai.com/v1", "provider_model": "gpt-4o",
//!              "runner": "https://runner.example:8443", "measurements": ["5a…"]}}}
//! ```
//!
//! - An **open** model is an artifact folder that `veriml compile` and `veriml setup` wrote
//!   (`settings.json`, `model.compiled.json`, `pk.bin`, `vk.bin`, `kzg.srs`; `deployment.json`
//!   once `veriml deploy` registered its verifier). The catalogue records the folder and the
//!   hashes its keys commit to (ONNX file, compiled model, settings), so a folder changed after
//!   it was added is refused by [`OpenModel::check`] instead of proving a different statement.
//! - A **closed** model is served by a provider's OpenAI-compatible API through the TEE runner:
//!   the provider's base URL and model name, the runner's URL, and the SEV-SNP launch
//!   measurements (48 bytes each) the runner's attestation may show.
//!
//! Model ids are 1 to 64 characters from `A-Z a-z 0-9 . _ -`, starting with a letter or digit
//! (they appear in URLs and on chain as `keccak256(id)`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;
use veriml_circuits::Settings;
use veriml_prover::{artifacts, chain::Deployment, pipeline};

pub const CATALOGUE_FORMAT: &str = "veriml-catalogue";
pub const CATALOGUE_VERSION: u32 = 1;
/// Bytes of an SEV-SNP launch measurement.
pub const MEASUREMENT_BYTES: usize = 48;
/// Longest model id.
pub const MAX_ID_LEN: usize = 64;

/// What went wrong with the catalogue or an entry; each names the file, id or field.
#[derive(Debug, Error)]
pub enum CatalogueError {
    #[error("cannot read the catalogue {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the catalogue {path} is not valid: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error("model id `{id}`: {reason}")]
    BadId { id: String, reason: &'static str },
    #[error("model id `{id}` is already in the catalogue (remove it first, or replace it)")]
    Exists { id: String },
    #[error("model id `{id}` is not in the catalogue")]
    Unknown { id: String },
    #[error("{field}: {detail}")]
    BadField { field: &'static str, detail: String },
    #[error("the artifact folder {dir} cannot serve an open model: {detail}")]
    Folder { dir: PathBuf, detail: String },
    #[error(transparent)]
    Write(veriml_prover::ProverError),
}

/// The catalogue file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Catalogue {
    pub format: String,
    pub version: u32,
    pub models: BTreeMap<String, Entry>,
}

/// Where one model runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Open(OpenModel),
    Closed(ClosedModel),
}

/// An open model: a compiled and set-up artifact folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenModel {
    /// The artifact folder (absolute).
    pub dir: PathBuf,
    pub model_name: String,
    /// SHA-256 of the ONNX file it was compiled from.
    pub onnx_sha256: String,
    /// SHA-256 of the compiled model (weights, scales, layout): what the keys commit to.
    pub model_sha256: String,
    /// SHA-256 of `settings.json`, as the keys and proofs record it.
    pub settings_sha256: String,
    pub k: u32,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// The range every input value must lie in (the proof enforces it).
    pub input_range: (f64, f64),
    /// The registered on-chain verifier, when the folder has a `deployment.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onchain: Option<Onchain>,
}

/// Where an open model's verifier is registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Onchain {
    pub chain_id: u64,
    pub registry: String,
    pub verifier: String,
    /// The id `ModelRegistry` knows the model by.
    pub model_id: String,
}

/// A closed model: a provider's model behind the TEE runner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedModel {
    /// Base URL of the provider's OpenAI-compatible API (`http://` or `https://`).
    pub provider: String,
    /// The model name the provider knows.
    pub provider_model: String,
    /// URL of the TEE runner that forwards to the provider.
    pub runner: String,
    /// SEV-SNP launch measurements (hex, 48 bytes each) the runner may attest to.
    pub measurements: Vec<String>,
}

/// Checks a model id (see the module documentation).
pub fn check_id(id: &str) -> Result<(), CatalogueError> {
    let bad = |reason| {
        Err(CatalogueError::BadId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad("longer than 64 characters");
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or a digit");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad("only letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

fn check_url(field: &'static str, url: &str) -> Result<(), CatalogueError> {
    let bad = |detail: &str| {
        Err(CatalogueError::BadField {
            field,
            detail: format!("`{url}` {detail}"),
        })
    };
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return bad("is not an http:// or https:// URL");
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return bad("has no host");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace");
    }
    Ok(())
}

impl ClosedModel {
    /// A closed model, its fields checked; measurements are stored as lowercase hex without a
    /// `0x` prefix.
    pub fn new(
        provider: &str,
        provider_model: &str,
        runner: &str,
        measurements: &[String],
    ) -> Result<Self, CatalogueError> {
        // as given, before a trailing `/` is dropped
        check_url("provider", provider)?;
        check_url("runner", runner)?;
        let m = ClosedModel {
            provider: provider.trim_end_matches('/').to_string(),
            provider_model: provider_model.to_string(),
            runner: runner.trim_end_matches('/').to_string(),
            measurements: measurements
                .iter()
                .map(|s| s.trim_start_matches("0x").to_ascii_lowercase())
                .collect(),
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), CatalogueError> {
        check_url("provider", &self.provider)?;
        check_url("runner", &self.runner)?;
        if self.provider_model.trim().is_empty() {
            return Err(CatalogueError::BadField {
                field: "provider_model",
                detail: "empty".into(),
            });
        }
        if self.measurements.is_empty() {
            return Err(CatalogueError::BadField {
                field: "measurements",
                detail: "a closed model needs at least one launch measurement the runner may \
                         attest to"
                    .into(),
            });
        }
        for m in &self.measurements {
            match hex::decode(m) {
                Ok(b) if b.len() == MEASUREMENT_BYTES => {}
                Ok(b) => {
                    return Err(CatalogueError::BadField {
                        field: "measurements",
                        detail: format!("`{m}` has {} bytes, not {MEASUREMENT_BYTES}", b.len()),
                    })
                }
                Err(e) => {
                    return Err(CatalogueError::BadField {
                        field: "measurements",
                        detail: format!("`{m}` is not hex: {e}"),
                    })
                }
            }
        }
        Ok(())
    }
}

impl OpenModel {
    /// Reads an artifact folder: its settings, its verifying key (which must belong to those
    /// settings), its proving key's presence, and `deployment.json` if there is one.
    pub fn from_folder(dir: &Path) -> Result<Self, CatalogueError> {
        Self::load(dir).map(|(m, _)| m)
    }

    /// [`OpenModel::from_folder`] with the settings it read.
    fn load(dir: &Path) -> Result<(Self, Settings), CatalogueError> {
        let dir = std::path::absolute(dir).map_err(|e| CatalogueError::Folder {
            dir: dir.to_path_buf(),
            detail: e.to_string(),
        })?;
        let fail = |detail: String| CatalogueError::Folder {
            dir: dir.clone(),
            detail,
        };
        let sp = dir.join("settings.json");
        let text = std::fs::read_to_string(&sp)
            .map_err(|e| fail(format!("cannot read {}: {e}", sp.display())))?;
        let settings =
            Settings::from_json(&text).map_err(|e| fail(format!("{}: {e}", sp.display())))?;
        for file in ["model.compiled.json", "pk.bin", "kzg.srs"] {
            if !dir.join(file).is_file() {
                return Err(fail(format!(
                    "no {file} (run `veriml compile` and `veriml setup` first)"
                )));
            }
        }
        pipeline::read_vk(&dir.join("vk.bin"), &settings).map_err(|e| fail(e.to_string()))?;
        let dp = dir.join("deployment.json");
        let onchain = if dp.is_file() {
            let d: Deployment = std::fs::read_to_string(&dp)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                .map_err(|e| fail(format!("{}: {e}", dp.display())))?;
            if d.model_sha256 != settings.model_sha256 {
                return Err(fail(format!(
                    "{} registers another compiled model",
                    dp.display()
                )));
            }
            Some(Onchain {
                chain_id: d.chain_id,
                registry: d.registry,
                verifier: d.verifier,
                model_id: d.model_id,
            })
        } else {
            None
        };
        let model = OpenModel {
            model_name: settings.model_name.clone(),
            onnx_sha256: settings.onnx_sha256.clone(),
            model_sha256: settings.model_sha256.clone(),
            settings_sha256: settings.sha256(),
            k: settings.circuit.k,
            input_shape: settings.input_shape.clone(),
            output_shape: settings.output_shape.clone(),
            input_range: settings.quantization.input_range,
            onchain,
            dir,
        };
        Ok((model, settings))
    }

    /// Reads the folder again and checks that it still holds the model recorded here; returns
    /// its settings.
    pub fn check(&self) -> Result<Settings, CatalogueError> {
        let (now, settings) = OpenModel::load(&self.dir)?;
        if now.settings_sha256 != self.settings_sha256 || now.model_sha256 != self.model_sha256 {
            return Err(CatalogueError::Folder {
                dir: self.dir.clone(),
                detail: format!(
                    "it now holds another compiled model (settings {}, recorded {})",
                    now.settings_sha256, self.settings_sha256
                ),
            });
        }
        Ok(settings)
    }
}

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue {
            format: CATALOGUE_FORMAT.into(),
            version: CATALOGUE_VERSION,
            models: BTreeMap::new(),
        }
    }
}

impl Catalogue {
    /// Reads a catalogue file; a file that does not exist is an empty catalogue.
    pub fn load(path: &Path) -> Result<Self, CatalogueError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(CatalogueError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::from_json(&text, path)
    }

    /// Parses and checks a catalogue's text; `path` only names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, CatalogueError> {
        let format = |detail: String| CatalogueError::Format {
            path: path.to_path_buf(),
            detail,
        };
        let c: Catalogue = serde_json::from_str(text).map_err(|e| format(e.to_string()))?;
        if c.format != CATALOGUE_FORMAT || c.version != CATALOGUE_VERSION {
            return Err(format(format!(
                "expected format `{CATALOGUE_FORMAT}` version {CATALOGUE_VERSION}, found `{}` \
                 version {}",
                c.format, c.version
            )));
        }
        for (id, entry) in &c.models {
            check_id(id).map_err(|e| format(e.to_string()))?;
            if let Entry::Closed(m) = entry {
                m.validate()
                    .map_err(|e| format(format!("model `{id}`: {e}")))?;
            }
        }
        Ok(c)
    }

    /// Writes the catalogue atomically.
    pub fn save(&self, path: &Path) -> Result<(), CatalogueError> {
        let text = serde_json::to_string_pretty(self).expect("a catalogue serializes");
        artifacts::write_atomic(path, text.as_bytes()).map_err(CatalogueError::Write)
    }

    /// Adds a model; an id already present is refused unless `replace`.
    pub fn add(&mut self, id: &str, entry: Entry, replace: bool) -> Result<(), CatalogueError> {
        check_id(id)?;
        if let Entry::Closed(m) = &entry {
            m.validate()?;
        }
        if !replace && self.models.contains_key(id) {
            return Err(CatalogueError::Exists { id: id.into() });
        }
        self.models.insert(id.to_string(), entry);
        Ok(())
    }

    /// The entry of a model id.
    pub fn get(&self, id: &str) -> Result<&Entry, CatalogueError> {
        self.models
            .get(id)
            .ok_or_else(|| CatalogueError::Unknown { id: id.into() })
    }

    /// Removes a model and returns its entry.
    pub fn remove(&mut self, id: &str) -> Result<Entry, CatalogueError> {
        self.models
            .remove(id)
            .ok_or_else(|| CatalogueError::Unknown { id: id.into() })
    }
}
