//! The `Network` conformance suite: what every network must do, run against both
//! [`crate::LocalNetwork`] and [`crate::GrpcNetwork`].
//!
//! A [`Harness`] starts, connects and restarts nodes of one kind of network; each suite
//! function drives it through one property. Tests await deliveries (channels) instead of
//! sleeping; where a reconnection has to happen, they poll with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use synevi_types::{Envelope, Member, Network, Serial, Timestamp, Ulid};

use crate::test_support::{
    channel_inbox, every_message_kind, number_of, numbered, Received, DEADLINE,
};
use crate::{GrpcConfig, GrpcNetwork, LocalHub};

/// Starts, connects and restarts the nodes of one kind of network.
#[async_trait::async_trait]
pub(crate) trait Harness: Send {
    /// Starts a fresh node `serial`; returns the test's end of its inbox.
    async fn start(&mut self, serial: Serial) -> Received;
    /// Makes `to` a member of `from` (both must be started).
    async fn connect(&mut self, from: Serial, to: Serial);
    /// The network of node `serial`.
    fn network(&self, serial: Serial) -> Arc<dyn Network>;
    /// Stops node `serial` and starts a fresh one in its place (same address), which knows
    /// the members the old one knew.
    async fn restart(&mut self, serial: Serial) -> Received;
    /// Makes `unreachable` a member of `from` that nothing answers for.
    async fn add_unreachable(&mut self, from: Serial, unreachable: Serial);
    /// Envelopes the network of `serial` dropped as undeliverable so far.
    fn dropped(&self, serial: Serial) -> u64;
    /// Stops every node.
    async fn shutdown_all(&mut self);
}

/// Starts nodes `serials` and makes every one a member of every other.
async fn cluster<H: Harness>(harness: &mut H, serials: &[Serial]) -> BTreeMap<Serial, Received> {
    let mut inboxes = BTreeMap::new();
    for &serial in serials {
        inboxes.insert(serial, harness.start(serial).await);
    }
    for &from in serials {
        for &to in serials.iter().filter(|&&to| to != from) {
            harness.connect(from, to).await;
        }
    }
    inboxes
}

fn get(inboxes: &mut BTreeMap<Serial, Received>, serial: Serial) -> &mut Received {
    inboxes.get_mut(&serial).expect("the node was started")
}

/// Every message kind, with every field, arrives unaltered and in order.
pub(crate) async fn delivers_every_message_type_intact<H: Harness>(harness: &mut H) {
    let mut inboxes = cluster(harness, &[1, 2]).await;
    let sent: Vec<Envelope> = every_message_kind()
        .into_iter()
        .map(|message| Envelope {
            from: 1,
            to: 2,
            message,
            clock: Timestamp::ZERO,
        })
        .collect();
    for envelope in &sent {
        harness.network(1).send(envelope.clone());
    }
    let inbox = get(&mut inboxes, 2);
    for expected in &sent {
        let received = inbox.next(expected.message.kind()).await;
        assert_eq!(&received, expected);
    }
    harness.shutdown_all().await;
}

/// Without faults, each link delivers everything, in the order it was sent, even when
/// several senders interleave.
pub(crate) async fn keeps_fifo_order_per_link<H: Harness>(harness: &mut H) {
    const PER_SENDER: u64 = 2_000;
    let mut inboxes = cluster(harness, &[1, 2, 3]).await;
    for number in 0..PER_SENDER {
        harness.network(1).send(numbered(1, 3, number));
        harness.network(2).send(numbered(2, 3, number));
    }
    let inbox = get(&mut inboxes, 3);
    let mut next_expected: BTreeMap<Serial, u64> = BTreeMap::from([(1, 0), (2, 0)]);
    for _ in 0..2 * PER_SENDER {
        let envelope = inbox.next("an ordered envelope").await;
        assert_eq!(envelope.to, 3);
        let number = number_of(&envelope).expect("a numbered envelope");
        let expected = next_expected
            .get_mut(&envelope.from)
            .expect("only 1 and 2 send");
        assert_eq!(
            number, *expected,
            "link {} -> 3 reordered or lost",
            envelope.from
        );
        *expected += 1;
    }
    assert_eq!(
        next_expected,
        BTreeMap::from([(1, PER_SENDER), (2, PER_SENDER)])
    );
    harness.shutdown_all().await;
}

/// Every envelope arrives with the clock it was sent with, or with none
/// ([`Timestamp::ZERO`]: a network that batches carries it once per batch, on the batch's
/// last envelope, which gets the highest of the batch, its own where clocks rise as here);
/// and the last one sent brings its clock, so the receiver always learns the sender's
/// latest.
pub(crate) async fn carries_the_senders_clock<H: Harness>(harness: &mut H) {
    const COUNT: u64 = 2_000;
    let mut inboxes = cluster(harness, &[1, 2]).await;
    let stamped = |number: u64| Envelope {
        clock: Timestamp::new(1_000 + number, 0, 1),
        ..numbered(1, 2, number)
    };
    for number in 0..COUNT {
        harness.network(1).send(stamped(number));
    }
    let inbox = get(&mut inboxes, 2);
    let mut told = 0;
    for number in 0..COUNT {
        let envelope = inbox.next("a stamped envelope").await;
        assert_eq!(number_of(&envelope), Some(number), "in order");
        if envelope.clock != Timestamp::ZERO {
            assert_eq!(
                envelope.clock,
                stamped(number).clock,
                "its own clock or none"
            );
            told += 1;
        }
        if number == COUNT - 1 {
            assert_eq!(
                envelope.clock,
                stamped(number).clock,
                "the last tells the latest"
            );
        }
    }
    assert!(told >= 1);
    harness.shutdown_all().await;
}

/// How many envelopes [`delivers_many_envelopes_quickly`] sends.
pub(crate) const MANY: u64 = 10_000;

/// Many envelopes sent back to back all arrive (the gRPC network batches them; its own
/// test checks the frames).
pub(crate) async fn delivers_many_envelopes_quickly<H: Harness>(harness: &mut H) {
    let mut inboxes = cluster(harness, &[1, 2]).await;
    let network = harness.network(1);
    for number in 0..MANY {
        network.send(numbered(1, 2, number));
    }
    let inbox = get(&mut inboxes, 2);
    for number in 0..MANY {
        let envelope = inbox.next("one of many envelopes").await;
        assert_eq!(number_of(&envelope), Some(number));
    }
    harness.shutdown_all().await;
}

/// A restarted peer is reached again, and what is sent after it is back arrives.
pub(crate) async fn reconnects_after_a_peer_restart<H: Harness>(harness: &mut H) {
    let mut inboxes = cluster(harness, &[1, 2]).await;
    harness.network(1).send(numbered(1, 2, 0));
    get(&mut inboxes, 2).next("the first envelope").await;

    let mut restarted = harness.restart(2).await;
    // Poll: send until the new incarnation hears from 1 (the sender has to notice the
    // broken stream and reconnect, with back-off), with a deadline.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut probe = 1;
    loop {
        harness.network(1).send(numbered(1, 2, probe));
        if restarted
            .next_within(Duration::from_millis(50))
            .await
            .is_some()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 1 did not reach the restarted node 2 within {DEADLINE:?}"
        );
        probe += 1;
    }
    // The link is back: everything sent from now on arrives, in order (after any probes
    // still in flight).
    const LATER: u64 = 1_000_000;
    for number in LATER..LATER + 100 {
        harness.network(1).send(numbered(1, 2, number));
    }
    let mut expected = LATER;
    while expected < LATER + 100 {
        let envelope = restarted.next("an envelope sent after the restart").await;
        let number = number_of(&envelope).expect("numbered");
        if number < LATER {
            continue; // a late probe
        }
        assert_eq!(number, expected);
        expected += 1;
    }
    // The restarted node can answer too.
    harness.network(2).send(numbered(2, 1, 7));
    let answer = get(&mut inboxes, 1)
        .next("an answer from the restarted node")
        .await;
    assert_eq!(number_of(&answer), Some(7));
    harness.shutdown_all().await;
}

/// Flooding an unreachable member neither blocks `send` nor delays the reachable ones.
pub(crate) async fn unreachable_peer_does_not_block_others<H: Harness>(harness: &mut H) {
    let mut inboxes = cluster(harness, &[1, 2]).await;
    harness.add_unreachable(1, 9).await;
    let network = harness.network(1);
    // Far more than any queue holds: `send` must keep returning (dropping) all the same.
    for number in 0..50_000 {
        network.send(numbered(1, 9, number));
    }
    for number in 0..100 {
        network.send(numbered(1, 2, number));
    }
    let inbox = get(&mut inboxes, 2);
    for number in 0..100 {
        let envelope = inbox.next("an envelope for the reachable peer").await;
        assert_eq!(number_of(&envelope), Some(number));
    }
    harness.shutdown_all().await;
}

/// An envelope for a serial that is not a member is dropped (and counted), and nobody
/// receives it.
pub(crate) async fn drops_unknown_destination<H: Harness>(harness: &mut H) {
    let mut inboxes = cluster(harness, &[1, 2]).await;
    let before = harness.dropped(1);
    harness.network(1).send(numbered(1, 42, 0));
    assert_eq!(harness.dropped(1), before + 1, "the drop is counted");
    harness.network(1).send(numbered(1, 2, 1));
    let inbox = get(&mut inboxes, 2);
    let envelope = inbox.next("the envelope for a member").await;
    assert_eq!(number_of(&envelope), Some(1));
    assert_eq!(envelope.to, 2);
    assert!(inbox.try_next().is_none(), "nothing else arrived");
    harness.shutdown_all().await;
}

/// Generates one test per suite function for a harness.
macro_rules! conformance_tests {
    ($make:expr) => {
        #[tokio::test]
        async fn delivers_every_message_type_intact() {
            crate::conformance::delivers_every_message_type_intact(&mut $make).await;
        }

        #[tokio::test]
        async fn carries_the_senders_clock() {
            crate::conformance::carries_the_senders_clock(&mut $make).await;
        }

        #[tokio::test]
        async fn keeps_fifo_order_per_link() {
            crate::conformance::keeps_fifo_order_per_link(&mut $make).await;
        }

        #[tokio::test]
        async fn delivers_many_envelopes_quickly() {
            crate::conformance::delivers_many_envelopes_quickly(&mut $make).await;
        }

        #[tokio::test]
        async fn reconnects_after_a_peer_restart() {
            crate::conformance::reconnects_after_a_peer_restart(&mut $make).await;
        }

        #[tokio::test]
        async fn unreachable_peer_does_not_block_others() {
            crate::conformance::unreachable_peer_does_not_block_others(&mut $make).await;
        }

        #[tokio::test]
        async fn drops_unknown_destination() {
            crate::conformance::drops_unknown_destination(&mut $make).await;
        }
    };
}

/// [`Harness`] over a [`LocalHub`].
#[derive(Default)]
pub(crate) struct LocalHarness {
    hub: LocalHub,
}

#[async_trait::async_trait]
impl Harness for LocalHarness {
    async fn start(&mut self, serial: Serial) -> Received {
        let (inbox, received) = channel_inbox();
        self.hub
            .network(serial)
            .start(Arc::new(inbox))
            .await
            .expect("starts");
        received
    }

    async fn connect(&mut self, from: Serial, to: Serial) {
        let member = Member {
            node_id: Ulid::new(),
            serial: to,
            host: format!("local:{to}"),
        };
        self.hub
            .network(from)
            .add_member(member)
            .await
            .expect("adds");
    }

    fn network(&self, serial: Serial) -> Arc<dyn Network> {
        Arc::new(self.hub.network(serial))
    }

    async fn restart(&mut self, serial: Serial) -> Received {
        self.hub.network(serial).shutdown().await;
        self.start(serial).await
    }

    async fn add_unreachable(&mut self, from: Serial, unreachable: Serial) {
        // A member no node runs as: the hub drops what is sent to it.
        self.connect(from, unreachable).await;
    }

    fn dropped(&self, _serial: Serial) -> u64 {
        self.hub.dropped()
    }

    async fn shutdown_all(&mut self) {}
}

/// [`Harness`] over [`GrpcNetwork`]s on 127.0.0.1 with ports picked by the OS.
pub(crate) struct GrpcHarness {
    config: GrpcConfig,
    nodes: BTreeMap<Serial, (GrpcNetwork, SocketAddr)>,
    /// `(from, to)`: `to` is a member of `from`.
    members: BTreeSet<(Serial, Serial)>,
}

impl Default for GrpcHarness {
    fn default() -> Self {
        GrpcHarness::with_config(GrpcConfig {
            // Short waits keep the restart test quick.
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(1),
            ..GrpcConfig::default()
        })
    }
}

impl GrpcHarness {
    pub(crate) fn with_config(config: GrpcConfig) -> Self {
        GrpcHarness {
            config,
            nodes: BTreeMap::new(),
            members: BTreeSet::new(),
        }
    }

    /// The gRPC network of node `serial`.
    pub(crate) fn grpc(&self, serial: Serial) -> &GrpcNetwork {
        &self.nodes.get(&serial).expect("the node was started").0
    }

    fn url(&self, serial: Serial) -> String {
        let (_, addr) = self.nodes.get(&serial).expect("the node was started");
        format!("http://{addr}")
    }

    async fn start_at(&mut self, serial: Serial, addr: SocketAddr) -> Received {
        let network = GrpcNetwork::with_config(
            addr,
            format!("http://{addr}"),
            Ulid::new(),
            serial,
            self.config.clone(),
        )
        .expect("a valid configuration");
        let (inbox, received) = channel_inbox();
        let inbox = Arc::new(inbox);
        // A restarted node binds the port its predecessor just released; allow the OS a
        // moment if it is not free yet.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match network.start(inbox.clone()).await {
                Ok(()) => break,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%error, "retrying start");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("node {serial} cannot start at {addr}: {error}"),
            }
        }
        let local = network.local_addr().expect("started");
        self.nodes.insert(serial, (network, local));
        received
    }
}

#[async_trait::async_trait]
impl Harness for GrpcHarness {
    async fn start(&mut self, serial: Serial) -> Received {
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        self.start_at(serial, any_port).await
    }

    async fn connect(&mut self, from: Serial, to: Serial) {
        let member = Member {
            node_id: Ulid::new(),
            serial: to,
            host: self.url(to),
        };
        self.grpc(from).add_member(member).await.expect("adds");
        self.members.insert((from, to));
    }

    fn network(&self, serial: Serial) -> Arc<dyn Network> {
        Arc::new(self.grpc(serial).clone())
    }

    async fn restart(&mut self, serial: Serial) -> Received {
        let (old, addr) = self.nodes.remove(&serial).expect("the node was started");
        old.shutdown().await;
        let received = self.start_at(serial, addr).await;
        let known: Vec<Serial> = self
            .members
            .iter()
            .filter(|(from, _)| *from == serial)
            .map(|(_, to)| *to)
            .collect();
        for to in known {
            self.connect(serial, to).await;
        }
        received
    }

    async fn add_unreachable(&mut self, from: Serial, unreachable: Serial) {
        // Port 1 on loopback: nothing listens there, connecting is refused at once.
        let member = Member {
            node_id: Ulid::new(),
            serial: unreachable,
            host: "http://127.0.0.1:1".into(),
        };
        self.grpc(from).add_member(member).await.expect("adds");
    }

    fn dropped(&self, serial: Serial) -> u64 {
        let stats = self.grpc(serial).stats();
        stats.dropped_unknown_destination + stats.dropped_queue_full + stats.dropped_too_large
    }

    async fn shutdown_all(&mut self) {
        for (network, _) in self.nodes.values() {
            network.shutdown().await;
        }
    }
}

mod local {
    conformance_tests!(super::LocalHarness::default());
}

mod grpc {
    conformance_tests!(super::GrpcHarness::default());
}
