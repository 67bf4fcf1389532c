//! Networks for synevi nodes, behind the [`synevi_types::Network`] trait.
//!
//! - [`LocalNetwork`]: nodes in one process, connected through a [`LocalHub`] that can cut
//!   links, for tests and examples.
//! - [`GrpcNetwork`]: nodes in different processes and on different hosts, over gRPC.
//!
//! This crate must never import `synevi_core` or `synevi_persistence`.
#![deny(missing_docs)]

#[cfg(test)]
#[macro_use]
mod conformance;
mod grpc;
mod local;
#[cfg(test)]
mod test_support;

pub use grpc::{wire, GrpcConfig, GrpcNetwork, GrpcStats, TlsConfig, FRAME_BYTES_MAX_FLOOR};
pub use local::{LocalHub, LocalNetwork};
