//! The Accord protocol as pure state machines, and the driver that runs them.
#![deny(missing_docs)]

mod config;
mod conflicts;
mod coordinator;
mod core;
mod driver;
mod effects;
mod execution;
mod gc;
mod quorum;
mod replica;
mod stats;

pub use crate::config::Config;
pub use crate::core::Core;
pub use crate::driver::{Node, NodeStatus};
pub use crate::effects::{Execution, FailedReply, Now, Ready};
pub use crate::quorum::Quorums;
pub use crate::stats::Stats;
