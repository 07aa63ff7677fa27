//! Typed errors of the prover.

use std::path::PathBuf;
use veriml_circuits::CompileError;

/// Everything that can go wrong while setting up, proving or verifying.
#[derive(Debug, thiserror::Error)]
pub enum ProverError {
    #[error(transparent)]
    Compile(#[from] CompileError),

    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("bad {what} file {path}: {detail}")]
    BadFile {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },

    #[error(
        "the SRS has k = {have} but the circuit needs k = {need}; use a larger powers-of-tau file"
    )]
    SrsTooSmall { have: u32, need: u32 },

    #[error("the keys were made with an INSECURE development SRS ({detail}): whoever generated it can forge proofs; pass --allow-insecure-srs to accept it for development")]
    InsecureSrs { detail: String },

    #[error("{what} does not belong to this model: {detail}")]
    Mismatch { what: &'static str, detail: String },

    #[error("halo2 failed while {stage}: {detail}")]
    Halo2 { stage: &'static str, detail: String },

    #[error("the witness does not satisfy the circuit ({} failure(s)); first: {}", .0.len(), .0.first().map(String::as_str).unwrap_or(""))]
    Unsatisfied(Vec<String>),

    #[error("Solidity compilation failed: {0}")]
    Solidity(String),

    #[error("the generated verifier has {size} bytes of runtime code, over the EIP-170 limit of {limit}; each weight column (Freivalds slot) adds about 300 bytes and each public word about 200: compile again with a lower --max-weight-columns (see settings.json circuit.shape.weight_columns) or, for a large input, --input-visibility hashed (one public word for the whole input)")]
    VerifierTooLarge { size: usize, limit: usize },

    #[error("EVM execution failed: {0}")]
    Evm(String),

    #[error("proof rejected: {0}")]
    Rejected(String),

    #[error("the prover's commitment parameters: {0}")]
    Engine(String),

    #[error("chain request failed while {stage}: {detail}")]
    Chain { stage: &'static str, detail: String },
}
