//! Structured reference strings (KZG parameters over BN254).
//!
//! Two origins: a file in halo2's serialized `ParamsKZG` format (for example from a public
//! powers-of-tau ceremony converted to that format), or a locally generated SRS for
//! development and tests. A locally generated SRS is **insecure**: whoever generated it can
//! know its secret and forge proofs. It is labelled so in every file and output that uses it,
//! and recognised from the parameters themselves ([`Srs::known_insecure_seed`]), so a key
//! header edited to claim a ceremony file does not hide it.

use crate::error::ProverError;
use halo2_proofs::{
    halo2curves::{
        bn256::{Bn256, Fr},
        ff::Field,
        group::Curve,
    },
    poly::{commitment::Params, kzg::commitment::ParamsKZG},
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use veriml_circuits::halo2_proofs;

/// Where an SRS came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SrsOrigin {
    /// Generated on this machine from a seed: INSECURE, development and tests only.
    InsecureDev { seed: u64 },
    /// Read from a parameters file (a ceremony's output in halo2's format).
    File { sha256: String },
}

impl SrsOrigin {
    pub fn is_insecure(&self) -> bool {
        matches!(self, SrsOrigin::InsecureDev { .. })
    }
    /// A one-line label for output.
    pub fn label(&self) -> String {
        match self {
            SrsOrigin::InsecureDev { seed } => {
                format!("INSECURE development SRS (generated locally from seed {seed}; never use in production)")
            }
            SrsOrigin::File { sha256 } => format!("SRS file sha256 {sha256}"),
        }
    }
}

/// Seeds below this are recognised as development SRSs from the parameters alone (the CLI uses
/// seed 0, the tests small seeds). Each costs one G2 scalar multiplication per check.
pub const RECOGNISED_DEV_SEEDS: u64 = 16;

/// KZG parameters with their origin.
#[derive(Debug)]
pub struct Srs {
    pub params: ParamsKZG<Bn256>,
    pub origin: SrsOrigin,
    /// SHA-256 of the parameters in halo2's format, at their current size (the `kzg.srs` file
    /// setup writes); key headers record it.
    pub sha256: String,
}

/// The secret of the development SRS of a seed, as [`ParamsKZG::setup`] draws it.
fn dev_secret(seed: u64) -> Fr {
    Fr::random(ChaCha20Rng::seed_from_u64(seed))
}

impl Srs {
    /// Generates an INSECURE SRS of size `2^k` from a seed (development and tests only).
    pub fn insecure_dev(k: u32, seed: u64) -> Srs {
        let params = ParamsKZG::<Bn256>::setup(k, ChaCha20Rng::seed_from_u64(seed));
        let mut srs = Srs {
            params,
            origin: SrsOrigin::InsecureDev { seed },
            sha256: String::new(),
        };
        srs.sha256 = hex::encode(Sha256::digest(srs.to_bytes()));
        srs
    }

    /// The seed of the development SRS these parameters are, if they are one: checks
    /// `s·G2` (what the verifier trusts) against the secrets of the seeds below
    /// [`RECOGNISED_DEV_SEEDS`] and `extra`.
    pub fn known_insecure_seed(&self, extra: Option<u64>) -> Option<u64> {
        let g2 = self.params.g2();
        let s_g2 = self.params.s_g2();
        extra
            .into_iter()
            .chain(0..RECOGNISED_DEV_SEEDS)
            .find(|&seed| (g2 * dev_secret(seed)).to_affine() == s_g2)
    }

    /// True when these parameters are labelled or recognised as a development SRS.
    pub fn is_insecure(&self) -> bool {
        self.origin.is_insecure() || self.known_insecure_seed(None).is_some()
    }

    /// Reads a parameters file in halo2's serialized format.
    pub fn read(path: &Path) -> Result<Srs, ProverError> {
        let bytes = std::fs::read(path).map_err(|source| ProverError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses parameters from bytes; `path` only names them in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Srs, ProverError> {
        let bad = |detail: String| ProverError::BadFile {
            what: "SRS",
            path: path.to_path_buf(),
            detail,
        };
        if bytes.len() < 4 {
            return Err(bad("too short to hold k".into()));
        }
        let k = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if !(1..=28).contains(&k) {
            return Err(bad(format!("k = {k} is not a plausible SRS size")));
        }
        // k, then 2^k points in monomial and in Lagrange form (64 bytes each), then two G2 points
        let expect = 4 + 2 * (1usize << k) * 64 + 2 * 128;
        if bytes.len() < expect {
            return Err(bad(format!(
                "{} bytes, but an SRS of k = {k} in halo2's raw format has {expect}",
                bytes.len()
            )));
        }
        let params = ParamsKZG::<Bn256>::read(&mut &bytes[..]).map_err(|e| bad(e.to_string()))?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        Ok(Srs {
            params,
            origin: SrsOrigin::File {
                sha256: sha256.clone(),
            },
            sha256,
        })
    }

    pub fn k(&self) -> u32 {
        self.params.k()
    }

    /// Shrinks the SRS to `2^k` points; errors when it is smaller.
    pub fn downsized(mut self, k: u32) -> Result<Srs, ProverError> {
        let have = self.params.k();
        if have < k {
            return Err(ProverError::SrsTooSmall { have, need: k });
        }
        if have > k {
            self.params.downsize(k);
            self.sha256 = hex::encode(Sha256::digest(self.to_bytes()));
        }
        Ok(self)
    }

    /// Serializes the parameters in halo2's format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.params
            .write(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_downsize() {
        let srs = Srs::insecure_dev(5, 7);
        assert!(srs.origin.is_insecure());
        let bytes = srs.to_bytes();
        let back = Srs::from_bytes(&bytes, Path::new("x")).unwrap();
        assert_eq!(back.k(), 5);
        assert!(!back.origin.is_insecure());
        let small = back.downsized(4).unwrap();
        assert_eq!(small.k(), 4);
        assert!(matches!(
            small.downsized(6),
            Err(ProverError::SrsTooSmall { have: 4, need: 6 })
        ));
    }

    #[test]
    fn truncated_file_is_a_typed_error() {
        let bytes = Srs::insecure_dev(4, 1).to_bytes();
        let e = Srs::from_bytes(&bytes[..100], Path::new("t.srs")).unwrap_err();
        assert!(e.to_string().contains("t.srs"), "{e}");
        assert!(Srs::from_bytes(&[1, 2], Path::new("t.srs")).is_err());
    }
}
