//! End to end on a local anvil, as a dApp developer runs it: an open model (compiled, set up,
//! its verifier deployed) and a closed model (a TEE runner in simulated mode in front of a
//! stand-in OpenAI-compatible provider) in one catalogue; `veriml serve` answers one request of
//! each kind with a receipt; `veriml settle` settles both in the InferenceRegistry and the
//! sample consumer acts on the open model's settled output. Tampered receipts are refused
//! off-chain and, forced on-chain, by the contracts. The gateway killed in the middle of
//! proving finishes its jobs once after a restart; the agent killed between sending and
//! confirming (and the node dropping its transaction) settles its receipt once.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use veriml_tee::{
    receipt::{keccak, EthKey},
    service::{serve, AttesterMode, Config, Runner, UpstreamConfig},
    SimulatedPlatform,
};

#[path = "../../testsupport/anvil.rs"]
mod anvil;
use anvil::{CHAIN_ID, DEV_ADDRESS, DEV_KEY};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn veriml(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veriml"))
        .args(args)
        .output()
        .expect("runs veriml")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).expect("stdout is JSON")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(root().join("node_modules/.bin").join(name))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

fn forge_create(url: &str, contract: &str, args: &[&str]) -> String {
    let mut a = vec![
        "create",
        contract,
        "--rpc-url",
        url,
        "--private-key",
        DEV_KEY,
        "--broadcast",
    ];
    if !args.is_empty() {
        a.push("--constructor-args");
        a.extend_from_slice(args);
    }
    let out = ok(&tool("forge", &a));
    out.lines()
        .find_map(|l| l.strip_prefix("Deployed to: "))
        .expect("forge create prints the address")
        .trim()
        .to_string()
}

fn cast_send(url: &str, to: &str, sig: &str, args: &[&str]) {
    let mut a = vec!["send", "--rpc-url", url, "--private-key", DEV_KEY, to, sig];
    a.extend_from_slice(args);
    ok(&tool("cast", &a));
}

fn cast_call(url: &str, to: &str, sig: &str, args: &[&str]) -> Output {
    let mut a = vec!["call", "--rpc-url", url, "--from", DEV_ADDRESS, to, sig];
    a.extend_from_slice(args);
    tool("cast", &a)
}

fn nonce(url: &str) -> u64 {
    ok(&tool("cast", &["nonce", "--rpc-url", url, DEV_ADDRESS]))
        .trim()
        .parse()
        .unwrap()
}

/// The custom error a call reverts with, by its selector.
fn reverts_with(o: &Output, error_signature: &str) {
    assert!(
        !o.status.success(),
        "expected a revert with {error_signature}"
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let selector = hex::encode(&keccak(error_signature.as_bytes())[..4]);
    assert!(
        text.contains(&selector),
        "expected {error_signature}: {text}"
    );
}

fn hex0x(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

/// `veriml serve` as a child process; killed when dropped.
struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(catalogue: &Path, db: &Path, tee_root: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_veriml"))
        .args([
            "--json",
            "serve",
            "--catalogue",
            s(catalogue),
            "--db",
            s(db),
            "--listen",
            "127.0.0.1:0",
            "--runner-timeout-ms",
            "5000",
            "--tee-simulated-root",
            s(tee_root),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).expect("the listening line");
    Served {
        child,
        url: format!("http://{}", v["listening"].as_str().unwrap()),
    }
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/infer"))
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn finished(url: &str, id: &str) -> Value {
    for _ in 0..1200 {
        let j = get(&format!("{url}/v1/jobs/{id}")).await;
        if j["state"] == "done" || j["state"] == "failed" {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_and_closed_requests_settle_on_anvil_once_through_faults() {
    let solc = root().join("scripts/solc");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model_dir = t.join("tiny");
    let fixture = root().join("fixtures/models/tiny_mlp");
    let node = anvil::start(&root());
    let url = node.url.clone();

    // the open model: compiled, set up, its verifier deployed with a ModelRegistry
    json_out(&veriml(&[
        "--json",
        "compile",
        s(&fixture.join("model.onnx")),
        "-d",
        s(&model_dir),
        "--input-range",
        "0,1",
    ]));
    json_out(&veriml(&[
        "--json",
        "setup",
        "-d",
        s(&model_dir),
        "--insecure-dev-srs",
    ]));
    json_out(&veriml(&[
        "--json",
        "--allow-insecure-srs",
        "create-evm-verifier",
        "-d",
        s(&model_dir),
        "--solc",
        s(&solc),
    ]));
    let dep = json_out(&veriml(&[
        "--json",
        "--allow-insecure-srs",
        "deploy",
        "-d",
        s(&model_dir),
        "--rpc",
        &url,
        "--private-key",
        DEV_KEY,
        "--solc",
        s(&solc),
    ]));
    let model_registry = dep["registry"].as_str().unwrap().to_string();
    let zk_model_id = dep["model_id"].as_str().unwrap().to_string();

    // the closed model: a provider stand-in and a TEE runner (simulated SEV-SNP) on loopback
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|axum::Json(req): axum::Json<Value>| async move {
            let q = req["messages"][0]["content"]
                .as_str()
                .unwrap_or("")
                .to_string();
            axum::Json(json!({"model": req["model"], "choices": [{"index": 0,
                "message": {"role": "assistant", "content": format!("echo: {q}")}}]}))
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let platform = SimulatedPlatform::new([0x22; 48]);
    let ark = platform.ark_der().to_vec();
    let ark_path = t.join("simulated-ark.der");
    std::fs::write(&ark_path, &ark).unwrap();
    let cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        chain_id: CHAIN_ID,
        attester: AttesterMode::Simulated,
        upstream: Some(UpstreamConfig {
            base_url: provider.clone(),
            api_key_env: None,
            timeout_ms: 5_000,
        }),
        local_model: None,
    };
    let runner_state = Arc::new(Runner::new(cfg, Box::new(platform)).unwrap());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let runner = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        serve(runner_state, l, std::future::pending())
            .await
            .unwrap()
    });

    // the TeeRegistry, and the runner's key registered after an operator checks its attestation
    let tee_registry = forge_create(
        &url,
        "verifier-contracts/src/TeeRegistry.sol:TeeRegistry",
        &[DEV_ADDRESS, "600", "30"],
    );
    let operator_secret = keccak(b"an attestation verifier's key, for this test");
    let operator = EthKey::from_bytes(&operator_secret).unwrap();
    cast_send(
        &url,
        &tee_registry,
        "setAttestationVerifier(address,bool)",
        &[&hex0x(&operator.address()), "true"],
    );
    cast_send(&url, &tee_registry, "setQuorum(uint256)", &["1"]);
    let register = |measurement: &str| {
        veriml(&[
            "--json",
            "tee-register",
            "--runner",
            &runner,
            "--registry",
            &tee_registry,
            "--measurement",
            measurement,
            "--simulated-root",
            s(&ark_path),
            "--operator-key",
            &hex0x(&operator_secret),
            "--rpc",
            &url,
            "--private-key",
            DEV_KEY,
        ])
    };
    // the operator refuses a runner whose measurement is not the expected one
    let out = register(&"33".repeat(48));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains("is not attested") && err.contains("measurement"),
        "{err}"
    );
    let reg = json_out(&register(&"22".repeat(48)));
    assert_eq!(reg["simulated"], true);
    let key = reg["key"].as_str().unwrap().to_string();
    let enclave = ok(&cast_call(
        &url,
        &tee_registry,
        "enclaves(address)(bytes32,uint64,uint64,bool)",
        &[&key],
    ));
    assert!(enclave.contains(&hex0x(&keccak(&[0x22; 48]))), "{enclave}");

    // the InferenceRegistry routing both catalogue ids, and the sample consumer
    let inference = forge_create(
        &url,
        "verifier-contracts/src/InferenceRegistry.sol:InferenceRegistry",
        &[&model_registry, &tee_registry, DEV_ADDRESS],
    );
    let id_tiny = hex0x(&keccak(b"tiny"));
    let id_chat = hex0x(&keccak(b"chat"));
    cast_send(
        &url,
        &inference,
        "setRoute(bytes32,uint8,bytes32)",
        &[&id_tiny, "1", &zk_model_id],
    );
    cast_send(
        &url,
        &inference,
        "setRoute(bytes32,uint8,bytes32)",
        &[&id_chat, "2", &hex0x(&keccak(b"chat-large"))],
    );
    let consumer = forge_create(
        &url,
        "verifier-contracts/src/InferenceRegistry.sol:ClassificationConsumer",
        &[&inference, &id_tiny],
    );

    // the catalogue, as the README has it
    let catalogue = t.join("models.json");
    ok(&veriml(&[
        "models",
        "--catalogue",
        s(&catalogue),
        "add",
        "tiny",
        "-d",
        s(&model_dir),
    ]));
    ok(&veriml(&[
        "models",
        "--catalogue",
        s(&catalogue),
        "add",
        "chat",
        "--provider",
        &provider,
        "--provider-model",
        "chat-large",
        "--runner",
        &runner,
        "--measurement",
        &"22".repeat(48),
    ]));

    // the gateway: one open request, killed while proving, restarted: each job finishes once
    let db = t.join("jobs.sqlite");
    let gw = start_gateway(&catalogue, &db, &ark_path);
    let input: Value = serde_json::from_str::<Value>(
        &std::fs::read_to_string(fixture.join("input.json")).unwrap(),
    )
    .unwrap()["input_data"][0]
        .clone();
    let open_req = json!({"model": "tiny", "input": input});
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (status, job) = post(&gw.url, &open_req).await;
        assert_eq!(status, 202, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = get(&format!("{}/health", gw.url)).await;
        if h["jobs"]["running"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no job started: {h}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(gw); // SIGKILL in the middle of a proof
    let gw = start_gateway(&catalogue, &db, &ark_path);
    let mut restarted = 0;
    for id in &ids {
        let j = finished(&gw.url, id).await;
        assert_eq!(j["state"], "done", "{j}");
        restarted += (j["attempts"] == 2) as usize;
        assert!(j["attempts"] == 1 || j["attempts"] == 2, "{j}");
    }
    assert_eq!(restarted, 1, "exactly the interrupted job ran again");
    let listed = get(&format!("{}/v1/jobs?state=done", gw.url)).await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 4);
    let open_job = finished(&gw.url, &ids[0]).await;
    let chat_req =
        json!({"model": "chat", "input": {"messages": [{"role": "user", "content": "hello"}]}});
    let (status, chat_job) = post(&gw.url, &chat_req).await;
    assert_eq!(status, 200, "{chat_job}");
    assert!(chat_job["receipt"]["output"]
        .as_str()
        .unwrap()
        .contains("echo: hello"));

    // settle: the open result once (the other three jobs proved the same input), the closed one
    let settle_db = t.join("settle.sqlite");
    // `veriml settle` against this chain, registry and records
    let settle_args = || -> Vec<String> {
        [
            "--json",
            "--allow-insecure-srs",
            "settle",
            "--catalogue",
            s(&catalogue),
            "--registry",
            &inference,
            "--rpc",
            &url,
            "--private-key",
            DEV_KEY,
            "--db",
            s(&settle_db),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let settle = |extra: &[&str]| {
        let mut a = settle_args();
        a.extend(extra.iter().map(|x| x.to_string()));
        veriml(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let before = nonce(&url);
    let out = json_out(&settle(&["--gateway", &gw.url]));
    let outcomes: Vec<&str> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "settled",
            "already_settled",
            "already_settled",
            "already_settled",
            "settled"
        ],
        "{out}"
    );
    assert_eq!(nonce(&url), before + 2, "two transactions");
    // nothing new on a second run
    let again = json_out(&settle(&["--gateway", &gw.url]));
    assert_eq!(again["results"].as_array().unwrap().len(), 0);

    // the consumer acts on the settled output words, and on nothing else
    let receipt = &open_job["receipt"];
    let words: Vec<String> = receipt["evidence"]["proof"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| format!("0x{}", w.as_str().unwrap().trim_start_matches("0x")))
        .collect();
    let input_words = dep["input_words"].as_u64().unwrap() as usize;
    let output_arg = format!("[{}]", words[input_words..].join(","));
    let input_hash = receipt["input_hash"].as_str().unwrap();
    let mut wrong = words[input_words..].to_vec();
    wrong[0] = format!("0x{}", "00".repeat(31) + "05");
    reverts_with(
        &cast_call(
            &url,
            &consumer,
            "accept(bytes32,uint256[])",
            &[input_hash, &format!("[{}]", wrong.join(","))],
        ),
        "NotSettled(bytes32,bytes32)",
    );
    cast_send(
        &url,
        &consumer,
        "accept(bytes32,uint256[])",
        &[input_hash, &output_arg],
    );
    let chat_receipt = &chat_job["receipt"];
    let settled = ok(&cast_call(
        &url,
        &inference,
        "isSettled(bytes32,bytes32,bytes32)(bool)",
        &[
            &id_chat,
            chat_receipt["input_hash"].as_str().unwrap(),
            chat_receipt["output_hash"].as_str().unwrap(),
        ],
    ));
    assert_eq!(settled.trim(), "true");

    // tampered receipts: refused off-chain (nothing sent) and, forced on-chain, by the contracts
    let mut bad_open = receipt.clone();
    let last = words.len() - 1;
    bad_open["evidence"]["proof"]["instances"][last] = json!("00".repeat(31) + "07");
    let mut out_bytes = Vec::new();
    for w in bad_open["evidence"]["proof"]["instances"]
        .as_array()
        .unwrap()[input_words..]
        .iter()
    {
        out_bytes.extend(hex::decode(w.as_str().unwrap().trim_start_matches("0x")).unwrap());
    }
    bad_open["output_hash"] = json!(hex0x(&keccak(&out_bytes)));
    let mut bad_chat = chat_receipt.clone();
    let forged = "{\"choices\":[{\"message\":{\"content\":\"forged\"}}]}";
    bad_chat["output"] = json!(forged);
    bad_chat["output_hash"] = json!(hex0x(&keccak(forged.as_bytes())));
    bad_chat["evidence"]["receipt"]["response_hash"] = json!(hex0x(&keccak(forged.as_bytes())));
    let (p1, p2) = (t.join("bad_open.json"), t.join("bad_chat.json"));
    std::fs::write(&p1, bad_open.to_string()).unwrap();
    std::fs::write(&p2, bad_chat.to_string()).unwrap();
    let before = nonce(&url);
    let out = json_out(&settle(&[s(&p1), s(&p2)]));
    assert_eq!(out["invalid"], 2, "{out}");
    let reasons: Vec<&str> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("proof does not verify"), "{reasons:?}");
    assert!(reasons[1].contains("signature"), "{reasons:?}");
    assert_eq!(nonce(&url), before, "nothing sent");
    let bad_words: Vec<String> = bad_open["evidence"]["proof"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| format!("0x{}", w.as_str().unwrap().trim_start_matches("0x")))
        .collect();
    reverts_with(
        &cast_call(
            &url,
            &inference,
            "submitProof(bytes32,uint256[],bytes)",
            &[
                &id_tiny,
                &format!("[{}]", bad_words.join(",")),
                &format!(
                    "0x{}",
                    bad_open["evidence"]["proof"]["proof"].as_str().unwrap()
                ),
            ],
        ),
        "ProofRejected(bytes32)",
    );
    let r = &bad_chat["evidence"]["receipt"];
    let tuple = format!(
        "({},{},{},{},{},{})",
        r["chain_id"],
        r["model_id"].as_str().unwrap(),
        r["request_hash"].as_str().unwrap(),
        r["response_hash"].as_str().unwrap(),
        r["timestamp"],
        r["nonce"].as_str().unwrap()
    );
    reverts_with(
        &cast_call(
            &url,
            &inference,
            "submitReceipt(bytes32,(uint256,bytes32,bytes32,bytes32,uint64,bytes32),bytes)",
            &[
                &id_chat,
                &tuple,
                bad_chat["evidence"]["signature"].as_str().unwrap(),
            ],
        ),
        "UnknownKey(address)",
    );

    // the agent killed between sending and confirming: the next run settles that receipt once
    let (status, late) = post(
        &gw.url,
        &json!({"model": "chat", "input": {"messages": [{"role": "user", "content": "later"}]}}),
    )
    .await;
    assert_eq!(status, 200, "{late}");
    ok(&tool(
        "cast",
        &["rpc", "--rpc-url", &url, "evm_setAutomine", "false"],
    ));
    let before = nonce(&url);
    let mut agent = Command::new(env!("CARGO_BIN_EXE_veriml"))
        .args(settle_args())
        .args(["--gateway", &gw.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pool = ok(&tool("cast", &["rpc", "--rpc-url", &url, "txpool_status"]));
        let v: Value = serde_json::from_str(&pool).unwrap();
        if v["pending"] != "0x0" && v["pending"] != 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the agent sent nothing: {pool}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    // and the node loses the transaction: the next run sends the same signed bytes again
    ok(&tool(
        "cast",
        &["rpc", "--rpc-url", &url, "anvil_dropAllTransactions"],
    ));
    let pool = ok(&tool("cast", &["rpc", "--rpc-url", &url, "txpool_status"]));
    let v: Value = serde_json::from_str(&pool).unwrap();
    assert!(v["pending"] == "0x0" || v["pending"] == 0, "{pool}");
    ok(&tool(
        "cast",
        &["rpc", "--rpc-url", &url, "evm_setAutomine", "true"],
    ));
    let out = json_out(&settle(&["--gateway", &gw.url]));
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{out}");
    assert_eq!(results[0]["result"]["outcome"], "settled", "{out}");
    assert_eq!(nonce(&url), before + 1, "one transaction across both runs");
    let settled = ok(&cast_call(
        &url,
        &inference,
        "isSettled(bytes32,bytes32,bytes32)(bool)",
        &[
            &id_chat,
            late["receipt"]["input_hash"].as_str().unwrap(),
            late["receipt"]["output_hash"].as_str().unwrap(),
        ],
    ));
    assert_eq!(settled.trim(), "true");
}
