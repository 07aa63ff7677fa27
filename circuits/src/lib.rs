//! VeriML circuits: ONNX import, fixed-point quantization and the halo2 circuit that proves a
//! quantized forward pass.
//!
//! The pipeline is [`import::load_onnx`] (ONNX to [`graph::Graph`]), then
//! [`quantize::QuantizedModel::from_graph`], then [`circuit::plan`] and
//! [`circuit::ModelCircuit`]. [`settings::Settings`] records every choice made on the way.
#![forbid(unsafe_code)]

pub mod calibrate;
pub mod circuit;
pub mod error;
pub mod graph;
pub mod import;
pub mod input;
pub mod quantize;
pub mod settings;

pub use circuit::{ColumnShape, ModelCircuit, Plan};
pub use error::CompileError;
pub use graph::Graph;
pub use quantize::{QuantOptions, QuantizedModel};
pub use settings::{compile_model, CompiledModel, Settings};

/// The field and curve the circuits are built over (BN254), re-exported for the prover.
pub use halo2_proofs;
