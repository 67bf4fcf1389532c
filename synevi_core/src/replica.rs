//! The replica side: how a node answers coordinators. One handler per message, named
//! `on_<message>`; each keeps the replica's promises (ballots, statuses only move up).

use synevi_types::{
    Accept, AcceptInvalidate, AcceptInvalidateOk, AcceptOk, Ballot, BeginRecovery, Commit,
    CommitInvalidate, Deps, Inquire, Keys, Message, Nack, PreAccept, PreAcceptOk, RecoverOk,
    Serial, Status, SyneviError, TxBody, T, T0,
};

use crate::core::{Core, HeldPreAccept, TxState};

/// How long after PreAccepts on a key arrived out of `t0` order a replica holds the next
/// ones on that key back (`Config::pre_accept_window_ms`). Reorderings come with contention,
/// and contention comes in stretches; a key without any for this long is handled at once.
pub(crate) const REORDER_MEMORY_MS: u64 = 1_000;

/// How long a member may send nothing before holds stop waiting for its clock
/// (`pre_accept_horizon`). Under contention every member sends every fraction of a
/// millisecond; one that sent nothing for this long is down or cut off, and without this
/// every held PreAccept would wait out its window for as long as it stays away.
pub(crate) const SILENT_MEMBER_MS: u64 = 250;

impl Core {
    /// Makes sure the replica holds a state for `t0`, learning `body` if it is new. Returns
    /// false for a transaction that was forgotten (applied everywhere): messages about it
    /// are late duplicates and must not resurrect it.
    pub(crate) fn ensure_state(&mut self, t0: T0, body: Option<&TxBody>) -> bool {
        if !self.txs.contains_key(&t0) {
            if self.gc.is_forgotten(t0) {
                return false;
            }
            self.txs
                .insert(t0, TxState::new(Core::blank_record(t0, None)));
            let due = self.now_ms() + self.first_progress_delay(t0);
            self.set_progress(t0, due);
        }
        if let Some(body) = body {
            let Some(state) = self.txs.get_mut(&t0) else {
                return false;
            };
            if state.record.body.is_none() {
                state.record.body = Some(body.clone());
                if state.record.status != Status::Invalidated {
                    self.conflicts.insert(t0, &body.keys);
                }
                self.mark_dirty(t0);
            }
        }
        true
    }

    /// Pre-accepts a transaction the replica holds with a body (Accord, PreAccept): `t = t0`
    /// if nothing conflicting was witnessed at or above `t0`, else just above the highest
    /// conflicting timestamp; deps are the conflicting transactions with a lower `t0`.
    fn pre_accept_locally(&mut self, t0: T0) -> Option<(T, Deps)> {
        let keys = self.txs.get(&t0)?.keys()?.clone();
        let max = self.conflicts.max_conflicting(&keys);
        let t = if t0.0 > max {
            t0.as_t()
        } else {
            // Any `t` above `max` is a valid proposal. It must also be above this node's own
            // held transactions: their `t0`s, which its clock issued, are not witnessed until
            // they are released, and `max.successor(own serial)` could equal one of them
            // (found by the simulator, seeds 9993781 and 22141529: two conflicting
            // transactions committed at one `t`). They do not count against `t = t0`: a
            // lower `t0` handled first is what holding is for.
            let own_held = self
                .held_pre_accepts
                .iter()
                .filter(|(held, entry)| {
                    **held != t0
                        && entry.from == self.serial
                        && entry.message.body.keys.conflicts_with(&keys)
                })
                .map(|(held, _)| held.0)
                .max();
            T(max.max(own_held.unwrap_or_default()).successor(self.serial))
        };
        if t != t0.as_t() {
            // A conflicting transaction above `t0` was handled first: PreAccepts on these
            // keys arrive out of `t0` order, so hold the next ones back (`hold_or_pre_accept`).
            let now = self.now_ms();
            self.conflicts.note_reorder(&keys, now);
        }
        let deps = self.conflicts.deps(&keys, t0.0, t0);
        // Later conflicting transactions must be ordered after this one, and this node's
        // clock must never issue `t` as a `t0` of its own.
        self.conflicts.witness(&keys, t.0);
        self.clock.witness(t.0);
        let state = self.txs.get_mut(&t0)?;
        debug_assert!(state.record.status <= Status::PreAccepted);
        state.record.status = Status::PreAccepted;
        state.record.t = t;
        state.record.deps = deps.clone();
        self.mark_dirty(t0);
        Some((t, deps))
    }

    /// A PreAccept arrived (from a peer, or from this node as coordinator). If PreAccepts on
    /// its keys arrived here out of `t0` order in the last [`REORDER_MEMORY_MS`] (this replica
    /// then voted against someone's fast path), and the transaction is new to this replica,
    /// it is held back for `Config::pre_accept_window_ms` and then handled together with
    /// every held one with a lower `t0`, lowest first ([`Core::release_held_pre_accepts`]):
    /// a PreAccept with a lower `t0` that arrives meanwhile is handled before it and can
    /// still get `t = t0`. It goes earlier once no PreAccept with a lower `t0` can come any
    /// more ([`Core::pre_accept_horizon`]). A hold that ran out with nothing conflicting
    /// held beside it ends holding on its keys until the next reordering. Holding is a
    /// delay, which the network may impose on any message, so it cannot change what is
    /// safe, with two exceptions for a node's own transactions.
    /// A home node must know every transaction it coordinates (its garbage-collection floor
    /// claims all it coordinated below it is applied everywhere; `gc_tick`), so it records
    /// its own held transaction at once, unvoted. And its vote, cast when released, is no
    /// longer in the round its PreAccepts waited for, which early executions rely on
    /// (`Ready::execute_early`), so the held transaction is marked `own_vote_late` and
    /// executes only once durable (the crash test found a client answered for a commit
    /// whose coordinator's held vote a kill lost).
    pub(crate) fn hold_or_pre_accept(&mut self, from: Serial, message: PreAccept) {
        if message.t0.0.serial == from {
            self.note_peer_clock(from, message.t0.0);
        }
        let window = self.config.pre_accept_window_ms;
        let hold = window > 0
            && !self.txs.contains_key(&message.t0)
            && self.conflicts.reordered_since(
                &message.body.keys,
                self.now_ms().saturating_sub(REORDER_MEMORY_MS),
            );
        if !hold {
            self.on_pre_accept(from, message);
            return;
        }
        // Witnessed at once, though handled later: every `t0` this node issues from now on
        // is above the held one, so its own PreAccepts cannot overtake it at any replica,
        // and its next message tells every peer that its clock is past it
        // (`pre_accept_horizon`), which ends their holds of it. A clock may always move
        // forward; handling it at once would have moved it the same way.
        self.clock.witness(message.t0.0);
        if from == self.serial {
            if !self.ensure_state(message.t0, Some(&message.body)) {
                return;
            }
            // Its PreAccepts leave with this round; whenever its vote is cast (released, or
            // a retransmission handled at once), it is not in that round.
            if let Some(state) = self.txs.get_mut(&message.t0) {
                state.own_vote_late = true;
            }
        }
        self.stats.pre_accepts_held += 1;
        self.clock_wanted = true;
        let due_ms = self.now_ms() + window;
        // Whatever conflicting is held now and this one keep each other company. Once this
        // one has company, a held one that has company already needs no comparing (with a
        // hot key every held one has, and each arrival compared keys with all of them).
        let mut company = false;
        for (t0, held) in &mut self.held_pre_accepts {
            if *t0 == message.t0 || (company && held.company) {
                continue;
            }
            if held.message.body.keys.conflicts_with(&message.body.keys) {
                held.company = true;
                company = true;
            }
        }
        // A retransmission of a held PreAccept replaces it (and is due later).
        self.held_pre_accepts.insert(
            message.t0,
            HeldPreAccept {
                from,
                message,
                due_ms,
                company,
            },
        );
    }

    /// Handles the held PreAccepts that are due or that nothing can overtake any more
    /// ([`Core::pre_accept_horizon`]), and with them every held one with a lower `t0`, in
    /// `t0` order.
    pub(crate) fn release_held_pre_accepts(&mut self) {
        self.horizon_moved = false;
        let now = self.now_ms();
        let due = self
            .held_pre_accepts
            .iter()
            .filter(|(_, held)| held.due_ms <= now)
            .map(|(t0, _)| *t0)
            .next_back();
        if let Some(upto) = due.max(self.passed_pre_accepts()) {
            self.release_held_upto(upto);
        }
    }

    /// The highest held `t0` at or below [`Core::pre_accept_horizon`].
    fn passed_pre_accepts(&self) -> Option<T0> {
        if self.held_pre_accepts.is_empty() {
            return None;
        }
        let horizon = self.pre_accept_horizon()?;
        self.held_pre_accepts
            .range(..=horizon)
            .next_back()
            .map(|(t0, _)| *t0)
    }

    /// Handles the held PreAccepts up to `upto`, in `t0` order.
    fn release_held_upto(&mut self, upto: T0) {
        let now = self.now_ms();
        // Holding only pays while conflicting PreAccepts are under way together. One whose
        // window ran out without a conflicting one held at any time beside it waited for
        // nothing: its keys are handled at once again until the next reordering
        // (`forget_reorder`). Before handling, which may note a new reordering.
        let lone: Vec<Keys> = self
            .held_pre_accepts
            .range(..=upto)
            .filter(|(_, held)| held.due_ms <= now && !held.company)
            .map(|(_, held)| held.message.body.keys.clone())
            .collect();
        for keys in &lone {
            self.conflicts.forget_reorder(keys);
        }
        // One at a time: the ones not handled yet stay held, so that this node's own count as
        // witnessed while the ones before them are handled (`pre_accept_locally`).
        while let Some(entry) = self.held_pre_accepts.first_entry() {
            if *entry.key() > upto {
                break;
            }
            let held = entry.remove();
            if held.due_ms > now {
                self.stats.pre_accepts_released_early += 1;
            }
            self.on_pre_accept(held.from, held.message);
            self.flush_local();
        }
    }

    /// The highest `t0` below which no PreAccept can arrive here any more that a held one
    /// would wait for: every other member's clock is known to be past it
    /// (`note_peer_clock`: each issues rising `t0`s, stamps every message with its clock as
    /// it makes it, and its messages arrive in order), and this node's own next `t0` is
    /// higher (its clock issues above what it issued or witnessed, and at least the wall
    /// clock's millisecond). `None` while a member has sent none. A PreAccept that arrives
    /// below it anyway (a retransmission after a lost connection, a wall clock stepped back)
    /// loses its fast vote, as it would have without holding; releasing early is a shorter
    /// delay, so it is as safe as holding. A member whose known clock is more than
    /// [`SILENT_MEMBER_MS`] behind this node's wall clock does not count: it sent nothing
    /// for that long (it is down, cut off, or its wall clock is far behind).
    fn pre_accept_horizon(&self) -> Option<T0> {
        let wall = synevi_types::Timestamp::new(self.now.wall_ms, 0, 0);
        let mut horizon = T0(self.clock.high().max(wall));
        for member in self.quorums.members() {
            if member != self.serial {
                let clock = *self.peer_clocks.get(&member)?;
                if clock.0.time.saturating_add(SILENT_MEMBER_MS) < self.now.wall_ms {
                    continue;
                }
                horizon = horizon.min(clock);
            }
        }
        Some(horizon)
    }

    /// Peer `from`'s clock reached `at`: it issued it as a `t0`, witnessed it as its vote, or
    /// stamped a message with it (`Envelope::clock`). Every `t0` it issues from now on is
    /// higher (`pre_accept_horizon`).
    pub(crate) fn note_peer_clock(&mut self, from: Serial, at: synevi_types::Timestamp) {
        if from == self.serial {
            return;
        }
        let latest = self.peer_clocks.entry(from).or_insert(T0(at));
        if latest.0 < at {
            *latest = T0(at);
            self.horizon_moved = true;
        }
    }

    pub(crate) fn on_pre_accept(&mut self, from: Serial, message: PreAccept) {
        let t0 = message.t0;
        self.clock.witness(t0.0);
        if let Some(state) = self.txs.get(&t0) {
            let record = &state.record;
            if record.promised > Ballot::ZERO {
                // A recovery coordinator took over; the original one must stand down.
                let promised = record.promised;
                self.send(from, Message::Nack(Nack { t0, promised }));
                return;
            }
            if record.status == Status::PreAccepted {
                // A retransmission: the coordinator is alive; answer what was answered before.
                let reply = PreAcceptOk {
                    t0,
                    t: record.t,
                    deps: record.deps.clone(),
                };
                self.send(from, Message::PreAcceptOk(reply));
                return;
            }
            if record.status != Status::Promised {
                // Already accepted or decided here: the coordinator has moved past PreAccept.
                return;
            }
        }
        if !self.ensure_state(t0, Some(&message.body)) {
            return;
        }
        if let Some((t, deps)) = self.pre_accept_locally(t0) {
            self.send(from, Message::PreAcceptOk(PreAcceptOk { t0, t, deps }));
        }
    }

    pub(crate) fn on_accept(&mut self, from: Serial, message: Accept) {
        let t0 = message.t0;
        // Network input: no coordinator proposes a `t` below `t0` (it is the highest vote,
        // and no vote is below `t0`).
        if message.t < t0 {
            tracing::warn!(%from, ?t0, t = ?message.t, "dropped an Accept proposing t below t0");
            return;
        }
        self.clock.witness(t0.0);
        self.clock.witness(message.t.0);
        if !self.accept_gate(from, t0, message.ballot, Some(&message.body)) {
            return;
        }
        let Some(state) = self.txs.get_mut(&t0) else {
            return;
        };
        state.record.status = Status::Accepted;
        state.record.t = message.t;
        // Keep the proposed deps: recovery reads them as "what this transaction witnessed".
        let proposed = message.deps.clone();
        state.record.deps = message.deps;
        let keys = message.body.keys;
        self.conflicts.witness(&keys, message.t.0);
        self.mark_dirty(t0);
        if from != self.serial {
            // A coordinator is driving it: no need to recover it soon.
            self.defer_progress(t0);
        }
        let deps = self
            .conflicts
            .deps(&keys, message.t.0, t0)
            .without(&proposed);
        let reply = AcceptOk {
            t0,
            ballot: message.ballot,
            deps,
        };
        self.send(from, Message::AcceptOk(reply));
    }

    pub(crate) fn on_commit(&mut self, from: Serial, message: Commit) {
        let t0 = message.t0;
        // Who holds the commit durably once this node's round is: the sender made it durable
        // before sending, and this node before anything it sends after this step leaves.
        let holders = u8::from(self.quorums.is_voter(self.serial))
            + u8::from(from != self.serial && self.quorums.is_voter(from));
        let holder_bits = [self.serial, from]
            .into_iter()
            .filter(|serial| self.quorums.is_voter(*serial))
            .fold(0, |bits, serial| bits | Core::holder_bit(serial));
        // Network input: no transaction commits at a `t` below its `t0`.
        if message.t < t0 {
            tracing::warn!(%from, ?t0, t = ?message.t, "dropped a Commit with t below t0");
            return;
        }
        self.clock.witness(t0.0);
        self.clock.witness(message.t.0);
        if !self.ensure_state(t0, Some(&message.body)) {
            // Forgotten: applied here (and everywhere). A home node that restarted asks again.
            self.queue_applied_ack(t0);
            return;
        }
        let Some(state) = self.txs.get_mut(&t0) else {
            return;
        };
        match state.record.status {
            Status::Committed | Status::Applied => {
                // Agreement (DESIGN §6.1): a transaction commits with one t only.
                assert_eq!(
                    state.record.t, message.t,
                    "agreement violated: {t0:?} committed at two timestamps"
                );
                if state.record.status == Status::Applied {
                    // The home node is still missing our acknowledgement.
                    self.queue_applied_ack(t0);
                }
                return;
            }
            Status::Invalidated => {
                panic!("agreement violated: {t0:?} committed after it was invalidated")
            }
            _ => {}
        }
        state.record.status = Status::Committed;
        state.commit_holders = holders;
        state.holder_bits = holder_bits;
        state.record.t = message.t;
        state.record.deps = message.deps.clone();
        self.stats.committed_deps_total += message.deps.len() as u64;
        self.conflicts.witness(&message.body.keys, message.t.0);
        self.mark_dirty(t0);
        self.settle_if_held(t0);
        self.on_decided(t0);
        // Tell its home node this voter holds the commit, so that the home can leave it out
        // of its coordinations' deps (`pruning.rs`); a transaction that depends on nothing
        // most likely sits on keys nothing else uses, where that acknowledgement would go
        // unused (its `Applied` acknowledgement still counts, later).
        if t0.0.serial != self.serial
            && self.quorums.is_voter(self.serial)
            && !message.deps.is_empty()
        {
            self.queue_committed_ack(t0);
        }
        self.add_to_execution(t0, message.t, &message.deps);
        self.drain_executions();
    }

    pub(crate) fn on_commit_invalidate(&mut self, _from: Serial, message: CommitInvalidate) {
        let t0 = message.t0;
        if !self.ensure_state(t0, None) {
            self.queue_applied_ack(t0);
            return;
        }
        let Some(state) = self.txs.get_mut(&t0) else {
            return;
        };
        match state.record.status {
            Status::Invalidated => {
                // The home node is still missing our acknowledgement.
                self.queue_applied_ack(t0);
                return;
            }
            Status::Committed | Status::Applied => {
                panic!("agreement violated: {t0:?} invalidated after it was committed")
            }
            _ => {}
        }
        state.record.status = Status::Invalidated;
        state.executed = true;
        if let Some(keys) = state.keys().cloned() {
            self.conflicts.remove(t0, &keys);
        }
        self.mark_dirty(t0);
        self.on_decided(t0);
        self.execution.done(t0);
        self.drain_executions();
        self.fail_client(t0, SyneviError::Invalidated { t0 });
        // Invalidated counts as applied: nothing is left to do for it here.
        self.queue_applied_ack(t0);
    }

    /// Recovery, phase 1 (Accord, Recover): promise the ballot, pre-accept if this replica
    /// never saw the transaction, and report its state plus the evidence the recovery
    /// coordinator needs to tell whether the fast path may have been taken.
    pub(crate) fn on_begin_recovery(&mut self, from: Serial, message: BeginRecovery) {
        let t0 = message.t0;
        self.clock.witness(t0.0);
        if !self.ensure_state(t0, message.body.as_ref()) {
            return;
        }
        let Some(state) = self.txs.get_mut(&t0) else {
            return;
        };
        // Equal ballots are the same coordinator asking again.
        if message.ballot < state.record.promised {
            let promised = state.record.promised;
            self.send(from, Message::Nack(Nack { t0, promised }));
            return;
        }
        let promise_raised = message.ballot > state.record.promised;
        if promise_raised {
            state.record.promised = message.ballot;
        }
        let other_coordinator = from != self.serial;
        let never_pre_accepted = state.record.status == Status::Promised;
        let has_body = state.record.body.is_some();
        if promise_raised {
            self.mark_dirty(t0);
            if other_coordinator {
                // Another node is recovering it: give it time before competing.
                self.defer_progress(t0);
            }
        }
        if never_pre_accepted && has_body {
            self.pre_accept_locally(t0);
        }
        let reply = self.recover_ok(t0, message.ballot);
        if let Some(reply) = reply {
            self.send(from, Message::RecoverOk(reply));
        }
    }

    /// This replica's answer to a recovery of `t0` at `ballot`.
    fn recover_ok(&self, t0: T0, ballot: Ballot) -> Option<RecoverOk> {
        let state = self.txs.get(&t0)?;
        let record = &state.record;
        let mut reply = RecoverOk {
            t0,
            ballot,
            status: record.status,
            accepted: record.accepted,
            t: record.t,
            deps: record.deps.clone(),
            body: record.body.clone(),
            rejects_fast_path: false,
            earlier_committed_witness: Deps::new(),
            wait_for_commit: Deps::new(),
        };
        let Some(keys) = state.keys() else {
            return Some(reply);
        };
        if record.status == Status::PreAccepted {
            // A fresher (larger) answer than the stored one; both are sound.
            reply.deps = self.conflicts.deps(keys, t0.0, t0);
        }
        if record.status.is_decided() {
            return Some(reply);
        }
        let mut committed_witness = Vec::new();
        let mut wait_for_commit = Vec::new();
        for other in self.conflicts.conflicting(keys, t0) {
            let Some(other_state) = self.txs.get(&other) else {
                continue;
            };
            let other_record = &other_state.record;
            let witnessed = other_record.deps.contains(&t0);
            let committed = matches!(other_record.status, Status::Committed | Status::Applied);
            let accepted = other_record.status == Status::Accepted;
            let executes_after = other_record.t > t0;
            if other > t0 {
                // (a) A later transaction accepted or committed without this one in its deps:
                // had this one taken the fast path, every later conflicting transaction's
                // deps quorum would have seen it. Protects against committing at t0 what
                // others already ordered before.
                if (accepted || committed) && !witnessed {
                    reply.rejects_fast_path = true;
                }
            } else {
                if committed && executes_after && !witnessed {
                    // (a) Also: committed to execute after t0 without waiting for this one.
                    reply.rejects_fast_path = true;
                }
                if committed && witnessed {
                    committed_witness.push(other);
                }
            }
            // (b) Accepted, not committed, to execute above t0: unless it is known not to
            // witness this one (then (a) rejected the fast path already), wait for it to
            // commit. An accepted proposal that witnesses this one is only what commits if
            // its ballot wins; a later ballot may commit deps without it, and then it would
            // not wait for this one proposed at t0 (found by reasoning about the simulator's
            // seed 362460554).
            let rejected_by_it = other > t0 && !witnessed;
            if accepted && executes_after && !rejected_by_it {
                wait_for_commit.push(other);
            }
        }
        reply.earlier_committed_witness = Deps::from_unsorted(committed_witness);
        reply.wait_for_commit = Deps::from_unsorted(wait_for_commit);
        Some(reply)
    }

    pub(crate) fn on_accept_invalidate(&mut self, from: Serial, message: AcceptInvalidate) {
        let t0 = message.t0;
        if !self.accept_gate(from, t0, message.ballot, None) {
            return;
        }
        let Some(state) = self.txs.get_mut(&t0) else {
            return;
        };
        state.record.status = Status::AcceptedInvalidate;
        self.mark_dirty(t0);
        let reply = AcceptInvalidateOk {
            t0,
            ballot: message.ballot,
        };
        self.send(from, Message::AcceptInvalidateOk(reply));
    }

    /// The Paxos acceptor's check for a proposal at `ballot` (Accept or AcceptInvalidate):
    /// refuses (Nack) a ballot below the promised one, answers with the decision if there is
    /// one, and otherwise promises and records `ballot` as the accepted one. True when the
    /// caller may store the proposed value.
    fn accept_gate(&mut self, from: Serial, t0: T0, ballot: Ballot, body: Option<&TxBody>) -> bool {
        if !self.ensure_state(t0, body) {
            return false;
        }
        let Some(state) = self.txs.get_mut(&t0) else {
            return false;
        };
        if ballot < state.record.promised {
            let promised = state.record.promised;
            self.send(from, Message::Nack(Nack { t0, promised }));
            return false;
        }
        if state.record.status.is_decided() {
            // Tell the coordinator the decision instead of accepting again.
            self.send_decision(from, t0);
            return false;
        }
        debug_assert!(
            ballot >= state.record.accepted,
            "accepted ballots only grow"
        );
        state.record.promised = ballot;
        state.record.accepted = ballot;
        true
    }

    /// Catch-up: answers with the decision for every asked transaction decided here.
    pub(crate) fn on_inquire(&mut self, from: Serial, message: Inquire) {
        for t0 in message.t0s {
            if self
                .txs
                .get(&t0)
                .is_some_and(|s| s.record.status.is_decided())
            {
                self.send_decision(from, t0);
            }
        }
    }

    /// Sends `to` the decision this replica holds for `t0` (commit or invalidation).
    pub(crate) fn send_decision(&mut self, to: Serial, t0: T0) {
        let Some(state) = self.txs.get(&t0) else {
            return;
        };
        let record = &state.record;
        let message = match record.status {
            Status::Invalidated => Message::CommitInvalidate(CommitInvalidate { t0 }),
            Status::Committed | Status::Applied => match &record.body {
                Some(body) => Message::Commit(Commit {
                    t0,
                    t: record.t,
                    deps: record.deps.clone(),
                    body: body.clone(),
                }),
                None => return,
            },
            _ => return,
        };
        self.send(to, message);
    }
}

#[cfg(test)]
mod tests {
    use synevi_types::{Bytes, Envelope, Keys, StoredState, Timestamp, TxBody};

    use super::*;
    use crate::core::at;
    use crate::Config;

    fn three_cores(window_ms: u64) -> Vec<Core> {
        crate::core::three_cores(Config {
            pre_accept_window_ms: window_ms,
            ..Config::default()
        })
    }

    fn hot(id: u128) -> TxBody {
        TxBody {
            id,
            keys: Keys::single("hot"),
            payload: Bytes::from_static(b"x"),
        }
    }

    /// The PreAccept `core` sends to node `to`.
    fn pre_accept_to(core: &mut Core, to: Serial) -> Envelope {
        core.take_ready()
            .messages
            .into_iter()
            .find(|e| e.to == to && matches!(e.message, Message::PreAccept(_)))
            .expect("a PreAccept to that node")
    }

    /// The `t` node 2 answered for each `t0`, in the order it answered.
    fn answers(core: &mut Core) -> Vec<(T0, T)> {
        core.take_ready()
            .messages
            .into_iter()
            .filter_map(|e| match e.message {
                Message::PreAcceptOk(ok) => Some((ok.t0, ok.t)),
                _ => None,
            })
            .collect()
    }

    /// Node 2 receives PreAccepts of nodes 1 and 3 on one key, each time the higher `t0`
    /// first. Returns node 2's answers to the second pair, after the window.
    fn second_pair_answers(window_ms: u64) -> (Vec<Core>, [T0; 2], Vec<(T0, T)>) {
        let mut cores = three_cores(window_ms);
        // First pair: no reordering seen yet, so node 2 answers at once, and the lower `t0`
        // can no longer get `t = t0`.
        let a = cores[0].submit(at(0), hot(1));
        let b = cores[2].submit(at(1), hot(2));
        let (to_a, to_b) = (
            pre_accept_to(&mut cores[0], 2),
            pre_accept_to(&mut cores[2], 2),
        );
        cores[1].receive(at(2), to_b);
        cores[1].receive(at(2), to_a);
        let first = answers(&mut cores[1]);
        assert_eq!(first.len(), 2, "answered at once: {first:?}");
        assert!(first.contains(&(b, b.as_t())));
        assert!(first.iter().any(|(t0, t)| *t0 == a && *t != a.as_t()));
        // Second pair, the same way round.
        let c = cores[0].submit(at(10), hot(3));
        let d = cores[2].submit(at(11), hot(4));
        let (to_c, to_d) = (
            pre_accept_to(&mut cores[0], 2),
            pre_accept_to(&mut cores[2], 2),
        );
        cores[1].receive(at(12), to_d);
        cores[1].receive(at(12), to_c);
        let mut second = answers(&mut cores[1]);
        cores[1].tick(at(12 + window_ms));
        second.extend(answers(&mut cores[1]));
        (cores, [c, d], second)
    }

    /// A pre-accepted record is stored without its deps, and a node restored from it
    /// answers a retransmitted PreAccept with deps computed again: they still hold the
    /// conflicting transaction the first answer named.
    #[test]
    fn pre_accepted_deps_are_not_stored_and_come_back_on_restart() {
        let mut cores = three_cores(0);
        let a = cores[0].submit(at(0), hot(1));
        let to_a = pre_accept_to(&mut cores[0], 2);
        let b = cores[2].submit(at(1), hot(2));
        let to_b = pre_accept_to(&mut cores[2], 2);
        let mut stored = StoredState::default();
        let mut first_answer = None;
        for envelope in [to_a, to_b.clone()] {
            cores[1].receive(at(2), envelope);
            let ready = cores[1].take_ready();
            for message in ready.messages {
                if let Message::PreAcceptOk(ok) = message.message {
                    if ok.t0 == b {
                        first_answer = Some(ok.deps);
                    }
                }
            }
            stored.transactions.retain(|record| {
                ready
                    .persist
                    .transactions
                    .iter()
                    .all(|new| new.t0 != record.t0)
            });
            stored.transactions.extend(ready.persist.transactions);
            stored.meta = ready.persist.meta.or(stored.meta);
        }
        assert_eq!(first_answer.as_ref().map(Deps::as_slice), Some(&[a][..]));
        for record in &stored.transactions {
            assert_eq!(record.status, Status::PreAccepted);
            assert!(record.deps.is_empty(), "stored with deps: {record:?}");
        }
        let node_id = stored.meta.as_ref().expect("metadata stored").node_id;
        let mut restored =
            Core::restore(node_id, 2, Config::default(), 2, stored).expect("restores");
        assert_eq!(restored.txs[&b].record.deps.as_slice(), &[a]);
        restored.take_ready();
        restored.receive(at(3), to_b);
        let again: Vec<Deps> = restored
            .take_ready()
            .messages
            .into_iter()
            .filter_map(|envelope| match envelope.message {
                Message::PreAcceptOk(ok) if ok.t0 == b => Some(ok.deps),
                _ => None,
            })
            .collect();
        assert_eq!(again.len(), 1, "answered again once");
        assert!(
            again[0].contains(&a),
            "the restored answer lost a dep: {again:?}"
        );
    }

    #[test]
    fn after_a_reordering_pre_accepts_are_held_and_handled_lowest_t0_first() {
        let (cores, [c, d], second) = second_pair_answers(2);
        assert_eq!(
            second,
            vec![(c, c.as_t()), (d, d.as_t())],
            "both vote t = t0, the lower t0 first"
        );
        assert_eq!(cores[1].stats().pre_accepts_held, 2);
    }

    #[test]
    fn without_a_window_the_later_arrival_loses_its_fast_vote() {
        let (cores, [c, d], second) = second_pair_answers(0);
        assert_eq!(second.len(), 2);
        assert_eq!(second[0], (d, d.as_t()));
        assert_eq!(second[1].0, c);
        assert!(second[1].1 > d.as_t(), "{second:?}");
        assert_eq!(cores[1].stats().pre_accepts_held, 0);
    }

    /// A home node that holds its own PreAccept records the transaction at once: its
    /// garbage-collection floor must never pass a transaction it coordinated.
    #[test]
    fn a_home_node_knows_its_own_held_transaction() {
        let (mut cores, _, _) = second_pair_answers(2);
        let e = cores[1].submit(at(20), hot(5));
        assert!(cores[1].held_pre_accepts.contains_key(&e), "held at home");
        assert!(cores[1].txs.contains_key(&e), "and known there");
        let ready = cores[1].take_ready();
        assert_eq!(
            ready
                .messages
                .iter()
                .filter(|m| matches!(m.message, Message::PreAccept(_)))
                .count(),
            2,
            "its PreAccepts leave for the peers at once"
        );
    }

    /// A home node's own held transactions, released together, each vote `t = t0`: a held
    /// one with a higher `t0` keeps a lower one's `t` from colliding with it, not from being
    /// `t0`.
    #[test]
    fn own_held_transactions_vote_fast_in_t0_order() {
        let (mut cores, _, _) = second_pair_answers(2);
        let e = cores[1].submit(at(20), hot(5));
        let f = cores[1].submit(at(20), hot(6));
        assert!(e < f);
        assert_eq!(cores[1].held_pre_accepts.len(), 2);
        cores[1].tick(at(22));
        assert!(cores[1].held_pre_accepts.is_empty());
        for t0 in [e, f] {
            assert_eq!(cores[1].txs[&t0].record.status, Status::PreAccepted);
            assert_eq!(cores[1].txs[&t0].record.t, t0.as_t(), "{t0:?} votes t = t0");
        }
    }

    /// A coordinator whose own vote was held decides in the step that releases it (its peers
    /// answered meanwhile): that vote is not durable yet, so the execution, which answers the
    /// client, must wait for the round (found by the crash test: a client answered for a
    /// commit whose coordinator's vote a kill then lost). Fails when it may run early.
    #[test]
    fn a_decision_on_a_late_own_vote_executes_only_once_durable() {
        let mut cores = three_cores(2);
        // A reordering at node 2 (b's PreAccept before a's), then everything settles.
        let a = cores[0].submit(at(0), hot(1));
        let b = cores[2].submit(at(1), hot(2));
        let (from_a, from_b) = (cores[0].take_ready(), cores[2].take_ready());
        crate::core::deliver(&mut cores, from_b.messages, at(2));
        crate::core::deliver(&mut cores, from_a.messages, at(2));
        crate::core::run_quiet(&mut cores, at(3));
        for core in &mut cores {
            core.tick(at(30));
        }
        crate::core::run_quiet(&mut cores, at(30));
        for t0 in [a, b] {
            assert_eq!(cores[1].txs[&t0].record.status, Status::Applied);
        }
        // Node 2 coordinates `e` on the key: its own vote is held, its PreAccepts leave.
        let e = cores[1].submit(at(40), hot(5));
        assert!(cores[1].held_pre_accepts.contains_key(&e));
        let pre_accepts = cores[1].take_ready();
        assert!(pre_accepts.execute_early, "nothing late executes yet");
        crate::core::deliver(&mut cores, pre_accepts.messages, at(40));
        let answers: Vec<Envelope> = [0, 2]
            .into_iter()
            .flat_map(|i| cores[i].take_ready().messages)
            .collect();
        crate::core::deliver(&mut cores, answers, at(41));
        // Node 3 saw the reordering too and held `e` for its window.
        cores[2].tick(at(42));
        let late = cores[2].take_ready().messages;
        crate::core::deliver(&mut cores, late, at(42));
        assert!(
            cores[1].take_ready().execute.is_empty(),
            "waits for its own vote"
        );
        // The window ends: node 2 votes, decides on the fast path, and executes `e`.
        cores[1].tick(at(42));
        let ready = cores[1].take_ready();
        assert!(
            ready.execute.iter().any(|x| x.t0 == e),
            "{:?}",
            ready.execute
        );
        assert!(!ready.execute_early, "the own vote is in this round");
        // Later rounds may execute early again.
        cores[1].tick(at(43));
        assert!(cores[1].take_ready().execute_early);
    }

    /// Node 2, armed by a reordering (`second_pair_answers`), holds a PreAccept `e` that node
    /// 1 sent at 20 ms. Returns the cores and `e`.
    fn holding_one_from_node_1() -> (Vec<Core>, T0) {
        let (mut cores, _, _) = second_pair_answers(2);
        let e = cores[0].submit(at(20), hot(5));
        let to_e = pre_accept_to(&mut cores[0], 2);
        cores[1].receive(at(20), to_e);
        assert!(cores[1].held_pre_accepts.contains_key(&e), "armed: held");
        (cores, e)
    }

    /// Node 2, armed by a reordering, gets a PreAccept from node 1 at 20 ms and, if `pair`,
    /// another on the same key from node 3 while the first is held (the second is held
    /// until its window ends: node 1 sends nothing later). Returns node 2 once the
    /// window ran out, and the `t0` of a PreAccept node 1 sends it after that.
    fn after_a_hold(pair: bool) -> (Core, T0, Envelope) {
        let (mut cores, e) = holding_one_from_node_1();
        if pair {
            // Held beside `e`; and `e` goes at once, since node 3 sent a later one.
            let f = cores[2].submit(at(21), hot(6));
            let to_f = pre_accept_to(&mut cores[2], 2);
            cores[1].receive(at(21), to_f);
            assert_eq!(cores[1].next_deadline(), Some(21), "a tick at once");
            cores[1].tick(at(21));
            assert!(cores[1].held_pre_accepts.contains_key(&f));
            assert!(!cores[1].held_pre_accepts.contains_key(&e));
        }
        cores[1].tick(at(25));
        assert!(cores[1].held_pre_accepts.is_empty(), "released");
        answers(&mut cores[1]);
        let g = cores[0].submit(at(30), hot(7));
        let to_g = pre_accept_to(&mut cores[0], 2);
        let mut cores = cores.into_iter();
        (cores.nth(1).expect("node 2"), g, to_g)
    }

    /// A hold whose window ran out with nothing conflicting held beside it waited for
    /// nothing (with one client, a lagging replica's one-off reordering would otherwise make
    /// it hold every PreAccept on the key for a second): the next PreAccept is answered at
    /// once.
    #[test]
    fn a_hold_that_waited_alone_ends_holding_on_its_keys() {
        let (mut node2, g, to_g) = after_a_hold(false);
        node2.receive(at(30), to_g);
        assert_eq!(answers(&mut node2), vec![(g, g.as_t())], "answered at once");
        assert_eq!(
            node2.stats().pre_accepts_held,
            3,
            "the second pair and the lone one"
        );
    }

    /// Held in company, holding had something to put in order: the key stays armed.
    #[test]
    fn holds_in_company_keep_holding() {
        let (mut node2, g, to_g) = after_a_hold(true);
        node2.receive(at(30), to_g);
        assert!(answers(&mut node2).is_empty(), "held again");
        assert!(node2.held_pre_accepts.contains_key(&g));
    }

    /// Holding waits for PreAccepts with a lower `t0`; once every other member sent one of
    /// its own above a held one (each issues rising `t0`s, and its messages arrive in order)
    /// and this node's clock is past it, none can come: it goes before its window ends.
    #[test]
    fn a_held_pre_accept_goes_once_every_member_sent_a_later_one() {
        let (mut cores, e) = holding_one_from_node_1();
        cores[1].tick(at(20));
        assert!(
            cores[1].held_pre_accepts.contains_key(&e),
            "node 3 may still send lower"
        );
        let f = cores[2].submit(at(21), hot(6));
        let to_f = pre_accept_to(&mut cores[2], 2);
        cores[1].receive(at(21), to_f);
        cores[1].tick(at(21));
        assert_eq!(
            answers(&mut cores[1]),
            vec![(e, e.as_t())],
            "before its window ends"
        );
        assert!(
            cores[1].held_pre_accepts.contains_key(&f),
            "node 1 may still send lower than f"
        );
    }

    /// A peer's answer tells its clock too: it witnessed the `t` it voted, so its next `t0`
    /// is higher. Node 3 coordinates nothing here, but its vote on node 2's own transaction
    /// lets node 2's held PreAccept from node 1 go.
    #[test]
    fn a_peer_vote_above_a_held_pre_accept_lets_it_go() {
        let (mut cores, e) = holding_one_from_node_1();
        let x = cores[1].submit(at(20), hot(6));
        assert!(x > e);
        let to_node3 = pre_accept_to(&mut cores[1], 3);
        cores[1].tick(at(20));
        assert_eq!(cores[1].held_pre_accepts.len(), 2, "both held");
        cores[2].receive(at(20), to_node3);
        let vote = cores[2]
            .take_ready()
            .messages
            .into_iter()
            .find(|m| m.to == 2 && matches!(m.message, Message::PreAcceptOk(_)))
            .expect("node 3 votes on x");
        cores[1].receive(at(21), vote);
        cores[1].tick(at(21));
        assert!(!cores[1].held_pre_accepts.contains_key(&e), "e went early");
        assert!(
            cores[1].held_pre_accepts.contains_key(&x),
            "node 1 may still send below x"
        );
    }

    /// Node 3's clock passed the held PreAccept (it shows in the clock its message carries,
    /// whatever the message): node 3 can send nothing below it any more, and node 1 sent it,
    /// so it goes at the next tick. A message that tells no clock lets nothing go.
    #[test]
    fn any_message_stamped_past_a_held_pre_accept_lets_it_go() {
        let (mut cores, e) = holding_one_from_node_1();
        let from_node3 = |clock| Envelope {
            from: 3,
            to: 2,
            message: Message::Inquire(Inquire { t0s: Vec::new() }),
            clock,
        };
        cores[1].receive(at(21), from_node3(Timestamp::ZERO));
        cores[1].tick(at(21));
        assert!(
            cores[1].held_pre_accepts.contains_key(&e),
            "node 3 told nothing"
        );
        cores[1].receive(at(21), from_node3(e.0));
        assert_eq!(cores[1].next_deadline(), Some(21), "a tick at once");
        cores[1].tick(at(21));
        assert!(cores[1].held_pre_accepts.is_empty(), "e went early");
        assert_eq!(cores[1].stats().pre_accepts_released_early, 1);
    }

    /// A replica that holds a PreAccept tells every peer its clock, which is past it, in
    /// that round: a peer holding the same PreAccept waits for exactly that, and would
    /// otherwise wait out its window when nothing else goes to it.
    #[test]
    fn holding_tells_every_peer_the_clock() {
        let (mut cores, e) = holding_one_from_node_1();
        let sent = cores[1].take_ready().messages;
        for peer in [1, 3] {
            let to_peer = sent
                .iter()
                .find(|envelope| envelope.to == peer)
                .unwrap_or_else(|| panic!("nothing to node {peer}: {sent:?}"));
            assert!(to_peer.clock > e.0, "the clock is past the held t0");
        }
    }

    /// A member silent for [`SILENT_MEMBER_MS`] (down, cut off) is not waited for: with
    /// node 3 gone, node 1's later PreAccept lets node 2's held one go before its window
    /// ends, as node 3's would have.
    #[test]
    fn a_silent_member_is_not_waited_for() {
        let (mut cores, _, _) = second_pair_answers(2);
        // Node 3 was last heard of at 12 ms.
        let later = |ms: u64| at(12 + SILENT_MEMBER_MS + ms);
        let e = cores[0].submit(later(1), hot(5));
        let to_e = pre_accept_to(&mut cores[0], 2);
        cores[1].receive(later(1), to_e);
        assert!(cores[1].held_pre_accepts.contains_key(&e), "armed: held");
        let f = cores[0].submit(later(1), hot(6));
        let to_f = pre_accept_to(&mut cores[0], 2);
        cores[1].receive(later(1), to_f);
        cores[1].tick(later(1));
        assert_eq!(
            answers(&mut cores[1]),
            vec![(e, e.as_t()), (f, f.as_t())],
            "node 3 is not waited for, and node 1 sent nothing below them"
        );
    }

    /// A held PreAccept moves the clock at once, not when it is handled: what this node
    /// submits meanwhile gets a higher `t0` (and cannot overtake it), and the clock its
    /// messages carry tells its peers so.
    #[test]
    fn a_held_pre_accept_is_witnessed_at_once() {
        let (mut cores, _, _) = second_pair_answers(2);
        // Node 1's clock runs 10 ms ahead of node 2's.
        let e = cores[0].submit(at(30), hot(5));
        let to_e = pre_accept_to(&mut cores[0], 2);
        cores[1].receive(at(20), to_e);
        assert!(cores[1].held_pre_accepts.contains_key(&e), "armed: held");
        let x = cores[1].submit(at(20), hot(6));
        assert!(x > e, "{x:?} would overtake the held {e:?}");
        let to_node3 = pre_accept_to(&mut cores[1], 3);
        assert!(to_node3.clock >= e.0, "the clock it carries is past e");
    }

    /// An Accept or a Commit from the network with `t` below `t0` (a bug or a forgery at the
    /// sender) is dropped: the replica neither panics nor records anything.
    #[test]
    fn accepts_and_commits_below_t0_are_dropped() {
        let mut cores = three_cores(0);
        let x = cores[0].submit(at(0), hot(1));
        let low = T(Timestamp::new(1, 0, 1));
        assert!(low < x.as_t());
        let messages = [
            Message::Accept(Accept {
                t0: x,
                ballot: Ballot::ZERO,
                t: low,
                deps: Deps::new(),
                body: hot(1),
            }),
            Message::Commit(Commit {
                t0: x,
                t: low,
                deps: Deps::new(),
                body: hot(1),
            }),
        ];
        for message in messages {
            let envelope = Envelope {
                from: 1,
                to: 2,
                message,
                clock: Timestamp::ZERO,
            };
            cores[1].receive(at(1), envelope);
            assert!(!cores[1].txs.contains_key(&x), "nothing recorded");
            assert!(
                cores[1].take_ready().messages.is_empty(),
                "nothing answered"
            );
        }
    }

    /// A key without reorderings is handled at once, whatever the window.
    #[test]
    fn in_order_pre_accepts_are_not_held() {
        let mut cores = three_cores(10);
        let a = cores[0].submit(at(0), hot(1));
        let to_a = pre_accept_to(&mut cores[0], 2);
        cores[1].receive(at(1), to_a);
        assert_eq!(answers(&mut cores[1]), vec![(a, a.as_t())]);
        assert_eq!(cores[1].stats().pre_accepts_held, 0);
    }
}
