//! Cross-crate tests of synevi (end to end, multiple processes) and what they share:
//! - [`ledger`]: a deterministic executor whose results reveal the execution order;
//! - [`lmdb_cluster`]: three in-process nodes, each on its own `LmdbStore` directory.
//!
//! The crash writer (`src/bin/crash_writer.rs`) runs such a cluster in a process the crash
//! test (`tests/crash.rs`) kills with SIGKILL.

pub mod ledger;
pub mod lmdb_cluster;
