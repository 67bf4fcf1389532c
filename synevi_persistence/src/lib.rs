//! Stores for synevi nodes, behind the [`synevi_types::Store`] trait.
//!
//! - [`LmdbStore`]: on disk, in an LMDB environment. A node restarted (after a clean stop or
//!   a crash) on the same directory resumes exactly where it was: its identity, its promises,
//!   its accepted and committed transactions, its event log and execution digest.
//! - [`MemStore`]: everything in memory. Survives a node's restart within the process (the
//!   simulator keeps it across simulated crashes), not the process.
//!
//! # Durability and group commit
//! A node persists its protocol state through [`synevi_types::Store::commit`], one
//! [`synevi_types::WriteBatch`] at a time, and sends the messages that promise that state only
//! after `commit` returned `Ok`. The node driver gathers the changes of many transactions and
//! messages into one batch, so one commit covers all of them. [`LmdbStore`] appends each
//! batch to its commit log as one record, flushed to disk before `commit` returns (one flush
//! per batch, never one per message), and applies the log's batches to LMDB together, in one
//! synced write transaction, every so often (a checkpoint). A batch is applied whole or not
//! at all; a batch that breaks
//! the rules (a gap in the event log, another node's metadata) is refused before anything is
//! written, by the same check in both stores.
//!
//! The event log (the executed transactions, in this node's execution order) is read back
//! from any position with [`synevi_types::Store::events_after`].
//!
//! # Opening an LMDB store
//! ```
//! use synevi_persistence::{LmdbConfig, LmdbStore};
//! use synevi_types::Store;
//!
//! # fn main() -> Result<(), synevi_types::SyneviError> {
//! # let dir = tempfile::tempdir().map_err(|e| synevi_types::SyneviError::Store(e.to_string()))?;
//! # let path = dir.path().join("node-0");
//! let store = LmdbStore::with_config(&path, 0u16, LmdbConfig::default().map_size_initial(64 << 20))?;
//! assert_eq!(store.load()?.last_event_seq, 0);
//! drop(store);
//! // Reopening restores what was committed; another serial is refused.
//! assert!(LmdbStore::new(&path, 1u16).is_err());
//! # Ok(())
//! # }
//! ```
//!
//! LMDB allows one open environment per directory per process: open each store once and
//! share it. The directory must not be opened by another process at the same time.
//!
//! Both stores run the same conformance suite (`conformance`, in the tests). This crate must
//! never import `synevi_core` or `synevi_network`.
#![deny(missing_docs)]

#[cfg(test)]
pub(crate) mod conformance;
mod lmdb;
mod mem;

pub use lmdb::{LmdbConfig, LmdbStore, MAP_SIZE_MIN};
pub use mem::MemStore;
