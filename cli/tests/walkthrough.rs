//! The README's dApp walkthrough (`scripts/dapp-walkthrough.sh`) runs as written, with this
//! build's `veriml` and `veriml-tee-runner` on PATH and free ports.

use std::path::PathBuf;
use std::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_dapp_walkthrough_runs_as_written() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_veriml"));
    let bin_dir = bin.parent().unwrap();
    assert!(
        bin_dir.join("veriml-tee-runner").is_file(),
        "veriml-tee-runner is not built next to {} (cargo test --workspace builds it; or \
         cargo build -p veriml-tee)",
        bin.display()
    );
    let work = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(root.join("scripts/dapp-walkthrough.sh"))
        .env("PATH", path)
        .env("VERIML_WALKTHROUGH_DIR", work.path())
        .env("ANVIL_PORT", free_port().to_string())
        .env("PROVIDER_PORT", free_port().to_string())
        .env("RUNNER_PORT", free_port().to_string())
        .env("GATEWAY_PORT", free_port().to_string())
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // both results were settled by the agent, and the consumer and the registry read them
    assert_eq!(text.matches(": settled in 0x").count(), 2, "{text}");
    assert!(text.contains("chat result settled: true"), "{text}");
    assert!(text.contains("stand-in answer to: Is 7 prime?"), "{text}");
    assert!(text.contains("walkthrough complete"), "{text}");
}
