//! The targets, evaluated on one run's figures and printed as PASS or MISS with the
//! ratio behind each. Never asserted: a benchmark reports, it does not fail.

use std::fmt;

use serde::Serialize;

use crate::cluster::{NetworkKind, StoreKind};
use crate::floor::Floor;
use crate::long_run::{LongResult, FLAT_GROWTH_MAX};
use crate::workload::{KeyMode, Load, WorkloadResult};

/// Uncontended p50 latency over gRPC may be at most this many bare gRPC round trips.
pub const LATENCY_ROUND_TRIPS_MAX: f64 = 2.5;
/// LMDB must keep at least this share of the in-memory throughput at the most clients.
pub const LMDB_SHARE_MIN: f64 = 0.5;
/// One hot key must keep at least this share of the disjoint-keys throughput.
pub const HOT_SHARE_MIN: f64 = 0.5;
/// Throughput must grow by at least this factor per step of clients...
pub const SCALING_GROWTH_MIN: f64 = 1.1;
/// ...unless the CPU was already this busy at the smaller step (saturated)...
pub const SATURATED_UTILISATION: f64 = 0.85;
/// ...and throughput held at least this share.
pub const SATURATED_HOLD_MIN: f64 = 0.9;

/// A target's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Met.
    Pass,
    /// Not met.
    Miss,
    /// The run did not measure what the target needs.
    NotMeasured,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::NotMeasured => "n/a",
        })
    }
}

/// One evaluated target.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared (`5n mem: p50 / gRPC round trip`).
    pub name: String,
    /// The measured ratio, if measured.
    pub ratio: Option<f64>,
    /// The requirement, as text (`<= 2.5`).
    pub requirement: String,
    /// The outcome.
    pub verdict: Verdict,
    /// The figures the ratio was computed from.
    pub detail: String,
}

fn clients_of(result: &WorkloadResult) -> Option<usize> {
    match result.load {
        Load::Clients { clients, .. } => Some(clients),
        Load::Burst { .. } => None,
    }
}

/// Finds the matrix workload with these parameters.
fn find(
    results: &[WorkloadResult],
    nodes: u16,
    store: StoreKind,
    keys: KeyMode,
    clients: usize,
) -> Option<&WorkloadResult> {
    results.iter().find(|result| {
        result.group == "matrix"
            && result.nodes == nodes
            && result.store == store
            && result.keys == keys
            && clients_of(result) == Some(clients)
    })
}

fn verdict(ratio: Option<f64>, pass: impl Fn(f64) -> bool) -> Verdict {
    match ratio {
        None => Verdict::NotMeasured,
        Some(ratio) if pass(ratio) => Verdict::Pass,
        Some(_) => Verdict::Miss,
    }
}

fn distinct<T: PartialEq + Copy>(values: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = Vec::new();
    for value in values {
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

/// Evaluates every target the run has figures for.
pub fn evaluate(
    floor: Option<&Floor>,
    results: &[WorkloadResult],
    long_run: Option<&LongResult>,
) -> Vec<Target> {
    let mut targets = Vec::new();
    let matrix: Vec<&WorkloadResult> = results.iter().filter(|r| r.group == "matrix").collect();
    let node_counts = distinct(matrix.iter().map(|r| r.nodes));
    let stores = distinct(matrix.iter().map(|r| r.store));
    let most_clients = matrix.iter().filter_map(|r| clients_of(r)).max();

    // Uncontended latency over gRPC, against the bare round trip.
    for &nodes in &node_counts {
        let uncontended = find(results, nodes, StoreKind::Mem, KeyMode::Disjoint, 1)
            .filter(|r| r.network == NetworkKind::Grpc);
        let round_trip = floor.map(|floor| floor.grpc_ping_pong.latency.p50_us);
        // With as many peers as the fan-out floor has, what its network part alone costs.
        let fan_out = floor
            .map(|floor| &floor.grpc_fan_out)
            .filter(|fan| u32::from(fan.peers) + 1 == u32::from(nodes))
            .map(|fan| {
                format!(
                    "; fan-out to {} peers, answer {}: p50 {} µs",
                    fan.peers, fan.answers_awaited, fan.latency.p50_us
                )
            })
            .unwrap_or_default();
        let ratio = match (uncontended, round_trip) {
            (Some(result), Some(rtt)) if rtt > 0 => Some(result.latency.p50_us as f64 / rtt as f64),
            _ => None,
        };
        targets.push(Target {
            name: format!("{nodes}n mem, 1 client: p50 / bare gRPC round trip"),
            ratio,
            requirement: format!("<= {LATENCY_ROUND_TRIPS_MAX}"),
            verdict: verdict(ratio, |r| r <= LATENCY_ROUND_TRIPS_MAX),
            detail: format!(
                "p50 {} µs, round trip p50 {} µs{fan_out}",
                uncontended.map_or("-".into(), |r| r.latency.p50_us.to_string()),
                round_trip.map_or("-".into(), |rtt| rtt.to_string())
            ),
        });
    }

    let Some(most) = most_clients else {
        return with_long_run(targets, long_run);
    };
    // Group commit: LMDB against memory at the most clients.
    for &nodes in &node_counts {
        for keys in [KeyMode::Disjoint, KeyMode::Hot, KeyMode::All] {
            let mem = find(results, nodes, StoreKind::Mem, keys, most);
            let lmdb = find(results, nodes, StoreKind::Lmdb, keys, most);
            if mem.is_none() && lmdb.is_none() {
                continue;
            }
            targets.push(throughput_ratio(
                format!("{nodes}n {keys}, {most} clients: LMDB / memory throughput"),
                ("lmdb", lmdb),
                ("mem", mem),
                (">=", LMDB_SHARE_MIN),
            ));
        }
    }
    // Contention: one hot key against disjoint keys.
    for &nodes in &node_counts {
        for &store in &stores {
            let hot = find(results, nodes, store, KeyMode::Hot, most);
            let disjoint = find(results, nodes, store, KeyMode::Disjoint, most);
            targets.push(throughput_ratio(
                format!("{nodes}n {store}, {most} clients: hot key / disjoint throughput"),
                ("hot", hot),
                ("disjoint", disjoint),
                (">=", HOT_SHARE_MIN),
            ));
        }
    }
    // Disjoint keys against everything conflicting.
    for &nodes in &node_counts {
        for &store in &stores {
            let disjoint = find(results, nodes, store, KeyMode::Disjoint, most);
            let all = find(results, nodes, store, KeyMode::All, most);
            targets.push(throughput_ratio(
                format!("{nodes}n {store}, {most} clients: disjoint / Keys::All throughput"),
                ("disjoint", disjoint),
                ("all", all),
                (">", 1.0),
            ));
        }
    }
    // Scaling with clients, until the CPU is saturated.
    let mut client_steps = distinct(matrix.iter().filter_map(|r| clients_of(r)));
    client_steps.sort_unstable();
    for &nodes in &node_counts {
        for &store in &stores {
            for step in client_steps.windows(2) {
                let (fewer, more) = (step[0], step[1]);
                let small = find(results, nodes, store, KeyMode::Disjoint, fewer);
                let large = find(results, nodes, store, KeyMode::Disjoint, more);
                let ratio = ratio_of(large, small);
                let saturated = small.is_some_and(|r| r.cpu_utilisation >= SATURATED_UTILISATION);
                targets.push(Target {
                    name: format!("{nodes}n {store} disjoint: throughput {more} / {fewer} clients"),
                    ratio,
                    requirement: format!(
                        ">= {SCALING_GROWTH_MIN}, or >= {SATURATED_HOLD_MIN} once CPU >= {:.0} %",
                        SATURATED_UTILISATION * 100.0
                    ),
                    verdict: verdict(ratio, |r| {
                        r >= SCALING_GROWTH_MIN || (saturated && r >= SATURATED_HOLD_MIN)
                    }),
                    detail: format!(
                        "{}; CPU utilisation {} → {}",
                        pair_detail(&format!("c{more}"), large, &format!("c{fewer}"), small),
                        small.map_or("-".into(), |r| format!(
                            "{:.0} %",
                            r.cpu_utilisation * 100.0
                        )),
                        large.map_or("-".into(), |r| format!(
                            "{:.0} %",
                            r.cpu_utilisation * 100.0
                        )),
                    ),
                });
            }
        }
    }
    with_long_run(targets, long_run)
}

fn with_long_run(mut targets: Vec<Target>, long_run: Option<&LongResult>) -> Vec<Target> {
    if let Some(long) = long_run {
        let memory = &long.memory;
        targets.push(Target {
            name: "long run: RssAnon trend of the second half, over the run".into(),
            ratio: Some(memory.projected_growth),
            requirement: format!("<= {FLAT_GROWTH_MAX}"),
            verdict: if memory.flat {
                Verdict::Pass
            } else {
                Verdict::Miss
            },
            detail: format!(
                "from {:.0} s: anon mean {:.1} MiB, slope {:.0} KiB/min ({:.1} → {:.1} MiB, max {:.1} MiB); VmRSS {:.1} → {:.1} MiB (includes LMDB's mapped files); {} transactions",
                memory.warm_elapsed_s,
                memory.mean_anon_after_warm_kib / 1024.0,
                memory.slope_kib_per_min,
                memory.warm_anon_kib as f64 / 1024.0,
                memory.final_anon_kib as f64 / 1024.0,
                memory.max_anon_after_warm_kib as f64 / 1024.0,
                memory.warm_rss_kib as f64 / 1024.0,
                memory.final_rss_kib as f64 / 1024.0,
                long.committed,
            ),
        });
    }
    targets
}

/// The target "`a`'s throughput / `b`'s throughput `op` `bound`", where `op` is `>=` or `>`.
fn throughput_ratio(
    name: String,
    (a_name, a): (&str, Option<&WorkloadResult>),
    (b_name, b): (&str, Option<&WorkloadResult>),
    (op, bound): (&str, f64),
) -> Target {
    let ratio = ratio_of(a, b);
    let strict = op == ">";
    Target {
        name,
        ratio,
        requirement: format!("{op} {bound}"),
        verdict: verdict(ratio, |r| if strict { r > bound } else { r >= bound }),
        detail: pair_detail(a_name, a, b_name, b),
    }
}

fn ratio_of(
    numerator: Option<&WorkloadResult>,
    denominator: Option<&WorkloadResult>,
) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d.throughput_tps > 0.0 => Some(n.throughput_tps / d.throughput_tps),
        _ => None,
    }
}

/// Both throughputs, and with `--rounds` the ratio in each round: the verdict is the ratio
/// of the two medians, and the rounds show how far it is a draw.
fn pair_detail(
    a_name: &str,
    a: Option<&WorkloadResult>,
    b_name: &str,
    b: Option<&WorkloadResult>,
) -> String {
    let tps =
        |r: Option<&WorkloadResult>| r.map_or("-".into(), |r| format!("{:.0}", r.throughput_tps));
    let by_round = match (a, b) {
        (Some(a), Some(b)) => round_ratios(&a.rounds_tps, &b.rounds_tps),
        _ => Vec::new(),
    };
    let rounds = if by_round.is_empty() {
        String::new()
    } else {
        let ratios: Vec<String> = by_round.iter().map(|r| format!("{r:.2}")).collect();
        format!(" (by round: {})", ratios.join(", "))
    };
    format!(
        "{a_name} {} txns/s, {b_name} {} txns/s{rounds}",
        tps(a),
        tps(b)
    )
}

/// Round `i`'s ratio of two workloads' throughputs, for every round both ran (a workload's
/// round `i` ran in the run's round `i`); empty without rounds or if they differ in number.
fn round_ratios(numerators: &[f64], denominators: &[f64]) -> Vec<f64> {
    if numerators.len() != denominators.len() || numerators.len() < 2 {
        return Vec::new();
    }
    numerators
        .iter()
        .zip(denominators)
        .filter(|(_, d)| **d > 0.0)
        .map(|(n, d)| n / d)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::round_ratios;

    #[test]
    fn ratios_are_taken_round_by_round() {
        assert_eq!(
            round_ratios(&[10.0, 30.0, 20.0], &[20.0, 30.0, 10.0]),
            vec![0.5, 1.0, 2.0]
        );
        // One round, or rounds that do not pair up, say nothing.
        assert!(round_ratios(&[10.0], &[20.0]).is_empty());
        assert!(round_ratios(&[10.0, 20.0], &[20.0]).is_empty());
        assert!(round_ratios(&[], &[]).is_empty());
        // A round with nothing to divide by is left out.
        assert_eq!(round_ratios(&[10.0, 20.0], &[0.0, 40.0]), vec![0.5]);
    }
}
