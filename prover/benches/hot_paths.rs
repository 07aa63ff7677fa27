//! Micro-benchmarks of the prover's hot paths: MSM and FFT at 2^14..2^20, witness synthesis of
//! synthetic models that stress one part of the circuit each, and whole in-process proofs of the
//! shared MLPs (keys in memory). Run with `cargo bench -p veriml-prover --features
//! veriml-circuits/asm` to measure what the CLI runs (its default `asm` feature: halo2curves'
//! field arithmetic in assembly, ~7% off an MSM here); nothing here is a test.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::sync::Arc;
use std::time::Duration;
use veriml_circuits::{
    circuit::{plan, MAX_WEIGHT_COLUMNS},
    graph::{Graph, Op},
    halo2_proofs::{
        arithmetic::best_multiexp, dev::MockProver, halo2curves::bn256::Fr, poly::EvaluationDomain,
    },
    ModelCircuit, QuantOptions, QuantizedModel,
};
use veriml_prover::{msm::MsmChoice, pipeline};

mod common;
use common::{bases, scalars, Fixture};

fn msm_and_fft(c: &mut Criterion) {
    let mut g = c.benchmark_group("msm");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let max = 20;
    let all_bases = bases(1 << max);
    let all_scalars = scalars(1 << max);
    for k in [14u32, 16, 18, 20] {
        let n = 1usize << k;
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("2^{k}")),
            &n,
            |b, &n| b.iter(|| best_multiexp(&all_scalars[..n], &all_bases[..n])),
        );
    }
    g.finish();
    let mut g = c.benchmark_group("fft");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for k in [14u32, 16, 18, 20] {
        let domain = EvaluationDomain::<Fr>::new(1, k);
        let mut poly = domain.empty_lagrange();
        for (v, s) in poly.iter_mut().zip(&all_scalars) {
            *v = *s;
        }
        g.bench_function(BenchmarkId::from_parameter(format!("2^{k}")), |b| {
            b.iter(|| domain.lagrange_to_coeff(poly.clone()))
        });
    }
    g.finish();
}

/// One dense layer `inputs -> outputs` with deterministic weights, then ReLU.
fn dense(inputs: usize, outputs: usize) -> Arc<QuantizedModel> {
    let weights: Vec<f32> = (0..inputs * outputs)
        .map(|i| ((i * 7919 % 2003) as f32 / 2003.0 - 0.5) / (inputs as f32).sqrt())
        .collect();
    let g = Graph {
        input_shape: vec![1, inputs],
        output_shape: vec![1, outputs],
        ops: vec![
            Op::Dense {
                node: "fc".into(),
                inputs,
                outputs,
                weights: weights.into(),
                bias: vec![0.01; outputs],
            },
            Op::Relu { node: "r".into() },
        ],
    };
    let opts = QuantOptions {
        input_range: (0.0, 1.0),
        ..QuantOptions::default()
    };
    Arc::new(QuantizedModel::from_graph(&g, &opts).unwrap())
}

fn synthesis(c: &mut Criterion) {
    let mut g = c.benchmark_group("witness synthesis (MockProver::run)");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    // multiply-accumulate rows, rescale blocks, packed inputs: each case is dominated by one
    for (name, q) in [
        ("mac rows: 256x64", dense(256, 64)),
        ("rescale blocks: 16x192", dense(16, 192)),
        ("packed inputs: 2048x2", dense(2048, 2)),
    ] {
        let planned = plan(&q, MAX_WEIGHT_COLUMNS, false).unwrap();
        let (shape, k) = (planned.shape, planned.k);
        let x: Vec<i64> = (0..q.input_len())
            .map(|i| ((i * 37) % 16384) as i64)
            .collect();
        let circuit = ModelCircuit::with_input(q.clone(), shape, x).unwrap();
        let inst = circuit.instances().unwrap();
        g.bench_function(name, |b| {
            b.iter(|| MockProver::run(k, &circuit, vec![inst.clone()]).unwrap())
        });
    }
    g.finish();
}

/// halo2curves' MSM against the split CPU backend on the scalar kinds VeriML commits to.
fn msm_backends(c: &mut Criterion) {
    use veriml_prover::msm::{Halo2Msm, MsmBackend, SplitMsm};
    let mut g = c.benchmark_group("msm backends");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let max = 18;
    let all_bases = bases(1 << max);
    let full = scalars(1 << max);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let bytes: Vec<Fr> = (0..1 << max).map(|_| Fr::from(next() % 256)).collect();
    let signed: Vec<Fr> = (0..1 << max)
        .map(|_| {
            let v = Fr::from(next() % 65536);
            if next() % 2 == 0 {
                v
            } else {
                -v
            }
        })
        .collect();
    for k in [11u32, 13, 16, 18] {
        let n = 1usize << k;
        for (kind, sc) in [
            ("bytes", &bytes),
            ("signed 16-bit", &signed),
            ("full", &full),
        ] {
            for backend in [&Halo2Msm as &dyn MsmBackend, &SplitMsm] {
                g.bench_function(format!("2^{k} {kind} {}", backend.name()), |b| {
                    b.iter(|| backend.msm(&sc[..n], &all_bases[..n]))
                });
            }
        }
    }
    g.finish();
}

fn prove_models(c: &mut Criterion) {
    let mut g = c.benchmark_group("prove in process (keys in memory)");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for model in [
        "tiny_mlp",
        "digits_mlp",
        "mnist_mlp",
        "lenet28",
        "digits_attn",
    ] {
        let f = Fixture::load(model);
        let (srs, keys) = (&f.srs, &f.keys);
        // before: halo2's KZGCommitmentScheme (halo2curves' MSM everywhere)
        let instances = f.circuit().instances().unwrap();
        g.bench_function(format!("{model} halo2 scheme"), |b| {
            b.iter(|| pipeline::prove_circuit(srs, &keys.pk, f.circuit(), &instances).unwrap())
        });
        // after: VeriML's scheme with each backend, parameters prepared once
        for choice in [MsmChoice::Halo2, MsmChoice::Cpu] {
            let (params, _) = pipeline::engine(srs, choice).unwrap();
            g.bench_function(format!("{model} engine {}", params.backend_name()), |b| {
                b.iter(|| {
                    pipeline::prove_circuit_with(&params, &keys.pk, f.circuit(), &instances)
                        .unwrap()
                })
            });
        }
        // the whole call, preparing the parameters each time
        g.bench_function(format!("{model} pipeline::prove"), |b| {
            b.iter(|| pipeline::prove(srs, keys, &f.settings, f.model.clone(), &f.input).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, msm_and_fft, msm_backends, synthesis, prove_models);
criterion_main!(benches);
