//! Property test: report parsing and verification never panic, on thousands of random and
//! mutated inputs (reports and certificates), and never accept a mutated signed report.

use std::path::PathBuf;
use veriml_tee::{
    verify::{Policy, Verifier},
    AttestationReport,
};

const NOW: u64 = 1_795_737_600;

/// xorshift64*: deterministic, so a failure is reproducible from its case number.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fx(path: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(path),
    )
    .unwrap()
}

#[test]
fn parsing_random_bytes_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let len = match rng.below(4) {
            0 => 0x4A0,
            1 => rng.below(0x600),
            _ => 0x4A0 + rng.below(3) - 1,
        };
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = AttestationReport::from_bytes(&bytes);
    }
}

#[test]
fn mutated_reports_and_certificates_never_panic_nor_pass() {
    let report = fx("trustee/test-report.bin");
    let vcek = fx("trustee/test-vcek.der");
    let v = Verifier::amd();
    let policy = Policy {
        vmpl: None,
        allow_debug: true,
        min_version: 0,
        ..Policy::default()
    };
    v.verify(&report, &vcek, &[], None, &policy, NOW).unwrap();
    let mut rng = Rng(42);
    for case in 0..3_000 {
        let mut r = report.clone();
        let mut c = vcek.clone();
        let flips = 1 + rng.below(4);
        let mutate_cert = case % 3 == 0;
        for _ in 0..flips {
            if mutate_cert {
                let i = rng.below(c.len());
                c[i] ^= 1 << rng.below(8);
            } else {
                let i = rng.below(r.len());
                r[i] ^= 1 << rng.below(8);
            }
        }
        if mutate_cert && rng.below(10) == 0 {
            c.truncate(rng.below(c.len()));
        }
        let out = v.verify(&r, &c, &[], None, &policy, NOW);
        // flips may cancel out: compare the final bytes
        if r[..0x2A0] != report[..0x2A0] {
            assert!(
                out.is_err(),
                "case {case}: a report with changed signed bytes was accepted"
            );
        }
    }
}
