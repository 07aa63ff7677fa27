//! What the prover's benches share: deterministic points and scalars, and a fixture model
//! compiled, set up (development SRS) and ready to prove.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use veriml_circuits::{
    halo2_proofs::halo2curves::{
        bn256::{Fr, G1Affine, G1},
        group::{prime::PrimeCurveAffine, Curve},
    },
    ModelCircuit, QuantOptions, QuantizedModel, Settings,
};
use veriml_prover::{pipeline, Keys, Srs};

/// Deterministic full-size scalars.
pub fn scalars(n: usize) -> Vec<Fr> {
    let mut x = Fr::from(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            x = x.square() + Fr::from(7);
            x
        })
        .collect()
}

/// Deterministic distinct points (one addition each, then one batch normalisation).
pub fn bases(n: usize) -> Vec<G1Affine> {
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

/// A fixture model with its keys and its `input.json`.
pub struct Fixture {
    pub settings: Settings,
    pub model: Arc<QuantizedModel>,
    pub srs: Srs,
    pub keys: Keys,
    pub input: Vec<f64>,
    quantized: Vec<i64>,
}

impl Fixture {
    /// `fixtures/models/NAME` compiled with inputs in [0, 1] and set up. The repository is
    /// `VERIML_ROOT` when set (a bench built on one machine and run on another), else this
    /// checkout.
    pub fn load(name: &str) -> Fixture {
        let root = std::env::var_os("VERIML_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
            .join("fixtures/models")
            .join(name);
        let opts = QuantOptions {
            input_range: (0.0, 1.0),
            ..QuantOptions::default()
        };
        let (settings, compiled) =
            veriml_circuits::compile_model(&root.join("model.onnx"), &opts, &Default::default())
                .unwrap();
        let model = Arc::new(compiled.model);
        let srs = Srs::insecure_dev(settings.circuit.k, 1);
        let keys = pipeline::setup(&settings, model.clone(), &srs).unwrap();
        let input = veriml_circuits::input::parse_input_json(
            &std::fs::read_to_string(root.join("input.json")).unwrap(),
        )
        .unwrap();
        let quantized = model.quantize_input(&input).unwrap();
        Fixture {
            settings,
            model,
            srs,
            keys,
            input,
            quantized,
        }
    }

    /// The circuit with the input's witness.
    pub fn circuit(&self) -> ModelCircuit {
        ModelCircuit::with_input(
            self.model.clone(),
            self.settings.circuit.shape,
            self.quantized.clone(),
        )
        .unwrap()
    }
}
