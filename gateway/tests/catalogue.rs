//! The model catalogue: entries survive a save and a load, bad ids, fields, files and folders
//! are refused with an error that names them.

use std::path::Path;
use veriml_gateway::catalogue::{check_id, CatalogueError, Entry, MEASUREMENT_BYTES};
use veriml_gateway::{Catalogue, ClosedModel, OpenModel};

fn measurement(byte: u8) -> String {
    hex::encode([byte; MEASUREMENT_BYTES])
}

fn closed() -> ClosedModel {
    ClosedModel::new(
        "https://api.provider.example/v1/",
        "chat-large",
        "https://runner.example:8443",
        &[format!("0x{}", measurement(0xAB))],
    )
    .unwrap()
}

#[test]
fn entries_survive_a_save_and_a_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models.json");
    // no file yet: an empty catalogue
    let mut c = Catalogue::load(&path).unwrap();
    assert!(c.models.is_empty());
    c.add("chat", Entry::Closed(closed()), false).unwrap();
    c.add("b.model_2", Entry::Closed(closed()), false).unwrap();
    c.save(&path).unwrap();
    let back = Catalogue::load(&path).unwrap();
    assert_eq!(back, c);
    // ids in order, the URL's trailing slash and the measurement's prefix and case normalized
    assert_eq!(
        back.models.keys().collect::<Vec<_>>(),
        ["b.model_2", "chat"]
    );
    let Entry::Closed(m) = back.get("chat").unwrap() else {
        panic!("closed")
    };
    assert_eq!(m.provider, "https://api.provider.example/v1");
    assert_eq!(m.measurements, [measurement(0xAB)]);
    // nothing but the file itself is left in the folder (atomic write)
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn duplicate_and_unknown_ids_are_refused_by_name() {
    let mut c = Catalogue::default();
    c.add("chat", Entry::Closed(closed()), false).unwrap();
    let e = c.add("chat", Entry::Closed(closed()), false).unwrap_err();
    assert!(
        matches!(e, CatalogueError::Exists { ref id } if id == "chat"),
        "{e}"
    );
    // replacing is explicit
    let mut other = closed();
    other.provider_model = "chat-small".into();
    c.add("chat", Entry::Closed(other.clone()), true).unwrap();
    assert_eq!(c.get("chat").unwrap(), &Entry::Closed(other));
    for e in [c.get("nope").unwrap_err(), c.remove("nope").unwrap_err()] {
        assert!(
            e.to_string().contains("`nope` is not in the catalogue"),
            "{e}"
        );
    }
    c.remove("chat").unwrap();
    assert!(c.models.is_empty());
}

#[test]
fn bad_ids_are_refused_with_the_reason() {
    for (id, says) in [
        ("", "empty"),
        ("-lead", "start with a letter or a digit"),
        ("has space", "only letters"),
        ("slash/id", "only letters"),
        (&"x".repeat(65), "longer than 64"),
    ] {
        let e = check_id(id).unwrap_err();
        assert!(e.to_string().contains(says), "{id}: {e}");
        let e = Catalogue::default()
            .add(id, Entry::Closed(closed()), false)
            .unwrap_err();
        assert!(e.to_string().contains(says), "{id}: {e}");
    }
    check_id(&"x".repeat(64)).unwrap();
}

#[test]
fn bad_closed_model_fields_are_named() {
    let m = |provider: &str, model: &str, runner: &str, ms: &[String]| {
        ClosedModel::new(provider, model, runner, ms).unwrap_err()
    };
    let good = [measurement(1)];
    for (e, field, says) in [
        (
            m("ftp://x", "a", "https://r", &good),
            "provider",
            "not an http",
        ),
        (
            m("https://", "a", "https://r", &good),
            "provider",
            "no host",
        ),
        (
            m("https://p", "a", "http://r x", &good),
            "runner",
            "whitespace",
        ),
        (
            m("https://p", " ", "https://r", &good),
            "provider_model",
            "empty",
        ),
        (
            m("https://p", "a", "https://r", &[]),
            "measurements",
            "at least one",
        ),
        (
            m("https://p", "a", "https://r", &["ab".repeat(47)]),
            "measurements",
            "47 bytes",
        ),
        (
            m("https://p", "a", "https://r", &["zz".repeat(48)]),
            "measurements",
            "not hex",
        ),
    ] {
        assert!(
            matches!(e, CatalogueError::BadField { field: f, .. } if f == field),
            "{e}"
        );
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn bad_catalogue_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let good = serde_json::to_value({
        let mut c = Catalogue::default();
        c.add("chat", Entry::Closed(closed()), false).unwrap();
        c
    })
    .unwrap();
    let mut bad_version = good.clone();
    bad_version["version"] = 9.into();
    let mut bad_id = good.clone();
    bad_id["models"]["bad id"] = good["models"]["chat"].clone();
    let mut bad_measurement = good.clone();
    bad_measurement["models"]["chat"]["measurements"][0] = "00".into();
    let mut bad_kind = good.clone();
    bad_kind["models"]["chat"]["kind"] = "hosted".into();
    for (name, text, says) in [
        ("truncated.json", "{\"format\":", "EOF"),
        ("version.json", &bad_version.to_string(), "version 9"),
        ("id.json", &bad_id.to_string(), "`bad id`"),
        (
            "measurement.json",
            &bad_measurement.to_string(),
            "model `chat`",
        ),
        ("kind.json", &bad_kind.to_string(), "hosted"),
    ] {
        let p = write(name, text);
        let e = Catalogue::load(&p).unwrap_err();
        let s = e.to_string();
        assert!(s.contains(name) && s.contains(says), "{name}: {s}");
    }
}

/// A folder that is not a set-up artifact folder is refused, naming what is missing.
#[test]
fn incomplete_artifact_folders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = OpenModel::from_folder(dir.path()).unwrap_err();
    assert!(e.to_string().contains("settings.json"), "{e}");
    // settings of a real model, nothing else
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits_mlp/model.onnx");
    let (settings, _) = veriml_circuits::compile_model(
        &onnx,
        &veriml_circuits::QuantOptions::default(),
        &Default::default(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("settings.json"),
        serde_json::to_string_pretty(&settings).unwrap(),
    )
    .unwrap();
    let e = OpenModel::from_folder(dir.path()).unwrap_err();
    assert!(e.to_string().contains("no model.compiled.json"), "{e}");
    std::fs::write(dir.path().join("settings.json"), "{}").unwrap();
    let e = OpenModel::from_folder(dir.path()).unwrap_err();
    assert!(e.to_string().contains("settings.json"), "{e}");
}
