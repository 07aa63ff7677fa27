//! Calibration: compile a float graph with several quantization choices, measure each on sample
//! inputs against the float model, and pick one for a target (`accuracy` or `resources`, the
//! names researchers know from EZKL).
//!
//! Whatever is picked, the guarantee of [`crate::quantize`] stays: every bound comes from interval
//! arithmetic over the declared input range (lookup inputs are clamped in the circuit where the
//! function saturates), so any input inside the range is provable; the samples only measure
//! accuracy and cost, they never narrow what the circuit accepts.

use crate::error::CompileError;
use crate::graph::{Graph, Op};
use crate::quantize::{QuantOptions, QuantizedModel};
use crate::settings::{compile_graph, CompiledModel, PlanOptions, Settings};
use serde::{Deserialize, Serialize};

/// What calibration optimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The smallest largest-absolute-error on the samples (then the smallest circuit).
    Accuracy,
    /// The smallest circuit (`k`) that agrees with the float model's top-1 on every sample;
    /// among those of that size the most accurate.
    Resources,
}

/// One compiled candidate and what it measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub activation_scale_bits: u32,
    pub weight_precision_bits: u32,
    pub lookup_bits: u32,
    pub k: u32,
    pub rows: usize,
    /// Largest absolute difference between the dequantized and the float outputs.
    pub max_abs_error: f64,
    /// Samples whose largest output (top-1) is the float model's.
    pub top1_agree: usize,
}

/// The outcome: every candidate tried, the index of the one chosen, and its compiled files.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub candidates: Vec<Candidate>,
    pub chosen: usize,
    pub settings: Settings,
    pub compiled: CompiledModel,
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Compiles `graph` with each scale, weight precision and (if the model has non-linear functions)
/// lookup table size around `base`, measures each on `samples` (float inputs inside the declared
/// range) and picks one for `target`.
pub fn calibrate(
    graph: &Graph,
    model_name: &str,
    onnx_sha256: &str,
    base: &QuantOptions,
    plan: &PlanOptions,
    samples: &[Vec<f64>],
    target: Target,
) -> Result<Calibration, CompileError> {
    if samples.is_empty() {
        return Err(CompileError::Input(
            "calibration needs at least one sample".into(),
        ));
    }
    let float: Vec<Vec<f64>> = samples
        .iter()
        .enumerate()
        .map(|(i, x)| {
            if x.len() != graph.input_len() {
                return Err(CompileError::Input(format!(
                    "sample {i} has {} values, the model takes {}",
                    x.len(),
                    graph.input_len()
                )));
            }
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            Ok(graph.forward(&xf).into_iter().map(f64::from).collect())
        })
        .collect::<Result<_, _>>()?;
    let lookups = graph
        .ops
        .iter()
        .any(|op| matches!(op, Op::Elementwise { .. }));
    let lookup_choices: &[u32] = if lookups { &[10, 12, 14, 16] } else { &[12] };
    let mut candidates = Vec::new();
    let mut compiled_all = Vec::new();
    let mut last_error = None;
    for scale in [12, 14, 16] {
        for weight in [14, 16, 18] {
            for &lookup_bits in lookup_choices {
                let opts = QuantOptions {
                    activation_scale_bits: scale,
                    weight_precision_bits: weight,
                    lookup_bits,
                    ..base.clone()
                };
                let (settings, compiled) =
                    match compile_graph(graph, model_name, onnx_sha256, &opts, plan) {
                        Ok(c) => c,
                        // a choice the model does not fit (too many rows, a bound too wide)
                        Err(e) => {
                            last_error = Some(e);
                            continue;
                        }
                    };
                let (err, agree) = measure(&compiled.model, samples, &float)?;
                candidates.push(Candidate {
                    activation_scale_bits: scale,
                    weight_precision_bits: weight,
                    lookup_bits,
                    k: settings.circuit.k,
                    rows: settings.circuit.rows_used,
                    max_abs_error: err,
                    top1_agree: agree,
                });
                compiled_all.push((settings, compiled));
            }
        }
    }
    let chosen = pick(&candidates, samples.len(), target).ok_or_else(|| {
        last_error.unwrap_or_else(|| CompileError::Input("no candidate compiled".into()))
    })?;
    let (settings, compiled) = compiled_all.swap_remove(chosen);
    Ok(Calibration {
        candidates,
        chosen,
        settings,
        compiled,
    })
}

/// The largest absolute output error and the top-1 agreement of a quantized model on samples.
fn measure(
    model: &QuantizedModel,
    samples: &[Vec<f64>],
    float: &[Vec<f64>],
) -> Result<(f64, usize), CompileError> {
    let (mut err, mut agree) = (0f64, 0);
    for (x, want) in samples.iter().zip(float) {
        let got: Vec<f64> = model
            .forward(&model.quantize_input(x)?)
            .into_iter()
            .map(|v| model.dequantize(v))
            .collect();
        for (g, w) in got.iter().zip(want) {
            err = err.max((g - w).abs());
        }
        agree += usize::from(argmax(&got) == argmax(want));
    }
    Ok((err, agree))
}

/// The candidate a target prefers.
fn pick(c: &[Candidate], samples: usize, target: Target) -> Option<usize> {
    // the cost is `k` (rows below 2^k are free); then the error, then the rows
    let by = |i: &usize| -> (u32, u64, usize) {
        let x = &c[*i];
        (x.k, x.max_abs_error.to_bits(), x.rows)
    };
    match target {
        Target::Resources => {
            let agreeing: Vec<usize> = (0..c.len())
                .filter(|&i| c[i].top1_agree == samples)
                .collect();
            // if none agrees on every sample, the most accurate is the honest answer
            if agreeing.is_empty() {
                return pick(c, samples, Target::Accuracy);
            }
            agreeing.into_iter().min_by_key(by)
        }
        Target::Accuracy => (0..c.len()).min_by(|&a, &b| {
            c[a].max_abs_error
                .total_cmp(&c[b].max_abs_error)
                .then(by(&a).cmp(&by(&b)))
        }),
    }
}
