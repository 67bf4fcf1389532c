//! The three workers behind a [`super::Node`]: core task, persister, executor task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use rustc_hash::FxHashMap;
use synevi_types::{
    Bytes, Envelope, Executor, Message, Network, Serial, Store, SyneviError, SyneviResult, TxBody,
    WriteBatch, T0,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::clock::DriverClock;
use super::node::{decode, NodeStatus};
use super::outbox::Outbox;
use crate::outcome::result_hash;
use crate::{Config, Core, Execution};

/// Most rounds the persister folds into one store commit.
const ROUNDS_PER_COMMIT_MAX: usize = 256;

/// Largest round (in inputs) the core commits and releases itself when the store commits
/// inline ([`Store::commits_inline`]) and the persister is idle. Small rounds are what a
/// lightly loaded node makes: handing each to the persister costs a thread wake-up on the
/// latency path. Larger rounds go to the persister, which coalesces the messages of many
/// rounds per peer (measured in Nov 2026, cores on their own threads: committing every round
/// inline cost 5 nodes under load a fifth of their throughput). An input is one envelope, and
/// one frame from a peer carries several (a PreAccept with the commit it held and the
/// acknowledgements of the rounds before): at 4, with one client on 5 nodes half the rounds
/// went to the persister, half the process's context switches (measured with the cores on the
/// runtime: 4.0 → 2.1 per transaction at 64, p50 lower in 6 of 6 pairs; 64 clients as fast or
/// faster; at 256 clients a round holds hundreds of inputs and still goes to the persister).
const INLINE_ROUND_INPUTS_MAX: usize = 64;

/// How long the persister of a store that syncs may hold rounds that nothing waits for
/// ([`Round::may_wait`]) before it commits them, hoping for a round that something does wait
/// for: they then share its sync. With one client and LMDB, a replica's commit round (it
/// sends nothing) and the rounds of bookkeeping that follow each transaction otherwise cost
/// a sync each, and the syncs of all nodes queue on the disk. Under load every batch holds a
/// round that is waited for, and nothing waits.
const LAZY_COMMIT_MS: u64 = 5;

/// Requests to the core task.
pub(crate) enum Command<E: Executor> {
    Submit {
        body: TxBody,
        reply: Reply<E>,
    },
    AddMember {
        serial: Serial,
        voter: bool,
        done: oneshot::Sender<Result<(), SyneviError>>,
    },
    Applied {
        t0: T0,
        result_hash: [u8; 32],
    },
    /// The executor did not run a job it was handed (it halted after a failure).
    NotApplied,
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// Where a local client waits for its transaction's outcome.
pub(crate) type Reply<E> = oneshot::Sender<SyneviResult<E>>;

/// One round of the core's effects on its way through the persister.
struct Round<E: Executor> {
    persist: WriteBatch,
    messages: Vec<Envelope>,
    jobs: Vec<Job<E>>,
}

impl<E: Executor> Round<E> {
    /// Whether nothing waits for this round's commit: it releases no executions, and sends
    /// only `Applied` acknowledgements and `Forget` announcements, which let nodes forget
    /// what every member applied and are on nobody's path (a home node re-sends a decision
    /// only after `4 * retransmit_interval_ms` without an acknowledgement; an announcement
    /// that comes later only lets peers drop stable deps later). Committing it later delays
    /// only those; what it persists still becomes durable before they leave.
    fn may_wait(&self) -> bool {
        self.jobs.is_empty()
            && self.messages.iter().all(|envelope| {
                matches!(envelope.message, Message::Applied(_) | Message::Forget(_))
            })
    }
}

/// An execution, with the local client waiting for it, if any.
struct Job<E: Executor> {
    execution: Execution,
    reply: Option<Reply<E>>,
}

pub(crate) struct Workers<N: Network, E: Executor, S: Store> {
    pub core: Core,
    pub clock: DriverClock,
    pub config: Config,
    pub commands: mpsc::UnboundedReceiver<Command<E>>,
    pub command_sender: mpsc::UnboundedSender<Command<E>>,
    pub inbound: mpsc::Receiver<Envelope>,
    /// Where the rounds' envelopes go (to the network, restored members' held back until
    /// they are added again).
    pub outbox: Arc<Outbox<N>>,
    pub store: Arc<S>,
    pub executor: Arc<E>,
    pub status: watch::Sender<NodeStatus>,
    /// Fired (or dropped) by `Node::shutdown` once the network stopped: a core on a thread
    /// of its own keeps its runtime, and with it the network's tasks that run there
    /// (`Config::network_on_core_thread`), until then, so that the network ends its
    /// streams and its server in order instead of having them dropped with the runtime.
    pub release: oneshot::Receiver<()>,
}

/// Commits a round on the core's thread and sends its messages; returns its executions, or
/// `None` if the store failed.
type InlineCommit<E> = Box<dyn FnMut(Round<E>) -> Option<Vec<Job<E>>> + Send>;

/// Where the core's rounds go once it made them.
struct Sink<E: Executor> {
    /// The persister thread, which folds the rounds that queue up into one store commit.
    persister: std_mpsc::Sender<Round<E>>,
    /// Rounds handed to the persister and not yet released by it.
    queued: Arc<AtomicUsize>,
    /// Of those, the rounds whose executions wait for their commit (executions run in the
    /// order the core released them, so no later execution may overtake these).
    holding: Arc<AtomicUsize>,
    /// If the store commits inline: commits a round on the core's thread and sends its
    /// messages, returning its executions; `None` once a commit failed and the node stopped.
    inline: Option<InlineCommit<E>>,
    /// The executor task.
    jobs: mpsc::UnboundedSender<Job<E>>,
}

impl<E: Executor> Sink<E> {
    /// Passes a round on. Returns the round's executions if it was committed here and
    /// `execute_here` asked for them back (the caller then runs them at once, before
    /// anything else); `Err` if the node's store failed.
    ///
    /// Rounds are released in the order the core made them: a round is committed inline
    /// only when the persister holds none (`queued` is decremented only after a round's
    /// messages and executions are released, and only this thread increments it).
    ///
    /// `execute_early` ([`crate::Ready::execute_early`]): the round's executions need not
    /// wait for its commit. They go at once unless executions of earlier rounds still wait
    /// in the persister (`holding`, decremented only after it handed them on): this is what
    /// takes a sync off the latency path of a store that syncs.
    fn pass_on(
        &mut self,
        mut round: Round<E>,
        inputs: usize,
        execute_here: bool,
        execute_early: bool,
    ) -> Result<Vec<Job<E>>, StoreFailed> {
        if let Some(commit) = &mut self.inline {
            if inputs <= INLINE_ROUND_INPUTS_MAX && self.queued.load(Ordering::Acquire) == 0 {
                let jobs = commit(round).ok_or(StoreFailed)?;
                if execute_here {
                    return Ok(jobs);
                }
                hand_to_executor(jobs, &self.jobs);
                return Ok(Vec::new());
            }
        }
        let early = if execute_early && self.holding.load(Ordering::Acquire) == 0 {
            std::mem::take(&mut round.jobs)
        } else {
            Vec::new()
        };
        if !round.jobs.is_empty() {
            self.holding.fetch_add(1, Ordering::AcqRel);
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.persister.send(round).map_err(|_| StoreFailed)?;
        if execute_here {
            return Ok(early);
        }
        hand_to_executor(early, &self.jobs);
        Ok(Vec::new())
    }
}

/// The node's store failed: it cannot make progress.
struct StoreFailed;

pub(crate) fn spawn<N: Network, E: Executor, S: Store>(
    workers: Workers<N, E, S>,
) -> (
    Vec<JoinHandle<()>>,
    oneshot::Receiver<tokio::runtime::Handle>,
) {
    let (jobs, jobs_receiver) = mpsc::unbounded_channel::<Job<E>>();
    let store = workers.store;
    let outbox = workers.outbox;
    let network_runs_tasks = outbox.network().runs_tasks();
    let on_own_thread = workers.config.core_on_own_thread;
    let (rounds, rounds_receiver) = std_mpsc::channel::<Round<E>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let holding = Arc::new(AtomicUsize::new(0));
    let inline = store.commits_inline().then(|| {
        let (store, outbox) = (store.clone(), outbox.clone());
        let mut stopped = false;
        Box::new(move |round| {
            if stopped {
                return None;
            }
            let released = commit_and_send(vec![round], &*store, &outbox);
            stopped = released.is_none();
            released.map(|mut rounds| rounds.pop().map(|round| round.jobs).unwrap_or_default())
        }) as InlineCommit<E>
    });
    let sink = Sink {
        persister: rounds,
        queued: queued.clone(),
        holding: holding.clone(),
        inline,
        jobs: jobs.clone(),
    };
    let persister = tokio::task::spawn_blocking(move || {
        persist_loop(rounds_receiver, &*store, &outbox, jobs, &queued, &holding)
    });
    let runner = Arc::new(Runner {
        executor: workers.executor,
        halted: std::sync::Mutex::new(None),
    });
    let executor = tokio::spawn(execute_loop(
        runner.clone(),
        jobs_receiver,
        workers.command_sender,
    ));
    let state = CoreLoop {
        core: workers.core,
        clock: workers.clock,
        batch_inputs_max: workers.config.batch_inputs_max,
        // Looking for input on the thread would keep a network that shares it from running,
        // and on a shared runtime would hold a worker.
        idle_spin: if on_own_thread
            && !(workers.config.network_on_core_thread && network_runs_tasks)
        {
            Duration::from_micros(workers.config.idle_spin_us)
        } else {
            Duration::ZERO
        },
        commands: workers.commands,
        inbound: workers.inbound,
        sink,
        runner,
        status: workers.status,
        waiters: FxHashMap::default(),
        executing: 0,
        stopping: None,
        batch: Vec::new(),
        yield_each_round: !on_own_thread,
    };
    let drain_ms = workers.config.transaction_timeout_ms;
    let (handle_sender, handle) = oneshot::channel();
    if !on_own_thread {
        // `Config::core_on_own_thread` off: the core is one more task of the runtime that
        // starts the node, and so is the network.
        let _ = handle_sender.send(tokio::runtime::Handle::current());
        let core = tokio::spawn(core_loop(state, Duration::from_millis(drain_ms)));
        return (vec![core, persister, executor], handle);
    }
    // By default the core gets a thread of its own: under load it is the busiest worker, and
    // on the application's runtime, before it yielded after every round, it starved the
    // network's I/O tasks, delaying messages past the protocol's timeouts (seen with 5 nodes
    // over gRPC on 2 cores); a thread of its own keeps it from an application that blocks
    // its runtime's workers, and it from the application. Its runtime has an
    // I/O driver for the network that `Config::network_on_core_thread` starts on it; the
    // handle goes back to `Node::with_config` for that.
    let core = tokio::task::spawn_blocking(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => {
                let _ = handle_sender.send(runtime.handle().clone());
                let release = workers.release;
                runtime.block_on(async move {
                    core_loop(state, Duration::from_millis(drain_ms)).await;
                    // Keeps the runtime's other tasks running until the network stopped.
                    let _ = release.await;
                });
            }
            Err(error) => tracing::error!(%error, "cannot start the core's runtime"),
        }
    });
    (vec![core, persister, executor], handle)
}

struct CoreLoop<E: Executor> {
    core: Core,
    clock: DriverClock,
    batch_inputs_max: usize,
    /// `Config::idle_spin_us`: how long to look for the next input before sleeping.
    idle_spin: Duration,
    commands: mpsc::UnboundedReceiver<Command<E>>,
    inbound: mpsc::Receiver<Envelope>,
    sink: Sink<E>,
    /// Runs executions: on the executor task, or here (see `Executor::executes_inline`).
    runner: Arc<Runner<E>>,
    status: watch::Sender<NodeStatus>,
    /// Local clients by their transaction's `t0`.
    waiters: FxHashMap<T0, Reply<E>>,
    /// Executions handed to the executor whose outcome the core has not heard yet.
    executing: usize,
    /// Set by `Node::shutdown`: the node drains, then answers here.
    stopping: Option<Stopping>,
    /// The inputs of the round being taken (kept to reuse its allocation).
    batch: Vec<Input<E>>,
    /// On a runtime the core shares (`Config::core_on_own_thread` off): yield to the
    /// runtime's other tasks after every round. A round that found its next input at once
    /// would otherwise go on, and the network's tasks on the same worker (the node's and
    /// other nodes') would wait until tokio's budget for this task ran out, which under
    /// load left the PreAccepts of 5 nodes on 2 cores unread long enough to cost a fifth to
    /// a third of a hot key's fast paths.
    yield_each_round: bool,
}

/// An ordered shutdown in progress: no new inputs, no new executions; the loop ends once
/// every execution already handed out has reported back (so its applied state is committed
/// with the last rounds), or after `deadline` if the executor never answers.
struct Stopping {
    done: oneshot::Sender<()>,
    deadline: std::time::Instant,
}

enum Input<E: Executor> {
    Command(Command<E>),
    Envelope(Envelope),
    Tick,
    Closed,
}

async fn core_loop<E: Executor>(mut state: CoreLoop<E>, drain_max: Duration) {
    loop {
        if let Some(stopping) = &state.stopping {
            if state.executing == 0 || std::time::Instant::now() >= stopping.deadline {
                if state.executing > 0 {
                    tracing::warn!(
                        executing = state.executing,
                        "shutting down with executions unreported; they run again on restart"
                    );
                }
                if let Some(stopping) = state.stopping.take() {
                    let _ = stopping.done.send(());
                }
                return;
            }
        }
        // The core counts whole milliseconds and an input's time is rounded down: waking at
        // the due millisecond's end makes sure the clock shows it when the core looks. (That
        // a client's timeout is never early the core makes sure of itself: a tick may come
        // early for another reason.)
        let deadline = state
            .core
            .next_deadline()
            .map(|ms| state.clock.instant_of(ms + 1));
        let first = match state.look_for_input(deadline) {
            Some(input) => input,
            None => tokio::select! {
                biased;
                command = state.commands.recv() => command.map_or(Input::Closed, Input::Command),
                envelope = state.inbound.recv() => envelope.map_or(Input::Closed, Input::Envelope),
                _ = sleep_until(deadline) => Input::Tick,
            },
        };
        // Take whatever else is queued, up to the limit: one round, one store commit.
        let mut batch = std::mem::take(&mut state.batch);
        batch.push(first);
        while batch.len() < state.batch_inputs_max {
            if let Ok(command) = state.commands.try_recv() {
                batch.push(Input::Command(command));
            } else if let Ok(envelope) = state.inbound.try_recv() {
                batch.push(Input::Envelope(envelope));
            } else {
                break;
            }
        }
        let inputs = batch.len();
        // Stable: inputs of the same turn keep their order of arrival.
        batch.sort_by_key(Input::turn);
        for input in batch.drain(..) {
            if !state.handle(input, drain_max) {
                return;
            }
        }
        state.batch = batch;
        state.core.tick(state.clock.now());
        let mut here = state.finish_round(inputs);
        // Executions of a round committed here, with nothing else executing: run them now,
        // on this thread, and feed their outcomes back as the next round's inputs.
        while !here.is_empty() {
            let count = here.len();
            for job in here {
                let applied = state.runner.run(job).await;
                state.executing = state.executing.saturating_sub(1);
                if let Some((t0, result_hash)) = applied {
                    state.core.applied(state.clock.now(), t0, result_hash);
                }
            }
            here = state.finish_round(count);
        }
        if state.yield_each_round {
            tokio::task::yield_now().await;
        }
    }
}

/// When an input of a round is handled: what peers sent first, then their pre-accepts in
/// `t0` order, then local requests. Any order is correct (the network may reorder messages
/// anyway, and the simulator delivers them in every order); this one makes fast-path
/// commits more likely under contention. A replica proposes `t0` only if it witnessed no
/// conflicting transaction above it, so within a round a lower `t0` is better handled
/// before a higher one, and a local submission, whose `t0` the clock issues above
/// everything the node witnessed, after the pre-accepts it would otherwise overtake.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Turn {
    Peers,
    PreAccept(T0),
    Local,
}

impl<E: Executor> Input<E> {
    fn turn(&self) -> Turn {
        match self {
            Input::Envelope(Envelope {
                message: Message::PreAccept(pre_accept),
                ..
            }) => Turn::PreAccept(pre_accept.t0),
            Input::Envelope(_) | Input::Tick | Input::Closed => Turn::Peers,
            Input::Command(_) => Turn::Local,
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => tokio::time::sleep(Duration::from_secs(3600)).await,
    }
}

impl<E: Executor> CoreLoop<E> {
    /// Looks for an input without sleeping, for up to `Config::idle_spin_us` or until
    /// `deadline`, yielding the CPU between looks; `None` if nothing came (the caller then
    /// sleeps until something does).
    fn look_for_input(&mut self, deadline: Option<std::time::Instant>) -> Option<Input<E>> {
        if self.idle_spin.is_zero() {
            return None;
        }
        let end = std::time::Instant::now() + self.idle_spin;
        let end = deadline.map_or(end, |deadline| deadline.min(end));
        loop {
            // Commands first, as the `select!` that waits does.
            if let Ok(command) = self.commands.try_recv() {
                return Some(Input::Command(command));
            }
            if let Ok(envelope) = self.inbound.try_recv() {
                return Some(Input::Envelope(envelope));
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// Feeds one input to the core; false when the node must stop at once.
    fn handle(&mut self, input: Input<E>, drain_max: Duration) -> bool {
        let now = self.clock.now();
        let stopping = self.stopping.is_some();
        match input {
            Input::Command(Command::Submit { reply, .. }) if stopping => {
                let _ = reply.send(Err(SyneviError::ShutDown));
            }
            Input::Command(Command::Submit { body, reply }) => {
                let t0 = self.core.submit(now, body);
                self.waiters.insert(t0, reply);
            }
            // A stopping node takes part in no more protocol rounds.
            Input::Envelope(_) if stopping => {}
            Input::Command(Command::AddMember {
                serial,
                voter,
                done,
            }) => {
                let _ = done.send(self.core.add_member(serial, voter));
            }
            Input::Command(Command::Applied { t0, result_hash }) => {
                self.executing = self.executing.saturating_sub(1);
                self.core.applied(now, t0, result_hash);
            }
            Input::Command(Command::NotApplied) => {
                self.executing = self.executing.saturating_sub(1);
            }
            Input::Command(Command::Shutdown { done }) => {
                // What the core holds for company goes with this round: nothing will follow.
                self.core.release_held_now();
                self.stopping = Some(Stopping {
                    done,
                    deadline: std::time::Instant::now() + drain_max,
                });
            }
            Input::Envelope(envelope) => self.core.receive(now, envelope),
            Input::Tick => self.core.tick(now),
            Input::Closed => return false,
        }
        true
    }

    /// Takes the round's effects from the core and passes them on. `inputs`: how many
    /// inputs the round took. Returns the executions to run on this thread at once.
    fn finish_round(&mut self, inputs: usize) -> Vec<Job<E>> {
        let ready = self.core.take_ready();
        // Executions first: a client whose transaction executed in the same round its
        // deadline passed gets the result.
        let mut jobs: Vec<Job<E>> = ready
            .execute
            .into_iter()
            .map(|execution| Job {
                reply: self.waiters.remove(&execution.t0),
                execution,
            })
            .collect();
        if self.stopping.is_some() {
            // No new executions while stopping: they stay committed in the store and run
            // after the restart, so the drain ends.
            for job in jobs.drain(..) {
                if let Some(reply) = job.reply {
                    let _ = reply.send(Err(SyneviError::ShutDown));
                }
            }
        }
        // Executions run here only if none is outstanding elsewhere: executions start in
        // the order they were released, one at a time.
        let execute_here = self.executing == 0 && self.runner.executor.executes_inline();
        self.executing += jobs.len();
        for failed in ready.replies {
            if let Some(reply) = self.waiters.remove(&failed.t0) {
                let _ = reply.send(Err(failed.error));
            }
        }
        let mut here = Vec::new();
        if !(ready.persist.is_empty() && ready.messages.is_empty() && jobs.is_empty()) {
            let round = Round {
                persist: ready.persist,
                messages: ready.messages,
                jobs,
            };
            match self
                .sink
                .pass_on(round, inputs, execute_here, ready.execute_early)
            {
                Ok(jobs) => here = jobs,
                Err(StoreFailed) => {
                    tracing::error!("the store failed; this node cannot make progress")
                }
            }
        }
        let (applied_count, applied_digest) = self.core.applied_digest();
        let stats = self.core.stats();
        self.status.send_if_modified(|status| {
            let changed = status.stats != stats || status.applied_count != applied_count;
            status.stats = stats;
            status.applied_count = applied_count;
            status.applied_digest = applied_digest;
            changed
        });
        here
    }
}

/// Commits rounds in order, several at once when they queued up (group commit), and only
/// then sends their messages and releases the executions that waited for the commit.
fn persist_loop<N: Network, S: Store, E: Executor>(
    rounds: std_mpsc::Receiver<Round<E>>,
    store: &S,
    outbox: &Outbox<N>,
    jobs: mpsc::UnboundedSender<Job<E>>,
    queued: &AtomicUsize,
    holding: &AtomicUsize,
) {
    // A store that commits inline does not sync: holding rounds back would save nothing.
    let hold = (!store.commits_inline()).then_some(Duration::from_millis(LAZY_COMMIT_MS));
    while let Ok(first) = rounds.recv() {
        let mut batch = vec![first];
        while batch.len() < ROUNDS_PER_COMMIT_MAX {
            match rounds.try_recv() {
                Ok(round) => batch.push(round),
                Err(_) => break,
            }
        }
        // Nothing waits for these rounds: wait a little for one that something waits for,
        // and commit them all with it (see `LAZY_COMMIT_MS`).
        if let Some(hold) = hold.filter(|_| batch.iter().all(Round::may_wait)) {
            let deadline = std::time::Instant::now() + hold;
            while batch.len() < ROUNDS_PER_COMMIT_MAX {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rounds.recv_timeout(left) {
                    Ok(round) => {
                        let waited_for = !round.may_wait();
                        batch.push(round);
                        if waited_for {
                            break;
                        }
                    }
                    // Out of time, or the core is gone (shutting down): commit what is here.
                    Err(_) => break,
                }
            }
        }
        let count = batch.len();
        let Some(released) = commit_and_send(batch, store, outbox) else {
            return;
        };
        for round in released {
            if !round.jobs.is_empty() {
                hand_to_executor(round.jobs, &jobs);
                // After the hand-over: executions released early from now on queue behind.
                let before = holding.fetch_sub(1, Ordering::AcqRel);
                // `Sink::pass_on` counted in every round that reached here with executions.
                debug_assert!(before > 0, "released executions of a round never counted");
            }
        }
        let before = queued.fetch_sub(count, Ordering::AcqRel);
        // Every round the persister releases was counted in by `Sink::pass_on`.
        debug_assert!(before >= count, "released {count} rounds, {before} queued");
    }
}

/// Releases executions to the executor task, in order.
fn hand_to_executor<E: Executor>(jobs: Vec<Job<E>>, executor: &mpsc::UnboundedSender<Job<E>>) {
    for job in jobs {
        // Even if the executor task is gone, the rounds behind this one must still be
        // committed (`Node::shutdown` promises it); an execution that cannot run now stays
        // committed and runs after the restart.
        let _ = executor.send(job);
    }
}

/// Commits `batch` in one store commit, then sends its messages in round order; returns the
/// rounds, whose executions the caller releases. `None` when the commit failed: nothing of
/// the batch left the node, and the node must stop.
fn commit_and_send<N: Network, S: Store, E: Executor>(
    mut batch: Vec<Round<E>>,
    store: &S,
    outbox: &Outbox<N>,
) -> Option<Vec<Round<E>>> {
    let mut writes = WriteBatch::default();
    for round in &mut batch {
        writes.absorb(std::mem::take(&mut round.persist));
    }
    if !writes.is_empty() {
        if let Err(error) = store.commit(&writes) {
            // Nothing of these rounds may leave the node: their messages promise what
            // failed to persist. Fail-stop.
            tracing::error!(%error, "store commit failed; the node stops");
            for round in batch {
                for job in round.jobs {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
            return None;
        }
    }
    for round in &mut batch {
        for envelope in round.messages.drain(..) {
            outbox.send(envelope);
        }
    }
    Some(batch)
}

/// Runs executions and answers their clients; shared by the executor task and, for
/// executors that run inline, the core's thread.
struct Runner<E: Executor> {
    executor: Arc<E>,
    /// The first failure of the executor: from then on nothing executes on this node.
    halted: std::sync::Mutex<Option<SyneviError>>,
}

impl<E: Executor> Runner<E> {
    /// Runs one execution; returns its `t0` and result hash if it was applied.
    async fn run(&self, job: Job<E>) -> Option<(T0, [u8; 32])> {
        let t0 = job.execution.t0;
        if let Some(error) = self.halted_with() {
            if let Some(reply) = job.reply {
                let _ = reply.send(Err(error));
            }
            return None;
        }
        let result = match execute_payload(&*self.executor, &job.execution.payload).await {
            Ok(result) => result,
            Err(error) => {
                // A system failure of this node's executor: skipping the transaction would
                // make this node diverge, so it stops executing.
                tracing::error!(?t0, %error, "executor failed; this node stops executing");
                let failure = SyneviError::ExecutorFailed {
                    t0,
                    reason: error.to_string(),
                };
                if let Ok(mut halted) = self.halted.lock() {
                    halted.get_or_insert(failure.clone());
                }
                if let Some(reply) = job.reply {
                    let _ = reply.send(Err(failure));
                }
                return None;
            }
        };
        let result_hash = result_hash::<E>(&result);
        if let Some(reply) = job.reply {
            let _ = reply.send(result);
        }
        Some((t0, result_hash))
    }

    /// The failure that halted execution, if any. A poisoned lock counts as halted.
    fn halted_with(&self) -> Option<SyneviError> {
        match self.halted.lock() {
            Ok(halted) => halted.clone(),
            Err(_) => Some(SyneviError::ShutDown),
        }
    }
}

/// Decodes and executes one transaction. The outer `Err` is a failure of the executor
/// itself (the node must stop executing); a payload that does not decode is the
/// transaction's result, because every node decodes the same bytes the same way.
async fn execute_payload<E: Executor>(
    executor: &E,
    payload: &Bytes,
) -> Result<SyneviResult<E>, SyneviError> {
    match decode::<E::Tx>(payload) {
        Ok(transaction) => executor.execute(transaction).await.map(Ok),
        Err(error) => Ok(Err(error)),
    }
}

/// Runs executions one at a time in release order.
async fn execute_loop<E: Executor>(
    runner: Arc<Runner<E>>,
    mut jobs: mpsc::UnboundedReceiver<Job<E>>,
    commands: mpsc::UnboundedSender<Command<E>>,
) {
    while let Some(job) = jobs.recv().await {
        let command = match runner.run(job).await {
            Some((t0, result_hash)) => Command::Applied { t0, result_hash },
            None => Command::NotApplied,
        };
        if commands.send(command).is_err() {
            return;
        }
    }
}

/// Rebuilds in-memory executor state by executing the stored event log again, checking
/// that every result is the one recorded.
pub(crate) async fn replay_events<S: Store, E: Executor>(
    store: &S,
    executor: &E,
) -> Result<(), SyneviError> {
    const PAGE: usize = 1_024;
    let mut after = 0;
    loop {
        let page = store.events_after(after, PAGE)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.seq;
        for event in page {
            let result = execute_payload(executor, &event.payload)
                .await
                .map_err(|error| SyneviError::ExecutorFailed {
                    t0: event.t0,
                    reason: format!("while replaying the event log: {error}"),
                })?;
            if result_hash::<E>(&result) != event.result_hash {
                tracing::warn!(
                    seq = event.seq,
                    t0 = ?event.t0,
                    "replayed event gave another result than recorded: is the executor deterministic?"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synevi_types::{Applied, Deps, Forget, PreAcceptOk, Timestamp};

    #[derive(Clone, Debug, serde::Serialize)]
    struct Nothing;

    impl synevi_types::Transaction for Nothing {
        type TxOk = ();
        type TxErr = ();

        fn as_bytes(&self) -> Vec<u8> {
            Vec::new()
        }

        fn from_bytes(_: Vec<u8>) -> Result<Self, SyneviError> {
            Ok(Nothing)
        }
    }

    struct Ignore;

    #[async_trait::async_trait]
    impl Executor for Ignore {
        type Tx = Nothing;

        async fn execute(&self, _: Nothing) -> SyneviResult<Self> {
            Ok(Ok(()))
        }
    }

    fn t0(n: u64) -> T0 {
        T0(Timestamp::new(n, 0, 1))
    }

    fn round(messages: Vec<Message>, executions: usize) -> Round<Ignore> {
        Round {
            persist: WriteBatch::default(),
            messages: messages
                .into_iter()
                .map(|message| Envelope {
                    from: 1,
                    to: 2,
                    message,
                    clock: Timestamp::ZERO,
                })
                .collect(),
            jobs: (0..executions)
                .map(|n| Job {
                    execution: crate::Execution {
                        t0: t0(n as u64),
                        t: t0(n as u64).as_t(),
                        id: 0,
                        payload: Bytes::new(),
                    },
                    reply: None,
                })
                .collect(),
        }
    }

    #[test]
    fn only_rounds_nothing_waits_for_may_wait() {
        let applied = Message::Applied(Applied {
            t0s: vec![t0(1)],
            committed: Vec::new(),
        });
        let forget = Message::Forget(Forget {
            floor: t0(1),
            t0s: vec![],
            decided_floor: Timestamp::ZERO,
            settled: vec![],
            settled_holders: 0,
        });
        let answer = Message::PreAcceptOk(PreAcceptOk {
            t0: t0(2),
            t: t0(2).as_t(),
            deps: Deps::new(),
        });
        assert!(round(vec![], 0).may_wait(), "a replica's commit round");
        assert!(round(vec![applied.clone(), forget.clone()], 0).may_wait());
        assert!(!round(vec![applied.clone(), answer], 0).may_wait());
        assert!(!round(vec![forget], 1).may_wait(), "executions wait for it");
        assert!(!round(vec![], 1).may_wait());
    }
}
