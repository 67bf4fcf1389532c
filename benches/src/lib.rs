//! The benchmark harness of synevi (the `synevi-bench` binary, and criterion
//! micro-benchmarks in `benches/`).
//!
//! Every node of every benchmark cluster runs in this one process, so the process's CPU time
//! and resident memory are the cluster's. What the harness runs:
//! - [`floor`]: a bare gRPC round trip between two `GrpcNetwork`s and a synced LMDB commit,
//!   what the machine allows at best;
//! - [`workload`]: the seed's workloads (5 nodes over gRPC, one burst of `Keys::All`
//!   transactions) and the matrix (3 and 5 nodes × clients × stores × keys), each on a fresh
//!   [`cluster::Cluster`];
//! - [`long_run`]: millions of transactions with resident memory sampled;
//! - [`targets`]: the targets as PASS/MISS ratios;
//! - [`report`]: the table and the JSON.
//!
//! This crate is a leaf: nothing in the workspace depends on it.
#![deny(missing_docs)]

/// The global allocator of the `synevi-bench` binary (its `main.rs` installs it), for the
/// report: `mimalloc` by default, `system` with `--no-default-features`.
pub const ALLOCATOR: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system"
};

pub mod cluster;
pub mod floor;
pub mod long_run;
pub mod machine;
pub mod plan;
pub mod report;
pub mod targets;
pub mod tx;
pub mod workload;
