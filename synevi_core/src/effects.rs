//! [`Ready`]: what the core hands its driver after a step.
//!
//! The order of the fields is the order the driver must carry them out in: first make
//! `persist` durable (one store commit for the whole batch: group commit), then send
//! `messages`, hand `execute` to the executor in order, and deliver `replies`. Nothing in a
//! `Ready` may leave the node before its `persist` is durable: the messages promise what the
//! batch contains. A driver makes `Ready`s durable in the order it took them (the core relies
//! on it: a durable `Ready` means every earlier one is). One exception, flagged by
//! [`Ready::execute_early`]: executions may run (and answer their clients) before `persist`
//! is durable when every decision behind them is durable on other nodes already.

use bytes::Bytes;
use synevi_types::{Envelope, SyneviError, WriteBatch, T, T0};

/// The effects of one or more steps of the core.
#[derive(Debug, Default)]
pub struct Ready {
    /// Must be durable before anything else in this `Ready` happens.
    pub persist: WriteBatch,
    /// To send once `persist` is durable.
    pub messages: Vec<Envelope>,
    /// Committed transactions to execute, in this order, once `persist` is durable. The core
    /// counts them as executed from here on; the driver reports each back with
    /// [`crate::Core::applied`] when the executor finished it.
    pub execute: Vec<Execution>,
    /// Clients to answer with an error (timeouts, invalidation). Successful answers are the
    /// executor's results and come from `execute`.
    pub replies: Vec<FailedReply>,
    /// Whether `execute` may run before `persist` is durable, once the executions of every
    /// earlier `Ready` were released (executions keep their order). An execution reveals a
    /// commit decision, and a decision must survive this node losing what it has not
    /// persisted. It does whenever no decision can rest on this node's vote alone (every
    /// quorum has two voters or more): a decision learned from a `Commit` was made durable by
    /// its sender, and one this node reached counts a reply from another voter, which
    /// answered a request that left only after the round holding this node's own vote was
    /// durable. A crash then loses at most the local record of the commit and of the
    /// execution; the node learns the decision again and executes it again after replaying
    /// its event log, as after losing an unsynced execution today. False for a cluster of
    /// one voter, whose own vote is a quorum, and for a `Ready` that executes a transaction
    /// whose coordinator (this node) held its own PreAccept back and voted after its
    /// PreAccepts had left (`TxState::own_vote_late`): that vote may sit in this round.
    pub execute_early: bool,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.messages.is_empty()
            && self.execute.is_empty()
            && self.replies.is_empty()
    }

    /// Appends `later` to `self`; carrying out the result equals carrying out both in order.
    pub fn absorb(&mut self, later: Ready) {
        self.persist.absorb(later.persist);
        self.messages.extend(later.messages);
        self.execute.extend(later.execute);
        self.replies.extend(later.replies);
        self.execute_early &= later.execute_early;
    }
}

/// A committed transaction whose dependencies have executed: the executor may run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    /// The transaction.
    pub t0: T0,
    /// Its execution timestamp.
    pub t: T,
    /// The client's request id.
    pub id: u128,
    /// The application's encoding of the transaction.
    pub payload: Bytes,
}

/// A client of this node whose transaction ended without a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedReply {
    /// The client's transaction.
    pub t0: T0,
    /// Why it has no result.
    pub error: SyneviError,
}

/// The driver's clock readings, passed into every step. The core reads no clock itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Now {
    /// Wall clock in milliseconds since the Unix epoch; feeds the hybrid logical clock. May
    /// step backwards.
    pub wall_ms: u64,
    /// Monotonic milliseconds since an arbitrary origin; drives timers. Never steps back.
    /// Whole milliseconds, rounded down (the driver's `DriverClock`): a reading may be up
    /// to a millisecond behind real time, so a duration measured between two readings may
    /// be up to a millisecond short of the real one, and a deadline that must not come
    /// early (a client's) adds one.
    pub monotonic_ms: u64,
}
