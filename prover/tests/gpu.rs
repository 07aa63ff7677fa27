//! The GPU backend against the CPU and the definition (builds with the `cuda` feature). On a
//! machine without a device these tests have nothing to check and say so, unless
//! `VERIML_REQUIRE_GPU=1` (set by scripts/gpu-check.sh), which makes a missing device a failure.
#![cfg(feature = "cuda")]

use halo2_proofs::halo2curves::bn256::{Fr, G1Affine, G1};
use halo2_proofs::halo2curves::ff::Field;
use halo2_proofs::halo2curves::group::{prime::PrimeCurveAffine, Curve, Group};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use veriml_circuits::halo2_proofs;
use veriml_prover::msm::{naive, GpuMsm, MsmBackend, SplitMsm};

fn gpu() -> Option<GpuMsm> {
    let g = GpuMsm::new(0);
    if g.is_none() {
        assert!(
            std::env::var("VERIML_REQUIRE_GPU").as_deref() != Ok("1"),
            "VERIML_REQUIRE_GPU=1 but no CUDA device is visible"
        );
        eprintln!("no CUDA device: nothing to compare");
    }
    g
}

fn points(n: usize, rng: &mut ChaCha20Rng) -> Vec<G1Affine> {
    let proj: Vec<G1> = (0..n)
        .map(|i| {
            if i % 97 == 5 {
                G1::identity()
            } else {
                G1::random(&mut *rng)
            }
        })
        .collect();
    let mut out = vec![G1Affine::identity(); n];
    G1::batch_normalize(&proj, &mut out);
    for i in (7..n).step_by(31) {
        out[i] = out[i - 7];
    }
    out
}

fn families(n: usize, rng: &mut ChaCha20Rng) -> Vec<(&'static str, Vec<Fr>)> {
    let two64 = Fr::from(u64::MAX) + Fr::ONE;
    vec![
        ("zeros", vec![Fr::ZERO; n]),
        ("ones", vec![Fr::ONE; n]),
        (
            "bytes",
            (0..n).map(|_| Fr::from(rng.gen_range(0..256u64))).collect(),
        ),
        (
            "near the modulus",
            (0..n)
                .map(|i| -Fr::from(i as u64 + 1) - two64 * Fr::from(i as u64 % 3))
                .collect(),
        ),
        ("full", (0..n).map(|_| Fr::random(&mut *rng)).collect()),
    ]
}

#[test]
fn gpu_msm_is_the_definition_on_edge_cases() {
    let Some(g) = gpu() else { return };
    eprintln!("device: {}", g.device());
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let all = points(1500, &mut rng);
    for n in [1usize, 2, 3, 31, 255, 1000, 1500] {
        for (family, scalars) in families(n, &mut rng) {
            assert_eq!(
                g.msm(&scalars, &all).to_affine(),
                naive(&scalars, &all).to_affine(),
                "gpu on {n} {family} scalars"
            );
        }
    }
}

#[test]
fn gpu_msm_agrees_with_the_cpu_up_to_2_20() {
    let Some(g) = gpu() else { return };
    let mut rng = ChaCha20Rng::seed_from_u64(22);
    let all = points((1 << 20) + 17, &mut rng);
    for n in [(1 << 16) + 1, 1 << 18, (1 << 20) + 17] {
        for (family, scalars) in families(n, &mut rng) {
            assert_eq!(
                g.msm(&scalars, &all).to_affine(),
                SplitMsm.msm(&scalars, &all).to_affine(),
                "gpu vs cpu on {n} {family} scalars"
            );
        }
    }
}
