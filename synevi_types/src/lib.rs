//! Identifiers, timestamps, protocol messages, stored records and the plug-in traits of
//! synevi.
//!
//! This crate is the vocabulary every other synevi crate shares. It holds data and traits
//! only: no I/O, no async runtime, no protocol logic. It must never import another synevi
//! crate.
//!
//! - Time and identity: [`Timestamp`], [`T0`], [`T`], [`Hlc`], [`Ballot`], [`NodeId`],
//!   [`Serial`].
//! - What transactions touch and wait for: [`Keys`], [`Deps`].
//! - The wire: [`Message`] and one struct per message, [`Envelope`].
//! - The disk: [`TxRecord`], [`Status`], [`Event`], [`WriteBatch`], [`StoredState`].
//! - The plug-ins: [`Transaction`], [`Executor`] (the application's), [`Store`],
//!   [`Network`] (the I/O edges').
//! - Errors: [`SyneviError`], [`SyneviResult`].
#![deny(missing_docs)]

mod ballot;
mod error;
mod keys;
mod message;
mod record;
mod t0_list;
mod time;
mod traits;

pub use ballot::Ballot;
pub use error::SyneviError;
pub use keys::{Deps, Key, KeySet, Keys};
pub use message::*;
pub use record::{Event, NodeMeta, Status, StoredState, TxRecord, WriteBatch};
pub use t0_list::{decode_t0s, encode_t0s};
pub use time::{Hlc, Timestamp, T, T0};
pub use traits::{Executor, Inbox, Member, Network, Store, SyneviResult, Transaction};

pub use bytes::Bytes;
pub use ulid::Ulid;

/// A node's permanent identity.
pub type NodeId = Ulid;

/// A node's short number, unique within its cluster; stamped into its timestamps and ballots
/// and used to address it in [`Envelope`]s.
pub type Serial = u16;
