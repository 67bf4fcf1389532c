//! [`Metrics`]: request counters and latency histograms, and the Prometheus text rendering
//! of everything `/metrics` shows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::backend::KvBackend;

/// Upper bounds of the latency histogram's buckets, in seconds: from one millisecond (a
/// fast-path commit on a LAN) to ten seconds (the default transaction timeout).
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// The KV operations the API counts separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// `GET /kv/{key}`.
    Get,
    /// `PUT /kv/{key}`.
    Put,
    /// `POST /kv/{key}/cas`.
    Cas,
    /// `DELETE /kv/{key}`.
    Delete,
}

impl Operation {
    /// The operation's label value.
    pub fn label(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Put => "put",
            Operation::Cas => "cas",
            Operation::Delete => "delete",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Cumulative counts are computed when rendering; these are per bucket, plus one for
    /// everything above the last bound.
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let index = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.buckets[index] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Recorded {
    /// Answers by operation and HTTP status.
    responses: BTreeMap<(Operation, u16), u64>,
    /// Latency of operations that went through consensus (whatever their answer), by
    /// operation.
    latency: BTreeMap<Operation, Histogram>,
}

/// What the HTTP layer records about the requests it answered.
#[derive(Debug, Default)]
pub struct Metrics {
    recorded: Mutex<Recorded>,
}

impl Metrics {
    /// Nothing recorded yet.
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Counts one answered request.
    pub fn record_response(&self, operation: Operation, status: u16) {
        *self
            .lock()
            .responses
            .entry((operation, status))
            .or_default() += 1;
    }

    /// Records how long one transaction took, from submission to result.
    pub fn record_latency(&self, operation: Operation, elapsed: Duration) {
        self.lock()
            .latency
            .entry(operation)
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// Counters are plain numbers: their state is valid whatever a panicking thread left.
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything `/metrics` shows, in the Prometheus text exposition format (0.0.4).
    pub fn render(&self, ready: bool, backend: Option<&dyn KvBackend>) -> String {
        let mut out = String::new();
        gauge(
            &mut out,
            "synevi_kv_ready",
            "1 once the node has reached a quorum and serves requests, else 0.",
            &[("", u64::from(ready))],
        );
        self.render_requests(&mut out);
        if let Some(backend) = backend {
            render_node(&mut out, backend);
        }
        out
    }

    fn render_requests(&self, out: &mut String) {
        let recorded = self.lock();
        header(
            out,
            "synevi_kv_requests_total",
            "counter",
            "KV requests answered, by operation and HTTP status.",
        );
        for ((operation, status), count) in &recorded.responses {
            let _ = writeln!(
                out,
                "synevi_kv_requests_total{{op=\"{}\",status=\"{status}\"}} {count}",
                operation.label()
            );
        }
        header(
            out,
            "synevi_kv_transaction_duration_seconds",
            "histogram",
            "Time from submitting a KV operation to consensus until its result, by operation.",
        );
        for (operation, histogram) in &recorded.latency {
            let op = operation.label();
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS_SECONDS.iter().zip(&histogram.buckets) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "synevi_kv_transaction_duration_seconds_bucket{{op=\"{op}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "synevi_kv_transaction_duration_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "synevi_kv_transaction_duration_seconds_sum{{op=\"{op}\"}} {}",
                histogram.sum_seconds
            );
            let _ = writeln!(
                out,
                "synevi_kv_transaction_duration_seconds_count{{op=\"{op}\"}} {}",
                histogram.count
            );
        }
    }
}

fn render_node(out: &mut String, backend: &dyn KvBackend) {
    let status = backend.status();
    let stats = &status.stats;
    header(
        out,
        "synevi_transactions_committed_total",
        "counter",
        "Transactions this node coordinated to a commit, by path: fast (one round trip), \
         slow (Accept round), recovery (finished by this node's recovery).",
    );
    for (path, value) in [
        ("fast", stats.fast_path_commits),
        ("slow", stats.slow_path_commits),
        ("recovery", stats.recovery_commits),
    ] {
        let _ = writeln!(
            out,
            "synevi_transactions_committed_total{{path=\"{path}\"}} {value}"
        );
    }
    let counters = [
        (
            "synevi_transactions_submitted_total",
            "Transactions submitted to this node (KV operations and health probes).",
            stats.submitted,
        ),
        (
            "synevi_transactions_executed_total",
            "Transactions this node executed since the process started.",
            stats.executed,
        ),
        (
            "synevi_recoveries_started_total",
            "Recoveries this node started for transactions that stalled.",
            stats.recoveries_started,
        ),
        (
            "synevi_recovery_invalidations_total",
            "Transactions this node's recoveries turned into no-ops.",
            stats.recovery_invalidations,
        ),
        (
            "synevi_transactions_forgotten_total",
            "Transactions whose protocol state this node released.",
            stats.forgotten,
        ),
        (
            "synevi_messages_sent_total",
            "Protocol messages this node sent.",
            stats.messages_sent,
        ),
        (
            "synevi_messages_received_total",
            "Protocol messages this node received.",
            stats.messages_received,
        ),
        (
            "synevi_inbox_dropped_total",
            "Arrived messages dropped because the node's inbox was full.",
            status.inbox_dropped,
        ),
    ];
    for (name, help, value) in counters {
        counter(out, name, help, value);
    }
    gauge(
        out,
        "synevi_transactions_applied",
        "Transactions this node executed since its store was created (the event log's length).",
        &[("", status.applied_count)],
    );
    gauge(
        out,
        "synevi_transactions_held",
        "Transactions whose protocol state this node holds in memory.",
        &[("", stats.transactions_held)],
    );
    gauge(
        out,
        "synevi_transactions_pending_execution",
        "Committed transactions waiting for their dependencies to execute.",
        &[("", stats.pending_execution)],
    );
    let size = backend.store_size();
    if let Some(bytes) = size.bytes_on_disk {
        gauge(
            out,
            "synevi_store_bytes",
            "Size of the node's store on disk.",
            &[("", bytes)],
        );
    }
    if let Some(transactions) = size.transactions {
        gauge(
            out,
            "synevi_store_transactions",
            "Transaction records in the node's store (protocol state not yet released).",
            &[("", transactions)],
        );
    }
    let executor = backend.executor();
    gauge(
        out,
        "synevi_kv_keys",
        "Keys in this node's copy of the store.",
        &[("", to_u64(executor.len()))],
    );
    gauge(
        out,
        "synevi_kv_data_bytes",
        "Bytes of keys and values in this node's copy of the store.",
        &[("", to_u64(executor.data_bytes()))],
    );
    let network = backend.network_stats();
    counter(
        out,
        "synevi_network_envelopes_sent_total",
        "Protocol envelopes handed to peers' gRPC streams.",
        network.envelopes_sent,
    );
    counter(
        out,
        "synevi_network_envelopes_received_total",
        "Protocol envelopes received over gRPC.",
        network.envelopes_received,
    );
    series(
        out,
        "synevi_network_envelopes_dropped_total",
        "counter",
        "Protocol envelopes dropped by the network, by reason (the protocol retries).",
        &[
            ("reason=\"queue_full\"", network.dropped_queue_full),
            ("reason=\"too_large\"", network.dropped_too_large),
            (
                "reason=\"unknown_destination\"",
                network.dropped_unknown_destination,
            ),
            ("reason=\"disconnected\"", network.dropped_disconnected),
            ("reason=\"rejected\"", network.rejected_envelopes),
        ],
    );
    counter(
        out,
        "synevi_network_connection_failures_total",
        "Failed attempts to connect to a peer or keep a stream to it.",
        network.connection_failures,
    );
    series(
        out,
        "synevi_network_inbound_streams_ended_total",
        "counter",
        "Peers' streams to this node that ended, by how: closed by a peer that shut down, \
         or failed (a broken connection, a bad frame).",
        &[
            ("how=\"closed\"", network.closed_inbound_streams),
            ("how=\"failed\"", network.failed_inbound_streams),
        ],
    );
}

fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A gauge with optional label sets (`""` for none).
fn gauge(out: &mut String, name: &str, help: &str, values: &[(&str, u64)]) {
    series(out, name, "gauge", help, values);
}

/// A metric of `kind` with one sample per label set (`""` for none).
fn series(out: &mut String, name: &str, kind: &str, help: &str, values: &[(&str, u64)]) {
    header(out, name, kind, help);
    for (labels, value) in values {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_the_count() {
        let metrics = Metrics::new();
        for millis in [0, 1, 3, 40, 40, 900, 60_000] {
            metrics.record_latency(Operation::Put, Duration::from_millis(millis));
        }
        metrics.record_response(Operation::Put, 200);
        metrics.record_response(Operation::Put, 200);
        metrics.record_response(Operation::Get, 404);
        let text = metrics.render(true, None);
        assert!(text.contains("synevi_kv_ready 1\n"), "{text}");
        assert!(text.contains("synevi_kv_requests_total{op=\"get\",status=\"404\"} 1\n"));
        assert!(text.contains("synevi_kv_requests_total{op=\"put\",status=\"200\"} 2\n"));
        let bucket = |le: &str| {
            let prefix =
                format!("synevi_kv_transaction_duration_seconds_bucket{{op=\"put\",le=\"{le}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no bucket {le} in\n{text}"))
        };
        assert_eq!(bucket("0.001"), 2);
        assert_eq!(bucket("0.005"), 3);
        assert_eq!(bucket("0.05"), 5);
        assert_eq!(bucket("1"), 6);
        assert_eq!(bucket("30"), 6);
        assert_eq!(bucket("+Inf"), 7);
        assert!(text.contains("synevi_kv_transaction_duration_seconds_count{op=\"put\"} 7\n"));
    }
}
