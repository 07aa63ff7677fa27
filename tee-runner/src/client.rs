//! The client side of a runner's attestation: ask a running TEE runner for a report bound to a
//! fresh nonce, verify it, and learn the key that signs its receipts. The gateway does this
//! before it trusts a runner; operators do it before they sign the key's registration
//! (`veriml tee-register`).

use crate::report::{report_data_binding, Tcb};
use crate::service::AttestationResponse;
use crate::verify::{Policy, VerifiedReport, Verifier};
use rand_core::RngCore;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Why a runner is not trusted.
#[derive(Debug, Error)]
pub enum AttestClientError {
    #[error("cannot reach the TEE runner at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the TEE runner at {url} did not answer in time")]
    Timeout { url: String },
    #[error("the TEE runner at {url} is not attested: {detail}")]
    Unattested { url: String, detail: String },
}

/// A runner whose report checked out.
#[derive(Clone, Debug)]
pub struct AttestedRunner {
    /// The address of the key that signs its receipts.
    pub key: [u8; 20],
    pub report: VerifiedReport,
}

impl AttestedRunner {
    /// The TCB as the `uint64` a `TeeRegistry` registration records: the report's 8 TCB bytes,
    /// little-endian, in the layout of the report's generation.
    pub fn tcb_word(&self) -> u64 {
        tcb_word(&self.report.tcb)
    }
}

/// The 8 TCB bytes of a report as a little-endian `u64` (Milan and Genoa: bootloader, TEE,
/// 4 reserved, SNP, microcode; Turin: FMC, bootloader, TEE, SNP, 3 reserved, microcode).
pub fn tcb_word(t: &Tcb) -> u64 {
    let b = match t.fmc {
        Some(fmc) => [fmc, t.bootloader, t.tee, t.snp, 0, 0, 0, t.microcode],
        None => [t.bootloader, t.tee, 0, 0, 0, 0, t.snp, t.microcode],
    };
    u64::from_le_bytes(b)
}

/// Asks the runner at `url` for a report bound to a fresh nonce and verifies it: the chain to
/// AMD's roots (or `simulated_root`, development only), the production policy (no debug,
/// VMPL 0), one of `measurements`, and REPORT_DATA binding the key the runner names and the
/// nonce.
pub async fn attest_runner(
    http: &reqwest::Client,
    url: &str,
    measurements: &[[u8; 48]],
    simulated_root: Option<&[u8]>,
) -> Result<AttestedRunner, AttestClientError> {
    let base = url.trim_end_matches('/');
    let unattested = |detail: String| AttestClientError::Unattested {
        url: base.to_string(),
        detail,
    };
    let mut nonce = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut nonce);
    let resp = http
        .get(format!("{base}/attestation?nonce={}", hex::encode(nonce)))
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                AttestClientError::Timeout {
                    url: base.to_string(),
                }
            } else {
                AttestClientError::Unreachable {
                    url: base.to_string(),
                    detail: e.to_string(),
                }
            }
        })?;
    if !resp.status().is_success() {
        return Err(unattested(format!(
            "it answered {} to an attestation request",
            resp.status()
        )));
    }
    let att: AttestationResponse = resp
        .json()
        .await
        .map_err(|e| unattested(format!("its attestation is not readable: {e}")))?;
    let unhex = |what: &str, x: &str| {
        hex::decode(x.trim_start_matches("0x"))
            .map_err(|e| unattested(format!("{what} is not hex: {e}")))
    };
    let public_key = unhex("the public key", &att.public_key)?;
    let policy = Policy {
        measurements: Some(measurements.to_vec()),
        report_data: Some(report_data_binding(&public_key, &nonce)),
        ..Policy::default()
    };
    let mut verifier = Verifier::amd();
    if let Some(root) = simulated_root {
        verifier = verifier
            .with_simulated_root(root)
            .map_err(|e| unattested(format!("the simulated root: {e}")))?;
    }
    let intermediates = att
        .intermediates
        .iter()
        .map(|x| unhex("an intermediate certificate", x))
        .collect::<Result<Vec<_>, _>>()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let report = verifier
        .verify(
            &unhex("the report", &att.report)?,
            &unhex("the VEK certificate", &att.vek)?,
            &intermediates,
            None,
            &policy,
            now,
        )
        .map_err(|e| unattested(e.to_string()))?;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&public_key)
        .map_err(|e| unattested(format!("the public key: {e}")))?;
    let key = crate::receipt::address_of(&vk);
    if hex::encode(key) != att.key.trim_start_matches("0x").to_ascii_lowercase() {
        return Err(unattested(format!(
            "it names key {}, but its attested public key is 0x{}",
            att.key,
            hex::encode(key)
        )));
    }
    Ok(AttestedRunner { key, report })
}
