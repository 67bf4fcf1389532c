//! The protocol messages nodes exchange, one struct per message.
//!
//! Names follow the Accord paper: `PreAccept`, `Accept`, `Commit`, `BeginRecovery`. A node
//! never sends a message to itself; the core handles its own part of every phase inline.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Ballot, Deps, Keys, Serial, Status, Timestamp, T, T0};

/// What a transaction is, as the protocol carries it: the client's request id, the keys it
/// touches and the application's encoding of it (see [`crate::Transaction::as_bytes`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBody {
    /// The id the client passed to `Node::transaction`.
    pub id: u128,
    /// The keys the transaction touches; decides what it conflicts with.
    pub keys: Keys,
    /// The transaction as the application encoded it.
    pub payload: Bytes,
}

/// Phase 1, coordinator to replicas: "order this transaction, proposed at `t0`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreAccept {
    /// The transaction's id and proposed execution timestamp.
    pub t0: T0,
    /// The transaction.
    pub body: TxBody,
}

/// Phase 1 answer: the timestamp the replica can accept the transaction at (`t == t0` if
/// nothing conflicting was witnessed above `t0`) and the conflicting transactions it knows
/// with a lower `t0`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreAcceptOk {
    /// The transaction answered for.
    pub t0: T0,
    /// The replica's proposal for `t`.
    pub t: T,
    /// Conflicting transactions with a lower `t0`.
    pub deps: Deps,
}

/// Phase 2 (slow path, and recovery), coordinator to replicas: "accept `t` at `ballot`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// The transaction.
    pub t0: T0,
    /// The coordinator's ballot; [`Ballot::ZERO`] for the original coordinator.
    pub ballot: Ballot,
    /// The proposed execution timestamp.
    pub t: T,
    /// Dependencies gathered so far (kept by the replica for recovery).
    pub deps: Deps,
    /// The transaction, for replicas that missed the pre-accept.
    pub body: TxBody,
}

/// Phase 2 answer: the conflicting transactions the replica knows with a `t0` below the
/// accepted `t` that the proposal did not already carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptOk {
    /// The transaction answered for.
    pub t0: T0,
    /// The ballot the answer is for.
    pub ballot: Ballot,
    /// Conflicting transactions with a `t0` below the accepted `t`, less the proposed deps
    /// (the coordinator commits their union with the proposal, so only the difference
    /// needs to travel: under contention most of a replica's answer is in the proposal).
    pub deps: Deps,
}

/// The decision, coordinator to everyone: execute at `t` after `deps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The transaction.
    pub t0: T0,
    /// Its execution timestamp.
    pub t: T,
    /// What it executes after (those of them with a lower `t`).
    pub deps: Deps,
    /// The transaction itself, for replicas that never saw it.
    pub body: TxBody,
}

/// A refusal: the replica promised a higher ballot for this transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// The transaction refused.
    pub t0: T0,
    /// The ballot the replica promised; a recovery coordinator retries above it.
    pub promised: Ballot,
}

/// Recovery, phase 1: "promise `ballot` for this transaction and tell me what you know".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeginRecovery {
    /// The transaction to recover.
    pub t0: T0,
    /// The recovery coordinator's ballot, above every ballot it has seen for `t0`.
    pub ballot: Ballot,
    /// The transaction, if the recovery coordinator knows it; a replica that has not seen it
    /// pre-accepts it from here. `None` when the transaction is known only as someone's
    /// dependency.
    pub body: Option<TxBody>,
}

/// Recovery, phase 1 answer: the replica's state of the transaction and the evidence the
/// recovery coordinator needs to tell whether the fast path may have been taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverOk {
    /// The transaction answered for.
    pub t0: T0,
    /// The ballot now promised.
    pub ballot: Ballot,
    /// How far the replica's state of the transaction has progressed.
    pub status: Status,
    /// The ballot at which `t`/`deps` were accepted ([`Ballot::ZERO`] if never accepted).
    pub accepted: Ballot,
    /// The replica's `t` (pre-accepted, accepted or committed, per `status`).
    pub t: T,
    /// The replica's deps for that `t`.
    pub deps: Deps,
    /// The transaction, if the replica has it.
    pub body: Option<TxBody>,
    /// A conflicting transaction that started after `t0` (or executes after it) was accepted
    /// or committed without `t0` in its deps: the fast path cannot have been taken.
    pub rejects_fast_path: bool,
    /// Conflicting transactions with a lower `t0`, committed with `t0` in their deps.
    pub earlier_committed_witness: Deps,
    /// Conflicting transactions accepted (not committed) at a `t` above `t0` whose commit
    /// may leave this one out of its deps: earlier ones whose proposal did not witness it,
    /// and any whose proposal did (an accepted proposal is only what commits if its ballot
    /// wins). If this one were proposed at `t0`, such a commit would not wait for it, so the
    /// recovery waits for them to commit first.
    pub wait_for_commit: Deps,
}

/// Recovery decided the transaction never committed: "accept that it is a no-op".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptInvalidate {
    /// The transaction to invalidate.
    pub t0: T0,
    /// The recovery coordinator's ballot.
    pub ballot: Ballot,
}

/// Answer to [`AcceptInvalidate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptInvalidateOk {
    /// The transaction answered for.
    pub t0: T0,
    /// The ballot accepted.
    pub ballot: Ballot,
}

/// The decision that a transaction is a no-op: it never executes anywhere, and transactions
/// that depend on it stop waiting for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInvalidate {
    /// The invalidated transaction.
    pub t0: T0,
}

/// "I have applied these transactions" (executed, or skipped as invalidated), and "I hold the
/// commit of these": sent to the transactions' home nodes (their original coordinators), which
/// track when every member has applied them, and which members hold their commits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The transactions applied.
    pub t0s: Vec<T0>,
    /// Transactions committed here and not yet applied. Their commits are durable here: a
    /// message leaves only after the round it was sent in, and every earlier one, is
    /// durable. A home node that knows enough voters hold a commit stops naming the
    /// transaction in deps that another dep covers (`pruning.rs` in `synevi_core`).
    pub committed: Vec<T0>,
}

/// Periodic, from every node to everyone: what it knows is finished. Drives garbage
/// collection (see `gc.rs` in `synevi_core`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forget {
    /// Every transaction the sender coordinated with a lower `t0` is applied by every member.
    pub floor: T0,
    /// Further transactions the sender coordinated, above `floor`, applied by every member.
    pub t0s: Vec<T0>,
    /// Transactions the sender coordinated whose commit at least `settled_holders` voters
    /// hold durably: enough, when the sender sent it, for every majority to meet one of
    /// them. Receivers may then leave them out of deps where a later dep covers them
    /// (`pruning.rs` in `synevi_core`); with three voters they know that from the commit.
    pub settled: Vec<T0>,
    /// How many voters hold each commit in `settled`, at least.
    pub settled_holders: u32,
    /// Every transaction the sender knows with a lower `t0` is decided at the sender, and the
    /// sender's clock is above it (so it issues no lower `t0` any more).
    pub decided_floor: Timestamp,
}

/// Catch-up: "what do you know of these transactions?" A node asks when it waits on a
/// dependency it has not seen committed. Peers answer with [`Commit`] or
/// [`CommitInvalidate`] for those they know decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inquire {
    /// The transactions asked about.
    pub t0s: Vec<T0>,
}

/// Every protocol message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// See [`PreAccept`].
    PreAccept(PreAccept),
    /// See [`PreAcceptOk`].
    PreAcceptOk(PreAcceptOk),
    /// See [`Accept`].
    Accept(Accept),
    /// See [`AcceptOk`].
    AcceptOk(AcceptOk),
    /// See [`Commit`].
    Commit(Commit),
    /// See [`Nack`].
    Nack(Nack),
    /// See [`BeginRecovery`].
    BeginRecovery(BeginRecovery),
    /// See [`RecoverOk`].
    RecoverOk(RecoverOk),
    /// See [`AcceptInvalidate`].
    AcceptInvalidate(AcceptInvalidate),
    /// See [`AcceptInvalidateOk`].
    AcceptInvalidateOk(AcceptInvalidateOk),
    /// See [`CommitInvalidate`].
    CommitInvalidate(CommitInvalidate),
    /// See [`Applied`].
    Applied(Applied),
    /// See [`Forget`].
    Forget(Forget),
    /// See [`Inquire`].
    Inquire(Inquire),
}

impl Message {
    /// A short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PreAccept(_) => "PreAccept",
            Message::PreAcceptOk(_) => "PreAcceptOk",
            Message::Accept(_) => "Accept",
            Message::AcceptOk(_) => "AcceptOk",
            Message::Commit(_) => "Commit",
            Message::Nack(_) => "Nack",
            Message::BeginRecovery(_) => "BeginRecovery",
            Message::RecoverOk(_) => "RecoverOk",
            Message::AcceptInvalidate(_) => "AcceptInvalidate",
            Message::AcceptInvalidateOk(_) => "AcceptInvalidateOk",
            Message::CommitInvalidate(_) => "CommitInvalidate",
            Message::Applied(_) => "Applied",
            Message::Forget(_) => "Forget",
            Message::Inquire(_) => "Inquire",
        }
    }

    /// The transactions the message is about (for traces).
    pub fn t0s(&self) -> Vec<T0> {
        match self {
            Message::PreAccept(m) => vec![m.t0],
            Message::PreAcceptOk(m) => vec![m.t0],
            Message::Accept(m) => vec![m.t0],
            Message::AcceptOk(m) => vec![m.t0],
            Message::Commit(m) => vec![m.t0],
            Message::Nack(m) => vec![m.t0],
            Message::BeginRecovery(m) => vec![m.t0],
            Message::RecoverOk(m) => vec![m.t0],
            Message::AcceptInvalidate(m) => vec![m.t0],
            Message::AcceptInvalidateOk(m) => vec![m.t0],
            Message::CommitInvalidate(m) => vec![m.t0],
            Message::Applied(m) => m.t0s.iter().chain(&m.committed).copied().collect(),
            Message::Forget(m) => m.t0s.iter().chain(&m.settled).copied().collect(),
            Message::Inquire(m) => m.t0s.clone(),
        }
    }
}

/// A message with its sender and receiver, as networks carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Serial of the sending node.
    pub from: Serial,
    /// Serial of the receiving node.
    pub to: Serial,
    /// The message.
    pub message: Message,
    /// The sender's clock ([`crate::Hlc::high`]) when it sent the message: every
    /// `t0` the sender issues later is above every timestamp with this `time` and `counter`,
    /// whatever their serial. Receivers learn from it when no PreAccept from the sender can
    /// arrive below a held one any more. [`Timestamp::ZERO`] tells nothing (networks that
    /// batch envelopes may carry the clock only on the last one of a batch).
    pub clock: Timestamp,
}
