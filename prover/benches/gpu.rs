//! CPU against GPU (the `cuda` feature): MSM of full and byte scalars at 2^16..2^22 with the
//! points resident on the device, and whole in-process proofs of the largest fixture models with
//! each backend. Run by scripts/gpu-check.sh on a machine with an NVIDIA GPU.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use veriml_circuits::halo2_proofs::halo2curves::bn256::Fr;
use veriml_prover::msm::{GpuMsm, MsmBackend, MsmChoice, SplitMsm};
use veriml_prover::pipeline;

mod common;
use common::{bases, scalars, Fixture};

fn msm(c: &mut Criterion) {
    let gpu = GpuMsm::new(0).expect("a CUDA device (this bench needs one)");
    eprintln!("device: {}", gpu.device());
    let mut g = c.benchmark_group("gpu msm");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let max = 22;
    let all = bases(1 << max);
    let full = scalars(1 << max);
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
    for model in ["lenet28", "digits_attn"] {
        let f = Fixture::load(model);
        let instances = f.circuit().instances().unwrap();
        for choice in [MsmChoice::Cpu, MsmChoice::Gpu] {
            let (params, warning) = pipeline::engine(&f.srs, choice).unwrap();
            assert!(warning.is_none(), "{warning:?}");
            g.bench_function(
                format!(
                    "{model} k={} {}",
                    f.settings.circuit.k,
                    params.backend_name()
                ),
                |b| {
                    b.iter(|| {
                        pipeline::prove_circuit_with(&params, &f.keys.pk, f.circuit(), &instances)
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
