//! [`Node`]: the tokio driver that runs a [`Core`] against a real network, store and
//! executor.
//!
//! Three workers, connected by channels, keep the core free of I/O:
//! - the core thread feeds inputs (client submissions, arrived envelopes, timer ticks,
//!   executor results) into the [`Core`], many per round, and takes one [`crate::Ready`] per
//!   round; it has a thread of its own so that it cannot starve the network's tasks;
//! - the persister thread commits each round's writes, coalescing rounds that queued up while
//!   it was busy into one store commit (group commit), and only then sends the round's
//!   messages and hands its executions on;
//! - the executor task runs executions one at a time, in the order the core released them,
//!   answers local clients, and reports each result back to the core.

mod clock;
mod node;
mod outbox;
mod workers;

pub use node::{Node, NodeStatus};
