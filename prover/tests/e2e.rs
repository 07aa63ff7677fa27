//! Real proofs: setup, prove, verify, and every kind of tampering rejected.

mod common;
use common::{fixture, input_of, opts};
use std::path::Path;
use std::sync::Arc;
use veriml_circuits::{compile_model, QuantOptions, QuantizedModel, Settings};
use veriml_prover::{
    artifacts::{read_file, write_atomic, ProofFile},
    pipeline::{self, fr_from_hex, fr_to_hex, read_vk, verify_raw, Keys},
    ProverError, Srs,
};

struct Ready {
    settings: Settings,
    model: Arc<QuantizedModel>,
    srs: Srs,
    keys: Keys,
}

fn ready(model: &str, opts: QuantOptions) -> Ready {
    let (settings, compiled) = compile_model(
        &fixture(model, "model.onnx"),
        &opts,
        &veriml_circuits::settings::PlanOptions::default(),
    )
    .unwrap();
    let model = Arc::new(compiled.model);
    let srs = Srs::insecure_dev(settings.circuit.k, 1);
    let keys = pipeline::setup(&settings, model.clone(), &srs).unwrap();
    Ready {
        settings,
        model,
        srs,
        keys,
    }
}

fn verify(r: &Ready, p: &ProofFile) -> Result<(), ProverError> {
    pipeline::verify(&r.srs, r.keys.pk.get_vk(), &r.keys.header, &r.settings, p).map(|_| ())
}

#[test]
fn tiny_mlp_proves_verifies_and_rejects_tampering() {
    let r = ready("tiny_mlp", opts());
    let x = input_of("tiny_mlp");
    let proof = pipeline::prove(&r.srs, &r.keys, &r.settings, r.model.clone(), &x).unwrap();
    verify(&r, &proof).unwrap();
    assert!(proof.insecure_srs);

    // the proven output is the quantized forward pass, close to the float model
    let want = r.model.forward(&r.model.quantize_input(&x).unwrap());
    let got: Vec<f64> = want.iter().map(|&v| r.model.dequantize(v)).collect();
    assert_eq!(proof.output, got);

    // another input's public values do not verify with this proof
    let mut y = x.clone();
    y[0] = (y[0] + 0.25) % 1.0;
    let other = pipeline::prove(&r.srs, &r.keys, &r.settings, r.model.clone(), &y).unwrap();
    verify(&r, &other).unwrap();
    let mut swapped = proof.clone();
    swapped.instances = other.instances.clone();
    assert!(matches!(
        verify(&r, &swapped),
        Err(ProverError::Rejected(_))
    ));

    // a changed public word (input words, then output words)
    for i in 0..proof.instances.len() {
        let mut t = proof.clone();
        let f = fr_from_hex(&t.instances[i]).unwrap()
            + veriml_circuits::halo2_proofs::halo2curves::bn256::Fr::one();
        t.instances[i] = fr_to_hex(&f);
        assert!(verify(&r, &t).is_err(), "changed public word {i} accepted");
    }
    // the readable output of the file must be what the words prove
    let mut t = proof.clone();
    t.output[0] += 1.0;
    assert!(matches!(verify(&r, &t), Err(ProverError::Rejected(_))));

    // flipped proof bytes, at several places
    let bytes = hex::decode(&proof.proof).unwrap();
    for pos in [0, 31, 64, bytes.len() / 2, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[pos] ^= 1;
        let mut t = proof.clone();
        t.proof = hex::encode(b);
        assert!(verify(&r, &t).is_err(), "flipped byte {pos} accepted");
    }
    // truncated proof, missing or extra public input, non-canonical scalar
    let mut t = proof.clone();
    t.proof.truncate(t.proof.len() - 64);
    assert!(verify(&r, &t).is_err());
    let mut t = proof.clone();
    t.instances.pop();
    assert!(verify(&r, &t).is_err());
    let mut t = proof.clone();
    t.instances.push(t.instances[0].clone());
    assert!(verify(&r, &t).is_err());
    let mut t = proof.clone();
    t.instances[0] = "30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001".into(); // the modulus
    assert!(verify(&r, &t).is_err());
}

#[test]
fn proof_does_not_verify_with_another_models_key() {
    let a = ready("tiny_mlp", opts());
    // the same architecture with other weights: other fixed columns, same shapes
    let b = ready(
        "tiny_mlp",
        QuantOptions {
            weight_precision_bits: 15,
            ..opts()
        },
    );
    assert_ne!(a.settings.weights_sha256, b.settings.weights_sha256);
    let x = input_of("tiny_mlp");
    let proof = pipeline::prove(&a.srs, &a.keys, &a.settings, a.model.clone(), &x).unwrap();
    // the file-level check refuses it
    assert!(matches!(
        verify(&b, &proof),
        Err(ProverError::Mismatch { .. })
    ));
    // and the cryptographic check refuses it too, whatever the file says
    let instances: Vec<_> = proof
        .instances
        .iter()
        .map(|s| fr_from_hex(s).unwrap())
        .collect();
    let bytes = hex::decode(&proof.proof).unwrap();
    verify_raw(&a.srs.params, a.keys.pk.get_vk(), &instances, &bytes).unwrap();
    if a.settings.circuit.k == b.settings.circuit.k {
        assert!(verify_raw(&a.srs.params, b.keys.pk.get_vk(), &instances, &bytes).is_err());
    }
    // a different model altogether (digits_mlp)
    let c = ready("digits_mlp", opts());
    let p2 = Srs::insecure_dev(c.settings.circuit.k, 1);
    assert!(verify_raw(&p2.params, c.keys.pk.get_vk(), &instances, &bytes).is_err());
}

#[test]
fn keys_and_proofs_survive_files() {
    let r = ready("digits_mlp", opts());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_atomic(&d.join("pk.bin"), &r.keys.pk_bytes()).unwrap();
    write_atomic(&d.join("vk.bin"), &r.keys.vk_bytes()).unwrap();
    write_atomic(&d.join("kzg.srs"), &r.srs.to_bytes()).unwrap();
    let keys = Keys::read_pk(&d.join("pk.bin"), &r.settings).unwrap();
    let srs = Srs::read(&d.join("kzg.srs")).unwrap();
    let x = input_of("digits_mlp");
    let proof = pipeline::prove(&srs, &keys, &r.settings, r.model.clone(), &x).unwrap();
    write_atomic(&d.join("proof.json"), proof.to_json().as_bytes()).unwrap();
    let text = String::from_utf8(read_file(&d.join("proof.json")).unwrap()).unwrap();
    let back = ProofFile::from_json(&text, Path::new("proof.json")).unwrap();
    let (vk, header) = read_vk(&d.join("vk.bin"), &r.settings).unwrap();
    pipeline::verify(&srs, &vk, &header, &r.settings, &back).unwrap();
    // a key file with a flipped byte in the key part is refused or fails to verify
    let mut vkb = std::fs::read(d.join("vk.bin")).unwrap();
    let n = vkb.len();
    vkb[n - 10] ^= 0x40;
    match pipeline::vk_from_bytes(&vkb, Path::new("vk.bin"), &r.settings) {
        Err(_) => {}
        Ok((vk2, h2)) => assert!(pipeline::verify(&srs, &vk2, &h2, &r.settings, &back).is_err()),
    }
    // settings of another model are refused before any cryptography
    let other = ready("tiny_mlp", opts());
    assert!(matches!(
        Keys::read_pk(&d.join("pk.bin"), &other.settings),
        Err(ProverError::Mismatch { .. })
    ));
}

#[test]
fn out_of_range_input_is_refused_not_proven() {
    let r = ready("tiny_mlp", opts());
    let mut x = input_of("tiny_mlp");
    x[2] = 7.0;
    let e = pipeline::prove(&r.srs, &r.keys, &r.settings, r.model.clone(), &x).unwrap_err();
    assert!(e.to_string().contains("outside the range"), "{e}");
    x.pop();
    assert!(pipeline::prove(&r.srs, &r.keys, &r.settings, r.model.clone(), &x).is_err());
}
