//! The GPU backend against the CPU and the definition (builds with the `cuda` feature). On a
//! machine without a device these tests have nothing to check and say so, unless
//! `VERIML_REQUIRE_GPU=1` (set by scripts/gpu-check.sh), which makes a missing device a failure.
#![cfg(feature = "cuda")]

use halo2_proofs::halo2curves::group::Curve;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use veriml_circuits::halo2_proofs;
use veriml_prover::msm::{naive, GpuMsm, MsmBackend, SplitMsm};

mod msm_cases;
use msm_cases::{bases, families};

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

#[test]
fn gpu_msm_is_the_definition_on_edge_cases() {
    let Some(g) = gpu() else { return };
    eprintln!("device: {}", g.device());
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let all = bases(1500, &mut rng);
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
    let all = bases((1 << 20) + 17, &mut rng);
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
