//! The Accord protocol as pure state machines ([`Core`]), and the tokio driver that runs
//! them against a real network, store and executor ([`Node`]).
//!
//! This crate must never import `synevi_network` or `synevi_persistence`: it talks to them
//! through the traits in `synevi_types`. Protocol logic does no I/O, reads no clock and
//! spawns nothing; only `driver/` does.
//!
//! Where the protocol lives:
//! - `core.rs`: one node's state and its step API (`submit`, `receive`, `tick`, `applied`,
//!   `take_ready`);
//! - `replica.rs`: how a node answers coordinators (`on_pre_accept`, `on_accept`, ...);
//! - `coordinator/`: driving a transaction (`pre_accept.rs` with the fast path,
//!   `accept.rs`, `commit.rs`, `recover.rs`);
//! - `execution.rs`: when a committed transaction may execute;
//! - `conflicts.rs`: deps and the highest conflicting timestamp;
//! - `gc.rs`: releasing state every member is done with;
//! - `quorum.rs`: quorum sizes, and why.
//!
//! # The step → effects loop
//!
//! Inputs are method calls with the current time; effects accumulate in a [`Ready`] that the
//! caller takes, persists, and only then carries out. Three cores wired by hand:
//!
//! ```
//! use synevi_core::{Config, Core, Now};
//! use synevi_types::{Bytes, Keys, TxBody, Ulid};
//!
//! let mut cores: Vec<Core> = (1..=3u16)
//!     .map(|serial| Core::new(Ulid::new(), serial, Config::default(), 7).unwrap())
//!     .collect();
//! for core in &mut cores {
//!     for peer in 1..=3u16 {
//!         if peer != core.serial() {
//!             core.add_member(peer, true).unwrap();
//!         }
//!     }
//! }
//! let mut now = Now { wall_ms: 1_000, monotonic_ms: 0 };
//! let body = TxBody { id: 1, keys: Keys::single("x"), payload: Bytes::from_static(b"hello") };
//! let t0 = cores[0].submit(now, body);
//!
//! // Deliver messages, execute what each core releases, and when nothing is in flight let
//! // time pass to the next deadline a core asked for (messages held for company go then).
//! let mut executed = vec![Vec::new(); 3];
//! while executed.iter().any(|done| done.is_empty()) {
//!     let mut in_flight = Vec::new();
//!     for (i, core) in cores.iter_mut().enumerate() {
//!         let ready = core.take_ready();
//!         // (A real driver makes ready.persist durable here, before anything else.)
//!         in_flight.extend(ready.messages);
//!         for execution in ready.execute {
//!             executed[i].push(execution.t0);
//!             core.applied(now, execution.t0, [0; 32]);
//!         }
//!     }
//!     if in_flight.is_empty() {
//!         let next = cores.iter().filter_map(|core| core.next_deadline()).min().unwrap();
//!         let next = next.max(now.monotonic_ms);
//!         now.wall_ms += next - now.monotonic_ms;
//!         now.monotonic_ms = next;
//!         for core in &mut cores {
//!             core.tick(now);
//!         }
//!         continue;
//!     }
//!     for envelope in in_flight {
//!         let to = usize::from(envelope.to - 1);
//!         cores[to].receive(now, envelope);
//!     }
//! }
//! assert_eq!(executed, vec![vec![t0]; 3]);
//! assert_eq!(cores[0].stats().fast_path_commits, 1);
//! ```
#![deny(missing_docs)]

mod config;
mod conflicts;
mod coordinator;
mod core;
mod driver;
mod effects;
mod execution;
mod gc;
mod outcome;
mod pruning;
mod quorum;
mod replica;
pub mod sim;
mod stats;

pub use crate::config::Config;
pub use crate::core::Core;
pub use crate::driver::{Node, NodeStatus};
pub use crate::effects::{Execution, FailedReply, Now, Ready};
pub use crate::outcome::result_hash;
pub use crate::quorum::Quorums;
pub use crate::stats::Stats;
