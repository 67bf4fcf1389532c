//! synevi: an embeddable, leaderless, strictly serializable consensus library and event
//! store, built on the Accord protocol.
//!
//! Add the crate, implement [`Transaction`] for your events and [`Executor`] for the state
//! they change, and every process that creates a [`Node`] becomes a consensus node: any node
//! coordinates transactions, no leader, no external service. Every node executes
//! conflicting transactions in the same order; transactions whose [`Keys`] do not intersect
//! never wait on each other.
//!
//! This crate re-exports what an embedder needs:
//! - [`Node`], [`Config`], [`Stats`], [`NodeStatus`]: the node and its knobs and counters;
//! - [`Transaction`], [`Executor`], [`Keys`], [`SyneviError`], [`SyneviResult`]: what you
//!   implement and what you get back;
//! - [`network`]: [`network::LocalNetwork`] (in-process) and, when built, gRPC;
//! - [`persistence`]: [`persistence::MemStore`] and [`persistence::LmdbStore`];
//! - [`types`]: everything else from `synevi_types` (timestamps, messages, records).
//!
//! ```
//! use synevi::{Executor, Keys, Node, SyneviError, SyneviResult, Transaction, Ulid};
//! use synevi::network::LocalHub;
//! use synevi::persistence::MemStore;
//!
//! /// "Add `amount` to `account`": the application's event.
//! #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
//! struct Deposit { account: String, amount: u64 }
//!
//! impl Transaction for Deposit {
//!     type TxOk = u64; // the new balance
//!     type TxErr = ();
//!     fn as_bytes(&self) -> Vec<u8> {
//!         postcard::to_allocvec(self).expect("a Deposit always serialises")
//!     }
//!     fn from_bytes(bytes: Vec<u8>) -> Result<Self, SyneviError> {
//!         postcard::from_bytes(&bytes).map_err(|e| SyneviError::Decode {
//!             what: "Deposit",
//!             reason: e.to_string(),
//!         })
//!     }
//!     fn keys(&self) -> Keys {
//!         Keys::single(self.account.as_str()) // deposits to other accounts never wait
//!     }
//! }
//!
//! #[derive(Default)]
//! struct Bank { balances: std::sync::Mutex<std::collections::HashMap<String, u64>> }
//!
//! #[synevi::async_trait]
//! impl Executor for Bank {
//!     type Tx = Deposit;
//!     async fn execute(&self, deposit: Deposit) -> SyneviResult<Self> {
//!         let mut balances = self.balances.lock().expect("not poisoned");
//!         let balance = balances.entry(deposit.account).or_default();
//!         *balance += deposit.amount;
//!         Ok(Ok(*balance))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), SyneviError> {
//! // Three nodes in one process; with `GrpcNetwork` and `LmdbStore` they are processes on
//! // different hosts instead.
//! let hub = LocalHub::new();
//! let ids: Vec<Ulid> = (0..3).map(|_| Ulid::new()).collect();
//! let mut nodes = Vec::new();
//! for serial in 1..=3u16 {
//!     let id = ids[usize::from(serial - 1)];
//!     let node = Node::new(id, serial, hub.network(serial), Bank::default(), MemStore::new(serial)?).await?;
//!     for peer in (1..=3u16).filter(|peer| *peer != serial) {
//!         node.add_member(ids[usize::from(peer - 1)], peer, format!("local:{peer}"), true).await?;
//!     }
//!     nodes.push(node);
//! }
//! let deposit = Deposit { account: "alice".into(), amount: 5 };
//! let balance = nodes[2].transaction(1, deposit).await?;
//! assert_eq!(balance, Ok(5));
//! # for node in nodes { node.shutdown().await; }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub use async_trait::async_trait;
pub use synevi_core::{Config, Node, NodeStatus, Stats};
pub use synevi_types::{Executor, Key, Keys, SyneviError, SyneviResult, Transaction, Ulid, T, T0};

/// Networks: how nodes reach each other.
pub mod network {
    pub use synevi_network::*;
}

/// Stores: where a node keeps its protocol state and event log.
pub mod persistence {
    pub use synevi_persistence::*;
}

/// Everything `synevi_types` defines: timestamps, messages, records, traits.
pub mod types {
    pub use synevi_types::*;
}
