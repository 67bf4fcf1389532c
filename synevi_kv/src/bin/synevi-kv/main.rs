//! `synevi-kv`: a replicated key-value store on synevi, usable from curl.
//!
//! - `synevi-kv cluster`: a local cluster in one process (the quickest start);
//! - `synevi-kv node`: one node per process, for real deployments;
//! - `synevi-kv get|put|cas|delete`: a client of the HTTP API.
//!
//! See `docs/kv.md`.

mod client;
mod cluster;
mod node;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The log filter unless `SYNEVI_LOG` sets one (`warn,synevi_kv=debug`, ...).
const DEFAULT_LOG: &str = "warn,synevi_kv=info";

#[derive(Parser)]
#[command(
    name = "synevi-kv",
    version,
    about = "A replicated, linearizable key-value store on synevi (Accord consensus)",
    long_about = "A replicated, linearizable key-value store on synevi (Accord consensus).\n\n\
                  Start a local cluster with `synevi-kv cluster`, or one node per host with \
                  `synevi-kv node`; talk to any node with curl or `synevi-kv get|put|cas|delete`. \
                  Logs go to stderr; SYNEVI_LOG sets the filter (default: warn,synevi_kv=info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a local cluster in this process (nodes on one host, gRPC between them) until
    /// Ctrl-C. Running it again on the same data directory brings the data back.
    Cluster(cluster::ClusterArgs),
    /// Runs one node. Settings come from flags, SYNEVI_* environment variables or a TOML
    /// file (--config), in that order of precedence.
    Node(Box<node::NodeArgs>),
    /// Reads a key. Exit code 0: found; 1: not found; 2: error.
    Get(client::GetArgs),
    /// Sets a key. Exit code 0: done; 2: error.
    Put(client::PutArgs),
    /// Sets a key if it holds the expected value. Exit code 0: swapped; 1: it held
    /// another value; 2: error.
    Cas(client::CasArgs),
    /// Removes a key. Exit code 0: removed; 1: not found; 2: error.
    Delete(client::DeleteArgs),
}

fn init_logging() {
    let filter = std::env::var("SYNEVI_LOG").unwrap_or_else(|_| DEFAULT_LOG.to_string());
    let targets = Targets::from_str(&filter).unwrap_or_else(|error| {
        eprintln!("synevi-kv: ignoring SYNEVI_LOG={filter:?} ({error}); using {DEFAULT_LOG:?}");
        Targets::from_str(DEFAULT_LOG).unwrap_or_default()
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(targets)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("synevi-kv: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Cluster(args) => report(cluster::run(args).await),
            Command::Node(args) => report(node::run(*args).await),
            Command::Get(args) => client::get(args).await,
            Command::Put(args) => client::put(args).await,
            Command::Cas(args) => client::cas(args).await,
            Command::Delete(args) => client::delete(args).await,
        }
    })
}

/// Exit code 0, or the error on stderr and exit code 1.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("synevi-kv: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
