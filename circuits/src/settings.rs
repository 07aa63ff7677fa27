//! The versioned settings file and the compiled-model file.
//!
//! `settings.json` records how a model was compiled: the source file's hash, the quantization
//! choices, the circuit's column shape and size, and the SHA-256 of the whole compiled model.
//! Every field a verifier reads to decode the public words is checked against the compiled
//! model ([`Settings::check_model`]), so keys and settings cannot disagree about them.
//! `model.compiled.json` holds the quantized model itself (the circuit is rebuilt from it).

use crate::circuit::{
    count_rows, plan, unpack_public, ColumnShape, Plan, PublicInput, PublicLayout,
};
use crate::error::CompileError;
use crate::graph::Graph;
use crate::quantize::{
    decode_input_code, encode_input_code, QLayer, QuantOptions, QuantizedModel, QUANT_SCHEME,
};
use halo2_proofs::halo2curves::bn256::Fr;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Format tag of settings files.
pub const SETTINGS_FORMAT: &str = "veriml-settings";
/// Format tag of compiled-model files.
pub const COMPILED_FORMAT: &str = "veriml-compiled-model";
/// Current version of both formats.
pub const FORMAT_VERSION: u32 = 4;
/// Default cap on weight columns (each one costs the EVM verifier a commitment).
pub const DEFAULT_MAX_WEIGHT_COLUMNS: usize = 32;

/// Limits of the circuit planner (see [`crate::circuit::plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// Most fixed weight columns (Freivalds slots).
    pub max_weight_columns: usize,
    /// The input words are hashed in the circuit (Poseidon) and only their digest is public.
    pub hashed_input: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            max_weight_columns: DEFAULT_MAX_WEIGHT_COLUMNS,
            hashed_input: false,
        }
    }
}

/// The input part of decoded public words.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodedInput {
    /// The input values the words hold.
    Values(Vec<f64>),
    /// The Poseidon digest of the input words (a hashed input).
    Digest(Fr),
}

/// Public words read back: the input (or its digest) and the output.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub input: DecodedInput,
    pub output: Vec<f64>,
}

/// Per-layer quantization record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSettings {
    pub node: String,
    pub op: String,
    /// Weight scale bits (0 for layers without weights).
    pub weight_scale_bits: u32,
    /// Bound of the layer's output: `|y| < 2^out_bits` (integers at the activation scale).
    pub out_bits: u32,
    pub relu: bool,
}

/// Quantization choices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantSettings {
    pub scheme: String,
    pub activation_scale_bits: u32,
    pub weight_precision_bits: u32,
    pub input_range: (f64, f64),
    /// Bits of an input code (see [`crate::quantize`]).
    pub input_bits: u32,
    pub layers: Vec<LayerSettings>,
}

/// Circuit size and shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitSettings {
    pub k: u32,
    pub shape: ColumnShape,
    pub advice_columns: usize,
    pub fixed_columns: usize,
    pub rows_used: usize,
    pub num_instances: usize,
    pub macs: usize,
}

/// The settings file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub format: String,
    pub version: u32,
    pub model_name: String,
    pub onnx_sha256: String,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub quantization: QuantSettings,
    pub circuit: CircuitSettings,
    /// SHA-256 of the canonical JSON of the whole compiled model ([`QuantizedModel::sha256`]).
    pub model_sha256: String,
}

/// The compiled-model file: the quantized model with its format header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompiledModel {
    pub format: String,
    pub version: u32,
    pub model: QuantizedModel,
}

impl Settings {
    /// Parses and checks a settings file's text.
    pub fn from_json(text: &str) -> Result<Self, CompileError> {
        let s: Settings = serde_json::from_str(text).map_err(|e| CompileError::Format {
            what: "settings",
            detail: e.to_string(),
        })?;
        if s.format != SETTINGS_FORMAT || s.version != FORMAT_VERSION {
            return Err(CompileError::Format {
                what: "settings",
                detail: format!(
                    "format `{}` version {} (expected `{SETTINGS_FORMAT}` version {FORMAT_VERSION})",
                    s.format, s.version
                ),
            });
        }
        Ok(s)
    }

    /// Checks that a compiled model is the one these settings describe: its hash, and every
    /// field the settings repeat from it (shapes, scale, input range and code width, layers,
    /// circuit shape and size). The first difference is a [`CompileError::Mismatch`].
    pub fn check_model(&self, model: &QuantizedModel) -> Result<(), CompileError> {
        let differ = |field: &str, ours: String, theirs: String| {
            Err(CompileError::Mismatch {
                field: field.into(),
                settings: ours,
                model: theirs,
            })
        };
        let h = model.sha256();
        if h != self.model_sha256 {
            return differ("model_sha256", self.model_sha256.clone(), h);
        }
        let q = &self.quantization;
        let repeated: [(&str, String, String); 6] = [
            (
                "input_shape",
                format!("{:?}", self.input_shape),
                format!("{:?}", model.input_shape),
            ),
            (
                "output_shape",
                format!("{:?}", self.output_shape),
                format!("{:?}", model.output_shape),
            ),
            (
                "quantization.activation_scale_bits",
                q.activation_scale_bits.to_string(),
                model.activation_scale_bits.to_string(),
            ),
            (
                "quantization.input_range",
                format!("{:?}", q.input_range),
                format!("{:?}", model.input_range),
            ),
            (
                "quantization.input_bits",
                q.input_bits.to_string(),
                model.input_bits.to_string(),
            ),
            ("quantization.scheme", q.scheme.clone(), QUANT_SCHEME.into()),
        ];
        for (field, ours, theirs) in repeated {
            if ours != theirs {
                return differ(field, ours, theirs);
            }
        }
        if q.layers != layer_settings(model) {
            return differ(
                "quantization.layers",
                format!("{:?}", q.layers),
                format!("{:?}", layer_settings(model)),
            );
        }
        // the circuit's shape follows from the model; an edited settings file must not reach
        // the prover as a halo2 synthesis error
        let shape = self.circuit.shape;
        let planned = ColumnShape::for_model(
            model,
            shape.row_bytes,
            shape.weight_columns,
            shape.hashed_input,
        )?;
        if planned != shape {
            return differ(
                "circuit.shape",
                format!("{shape:?}"),
                format!("{planned:?}"),
            );
        }
        let want = circuit_settings(model, shape)?;
        if want != self.circuit {
            return differ(
                "circuit",
                format!("{:?}", self.circuit),
                format!("{want:?}"),
            );
        }
        Ok(())
    }

    /// What the public words of this model's proofs hold (from the settings alone).
    pub fn public_layout(&self) -> PublicLayout {
        PublicLayout {
            inputs: self.input_shape.iter().product(),
            outputs: self.output_shape.iter().product(),
            shape: self.circuit.shape,
        }
    }

    /// Reads the public words of a proof back as the float input (or its digest) and output
    /// they encode; `None` if they are not a packing of in-range values.
    pub fn decode_public(&self, words: &[Fr]) -> Option<Decoded> {
        let v = unpack_public(&self.public_layout(), words)?;
        let q = &self.quantization;
        let scale = (1u64 << q.activation_scale_bits) as f64;
        let input = match v.input {
            PublicInput::Codes(u) => DecodedInput::Values(
                u.into_iter()
                    .map(|u| decode_input_code(q.input_range, q.input_bits, u))
                    .collect(),
            ),
            PublicInput::Digest(d) => DecodedInput::Digest(d),
        };
        Some(Decoded {
            input,
            output: v.output.into_iter().map(|v| v as f64 / scale).collect(),
        })
    }

    /// The input codes of readable input values, each of which must be exactly the value of a
    /// code (as the proof files list them); the error names the first that is not.
    pub fn input_codes(&self, input: &[f64]) -> Result<Vec<i64>, String> {
        let q = &self.quantization;
        let n: usize = self.input_shape.iter().product();
        if input.len() != n {
            return Err(format!("{} input values, the model has {n}", input.len()));
        }
        input
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let u = encode_input_code(q.input_range, q.input_bits, v);
                if decode_input_code(q.input_range, q.input_bits, u) == v {
                    Ok(u)
                } else {
                    Err(format!(
                        "input value {i} = {v} is not the value of an input code"
                    ))
                }
            })
            .collect()
    }

    /// SHA-256 of this file's canonical JSON; proofs and keys record it.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(
            serde_json::to_vec(self).expect("settings serialize"),
        ))
    }
}

impl CompiledModel {
    pub fn from_json(text: &str) -> Result<Self, CompileError> {
        let c: CompiledModel = serde_json::from_str(text).map_err(|e| CompileError::Format {
            what: "compiled model",
            detail: e.to_string(),
        })?;
        if c.format != COMPILED_FORMAT || c.version != FORMAT_VERSION {
            return Err(CompileError::Format {
                what: "compiled model",
                detail: format!("format `{}` version {}", c.format, c.version),
            });
        }
        c.model.validate()?;
        Ok(c)
    }
}

/// Compiles a float graph: quantizes it, plans the circuit and writes down every choice.
pub fn compile_graph(
    graph: &Graph,
    model_name: &str,
    onnx_sha256: &str,
    opts: &QuantOptions,
    plan_opts: &PlanOptions,
) -> Result<(Settings, CompiledModel), CompileError> {
    if !graph.ops.iter().any(|op| {
        matches!(
            op,
            crate::graph::Op::Dense { .. }
                | crate::graph::Op::Relu { .. }
                | crate::graph::Op::Elementwise { .. }
                | crate::graph::Op::Product { .. }
                | crate::graph::Op::MatMul { .. }
        )
    }) {
        return Err(CompileError::Structure {
            node: "graph".into(),
            detail: "the model computes nothing the circuit could prove (no layer)".into(),
        });
    }
    let model = QuantizedModel::from_graph(graph, opts)?;
    model.validate()?;
    let Plan { shape, k, .. } = plan(&model, plan_opts.max_weight_columns, plan_opts.hashed_input)?;
    debug_assert_eq!(k, count_rows(&model, shape)?.k());
    if k > crate::circuit::MAX_K {
        return Err(CompileError::Structure {
            node: "graph".into(),
            detail: format!(
                "the circuit needs 2^{k} rows, more than the supported 2^{}",
                crate::circuit::MAX_K
            ),
        });
    }
    let settings = Settings {
        format: SETTINGS_FORMAT.into(),
        version: FORMAT_VERSION,
        model_name: model_name.into(),
        onnx_sha256: onnx_sha256.into(),
        input_shape: model.input_shape.clone(),
        output_shape: model.output_shape.clone(),
        quantization: QuantSettings {
            scheme: QUANT_SCHEME.into(),
            activation_scale_bits: opts.activation_scale_bits,
            weight_precision_bits: opts.weight_precision_bits,
            input_range: model.input_range,
            input_bits: model.input_bits,
            layers: layer_settings(&model),
        },
        circuit: circuit_settings(&model, shape)?,
        model_sha256: model.sha256(),
    };
    Ok((
        settings,
        CompiledModel {
            format: COMPILED_FORMAT.into(),
            version: FORMAT_VERSION,
            model,
        },
    ))
}

/// The per-layer records of a model.
fn layer_settings(model: &QuantizedModel) -> Vec<LayerSettings> {
    model
        .layers
        .iter()
        .map(|l| match l {
            QLayer::Dense {
                node,
                shift,
                relu,
                out_bits,
                ..
            } => LayerSettings {
                node: node.clone(),
                // `relu` says whether a ReLU follows; a lookup names its function
                op: if *relu { "dense".into() } else { l.kind() },
                weight_scale_bits: *shift,
                out_bits: *out_bits,
                relu: *relu,
            },
            QLayer::Relu { node, out_bits, .. } => LayerSettings {
                node: node.clone(),
                op: "relu".into(),
                weight_scale_bits: 0,
                out_bits: *out_bits,
                relu: true,
            },
            QLayer::Product {
                node,
                shift,
                out_bits,
                ..
            } => LayerSettings {
                node: node.clone(),
                op: "product".into(),
                weight_scale_bits: *shift,
                out_bits: *out_bits,
                relu: false,
            },
            QLayer::MatMul {
                node,
                shift,
                out_bits,
                ..
            } => LayerSettings {
                node: node.clone(),
                op: "matmul".into(),
                weight_scale_bits: *shift,
                out_bits: *out_bits,
                relu: false,
            },
        })
        .collect()
}

/// The circuit record of a model with a shape (`k` is the smallest that fits its rows, as
/// the planner takes it).
fn circuit_settings(
    model: &QuantizedModel,
    shape: ColumnShape,
) -> Result<CircuitSettings, CompileError> {
    let rows = count_rows(model, shape)?;
    Ok(CircuitSettings {
        k: rows.k(),
        shape,
        advice_columns: shape.advice_columns(),
        fixed_columns: shape.fixed_columns(),
        rows_used: rows.rows(),
        num_instances: rows.instances,
        macs: model.macs(),
    })
}

/// SHA-256 of a file's bytes in hex, as `onnx_sha256` records it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compiles an ONNX file.
pub fn compile_model(
    path: &Path,
    opts: &QuantOptions,
    plan_opts: &PlanOptions,
) -> Result<(Settings, CompiledModel), CompileError> {
    let bytes = std::fs::read(path).map_err(|e| CompileError::Load {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let graph = crate::import::graph_from_onnx_bytes(&bytes, path)?;
    compile_graph(
        &graph,
        &model_name_of(path),
        &sha256_hex(&bytes),
        opts,
        plan_opts,
    )
}

/// The name settings give a model: the file's stem, or its folder's name for `model.onnx`.
pub fn model_name_of(path: &Path) -> String {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    if name == "model" {
        path.parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or(name)
    } else {
        name
    }
}
