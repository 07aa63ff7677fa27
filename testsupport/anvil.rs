//! A local anvil for the integration tests of several crates (each includes this file with
//! `#[path]`): the pinned binary from node_modules, Base's rules (`--hardfork osaka`) and Base
//! Sepolia's chain id, on a free port, killed when dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Base Sepolia's chain id.
pub const CHAIN_ID: u64 = 84532;
/// anvil's first default account (a well-known development key, never funded on a real chain).
pub const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// The address of [`DEV_KEY`].
pub const DEV_ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

pub struct Anvil {
    child: Child,
    pub url: String,
    port: u16,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the node answers a JSON-RPC request (`eth_chainId`).
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
    let req = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut resp = String::new();
    s.write_all(req.as_bytes()).is_ok()
        && s.read_to_string(&mut resp).is_ok()
        && resp.contains("\"result\"")
}

/// Starts anvil from `repo_root`/node_modules and waits until it answers.
pub fn start(repo_root: &Path) -> Anvil {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(repo_root.join("node_modules/.bin/anvil"))
        .args([
            "--port",
            &port.to_string(),
            "--hardfork",
            "osaka",
            "--chain-id",
            &CHAIN_ID.to_string(),
            "--silent",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("anvil from node_modules (npm ci)");
    let anvil = Anvil {
        child,
        url: format!("http://127.0.0.1:{port}"),
        port,
    };
    for _ in 0..100 {
        if answers(anvil.port) {
            return anvil;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("anvil did not start");
}
