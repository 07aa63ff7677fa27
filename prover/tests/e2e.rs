//! Real proofs: setup, prove, verify, and every kind of tampering rejected.

mod common;
use common::{fixture, input_of, opts};
use std::path::Path;
use std::sync::Arc;
use veriml_circuits::{
    circuit::{plan_with, Fault, FaultTarget},
    compile_model,
    halo2_proofs::plonk::{keygen_pk, keygen_vk},
    ModelCircuit, QuantOptions, QuantizedModel, Settings,
};
use veriml_prover::{
    artifacts::{read_file, write_atomic, ProofFile},
    pipeline::{self, fr_from_hex, fr_to_hex, read_vk, verify_raw, Keys},
    ProverError, Srs, SrsOrigin,
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
    // the tests' keys come from a development SRS, accepted here on purpose
    pipeline::verify(
        &r.srs,
        r.keys.pk.get_vk(),
        &r.keys.header,
        &r.settings,
        p,
        true,
    )
    .map(|_| ())
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
    assert_ne!(a.settings.model_sha256, b.settings.model_sha256);
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
    pipeline::verify(&srs, &vk, &header, &r.settings, &back, true).unwrap();
    // a key file with a flipped byte in the key part is refused or fails to verify
    let mut vkb = std::fs::read(d.join("vk.bin")).unwrap();
    let n = vkb.len();
    vkb[n - 10] ^= 0x40;
    match pipeline::vk_from_bytes(&vkb, Path::new("vk.bin"), &r.settings) {
        Err(_) => {}
        Ok((vk2, h2)) => {
            assert!(pipeline::verify(&srs, &vk2, &h2, &r.settings, &back, true).is_err())
        }
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

/// Finding: inputs above the declared range were proven (range (0, 1) accepted inputs up to 3.9,
/// range (0, 0.01) about 400 times its maximum). Now the honest prover refuses them, and a
/// witness forced to one code above the largest (its forward pass and public words following)
/// gives a real proof that the verifier rejects, in both row layouts.
#[test]
fn input_above_the_declared_range_cannot_be_proven() {
    for range in [(0.0, 1.0), (0.0, 0.01)] {
        let (_, compiled) = compile_model(
            &fixture("tiny_mlp", "model.onnx"),
            &QuantOptions {
                input_range: range,
                ..opts()
            },
            &Default::default(),
        )
        .unwrap();
        let model = Arc::new(compiled.model);
        // every code the range checks let through decodes inside the declared range
        let max = model.input_code_max();
        assert_eq!(max, (1i64 << model.input_bits) - 1);
        assert_eq!(model.decode_input(0), range.0);
        assert!(model.decode_input(max) <= range.1, "{range:?}");
        // the honest prover refuses an input just above the range, and a code above the largest
        let mut x = input_of("tiny_mlp");
        x[1] = range.1 * 1.001;
        let e = model.quantize_input(&x).unwrap_err();
        assert!(e.to_string().contains("outside the range"), "{e}");
        let mut codes = model
            .quantize_input(
                &input_of("tiny_mlp")
                    .iter()
                    .map(|v| v * range.1)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        for row_bytes in [1, 2] {
            let plan = plan_with(&model, 64, row_bytes, false).unwrap();
            let srs = Srs::insecure_dev(plan.k, 5);
            let keygen = ModelCircuit::keygen(model.clone(), plan.shape);
            let vk = keygen_vk(&srs.params, &keygen).unwrap();
            let pk = keygen_pk(&srs.params, vk, &keygen).unwrap();
            codes[1] = max + 1;
            assert!(ModelCircuit::with_input(model.clone(), plan.shape, codes.clone()).is_err());
            codes[1] = max;
            let honest =
                ModelCircuit::with_input(model.clone(), plan.shape, codes.clone()).unwrap();
            let words = honest.instances().unwrap();
            let proof = pipeline::prove_circuit(&srs, &pk, honest.clone(), &words).unwrap();
            verify_raw(&srs.params, pk.get_vk(), &words, &proof).unwrap();
            for index in [0, 1, 7, 15] {
                let forced = honest.clone().with_fault(Fault {
                    target: FaultTarget::InputAboveRange,
                    index,
                });
                let claimed = forced.instances().unwrap();
                assert_ne!(claimed, words, "the cheat claims another input");
                assert!(pipeline::mock_circuit(plan.k, &forced).is_err());
                let proof = pipeline::prove_circuit(&srs, &pk, forced, &claimed).unwrap();
                assert!(
                    verify_raw(&srs.params, pk.get_vk(), &claimed, &proof).is_err(),
                    "input {index} above {range:?} proven with {row_bytes} bytes per row"
                );
            }
        }
    }
}

/// Finding: the verifying key was the same for ranges (0, 1) and (0, 1.2). The range is now part
/// of the statement: keys differ even between two models with the very same layers.
#[test]
fn the_declared_range_is_part_of_the_verifying_key() {
    let vk_of = |model: QuantizedModel| {
        let model = Arc::new(model);
        let plan = plan_with(&model, 64, 2, false).unwrap();
        let srs = Srs::insecure_dev(plan.k, 1);
        let vk = keygen_vk(&srs.params, &ModelCircuit::keygen(model, plan.shape)).unwrap();
        format!("{:?}", vk.fixed_commitments())
    };
    let compiled = |range| {
        compile_model(
            &fixture("tiny_mlp", "model.onnx"),
            &QuantOptions {
                input_range: range,
                ..opts()
            },
            &Default::default(),
        )
        .unwrap()
        .1
        .model
    };
    let a = compiled((0.0, 1.0));
    let b = compiled((0.0, 1.2));
    assert_ne!(vk_of(a.clone()), vk_of(b));
    // the same layers, only the recorded range differs: the statement digest tells them apart
    let mut c = a.clone();
    c.input_range.1 = 1.0 + 1e-9;
    assert_eq!(a.layers, c.layers);
    assert_ne!(vk_of(a.clone()), vk_of(c));
    assert_eq!(vk_of(a.clone()), vk_of(a));
}

/// Finding: the SRS recorded in the key header was never compared with the loaded one, and a
/// development SRS only gave a warning.
#[test]
fn the_srs_must_be_the_keys_own_and_a_development_one_needs_consent() {
    let r = ready("tiny_mlp", opts());
    let x = input_of("tiny_mlp");
    let proof = pipeline::prove(&r.srs, &r.keys, &r.settings, r.model.clone(), &x).unwrap();
    let vk = r.keys.pk.get_vk();
    let run = |srs: &Srs, header: &veriml_prover::artifacts::KeyHeader, allow| {
        pipeline::verify(srs, vk, header, &r.settings, &proof, allow)
    };
    run(&r.srs, &r.keys.header, true).unwrap();
    assert!(matches!(
        run(&r.srs, &r.keys.header, false),
        Err(ProverError::InsecureSrs { .. })
    ));
    // a header edited to claim a ceremony file: the parameters themselves give it away
    let mut lying = r.keys.header.clone();
    lying.srs = SrsOrigin::File {
        sha256: r.srs.sha256.clone(),
    };
    let e = run(&r.srs, &lying, false).unwrap_err();
    assert!(
        matches!(e, ProverError::InsecureSrs { .. }) && e.to_string().contains("seed 1"),
        "{e}"
    );
    // another SRS of the same size is not the keys' own, even when insecure ones are allowed
    let other = Srs::insecure_dev(r.settings.circuit.k, 2);
    assert!(matches!(
        run(&other, &r.keys.header, true),
        Err(ProverError::Mismatch { what: "SRS", .. })
    ));
    assert!(pipeline::prove(&other, &r.keys, &r.settings, r.model.clone(), &x).is_err());
    // an SRS read back from its file is recognised too, and is the keys' own
    let back = Srs::from_bytes(&r.srs.to_bytes(), Path::new("kzg.srs")).unwrap();
    assert!(!back.origin.is_insecure() && back.is_insecure());
    assert_eq!(back.known_insecure_seed(None), Some(1));
    run(&back, &r.keys.header, true).unwrap();
    // parameters of an unknown secret are not mistaken for a development SRS
    let unknown = Srs::insecure_dev(4, 1_000_003);
    assert_eq!(unknown.known_insecure_seed(None), None);
}

/// Function lookups with real KZG proofs (two challenges after the first phase): the honest
/// proof of the activations model (Sigmoid, Tanh, GELU, HardSwish, Exp) verifies; a proof made
/// with a wrong table entry, or another table's entry, whose claimed words follow it, does not.
#[test]
fn lookup_cheats_do_not_verify() {
    let r = ready("conv_zoo/activations", opts());
    let (k, shape) = (r.settings.circuit.k, r.settings.circuit.shape);
    assert!(shape.lookups());
    let codes = r
        .model
        .quantize_input(&input_of("conv_zoo/activations"))
        .unwrap();
    let honest = ModelCircuit::with_input(r.model.clone(), shape, codes).unwrap();
    let words = honest.instances().unwrap();
    let proof = pipeline::prove_circuit(&r.srs, &r.keys.pk, honest.clone(), &words).unwrap();
    verify_raw(&r.srs.params, r.keys.pk.get_vk(), &words, &proof).unwrap();
    let lookups: usize = r
        .model
        .layers
        .iter()
        .filter_map(|l| match l {
            veriml_circuits::quantize::QLayer::Dense {
                lookup: Some(_),
                outputs,
                ..
            } => Some(*outputs),
            _ => None,
        })
        .sum();
    // the last lookup layer's outputs feed the output layer most directly
    for (target, index) in [
        (FaultTarget::LookupOutput, lookups - 1),
        (FaultTarget::LookupOtherTable, 0),
    ] {
        let forced = honest.clone().with_fault(Fault { target, index });
        let claimed = forced.instances().unwrap();
        assert!(pipeline::mock_circuit(k, &forced).is_err());
        let proof = pipeline::prove_circuit(&r.srs, &r.keys.pk, forced, &claimed).unwrap();
        assert!(
            verify_raw(&r.srs.params, r.keys.pk.get_vk(), &claimed, &proof).is_err(),
            "{target:?} proven"
        );
    }
}
