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
//! The README's embedding example runs as this crate's doc-test (below).
#![deny(missing_docs)]
#![doc = include_str!("../../README.md")]

pub use async_trait::async_trait;
pub use synevi_core::{Config, Node, NodeStatus, Stats};
pub use synevi_types::{
    Executor, Key, KeySet, Keys, SyneviError, SyneviResult, Transaction, Ulid, T, T0,
};

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
