//! The sending side: one task per peer that owns the peer's bounded queue, keeps one
//! long-lived stream to it open, batches what queued up into frames, and reconnects with
//! capped, jittered exponential back-off when the peer is down, slow or restarting.
//!
//! Because every peer has its own queue and task, a dead or slow peer only ever fills its
//! own queue: sends to the others go on.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use synevi_types::{Envelope, Member, Serial, SyneviError, Timestamp, Ulid};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::config::GrpcConfig;
use super::proto;
use super::stats::{add, Counters};
use super::{describe, wire, SUMMARY_BYTES_MAX};

/// Frames handed to tonic but not yet written to the connection. Kept small on purpose:
/// while the connection is busy, envelopes wait in the peer's queue instead, where they
/// coalesce into the next (larger) frame; a deep buffer here would only add latency and
/// hide back-pressure.
const FRAMES_IN_FLIGHT: usize = 2;

/// The sender's half of a peer: its queue, and the task draining it.
pub(crate) struct PeerHandle {
    /// The member as it was added.
    pub(crate) member: Member,
    /// The peer's bounded queue; `send` pushes with `try_send` and never waits.
    pub(crate) queue: mpsc::Sender<Envelope>,
    /// Stops the task (a child of the network's token).
    pub(crate) cancel: CancellationToken,
    /// What the task needs, while the network has not started: envelopes queue up (within
    /// the queue's bound) until `start` runs the task. Exactly one of `waiting` and `task`
    /// is set.
    waiting: Option<Box<(PeerContext, Outbox)>>,
    /// The task draining the queue, once running; awaited on shutdown.
    pub(crate) task: Option<JoinHandle<()>>,
}

/// What a peer's task needs to know.
pub(crate) struct PeerContext {
    pub(crate) member: Member,
    pub(crate) endpoint: Endpoint,
    pub(crate) config: Arc<GrpcConfig>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) own_serial: Serial,
    pub(crate) own_node_id: Ulid,
}

/// Creates the peer's queue; its task runs once [`PeerHandle::start`] is called.
pub(crate) fn create(context: PeerContext, cancel: CancellationToken) -> PeerHandle {
    let (queue, receiver) = mpsc::channel(context.config.queue_envelopes_max);
    let member = context.member.clone();
    let outbox = Outbox {
        queue: receiver,
        carry: None,
        frame_bytes_max: context.config.frame_bytes_max,
        batch_envelopes_max: context.config.batch_envelopes_max,
        counters: context.counters.clone(),
        peer: context.member.serial,
    };
    PeerHandle {
        member,
        queue,
        cancel,
        waiting: Some(Box::new((context, outbox))),
        task: None,
    }
}

impl PeerHandle {
    /// Runs the peer's task on `runtime` (the network's, see `Shared::runtime`), unless it
    /// runs already.
    pub(crate) fn start(&mut self, runtime: &tokio::runtime::Handle) {
        debug_assert!(
            self.waiting.is_some() != self.task.is_some(),
            "a peer's task is either waiting or running"
        );
        if let Some(waiting) = self.waiting.take() {
            let (context, outbox) = *waiting;
            let task = runtime.spawn(run(context, outbox, self.cancel.clone()));
            self.task = Some(task);
        }
    }
}

/// How long a cancelled session waits for the peer to acknowledge the end of its stream
/// (its `StreamSummary`). Ending the stream, rather than dropping the call, lets the frames
/// already handed to tonic go out first, and tells the receiver the stream ended on purpose
/// instead of with a broken connection.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A peer that cannot be reached for this long, without a stream in between, is logged as
/// a warning once; before that its failed attempts are only information (a cluster's nodes
/// start one after another, and a restarting peer is down for a moment).
const UNREACHABLE_WARN_AFTER: Duration = Duration::from_secs(10);

/// Why a session (one connection and one stream) ended.
enum SessionEnd {
    /// The network shut down or the member was replaced: stop.
    Cancelled,
    /// The queue's sender is gone: nothing more will ever be sent; stop.
    QueueClosed,
    /// The session failed, how and why: reconnect.
    Failed(Failure, String),
}

async fn run(context: PeerContext, mut outbox: Outbox, cancel: CancellationToken) {
    let peer = context.member.serial;
    let host = &context.member.host;
    let mut backoff = Backoff::new(context.config.backoff_initial, context.config.backoff_max);
    let mut streak = Streak::new(Instant::now());
    loop {
        let started = Instant::now();
        let (kind, reason) = match session(&context, &mut outbox, &cancel).await {
            SessionEnd::Cancelled | SessionEnd::QueueClosed => return,
            SessionEnd::Failed(kind, reason) => (kind, reason),
        };
        add(&context.counters.connection_failures, 1);
        let healthy = started.elapsed() >= context.config.backoff_reset_after;
        if healthy {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        let report = streak.record(kind, started, healthy, Instant::now());
        let count = streak.count;
        match report {
            Report::Quiet => {
                tracing::debug!(peer, %host, %reason, ?delay, streak = count,
                    "peer still unreachable");
            }
            Report::Loud => match kind {
                Failure::Lost => tracing::warn!(peer, %host, %reason, ?delay,
                    "lost the stream to a peer; reconnecting with back-off"),
                Failure::PeerClosed => tracing::info!(peer, %host, %reason, ?delay,
                    "the peer ended the stream (it is shutting down); reconnecting with back-off"),
                Failure::Unreachable => tracing::info!(peer, %host, %reason, ?delay,
                    "cannot reach the peer (yet); retrying with back-off"),
            },
            Report::StillUnreachable => {
                tracing::warn!(peer, %host, %reason, ?delay, streak = count,
                    unreachable_for = ?streak.began.elapsed(),
                    "a peer stays unreachable; still retrying with back-off");
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// How a session failed, which decides how loudly it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No connection could be made.
    Unreachable,
    /// The peer ended the stream itself, which a receiver does only when its node shuts
    /// down (it may be restarting).
    PeerClosed,
    /// The connection or the stream failed.
    Lost,
}

/// What to log about a failed session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// The first failure of a streak: a warning for a lost stream, information for a peer
    /// that ended its stream or cannot be reached (yet).
    Loud,
    /// A peer unreachable for [`UNREACHABLE_WARN_AFTER`]: a warning, once a streak.
    StillUnreachable,
    /// Anything else: debug only, so a peer that is down for an hour does not fill the log.
    Quiet,
}

/// A peer's consecutive failed sessions.
struct Streak {
    /// Failures so far.
    count: u32,
    /// When the streak's first session began.
    began: Instant,
    /// Whether the streak already warned that the peer stays unreachable.
    warned: bool,
}

impl Streak {
    fn new(now: Instant) -> Streak {
        Streak {
            count: 0,
            began: now,
            warned: false,
        }
    }

    /// Records a session that began at `started` and failed as `kind` at `now`; `healthy`:
    /// it lasted long enough to end the streak before it (`backoff_reset_after`).
    fn record(&mut self, kind: Failure, started: Instant, healthy: bool, now: Instant) -> Report {
        if healthy || self.count == 0 {
            *self = Streak::new(started);
        }
        self.count = self.count.saturating_add(1);
        if self.count == 1 || kind == Failure::PeerClosed {
            return Report::Loud;
        }
        if kind == Failure::Unreachable
            && !self.warned
            && now.saturating_duration_since(self.began) >= UNREACHABLE_WARN_AFTER
        {
            self.warned = true;
            return Report::StillUnreachable;
        }
        Report::Quiet
    }
}

/// One connection and one client-streaming call on it, pumping frames until something
/// fails or the task is cancelled.
async fn session(
    context: &PeerContext,
    outbox: &mut Outbox,
    cancel: &CancellationToken,
) -> SessionEnd {
    let connected = tokio::select! {
        () = cancel.cancelled() => return SessionEnd::Cancelled,
        connected = context.endpoint.connect() => connected,
    };
    let channel = match connected {
        Ok(channel) => channel,
        Err(error) => {
            return SessionEnd::Failed(
                Failure::Unreachable,
                format!("cannot connect: {}", describe(&error)),
            )
        }
    };
    add(&context.counters.connections, 1);
    tracing::debug!(peer = context.member.serial, host = %context.member.host, "connected");

    let (frames, frames_receiver) = mpsc::channel::<proto::Batch>(FRAMES_IN_FLIGHT);
    let mut client = proto::peer_client::PeerClient::new(channel)
        .max_encoding_message_size(context.config.frame_bytes_max)
        .max_decoding_message_size(SUMMARY_BYTES_MAX);
    let mut request = tonic::Request::new(ReceiverStream::new(frames_receiver));
    // Who is on the other end of the stream, for the receiver's logs.
    request
        .metadata_mut()
        .insert("synevi-serial", context.own_serial.into());
    if let Ok(node_id) = context.own_node_id.to_string().parse() {
        request.metadata_mut().insert("synevi-node-id", node_id);
    }
    let call = client.stream(request);
    tokio::pin!(call);

    loop {
        let batch = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            ended = &mut call => return stream_ended(ended),
            batch = outbox.next_batch() => batch,
        };
        let Some((batch, bytes)) = batch else {
            return SessionEnd::QueueClosed;
        };
        let count = batch.envelopes.len() as u64;
        let sent = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                add(&context.counters.dropped_disconnected, count);
                break;
            }
            ended = &mut call => {
                add(&context.counters.dropped_disconnected, count);
                return stream_ended(ended);
            }
            sent = frames.send(batch) => sent,
        };
        if sent.is_err() {
            add(&context.counters.dropped_disconnected, count);
            return SessionEnd::Failed(Failure::Lost, "the stream stopped taking frames".into());
        }
        add(&context.counters.envelopes_sent, count);
        add(&context.counters.batches_sent, 1);
        add(&context.counters.bytes_sent, bytes as u64);
    }
    // Cancelled: end the stream instead of dropping the call, so that the frames handed
    // to tonic still go out and the receiver sees the stream end, not a broken connection.
    drop(frames);
    if tokio::time::timeout(CLOSE_GRACE, &mut call).await.is_err() {
        tracing::debug!(peer = context.member.serial, host = %context.member.host,
            "the peer did not acknowledge the end of the stream in time");
    }
    SessionEnd::Cancelled
}

fn stream_ended(ended: Result<tonic::Response<proto::StreamSummary>, tonic::Status>) -> SessionEnd {
    match ended {
        Ok(response) => {
            let summary = response.into_inner();
            SessionEnd::Failed(
                Failure::PeerClosed,
                format!(
                    "it accepted {} and rejected {} envelopes",
                    summary.envelopes_accepted, summary.envelopes_rejected
                ),
            )
        }
        Err(status) => SessionEnd::Failed(
            Failure::Lost,
            format!(
                "the stream failed: {:?}: {}",
                status.code(),
                status.message()
            ),
        ),
    }
}

/// The receiving end of a peer's queue, turning queued envelopes into frames.
pub(crate) struct Outbox {
    queue: mpsc::Receiver<Envelope>,
    /// An envelope taken from the queue that did not fit into the previous frame, with its
    /// size and clock; it opens the next one, so the order on the link is kept.
    carry: Option<(proto::Envelope, usize, Timestamp)>,
    frame_bytes_max: usize,
    batch_envelopes_max: usize,
    counters: Arc<Counters>,
    peer: Serial,
}

impl Outbox {
    /// Waits for one envelope, then takes every envelope already queued that still fits
    /// into the frame: under load frames grow by themselves, and an idle link sends each
    /// envelope at once, without waiting for company.
    ///
    /// Cancel-safe: the only await is the queue's `recv`, before anything was taken.
    /// Returns the frame with its encoded size, or `None` once the queue is closed and
    /// empty. The frame carries the clock of its last envelope, the highest (envelopes are
    /// stamped as they are made, and queued in that order).
    async fn next_batch(&mut self) -> Option<(proto::Batch, usize)> {
        let (first, mut bytes, mut clock) = match self.carry.take() {
            Some(carried) => carried,
            None => loop {
                let envelope = self.queue.recv().await?;
                if let Some(encoded) = self.encode(envelope) {
                    break encoded;
                }
            },
        };
        let mut envelopes = Vec::with_capacity(self.queue.len().min(self.batch_envelopes_max) + 1);
        envelopes.push(first);
        while envelopes.len() < self.batch_envelopes_max {
            let Ok(envelope) = self.queue.try_recv() else {
                break;
            };
            let Some((encoded, size, stamped)) = self.encode(envelope) else {
                continue;
            };
            if bytes + size > self.envelope_bytes_max() {
                self.carry = Some((encoded, size, stamped));
                break;
            }
            bytes += size;
            clock = clock.max(stamped);
            envelopes.push(encoded);
        }
        let clock = wire::clock_to(clock);
        bytes += clock.as_ref().map_or(0, wire::framed_clock_len);
        debug_assert!(
            bytes <= self.frame_bytes_max,
            "a frame never exceeds the limit"
        );
        debug_assert!(!envelopes.is_empty(), "a frame is never empty");
        Some((proto::Batch { envelopes, clock }, bytes))
    }

    /// What a frame's envelopes may take: the frame's limit less room for its clock.
    fn envelope_bytes_max(&self) -> usize {
        self.frame_bytes_max.saturating_sub(wire::CLOCK_FRAMED_MAX)
    }

    /// Encodes an envelope and measures it; one that can never fit into a frame is dropped
    /// here, logged, and never sent. Returns it with its size and clock.
    fn encode(&self, envelope: Envelope) -> Option<(proto::Envelope, usize, Timestamp)> {
        let kind = envelope.message.kind();
        let clock = envelope.clock;
        let encoded = wire::envelope_to_proto(envelope);
        let size = wire::framed_len(&encoded);
        if size > self.envelope_bytes_max() {
            let total = add(&self.counters.dropped_too_large, 1);
            let error = SyneviError::TooLarge {
                what: "envelope",
                size,
                limit: self.envelope_bytes_max(),
            };
            tracing::warn!(peer = self.peer, kind, total, %error,
                "dropped an envelope that can never be sent (raise frame_bytes_max or send \
                 smaller transactions)");
            return None;
        }
        Some((encoded, size, clock))
    }
}

/// Capped exponential back-off with jitter.
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    /// The ceiling of the next wait.
    current: Duration,
    /// State of a splitmix64 generator: the jitter needs no quality, only that nodes which
    /// lost a peer at the same moment do not all knock again at the same moment.
    random: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        debug_assert!(initial <= max, "validated by GrpcConfig::validate");
        Backoff {
            initial,
            max,
            current: initial,
            random: RandomState::new().build_hasher().finish(),
        }
    }

    /// The wait before the next attempt: a random point in the upper half of the current
    /// ceiling ("equal jitter"), so the wait still grows while attempts spread out. The
    /// ceiling then doubles, up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        let half = ceiling / 2;
        let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(self.next_random() % span.saturating_add(1));
        let delay = half + jitter;
        debug_assert!(delay <= ceiling, "the wait never exceeds its ceiling");
        delay
    }

    /// Starts over from `initial` (after a healthy stream).
    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }

    fn next_random(&mut self) -> u64 {
        self.random = self.random.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_reports_its_first_failure_and_a_long_unreachability_once() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut streak = Streak::new(start);
        // Nodes start one after another: the first refused connect is information.
        let first = streak.record(Failure::Unreachable, at(0), false, at(1));
        assert_eq!(first, Report::Loud);
        assert_eq!(
            streak.record(Failure::Unreachable, at(50), false, at(51)),
            Report::Quiet
        );
        let long = UNREACHABLE_WARN_AFTER.as_millis() as u64;
        assert_eq!(
            streak.record(Failure::Unreachable, at(long), false, at(long + 1)),
            Report::StillUnreachable
        );
        assert_eq!(
            streak.record(Failure::Unreachable, at(2 * long), false, at(2 * long)),
            Report::Quiet,
            "once a streak"
        );
        // A healthy session ends the streak: its loss is loud again, and the retries after
        // it quiet until the peer stays away for long.
        let up = 3 * long;
        assert_eq!(
            streak.record(Failure::Lost, at(up), true, at(up + 5_000)),
            Report::Loud
        );
        assert_eq!(
            streak.record(Failure::Unreachable, at(up + 5_050), false, at(up + 5_051)),
            Report::Quiet
        );
        assert_eq!(
            streak.record(Failure::Unreachable, at(up + long), false, at(up + long)),
            Report::StillUnreachable,
            "counted from the session that began the streak"
        );
    }

    #[test]
    fn a_peer_that_ends_its_stream_is_reported_each_time() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut streak = Streak::new(start);
        assert_eq!(
            streak.record(Failure::PeerClosed, at(0), true, at(2_000)),
            Report::Loud
        );
        assert_eq!(
            streak.record(Failure::Unreachable, at(2_050), false, at(2_051)),
            Report::Quiet,
            "its restart is not news"
        );
        assert_eq!(
            streak.record(Failure::PeerClosed, at(2_100), false, at(2_200)),
            Report::Loud
        );
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(1_000);
        let mut backoff = Backoff::new(initial, max);
        let mut ceiling = initial;
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(delay >= ceiling / 2, "{delay:?} below half of {ceiling:?}");
            assert!(delay <= ceiling, "{delay:?} above {ceiling:?}");
            ceiling = (ceiling * 2).min(max);
        }
        assert_eq!(backoff.current, max, "the ceiling is capped");
        backoff.reset();
        assert!(backoff.next_delay() <= initial);
    }

    #[test]
    fn backoff_jitter_varies() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| backoff.next_delay()).collect();
        assert!(delays.len() > 1, "jitter must spread the attempts");
    }
}
