//! VeriML prover: structured reference strings, key generation, KZG/SHPLONK proving with the
//! Keccak EVM transcript, native verification, and the versioned artifact files.
//!
//! Proofs use snark-verifier's Keccak-256 transcript from the start, so the bytes verified here
//! are the bytes an on-chain verifier checks.
#![forbid(unsafe_code)]

pub mod artifacts;
pub mod chain;
pub mod engine;
pub mod error;
pub mod evm;
pub mod msm;
pub mod pipeline;
pub mod srs;

pub use artifacts::{KeyHeader, ProofFile};
pub use error::ProverError;
pub use pipeline::{mock, prove, setup, verify, Keys, MockReport};
pub use srs::{Srs, SrsOrigin};
