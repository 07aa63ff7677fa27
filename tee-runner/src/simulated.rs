//! A simulated SEV-SNP platform, so the whole attestation path runs on machines without SEV.
//!
//! It lays out reports exactly like the firmware (version 3), signs them with a locally
//! generated P-384 "VCEK" under a locally generated ARK -> ASK chain, and puts the TCB and
//! hardware-id extensions in the VCEK certificate like AMD does. **Nothing vouches for it**:
//! [`crate::verify::Verifier::amd`] rejects its reports; only a verifier built with
//! [`crate::verify::Verifier::with_simulated_root`] (an explicit development setting) accepts
//! them, and marks the result as simulated.

use crate::report::{REPORT_LEN, SIGNED_LEN};
use p384::ecdsa::{signature::hazmat::PrehashSigner, DerSignature, Signature, SigningKey};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha384};
use std::{str::FromStr, time::Duration};
use x509_cert::{
    builder::{Builder, CertificateBuilder, Profile},
    der::{asn1::OctetString, oid::ObjectIdentifier, Encode},
    ext::{AsExtension, Extension},
    name::Name,
    serial_number::SerialNumber,
    spki::SubjectPublicKeyInfoOwned,
    time::Validity,
};

/// Subject of the simulated root: says what it is to anyone who looks.
pub const SIMULATED_ARK_SUBJECT: &str = "CN=ARK-Simulated,O=VeriML development INSECURE";
const SIMULATED_ASK_SUBJECT: &str = "CN=SEV-Simulated,O=VeriML development INSECURE";
const SIMULATED_VCEK_SUBJECT: &str = "CN=SEV-VCEK,O=VeriML development INSECURE";

/// The simulated platform's TCB (Milan layout in REPORTED_TCB).
pub const SIMULATED_TCB: [u8; 8] = [3, 0, 0, 0, 0, 0, 8, 115];

/// An extension with a given OID and DER content.
struct RawExtension {
    oid: ObjectIdentifier,
    der: Vec<u8>,
}

impl x509_cert::der::oid::AssociatedOid for RawExtension {
    // replaced by `to_extension` below; the builder only needs the trait
    const OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1");
}

impl Encode for RawExtension {
    fn encoded_len(&self) -> x509_cert::der::Result<x509_cert::der::Length> {
        x509_cert::der::Length::try_from(self.der.len())
    }
    fn encode(&self, w: &mut impl x509_cert::der::Writer) -> x509_cert::der::Result<()> {
        w.write(&self.der)
    }
}

impl AsExtension for RawExtension {
    fn critical(&self, _: &Name, _: &[Extension]) -> bool {
        false
    }
    fn to_extension(&self, _: &Name, _: &[Extension]) -> Result<Extension, x509_cert::der::Error> {
        Ok(Extension {
            extn_id: self.oid,
            critical: false,
            extn_value: OctetString::new(self.der.clone())?,
        })
    }
}

fn int_ext(oid: &str, v: u8) -> RawExtension {
    let der = x509_cert::der::asn1::Uint::new(&[v])
        .and_then(|u| u.to_der())
        .expect("a one-byte integer encodes");
    RawExtension {
        oid: ObjectIdentifier::new_unwrap(oid),
        der,
    }
}

fn build(
    profile: Profile,
    subject: &str,
    key: &SigningKey,
    signer: &SigningKey,
    extensions: &[RawExtension],
) -> Vec<u8> {
    let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).expect("P-384 SPKI");
    let mut b = CertificateBuilder::new(
        profile,
        SerialNumber::from(1u32),
        Validity::from_now(Duration::from_secs(2 * 365 * 86_400)).expect("validity"),
        Name::from_str(subject).expect("subject"),
        spki,
        signer,
    )
    .expect("builder");
    for e in extensions {
        b.add_extension(e).expect("extension");
    }
    b.build::<DerSignature>()
        .expect("signing")
        .to_der()
        .expect("encoding")
}

/// A simulated platform: keys, certificates, chip id and launch measurement (a clone is the
/// same machine, e.g. for two guests of one host).
#[derive(Clone)]
pub struct SimulatedPlatform {
    vcek_key: SigningKey,
    ark_der: Vec<u8>,
    ask_der: Vec<u8>,
    vcek_der: Vec<u8>,
    chip_id: [u8; 64],
    measurement: [u8; 48],
}

impl std::fmt::Debug for SimulatedPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedPlatform")
            .field("measurement", &hex::encode(self.measurement))
            .finish_non_exhaustive()
    }
}

impl SimulatedPlatform {
    /// A new platform with fresh keys, running a guest with the given launch measurement.
    pub fn new(measurement: [u8; 48]) -> Self {
        let ark_key = SigningKey::random(&mut OsRng);
        let ask_key = SigningKey::random(&mut OsRng);
        let vcek_key = SigningKey::random(&mut OsRng);
        let mut chip_id = [0u8; 64];
        OsRng.fill_bytes(&mut chip_id);
        let ark_der = build(
            Profile::Root,
            SIMULATED_ARK_SUBJECT,
            &ark_key,
            &ark_key,
            &[],
        );
        let ask_der = build(
            Profile::SubCA {
                issuer: Name::from_str(SIMULATED_ARK_SUBJECT).expect("name"),
                path_len_constraint: None,
            },
            SIMULATED_ASK_SUBJECT,
            &ask_key,
            &ark_key,
            &[],
        );
        let t = SIMULATED_TCB;
        let extensions = [
            int_ext("1.3.6.1.4.1.3704.1.3.1", t[0]),
            int_ext("1.3.6.1.4.1.3704.1.3.2", t[1]),
            int_ext("1.3.6.1.4.1.3704.1.3.3", t[6]),
            int_ext("1.3.6.1.4.1.3704.1.3.8", t[7]),
            RawExtension {
                oid: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4"),
                der: chip_id.to_vec(),
            },
        ];
        let vcek_der = build(
            Profile::Leaf {
                issuer: Name::from_str(SIMULATED_ASK_SUBJECT).expect("name"),
                enable_key_agreement: false,
                enable_key_encipherment: false,
            },
            SIMULATED_VCEK_SUBJECT,
            &vcek_key,
            &ask_key,
            &extensions,
        );
        SimulatedPlatform {
            vcek_key,
            ark_der,
            ask_der,
            vcek_der,
            chip_id,
            measurement,
        }
    }

    pub fn ark_der(&self) -> &[u8] {
        &self.ark_der
    }
    pub fn ask_der(&self) -> &[u8] {
        &self.ask_der
    }
    pub fn vcek_der(&self) -> &[u8] {
        &self.vcek_der
    }

    /// A signed report (version 3, VMPL 0, no debug) carrying `report_data`.
    pub fn report(&self, report_data: [u8; 64]) -> Vec<u8> {
        let mut r = vec![0u8; REPORT_LEN];
        r[0x00..0x04].copy_from_slice(&3u32.to_le_bytes());
        // POLICY: SMT allowed (bit 16), reserved bit 17 set, no debug (bit 19 clear)
        r[0x08..0x10].copy_from_slice(&0x3_0000u64.to_le_bytes());
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes()); // ECDSA P-384 with SHA-384
        r[0x38..0x40].copy_from_slice(&SIMULATED_TCB); // CURRENT_TCB
        r[0x50..0x90].copy_from_slice(&report_data);
        r[0x90..0xC0].copy_from_slice(&self.measurement);
        r[0x180..0x188].copy_from_slice(&SIMULATED_TCB); // REPORTED_TCB
        r[0x1A0..0x1E0].copy_from_slice(&self.chip_id);
        r[0x1E0..0x1E8].copy_from_slice(&SIMULATED_TCB); // COMMITTED_TCB
        r[0x1F0..0x1F8].copy_from_slice(&SIMULATED_TCB); // LAUNCH_TCB
        let digest = Sha384::digest(&r[..SIGNED_LEN]);
        let sig: Signature = self
            .vcek_key
            .sign_prehash(&digest)
            .expect("P-384 signing of a digest");
        let (rb, sb) = sig.split_bytes();
        for (at, bytes) in [(0x2A0, rb), (0x2E8, sb)] {
            let mut le = bytes.to_vec();
            le.reverse();
            r[at..at + 48].copy_from_slice(&le);
        }
        r
    }
}
