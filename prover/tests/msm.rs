//! Differential tests of the MSM backends: each against the definition (one scalar
//! multiplication at a time) and against each other, on the edge cases a prover meets.

use halo2_proofs::halo2curves::bn256::{Fr, G1Affine, G1};
use halo2_proofs::halo2curves::ff::Field;
use halo2_proofs::halo2curves::group::{prime::PrimeCurveAffine, Curve, Group};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use veriml_circuits::halo2_proofs;
use veriml_prover::msm::{naive, Halo2Msm, MsmBackend, SplitMsm};

mod msm_cases;
use msm_cases::{bases, families};

fn backends() -> Vec<Box<dyn MsmBackend>> {
    vec![Box::new(Halo2Msm), Box::new(SplitMsm)]
}

#[test]
fn every_backend_computes_the_definition() {
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let all = bases(1200, &mut rng);
    for n in [0usize, 1, 2, 3, 17, 255, 1000, 1200] {
        for (family, scalars) in families(n, &mut rng) {
            let want = naive(&scalars, &all);
            for b in backends() {
                let got = b.msm(&scalars, &all);
                assert_eq!(
                    got.to_affine(),
                    want.to_affine(),
                    "{} on {n} {family} scalars",
                    b.name()
                );
            }
        }
    }
}

#[test]
fn backends_agree_on_large_inputs() {
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    let n = (1 << 16) + 123;
    let all = bases(n, &mut rng);
    // halo2curves' MSM assumes no point at infinity at this size (it panics on one): it gets
    // the same sum without those points
    let finite: Vec<usize> = (0..n)
        .filter(|&i| !bool::from(all[i].is_identity()))
        .collect();
    assert!(finite.len() < n);
    let finite_bases: Vec<G1Affine> = finite.iter().map(|&i| all[i]).collect();
    for (family, scalars) in families(n, &mut rng) {
        let finite_scalars: Vec<Fr> = finite.iter().map(|&i| scalars[i]).collect();
        let want = Halo2Msm.msm(&finite_scalars, &finite_bases);
        let got = SplitMsm.msm(&scalars, &all);
        assert_eq!(
            got.to_affine(),
            want.to_affine(),
            "cpu on {n} {family} scalars"
        );
    }
    // more bases than scalars: only the first ones count
    let scalars: Vec<Fr> = (0..1000).map(|i| Fr::from(i as u64)).collect();
    assert_eq!(
        SplitMsm.msm(&scalars, &all).to_affine(),
        naive(&scalars, &all[..1000]).to_affine()
    );
}

#[test]
fn grouping_into_more_values_than_the_affine_limit_agrees() {
    // 3·2^16 scalars: 60% one full-size value, the rest distinct. The sample shows repeats, so
    // they are grouped by value, and the ~78,000 values left (over 2^16) go to halo2curves.
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let n = 3 << 16;
    let g = G1::random(&mut rng);
    let mut acc = g;
    let proj: Vec<G1> = (0..n)
        .map(|_| {
            acc = acc.double() + g;
            acc
        })
        .collect();
    let mut all = vec![G1Affine::identity(); n];
    G1::batch_normalize(&proj, &mut all);
    let common = Fr::random(&mut rng);
    let scalars: Vec<Fr> = (0..n)
        .map(|i| {
            if i % 5 < 3 {
                common
            } else {
                Fr::random(&mut rng)
            }
        })
        .collect();
    assert_eq!(
        SplitMsm.msm(&scalars, &all).to_affine(),
        Halo2Msm.msm(&scalars, &all).to_affine()
    );
}
