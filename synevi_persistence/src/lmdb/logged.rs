//! Commits through the commit log, and the thread that checkpoints it into LMDB.
//!
//! Two log files take turns: commits append to the active one; a checkpoint hands the
//! batches it holds to the checkpoint thread, which writes them into LMDB (one synced write
//! transaction that also records the last record's number), while commits go on in the
//! other file. A file is written again only after the checkpoint of its records finished, so
//! every record not yet in LMDB is in one of the two files. A commit waits for a checkpoint
//! only when the other file is still being checkpointed and the active one is full.
//!
//! Invariants, under the state's lock:
//! - the active file holds exactly the records of `pending`, in order;
//! - the other file holds only records LMDB has, or (while `in_flight`) the records of the
//!   checkpoint under way;
//! - `pending_through` is the number of the last pending record.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use synevi_types::{SyneviError, WriteBatch};

use super::log::{self, Log, Replayed, LOG_FILES};
use super::{EncodedBatch, Lmdb, SCRATCH_KEPT_MAX};
use crate::mem::validate_batch;

/// Most encoding buffers kept for reuse after a checkpoint.
const SPARE_BUFFERS_MAX: usize = 64;

/// The commit log of an open store: its state, and the checkpoint thread.
pub(super) struct CommitLog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a checkpoint is handed to the thread, when one finishes, and on stop.
    changed: Condvar,
}

/// A checkpoint handed to the thread.
struct Job {
    batches: Vec<EncodedBatch>,
    through: u64,
}

struct State {
    logs: [Log; 2],
    active: usize,
    /// The batches appended to the active file, in order.
    pending: Vec<EncodedBatch>,
    /// What the pending batches may need of the map when they are applied (`need`).
    pending_need: usize,
    pending_through: u64,
    /// A checkpoint waiting for the thread.
    job: Option<Job>,
    /// While a checkpoint is handed over or under way: what its batches may need of the map.
    in_flight: Option<usize>,
    /// The seq of the last event committed, in LMDB or in the log.
    last_event_seq: u64,
    last_checkpoint: Instant,
    /// Why the store takes no more commits, once it does not.
    failed: Option<Failure>,
    /// Encoding buffers of checkpointed batches, for the next batches.
    spare: Vec<Vec<u8>>,
    /// The buffer the last record was framed in (`Log::start_record`).
    record: Vec<u8>,
    stop: bool,
}

/// Why a store's commit log takes no more commits.
enum Failure {
    /// A write or flush of the log failed, or a commit panicked: LMDB and the pending batches
    /// still hold every acknowledged commit, so reads go on.
    Commits(String),
    /// A checkpoint failed: its batches are only in the log now, so reads stop too.
    Checkpoint(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Failure::Commits(reason) | Failure::Checkpoint(reason) => reason,
        }
    }
}

impl State {
    /// Keeps a batch's encoding buffer for a later batch, unless enough are kept or it is
    /// unusually large.
    fn recycle(&mut self, mut values: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS_MAX && values.capacity() <= SCRATCH_KEPT_MAX {
            values.clear();
            self.spare.push(values);
        }
    }

    fn active(&mut self) -> &mut Log {
        &mut self.logs[self.active]
    }

    /// The invariants of the module's docs that are cheap to check.
    fn check(&self) {
        let active = &self.logs[self.active];
        debug_assert_eq!(
            active.records(),
            self.pending.len(),
            "the active file holds exactly the pending batches"
        );
        debug_assert!(
            self.pending.is_empty() || self.pending_through + 1 == active.next_lsn(),
            "the last pending batch is the active file's last record"
        );
    }
}

impl CommitLog {
    /// Opens the log files of `lmdb`'s directory and applies to LMDB what they hold beyond
    /// the last checkpoint (the commits of a store that was not closed). With the log on,
    /// returns the log, ready for commits; off, `None` (a log left by a store that had it on
    /// is applied all the same).
    pub(super) fn open(lmdb: &Arc<Lmdb>) -> Result<Option<CommitLog>, SyneviError> {
        let checkpointed = lmdb.checkpointed()?;
        let create = lmdb.config.commit_log;
        let mut logs = Vec::with_capacity(2);
        let mut records: Vec<Replayed> = Vec::new();
        for name in LOG_FILES {
            if let Some((log, found)) = Log::open(&lmdb.path, name, checkpointed, create)? {
                logs.push(log);
                records.extend(found);
            }
        }
        // Each file's records are in order; the two files' interleave by number.
        records.sort_unstable_by_key(|record| record.lsn);
        for (expected, record) in (checkpointed + 1..).zip(&records) {
            if record.lsn != expected {
                return Err(lmdb.corrupt(format!(
                    "the commit log resumes at record {} where record {expected} should be \
                     (the last checkpoint applied record {checkpointed}): records in between \
                     are missing",
                    record.lsn
                )));
            }
        }
        if let Some(last) = records.last() {
            let through = last.lsn;
            let batches = records
                .iter()
                .map(|record| {
                    EncodedBatch::from_payload(&record.payload).map_err(|reason| {
                        lmdb.corrupt(format!(
                            "record {} of the commit log is damaged: {reason}",
                            record.lsn
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let batches: Vec<&EncodedBatch> = batches.iter().collect();
            lmdb.commit_encoded(&batches, None, Some(through))?;
            tracing::info!(
                path = %lmdb.path.display(),
                records = batches.len(),
                through,
                "applied the commit log's records beyond the last checkpoint"
            );
        }
        if !create {
            return Ok(None);
        }
        let Ok(mut logs) = <[Log; 2]>::try_from(logs) else {
            return Err(lmdb.corrupt("one of the two commit-log files is missing"));
        };
        // Every record in either file is in LMDB now: both start over.
        let next_lsn = logs
            .iter()
            .map(Log::next_lsn)
            .max()
            .unwrap_or(checkpointed + 1);
        for log in &mut logs {
            log.reset();
            log.continue_from(next_lsn);
        }
        let last_event_seq = lmdb.stored_last_event_seq()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                logs,
                active: 0,
                pending: Vec::new(),
                pending_need: 0,
                pending_through: 0,
                job: None,
                in_flight: None,
                last_event_seq,
                last_checkpoint: Instant::now(),
                failed: None,
                spare: Vec::new(),
                record: Vec::new(),
                stop: false,
            }),
            changed: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            let thread_lmdb = Arc::clone(lmdb);
            std::thread::Builder::new()
                .name("synevi-checkpoint".to_string())
                .spawn(move || checkpoints(&shared, &thread_lmdb))
                .map_err(|error| {
                    SyneviError::Store(format!(
                        "cannot start the checkpoint thread of the store at {}: {error}",
                        lmdb.path.display()
                    ))
                })?
        };
        Ok(Some(CommitLog {
            shared,
            thread: Some(thread),
        }))
    }

    /// A commit through the log (see [`super::LmdbStore`]).
    pub(super) fn commit(&self, lmdb: &Lmdb, batch: &WriteBatch) -> Result<(), SyneviError> {
        let mut state = self.lock();
        if let Some(failure) = &state.failed {
            return Err(SyneviError::Store(format!(
                "the store at {} takes no more commits until it is reopened: {}",
                lmdb.path.display(),
                failure.reason()
            )));
        }
        validate_batch(lmdb.serial, state.last_event_seq, batch)?;
        let buffer = state.spare.pop().unwrap_or_default();
        let encoded = lmdb.encode(batch, buffer)?;
        let need = encoded.need();
        let last_event_seq = batch.events.last().map_or(state.last_event_seq, |e| e.seq);
        let outstanding = state.pending_need + state.in_flight.unwrap_or(0);
        if outstanding.saturating_add(lmdb.needed(&[&encoded])) > lmdb.room() {
            // Close to the map's maximum: everything the log holds goes into LMDB first, then
            // the batch, straight, so that LMDB grows the map or finds it full (and then
            // writes nothing).
            state = self.checkpoint_here(lmdb, state)?;
            let committed = lmdb.commit_encoded(&[&encoded], None, None);
            if committed.is_ok() {
                state.last_event_seq = last_event_seq;
            }
            state.recycle(encoded.values);
            return committed;
        }
        let mut record = std::mem::take(&mut state.record);
        Log::start_record(&mut record);
        encoded.write_payload(&mut record).map_err(|reason| {
            SyneviError::Store(format!("cannot encode a commit-log record: {reason}"))
        })?;
        let payload_len = Log::payload_len(&record);
        let due = state.last_checkpoint.elapsed() >= lmdb.config.checkpoint_interval;
        if due && !state.pending.is_empty() && state.in_flight.is_none() {
            state = self.hand_over(state);
        }
        if !state.active().fits(payload_len) {
            // A log that fills within one interval grows, up to a limit; past it, or when
            // the interval is over, a checkpoint empties it.
            let size = state.active().size();
            if !due && size < log::SIZE_GROWN_MAX {
                state
                    .active()
                    .grow_to(size.saturating_mul(2).min(log::SIZE_GROWN_MAX))?;
            }
            if !state.active().fits(payload_len) {
                state = self.hand_over(state);
            }
            if !state.active().fits_empty(payload_len) {
                state.active().grow_to_fit(payload_len)?;
            }
        }
        debug_assert!(state.active().fits(payload_len));
        let appended = state.active().append(&mut record);
        state.record = record;
        let lsn = match appended {
            Ok(lsn) => lsn,
            Err(error) => {
                let message = format!(
                    "writing the commit log failed ({error}); nothing of the batch was kept"
                );
                state.failed = Some(Failure::Commits(message.clone()));
                return Err(SyneviError::Store(format!(
                    "the store at {}: {message}, and it takes no more commits until it is \
                     reopened",
                    lmdb.path.display()
                )));
            }
        };
        state.last_event_seq = last_event_seq;
        state.pending_need += need;
        state.pending_through = lsn;
        state.pending.push(encoded);
        state.check();
        Ok(())
    }

    /// Applies everything the log holds to LMDB before this returns, so that LMDB can be
    /// read.
    pub(super) fn settle(&self, lmdb: &Lmdb) -> Result<(), SyneviError> {
        let state = self.lock();
        self.checkpoint_here(lmdb, state).map(drop)
    }

    /// Stops the checkpoint thread, first applying what the log holds if `checkpoint`.
    pub(super) fn close(&mut self, lmdb: &Lmdb, checkpoint: bool) {
        if checkpoint {
            if let Err(error) = self.settle(lmdb) {
                // Nothing is lost: the batches are durable in the log and the next open
                // applies them.
                tracing::warn!(
                    path = %lmdb.path.display(),
                    %error,
                    "closing the store could not checkpoint its commit log"
                );
            }
        }
        self.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(path = %lmdb.path.display(), "the checkpoint thread panicked");
            }
        }
    }

    /// Hands the pending batches to the checkpoint thread, once the checkpoint before has
    /// finished, and makes the other file the active one.
    fn hand_over<'a>(&'a self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let mut state = self.finished(state);
        state.check();
        if state.pending.is_empty() {
            state.last_checkpoint = Instant::now();
            state.active().reset();
            return state;
        }
        let job = Job {
            batches: std::mem::take(&mut state.pending),
            through: state.pending_through,
        };
        state.in_flight = Some(std::mem::take(&mut state.pending_need));
        state.job = Some(job);
        let next_lsn = state.active().next_lsn();
        state.active = 1 - state.active;
        // Its records are in LMDB (the checkpoint before finished): written over from the
        // start, numbered on from the other file's.
        state.active().reset();
        state.active().continue_from(next_lsn);
        state.last_checkpoint = Instant::now();
        self.shared.changed.notify_all();
        state
    }

    /// Applies the pending batches to LMDB on this thread, after the checkpoint under way.
    fn checkpoint_here<'a>(
        &'a self,
        lmdb: &Lmdb,
        state: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>, SyneviError> {
        let mut state = self.finished(state);
        if let Some(Failure::Checkpoint(reason)) = &state.failed {
            // Batches of the failed checkpoint are only in the log now.
            return Err(SyneviError::Store(format!(
                "the store at {} cannot be read until it is reopened: {reason}",
                lmdb.path.display()
            )));
        }
        state.check();
        if !state.pending.is_empty() {
            let batches: Vec<&EncodedBatch> = state.pending.iter().collect();
            lmdb.commit_encoded(&batches, None, Some(state.pending_through))?;
            state.pending_need = 0;
            for batch in std::mem::take(&mut state.pending) {
                state.recycle(batch.values);
            }
        }
        state.active().reset();
        state.last_checkpoint = Instant::now();
        Ok(state)
    }

    /// Waits until no checkpoint is handed over or under way.
    fn finished<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        while state.in_flight.is_some() {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }
}

/// Ends the checkpoint under way as failed if the checkpoint thread panics.
struct OnPanic<'a>(&'a Shared);

impl Drop for OnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut state = lock(self.0);
            state.failed = Some(Failure::Checkpoint(
                "the checkpoint thread panicked".to_string(),
            ));
            state.in_flight = None;
            self.0.changed.notify_all();
        }
    }
}

/// Takes the state's lock. After a panic while it was held, the store takes no more
/// commits: a record may have been written whose batch is not pending (a checkpoint then
/// ends at the last pending batch, and the record, never acknowledged, is written over).
fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|poisoned| {
        let mut state = poisoned.into_inner();
        state
            .failed
            .get_or_insert_with(|| Failure::Commits("a commit panicked".to_string()));
        state
    })
}

/// The checkpoint thread: writes each handed-over checkpoint into LMDB.
fn checkpoints(shared: &Shared, lmdb: &Lmdb) {
    // Should the thread panic, commits waiting for its checkpoint must not wait forever.
    let _unwinding = OnPanic(shared);
    loop {
        let job = {
            let mut state = lock(shared);
            loop {
                if let Some(job) = state.job.take() {
                    break job;
                }
                if state.stop {
                    return;
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let batches: Vec<&EncodedBatch> = job.batches.iter().collect();
        let written = lmdb.commit_encoded(&batches, None, Some(job.through));
        let mut state = lock(shared);
        match written {
            Ok(()) => {
                // The batches' file may be written again; `hand_over` starts it over when it
                // makes it the active file.
                for batch in job.batches {
                    state.recycle(batch.values);
                }
            }
            Err(error) => {
                // The batches are durable in their file, which is not written again: the
                // next open applies them. Until then nothing may read LMDB, which lacks
                // them, nor commit after them.
                tracing::error!(path = %lmdb.path.display(), %error, "a checkpoint failed");
                state.failed = Some(Failure::Checkpoint(format!("a checkpoint failed: {error}")));
            }
        }
        state.in_flight = None;
        shared.changed.notify_all();
    }
}
