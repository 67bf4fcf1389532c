//! The receiving side: the `Peer` gRPC service. Each sender holds one stream open; every
//! frame's envelopes are decoded, checked (addressed to this node, from a member) and
//! handed to the [`Inbox`] given to `start`.

use std::sync::Arc;

use synevi_types::{Envelope, Inbox, SyneviError, Timestamp};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::stats::{add, worth_logging};
use super::{proto, wire, Shared};

/// The `Peer` service of one node.
pub(crate) struct Receiver {
    pub(crate) shared: Arc<Shared>,
    pub(crate) inbox: Arc<dyn Inbox>,
    /// Cancelled on shutdown: open streams end, so the server's graceful shutdown (which
    /// waits for running calls) does not wait for senders that never stop sending.
    pub(crate) cancel: CancellationToken,
}

#[derive(Default)]
struct Tally {
    accepted: u64,
    rejected: u64,
}

#[tonic::async_trait]
impl proto::peer_server::Peer for Receiver {
    async fn stream(
        &self,
        request: Request<Streaming<proto::Batch>>,
    ) -> Result<Response<proto::StreamSummary>, Status> {
        let remote = request.remote_addr();
        let claimed_serial = request
            .metadata()
            .get("synevi-serial")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        tracing::debug!(?remote, ?claimed_serial, "inbound stream opened");
        let mut frames = request.into_inner();
        let mut tally = Tally::default();
        let mut decoder = wire::Decoder::default();
        loop {
            let frame = tokio::select! {
                biased;
                // The only way this side ends a stream: its sender reads the summary as
                // this node shutting down (`peer::Failure::PeerClosed`).
                () = self.cancel.cancelled() => break,
                frame = frames.message() => frame,
            };
            match frame {
                Ok(Some(batch)) => self.on_batch(batch, &mut decoder, &mut tally),
                Ok(None) => {
                    add(&self.shared.counters.closed_inbound_streams, 1);
                    break;
                }
                Err(status) => {
                    // An undecodable or oversized frame, or a broken connection: the
                    // frame is dropped, the stream ends (tonic cannot resynchronise a
                    // stream after a bad frame) and the sender reconnects.
                    add(&self.shared.counters.failed_inbound_streams, 1);
                    tracing::warn!(?remote, ?claimed_serial, code = ?status.code(),
                        message = status.message(), accepted = tally.accepted,
                        "inbound stream failed; dropped it");
                    return Err(status);
                }
            }
        }
        tracing::debug!(
            ?remote,
            ?claimed_serial,
            accepted = tally.accepted,
            rejected = tally.rejected,
            "inbound stream closed"
        );
        Ok(Response::new(proto::StreamSummary {
            envelopes_accepted: tally.accepted,
            envelopes_rejected: tally.rejected,
        }))
    }
}

impl Receiver {
    /// Delivers the batch's envelopes in order; the last one delivered carries the batch's
    /// clock (`Envelope::clock`), which the sender took when it made the batch's last
    /// envelope: the receiver learns it after every envelope made before it.
    fn on_batch(&self, batch: proto::Batch, decoder: &mut wire::Decoder, tally: &mut Tally) {
        let counters = &self.shared.counters;
        add(&counters.batches_received, 1);
        // A bad clock tells nothing; the envelopes are good without it.
        let clock = wire::clock_from(batch.clock).unwrap_or_else(|reason| {
            let total = add(&counters.rejected_clocks, 1);
            if worth_logging(total) {
                tracing::warn!(serial = self.shared.serial, total, %reason,
                    "ignored a received batch's clock");
            }
            Timestamp::ZERO
        });
        // Held back by one, so that the last can be given the clock.
        let mut pending: Option<Envelope> = None;
        for encoded in batch.envelopes {
            match decoder
                .envelope(encoded)
                .and_then(|envelope| self.check(envelope))
            {
                Ok(envelope) => {
                    tally.accepted += 1;
                    add(&counters.envelopes_received, 1);
                    if let Some(previous) = pending.replace(envelope) {
                        self.inbox.deliver(previous);
                    }
                }
                Err(reason) => {
                    tally.rejected += 1;
                    let total = add(&counters.rejected_envelopes, 1);
                    if worth_logging(total) {
                        tracing::warn!(serial = self.shared.serial, total, %reason,
                            "dropped a received envelope");
                    }
                }
            }
        }
        if let Some(mut last) = pending {
            last.clock = clock;
            self.inbox.deliver(last);
        }
    }

    /// Accepts only envelopes addressed to this node from one of its members: anything
    /// else is a misrouted, misconfigured or foreign sender, and the protocol must never
    /// see it.
    fn check(&self, envelope: Envelope) -> Result<Envelope, SyneviError> {
        if envelope.to != self.shared.serial {
            return Err(SyneviError::Network(format!(
                "received {} from serial {} addressed to serial {}, not to this node ({})",
                envelope.message.kind(),
                envelope.from,
                envelope.to,
                self.shared.serial
            )));
        }
        if !self.shared.is_member(envelope.from) {
            return Err(SyneviError::UnknownMember(envelope.from));
        }
        Ok(envelope)
    }
}
