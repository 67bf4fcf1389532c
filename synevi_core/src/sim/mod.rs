//! A deterministic simulator: whole clusters of real [`Core`]s in one thread, in virtual
//! time, under network faults, clock skew and crashes, from one seed.
//!
//! Everything non-deterministic is simulated: the clock (virtual milliseconds, with per-node
//! skew and jumps), the network (delays, reordering, drops, duplicates, symmetric and one-way
//! partitions), the disk (a write is durable only when its simulated latency has passed; a
//! crash loses whatever was not), and the client load. The same seed gives the same run, bit
//! for bit: [`SimReport::trace_hash`] proves it.
//!
//! After the chaos, the network heals and crashed nodes restart; the run then must settle:
//! every transaction any node knows is executed on every node and every node has released its
//! protocol state. Every invariant of DESIGN §6 is checked (see `checker.rs`); a violation
//! comes back as a [`SimFailure`] with the seed, the command that replays it and the messages
//! of the transactions involved.
//!
//! Simulate your own executor:
//!
//! ```
//! use synevi_core::sim::{Faults, SimConfig, Simulation};
//! use synevi_persistence::MemStore;
//! use synevi_types::{Executor, Keys, SyneviError, SyneviResult, Transaction};
//! use std::sync::{Arc, Mutex};
//!
//! #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
//! struct Add { key: u8, amount: u64 }
//!
//! impl Transaction for Add {
//!     type TxOk = u64;
//!     type TxErr = ();
//!     fn as_bytes(&self) -> Vec<u8> { vec![self.key, self.amount as u8] }
//!     fn from_bytes(bytes: Vec<u8>) -> Result<Self, SyneviError> {
//!         match bytes[..] {
//!             [key, amount] => Ok(Add { key, amount: u64::from(amount) }),
//!             _ => Err(SyneviError::Decode { what: "Add", reason: "two bytes".into() }),
//!         }
//!     }
//!     fn keys(&self) -> Keys { Keys::single(vec![self.key]) }
//! }
//!
//! #[derive(Default)]
//! struct Sums(Mutex<[u64; 32]>);
//!
//! #[async_trait::async_trait]
//! impl Executor for Sums {
//!     type Tx = Add;
//!     async fn execute(&self, add: Add) -> SyneviResult<Self> {
//!         let mut sums = self.0.lock().map_err(|_| SyneviError::ShutDown)?;
//!         sums[usize::from(add.key)] += add.amount;
//!         Ok(Ok(sums[usize::from(add.key)]))
//!     }
//! }
//!
//! let config = SimConfig { nodes: 3, transactions: 40, faults: Faults::all(), ..SimConfig::new(42) };
//! let mut simulation = Simulation::new(
//!     config,
//!     |_serial| Sums::default(),
//!     |serial| Arc::new(MemStore::new(serial).unwrap()),
//!     |rng, _i| Add { key: rng.below(4) as u8, amount: rng.below(10) },
//! );
//! let report = simulation.run().unwrap_or_else(|failure| panic!("{failure}"));
//! assert_eq!(report.executed, report.submitted);
//! ```

mod checker;
mod rng;

pub use checker::{recoverable_from_stores, Violation};
pub use rng::SimRng;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use synevi_types::{
    Envelope, Event, Executor, Keys, Serial, Status, Store, StoredState, SyneviResult, Transaction,
    TxBody, TxRecord, Ulid, T0,
};

use crate::outcome::result_hash;
use crate::{Config, Core, Execution, Now, Ready};
use checker::{check_final, ClientRecord, OnlineChecker};

/// Which faults a run injects, and how hard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Per mille of messages dropped.
    pub drop_per_mille: u32,
    /// Per mille of messages delivered twice.
    pub duplicate_per_mille: u32,
    /// Message delay range (virtual ms); different delays reorder messages.
    pub delay_ms_min: u64,
    /// Upper end of the delay range.
    pub delay_ms_max: u64,
    /// Cut a random minority off, both ways, now and then.
    pub partitions: bool,
    /// Cut random single directions now and then.
    pub one_way_partitions: bool,
    /// Crash up to `f` nodes now and then (losing what they had not persisted) and restart
    /// them from their stores.
    pub crashes: bool,
    /// Each node's wall clock is off by up to this much, and jumps (also backwards).
    pub clock_skew_ms_max: u64,
    /// Upper bound of the simulated disk latency of a store commit.
    pub disk_latency_ms_max: u64,
}

impl Faults {
    /// A perfect network and disk; only message delays vary.
    pub fn none() -> Self {
        Faults {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            delay_ms_min: 1,
            delay_ms_max: 3,
            partitions: false,
            one_way_partitions: false,
            crashes: false,
            clock_skew_ms_max: 0,
            disk_latency_ms_max: 1,
        }
    }

    /// A lossy network: drops, duplicates, reordering.
    pub fn network() -> Self {
        Faults {
            drop_per_mille: 50,
            duplicate_per_mille: 30,
            delay_ms_min: 1,
            delay_ms_max: 40,
            ..Faults::none()
        }
    }

    /// Everything: lossy network, partitions both ways and one way, crashes, clock skew.
    pub fn all() -> Self {
        Faults {
            partitions: true,
            one_way_partitions: true,
            crashes: true,
            clock_skew_ms_max: 500,
            disk_latency_ms_max: 5,
            ..Faults::network()
        }
    }
}

/// One simulated run: cluster size, load, faults, and the protocol configuration.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed everything random derives from.
    pub seed: u64,
    /// Number of nodes (all voters).
    pub nodes: u16,
    /// Transactions the clients submit.
    pub transactions: usize,
    /// Clients submit over this window of virtual time (ms).
    pub load_ms: u64,
    /// Faults are injected until this virtual time (ms); then the network heals and crashed
    /// nodes restart.
    pub chaos_ms: u64,
    /// After healing, everything must settle within this much virtual time (ms).
    pub settle_ms_max: u64,
    /// The faults.
    pub faults: Faults,
    /// The protocol's configuration on every node.
    pub protocol: Config,
}

impl SimConfig {
    /// Defaults for `seed`: 3 nodes, 50 transactions, no faults.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            nodes: 3,
            transactions: 50,
            load_ms: 2_000,
            chaos_ms: 3_000,
            settle_ms_max: 120_000,
            faults: Faults::none(),
            protocol: Config {
                transaction_timeout_ms: 5_000,
                retransmit_interval_ms: 100,
                recovery_timeout_ms: 400,
                recovery_backoff_ms_max: 300,
                ..Config::default()
            },
        }
    }
}

/// What a successful run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Hash of every event the simulator processed, in order: equal for equal seeds.
    pub trace_hash: [u8; 32],
    /// Transactions submitted to a live node.
    pub submitted: usize,
    /// Transactions whose client got a result.
    pub acknowledged: usize,
    /// Transactions executed (on every node).
    pub executed: usize,
    /// Transactions invalidated by recovery.
    pub invalidated: usize,
    /// Executions that ran before their node's batch was durable
    /// ([`Ready::execute_early`]), summed over nodes.
    pub executed_early: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages dropped (faults, partitions, crashed receivers).
    pub dropped: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Recoveries started, summed over nodes.
    pub recoveries: u64,
    /// Fast-path commits, summed over nodes.
    pub fast_path_commits: u64,
    /// Slow-path commits, summed over nodes.
    pub slow_path_commits: u64,
    /// PreAccepts held back under contention (`Config::pre_accept_window_ms`), summed over
    /// nodes.
    pub pre_accepts_held: u64,
    /// Of those, the ones handled before their window ended, summed over nodes.
    pub pre_accepts_released_early: u64,
    /// Messages coordinators re-sent to voters that had not answered, summed over nodes.
    pub retransmissions: u64,
    /// Retransmission timers set again because their phase's messages were too recent,
    /// summed over nodes.
    pub retransmissions_postponed: u64,
    /// Largest per-node protocol state seen ([`Core::state_size`]).
    pub state_size_max: usize,
    /// Per-node protocol state sampled every virtual second (the largest node's).
    pub state_size_samples: Vec<usize>,
    /// Virtual time the run took (ms).
    pub virtual_ms: u64,
}

impl SimReport {
    /// Adds a node's counters: once when it crashes (its core, and the counters, are gone
    /// after), once at the end of the run for every node then running.
    fn count(&mut self, stats: &crate::Stats) {
        self.recoveries += stats.recoveries_started;
        self.fast_path_commits += stats.fast_path_commits;
        self.slow_path_commits += stats.slow_path_commits;
        self.pre_accepts_held += stats.pre_accepts_held;
        self.pre_accepts_released_early += stats.pre_accepts_released_early;
        self.retransmissions += stats.retransmissions;
        self.retransmissions_postponed += stats.retransmissions_postponed;
    }
}

/// A run that violated an invariant.
#[derive(Clone, Debug)]
pub struct SimFailure {
    /// The seed that reproduces it.
    pub seed: u64,
    /// What was violated.
    pub violation: Violation,
    /// The messages and events of the transactions involved.
    pub trace: Vec<String>,
    /// How to replay, filled in by the test harness (e.g. `SIM_SEED=7 cargo test ...`).
    pub replay: Option<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} violated {}: {}",
            self.seed, self.violation.invariant, self.violation.detail
        )?;
        match &self.replay {
            Some(replay) => writeln!(f, "replay: {replay}")?,
            None => writeln!(
                f,
                "replay: run the same configuration with seed {}",
                self.seed
            )?,
        }
        writeln!(f, "trace of {:?}:", self.violation.t0s)?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// Builds a transaction for client `i` from the load generator's random numbers.
type Workload<Tx> = Box<dyn FnMut(&mut SimRng, usize) -> Tx>;

/// A deterministic simulation of a cluster running `E`. See the module docs.
pub struct Simulation<E: Executor> {
    config: SimConfig,
    time: u64,
    sequence: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: FxHashMap<u64, SimEvent>,
    nodes: BTreeMap<Serial, SimNode<E>>,
    make_executor: Box<dyn Fn(Serial) -> E>,
    workload: Workload<E::Tx>,
    rng_network: SimRng,
    rng_clock: SimRng,
    rng_faults: SimRng,
    rng_load: SimRng,
    rng_disk: SimRng,
    cut: BTreeSet<(Serial, Serial)>,
    clients: Vec<ClientRecord>,
    client_by_t0: FxHashMap<T0, usize>,
    checker: OnlineChecker,
    trace: Vec<TraceLine>,
    trace_hash: blake3::Hasher,
    report: SimReport,
    healed: bool,
}

struct SimNode<E> {
    id: Ulid,
    core: Option<Core>,
    store: Arc<dyn Store>,
    executor: Option<E>,
    skew_ms: i64,
    /// Bumped on every crash: persists scheduled before it are lost.
    incarnation: u32,
    /// The simulated disk commits in order; the next commit completes no earlier than this.
    disk_free_at: u64,
    /// The earliest tick already scheduled.
    tick_at: Option<u64>,
    /// Batches handed to the simulated disk and not yet durable (or lost).
    persisting: usize,
    /// Of those, the batches whose executions wait for them: executions released early
    /// ([`Ready::execute_early`]) may not overtake these.
    holding: usize,
    /// The status of each transaction it coordinates, as its store holds it (durable).
    durable_own: FxHashMap<T0, Status>,
}

enum SimEvent {
    Submit {
        node: Serial,
        client: usize,
    },
    Deliver {
        envelope: Box<Envelope>,
    },
    Tick {
        node: Serial,
    },
    Persisted {
        node: Serial,
        incarnation: u32,
        ready: Box<Ready>,
    },
    Fault,
    Heal,
    Restart {
        node: Serial,
    },
    Sample,
}

struct TraceLine {
    time: u64,
    node: Serial,
    what: String,
    t0s: Vec<T0>,
}

/// Polls a simulated executor's future to completion. Simulated executors must not wait on
/// anything outside themselves (no timers, no I/O): there is no runtime to wake them.
fn complete<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    for _ in 0..1_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
    panic!("a simulated executor must complete without waiting on anything outside itself")
}

impl<E: Executor> Simulation<E> {
    /// A simulation of `config.nodes` nodes running executors from `executor`, storing into
    /// stores from `store` (kept across simulated crashes), with client transactions from
    /// `workload`.
    pub fn new(
        config: SimConfig,
        executor: impl Fn(Serial) -> E + 'static,
        store: impl Fn(Serial) -> Arc<dyn Store>,
        workload: impl FnMut(&mut SimRng, usize) -> E::Tx + 'static,
    ) -> Self {
        let root = SimRng::new(config.seed);
        let mut rng_clock = root.fork(2);
        let mut nodes = BTreeMap::new();
        for serial in 1..=config.nodes {
            let skew = config.faults.clock_skew_ms_max;
            let skew_ms = rng_clock.between(0, 2 * skew) as i64 - skew as i64;
            let id = Ulid::from_parts(u64::from(serial), u128::from(config.seed));
            nodes.insert(
                serial,
                SimNode {
                    id,
                    core: None,
                    store: store(serial),
                    executor: None,
                    skew_ms,
                    incarnation: 0,
                    disk_free_at: 0,
                    tick_at: None,
                    persisting: 0,
                    holding: 0,
                    durable_own: FxHashMap::default(),
                },
            );
        }
        Simulation {
            report: SimReport {
                seed: config.seed,
                trace_hash: [0; 32],
                submitted: 0,
                acknowledged: 0,
                executed: 0,
                executed_early: 0,
                invalidated: 0,
                delivered: 0,
                dropped: 0,
                crashes: 0,
                recoveries: 0,
                fast_path_commits: 0,
                slow_path_commits: 0,
                pre_accepts_held: 0,
                pre_accepts_released_early: 0,
                retransmissions: 0,
                retransmissions_postponed: 0,
                state_size_max: 0,
                state_size_samples: Vec::new(),
                virtual_ms: 0,
            },
            config,
            time: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            events: FxHashMap::default(),
            nodes,
            make_executor: Box::new(executor),
            workload: Box::new(workload),
            rng_network: root.fork(1),
            rng_clock,
            rng_faults: root.fork(3),
            rng_load: root.fork(4),
            rng_disk: root.fork(5),
            cut: BTreeSet::new(),
            clients: Vec::new(),
            client_by_t0: FxHashMap::default(),
            checker: OnlineChecker::default(),
            trace: Vec::new(),
            trace_hash: blake3::Hasher::new(),
            healed: false,
        }
    }

    /// Runs the simulation to the end and checks every invariant.
    pub fn run(&mut self) -> Result<SimReport, SimFailure> {
        self.run_inner()
            .map_err(|violation| self.failure(violation))
    }

    fn run_inner(&mut self) -> Result<SimReport, Violation> {
        self.boot_nodes()?;
        let serials: Vec<Serial> = self.nodes.keys().copied().collect();
        for client in 0..self.config.transactions {
            let at = self.rng_load.below(self.config.load_ms.max(1));
            let node = *self.rng_load.pick(&serials).unwrap_or(&1);
            self.schedule(at, SimEvent::Submit { node, client });
        }
        let faults = &self.config.faults;
        if faults.partitions
            || faults.one_way_partitions
            || faults.crashes
            || faults.clock_skew_ms_max > 0
        {
            let first = self.rng_faults.between(50, 300);
            self.schedule(first, SimEvent::Fault);
        }
        self.schedule(self.config.chaos_ms, SimEvent::Heal);
        let deadline = self.config.chaos_ms + self.config.settle_ms_max;
        self.process_until(deadline, |sim| sim.healed && sim.settled())?;
        if !self.settled() {
            return Err(self.stuck());
        }
        self.report.virtual_ms = self.time;
        self.finish()
    }

    fn boot_nodes(&mut self) -> Result<(), Violation> {
        let serials: Vec<Serial> = self.nodes.keys().copied().collect();
        for &serial in &serials {
            self.start_node(serial)?;
        }
        self.schedule(1_000, SimEvent::Sample);
        Ok(())
    }

    /// Processes events in time order until `done` holds or virtual time passes `deadline`.
    fn process_until(
        &mut self,
        deadline: u64,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), Violation> {
        while let Some(&Reverse((time, sequence))) = self.queue.peek() {
            if time > deadline {
                self.time = deadline;
                return Ok(());
            }
            self.queue.pop();
            let Some(event) = self.events.remove(&sequence) else {
                continue;
            };
            debug_assert!(time >= self.time, "virtual time went back");
            self.time = time;
            // A panic inside a core is a bug like any violated invariant: report it with the
            // seed and the trace instead of unwinding through the test.
            let handled =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(event)));
            match handled {
                Ok(result) => result?,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    return Err(Violation {
                        invariant: "no-panic",
                        detail: message,
                        t0s: vec![],
                    });
                }
            }
            if done(self) {
                return Ok(());
            }
        }
        Ok(())
    }

    // ----- scripting: scenario tests drive the cluster step by step -----

    /// Starts every node, with no generated load and no random faults (`config.transactions`
    /// and `config.faults` are ignored): the scenario drives the cluster with the methods
    /// below and ends with [`Simulation::settle`].
    pub fn boot(&mut self) -> Result<(), SimFailure> {
        self.boot_nodes()
            .map_err(|violation| self.failure(violation))
    }

    /// Submits `transaction` to `node` now. Returns its `t0`, or `None` if the node is down.
    pub fn submit(&mut self, node: Serial, transaction: E::Tx) -> Result<Option<T0>, SimFailure> {
        let client = self.clients.len();
        self.submit_transaction(node, client, transaction)
            .map_err(|violation| self.failure(violation))
    }

    /// Runs until `done` holds, or `limit_ms` of virtual time passed. Returns whether `done`
    /// held.
    pub fn run_until(
        &mut self,
        limit_ms: u64,
        done: impl Fn(&Self) -> bool,
    ) -> Result<bool, SimFailure> {
        let deadline = self.time + limit_ms;
        self.process_until(deadline, &done)
            .map_err(|violation| self.failure(violation))?;
        Ok(done(self))
    }

    /// Runs `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) -> Result<(), SimFailure> {
        self.run_until(ms, |_| false).map(|_| ())
    }

    /// How many messages of `kind` (e.g. `"PreAccept"`) about `t0` were delivered so far.
    pub fn delivered(&self, kind: &str, t0: T0) -> usize {
        self.trace
            .iter()
            .filter(|line| {
                line.what.starts_with(kind) && line.what[kind.len()..].starts_with(" from")
            })
            .filter(|line| line.t0s.contains(&t0))
            .count()
    }

    /// The `t` a transaction was committed with, once any node persisted the commit.
    pub fn committed_t(&self, t0: T0) -> Option<synevi_types::T> {
        self.checker.committed_t(t0)
    }

    /// Whether any node persisted the invalidation of `t0`.
    pub fn invalidated(&self, t0: T0) -> bool {
        self.checker.invalidated(t0)
    }

    /// Crashes `node` now: whatever it had not persisted is lost.
    pub fn crash_node(&mut self, node: Serial) {
        self.crash(node);
    }

    /// Restarts a crashed `node` from its store.
    pub fn restart_node(&mut self, node: Serial) -> Result<(), SimFailure> {
        let result = if self.nodes.get(&node).is_some_and(|n| n.core.is_none()) {
            self.start_node(node)
        } else {
            Ok(())
        };
        result.map_err(|violation| self.failure(violation))
    }

    /// Cuts every link between `nodes` and the others, both ways.
    pub fn isolate(&mut self, nodes: &[Serial]) {
        let serials: Vec<Serial> = self.nodes.keys().copied().collect();
        for &inside in nodes {
            for &outside in serials.iter().filter(|s| !nodes.contains(s)) {
                self.cut.insert((inside, outside));
                self.cut.insert((outside, inside));
            }
        }
        self.record(0, format!("isolate {nodes:?}"), vec![]);
    }

    /// Cuts the given directed links `(from, to)`.
    pub fn isolate_links(&mut self, links: &[(Serial, Serial)]) {
        for &(from, to) in links {
            self.cut.insert((from, to));
        }
        self.record(0, format!("cut {links:?}"), vec![]);
    }

    /// Heals every link, restarts every crashed node, waits for the cluster to settle and
    /// runs every final check.
    pub fn settle(&mut self) -> Result<SimReport, SimFailure> {
        let outcome = (|| {
            self.on_heal()?;
            let deadline = self.time + self.config.settle_ms_max;
            self.process_until(deadline, |sim| sim.settled())?;
            if !self.settled() {
                return Err(self.stuck());
            }
            self.report.virtual_ms = self.time;
            self.finish()
        })();
        outcome.map_err(|violation| self.failure(violation))
    }

    fn schedule(&mut self, at: u64, event: SimEvent) {
        self.sequence += 1;
        self.events.insert(self.sequence, event);
        self.queue.push(Reverse((at, self.sequence)));
    }

    fn now(&self, serial: Serial) -> Now {
        let skew = self.nodes.get(&serial).map_or(0, |node| node.skew_ms);
        Now {
            wall_ms: (self.time as i64 + skew).max(0) as u64 + 1_000_000,
            monotonic_ms: self.time,
        }
    }

    fn record(&mut self, node: Serial, what: String, t0s: Vec<T0>) {
        self.trace_hash.update(&self.time.to_le_bytes());
        self.trace_hash.update(&node.to_le_bytes());
        self.trace_hash.update(what.as_bytes());
        for t0 in &t0s {
            self.trace_hash.update(&t0.0.to_be_bytes());
        }
        self.trace.push(TraceLine {
            time: self.time,
            node,
            what,
            t0s,
        });
    }

    /// Starts (or restarts) a node from its store, replaying its event log into a fresh
    /// executor.
    fn start_node(&mut self, serial: Serial) -> Result<(), Violation> {
        let now = self.now(serial);
        let node = self
            .nodes
            .get_mut(&serial)
            .ok_or_else(|| internal("unknown node"))?;
        let stored = node
            .store
            .load_for_restart()
            .map_err(|e| internal(&format!("store load: {e}")))?;
        let executor = (self.make_executor)(serial);
        let log = node
            .store
            .events_after(0, usize::MAX)
            .map_err(|e| internal(&format!("event log: {e}")))?;
        for event in &log {
            let result = execute::<E>(&executor, &event.payload);
            if result_hash::<E>(&result) != event.result_hash {
                return Err(Violation {
                    invariant: "deterministic-executor",
                    detail: format!("node {serial} replayed {:?} with another result", event.t0),
                    t0s: vec![event.t0],
                });
            }
        }
        let seed = self.config.seed ^ (u64::from(serial) << 48) ^ u64::from(node.incarnation);
        let mut core = Core::restore(node.id, serial, self.config.protocol.clone(), seed, stored)
            .map_err(|e| internal(&format!("restore: {e}")))?;
        for peer in 1..=self.config.nodes {
            if peer != serial {
                core.add_member(peer, true)
                    .map_err(|e| internal(&e.to_string()))?;
            }
        }
        core.tick(now);
        node.core = Some(core);
        node.executor = Some(executor);
        node.tick_at = None;
        self.checker.reset_node(serial);
        // The executions the log holds happened in this order; continue checking from there.
        for event in log {
            let keys = decode_keys::<E>(&event.payload);
            self.checker
                .observe_execution(serial, event.t0, event.t, &keys)?;
        }
        self.record(serial, "start".into(), vec![]);
        self.after_step(serial)
    }

    fn handle(&mut self, event: SimEvent) -> Result<(), Violation> {
        match event {
            SimEvent::Submit { node, client } => self.on_submit(node, client),
            SimEvent::Deliver { envelope } => self.on_deliver(*envelope),
            SimEvent::Tick { node } => self.on_tick(node),
            SimEvent::Persisted {
                node,
                incarnation,
                ready,
            } => self.on_persisted(node, incarnation, *ready),
            SimEvent::Fault => self.on_fault(),
            SimEvent::Heal => self.on_heal(),
            SimEvent::Restart { node } => {
                if self.nodes.get(&node).is_some_and(|n| n.core.is_none()) {
                    self.start_node(node)?;
                }
                Ok(())
            }
            SimEvent::Sample => {
                let largest = self
                    .nodes
                    .values()
                    .filter_map(|node| node.core.as_ref().map(Core::state_size))
                    .max()
                    .unwrap_or(0);
                self.report.state_size_samples.push(largest);
                let next = self.time + 1_000;
                self.schedule(next, SimEvent::Sample);
                Ok(())
            }
        }
    }

    fn on_submit(&mut self, serial: Serial, client: usize) -> Result<(), Violation> {
        let transaction = (self.workload)(&mut self.rng_load, client);
        self.submit_transaction(serial, client, transaction)
            .map(|_| ())
    }

    fn submit_transaction(
        &mut self,
        serial: Serial,
        client: usize,
        transaction: E::Tx,
    ) -> Result<Option<T0>, Violation> {
        let now = self.now(serial);
        let Some(node) = self.nodes.get_mut(&serial) else {
            return Ok(None);
        };
        let incarnation = node.incarnation;
        let Some(core) = node.core.as_mut() else {
            return Ok(None); // the node is down: the client could not connect
        };
        let keys = transaction.keys();
        let body = TxBody {
            id: client as u128,
            keys: keys.clone(),
            payload: Bytes::from(transaction.as_bytes()),
        };
        let t0 = core.submit(now, body);
        self.client_by_t0.insert(t0, self.clients.len());
        self.clients.push(ClientRecord {
            t0,
            keys,
            submitted_ms: self.time,
            acknowledged: None,
            incarnation,
        });
        self.report.submitted += 1;
        self.record(serial, format!("submit client {client}"), vec![t0]);
        self.after_step(serial)?;
        Ok(Some(t0))
    }

    fn on_deliver(&mut self, envelope: Envelope) -> Result<(), Violation> {
        let to = envelope.to;
        let now = self.now(to);
        let line = format!(
            "{} from {}{}",
            envelope.message.kind(),
            envelope.from,
            describe(&envelope.message)
        );
        let t0s = envelope.message.t0s();
        let Some(core) = self.nodes.get_mut(&to).and_then(|n| n.core.as_mut()) else {
            self.report.dropped += 1;
            self.record(to, format!("{line} lost: node down"), t0s);
            return Ok(());
        };
        core.receive(now, envelope);
        self.report.delivered += 1;
        self.record(to, line, t0s);
        self.after_step(to)
    }

    fn on_tick(&mut self, serial: Serial) -> Result<(), Violation> {
        let now = self.now(serial);
        let Some(node) = self.nodes.get_mut(&serial) else {
            return Ok(());
        };
        node.tick_at = None;
        let Some(core) = node.core.as_mut() else {
            return Ok(());
        };
        core.tick(now);
        self.after_step(serial)
    }

    /// After any input: hand the node's effects to its simulated disk and keep its timer;
    /// run at once the executions that need not wait for the disk (and what they release).
    fn after_step(&mut self, serial: Serial) -> Result<(), Violation> {
        loop {
            let early = self.hand_to_disk(serial);
            if early.is_empty() {
                return Ok(());
            }
            self.report.executed_early += early.len() as u64;
            self.check_early_executions(serial, &early)?;
            self.run_executions(serial, early)?;
        }
    }

    /// Hands the node's effects to its simulated disk and keeps its timer; returns the
    /// executions that may run before the disk made the effects durable.
    fn hand_to_disk(&mut self, serial: Serial) -> Vec<Execution> {
        let latency = self
            .rng_disk
            .between(0, self.config.faults.disk_latency_ms_max);
        let time = self.time;
        let Some(node) = self.nodes.get_mut(&serial) else {
            return Vec::new();
        };
        let Some(core) = node.core.as_mut() else {
            return Vec::new();
        };
        let mut ready = core.take_ready();
        let deadline = core.next_deadline();
        self.report.state_size_max = self.report.state_size_max.max(core.state_size());
        let mut to_schedule = Vec::new();
        let early = if ready.execute_early && node.holding == 0 {
            std::mem::take(&mut ready.execute)
        } else {
            Vec::new()
        };
        if !ready.is_empty() {
            let done = node.disk_free_at.max(time) + latency;
            node.disk_free_at = done;
            node.persisting += 1;
            if !ready.execute.is_empty() {
                node.holding += 1;
            }
            to_schedule.push((
                done,
                SimEvent::Persisted {
                    node: serial,
                    incarnation: node.incarnation,
                    ready: Box::new(ready),
                },
            ));
        }
        if let Some(deadline) = deadline {
            let deadline = deadline.max(time + 1);
            if node.tick_at.is_none_or(|at| deadline < at) {
                node.tick_at = Some(deadline);
                to_schedule.push((deadline, SimEvent::Tick { node: serial }));
            }
        }
        for (at, event) in to_schedule {
            self.schedule(at, event);
        }
        early
    }

    /// A node's batch became durable: now its messages leave, its executions run.
    fn on_persisted(
        &mut self,
        serial: Serial,
        incarnation: u32,
        ready: Ready,
    ) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&serial) else {
            return Ok(());
        };
        if node.incarnation != incarnation || node.core.is_none() {
            return Ok(()); // lost in a crash before it reached the disk
        }
        node.persisting -= 1;
        if !ready.execute.is_empty() {
            node.holding -= 1;
        }
        node.store
            .commit(&ready.persist)
            .map_err(|e| internal(&format!("store commit on node {serial}: {e}")))?;
        for record in &ready.persist.transactions {
            if record.t0.0.serial == serial {
                node.durable_own.insert(record.t0, record.status);
            }
        }
        for t0 in &ready.persist.forget {
            node.durable_own.remove(t0);
        }
        for record in &ready.persist.transactions {
            self.checker.observe_record(serial, record)?;
            if record.status == synevi_types::Status::Invalidated {
                self.record(serial, "invalidated".into(), vec![record.t0]);
            }
        }
        for envelope in ready.messages {
            self.send(envelope);
        }
        for failed in ready.replies {
            self.record(
                serial,
                format!("client fails: {}", failed.error),
                vec![failed.t0],
            );
        }
        self.run_executions(serial, ready.execute)?;
        self.after_step(serial)
    }

    /// Runs released executions on the node, in order, and answers their clients.
    fn run_executions(
        &mut self,
        serial: Serial,
        executions: Vec<Execution>,
    ) -> Result<(), Violation> {
        for execution in executions {
            let now = self.now(serial);
            let Some(node) = self.nodes.get_mut(&serial) else {
                break;
            };
            let (Some(core), Some(executor)) = (node.core.as_mut(), node.executor.as_ref()) else {
                break;
            };
            let result = execute::<E>(executor, &execution.payload);
            let hash = result_hash::<E>(&result);
            core.applied(now, execution.t0, hash);
            let keys = decode_keys::<E>(&execution.payload);
            self.checker
                .observe_execution(serial, execution.t0, execution.t, &keys)?;
            if execution.t0.0.serial == serial {
                if let Some(&client) = self.client_by_t0.get(&execution.t0) {
                    if self.clients[client].acknowledged.is_none() {
                        self.clients[client].acknowledged = Some((self.time, hash));
                        self.report.acknowledged += 1;
                    }
                }
            }
            self.record(
                serial,
                format!("execute at {:?}", execution.t),
                vec![execution.t0],
            );
        }
        Ok(())
    }

    /// Puts an envelope on the simulated wire: maybe lost, maybe twice, always delayed.
    fn send(&mut self, envelope: Envelope) {
        let faults = &self.config.faults;
        let cut = self.cut.contains(&(envelope.from, envelope.to));
        if cut || self.rng_network.chance(faults.drop_per_mille) {
            self.report.dropped += 1;
            let why = if cut { "cut" } else { "dropped" };
            let line = format!("{} to {} {why}", envelope.message.kind(), envelope.to);
            self.record(envelope.from, line, envelope.message.t0s());
            return;
        }
        let (low, high) = (faults.delay_ms_min, faults.delay_ms_max);
        if self.rng_network.chance(faults.duplicate_per_mille) {
            let delay = self.rng_network.between(low, high);
            self.schedule(
                self.time + delay,
                SimEvent::Deliver {
                    envelope: Box::new(envelope.clone()),
                },
            );
        }
        let delay = self.rng_network.between(low, high);
        let envelope = Box::new(envelope);
        self.schedule(self.time + delay, SimEvent::Deliver { envelope });
    }

    fn on_fault(&mut self) -> Result<(), Violation> {
        if self.healed {
            return Ok(());
        }
        let faults = self.config.faults.clone();
        let serials: Vec<Serial> = self.nodes.keys().copied().collect();
        let tolerated = usize::from(self.config.nodes.saturating_sub(1) / 2);
        let down: Vec<Serial> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.core.is_none())
            .map(|(serial, _)| *serial)
            .collect();
        match self.rng_faults.below(6) {
            0 if faults.partitions => {
                // Cut a minority off, both ways.
                self.cut.clear();
                let size = self.rng_faults.between(1, tolerated.max(1) as u64) as usize;
                let mut minority = serials.clone();
                while minority.len() > size {
                    let at = self.rng_faults.below(minority.len() as u64) as usize;
                    minority.remove(at);
                }
                for &inside in &minority {
                    for &outside in serials.iter().filter(|s| !minority.contains(s)) {
                        self.cut.insert((inside, outside));
                        self.cut.insert((outside, inside));
                    }
                }
                self.record(0, format!("partition {minority:?} from the rest"), vec![]);
            }
            1 if faults.one_way_partitions => {
                let from = *self.rng_faults.pick(&serials).unwrap_or(&1);
                let to = *self.rng_faults.pick(&serials).unwrap_or(&1);
                if from != to {
                    self.cut.insert((from, to));
                    self.record(0, format!("cut {from} -> {to}"), vec![]);
                }
            }
            2 if faults.crashes && down.len() < tolerated => {
                let up: Vec<Serial> = serials
                    .iter()
                    .filter(|s| !down.contains(s))
                    .copied()
                    .collect();
                if let Some(&victim) = self.rng_faults.pick(&up) {
                    self.check_acknowledged_durable(victim)?;
                    self.crash(victim);
                    let back = self.time + self.rng_faults.between(100, 1_500);
                    self.schedule(back, SimEvent::Restart { node: victim });
                }
            }
            3 if faults.clock_skew_ms_max > 0 => {
                let serial = *self.rng_faults.pick(&serials).unwrap_or(&1);
                let skew = faults.clock_skew_ms_max;
                let skew_ms = self.rng_clock.between(0, 2 * skew) as i64 - skew as i64;
                if let Some(node) = self.nodes.get_mut(&serial) {
                    node.skew_ms = skew_ms;
                }
                self.record(
                    serial,
                    format!("wall clock now off by {skew_ms} ms"),
                    vec![],
                );
            }
            _ => {
                if !self.cut.is_empty() {
                    self.cut.clear();
                    self.record(0, "links restored".into(), vec![]);
                }
            }
        }
        let next = self.time + self.rng_faults.between(50, 500);
        self.schedule(next, SimEvent::Fault);
        Ok(())
    }

    /// Executions about to run before their batch is durable ([`Ready::execute_early`]) of
    /// transactions `serial` coordinated in its current incarnation: each answers a client,
    /// so the decision must already survive `serial` losing that batch, which the early
    /// execution rests on its own vote being durable (it counted in the decision). Checked
    /// against what its store holds. A coordinator that cast its vote after its PreAccepts
    /// left (holding its own PreAccept) broke this (found by the crash test).
    fn check_early_executions(
        &self,
        serial: Serial,
        executions: &[Execution],
    ) -> Result<(), Violation> {
        let Some(node) = self.nodes.get(&serial) else {
            return Ok(());
        };
        for execution in executions {
            let t0 = execution.t0;
            let submitted_here = t0.0.serial == serial
                && self
                    .client_by_t0
                    .get(&t0)
                    .is_some_and(|&client| self.clients[client].incarnation == node.incarnation);
            if !submitted_here {
                continue;
            }
            let durable = node.durable_own.get(&t0).copied();
            if !durable.is_some_and(is_vote) {
                return Err(Violation {
                    invariant: "durability",
                    detail: format!(
                        "node {serial} executes {t0:?} (answering its client) before its batch \
                         is durable, while its own vote is not durable (its store holds \
                         {durable:?})"
                    ),
                    t0s: vec![t0],
                });
            }
        }
        Ok(())
    }

    /// Before `serial` crashes: every transaction it coordinated whose client was answered
    /// must survive losing what is not durable anywhere. Its own vote is durable there (a
    /// record that voted, or it was forgotten after every member applied it), or the stores
    /// of all nodes hold the decision ([`recoverable_from_stores`], the crash test's rule
    /// too). Clients are answered before the
    /// coordinator's commit record is durable (`Ready::execute_early`), on the argument that
    /// the decision already is; this checks the argument at every crash. (A coordinator that
    /// voted after its PreAccepts left, when it held its own PreAccept, broke it: found by
    /// the crash test with killed processes.)
    fn check_acknowledged_durable(&self, serial: Serial) -> Result<(), Violation> {
        let acknowledged: Vec<T0> = self
            .clients
            .iter()
            .filter(|client| client.t0.0.serial == serial && client.acknowledged.is_some())
            .map(|client| client.t0)
            .collect();
        if acknowledged.is_empty() {
            return Ok(());
        }
        let load = |node: &SimNode<E>| {
            node.store
                .load()
                .map_err(|e| internal(&format!("load a store: {e}")))
        };
        let Some(node) = self.nodes.get(&serial) else {
            return Ok(());
        };
        let own = load(node)?;
        let voted = |state: &StoredState, t0: T0| {
            forgotten_in(state, t0)
                || state
                    .transactions
                    .iter()
                    .any(|record| record.t0 == t0 && is_vote(record.status))
        };
        let missing: Vec<T0> = acknowledged
            .into_iter()
            .filter(|t0| !voted(&own, *t0))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let Some(quorums) = node.core.as_ref().map(|core| &core.quorums) else {
            return Ok(());
        };
        let all: Vec<(Serial, StoredState)> = self
            .nodes
            .iter()
            .map(|(serial, node)| Ok((*serial, load(node)?)))
            .collect::<Result<_, Violation>>()?;
        for t0 in missing {
            let records: Vec<(Serial, &TxRecord)> = all
                .iter()
                .flat_map(|(serial, state)| {
                    state
                        .transactions
                        .iter()
                        .filter(move |r| r.t0 == t0)
                        .map(move |r| (*serial, r))
                })
                .collect();
            let decided = all.iter().any(|(_, state)| forgotten_in(state, t0))
                || records
                    .iter()
                    .any(|(_, r)| matches!(r.status, Status::Committed | Status::Applied));
            let votes: Vec<(Serial, Status, bool)> = records
                .iter()
                .map(|(serial, r)| (*serial, r.status, r.t == t0.as_t()))
                .collect();
            if !recoverable_from_stores(quorums, decided, &votes) {
                return Err(Violation {
                    invariant: "durability",
                    detail: format!(
                        "node {serial} answered the client of {t0:?}, and crashes now: its own \
                         vote is not durable, and the stores do not hold the decision \
                         (records: {:?})",
                        votes
                    ),
                    t0s: vec![t0],
                });
            }
        }
        Ok(())
    }

    fn crash(&mut self, serial: Serial) {
        if let Some(node) = self.nodes.get_mut(&serial) {
            if let Some(core) = node.core.take() {
                self.report.count(&core.stats());
            }
            node.executor = None;
            node.incarnation += 1;
            node.tick_at = None;
            node.disk_free_at = 0;
            node.persisting = 0;
            node.holding = 0;
            self.report.crashes += 1;
            self.record(serial, "crash: unpersisted state lost".into(), vec![]);
        }
    }

    fn on_heal(&mut self) -> Result<(), Violation> {
        self.healed = true;
        self.cut.clear();
        self.record(
            0,
            "heal: every link restored, every node restarted".into(),
            vec![],
        );
        let down: Vec<Serial> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.core.is_none())
            .map(|(serial, _)| *serial)
            .collect();
        for serial in down {
            self.start_node(serial)?;
        }
        Ok(())
    }

    /// Settled: every node is up, holds no protocol state (in memory or on its way to disk),
    /// and executed the same number of transactions.
    fn settled(&self) -> bool {
        let mut applied = None;
        for node in self.nodes.values() {
            let Some(core) = &node.core else {
                return false;
            };
            if core.held_transactions() > 0 || node.persisting > 0 {
                return false;
            }
            let count = core.applied_digest().0;
            if applied.is_some_and(|a| a != count) {
                return false;
            }
            applied = Some(count);
        }
        true
    }

    /// The run did not settle: name a transaction some node still holds.
    fn stuck(&self) -> Violation {
        let mut t0s = Vec::new();
        let mut detail = String::from("the cluster did not settle after healing:");
        for (serial, node) in &self.nodes {
            if let Some(core) = &node.core {
                let held = core.held_transaction_ids();
                detail.push_str(&format!(
                    " node {serial} holds {} transactions;",
                    held.len()
                ));
                t0s.extend(held.into_iter().take(3));
            } else {
                detail.push_str(&format!(" node {serial} is down;"));
            }
        }
        t0s.sort();
        t0s.dedup();
        t0s.truncate(4);
        Violation {
            invariant: "liveness",
            detail,
            t0s,
        }
    }

    fn finish(&mut self) -> Result<SimReport, Violation> {
        let mut logs: BTreeMap<Serial, Vec<Event>> = BTreeMap::new();
        for (serial, node) in &self.nodes {
            let log = node
                .store
                .events_after(0, usize::MAX)
                .map_err(|e| internal(&format!("event log: {e}")))?;
            // Bounded state (§6.7): once settled, the store keeps the event log only.
            let held = node.store.load().map_err(|e| internal(&e.to_string()))?;
            if !held.transactions.is_empty() {
                return Err(Violation {
                    invariant: "bounded-state",
                    detail: format!(
                        "node {serial}'s store still holds {} transaction records after settling",
                        held.transactions.len()
                    ),
                    t0s: held.transactions.iter().take(3).map(|r| r.t0).collect(),
                });
            }
            logs.insert(*serial, log);
        }
        check_final(&logs, &self.clients, &self.checker)?;
        self.report.executed = logs.values().next().map_or(0, Vec::len);
        self.report.invalidated = self.report.submitted - self.report.executed;
        for node in self.nodes.values() {
            if let Some(core) = &node.core {
                self.report.count(&core.stats());
            }
        }
        self.report.trace_hash = *self.trace_hash.finalize().as_bytes();
        Ok(self.report.clone())
    }

    fn failure(&self, violation: Violation) -> SimFailure {
        let involved: BTreeSet<T0> = violation.t0s.iter().copied().collect();
        // Without named transactions, the last events are the most telling.
        let tail_from = if involved.is_empty() {
            self.trace.len().saturating_sub(60)
        } else {
            0
        };
        let trace = self.trace[tail_from..]
            .iter()
            .filter(|line| {
                involved.is_empty()
                    || line.node == 0
                    || line.t0s.iter().any(|t0| involved.contains(t0))
            })
            .map(|line| {
                format!(
                    "{:>7} ms  node {}  {}  {:?}",
                    line.time,
                    line.node,
                    line.what,
                    line.t0s
                        .iter()
                        .filter(|t0| involved.is_empty() || involved.contains(t0))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        SimFailure {
            seed: self.config.seed,
            violation,
            trace,
            replay: None,
        }
    }
}

fn execute<E: Executor>(executor: &E, payload: &Bytes) -> SyneviResult<E> {
    match E::Tx::from_bytes(payload.to_vec()) {
        Ok(transaction) => complete(executor.execute(transaction)),
        Err(error) => Err(error),
    }
}

fn decode_keys<E: Executor>(payload: &Bytes) -> Keys {
    E::Tx::from_bytes(payload.to_vec()).map_or(Keys::All, |tx| tx.keys())
}

/// The details of a message a trace reader needs to follow a decision.
fn describe(message: &synevi_types::Message) -> String {
    use synevi_types::Message;
    match message {
        Message::PreAcceptOk(m) => format!(" (t {:?}, {} deps)", m.t, m.deps.len()),
        Message::Accept(m) => format!(" ({:?}, t {:?}, {} deps)", m.ballot, m.t, m.deps.len()),
        Message::Commit(m) => format!(" (t {:?}, deps {:?})", m.t, m.deps),
        Message::BeginRecovery(m) => format!(" ({:?}, body {})", m.ballot, m.body.is_some()),
        Message::RecoverOk(m) => format!(
            " ({:?} {:?} t {:?} accepted {:?}, rejects fast path {}, wait {:?}, witnessed {:?})",
            m.ballot,
            m.status,
            m.t,
            m.accepted,
            m.rejects_fast_path,
            m.wait_for_commit,
            m.earlier_committed_witness
        ),
        Message::Nack(m) => format!(" (promised {:?})", m.promised),
        _ => String::new(),
    }
}

/// Whether a replica's record in `status` holds its vote (PreAccept or later, not
/// invalidated).
fn is_vote(status: Status) -> bool {
    matches!(
        status,
        Status::PreAccepted | Status::Accepted | Status::Committed | Status::Applied
    )
}

/// Whether `state` forgot `t0` (every member applied it): listed, or below its home's floor.
fn forgotten_in(state: &StoredState, t0: T0) -> bool {
    state.forgotten.binary_search(&t0).is_ok()
        || state
            .floors
            .iter()
            .any(|(home, floor)| *home == t0.0.serial && t0 < *floor)
}

fn internal(what: &str) -> Violation {
    Violation {
        invariant: "simulator",
        detail: what.to_string(),
        t0s: vec![],
    }
}
