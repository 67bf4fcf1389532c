//! [`LmdbStore`]: a [`Store`] on disk, in an LMDB environment (through `heed`).

mod codec;
mod config;
mod open;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::fmt;
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};

use heed::{Env, MdbError, PutFlags, RoTxn, WithoutTls};
use synevi_types::{
    Event, NodeMeta, Serial, Store, StoredState, SyneviError, TxRecord, WriteBatch, T0,
};

use crate::mem::validate_batch;
use codec::{
    append_value, decode_forgotten, decode_seq, decode_serial, decode_t0, decode_value,
    forgotten_key_under, seq_key, serial_key, t0_key, KEY_NODE_META,
};
use config::Validated;
pub use config::{LmdbConfig, MAP_SIZE_MIN};
use open::Tables;

/// A [`Store`] that keeps a node's protocol state and event log in an LMDB environment on
/// disk, so that a node restarted on the same directory resumes exactly where it was.
///
/// # Durability and group commit
/// Each [`Store::commit`] is one LMDB write transaction, synced to disk (`fdatasync` of the
/// data, then of the meta page) before `commit` returns: after `Ok`, the batch survives a
/// crash or power loss; after `Err`, none of it was written. The node driver gathers the
/// changes of many protocol messages into one [`WriteBatch`], so one sync covers them all.
///
/// # One store per directory, one process per directory
/// LMDB allows one open environment per directory per process: opening a directory that
/// this process already has open fails (share the `LmdbStore`, for example in an `Arc`,
/// instead). The store also assumes no other process opens the directory while it is open;
/// it grows its memory map without coordinating with other processes.
///
/// # Layout
/// Tables (LMDB named databases): `meta` (format record and [`NodeMeta`]), `transactions`
/// (keyed by `t0`, big-endian), `forgotten` (by coordinator serial and `t0`), `floors` (by
/// serial), `events` (by `seq`, big-endian). Values are postcard. A format record written at
/// creation names the format version and the node's serial; opening checks both.
///
/// # Map size
/// See [`LmdbConfig`]: a commit that finds the map full grows it and retries once; past the
/// configured maximum, or with the disk full, `commit` returns [`SyneviError::StoreFull`]
/// and writes nothing. The store stays usable: a smaller batch may still fit.
pub struct LmdbStore {
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
            .field("serial", &self.serial)
            .field("path", &self.path)
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
/// lock is held only for the B-tree updates, and a retry does not encode again.
struct EncodedBatch {
    /// Every encoded value of the batch, one after the other.
    values: Vec<u8>,
    /// Transaction records: key, and where the value lies in `values`.
    transactions: Vec<([u8; 16], Range<usize>)>,
    /// Events: key, and where the value lies in `values`.
    events: Vec<([u8; 8], Range<usize>)>,
    meta: Option<Range<usize>>,
    /// Bytes of keys and values, for the growth estimate and error messages.
    bytes: usize,
    /// Entries the batch writes or deletes.
    entries: usize,
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

    /// Like [`LmdbStore::new`], with the map sizes of `config`.
    pub fn with_config(
        path: impl AsRef<Path>,
        serial: Serial,
        config: LmdbConfig,
    ) -> Result<Self, SyneviError> {
        let path = path.as_ref().to_path_buf();
        let config = config.validated()?;
        let (env, tables) = open::open(&path, serial, &config)?;
        Ok(LmdbStore {
            serial,
            path,
            config,
            env,
            tables,
            gate: RwLock::new(()),
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current size of the memory map in bytes (the most the data file can grow to
    /// before the map grows again).
    pub fn map_size(&self) -> usize {
        self.env.info().map_size
    }

    /// The size of the data file on disk in bytes.
    pub fn size_on_disk(&self) -> Result<u64, SyneviError> {
        self.env
            .real_disk_size()
            .map_err(|error| self.error("measuring the data file", error))
    }

    /// How many transaction records the store holds (protocol state not yet forgotten).
    pub fn transaction_count(&self) -> Result<u64, SyneviError> {
        let _shared = self.shared();
        let rtxn = self.read_txn()?;
        self.tables
            .transactions
            .len(&rtxn)
            .map_err(|error| self.error("counting transaction records", error))
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

    fn encode(&self, batch: &WriteBatch) -> Result<EncodedBatch, SyneviError> {
        let encoding = |what: &str, reason: String| {
            SyneviError::Store(format!("cannot encode {what} for the LMDB store: {reason}"))
        };
        // The last batch's buffer, with room for a guess at the size (a record without deps
        // and payload takes about 60 bytes); it grows if that is short.
        let mut values =
            std::mem::take(&mut *self.scratch.lock().unwrap_or_else(PoisonError::into_inner));
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
            transactions,
            events,
            meta,
            bytes,
            entries,
        })
    }

    /// Commits an encoded batch, growing the map and retrying when it is full.
    fn commit_encoded(
        &self,
        batch: &WriteBatch,
        encoded: &EncodedBatch,
    ) -> Result<(), SyneviError> {
        let mut retries = 0;
        loop {
            match self.try_commit(batch, encoded) {
                Ok(()) => return Ok(()),
                Err(CommitFailure::Failed(error)) => return Err(error),
                Err(CommitFailure::MapFull) if retries >= COMMIT_RETRIES_MAX => {
                    return Err(self.full(encoded, self.map_size()));
                }
                Err(CommitFailure::MapFull) => {
                    retries += 1;
                    // Copy-on-write: a transaction writes new copies of the pages it changes
                    // and frees the old ones only after it commits, so ask for twice the
                    // batch, plus room for the branch pages above the leaves.
                    let needed = encoded
                        .entries
                        .saturating_mul(ENTRY_OVERHEAD_BYTES)
                        .saturating_add(encoded.bytes)
                        .saturating_mul(2)
                        .saturating_add(64 * self.config.page);
                    self.grow(needed, encoded)?;
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

    /// One attempt: the whole batch in one write transaction, validated first, synced by the
    /// commit. Dropping the transaction on any error aborts it, so nothing is half-written.
    fn try_commit(&self, batch: &WriteBatch, encoded: &EncodedBatch) -> Result<(), CommitFailure> {
        let _shared = self.shared();
        let tables = &self.tables;
        let mut wtxn = self
            .env
            .write_txn()
            .map_err(|error| self.failure("starting a write transaction", error))?;
        let last_event_seq = self.last_event_seq(&wtxn).map_err(CommitFailure::Failed)?;
        validate_batch(self.serial, last_event_seq, batch).map_err(CommitFailure::Failed)?;

        for (key, value) in &encoded.transactions {
            tables
                .transactions
                .put(&mut wtxn, key, &encoded.values[value.clone()])
                .map_err(|error| self.failure("writing a transaction record", error))?;
        }
        for &t0 in &batch.forget {
            tables
                .transactions
                .delete(&mut wtxn, &t0_key(t0))
                .map_err(|error| self.failure("deleting a transaction record", error))?;
            // Below its coordinator's floor an id is covered by the floor already. The floor
            // read here is the one before this batch's floors, as in `MemStore`; a floor
            // raised later in this batch prunes the id below.
            let floor = self
                .floor(&wtxn, t0.0.serial)
                .map_err(CommitFailure::Failed)?;
            if floor.is_none_or(|floor| t0 >= floor) {
                tables
                    .forgotten
                    .put(&mut wtxn, &forgotten_key_under(t0.0.serial, t0), &[])
                    .map_err(|error| self.failure("remembering a forgotten id", error))?;
            }
        }
        for &(serial, floor) in &batch.floors {
            let current = self.floor(&wtxn, serial).map_err(CommitFailure::Failed)?;
            // Floors only rise.
            let floor = current.map_or(floor, |current| current.max(floor));
            if current != Some(floor) {
                tables
                    .floors
                    .put(&mut wtxn, &serial_key(serial), &t0_key(floor))
                    .map_err(|error| self.failure("writing a floor", error))?;
            }
            let start = forgotten_key_under(serial, T0::default());
            let end = forgotten_key_under(serial, floor);
            let below_floor = (Bound::Included(&start[..]), Bound::Excluded(&end[..]));
            tables
                .forgotten
                .delete_range(&mut wtxn, &below_floor)
                .map_err(|error| self.failure("pruning forgotten ids", error))?;
        }
        for (key, value) in &encoded.events {
            // `validate_batch` checked that the seqs continue the log, so each key sorts last
            // and LMDB may append without searching.
            tables
                .events
                .put_with_flags(
                    &mut wtxn,
                    PutFlags::APPEND,
                    key,
                    &encoded.values[value.clone()],
                )
                .map_err(|error| self.failure("appending an event", error))?;
        }
        if let Some(meta) = &encoded.meta {
            tables
                .meta
                .put(&mut wtxn, KEY_NODE_META, &encoded.values[meta.clone()])
                .map_err(|error| self.failure("writing the node metadata", error))?;
        }
        wtxn.commit()
            .map_err(|error| self.failure("committing a batch", error))
    }

    /// Grows the map so that a batch needing about `needed` more bytes fits; `StoreFull` if
    /// the map is at its configured maximum.
    fn grow(&self, needed: usize, encoded: &EncodedBatch) -> Result<(), SyneviError> {
        // Exclusive: no transaction of this process may be open while the map changes.
        let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        let current = self.env.info().map_size;
        let Some(target) = self.config.grown(current, needed) else {
            return Err(self.full(encoded, current));
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

    fn full(&self, encoded: &EncodedBatch, map_size: usize) -> SyneviError {
        SyneviError::StoreFull(format!(
            "the LMDB map at {} is full: a batch of {} entries (about {} bytes) does not fit \
             in the map of {map_size} bytes, and the map may not grow past {} bytes \
             (LmdbConfig::map_size_max); nothing of the batch was written",
            self.path.display(),
            encoded.entries,
            encoded.bytes,
            self.config.max,
        ))
    }
}

impl Store for LmdbStore {
    fn serial(&self) -> Serial {
        self.serial
    }

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

    fn commit(&self, batch: &WriteBatch) -> Result<(), SyneviError> {
        if batch.is_empty() {
            // Nothing to write, nothing to sync.
            return Ok(());
        }
        let encoded = self.encode(batch)?;
        let committed = self.commit_encoded(batch, &encoded);
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
