//! [`SyneviError`]: what went wrong in the system, as opposed to the executor's own verdict.

use crate::{Serial, T0};

/// The system's errors: no quorum, timeouts, shutdown, bad input, store and network failures.
/// An executor's verdict on a transaction is not a `SyneviError`; it is the inner `Result` of
/// [`crate::SyneviResult`] and equal on every node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyneviError {
    /// The coordinator did not hear from enough replicas to decide in time. The transaction
    /// may still commit later (other replicas may finish it through recovery).
    #[error(
        "no quorum reachable: {reached} of the {needed} replies needed arrived within \
         {waited_ms} ms; the transaction may still commit later"
    )]
    QuorumUnreachable {
        /// Replies the coordinator needed (a majority).
        needed: usize,
        /// Replies that arrived.
        reached: usize,
        /// How long the coordinator waited.
        waited_ms: u64,
    },
    /// The transaction committed but did not execute on this node in time (it waits for a
    /// dependency); it will still execute.
    #[error("transaction {t0} committed but did not execute within {waited_ms} ms; it will")]
    ExecutionTimeout {
        /// The transaction.
        t0: T0,
        /// How long the client waited.
        waited_ms: u64,
    },
    /// Recovery decided the transaction is a no-op: it never executes anywhere.
    #[error("transaction {t0} was invalidated by recovery and never executes")]
    Invalidated {
        /// The transaction.
        t0: T0,
    },
    /// The node is shut down (or shutting down) and takes no more transactions.
    #[error("the node is shut down")]
    ShutDown,
    /// The executor failed with a system error on a committed transaction. Skipping it would
    /// make this node diverge, so the node stops executing (fail-stop).
    #[error("executor failed on transaction {t0}: {reason}; the node stopped executing")]
    ExecutorFailed {
        /// The transaction the executor failed on.
        t0: T0,
        /// What the executor reported.
        reason: String,
    },
    /// Bytes that should encode something did not.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Something is larger than its configured limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The store failed to read or write.
    #[error("store failure: {0}")]
    Store(String),
    /// The store has no space left (disk or map size); nothing of the failed write was kept.
    #[error("store is full: {0}")]
    StoreFull(String),
    /// The store's directory holds something that is not a synevi store, or is damaged.
    #[error("store at {path} is corrupt or not a synevi store: {reason}")]
    StoreCorrupt {
        /// Where the store is.
        path: String,
        /// What was found wrong.
        reason: String,
    },
    /// The store belongs to another node.
    #[error("store belongs to node serial {found}, not to serial {expected}")]
    WrongNode {
        /// The serial the store was opened for.
        expected: Serial,
        /// The serial the store was written by.
        found: Serial,
    },
    /// The network failed (bind, connect, protocol).
    #[error("network failure: {0}")]
    Network(String),
    /// A message or request named a member the node does not know.
    #[error("unknown member with serial {0}")]
    UnknownMember(Serial),
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}
