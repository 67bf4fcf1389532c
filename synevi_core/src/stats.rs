//! [`Stats`]: counters a node exposes (for tests, metrics and benchmarks).

/// Counters of what a node has done since it started. Monotonic unless said otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transactions submitted to this node.
    pub submitted: u64,
    /// Transactions this node coordinated to commit on the fast path (one round trip).
    pub fast_path_commits: u64,
    /// Transactions this node coordinated to commit on the slow path (Accept round).
    pub slow_path_commits: u64,
    /// Recoveries this node started.
    pub recoveries_started: u64,
    /// Recoveries this node finished with a commit.
    pub recovery_commits: u64,
    /// Transactions this node's recoveries invalidated.
    pub recovery_invalidations: u64,
    /// Transactions this node executed.
    pub executed: u64,
    /// Transactions whose protocol state this node released after every member applied them.
    pub forgotten: u64,
    /// Protocol messages this node sent.
    pub messages_sent: u64,
    /// Protocol messages this node received.
    pub messages_received: u64,
    /// Sum of the deps sizes of the transactions this node committed (divide by the commits
    /// for the mean dependency set size).
    pub committed_deps_total: u64,
    /// PreAccepts this node held back under contention (`Config::pre_accept_window_ms`).
    pub pre_accepts_held: u64,
    /// Of those, the ones handled before their window ended, because no PreAccept could
    /// still overtake them.
    pub pre_accepts_released_early: u64,
    /// Messages this node re-sent as coordinator to voters that had not answered.
    pub retransmissions: u64,
    /// Retransmission timers that found their phase's messages too recent to send again
    /// (answers came slowly of late, [`crate::Core::retransmit_wait_ms`], or a later phase
    /// began after the timer was set) and were set again.
    pub retransmissions_postponed: u64,
    /// Catch-up inquiries this node sent for dependencies it waited on.
    pub inquiries_sent: u64,
    /// Current: transactions whose protocol state this node holds.
    pub transactions_held: u64,
    /// Current: committed transactions waiting to execute.
    pub pending_execution: u64,
}
