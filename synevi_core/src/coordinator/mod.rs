//! The coordinator side: driving one transaction through the phases. One file per phase:
//! `pre_accept.rs` (phase 1 and the fast path), `accept.rs` (slow path), `commit.rs`
//! (decision and retransmission), `recover.rs` (taking over a stuck transaction).

mod accept;
mod commit;
mod pre_accept;
mod recover;

use std::collections::{BTreeMap, BTreeSet};

use synevi_types::{Ballot, Deps, RecoverOk, Serial, TxBody, T};

/// What a coordinator knows about one transaction it drives.
#[derive(Debug)]
pub(crate) struct Coordination {
    /// The transaction; a recovery may start without it and learn it from replicas.
    pub body: Option<TxBody>,
    /// [`Ballot::ZERO`] for the original coordinator, higher for recoveries.
    pub ballot: Ballot,
    pub phase: Phase,
    /// When the current phase's messages last went out (monotonic ms): its retransmission
    /// is due a [`crate::core::Core::retransmit_wait_ms`] after it.
    pub sent_ms: u64,
    /// Whether the current phase's messages went out more than once: its answers then no
    /// longer tell how long answers take (which sending did they answer?).
    pub retransmitted: bool,
}

/// The phase a coordination is in, with the answers gathered so far (at most one per voter).
#[derive(Debug)]
pub(crate) enum Phase {
    PreAccept {
        replies: BTreeMap<Serial, (T, Deps)>,
        /// When a majority had answered (the fast-path wait starts then).
        majority_at_ms: Option<u64>,
    },
    Accept {
        t: T,
        deps: Deps,
        replies: BTreeMap<Serial, Deps>,
    },
    Recover {
        replies: BTreeMap<Serial, RecoverOk>,
    },
    Invalidate {
        replies: BTreeSet<Serial>,
    },
}

impl crate::core::Core {
    /// The coordination an answer at `ballot` from `from` is for: only voters count, and
    /// only answers to the coordination's current ballot (late answers to an earlier
    /// ballot, or to another coordinator, are ignored).
    pub(crate) fn answered_coordination(
        &mut self,
        from: Serial,
        t0: synevi_types::T0,
        ballot: Ballot,
    ) -> Option<&mut Coordination> {
        if !self.quorums.is_voter(from) {
            return None;
        }
        self.coordinations
            .get_mut(&t0)
            .filter(|coordination| coordination.ballot == ballot)
    }
}

impl Coordination {
    /// Starts a coordination in `phase`, its messages sent at `now_ms`.
    pub fn new(body: Option<TxBody>, ballot: Ballot, phase: Phase, now_ms: u64) -> Self {
        Coordination {
            body,
            ballot,
            phase,
            sent_ms: now_ms,
            retransmitted: false,
        }
    }

    /// Moves to `phase`, whose messages go out at `now_ms`.
    pub fn enter(&mut self, phase: Phase, now_ms: u64) {
        self.phase = phase;
        self.sent_ms = now_ms;
        self.retransmitted = false;
    }

    /// How many voters have answered the current phase.
    pub fn replies(&self) -> usize {
        match &self.phase {
            Phase::PreAccept { replies, .. } => replies.len(),
            Phase::Accept { replies, .. } => replies.len(),
            Phase::Recover { replies } => replies.len(),
            Phase::Invalidate { replies } => replies.len(),
        }
    }

    /// Coordinations are removed once decided; one that exists is undecided.
    pub fn is_decided(&self) -> bool {
        false
    }

    /// Whether `serial` has answered the current phase.
    pub fn has_reply_from(&self, serial: Serial) -> bool {
        match &self.phase {
            Phase::PreAccept { replies, .. } => replies.contains_key(&serial),
            Phase::Accept { replies, .. } => replies.contains_key(&serial),
            Phase::Recover { replies } => replies.contains_key(&serial),
            Phase::Invalidate { replies } => replies.contains(&serial),
        }
    }
}
