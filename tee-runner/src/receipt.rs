//! Signed inference receipts and enclave keys (secp256k1, checkable with `ecrecover`).
//!
//! The digests are the ones `TeeRegistry.sol` computes: `keccak256(abi.encode(TYPEHASH, ...))`
//! with every field a 32-byte word.

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};

/// `keccak256` of bytes.
pub fn keccak(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

fn word_u64(v: u64) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&v.to_be_bytes());
    w
}

fn word_addr(a: &[u8; 20]) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a);
    w
}

const RECEIPT_TYPE: &str = "VeriMLReceipt(uint256 chainId,bytes32 modelId,bytes32 requestHash,bytes32 responseHash,uint64 timestamp,bytes32 nonce)";
const REGISTRATION_TYPE: &str = "VeriMLEnclaveRegistration(uint256 chainId,address registry,address key,bytes32 measurementHash,uint64 tcb,uint64 expiry)";

/// What the runner signs for every result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub chain_id: u64,
    /// keccak256 of the model name.
    #[serde(with = "hex32")]
    pub model_id: [u8; 32],
    /// keccak256 of the request body bytes.
    #[serde(with = "hex32")]
    pub request_hash: [u8; 32],
    /// keccak256 of the response body bytes.
    #[serde(with = "hex32")]
    pub response_hash: [u8; 32],
    /// Unix seconds.
    pub timestamp: u64,
    #[serde(with = "hex32")]
    pub nonce: [u8; 32],
}

impl Receipt {
    /// The digest `TeeRegistry.receiptDigest` computes.
    pub fn digest(&self) -> [u8; 32] {
        let mut buf = Vec::with_capacity(7 * 32);
        buf.extend_from_slice(&keccak(RECEIPT_TYPE.as_bytes()));
        buf.extend_from_slice(&word_u64(self.chain_id));
        buf.extend_from_slice(&self.model_id);
        buf.extend_from_slice(&self.request_hash);
        buf.extend_from_slice(&self.response_hash);
        buf.extend_from_slice(&word_u64(self.timestamp));
        buf.extend_from_slice(&self.nonce);
        keccak(&buf)
    }
}

/// The digest `TeeRegistry.registrationDigest` computes, which attestation verifiers sign.
pub fn registration_digest(
    chain_id: u64,
    registry: &[u8; 20],
    key: &[u8; 20],
    measurement_hash: &[u8; 32],
    tcb: u64,
    expiry: u64,
) -> [u8; 32] {
    let mut buf = Vec::with_capacity(7 * 32);
    buf.extend_from_slice(&keccak(REGISTRATION_TYPE.as_bytes()));
    buf.extend_from_slice(&word_u64(chain_id));
    buf.extend_from_slice(&word_addr(registry));
    buf.extend_from_slice(&word_addr(key));
    buf.extend_from_slice(measurement_hash);
    buf.extend_from_slice(&word_u64(tcb));
    buf.extend_from_slice(&word_u64(expiry));
    keccak(&buf)
}

/// Why a receipt signature did not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("a signature has 65 bytes (r, s, v), got {0}")]
    Length(usize),
    #[error("malformed signature")]
    Malformed,
    #[error("the signature's s is in the upper half of the curve order (malleable)")]
    HighS,
    #[error("the receipt was signed by {got}, not by {expected}")]
    WrongSigner { got: String, expected: String },
}

/// The Ethereum address of a secp256k1 public key.
pub fn address_of(key: &VerifyingKey) -> [u8; 20] {
    let point = key.to_encoded_point(false);
    let h = keccak(&point.as_bytes()[1..]);
    h[12..].try_into().expect("20 bytes")
}

/// A secp256k1 key that signs receipts (or registrations).
pub struct EthKey(SigningKey);

impl std::fmt::Debug for EthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EthKey({})", hex::encode(self.address()))
    }
}

impl EthKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        EthKey(SigningKey::random(&mut rand_core::OsRng))
    }

    /// A key from 32 secret bytes.
    pub fn from_bytes(secret: &[u8; 32]) -> Option<Self> {
        SigningKey::from_bytes(secret.into()).ok().map(EthKey)
    }

    pub fn address(&self) -> [u8; 20] {
        address_of(self.0.verifying_key())
    }

    /// SEC1 uncompressed public key (65 bytes).
    pub fn public_key(&self) -> Vec<u8> {
        self.0
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// Signs a 32-byte digest: `r || s || v` with low `s` and `v` in {27, 28}.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> [u8; 65] {
        let (sig, recid) = self
            .0
            .sign_prehash_recoverable(digest)
            .expect("signing a 32-byte digest");
        let (sig, recid) = match sig.normalize_s() {
            Some(low) => (
                low,
                RecoveryId::new(!recid.is_y_odd(), recid.is_x_reduced()),
            ),
            None => (sig, recid),
        };
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + recid.to_byte();
        out
    }
}

/// Recovers the address that signed `digest` (the `ecrecover` the contracts run).
pub fn recover(digest: &[u8; 32], sig: &[u8]) -> Result<[u8; 20], ReceiptError> {
    if sig.len() != 65 {
        return Err(ReceiptError::Length(sig.len()));
    }
    let s = Signature::from_slice(&sig[..64]).map_err(|_| ReceiptError::Malformed)?;
    if s.normalize_s().is_some() {
        return Err(ReceiptError::HighS);
    }
    let v = sig[64];
    if v != 27 && v != 28 {
        return Err(ReceiptError::Malformed);
    }
    let recid = RecoveryId::from_byte(v - 27).ok_or(ReceiptError::Malformed)?;
    let key = VerifyingKey::recover_from_prehash(digest, &s, recid)
        .map_err(|_| ReceiptError::Malformed)?;
    Ok(address_of(&key))
}

/// Checks that `sig` over the receipt was made by `expected`.
pub fn verify_receipt(
    receipt: &Receipt,
    sig: &[u8],
    expected: &[u8; 20],
) -> Result<(), ReceiptError> {
    let got = recover(&receipt.digest(), sig)?;
    if &got != expected {
        return Err(ReceiptError::WrongSigner {
            got: format!("0x{}", hex::encode(got)),
            expected: format!("0x{}", hex::encode(expected)),
        });
    }
    Ok(())
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{}", hex::encode(v)))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let b = hex::decode(s.trim_start_matches("0x")).map_err(serde::de::Error::custom)?;
        b.try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_recover_and_tamper() {
        let k = EthKey::generate();
        let r = Receipt {
            chain_id: 84532,
            model_id: keccak(b"m"),
            request_hash: keccak(b"req"),
            response_hash: keccak(b"resp"),
            timestamp: 1_800_000_000,
            nonce: [9; 32],
        };
        let sig = k.sign_digest(&r.digest());
        verify_receipt(&r, &sig, &k.address()).unwrap();
        let mut changed = r.clone();
        changed.response_hash = keccak(b"other");
        assert!(matches!(
            verify_receipt(&changed, &sig, &k.address()),
            Err(ReceiptError::WrongSigner { .. })
        ));
        assert_eq!(
            recover(&r.digest(), &sig[..64]),
            Err(ReceiptError::Length(64))
        );
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Receipt>(&json).unwrap(), r);
    }

    #[test]
    fn known_address() {
        // secret key 1 has the well-known address 0x7e5f...f5bdf
        let mut sk = [0u8; 32];
        sk[31] = 1;
        let k = EthKey::from_bytes(&sk).unwrap();
        assert_eq!(
            hex::encode(k.address()),
            "7e5f4552091a69125d5dfcb7b8c2659029395bdf"
        );
    }
}
