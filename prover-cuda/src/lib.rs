//! BN254 G1 multi-scalar multiplication on an NVIDIA GPU: sppark's Pippenger templates,
//! instantiated by `cuda/msm.cu` and compiled by `nvcc` when the `cuda` feature is on.
//!
//! [`DeviceMsm::new`] uploads a set of points (an SRS's monomial or Lagrange points) once;
//! [`DeviceMsm::msm`] then sends only scalars. Every failure is a [`GpuError`] (no build, no
//! device, a CUDA error with its code), never a panic: the prover falls back to the CPU.
//!
//! Without the `cuda` feature this crate builds anywhere and reports no device.

// sppark's host-side field arithmetic calls blst's: link its library
#[cfg(feature = "cuda")]
use blst as _;
use thiserror::Error;
use veriml_circuits::halo2_proofs::halo2curves::bn256::{Fr, G1Affine, G1};
use veriml_circuits::halo2_proofs::halo2curves::group::Group;

/// Why the GPU cannot do an MSM.
#[derive(Debug, Error)]
pub enum GpuError {
    #[error(
        "this build has no CUDA backend (build with the `cuda` feature on a machine with nvcc)"
    )]
    NotBuilt,
    #[error("no CUDA device is visible (no NVIDIA GPU, or no driver)")]
    NoDevice,
    #[error("CUDA error {code} while {stage}")]
    Cuda { stage: &'static str, code: i32 },
    #[error("{0}")]
    Layout(String),
    #[error("the device returned a point that is not on the curve")]
    BadResult,
}

/// The name of the first CUDA device, when this build has the backend and one is visible.
pub fn device() -> Option<String> {
    imp::device()
}

/// Points resident on the GPU, for MSMs with any prefix of them.
pub struct DeviceMsm {
    inner: imp::Context,
    len: usize,
}

impl std::fmt::Debug for DeviceMsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceMsm").field("len", &self.len).finish()
    }
}

impl DeviceMsm {
    /// Uploads `points` to the GPU.
    pub fn new(points: &[G1Affine]) -> Result<Self, GpuError> {
        Ok(DeviceMsm {
            inner: imp::Context::new(points)?,
            len: points.len(),
        })
    }

    /// How many points are resident.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no point is resident.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `Σ scalars[i]·points[i]` over the first `scalars.len()` resident points.
    pub fn msm(&self, scalars: &[Fr]) -> Result<G1, GpuError> {
        if scalars.len() > self.len {
            return Err(GpuError::Layout(format!(
                "{} scalars for {} resident points",
                scalars.len(),
                self.len
            )));
        }
        if scalars.is_empty() {
            return Ok(G1::identity());
        }
        self.inner.msm(scalars)
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;

    pub fn device() -> Option<String> {
        None
    }

    pub struct Context;

    impl Context {
        pub fn new(_: &[G1Affine]) -> Result<Self, GpuError> {
            Err(GpuError::NotBuilt)
        }

        pub fn msm(&self, _: &[Fr]) -> Result<G1, GpuError> {
            Err(GpuError::NotBuilt)
        }
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use std::ffi::c_void;
    use std::sync::Mutex;
    use veriml_circuits::halo2_proofs::halo2curves::ff::Field;
    use veriml_circuits::halo2_proofs::halo2curves::serde::SerdeObject;

    extern "C" {
        fn veriml_cuda_devices() -> i32;
        fn veriml_cuda_device_name(out: *mut u8, len: usize) -> i32;
        fn veriml_msm_new(
            out: *mut *mut c_void,
            points: *const u8,
            npoints: usize,
        ) -> sppark::Error;
        fn veriml_msm_run(
            msm: *mut c_void,
            scalars: *const u8,
            n: usize,
            out_xy: *mut u64,
            out_inf: *mut i32,
        ) -> sppark::Error;
        fn veriml_msm_free(msm: *mut c_void);
    }

    pub fn device() -> Option<String> {
        // SAFETY: no arguments; the C side catches every CUDA error.
        if unsafe { veriml_cuda_devices() } <= 0 {
            return None;
        }
        let mut name = [0u8; 256];
        // SAFETY: `name` is writable for its length; the C side writes at most len bytes,
        // NUL-terminated.
        let ok = unsafe { veriml_cuda_device_name(name.as_mut_ptr(), name.len()) };
        let end = name.iter().position(|&b| b == 0).unwrap_or(0);
        Some(if ok == 1 {
            String::from_utf8_lossy(&name[..end]).into_owned()
        } else {
            "an NVIDIA GPU".into()
        })
    }

    /// Whether `Fr` is laid out as its 4 Montgomery limbs (so scalars go to the device as
    /// they are): checked on values, not assumed.
    fn scalars_are_raw() -> bool {
        if std::mem::size_of::<Fr>() != 32 || std::mem::align_of::<Fr>() < 8 {
            return false;
        }
        let probe = [Fr::ONE, -Fr::ONE, Fr::from(0x0123_4567_89ab_cdef)];
        probe.iter().all(|f| {
            // SAFETY: `f` is a live 32-byte value (size checked above); reading its bytes
            // is reading initialised memory.
            let bytes = unsafe { std::slice::from_raw_parts(f as *const Fr as *const u8, 32) };
            bytes == f.to_raw_bytes().as_slice()
        })
    }

    pub struct Context {
        ptr: Mutex<*mut c_void>,
    }

    // SAFETY: the context is only used under the mutex; sppark's msm_t holds device memory
    // and no thread-local state.
    unsafe impl Send for Context {}
    // SAFETY: as above: every use of the pointer is under the mutex.
    unsafe impl Sync for Context {}

    impl Drop for Context {
        fn drop(&mut self) {
            let p = *self.ptr.get_mut().unwrap_or_else(|e| e.into_inner());
            if !p.is_null() {
                // SAFETY: `p` came from veriml_msm_new and is freed once, here.
                unsafe { veriml_msm_free(p) };
            }
        }
    }

    impl Context {
        pub fn new(points: &[G1Affine]) -> Result<Self, GpuError> {
            if device().is_none() {
                return Err(GpuError::NoDevice);
            }
            if !scalars_are_raw() {
                return Err(GpuError::Layout(
                    "halo2curves' Fr is not laid out as 4 Montgomery limbs in this build".into(),
                ));
            }
            let mut raw = Vec::with_capacity(points.len() * 64);
            for p in points {
                p.write_raw(&mut raw)
                    .map_err(|e| GpuError::Layout(e.to_string()))?;
            }
            if raw.len() != points.len() * 64 {
                return Err(GpuError::Layout("a point is not 64 raw bytes".into()));
            }
            let mut ptr: *mut c_void = std::ptr::null_mut();
            // SAFETY: `raw` holds `points.len()` points of 64 bytes; `ptr` is written once.
            let err = unsafe { veriml_msm_new(&mut ptr, raw.as_ptr(), points.len()) };
            if err.code != 0 || ptr.is_null() {
                return Err(GpuError::Cuda {
                    stage: "uploading the points",
                    code: err.code,
                });
            }
            Ok(Context {
                ptr: Mutex::new(ptr),
            })
        }

        pub fn msm(&self, scalars: &[Fr]) -> Result<G1, GpuError> {
            let mut xy = [0u64; 8];
            let mut inf = 0i32;
            let guard = self.ptr.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: the context is live (under the lock); `scalars` is a live slice of
            // 32-byte Montgomery values (checked by `scalars_are_raw` at creation); `xy` and
            // `inf` are writable.
            let err = unsafe {
                veriml_msm_run(
                    *guard,
                    scalars.as_ptr() as *const u8,
                    scalars.len(),
                    xy.as_mut_ptr(),
                    &mut inf,
                )
            };
            drop(guard);
            if err.code != 0 {
                return Err(GpuError::Cuda {
                    stage: "running the MSM",
                    code: err.code,
                });
            }
            if inf != 0 {
                return Ok(G1::identity());
            }
            let bytes: Vec<u8> = xy.iter().flat_map(|l| l.to_le_bytes()).collect();
            let p = G1Affine::from_raw_bytes(&bytes).ok_or(GpuError::BadResult)?;
            Ok(G1::from(p))
        }
    }
}
