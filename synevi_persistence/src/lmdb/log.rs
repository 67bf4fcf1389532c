//! The commit log: each [`super::LmdbStore`] commit is one record here, made durable by one
//! flush, and LMDB is brought up to date from the records now and then (a checkpoint, one
//! LMDB write transaction for many commits) instead of once per commit.
//!
//! LMDB flushes twice per write transaction (its pages, then its meta page) and cannot flush
//! less without risking its own integrity: with `MDB_NOSYNC` a crash may leave a meta page on
//! disk that points at pages that never got there. One record appended here and flushed once
//! is durable on its own, so a commit costs one flush, and LMDB's two are paid once per
//! checkpoint.
//!
//! # Layout
//! Two files, `commit-0.log` and `commit-1.log`, which take turns (`logged.rs`: commits go
//! on in one while the other's records are checkpointed). Each is written with zeros when
//! it is created or grows: a record then
//! overwrites blocks the file system has already allocated, so its flush (`fdatasync`) has
//! no size or extent change to commit with it. Records start at offset 0 and follow each
//! other, each 8-byte aligned:
//!
//! ```text
//! length: u32 LE | crc32: u32 LE | lsn: u64 LE | payload (length bytes) | zero padding
//! ```
//!
//! The CRC covers the length, the lsn and the payload. Record numbers (lsn) rise by one from
//! record to record and are never reused: LMDB keeps the number of the last record a
//! checkpoint applied, and once a file's records are all in LMDB it is written from offset 0
//! again, over the old ones; records go on numbering from the other file's.
//!
//! # Reading it back
//! In each file, from offset 0, records are read while each is whole (its CRC holds) and numbered one
//! above the one before. The first that is not ends the log: a record cut short by a crash
//! (never acknowledged: its flush had not returned), zeros never written, or an older
//! record left from before the last checkpoint, whose number is lower. Every record in the
//! file has a number below the next one to be written, so an old record is never taken for
//! a new one. The two files' records, sorted by number, must continue the last checkpoint
//! without a gap.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use synevi_types::SyneviError;

/// The log's two files in the store's directory, which take turns (see `logged.rs`).
pub(crate) const LOG_FILES: [&str; 2] = ["commit-0.log", "commit-1.log"];

/// Length, CRC, lsn.
const HEADER_LEN: usize = 16;

/// Records start at multiples of this.
const ALIGN: usize = 8;

/// The size a new log is written out to.
const SIZE_INITIAL: u64 = 1 << 20;

/// The log grows by doubling (to hold the commits of one checkpoint interval) up to this
/// size; past it, a full log is checkpointed instead. A record larger than the log still
/// grows it to fit.
pub(crate) const SIZE_GROWN_MAX: u64 = 64 << 20;

/// Zeros written per call when the log is created or grows.
const ZEROS_CHUNK: usize = 256 << 10;

/// One record read back when the log was opened.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub(crate) lsn: u64,
    pub(crate) payload: Vec<u8>,
}

/// One open file of the commit log, written by one thread at a time (the store's lock).
pub(crate) struct Log {
    file: File,
    path: PathBuf,
    /// Where the next record goes.
    end: u64,
    /// The file's length, every byte of it written.
    size: u64,
    /// The next record's number.
    next_lsn: u64,
    /// Records written since the last reset.
    records: usize,
}

impl Log {
    /// Opens the log file `name` in `dir`, creating it if it is missing and `create` is set
    /// (returns `None` if it is missing and not to be created). Returns the log, positioned
    /// to write after a checkpoint, and the records numbered above `checkpointed`, in order.
    pub(crate) fn open(
        dir: &Path,
        name: &str,
        checkpointed: u64,
        create: bool,
    ) -> Result<Option<(Log, Vec<Replayed>)>, SyneviError> {
        let path = dir.join(name);
        let failed = |doing: &str, error: io::Error| io_error(&path, doing, error);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(failed("reading", error)),
        };
        let Some(bytes) = bytes else {
            if !create {
                return Ok(None);
            }
            return Log::create(dir, path, checkpointed).map(|log| Some((log, Vec::new())));
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| failed("opening", error))?;
        let (records, highest) = scan(&bytes, checkpointed);
        let log = Log {
            file,
            path,
            end: 0,
            size: bytes.len() as u64,
            next_lsn: highest.max(checkpointed) + 1,
            records: 0,
        };
        Ok(Some((log, records)))
    }

    /// A new log, written out with zeros and flushed, its directory entry flushed too.
    fn create(dir: &Path, path: PathBuf, checkpointed: u64) -> Result<Log, SyneviError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|error| io_error(&path, "creating", error))?;
        let mut log = Log {
            file,
            path,
            end: 0,
            size: 0,
            next_lsn: checkpointed + 1,
            records: 0,
        };
        log.grow_to(SIZE_INITIAL)?;
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| io_error(dir, "flushing the directory of", error))?;
        Ok(log)
    }

    /// The number the next record gets.
    pub(crate) fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Numbers the next record `next_lsn` at least (the other file may have got further).
    pub(crate) fn continue_from(&mut self, next_lsn: u64) {
        self.next_lsn = self.next_lsn.max(next_lsn);
    }

    /// How many records were written since the last reset.
    pub(crate) fn records(&self) -> usize {
        self.records
    }

    /// The file's length in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Whether a record of `payload_len` bytes fits after the records written since the
    /// last checkpoint.
    pub(crate) fn fits(&self, payload_len: usize) -> bool {
        self.end.saturating_add(record_len(payload_len)) <= self.size
    }

    /// Whether a record of `payload_len` bytes fits in the log once it is empty.
    pub(crate) fn fits_empty(&self, payload_len: usize) -> bool {
        record_len(payload_len) <= self.size
    }

    /// Grows the file to at least `size` bytes, written with zeros and flushed. A failure
    /// (a full disk) leaves the records as they were.
    pub(crate) fn grow_to(&mut self, size: u64) -> Result<(), SyneviError> {
        let size = size.next_multiple_of(ZEROS_CHUNK as u64);
        if size <= self.size {
            return Ok(());
        }
        let zeros = vec![0u8; ZEROS_CHUNK];
        let mut at = self.size;
        while at < size {
            let chunk = (size - at).min(ZEROS_CHUNK as u64) as usize;
            self.file
                .write_all_at(&zeros[..chunk], at)
                .map_err(|error| io_error(&self.path, "growing", error))?;
            at += chunk as u64;
        }
        self.file
            .sync_data()
            .map_err(|error| io_error(&self.path, "flushing the grown", error))?;
        self.size = size;
        Ok(())
    }

    /// Grows the file so that a record of `payload_len` bytes fits in the empty log.
    pub(crate) fn grow_to_fit(&mut self, payload_len: usize) -> Result<(), SyneviError> {
        self.grow_to(record_len(payload_len).next_power_of_two())
    }

    /// Empties `record` and leaves room for a record's header in it: the payload is
    /// appended after, and [`Log::append`] writes the header in place.
    pub(crate) fn start_record(record: &mut Vec<u8>) {
        record.clear();
        record.extend_from_slice(&[0u8; HEADER_LEN]);
    }

    /// The payload's length in a record begun with [`Log::start_record`].
    pub(crate) fn payload_len(record: &[u8]) -> usize {
        record.len().saturating_sub(HEADER_LEN)
    }

    /// Writes `record` (begun with [`Log::start_record`], the payload appended) as the next
    /// record and flushes it. On `Ok` the record is durable; its number is returned. The
    /// caller checked that it [`fits`](Log::fits). On `Err` the write or its flush failed:
    /// the record's header was zeroed again if the disk allowed it, and the log must not be
    /// written any more.
    pub(crate) fn append(&mut self, record: &mut Vec<u8>) -> io::Result<u64> {
        debug_assert!(record.len() >= HEADER_LEN, "begun with start_record");
        let payload_len = Log::payload_len(record);
        debug_assert!(self.fits(payload_len), "the caller makes room first");
        let Ok(length) = u32::try_from(payload_len) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a record of {payload_len} bytes is larger than a log record may be"),
            ));
        };
        let lsn = self.next_lsn;
        record[0..4].copy_from_slice(&length.to_le_bytes());
        record[8..16].copy_from_slice(&lsn.to_le_bytes());
        let crc = checksum(&record[0..4], &record[8..16], &record[HEADER_LEN..]);
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        record.resize(record.len().next_multiple_of(ALIGN), 0);
        let at = self.end;
        let written = self
            .file
            .write_all_at(record, at)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            // Undo what may have reached the disk, so that a reopened store does not apply
            // a batch whose commit failed. Best effort: the disk just failed.
            let _ = self
                .file
                .write_all_at(&[0u8; HEADER_LEN], at)
                .and_then(|()| self.file.sync_data());
            return Err(error);
        }
        self.end = at + record.len() as u64;
        self.next_lsn = lsn + 1;
        self.records += 1;
        Ok(lsn)
    }

    /// Starts writing at offset 0 again. Only after a checkpoint applied every record.
    pub(crate) fn reset(&mut self) {
        self.end = 0;
        self.records = 0;
    }
}

/// The bytes a record of `payload_len` bytes takes in the file.
fn record_len(payload_len: usize) -> u64 {
    (HEADER_LEN + payload_len).next_multiple_of(ALIGN) as u64
}

fn checksum(length: &[u8], lsn: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(length);
    hasher.update(lsn);
    hasher.update(payload);
    hasher.finalize()
}

/// The records of `bytes` numbered above `checkpointed`, and the highest number read.
fn scan(bytes: &[u8], checkpointed: u64) -> (Vec<Replayed>, u64) {
    let mut records = Vec::new();
    let mut highest = 0;
    let mut expected: Option<u64> = None;
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + HEADER_LEN) {
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut lsn_bytes = [0u8; 8];
        lsn_bytes.copy_from_slice(&header[8..16]);
        let lsn = u64::from_le_bytes(lsn_bytes);
        if length == 0 {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER_LEN..at + HEADER_LEN + length) else {
            break;
        };
        if checksum(&header[0..4], &header[8..16], payload) != crc {
            break;
        }
        if expected.is_some_and(|expected| lsn != expected) {
            break;
        }
        expected = lsn.checked_add(1);
        highest = highest.max(lsn);
        if lsn > checkpointed {
            records.push(Replayed {
                lsn,
                payload: payload.to_vec(),
            });
        }
        at += record_len(length) as usize;
    }
    (records, highest)
}

fn io_error(path: &Path, doing: &str, error: io::Error) -> SyneviError {
    if matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) {
        return SyneviError::StoreFull(format!(
            "no space left on the disk while {doing} the commit log {}: {error}; nothing of \
             the write was kept",
            path.display()
        ));
    }
    SyneviError::Store(format!(
        "{doing} the commit log {} failed: {error}",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(lsn: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (lsn as usize * 31 + i) as u8).collect()
    }

    fn append(log: &mut Log, len: usize) -> u64 {
        let lsn = log.next_lsn();
        let mut record = Vec::new();
        Log::start_record(&mut record);
        record.extend_from_slice(&payload(lsn, len));
        assert!(log.fits(len));
        log.append(&mut record).expect("appends")
    }

    fn lsns(records: &[Replayed]) -> Vec<u64> {
        records.iter().map(|record| record.lsn).collect()
    }

    #[test]
    fn records_come_back_in_order_and_only_those_after_the_checkpoint() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut log, records) = Log::open(dir.path(), LOG_FILES[0], 0, true)
            .expect("creates")
            .expect("a log");
        assert!(records.is_empty());
        assert_eq!(log.size(), SIZE_INITIAL);
        for len in [1, 7, 8, 100, 3000] {
            append(&mut log, len);
        }
        drop(log);
        let (_, records) = Log::open(dir.path(), LOG_FILES[0], 0, true)
            .expect("opens")
            .expect("a log");
        assert_eq!(lsns(&records), vec![1, 2, 3, 4, 5]);
        for (record, len) in records.iter().zip([1, 7, 8, 100, 3000]) {
            assert_eq!(record.payload, payload(record.lsn, len));
        }
        let (log, records) = Log::open(dir.path(), LOG_FILES[0], 3, true)
            .expect("opens")
            .expect("a log");
        assert_eq!(lsns(&records), vec![4, 5]);
        assert_eq!(log.next_lsn(), 6);
        let (log, records) = Log::open(dir.path(), LOG_FILES[0], 9, true)
            .expect("opens")
            .expect("a log");
        assert!(records.is_empty());
        assert_eq!(log.next_lsn(), 10, "numbers are never reused");
    }

    #[test]
    fn old_records_after_a_reset_are_not_read_as_new() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut log, _) = Log::open(dir.path(), LOG_FILES[0], 0, true)
            .expect("creates")
            .expect("a log");
        for _ in 0..10 {
            append(&mut log, 40);
        }
        // A checkpoint applied 1..=10; two shorter records overwrite the start.
        log.reset();
        append(&mut log, 8);
        append(&mut log, 8);
        drop(log);
        let (log, records) = Log::open(dir.path(), LOG_FILES[0], 10, true)
            .expect("opens")
            .expect("a log");
        assert_eq!(lsns(&records), vec![11, 12]);
        assert_eq!(log.next_lsn(), 13);
        // Same-length records land exactly on the old records' starts: still stopped by
        // their numbers.
        drop(log);
        let (mut log, _) = Log::open(dir.path(), LOG_FILES[0], 12, true)
            .expect("opens")
            .expect("a log");
        append(&mut log, 40);
        drop(log);
        let (_, records) = Log::open(dir.path(), LOG_FILES[0], 12, true)
            .expect("opens")
            .expect("a log");
        assert_eq!(lsns(&records), vec![13]);
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_log() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut log, _) = Log::open(dir.path(), LOG_FILES[0], 0, true)
            .expect("creates")
            .expect("a log");
        for _ in 0..4 {
            append(&mut log, 64);
        }
        drop(log);
        let path = dir.path().join(LOG_FILES[0]);
        let mut bytes = std::fs::read(&path).expect("reads");
        // Record 3 starts at 2 * (16 + 64); flip a payload byte.
        bytes[2 * 80 + HEADER_LEN + 5] ^= 0x40;
        std::fs::write(&path, &bytes).expect("writes");
        let (log, records) = Log::open(dir.path(), LOG_FILES[0], 0, true)
            .expect("opens")
            .expect("a log");
        assert_eq!(lsns(&records), vec![1, 2]);
        assert_eq!(log.next_lsn(), 3);
        // A length running past the file.
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &bytes).expect("writes");
        let (_, records) = Log::open(dir.path(), LOG_FILES[0], 0, true)
            .expect("opens")
            .expect("a log");
        assert!(records.is_empty());
    }

    #[test]
    fn a_record_larger_than_the_log_grows_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut log, _) = Log::open(dir.path(), LOG_FILES[0], 0, true)
            .expect("creates")
            .expect("a log");
        let len = SIZE_INITIAL as usize + 10;
        assert!(!log.fits_empty(len));
        log.grow_to_fit(len).expect("grows");
        assert!(log.fits(len));
        append(&mut log, len);
        drop(log);
        let (log, records) = Log::open(dir.path(), LOG_FILES[0], 0, true)
            .expect("opens")
            .expect("a log");
        assert_eq!(lsns(&records), vec![1]);
        assert_eq!(records[0].payload.len(), len);
        assert!(log.size() >= record_len(len));
        assert_eq!(
            std::fs::metadata(dir.path().join(LOG_FILES[0]))
                .expect("stat")
                .len(),
            log.size()
        );
    }

    #[test]
    fn a_missing_log_is_created_only_when_asked() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        assert!(Log::open(dir.path(), LOG_FILES[0], 0, false)
            .expect("opens")
            .is_none());
        assert!(!dir.path().join(LOG_FILES[0]).exists());
    }
}
