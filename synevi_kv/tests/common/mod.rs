//! Helpers shared by the integration tests: free ports, `synevi-kv` processes, waiting for
//! health.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use synevi_kv::client::KvClient;
use tokio::process::{Child, Command};

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_synevi-kv");

/// `count` distinct ports that were free a moment ago: bound together on port 0, then
/// released. Ports come from the OS's ephemeral range, so tests running in parallel do not
/// collide (short of the OS handing one out again in between, which it avoids).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("local address").port())
        .collect()
}

/// Polls `/health` until it answers 200; fails after `limit`.
pub async fn wait_healthy(url: &str, limit: Duration) -> Result<Duration, String> {
    let client = KvClient::new(url, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        if client.healthy().await {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            let last = client
                .request(hyper::Method::GET, "/health", None)
                .await
                .map(|response| format!("{} {}", response.status, response.body))
                .unwrap_or_else(|error| error.to_string());
            return Err(format!(
                "{url} not healthy within {limit:?}; last answer: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a signal to a child process that has not been reaped yet.
pub fn signal(child: &Child, signal: i32) {
    let pid = child.id().expect("the child is still running");
    let pid = i32::try_from(pid).expect("pid fits i32");
    // SAFETY: kill(2) on the pid of our own unreaped child, with a valid signal number,
    // touches no memory of this process.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal}) failed");
}

/// Waits for a child to exit, at most `limit`.
pub async fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    tokio::time::timeout(limit, child.wait()).await.ok()?.ok()
}

/// A `synevi-kv` process whose output goes to a log file; killed (SIGKILL) when dropped.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    /// Starts `synevi-kv` with `args`; stdout and stderr are appended to `log`.
    pub fn start(args: &[String], envs: &[(&str, String)], log: &Path) -> Process {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log");
        let child = Command::new(BINARY)
            .args(args)
            .envs(envs.iter().map(|(key, value)| (*key, value.as_str())))
            .env("SYNEVI_LOG", "warn,synevi_kv=info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log handle"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn synevi-kv");
        Process {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The last `lines` lines of the log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

/// The last `lines` lines of a file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
