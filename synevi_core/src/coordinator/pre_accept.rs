//! Phase 1: PreAccept, and the fast path (Accord §PreAccept).

use std::collections::BTreeMap;

use synevi_types::{Ballot, Deps, Message, PreAccept, PreAcceptOk, Serial, TxBody, T, T0};

use super::{Coordination, Phase};
use crate::core::{Core, Timer};

impl Core {
    /// Starts coordinating a freshly submitted transaction: PreAccept to every voter.
    pub(crate) fn start_pre_accept(&mut self, t0: T0, body: TxBody) {
        debug_assert!(!self.coordinations.contains_key(&t0));
        let phase = Phase::PreAccept {
            replies: BTreeMap::new(),
            majority_at_ms: None,
        };
        let coordination =
            Coordination::new(Some(body.clone()), Ballot::ZERO, phase, self.now_ms());
        self.coordinations.insert(t0, coordination);
        let due = self.now_ms() + self.config.retransmit_interval_ms;
        self.set_timer(due, t0, Timer::Retransmit);
        self.send_to_voters(Message::PreAccept(PreAccept { t0, body }));
    }

    pub(crate) fn on_pre_accept_ok(&mut self, from: Serial, message: PreAcceptOk) {
        if !self.quorums.is_voter(from) {
            return;
        }
        if message.t < message.t0 {
            tracing::warn!(%from, t0 = ?message.t0, t = ?message.t, "dropped a PreAcceptOk voting t below t0");
            return;
        }
        // The voter witnessed its vote: its own next `t0` is higher.
        self.note_peer_clock(from, message.t.0);
        let Some(coordination) = self.coordinations.get_mut(&message.t0) else {
            return; // decided already, or never ours: a late answer
        };
        let Phase::PreAccept { replies, .. } = &mut coordination.phase else {
            return;
        };
        replies.insert(from, (message.t, message.deps));
        // A peer's answer to a PreAccept sent once tells how long answers take now (this
        // node's own is local and tells nothing).
        let answered =
            (!coordination.retransmitted && from != self.serial).then_some(coordination.sent_ms);
        if let Some(sent_ms) = answered {
            self.note_answer_delay(sent_ms);
        }
        self.decide_pre_accept(message.t0, false);
    }

    /// The fast-path wait after a majority answered is over.
    pub(crate) fn on_fast_path_wait(&mut self, t0: T0) {
        self.decide_pre_accept(t0, true);
    }

    /// Decides the outcome of phase 1 once the answers allow it:
    /// - fast path: a fast quorum of electorate members answered `t == t0`: commit at `t0`
    ///   with the union of all answered deps (one round trip);
    /// - slow path: a majority answered and the fast quorum is impossible, or everyone
    ///   answered, or the fast-path wait ran out: Accept at the highest proposed `t`.
    fn decide_pre_accept(&mut self, t0: T0, wait_over: bool) {
        let Some(coordination) = self.coordinations.get_mut(&t0) else {
            return;
        };
        let Phase::PreAccept {
            replies,
            majority_at_ms,
        } = &mut coordination.phase
        else {
            return;
        };
        let quorums = &self.quorums;
        let fast_votes = replies
            .iter()
            .filter(|(serial, (t, _))| quorums.in_electorate(**serial) && *t == t0)
            .count();
        let electorate_against = replies
            .iter()
            .filter(|(serial, (t, _))| quorums.in_electorate(**serial) && *t != t0)
            .count();
        let union = || {
            let mut deps = Deps::new();
            for (_, reply_deps) in replies.values() {
                deps.union_with(reply_deps);
            }
            deps
        };
        if fast_votes >= quorums.fast_quorum() {
            let deps = union();
            self.stats.fast_path_commits += 1;
            self.commit(t0, t0.as_t(), deps);
            return;
        }
        if replies.len() < quorums.slow_quorum() {
            return;
        }
        let fast_possible = quorums.electorate_size() - electorate_against >= quorums.fast_quorum();
        let everyone_answered = replies.len() == quorums.voters().count();
        if !fast_possible || everyone_answered || wait_over {
            let t: T = replies.values().map(|(t, _)| *t).max().unwrap_or(t0.as_t());
            let deps = union();
            self.start_accept(t0, t, deps);
        } else if majority_at_ms.is_none() {
            let now = self.now.monotonic_ms;
            *majority_at_ms = Some(now);
            let due = now + self.config.fast_path_wait_ms;
            self.set_timer(due, t0, Timer::FastPathWait);
        }
    }
}
