//! A complete, self-consistent fake chain (self-signed ARK -> ASK -> VCEK, the VCEK signing a
//! report) is rejected: the verifier trusts only AMD's pinned roots.

use p384::ecdsa::{signature::hazmat::PrehashSigner, DerSignature, Signature, SigningKey};
use rand_core::OsRng;
use sha2::{Digest, Sha384};
use std::{str::FromStr, time::Duration};
use veriml_tee::verify::{Policy, Verifier, VerifyError};
use x509_cert::{
    builder::{Builder, CertificateBuilder, Profile},
    der::Encode,
    name::Name,
    serial_number::SerialNumber,
    spki::SubjectPublicKeyInfoOwned,
    time::Validity,
};

const NOW: u64 = 1_795_737_600;

fn cert(profile: Profile, subject: &str, key: &SigningKey, signer: &SigningKey) -> Vec<u8> {
    let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).unwrap();
    let builder = CertificateBuilder::new(
        profile,
        SerialNumber::from(7u32),
        Validity::from_now(Duration::from_secs(20 * 365 * 86_400)).unwrap(),
        Name::from_str(subject).unwrap(),
        spki,
        signer,
    )
    .unwrap();
    builder.build::<DerSignature>().unwrap().to_der().unwrap()
}

#[test]
fn fake_self_signed_chain_is_rejected() {
    let ark_key = SigningKey::random(&mut OsRng);
    let ask_key = SigningKey::random(&mut OsRng);
    let vcek_key = SigningKey::random(&mut OsRng);
    let ark = cert(
        Profile::Root,
        "CN=ARK-Milan,O=Advanced Micro Devices",
        &ark_key,
        &ark_key,
    );
    let issuer = Name::from_str("CN=ARK-Milan,O=Advanced Micro Devices").unwrap();
    let ask = cert(
        Profile::SubCA {
            issuer: issuer.clone(),
            path_len_constraint: None,
        },
        "CN=SEV-Milan,O=Advanced Micro Devices",
        &ask_key,
        &ark_key,
    );
    let vcek = cert(
        Profile::Leaf {
            issuer: Name::from_str("CN=SEV-Milan,O=Advanced Micro Devices").unwrap(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        },
        "CN=SEV-VCEK,O=Advanced Micro Devices",
        &vcek_key,
        &ask_key,
    );
    // a report signed by the fake VCEK, laid out like a genuine one
    let mut report = vec![0u8; 0x4A0];
    report[0] = 3; // version
    report[0x34] = 1; // ECDSA P-384 with SHA-384
    let digest = Sha384::digest(&report[..0x2A0]);
    let sig: Signature = vcek_key.sign_prehash(&digest).unwrap();
    let (r, s) = sig.split_bytes();
    let mut r_le = r.to_vec();
    r_le.reverse();
    let mut s_le = s.to_vec();
    s_le.reverse();
    report[0x2A0..0x2A0 + 48].copy_from_slice(&r_le);
    report[0x2E8..0x2E8 + 48].copy_from_slice(&s_le);

    let v = Verifier::amd();
    let policy = Policy {
        vmpl: None,
        ..Policy::default()
    };
    // with the fake root offered by the "host"
    let e = v
        .verify(
            &report,
            &vcek,
            std::slice::from_ref(&ask),
            Some(&ark),
            &policy,
            NOW,
        )
        .unwrap_err();
    assert_eq!(e, VerifyError::UntrustedRoot);
    // without it: the fake ASK is not signed by any pinned ARK
    let e = v
        .verify(&report, &vcek, &[ask, ark], None, &policy, NOW)
        .unwrap_err();
    assert_eq!(e, VerifyError::ChainNotTrusted);
}
