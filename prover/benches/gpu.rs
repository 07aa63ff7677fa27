//! CPU against GPU (the `cuda` feature): MSM of full and byte scalars at 2^16..2^22 with the
//! points resident on the device, and whole in-process proofs of the largest fixture models with
//! each backend. Run by scripts/gpu-check.sh on a machine with an NVIDIA GPU.

use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use std::time::Duration;
use veriml_circuits::{
    halo2_proofs::halo2curves::{
        bn256::{Fr, G1Affine, G1},
        group::{prime::PrimeCurveAffine, Curve},
    },
    ModelCircuit, QuantOptions,
};
use veriml_prover::msm::{GpuMsm, MsmBackend, MsmChoice, SplitMsm};
use veriml_prover::{pipeline, Srs};

fn bases(n: usize) -> Vec<G1Affine> {
    let g = G1::from(G1Affine::generator());
    let mut acc = g;
    let proj: Vec<G1> = (0..n)
        .map(|_| {
            acc = acc + acc + g;
            acc
        })
        .collect();
    let mut out = vec![G1Affine::identity(); n];
    G1::batch_normalize(&proj, &mut out);
    out
}

fn msm(c: &mut Criterion) {
    let gpu = GpuMsm::new(0).expect("a CUDA device (this bench needs one)");
    eprintln!("device: {}", gpu.device());
    let mut g = c.benchmark_group("gpu msm");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let max = 22;
    let all = bases(1 << max);
    let mut x = Fr::from(0x9e37_79b9_7f4a_7c15);
    let full: Vec<Fr> = (0..1usize << max)
        .map(|_| {
            x = x.square() + Fr::from(7);
            x
        })
        .collect();
    let bytes: Vec<Fr> = (0..1u64 << max)
        .map(|i| Fr::from((i * 2_654_435_761) % 256))
        .collect();
    // the points go to the device once, outside the timing
    let _ = gpu.msm(&full[..1], &all);
    for k in [16u32, 18, 20, 22] {
        let n = 1usize << k;
        for (kind, sc) in [("full", &full), ("bytes", &bytes)] {
            g.bench_function(format!("2^{k} {kind} cpu"), |b| {
                b.iter(|| SplitMsm.msm(&sc[..n], &all))
            });
            g.bench_function(format!("2^{k} {kind} gpu"), |b| {
                b.iter(|| gpu.msm(&sc[..n], &all))
            });
        }
    }
    g.finish();
}

fn prove(c: &mut Criterion) {
    let mut g = c.benchmark_group("gpu prove");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    // VERIML_ROOT: the repository where this binary runs (it may have been built elsewhere)
    let root = std::env::var_os("VERIML_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .join("fixtures/models");
    for model in ["lenet28", "digits_attn"] {
        let opts = QuantOptions {
            input_range: (0.0, 1.0),
            ..QuantOptions::default()
        };
        let (settings, compiled) = veriml_circuits::compile_model(
            &root.join(model).join("model.onnx"),
            &opts,
            &Default::default(),
        )
        .unwrap();
        let m = Arc::new(compiled.model);
        let srs = Srs::insecure_dev(settings.circuit.k, 1);
        let keys = pipeline::setup(&settings, m.clone(), &srs).unwrap();
        let input = veriml_circuits::input::parse_input_json(
            &std::fs::read_to_string(root.join(model).join("input.json")).unwrap(),
        )
        .unwrap();
        let xq = m.quantize_input(&input).unwrap();
        let circuit =
            || ModelCircuit::with_input(m.clone(), settings.circuit.shape, xq.clone()).unwrap();
        let instances = circuit().instances().unwrap();
        for choice in [MsmChoice::Cpu, MsmChoice::Gpu] {
            let (params, warning) = pipeline::engine(&srs, choice).unwrap();
            assert!(warning.is_none(), "{warning:?}");
            g.bench_function(
                format!("{model} k={} {}", settings.circuit.k, params.backend_name()),
                |b| {
                    b.iter(|| {
                        pipeline::prove_circuit_with(&params, &keys.pk, circuit(), &instances)
                            .unwrap()
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, msm, prove);
criterion_main!(benches);
