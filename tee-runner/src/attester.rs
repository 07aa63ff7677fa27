//! Obtaining attestation reports: from the SEV-SNP guest device, or simulated.

use crate::simulated::SimulatedPlatform;

/// A report with the certificates a verifier needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The raw 1184-byte report.
    pub report: Vec<u8>,
    /// The endorsement key certificate (VCEK or VLEK), DER; empty when the host gave none
    /// (the verifier then fetches or caches it by chip id and TCB).
    pub vek: Vec<u8>,
    /// Intermediates the host supplied (ASK/ASVK), DER.
    pub intermediates: Vec<Vec<u8>>,
    /// True when this report comes from the simulated attester: no hardware vouches for it.
    pub simulated: bool,
}

/// Why an attestation could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("cannot open /dev/sev-guest (not inside an SEV-SNP guest?): {0}")]
    Device(std::io::Error),
    #[error("the SEV-SNP firmware refused the report request: {0}")]
    Firmware(String),
    #[error("simulated attester: {0}")]
    Simulated(String),
}

/// Produces attestation reports carrying 64 bytes of caller data (REPORT_DATA).
pub trait Attester: Send + Sync {
    fn attest(&self, report_data: [u8; 64]) -> Result<Attestation, AttestError>;
}

/// The real thing: an extended report from `/dev/sev-guest` at VMPL 0, with the certificate
/// table when the host provides one.
#[derive(Debug, Default, Clone, Copy)]
pub struct SevGuestAttester;

impl Attester for SevGuestAttester {
    fn attest(&self, report_data: [u8; 64]) -> Result<Attestation, AttestError> {
        let mut fw = sev::firmware::guest::Firmware::open().map_err(AttestError::Device)?;
        let (report, certs) = fw
            .get_ext_report(None, Some(report_data), Some(0))
            .map_err(|e| AttestError::Firmware(e.to_string()))?;
        let mut vek = Vec::new();
        let mut intermediates = Vec::new();
        // the host's ARK, if any, is left out: verifiers use their pinned roots
        for entry in certs.unwrap_or_default() {
            use sev::firmware::host::CertType;
            match entry.cert_type {
                CertType::VCEK | CertType::VLEK => vek = entry.data().to_vec(),
                CertType::ASK => intermediates.push(entry.data().to_vec()),
                _ => {}
            }
        }
        Ok(Attestation {
            report,
            vek,
            intermediates,
            simulated: false,
        })
    }
}

impl Attester for SimulatedPlatform {
    fn attest(&self, report_data: [u8; 64]) -> Result<Attestation, AttestError> {
        Ok(Attestation {
            report: self.report(report_data),
            vek: self.vcek_der().to_vec(),
            intermediates: vec![self.ask_der().to_vec()],
            simulated: true,
        })
    }
}
