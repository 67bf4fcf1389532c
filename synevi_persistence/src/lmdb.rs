//! [`LmdbStore`]: a [`Store`] on disk, in an LMDB environment (through `heed`).

mod codec;
mod config;
mod log;
mod logged;
mod open;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use heed::{Env, MdbError, PutFlags, RoTxn, WithoutTls};
use serde::{Deserialize, Serialize};
use synevi_types::{
    Event, NodeMeta, Serial, Store, StoredState, SyneviError, TxRecord, WriteBatch, T0,
};

use crate::mem::validate_batch;
use codec::{
    append_value, decode_forgotten, decode_seq, decode_serial, decode_t0, decode_value,
    forgotten_key_under, seq_key, serial_key, t0_key, KEY_LOG_CHECKPOINT, KEY_NODE_META,
};
use config::Validated;
pub use config::{LmdbConfig, MAP_SIZE_MIN};
use logged::CommitLog;
use open::Tables;

/// A [`Store`] that keeps a node's protocol state and event log in an LMDB environment on
/// disk, so that a node restarted on the same directory resumes exactly where it was.
///
/// # Durability and group commit
/// Each [`Store::commit`] is one record appended to the store's commit log (two files in
/// its directory) and flushed (`fdatasync`) before `commit` returns: after `Ok`, the batch
/// survives a crash or power loss; after `Err`, none of it was written. The node driver
/// gathers the changes of many protocol messages into one [`WriteBatch`], so one flush
/// covers them all. The batches in the log are applied to LMDB together, in one synced
/// write transaction (a checkpoint), once [`LmdbConfig::checkpoint_interval`] has passed or
/// the log's file is full, by a thread of the store's own while commits go on in the other
/// file; and before anything is read and when the store is closed, on the caller's thread.
/// A store reopened after a crash applies what the log holds beyond the last checkpoint.
/// LMDB itself flushes twice per write transaction (its pages, then its meta page), so a
/// commit through the log costs one flush where a commit straight into LMDB costs two. If a
/// checkpoint fails, the store takes no more commits and no reads until it is reopened
/// (the batches stay in the log, and the reopened store applies them).
///
/// With the log off ([`LmdbConfig::commit_log`]), each commit is one LMDB write
/// transaction, synced before `commit` returns. Near the map's maximum size a commit also
/// goes straight into LMDB, so that a batch that does not fit is refused with nothing
/// written, as in that mode.
///
/// If the disk fails a write or a flush of the log, `commit` returns the error, the store
/// zeroes the record's header again (if the disk still lets it) and takes no more commits
/// until it is reopened. Should the disk have kept the record but not the zeroing, the
/// reopened store holds that batch: as if the node had crashed after the flush and before
/// `commit` returned, which a node survives (it stops on a failed commit, and nothing of the
/// batch left it).
///
/// # One store per directory, one process per directory
/// LMDB allows one open environment per directory per process: opening a directory that
/// this process already has open fails (share the `LmdbStore`, for example in an `Arc`,
/// instead). The store also assumes no other process opens the directory while it is open;
/// it grows its memory map without coordinating with other processes.
///
/// # Layout
/// Tables (LMDB named databases): `meta` (format record, [`NodeMeta`], the number of the last
/// log record applied), `transactions` (keyed by `t0`, big-endian), `forgotten` (by
/// coordinator serial and `t0`), `floors` (by serial), `events` (by `seq`, big-endian).
/// Values are postcard. A format record written at creation names the format version and
/// the node's serial; opening checks both. Beside LMDB's files, the commit log's two files,
/// `commit-0.log` and `commit-1.log`.
///
/// # Map size
/// See [`LmdbConfig`]: a commit that finds the map full grows it and retries once; past the
/// configured maximum, or with the disk full, `commit` returns [`SyneviError::StoreFull`]
/// and writes nothing. The store stays usable: a smaller batch may still fit. Through the
/// commit log the map grows at checkpoints; a commit whose batch, with those the log holds,
/// may not fit below the maximum goes straight into LMDB (above), so the same holds.
pub struct LmdbStore {
    lmdb: Arc<Lmdb>,
    /// With the commit log on: the log, what it holds beyond LMDB, and the thread that
    /// checkpoints it.
    logged: Option<CommitLog>,
    /// Whether dropping the store applies the log's batches to LMDB (off only in tests that
    /// leave a store as a crash would).
    checkpoint_on_drop: bool,
}

/// The LMDB environment and what writes and reads it; shared with the checkpoint thread.
struct Lmdb {
    serial: Serial,
    path: PathBuf,
    config: Validated,
    env: Env<WithoutTls>,
    tables: Tables,
    /// Taken shared by every transaction, exclusively to grow the map: LMDB allows
    /// `mdb_env_set_mapsize` only while the process has no transaction open.
    gate: RwLock<()>,
    /// The buffer the last batch was encoded into, kept for the next (see `keep_scratch`).
    scratch: Mutex<Vec<u8>>,
}

impl fmt::Debug for LmdbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LmdbStore")
            .field("serial", &self.lmdb.serial)
            .field("path", &self.lmdb.path)
            .finish_non_exhaustive()
    }
}

/// How many times a commit is retried after growing a full map. One growth by at least the
/// batch's estimated size fits the batch unless the maximum is reached; more retries would
/// only grow a map that cannot grow.
const COMMIT_RETRIES_MAX: usize = 1;

/// What LMDB spends per entry beyond its key and value bytes (node header, page slot,
/// alignment), used to estimate how much a batch needs when the map grows.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// The largest encoding buffer kept from one batch for the next (see `keep_scratch`).
const SCRATCH_KEPT_MAX: usize = 1 << 20;

/// Why one attempt at a commit failed: the one failure that growing the map cures, or any
/// other (which is final).
enum CommitFailure {
    MapFull,
    Failed(SyneviError),
}

/// A batch's values, encoded once before the write transaction starts so that the writer
/// lock is held only for the B-tree updates, and a retry does not encode again. It is also
/// what a commit-log record holds (see `write_payload`).
struct EncodedBatch {
    /// Every encoded value of the batch, one after the other.
    values: Vec<u8>,
    /// The keys, and where their values lie.
    index: Index,
}

/// What an [`EncodedBatch`] holds beside its values.
#[derive(Serialize, Deserialize)]
struct Index {
    /// Transaction records: key, and where the value lies in `values`.
    transactions: Vec<([u8; 16], Range<usize>)>,
    /// Events: key, and where the value lies in `values`.
    events: Vec<([u8; 8], Range<usize>)>,
    meta: Option<Range<usize>>,
    /// The batch's forgotten ids and floors, as in [`WriteBatch`].
    forget: Vec<T0>,
    floors: Vec<(Serial, T0)>,
    /// Bytes of keys and values, for the growth estimate and error messages.
    bytes: usize,
    /// Entries the batch writes or deletes.
    entries: usize,
}

impl EncodedBatch {
    /// What the batch may need of the map when it is written: its entries with LMDB's
    /// overhead, twice (copy-on-write keeps the old pages until the transaction commits).
    fn need(&self) -> usize {
        self.index
            .entries
            .saturating_mul(ENTRY_OVERHEAD_BYTES)
            .saturating_add(self.index.bytes)
            .saturating_mul(2)
    }

    /// A log record's payload: the values' length (u64 LE), the values, the index (postcard).
    fn write_payload(&self, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(&(self.values.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.values);
        append_value(out, &self.index).map(|_| ())
    }

    /// Reads a log record's payload back, checking that every value lies within it.
    fn from_payload(payload: &[u8]) -> Result<EncodedBatch, String> {
        let (length, rest) = payload
            .split_first_chunk::<8>()
            .ok_or("the record is shorter than its values' length")?;
        let length = usize::try_from(u64::from_le_bytes(*length))
            .map_err(|_| "the values' length does not fit in memory")?;
        if length > rest.len() {
            return Err(format!(
                "the values' length {length} runs past the record's {} bytes",
                rest.len()
            ));
        }
        let (values, index) = rest.split_at(length);
        let index: Index = decode_value(index)?;
        let within = |range: &Range<usize>| range.start <= range.end && range.end <= length;
        let all_within = index.transactions.iter().all(|(_, range)| within(range))
            && index.events.iter().all(|(_, range)| within(range))
            && index.meta.as_ref().is_none_or(within);
        if !all_within {
            return Err("a value lies outside the record's values".to_string());
        }
        Ok(EncodedBatch {
            values: values.to_vec(),
            index,
        })
    }
}

impl LmdbStore {
    /// Opens the store in directory `path` for the node with this serial, with the default
    /// [`LmdbConfig`]. Creates the directory and the store if they do not exist.
    ///
    /// Errors: [`SyneviError::WrongNode`] if the store belongs to another serial,
    /// [`SyneviError::StoreCorrupt`] if the directory holds anything that is not a synevi
    /// store of this format version, [`SyneviError::Store`] if it cannot be read or is
    /// already open in this process.
    pub fn new(path: impl AsRef<Path>, serial: Serial) -> Result<Self, SyneviError> {
        Self::with_config(path, serial, LmdbConfig::default())
    }

    /// Like [`LmdbStore::new`], with `config` (map sizes, the commit log).
    pub fn with_config(
        path: impl AsRef<Path>,
        serial: Serial,
        config: LmdbConfig,
    ) -> Result<Self, SyneviError> {
        let path = path.as_ref().to_path_buf();
        let config = config.validated()?;
        let (env, tables) = open::open(&path, serial, &config)?;
        let lmdb = Arc::new(Lmdb {
            serial,
            path,
            config,
            env,
            tables,
            gate: RwLock::new(()),
            scratch: Mutex::new(Vec::new()),
        });
        let logged = CommitLog::open(&lmdb)?;
        Ok(LmdbStore {
            lmdb,
            logged,
            checkpoint_on_drop: true,
        })
    }

    /// Applies whatever the commit log holds beyond LMDB, so that LMDB can be read.
    fn settle(&self) -> Result<(), SyneviError> {
        match &self.logged {
            Some(logged) => logged.settle(&self.lmdb),
            None => Ok(()),
        }
    }

    /// Leaves the store as a crash would: the log's batches stay out of LMDB, for the next
    /// open to apply.
    #[cfg(test)]
    pub(crate) fn crash(mut self) {
        self.checkpoint_on_drop = false;
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.lmdb.path
    }

    /// The current size of the memory map in bytes (the most the data file can grow to
    /// before the map grows again).
    pub fn map_size(&self) -> usize {
        self.lmdb.map_size()
    }

    /// The size of the data file on disk in bytes.
    pub fn size_on_disk(&self) -> Result<u64, SyneviError> {
        self.lmdb
            .env
            .real_disk_size()
            .map_err(|error| self.lmdb.error("measuring the data file", error))
    }

    /// How many transaction records the store holds (protocol state not yet forgotten).
    pub fn transaction_count(&self) -> Result<u64, SyneviError> {
        self.settle()?;
        self.lmdb.transaction_count()
    }
}

impl Lmdb {
    fn transaction_count(&self) -> Result<u64, SyneviError> {
        let _shared = self.shared();
        let rtxn = self.read_txn()?;
        self.tables
            .transactions
            .len(&rtxn)
            .map_err(|error| self.error("counting transaction records", error))
    }

    /// The number of the last commit-log record LMDB holds (0 before the first).
    fn checkpointed(&self) -> Result<u64, SyneviError> {
        let _shared = self.shared();
        let rtxn = self.read_txn()?;
        let Some(bytes) = self
            .tables
            .meta
            .get(&rtxn, KEY_LOG_CHECKPOINT)
            .map_err(|error| self.error("reading the log checkpoint", error))?
        else {
            return Ok(0);
        };
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
            self.corrupt(format!(
                "the log checkpoint is {} bytes long instead of 8",
                bytes.len()
            ))
        })?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// The map's size. Under the gate: `mdb_env_info` reads the meta pages through the map,
    /// which growing it (on the checkpoint thread) replaces.
    fn map_size(&self) -> usize {
        let _shared = self.shared();
        self.env.info().map_size
    }

    /// How many bytes the map may still grow by, at most. Under the gate, as `map_size`: a
    /// commit asks while the checkpoint thread may grow the map (a long run that read it
    /// unguarded crashed in `mdb_env_info`).
    fn room(&self) -> usize {
        let _shared = self.shared();
        let used = self
            .env
            .info()
            .last_page_number
            .saturating_add(1)
            .saturating_mul(self.config.page);
        self.config.max.saturating_sub(used)
    }

    /// What writing `batches` in one transaction may need of the map: copy-on-write keeps
    /// the old pages until the transaction commits (`EncodedBatch::need`), plus room for the
    /// branch pages above the leaves.
    fn needed(&self, batches: &[&EncodedBatch]) -> usize {
        batches
            .iter()
            .fold(0usize, |sum, batch| sum.saturating_add(batch.need()))
            .saturating_add(64 * self.config.page)
    }

    /// The seq of the last event in LMDB.
    fn stored_last_event_seq(&self) -> Result<u64, SyneviError> {
        let _shared = self.shared();
        let rtxn = self.read_txn()?;
        self.last_event_seq(&rtxn)
    }

    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        // The lock guards no data, so a panic elsewhere cannot leave anything half-done here.
        self.gate.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_txn(&self) -> Result<RoTxn<'_, WithoutTls>, SyneviError> {
        self.env
            .read_txn()
            .map_err(|error| self.error("starting a read transaction", error))
    }

    fn error(&self, doing: &str, error: heed::Error) -> SyneviError {
        map_error(&self.path, doing, error)
    }

    fn corrupt(&self, reason: impl Into<String>) -> SyneviError {
        corrupt(&self.path, reason)
    }

    fn failure(&self, doing: &str, error: heed::Error) -> CommitFailure {
        match error {
            heed::Error::Mdb(MdbError::MapFull) => CommitFailure::MapFull,
            error => CommitFailure::Failed(self.error(doing, error)),
        }
    }

    fn last_event_seq(&self, txn: &RoTxn) -> Result<u64, SyneviError> {
        match self
            .tables
            .events
            .last(txn)
            .map_err(|error| self.error("reading the last event", error))?
        {
            None => Ok(0),
            Some((key, _)) => {
                decode_seq(key).map_err(|reason| self.corrupt(format!("an event's key: {reason}")))
            }
        }
    }

    fn floor(&self, txn: &RoTxn, serial: Serial) -> Result<Option<T0>, SyneviError> {
        let Some(bytes) = self
            .tables
            .floors
            .get(txn, &serial_key(serial))
            .map_err(|error| self.error("reading a floor", error))?
        else {
            return Ok(None);
        };
        decode_t0(bytes)
            .map(Some)
            .map_err(|reason| self.corrupt(format!("the floor of serial {serial}: {reason}")))
    }

    /// Encodes a batch's values into `values` (a buffer kept from an earlier batch).
    fn encode(&self, batch: &WriteBatch, mut values: Vec<u8>) -> Result<EncodedBatch, SyneviError> {
        let encoding = |what: &str, reason: String| {
            SyneviError::Store(format!("cannot encode {what} for the LMDB store: {reason}"))
        };
        // Room for a guess at the size (a record without deps and payload takes about 60
        // bytes); it grows if that is short.
        values.reserve((batch.transactions.len() + batch.events.len()) * 96 + 64);
        // A group commit joins rounds, and a quarter of its records (3 nodes, 256 clients)
        // are transactions that changed again in a later round: only the last record of each
        // needs writing, as puts of one key overwrite each other. In key order, which also
        // keeps the B-tree's page visits in order.
        let mut order: Vec<usize> = (0..batch.transactions.len()).collect();
        order.sort_unstable_by_key(|&i| (batch.transactions[i].t0, Reverse(i)));
        order.dedup_by_key(|i| batch.transactions[*i].t0);
        let transactions = order
            .into_iter()
            .map(|i| &batch.transactions[i])
            .map(|record| {
                append_value(&mut values, record)
                    .map(|value| (t0_key(record.t0), value))
                    .map_err(|reason| encoding("a transaction record", reason))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let events = batch
            .events
            .iter()
            .map(|event| {
                append_value(&mut values, event)
                    .map(|value| (seq_key(event.seq), value))
                    .map_err(|reason| encoding("an event", reason))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let meta = batch
            .meta
            .as_ref()
            .map(|meta| {
                append_value(&mut values, meta)
                    .map_err(|reason| encoding("the node metadata", reason))
            })
            .transpose()?;
        let bytes = values.len()
            + transactions.len() * 16
            + events.len() * 8
            + batch.forget.len() * (16 + 18)
            + batch.floors.len() * (2 + 16);
        let entries = transactions.len()
            + events.len()
            + usize::from(meta.is_some())
            + batch.forget.len() * 2
            + batch.floors.len();
        debug_assert_eq!(events.len(), batch.events.len());
        Ok(EncodedBatch {
            values,
            index: Index {
                transactions,
                events,
                meta,
                forget: batch.forget.clone(),
                floors: batch.floors.clone(),
                bytes,
                entries,
            },
        })
    }

    /// Commits encoded batches, in order, in one write transaction, growing the map and
    /// retrying when it is full. `validate`: the batch to check against the stored event log
    /// first (a commit straight into LMDB; the log's commits were checked when they were
    /// logged). `checkpoint`: the number of the last log record among the batches.
    fn commit_encoded(
        &self,
        batches: &[&EncodedBatch],
        validate: Option<&WriteBatch>,
        checkpoint: Option<u64>,
    ) -> Result<(), SyneviError> {
        let mut retries = 0;
        loop {
            match self.try_commit(batches, validate, checkpoint) {
                Ok(()) => return Ok(()),
                Err(CommitFailure::Failed(error)) => return Err(error),
                Err(CommitFailure::MapFull) if retries >= COMMIT_RETRIES_MAX => {
                    return Err(self.full(batches, self.map_size()));
                }
                Err(CommitFailure::MapFull) => {
                    retries += 1;
                    self.grow(self.needed(batches), batches)?;
                }
            }
        }
    }

    /// Keeps an encoding buffer for the next batch, unless an unusually large batch grew it:
    /// the next batch reuses memory already mapped instead of touching fresh pages.
    fn keep_scratch(&self, mut values: Vec<u8>) {
        if values.capacity() <= SCRATCH_KEPT_MAX {
            values.clear();
            *self.scratch.lock().unwrap_or_else(PoisonError::into_inner) = values;
        }
    }

    /// One attempt: the batches in one write transaction, validated first, synced by the
    /// commit. Dropping the transaction on any error aborts it, so nothing is half-written.
    fn try_commit(
        &self,
        batches: &[&EncodedBatch],
        validate: Option<&WriteBatch>,
        checkpoint: Option<u64>,
    ) -> Result<(), CommitFailure> {
        let _shared = self.shared();
        let mut wtxn = self
            .env
            .write_txn()
            .map_err(|error| self.failure("starting a write transaction", error))?;
        let last_event_seq = self.last_event_seq(&wtxn).map_err(CommitFailure::Failed)?;
        match validate {
            Some(batch) => {
                validate_batch(self.serial, last_event_seq, batch).map_err(CommitFailure::Failed)?
            }
            // The commit log's batches were validated when they were logged; that they
            // continue the stored log is checked again here, since a gap LMDB would append.
            None => self
                .check_events_continue(last_event_seq, batches)
                .map_err(CommitFailure::Failed)?,
        }
        let final_puts = (batches.len() > 1).then(|| final_puts(batches));
        for (position, encoded) in batches.iter().enumerate() {
            // A record that a later batch writes again or forgets need not be written: the
            // transaction ends the same. A checkpoint's batches write most records two or
            // three times (pre-accepted, committed, applied).
            let is_final = |key: &[u8; 16]| {
                final_puts
                    .as_ref()
                    .is_none_or(|last| last.get(key) == Some(&position))
            };
            self.apply(&mut wtxn, encoded, is_final)?;
        }
        if let Some(through) = checkpoint {
            self.tables
                .meta
                .put(&mut wtxn, KEY_LOG_CHECKPOINT, &through.to_be_bytes())
                .map_err(|error| self.failure("writing the log checkpoint", error))?;
        }
        wtxn.commit()
            .map_err(|error| self.failure("committing a batch", error))
    }

    /// Checks that the events of `batches` continue the event log from `last_event_seq`.
    fn check_events_continue(
        &self,
        last_event_seq: u64,
        batches: &[&EncodedBatch],
    ) -> Result<(), SyneviError> {
        let mut expected = last_event_seq;
        for batch in batches {
            for (key, _) in &batch.index.events {
                expected += 1;
                let seq = decode_seq(key)
                    .map_err(|reason| self.corrupt(format!("an event's key: {reason}")))?;
                if seq != expected {
                    return Err(self.corrupt(format!(
                        "the commit log holds event {seq} where event {expected} continues the \
                         event log"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Writes one encoded batch in an open write transaction, of its transaction records
    /// those that `is_final`.
    fn apply(
        &self,
        wtxn: &mut heed::RwTxn,
        encoded: &EncodedBatch,
        is_final: impl Fn(&[u8; 16]) -> bool,
    ) -> Result<(), CommitFailure> {
        let tables = &self.tables;
        for (key, value) in &encoded.index.transactions {
            if !is_final(key) {
                continue;
            }
            tables
                .transactions
                .put(wtxn, key, &encoded.values[value.clone()])
                .map_err(|error| self.failure("writing a transaction record", error))?;
        }
        for &t0 in &encoded.index.forget {
            tables
                .transactions
                .delete(wtxn, &t0_key(t0))
                .map_err(|error| self.failure("deleting a transaction record", error))?;
            // Below its coordinator's floor an id is covered by the floor already. The floor
            // read here is the one before this batch's floors, as in `MemStore`; a floor
            // raised later in this batch prunes the id below.
            let floor = self
                .floor(wtxn, t0.0.serial)
                .map_err(CommitFailure::Failed)?;
            if floor.is_none_or(|floor| t0 >= floor) {
                tables
                    .forgotten
                    .put(wtxn, &forgotten_key_under(t0.0.serial, t0), &[])
                    .map_err(|error| self.failure("remembering a forgotten id", error))?;
            }
        }
        for &(serial, floor) in &encoded.index.floors {
            let current = self.floor(wtxn, serial).map_err(CommitFailure::Failed)?;
            // Floors only rise.
            let floor = current.map_or(floor, |current| current.max(floor));
            if current != Some(floor) {
                tables
                    .floors
                    .put(wtxn, &serial_key(serial), &t0_key(floor))
                    .map_err(|error| self.failure("writing a floor", error))?;
            }
            let start = forgotten_key_under(serial, T0::default());
            let end = forgotten_key_under(serial, floor);
            let below_floor = (Bound::Included(&start[..]), Bound::Excluded(&end[..]));
            tables
                .forgotten
                .delete_range(wtxn, &below_floor)
                .map_err(|error| self.failure("pruning forgotten ids", error))?;
        }
        for (key, value) in &encoded.index.events {
            // `validate_batch` or `check_events_continue` checked that the seqs continue the
            // log, so each key sorts last and LMDB may append without searching.
            tables
                .events
                .put_with_flags(wtxn, PutFlags::APPEND, key, &encoded.values[value.clone()])
                .map_err(|error| self.failure("appending an event", error))?;
        }
        if let Some(meta) = &encoded.index.meta {
            tables
                .meta
                .put(wtxn, KEY_NODE_META, &encoded.values[meta.clone()])
                .map_err(|error| self.failure("writing the node metadata", error))?;
        }
        Ok(())
    }

    /// Grows the map so that a batch needing about `needed` more bytes fits; `StoreFull` if
    /// the map is at its configured maximum.
    fn grow(&self, needed: usize, batches: &[&EncodedBatch]) -> Result<(), SyneviError> {
        // Exclusive: no transaction of this process may be open while the map changes.
        let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        let current = self.env.info().map_size;
        let Some(target) = self.config.grown(current, needed) else {
            return Err(self.full(batches, current));
        };
        debug_assert!(target > current, "growing must enlarge the map");
        // SAFETY: the exclusive gate guarantees that no transaction of this process is open,
        // as `mdb_env_set_mapsize` requires; no other process has the directory open (see
        // the type's docs).
        unsafe { self.env.resize(target) }
            .map_err(|error| self.error("growing the memory map", error))?;
        tracing::info!(
            path = %self.path.display(),
            from = current,
            to = target,
            "LMDB map was full; grew it"
        );
        Ok(())
    }

    fn full(&self, batches: &[&EncodedBatch], map_size: usize) -> SyneviError {
        let entries: usize = batches.iter().map(|batch| batch.index.entries).sum();
        let bytes: usize = batches.iter().map(|batch| batch.index.bytes).sum();
        SyneviError::StoreFull(format!(
            "the LMDB map at {} is full: a batch of {} entries (about {} bytes) does not fit \
             in the map of {map_size} bytes, and the map may not grow past {} bytes \
             (LmdbConfig::map_size_max); nothing of the batch was written",
            self.path.display(),
            entries,
            bytes,
            self.config.max,
        ))
    }
}

impl Store for LmdbStore {
    fn serial(&self) -> Serial {
        self.lmdb.serial
    }

    fn load(&self) -> Result<StoredState, SyneviError> {
        self.settle()?;
        self.lmdb.load()
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), SyneviError> {
        if batch.is_empty() {
            // Nothing to write, nothing to sync.
            return Ok(());
        }
        match &self.logged {
            Some(logged) => logged.commit(&self.lmdb, batch),
            None => self.lmdb.commit(batch),
        }
    }

    fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>, SyneviError> {
        if after_seq == u64::MAX || limit == 0 {
            return Ok(Vec::new());
        }
        self.settle()?;
        self.lmdb.events_after(after_seq, limit)
    }
}

impl Lmdb {
    fn load(&self) -> Result<StoredState, SyneviError> {
        let _shared = self.shared();
        let rtxn = self.read_txn()?;
        let tables = &self.tables;
        let read = |error| self.error("loading the stored state", error);
        let damaged = |what: &str, key: &[u8], reason: String| {
            self.corrupt(format!("{what} under key {key:02x?} is damaged: {reason}"))
        };

        let meta = match tables.meta.get(&rtxn, KEY_NODE_META).map_err(read)? {
            None => None,
            Some(bytes) => {
                let meta: NodeMeta = decode_value(bytes)
                    .map_err(|reason| damaged("the node metadata", KEY_NODE_META, reason))?;
                if meta.serial != self.serial {
                    return Err(self.corrupt(format!(
                        "the node metadata names serial {}, the format record serial {}",
                        meta.serial, self.serial
                    )));
                }
                Some(meta)
            }
        };

        let mut transactions = Vec::new();
        for entry in tables.transactions.iter(&rtxn).map_err(read)? {
            let (key, value) = entry.map_err(read)?;
            let t0 = decode_t0(key).map_err(|reason| damaged("a transaction key", key, reason))?;
            let record: TxRecord = decode_value(value)
                .map_err(|reason| damaged("a transaction record", key, reason))?;
            if record.t0 != t0 {
                return Err(damaged(
                    "a transaction record",
                    key,
                    format!("it holds {} instead", record.t0),
                ));
            }
            transactions.push(record);
        }

        let mut forgotten = Vec::new();
        for entry in tables.forgotten.iter(&rtxn).map_err(read)? {
            let (key, _) = entry.map_err(read)?;
            forgotten.push(
                decode_forgotten(key).map_err(|reason| damaged("a forgotten id", key, reason))?,
            );
        }
        // Keyed by coordinator first (for pruning); the trait hands them back in `t0` order.
        forgotten.sort_unstable();

        let mut floors = Vec::new();
        for entry in tables.floors.iter(&rtxn).map_err(read)? {
            let (key, value) = entry.map_err(read)?;
            let serial =
                decode_serial(key).map_err(|reason| damaged("a floor key", key, reason))?;
            let floor = decode_t0(value).map_err(|reason| damaged("a floor", key, reason))?;
            floors.push((serial, floor));
        }

        let last_event_seq = self.last_event_seq(&rtxn)?;
        Ok(StoredState {
            meta,
            transactions,
            forgotten,
            floors,
            last_event_seq,
        })
    }

    /// A commit straight into LMDB: one synced write transaction.
    fn commit(&self, batch: &WriteBatch) -> Result<(), SyneviError> {
        // The last batch's buffer.
        let values =
            std::mem::take(&mut *self.scratch.lock().unwrap_or_else(PoisonError::into_inner));
        let encoded = self.encode(batch, values)?;
        let committed = self.commit_encoded(&[&encoded], Some(batch), None);
        self.keep_scratch(encoded.values);
        committed
    }

    fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>, SyneviError> {
        let Some(first) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let _shared = self.shared();
        let rtxn = self.read_txn()?;
        let read = |error| self.error("reading the event log", error);
        let start = seq_key(first);
        let range = (Bound::Included(&start[..]), Bound::Unbounded);
        // Capacity bounded: `limit` is often "everything" (usize::MAX).
        let mut events = Vec::with_capacity(limit.min(1024));
        for entry in self
            .tables
            .events
            .range(&rtxn, &range)
            .map_err(read)?
            .take(limit)
        {
            let (key, value) = entry.map_err(read)?;
            let seq = decode_seq(key)
                .map_err(|reason| self.corrupt(format!("an event's key: {reason}")))?;
            let event: Event = decode_value(value)
                .map_err(|reason| self.corrupt(format!("event {seq} is damaged: {reason}")))?;
            if event.seq != seq {
                return Err(self.corrupt(format!("event {seq} holds seq {}", event.seq)));
            }
            events.push(event);
        }
        Ok(events)
    }
}

/// For each transaction record that `batches` write, the position of the batch whose write
/// is the last thing they do to it; none if a forget comes after every write. Within a
/// batch, records are written before ids are forgotten (see `apply`).
fn final_puts(batches: &[&EncodedBatch]) -> HashMap<[u8; 16], usize> {
    let mut last = HashMap::new();
    for (position, batch) in batches.iter().enumerate() {
        for (key, _) in &batch.index.transactions {
            last.insert(*key, position);
        }
        for &t0 in &batch.index.forget {
            last.remove(&t0_key(t0));
        }
    }
    last
}

impl Drop for LmdbStore {
    /// Applies the log's batches to LMDB, so that the next open has nothing to apply, and
    /// stops the checkpoint thread.
    fn drop(&mut self) {
        if let Some(logged) = &mut self.logged {
            logged.close(&self.lmdb, self.checkpoint_on_drop);
        }
    }
}

/// A [`SyneviError::StoreCorrupt`] for the store at `path`.
fn corrupt(path: &Path, reason: impl Into<String>) -> SyneviError {
    SyneviError::StoreCorrupt {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Turns an LMDB failure while `doing` something into the error that says what it means:
/// a full disk is [`SyneviError::StoreFull`], damaged or foreign files are
/// [`SyneviError::StoreCorrupt`], the rest [`SyneviError::Store`].
fn map_error(path: &Path, doing: &str, error: heed::Error) -> SyneviError {
    use std::io::ErrorKind;
    match error {
        heed::Error::Io(io)
            if matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) =>
        {
            SyneviError::StoreFull(format!(
                "no space left on the disk of {} while {doing}: {io}; nothing of the write was \
                 kept",
                path.display()
            ))
        }
        heed::Error::Mdb(MdbError::MapFull) => SyneviError::StoreFull(format!(
            "the LMDB map at {} is full while {doing}; raise LmdbConfig::map_size_max",
            path.display()
        )),
        heed::Error::Mdb(
            mdb @ (MdbError::Invalid
            | MdbError::VersionMismatch
            | MdbError::Corrupted
            | MdbError::PageNotFound
            | MdbError::Incompatible),
        ) => corrupt(path, format!("LMDB reports {mdb} while {doing}")),
        heed::Error::EnvAlreadyOpened => SyneviError::Store(format!(
            "the store at {} is already open in this process; LMDB allows one open store per \
             directory per process, so share that LmdbStore instead",
            path.display()
        )),
        error => SyneviError::Store(format!(
            "LMDB at {} failed while {doing}: {error}",
            path.display()
        )),
    }
}
