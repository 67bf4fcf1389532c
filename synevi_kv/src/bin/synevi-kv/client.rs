//! `synevi-kv get|put|cas|delete`: a command-line client of the HTTP API. Prints the
//! node's JSON answer; the exit code says what happened (0: done or found, 1: not found or
//! CAS mismatch, 2: error).

use std::process::ExitCode;
use std::time::Duration;

use hyper::Method;
use serde_json::json;
use synevi_kv::client::{key_path, KvClient};

#[derive(clap::Args, Debug)]
pub struct Target {
    /// The node's HTTP address.
    #[arg(
        long,
        env = "SYNEVI_ADDR",
        default_value = "http://127.0.0.1:8081",
        value_name = "URL"
    )]
    addr: String,
    /// How long to wait for the answer.
    #[arg(long, default_value_t = 15_000, value_name = "MS")]
    timeout_ms: u64,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    target: Target,
    /// The key.
    key: String,
}

#[derive(clap::Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    target: Target,
    /// The key.
    key: String,
    /// The new value.
    value: String,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("condition").required(true).args(["expected", "expect_absent"])))]
pub struct CasArgs {
    #[command(flatten)]
    target: Target,
    /// The key.
    key: String,
    /// The new value.
    value: String,
    /// Swap only if the key holds this value.
    #[arg(long, value_name = "VALUE")]
    expected: Option<String>,
    /// Swap only if the key does not exist.
    #[arg(long)]
    expect_absent: bool,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    target: Target,
    /// The key.
    key: String,
}

/// Sends one request, prints the answer's body, and maps its status to an exit code:
/// 200 → 0, `negative` (404 or 409; 0 for none) → 1, anything else → 2.
async fn send(
    target: &Target,
    method: Method,
    path: String,
    body: Option<String>,
    negative: u16,
) -> ExitCode {
    let client = match KvClient::new(&target.addr, Duration::from_millis(target.timeout_ms)) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("synevi-kv: {error}");
            return ExitCode::from(2);
        }
    };
    match client.request(method, &path, body).await {
        Ok(response) => {
            let body = response.body.trim_end();
            match response.status {
                200 => {
                    println!("{body}");
                    ExitCode::SUCCESS
                }
                status if status == negative => {
                    println!("{body}");
                    ExitCode::from(1)
                }
                status => {
                    eprintln!("synevi-kv: HTTP {status}: {body}");
                    ExitCode::from(2)
                }
            }
        }
        Err(error) => {
            eprintln!("synevi-kv: {}: {error}", client.base());
            ExitCode::from(2)
        }
    }
}

pub async fn get(args: GetArgs) -> ExitCode {
    send(
        &args.target,
        Method::GET,
        key_path(&args.key, ""),
        None,
        404,
    )
    .await
}

pub async fn put(args: PutArgs) -> ExitCode {
    let body = json!({ "value": args.value }).to_string();
    send(
        &args.target,
        Method::PUT,
        key_path(&args.key, ""),
        Some(body),
        0,
    )
    .await
}

pub async fn cas(args: CasArgs) -> ExitCode {
    let expected = if args.expect_absent {
        None
    } else {
        args.expected
    };
    let body = json!({ "expected": expected, "value": args.value }).to_string();
    send(
        &args.target,
        Method::POST,
        key_path(&args.key, "/cas"),
        Some(body),
        409,
    )
    .await
}

pub async fn delete(args: DeleteArgs) -> ExitCode {
    send(
        &args.target,
        Method::DELETE,
        key_path(&args.key, ""),
        None,
        404,
    )
    .await
}
