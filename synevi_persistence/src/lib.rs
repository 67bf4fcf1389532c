//! Stores for synevi nodes, behind the [`synevi_types::Store`] trait.
//!
//! - [`MemStore`]: everything in memory. Survives a node's restart within the process (the
//!   simulator keeps it across simulated crashes), not the process.
//!
//! Both run the same conformance suite ([`conformance`]). This crate must never import
//! `synevi_core` or `synevi_network`.
#![deny(missing_docs)]

#[cfg(test)]
pub(crate) mod conformance;
mod mem;

pub use mem::MemStore;
