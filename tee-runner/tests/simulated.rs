//! The simulated attester: its reports verify only under the explicit development setting.

use veriml_tee::{
    report::report_data_binding,
    verify::{Generation, Policy, Verifier, VerifyError},
    Attester, SimulatedPlatform,
};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn simulated_reports_verify_only_in_development_mode() {
    let platform = SimulatedPlatform::new([7u8; 48]);
    let binding = report_data_binding(b"runner-public-key", b"nonce-1");
    let att = platform.attest(binding).unwrap();
    assert!(att.simulated);
    assert_eq!(att.report[0], 3, "report version 3");
    let policy = Policy {
        measurements: Some(vec![[7u8; 48]]),
        report_data: Some(binding),
        ..Policy::default()
    };

    // production: AMD's roots only
    let e = Verifier::amd()
        .verify(
            &att.report,
            &att.vek,
            &att.intermediates,
            None,
            &policy,
            now(),
        )
        .unwrap_err();
    assert_eq!(e, VerifyError::ChainNotTrusted);

    // development: explicitly trusting the simulated root
    let dev = Verifier::amd()
        .with_simulated_root(platform.ark_der())
        .unwrap();
    let ok = dev
        .verify(
            &att.report,
            &att.vek,
            &att.intermediates,
            None,
            &policy,
            now(),
        )
        .unwrap();
    assert!(ok.simulated);
    assert_eq!(ok.generation, Generation::Simulated);

    // every check still applies: another nonce, another measurement, a changed byte
    let other = Policy {
        report_data: Some(report_data_binding(b"runner-public-key", b"nonce-2")),
        ..policy.clone()
    };
    assert_eq!(
        dev.verify(
            &att.report,
            &att.vek,
            &att.intermediates,
            None,
            &other,
            now()
        ),
        Err(VerifyError::ReportData)
    );
    let other = Policy {
        measurements: Some(vec![[8u8; 48]]),
        ..policy.clone()
    };
    assert!(matches!(
        dev.verify(
            &att.report,
            &att.vek,
            &att.intermediates,
            None,
            &other,
            now()
        ),
        Err(VerifyError::Measurement(_))
    ));
    let mut bad = att.report.clone();
    bad[0x90] ^= 1;
    assert_eq!(
        dev.verify(&bad, &att.vek, &att.intermediates, None, &policy, now()),
        Err(VerifyError::ReportSignature)
    );
    // another simulated platform's certificates do not verify this one's reports
    let stranger = SimulatedPlatform::new([7u8; 48]);
    assert!(dev
        .verify(
            &att.report,
            stranger.vcek_der(),
            &[stranger.ask_der().to_vec()],
            None,
            &policy,
            now()
        )
        .is_err());
}
