//! Multi-scalar multiplication (MSM) backends: `Σ sᵢ·Pᵢ` over BN254's G1, the part of KZG
//! proving that costs most.
//!
//! [`MsmBackend`] is what the prover's commitment scheme ([`crate::engine`]) calls for every
//! commitment. Backends:
//! - [`Halo2Msm`]: halo2curves' own `best_multiexp`, the reference the others are measured
//!   against;
//! - [`GpuMsm`] (`gpu`): the CUDA backend of `veriml-cuda` (the `cuda` feature), points
//!   resident on the device, small MSMs and every failure on the CPU;
//! - [`SplitMsm`] (`cpu`): most of VeriML's advice cells are small (bytes, limbs, small signed
//!   values), so scalars are sorted by size: small ones (a 64-bit magnitude, either sign) are
//!   cut into windows that cover only the largest small magnitude (a column of bytes: one or two
//!   windows), zeros are skipped; full-size scalars that repeat few values (second-phase
//!   columns of challenge powers: 69 to 1,423 distinct values among 26,000 to 59,000 in
//!   lenet28's and digits_attn's proofs, 259 among 1,198 in mnist_mlp's) are grouped by value
//!   when a sample shows repeats, the points of each value added first; the full-size rest pays
//!   for 254-bit windows. Buckets are summed in affine coordinates, a round of additions sharing
//!   one inversion (`affine`), up to 2^16 full-size scalars; above that halo2curves' own
//!   batch-affine MSM is faster here.
//!
//! Every backend must return exactly `Σ sᵢ·Pᵢ`; the differential tests compare each with
//! [`naive`] on edge cases (zeros, ones, scalars near the modulus, repeated bases, the point at
//! infinity, lengths that are not powers of two).

mod affine;
mod gpu;
mod split;

pub use gpu::GpuMsm;
pub use split::SplitMsm;

/// MSMs of fewer points stay on the CPU under `--msm auto` (transfers and launches cost more
/// than they save there). A first guess, to be replaced by `scripts/gpu-check.sh`'s measurement.
pub const AUTO_GPU_THRESHOLD: usize = 1 << 16;

use halo2_proofs::arithmetic::best_multiexp;
use halo2_proofs::halo2curves::bn256::{Fr, G1Affine, G1};
use halo2_proofs::halo2curves::group::Group;
use std::fmt::Debug;

/// An MSM implementation over BN254 G1.
pub trait MsmBackend: Send + Sync + Debug {
    /// A short name (`halo2`, `cpu`, `gpu`), for reports.
    fn name(&self) -> &'static str;

    /// `Σ scalars[i]·bases[i]`; `bases` has at least as many points as there are scalars.
    fn msm(&self, scalars: &[Fr], bases: &[G1Affine]) -> G1;
}

/// halo2curves' `best_multiexp`, unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct Halo2Msm;

impl MsmBackend for Halo2Msm {
    fn name(&self) -> &'static str {
        "halo2"
    }

    fn msm(&self, scalars: &[Fr], bases: &[G1Affine]) -> G1 {
        best_multiexp(scalars, &bases[..scalars.len()])
    }
}

/// The definition, one scalar multiplication at a time (tests only: slow).
pub fn naive(scalars: &[Fr], bases: &[G1Affine]) -> G1 {
    scalars
        .iter()
        .zip(bases)
        .fold(G1::identity(), |acc, (s, p)| acc + G1::from(*p) * s)
}

/// Which backend `--msm` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MsmChoice {
    /// halo2curves' MSM (the baseline).
    Halo2,
    /// [`SplitMsm`] on the CPU.
    Cpu,
    /// The CUDA backend (a build with the `cuda` feature and an NVIDIA device).
    Gpu,
    /// The GPU when one is usable and the MSM is large enough, else the CPU.
    Auto,
}

impl std::str::FromStr for MsmChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "halo2" => MsmChoice::Halo2,
            "cpu" => MsmChoice::Cpu,
            "gpu" => MsmChoice::Gpu,
            "auto" => MsmChoice::Auto,
            _ => return Err(format!("`{s}` is not one of cpu, gpu, auto, halo2")),
        })
    }
}

/// The backend for a choice, and a warning when the choice cannot be honoured (then the CPU
/// backend): no backend asks for a GPU this build or machine does not have and crashes.
pub fn backend(choice: MsmChoice) -> (std::sync::Arc<dyn MsmBackend>, Option<String>) {
    use std::sync::Arc;
    match choice {
        MsmChoice::Halo2 => (Arc::new(Halo2Msm), None),
        MsmChoice::Cpu => (Arc::new(SplitMsm), None),
        MsmChoice::Auto => match GpuMsm::new(AUTO_GPU_THRESHOLD) {
            Some(g) => (Arc::new(g), None),
            None => (Arc::new(SplitMsm), None),
        },
        MsmChoice::Gpu => match GpuMsm::new(0) {
            Some(g) => (Arc::new(g), None),
            None => {
                let why = match veriml_cuda::DeviceMsm::new(&[]) {
                    Err(e) => e.to_string(),
                    Ok(_) => "no CUDA device is visible".into(),
                };
                (
                    Arc::new(SplitMsm),
                    Some(format!("{why}: proving on the CPU")),
                )
            }
        },
    }
}
