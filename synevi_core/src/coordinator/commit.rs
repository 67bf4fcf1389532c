//! The decision: Commit (or CommitInvalidate) to every member, retransmission of unanswered
//! phases, and standing down when a recovery took over.

use synevi_types::{
    BeginRecovery, Commit, CommitInvalidate, Deps, Message, Nack, PreAccept, Serial, T, T0,
};

use super::Phase;
use crate::core::{Core, Timer};

impl Core {
    /// The coordination chose `(t, deps)`: tell every member, including this node.
    pub(crate) fn commit(&mut self, t0: T0, t: T, mut deps: Deps) {
        let Some(coordination) = self.coordinations.remove(&t0) else {
            return;
        };
        let Some(body) = coordination.body else {
            debug_assert!(false, "commit without a body for {t0:?}");
            return;
        };
        self.prune_deps(&mut deps, t0, &body.keys);
        // The peers' copies wait for this node's next message to each (or `HOLD_MS`), as
        // acknowledgements do: with few clients a commit would otherwise go in a network
        // frame of its own, a third of the frames a transaction costs with five nodes, and
        // no client waits for a peer to learn it (the home executes and answers on its own
        // decision). Under load every round has messages for every peer and it goes at
        // once. Delaying a message is safe: the protocol assumes nothing of when they
        // arrive, and members that need the decision sooner ask (`Inquire`, recovery).
        let message = Message::Commit(Commit { t0, t, deps, body });
        let members: Vec<Serial> = self.quorums.members().collect();
        for to in members {
            self.hold_commit(to, message.clone());
        }
    }

    /// The coordination chose "no-op": tell every member.
    pub(crate) fn commit_invalidate(&mut self, t0: T0) {
        self.coordinations.remove(&t0);
        self.send_to_members(Message::CommitInvalidate(CommitInvalidate { t0 }));
    }

    /// A replica promised a higher ballot: another coordinator (a recovery) owns the
    /// transaction now. Stand down; the local client still gets the outcome when the
    /// transaction is decided, and the progress timer recovers it again if nobody finishes.
    pub(crate) fn on_nack(&mut self, _from: Serial, message: Nack) {
        let Some(coordination) = self.coordinations.get(&message.t0) else {
            return;
        };
        if message.promised > coordination.ballot {
            self.coordinations.remove(&message.t0);
            self.backoff_progress(message.t0);
        }
    }

    /// `t0` became decided on this replica (whoever decided it).
    pub(crate) fn on_decided(&mut self, t0: T0) {
        // Whatever this node was doing for it (as original or recovery coordinator) is moot.
        self.coordinations.remove(&t0);
        if t0.0.serial == self.serial {
            // Home node: make sure every member learns the decision (see gc.rs).
            self.gc.track_home(t0);
            let due = self.now_ms() + self.config.retransmit_interval_ms * 4;
            self.set_timer(due, t0, Timer::CommitRetransmit);
        }
    }

    /// The current phase's messages went out a while ago: re-sends them to the voters that
    /// have not answered, once [`Core::retransmit_wait_ms`] has passed since they went out
    /// (it may have grown since the timer was set: then the timer is set again).
    pub(crate) fn on_retransmit_timer(&mut self, t0: T0) {
        let wait = self.retransmit_wait_ms();
        let now = self.now_ms();
        let Some(coordination) = self.coordinations.get_mut(&t0) else {
            return;
        };
        let due = coordination.sent_ms.saturating_add(wait);
        if now < due {
            self.stats.retransmissions_postponed += 1;
            self.set_timer(due, t0, Timer::Retransmit);
            return;
        }
        coordination.sent_ms = now;
        coordination.retransmitted = true;
        let coordination = &self.coordinations[&t0];
        let missing: Vec<Serial> = self
            .quorums
            .voters()
            .filter(|serial| !coordination.has_reply_from(*serial))
            .collect();
        let message = match (&coordination.phase, &coordination.body) {
            (Phase::PreAccept { .. }, Some(body)) => Some(Message::PreAccept(PreAccept {
                t0,
                body: body.clone(),
            })),
            (Phase::Accept { t, deps, .. }, Some(body)) => {
                Some(Message::Accept(synevi_types::Accept {
                    t0,
                    ballot: coordination.ballot,
                    t: *t,
                    deps: deps.clone(),
                    body: body.clone(),
                }))
            }
            (Phase::Recover { .. }, body) => Some(Message::BeginRecovery(BeginRecovery {
                t0,
                ballot: coordination.ballot,
                body: body.clone(),
            })),
            (Phase::Invalidate { .. }, _) => {
                Some(Message::AcceptInvalidate(synevi_types::AcceptInvalidate {
                    t0,
                    ballot: coordination.ballot,
                }))
            }
            _ => None,
        };
        if let Some(message) = message {
            self.stats.retransmissions += missing.len() as u64;
            self.send_to(&missing, message);
        }
        self.set_timer(now + wait, t0, Timer::Retransmit);
    }

    /// Home node: re-sends the decision to members that have not acknowledged applying it.
    pub(crate) fn on_commit_retransmit(&mut self, t0: T0) {
        let Some(missing) = self.gc.home_missing(t0, &self.quorums) else {
            return; // applied everywhere, or not tracked
        };
        for serial in missing {
            self.send_decision(serial, t0);
        }
        let due = self.now_ms() + self.config.retransmit_interval_ms * 8;
        self.set_timer(due, t0, Timer::CommitRetransmit);
    }

    /// Acknowledgements from members that applied transactions this node is home of.
    pub(crate) fn on_applied(&mut self, from: Serial, message: synevi_types::Applied) {
        // A member that applied a transaction holds its commit too, durably: the
        // acknowledgement left after the round recording the commit (an earlier one).
        let from_voter = from != self.serial && self.quorums.is_voter(from);
        for t0 in message.committed {
            if t0.0.serial == self.serial {
                if self.gc.home_holds(t0, from) && from_voter {
                    self.count_commit_holder(t0);
                }
            } else if from_voter {
                self.count_other_holder(t0, from);
            }
        }
        for t0 in message.t0s {
            if t0.0.serial != self.serial {
                continue;
            }
            let ack = self.gc.home_applied(t0, from, &self.quorums);
            if ack.new_holder && from_voter {
                self.count_commit_holder(t0);
            }
            if ack.everywhere {
                self.mark_applied_everywhere(t0);
            }
        }
    }

    /// Not its home: voter `from` says it holds the commit of `t0` durably. Counted once
    /// this node holds the commit too (an acknowledgement that comes first is dropped: the
    /// home's announcement still comes), and once per voter (`TxState::holder_bits`).
    fn count_other_holder(&mut self, t0: T0, from: Serial) {
        // Only voters' holding counts towards every majority meeting one of them.
        debug_assert!(self.quorums.is_voter(from) && from != self.serial);
        let Some(state) = self.txs.get_mut(&t0) else {
            return;
        };
        let bit = Core::holder_bit(from);
        if state.committed_at().is_none() || state.holder_bits & bit != 0 {
            return;
        }
        state.holder_bits |= bit;
        // Not one more: the count may come from the home's announcement, which counted
        // holders this node cannot name. Each figure is a lower bound; so is the larger.
        let named = u8::try_from(state.holder_bits.count_ones()).unwrap_or(u8::MAX);
        state.commit_holders = state.commit_holders.max(named);
        self.settle_if_held(t0);
    }

    /// One more voter holds the commit of `t0` durably (`pruning.rs`).
    fn count_commit_holder(&mut self, t0: T0) {
        if let Some(state) = self.txs.get_mut(&t0) {
            state.commit_holders = state.commit_holders.saturating_add(1);
            self.settle_if_held(t0);
        }
    }

    /// Stand down from `t0` and look at it again after a random, exponentially growing
    /// back-off, so competing recovery coordinators stop pre-empting each other: each
    /// failed attempt doubles the window (up to 64 timeouts), and the draw is spread over
    /// the whole window so that competitors spread out (found by the simulator: with fixed
    /// windows, seven nodes kept colliding, seed 106637261).
    pub(crate) fn backoff_progress(&mut self, t0: T0) {
        let attempts = match self.txs.get_mut(&t0) {
            Some(state) => {
                state.recovery_attempts = state.recovery_attempts.saturating_add(1);
                state.recovery_attempts
            }
            None => return,
        };
        let window = self.config.recovery_timeout_ms << attempts.min(6);
        let delay = window / 2
            + self.random_below(window)
            + self.random_below(self.config.recovery_backoff_ms_max);
        let due = self.now_ms() + delay;
        self.set_progress(t0, due);
    }
}

#[cfg(test)]
mod tests {
    use synevi_types::{Bytes, Envelope, Keys, Message, TxBody, T0};

    use crate::core::{at, cores, Core};
    use crate::Config;

    fn on_own_key(id: u128) -> TxBody {
        TxBody {
            id,
            keys: Keys::single(format!("key-{id}").as_str()),
            payload: Bytes::from_static(b"x"),
        }
    }

    /// The PreAccepts `core` sent (or re-sent) since the last look, by destination.
    fn pre_accepts(core: &mut Core, to: u16) -> Vec<Envelope> {
        core.take_ready()
            .messages
            .into_iter()
            .filter(|e| e.to == to && matches!(e.message, Message::PreAccept(_)))
            .collect()
    }

    /// Node 1 of five coordinates `count` transactions at 0 ms; node 2 answers every one
    /// at `answered_at`, the others never (so no majority answers: the PreAccept phase
    /// goes on). Returns node 1 and the transactions.
    fn only_node_2_answers(count: u128, answered_at: u64) -> (Core, Vec<T0>) {
        let mut nodes = cores(5, Config::default());
        let t0s: Vec<T0> = (0..count)
            .map(|id| nodes[0].submit(at(0), on_own_key(id)))
            .collect();
        for envelope in pre_accepts(&mut nodes[0], 2) {
            nodes[1].receive(at(0), envelope);
        }
        for answer in nodes[1].take_ready().messages {
            nodes[0].receive(at(answered_at), answer);
        }
        let mut nodes = nodes.into_iter();
        (nodes.next().expect("node 1"), t0s)
    }

    /// Answers that come quickly leave the interval as it is: a PreAccept that nodes 3 to 5
    /// never answered goes again after it.
    #[test]
    fn an_unanswered_pre_accept_goes_again_after_the_interval() {
        let (mut node1, t0s) = only_node_2_answers(1, 1);
        assert_eq!(node1.retransmit_wait_ms(), 250);
        node1.tick(at(249));
        assert!(pre_accepts(&mut node1, 3).is_empty(), "not yet");
        node1.tick(at(250));
        assert_eq!(pre_accepts(&mut node1, 3).len(), t0s.len(), "re-sent");
        assert_eq!(node1.stats().retransmissions, 3, "to nodes 3, 4 and 5");
    }

    /// Answers that took 240 ms of late: the PreAccepts still unanswered are not re-sent
    /// after 250 ms (their answers are likely on their way) but after four times the average
    /// answer's delay; and the wait never passes eight intervals.
    #[test]
    fn slow_answers_put_retransmissions_off() {
        let (mut node1, t0s) = only_node_2_answers(16, 240);
        let wait = node1.retransmit_wait_ms();
        assert!((500..=960).contains(&wait), "{wait} ms");
        node1.tick(at(250));
        assert!(pre_accepts(&mut node1, 3).is_empty(), "put off");
        assert_eq!(node1.stats().retransmissions_postponed, t0s.len() as u64);
        node1.tick(at(wait));
        assert_eq!(pre_accepts(&mut node1, 3).len(), t0s.len(), "re-sent then");

        let (node1, _) = only_node_2_answers(64, 10_000);
        assert_eq!(node1.retransmit_wait_ms(), 8 * 250, "capped");
    }
}
