//! Networks for synevi nodes, behind the [`synevi_types::Network`] trait.
//!
//! - [`LocalNetwork`]: nodes in one process, connected through a [`LocalHub`] that can cut
//!   links, for tests and examples.
//! - [`GrpcNetwork`]: nodes in different processes and on different hosts, over gRPC
//!   (tonic + prost; the wire format is `proto/synevi.proto`, described with the rest in
//!   `docs/network.md`).
//!
//! Both pass the same conformance suite (`src/conformance.rs`): every message kind arrives
//! intact, each link is FIFO when nothing fails, a restarted peer is reached again, an
//! unreachable peer does not hold up the others, and envelopes for non-members are dropped.
//!
//! # How `GrpcNetwork` moves envelopes
//!
//! - **One long-lived stream per peer.** For each member, one task keeps one HTTP/2
//!   connection with one client-streaming call (`synevi.v1.Peer/Stream`) open. There is no
//!   connection and no call per protocol message.
//! - **Batching.** The task turns whatever queued up for the peer while the previous frame
//!   was being written into one frame (a `Batch` of envelopes, up to
//!   [`GrpcConfig::batch_envelopes_max`] envelopes and [`GrpcConfig::frame_bytes_max`]
//!   bytes). Under load frames grow by themselves; an idle link sends each envelope at once,
//!   with no timer adding latency.
//! - **Bounded queues; the newest is dropped.** [`synevi_types::Network::send`] never blocks
//!   and never waits for a peer: it pushes into that peer's queue of
//!   [`GrpcConfig::queue_envelopes_max`] envelopes. When the queue is full, the envelope
//!   being sent (the newest) is dropped and counted in [`GrpcStats::dropped_queue_full`].
//!   Dropping is safe because the protocol already treats the network as lossy: a
//!   coordinator that misses replies retries or is replaced by recovery, and catch-up fills
//!   in missed commits. The newest rather than the oldest is dropped because that is a
//!   lock-free `try_send` on the queue, and it keeps what is delivered a gap-free prefix of
//!   what was sent: the messages that are lost are the ones the protocol's timers will
//!   resend anyway.
//! - **One task per peer.** A peer that is down, slow or stalled only fills its own queue;
//!   sends to the others go on. A broken stream is re-opened with capped, jittered
//!   exponential back-off ([`GrpcConfig::backoff_initial`] to
//!   [`GrpcConfig::backoff_max`]); HTTP/2 pings find peers that vanished without closing
//!   their connection.
//! - **Limits both ways.** An envelope that alone exceeds the frame limit is never sent: it
//!   is dropped and logged as [`synevi_types::SyneviError::TooLarge`]. The server refuses
//!   frames above the same limit (tonic's `max_decoding_message_size`).
//! - **Checks on receipt.** Envelopes that do not decode into `synevi_types` (a missing
//!   field, a serial above `u16::MAX`, an unknown status), that are not addressed to this
//!   node, or that come from a serial that is not a member are logged and dropped, one by
//!   one; an undecodable frame ends its stream (the sender reconnects). Nothing from the
//!   network can make the node panic.
//! - **Mutual TLS, off by default.** With a [`TlsConfig`] (certificate, key and CA, PEM
//!   files), every connection in both directions uses TLS and both sides must present a
//!   certificate signed by the cluster's CA; `http://` member URLs are upgraded to TLS, so
//!   a node never falls back to plain text.
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
