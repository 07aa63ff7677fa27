//! The `veriml` binary, as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../testsupport/anvil.rs"]
mod anvil;

fn veriml(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veriml"))
        .args(args)
        .output()
        .expect("runs veriml")
}

fn fixture(model: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(model)
        .join(file)
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn float_output(model: &str) -> Vec<f64> {
    // samples.json's first sample is input.json's input
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(model, "samples.json")).unwrap())
            .unwrap();
    veriml_circuits::input::flatten_numbers(&v["float_outputs"][0]).unwrap()
}

#[test]
fn shared_mlps_compile_prove_and_verify_from_the_cli() {
    for model in ["tiny_mlp", "digits_mlp", "mnist_mlp"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let onnx = fixture(model, "model.onnx");
        let input = fixture(model, "input.json");
        let c = json(&veriml(&[
            "--json",
            "compile",
            s(&onnx),
            "-d",
            s(d),
            "--input-range",
            "0,1",
        ]));
        assert!(c["k"].as_u64().unwrap() <= 14, "{model}: {c}");
        let st = json(&veriml(&[
            "--json",
            "setup",
            "-d",
            s(d),
            "--insecure-dev-srs",
        ]));
        assert_eq!(st["insecure_srs"], true);
        let p = json(&veriml(&[
            "--json",
            "prove",
            "-d",
            s(d),
            "--input",
            s(&input),
        ]));
        // keys from a development SRS are an error unless accepted explicitly
        let out = veriml(&["verify", "-d", s(d)]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("INSECURE") && err.contains("--allow-insecure-srs"),
            "{err}"
        );
        let v = json(&veriml(&[
            "--json",
            "--allow-insecure-srs",
            "verify",
            "-d",
            s(d),
        ]));
        assert_eq!(v["verified"], true);
        assert_eq!(v["output"], p["output"]);
        // the proven output, dequantized, is close to the float model's
        let got: Vec<f64> = p["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let want = float_output(model);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        println!("{model}: max abs error of the proven output {err:.6}");
        assert!(err < 0.0014, "{model}: proven output off by {err}");
        // per layer: the float model's activations against the quantized ones; the last layer
        // is the output, whose error the samples' float outputs also measure
        let samples = fixture(model, "samples.json");
        let a = json(&veriml(&[
            "--json",
            "accuracy",
            "-d",
            s(d),
            "-s",
            s(&samples),
            "--per-layer",
            "--onnx",
            s(&onnx),
        ]));
        let layers = a["layers"].as_array().unwrap();
        let depth = if model == "tiny_mlp" { 3 } else { 2 };
        assert_eq!(layers.len(), depth, "{model}: {a}");
        for l in layers {
            let rel = l["relative_error"].as_f64().unwrap();
            assert!(rel > 0.0 && rel < 1e-3, "{model}: {l}");
            assert!(l["mean_abs_error"].as_f64().unwrap() <= l["max_abs_error"].as_f64().unwrap());
        }
        let last = layers[depth - 1]["max_abs_error"].as_f64().unwrap();
        let overall = a["max_abs_error"].as_f64().unwrap();
        assert!(
            (last - overall).abs() < 1e-5,
            "{model}: {last} vs {overall}"
        );
        assert_eq!(a["top1_agreement"], 64);
        let m = json(&veriml(&[
            "--json",
            "mock",
            "-d",
            s(d),
            "--input",
            s(&input),
        ]));
        assert_eq!(m["satisfied"], true);
        // tamper with the proof file: verification fails with a non-zero exit
        let pf = d.join("proof.json");
        let mut proof: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&pf).unwrap()).unwrap();
        let last = proof["instances"].as_array().unwrap().len() - 1;
        proof["instances"][last] = serde_json::Value::String("00".repeat(31) + "05");
        std::fs::write(d.join("bad.json"), proof.to_string()).unwrap();
        let out = veriml(&[
            "verify",
            "--allow-insecure-srs",
            "-d",
            s(d),
            "--proof",
            s(&d.join("bad.json")),
        ]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("rejected"));
    }
}

#[test]
fn per_layer_accuracy_needs_the_folders_own_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json(&veriml(&[
        "--json",
        "compile",
        s(&fixture("tiny_mlp", "model.onnx")),
        "-d",
        s(d),
        "--input-range",
        "0,1",
    ]));
    let samples = fixture("tiny_mlp", "samples.json");
    let out = veriml(&[
        "accuracy",
        "-d",
        s(d),
        "-s",
        s(&samples),
        "--per-layer",
        "--onnx",
        s(&fixture("digits_mlp", "model.onnx")),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not the ONNX file this folder was compiled from"),
        "{err}"
    );
    // the text report has a row per layer
    let out = veriml(&[
        "accuracy",
        "-d",
        s(d),
        "-s",
        s(&samples),
        "--per-layer",
        "--onnx",
        s(&fixture("tiny_mlp", "model.onnx")),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("max abs err") && text.contains("dense+relu"),
        "{text}"
    );
}

#[test]
fn unsupported_op_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = veriml(&[
        "compile",
        s(&fixture("conv_zoo/argmax", "model.onnx")),
        "-d",
        s(dir.path()),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unsupported operation") && err.contains("ArgMax"),
        "{err}"
    );
    let out = veriml(&[
        "--json",
        "compile",
        "/nonexistent.onnx",
        "-d",
        s(dir.path()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("nonexistent.onnx"));
}

/// The shared CNNs: lenet28 (Conv, ReLU, AveragePool, Gemm; 784 inputs) and digits_cnn (two
/// convolutions, max and average pooling): convolutions are folded into paged dense layers and
/// max pooling into exact ReLU layers; with few weight columns their verifiers fit EIP-170, and
/// the proofs verify natively and in the EVM.
#[test]
fn shared_cnns_prove_and_verify_on_chain() {
    for (model, columns) in [("lenet28", "8"), ("digits_cnn", "16")] {
        let dir = tempfile::tempdir().unwrap();
        let [c, p, e, g] = paged_through_the_evm(dir.path(), model, columns);
        println!(
            "{model}: {c}\nprove {}, verifier {e}, EVM verify gas {}",
            p["prove_seconds"], g["gas_used"]
        );
    }
}

/// Non-linear functions by table lookup (Sigmoid, Tanh, GELU, HardSwish, Exp; SiLU after a
/// convolution, Softplus) and branches (a ResNet block's skip connection, concatenated heads):
/// paged, proven, verified natively and in the EVM; `accuracy --per-layer` names each lookup
/// layer's function.
#[test]
fn activation_and_residual_models_prove_and_verify_on_chain() {
    for model in [
        "conv_zoo/activations",
        "conv_zoo/silu_cnn",
        "conv_zoo/resnet_block",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let [c, p, e, g] = paged_through_the_evm(dir.path(), model, "2");
        println!(
            "{model}: {c}\nprove {}, verifier {e}, EVM verify gas {}",
            p["prove_seconds"], g["gas_used"]
        );
        let a = json(&veriml(&[
            "--json",
            "accuracy",
            "-d",
            s(dir.path()),
            "--samples",
            s(&fixture(model, "samples.json")),
            "--per-layer",
            "--onnx",
            s(&fixture(model, "model.onnx")),
        ]));
        let text = a.to_string();
        assert!(
            ["dense+Sigmoid", "dense+Silu", "dense+Tanh"]
                .iter()
                .any(|k| text.contains(k)),
            "{text}"
        );
    }
}

/// The shared transformer block (LayerNorm, 2-head softmax attention, GELU MLP) with the
/// defaults, and products of two activations: proven, verified natively and in the EVM within
/// EIP-170; digits_attn agrees with the float model's top-1 on all 64 samples and its largest
/// error is below EZKL 23.0.5's (0.050).
#[test]
fn transformer_and_products_prove_and_verify_on_chain() {
    let dir = tempfile::tempdir().unwrap();
    let [c, p, _, e, g] = through_the_evm(dir.path(), "digits_attn", &[]);
    println!(
        "digits_attn: {c}
prove {}, verifier {e}, EVM verify gas {}",
        p["prove_seconds"], g["gas_used"]
    );
    let a = json(&veriml(&[
        "--json",
        "accuracy",
        "-d",
        s(dir.path()),
        "--samples",
        s(&fixture("digits_attn", "samples.json")),
    ]));
    assert_eq!(a["samples"], 64, "{a}");
    assert_eq!(a["top1_agreement"], 64, "{a}");
    assert!(a["max_abs_error"].as_f64().unwrap() < 0.05, "{a}");
    let dir = tempfile::tempdir().unwrap();
    let [c, _, _, e] = paged_through_the_evm(dir.path(), "conv_zoo/products", "2");
    println!(
        "conv_zoo/products: {c}
verifier {e}"
    );
}

/// `calibrate` writes the chosen compilation (which then proves) and reports every candidate.
#[test]
fn calibrate_writes_a_provable_compilation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = "conv_zoo/silu_cnn";
    let c = json(&veriml(&[
        "--json",
        "calibrate",
        s(&fixture(model, "model.onnx")),
        "-d",
        s(d),
        "--samples",
        s(&fixture(model, "samples.json")),
        "--input-range",
        "0,1",
        "--target",
        "accuracy",
    ]));
    let cands = c["candidates"].as_array().unwrap();
    let chosen = &cands[c["chosen"].as_u64().unwrap() as usize];
    assert_eq!(chosen["k"], c["k"]);
    assert!(
        cands
            .iter()
            .all(|x| x["max_abs_error"].as_f64().unwrap()
                >= chosen["max_abs_error"].as_f64().unwrap())
    );
    json(&veriml(&[
        "--json",
        "mock",
        "-d",
        s(d),
        "--input",
        s(&fixture(model, "input.json")),
    ]));
}

/// Compiles a fixture model into `d` with at most `columns` weight columns (asserted to page the
/// circuit) and takes it through the EVM ([`through_the_evm`]). Returns the JSON answers of
/// compile, prove, create-evm-verifier and verify-evm.
fn paged_through_the_evm(d: &Path, model: &str, columns: &str) -> [serde_json::Value; 4] {
    let [c, p, _, e, g] = through_the_evm(d, model, &["--max-weight-columns", columns]);
    assert!(c["pages"].as_u64().unwrap() > 1, "{c}");
    [c, p, e, g]
}

/// Compiles a fixture model into `d` (inputs in [0, 1], then `flags`), sets it up with a
/// development SRS, proves its input.json and verifies the proof natively (same output) and in
/// revm (verifier within EIP-170). Returns the JSON answers of compile, prove, verify,
/// create-evm-verifier and verify-evm.
fn through_the_evm(d: &Path, model: &str, flags: &[&str]) -> [serde_json::Value; 5] {
    let solc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/solc");
    let onnx = fixture(model, "model.onnx");
    let mut compile = vec![
        "--json",
        "compile",
        s(&onnx),
        "-d",
        s(d),
        "--input-range",
        "0,1",
    ];
    compile.extend_from_slice(flags);
    let c = json(&veriml(&compile));
    json(&veriml(&[
        "--json",
        "setup",
        "-d",
        s(d),
        "--insecure-dev-srs",
    ]));
    let input = fixture(model, "input.json");
    let p = json(&veriml(&[
        "--json",
        "prove",
        "-d",
        s(d),
        "--input",
        s(&input),
    ]));
    let v = json(&veriml(&[
        "--json",
        "--allow-insecure-srs",
        "verify",
        "-d",
        s(d),
    ]));
    assert_eq!(v["output"], p["output"]);
    let e = json(&veriml(&[
        "--json",
        "--allow-insecure-srs",
        "create-evm-verifier",
        "-d",
        s(d),
        "--solc",
        s(&solc),
    ]));
    assert!(e["runtime_bytes"].as_u64().unwrap() <= 24_576, "{e}");
    let g = json(&veriml(&[
        "--json",
        "--allow-insecure-srs",
        "verify-evm",
        "-d",
        s(d),
    ]));
    assert_eq!(g["verified"], true);
    [c, p, v, e, g]
}

/// A weight-column cap below the model's slots pages the circuit instead of refusing it: the
/// paged circuit proves and verifies natively and in the EVM.
#[test]
fn a_column_cap_pages_the_circuit_and_it_verifies_on_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let [c, _, _, e] = paged_through_the_evm(d, "tiny_mlp", "6");
    assert!(c["weight_columns"].as_u64().unwrap() <= 6, "{c}");
    println!("paged tiny_mlp: {c}\nEVM verify gas {}", e["gas_used"]);
    let mut proof: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("proof.json")).unwrap()).unwrap();
    let mut b = hex::decode(proof["proof"].as_str().unwrap()).unwrap();
    b[200] ^= 1;
    proof["proof"] = serde_json::Value::String(hex::encode(b));
    std::fs::write(d.join("bad.json"), proof.to_string()).unwrap();
    for cmd in ["verify", "verify-evm"] {
        let out = veriml(&[
            cmd,
            "--allow-insecure-srs",
            "-d",
            s(d),
            "--proof",
            s(&d.join("bad.json")),
        ]);
        assert!(!out.status.success(), "{cmd} accepted a flipped byte");
    }
}

#[test]
fn setup_without_an_srs_choice_is_refused_and_bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json(&veriml(&[
        "--json",
        "compile",
        s(&fixture("tiny_mlp", "model.onnx")),
        "-d",
        s(d),
        "--input-range",
        "0,1",
    ]));
    let out = veriml(&["setup", "-d", s(d)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-dev-srs"));
    std::fs::write(d.join("in.json"), r#"{"input_data": [[1, 2, "x"]]}"#).unwrap();
    let out = veriml(&["mock", "-d", s(d), "--input", s(&d.join("in.json"))]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected numbers"));
    std::fs::write(d.join("in.json"), r#"{"input_data": [[0.5, 0.5]]}"#).unwrap();
    let out = veriml(&["mock", "-d", s(d), "--input", s(&d.join("in.json"))]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected 16 input values"));
}

#[test]
fn example_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let ex = dir.path().join("ex");
    let v = json(&veriml(&["--json", "example", "-d", s(&ex)]));
    assert_eq!(v["verify"]["verified"], true);
    assert!(v["predicted_class"].as_u64().unwrap() < 10);
    models_catalogue(dir.path(), &ex);
}

/// `veriml models`: the example's folder as an open model and a closed model, listed, shown,
/// removed; a folder changed after it was added is flagged; bad requests are named.
fn models_catalogue(d: &Path, ex: &Path) {
    let cat = d.join("models.json");
    let models = |args: &[&str]| {
        let mut all = vec!["--json", "models", "--catalogue", s(&cat)];
        all.extend_from_slice(args);
        veriml(&all)
    };
    let added = json(&models(&["add", "digits", "--dir", s(ex)]));
    assert_eq!(added["entry"]["kind"], "open");
    assert_eq!(added["entry"]["model_name"], "digits_mlp");
    let m = "ab".repeat(48);
    json(&models(&[
        "add",
        "chat",
        "--provider",
        "http://127.0.0.1:9/v1",
        "--provider-model",
        "chat-large",
        "--runner",
        "http://127.0.0.1:8443",
        "--measurement",
        &m,
    ]));
    let list = json(&models(&["list"]));
    let ids: Vec<&String> = list["models"].as_object().unwrap().keys().collect();
    assert_eq!(ids, ["chat", "digits"]);
    assert_eq!(list["models"]["chat"]["measurements"][0], m.as_str());
    let shown = json(&models(&["show", "digits"]));
    assert_eq!(shown["folder_ok"], true);
    // the example's proof as an inference receipt, checked against the catalogue (its keys come
    // from a development SRS: refused unless allowed), and refused once tampered
    let receipt = d.join("receipt.json");
    let proof = ex.join("proof.json");
    let made = json(&models(&[
        "receipt",
        "digits",
        "--proof",
        s(&proof),
        "-o",
        s(&receipt),
    ]));
    assert!(made["output_hash"].as_str().unwrap().starts_with("0x"));
    let check_allowing_insecure = |receipt: &Path| {
        veriml(&[
            "--json",
            "--allow-insecure-srs",
            "models",
            "--catalogue",
            s(&cat),
            "check",
            s(receipt),
        ])
    };
    let checked = json(&check_allowing_insecure(&receipt));
    assert_eq!(checked["checked"], true);
    let out = models(&["check", s(&receipt)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("INSECURE"));
    let mut bad: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&receipt).unwrap()).unwrap();
    bad["output_hash"] = bad["input_hash"].clone();
    let bad_path = d.join("bad_receipt.json");
    std::fs::write(&bad_path, bad.to_string()).unwrap();
    let out = check_allowing_insecure(&bad_path);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("output hash"));
    // refused, by name: a second `digits`, an unknown id, a bad id, an add without a kind, a
    // folder without keys, a short measurement
    for (args, says) in [
        (
            vec!["add", "digits", "--dir", s(ex)],
            "already in the catalogue",
        ),
        (vec!["show", "nope"], "`nope` is not in the catalogue"),
        (vec!["add", "bad id", "--dir", s(ex)], "only letters"),
        (vec!["add", "x"], "give --dir for an open model"),
        (vec!["add", "x", "--dir", s(d)], "settings.json"),
        (
            vec![
                "add",
                "x",
                "--provider",
                "https://p",
                "--provider-model",
                "m",
                "--runner",
                "https://r",
                "--measurement",
                "abcd",
            ],
            "2 bytes, not 48",
        ),
    ] {
        let out = models(&args);
        assert!(!out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(says), "{args:?}: {text}");
    }
    // the folder recompiled with another input range: `show` says it no longer holds the model
    json(&veriml(&[
        "--json",
        "compile",
        s(&ex.join("digits_mlp.onnx")),
        "-d",
        s(ex),
        "--input-range",
        "-1,1",
    ]));
    let shown = json(&models(&["show", "digits"]));
    assert_eq!(shown["folder_ok"], false);
    json(&models(&["remove", "digits"]));
    let list = json(&models(&["list"]));
    assert_eq!(list["models"].as_object().unwrap().len(), 1);
}

#[test]
fn evm_verifier_checks_proofs_in_process_and_on_anvil() {
    let solc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/solc");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = fixture("tiny_mlp", "input.json");
    json(&veriml(&[
        "--json",
        "compile",
        s(&fixture("tiny_mlp", "model.onnx")),
        "-d",
        s(d),
        "--input-range",
        "0,1",
        "--max-weight-columns",
        "16",
    ]));
    json(&veriml(&[
        "--json",
        "setup",
        "-d",
        s(d),
        "--insecure-dev-srs",
    ]));
    json(&veriml(&[
        "--json",
        "prove",
        "-d",
        s(d),
        "--input",
        s(&input),
    ]));
    let out = veriml(&["create-evm-verifier", "-d", s(d), "--solc", s(&solc)]);
    assert!(!out.status.success(), "a development SRS needs consent");
    let c = json(&veriml(&[
        "--json",
        "--allow-insecure-srs",
        "create-evm-verifier",
        "-d",
        s(d),
        "--solc",
        s(&solc),
    ]));
    assert!(c["runtime_bytes"].as_u64().unwrap() <= 24_576);
    let sol = std::fs::read_to_string(d.join("Verifier.sol")).unwrap();
    assert!(sol.starts_with("// GENERATED"));
    let out = veriml(&["verify-evm", "-d", s(d)]);
    assert!(!out.status.success(), "a development SRS needs consent");
    let v = json(&veriml(&[
        "--json",
        "--allow-insecure-srs",
        "verify-evm",
        "-d",
        s(d),
    ]));
    assert_eq!(v["verified"], true);
    assert!(v["gas_used"].as_u64().unwrap() > 100_000);
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("proof.json")).unwrap()).unwrap();
    let tampered = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut proof = original.clone();
        edit(&mut proof);
        let path = d.join(name);
        std::fs::write(&path, proof.to_string()).unwrap();
        path
    };
    // a changed output word (the last public word) is rejected
    let bad_word = tampered("bad_word.json", &|p| {
        let last = p["instances"].as_array().unwrap().len() - 1;
        p["instances"][last] = serde_json::Value::String("00".repeat(31) + "07");
    });
    let evm = |proof: &Path, rpc: Option<&str>| {
        let mut args = vec![
            "verify-evm",
            "--allow-insecure-srs",
            "-d",
            s(d),
            "--proof",
            s(proof),
        ];
        if let Some(url) = rpc {
            args.extend(["--rpc", url, "--private-key", anvil::DEV_KEY]);
        }
        let out = veriml(&args);
        assert!(!out.status.success(), "{} accepted", proof.display());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(evm(&bad_word, None).contains("rejected"));
    // the readable output and input must be what the words prove, as `verify` checks
    let bad_output = tampered("bad_output.json", &|p| {
        p["output"][0] = serde_json::json!(p["output"][0].as_f64().unwrap() + 1.0)
    });
    let bad_input = tampered("bad_input.json", &|p| {
        p["input"][3] = serde_json::json!(p["input"][3].as_f64().unwrap() + 0.5)
    });
    for (path, what) in [
        (&bad_output, "output value 0"),
        (&bad_input, "input value 3"),
    ] {
        let err = evm(path, None);
        assert!(err.contains(what), "{err}");
    }
    // flipped proof bytes, readable values intact: the EVM verifier itself rejects them
    let bad_bytes = tampered("bad_bytes.json", &|p| {
        let mut b = hex::decode(p["proof"].as_str().unwrap()).unwrap();
        b[100] ^= 1;
        p["proof"] = serde_json::Value::String(hex::encode(b));
    });
    assert!(evm(&bad_bytes, None).contains("EVM verifier rejected"));

    // the same on a real node: deploy (with a new registry), then verify by a transaction
    let node = anvil::start(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    let url = node.url.clone();
    let dep = json(&veriml(&[
        "--json",
        "--allow-insecure-srs",
        "deploy",
        "-d",
        s(d),
        "--rpc",
        &url,
        "--private-key",
        anvil::DEV_KEY,
        "--solc",
        s(&solc),
    ]));
    assert_eq!(dep["chain_id"], 84532);
    assert!(dep["verifier_deploy_gas"].as_u64().unwrap() > 1_000_000);
    assert!(d.join("deployment.json").exists());
    let v = json(&veriml(&[
        "--json",
        "--allow-insecure-srs",
        "verify-evm",
        "-d",
        s(d),
        "--rpc",
        &url,
        "--private-key",
        anvil::DEV_KEY,
    ]));
    assert_eq!(v["verified"], true);
    assert!(v["gas_used"].as_u64().unwrap() > 200_000);
    let err = evm(&bad_bytes, Some(&url));
    assert!(err.contains("verifier rejected the proof"), "{err}");
    for (path, what) in [
        (&bad_output, "output value 0"),
        (&bad_input, "input value 3"),
    ] {
        let err = evm(path, Some(&url));
        assert!(err.contains(what), "{err}");
    }
}

#[test]
fn a_hashed_input_proves_and_verifies_on_chain_with_one_input_word() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // digits_mlp: 64 input codes in 5 words (an odd count), 1 output word
    let [c, _, v, _, g] = through_the_evm(d, "digits_mlp", &["--input-visibility", "hashed"]);
    assert_eq!(c["public_inputs"], 2, "{c}");
    assert_eq!(c["input_visibility"], "hashed", "{c}");
    let proof: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("proof.json")).unwrap()).unwrap();
    assert_eq!(v["input_digest"], proof["instances"][0]);
    assert_eq!(proof["instances"].as_array().unwrap().len(), 2);
    println!("hashed digits_mlp: EVM verify gas {}", g["gas_used"]);
    // the readable input changed to another in-range value: it no longer hashes to the digest
    let mut bad = proof.clone();
    let x = bad["input"][10].as_f64().unwrap();
    bad["input"][10] = serde_json::json!(if x > 0.5 { 0.0 } else { 1.0 });
    std::fs::write(d.join("bad_input.json"), bad.to_string()).unwrap();
    // the digest word changed
    let mut word = proof.clone();
    let w = word["instances"][0].as_str().unwrap().to_string();
    let last = if w.ends_with('0') { "1" } else { "0" };
    word["instances"][0] = serde_json::json!(format!("{}{last}", &w[..w.len() - 1]));
    std::fs::write(d.join("bad_word.json"), word.to_string()).unwrap();
    for (file, why) in [
        ("bad_input.json", "does not hash to the proven input digest"),
        ("bad_word.json", ""),
    ] {
        for cmd in ["verify", "verify-evm"] {
            let out = veriml(&[
                cmd,
                "--allow-insecure-srs",
                "-d",
                s(d),
                "--proof",
                s(&d.join(file)),
            ]);
            assert!(!out.status.success(), "{cmd} accepted {file}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(why), "{cmd} {file}: {err}");
        }
    }
}

#[test]
fn every_msm_backend_proves_what_both_verifiers_accept() {
    let solc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/solc");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json(&veriml(&[
        "--json",
        "compile",
        s(&fixture("tiny_mlp", "model.onnx")),
        "-d",
        s(d),
        "--input-range",
        "0,1",
    ]));
    json(&veriml(&[
        "--json",
        "setup",
        "-d",
        s(d),
        "--insecure-dev-srs",
    ]));
    json(&veriml(&[
        "--json",
        "--allow-insecure-srs",
        "create-evm-verifier",
        "-d",
        s(d),
        "--solc",
        s(&solc),
    ]));
    for (choice, backend, warns) in [
        ("halo2", "halo2", false),
        ("cpu", "cpu", false),
        ("auto", "cpu", false),
        // no GPU backend in this build: a warning and the CPU, not a failure
        ("gpu", "cpu", true),
    ] {
        let proof = d.join(format!("proof-{choice}.json"));
        let p = json(&veriml(&[
            "--json",
            "prove",
            "-d",
            s(d),
            "--input",
            s(&fixture("tiny_mlp", "input.json")),
            "-o",
            s(&proof),
            "--msm",
            choice,
        ]));
        assert_eq!(p["msm"], backend, "{p}");
        assert_eq!(p["msm_warning"].is_string(), warns, "{p}");
        let v = json(&veriml(&[
            "--json",
            "--allow-insecure-srs",
            "verify",
            "-d",
            s(d),
            "--proof",
            s(&proof),
        ]));
        assert_eq!(v["verified"], true, "{choice}: {v}");
        let e = json(&veriml(&[
            "--json",
            "--allow-insecure-srs",
            "verify-evm",
            "-d",
            s(d),
            "--proof",
            s(&proof),
        ]));
        assert_eq!(e["verified"], true, "{choice}: {e}");
    }
    let out = veriml(&["prove", "-d", s(d), "--input", "x.json", "--msm", "fpga"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not one of cpu, gpu, auto, halo2"));
}
