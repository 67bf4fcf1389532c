//! The report: a table on stdout and everything in JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cluster::CoreSite;
use crate::floor::Floor;
use crate::long_run::LongResult;
use crate::machine::Machine;
use crate::targets::Target;
use crate::workload::WorkloadResult;

/// Everything one invocation measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The harness's version.
    pub harness: String,
    /// The command line, as run.
    pub command: Vec<String>,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    /// Seconds the whole run took.
    pub duration_s: f64,
    /// The machine.
    pub machine: Machine,
    /// The 1-, 5- and 15-minute load averages when the run ended.
    pub load_average_at_end: Option<[f64; 3]>,
    /// The settings the run used.
    pub settings: serde_json::Value,
    /// The floor, if measured.
    pub floor: Option<Floor>,
    /// The workloads, in the order they ran.
    pub workloads: Vec<WorkloadResult>,
    /// The long run, if run.
    pub long_run: Option<LongResult>,
    /// The targets evaluated on these figures.
    pub targets: Vec<Target>,
}

impl Report {
    /// Writes the report as pretty JSON, creating the file's directory.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let json = serde_json::to_string_pretty(self).context("the report serialises")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write the report to {}", path.display()))
    }

    /// The summary as text: machine, floor, workloads, long run, targets.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let machine = &self.machine;
        let load = |load: Option<[f64; 3]>| {
            load.map_or("unknown".into(), |[one, five, fifteen]| {
                format!("{one:.2} {five:.2} {fifteen:.2}")
            })
        };
        let _ = writeln!(
            out,
            "machine: {}, {} cores, {} MiB, Linux {}; allocator {}; nodes' cores on {}; load \
             average {} at start, {} at end",
            machine.cpu_model,
            machine.cores,
            machine.memory_mib,
            machine.kernel,
            allocator_of(machine.allocator, &self.settings),
            match self
                .settings
                .get("core")
                .and_then(|core| CoreSite::deserialize(core).ok())
            {
                Some(CoreSite::Runtime) => "the harness's runtime",
                Some(CoreSite::Thread) | None => "a thread each",
            },
            load(machine.load_average_at_start),
            load(self.load_average_at_end),
        );
        if let Some(commit) = &machine.git_commit {
            let dirty = if machine.git_dirty == Some(true) {
                " (with uncommitted changes)"
            } else {
                ""
            };
            let _ = writeln!(out, "commit: {commit}{dirty}");
        }
        if let Some(floor) = &self.floor {
            let ping = &floor.grpc_ping_pong;
            let _ = writeln!(out, "\nfloor");
            let _ = writeln!(
                out,
                "  gRPC round trip, 1 in flight:   p50 {} µs, p99 {} µs, {:.0} round trips/s ({:.0} messages/s)",
                ping.latency.p50_us, ping.latency.p99_us, ping.round_trips_per_s, ping.messages_per_s
            );
            let piped = &floor.grpc_pipelined;
            let _ = writeln!(
                out,
                "  gRPC, {} in flight:            {:.0} messages/s, {:.1} µs CPU per message",
                piped.window, piped.messages_per_s, piped.cpu_per_message_us
            );
            let fan = &floor.grpc_fan_out;
            let _ = writeln!(
                out,
                "  gRPC fan-out to {} peers:        answer {} of {}: p50 {} µs, p99 {} µs",
                fan.peers, fan.answers_awaited, fan.peers, fan.latency.p50_us, fan.latency.p99_us
            );
            let lmdb = &floor.lmdb_commit;
            let _ = writeln!(
                out,
                "  LMDB synced commit:             p50 {} µs, p99 {} µs, {:.0} commits/s",
                lmdb.latency.p50_us, lmdb.latency.p99_us, lmdb.commits_per_s
            );
            if let Some(log) = &floor.log_commit {
                let _ = writeln!(
                    out,
                    "  commit through the commit log:  p50 {} µs, p99 {} µs, {:.0} commits/s",
                    log.latency.p50_us, log.latency.p99_us, log.commits_per_s
                );
            }
            if let Some(share) = floor.stolen_share {
                let _ = writeln!(
                    out,
                    "  (of the time the CPUs had work meanwhile, the host gave {:.0} % to other guests)",
                    share * 100.0
                );
            }
        }
        if !self.workloads.is_empty() {
            let _ = writeln!(out, "\n{}", table(&self.workloads));
            if let Some(rounds) = self.workloads.iter().map(|w| w.rounds_tps.len()).max() {
                if rounds > 1 {
                    let _ = writeln!(
                        out,
                        "(each row: the round with the median throughput of {rounds}; the floor: \
                         the round with the median round trip; every round in the JSON)"
                    );
                }
            }
        }
        if let Some(long) = &self.long_run {
            let _ = writeln!(
                out,
                "long run: {} nodes, {}, {}, {} keys, {} clients: {} transactions in {:.0} s, {:.0} txns/s, p50 {:.2} ms, p99 {:.2} ms, {:.0} µs CPU/txn, {} errors",
                long.nodes,
                long.network,
                long.store,
                long.keys,
                long.clients,
                long.committed,
                long.wall_s,
                long.throughput_tps,
                long.latency.p50_us as f64 / 1000.0,
                long.latency.p99_us as f64 / 1000.0,
                long.cpu_per_txn_us,
                long.errors,
            );
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\ntargets");
            for target in &self.targets {
                let _ = writeln!(
                    out,
                    "  {:<4} {:>6}  {:<62} (needs {}; {})",
                    target.verdict.to_string(),
                    target.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                    target.name,
                    target.requirement,
                    target.detail
                );
            }
        }
        out
    }
}

/// The workloads as a fixed-width table.
pub fn table(results: &[WorkloadResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>5} {:>4} {:>8} {:>5} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8} {:>5} {:>4} {:>6} {:>5} {:>6} {:>4}",
        "workload",
        "store",
        "net",
        "keys",
        "conc",
        "txns",
        "txns/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU µs",
        "CPU%",
        "st%",
        "cs/tx",
        "fast%",
        "msg/tx",
        "err"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<24} {:>5} {:>4} {:>8} {:>5} {:>7} {:>8.0} {:>7.2} {:>7.2} {:>8.1} {:>8.0} {:>5.0} {:>4} {:>6.1} {:>5.0} {:>6.1} {:>4}",
            r.name,
            r.store.to_string(),
            r.network.to_string(),
            r.keys.to_string(),
            r.concurrency,
            r.committed,
            r.throughput_tps,
            r.latency.p50_us as f64 / 1000.0,
            r.latency.p99_us as f64 / 1000.0,
            r.latency.max_us as f64 / 1000.0,
            r.cpu_per_txn_us,
            r.cpu_utilisation * 100.0,
            percent(r.stolen_share),
            r.voluntary_switches_per_txn,
            r.fast_path_share * 100.0,
            r.messages_per_txn,
            r.errors,
        );
    }
    out.push_str(
        "(conc: transactions in flight; CPU µs: CPU time per committed transaction, all nodes; \
         CPU%: of all cores until every node executed everything; st%: of the time the CPUs \
         had work meanwhile, the share the host gave to other guests (stolen); cs/tx: voluntary context \
         switches per transaction, whole process; fast%: fast-path commits; \
         msg/tx: protocol messages sent per transaction, all nodes)",
    );
    out
}

/// A share as a whole percentage, or a dash where it was not measured.
fn percent(share: Option<f64>) -> String {
    share.map_or("-".to_string(), |share| format!("{:.0}", share * 100.0))
}

/// One line for a finished workload (printed as the run goes).
pub fn line(r: &WorkloadResult) -> String {
    let c = &r.counters;
    let store = if c.store_commits == 0 {
        String::new()
    } else {
        format!(
            "  store: {:.1} records/commit, {:.2} ms/commit",
            c.store_records as f64 / c.store_commits as f64,
            c.store_commit_micros as f64 / c.store_commits as f64 / 1000.0
        )
    };
    format!(
        "{:<24} {:>8.0} txns/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {:>6.0} µs CPU/txn  CPU {:>3.0} %  stolen {} %  fast {:>3.0} %  {} errors{}{store}",
        r.name,
        r.throughput_tps,
        r.latency.p50_us as f64 / 1000.0,
        r.latency.p99_us as f64 / 1000.0,
        r.cpu_per_txn_us,
        r.cpu_utilisation * 100.0,
        percent(r.stolen_share),
        r.fast_path_share * 100.0,
        r.errors,
        if r.settled { "" } else { " (NOT SETTLED: a node did not execute everything)" },
    )
}

/// The allocator as the report names it: mimalloc with its purge delay (`--purge-delay-ms`).
fn allocator_of(allocator: &str, settings: &serde_json::Value) -> String {
    match settings
        .get("purge_delay_ms")
        .and_then(serde_json::Value::as_i64)
    {
        Some(ms) if ms < 0 => format!("{allocator} (purge delay: never)"),
        Some(ms) => format!("{allocator} (purge delay {ms} ms)"),
        None => allocator.to_string(),
    }
}
