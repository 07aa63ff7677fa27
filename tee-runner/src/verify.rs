//! Verification of SEV-SNP attestation reports against AMD's pinned roots, with a policy.
//!
//! The chain is checked from AMD's root keys compiled into this binary (Milan, Genoa, Turin):
//! ARK (pinned) -> ASK (pinned) or ASVK (supplied, accepted only if the pinned ARK signed it)
//! -> VCEK/VLEK (supplied) -> report. A root handed over by the host is never trusted; one
//! that is not byte-for-byte a pinned ARK is refused. Certificate validity dates, the VCEK's
//! TCB and hardware-id extensions, and the policy are all checked; every rejection names the
//! check that failed.

use crate::report::{AttestationReport, ReportError, SigningKey, Tcb};
use p384::ecdsa::{signature::hazmat::PrehashVerifier, Signature, VerifyingKey};
use sev::certs::snp::{builtin, Certificate, Verifiable};
use sha2::{Digest, Sha384};
use x509_cert::der::{oid::ObjectIdentifier, Decode};

/// AMD EPYC generation of a chain root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    Milan,
    Genoa,
    Turin,
    /// The simulated platform's root: accepted only by a verifier built with
    /// [`Verifier::with_simulated_root`]. No hardware vouches for such a report.
    Simulated,
}

/// One check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot parse the report: {0}")]
    Report(#[from] ReportError),
    #[error("cannot parse the {which} certificate: {detail}")]
    Certificate { which: &'static str, detail: String },
    #[error("the supplied root certificate is not one of AMD's pinned ARKs; roots from the host are never trusted")]
    UntrustedRoot,
    #[error("the endorsement key certificate does not chain to a pinned AMD root (ARK -> ASK/ASVK -> VCEK/VLEK)")]
    ChainNotTrusted,
    #[error("the {which} certificate is not valid at {now} (valid from {not_before} to {not_after}, Unix seconds)")]
    CertificateValidity {
        which: &'static str,
        now: u64,
        not_before: u64,
        not_after: u64,
    },
    #[error("the report says it was signed by {report:?} but the certificate is a {cert}")]
    KeyKind {
        report: SigningKey,
        cert: &'static str,
    },
    #[error("the report signature does not verify with the endorsement key")]
    ReportSignature,
    #[error(
        "the certificate's {field} TCB ({cert}) differs from the report's REPORTED_TCB ({report})"
    )]
    TcbMismatch {
        field: &'static str,
        cert: u8,
        report: u8,
    },
    #[error("the certificate's hardware id differs from the report's CHIP_ID")]
    ChipIdMismatch,
    #[error(
        "policy: the guest allows debugging (POLICY bit 19); its memory is readable by the host"
    )]
    Debug,
    #[error("policy: the report is from VMPL {got}, VMPL {want} is required")]
    Vmpl { got: u32, want: u32 },
    #[error("policy: the {field} TCB is below the minimum")]
    TcbTooLow { field: &'static str },
    #[error("policy: launch measurement {0} is not allowed")]
    Measurement(String),
    #[error("policy: REPORT_DATA does not bind the expected key and nonce")]
    ReportData,
    #[error("policy: report version {got} is below {want}")]
    Version { got: u32, want: u32 },
}

/// What a verifier accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub allow_debug: bool,
    /// Required VMPL; `None` accepts any.
    pub vmpl: Option<u32>,
    pub min_tcb: Tcb,
    /// Allowed launch measurements; `None` accepts any (development only).
    pub measurements: Option<Vec<[u8; 48]>>,
    /// Expected REPORT_DATA (see [`crate::report::report_data_binding`]).
    pub report_data: Option<[u8; 64]>,
    pub min_version: u32,
}

impl Default for Policy {
    /// The production baseline: no debug, VMPL 0, report version 2 or later.
    fn default() -> Self {
        Policy {
            allow_debug: false,
            vmpl: Some(0),
            min_tcb: Tcb::default(),
            measurements: None,
            report_data: None,
            min_version: 2,
        }
    }
}

/// A report that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReport {
    pub generation: Generation,
    /// True for a report from the simulated attester (development only).
    pub simulated: bool,
    pub signing_key: SigningKey,
    pub tcb: Tcb,
    pub vmpl: u32,
    pub measurement: [u8; 48],
    pub report_data: [u8; 64],
    pub chip_id: [u8; 64],
}

struct Root {
    generation: Generation,
    ark: Certificate,
    ark_der: Vec<u8>,
    /// AMD's pinned ASK; none for the simulated root (its ASK comes with the report).
    ask: Option<Certificate>,
}

/// Verifies reports against AMD's pinned roots.
pub struct Verifier {
    roots: Vec<Root>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "roots",
                &self.roots.iter().map(|r| r.generation).collect::<Vec<_>>(),
            )
            .finish()
    }
}

const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";

fn parse_cert(bytes: &[u8], which: &'static str) -> Result<Certificate, VerifyError> {
    let r = if bytes.starts_with(b"-----BEGIN") {
        Certificate::from_pem(bytes)
    } else {
        Certificate::from_der(bytes)
    };
    r.map_err(|e| VerifyError::Certificate {
        which,
        detail: e.to_string(),
    })
}

/// Splits a PEM bundle into its certificates.
pub fn pem_bundle(bytes: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.starts_with("-----BEGIN") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END") {
            out.push(cur.clone().into_bytes());
        }
    }
    out
}

fn x509(c: &Certificate) -> x509_cert::Certificate {
    x509_cert::Certificate::from(c.clone())
}

fn ext_value(cert: &x509_cert::Certificate, oid: &str) -> Option<Vec<u8>> {
    let oid = ObjectIdentifier::new(oid).ok()?;
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == oid)
        .map(|e| e.extn_value.as_bytes().to_vec())
}

/// An SPL extension holds a DER INTEGER.
fn ext_u8(cert: &x509_cert::Certificate, oid: &str) -> Option<u8> {
    let v = ext_value(cert, oid)?;
    let int = x509_cert::der::asn1::Int::from_der(&v).ok()?;
    let bytes = int.as_bytes();
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
    match trimmed.len() {
        0 => Some(0),
        1 => Some(trimmed[0]),
        _ => None,
    }
}

fn subject_cn(cert: &x509_cert::Certificate) -> String {
    cert.tbs_certificate.subject.to_string()
}

/// ECDSA with SHA-384 (RFC 5758).
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

/// Does `signer`'s key sign `signee`? RSA-PSS (AMD's ARK and ASK) is checked by the `sev`
/// crate; ECDSA P-384 with SHA-384 (the simulated chain) here.
fn signs(signer: &Certificate, signee: &Certificate) -> bool {
    let (a, b) = (x509(signer), x509(signee));
    if b.signature_algorithm.oid != ObjectIdentifier::new_unwrap(OID_ECDSA_SHA384) {
        return (signer, signee).verify().is_ok();
    }
    let Some(key) = a
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .and_then(|k| VerifyingKey::from_sec1_bytes(k).ok())
    else {
        return false;
    };
    let Some(sig) = b
        .signature
        .as_bytes()
        .and_then(|s| p384::ecdsa::DerSignature::try_from(s).ok())
        .and_then(|s| Signature::try_from(s).ok())
    else {
        return false;
    };
    let Ok(tbs) = x509_cert::der::Encode::to_der(&b.tbs_certificate) else {
        return false;
    };
    key.verify_prehash(&Sha384::digest(&tbs), &sig).is_ok()
}

fn check_validity(cert: &Certificate, which: &'static str, now: u64) -> Result<(), VerifyError> {
    let v = &x509(cert).tbs_certificate.validity;
    let not_before = v.not_before.to_unix_duration().as_secs();
    let not_after = v.not_after.to_unix_duration().as_secs();
    if now < not_before || now > not_after {
        return Err(VerifyError::CertificateValidity {
            which,
            now,
            not_before,
            not_after,
        });
    }
    Ok(())
}

impl Default for Verifier {
    fn default() -> Self {
        Self::amd()
    }
}

impl Verifier {
    /// A verifier trusting exactly AMD's Milan, Genoa and Turin roots.
    pub fn amd() -> Verifier {
        let pinned = [
            (
                Generation::Milan,
                builtin::milan::ark(),
                builtin::milan::ask(),
            ),
            (
                Generation::Genoa,
                builtin::genoa::ark(),
                builtin::genoa::ask(),
            ),
            (
                Generation::Turin,
                builtin::turin::ark(),
                builtin::turin::ask(),
            ),
        ];
        let roots = pinned
            .into_iter()
            .map(|(generation, ark, ask)| {
                let ark = ark.expect("the pinned ARK parses");
                let ask = ask.expect("the pinned ASK parses");
                let ark_der = ark.to_der().expect("the pinned ARK encodes");
                Root {
                    generation,
                    ark,
                    ark_der,
                    ask: Some(ask),
                }
            })
            .collect();
        Verifier { roots }
    }

    /// DEVELOPMENT ONLY: also accept reports from the simulated platform whose root is `ark`
    /// (DER). Reports verified through it are marked `simulated`.
    pub fn with_simulated_root(mut self, ark: &[u8]) -> Result<Verifier, VerifyError> {
        let cert = parse_cert(ark, "simulated root")?;
        let ark_der = cert.to_der().map_err(|e| VerifyError::Certificate {
            which: "simulated root",
            detail: e.to_string(),
        })?;
        self.roots.push(Root {
            generation: Generation::Simulated,
            ark: cert,
            ark_der,
            ask: None,
        });
        Ok(self)
    }

    /// Verifies a raw report signed by the endorsement key in `vek` (DER or PEM).
    ///
    /// `intermediates` may hold certificates the host supplied (an ASVK for VLEK reports, or an
    /// ASK); each is used only if a pinned ARK signed it. `host_root`, if the host sent one, must
    /// be byte-for-byte a pinned ARK. `now` is the Unix time for the validity checks.
    pub fn verify(
        &self,
        report: &[u8],
        vek: &[u8],
        intermediates: &[Vec<u8>],
        host_root: Option<&[u8]>,
        policy: &Policy,
        now: u64,
    ) -> Result<VerifiedReport, VerifyError> {
        let report = AttestationReport::from_bytes(report)?;
        let vek = parse_cert(vek, "endorsement key (VCEK/VLEK)")?;
        let host_root_der = match host_root {
            Some(root) => {
                let root = parse_cert(root, "root (ARK)")?;
                let der = root.to_der().map_err(|e| VerifyError::Certificate {
                    which: "root (ARK)",
                    detail: e.to_string(),
                })?;
                if !self.roots.iter().any(|r| r.ark_der == der) {
                    return Err(VerifyError::UntrustedRoot);
                }
                Some(der)
            }
            None => None,
        };
        let supplied: Vec<Certificate> = intermediates
            .iter()
            .filter_map(|b| parse_cert(b, "intermediate").ok())
            .collect();

        // find the pinned root and a signer of the VEK that this root signed
        let mut found = None;
        'roots: for root in &self.roots {
            for inter in root.ask.iter().chain(supplied.iter()) {
                if signs(&root.ark, inter) && signs(inter, &vek) {
                    found = Some((root, inter.clone()));
                    break 'roots;
                }
            }
        }
        let (root, inter) = found.ok_or(VerifyError::ChainNotTrusted)?;
        if let Some(der) = &host_root_der {
            // the host's root must be the very ARK this chain verifies to
            if der != &root.ark_der {
                return Err(VerifyError::UntrustedRoot);
            }
        }
        check_validity(&root.ark, "ARK", now)?;
        check_validity(&inter, "ASK/ASVK", now)?;
        check_validity(&vek, "VCEK/VLEK", now)?;

        let vek_x509 = x509(&vek);
        let cn = subject_cn(&vek_x509);
        let cert_kind = if cn.contains("VLEK") { "VLEK" } else { "VCEK" };
        match (report.signing_key, cert_kind) {
            (SigningKey::Vcek, "VCEK") | (SigningKey::Vlek, "VLEK") => {}
            (kind, cert) => return Err(VerifyError::KeyKind { report: kind, cert }),
        }

        // the signature over the raw signed bytes
        let key = VerifyingKey::from_sec1_bytes(vek.public_key_sec1())
            .map_err(|_| VerifyError::ReportSignature)?;
        let sig = Signature::from_scalars(report.sig_r, report.sig_s)
            .map_err(|_| VerifyError::ReportSignature)?;
        let digest = Sha384::digest(report.signed_bytes());
        key.verify_prehash(&digest, &sig)
            .map_err(|_| VerifyError::ReportSignature)?;

        // the certificate's TCB and hardware id against the report
        let turin = root.generation == Generation::Turin;
        let tcb = Tcb::decode(report.reported_tcb_raw, turin);
        let mut fields = vec![
            ("bootloader", OID_BL_SPL, tcb.bootloader),
            ("tee", OID_TEE_SPL, tcb.tee),
            ("snp", OID_SNP_SPL, tcb.snp),
            ("microcode", OID_UCODE_SPL, tcb.microcode),
        ];
        if let Some(fmc) = tcb.fmc {
            fields.push(("fmc", OID_FMC_SPL, fmc));
        }
        for (field, oid, have) in fields {
            match ext_u8(&vek_x509, oid) {
                Some(cert) if cert == have => {}
                Some(cert) => {
                    return Err(VerifyError::TcbMismatch {
                        field,
                        cert,
                        report: have,
                    })
                }
                // a VLEK may omit extensions a VCEK carries; a VCEK must have them all
                None if cert_kind == "VLEK" => {}
                None => {
                    return Err(VerifyError::Certificate {
                        which: "endorsement key (VCEK/VLEK)",
                        detail: format!("missing the {field} TCB extension"),
                    })
                }
            }
        }
        if cert_kind == "VCEK" {
            let hwid = ext_value(&vek_x509, OID_HWID).ok_or(VerifyError::ChipIdMismatch)?;
            // Milan/Genoa: the 64-byte chip id; Turin: its first 8 bytes
            let n = hwid.len().min(64);
            if n == 0 || hwid[..n] != report.chip_id[..n] {
                return Err(VerifyError::ChipIdMismatch);
            }
        }

        // policy
        if report.version < policy.min_version {
            return Err(VerifyError::Version {
                got: report.version,
                want: policy.min_version,
            });
        }
        if report.debug_allowed() && !policy.allow_debug {
            return Err(VerifyError::Debug);
        }
        if let Some(want) = policy.vmpl {
            if report.vmpl != want {
                return Err(VerifyError::Vmpl {
                    got: report.vmpl,
                    want,
                });
            }
        }
        if let Some(field) = tcb.at_least(&policy.min_tcb) {
            return Err(VerifyError::TcbTooLow { field });
        }
        if let Some(allowed) = &policy.measurements {
            if !allowed.contains(&report.measurement) {
                return Err(VerifyError::Measurement(hex::encode(report.measurement)));
            }
        }
        if let Some(data) = &policy.report_data {
            if data != &report.report_data {
                return Err(VerifyError::ReportData);
            }
        }
        Ok(VerifiedReport {
            generation: root.generation,
            simulated: root.generation == Generation::Simulated,
            signing_key: report.signing_key,
            tcb,
            vmpl: report.vmpl,
            measurement: report.measurement,
            report_data: report.report_data,
            chip_id: report.chip_id,
        })
    }
}
