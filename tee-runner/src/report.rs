//! The raw SEV-SNP attestation report (AMD SEV-SNP ABI, `ATTESTATION_REPORT`, 1184 bytes).
//!
//! Parsed from the raw bytes, not re-encoded: the signature is checked over exactly the bytes
//! `[0, 0x2A0)` that the firmware signed.

/// Size of a report.
pub const REPORT_LEN: usize = 0x4A0;
/// The signed part of a report: `[0, SIGNED_LEN)`.
pub const SIGNED_LEN: usize = 0x2A0;
/// `POLICY` bit that allows a debugger (the host can read guest memory).
pub const POLICY_DEBUG_BIT: u64 = 1 << 19;

/// Why a report could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("a report has {REPORT_LEN} bytes, got {0}")]
    Length(usize),
    #[error("report version {0} is not supported (2 or later)")]
    Version(u32),
    #[error("signature algorithm {0} is not ECDSA P-384 with SHA-384 (1)")]
    SignatureAlgorithm(u32),
    #[error("signature component {0} has non-zero bytes above its 48 significant bytes")]
    SignaturePadding(&'static str),
}

/// Which key signed the report (`KEY_INFO.SIGNING_KEY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key.
    Vlek,
    /// No key (reserved value 7) or a reserved value.
    Other(u8),
}

/// A TCB version: security version numbers of the platform's firmware components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tcb {
    /// Turin and later only.
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl Tcb {
    /// Decodes the 8-byte TCB field; the layout differs on Turin (`fmc` first).
    pub fn decode(raw: [u8; 8], turin_layout: bool) -> Tcb {
        if turin_layout {
            Tcb {
                fmc: Some(raw[0]),
                bootloader: raw[1],
                tee: raw[2],
                snp: raw[3],
                microcode: raw[7],
            }
        } else {
            Tcb {
                fmc: None,
                bootloader: raw[0],
                tee: raw[1],
                snp: raw[6],
                microcode: raw[7],
            }
        }
    }

    /// True when every component is at least `min`'s.
    pub fn at_least(&self, min: &Tcb) -> Option<&'static str> {
        let pairs = [
            ("bootloader", self.bootloader, min.bootloader),
            ("tee", self.tee, min.tee),
            ("snp", self.snp, min.snp),
            ("microcode", self.microcode, min.microcode),
            ("fmc", self.fmc.unwrap_or(0), min.fmc.unwrap_or(0)),
        ];
        pairs
            .iter()
            .find(|(_, have, want)| have < want)
            .map(|p| p.0)
    }
}

/// The fields of a report that verification needs, read from the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationReport {
    raw: Vec<u8>,
    pub version: u32,
    pub guest_svn: u32,
    pub policy: u64,
    pub vmpl: u32,
    pub signing_key: SigningKey,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    /// REPORTED_TCB, raw (decode with [`Tcb::decode`] once the generation is known).
    pub reported_tcb_raw: [u8; 8],
    pub chip_id: [u8; 64],
    /// Signature scalars, big-endian.
    pub sig_r: [u8; 48],
    pub sig_s: [u8; 48],
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N].try_into().expect("in bounds: length checked")
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

/// A little-endian 72-byte signature component to 48 big-endian bytes; the upper 24 bytes
/// must be zero (otherwise several encodings would carry one signature).
fn scalar(raw: &[u8], name: &'static str) -> Result<[u8; 48], ReportError> {
    if raw[48..72].iter().any(|&b| b != 0) {
        return Err(ReportError::SignaturePadding(name));
    }
    let mut out: [u8; 48] = raw[..48].try_into().expect("48 bytes");
    out.reverse();
    Ok(out)
}

impl AttestationReport {
    /// Parses a raw 1184-byte report.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, ReportError> {
        if raw.len() != REPORT_LEN {
            return Err(ReportError::Length(raw.len()));
        }
        let version = u32_at(raw, 0x00);
        if version < 2 {
            return Err(ReportError::Version(version));
        }
        let algo = u32_at(raw, 0x34);
        if algo != 1 {
            return Err(ReportError::SignatureAlgorithm(algo));
        }
        let key_info = u32_at(raw, 0x48);
        let signing_key = match ((key_info >> 2) & 0b111) as u8 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            other => SigningKey::Other(other),
        };
        Ok(AttestationReport {
            version,
            guest_svn: u32_at(raw, 0x04),
            policy: u64::from_le_bytes(arr(raw, 0x08)),
            vmpl: u32_at(raw, 0x30),
            signing_key,
            report_data: arr(raw, 0x50),
            measurement: arr(raw, 0x90),
            host_data: arr(raw, 0xC0),
            reported_tcb_raw: arr(raw, 0x180),
            chip_id: arr(raw, 0x1A0),
            sig_r: scalar(&raw[0x2A0..0x2E8], "R")?,
            sig_s: scalar(&raw[0x2E8..0x330], "S")?,
            raw: raw.to_vec(),
        })
    }

    /// The bytes the firmware signed.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// The whole raw report.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn debug_allowed(&self) -> bool {
        self.policy & POLICY_DEBUG_BIT != 0
    }
}

/// REPORT_DATA binding a signing key and a freshness nonce: `SHA-512(domain || key || nonce)`.
pub fn report_data_binding(public_key: &[u8], nonce: &[u8]) -> [u8; 64] {
    use sha2::{Digest, Sha512};
    let mut h = Sha512::new();
    h.update(b"veriml-tee-binding-v1");
    h.update((public_key.len() as u32).to_le_bytes());
    h.update(public_key);
    h.update(nonce);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_bad_reports_are_typed_errors() {
        assert_eq!(
            AttestationReport::from_bytes(&[0; 10]),
            Err(ReportError::Length(10))
        );
        let mut raw = vec![0u8; REPORT_LEN];
        assert_eq!(
            AttestationReport::from_bytes(&raw),
            Err(ReportError::Version(0))
        );
        raw[0] = 2;
        assert_eq!(
            AttestationReport::from_bytes(&raw),
            Err(ReportError::SignatureAlgorithm(0))
        );
        raw[0x34] = 1;
        raw[0x2A0 + 60] = 1;
        assert_eq!(
            AttestationReport::from_bytes(&raw),
            Err(ReportError::SignaturePadding("R"))
        );
    }

    #[test]
    fn tcb_layouts() {
        let raw = [1, 2, 0, 0, 0, 0, 3, 4];
        assert_eq!(
            Tcb::decode(raw, false),
            Tcb {
                fmc: None,
                bootloader: 1,
                tee: 2,
                snp: 3,
                microcode: 4
            }
        );
        let t = Tcb::decode([9, 1, 2, 3, 0, 0, 0, 4], true);
        assert_eq!(t.fmc, Some(9));
        assert_eq!(t.snp, 3);
        assert_eq!(
            t.at_least(&Tcb {
                snp: 4,
                ..Tcb::default()
            }),
            Some("snp")
        );
        assert_eq!(
            t.at_least(&Tcb {
                snp: 3,
                ..Tcb::default()
            }),
            None
        );
    }
}
