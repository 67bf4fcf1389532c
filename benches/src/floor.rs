//! The floor: what this machine allows at best, measured in the same run as the workloads.
//!
//! - A bare gRPC round trip between two of the harness's `GrpcNetwork`s (one echoes what it
//!   receives), one message at a time (latency) and with many in flight (messages/s). The
//!   protocol's fast path is one such round trip plus the nodes' own work.
//! - A fan-out over gRPC as a 5-node fast path makes it: one network sends to four that echo,
//!   and waits for the third answer (with its own vote, the fast quorum of 4 of 5). The
//!   network part of that fast path on this machine, without any of the protocol's work.
//! - A synced LMDB commit of a small [`WriteBatch`] through [`LmdbStore`]'s `Store::commit`:
//!   the durability every protocol step waits for, at most this often per node per second.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use indicatif::ProgressBar;
use serde::Serialize;
use synevi::network::GrpcNetwork;
use synevi::persistence::{LmdbConfig, LmdbStore};
use synevi::types::{
    Applied, Ballot, Deps, Envelope, Inbox, Keys, Member, Message, Network, Status, Store,
    Timestamp, TxBody, TxRecord, WriteBatch, T, T0,
};
use synevi::Ulid;
use tokio::sync::mpsc;

use crate::tx::SEED_PAYLOAD;
use crate::workload::{elapsed_micros, latency_histogram, record_micros, Latency};

/// How many of each measurement to make.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FloorCounts {
    /// Sequential gRPC round trips.
    pub ping_pongs: u64,
    /// Round trips with [`PIPELINE_WINDOW`] in flight.
    pub pipelined: u64,
    /// Sequential fan-outs to [`FAN_OUT_PEERS`].
    pub fan_outs: u64,
    /// Sequential LMDB commits.
    pub lmdb_commits: u64,
}

/// Peers a fan-out goes to: the others of a 5-node cluster.
pub const FAN_OUT_PEERS: u16 = 4;

/// Answers a fan-out waits for: the fast quorum of 5 nodes (4) less the sender's own vote.
pub const FAN_OUT_ANSWERS: usize = 3;

/// Round trips in flight in the pipelined gRPC measurement.
pub const PIPELINE_WINDOW: u64 = 256;

/// Sequential round trips over gRPC.
#[derive(Clone, Debug, Serialize)]
pub struct PingPong {
    /// Round trips measured.
    pub round_trips: u64,
    /// Per round trip.
    pub latency: Latency,
    /// Round trips per second, one at a time.
    pub round_trips_per_s: f64,
    /// Messages per second (two per round trip), one round trip at a time.
    pub messages_per_s: f64,
}

/// Round trips over gRPC with many in flight: what the link carries at most.
#[derive(Clone, Debug, Serialize)]
pub struct Pipelined {
    /// Round trips in flight.
    pub window: u64,
    /// Round trips measured.
    pub round_trips: u64,
    /// Messages (both directions) per second.
    pub messages_per_s: f64,
    /// CPU per message, whole process, microseconds.
    pub cpu_per_message_us: f64,
}

/// Sequential fan-outs over gRPC: one message to each peer, timed to the answer a fast
/// quorum needs.
#[derive(Clone, Debug, Serialize)]
pub struct FanOut {
    /// Peers each fan-out goes to.
    pub peers: u16,
    /// Which answer is timed (the third of four: a 5-node fast quorum with the sender's own
    /// vote).
    pub answers_awaited: usize,
    /// Fan-outs measured; each waits for every answer before the next one starts.
    pub fan_outs: u64,
    /// From sending the first message to the awaited answer.
    pub latency: Latency,
}

/// Sequential synced LMDB commits.
#[derive(Clone, Debug, Serialize)]
pub struct LmdbCommit {
    /// Commits measured.
    pub commits: u64,
    /// Per commit.
    pub latency: Latency,
    /// Commits per second, one at a time.
    pub commits_per_s: f64,
}

/// The floor of this machine.
#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    /// gRPC, one message at a time.
    pub grpc_ping_pong: PingPong,
    /// gRPC, many messages in flight.
    pub grpc_pipelined: Pipelined,
    /// gRPC, one message to each of [`FAN_OUT_PEERS`] at a time, to the fast quorum's answer.
    pub grpc_fan_out: FanOut,
    /// LMDB, one synced commit at a time (`LmdbStore` with the commit log off: one LMDB
    /// write transaction per commit).
    pub lmdb_commit: LmdbCommit,
    /// `LmdbStore` as the nodes use it, one commit at a time: a record appended to its commit
    /// log and flushed, LMDB written at checkpoints. Absent in reports from before the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_commit: Option<LmdbCommit>,
    /// Of the time the machine's CPUs had work while the floor was measured, the share the
    /// host gave to other guests (`machine::stolen_share`).
    #[serde(default)]
    pub stolen_share: Option<f64>,
    /// With `--rounds`: every round's bare gRPC round trip (p50, µs), in the order they
    /// ran; this floor is the round with the median one. Empty for a run of one round.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds_round_trip_p50_us: Vec<u64>,
}

/// Measures the floor.
pub async fn measure(
    counts: FloorCounts,
    data_dir: &Path,
    progress: &ProgressBar,
) -> anyhow::Result<Floor> {
    progress.set_length(
        counts.ping_pongs + counts.pipelined + counts.fan_outs + 2 * counts.lmdb_commits,
    );
    let ticks_before = crate::machine::cpu_ticks();
    let pair = EchoGroup::start(1).await?;
    let grpc_ping_pong = pair.ping_pong(counts.ping_pongs, progress).await?;
    let grpc_pipelined = pair.pipelined(counts.pipelined, progress).await?;
    pair.shutdown().await;
    let group = EchoGroup::start(FAN_OUT_PEERS).await?;
    let grpc_fan_out = group.fan_out(counts.fan_outs, progress).await?;
    group.shutdown().await;
    let lmdb_commit = lmdb_commits(counts.lmdb_commits, false, data_dir, progress).await?;
    let log_commit = lmdb_commits(counts.lmdb_commits, true, data_dir, progress).await?;
    let stolen_share = crate::machine::stolen_share(ticks_before, crate::machine::cpu_ticks());
    Ok(Floor {
        grpc_ping_pong,
        grpc_pipelined,
        grpc_fan_out,
        lmdb_commit,
        log_commit: Some(log_commit),
        stolen_share,
        rounds_round_trip_p50_us: Vec::new(),
    })
}

/// Hands what node 1 receives to the measuring task.
struct Forward(mpsc::UnboundedSender<Envelope>);

impl Inbox for Forward {
    fn deliver(&self, envelope: Envelope) {
        let _ = self.0.send(envelope);
    }
}

/// Nodes 2 and up send back whatever they receive.
struct Echo(GrpcNetwork);

impl Inbox for Echo {
    fn deliver(&self, envelope: Envelope) {
        self.0.send(Envelope {
            from: envelope.to,
            to: envelope.from,
            message: envelope.message,
            clock: envelope.clock,
        });
    }
}

/// gRPC networks on 127.0.0.1: node 1 measures, nodes 2 and up echo.
struct EchoGroup {
    one: GrpcNetwork,
    echoes: Vec<GrpcNetwork>,
    replies: tokio::sync::Mutex<mpsc::UnboundedReceiver<Envelope>>,
}

/// How long a round trip may take before the floor gives up: the link is broken.
const REPLY_PATIENCE: Duration = Duration::from_secs(10);

impl EchoGroup {
    /// Node 1 and `echoes` nodes that echo, node 1 a member of each (and each of node 1).
    async fn start(echoes: u16) -> anyhow::Result<EchoGroup> {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let id_one = Ulid::new();
        let one = GrpcNetwork::new(any_port, String::new(), id_one, 1);
        let (sender, replies) = mpsc::unbounded_channel();
        one.start(Arc::new(Forward(sender)))
            .await
            .context("floor: gRPC network 1 could not start on 127.0.0.1")?;
        let url = |network: &GrpcNetwork| -> anyhow::Result<String> {
            let addr = network
                .local_addr()
                .context("a started gRPC network has no address")?;
            Ok(format!("http://{addr}"))
        };
        let mut group = EchoGroup {
            one,
            echoes: Vec::new(),
            replies: tokio::sync::Mutex::new(replies),
        };
        for serial in 2..=echoes + 1 {
            let id = Ulid::new();
            let echo = GrpcNetwork::new(any_port, String::new(), id, serial);
            echo.start(Arc::new(Echo(echo.clone())))
                .await
                .with_context(|| {
                    format!("floor: gRPC network {serial} could not start on 127.0.0.1")
                })?;
            group
                .one
                .add_member(Member {
                    node_id: id,
                    serial,
                    host: url(&echo)?,
                })
                .await
                .with_context(|| format!("floor: network 1 could not add network {serial}"))?;
            echo.add_member(Member {
                node_id: id_one,
                serial: 1,
                host: url(&group.one)?,
            })
            .await
            .with_context(|| format!("floor: network {serial} could not add network 1"))?;
            group.echoes.push(echo);
        }
        // Connections are made on first use: warm them up.
        for sequence in 0..100 {
            group.send_to_all(sequence);
            for _ in 0..echoes {
                group.receive().await?;
            }
        }
        Ok(group)
    }

    /// A small message to node `to`, as a node's acknowledgements look.
    fn ping(sequence: u64, to: u16) -> Envelope {
        Envelope {
            from: 1,
            to,
            message: Message::Applied(Applied {
                t0s: vec![T0(Timestamp::new(sequence, 0, 1))],
                committed: Vec::new(),
            }),
            // As a node's messages do: the batch carries its sender's clock.
            clock: Timestamp::new(sequence, 0, 1),
        }
    }

    /// Sends `sequence` to every echoing node.
    fn send_to_all(&self, sequence: u64) {
        for serial in 2..=self.echo_count() + 1 {
            self.one.send(EchoGroup::ping(sequence, serial));
        }
    }

    fn echo_count(&self) -> u16 {
        u16::try_from(self.echoes.len()).unwrap_or(u16::MAX)
    }

    async fn receive(&self) -> anyhow::Result<()> {
        let mut replies = self.replies.lock().await;
        match tokio::time::timeout(REPLY_PATIENCE, replies.recv()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => anyhow::bail!("floor: the gRPC network stopped delivering"),
            Err(_) => anyhow::bail!(
                "floor: no gRPC echo within {} s: the loopback link does not work",
                REPLY_PATIENCE.as_secs()
            ),
        }
    }

    async fn round_trip(&self, sequence: u64) -> anyhow::Result<()> {
        self.one.send(EchoGroup::ping(sequence, 2));
        self.receive().await
    }

    /// One message to each echoing node at a time, timed to the [`FAN_OUT_ANSWERS`]th
    /// answer; the next goes once every answer came.
    async fn fan_out(&self, count: u64, progress: &ProgressBar) -> anyhow::Result<FanOut> {
        let echoes = usize::from(self.echo_count());
        let awaited = FAN_OUT_ANSWERS.min(echoes);
        let mut histogram = latency_histogram();
        for sequence in 0..count {
            let sent = Instant::now();
            self.send_to_all(sequence);
            for answer in 1..=echoes {
                self.receive().await?;
                if answer == awaited {
                    record_micros(&mut histogram, elapsed_micros(sent));
                }
            }
            progress.inc(1);
        }
        Ok(FanOut {
            peers: self.echo_count(),
            answers_awaited: awaited,
            fan_outs: count,
            latency: Latency::of(&histogram),
        })
    }

    async fn ping_pong(&self, count: u64, progress: &ProgressBar) -> anyhow::Result<PingPong> {
        let mut histogram = latency_histogram();
        let started = Instant::now();
        for sequence in 0..count {
            let sent = Instant::now();
            self.round_trip(sequence).await?;
            record_micros(&mut histogram, elapsed_micros(sent));
            progress.inc(1);
        }
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        Ok(PingPong {
            round_trips: count,
            latency: Latency::of(&histogram),
            round_trips_per_s: count as f64 / seconds,
            messages_per_s: 2.0 * count as f64 / seconds,
        })
    }

    async fn pipelined(&self, count: u64, progress: &ProgressBar) -> anyhow::Result<Pipelined> {
        let cpu_before = crate::machine::cpu_time();
        let started = Instant::now();
        let mut sent = 0;
        while sent < count.min(PIPELINE_WINDOW) {
            self.one.send(EchoGroup::ping(sent, 2));
            sent += 1;
        }
        for _ in 0..count {
            self.receive().await?;
            progress.inc(1);
            if sent < count {
                self.one.send(EchoGroup::ping(sent, 2));
                sent += 1;
            }
        }
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        let cpu = crate::machine::cpu_time().saturating_sub(cpu_before);
        Ok(Pipelined {
            window: PIPELINE_WINDOW,
            round_trips: count,
            messages_per_s: 2.0 * count as f64 / seconds,
            cpu_per_message_us: cpu.as_secs_f64() * 1e6 / (2.0 * count.max(1) as f64),
        })
    }

    async fn shutdown(self) {
        self.one.shutdown().await;
        for echo in self.echoes {
            echo.shutdown().await;
        }
    }
}

/// Records the LMDB floor keeps: each commit adds one and forgets the one this many
/// commits older, so the store stays the same size, as a node's does once GC keeps up.
const LMDB_FLOOR_WINDOW: u64 = 64;

/// Commits made before measuring, so the file has reached its steady size.
const LMDB_FLOOR_WARM_UP: u64 = 2 * LMDB_FLOOR_WINDOW;

/// A small batch as the driver writes it for one pre-accepted transaction, forgetting an
/// old one.
fn small_batch(sequence: u64) -> WriteBatch {
    let t0_of = |sequence: u64| T0(Timestamp::new(sequence + 1, 0, 1));
    let t0 = t0_of(sequence);
    let forget = sequence
        .checked_sub(LMDB_FLOOR_WINDOW)
        .map(t0_of)
        .into_iter()
        .collect();
    WriteBatch {
        forget,
        transactions: vec![TxRecord {
            t0,
            status: Status::PreAccepted,
            t: T(t0.0),
            deps: Deps::default(),
            promised: Ballot::ZERO,
            accepted: Ballot::ZERO,
            body: Some(TxBody {
                id: u128::from(sequence),
                keys: Keys::single("k"),
                payload: Bytes::from_static(SEED_PAYLOAD),
            }),
        }],
        ..WriteBatch::default()
    }
}

async fn lmdb_commits(
    count: u64,
    commit_log: bool,
    data_dir: &Path,
    progress: &ProgressBar,
) -> anyhow::Result<LmdbCommit> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("floor-")
        .tempdir_in(data_dir)
        .with_context(|| format!("cannot create a directory in {}", data_dir.display()))?;
    let path = dir.path().join("lmdb");
    let progress = progress.clone();
    // The store blocks on fsync: off the async workers, as the node driver does it.
    tokio::task::spawn_blocking(move || -> anyhow::Result<LmdbCommit> {
        let config = LmdbConfig::default().commit_log(commit_log);
        let store = LmdbStore::with_config(&path, 1, config)
            .with_context(|| format!("floor: cannot open an LMDB store in {}", path.display()))?;
        for sequence in 0..LMDB_FLOOR_WARM_UP {
            store
                .commit(&small_batch(sequence))
                .with_context(|| format!("floor: LMDB warm-up commit {sequence} failed"))?;
        }
        let mut histogram = latency_histogram();
        let started = Instant::now();
        for sequence in LMDB_FLOOR_WARM_UP..LMDB_FLOOR_WARM_UP + count {
            let batch = small_batch(sequence);
            let sent = Instant::now();
            store
                .commit(&batch)
                .with_context(|| format!("floor: LMDB commit {sequence} failed"))?;
            record_micros(&mut histogram, elapsed_micros(sent));
            progress.inc(1);
        }
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        Ok(LmdbCommit {
            commits: count,
            latency: Latency::of(&histogram),
            commits_per_s: count as f64 / seconds,
        })
    })
    .await
    .context("the LMDB floor measurement panicked")?
}
