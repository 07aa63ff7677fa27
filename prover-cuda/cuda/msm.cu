// VeriML's CUDA MSM: BN254 G1 multi-scalar multiplication with sppark's Pippenger.
// SPDX-License-Identifier: MIT OR Apache-2.0
//
// The points of a proving key's SRS are uploaded once (veriml_msm_new) and reused by every MSM
// (veriml_msm_run). Points and scalars arrive as halo2curves keeps them: 4 little-endian 64-bit
// limbs per field element, in Montgomery form (R = 2^256), the point at infinity as (0, 0).

#include <cuda.h>
#include <cstring>

#include <ff/alt_bn128.hpp>
#include <ec/jacobian_t.hpp>
#include <ec/xyzz_t.hpp>

typedef jacobian_t<fp_t> point_t;
typedef xyzz_t<fp_t> bucket_t;
typedef bucket_t::affine_t affine_t;
typedef fr_t scalar_t;

#include <msm/pippenger.cuh>

typedef msm_t<bucket_t, point_t, affine_t, scalar_t> veriml_msm_t;

extern "C" {

// How many CUDA devices this process sees (0 without a driver or a device).
int veriml_cuda_devices()
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

// The name of device 0, into `out` (NUL-terminated, at most `len` bytes).
int veriml_cuda_device_name(char* out, size_t len)
{
    cudaDeviceProp prop;
    if (len == 0 || cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    strncpy(out, prop.name, len - 1);
    out[len - 1] = '\0';
    return 1;
}

// Uploads `npoints` points to the device; *out is the context, or null on error.
RustError veriml_msm_new(veriml_msm_t** out, const affine_t* points, size_t npoints)
{
    *out = nullptr;
    try {
        *out = new veriml_msm_t(points, npoints);
        return RustError{cudaSuccess};
    } catch (const cuda_error& e) {
        return RustError{e.code()};
    } catch (...) {
        return RustError{cudaErrorUnknown};
    }
}

// sum(scalars[i] * points[i]) over the context's first `n` points; the result's affine
// coordinates (Montgomery limbs) into out_xy, or *out_inf set for the point at infinity.
RustError veriml_msm_run(veriml_msm_t* msm, const scalar_t* scalars, size_t n,
                         uint64_t out_xy[8], int* out_inf)
{
    point_t acc;
    try {
        // null points: the ones uploaded at creation
        RustError r = msm->invoke(acc, static_cast<const affine_t*>(nullptr), n, scalars, true);
        if (r.code != cudaSuccess)
            return r;
    } catch (const cuda_error& e) {
        return RustError{e.code()};
    } catch (...) {
        return RustError{cudaErrorUnknown};
    }
    *out_inf = acc.is_inf() ? 1 : 0;
    if (!*out_inf) {
        affine_t a = acc;
        static_assert(sizeof(a) == 64, "affine point of two 32-byte coordinates");
        memcpy(out_xy, &a, 64);
    }
    return RustError{cudaSuccess};
}

void veriml_msm_free(veriml_msm_t* msm)
{
    delete msm;
}

}
