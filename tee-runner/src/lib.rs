//! VeriML TEE runner: closed models run inside an AMD SEV-SNP guest whose hardware
//! attestation binds the key that signs every result.
//!
//! This crate holds the attestation side: parsing raw SEV-SNP reports ([`report`]) and
//! verifying them against AMD's pinned roots with a policy ([`verify`]).
#![forbid(unsafe_code)]

pub mod attester;
pub mod client;
pub mod receipt;
pub mod report;
pub mod service;
pub mod simulated;
pub mod verify;

pub use attester::{AttestError, Attestation, Attester, SevGuestAttester};
pub use report::{AttestationReport, ReportError, SigningKey, Tcb};
pub use simulated::SimulatedPlatform;
pub use verify::{Generation, Policy, VerifiedReport, Verifier, VerifyError};
