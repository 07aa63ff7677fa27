//! Genuine AMD SEV-SNP reports (fixtures/README.md says where each comes from and what it
//! must verify to).

use std::path::PathBuf;
use veriml_tee::{
    report::report_data_binding,
    verify::{pem_bundle, Generation, Policy, Verifier, VerifyError},
    SigningKey, Tcb,
};

/// 2026-11-27; every fixture certificate is valid then.
const NOW: u64 = 1_795_737_600;

fn fx(path: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(path),
    )
    .unwrap()
}

fn milan_report() -> Vec<u8> {
    hex::decode(
        String::from_utf8(fx("virtee/report_milan.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap()
}

fn dev_policy() -> Policy {
    Policy {
        vmpl: None,
        ..Policy::default()
    }
}

#[test]
fn virtee_milan_report_verifies() {
    let v = Verifier::amd()
        .verify(
            &milan_report(),
            &fx("virtee/vcek_milan.der"),
            &[],
            None,
            &Policy::default(),
            NOW,
        )
        .unwrap();
    assert_eq!(v.generation, Generation::Milan);
    assert_eq!(v.signing_key, SigningKey::Vcek);
}

#[test]
fn trustee_report_verifies_and_wrong_vceks_are_rejected() {
    let r = fx("trustee/test-report.bin");
    let v = Verifier::amd();
    v.verify(
        &r,
        &fx("trustee/test-vcek.der"),
        &[],
        None,
        &dev_policy(),
        NOW,
    )
    .unwrap();
    for bad in [
        "trustee/test-vcek-invalid-legacy.der",
        "trustee/test-vcek-invalid-new.der",
    ] {
        let e = v
            .verify(&r, &fx(bad), &[], None, &dev_policy(), NOW)
            .unwrap_err();
        println!("{bad}: {e}");
    }
}

#[test]
fn vlek_report_signature_verifies_but_vmpl0_policy_rejects_it() {
    // the VLEK certificate was valid from 2024-12-10 to 2025-12-10
    const VALID_AT: u64 = 1_748_736_000; // 2025-06-01
    let r = fx("trustee/test-vlek-report.bin");
    let expired = Verifier::amd()
        .verify(
            &r,
            &fx("trustee/test-vlek.der"),
            &pem_bundle(&fx("trustee/milan_ask_ark_asvk.pem")),
            None,
            &dev_policy(),
            NOW,
        )
        .unwrap_err();
    assert!(
        matches!(
            expired,
            VerifyError::CertificateValidity {
                which: "VCEK/VLEK",
                ..
            }
        ),
        "{expired}"
    );
    let chain = pem_bundle(&fx("trustee/milan_ask_ark_asvk.pem"));
    assert_eq!(chain.len(), 3);
    let v = Verifier::amd();
    let ok = v
        .verify(
            &r,
            &fx("trustee/test-vlek.der"),
            &chain,
            None,
            &dev_policy(),
            VALID_AT,
        )
        .unwrap();
    assert_eq!(ok.signing_key, SigningKey::Vlek);
    assert_eq!(ok.vmpl, 1);
    let e = v
        .verify(
            &r,
            &fx("trustee/test-vlek.der"),
            &chain,
            None,
            &Policy::default(),
            VALID_AT,
        )
        .unwrap_err();
    assert_eq!(e, VerifyError::Vmpl { got: 1, want: 0 });
    // without the ASVK the VLEK has no trusted signer
    let e = v
        .verify(
            &r,
            &fx("trustee/test-vlek.der"),
            &[],
            None,
            &dev_policy(),
            VALID_AT,
        )
        .unwrap_err();
    assert_eq!(e, VerifyError::ChainNotTrusted);
}

#[test]
fn debug_guest_is_rejected_by_any_production_policy() {
    let r = fx("go-sev-guest/attestation.bin");
    let v = Verifier::amd();
    let e = v
        .verify(
            &r,
            &fx("go-sev-guest/vcek.der"),
            &[],
            None,
            &Policy::default(),
            NOW,
        )
        .unwrap_err();
    assert_eq!(e, VerifyError::Debug);
    // the signature itself is genuine
    let lax = Policy {
        allow_debug: true,
        ..dev_policy()
    };
    v.verify(&r, &fx("go-sev-guest/vcek.der"), &[], None, &lax, NOW)
        .unwrap();
}

#[test]
fn automata_report_verifies() {
    Verifier::amd()
        .verify(
            &fx("automata/report.bin"),
            &fx("automata/vek_from_output.der"),
            &[],
            None,
            &dev_policy(),
            NOW,
        )
        .unwrap();
}

#[test]
fn turin_vcek_does_not_verify_a_milan_report() {
    let e = Verifier::amd()
        .verify(
            &milan_report(),
            &fx("virtee/vcek_turin.der"),
            &[],
            None,
            &Policy::default(),
            NOW,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::ReportSignature
                | VerifyError::TcbMismatch { .. }
                | VerifyError::ChipIdMismatch
        ),
        "{e}"
    );
}

#[test]
fn one_changed_byte_in_any_signed_field_is_rejected() {
    let good = milan_report();
    let vcek = fx("virtee/vcek_milan.der");
    let v = Verifier::amd();
    let lax = Policy {
        allow_debug: true,
        vmpl: None,
        min_version: 0,
        ..Policy::default()
    };
    let mut rejected = 0;
    // every byte of the signed range, and the significant bytes of the signature
    let mut offsets: Vec<usize> = (0..0x2A0).collect();
    offsets.extend((0x2A0..0x2A0 + 48).chain(0x2E8..0x2E8 + 48));
    for &off in &offsets {
        let mut r = good.clone();
        r[off] ^= 0x01;
        assert!(
            v.verify(&r, &vcek, &[], None, &lax, NOW).is_err(),
            "byte {off:#x} changed, still accepted"
        );
        rejected += 1;
    }
    assert_eq!(rejected, offsets.len());
}

#[test]
fn host_supplied_roots_other_than_amds_are_refused() {
    let r = milan_report();
    let vcek = fx("virtee/vcek_milan.der");
    let milan_chain = pem_bundle(&fx("virtee/cert_chain_milan"));
    let turin_chain = pem_bundle(&fx("virtee/cert_chain_turin"));
    let v = Verifier::amd();
    // the genuine Milan ARK, sent by the host: accepted (it is the pinned one)
    let ark = milan_chain.iter().find(|c| {
        v.verify(&r, &vcek, &[], Some(c), &Policy::default(), NOW)
            .is_ok()
    });
    assert!(
        ark.is_some(),
        "the genuine Milan ARK must be accepted as root"
    );
    // certificates that are not AMD's Milan root: the Turin ASK presented as root, and the
    // Turin ARK (pinned, but not the root of this Milan chain), are both refused
    for c in turin_chain.iter().filter(|c| Some(*c) != ark) {
        let e = v
            .verify(&r, &vcek, &[], Some(c), &Policy::default(), NOW)
            .unwrap_err();
        assert!(matches!(e, VerifyError::UntrustedRoot), "{e}");
    }
}

#[test]
fn policy_checks_each_name_their_failure() {
    let r = milan_report();
    let vcek = fx("virtee/vcek_milan.der");
    let v = Verifier::amd();
    let ok = v
        .verify(&r, &vcek, &[], None, &Policy::default(), NOW)
        .unwrap();
    let measurement = ok.measurement;
    let p = Policy {
        measurements: Some(vec![[0u8; 48]]),
        ..Policy::default()
    };
    assert!(matches!(
        v.verify(&r, &vcek, &[], None, &p, NOW),
        Err(VerifyError::Measurement(_))
    ));
    let p = Policy {
        measurements: Some(vec![measurement]),
        ..Policy::default()
    };
    v.verify(&r, &vcek, &[], None, &p, NOW).unwrap();
    let p = Policy {
        report_data: Some(report_data_binding(b"key", b"nonce")),
        ..Policy::default()
    };
    assert_eq!(
        v.verify(&r, &vcek, &[], None, &p, NOW),
        Err(VerifyError::ReportData)
    );
    let p = Policy {
        min_tcb: Tcb {
            snp: 255,
            ..Tcb::default()
        },
        ..Policy::default()
    };
    assert_eq!(
        v.verify(&r, &vcek, &[], None, &p, NOW),
        Err(VerifyError::TcbTooLow { field: "snp" })
    );
    let p = Policy {
        min_version: 3,
        ..Policy::default()
    };
    assert_eq!(
        v.verify(&r, &vcek, &[], None, &p, NOW),
        Err(VerifyError::Version { got: 2, want: 3 })
    );
    // certificate validity dates: long after the VCEK expires
    let e = v
        .verify(&r, &vcek, &[], None, &Policy::default(), 4_000_000_000)
        .unwrap_err();
    assert!(matches!(e, VerifyError::CertificateValidity { .. }), "{e}");
}
