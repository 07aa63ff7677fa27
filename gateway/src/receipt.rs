//! `InferenceReceipt`: what every inference returns, open or closed model, in one versioned
//! format.
//!
//! ```json
//! {"format": "veriml-inference-receipt", "version": 1, "model_id": "digits",
//!  "input_hash": "0x…", "output_hash": "0x…", "output": [0.1, …],
//!  "evidence": {"kind": "zk", "proof": { …the proof file… }}}
//! ```
//!
//! - `input_hash` and `output_hash` are what the contracts compute, so a receipt settles to the
//!   result a consumer contract looks up:
//!   - **zk** (open models): `keccak256` of the input words and of the output words, each a
//!     32-byte big-endian word, concatenated (`ModelRegistry.verify`'s `abi.encodePacked`); the
//!     evidence is the proof file (public words, proof bytes); `output` is its dequantized output.
//!   - **tee** (closed models): the TEE runner's signed receipt's `request_hash` and
//!     `response_hash` (`keccak256` of the request and response bytes); the evidence is that
//!     receipt, its signature and the signing key's address; `output` is the response body as
//!     the runner returned it (a string, so that its hash can be checked) and `request`, when
//!     present, the request as it was sent (checked against `input_hash` likewise).
//! - [`InferenceReceipt::verify`] checks everything that needs no chain: the hashes against the
//!   evidence, and the evidence against the catalogue entry of `model_id` (the proof against the
//!   open model's verifying key and SRS; the signature by `key`, the receipt's model id against
//!   the closed model's provider model name). Whether `key` is an attested runner key is the
//!   registry's question (`TeeRegistry` on chain, `veriml tee-verify` off chain).

use crate::catalogue::{Catalogue, CatalogueError, Entry};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use veriml_circuits::{circuit::Packing, Settings};
use veriml_prover::{chain, pipeline, ProofFile, Srs};
use veriml_tee::receipt::{keccak, verify_receipt, Receipt};

pub const RECEIPT_FORMAT: &str = "veriml-inference-receipt";
pub const RECEIPT_VERSION: u32 = 1;

/// Why a receipt does not check out; each names what disagrees.
#[derive(Debug, Error)]
pub enum ReceiptCheckError {
    #[error("not an inference receipt: {0}")]
    Format(String),
    #[error("the {which} hash {claimed} is not the evidence's {computed}")]
    Hash {
        which: &'static str,
        claimed: String,
        computed: String,
    },
    #[error("model `{id}` is a {actual} model in the catalogue, but the receipt has {evidence} evidence")]
    Kind {
        id: String,
        actual: &'static str,
        evidence: &'static str,
    },
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    #[error("the proof does not verify: {0}")]
    Proof(String),
    #[error("the TEE receipt's signature: {0}")]
    Signature(String),
    #[error("{field}: {detail}")]
    Field { field: &'static str, detail: String },
}

/// The result of one inference with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferenceReceipt {
    pub format: String,
    pub version: u32,
    /// The catalogue's model id.
    pub model_id: String,
    pub input_hash: String,
    pub output_hash: String,
    pub output: serde_json::Value,
    /// A closed model's request as the runner received it (the bytes `input_hash` hashes), when
    /// the receipt carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    pub evidence: Evidence,
}

/// A proof (open model) or a TEE runner's signed receipt (closed model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    Zk { proof: ProofFile },
    Tee(TeeEvidence),
}

/// A TEE runner's receipt, its signature and the address of the key that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeeEvidence {
    pub receipt: Receipt,
    /// `r || s || v`, hex.
    pub signature: String,
    /// The signing key's Ethereum address, hex.
    pub key: String,
}

fn hex32(b: &[u8; 32]) -> String {
    format!("0x{}", hex::encode(b))
}

fn decode(field: &'static str, s: &str, len: usize) -> Result<Vec<u8>, ReceiptCheckError> {
    let b = hex::decode(s.trim_start_matches("0x")).map_err(|e| ReceiptCheckError::Field {
        field,
        detail: format!("not hex: {e}"),
    })?;
    if b.len() != len {
        return Err(ReceiptCheckError::Field {
            field,
            detail: format!("{} bytes, not {len}", b.len()),
        });
    }
    Ok(b)
}

/// The hashes the registries record for a proof's public words (`chain::result_hashes` over
/// the model's input words and the rest), as 0x-hex.
fn result_hashes(
    settings: &Settings,
    instances: &[String],
) -> Result<(String, String), ReceiptCheckError> {
    let words = instances
        .iter()
        .map(|w| {
            pipeline::fr_from_hex(w)
                .map(|f| chain::word(&f))
                .ok_or_else(|| ReceiptCheckError::Field {
                    field: "evidence.proof.instances",
                    detail: format!("`{w}` is not a 32-byte field element"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = Packing::new(&settings.public_layout()).input_words;
    if words.len() < n {
        return Err(ReceiptCheckError::Field {
            field: "evidence.proof.instances",
            detail: format!("{} words, fewer than the {n} input words", words.len()),
        });
    }
    let (input, output) = chain::result_hashes(&words, n);
    Ok((input.to_string(), output.to_string()))
}

impl InferenceReceipt {
    /// The receipt of a proof of an open model (`settings` are the model's).
    pub fn open(
        model_id: &str,
        settings: &Settings,
        proof: ProofFile,
    ) -> Result<Self, ReceiptCheckError> {
        let (input_hash, output_hash) = result_hashes(settings, &proof.instances)?;
        Ok(InferenceReceipt {
            format: RECEIPT_FORMAT.into(),
            version: RECEIPT_VERSION,
            model_id: model_id.into(),
            input_hash,
            output_hash,
            output: serde_json::json!(proof.output),
            request: None,
            evidence: Evidence::Zk { proof },
        })
    }

    /// The receipt of a closed model's response through the TEE runner, with the request as it
    /// was sent when known.
    pub fn closed(
        model_id: &str,
        receipt: Receipt,
        signature: &[u8; 65],
        key: &[u8; 20],
        request_body: Option<String>,
        response_body: String,
    ) -> Self {
        InferenceReceipt {
            format: RECEIPT_FORMAT.into(),
            version: RECEIPT_VERSION,
            model_id: model_id.into(),
            input_hash: hex32(&receipt.request_hash),
            output_hash: hex32(&receipt.response_hash),
            output: serde_json::Value::String(response_body),
            request: request_body,
            evidence: Evidence::Tee(TeeEvidence {
                receipt,
                signature: format!("0x{}", hex::encode(signature)),
                key: format!("0x{}", hex::encode(key)),
            }),
        }
    }

    /// Parses a receipt and checks its format and version.
    pub fn from_json(text: &str) -> Result<Self, ReceiptCheckError> {
        let r: InferenceReceipt =
            serde_json::from_str(text).map_err(|e| ReceiptCheckError::Format(e.to_string()))?;
        if r.format != RECEIPT_FORMAT || r.version != RECEIPT_VERSION {
            return Err(ReceiptCheckError::Format(format!(
                "expected `{RECEIPT_FORMAT}` version {RECEIPT_VERSION}, found `{}` version {}",
                r.format, r.version
            )));
        }
        Ok(r)
    }

    fn check_hash(
        which: &'static str,
        claimed: &str,
        computed: &str,
    ) -> Result<(), ReceiptCheckError> {
        if !claimed.eq_ignore_ascii_case(computed) {
            return Err(ReceiptCheckError::Hash {
                which,
                claimed: claimed.into(),
                computed: computed.into(),
            });
        }
        Ok(())
    }

    /// Checks the receipt without a chain (see the module documentation). A development SRS is
    /// refused unless `allow_insecure_srs`.
    pub fn verify(
        &self,
        catalogue: &Catalogue,
        allow_insecure_srs: bool,
    ) -> Result<(), ReceiptCheckError> {
        let entry = catalogue.get(&self.model_id)?;
        match (&self.evidence, entry) {
            (Evidence::Zk { proof }, Entry::Open(m)) => {
                let settings = m.check()?;
                let (input, output) = result_hashes(&settings, &proof.instances)?;
                Self::check_hash("input", &self.input_hash, &input)?;
                Self::check_hash("output", &self.output_hash, &output)?;
                if self.output != serde_json::json!(proof.output) {
                    return Err(ReceiptCheckError::Field {
                        field: "output",
                        detail: "not the proof file's output".into(),
                    });
                }
                let folder = |e: String| CatalogueError::Folder {
                    dir: m.dir.clone(),
                    detail: e,
                };
                let (vk, header) = pipeline::read_vk(&m.dir.join("vk.bin"), &settings)
                    .map_err(|e| folder(e.to_string()))?;
                let srs = Srs::read(&m.dir.join("kzg.srs"))
                    .and_then(|s| s.downsized(settings.circuit.k))
                    .map_err(|e| folder(e.to_string()))?;
                pipeline::verify(&srs, &vk, &header, &settings, proof, allow_insecure_srs)
                    .map_err(|e| ReceiptCheckError::Proof(e.to_string()))?;
                Ok(())
            }
            (Evidence::Tee(t), Entry::Closed(m)) => {
                Self::check_hash("input", &self.input_hash, &hex32(&t.receipt.request_hash))?;
                Self::check_hash(
                    "output",
                    &self.output_hash,
                    &hex32(&t.receipt.response_hash),
                )?;
                if let Some(request) = &self.request {
                    Self::check_hash(
                        "input",
                        &self.input_hash,
                        &hex32(&keccak(request.as_bytes())),
                    )?;
                }
                let body = self.output.as_str().ok_or(ReceiptCheckError::Field {
                    field: "output",
                    detail: "a closed model's output is the response body, a string".into(),
                })?;
                Self::check_hash(
                    "output",
                    &self.output_hash,
                    &hex32(&keccak(body.as_bytes())),
                )?;
                let model = keccak(m.provider_model.as_bytes());
                if t.receipt.model_id != model {
                    return Err(ReceiptCheckError::Field {
                        field: "evidence.receipt.model_id",
                        detail: format!(
                            "{} is not keccak256(\"{}\") = {}",
                            hex32(&t.receipt.model_id),
                            m.provider_model,
                            hex32(&model)
                        ),
                    });
                }
                let sig = decode("evidence.signature", &t.signature, 65)?;
                let key: [u8; 20] = decode("evidence.key", &t.key, 20)?
                    .try_into()
                    .expect("20 bytes");
                verify_receipt(&t.receipt, &sig, &key)
                    .map_err(|e| ReceiptCheckError::Signature(e.to_string()))
            }
            (e, entry) => Err(ReceiptCheckError::Kind {
                id: self.model_id.clone(),
                actual: match entry {
                    Entry::Open(_) => "open",
                    Entry::Closed(_) => "closed",
                },
                evidence: match e {
                    Evidence::Zk { .. } => "zk",
                    Evidence::Tee(_) => "tee",
                },
            }),
        }
    }
}
