//! Recovery (Accord §Recovery): a replica that sees a transaction stuck takes it over with a
//! higher ballot, learns what a majority knows, and finishes it with the only outcome that
//! can already have been chosen, or any safe outcome if none can.

use std::collections::BTreeMap;

use synevi_types::{BeginRecovery, Deps, Inquire, Message, RecoverOk, Serial, Status, T, T0};

use super::{Coordination, Phase};
use crate::core::{Core, Timer};

impl Core {
    /// The progress timer of `t0` fired: if it is still undecided and nobody here drives it,
    /// this node first asks its peers (it may just have missed the commit), and if that does
    /// not help, becomes its recovery coordinator.
    pub(crate) fn on_progress_timer(&mut self, t0: T0) {
        let now = self.now_ms();
        let Some(state) = self.txs.get_mut(&t0) else {
            return;
        };
        if state.record.status.is_decided() || state.progress_due_ms > now {
            return; // decided, or the deadline moved later (another timer entry covers it)
        }
        if !state.inquired {
            state.inquired = true;
            self.stats.inquiries_sent += 1;
            let others: Vec<Serial> = self
                .quorums
                .voters()
                .filter(|voter| *voter != self.serial)
                .collect();
            self.send_to(&others, Message::Inquire(Inquire { t0s: vec![t0] }));
            let due = now + self.config.recovery_timeout_ms / 2 + 1;
            self.set_progress(t0, due);
            return;
        }
        if self.coordinations.contains_key(&t0) {
            // Still driving it (slowly): look again later.
            let due = now + self.config.recovery_timeout_ms;
            self.set_progress(t0, due);
            return;
        }
        self.start_recovery(t0);
        self.backoff_progress(t0);
    }

    /// Starts recovering `t0` with a ballot above every ballot this replica has seen for it.
    pub(crate) fn start_recovery(&mut self, t0: T0) {
        let Some(state) = self.txs.get(&t0) else {
            return;
        };
        if state.record.status.is_decided() || self.coordinations.contains_key(&t0) {
            return;
        }
        let ballot = state
            .record
            .promised
            .max(state.record.accepted)
            .successor(self.serial);
        let body = state.record.body.clone();
        self.stats.recoveries_started += 1;
        tracing::debug!(?t0, ?ballot, "starting recovery");
        let phase = Phase::Recover {
            replies: BTreeMap::new(),
        };
        let coordination = Coordination::new(body.clone(), ballot, phase, self.now_ms());
        self.coordinations.insert(t0, coordination);
        let due = self.now_ms() + self.config.retransmit_interval_ms;
        self.set_timer(due, t0, Timer::Retransmit);
        self.send_to_voters(Message::BeginRecovery(BeginRecovery { t0, ballot, body }));
    }

    pub(crate) fn on_recover_ok(&mut self, from: Serial, message: RecoverOk) {
        let slow_quorum = self.quorums.slow_quorum();
        let Some(coordination) = self.answered_coordination(from, message.t0, message.ballot)
        else {
            return;
        };
        let Phase::Recover { replies } = &mut coordination.phase else {
            return;
        };
        if coordination.body.is_none() {
            coordination.body = message.body.clone();
        }
        let t0 = message.t0;
        replies.insert(from, message);
        if replies.len() >= slow_quorum {
            self.decide_recovery(t0);
        }
    }

    /// Decides a recovery from a majority's answers, in the order the paper prescribes.
    fn decide_recovery(&mut self, t0: T0) {
        let Some(coordination) = self.coordinations.get(&t0) else {
            return;
        };
        let Phase::Recover { replies } = &coordination.phase else {
            return;
        };
        let replies: Vec<&RecoverOk> = replies.values().collect();

        // 1. Someone knows the decision: finish with exactly that. Protects agreement.
        if replies.iter().any(|r| r.status == Status::Invalidated) {
            self.commit_invalidate(t0);
            return;
        }
        if let Some(decided) = replies
            .iter()
            .find(|r| matches!(r.status, Status::Committed | Status::Applied))
        {
            let (t, deps) = (decided.t, decided.deps.clone());
            self.stats.recovery_commits += 1;
            self.commit(t0, t, deps);
            return;
        }

        // 2. Someone accepted a value: the one with the highest ballot may have been chosen
        //    (Paxos); re-propose it. Protects a slow-path decision whose commit was lost.
        if let Some(highest) = replies
            .iter()
            .filter(|r| r.status.has_accepted())
            .max_by_key(|r| r.accepted)
        {
            if highest.status == Status::AcceptedInvalidate {
                self.start_invalidate(t0);
                return;
            }
            let t = highest.t;
            let mut deps = Deps::new();
            for reply in replies.iter().filter(|r| r.accepted == highest.accepted) {
                deps.union_with(&reply.deps);
            }
            self.start_accept(t0, t, deps);
            return;
        }

        // 3. Nobody in a majority has the transaction itself: it cannot have been committed
        //    (a commit needs a majority or a fast quorum that knows it, and any of those
        //    intersects this majority), and the majority promised this ballot, so it never
        //    will be by a lower one. Make it a no-op so dependants stop waiting.
        if coordination.body.is_none() {
            self.start_invalidate(t0);
            return;
        }

        // Answers given without the transaction (this recovery started from an id only and
        // learned the body from another answer) are no pre-accepts: their `t` proves nothing
        // about what they witnessed. Ask those voters again, with the body, before deciding;
        // otherwise "the highest answered t" can be below a conflicting commit (found by the
        // simulator, seed 16020140).
        let unpreaccepted: Vec<Serial> = match &coordination.phase {
            Phase::Recover { replies } => replies
                .iter()
                .filter(|(_, reply)| reply.status == Status::Promised)
                .map(|(serial, _)| *serial)
                .collect(),
            _ => Vec::new(),
        };
        if !unpreaccepted.is_empty() {
            let ballot = coordination.ballot;
            let body = coordination.body.clone();
            if let Some(Coordination {
                phase: Phase::Recover { replies },
                ..
            }) = self.coordinations.get_mut(&t0)
            {
                replies.retain(|serial, _| !unpreaccepted.contains(serial));
            }
            let again = Message::BeginRecovery(BeginRecovery { t0, ballot, body });
            self.send_to(&unpreaccepted, again);
            return;
        }

        // 4. Only pre-accepted answers. The fast path may have been taken only if enough of
        //    the electorate could have answered t0 and no evidence rules it out.
        let (fast_votes, electorate_answered) = self.electorate_votes(t0);
        let unknown = self.quorums.electorate_size() - electorate_answered;
        let fast_possible = fast_votes + unknown >= self.quorums.fast_quorum();
        let rejected = replies.iter().any(|r| r.rejects_fast_path);
        let mut deps = Deps::new();
        for reply in &replies {
            deps.union_with(&reply.deps);
        }
        if rejected || !fast_possible {
            // The fast path was not taken: any t that the answers allow is safe; take the
            // highest proposed, as the slow path would have.
            let t: T = replies
                .iter()
                .filter(|r| r.status == Status::PreAccepted)
                .map(|r| r.t)
                .max()
                .unwrap_or(t0.as_t())
                .max(t0.as_t());
            self.start_accept(t0, t, deps);
            return;
        }
        let mut wait_for = Deps::new();
        let mut witnessed = Deps::new();
        for reply in &replies {
            wait_for.union_with(&reply.wait_for_commit);
            witnessed.union_with(&reply.earlier_committed_witness);
        }
        wait_for.retain(|other| !witnessed.contains(other));
        if !wait_for.is_empty() {
            // (b) An earlier transaction may still commit above t0 without waiting for this
            //     one; proposing t0 now could order them wrongly. Let it decide, then retry.
            self.coordinations.remove(&t0);
            for other in wait_for.iter().copied().collect::<Vec<_>>() {
                let due = self.now_ms();
                self.set_progress(other, due);
            }
            self.backoff_progress(t0);
            return;
        }
        // The fast path may have been taken, so it must be honoured: propose t0.
        self.start_accept(t0, t0.as_t(), deps);
    }

    /// Among recovery answers from electorate members: how many pre-accepted at `t == t0`,
    /// and how many answered at all.
    fn electorate_votes(&self, t0: T0) -> (usize, usize) {
        let Some(Coordination {
            phase: Phase::Recover { replies },
            ..
        }) = self.coordinations.get(&t0)
        else {
            return (0, 0);
        };
        let mut votes = 0;
        let mut answered = 0;
        for (serial, reply) in replies {
            if !self.quorums.in_electorate(*serial) {
                continue;
            }
            answered += 1;
            // A replica that had not seen the transaction before this recovery, and got no
            // body with it, cannot have voted for the fast path.
            if reply.status == Status::PreAccepted && reply.t == t0 {
                votes += 1;
            }
        }
        (votes, answered)
    }
}
