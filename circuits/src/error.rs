//! Typed errors of the model compiler and the circuit builder.

use std::path::PathBuf;

/// Everything that can go wrong while turning an ONNX file into a circuit.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The file could not be read or parsed as ONNX.
    #[error("cannot load ONNX model {path}: {reason}")]
    Load { path: PathBuf, reason: String },

    /// The model uses an operation this compiler does not support yet.
    #[error("unsupported operation `{op}` at node `{node}`: {needed}")]
    UnsupportedOp {
        op: String,
        node: String,
        needed: String,
    },

    /// A tensor shape is not fully known at compile time.
    #[error("dynamic or unknown shape at node `{node}`: {detail}; export the model with a fixed batch size of 1 and fixed input dimensions")]
    DynamicShape { node: String, detail: String },

    /// The graph is structurally outside what the compiler handles (several inputs, branches...).
    #[error("unsupported model structure at node `{node}`: {detail}")]
    Structure { node: String, detail: String },

    /// A weight, bias or activation does not fit the fixed-point format chosen.
    #[error("quantization failed at layer {layer}: {detail}")]
    Quantization { layer: usize, detail: String },

    /// Input data does not match what the compiled model expects.
    #[error("bad input: {0}")]
    Input(String),

    /// A settings file and the compiled model disagree (an edited or swapped file).
    #[error("the settings do not match the compiled model: `{field}` is {settings} in the settings but {model} in the compiled model")]
    Mismatch {
        field: String,
        settings: String,
        model: String,
    },

    /// A settings or compiled-model file is malformed or from an unsupported version.
    #[error("bad {what} file: {detail}")]
    Format { what: &'static str, detail: String },
}
