//! `synevi_kv`: a replicated key-value store on synevi, and a worked example of embedding
//! the library.
//!
//! The whole integration with synevi is two small pieces:
//!
//! - [`KvTx`] implements [`synevi::Transaction`]: the operations (`Get`, `Put`, `Cas`,
//!   `Delete`) as an enum, encoded with postcard behind a version byte, whose
//!   [`keys`](synevi::Transaction::keys) are the one key it touches. Operations on
//!   different keys never wait on each other.
//! - [`KvExecutor`] implements [`synevi::Executor`]: a map in memory, changed only by
//!   committed transactions, deterministically. It is rebuilt on restart because the node
//!   replays its event log into it ([`synevi::Config::replay_events_on_start`]).
//!
//! Reads are transactions too: a `GET` is ordered by consensus with every write of its key,
//! and its answer is the value at that point of the order, so every read is linearizable,
//! on any node, even one that just restarted and has not caught up yet (it waits for the
//! writes the read depends on).
//!
//! ```
//! use synevi_kv::{KvExecutor, KvOk, KvTx};
//!
//! // What every node does with a committed transaction:
//! let kv = KvExecutor::new();
//! let put = KvTx::Put { key: "k".into(), value: "v".into() };
//! assert_eq!(kv.apply(put), Ok(KvOk::Put { previous: None }));
//! assert_eq!(kv.apply(KvTx::Get { key: "k".into() }), Ok(KvOk::Value(Some("v".into()))));
//! ```
//!
//! The rest is the program around it: [`server::KvServer`] starts a node (gRPC between
//! nodes, LMDB or memory store) with the HTTP API of [`api`] in front; [`client::KvClient`]
//! talks to that API; [`identity`] keeps node ids stable across restarts;
//! [`linearizability`] checks recorded histories (the multi-process test uses it). The
//! `synevi-kv` binary (`src/bin/synevi-kv/`) wires them to a command line; `docs/kv.md`
//! describes its use.
//!
//! This crate depends on the `synevi` facade only, as an embedding application would.
#![deny(missing_docs)]

pub mod api;
pub mod backend;
pub mod client;
pub mod executor;
pub mod identity;
pub mod linearizability;
pub mod metrics;
pub mod server;
pub mod state;
pub mod transaction;

pub use executor::KvExecutor;
pub use transaction::{KvErr, KvOk, KvTx};
