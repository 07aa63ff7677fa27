//! Versioned artifact files, written atomically.
//!
//! - Keys (`pk.bin`, `vk.bin`): 8-byte magic (`VERIMLPK` / `VERIMLVK`), a little-endian `u32`
//!   format version, a little-endian `u32` length, a JSON [`KeyHeader`] of that length, then
//!   halo2's own serialization of the key (`SerdeFormat::RawBytes`).
//! - Proofs (`proof.json`): a JSON [`ProofFile`] with the public inputs and the proof bytes.
//!
//! Every file is written to a temporary file in the same folder and renamed into place, so a
//! crash never leaves half a file behind.

use crate::error::ProverError;
use crate::srs::SrsOrigin;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use veriml_circuits::ColumnShape;

/// Version of the key and proof formats.
pub const ARTIFACT_VERSION: u32 = 3;
pub const PK_MAGIC: &[u8; 8] = b"VERIMLPK";
pub const VK_MAGIC: &[u8; 8] = b"VERIMLVK";
pub const PROOF_FORMAT: &str = "veriml-proof";
/// Proof system identifier recorded in proof files.
pub const PROOF_SYSTEM: &str = "halo2-kzg-bn254-shplonk";
/// Transcript identifier recorded in proof files.
pub const TRANSCRIPT: &str = "evm-keccak256";

/// Writes `bytes` to `path` atomically (temporary file + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ProverError> {
    let err = |source| ProverError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Reads a whole file with a typed error.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ProverError> {
    std::fs::read(path).map_err(|source| ProverError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Decodes hex with or without a `0x` prefix.
pub fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    hex::decode(s.trim_start_matches("0x")).ok()
}

/// What a key file says about the key it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHeader {
    pub model_name: String,
    pub settings_sha256: String,
    pub model_sha256: String,
    pub k: u32,
    pub shape: ColumnShape,
    /// Where the SRS came from.
    pub srs: SrsOrigin,
    /// SHA-256 of the SRS the key was made with, at the key's size (the `kzg.srs` beside it).
    pub srs_sha256: String,
}

/// Frames a key with its magic, version and header.
pub fn encode_key(magic: &[u8; 8], header: &KeyHeader, key: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).expect("header serializes");
    let mut out = Vec::with_capacity(16 + h.len() + key.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&ARTIFACT_VERSION.to_le_bytes());
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(key);
    out
}

/// Splits a key file into its header and halo2 key bytes.
pub fn decode_key<'a>(
    magic: &[u8; 8],
    bytes: &'a [u8],
    path: &Path,
) -> Result<(KeyHeader, &'a [u8]), ProverError> {
    let what = if magic == PK_MAGIC {
        "proving key"
    } else {
        "verifying key"
    };
    let bad = |detail: String| ProverError::BadFile {
        what,
        path: path.to_path_buf(),
        detail,
    };
    if bytes.len() < 16 || &bytes[..8] != magic {
        return Err(bad(format!(
            "missing the `{}` magic bytes",
            String::from_utf8_lossy(magic)
        )));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != ARTIFACT_VERSION {
        return Err(bad(format!(
            "format version {version}, this build reads version {ARTIFACT_VERSION}"
        )));
    }
    let len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    if bytes.len() < 16 + len {
        return Err(bad("truncated header".into()));
    }
    let header: KeyHeader =
        serde_json::from_slice(&bytes[16..16 + len]).map_err(|e| bad(e.to_string()))?;
    Ok((header, &bytes[16 + len..]))
}

/// A proof with everything needed to check it against a verifying key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProofFile {
    pub format: String,
    pub version: u32,
    pub proof_system: String,
    pub transcript: String,
    pub model_name: String,
    pub settings_sha256: String,
    pub model_sha256: String,
    /// The public inputs, in order: quantized model input, then quantized output. Each is a
    /// BN254 scalar as 32 big-endian bytes in hex (the order the EVM verifier reads).
    pub instances: Vec<String>,
    /// The model input, dequantized (informational; the instances are what is proven).
    pub input: Vec<f64>,
    /// The model output, dequantized from the proven instances.
    pub output: Vec<f64>,
    /// The proof bytes in hex.
    pub proof: String,
    /// True when the keys came from an insecure development SRS.
    pub insecure_srs: bool,
}

impl ProofFile {
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ProverError> {
        let p: ProofFile = serde_json::from_str(text).map_err(|e| ProverError::BadFile {
            what: "proof",
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        if p.format != PROOF_FORMAT || p.version != ARTIFACT_VERSION {
            return Err(ProverError::BadFile {
                what: "proof",
                path: path.to_path_buf(),
                detail: format!("format `{}` version {}", p.format, p.version),
            });
        }
        Ok(p)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("proof serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_framing_roundtrip_and_errors() {
        let h = KeyHeader {
            model_name: "m".into(),
            settings_sha256: "s".into(),
            model_sha256: "w".into(),
            k: 10,
            shape: ColumnShape::default(),
            srs: SrsOrigin::InsecureDev { seed: 1 },
            srs_sha256: "s".into(),
        };
        let bytes = encode_key(VK_MAGIC, &h, &[1, 2, 3]);
        let (h2, rest) = decode_key(VK_MAGIC, &bytes, Path::new("vk")).unwrap();
        assert_eq!(h, h2);
        assert_eq!(rest, &[1, 2, 3]);
        assert!(decode_key(PK_MAGIC, &bytes, Path::new("vk")).is_err());
        assert!(decode_key(VK_MAGIC, &bytes[..20], Path::new("vk")).is_err());
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
