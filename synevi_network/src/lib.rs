//! Networks for synevi nodes, behind the [`synevi_types::Network`] trait.
//!
//! - [`LocalNetwork`]: nodes in one process, connected through a [`LocalHub`] that can cut
//!   links, for tests and examples.
//!
//! This crate must never import `synevi_core` or `synevi_persistence`.
#![deny(missing_docs)]

mod local;

pub use local::{LocalHub, LocalNetwork};
