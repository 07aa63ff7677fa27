//! ONNX import and quantization against the float reference outputs of the fixture models.

mod common;
use common::*;
use std::path::Path;
use veriml_circuits::{import, CompileError};

/// Largest absolute error of the dequantized circuit output over the 64 samples, and top-1
/// agreement with the float model.
fn accuracy(model: &str) -> (f64, usize, usize) {
    accuracy_with(model, &opts())
}

fn accuracy_with(model: &str, o: &veriml_circuits::QuantOptions) -> (f64, usize, usize) {
    let (_, compiled) =
        veriml_circuits::compile_model(&fixture(model, "model.onnx"), o, &Default::default())
            .unwrap();
    let q = &compiled.model;
    let s = samples(model);
    let (mut max_err, mut agree) = (0f64, 0);
    for (x, want) in s.inputs.iter().zip(&s.float_outputs) {
        let got: Vec<f64> = q
            .forward(&q.quantize_input(x).unwrap())
            .into_iter()
            .map(|v| q.dequantize(v))
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            max_err = max_err.max((g - w).abs());
        }
        agree += usize::from(argmax(&got) == argmax(want));
    }
    println!(
        "{model}: max abs error {max_err:.6}, top-1 agreement {agree}/{}",
        s.inputs.len()
    );
    (max_err, agree, s.inputs.len())
}

#[test]
fn import_matches_onnx_float_outputs() {
    // the imported float graph reproduces the ONNX runtime's outputs (tract vs PyTorch export)
    for model in ["tiny_mlp", "digits_mlp", "mnist_mlp"] {
        let g = import::load_onnx(&fixture(model, "model.onnx")).unwrap();
        let s = samples(model);
        for (x, want) in s.inputs.iter().zip(&s.float_outputs).take(8) {
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let got = g.forward(&xf);
            for (g, w) in got.iter().zip(want) {
                assert!((*g as f64 - w).abs() < 1e-4, "{model}: {g} vs {w}");
            }
        }
    }
}

/// Convolutions (strided, padded, dilated, depthwise), average and global average pooling,
/// reflect padding and batch normalization are folded into dense layers, max pooling and the
/// piecewise-linear activations (LeakyRelu, Clip, HardSigmoid) written with ReLUs: the imported float
/// graph reproduces ONNX's reference evaluator (conv zoo, `scripts/conv_zoo.py`) and PyTorch
/// (lenet28), and the quantized model stays close with the same top-1 on every sample.
#[test]
fn convolutions_and_pooling_match_the_reference_outputs() {
    // largest output error allowed: EZKL 23.0.5's at its default calibration for digits_cnn
    for (model, bound) in [
        ("conv_zoo/strided_dilated", 2e-4),
        ("conv_zoo/depthwise_bn", 2e-4),
        ("conv_zoo/maxpool", 2e-4),
        ("conv_zoo/piecewise", 2e-4),
        ("conv_zoo/conv1d", 5e-4),
        ("conv_zoo/grouped", 5e-4),
        ("conv_zoo/input_maxpool", 2e-4),
        ("conv_zoo/resnet_block", 0.0064),
        ("conv_zoo/transpose_relu", 0.0064),
        ("lenet28", 2e-4),
        ("digits_cnn", 0.0064),
    ] {
        let g = import::load_onnx(&fixture(model, "model.onnx")).unwrap();
        let s = samples(model);
        for (x, want) in s.inputs.iter().zip(&s.float_outputs).take(4) {
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            for (g, w) in g.forward(&xf).iter().zip(want) {
                assert!((*g as f64 - w).abs() < 1e-4, "{model}: {g} vs {w}");
            }
        }
        let (err, agree, n) = accuracy(model);
        assert_eq!(agree, n, "{model}");
        assert!(err < bound, "{model}: max abs error {err}");
    }
}

/// Non-linear functions by table lookup: Sigmoid, Tanh, GELU written out (`x·½·(1 + erf(x/√2))`,
/// the activation read twice), HardSwish, Exp, SiLU (`x·sigmoid(x)`) after a convolution and
/// Softplus. The imported graph reproduces ONNX's reference evaluator, each function is one
/// lookup layer (the whole GELU pattern one table), and the quantized model stays within the
/// accuracy EZKL reaches on digits_cnn.
#[test]
fn nonlinear_functions_match_the_reference_outputs() {
    for (model, tables) in [("conv_zoo/activations", 5), ("conv_zoo/silu_cnn", 2)] {
        let g = import::load_onnx(&fixture(model, "model.onnx")).unwrap();
        let s = samples(model);
        for (x, want) in s.inputs.iter().zip(&s.float_outputs) {
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            for (g, w) in g.forward(&xf).iter().zip(want) {
                assert!((*g as f64 - w).abs() < 1e-4, "{model}: {g} vs {w}");
            }
        }
        let (_, compiled) = compile(model);
        let lookups: Vec<&str> = compiled
            .model
            .layers
            .iter()
            .filter_map(|l| match l {
                veriml_circuits::quantize::QLayer::Dense {
                    lookup: Some(t), ..
                } => {
                    println!(
                        "  {}: grid 2^-{}, {} entries from {}",
                        t.label,
                        14 - t.grid_shift as i32,
                        t.table.len(),
                        t.z_min
                    );
                    Some(t.label.as_str())
                }
                _ => None,
            })
            .collect();
        println!("{model}: tables {lookups:?}");
        assert_eq!(lookups.len(), tables, "{model}: {lookups:?}");
        // a finer table is more accurate
        let (coarse, agree, n) = accuracy(model);
        assert_eq!(agree, n, "{model}");
        let fine = veriml_circuits::QuantOptions {
            lookup_bits: 16,
            ..opts()
        };
        let (err, agree, n) = accuracy_with(model, &fine);
        assert_eq!(agree, n, "{model}");
        assert!(err < coarse, "{model}: {err} vs {coarse}");
        assert!(err < 0.0064, "{model}: max abs error {err}");
    }
}

#[test]
fn digits_mlp_quantized_agrees_with_float_on_all_samples() {
    let (err, agree, n) = accuracy("digits_mlp");
    assert_eq!(agree, n, "top-1 must agree on every sample");
    // EZKL 23.0.5 at its default calibration: largest absolute error 0.0014
    assert!(err < 0.0014, "max abs error {err}");
}

#[test]
fn tiny_and_mnist_quantized_errors_are_small() {
    for model in ["tiny_mlp", "mnist_mlp"] {
        let (err, _, _) = accuracy(model);
        assert!(err < 0.0005, "{model}: max abs error {err}");
    }
}

#[test]
fn unsupported_op_is_a_typed_error_naming_the_op_and_node() {
    let e = veriml_circuits::compile_model(
        &fixture("conv_zoo/argmax", "model.onnx"),
        &opts(),
        &Default::default(),
    )
    .unwrap_err();
    match &e {
        CompileError::UnsupportedOp { op, node, needed } => {
            assert!(op.contains("ArgMax"), "op {op}");
            assert!(node.contains("argmax1"), "node {node}");
            assert!(needed.contains("Gemm"));
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
    assert!(e.to_string().contains("ArgMax"));
}

#[test]
fn malformed_and_missing_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"this is not protobuf").unwrap();
    let e = import::load_onnx(&bad).unwrap_err();
    assert!(matches!(e, CompileError::Load { .. }), "{e:?}");
    assert!(e.to_string().contains("bad.onnx"));
    let e = import::load_onnx(Path::new("/nonexistent/model.onnx")).unwrap_err();
    assert!(matches!(e, CompileError::Load { .. }));
    // a truncated real model
    let bytes = std::fs::read(fixture("tiny_mlp", "model.onnx")).unwrap();
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(import::load_onnx(&cut).is_err());
}

#[test]
fn settings_record_model_hash_and_roundtrip() {
    let (settings, compiled) = compile("tiny_mlp");
    assert_eq!(settings.model_sha256, compiled.model.sha256());
    let text = serde_json::to_string(&settings).unwrap();
    let back = veriml_circuits::Settings::from_json(&text).unwrap();
    assert_eq!(back, settings);
    back.check_model(&compiled.model).unwrap();
    let mut other = compiled.model.clone();
    if let veriml_circuits::quantize::QLayer::Dense { weights, .. } = &mut other.layers[0] {
        weights.dense_mut().unwrap()[0] += 1;
    }
    assert!(back.check_model(&other).is_err());
    // an edited circuit shape is refused by name, not left to fail inside halo2
    let mut edited = back.clone();
    edited.circuit.shape.weight_columns += 1;
    let e = edited.check_model(&compiled.model).unwrap_err();
    assert!(e.to_string().contains("`circuit.shape`"), "{e}");
    let current = format!("\"version\":{}", veriml_circuits::settings::FORMAT_VERSION);
    assert!(text.contains(&current));
    let wrong_version = text.replace(&current, "\"version\":99");
    assert!(veriml_circuits::Settings::from_json(&wrong_version).is_err());
}

#[test]
fn edited_compiled_model_is_refused_not_a_panic() {
    let (_, compiled) = compile("tiny_mlp");
    let mut v = serde_json::to_value(&compiled).unwrap();
    // drop one weight: the shapes no longer agree
    v["model"]["layers"][0]["weights"]
        .as_array_mut()
        .unwrap()
        .pop();
    let e = veriml_circuits::CompiledModel::from_json(&v.to_string()).unwrap_err();
    assert!(e.to_string().contains("weight or bias count"), "{e}");
    let mut v = serde_json::to_value(&compiled).unwrap();
    v["model"]["layers"][1]["inputs"] = serde_json::json!(31);
    assert!(veriml_circuits::CompiledModel::from_json(&v.to_string()).is_err());
    assert!(veriml_circuits::CompiledModel::from_json("{}").is_err());
}

/// Finding: the hash covered only the layers, so a compiled model with another input minimum,
/// scale or shape passed `check_model` and decoded the words differently from the keys. Every
/// field is hashed now, and every field the settings repeat is compared by name.
#[test]
fn every_field_that_shapes_the_statement_is_checked() {
    use veriml_circuits::CompileError;
    let (settings, compiled) = compile("tiny_mlp");
    let model = &compiled.model;
    settings.check_model(model).unwrap();
    let field_of = |e: CompileError| match e {
        CompileError::Mismatch { field, .. } => field,
        other => panic!("not a mismatch: {other}"),
    };
    // the compiled model edited (the layers untouched): its hash no longer matches
    type Edit = Box<dyn Fn(&mut veriml_circuits::QuantizedModel)>;
    let edits: [(&str, Edit); 5] = [
        ("input range", Box::new(|m| m.input_range.0 = -0.5)),
        ("input code width", Box::new(|m| m.input_bits = 32)),
        (
            "activation scale",
            Box::new(|m| m.activation_scale_bits += 1),
        ),
        ("input shape", Box::new(|m| m.input_shape = vec![16, 1])),
        ("output shape", Box::new(|m| m.output_shape = vec![2, 2])),
    ];
    for (what, edit) in &edits {
        let mut m = model.clone();
        edit(&mut m);
        assert_eq!(m.layers, model.layers);
        let e = settings.check_model(&m).unwrap_err();
        assert_eq!(field_of(e), "model_sha256", "{what}");
    }
    // the settings edited in a field a verifier decodes words with: named
    let mut s = settings.clone();
    s.quantization.input_range = (0.0, 2.0);
    assert_eq!(
        field_of(s.check_model(model).unwrap_err()),
        "quantization.input_range"
    );
    let mut s = settings.clone();
    s.quantization.activation_scale_bits = 12;
    assert_eq!(
        field_of(s.check_model(model).unwrap_err()),
        "quantization.activation_scale_bits"
    );
    let mut s = settings.clone();
    s.quantization.input_bits = 32;
    assert_eq!(
        field_of(s.check_model(model).unwrap_err()),
        "quantization.input_bits"
    );
    let mut s = settings.clone();
    s.output_shape = vec![4];
    assert_eq!(field_of(s.check_model(model).unwrap_err()), "output_shape");
    let mut s = settings.clone();
    s.quantization.layers[0].out_bits += 1;
    assert_eq!(
        field_of(s.check_model(model).unwrap_err()),
        "quantization.layers"
    );
    let mut s = settings.clone();
    s.circuit.num_instances += 1;
    assert_eq!(field_of(s.check_model(model).unwrap_err()), "circuit");
    let mut s = settings.clone();
    s.circuit.k += 1;
    assert_eq!(field_of(s.check_model(model).unwrap_err()), "circuit");
}

/// Calibration compiles each candidate quantization, measures it on the samples and picks the
/// smallest circuit agreeing on every sample (`resources`) or the most accurate (`accuracy`);
/// a sample outside the declared range is a typed error naming it.
#[test]
fn calibration_picks_for_its_target() {
    use veriml_circuits::calibrate::{calibrate, Target};
    let model = "conv_zoo/activations";
    let g = import::load_onnx(&fixture(model, "model.onnx")).unwrap();
    let s = samples(model);
    let run = |target| {
        calibrate(
            &g,
            "activations",
            "00",
            &opts(),
            &Default::default(),
            &s.inputs,
            target,
        )
        .unwrap()
    };
    let small = run(Target::Resources);
    let fine = run(Target::Accuracy);
    let c = &small.candidates;
    assert!(c.len() >= 12, "{} candidates", c.len());
    let min_k = c.iter().map(|c| c.k).min().unwrap();
    let best = c.iter().map(|c| c.max_abs_error).fold(f64::MAX, f64::min);
    let chosen = &c[small.chosen];
    assert_eq!(chosen.k, min_k);
    assert_eq!(chosen.top1_agree, s.inputs.len());
    assert_eq!(small.settings.circuit.k, chosen.k);
    assert_eq!(fine.candidates[fine.chosen].max_abs_error, best);
    assert!(fine.settings.circuit.k > small.settings.circuit.k);
    // what was measured is what the chosen model computes
    let q = &fine.compiled.model;
    let mut err = 0f64;
    for (x, want) in s.inputs.iter().zip(&s.float_outputs) {
        for (g, w) in q.forward(&q.quantize_input(x).unwrap()).iter().zip(want) {
            err = err.max((q.dequantize(*g) - w).abs());
        }
    }
    assert!((err - best).abs() < 1e-4, "{err} vs {best}");
    let mut outside = s.inputs.clone();
    outside[1][0] = 2.0;
    let e = calibrate(
        &g,
        "activations",
        "00",
        &opts(),
        &Default::default(),
        &outside,
        Target::Resources,
    )
    .unwrap_err();
    assert!(e.to_string().contains("outside the range"), "{e}");
    assert!(calibrate(
        &g,
        "activations",
        "00",
        &opts(),
        &Default::default(),
        &[],
        Target::Accuracy
    )
    .is_err());
}
