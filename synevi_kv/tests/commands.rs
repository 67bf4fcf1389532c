//! The `synevi-kv` binary's commands: `node` (settings from flags, environment and a TOML
//! file; identity kept in the data directory), the CLI client, and `cluster` (clean stop on
//! Ctrl-C, data back on the next run).

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{free_ports, signal, wait_exit, wait_healthy, Process, BINARY};
use serde_json::{json, Value};
use synevi_kv::client::KvClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const STARTUP_LIMIT: Duration = Duration::from_secs(30);
const EXIT_LIMIT: Duration = Duration::from_secs(20);

/// Runs the CLI client; returns (exit code, stdout as JSON, stderr).
async fn cli(args: &[&str], envs: &[(&str, &str)]) -> (i32, Value, String) {
    let output: Output = Command::new(BINARY)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run synevi-kv");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        output.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn node_args(config: &Path, http: u16) -> Vec<String> {
    vec![
        "node".into(),
        "--config".into(),
        config.display().to_string(),
        "--http".into(),
        format!("127.0.0.1:{http}"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_command_takes_flags_env_and_file_and_the_cli_client_talks_to_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let [grpc, http] = free_ports(2)[..] else {
        unreachable!("two ports")
    };
    let config = dir.path().join("node.toml");
    // The serial and the gRPC address come from the file, the HTTP address from a flag,
    // the data directory from the environment.
    std::fs::write(
        &config,
        format!("serial = 1\nlisten = \"127.0.0.1:{grpc}\"\ntimeout_ms = 5000\n"),
    )
    .expect("write the config");
    let data = dir.path().join("data");
    let envs = [("SYNEVI_DATA_DIR", data.display().to_string())];
    let log = dir.path().join("node.log");
    let mut node = Process::start(&node_args(&config, http), &envs, &log);
    let addr = format!("http://127.0.0.1:{http}");
    if let Err(error) = wait_healthy(&addr, STARTUP_LIMIT).await {
        panic!("{error}\n{}", node.log_tail(30));
    }
    let identity = std::fs::read_to_string(data.join("identity.toml")).expect("identity written");
    assert!(identity.contains("serial = 1"), "{identity}");
    assert!(data.join("lmdb").is_dir(), "LMDB under the data directory");

    let a = addr.as_str();
    assert_eq!(
        cli(&["put", "--addr", a, "k", "v"], &[]).await,
        (
            0,
            json!({"key": "k", "value": "v", "previous": null}),
            String::new()
        )
    );
    assert_eq!(
        cli(&["get", "--addr", a, "k"], &[]).await,
        (0, json!({"key": "k", "value": "v"}), String::new())
    );
    assert_eq!(
        cli(&["get", "--addr", a, "missing"], &[]).await,
        (
            1,
            json!({"error": "key \"missing\" not found"}),
            String::new()
        )
    );
    assert_eq!(
        cli(&["cas", "--addr", a, "k", "new", "--expected", "old"], &[]).await,
        (1, json!({"current": "v"}), String::new())
    );
    assert_eq!(
        cli(&["cas", "--addr", a, "k", "new", "--expected", "v"], &[]).await,
        (0, json!({"key": "k", "value": "new"}), String::new())
    );
    assert_eq!(
        cli(&["cas", "--addr", a, "k2", "x", "--expect-absent"], &[]).await,
        (0, json!({"key": "k2", "value": "x"}), String::new())
    );
    // The address from the environment.
    assert_eq!(
        cli(&["delete", "k"], &[("SYNEVI_ADDR", a)]).await,
        (0, json!({"previous": "new"}), String::new())
    );
    assert_eq!(
        cli(&["delete", "k"], &[("SYNEVI_ADDR", a)]).await,
        (1, json!({"error": "key \"k\" not found"}), String::new())
    );
    // Usage errors and unreachable nodes are exit code 2, with a message on stderr.
    let (code, _, stderr) = cli(&["cas", "--addr", a, "k", "x"], &[]).await;
    assert_eq!(
        code, 2,
        "a CAS needs --expected or --expect-absent: {stderr}"
    );
    let closed = format!("http://127.0.0.1:{}", free_ports(1)[0]);
    let (code, _, stderr) = cli(&["get", "--addr", &closed, "k"], &[]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    let (code, _, stderr) = cli(&["get", "--addr", "ftp://x", "k"], &[]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("bad address"), "{stderr}");

    // SIGTERM stops the node cleanly.
    signal(&node.child, libc::SIGTERM);
    let status = wait_exit(&mut node.child, EXIT_LIMIT)
        .await
        .expect("the node exits");
    assert!(status.success(), "{status}\n{}", node.log_tail(30));

    // The same settings bring the node back with its data and its identity.
    let mut node = Process::start(&node_args(&config, http), &envs, &log);
    if let Err(error) = wait_healthy(&addr, STARTUP_LIMIT).await {
        panic!("{error}\n{}", node.log_tail(30));
    }
    let client = KvClient::new(a, Duration::from_secs(10)).expect("client");
    assert_eq!(client.get("k2").await.expect("get"), Some("x".into()));
    assert_eq!(client.get("k").await.expect("get"), None);
    signal(&node.child, libc::SIGTERM);
    let status = wait_exit(&mut node.child, EXIT_LIMIT)
        .await
        .expect("the node exits");
    assert!(status.success(), "{status}");

    // Another serial on the same data directory is refused, with a message naming both.
    let [http2] = free_ports(1)[..] else {
        unreachable!("one port")
    };
    let (code, _, stderr) = {
        let output = Command::new(BINARY)
            .args(node_args(&config, http2))
            .args(["--serial", "2", "--store", "lmdb"])
            .env("SYNEVI_DATA_DIR", &data)
            .output()
            .await
            .expect("run synevi-kv");
        (
            output.status.code().unwrap_or(-1),
            (),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("belongs to node 1"), "{stderr}");
    // A node without a serial anywhere is refused too.
    let (code, _, stderr) = cli(&["node", "--store", "memory"], &[]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("missing the node's serial"), "{stderr}");
}

/// A running `synevi-kv cluster`, its stdout read line by line.
struct ClusterRun {
    process: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    http: Vec<String>,
}

impl ClusterRun {
    async fn start(data: &Path, log: &Path) -> ClusterRun {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log");
        let mut process = Command::new(BINARY)
            .args([
                "cluster",
                "--nodes",
                "3",
                "--http-port",
                "0",
                "--grpc-port",
                "0",
            ])
            .arg("--data-dir")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn synevi-kv cluster");
        let stdout = process.stdout.take().expect("stdout is piped");
        let mut run = ClusterRun {
            process,
            lines: BufReader::new(stdout).lines(),
            http: Vec::new(),
        };
        // The node lines come first, then "Ready." once every node reached a quorum.
        let ready = tokio::time::timeout(STARTUP_LIMIT, async {
            while let Ok(Some(line)) = run.lines.next_line().await {
                if let Some(rest) = line.trim_start().strip_prefix("node ") {
                    let url = rest.split_whitespace().nth(1).expect("node N URL");
                    run.http.push(url.to_string());
                }
                if line.starts_with("Ready.") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            ready,
            Ok(true),
            "the cluster did not print Ready:\n{}",
            common::log_tail(log, 30)
        );
        assert_eq!(run.http.len(), 3, "three node lines");
        run
    }

    /// Ctrl-C, then the rest of stdout and the exit status.
    async fn interrupt(mut self) -> (bool, Vec<String>) {
        signal(&self.process, libc::SIGINT);
        let mut rest = Vec::new();
        let read = async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                rest.push(line);
            }
        };
        tokio::time::timeout(EXIT_LIMIT, read)
            .await
            .expect("stdout closes after Ctrl-C");
        let status = wait_exit(&mut self.process, EXIT_LIMIT)
            .await
            .expect("the cluster exits after Ctrl-C");
        (status.success(), rest)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_command_stops_cleanly_and_brings_the_data_back() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let log = dir.path().join("cluster.log");

    let run = ClusterRun::start(&data, &log).await;
    let layout = std::fs::read_to_string(data.join("cluster.toml")).expect("cluster.toml");
    let first = KvClient::new(&run.http[0], Duration::from_secs(10)).expect("client");
    let third = KvClient::new(&run.http[2], Duration::from_secs(10)).expect("client");
    assert_eq!(first.put("greeting", "hello").await.expect("put"), None);
    assert_eq!(
        third.get("greeting").await.expect("get"),
        Some("hello".into())
    );
    assert_eq!(
        third
            .cas("greeting", Some("hello"), "hi")
            .await
            .expect("cas"),
        Ok(())
    );
    let (success, rest) = run.interrupt().await;
    assert!(
        success,
        "exit status after Ctrl-C\n{}",
        common::log_tail(&log, 30)
    );
    assert_eq!(
        rest.last().map(String::as_str),
        Some("synevi-kv: stopped"),
        "{rest:?}"
    );

    let run = ClusterRun::start(&data, &log).await;
    assert_eq!(
        std::fs::read_to_string(data.join("cluster.toml")).expect("cluster.toml"),
        layout,
        "the same members and ids"
    );
    let second = KvClient::new(&run.http[1], Duration::from_secs(10)).expect("client");
    assert_eq!(
        second.get("greeting").await.expect("get"),
        Some("hi".into())
    );
    let (success, _) = run.interrupt().await;
    assert!(success, "exit status after Ctrl-C");

    // Two clean starts and stops: nothing in the logs calls for an operator. (Nodes that
    // start one after another cannot reach each other for a moment, and nodes that stop
    // one after another see their peers go: both are information, not warnings.)
    let logged = std::fs::read_to_string(&log).expect("the log");
    let alarming: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    assert!(alarming.is_empty(), "{alarming:#?}");
}
