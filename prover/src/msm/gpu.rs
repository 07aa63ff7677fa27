//! The GPU backend: [`veriml_cuda`]'s resident-point MSM, with the CPU backend for small MSMs
//! and for every failure (no device, a CUDA error: a warning once, never a crash).

use super::{MsmBackend, SplitMsm};
use halo2_proofs::halo2curves::bn256::{Fr, G1Affine, G1};
use halo2_proofs::halo2curves::serde::SerdeObject;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use veriml_circuits::halo2_proofs;
use veriml_cuda::DeviceMsm;

/// Which point set a call uses: its address and length, and its last point (a set freed and
/// another allocated at the same address is not taken for it unless it is the same SRS).
type PointsKey = (usize, usize, Vec<u8>);

/// MSMs of at least `threshold` points on the GPU, the rest on the CPU.
pub struct GpuMsm {
    threshold: usize,
    resident: Mutex<HashMap<PointsKey, Arc<DeviceMsm>>>,
    failed: AtomicBool,
    device: String,
}

impl std::fmt::Debug for GpuMsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuMsm")
            .field("device", &self.device)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl GpuMsm {
    /// The GPU backend when a device is visible to this build.
    pub fn new(threshold: usize) -> Option<Self> {
        let device = veriml_cuda::device()?;
        Some(GpuMsm {
            threshold,
            resident: Mutex::new(HashMap::new()),
            failed: AtomicBool::new(false),
            device,
        })
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.device
    }

    fn fail(&self, e: veriml_cuda::GpuError) {
        if !self.failed.swap(true, Ordering::SeqCst) {
            eprintln!("WARNING: the GPU MSM failed ({e}); proving on the CPU from here on");
        }
    }

    fn resident(&self, bases: &[G1Affine]) -> Result<Arc<DeviceMsm>, veriml_cuda::GpuError> {
        let last = bases.last().map(|p| p.to_raw_bytes()).unwrap_or_default();
        let key = (bases.as_ptr() as usize, bases.len(), last);
        let mut map = self.resident.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map.get(&key) {
            return Ok(d.clone());
        }
        let d = Arc::new(DeviceMsm::new(bases)?);
        map.insert(key, d.clone());
        Ok(d)
    }
}

impl MsmBackend for GpuMsm {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn msm(&self, scalars: &[Fr], bases: &[G1Affine]) -> G1 {
        if scalars.len() >= self.threshold && !self.failed.load(Ordering::SeqCst) {
            match self.resident(bases).and_then(|d| d.msm(scalars)) {
                Ok(r) => return r,
                Err(e) => self.fail(e),
            }
        }
        SplitMsm.msm(scalars, bases)
    }
}
