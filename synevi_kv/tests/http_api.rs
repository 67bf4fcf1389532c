//! Golden tests of the HTTP API: every endpoint's status codes and JSON bodies, the error
//! cases included, against nodes running in this process (gRPC on loopback, memory store).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};
use synevi::Ulid;
use synevi_kv::client::{key_path, KvClient, RawResponse};
use synevi_kv::identity::default_node_id;
use synevi_kv::server::{KvServer, NodeSettings, Peer, StoreKind};
use synevi_kv::state::Limits;

const READY_WITHIN: Duration = Duration::from_secs(20);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A node on free ports with a memory store; `peers` may point nowhere.
fn settings(peers: Vec<Peer>, limits: Limits, timeout_ms: u64) -> NodeSettings {
    let grpc = common::free_ports(1)[0];
    NodeSettings {
        serial: 1,
        node_id: default_node_id(1),
        grpc_listen: loopback(grpc),
        grpc_url: format!("http://127.0.0.1:{grpc}"),
        http_listen: loopback(0),
        peers,
        store: StoreKind::Memory,
        store_path: std::env::temp_dir().join("unused"),
        limits,
        transaction_timeout_ms: timeout_ms,
    }
}

/// A single-node cluster: its own majority, ready at once.
async fn single_node(limits: Limits) -> (KvServer, KvClient) {
    let server = KvServer::start(settings(Vec::new(), limits, 5_000))
        .await
        .expect("the node starts");
    assert!(
        server.wait_ready(READY_WITHIN).await,
        "the node became ready"
    );
    let client =
        KvClient::new(&server.http_addr().to_string(), Duration::from_secs(10)).expect("client");
    (server, client)
}

async fn call(client: &KvClient, method: Method, path: &str, body: Option<&str>) -> RawResponse {
    client
        .request(method, path, body.map(str::to_string))
        .await
        .unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Asserts the status and the exact JSON body.
async fn golden(
    client: &KvClient,
    method: Method,
    path: &str,
    body: Option<&str>,
    status: u16,
    expected: Value,
) {
    let response = call(client, method.clone(), path, body).await;
    assert_eq!(
        (response.status, response.json()),
        (status, expected),
        "{method} {path} {body:?} answered {}",
        response.body
    );
}

/// Asserts the status and that the body is `{"error": <message starting with prefix>}`.
async fn golden_error(
    client: &KvClient,
    method: Method,
    path: &str,
    body: Option<&str>,
    status: u16,
    prefix: &str,
) {
    let response = call(client, method.clone(), path, body).await;
    let json = response.json();
    let message = json
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert_eq!(
        response.status, status,
        "{method} {path}: {}",
        response.body
    );
    assert!(
        message.starts_with(prefix),
        "{method} {path}: expected an error starting with {prefix:?}, got {}",
        response.body
    );
    assert_eq!(
        json.as_object().map(|o| o.len()),
        Some(1),
        "only \"error\": {}",
        response.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_endpoints_answer_the_documented_json() {
    let (server, client) = single_node(Limits::default()).await;
    let c = &client;

    golden(
        c,
        Method::GET,
        "/kv/a",
        None,
        404,
        json!({"error": "key \"a\" not found"}),
    )
    .await;
    golden(
        c,
        Method::PUT,
        "/kv/a",
        Some(r#"{"value":"1"}"#),
        200,
        json!({"key": "a", "value": "1", "previous": null}),
    )
    .await;
    golden(
        c,
        Method::PUT,
        "/kv/a",
        Some(r#"{"value":"2"}"#),
        200,
        json!({"key": "a", "value": "2", "previous": "1"}),
    )
    .await;
    golden(
        c,
        Method::GET,
        "/kv/a",
        None,
        200,
        json!({"key": "a", "value": "2"}),
    )
    .await;
    golden(
        c,
        Method::POST,
        "/kv/a/cas",
        Some(r#"{"expected":"1","value":"3"}"#),
        409,
        json!({"current": "2"}),
    )
    .await;
    golden(
        c,
        Method::POST,
        "/kv/a/cas",
        Some(r#"{"expected":"2","value":"3"}"#),
        200,
        json!({"key": "a", "value": "3"}),
    )
    .await;
    golden(
        c,
        Method::POST,
        "/kv/b/cas",
        Some(r#"{"expected":null,"value":"x"}"#),
        200,
        json!({"key": "b", "value": "x"}),
    )
    .await;
    golden(
        c,
        Method::POST,
        "/kv/b/cas",
        Some(r#"{"expected":null,"value":"y"}"#),
        409,
        json!({"current": "x"}),
    )
    .await;
    golden(
        c,
        Method::DELETE,
        "/kv/a",
        None,
        200,
        json!({"previous": "3"}),
    )
    .await;
    golden(
        c,
        Method::DELETE,
        "/kv/a",
        None,
        404,
        json!({"error": "key \"a\" not found"}),
    )
    .await;
    golden(
        c,
        Method::POST,
        "/kv/a/cas",
        Some(r#"{"expected":"3","value":"4"}"#),
        409,
        json!({"current": null}),
    )
    .await;
    // The empty string is a value like any other.
    golden(
        c,
        Method::PUT,
        "/kv/e",
        Some(r#"{"value":""}"#),
        200,
        json!({"key": "e", "value": "", "previous": null}),
    )
    .await;
    golden(
        c,
        Method::GET,
        "/kv/e",
        None,
        200,
        json!({"key": "e", "value": ""}),
    )
    .await;

    // Keys are percent-decoded path segments: any UTF-8, slashes included.
    let key = "a b/ü?#%";
    golden(
        c,
        Method::PUT,
        &key_path(key, ""),
        Some(r#"{"value":"odd"}"#),
        200,
        json!({"key": key, "value": "odd", "previous": null}),
    )
    .await;
    golden(
        c,
        Method::GET,
        &key_path(key, ""),
        None,
        200,
        json!({"key": key, "value": "odd"}),
    )
    .await;

    // The answer is JSON with its content type, fields in the documented order.
    let response = call(c, Method::PUT, "/kv/order", Some(r#"{"value":"v"}"#)).await;
    assert_eq!(
        response.body.trim_end(),
        r#"{"key":"order","value":"v","previous":null}"#
    );

    // Through the typed client too.
    assert_eq!(client.put("t", "1").await.expect("put"), None);
    assert_eq!(client.cas("t", Some("1"), "2").await.expect("cas"), Ok(()));
    assert_eq!(
        client.cas("t", None, "3").await.expect("cas"),
        Err(Some("2".into()))
    );
    assert_eq!(client.get("t").await.expect("get"), Some("2".into()));
    assert_eq!(client.delete("t").await.expect("delete"), Some("2".into()));
    assert_eq!(client.get("t").await.expect("get"), None);

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_with_a_message() {
    let (server, client) = single_node(Limits::default()).await;
    let c = &client;
    let bad = |body: &'static str| Some(body);

    // Malformed or mistyped bodies.
    golden_error(
        c,
        Method::PUT,
        "/kv/k",
        bad(r#"{"value":"#),
        400,
        "malformed JSON body: EOF while parsing",
    )
    .await;
    golden_error(
        c,
        Method::PUT,
        "/kv/k",
        bad(""),
        400,
        "malformed JSON body: EOF while parsing",
    )
    .await;
    golden_error(
        c,
        Method::PUT,
        "/kv/k",
        bad("value=v"),
        400,
        "malformed JSON body: expected value",
    )
    .await;
    golden(
        c,
        Method::PUT,
        "/kv/k",
        bad(r#"["v"]"#),
        400,
        json!({"error": "the body must be a JSON object with the fields \"value\""}),
    )
    .await;
    golden(
        c,
        Method::PUT,
        "/kv/k",
        bad(r#"{"value":1}"#),
        400,
        json!({"error": "\"value\" must be a string"}),
    )
    .await;
    golden(
        c,
        Method::PUT,
        "/kv/k",
        bad(r#"{"value":null}"#),
        400,
        json!({"error": "\"value\" must be a string"}),
    )
    .await;
    golden(
        c,
        Method::PUT,
        "/kv/k",
        bad("{}"),
        400,
        json!({"error": "missing field \"value\""}),
    )
    .await;
    golden(
        c,
        Method::PUT,
        "/kv/k",
        bad(r#"{"value":"v","ttl":3}"#),
        400,
        json!({"error": "unknown field \"ttl\"; the body takes \"value\""}),
    )
    .await;
    golden(
        c,
        Method::POST,
        "/kv/k/cas",
        bad(r#"{"value":"v"}"#),
        400,
        json!({"error": "missing field \"expected\""}),
    )
    .await;
    golden(
        c,
        Method::POST,
        "/kv/k/cas",
        bad(r#"{"expected":"x"}"#),
        400,
        json!({"error": "missing field \"value\""}),
    )
    .await;
    golden(
        c,
        Method::POST,
        "/kv/k/cas",
        bad(r#"{"expected":5,"value":"v"}"#),
        400,
        json!({"error": "\"expected\" must be a string or null"}),
    )
    .await;
    golden(
        c,
        Method::POST,
        "/kv/k/cas",
        bad(r#"{"expected":null,"value":"v","x":1}"#),
        400,
        json!({"error": "unknown field \"x\"; the body takes \"expected\" and \"value\""}),
    )
    .await;
    golden_error(c, Method::GET, "/kv/%FF", None, 400, "bad key in the path").await;

    // Limits: a key of 1 KiB and a value of 1 MiB are accepted, one byte more is not.
    let key_max = "k".repeat(1024);
    golden(
        c,
        Method::PUT,
        &format!("/kv/{key_max}"),
        bad(r#"{"value":"v"}"#),
        200,
        json!({"key": key_max, "value": "v", "previous": null}),
    )
    .await;
    let key_over = "k".repeat(1025);
    for method in [Method::GET, Method::DELETE] {
        golden(
            c,
            method,
            &format!("/kv/{key_over}"),
            None,
            400,
            json!({"error": "key is 1025 bytes, over the limit of 1024 bytes"}),
        )
        .await;
    }
    let value_max = "v".repeat(1024 * 1024);
    let response = call(
        c,
        Method::PUT,
        "/kv/big",
        Some(&json!({ "value": value_max }).to_string()),
    )
    .await;
    assert_eq!(response.status, 200, "a value of exactly 1 MiB is accepted");
    let value_over = "v".repeat(1024 * 1024 + 1);
    let body = json!({ "value": value_over }).to_string();
    golden(
        c,
        Method::PUT,
        "/kv/big",
        Some(&body),
        400,
        json!({"error": "\"value\" is 1048577 bytes, over the limit of 1048576 bytes"}),
    )
    .await;
    let body = json!({ "expected": value_over, "value": "v" }).to_string();
    golden(
        c,
        Method::POST,
        "/kv/big/cas",
        Some(&body),
        400,
        json!({"error": "\"expected\" is 1048577 bytes, over the limit of 1048576 bytes"}),
    )
    .await;
    // Multi-byte characters count in bytes.
    let body = json!({ "value": "ü".repeat(512 * 1024 + 1) }).to_string();
    golden(
        c,
        Method::PUT,
        "/kv/big",
        Some(&body),
        400,
        json!({"error": "\"value\" is 1048578 bytes, over the limit of 1048576 bytes"}),
    )
    .await;

    // Unknown endpoints and methods.
    golden(c, Method::GET, "/nope", None, 404, json!({"error":
        "no endpoint GET /nope; the API has /kv/{key}, /kv/{key}/cas, /health, /cluster, /metrics"})).await;
    golden(
        c,
        Method::GET,
        "/kv/",
        None,
        404,
        json!({"error":
        "no endpoint GET /kv/; the API has /kv/{key}, /kv/{key}/cas, /health, /cluster, /metrics"}),
    )
    .await;
    golden(
        c,
        Method::PATCH,
        "/kv/k",
        None,
        405,
        json!({"error": "method PATCH is not allowed on /kv/k"}),
    )
    .await;
    golden(
        c,
        Method::GET,
        "/kv/k/cas",
        None,
        405,
        json!({"error": "method GET is not allowed on /kv/k/cas"}),
    )
    .await;
    golden(
        c,
        Method::POST,
        "/health",
        None,
        405,
        json!({"error": "method POST is not allowed on /health"}),
    )
    .await;

    // None of it reached consensus or changed anything.
    golden(
        c,
        Method::GET,
        "/kv/k",
        None,
        404,
        json!({"error": "key \"k\" not found"}),
    )
    .await;
    let metrics = call(c, Method::GET, "/metrics", None).await.body;
    assert!(
        metrics.contains("synevi_kv_requests_total{op=\"put\",status=\"400\"} 10\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("status=\"5"),
        "no 5xx for bad input:\n{metrics}"
    );
    assert!(
        metrics.contains("synevi_network_inbound_streams_ended_total{how=\"failed\"} 0\n"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_configurable_and_oversized_bodies_refused() {
    let limits = Limits {
        key_bytes_max: 4,
        value_bytes_max: 8,
    };
    let (server, client) = single_node(limits).await;
    let c = &client;
    golden(
        c,
        Method::PUT,
        "/kv/abcd",
        Some(r#"{"value":"12345678"}"#),
        200,
        json!({"key": "abcd", "value": "12345678", "previous": null}),
    )
    .await;
    golden(
        c,
        Method::PUT,
        "/kv/abcde",
        Some(r#"{"value":"1"}"#),
        400,
        json!({"error": "key is 5 bytes, over the limit of 4 bytes"}),
    )
    .await;
    golden(
        c,
        Method::PUT,
        "/kv/abcd",
        Some(r#"{"value":"123456789"}"#),
        400,
        json!({"error": "\"value\" is 9 bytes, over the limit of 8 bytes"}),
    )
    .await;
    // A body far beyond anything valid is refused before it is parsed.
    let huge = json!({ "value": "x".repeat(64 * 1024) }).to_string();
    golden_error(
        c,
        Method::PUT,
        "/kv/abcd",
        Some(&huge),
        400,
        "cannot read the body",
    )
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_cluster_and_metrics_of_a_ready_node() {
    let (server, client) = single_node(Limits::default()).await;
    let c = &client;
    golden(
        c,
        Method::GET,
        "/health",
        None,
        200,
        json!({"status": "ready", "serial": 1}),
    )
    .await;
    assert_eq!(client.put("k", "v").await.expect("put"), None);
    assert_eq!(client.get("k").await.expect("get"), Some("v".into()));
    // The get's answer came from the executor; the node counts it as applied a moment later.
    let mut status = server
        .state()
        .backend()
        .expect("a running node")
        .watch_status();
    // The guard `wait_for` returns holds the status locked: dropped at once.
    let counted = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|status| status.applied_count >= 3),
    )
    .await
    .is_ok_and(|waited| waited.is_ok());
    assert!(counted, "the node counts its executions");

    let cluster = call(c, Method::GET, "/cluster", None).await;
    assert_eq!(cluster.status, 200);
    let mut json = cluster.json();
    let applied = json["applied"].as_u64().expect("applied is a number");
    assert!(
        applied >= 3,
        "the probe, the put and the get executed: {applied}"
    );
    json["applied"] = Value::Null;
    let url = server.state().grpc_url().to_string();
    assert_eq!(
        json,
        json!({
            "serial": 1,
            "node_id": default_node_id(1).to_string(),
            "status": "ready",
            "applied": null,
            "members": [
                {"serial": 1, "node_id": default_node_id(1).to_string(), "url": url, "state": "self"}
            ],
        })
    );

    let metrics = call(c, Method::GET, "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body;
    for line in [
        "synevi_kv_ready 1",
        "synevi_kv_requests_total{op=\"put\",status=\"200\"} 1",
        "synevi_kv_requests_total{op=\"get\",status=\"200\"} 1",
        "synevi_kv_transaction_duration_seconds_count{op=\"put\"} 1",
        "synevi_kv_transaction_duration_seconds_bucket{op=\"get\",le=\"+Inf\"} 1",
        "synevi_transactions_committed_total{path=\"fast\"} ",
        "synevi_transactions_committed_total{path=\"slow\"} 0",
        "synevi_transactions_committed_total{path=\"recovery\"} 0",
        "synevi_recoveries_started_total 0",
        "synevi_store_transactions ",
        "synevi_kv_keys 1",
        "synevi_kv_data_bytes 2",
        "# TYPE synevi_kv_transaction_duration_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "no line {line:?} in\n{text}"
        );
    }
    let fast: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("synevi_transactions_committed_total{path=\"fast\"} "))
        .and_then(|v| v.parse().ok())
        .expect("fast path count");
    assert!(
        fast >= 3,
        "a single node commits everything on the fast path: {fast}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_health_and_requests_are_503() {
    // Two peers that do not exist: this node can never reach a majority (2 of 3).
    let dead = common::free_ports(2);
    let peers = dead
        .iter()
        .zip(2u16..)
        .map(|(port, serial)| Peer {
            serial,
            node_id: Ulid::new(),
            url: format!("http://127.0.0.1:{port}"),
        })
        .collect();
    let server = KvServer::start(settings(peers, Limits::default(), 300))
        .await
        .expect("the node starts");
    let client =
        KvClient::new(&server.http_addr().to_string(), Duration::from_secs(10)).expect("client");
    let c = &client;

    let health = call(c, Method::GET, "/health", None).await;
    assert_eq!(health.status, 503, "{}", health.body);
    let json = health.json();
    assert_eq!(
        (&json["status"], &json["serial"]),
        (&json!("starting"), &json!(1))
    );
    assert!(json["error"].is_string(), "{}", health.body);

    let started = Instant::now();
    golden_error(
        c,
        Method::GET,
        "/kv/a",
        None,
        503,
        "unavailable: no quorum reachable",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after the 300 ms timeout"
    );
    golden_error(
        c,
        Method::PUT,
        "/kv/a",
        Some(r#"{"value":"v"}"#),
        503,
        "unavailable: no quorum reachable",
    )
    .await;
    golden_error(
        c,
        Method::POST,
        "/kv/a/cas",
        Some(r#"{"expected":null,"value":"v"}"#),
        503,
        "unavailable: no quorum reachable",
    )
    .await;
    golden_error(
        c,
        Method::DELETE,
        "/kv/a",
        None,
        503,
        "unavailable: no quorum reachable",
    )
    .await;
    // Bad input is still a 400, checked before consensus.
    golden(
        c,
        Method::PUT,
        "/kv/a",
        Some("{"),
        400,
        json!({"error": "malformed JSON body: EOF while parsing an object at line 1 column 1"}),
    )
    .await;

    let metrics = call(c, Method::GET, "/metrics", None).await.body;
    assert!(metrics.contains("synevi_kv_ready 0\n"), "{metrics}");
    assert!(
        metrics.contains("synevi_kv_requests_total{op=\"get\",status=\"503\"} 1\n"),
        "{metrics}"
    );

    // The members are probed and found unreachable.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let json = call(c, Method::GET, "/cluster", None).await.json();
        let states: Vec<&str> = json["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|member| member["state"].as_str().unwrap_or_default())
            .collect();
        if states == ["self", "unreachable", "unreachable"] {
            assert_eq!(json["status"], json!("starting"));
            assert!(json["members"][1]["error"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "members not probed: {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}
