//! Counters of a [`crate::GrpcNetwork`]: what it sent, received and dropped, and why.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a [`crate::GrpcNetwork`]'s counters since it was created.
///
/// Drops are normal under overload or while a peer is down (the protocol retries and
/// recovers), but a growing count tells an operator where messages are lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcStats {
    /// Envelopes handed to a peer's stream.
    pub envelopes_sent: u64,
    /// Frames (batches of envelopes) handed to peers' streams; `envelopes_sent /
    /// batches_sent` is the average batch size.
    pub batches_sent: u64,
    /// Encoded bytes of the frames handed to peers' streams (protobuf, without gRPC and
    /// HTTP/2 framing); `bytes_sent / envelopes_sent` is the average envelope size.
    pub bytes_sent: u64,
    /// Envelopes received and handed to the inbox.
    pub envelopes_received: u64,
    /// Frames received.
    pub batches_received: u64,
    /// Envelopes dropped because the peer's queue was full (the newest is dropped).
    pub dropped_queue_full: u64,
    /// Envelopes dropped because, encoded, they exceed the frame limit.
    pub dropped_too_large: u64,
    /// Envelopes dropped because their destination is not a member.
    pub dropped_unknown_destination: u64,
    /// Envelopes dropped because the stream they were handed to failed before taking them,
    /// or because the network had shut down.
    pub dropped_disconnected: u64,
    /// Received envelopes dropped: malformed, not addressed to this node, or from a serial
    /// that is not a member.
    pub rejected_envelopes: u64,
    /// Received batches whose sender's clock was malformed: the clock was ignored, the
    /// envelopes delivered.
    pub rejected_clocks: u64,
    /// Received streams that ended with an error (an undecodable or oversized frame, a
    /// broken connection).
    pub failed_inbound_streams: u64,
    /// Received streams that their sender ended: it shut down, or it was replaced by a
    /// member at another address.
    pub closed_inbound_streams: u64,
    /// Outbound streams established to peers (first connections and reconnections).
    pub connections: u64,
    /// Failed attempts to connect to a peer or to keep a stream to it going.
    pub connection_failures: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) envelopes_sent: AtomicU64,
    pub(crate) batches_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) envelopes_received: AtomicU64,
    pub(crate) batches_received: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_too_large: AtomicU64,
    pub(crate) dropped_unknown_destination: AtomicU64,
    pub(crate) dropped_disconnected: AtomicU64,
    pub(crate) rejected_envelopes: AtomicU64,
    pub(crate) rejected_clocks: AtomicU64,
    pub(crate) failed_inbound_streams: AtomicU64,
    pub(crate) closed_inbound_streams: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) connection_failures: AtomicU64,
}

/// Adds `n` to `counter` and returns the new total.
pub(crate) fn add(counter: &AtomicU64, n: u64) -> u64 {
    counter.fetch_add(n, Ordering::Relaxed) + n
}

/// Whether the `total`-th occurrence of something should be logged: the 1st, 2nd, 4th,
/// 8th, ... so that a flood of drops cannot flood the log, yet the first one is always seen.
pub(crate) fn worth_logging(total: u64) -> bool {
    total.is_power_of_two()
}

impl Counters {
    pub(crate) fn snapshot(&self) -> GrpcStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        GrpcStats {
            envelopes_sent: get(&self.envelopes_sent),
            batches_sent: get(&self.batches_sent),
            bytes_sent: get(&self.bytes_sent),
            envelopes_received: get(&self.envelopes_received),
            batches_received: get(&self.batches_received),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_too_large: get(&self.dropped_too_large),
            dropped_unknown_destination: get(&self.dropped_unknown_destination),
            dropped_disconnected: get(&self.dropped_disconnected),
            rejected_envelopes: get(&self.rejected_envelopes),
            rejected_clocks: get(&self.rejected_clocks),
            failed_inbound_streams: get(&self.failed_inbound_streams),
            closed_inbound_streams: get(&self.closed_inbound_streams),
            connections: get(&self.connections),
            connection_failures: get(&self.connection_failures),
        }
    }
}
