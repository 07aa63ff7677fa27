//! The gateway on loopback: bad requests each get a 4xx naming the problem; an open model's job
//! streams its progress and ends with a receipt that verifies; a closed model's request comes
//! back with a checked TEE receipt, and a runner or provider that is gone or slow gives a clear
//! 5xx (a runner whose measurement the catalogue does not list is not used); 200
//! concurrent requests are all answered (a job or 429) and every accepted job finishes once;
//! a job interrupted by a stop is finished once by the next start.

mod common;
use common::{open_folder, start_provider, start_runner, MEASUREMENT};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use veriml_gateway::jobs::{JobState, JobStore, Page, MAX_ATTEMPTS};
use veriml_gateway::server::{serve, Gateway, ServeConfig};
use veriml_gateway::{Catalogue, ClosedModel, Entry, InferenceReceipt, OpenModel};
use veriml_tee::SimulatedPlatform;

const CHAIN_ID: u64 = 84532;

async fn start(cat: Catalogue, cfg: ServeConfig) -> (String, Arc<Gateway>) {
    let gw = Gateway::new(cat, cfg).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let g = gw.clone();
    tokio::spawn(async move { serve(g, l, std::future::pending()).await.unwrap() });
    (url, gw)
}

fn digits_input() -> Value {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits_mlp/input.json"),
    )
    .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["input_data"][0].clone()
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let r = http
        .post(format!("{url}/v1/infer"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits (bounded) until the job is done or failed.
async fn finished(http: &reqwest::Client, url: &str, id: &str) -> Value {
    for _ in 0..1200 {
        let j: Value = http
            .get(format!("{url}/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["state"] == "done" || j["state"] == "failed" {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("job {id} did not finish in 5 minutes");
}

fn closed(provider: &str, model: &str, runner: &str) -> Entry {
    let m = hex::encode(MEASUREMENT);
    Entry::Closed(ClosedModel::new(provider, model, runner, &[m]).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_names_bad_requests_serves_both_kinds_and_bears_load() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("digits");
    std::fs::create_dir(&model_dir).unwrap();
    open_folder(&model_dir);
    let provider = start_provider("four", Duration::ZERO).await;
    let slow_provider = start_provider("late", Duration::from_secs(4)).await;
    // two guests of one simulated host; the gateway trusts its root certificate
    let platform = SimulatedPlatform::new(MEASUREMENT);
    let ark = platform.ark_der().to_vec();
    let runner = start_runner(&provider, CHAIN_ID, platform.clone()).await;
    let slow_runner = start_runner(&slow_provider, CHAIN_ID, platform.clone()).await;
    let dead_provider = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let orphan_runner = start_runner(&dead_provider, CHAIN_ID, platform).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut cat = Catalogue::default();
    let open = OpenModel::from_folder(&model_dir).unwrap();
    cat.add("digits", Entry::Open(open), false).unwrap();
    cat.add("chat", closed(&provider, "chat-large", &runner), false)
        .unwrap();
    cat.add("gone", closed(&provider, "chat-large", &dead), false)
        .unwrap();
    cat.add(
        "orphan",
        closed(&dead_provider, "chat-orphan", &orphan_runner),
        false,
    )
    .unwrap();
    // the right runner, but the catalogue allows another measurement only
    let other = ClosedModel::new(&provider, "chat-large", &runner, &["33".repeat(48)]).unwrap();
    cat.add("elsewhere", Entry::Closed(other), false).unwrap();
    cat.add(
        "slow",
        closed(&slow_provider, "chat-slow", &slow_runner),
        false,
    )
    .unwrap();
    let cfg = ServeConfig {
        db: dir.path().join("jobs.sqlite"),
        workers: 1,
        max_queue: 8,
        max_body_bytes: 64 << 10,
        runner_timeout: Duration::from_secs(1),
        retry_after_s: 3,
        tee_simulated_root: Some(ark),
        ..ServeConfig::default()
    };
    let (url, _gw) = start(cat.clone(), cfg).await;
    let http = reqwest::Client::new();
    let input = digits_input();
    let n = input.as_array().unwrap().len();

    // bad requests: status, kind, and the message names the problem
    let mut out_of_range = input.clone();
    out_of_range[3] = json!(7.5);
    let mut not_number = input.clone();
    not_number[0] = json!("x");
    let cases: Vec<(String, StatusCode, &str, String)> = vec![
        (
            format!("{{\"model\": \"digits\", \"input\": [{}]}}", "0.5,".repeat(40_000) + "0.5"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "65536-byte limit".into(),
        ),
        ("{\"model\": \"digits\", \"input\": [1,".into(), StatusCode::BAD_REQUEST, "malformed_request", "EOF".into()),
        ("[1, 2]".into(), StatusCode::BAD_REQUEST, "malformed_request", "expected".into()),
        (
            json!({"model": "nope", "input": input}).to_string(),
            StatusCode::NOT_FOUND,
            "unknown_model",
            "no model `nope`".into(),
        ),
        (
            json!({"model": "digits", "input": &input.as_array().unwrap()[..10]}).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_input_shape",
            "`input` has shape [10]; model `digits` takes".into(),
        ),
        (
            json!({"model": "digits", "input": [[1.0, 2.0], [3.0]]}).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_input",
            "array of numbers".into(),
        ),
        (
            json!({"model": "digits", "input": not_number}).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_input",
            "array of numbers".into(),
        ),
        (
            json!({"model": "digits", "input": out_of_range}).to_string(),
            StatusCode::BAD_REQUEST,
            "input_out_of_range",
            "input value 3 = 7.5 is outside the range [0, 1]".into(),
        ),
        (
            json!({"model": "chat", "input": [1, 2]}).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_input",
            "chat request object".into(),
        ),
        (
            json!({"model": "chat", "input": {"messages": [{"role": "user", "content": "hi"}], "model": "other"}}).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_input",
            "`input.model` is \"other\"".into(),
        ),
    ];
    for (body, status, kind, words) in cases {
        let (s, v) = post(&http, &url, body.clone()).await;
        assert_eq!(s, status, "{v} for {}", &body[..body.len().min(80)]);
        assert_eq!(v["error"], kind, "{v}");
        assert!(v["message"].as_str().unwrap().contains(&words), "{v}");
    }
    let r = http
        .get(format!("{url}/v1/jobs/0123"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // a malformed query string: a 400 in the same JSON shape, naming the parameter
    for (query, words) in [("limit=-1", "limit"), ("state=lost", "state `lost`")] {
        let r = http
            .get(format!("{url}/v1/jobs?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "bad_query", "{v}");
        assert!(v["message"].as_str().unwrap().contains(words), "{v}");
    }

    // a closed model: the runner's signed answer as a receipt, checked; gone and slow runners
    let chat =
        json!({"model": "chat", "input": {"messages": [{"role": "user", "content": "2+2?"}]}});
    let (s, job) = post(&http, &url, chat.to_string()).await;
    assert_eq!(s, StatusCode::OK, "{job}");
    assert_eq!(job["state"], "done");
    let receipt = InferenceReceipt::from_json(&job["receipt"].to_string()).unwrap();
    receipt.verify(&cat, false).unwrap();
    assert!(receipt.output.as_str().unwrap().contains("four"));
    let (s, v) = post(
        &http,
        &url,
        json!({"model": "gone", "input": chat["input"]}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["error"], "runner_unreachable");
    assert!(v["message"].as_str().unwrap().contains(&dead), "{v}");
    // a provider that went away: the runner says so, and the gateway passes it on
    let (s, v) = post(
        &http,
        &url,
        json!({"model": "orphan", "input": chat["input"]}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["error"], "runner_error");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("cannot reach the provider"), "{v}");
    // a runner whose measurement the catalogue does not list is not trusted
    let (s, v) = post(
        &http,
        &url,
        json!({"model": "elsewhere", "input": chat["input"]}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["error"], "runner_unattested");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("model `elsewhere`")
            && msg.contains("is not attested")
            && msg.contains("measurement"),
        "{v}"
    );
    let t = std::time::Instant::now();
    let (s, v) = post(
        &http,
        &url,
        json!({"model": "slow", "input": chat["input"]}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(v["error"], "runner_timeout");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        t.elapsed()
    );

    // an open model: 202 with a job, its event stream ends with the receipt, which verifies
    let (s, job) = post(
        &http,
        &url,
        json!({"model": "digits", "input": input}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let mut events = http
        .get(format!("{url}/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let mut seen = Vec::new();
    'stream: while let Some(chunk) = tokio::time::timeout(Duration::from_secs(120), events.chunk())
        .await
        .expect("an event within 2 minutes")
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                let j: Value = serde_json::from_str(data).unwrap();
                assert_eq!(j["id"], id.as_str());
                seen.push(j["state"].as_str().unwrap().to_string());
                if j["state"] == "done" {
                    let r = InferenceReceipt::from_json(&j["receipt"].to_string()).unwrap();
                    r.verify(&cat, true).unwrap();
                    break 'stream;
                }
            }
        }
    }
    assert_eq!(seen.last().map(String::as_str), Some("done"), "{seen:?}");
    // a nested input of the model's shape (8x8, leading 1s aside) is accepted as well; one of
    // another shape with the same number of values is not
    let rows: Vec<Value> = input
        .as_array()
        .unwrap()
        .chunks(8)
        .map(|r| json!(r))
        .collect();
    let nested = json!({"model": "digits", "input": [[rows]]});
    let (s, v) = post(&http, &url, nested.to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let flat_in_a_row = json!({"model": "digits", "input": [input.clone()]});
    let (s, v) = post(&http, &url, flat_in_a_row.to_string()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("has shape [1, 64]; model `digits` takes [1, 1, 8, 8]"),
        "{v}"
    );
    assert_eq!(n, 64);

    // 200 concurrent requests: each gets a job or 429 with Retry-After; none is lost
    let body = json!({"model": "digits", "input": input}).to_string();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let r = http
                    .post(format!("{url}/v1/infer"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                let status = r.status();
                (status, retry, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (status, retry, v) = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("answered within 2 minutes")
            .unwrap();
        match status {
            StatusCode::ACCEPTED => accepted.push(v["id"].as_str().unwrap().to_string()),
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(retry.as_deref(), Some("3"));
                assert_eq!(v["error"], "queue_full");
                refused += 1;
            }
            s => panic!("unexpected {s}: {v}"),
        }
    }
    assert_eq!(accepted.len() + refused, 200);
    assert!(
        refused > 0 && accepted.len() >= 7,
        "{} accepted",
        accepted.len()
    );
    for id in &accepted {
        let j = finished(&http, &url, id).await;
        assert_eq!(j["state"], "done", "{j}");
        assert_eq!(j["attempts"], 1);
    }
    // each finished job is listed once, in order
    let list: Value = http
        .get(format!("{url}/v1/jobs?state=done&limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    for id in &accepted {
        assert_eq!(ids.iter().filter(|x| **x == id.as_str()).count(), 1);
    }
    let health: Value = http
        .get(format!("{url}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["jobs"]["queued"], 0, "{health}");
    assert_eq!(health["jobs"]["failed"], 0, "{health}");
}

#[test]
fn the_job_store_finishes_each_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.sqlite");
    let (store, requeued) = JobStore::open(&db).unwrap();
    assert_eq!(requeued, 0);
    // one process at a time
    let e = JobStore::open(&db).unwrap_err().to_string();
    assert!(e.contains("another process"), "{e}");
    let a = store.enqueue("m", &json!([1]), 2).unwrap().unwrap();
    let b = store.enqueue("m", &json!([2]), 2).unwrap().unwrap();
    assert!(
        store.enqueue("m", &json!([3]), 2).unwrap().is_none(),
        "queue full"
    );
    let first = store.claim().unwrap().unwrap();
    assert_eq!((first.id.as_str(), first.attempt), (a.id.as_str(), 1));
    assert_eq!(first.input, json!([1]));
    // the process stops while proving: the next start queues it again, oldest first
    drop(store);
    let (store, requeued) = JobStore::open(&db).unwrap();
    assert_eq!(requeued, 1);
    let again = store.claim().unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempt), (a.id.as_str(), 2));
    // the stale attempt cannot finish or move it; the live one finishes it once
    assert!(!store.progress(&first, "proving", 0.5).unwrap());
    assert!(!store.finish(&first, Ok(&json!({"stale": true}))).unwrap());
    assert!(store.finish(&again, Ok(&json!({"r": 1}))).unwrap());
    assert!(!store.finish(&again, Err("late")).unwrap());
    let done = store.get(&a.id).unwrap().unwrap();
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.receipt, Some(json!({"r": 1})));
    assert_eq!(done.attempts, 2);
    let next = store.claim().unwrap().unwrap();
    assert_eq!(next.id, b.id);
    assert!(store.claim().unwrap().is_none());
    assert!(store.finish(&next, Err("bad")).unwrap());
    assert_eq!(
        store.get(&b.id).unwrap().unwrap().error.as_deref(),
        Some("bad")
    );
    assert_eq!(store.counts().unwrap(), [0, 0, 1, 1]);
    // jobs are numbered in the order they finish, not the order they came in
    assert_eq!(store.get(&a.id).unwrap().unwrap().finished, Some(1));
    assert_eq!(store.get(&b.id).unwrap().unwrap().finished, Some(2));
    let after_first = store.list(None, Page::FinishedAfter(1), 10).unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].id, b.id);

    // a job that takes the process down at every start is failed after MAX_ATTEMPTS starts
    let c = store.enqueue("m", &json!([3]), 2).unwrap().unwrap();
    drop(store);
    for attempt in 1..=MAX_ATTEMPTS {
        let (store, requeued) = JobStore::open(&db).unwrap();
        assert_eq!(requeued, (attempt > 1) as usize);
        let claim = store.claim().unwrap().unwrap();
        assert_eq!((claim.id.as_str(), claim.attempt), (c.id.as_str(), attempt));
    }
    let (store, requeued) = JobStore::open(&db).unwrap();
    assert_eq!(requeued, 0);
    let failed = store.get(&c.id).unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.error.unwrap().contains("3 times"));
    assert_eq!(failed.finished, Some(3));
    assert!(store.claim().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_by_a_stop_is_finished_once_by_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    open_folder(dir.path());
    let mut cat = Catalogue::default();
    cat.add(
        "digits",
        Entry::Open(OpenModel::from_folder(dir.path()).unwrap()),
        false,
    )
    .unwrap();
    let db = dir.path().join("jobs.sqlite");
    // a gateway accepted the job and a worker claimed it when the process died
    let id = {
        let (store, _) = JobStore::open(&db).unwrap();
        let job = store
            .enqueue("digits", &digits_input(), 8)
            .unwrap()
            .unwrap();
        let claim = store.claim().unwrap().unwrap();
        store.progress(&claim, "proving", 0.2).unwrap();
        job.id
    };
    let cfg = ServeConfig {
        db: db.clone(),
        ..ServeConfig::default()
    };
    let (url, gw) = start(cat.clone(), cfg).await;
    let http = reqwest::Client::new();
    let j = finished(&http, &url, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["attempts"], 2);
    InferenceReceipt::from_json(&j["receipt"].to_string())
        .unwrap()
        .verify(&cat, true)
        .unwrap();
    assert_eq!(gw.store().counts().unwrap(), [0, 0, 1, 0]);
}
