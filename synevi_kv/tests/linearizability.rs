//! The multi-process test: three and five `synevi-kv node` processes on loopback with LMDB
//! stores, concurrent clients doing put/get/cas on a few keys through every node, nodes
//! killed with SIGKILL and restarted during the run (one at a time of three, two at a time
//! of five: as many as may fail). The recorded history (invocation and return times,
//! answers) is checked for linearizability (Wing–Gong/Lowe, `synevi_kv::linearizability`),
//! and for lost acknowledged writes; a violation planted into the same history is caught.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_ports, signal, wait_exit, wait_healthy, Process};
use synevi_kv::client::{ClientError, KvClient};
use synevi_kv::linearizability::{check, CheckError, Command, Operation, Response};

const KEYS: [&str; 3] = ["x", "y", "z"];
/// Clients; each operation goes to the next node in turn.
const CLIENTS: usize = 6;
/// How long the workload runs between a node's recovery and the next kill.
const UP_BETWEEN_KILLS: Duration = Duration::from_millis(2_000);
/// How long a killed node stays down.
const DOWN: Duration = Duration::from_millis(500);
/// How long the workload runs after the last restart.
const TAIL: Duration = Duration::from_millis(1_500);
/// The nodes' transaction timeout; the clients wait a little longer.
const NODE_TIMEOUT_MS: u64 = 3_000;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

struct Cluster {
    nodes: usize,
    dir: PathBuf,
    grpc: Vec<u16>,
    http: Vec<u16>,
    processes: Vec<Option<Process>>,
}

impl Cluster {
    fn new(dir: &Path, nodes: usize) -> Cluster {
        let ports = free_ports(2 * nodes);
        Cluster {
            nodes,
            dir: dir.to_path_buf(),
            grpc: ports[..nodes].to_vec(),
            http: ports[nodes..].to_vec(),
            processes: (0..nodes).map(|_| None).collect(),
        }
    }

    fn url(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.http[index])
    }

    fn log(&self, index: usize) -> PathBuf {
        self.dir.join(format!("node-{}.log", index + 1))
    }

    fn start(&mut self, index: usize) {
        let serial = index + 1;
        let mut args = vec![
            "node".to_string(),
            format!("--serial={serial}"),
            format!("--listen=127.0.0.1:{}", self.grpc[index]),
            format!("--http=127.0.0.1:{}", self.http[index]),
            format!(
                "--data-dir={}",
                self.dir.join(format!("node-{serial}")).display()
            ),
            "--store=lmdb".to_string(),
            format!("--timeout-ms={NODE_TIMEOUT_MS}"),
        ];
        for peer in (0..self.nodes).filter(|peer| *peer != index) {
            args.push(format!(
                "--peer={}=http://127.0.0.1:{}",
                peer + 1,
                self.grpc[peer]
            ));
        }
        self.processes[index] = Some(Process::start(&args, &[], &self.log(index)));
    }

    async fn wait_healthy(&self, index: usize) -> Duration {
        match wait_healthy(&self.url(index), HEALTHY_WITHIN).await {
            Ok(waited) => waited,
            Err(error) => panic!("{error}\n{}", common::log_tail(&self.log(index), 40)),
        }
    }

    async fn kill(&mut self, index: usize) {
        let mut process = self.processes[index].take().expect("the node runs");
        signal(&process.child, libc::SIGKILL);
        wait_exit(&mut process.child, Duration::from_secs(10))
            .await
            .expect("a killed node exits");
    }
}

/// Everything the clients recorded.
#[derive(Default)]
struct Record {
    operations: Vec<Operation>,
    /// Answers the test did not expect (a 4xx, a malformed body): the test fails.
    unexpected: Vec<String>,
}

struct Shared {
    started: Instant,
    stop: AtomicBool,
    record: Mutex<Record>,
    /// Acknowledged operations per node.
    acknowledged: Vec<AtomicU64>,
    /// Requests refused at connect (node down; certainly not executed).
    refused: AtomicU64,
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&self, operation: Operation) {
        self.record
            .lock()
            .expect("record lock")
            .operations
            .push(operation);
    }
}

/// A small deterministic generator (xorshift64*), one per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One client: get 40%, put 30%, cas 30% on random keys, each through the next node.
async fn client_loop(id: usize, nodes: Vec<KvClient>, shared: Arc<Shared>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
    let mut last_seen: BTreeMap<&str, Option<String>> = BTreeMap::new();
    let mut sequence = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        sequence += 1;
        let node = (id + sequence as usize) % nodes.len();
        let client = &nodes[node];
        let key = KEYS[rng.below(KEYS.len())];
        let value = format!("c{id}-{sequence}");
        let roll = rng.below(10);
        let invoked = shared.now();
        let (command, outcome) = if roll < 4 {
            let result = client.get(key).await;
            (Command::Get, result.map(Response::Value))
        } else if roll < 7 {
            let result = client.put(key, &value).await;
            (Command::Put(value), result.map(Response::Value))
        } else {
            let expected = last_seen.get(key).cloned().flatten();
            let result = client.cas(key, expected.as_deref(), &value).await;
            let command = Command::Cas { expected, value };
            (command, result.map(Response::Cas))
        };
        let returned = shared.now();
        match outcome {
            Ok(response) => {
                last_seen.insert(key, seen_value(&command, &response));
                shared.acknowledged[node].fetch_add(1, Ordering::Relaxed);
                shared.record(Operation {
                    client: id,
                    key: key.to_string(),
                    command,
                    response,
                    invoked,
                    returned: Some(returned),
                });
            }
            // Refused at connect: never sent, so it is not part of the history.
            Err(ClientError::Connect(_)) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) if error.outcome_unknown() => {
                // A read with no answer changed nothing: leave it out. A write with no
                // answer may have taken effect, now or later: record it as unknown.
                if command != Command::Get {
                    shared.record(Operation {
                        client: id,
                        key: key.to_string(),
                        command,
                        response: Response::Unknown,
                        invoked,
                        returned: None,
                    });
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => {
                let mut record = shared.record.lock().expect("record lock");
                record
                    .unexpected
                    .push(format!("client {id} via node {}: {error}", node + 1));
            }
        }
    }
}

/// The value the key held after the operation, as far as its answer tells.
fn seen_value(command: &Command, response: &Response) -> Option<String> {
    match (command, response) {
        (Command::Get, Response::Value(value)) => value.clone(),
        (Command::Put(value), _) => Some(value.clone()),
        (Command::Cas { value, .. }, Response::Cas(Ok(()))) => Some(value.clone()),
        (_, Response::Cas(Err(current))) => current.clone(),
        _ => None,
    }
}

/// The value a write leaves (`None` for a read or a failed CAS).
fn written(operation: &Operation) -> Option<&str> {
    match (&operation.command, &operation.response) {
        (Command::Put(value), _) => Some(value),
        (Command::Cas { value, .. }, Response::Cas(Ok(())) | Response::Unknown) => Some(value),
        _ => None,
    }
}

fn acknowledged_write(operation: &Operation) -> bool {
    matches!(
        (&operation.command, &operation.response),
        (Command::Put(_), Response::Value(_)) | (Command::Cas { .. }, Response::Cas(Ok(())))
    )
}

/// No acknowledged write is lost: the final value of each key was written by a write that
/// no acknowledged write strictly follows in real time (whatever was acknowledged later
/// must be what the key holds, or be overwritten by something at least as late).
fn check_no_lost_write(
    history: &[Operation],
    key: &str,
    final_value: &Option<String>,
) -> Result<(), String> {
    let writes: Vec<&Operation> = history
        .iter()
        .filter(|operation| operation.key == key && written(operation).is_some())
        .collect();
    let Some(latest_invoked_ack) = writes
        .iter()
        .filter(|operation| acknowledged_write(operation))
        .map(|operation| operation.invoked)
        .max()
    else {
        return Ok(());
    };
    let candidates: Vec<&str> = writes
        .iter()
        .filter(|operation| {
            operation
                .returned
                .is_none_or(|returned| returned >= latest_invoked_ack)
        })
        .filter_map(|operation| written(operation))
        .collect();
    match final_value {
        Some(value) if candidates.contains(&value.as_str()) => Ok(()),
        _ => Err(format!(
            "key {key:?} holds {final_value:?} after the run, but a later acknowledged write \
             should have left one of {candidates:?}"
        )),
    }
}

/// The clusters run one at a time: two at once on a 2-core machine would test the
/// machine's timers more than the nodes.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_killed_one_at_a_time_leave_a_linearizable_history() {
    // Nodes 1, 2, 3, 1: a majority always stays up.
    run(3, &[&[0], &[1], &[2], &[0]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_killed_two_at_a_time_leave_a_linearizable_history() {
    // Two of five at once, as many as may fail; no fast quorum (four) while they are down.
    run(5, &[&[0, 1], &[2, 3], &[4, 0], &[1, 2]]).await;
}

/// Starts `nodes` nodes, runs the clients while each group of `kills` is killed with
/// SIGKILL, kept down and restarted in turn, then checks the history.
async fn run(nodes: usize, kills: &[&[usize]]) {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    assert!(
        kills.iter().all(|group| 2 * group.len() < nodes),
        "a majority stays up"
    );
    let sigkills: usize = kills.iter().map(|group| group.len()).sum();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cluster = Cluster::new(dir.path(), nodes);
    for index in 0..nodes {
        cluster.start(index);
    }
    for index in 0..nodes {
        cluster.wait_healthy(index).await;
    }

    let shared = Arc::new(Shared {
        started: Instant::now(),
        stop: AtomicBool::new(false),
        record: Mutex::new(Record::default()),
        acknowledged: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        refused: AtomicU64::new(0),
    });
    let clients: Vec<KvClient> = (0..nodes)
        .map(|index| KvClient::new(&cluster.url(index), CLIENT_TIMEOUT).expect("client"))
        .collect();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client_loop(id, clients.clone(), Arc::clone(&shared))))
        .collect();

    // Kill each group with SIGKILL, keep it down, restart it, wait until it serves.
    let mut recoveries = Vec::new();
    for &group in kills {
        tokio::time::sleep(UP_BETWEEN_KILLS).await;
        for &victim in group {
            cluster.kill(victim).await;
        }
        tokio::time::sleep(DOWN).await;
        for &victim in group {
            cluster.start(victim);
        }
        for &victim in group {
            recoveries.push(cluster.wait_healthy(victim).await);
        }
    }
    tokio::time::sleep(TAIL).await;
    shared.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("client task");
    }
    // Final reads of every key through every node, after every other operation returned.
    let mut history = std::mem::take(&mut shared.record.lock().expect("record lock").operations);
    let unexpected = std::mem::take(&mut shared.record.lock().expect("record lock").unexpected);
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    let mut final_values: BTreeMap<&str, Vec<Option<String>>> = BTreeMap::new();
    for key in KEYS {
        for (index, client) in clients.iter().enumerate() {
            // Right after the run a node may still be catching up (a 503 once its
            // timeout passes): retry until an answer, which is then the final value.
            let deadline = Instant::now() + HEALTHY_WITHIN;
            let (invoked, value) = loop {
                let invoked = shared.now();
                match client.get(key).await {
                    Ok(value) => break (invoked, value),
                    Err(error) if Instant::now() < deadline && error.outcome_unknown() => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(error) => panic!("final read of {key:?} via node {}: {error}", index + 1),
                }
            };
            history.push(Operation {
                client: CLIENTS + index,
                key: key.to_string(),
                command: Command::Get,
                response: Response::Value(value.clone()),
                invoked,
                returned: Some(shared.now()),
            });
            final_values.entry(key).or_default().push(value);
        }
    }

    let acknowledged: u64 = shared
        .acknowledged
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .sum();
    let checking = Instant::now();
    let report = match check(&history) {
        Ok(report) => report,
        Err(error) => {
            let logs: String = (0..nodes)
                .map(|index| common::log_tail(&cluster.log(index), 15))
                .collect::<Vec<_>>()
                .join("\n---\n");
            panic!("{error}\n{logs}");
        }
    };
    let checked_in = checking.elapsed();
    println!(
        "linearizability: {} operations checked ({} acknowledged by nodes, {} with unknown \
         outcome, {} refused at connect and left out) on {} keys {:?}, {} states explored in \
         {checked_in:?}; {nodes} nodes, {sigkills} SIGKILLs, restarts healthy after \
         {recoveries:?}",
        report.operations,
        acknowledged,
        report.unknown,
        shared.refused.load(Ordering::Relaxed),
        KEYS.len(),
        report.per_key,
        report.states_explored,
    );
    assert!(
        report.operations >= 100,
        "too few operations to mean much: {}",
        report.operations
    );

    // No acknowledged write is lost, and every node holds the same final values.
    for (key, values) in &final_values {
        assert!(
            values.windows(2).all(|pair| pair[0] == pair[1]),
            "{key}: nodes disagree: {values:?}"
        );
        if let Err(error) = check_no_lost_write(&history, key, &values[0]) {
            panic!("{error}");
        }
    }

    // Plant a stale read: after everything, read a value that an acknowledged write
    // replaced strictly later. The checker must refuse the history.
    let planted = plant_stale_read(&history).expect("a key with two writes in real-time order");
    let error = check(&planted).expect_err("the planted stale read is caught");
    assert!(
        matches!(error, CheckError::NotLinearizable { .. }),
        "{error}"
    );
    println!("planted violation caught: {error}");
    // The lost-write check catches it too when the planted value is taken as final.
    let Some(Operation {
        key,
        response: Response::Value(value),
        ..
    }) = planted.last()
    else {
        unreachable!("the planted read is last");
    };
    assert!(check_no_lost_write(&history, key, value).is_err());
}

/// The history plus one read, after everything else, of a value `v1` written by an
/// acknowledged write `w1` that another acknowledged write `w2` (invoked after `w1`
/// returned) overwrote.
fn plant_stale_read(history: &[Operation]) -> Option<Vec<Operation>> {
    let end = history
        .iter()
        .map(|operation| operation.returned.unwrap_or(operation.invoked))
        .max()?;
    for first in history
        .iter()
        .filter(|operation| acknowledged_write(operation))
    {
        let replaced = history.iter().any(|second| {
            second.key == first.key
                && acknowledged_write(second)
                && first
                    .returned
                    .is_some_and(|returned| second.invoked > returned)
        });
        if replaced {
            let mut planted = history.to_vec();
            planted.push(Operation {
                client: 999,
                key: first.key.clone(),
                command: Command::Get,
                response: Response::Value(written(first).map(str::to_string)),
                invoked: end + 1,
                returned: Some(end + 2),
            });
            return Some(planted);
        }
    }
    None
}
