//! Phase 2: Accept (the slow path, and recovery's proposals).

use std::collections::{BTreeMap, BTreeSet};

use synevi_types::{
    Accept, AcceptInvalidate, AcceptInvalidateOk, AcceptOk, Ballot, Deps, Message, Serial, T, T0,
};

use super::Phase;
use crate::core::Core;

impl Core {
    /// Proposes `t` at the coordination's ballot to every voter. Replicas answer with the
    /// deps they know below `t`; the commit carries their union.
    pub(crate) fn start_accept(&mut self, t0: T0, t: T, mut deps: Deps) {
        let Some(body) = self
            .coordinations
            .get(&t0)
            .and_then(|coordination| coordination.body.clone())
        else {
            debug_assert!(
                !self.coordinations.contains_key(&t0),
                "Accept without a body for {t0:?}"
            );
            return;
        };
        self.prune_deps(&mut deps, t0, &body.keys);
        let Some(coordination) = self.coordinations.get_mut(&t0) else {
            return;
        };
        assert!(t >= t0, "proposing t {t:?} below {t0:?}");
        let phase = Phase::Accept {
            t,
            deps: deps.clone(),
            replies: BTreeMap::new(),
        };
        coordination.enter(phase, self.now.monotonic_ms);
        let ballot = coordination.ballot;
        self.send_to_voters(Message::Accept(Accept {
            t0,
            ballot,
            t,
            deps,
            body,
        }));
    }

    pub(crate) fn on_accept_ok(&mut self, from: Serial, message: AcceptOk) {
        let slow_quorum = self.quorums.slow_quorum();
        let Some(coordination) = self.answered_coordination(from, message.t0, message.ballot)
        else {
            return;
        };
        let ballot = coordination.ballot;
        let Phase::Accept {
            t,
            deps: proposed,
            replies,
        } = &mut coordination.phase
        else {
            return;
        };
        replies.insert(from, message.deps);
        if replies.len() < slow_quorum {
            return;
        }
        // A majority accepted t: it is chosen. Its deps are what that majority knew below t,
        // plus the proposed deps. Replicas keep the proposal when they accept, and recovery
        // reads it as "what this transaction witnessed" (evidence that another transaction
        // did not take the fast path); the commit must therefore carry at least the proposal,
        // or a recovery could order a transaction before this one that this one never waits
        // for (found by the simulator, seed 362460554 with 5 nodes).
        let t = *t;
        let mut deps = proposed.clone();
        for reply_deps in replies.values() {
            deps.union_with(reply_deps);
        }
        if ballot == Ballot::ZERO {
            self.stats.slow_path_commits += 1;
        } else {
            self.stats.recovery_commits += 1;
        }
        self.commit(message.t0, t, deps);
    }

    /// Recovery found the transaction was never decided and must not be: propose a no-op.
    pub(crate) fn start_invalidate(&mut self, t0: T0) {
        let Some(coordination) = self.coordinations.get_mut(&t0) else {
            return;
        };
        let phase = Phase::Invalidate {
            replies: BTreeSet::new(),
        };
        coordination.enter(phase, self.now.monotonic_ms);
        let ballot = coordination.ballot;
        self.send_to_voters(Message::AcceptInvalidate(AcceptInvalidate { t0, ballot }));
    }

    pub(crate) fn on_accept_invalidate_ok(&mut self, from: Serial, message: AcceptInvalidateOk) {
        let slow_quorum = self.quorums.slow_quorum();
        let Some(coordination) = self.answered_coordination(from, message.t0, message.ballot)
        else {
            return;
        };
        let Phase::Invalidate { replies } = &mut coordination.phase else {
            return;
        };
        replies.insert(from);
        if replies.len() >= slow_quorum {
            self.stats.recovery_invalidations += 1;
            self.commit_invalidate(message.t0);
        }
    }
}
