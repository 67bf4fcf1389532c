//! Crash test with real processes (issue 4): a writer process (`src/bin/crash_writer.rs`)
//! runs a three-node cluster, every node on its own `LmdbStore` directory, and submits
//! transactions from every node; this test kills it with SIGKILL at random points, many
//! times, restarts it on the same directories, and checks that nothing acknowledged before a
//! kill is missing or duplicated.
//!
//! After every kill, with the writer dead, the test opens the stores itself: the decision of
//! every acknowledged transaction is durable (its coordinator's own vote is, and the stores
//! hold it committed or executed somewhere, accepted by a majority, or voted for at `t0` by
//! every node: pre-accepted there, or accepted there by a recovery), and no log holds an id twice.
//!
//! After every restart, the writer first waits until the nodes agree and every acknowledged
//! transaction has executed on every node, stops the nodes and prints their event logs (see
//! the writer's docs); the test checks them:
//! - every acknowledged transaction is in every node's log exactly once, and the position
//!   the client was told (per key) is the one it has when that node's log is replayed;
//! - no log holds an id twice, seqs are 1, 2, 3, ...; every id is one a writer submitted;
//! - every transaction has the same result hash on every node;
//! - per key, conflicting transactions are in the same order on every node;
//! - at the moment the writer saw the nodes agree, they had applied the same transactions
//!   (equal counts and digests, equal sets of ids in the logs up to that count).
//!
//! The last restart only settles (`--settle-only`) and gets the same checks.
//!
//! The kill points and the writer's key choices come from one seed. It is random unless
//! `SYNEVI_CRASH_SEED=N` is set; it is printed, and a failure names it. With real processes
//! the timing is not reproduced, only the schedule: replaying a seed makes a failure likely,
//! not certain. `SYNEVI_CRASH_RUNS=N` sets how many kills.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use synevi::persistence::LmdbStore;
use synevi::types::{Serial, Status, Store};
use synevi_core::sim::recoverable_from_stores;
use synevi_core::Quorums;
use synevi_tests::ledger::{LedgerState, LedgerTx};
use synevi_tests::lmdb_cluster::{node_dir, read_log, SERIALS};

/// The writer binary, built by cargo for this package's tests.
const WRITER: &str = env!("CARGO_BIN_EXE_crash_writer");
/// How many times the writer is killed in one run of the test.
const RUNS_DEFAULT: u64 = 20;
/// Most acknowledgements the test waits for before it kills the writer.
const ACKS_BEFORE_KILL_MAX: u64 = 60;
/// One kill in this many lands while the writer restarts and settles (recovering what the
/// previous kill cut off), at a random moment instead of after some acknowledgements.
const KILL_WHILE_SETTLING_ONE_IN: u64 = 4;
/// The latest moment after its start such a kill lands.
const KILL_WHILE_SETTLING_MS_MAX: u64 = 600;
/// How long the test waits for the writer's next line before it calls the writer hung.
const LINE_WAIT_MAX: Duration = Duration::from_secs(90);

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, is {value:?}"))
    })
}

/// A transaction the writer acknowledged: it printed it after `Node::transaction` returned.
#[derive(Clone, Debug)]
struct Ack {
    serial: Serial,
    id: u64,
    positions: Vec<(String, u64)>,
    /// The writer generation (run) that acknowledged it.
    generation: u64,
}

#[derive(Clone, Debug)]
struct LoggedEvent {
    seq: u64,
    id: u64,
    t: String,
    result_hash: String,
    keys: Vec<String>,
}

/// What a writer printed while it settled.
#[derive(Debug, Default)]
struct Dump {
    /// Per node, applied count and digest when the nodes agreed.
    statuses: BTreeMap<Serial, (u64, String)>,
    unsettled: Vec<String>,
    logs: BTreeMap<Serial, Vec<LoggedEvent>>,
    /// The writer printed its last settle line ("settled" or "unsettled").
    complete: bool,
    settled: bool,
}

/// Everything one writer process printed and how it ended.
struct Outcome {
    dump: Dump,
    acks: Vec<Ack>,
    writing: bool,
    status: ExitStatus,
    stderr: String,
    killed_while_settling: bool,
}

/// When to kill a writer.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// Once it has acknowledged this many transactions (0: as soon as it writes).
    AfterAcks(u64),
    /// This long after it started, whatever it does then (settling, usually).
    AfterMs(u64),
    /// Never: a `--settle-only` writer ends by itself.
    Never,
}

/// A running writer; killed if dropped before it ended (a failing test leaves no writer
/// running on a shared machine).
struct Writer {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Collects stderr while the writer runs; taken when it ended.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_writer(root: &Path, generation: u64, seed: u64, settle_only: bool) -> Writer {
    let mut command = Command::new(WRITER);
    command
        .arg("--dir")
        .arg(root.join("nodes"))
        .args(["--generation", &generation.to_string()])
        .args(["--seed", &seed.to_string()])
        .arg("--expect")
        .arg(root.join("expected"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if settle_only {
        command.arg("--settle-only");
    }
    let mut child = command.spawn().expect("the writer starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, lines) = mpsc::channel();
    // Reads lines while the writer runs, so a full pipe never blocks it. Only lines with
    // their newline count: the kill may cut the last one, which then was never acknowledged.
    std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.last() == Some(&b'\n') => {
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    if sender.send(text).is_err() {
                        return;
                    }
                }
                Ok(_) => return,
            }
        }
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Writer {
        child,
        lines,
        stderr: Some(stderr),
    }
}

fn parse_positions(text: &str) -> Vec<(String, u64)> {
    text.split(',')
        .map(|part| {
            let (key, position) = part.split_once('=').expect("key=position");
            (key.to_string(), position.parse().expect("a position"))
        })
        .collect()
}

/// Takes one line of the writer's output into `outcome`; returns whether it was an ack.
fn take_line(line: &str, outcome: &mut Outcome, generation: u64) -> bool {
    let fields: Vec<&str> = line.split(' ').collect();
    let number = |index: usize| -> u64 {
        fields[index]
            .parse()
            .unwrap_or_else(|_| panic!("field {index} of {line:?} is not a number"))
    };
    match fields[0] {
        "status" => {
            let serial = number(1) as Serial;
            let status = (number(2), fields[3].to_string());
            outcome.dump.statuses.insert(serial, status);
        }
        "unsettled" if fields.len() > 1 => outcome.dump.unsettled.push(line.to_string()),
        "unsettled" | "settled" => {
            outcome.dump.complete = true;
            outcome.dump.settled = fields[0] == "settled";
        }
        "event" => {
            let event = LoggedEvent {
                seq: number(2),
                id: number(3),
                t: fields[4].to_string(),
                result_hash: fields[5].to_string(),
                keys: fields[6].split(',').map(str::to_string).collect(),
            };
            let serial = number(1) as Serial;
            outcome.dump.logs.entry(serial).or_default().push(event);
        }
        "writing" => outcome.writing = true,
        "ack" => {
            outcome.acks.push(Ack {
                serial: number(1) as Serial,
                id: number(2),
                positions: parse_positions(fields[3]),
                generation,
            });
            return true;
        }
        _ => panic!("unexpected line from the writer: {line:?}"),
    }
    false
}

/// Runs one writer until `kill` and collects what it printed.
fn run_writer(root: &Path, generation: u64, seed: u64, kill: Kill) -> Outcome {
    let settle_only = matches!(kill, Kill::Never);
    let started = Instant::now();
    let mut writer = spawn_writer(root, generation, seed, settle_only);
    let mut outcome = Outcome {
        dump: Dump::default(),
        acks: Vec::new(),
        writing: false,
        status: ExitStatus::from_raw(0),
        stderr: String::new(),
        killed_while_settling: false,
    };
    let mut killed = false;
    loop {
        let wait = match kill {
            Kill::AfterMs(ms) if !killed => {
                let due = started + Duration::from_millis(ms);
                due.saturating_duration_since(Instant::now())
            }
            _ => LINE_WAIT_MAX,
        };
        let line = match writer.lines.recv_timeout(wait) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if matches!(kill, Kill::AfterMs(_)) && !killed => {
                // `Child::kill` is SIGKILL on Unix: no destructor runs, nothing is flushed.
                writer.child.kill().expect("the writer is killed");
                outcome.killed_while_settling = !outcome.writing;
                killed = true;
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the writer printed nothing for {LINE_WAIT_MAX:?}: hung")
            }
        };
        let acked = take_line(&line, &mut outcome, generation);
        let due = match kill {
            Kill::AfterAcks(count) => {
                outcome.writing && (acked || count == 0) && outcome.acks.len() as u64 >= count
            }
            _ => false,
        };
        if due && !killed {
            writer.child.kill().expect("the writer is killed");
            killed = true;
        }
        // Lines already in the pipe after the kill still count: each was printed after its
        // transaction returned.
    }
    outcome.status = writer.child.wait().expect("the writer is reaped");
    if let Some(stderr) = writer.stderr.take() {
        outcome.stderr = stderr.join().expect("the stderr reader");
    }
    outcome
}

/// Everything acknowledged so far, by id.
type Acked = BTreeMap<u64, Ack>;

/// What one node's store held for a transaction when the writer was killed.
#[derive(Clone, Copy, Debug)]
struct Held {
    in_log: bool,
    /// Status and `t == t0` of its protocol record, if it has one.
    record: Option<(Status, bool)>,
}

/// With the writer dead: opens each node's store as the kill left it and checks that the
/// decision of every acknowledged transaction is durable, and that no log holds an id twice.
///
/// A coordinator answers its client once the decision is durable on the voters that made
/// it, possibly before its own record of the commit is (`Ready::execute_early`), so what
/// must hold at the kill is: the coordinator's own vote is durable (its record, or its
/// event), and the decision can be recovered from what the stores hold: some node has it
/// committed or executed, or a majority accepted it, or every node voted for it at `t0`
/// (the fast quorum of three pre-accepted it there, and a recovery may since have
/// accepted it there on some of them). The checks after the restart then show that the
/// recovery does recover it, exactly once. Returns how many acknowledged transactions their
/// coordinator held neither executed nor committed (answered before its commit record was
/// durable).
fn check_stores_after_kill(root: &Path, acked: &Acked, context: &str) -> usize {
    let mut held: BTreeMap<u64, BTreeMap<Serial, Held>> = BTreeMap::new();
    for serial in SERIALS {
        let store = LmdbStore::new(node_dir(&root.join("nodes"), serial), serial)
            .unwrap_or_else(|e| panic!("node {serial}'s store does not open: {e}; {context}"));
        // What the node resumes from: a record whose execution is in the log above
        // `applied_recorded_through` may still say committed on disk, and reads as applied.
        let state = store
            .load_for_restart()
            .unwrap_or_else(|e| panic!("node {serial}'s store does not load: {e}; {context}"));
        let log = read_log(&store).expect("the log is readable");
        assert_eq!(
            log.len() as u64,
            state.last_event_seq,
            "node {serial}: the log has gaps or duplicate seqs; {context}"
        );
        let applied_count = state.meta.as_ref().map_or(0, |meta| meta.applied_count);
        assert_eq!(
            applied_count, state.last_event_seq,
            "node {serial}: applied count and log length differ (a half-written batch); {context}"
        );
        let mut logged = BTreeSet::new();
        for event in &log {
            let id = u64::try_from(event.id).expect("writer ids fit u64");
            assert!(
                logged.insert(id),
                "node {serial}: id {id} is in the log twice (seq {}); {context}",
                event.seq
            );
            held.entry(id).or_default().insert(
                serial,
                Held {
                    in_log: true,
                    record: None,
                },
            );
        }
        for record in &state.transactions {
            let Some(id) = record
                .body
                .as_ref()
                .and_then(|body| u64::try_from(body.id).ok())
            else {
                continue;
            };
            let in_log = logged.contains(&id);
            assert!(
                !(in_log && record.status == Status::Committed),
                "id {id} is both in node {serial}'s log and committed to execute again; \
                 {context}"
            );
            held.entry(id).or_default().insert(
                serial,
                Held {
                    in_log,
                    record: Some((record.status, record.t.0 == record.t0.0)),
                },
            );
        }
    }
    let mut quorums = Quorums::new(SERIALS[0]);
    for serial in &SERIALS[1..] {
        quorums.add(*serial, true).expect("distinct serials");
    }
    let mut ahead_of_coordinator = 0;
    for ack in acked.values() {
        let on = held.get(&ack.id).cloned().unwrap_or_default();
        let voted = |held: &Held| {
            held.in_log
                || held.record.is_some_and(|(status, _)| {
                    matches!(
                        status,
                        Status::PreAccepted
                            | Status::Accepted
                            | Status::Committed
                            | Status::Applied
                    )
                })
        };
        let own = on.get(&ack.serial);
        if !own.is_some_and(|held| {
            held.in_log
                || held
                    .record
                    .is_some_and(|(status, _)| status == Status::Committed)
        }) {
            ahead_of_coordinator += 1;
        }
        assert!(
            own.is_some_and(voted),
            "acknowledged id {} (generation {}): its coordinator, node {}, holds no durable \
             vote for it ({own:?}); {context}",
            ack.id,
            ack.generation,
            ack.serial
        );
        let decided = on.values().any(|held| {
            held.in_log
                || held.record.is_some_and(|(status, _)| {
                    matches!(status, Status::Committed | Status::Applied)
                })
        });
        // The simulator's rule, with why each case suffices (`recoverable_from_stores`).
        let votes: Vec<(Serial, Status, bool)> = on
            .iter()
            .filter_map(|(serial, held)| {
                held.record.map(|(status, at_t0)| (*serial, status, at_t0))
            })
            .collect();
        assert!(
            recoverable_from_stores(&quorums, decided, &votes),
            "acknowledged id {} (generation {}) cannot be recovered from the stores: {on:?}; \
             {context}",
            ack.id,
            ack.generation
        );
    }
    ahead_of_coordinator
}

/// Checks the logs a writer printed after it settled (see the crate docs).
fn check_dump(dump: &Dump, acked: &Acked, generation: u64, context: &str) {
    assert!(
        dump.complete && dump.settled,
        "the cluster did not settle after the restart:\n{}\n{context}",
        dump.unsettled.join("\n")
    );
    assert_eq!(
        dump.statuses.len(),
        SERIALS.len(),
        "a status is missing; {context}"
    );
    let (count, digest) = &dump.statuses[&SERIALS[0]];
    for (serial, status) in &dump.statuses {
        assert_eq!(
            status,
            &(*count, digest.clone()),
            "node {serial} settled with another applied count/digest than node {}; {context}",
            SERIALS[0]
        );
    }
    let empty = Vec::new();
    // Per node: ids in log order, and the position each id got per key when the log is
    // replayed through a fresh ledger.
    let mut hashes: BTreeMap<u64, (Serial, String)> = BTreeMap::new();
    let mut applied_sets: BTreeMap<Serial, BTreeSet<u64>> = BTreeMap::new();
    let mut orders: BTreeMap<Serial, Vec<(u64, Vec<String>)>> = BTreeMap::new();
    for serial in SERIALS {
        let log = dump.logs.get(&serial).unwrap_or(&empty);
        let log_ids: Vec<u64> = log.iter().map(|event| event.id).collect();
        let mut ledger = LedgerState::default();
        let mut positions: BTreeMap<u64, Vec<(String, u64)>> = BTreeMap::new();
        for (index, event) in log.iter().enumerate() {
            assert_eq!(
                event.seq,
                index as u64 + 1,
                "node {serial}: seqs are not 1, 2, 3, ... at {event:?}; {context}"
            );
            let submitted_by = (event.id >> 40) & 0xff;
            assert!(
                event.id >> 48 >= 1
                    && event.id >> 48 <= generation
                    && SERIALS.contains(&(submitted_by as Serial)),
                "node {serial}: id {} in the log was never submitted; {context}",
                event.id
            );
            assert!(
                event.keys != ["?"],
                "node {serial}: the payload of id {} does not decode; {context}",
                event.id
            );
            let tx = LedgerTx {
                id: event.id,
                keys: event.keys.clone(),
            };
            let previous = positions.insert(event.id, ledger.apply(&tx));
            assert!(
                previous.is_none(),
                "node {serial}: id {} is in the log twice (second at seq {}, t {}); {context}",
                event.id,
                event.seq,
                event.t
            );
            match hashes.get(&event.id) {
                Some((other, hash)) => assert_eq!(
                    hash, &event.result_hash,
                    "id {} has another result hash on node {serial} than on node {other}; \
                     {context}",
                    event.id
                ),
                None => {
                    hashes.insert(event.id, (serial, event.result_hash.clone()));
                }
            }
        }
        // What was applied when the nodes agreed: the first `count` events.
        let applied: BTreeSet<u64> = log.iter().take(*count as usize).map(|e| e.id).collect();
        assert_eq!(
            applied.len() as u64,
            *count,
            "node {serial}: its log after the clean stop holds {} events, fewer than the {count} \
             it had applied when the nodes agreed (last ids logged: {:?}); {context}",
            log.len(),
            &log_ids[log_ids.len().saturating_sub(5)..]
        );
        for ack in acked.values() {
            let Some(got) = positions.get(&ack.id) else {
                panic!(
                    "acknowledged id {} (by node {} in generation {}) is missing from node \
                     {serial}'s log; {context}",
                    ack.id, ack.serial, ack.generation
                );
            };
            assert_eq!(
                got, &ack.positions,
                "acknowledged id {} (by node {}): the client was told {:?}, node {serial}'s log \
                 puts it at {got:?}; {context}",
                ack.id, ack.serial, ack.positions
            );
        }
        applied_sets.insert(serial, applied);
        orders.insert(serial, log.iter().map(|e| (e.id, e.keys.clone())).collect());
    }
    let first = &applied_sets[&SERIALS[0]];
    for (serial, applied) in &applied_sets {
        let only_here: Vec<&u64> = applied.difference(first).take(10).collect();
        let only_there: Vec<&u64> = first.difference(applied).take(10).collect();
        assert!(
            only_here.is_empty() && only_there.is_empty(),
            "node {serial} and node {} settled with the same digest but applied other ids: \
             only on {serial}: {only_here:?}, only on {}: {only_there:?}; {context}",
            SERIALS[0],
            SERIALS[0]
        );
    }
    check_per_key_orders(&orders, context);
}

/// Per key, the ids two nodes both executed are in the same order on both.
fn check_per_key_orders(orders: &BTreeMap<Serial, Vec<(u64, Vec<String>)>>, context: &str) {
    let per_key = |log: &Vec<(u64, Vec<String>)>| {
        let mut keys: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (id, tx_keys) in log {
            for key in tx_keys {
                keys.entry(key.clone()).or_default().push(*id);
            }
        }
        keys
    };
    let sequences: BTreeMap<Serial, BTreeMap<String, Vec<u64>>> = orders
        .iter()
        .map(|(serial, log)| (*serial, per_key(log)))
        .collect();
    let ids: BTreeMap<Serial, BTreeSet<u64>> = orders
        .iter()
        .map(|(serial, log)| (*serial, log.iter().map(|(id, _)| *id).collect()))
        .collect();
    let empty = Vec::new();
    for (a, keys_a) in &sequences {
        for (b, keys_b) in sequences.range(a + 1..) {
            for (key, sequence_a) in keys_a {
                let common_a: Vec<u64> = sequence_a
                    .iter()
                    .filter(|id| ids[b].contains(id))
                    .copied()
                    .collect();
                let common_b: Vec<u64> = keys_b
                    .get(key)
                    .unwrap_or(&empty)
                    .iter()
                    .filter(|id| ids[a].contains(id))
                    .copied()
                    .collect();
                if let Some(at) = (0..common_a.len()).find(|i| common_a.get(*i) != common_b.get(*i))
                {
                    panic!(
                        "key {key}: nodes {a} and {b} executed conflicting transactions in \
                         different orders from position {at}: {:?} vs {:?}; {context}",
                        &common_a[at..common_a.len().min(at + 5)],
                        &common_b[at.min(common_b.len())..common_b.len().min(at + 5)]
                    );
                }
            }
        }
    }
}

/// The test's directory, kept when the test fails so the stores can be examined.
struct KeptOnFailure(Option<tempfile::TempDir>);

impl KeptOnFailure {
    fn path(&self) -> &Path {
        self.0.as_ref().expect("present until dropped").path()
    }
}

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            if std::thread::panicking() {
                eprintln!(
                    "crash test: the stores are kept in {}",
                    dir.keep().display()
                );
            }
        }
    }
}

fn write_expected(root: &Path, acked: &Acked) {
    let text: String = acked.keys().map(|id| format!("{id}\n")).collect();
    std::fs::write(root.join("expected"), text).expect("the expected ids are written");
}

/// The end of what the writer printed to stderr (the nodes' warnings and errors, failed
/// transactions): what a failed check's message needs to be read.
fn stderr_tail(outcome: &Outcome) -> String {
    const LINES_MAX: usize = 40;
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LINES_MAX)..];
    format!(
        "writer stderr (last {} lines):\n{}",
        tail.len(),
        tail.join("\n")
    )
}

fn describe_end(outcome: &Outcome) -> String {
    format!(
        "the writer ended with {}; stderr:\n{}\nunsettled:\n{}",
        outcome.status,
        outcome.stderr,
        outcome.dump.unsettled.join("\n")
    )
}

#[test]
fn sigkilled_cluster_loses_and_duplicates_nothing_acknowledged() {
    let started = Instant::now();
    let seed = env_u64("SYNEVI_CRASH_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.expect("the clock is after 1970").as_nanos() as u64
    });
    let runs = env_u64("SYNEVI_CRASH_RUNS").unwrap_or(RUNS_DEFAULT);
    eprintln!("crash test: seed {seed}, {runs} kills (replay: SYNEVI_CRASH_SEED={seed})");
    let mut rng = Rng(seed | 1);
    let dir = KeptOnFailure(Some(tempfile::tempdir().expect("a temporary directory")));
    let root = dir.path();
    let mut acked: Acked = BTreeMap::new();
    let mut kills_while_settling = 0;
    let mut settles_checked = 0;
    // Summed over kills: acknowledged transactions not yet committed on their coordinator.
    let mut answered_early = 0;
    for generation in 1..=runs {
        let kill = if rng.below(KILL_WHILE_SETTLING_ONE_IN) == 0 {
            Kill::AfterMs(rng.below(KILL_WHILE_SETTLING_MS_MAX))
        } else {
            Kill::AfterAcks(rng.below(ACKS_BEFORE_KILL_MAX + 1))
        };
        let context = format!(
            "restart {generation} of {runs} ({kill:?}); replay with SYNEVI_CRASH_SEED={seed}"
        );
        write_expected(root, &acked);
        let outcome = run_writer(root, generation, seed, kill);
        assert_eq!(
            outcome.status.signal(),
            Some(9),
            "{context}: the writer ended before the kill; {}",
            describe_end(&outcome)
        );
        if outcome.dump.complete {
            let context = format!("{context}\n{}", stderr_tail(&outcome));
            check_dump(&outcome.dump, &acked, generation, &context);
            settles_checked += 1;
        }
        kills_while_settling += u64::from(outcome.killed_while_settling);
        for ack in outcome.acks {
            let id = ack.id;
            if let Some(earlier) = acked.insert(id, ack) {
                panic!("id {id} was acknowledged twice (first {earlier:?}); {context}");
            }
        }
        answered_early += check_stores_after_kill(root, &acked, &context);
    }
    let context = format!("after the last kill; replay with SYNEVI_CRASH_SEED={seed}");
    write_expected(root, &acked);
    let outcome = run_writer(root, runs + 1, seed, Kill::Never);
    assert!(
        outcome.status.success(),
        "{context}: the settling writer failed; {}",
        describe_end(&outcome)
    );
    let context = format!("{context}\n{}", stderr_tail(&outcome));
    check_dump(&outcome.dump, &acked, runs + 1, &context);
    let events = outcome.dump.logs.get(&SERIALS[0]).map_or(0, Vec::len);
    assert!(
        !acked.is_empty(),
        "no transaction was ever acknowledged: every kill came too early; {context}"
    );
    eprintln!(
        "crash test: {runs} kills ({kills_while_settling} while settling), {} transactions \
         acknowledged ({answered_early} times one was found at a kill not yet committed on its \
         coordinator, recovered after the restart), {} restarts checked, final logs of \
         {events} events on every node, {:?} (seed {seed})",
        acked.len(),
        settles_checked + 1,
        started.elapsed()
    );
}
