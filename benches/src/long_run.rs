//! The long run: closed-loop clients for millions of transactions or many minutes, with the
//! process's resident memory sampled every few seconds. Memory must stay flat once warm:
//! protocol state of transactions every node executed is released (DESIGN §6.7).

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;

use crate::cluster::{Cluster, ClusterCounters, ClusterSpec, NetworkKind, StoreKind};
use crate::machine::{self, Resident};
use crate::workload::{self, KeyMode, Latency, Limit};

/// What to run.
#[derive(Clone, Debug)]
pub struct LongSpec {
    /// The cluster.
    pub cluster: ClusterSpec,
    /// Closed-loop clients.
    pub clients: usize,
    /// What the transactions touch.
    pub keys: KeyMode,
    /// Stop after this many transactions...
    pub txns: u64,
    /// ...or after this long, whichever comes first.
    pub duration: Option<Duration>,
    /// How often to sample memory.
    pub sample_every: Duration,
}

/// One sample.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the clients started.
    pub elapsed_s: f64,
    /// Transactions committed so far.
    pub committed: u64,
    /// Errors so far.
    pub errors: u64,
    /// Throughput since the previous sample.
    pub interval_tps: f64,
    /// Median latency since the previous sample, microseconds.
    pub interval_p50_us: u64,
    /// 99th percentile latency since the previous sample, microseconds.
    pub interval_p99_us: u64,
    /// The process's resident memory.
    pub resident: Resident,
    /// Protocol state held in the cores, all nodes (transactions not yet forgotten).
    pub transactions_held: u64,
    /// Transaction records in the stores, all nodes.
    pub stored_transactions: u64,
    /// Store commits since the previous sample, all nodes.
    pub interval_store_commits: u64,
    /// Mean store commit since the previous sample, microseconds.
    pub interval_commit_mean_us: f64,
    /// The machine's 1-minute load average (other work shares the cores).
    pub load_average_1m: Option<f64>,
}

/// What the long run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LongResult {
    /// Nodes.
    pub nodes: u16,
    /// Their network.
    pub network: NetworkKind,
    /// Their stores.
    pub store: StoreKind,
    /// What the transactions touch.
    pub keys: KeyMode,
    /// Closed-loop clients.
    pub clients: usize,
    /// Transactions committed.
    pub committed: u64,
    /// Errors.
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// Seconds the clients ran.
    pub wall_s: f64,
    /// `committed / wall_s`.
    pub throughput_tps: f64,
    /// Over the whole run.
    pub latency: Latency,
    /// CPU per committed transaction, all nodes, microseconds.
    pub cpu_per_txn_us: f64,
    /// `cpu / (wall × cores)`.
    pub cpu_utilisation: f64,
    /// Counters over the run, all nodes summed.
    pub counters: ClusterCounters,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// The memory verdict.
    pub memory: MemoryVerdict,
}

/// Whether memory stayed flat once warm.
///
/// Judged on `RssAnon` (heap and stacks), not on `VmRSS`: with LMDB stores, `VmRSS` also
/// counts the pages of the stores' memory-mapped files that the process touched (`RssFile`),
/// which grow with the event log on disk and are page cache the kernel reclaims, not memory
/// the process holds. Both are recorded.
///
/// The run is warm from its second half on, and memory is flat when the trend of that half
/// (its least-squares slope), kept up for as long as the whole run took, would add at most
/// [`FLAT_GROWTH_MAX`] to that half's mean. A trend, not two single samples: samples wander
/// (mimalloc's by ±10 % from one to the next), and a slope over every sample of the half
/// sees through that. The second half, not the last three quarters: 30-minute runs were
/// still settling at a quarter of the run (glibc's malloc rose for 15 minutes, then held to
/// the sample). Projected over the whole run, not over the half: a leak grows in
/// proportion to the transactions run, so its slope is the same in both halves, and the
/// projection charges it for the whole run's length.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryVerdict {
    /// Where the judged half begins: the first sample at or after half the run.
    pub warm_elapsed_s: f64,
    /// `RssAnon` at that sample, KiB.
    pub warm_anon_kib: u64,
    /// `RssAnon` at the last sample, KiB.
    pub final_anon_kib: u64,
    /// Largest `RssAnon` from the warm sample on, KiB.
    pub max_anon_after_warm_kib: u64,
    /// Mean `RssAnon` from the warm sample on, KiB.
    pub mean_anon_after_warm_kib: f64,
    /// Least-squares slope of `RssAnon` from the warm sample on, KiB per minute.
    pub slope_kib_per_min: f64,
    /// The slope times the whole run's length, over the mean: what the trend of the second
    /// half would add in a run as long again.
    pub projected_growth: f64,
    /// `(final - warm) / warm` of `RssAnon` (two single samples; recorded, not judged).
    pub growth_after_warm: f64,
    /// `VmRSS` at the warm sample, KiB.
    pub warm_rss_kib: u64,
    /// `VmRSS` at the last sample, KiB.
    pub final_rss_kib: u64,
    /// `projected_growth` at most [`FLAT_GROWTH_MAX`].
    pub flat: bool,
}

/// The most the second half's trend may add to its mean over the whole run's length for
/// memory to count as flat. Allocators keep freed memory and fragment, and settle; a leak
/// of protocol state grows without bound, in proportion to the transactions run.
pub const FLAT_GROWTH_MAX: f64 = 0.10;

/// Writes a line above the progress bar, or to stderr when the bar is hidden.
pub fn say(progress: &ProgressBar, line: &str) {
    if progress.is_hidden() {
        eprintln!("{line}");
    } else {
        progress.println(line);
    }
}

/// Runs the long run.
pub async fn run(spec: &LongSpec, progress: &ProgressBar) -> anyhow::Result<LongResult> {
    let cluster = Cluster::start(&spec.cluster).await?;
    let started = Instant::now();
    let until = spec.duration.map(|duration| started + duration);
    let by_time = spec.duration.is_some();
    if by_time {
        let seconds = spec.duration.map_or(0, |duration| duration.as_secs());
        progress.set_length(seconds);
    } else {
        progress.set_length(spec.txns);
    }
    let counting = if by_time {
        ProgressBar::hidden()
    } else {
        progress.clone()
    };
    let counters_before = cluster.counters();
    let cpu_before = machine::cpu_time();
    let limit = Limit {
        txns: spec.txns,
        until,
    };
    let (clients, tasks) =
        workload::start_clients(&cluster, spec.clients, spec.keys, limit, &counting);
    let mut samples = Vec::new();
    let mut last_sample = Instant::now();
    let mut last_committed = 0;
    let mut last_counters = cluster.counters();
    say(
        progress,
        "    elapsed   committed    txns/s   p50 ms   p99 ms   VmRSS MiB  anon MiB  held  stored  commit ms  load",
    );
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let finished = tasks.iter().all(|task| task.is_finished());
        if by_time {
            progress.set_position(started.elapsed().as_secs());
        }
        if last_sample.elapsed() >= spec.sample_every || finished {
            let interval = last_sample.elapsed().as_secs_f64().max(1e-9);
            last_sample = Instant::now();
            let committed = clients.committed();
            let histogram = clients.take_interval();
            let latency = Latency::of(&histogram);
            let counters = cluster.counters();
            let interval_counters = counters.since(&last_counters);
            let (commits, commit_micros) = (
                interval_counters.store_commits,
                interval_counters.store_commit_micros,
            );
            last_counters = counters;
            let sample = Sample {
                elapsed_s: started.elapsed().as_secs_f64(),
                committed,
                errors: clients.errors(),
                interval_tps: (committed - last_committed) as f64 / interval,
                interval_p50_us: latency.p50_us,
                interval_p99_us: latency.p99_us,
                resident: machine::resident().unwrap_or_default(),
                transactions_held: counters.transactions_held,
                stored_transactions: cluster.stored_transactions(),
                interval_store_commits: commits,
                interval_commit_mean_us: commit_micros as f64 / commits.max(1) as f64,
                load_average_1m: machine::load_average().map(|[one, _, _]| one),
            };
            last_committed = committed;
            say(
                progress,
                &format!(
                    "{:>10.0}s {:>11} {:>9.0} {:>8.2} {:>8.2} {:>11.1} {:>9.1} {:>5} {:>7} {:>10.2} {:>5.1}",
                    sample.elapsed_s,
                    sample.committed,
                    sample.interval_tps,
                    sample.interval_p50_us as f64 / 1000.0,
                    sample.interval_p99_us as f64 / 1000.0,
                    sample.resident.rss_kib as f64 / 1024.0,
                    sample.resident.anon_kib as f64 / 1024.0,
                    sample.transactions_held,
                    sample.stored_transactions,
                    sample.interval_commit_mean_us / 1000.0,
                    sample.load_average_1m.unwrap_or(0.0),
                ),
            );
            samples.push(sample);
        }
        if finished {
            break;
        }
    }
    for task in tasks {
        task.await.expect("a client task panicked");
    }
    let wall = started.elapsed();
    let cpu = machine::cpu_time().saturating_sub(cpu_before);
    let counters = cluster.counters().since(&counters_before);
    cluster.shutdown().await;
    let outcome = clients.outcome();
    let memory = memory_verdict(&samples);
    Ok(LongResult {
        nodes: spec.cluster.nodes,
        network: spec.cluster.network,
        store: spec.cluster.store,
        keys: spec.keys,
        clients: spec.clients,
        committed: outcome.committed,
        errors: outcome.errors,
        first_error: outcome.first_error,
        wall_s: wall.as_secs_f64(),
        throughput_tps: outcome.committed as f64 / wall.as_secs_f64().max(1e-9),
        latency: Latency::of(&outcome.histogram),
        cpu_per_txn_us: cpu.as_secs_f64() * 1e6 / outcome.committed.max(1) as f64,
        cpu_utilisation: cpu.as_secs_f64()
            / (wall.as_secs_f64().max(1e-9) * machine::cores() as f64),
        counters,
        samples,
        memory,
    })
}

/// Judges the samples (see [`MemoryVerdict`]): the trend of the second half, projected
/// over the whole run, may add at most [`FLAT_GROWTH_MAX`].
pub fn memory_verdict(samples: &[Sample]) -> MemoryVerdict {
    let end = samples.last().map_or(0.0, |sample| sample.elapsed_s);
    let warm_index = samples
        .iter()
        .position(|sample| sample.elapsed_s >= end / 2.0)
        .unwrap_or(0);
    let after = &samples[warm_index.min(samples.len())..];
    let anon = |sample: &Sample| sample.resident.anon_kib;
    let warm = after.first().map_or(0, anon);
    let last = after.last().map_or(0, anon);
    let max = after.iter().map(anon).max().unwrap_or(0);
    let mean = if after.is_empty() {
        0.0
    } else {
        after.iter().map(|sample| anon(sample) as f64).sum::<f64>() / after.len() as f64
    };
    let slope = slope(after);
    let projected = if mean == 0.0 {
        0.0
    } else {
        slope * (end / 60.0) / mean
    };
    let growth = if warm == 0 {
        0.0
    } else {
        (last as f64 - warm as f64) / warm as f64
    };
    MemoryVerdict {
        warm_elapsed_s: after.first().map_or(0.0, |sample| sample.elapsed_s),
        warm_anon_kib: warm,
        final_anon_kib: last,
        max_anon_after_warm_kib: max,
        mean_anon_after_warm_kib: mean,
        slope_kib_per_min: slope,
        projected_growth: projected,
        growth_after_warm: growth,
        warm_rss_kib: after.first().map_or(0, |sample| sample.resident.rss_kib),
        final_rss_kib: after.last().map_or(0, |sample| sample.resident.rss_kib),
        flat: projected <= FLAT_GROWTH_MAX,
    }
}

/// Least-squares slope of `RssAnon` over time, KiB per minute.
fn slope(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let anon = |sample: &Sample| sample.resident.anon_kib as f64;
    let mean_x = samples.iter().map(|s| s.elapsed_s).sum::<f64>() / n;
    let mean_y = samples.iter().map(anon).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for sample in samples {
        let dx = sample.elapsed_s - mean_x;
        covariance += dx * (anon(sample) - mean_y);
        variance += dx * dx;
    }
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance * 60.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(elapsed_s: f64, rss_kib: u64) -> Sample {
        Sample {
            elapsed_s,
            committed: 0,
            errors: 0,
            interval_tps: 0.0,
            interval_p50_us: 0,
            interval_p99_us: 0,
            resident: Resident {
                rss_kib,
                anon_kib: rss_kib,
                file_kib: 0,
            },
            transactions_held: 0,
            stored_transactions: 0,
            interval_store_commits: 0,
            interval_commit_mean_us: 0.0,
            load_average_1m: None,
        }
    }

    #[test]
    fn memory_that_levels_off_is_flat() {
        let samples: Vec<Sample> = (0..20)
            .map(|i| {
                sample(
                    f64::from(i) * 5.0,
                    if i < 4 {
                        100_000 + i as u64 * 50_000
                    } else {
                        300_000
                    },
                )
            })
            .collect();
        let verdict = memory_verdict(&samples);
        assert!(verdict.flat, "{verdict:?}");
        assert!(verdict.slope_kib_per_min.abs() < 1.0);
    }

    /// The shape of the 30-minute glibc run: rising for half the run, then level; and of
    /// mimalloc's runs: level with single samples ±10 % apart.
    #[test]
    fn memory_that_settles_late_or_wanders_is_flat() {
        let late: Vec<Sample> = (0..360)
            .map(|i| sample(i as f64 * 5.0, 42_000 + i.min(180) as u64 * 25))
            .collect();
        assert!(memory_verdict(&late).flat, "{:?}", memory_verdict(&late));
        let wandering: Vec<Sample> = (0..360)
            .map(|i| sample(i as f64 * 5.0, [90_000, 100_000, 95_000, 85_000][i % 4]))
            .collect();
        let verdict = memory_verdict(&wandering);
        assert!(verdict.flat, "{verdict:?}");
        assert!(
            verdict.growth_after_warm.abs() > 0.05,
            "single samples differ"
        );
    }

    /// A leak too slow for two single samples to tell from the wander (6 % over the second
    /// half) is a trend the slope sees, charged for the whole run.
    #[test]
    fn a_slow_leak_is_not_flat() {
        let samples: Vec<Sample> = (0..360)
            .map(|i| {
                let wander = [0, 6_000, 3_000, 9_000][i % 4];
                sample(i as f64 * 5.0, 100_000 + i as u64 * 40 + wander)
            })
            .collect();
        let verdict = memory_verdict(&samples);
        assert!(!verdict.flat, "{verdict:?}");
        assert!(verdict.projected_growth > FLAT_GROWTH_MAX);
    }

    #[test]
    fn memory_that_keeps_growing_is_not_flat() {
        let samples: Vec<Sample> = (0..20)
            .map(|i| sample(f64::from(i) * 5.0, 100_000 + i as u64 * 20_000))
            .collect();
        let verdict = memory_verdict(&samples);
        assert!(!verdict.flat, "{verdict:?}");
        assert!(verdict.slope_kib_per_min > 0.0);
    }
}
