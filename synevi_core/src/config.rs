//! [`Config`]: the knobs of a node, with defaults that suit a LAN.

use synevi_types::{Serial, SyneviError};

/// A node's tunables. Every limit is named and has a default; times are in milliseconds of
/// the clock the driver passes in (virtual time under simulation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How long a client waits for its transaction before it gets an error
    /// ([`SyneviError::QuorumUnreachable`] before commit, [`SyneviError::ExecutionTimeout`]
    /// after). The transaction itself keeps going.
    pub transaction_timeout_ms: u64,
    /// After a majority answered PreAccept, how long the coordinator still waits for a fast
    /// quorum before it takes the slow path.
    pub fast_path_wait_ms: u64,
    /// How often a coordinator re-sends its current phase's message to members that have not
    /// answered, at least: while answers come slowly it waits longer, up to eight times this
    /// (`Core::retransmit_wait_ms`).
    pub retransmit_interval_ms: u64,
    /// How often a node that holds transactions collects garbage: it works out its floors
    /// ("everything I coordinated below this is applied everywhere", "everything I know
    /// below this is decided"), tells the other members in a `Forget`, and forgets what
    /// every member is done with. A node forgets a transaction a few of these after every
    /// member applied it, so this bounds the protocol state it holds. Measured with 3 nodes
    /// and 256 clients in memory: at 126 ms (half a retransmission interval, as it was) the
    /// nodes held 7,700 to 47,000 transactions between them when a run ended and rounds
    /// that forgot thousands at once made p99 latency 21 to 53 ms; at 20 ms they held 1,500
    /// to 4,300, p99 8 to 32 ms. It costs a `Forget` to each member per interval. A node
    /// that holds nothing runs it at half a retransmission interval instead.
    pub gc_interval_ms: u64,
    /// How long a replica lets a transaction it knows sit undecided (or a dependency it waits
    /// on sit unknown) before it asks its peers and then starts recovery.
    pub recovery_timeout_ms: u64,
    /// Upper bound of the random back-off between competing recovery attempts.
    pub recovery_backoff_ms_max: u64,
    /// The members whose PreAccept answers count towards the fast path ("fast-path
    /// electorate"); `None` means every voting member. Must hold at least `n - f` voters.
    pub fast_path_electorate: Option<Vec<Serial>>,
    /// Most inputs the driver feeds the core before it persists and sends (one group commit).
    pub batch_inputs_max: usize,
    /// Largest encoded transaction a node accepts from a client. Larger ones are refused at
    /// once with [`SyneviError::TooLarge`]: every protocol message carrying the transaction
    /// must fit the network's frame limit (4 MiB by default for gRPC).
    pub payload_bytes_max: usize,
    /// Whether the driver replays the stored event log through the executor when a node
    /// starts, rebuilding in-memory executor state. Turn off for executors that keep their
    /// own durable state; those must tolerate executing a transaction again after a crash
    /// (see [`synevi_types::Executor`]).
    pub replay_events_on_start: bool,
    /// How long a replica holds back a PreAccept on keys where PreAccepts arrived out of `t0`
    /// order in the last second (contention), so that PreAccepts with a lower `t0` arriving
    /// meanwhile are handled first: a replica votes `t = t0` only if it witnessed nothing
    /// conflicting above `t0`, so handling them in `t0` order lets more of them take the fast
    /// path. A held PreAccept goes before its window ends once every other member's clock
    /// is known to be past its `t0` (a PreAccept of its own or a vote above it arrived): no
    /// PreAccept can then still overtake it, so under steady contention a hold lasts a
    /// fraction of the window. A hold whose window runs out with no conflicting PreAccept
    /// held beside it waited for nothing, and ends holding on its keys until the next
    /// reordering (with one writer at a time, a lagging replica's occasional reordering
    /// would otherwise cost every transaction on the key the window for a second). Costs
    /// held transactions up to this much latency, others nothing. 20 ms by default (5
    /// before): on LMDB a peer's messages, and with them its clock, leave only after its
    /// round's sync, and at 256 clients on one key holds of 5 ms ran out before the clocks
    /// came (fast paths 51–63 % against 91 % at 20 ms). A member silent for a quarter of a
    /// second is not waited for. `0` turns it off.
    pub pre_accept_window_ms: u64,
    /// How long (in real microseconds) the driver's core thread keeps looking for its next
    /// input after a round before it sleeps. Waking a sleeping thread costs tens of
    /// microseconds on a VM (measured on 2 cores: a third of a lightly loaded node's latency
    /// went to waking threads), and with one transaction at a time every protocol step waits
    /// for such a wake-up; an answer that arrives while the thread still looks is taken at
    /// once. The thread yields the CPU between looks, so other threads run meanwhile; it
    /// costs at most this much CPU per round, and nothing once the node is idle or busy.
    /// `0` turns it off. Not used by the simulator, which has no threads, nor when a
    /// network with tasks of its own (`Network::runs_tasks`: gRPC) runs on the core's
    /// thread ([`Config::network_on_core_thread`]): looking would keep them from running.
    pub idle_spin_us: u64,
    /// Whether the node starts its network on its core's thread, so that the network's
    /// tasks (for gRPC: the server, the connections, one sender per peer) run beside the
    /// core instead of on the application's runtime. A message then reaches the core, and
    /// the core's messages reach the connection, without waking another thread: on a
    /// two-core virtual machine each such wake-up waited 16 to 29 µs for a CPU, and a lone
    /// transaction over gRPC crossed between threads six times (measured with 3 nodes and
    /// one client: the median 20 % lower, the CPU per transaction 40 % lower; under load
    /// unchanged). A network's tasks started elsewhere (by the application calling
    /// `Network::start` itself) are not moved. Not used by the simulator.
    pub network_on_core_thread: bool,
    /// Whether the node's core runs on a thread of its own, with a single-threaded runtime
    /// that the network shares ([`Config::network_on_core_thread`]), or, when `false`, as a
    /// task on the tokio runtime that starts the node ([`crate::Node::with_config`]),
    /// beside the application's tasks and the network's, which then start there too. On
    /// its own thread the operating system shares the CPUs between the core and everything
    /// else, and every message between nodes in one process wakes a thread; on the
    /// application's runtime tokio shares them, a message to another node's task on a
    /// worker that is awake wakes no thread, and the core yields to the runtime's other
    /// tasks after every round, so that a node under load cannot keep the network's tasks
    /// (its own, and other nodes') from running. Choose `false` for several nodes in one
    /// process on few cores (tests, the benchmark harness: 5 nodes over gRPC on 2 cores
    /// answered one client in two thirds to three quarters of the time, and in-memory
    /// nodes under load ran as fast or faster; LMDB nodes, whose persisters are threads of
    /// their own, even, once the PreAccept window was 20 ms and holding replicas told
    /// every peer their clock; see docs/benchmarks.md), on a multi-threaded runtime
    /// whose workers do not block: a worker held by the application's own work holds the
    /// node's rounds, and its messages, with it. The core does not look for input before
    /// it sleeps on a shared runtime (`idle_spin_us` is not used). Not used by the
    /// simulator.
    pub core_on_own_thread: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            transaction_timeout_ms: 10_000,
            fast_path_wait_ms: 10,
            retransmit_interval_ms: 250,
            gc_interval_ms: 20,
            recovery_timeout_ms: 2_000,
            recovery_backoff_ms_max: 500,
            fast_path_electorate: None,
            batch_inputs_max: 1_024,
            payload_bytes_max: 2 * 1024 * 1024,
            replay_events_on_start: true,
            pre_accept_window_ms: 20,
            idle_spin_us: 30,
            network_on_core_thread: true,
            core_on_own_thread: true,
        }
    }
}

impl Config {
    /// Checks the values that cannot work.
    pub fn validate(&self) -> Result<(), SyneviError> {
        let positive = [
            ("transaction_timeout_ms", self.transaction_timeout_ms),
            ("retransmit_interval_ms", self.retransmit_interval_ms),
            ("gc_interval_ms", self.gc_interval_ms),
            ("recovery_timeout_ms", self.recovery_timeout_ms),
            ("recovery_backoff_ms_max", self.recovery_backoff_ms_max),
            ("batch_inputs_max", self.batch_inputs_max as u64),
            ("payload_bytes_max", self.payload_bytes_max as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(SyneviError::InvalidConfig(format!(
                    "{name} must be above 0"
                )));
            }
        }
        Ok(())
    }
}
