//! Crash test with real processes: a writer process commits batches to an `LmdbStore` and
//! acknowledges each one on stdout after `commit` returned; the test kills it with SIGKILL at
//! a random moment, many times over the same directory, and checks after every kill that
//! every acknowledged batch is there, whole, exactly once.
//!
//! The writer is this same test binary, started again with `WRITER_DIR_VAR` set, running only
//! [`writer_process`]. Each batch writes events `a..=b`, the node metadata with
//! `applied_count = b`, a transaction record keyed by `b`, and forgets the previous batch's
//! record, so a half-applied batch would show as metadata, log and records disagreeing.
//!
//! `SYNEVI_CRASH_SEED=N` replays one run; `SYNEVI_CRASH_RUNS=N` changes how many kills.
#![cfg(unix)]

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use synevi_persistence::{LmdbConfig, LmdbStore, MAP_SIZE_MIN};
use synevi_types::{
    Ballot, Bytes, Deps, Event, Keys, NodeMeta, Status, Store, Timestamp, TxBody, TxRecord, Ulid,
    WriteBatch, T, T0,
};

const WRITER_DIR_VAR: &str = "SYNEVI_CRASH_WRITER_DIR";
const SERIAL: u16 = 3;
/// How many times the writer is killed in one run.
const RUNS_DEFAULT: u64 = 25;
/// The longest the writer runs before it is killed.
const KILL_AFTER_MS_MAX: u64 = 120;

/// A small map that grows while the writer runs, so that kills also land around growth.
fn config() -> LmdbConfig {
    LmdbConfig::default()
        .map_size_initial(MAP_SIZE_MIN)
        .map_size_growth(MAP_SIZE_MIN)
        .map_size_max(256 << 20)
}

fn t0(seq: u64) -> T0 {
    T0(Timestamp::new(seq, 0, SERIAL))
}

fn event(seq: u64) -> Event {
    Event {
        seq,
        t0: t0(seq),
        t: T(Timestamp::new(seq, 1, SERIAL)),
        id: u128::from(seq),
        payload: Bytes::from(vec![(seq % 251) as u8; 100 + (seq % 7) as usize * 300]),
        result_hash: [(seq % 256) as u8; 32],
    }
}

fn meta(applied_count: u64) -> NodeMeta {
    NodeMeta {
        node_id: Ulid::from_parts(1, 2),
        serial: SERIAL,
        clock_floor: Timestamp::new(applied_count, 0, SERIAL),
        applied_count,
        applied_digest: [0; 32],
        members: vec![(2, true), (3, false)],
        applied_recorded_through: 0,
    }
}

fn record(last_seq: u64) -> TxRecord {
    TxRecord {
        t0: t0(last_seq),
        status: Status::Applied,
        t: T(Timestamp::new(last_seq, 1, SERIAL)),
        deps: Deps::new(),
        promised: Ballot::ZERO,
        accepted: Ballot::ZERO,
        body: Some(TxBody {
            id: u128::from(last_seq),
            keys: Keys::All,
            payload: Bytes::from_static(b"crash test"),
        }),
    }
}

/// The writer: resumes from what the store holds and commits until it is killed.
#[test]
fn writer_process() {
    let Some(dir) = std::env::var_os(WRITER_DIR_VAR) else {
        return; // Run as a normal test: nothing to do.
    };
    let store = LmdbStore::with_config(Path::new(&dir), SERIAL, config()).expect("writer opens");
    let mut last = store.load().expect("writer loads").last_event_seq;
    let stdout = std::io::stdout();
    for round in 0u64.. {
        let size = 1 + (last + round) % 23;
        let batch = WriteBatch {
            transactions: vec![record(last + size)],
            forget: if last > 0 { vec![t0(last)] } else { Vec::new() },
            events: (last + 1..=last + size).map(event).collect(),
            meta: Some(meta(last + size)),
            ..WriteBatch::default()
        };
        store.commit(&batch).expect("writer commits");
        last += size;
        let mut out = stdout.lock();
        writeln!(out, "acked {last}").expect("stdout");
        out.flush().expect("stdout");
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Starts the writer on `dir`, kills it after `after_ms`, returns the highest acknowledged
/// seq (0 if none).
fn run_writer_and_kill(dir: &Path, after_ms: u64) -> u64 {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([
            "writer_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_DIR_VAR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the writer starts");
    let mut stdout = child.stdout.take().expect("piped");
    // Read while the writer runs, so that a full pipe never blocks it.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    std::thread::sleep(Duration::from_millis(after_ms));
    // `Child::kill` is SIGKILL on Unix: no destructor, no flush, no clean close of LMDB.
    let _ = child.kill();
    let status = child.wait().expect("the writer is reaped");
    let text = reader.join().expect("the reader thread");
    // SIGKILL is 9 on every Unix. Any other end means the writer failed by itself (a
    // commit error panics it), which must fail the test rather than pass as a kill.
    if status.signal() != Some(9) {
        let mut stderr = String::new();
        let _ = child
            .stderr
            .take()
            .map(|mut e| e.read_to_string(&mut stderr));
        panic!("the writer ended with {status} before the kill; stderr:\n{stderr}");
    }
    // Only complete lines count: a line cut by the kill was never fully acknowledged.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter_map(|line| line.strip_prefix("acked "))
        .map(|seq| seq.parse::<u64>().expect("an acked seq"))
        .max()
        .unwrap_or(0)
}

/// Checks that the store holds whole batches only, and everything acknowledged.
fn check(dir: &Path, acked: u64, seed: u64, run: u64) -> u64 {
    let replay = format!("replay with SYNEVI_CRASH_SEED={seed} (failed in run {run})");
    let store = LmdbStore::with_config(dir, SERIAL, config())
        .unwrap_or_else(|e| panic!("reopening after a kill failed: {e}; {replay}"));
    let state = store.load().expect("loads after a kill");
    let last = state.last_event_seq;
    assert!(
        last >= acked,
        "acknowledged seq {acked} is missing: the log ends at {last}; {replay}"
    );
    let events = store.events_after(0, usize::MAX).expect("reads the log");
    assert_eq!(events.len() as u64, last, "gaps or duplicates; {replay}");
    for (index, got) in events.iter().enumerate() {
        assert_eq!(*got, event(index as u64 + 1), "event differs; {replay}");
    }
    // Metadata, log and records come from the same batches: they agree, or a batch was cut.
    assert_eq!(
        state.meta.map(|m| m.applied_count).unwrap_or(0),
        last,
        "{replay}"
    );
    let expected_records = if last == 0 {
        vec![]
    } else {
        vec![record(last)]
    };
    assert_eq!(state.transactions, expected_records, "{replay}");
    last
}

#[test]
fn sigkilled_writers_lose_nothing_acknowledged() {
    let seed = std::env::var("SYNEVI_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00c0_ffee_u64);
    let runs = std::env::var("SYNEVI_CRASH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(RUNS_DEFAULT);
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("store");
    let mut acked_total = 0;
    let mut last = 0;
    for run in 0..runs {
        let after_ms = rng.below(KILL_AFTER_MS_MAX) + 1;
        let acked = run_writer_and_kill(&path, after_ms);
        acked_total = acked_total.max(acked);
        last = check(&path, acked_total, seed, run);
    }
    assert!(
        last > 0,
        "no batch was ever committed: the writer was always killed too early"
    );
    eprintln!("{runs} kills, the log reached seq {last} (seed {seed})");
}
