//! With the `cuda` feature: compiles `cuda/msm.cu` (sppark's BN254 Pippenger) with nvcc for the
//! data-centre GPUs VeriML targets (Ampere sm_80, Hopper sm_90, and PTX for later ones).
//! Without it: nothing.

fn main() {
    println!("cargo:rerun-if-changed=cuda/msm.cu");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=VERIML_CUDA_ARCH");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let sppark = std::env::var("DEP_SPPARK_ROOT")
        .expect("sppark's build script exports its headers' root (DEP_SPPARK_ROOT)");
    let blst = std::env::var("DEP_BLST_C_SRC")
        .expect("blst's build script exports its C sources (DEP_BLST_C_SRC)");
    let mut nvcc = cc::Build::new();
    nvcc.cuda(true)
        .cudart("static")
        // device code optimised whatever the Cargo profile (`-G` would disable that)
        .debug(false)
        .opt_level(3)
        .define("FEATURE_BN254", None)
        .include(&sppark)
        .include(&blst)
        .flag("-std=c++17")
        .flag("-Xcompiler")
        .flag("-Wno-unused-function");
    let archs = std::env::var("VERIML_CUDA_ARCH").unwrap_or_else(|_| "80,90".into());
    for a in archs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        nvcc.flag("-gencode")
            .flag(format!("arch=compute_{a},code=sm_{a}"));
    }
    if let Some(last) = archs.split(',').map(str::trim).next_back() {
        // PTX of the newest architecture, compiled by the driver for newer GPUs
        nvcc.flag("-gencode")
            .flag(format!("arch=compute_{last},code=compute_{last}"));
    }
    nvcc.file("cuda/msm.cu").compile("veriml_msm_cuda");
}
