//! Which workloads a run consists of, from the command line's settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::{ClusterSpec, CoreSite, NetworkKind, StoreKind};
use crate::floor::FloorCounts;
use crate::workload::{KeyMode, Load, WorkloadSpec};

/// Transactions per matrix workload by default (the issue asks for at least 20,000).
pub const MATRIX_TXNS: u64 = 20_000;
/// Transactions per matrix workload with `--quick`.
pub const MATRIX_TXNS_QUICK: u64 = 2_000;
/// The long run's default length.
pub const LONG_DURATION: Duration = Duration::from_secs(600);
/// The long run's default length with `--quick`.
pub const LONG_DURATION_QUICK: Duration = Duration::from_secs(30);

/// What to run, resolved from the command line.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Fewer transactions and round trips, for smoke runs.
    pub quick: bool,
    /// Transactions per matrix workload.
    pub txns: u64,
    /// The network of the matrix and the long run (the seed's workloads and the floor are
    /// always gRPC).
    pub network: NetworkKind,
    /// Cluster sizes of the matrix.
    pub nodes: Vec<u16>,
    /// Client counts of the matrix.
    pub clients: Vec<usize>,
    /// Stores of the matrix.
    pub stores: Vec<StoreKind>,
    /// Key modes of the matrix (a `Keys::All` run at the most clients is added).
    pub keys: Vec<KeyMode>,
    /// Only workloads whose name contains this.
    pub only: Option<String>,
    /// Where LMDB stores go.
    pub data_dir: PathBuf,
    /// The nodes' `Config::pre_accept_window_ms`.
    pub pre_accept_window_ms: u64,
    /// The nodes' `Config::idle_spin_us`.
    pub idle_spin_us: u64,
    /// Where the nodes' cores run (`--core`).
    pub core: CoreSite,
    /// LMDB stores: `LmdbConfig::commit_log` (`--commit-log`).
    pub commit_log: bool,
    /// LMDB stores: `LmdbConfig::checkpoint_interval` in ms (`--checkpoint-interval-ms`).
    pub checkpoint_interval_ms: u64,
    /// mimalloc's purge delay (`--purge-delay-ms`; -1: never); `None` with the platform's
    /// allocator.
    pub purge_delay_ms: Option<i64>,
}

impl Settings {
    /// How many round trips and commits the floor measures.
    pub fn floor_counts(&self) -> FloorCounts {
        if self.quick {
            FloorCounts {
                ping_pongs: 1_000,
                pipelined: 20_000,
                fan_outs: 1_000,
                lmdb_commits: 200,
            }
        } else {
            FloorCounts {
                ping_pongs: 10_000,
                pipelined: 200_000,
                fan_outs: 10_000,
                lmdb_commits: 2_000,
            }
        }
    }

    fn cluster(&self, nodes: u16, network: NetworkKind, store: StoreKind) -> ClusterSpec {
        ClusterSpec {
            nodes,
            network,
            store,
            data_dir: self.data_dir.clone(),
            pre_accept_window_ms: self.pre_accept_window_ms,
            idle_spin_us: self.idle_spin_us,
            core: self.core,
            commit_log: self.commit_log,
            checkpoint_interval_ms: self.checkpoint_interval_ms,
        }
    }

    fn selected(&self, spec: &WorkloadSpec) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| spec.name.contains(only.as_str()))
    }

    /// The seed's workloads: 5 nodes over gRPC with memory stores, `Keys::All`, 1,000
    /// concurrent transactions to one coordinator, and 200 to each of the 5.
    pub fn seed_workloads(&self) -> Vec<WorkloadSpec> {
        let cluster = self.cluster(5, NetworkKind::Grpc, StoreKind::Mem);
        [
            ("seed-1000-to-1", vec![1_000, 0, 0, 0, 0]),
            ("seed-200-to-each-of-5", vec![200; 5]),
        ]
        .into_iter()
        .map(|(name, per_node)| WorkloadSpec {
            name: name.to_string(),
            group: "seed".to_string(),
            cluster: cluster.clone(),
            keys: KeyMode::All,
            load: Load::Burst { per_node },
        })
        .filter(|spec| self.selected(spec))
        .collect()
    }

    /// The matrix: nodes × stores × keys × clients, plus `Keys::All` at the most clients.
    pub fn matrix_workloads(&self) -> Vec<WorkloadSpec> {
        let mut specs = Vec::new();
        let most = self.clients.iter().copied().max();
        for &nodes in &self.nodes {
            for &store in &self.stores {
                let mut runs: Vec<(KeyMode, usize)> = Vec::new();
                for &keys in &self.keys {
                    for &clients in &self.clients {
                        runs.push((keys, clients));
                    }
                }
                if let Some(most) = most {
                    if !runs.contains(&(KeyMode::All, most)) {
                        runs.push((KeyMode::All, most));
                    }
                }
                for (keys, clients) in runs {
                    let network = match self.network {
                        NetworkKind::Grpc => String::new(),
                        NetworkKind::Local => "-local".to_string(),
                    };
                    specs.push(WorkloadSpec {
                        name: format!("{nodes}n-{store}-{keys}-c{clients}{network}"),
                        group: "matrix".to_string(),
                        cluster: self.cluster(nodes, self.network, store),
                        keys,
                        load: Load::Clients {
                            clients,
                            txns: self.txns,
                        },
                    });
                }
            }
        }
        specs.retain(|spec| self.selected(spec));
        specs
    }
}

/// Parses `10m`, `90s`, `1h`, `500ms` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 10m, 90s, 1h)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("{text:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            quick: true,
            txns: 100,
            network: NetworkKind::Grpc,
            nodes: vec![3, 5],
            clients: vec![1, 64, 256],
            stores: vec![StoreKind::Mem, StoreKind::Lmdb],
            keys: vec![KeyMode::Disjoint, KeyMode::Hot],
            only: None,
            data_dir: PathBuf::from("target/bench-data"),
            pre_accept_window_ms: 2,
            idle_spin_us: 30,
            core: CoreSite::Thread,
            commit_log: true,
            checkpoint_interval_ms: 100,
            purge_delay_ms: Some(-1),
        }
    }

    #[test]
    fn the_matrix_has_every_combination_and_keys_all_at_the_most_clients() {
        let specs = settings().matrix_workloads();
        assert_eq!(specs.len(), 2 * 2 * (2 * 3 + 1));
        assert!(specs.iter().any(|s| s.name == "5n-lmdb-all-c256"));
        assert!(!specs.iter().any(|s| s.name == "5n-lmdb-all-c64"));
    }

    #[test]
    fn only_filters_by_name() {
        let mut settings = settings();
        settings.only = Some("3n-mem-disjoint".into());
        let names: Vec<String> = settings
            .matrix_workloads()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "3n-mem-disjoint-c1",
                "3n-mem-disjoint-c64",
                "3n-mem-disjoint-c256"
            ]
        );
    }

    #[test]
    fn the_seed_workloads_are_5_nodes_with_1000_transactions() {
        for spec in settings().seed_workloads() {
            assert_eq!(spec.cluster.nodes, 5);
            assert_eq!(spec.load.total(), 1_000);
            assert_eq!(spec.keys, KeyMode::All);
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("ten minutes").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
