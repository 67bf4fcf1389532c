//! The process the crash test (`tests/crash.rs`) kills with SIGKILL.
//!
//! It starts the three-node [`LmdbCluster`] on `--dir` (resuming whatever an earlier, killed
//! writer left there), waits until the nodes agree and every id listed in `--expect` has
//! executed on every node, stops the nodes cleanly and prints their event logs. Then, unless
//! `--settle-only`, it starts the nodes again on the same directories and submits
//! transactions from every node until it is killed, printing one line per transaction after
//! `Node::transaction` returned its result.
//!
//! Output, one line each, written whole and flushed (a line cut by the kill has no newline
//! and does not count):
//! ```text
//! status <serial> <applied count> <applied digest hex>          after settling
//! unsettled <what was missing>                                   if settling timed out
//! event <serial> <seq> <request id> <t> <result hash hex> <keys, comma-separated>
//! settled                                                        the logs are complete
//! writing                                                        the workload starts
//! ack <serial> <id> <key>=<position>,...                         acknowledged to the client
//! ```
//! Failed transactions (timeouts while the cluster is busy) go to stderr: they were not
//! acknowledged, so nothing may be expected of them.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use synevi::types::Serial;
use synevi::{Config, Transaction};
use synevi_tests::ledger::{LedgerTx, Positions};
use synevi_tests::lmdb_cluster::{hex, LmdbCluster, SERIALS};

/// Concurrent clients per node: enough that rounds hold several transactions (group commit)
/// and conflicting transactions race for order.
const CLIENTS_PER_NODE: u64 = 3;
/// Keys every node's clients touch: conflicts across coordinators.
const SHARED_KEYS: [&str; 4] = ["hot", "a", "b", "c"];
/// How long settling may take: recovery of transactions the kill left undecided takes a few
/// recovery timeouts; far longer means something is stuck.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// A writer the test never kills (the test itself died) stops by itself after this long.
const WRITE_PHASE_MAX: Duration = Duration::from_secs(120);

struct Args {
    dir: PathBuf,
    generation: u64,
    seed: u64,
    expect: Option<PathBuf>,
    settle_only: bool,
}

fn parse_args() -> Args {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut generation = None;
    let mut seed = 0;
    let mut expect = None;
    let mut settle_only = false;
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(value())),
            "--generation" => generation = Some(value().parse().expect("--generation: a number")),
            "--seed" => seed = value().parse().expect("--seed: a number"),
            "--expect" => expect = Some(PathBuf::from(value())),
            "--settle-only" => settle_only = true,
            other => panic!("unknown argument {other}"),
        }
    }
    Args {
        dir: dir.expect("--dir is required"),
        generation: generation.expect("--generation is required"),
        seed,
        expect,
        settle_only,
    }
}

/// The node configuration: recovery timeouts shorter than the default, so that
/// transactions a kill left undecided are recovered within the test's time.
fn config() -> Config {
    Config {
        recovery_timeout_ms: 300,
        recovery_backoff_ms_max: 100,
        ..Config::default()
    }
}

/// Writes one whole line and flushes it: the test reads acknowledgements as they happen, and
/// a line is only ever complete or missing. Exits quietly when the reader is gone.
fn emit(line: String) {
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Unique over the whole test: the generation (one per writer process), the node, the
/// client, and the client's counter.
fn transaction_id(generation: u64, serial: Serial, client: u64, counter: u64) -> u64 {
    assert!(generation < 1 << 16 && client < 1 << 8 && counter < 1 << 32);
    (generation << 48) | (u64::from(serial) << 40) | (client << 32) | counter
}

/// xorshift64*: the writer's workload depends only on the seed and who submits.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// One or two shared keys, or the node's own key: mostly conflicting, some not.
fn keys(rng: &mut Rng, serial: Serial) -> Vec<String> {
    let shared = |rng: &mut Rng| SHARED_KEYS[rng.below(SHARED_KEYS.len() as u64) as usize];
    match rng.below(4) {
        0 | 1 => vec![shared(rng).to_string()],
        2 => {
            let first = shared(rng);
            let second = shared(rng);
            if first == second {
                vec![first.to_string()]
            } else {
                vec![first.to_string(), second.to_string()]
            }
        }
        _ => vec![format!("own-{serial}")],
    }
}

fn format_positions(positions: &Positions) -> String {
    let parts: Vec<String> = positions.iter().map(|(k, p)| format!("{k}={p}")).collect();
    parts.join(",")
}

fn read_expected(path: Option<&PathBuf>) -> BTreeSet<u64> {
    let Some(path) = path else {
        return BTreeSet::new();
    };
    let text = std::fs::read_to_string(path).expect("the --expect file is readable");
    text.lines()
        .map(|line| line.parse().expect("an id per line"))
        .collect()
}

/// Starts the cluster, waits for it to settle, stops it and prints the statuses and logs.
/// Returns whether it settled.
async fn settle_and_dump(args: &Args) -> bool {
    let expected = read_expected(args.expect.as_ref());
    let mut cluster = LmdbCluster::start(&args.dir, config())
        .await
        .expect("the cluster starts on its directories");
    let settled = cluster.settle(&expected, SETTLE_LIMIT).await;
    match &settled {
        Ok(statuses) => {
            for (serial, status) in SERIALS.iter().zip(statuses) {
                emit(format!(
                    "status {serial} {} {}",
                    status.applied_count,
                    hex(&status.applied_digest)
                ));
            }
        }
        Err(report) => {
            for line in report.lines() {
                emit(format!("unsettled {line}"));
            }
        }
    }
    // Stopped before the logs are read: shutdown lets every write handed to the store finish.
    let logs = cluster.stop().await.expect("the logs are readable");
    for (serial, log) in logs {
        for event in log {
            let keys = match LedgerTx::from_bytes(event.payload.to_vec()) {
                Ok(tx) => tx.keys.join(","),
                Err(_) => "?".to_string(),
            };
            emit(format!(
                "event {serial} {} {} {} {} {keys}",
                event.seq,
                event.id,
                event.t,
                hex(&event.result_hash)
            ));
        }
    }
    emit(
        if settled.is_ok() {
            "settled"
        } else {
            "unsettled"
        }
        .to_string(),
    );
    settled.is_ok()
}

/// Submits transactions from every node until the process is killed.
async fn write(args: &Args) {
    let cluster = LmdbCluster::start(&args.dir, config())
        .await
        .expect("the cluster starts again on its directories");
    emit("writing".to_string());
    let mut clients = tokio::task::JoinSet::new();
    for serial in SERIALS {
        for client in 0..CLIENTS_PER_NODE {
            let node = cluster.node(serial).clone();
            let generation = args.generation;
            let mut rng = Rng::new(args.seed ^ transaction_id(generation, serial, client, 0));
            clients.spawn(async move {
                for counter in 1.. {
                    let id = transaction_id(generation, serial, client, counter);
                    let tx = LedgerTx {
                        id,
                        keys: keys(&mut rng, serial),
                    };
                    match node.transaction(u128::from(id), tx).await {
                        Ok(Ok(positions)) => emit(format!(
                            "ack {serial} {id} {}",
                            format_positions(&positions)
                        )),
                        Ok(Err(rejected)) => panic!("the ledger never rejects, got {rejected}"),
                        Err(error) => eprintln!("transaction {id} on node {serial}: {error}"),
                    }
                }
            });
        }
    }
    // Clients run until the kill; one that ends has panicked.
    if let Ok(Some(ended)) = tokio::time::timeout(WRITE_PHASE_MAX, clients.join_next()).await {
        ended.expect("a client panicked");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = parse_args();
    if !settle_and_dump(&args).await {
        std::process::exit(1);
    }
    if args.settle_only {
        return;
    }
    write(&args).await;
    eprintln!("the writer ran {WRITE_PHASE_MAX:?} without being killed");
    std::process::exit(3);
}
