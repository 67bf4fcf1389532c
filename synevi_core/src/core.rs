//! [`Core`]: one node's complete protocol state, driven by `(now, input)` steps.
//!
//! The core is the replica and the coordinator in one: it answers other coordinators
//! (`replica.rs`), coordinates the transactions submitted to it (`coordinator/`), orders
//! execution (`execution.rs`) and releases state nobody needs any more (`gc.rs`). It does no
//! I/O, reads no clock, spawns nothing: inputs are method calls, outputs accumulate in a
//! [`Ready`] that the driver takes with [`Core::take_ready`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustc_hash::FxHashMap;
use synevi_types::{
    Applied, Ballot, Deps, Envelope, Hlc, Keys, Message, NodeId, NodeMeta, Serial, Status,
    StoredState, SyneviError, Timestamp, TxBody, TxRecord, T0,
};

use crate::config::Config;
use crate::conflicts::ConflictIndex;
use crate::coordinator::Coordination;
use crate::effects::{Execution, FailedReply, Now, Ready};
use crate::execution::ExecutionGraph;
use crate::gc::Gc;
use crate::quorum::Quorums;
use crate::stats::Stats;

/// Timers the core sets for itself; they fire from [`Core::tick`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// Coordinator: re-send the current phase's message to members that have not answered.
    Retransmit,
    /// Coordinator: a majority answered PreAccept; stop waiting for the fast quorum.
    FastPathWait,
    /// A local client's transaction ran out of time.
    ClientDeadline,
    /// Replica: check whether a transaction it knows is still undecided; if so, recover it.
    Progress,
    /// Home node: re-send the commit to members that have not applied it yet.
    CommitRetransmit,
}

/// One replica's state of one transaction: the durable record plus what only lives in memory.
#[derive(Debug)]
pub(crate) struct TxState {
    pub record: TxRecord,
    /// Handed to the driver to execute (or already applied). Dependants stop waiting from
    /// here on; the driver executes in the order it was handed transactions.
    pub executed: bool,
    /// Whether this replica already asked its peers about it while it sat undecided.
    pub inquired: bool,
    /// When this replica next looks at whether the transaction is stuck. The one deadline
    /// that counts: progress timers that fire earlier find it in the future and do nothing.
    pub progress_due_ms: u64,
    /// Recoveries this replica started for it; each failed one doubles the back-off.
    pub recovery_attempts: u32,
    /// Known to be applied by every member (see `gc.rs`): no longer anybody's dependency.
    pub stable: bool,
    /// This node coordinates it and held its own PreAccept back (`hold_or_pre_accept`), so
    /// its vote is cast after its PreAccepts left, and a decision counting that vote may be
    /// reached before the round holding the vote is durable: its execution must not run
    /// early (`Ready::execute_early`).
    pub own_vote_late: bool,
    /// Voters known to hold its commit durably, this node included (`pruning.rs`): once
    /// every majority must meet one of them, no recovery can miss the decision.
    pub commit_holders: u8,
    /// Where this node is not its home: the voters counted in `commit_holders` from the
    /// `Commit` and from their own acknowledgements, as bit `serial % 64` each, so that no
    /// voter counts twice (two serials sharing a bit count once: counting fewer holders
    /// than there are is always safe).
    pub holder_bits: u64,
}

impl TxState {
    /// A state for `record` with nothing yet known beyond it: not handed to execution,
    /// never inquired or recovered, not known stable, no other holder of its commit known.
    pub fn new(record: TxRecord) -> Self {
        TxState {
            record,
            executed: false,
            inquired: false,
            progress_due_ms: 0,
            recovery_attempts: 0,
            stable: false,
            own_vote_late: false,
            commit_holders: 0,
            holder_bits: 0,
        }
    }

    pub fn keys(&self) -> Option<&Keys> {
        self.record.body.as_ref().map(|body| &body.keys)
    }

    /// Where it is committed to execute, once it is (committed or applied; not invalidated).
    pub fn committed_at(&self) -> Option<Timestamp> {
        matches!(self.record.status, Status::Committed | Status::Applied).then_some(self.record.t.0)
    }
}

/// The form in which the store keeps `record`: a pre-accepted record without its deps.
///
/// Nothing reads a replica's pre-accepted deps back after a restart. Recovery answers with
/// deps computed afresh already (`recover_ok`), and a retransmitted PreAccept is answered
/// with the deps [`Core::restore`] computes again from the restored transactions: every
/// transaction this replica knew when it first answered was durable before that answer left
/// (a round's messages leave after its commit), so the fresh deps hold every one of the
/// first answer's that is still active (one forgotten since is applied everywhere, which
/// deps may leave out), and a larger answer is as sound as the first, as recovery's is.
/// The first answer's deps are the coordinator's and are not needed here: a restarted
/// coordinator does not resume its PreAccept round. Deps that are accepted or committed
/// are what recovery and execution rely on, and are stored. Under contention the deps are
/// most of a record (about 140 of them with one hot key and 256 clients on 5 nodes), and a
/// record is written as pre-accepted and again as committed.
fn stored_form(record: &TxRecord) -> TxRecord {
    if record.status != Status::PreAccepted {
        return record.clone();
    }
    TxRecord {
        t0: record.t0,
        status: record.status,
        t: record.t,
        deps: Deps::new(),
        promised: record.promised,
        accepted: record.accepted,
        body: record.body.clone(),
    }
}

/// One node's protocol state machine. See the crate docs for the step → effects loop.
pub struct Core {
    pub(crate) serial: Serial,
    pub(crate) config: Config,
    pub(crate) quorums: Quorums,
    pub(crate) clock: Hlc,
    pub(crate) now: Now,
    pub(crate) txs: FxHashMap<T0, TxState>,
    pub(crate) conflicts: ConflictIndex,
    pub(crate) execution: ExecutionGraph,
    pub(crate) coordinations: FxHashMap<T0, Coordination>,
    /// Local clients waiting for a transaction, with when they submitted it.
    pub(crate) clients: FxHashMap<T0, u64>,
    pub(crate) timers: BTreeSet<(u64, T0, Timer)>,
    pub(crate) gc: Gc,
    /// Messages this node sends to itself; handled before the step returns.
    local: VecDeque<Message>,
    dirty: BTreeSet<T0>,
    ready: Ready,
    pub(crate) stats: Stats,
    meta: NodeMeta,
    meta_dirty: bool,
    next_event_seq: u64,
    /// Executions whose event is written and whose record is not yet rewritten as applied:
    /// `(when, seq, t0)`, oldest first (see [`APPLIED_RECORD_DEFER_MS`]).
    unrecorded_applied: VecDeque<(u64, u64, T0)>,
    /// `Applied` acknowledgements to send, per home node, gathered over a step and held
    /// (see [`HOLD_MS`]).
    pending_acks: BTreeMap<Serial, Applied>,
    /// This node's `Commit`s to its peers, held as the acknowledgements are (see
    /// [`HOLD_MS`]), each made when the commit was decided.
    held_commits: BTreeMap<Serial, Vec<Envelope>>,
    /// When the oldest held acknowledgement or announcement must go out.
    held_due_ms: Option<u64>,
    /// This round held a PreAccept back: every peer should learn this node's clock, which
    /// is past it, with this round (`release_held`).
    pub(crate) clock_wanted: bool,
    /// PreAccepts held back under contention, by `t0` (see `Config::pre_accept_window_ms`).
    pub(crate) held_pre_accepts: BTreeMap<T0, HeldPreAccept>,
    /// Per peer, the highest timestamp its clock is known to have reached (a `t0` of its own
    /// it sent a PreAccept for, or a vote it answered with, which it witnessed): it issues
    /// only higher `t0`s from then on, and its messages arrive in order, so it will send no
    /// PreAccept a held one could still wait for (`release_held_pre_accepts`).
    pub(crate) peer_clocks: FxHashMap<Serial, T0>,
    /// A peer's message raised `peer_clocks`: held ones may go at the next tick
    /// ([`Core::next_deadline`] asks for one at once), not at once: a driver hands the core
    /// a round's messages with answers first and PreAccepts last, in `t0` order, so a
    /// peer's answer can be handled before a PreAccept it sent earlier in the same round.
    pub(crate) horizon_moved: bool,
    /// How long peers took of late to answer this node's PreAccepts, in eighths of a
    /// millisecond: a moving average (each answer weighs an eighth), which
    /// [`Core::retransmit_wait_ms`] follows.
    answer_delay_x8: u64,
    /// An execution handed out since the last `take_ready` is of a transaction whose own
    /// vote was late (`TxState::own_vote_late`): that `Ready` executes only once durable.
    execute_after_durable: bool,
    rng: u64,
}

/// A PreAccept a replica holds back until `due_ms` (`replica.rs`, `hold_or_pre_accept`).
#[derive(Debug)]
pub(crate) struct HeldPreAccept {
    pub(crate) from: Serial,
    pub(crate) message: synevi_types::PreAccept,
    pub(crate) due_ms: u64,
    /// Another conflicting PreAccept was held while this one was: holding had something to
    /// put in order (see `release_held_pre_accepts`).
    pub(crate) company: bool,
}

/// How long `Applied` acknowledgements and "applied everywhere" announcements may wait for
/// other messages to the same peer, whose batch they then share. Neither is on anybody's
/// latency path (they only let nodes forget), but sent on their own they cost a network
/// write and a wake-up each: with one client, four of the ten messages a transaction
/// causes. Under load every round has messages for every peer, and they go at once. With
/// one client and 5 nodes a node sends to a given peer about every 1 to 2 ms (when either
/// coordinates), so 3 ms lets nearly all of them ride along (measured against 1 ms: p50
/// 0.31 → 0.28 ms, CPU per transaction 609 → 577 µs, 5 interleaved pairs). A coordinator's
/// `Commit`s to its peers wait the same way (`Core::hold_commit`): its own client has its
/// answer once the home executes, so with one client they were a third of a transaction's
/// frames with five nodes, sent just as the next transaction started.
pub(crate) const HOLD_MS: u64 = 3;

/// How long after an execution a node rewrites the transaction's record as applied, if it
/// still holds it: the execution's event, written at once, is what makes it durable
/// ([`Store::load_for_restart`](synevi_types::Store::load_for_restart) reads a committed
/// record with an event as applied), and by then most records are forgotten (every member
/// applied them), so the record, deps and all, is not written a third time (after
/// pre-accepted and committed). A restart reads the events of about this long again
/// ([`NodeMeta::applied_recorded_through`]). Measured with LMDB, 3 nodes, 256 clients, one
/// hot key, against rewriting in the execution's round: 8.5 → 9.8 k txns/s (medians of 4
/// interleaved pairs; a switch that never rewrote, unsafe on restart, had measured 10.1,
/// 13.8 k → 12.6, 15.6 k in 2 pairs).
pub(crate) const APPLIED_RECORD_DEFER_MS: u64 = 250;

impl Core {
    /// A fresh node that has never run.
    pub fn new(
        node_id: NodeId,
        serial: Serial,
        config: Config,
        seed: u64,
    ) -> Result<Self, SyneviError> {
        Core::restore(node_id, serial, config, seed, StoredState::default())
    }

    /// A node resuming from what its store kept. `seed` feeds the core's random choices
    /// (recovery back-off); the driver passes a random one, the simulator a derived one.
    pub fn restore(
        node_id: NodeId,
        serial: Serial,
        config: Config,
        seed: u64,
        stored: StoredState,
    ) -> Result<Self, SyneviError> {
        config.validate()?;
        let mut quorums = Quorums::new(serial);
        quorums
            .set_electorate(config.fast_path_electorate.as_deref())
            .or_else(|error| {
                // The electorate names members that are added later; checked again then.
                if config.fast_path_electorate.is_some() {
                    Ok(())
                } else {
                    Err(error)
                }
            })?;
        let meta = match stored.meta {
            Some(meta) if meta.serial != serial => {
                return Err(SyneviError::WrongNode {
                    expected: serial,
                    found: meta.serial,
                })
            }
            Some(meta) => meta,
            None => NodeMeta {
                node_id,
                serial,
                clock_floor: Timestamp::ZERO,
                applied_count: 0,
                applied_digest: [0; 32],
                members: Vec::new(),
                applied_recorded_through: 0,
            },
        };
        for &(member, voter) in &meta.members {
            quorums.add(member, voter)?;
        }
        if config.fast_path_electorate.is_some() && !meta.members.is_empty() {
            quorums.set_electorate(config.fast_path_electorate.as_deref())?;
        }
        // Nothing this node issued or witnessed before the restart may be issued again.
        let mut clock = Hlc::with_floor(serial, meta.clock_floor);
        for record in &stored.transactions {
            clock.witness(record.t0.0);
            clock.witness(record.t.0);
        }
        let mut core = Core {
            serial,
            config,
            quorums,
            conflicts: ConflictIndex::with_floor(clock.high()),
            clock,
            now: Now::default(),
            txs: FxHashMap::default(),
            execution: ExecutionGraph::default(),
            coordinations: FxHashMap::default(),
            clients: FxHashMap::default(),
            timers: BTreeSet::new(),
            gc: Gc::restore(&stored.forgotten, &stored.floors),
            local: VecDeque::new(),
            dirty: BTreeSet::new(),
            ready: Ready::default(),
            stats: Stats::default(),
            next_event_seq: stored.last_event_seq + 1,
            unrecorded_applied: VecDeque::new(),
            meta,
            meta_dirty: false,
            pending_acks: BTreeMap::new(),
            held_commits: BTreeMap::new(),
            held_due_ms: None,
            clock_wanted: false,
            held_pre_accepts: BTreeMap::new(),
            peer_clocks: FxHashMap::default(),
            horizon_moved: false,
            answer_delay_x8: 0,
            execute_after_durable: false,
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
        };
        let mut committed = Vec::new();
        for record in stored.transactions {
            let t0 = record.t0;
            if let Some(keys) = record.body.as_ref().map(|body| body.keys.clone()) {
                if record.status != Status::Invalidated {
                    core.conflicts.insert(t0, &keys);
                    core.conflicts.witness(&keys, record.t.0);
                }
            }
            let executed = matches!(record.status, Status::Applied | Status::Invalidated);
            if record.status == Status::Applied {
                // It may say applied only because `Store::load_for_restart` found its event
                // above `applied_recorded_through`, which this node moves on without it: it
                // is written as applied in the first round, before any round moves the mark.
                core.dirty.insert(t0);
            }
            if record.status == Status::Committed {
                committed.push((t0, record.t, record.deps.clone()));
            }
            // Who holds its commit is not recorded: counting nobody only keeps it in deps.
            core.txs.insert(
                t0,
                TxState {
                    executed,
                    ..TxState::new(record)
                },
            );
        }
        // Pre-accepted records are stored without their deps (`stored_form`): compute them
        // again, now that every restored transaction is indexed.
        let pre_accepted: Vec<T0> = core
            .txs
            .iter()
            .filter(|(_, state)| state.record.status == Status::PreAccepted)
            .map(|(t0, _)| *t0)
            .collect();
        for t0 in pre_accepted {
            let deps = match core.txs.get(&t0).and_then(TxState::keys) {
                Some(keys) => core.conflicts.deps(keys, t0.0, t0),
                None => continue,
            };
            if let Some(state) = core.txs.get_mut(&t0) {
                state.record.deps = deps;
            }
        }
        // The graph must know what is done before it orders what is not.
        let done: Vec<T0> = core
            .txs
            .iter()
            .filter(|(_, state)| state.executed)
            .map(|(t0, _)| *t0)
            .collect();
        for t0 in done {
            core.execution.done(t0);
        }
        for (t0, t, deps) in committed {
            core.add_to_execution(t0, t, &deps);
        }
        // Everything undecided gets a progress check once the node runs.
        let undecided: Vec<T0> = core
            .txs
            .iter()
            .filter(|(_, state)| !state.record.status.is_decided())
            .map(|(t0, _)| *t0)
            .collect();
        for t0 in undecided {
            core.set_progress(t0, 0);
        }
        // Home node: its own decided transactions may still lack acknowledgements; ask again.
        let own_decided: Vec<T0> = core
            .txs
            .iter()
            .filter(|(t0, state)| t0.0.serial == serial && state.record.status.is_decided())
            .map(|(t0, _)| *t0)
            .collect();
        for t0 in own_decided {
            core.gc.track_home(t0);
            core.set_timer(0, t0, Timer::CommitRetransmit);
        }
        core.drain_executions();
        Ok(core)
    }

    /// This node's serial.
    pub fn serial(&self) -> Serial {
        self.serial
    }

    /// Adds a member; `voter` members take part in quorums, others only learn commits.
    /// Membership is static: add every member before submitting transactions.
    ///
    /// Members are persisted with the node's metadata: a restarted node knows them at once,
    /// and adding a member it already knows (with the same `voter`) again is a no-op.
    pub fn add_member(&mut self, serial: Serial, voter: bool) -> Result<(), SyneviError> {
        if serial == self.serial {
            return Err(SyneviError::InvalidConfig(format!(
                "node {serial} cannot add itself as a member"
            )));
        }
        if let Some(&(_, known_voter)) = self.meta.members.iter().find(|(s, _)| *s == serial) {
            return if known_voter == voter {
                Ok(())
            } else {
                Err(SyneviError::InvalidConfig(format!(
                    "member {serial} is already known as a {}",
                    if known_voter { "voter" } else { "learner" }
                )))
            };
        }
        self.quorums.add(serial, voter)?;
        if voter {
            // Meeting every majority may take one more holder of a commit now.
            self.conflicts.unsettle_all();
        }
        self.meta.members.push((serial, voter));
        self.meta.members.sort_unstable();
        self.meta_dirty = true;
        if self.config.fast_path_electorate.is_some() {
            // Complain only once every electorate member is known.
            let electorate = self.config.fast_path_electorate.as_deref();
            let all_known = electorate
                .is_some_and(|members| members.iter().all(|m| self.quorums.is_member(*m)));
            if all_known {
                self.quorums.set_electorate(electorate)?;
            }
        }
        Ok(())
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.transactions_held = self.txs.len() as u64;
        stats.pending_execution = self.execution.pending_len() as u64;
        stats
    }

    /// What this node has executed: how many transactions, and their order-independent
    /// digest (equal on nodes that executed the same transactions with the same results).
    pub fn applied_digest(&self) -> (u64, [u8; 32]) {
        (self.meta.applied_count, self.meta.applied_digest)
    }

    /// A client submits a transaction to this node, which becomes its coordinator. Returns the
    /// transaction's `t0`; the client's answer comes from the transaction's execution here (or
    /// a [`FailedReply`]).
    pub fn submit(&mut self, now: Now, body: TxBody) -> T0 {
        self.advance(now);
        let t0 = T0(self.clock.issue(now.wall_ms));
        debug_assert!(!self.txs.contains_key(&t0), "the clock issued {t0:?} twice");
        self.stats.submitted += 1;
        self.clients.insert(t0, now.monotonic_ms);
        // One millisecond more than the timeout: `Now` counts whole milliseconds, rounded
        // down, so a submission at 10.9 ms is at 10 and a deadline of 10 + timeout could
        // pass up to a millisecond early on a tick that came for something else. A client
        // never times out before the configured duration really passed.
        self.set_timer(
            now.monotonic_ms + self.config.transaction_timeout_ms + 1,
            t0,
            Timer::ClientDeadline,
        );
        self.start_pre_accept(t0, body);
        self.flush_local();
        t0
    }

    /// An envelope arrived from the network.
    pub fn receive(&mut self, now: Now, envelope: Envelope) {
        self.advance(now);
        if envelope.to != self.serial || !self.quorums.is_member(envelope.from) {
            tracing::debug!(
                from = envelope.from,
                to = envelope.to,
                "dropped misaddressed envelope"
            );
            return;
        }
        if envelope.from == self.serial {
            tracing::debug!("dropped envelope claiming to come from this node");
            return;
        }
        self.stats.messages_received += 1;
        let clock = envelope.clock;
        self.dispatch(envelope.from, envelope.message);
        // After the message: a PreAccept the sender issued below its clock came before it.
        if clock > Timestamp::ZERO {
            let clock = Timestamp::new(clock.time, clock.counter, Serial::MAX);
            self.note_peer_clock(envelope.from, clock);
        }
        self.flush_local();
    }

    /// Time passed: fires due timers.
    pub fn tick(&mut self, now: Now) {
        self.advance(now);
        self.release_held_pre_accepts();
        while let Some(&(due, t0, timer)) = self.timers.first() {
            if due > now.monotonic_ms {
                break;
            }
            self.timers.pop_first();
            self.on_timer(t0, timer);
            self.flush_local();
        }
        self.gc_tick();
        self.flush_local();
    }

    /// The driver finished executing `t0`; `result_hash` is BLAKE3 of the executor's
    /// serialised result.
    pub fn applied(&mut self, now: Now, t0: T0, result_hash: [u8; 32]) {
        self.advance(now);
        let Some(state) = self.txs.get_mut(&t0) else {
            debug_assert!(false, "applied {t0:?}, which the core does not hold");
            return;
        };
        assert!(
            state.executed,
            "applied {t0:?}, which was never handed out for execution"
        );
        assert_eq!(
            state.record.status,
            Status::Committed,
            "{t0:?} applied twice"
        );
        state.record.status = Status::Applied;
        let t = state.record.t;
        let (id, payload) = state
            .record
            .body
            .as_ref()
            .map(|body| (body.id, body.payload.clone()))
            .unwrap_or_default();
        let seq = self.next_event_seq;
        self.next_event_seq += 1;
        // The event below records the execution; the record is rewritten as applied later,
        // if it is still held then (`record_applied`).
        self.unrecorded_applied.push_back((self.now_ms(), seq, t0));
        self.ready.persist.events.push(synevi_types::Event {
            seq,
            t0,
            t,
            id,
            payload,
            result_hash,
        });
        let mut hasher = blake3::Hasher::new();
        hasher.update(&t0.0.to_be_bytes());
        hasher.update(&t.0.to_be_bytes());
        hasher.update(&result_hash);
        let entry = hasher.finalize();
        for (digest, byte) in self.meta.applied_digest.iter_mut().zip(entry.as_bytes()) {
            *digest ^= byte;
        }
        self.meta.applied_count += 1;
        self.meta_dirty = true;
        self.stats.executed += 1;
        self.clients.remove(&t0);
        self.queue_applied_ack(t0);
        self.flush_local();
    }

    /// Queues "applied `t0`" for its home node, which tracks when every member has applied
    /// it; sent with the next [`Core::take_ready`], after the applied state is persisted.
    pub(crate) fn queue_applied_ack(&mut self, t0: T0) {
        self.pending_acks
            .entry(t0.0.serial)
            .or_default()
            .t0s
            .push(t0);
    }

    /// Queues "I hold the commit of `t0`" for its home node (`pruning.rs`), sent as
    /// [`Core::queue_applied_ack`]'s are: after the round holding the commit is durable.
    /// Where a commit needs more than two holders to be settled (more than three voters),
    /// it goes to every other member too: each counts the holders it hears from, and need
    /// not wait for the home node to count them and announce it (with five nodes, deps
    /// carried a round trip's worth more transactions than with three).
    pub(crate) fn queue_committed_ack(&mut self, t0: T0) {
        if self.quorums.every_majority_meets() <= 2 {
            self.pending_acks
                .entry(t0.0.serial)
                .or_default()
                .committed
                .push(t0);
            return;
        }
        for to in self
            .quorums
            .members()
            .filter(|member| *member != self.serial)
        {
            self.pending_acks.entry(to).or_default().committed.push(t0);
        }
    }

    /// A voter's bit in [`TxState::holder_bits`].
    pub(crate) fn holder_bit(serial: Serial) -> u64 {
        1 << (serial % 64)
    }

    /// Takes the effects accumulated since the last call. See [`Ready`] for what the driver
    /// must do with them, in which order.
    pub fn take_ready(&mut self) -> Ready {
        self.release_held();
        for t0 in std::mem::take(&mut self.dirty) {
            if let Some(state) = self.txs.get(&t0) {
                self.ready
                    .persist
                    .transactions
                    .push(stored_form(&state.record));
            }
        }
        if self.clock.high() > self.meta.clock_floor {
            self.meta.clock_floor = self.clock.high();
            self.meta_dirty = true;
        }
        // The messages leave once this round is durable, and with it the floor: a restarted
        // node never issues a `t0` at or below a clock it announced (`Envelope::clock`).
        debug_assert!(
            self.ready
                .messages
                .iter()
                .all(|envelope| envelope.clock <= self.meta.clock_floor),
            "a message announces a clock above the floor its round persists"
        );
        if std::mem::take(&mut self.meta_dirty) {
            self.ready.persist.meta = Some(self.meta.clone());
        }
        // Early executions rely on this node's own vote in every decision it reached being
        // durable already; one cast late (held) may sit in this very round, or in an earlier
        // one whose commit has not finished: then wait for this round, and with it for every
        // earlier one (rounds become durable in order).
        let own_vote_durable = !std::mem::take(&mut self.execute_after_durable);
        self.ready.execute_early = !self.quorums.own_vote_may_decide() && own_vote_durable;
        std::mem::take(&mut self.ready)
    }

    /// Sends the held acknowledgements and announcements that may go now: those to peers
    /// this round sends something to anyway, and all of them once the oldest waited
    /// [`HOLD_MS`].
    fn release_held(&mut self) {
        let now = self.now_ms();
        let due = self.held_due_ms.is_some_and(|due| now >= due);
        let clock_wanted = std::mem::take(&mut self.clock_wanted);
        let anything_held = self.holds_anything();
        let mut busy: BTreeSet<Serial> = if due || !(anything_held || clock_wanted) {
            BTreeSet::new()
        } else {
            self.ready
                .messages
                .iter()
                .map(|envelope| envelope.to)
                .collect()
        };
        if clock_wanted && !due {
            // Replicas that hold a PreAccept wait for every other member's clock to pass it
            // (`pre_accept_horizon`); this node's is past it, but a member it sends nothing
            // would not learn so before the window runs out, and may itself hold what this
            // node's hold waits for. An `Applied` (empty, unless acknowledgements were held
            // for that member) carries the clock.
            let members: Vec<Serial> = self.quorums.members().collect();
            for member in members {
                if member != self.serial && busy.insert(member) {
                    self.pending_acks.entry(member).or_default();
                }
            }
        }
        let release = |to: Serial| due || busy.contains(&to);
        let before = self.ready.messages.len();
        for (home, acks) in std::mem::take(&mut self.pending_acks) {
            if home == self.serial || release(home) {
                self.send(home, Message::Applied(acks));
            } else {
                self.pending_acks.insert(home, acks);
            }
        }
        for (to, commits) in std::mem::take(&mut self.held_commits) {
            if release(to) {
                self.ready.messages.extend(commits);
            } else {
                self.held_commits.insert(to, commits);
            }
        }
        // Acknowledgements first: a home node that learns who holds its commits before it
        // reads the answers travelling with them leaves more covered deps out of the commits
        // those answers complete (`pruning.rs`). Then the commits: a member that holds one
        // before it answers a PreAccept on the same keys reports a committed dep.
        let released = self.ready.messages.len() - before;
        self.ready.messages.rotate_right(released);
        // Acknowledgements to itself are handled here, and may complete announcements.
        self.flush_local();
        let all_peers_busy = self
            .quorums
            .members()
            .filter(|member| *member != self.serial)
            .all(release);
        if all_peers_busy {
            self.announce(false);
        }
        let held = self.holds_anything();
        self.held_due_ms = held.then(|| {
            self.held_due_ms
                .filter(|due| now < *due)
                .unwrap_or(now + HOLD_MS)
        });
    }

    fn holds_anything(&self) -> bool {
        !self.pending_acks.is_empty()
            || !self.held_commits.is_empty()
            || self.gc.announcement_pending()
    }

    /// Makes everything held (acknowledgements, announcements, commits) go with the next
    /// [`Core::take_ready`]: a node that stops sends what it would have sent later.
    pub(crate) fn release_held_now(&mut self) {
        self.held_due_ms = Some(0);
    }

    /// Moves this node's held commits to the messages of the current round (unit tests
    /// written for commits that go at once).
    #[cfg(test)]
    pub(crate) fn release_held_commits(&mut self) {
        for (_, commits) in std::mem::take(&mut self.held_commits) {
            self.ready.messages.extend(commits);
        }
    }

    /// When the core next needs a [`Core::tick`] (monotonic milliseconds), if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        [
            self.timers.first().map(|(due, _, _)| *due),
            self.gc.next_deadline(self.gc_interval_ms()),
            self.held_due_ms,
            self.held_pre_accepts.values().map(|held| held.due_ms).min(),
            (self.horizon_moved && !self.held_pre_accepts.is_empty()).then_some(self.now_ms()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- internals shared by the handlers -----

    fn advance(&mut self, now: Now) {
        debug_assert!(
            now.monotonic_ms >= self.now.monotonic_ms,
            "monotonic time went back"
        );
        self.now = Now {
            wall_ms: now.wall_ms,
            monotonic_ms: now.monotonic_ms.max(self.now.monotonic_ms),
        };
    }

    /// Holds a `Commit` for `to` until this node sends `to` something else, or [`HOLD_MS`]
    /// passed (`release_held`), and sends one to itself at once. Stamped now: every `t0`
    /// this node issues later is above the stamp, so going ahead of later messages on the
    /// link it tells no clock they do not (`Envelope::clock`).
    pub(crate) fn hold_commit(&mut self, to: Serial, message: Message) {
        if to == self.serial {
            self.send(to, message);
            return;
        }
        let envelope = self.envelope(to, message);
        self.held_commits.entry(to).or_default().push(envelope);
    }

    /// Sends `message` to `to`; to itself, it is handled before the step returns.
    pub(crate) fn send(&mut self, to: Serial, message: Message) {
        if to == self.serial {
            self.local.push_back(message);
        } else {
            let envelope = self.envelope(to, message);
            self.ready.messages.push(envelope);
        }
    }

    /// `message` to peer `to`, counted as sent. Stamped when made: a PreAccept this node
    /// issued is made before every message that tells its clock passed the PreAccept's
    /// `t0`, and goes before them on the link (`Envelope::clock`).
    fn envelope(&mut self, to: Serial, message: Message) -> Envelope {
        debug_assert_ne!(to, self.serial, "messages to itself are handled locally");
        self.stats.messages_sent += 1;
        Envelope {
            from: self.serial,
            to,
            message,
            clock: self.clock.high(),
        }
    }

    /// Sends `message` to every voter (including this node, if it votes).
    pub(crate) fn send_to_voters(&mut self, message: Message) {
        let voters: Vec<Serial> = self.quorums.voters().collect();
        self.send_to(&voters, message);
    }

    /// Sends `message` to every member, voters and learners.
    pub(crate) fn send_to_members(&mut self, message: Message) {
        let members: Vec<Serial> = self.quorums.members().collect();
        self.send_to(&members, message);
    }

    pub(crate) fn send_to(&mut self, serials: &[Serial], message: Message) {
        if let Some((last, rest)) = serials.split_last() {
            for &serial in rest {
                self.send(serial, message.clone());
            }
            self.send(*last, message);
        }
    }

    pub(crate) fn flush_local(&mut self) {
        while let Some(message) = self.local.pop_front() {
            self.dispatch(self.serial, message);
        }
    }

    fn dispatch(&mut self, from: Serial, message: Message) {
        match message {
            Message::PreAccept(m) => self.hold_or_pre_accept(from, m),
            Message::PreAcceptOk(m) => self.on_pre_accept_ok(from, m),
            Message::Accept(m) => self.on_accept(from, m),
            Message::AcceptOk(m) => self.on_accept_ok(from, m),
            Message::Commit(m) => self.on_commit(from, m),
            Message::Nack(m) => self.on_nack(from, m),
            Message::BeginRecovery(m) => self.on_begin_recovery(from, m),
            Message::RecoverOk(m) => self.on_recover_ok(from, m),
            Message::AcceptInvalidate(m) => self.on_accept_invalidate(from, m),
            Message::AcceptInvalidateOk(m) => self.on_accept_invalidate_ok(from, m),
            Message::CommitInvalidate(m) => self.on_commit_invalidate(from, m),
            Message::Applied(m) => self.on_applied(from, m),
            Message::Forget(m) => self.on_forget(from, m),
            Message::Inquire(m) => self.on_inquire(from, m),
        }
    }

    fn on_timer(&mut self, t0: T0, timer: Timer) {
        match timer {
            Timer::Retransmit => self.on_retransmit_timer(t0),
            Timer::FastPathWait => self.on_fast_path_wait(t0),
            Timer::ClientDeadline => self.on_client_deadline(t0),
            Timer::Progress => self.on_progress_timer(t0),
            Timer::CommitRetransmit => self.on_commit_retransmit(t0),
        }
    }

    fn on_client_deadline(&mut self, t0: T0) {
        let Some(submitted_ms) = self.clients.remove(&t0) else {
            return;
        };
        let waited_ms = self.now.monotonic_ms.saturating_sub(submitted_ms);
        let error = match self.coordinations.get(&t0) {
            Some(coordination) if !coordination.is_decided() => SyneviError::QuorumUnreachable {
                needed: self.quorums.slow_quorum(),
                reached: coordination.replies(),
                waited_ms,
            },
            _ => SyneviError::ExecutionTimeout { t0, waited_ms },
        };
        self.ready.replies.push(FailedReply { t0, error });
    }

    pub(crate) fn set_timer(&mut self, due_ms: u64, t0: T0, timer: Timer) {
        self.timers.insert((due_ms, t0, timer));
    }

    /// Sets when this replica next checks whether `t0` is stuck (replacing any earlier
    /// deadline).
    pub(crate) fn set_progress(&mut self, t0: T0, due_ms: u64) {
        if let Some(state) = self.txs.get_mut(&t0) {
            state.progress_due_ms = due_ms;
            self.timers.insert((due_ms, t0, Timer::Progress));
        }
    }

    /// How long this replica first waits before it looks at `t0`: one recovery timeout per
    /// place after the home node in ring order of the voters. The replica next to the home
    /// node steps in first and the others see its recovery (and defer) before their turn, so
    /// an overloaded cluster does not have every replica recovering every slow transaction.
    pub(crate) fn first_progress_delay(&self, t0: T0) -> u64 {
        // Once per transaction a replica learns: no list, just positions in the voters.
        let count = self.quorums.voters().count();
        let position = |serial: Serial| self.quorums.voters().position(|s| s == serial);
        let rank = match (position(self.serial), position(t0.0.serial)) {
            (Some(own), Some(home)) => (own + count - home) % count,
            _ => count,
        };
        self.config.recovery_timeout_ms * (1 + rank as u64)
    }

    /// Someone is visibly working on `t0` (its coordinator re-sent a phase, or another
    /// recovery coordinator took over): look at it again only after a full timeout.
    pub(crate) fn defer_progress(&mut self, t0: T0) {
        let due = self.now_ms() + self.config.recovery_timeout_ms;
        if self
            .txs
            .get(&t0)
            .is_some_and(|state| state.progress_due_ms < due)
        {
            self.set_progress(t0, due);
        }
    }

    /// Rewrites as applied the records of executions older than [`APPLIED_RECORD_DEFER_MS`]
    /// that this node still holds, and moves [`NodeMeta::applied_recorded_through`] past
    /// their events, in one round: the records and the mark become durable together. A
    /// record forgotten meanwhile needs nothing (its removal went in this or an earlier
    /// round, and rounds become durable in order).
    pub(crate) fn record_applied(&mut self) {
        let now = self.now_ms();
        let mut through = None;
        while let Some(&(at, seq, t0)) = self.unrecorded_applied.front() {
            if now < at.saturating_add(APPLIED_RECORD_DEFER_MS) {
                break;
            }
            self.unrecorded_applied.pop_front();
            if let Some(state) = self.txs.get(&t0) {
                debug_assert_eq!(state.record.status, Status::Applied, "{t0:?}");
                self.mark_dirty(t0);
            }
            through = Some(seq);
        }
        if let Some(seq) = through {
            debug_assert!(seq > self.meta.applied_recorded_through);
            self.meta.applied_recorded_through = seq;
            self.meta_dirty = true;
        }
    }

    pub(crate) fn mark_dirty(&mut self, t0: T0) {
        self.dirty.insert(t0);
    }

    /// A random number in `0..bound` from the core's seeded generator (splitmix64).
    pub(crate) fn random_below(&mut self, bound: u64) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        if bound == 0 {
            0
        } else {
            z % bound
        }
    }

    /// Puts a committed transaction into the execution graph.
    pub(crate) fn add_to_execution(&mut self, t0: T0, t: synevi_types::T, deps: &Deps) {
        // Committed transactions come with their body; without it, claim no key, which
        // only forgoes the chain shortcut.
        static NO_KEYS: std::sync::LazyLock<Keys> = std::sync::LazyLock::new(Keys::none);
        let keys = self.txs.get(&t0).and_then(|state| state.keys());
        debug_assert!(keys.is_some(), "committed {t0:?} without a body");
        let keys = keys.unwrap_or(&NO_KEYS);
        let gc = &self.gc;
        self.execution
            .commit(t0, t, deps, keys, |dep| gc.is_forgotten(dep));
    }

    /// Makes sure dependencies that executions wait for, and that this replica has never
    /// seen, get a state here: their progress timers then ask peers and, failing that,
    /// recover them (which invalidates what nobody has).
    pub(crate) fn track_missing_dependencies(&mut self) {
        for dep in self.execution.missing() {
            if !self.txs.contains_key(&dep) {
                self.ensure_state(dep, None);
            }
        }
    }

    /// How many transactions this node holds protocol state for (0 once everything it knew
    /// was applied everywhere and forgotten).
    pub fn held_transactions(&self) -> usize {
        self.txs.len()
    }

    /// The transactions this node holds protocol state for, ascending (for diagnostics).
    pub fn held_transaction_ids(&self) -> Vec<T0> {
        let mut held: Vec<T0> = self.txs.keys().copied().collect();
        held.sort_unstable();
        held
    }

    /// How many entries the core's per-transaction structures hold; flat once warm if
    /// garbage collection works (checked by the simulator).
    pub fn state_size(&self) -> usize {
        self.txs.len()
            + self.conflicts.len()
            + self.conflicts.key_entries()
            + self.execution.pending_len()
            + self.execution.done_len()
            + self.coordinations.len()
            + self.clients.len()
            + self.timers.len()
            + self.gc.remembered()
    }

    /// Hands every transaction whose dependencies are done to the driver, in order.
    pub(crate) fn drain_executions(&mut self) {
        while let Some((t0, t)) = self.execution.pop_ready() {
            let Some(state) = self.txs.get_mut(&t0) else {
                debug_assert!(false, "ready transaction {t0:?} has no state");
                continue;
            };
            debug_assert!(!state.executed, "{t0:?} handed out twice");
            state.executed = true;
            self.execute_after_durable |= state.own_vote_late;
            let Some(body) = state.record.body.as_ref() else {
                debug_assert!(false, "committed {t0:?} without a body");
                continue;
            };
            self.ready.execute.push(Execution {
                t0,
                t,
                id: body.id,
                payload: body.payload.clone(),
            });
        }
    }

    /// Records that the local client of `t0`, if any, will get no result.
    pub(crate) fn fail_client(&mut self, t0: T0, error: SyneviError) {
        if self.clients.remove(&t0).is_some() {
            self.ready.replies.push(FailedReply { t0, error });
        }
    }

    /// Persists "forget `t0`" with the next batch.
    pub(crate) fn persist_forget(&mut self, t0: T0) {
        self.ready.persist.forget.push(t0);
    }

    /// Persists a raised home floor with the next batch.
    pub(crate) fn persist_floor(&mut self, home: Serial, floor: T0) {
        self.ready.persist.floors.push((home, floor));
    }

    /// The current time as the handlers see it.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now.monotonic_ms
    }

    /// A peer answered a PreAccept this node sent once, at `sent_ms`.
    pub(crate) fn note_answer_delay(&mut self, sent_ms: u64) {
        let delay = self.now_ms().saturating_sub(sent_ms);
        self.answer_delay_x8 = self.answer_delay_x8 - self.answer_delay_x8 / 8 + delay;
    }

    /// How long a coordinator waits for answers before it sends its phase's messages again:
    /// `Config::retransmit_interval_ms`, or four times what answers took of late when that
    /// is longer, up to eight intervals. An overloaded cluster answers late, not never;
    /// re-sending then only doubles its work (the seed's burst of 1,000 conflicting
    /// transactions once re-sent 2,800 PreAccepts whose answers were on their way, and
    /// answering them again, 1.5 MB of deps per peer, cost as much as the first answers).
    /// Lost messages are still re-sent after the interval while answers come quickly.
    pub fn retransmit_wait_ms(&self) -> u64 {
        let interval = self.config.retransmit_interval_ms;
        // Four times the average: `answer_delay_x8` is eight times it.
        let answers = self.answer_delay_x8 / 2;
        answers.clamp(interval, interval.saturating_mul(8))
    }

    /// A fresh record for a transaction this replica has not seen.
    pub(crate) fn blank_record(t0: T0, body: Option<TxBody>) -> TxRecord {
        TxRecord {
            t0,
            status: Status::Promised,
            t: t0.as_t(),
            deps: Deps::new(),
            promised: Ballot::ZERO,
            accepted: Ballot::ZERO,
            body,
        }
    }
}

/// Three cores that know each other as voters, with `config` (unit tests).
#[cfg(test)]
pub(crate) fn three_cores(config: Config) -> Vec<Core> {
    cores(3, config)
}

/// `ms` milliseconds into a unit test, the wall clock a second ahead of the monotonic one.
#[cfg(test)]
pub(crate) fn at(ms: u64) -> Now {
    Now {
        wall_ms: 1_000 + ms,
        monotonic_ms: ms,
    }
}

/// Nodes `1..=n`, each knowing every other as a voter (unit tests).
#[cfg(test)]
pub(crate) fn cores(n: u16, config: Config) -> Vec<Core> {
    let mut cores: Vec<Core> = (1..=n)
        .map(|serial| {
            Core::new(
                synevi_types::Ulid::new(),
                serial,
                config.clone(),
                u64::from(serial),
            )
        })
        .collect::<Result<_, _>>()
        .expect("cores with a valid config");
    for core in &mut cores {
        let own = core.serial();
        for peer in (1..=n).filter(|peer| *peer != own) {
            core.add_member(peer, true).expect("a new member");
        }
    }
    cores
}

/// A moment for unit tests.
#[cfg(test)]
pub(crate) const NOW: Now = Now {
    wall_ms: 1_000,
    monotonic_ms: 0,
};

/// [`NOW`] plus the hold of acknowledgements (unit tests).
#[cfg(test)]
pub(crate) const LATER: Now = Now {
    wall_ms: 1_000 + HOLD_MS,
    monotonic_ms: HOLD_MS,
};

/// Takes every core's effects, acknowledging executions at once; returns the messages (unit
/// tests).
#[cfg(test)]
pub(crate) fn take_all(cores: &mut [Core], now: Now) -> Vec<Envelope> {
    let mut messages = Vec::new();
    for core in cores.iter_mut() {
        let ready = core.take_ready();
        messages.extend(ready.messages);
        if !ready.execute.is_empty() {
            for execution in ready.execute {
                core.applied(now, execution.t0, [0; 32]);
            }
            // The acknowledgements go out with the next effects.
            messages.extend(core.take_ready().messages);
        }
    }
    messages
}

/// Hands each message to its receiver, serial `n` being `cores[n - 1]` (unit tests).
#[cfg(test)]
pub(crate) fn deliver(cores: &mut [Core], messages: Vec<Envelope>, now: Now) {
    for envelope in messages {
        let to = usize::from(envelope.to - 1);
        cores[to].receive(now, envelope);
    }
}

/// Runs the cluster until no message is in flight (unit tests).
#[cfg(test)]
pub(crate) fn run_quiet(cores: &mut [Core], now: Now) {
    run_quiet_where(cores, now, |_| true);
}

/// Runs the cluster until no message `keep` lets through is in flight; the others are lost
/// (unit tests).
#[cfg(test)]
pub(crate) fn run_quiet_where(cores: &mut [Core], now: Now, keep: impl Fn(&Envelope) -> bool) {
    loop {
        let mut messages = take_all(cores, now);
        if messages.is_empty() {
            // Commits wait for company (`Core::hold_commit`); these tests run as if they
            // went at once.
            for core in cores.iter_mut() {
                core.release_held_commits();
            }
            messages = take_all(cores, now);
        }
        messages.retain(|envelope| keep(envelope));
        if messages.is_empty() {
            return;
        }
        deliver(cores, messages, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client waits at least the configured time. `Now` reads whole milliseconds, rounded
    /// down: a submission read as 10 ms may have come at 10.9, so its deadline must not pass
    /// on a tick read as 10 + timeout, which may be only timeout − 0.9 ms later.
    #[test]
    fn a_clients_deadline_is_never_early() {
        let config = Config {
            transaction_timeout_ms: 300,
            ..Config::default()
        };
        let mut cores = cores(3, config);
        let at = |ms: u64| Now {
            wall_ms: 1_000 + ms,
            monotonic_ms: ms,
        };
        let body = TxBody {
            id: 1,
            keys: Keys::single("k"),
            payload: synevi_types::Bytes::from_static(b"p"),
        };
        // No peer ever hears of it.
        let t0 = cores[0].submit(at(10), body);
        let _ = cores[0].take_ready();
        cores[0].tick(at(310));
        assert!(cores[0].take_ready().replies.is_empty(), "early");
        cores[0].tick(at(311));
        let failed: Vec<T0> = cores[0]
            .take_ready()
            .replies
            .into_iter()
            .map(|reply| reply.t0)
            .collect();
        assert_eq!(failed, [t0]);
    }

    fn on_k(id: u128) -> TxBody {
        TxBody {
            id,
            keys: Keys::single("k"),
            payload: synevi_types::Bytes::from_static(b"p"),
        }
    }

    /// Node 1 coordinates a transaction on `k` and decides it; its effects are not taken.
    fn decided_by_node_1(cores: &mut [Core]) -> T0 {
        let x = cores[0].submit(NOW, on_k(1));
        let pre_accepts = take_all(cores, NOW);
        deliver(cores, pre_accepts, NOW);
        let answers = take_all(cores, NOW);
        deliver(cores, answers, NOW);
        x
    }

    /// A coordinator's `Commit`s wait for its next message to each peer, ahead of it, or
    /// for the hold to end; its own client does not wait for them.
    #[test]
    fn commits_wait_for_company_or_the_hold() {
        let mut cores = cores(3, Config::default());
        let x = decided_by_node_1(&mut cores);
        let decided = cores[0].take_ready();
        assert!(
            decided.execute.iter().any(|execution| execution.t0 == x),
            "the home executes on its own decision"
        );
        assert!(
            decided.messages.is_empty(),
            "the commits wait: {:?}",
            decided.messages
        );
        // Node 2 coordinates Y: node 1's answer to it brings X's commit, ahead of it.
        let y = cores[1].submit(NOW, on_k(2));
        let from_two = cores[1].take_ready().messages;
        deliver(&mut cores, from_two, NOW);
        let from_one = cores[0].take_ready().messages;
        let to_two: Vec<&Message> = from_one
            .iter()
            .filter(|e| e.to == 2)
            .map(|e| &e.message)
            .collect();
        assert!(
            matches!(
                to_two.as_slice(),
                [Message::Commit(commit), Message::PreAcceptOk(ok)] if commit.t0 == x && ok.t0 == y
            ),
            "{to_two:?}"
        );
        // Node 3 hears nothing from node 1 until the hold is over.
        assert!(from_one.iter().all(|e| e.to != 3));
        cores[0].tick(LATER);
        let over = cores[0].take_ready().messages;
        assert!(
            over.iter()
                .any(|e| e.to == 3 && matches!(&e.message, Message::Commit(c) if c.t0 == x)),
            "{over:?}"
        );
    }

    /// An execution is durable by its event at once; the record is rewritten as applied
    /// only after `APPLIED_RECORD_DEFER_MS`, if still held, in the round that moves the mark.
    #[test]
    fn an_applied_record_is_rewritten_later_with_the_mark() {
        let mut cores = cores(3, Config::default());
        let x = decided_by_node_1(&mut cores);
        let decided = cores[0].take_ready();
        assert!(decided.execute.iter().any(|execution| execution.t0 == x));
        cores[0].applied(NOW, x, [0; 32]);
        let applied = cores[0].take_ready().persist;
        let record_of = |batch: &synevi_types::WriteBatch| {
            batch
                .transactions
                .iter()
                .find(|record| record.t0 == x)
                .map(|record| record.status)
        };
        let mark = |batch: &synevi_types::WriteBatch| {
            batch.meta.as_ref().map(|m| m.applied_recorded_through)
        };
        assert_eq!(
            applied
                .events
                .iter()
                .map(|e| (e.seq, e.t0))
                .collect::<Vec<_>>(),
            [(1, x)]
        );
        assert_eq!(record_of(&applied), None, "the record waits");
        assert_ne!(mark(&applied), Some(1));
        // Peers never learn the commit, so nothing forgets X meanwhile.
        let early = at(APPLIED_RECORD_DEFER_MS - 1);
        cores[0].tick(early);
        let before = cores[0].take_ready().persist;
        assert_eq!(record_of(&before), None);
        assert_ne!(mark(&before), Some(1));
        let due = at(APPLIED_RECORD_DEFER_MS + 200);
        cores[0].tick(due);
        let rewritten = cores[0].take_ready().persist;
        assert_eq!(record_of(&rewritten), Some(Status::Applied));
        assert_eq!(mark(&rewritten), Some(1), "the mark moves with the record");
    }

    /// A restarted node writes every record it loaded as applied in its first round: one
    /// may say applied only because its event was above the mark, which later rounds move.
    #[test]
    fn a_restart_writes_what_it_read_as_applied() {
        let x = T0(Timestamp::new(5, 0, 2));
        let stored = StoredState {
            transactions: vec![TxRecord {
                t0: x,
                status: Status::Applied,
                t: x.as_t(),
                deps: Deps::new(),
                promised: Ballot::ZERO,
                accepted: Ballot::ZERO,
                body: Some(on_k(1)),
            }],
            last_event_seq: 1,
            ..StoredState::default()
        };
        let mut core = Core::restore(synevi_types::Ulid::new(), 1, Config::default(), 1, stored)
            .expect("restores");
        let first = core.take_ready().persist;
        assert!(
            first
                .transactions
                .iter()
                .any(|record| record.t0 == x && record.status == Status::Applied),
            "{first:?}"
        );
    }

    /// A node that stops sends what it held at once.
    #[test]
    fn a_stopping_node_sends_what_it_held() {
        let mut cores = cores(3, Config::default());
        let x = decided_by_node_1(&mut cores);
        assert!(cores[0].take_ready().messages.is_empty(), "held");
        cores[0].release_held_now();
        let commits: BTreeSet<Serial> = cores[0]
            .take_ready()
            .messages
            .into_iter()
            .filter(|e| matches!(&e.message, Message::Commit(c) if c.t0 == x))
            .map(|e| e.to)
            .collect();
        assert_eq!(commits, BTreeSet::from([2, 3]));
    }
}
