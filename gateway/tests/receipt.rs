//! Inference receipts: an open model's proof and a closed model's signed TEE receipt each give a
//! receipt that checks out against the catalogue; every tampered field is refused by name.

mod common;
use common::open_folder;
use veriml_gateway::catalogue::Entry;
use veriml_gateway::{Catalogue, ClosedModel, Evidence, InferenceReceipt, OpenModel};
use veriml_tee::receipt::{keccak, EthKey, Receipt};

#[test]
fn an_open_models_receipt_verifies_and_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, proof) = open_folder(dir.path());
    let mut cat = Catalogue::default();
    let open = OpenModel::from_folder(dir.path()).unwrap();
    cat.add("digits", Entry::Open(open), false).unwrap();
    let r = InferenceReceipt::open("digits", &settings, proof).unwrap();
    // what ModelRegistry.verify hashes: the input words, then the output words
    let Evidence::Zk { proof } = &r.evidence else {
        panic!("zk")
    };
    let words: Vec<Vec<u8>> = proof
        .instances
        .iter()
        .map(|w| hex::decode(w.trim_start_matches("0x")).unwrap())
        .collect();
    let n = settings.circuit.shape.input_words;
    assert_eq!(
        r.input_hash,
        format!("0x{}", hex::encode(keccak(&words[..n].concat())))
    );
    assert_eq!(
        r.output_hash,
        format!("0x{}", hex::encode(keccak(&words[n..].concat())))
    );
    // a JSON round trip, and a development SRS only when allowed
    let r = InferenceReceipt::from_json(&serde_json::to_string(&r).unwrap()).unwrap();
    r.verify(&cat, true).unwrap();
    let e = r.verify(&cat, false).unwrap_err();
    assert!(
        e.to_string().contains("INSECURE") || e.to_string().contains("insecure"),
        "{e}"
    );

    let tamper = |edit: &dyn Fn(&mut InferenceReceipt)| {
        let mut bad = r.clone();
        edit(&mut bad);
        bad.verify(&cat, true).unwrap_err().to_string()
    };
    let e = tamper(&|b| b.output_hash = b.input_hash.clone());
    assert!(e.contains("output hash"), "{e}");
    let e = tamper(&|b| b.output = serde_json::json!([1.0]));
    assert!(e.contains("output: not the proof file's output"), "{e}");
    // an output word changed, the hashes recomputed to match: the proof refuses it
    let e = tamper(&|b| {
        let Evidence::Zk { proof } = &mut b.evidence else {
            unreachable!()
        };
        let last = proof.instances.last_mut().unwrap();
        let mut w = hex::decode(last.trim_start_matches("0x")).unwrap();
        w[31] ^= 1;
        *last = hex::encode(&w);
        *b = InferenceReceipt::open("digits", &settings, proof.clone()).unwrap();
    });
    assert!(e.contains("does not verify") || e.contains("output"), "{e}");
    let e = tamper(&|b| {
        let Evidence::Zk { proof } = &mut b.evidence else {
            unreachable!()
        };
        let mut bytes = hex::decode(&proof.proof).unwrap();
        bytes[100] ^= 1;
        proof.proof = hex::encode(bytes);
    });
    assert!(e.contains("does not verify"), "{e}");
    let e = tamper(&|b| b.model_id = "nope".into());
    assert!(e.contains("`nope` is not in the catalogue"), "{e}");
}

#[test]
fn a_closed_models_receipt_verifies_and_tampering_is_named() {
    let mut cat = Catalogue::default();
    let closed = ClosedModel::new(
        "http://127.0.0.1:9/v1",
        "chat-large",
        "http://127.0.0.1:8443",
        &["ab".repeat(48)],
    )
    .unwrap();
    cat.add("chat", Entry::Closed(closed), false).unwrap();
    let other = ClosedModel::new(
        "http://127.0.0.1:9/v1",
        "chat-small",
        "http://127.0.0.1:8443",
        &["ab".repeat(48)],
    )
    .unwrap();
    cat.add("small", Entry::Closed(other), false).unwrap();
    let key = EthKey::generate();
    let request = br#"{"model":"chat-large","messages":[{"role":"user","content":"hi"}]}"#;
    let body = r#"{"choices":[{"message":{"content":"hello"}}]}"#.to_string();
    let receipt = Receipt {
        chain_id: 8453,
        model_id: keccak(b"chat-large"),
        request_hash: keccak(request),
        response_hash: keccak(body.as_bytes()),
        timestamp: 1_764_547_200,
        nonce: [7; 32],
    };
    let sig = key.sign_digest(&receipt.digest());
    let request_text = String::from_utf8(request.to_vec()).unwrap();
    let r = InferenceReceipt::closed(
        "chat",
        receipt,
        &sig,
        &key.address(),
        Some(request_text),
        body,
    );
    let r = InferenceReceipt::from_json(&serde_json::to_string(&r).unwrap()).unwrap();
    r.verify(&cat, false).unwrap();
    assert_eq!(r.input_hash, format!("0x{}", hex::encode(keccak(request))));

    let tamper = |edit: &dyn Fn(&mut InferenceReceipt)| {
        let mut bad = r.clone();
        edit(&mut bad);
        bad.verify(&cat, false).unwrap_err().to_string()
    };
    let e = tamper(&|b| b.output = serde_json::json!("{\"choices\":[]}"));
    assert!(e.contains("output hash"), "{e}");
    let e = tamper(&|b| b.input_hash = b.output_hash.clone());
    assert!(e.contains("input hash"), "{e}");
    // a request that is not the one signed for
    let e = tamper(&|b| b.request = Some("{\"messages\":[]}".into()));
    assert!(e.contains("input hash"), "{e}");
    // without the request, the rest still checks out
    let mut bare = r.clone();
    bare.request = None;
    bare.verify(&cat, false).unwrap();
    // the response changed and every hash made to follow: the signature no longer covers it
    let e = tamper(&|b| {
        let body = "{}".to_string();
        let t = tee(b);
        t.receipt.response_hash = keccak(body.as_bytes());
        b.output_hash = format!("0x{}", hex::encode(keccak(body.as_bytes())));
        b.output = serde_json::Value::String(body);
    });
    assert!(e.contains("signed by"), "{e}");
    let e = tamper(&|b| tee(b).key = format!("0x{}", hex::encode(EthKey::generate().address())));
    assert!(e.contains("signed by"), "{e}");
    let e = tamper(&|b| tee(b).signature.replace_range(2..4, "00"));
    assert!(e.contains("signature"), "{e}");
    // the receipt of another model of the catalogue, presented as this one
    let e = tamper(&|b| b.model_id = "small".into());
    assert!(e.contains("keccak256(\"chat-small\")"), "{e}");
    let mut wrong_version = serde_json::to_value(&r).unwrap();
    wrong_version["version"] = 2.into();
    let e = InferenceReceipt::from_json(&wrong_version.to_string()).unwrap_err();
    assert!(e.to_string().contains("version 2"), "{e}");
}

fn tee(b: &mut InferenceReceipt) -> &mut veriml_gateway::TeeEvidence {
    match &mut b.evidence {
        Evidence::Tee(t) => t,
        Evidence::Zk { .. } => unreachable!(),
    }
}
