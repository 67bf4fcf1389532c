//! Tests of what only the gRPC network has: frames and batching, size limits, checks on
//! what arrives, configuration errors and mutual TLS. What every network must do is in
//! `crate::conformance`.

use std::sync::Arc;
use std::time::Duration;

use synevi_types::{
    Bytes, Envelope, Keys, Message, Network, PreAccept, Serial, SyneviError, Timestamp, TxBody,
    Ulid, T0,
};
use tonic::codec::{Codec, EncodeBuf, Encoder, ProstCodec};

use super::*;
use crate::conformance::{self, GrpcHarness, MANY};
use crate::test_support::{channel_inbox, number_of, numbered, Received, DEADLINE};

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

fn fast_config() -> GrpcConfig {
    GrpcConfig {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(1),
        ..GrpcConfig::default()
    }
}

async fn started(serial: Serial, config: GrpcConfig) -> (GrpcNetwork, Received, String) {
    let network = GrpcNetwork::with_config(any_port(), String::new(), Ulid::new(), serial, config)
        .expect("a valid configuration");
    let (inbox, received) = channel_inbox();
    network.start(Arc::new(inbox)).await.expect("starts");
    let url = format!("http://{}", network.local_addr().expect("started"));
    (network, received, url)
}

/// Node 2 started with `config`, knowing node 1 as a member (at an address nobody serves):
/// what raw streams from "node 1" are checked against.
async fn node_2_knowing_node_1(config: GrpcConfig) -> (GrpcNetwork, Received, String) {
    let (node, inbox, url) = started(2, config).await;
    node.add_member(member(1, "http://127.0.0.1:1"))
        .await
        .expect("adds");
    (node, inbox, url)
}

fn member(serial: Serial, host: &str) -> Member {
    Member {
        node_id: Ulid::new(),
        serial,
        host: host.to_string(),
    }
}

fn pre_accept(from: Serial, to: Serial, payload_bytes: usize) -> Envelope {
    Envelope {
        from,
        to,
        message: Message::PreAccept(PreAccept {
            t0: T0(Timestamp::new(1, 0, from)),
            body: TxBody {
                id: 1,
                keys: Keys::All,
                payload: Bytes::from(vec![7u8; payload_bytes]),
            },
        }),
        clock: Timestamp::ZERO,
    }
}

#[tokio::test]
async fn envelopes_that_queue_up_travel_in_few_frames() {
    let mut harness = GrpcHarness::default();
    conformance::delivers_many_envelopes_quickly(&mut harness).await;
    let sender = harness.grpc(1).stats();
    let receiver = harness.grpc(2).stats();
    assert_eq!(sender.envelopes_sent, MANY);
    assert_eq!(receiver.envelopes_received, MANY);
    assert!(
        sender.batches_sent * 10 <= sender.envelopes_sent,
        "envelopes sent back to back share frames: {sender:?}"
    );
    assert_eq!(receiver.batches_received, sender.batches_sent);
    assert_eq!(
        sender.connections, 1,
        "one stream carried everything: {sender:?}"
    );
    assert_eq!(sender.dropped_queue_full, 0);
}

#[tokio::test]
async fn a_restarted_peer_is_reconnected() {
    let mut harness = GrpcHarness::default();
    conformance::reconnects_after_a_peer_restart(&mut harness).await;
    let sender = harness.grpc(1).stats();
    assert!(sender.connections >= 2, "reconnected: {sender:?}");
    assert!(
        sender.connection_failures >= 1,
        "noticed the restart: {sender:?}"
    );
}

/// A member may be added before the network starts (a node restarted from its store may
/// send before its application added the members): what is sent to it meanwhile waits in
/// its queue, and goes out once the network starts.
#[tokio::test]
async fn envelopes_for_a_member_added_before_the_start_wait_for_it() {
    let (two, mut two_received, two_url) = node_2_knowing_node_1(fast_config()).await;
    let one = GrpcNetwork::with_config(any_port(), String::new(), Ulid::new(), 1, fast_config())
        .expect("a valid configuration");
    one.add_member(member(2, &two_url))
        .await
        .expect("adds before the start");
    one.send(numbered(1, 2, 1));
    let before = one.stats();
    assert_eq!(before.dropped_unknown_destination, 0, "{before:?}");
    assert_eq!(before.envelopes_sent, 0, "nothing leaves before the start");

    let (inbox, _one_received) = channel_inbox();
    one.start(Arc::new(inbox)).await.expect("starts");
    let first = two_received
        .next("the envelope sent before the start")
        .await;
    assert_eq!(number_of(&first), Some(1));
    one.shutdown().await;
    two.shutdown().await;
}

/// A network that shuts down ends its streams: the receiver sees them end, not break (no
/// warning in its log), and what is sent after the shutdown is counted, not logged.
#[tokio::test]
async fn a_shutdown_ends_its_streams_instead_of_breaking_them() {
    let (one, _one_received, one_url) = started(1, fast_config()).await;
    let (two, mut two_received, two_url) = started(2, fast_config()).await;
    one.add_member(member(2, &two_url)).await.expect("adds");
    two.add_member(member(1, &one_url)).await.expect("adds");
    one.send(numbered(1, 2, 1));
    let first = two_received.next("the envelope before the shutdown").await;
    assert_eq!(number_of(&first), Some(1));

    one.shutdown().await;
    let receiver = two.stats();
    assert_eq!(receiver.closed_inbound_streams, 1, "{receiver:?}");
    assert_eq!(receiver.failed_inbound_streams, 0, "{receiver:?}");

    one.send(numbered(1, 2, 2));
    let sender = one.stats();
    assert_eq!(sender.dropped_disconnected, 1, "{sender:?}");
    assert_eq!(sender.dropped_unknown_destination, 0, "{sender:?}");
    two.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_peer_fills_only_its_own_queue() {
    let mut harness = GrpcHarness::default();
    conformance::unreachable_peer_does_not_block_others(&mut harness).await;
    let sender = harness.grpc(1).stats();
    assert!(
        sender.dropped_queue_full > 0,
        "the flood overflowed: {sender:?}"
    );
    assert!(
        sender.connection_failures >= 1,
        "9 cannot be reached: {sender:?}"
    );
    assert_eq!(harness.grpc(2).stats().envelopes_received, 100);
}

#[tokio::test]
async fn a_full_queue_drops_the_newest_envelopes() {
    let config = GrpcConfig {
        queue_envelopes_max: 10,
        ..fast_config()
    };
    let (a, _a_inbox, _) = started(1, config.clone()).await;
    let (b, mut b_inbox, b_url) = started(2, config).await;
    b.add_member(member(1, "http://127.0.0.1:1"))
        .await
        .expect("adds");
    a.add_member(member(2, &b_url)).await.expect("adds");
    // The peer task has not run yet (this test's runtime has one thread and it is busy
    // here), so the queue takes 10 and drops the other 90: the newest ones.
    for number in 0..100 {
        a.send(numbered(1, 2, number));
    }
    assert_eq!(a.stats().dropped_queue_full, 90);
    for number in 0..10 {
        let envelope = b_inbox.next("one of the queued envelopes").await;
        assert_eq!(number_of(&envelope), Some(number), "the oldest were kept");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_oversized_envelope_is_dropped_before_it_is_sent() {
    let config = GrpcConfig {
        frame_bytes_max: 8 * 1024,
        ..fast_config()
    };
    let (a, _a_inbox, a_url) = started(1, config.clone()).await;
    let (b, mut b_inbox, b_url) = started(2, config).await;
    b.add_member(member(1, &a_url)).await.expect("adds");
    a.add_member(member(2, &b_url)).await.expect("adds");

    a.send(pre_accept(1, 2, 16 * 1024));
    a.send(pre_accept(1, 2, 1024));
    let envelope = b_inbox.next("the envelope that fits").await;
    assert_eq!(envelope, pre_accept(1, 2, 1024));
    assert_eq!(a.stats().dropped_too_large, 1);
    // Envelopes that fit one by one but not together go in separate frames.
    for _ in 0..3 {
        a.send(pre_accept(1, 2, 3 * 1024));
    }
    for _ in 0..3 {
        assert_eq!(
            b_inbox.next("a large envelope").await,
            pre_accept(1, 2, 3 * 1024)
        );
    }
    assert!(b_inbox
        .next_within(Duration::from_millis(50))
        .await
        .is_none());
    assert_eq!(a.stats().dropped_too_large, 1);
    a.shutdown().await;
    b.shutdown().await;
}

/// Sends pre-encoded frames, bypassing the sender's checks, as a buggy or hostile peer
/// would.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buffer: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buffer, &item);
        Ok(())
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = proto::StreamSummary;
    type Encoder = RawEncoder;
    type Decoder = <ProstCodec<proto::Batch, proto::StreamSummary> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<proto::Batch, proto::StreamSummary>::default().decoder()
    }
}

/// Opens a stream to `url`, sends `frames` as they are, closes it and returns the answer.
async fn send_raw(url: &str, frames: Vec<Vec<u8>>) -> Result<proto::StreamSummary, tonic::Status> {
    let channel = Endpoint::from_shared(url.to_string())
        .expect("a URL")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/synevi.v1.Peer/Stream");
    let stream = tokio_stream::iter(frames);
    grpc.client_streaming(tonic::Request::new(stream), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

fn encode_batch(envelopes: Vec<proto::Envelope>) -> Vec<u8> {
    prost::Message::encode_to_vec(&proto::Batch {
        envelopes,
        clock: None,
    })
}

#[tokio::test]
async fn misaddressed_foreign_and_malformed_envelopes_are_dropped_one_by_one() {
    let (node, mut inbox, url) = node_2_knowing_node_1(fast_config()).await;

    let good = wire::envelope_to_proto(numbered(1, 2, 1));
    let misaddressed = wire::envelope_to_proto(numbered(1, 7, 2));
    let foreign = wire::envelope_to_proto(numbered(99, 2, 3));
    let mut malformed = wire::envelope_to_proto(numbered(1, 2, 4));
    malformed.message = None;
    let last = wire::envelope_to_proto(numbered(1, 2, 5));
    let frame = encode_batch(vec![good, misaddressed, foreign, malformed, last]);

    let summary = send_raw(&url, vec![frame])
        .await
        .expect("the stream is answered");
    assert_eq!(
        (summary.envelopes_accepted, summary.envelopes_rejected),
        (2, 3)
    );
    assert_eq!(number_of(&inbox.next("the good envelope").await), Some(1));
    assert_eq!(number_of(&inbox.next("the last envelope").await), Some(5));
    assert!(inbox.try_next().is_none());
    let stats = node.stats();
    assert_eq!((stats.envelopes_received, stats.rejected_envelopes), (2, 3));
    node.shutdown().await;
}

/// A frame's clock goes to the last envelope delivered from it (here one before a malformed
/// last one), the others carry none; a malformed clock is ignored and counted, and its
/// frame's envelopes are delivered all the same.
#[tokio::test]
async fn a_frames_clock_goes_to_its_last_delivered_envelope() {
    let (node, mut inbox, url) = node_2_knowing_node_1(fast_config()).await;
    let frame = |numbers: &[u64], clock: proto::Timestamp| {
        let mut envelopes: Vec<proto::Envelope> = numbers
            .iter()
            .map(|number| wire::envelope_to_proto(numbered(1, 2, *number)))
            .collect();
        if let Some(last) = envelopes.last_mut() {
            if numbers.len() == 3 {
                last.message = None;
            }
        }
        prost::Message::encode_to_vec(&proto::Batch {
            envelopes,
            clock: Some(clock),
        })
    };
    let clock = proto::Timestamp {
        time: 50,
        counter: 1,
        serial: 1,
    };
    let bad_clock = proto::Timestamp {
        serial: 70_000,
        ..clock
    };
    let frames = vec![frame(&[1, 2, 3], clock), frame(&[4], bad_clock)];
    send_raw(&url, frames)
        .await
        .expect("the stream is answered");
    let first = inbox.next("envelope 1").await;
    let second = inbox.next("envelope 2").await;
    let fourth = inbox.next("envelope 4").await;
    assert_eq!(
        [&first, &second, &fourth].map(number_of),
        [Some(1), Some(2), Some(4)]
    );
    assert_eq!(first.clock, Timestamp::ZERO);
    assert_eq!(second.clock, Timestamp::new(50, 1, 1));
    assert_eq!(fourth.clock, Timestamp::ZERO, "the bad clock was ignored");
    let stats = node.stats();
    assert_eq!((stats.rejected_envelopes, stats.rejected_clocks), (1, 1));
    node.shutdown().await;
}

#[tokio::test]
async fn undecodable_and_oversized_frames_end_only_their_stream() {
    let config = GrpcConfig {
        frame_bytes_max: 8 * 1024,
        ..fast_config()
    };
    let (node, mut inbox, url) = node_2_knowing_node_1(config).await;

    let garbage = vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let status = send_raw(&url, vec![garbage]).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");

    let oversized = encode_batch(vec![wire::envelope_to_proto(pre_accept(1, 2, 16 * 1024))]);
    let status = send_raw(&url, vec![oversized]).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert_eq!(node.stats().failed_inbound_streams, 2);

    // The node is unharmed: the next stream is served.
    let frame = encode_batch(vec![wire::envelope_to_proto(numbered(1, 2, 1))]);
    let summary = send_raw(&url, vec![frame]).await.expect("served");
    assert_eq!(summary.envelopes_accepted, 1);
    assert_eq!(number_of(&inbox.next("the envelope after").await), Some(1));
    node.shutdown().await;
}

#[tokio::test]
async fn configuration_errors_are_reported_clearly() {
    let small = GrpcConfig {
        frame_bytes_max: 100,
        ..GrpcConfig::default()
    };
    let error = GrpcNetwork::with_config(any_port(), String::new(), Ulid::new(), 1, small)
        .err()
        .expect("refused");
    assert!(matches!(&error, SyneviError::InvalidConfig(m) if m.contains("frame_bytes_max")));

    let backwards = GrpcConfig {
        backoff_initial: Duration::from_secs(10),
        backoff_max: Duration::from_secs(1),
        ..GrpcConfig::default()
    };
    assert!(backwards.validate().is_err());
    assert!(GrpcConfig {
        queue_envelopes_max: 0,
        ..GrpcConfig::default()
    }
    .validate()
    .is_err());

    let missing = GrpcConfig {
        tls: Some(TlsConfig::new(
            "/nonexistent/cert.pem",
            "/nonexistent/key.pem",
            "/ca",
        )),
        ..GrpcConfig::default()
    };
    let error = GrpcNetwork::with_config(any_port(), String::new(), Ulid::new(), 1, missing)
        .err()
        .expect("refused");
    assert!(
        matches!(&error, SyneviError::InvalidConfig(m) if m.contains("/nonexistent/cert.pem")),
        "{error}"
    );

    let network = GrpcNetwork::new(any_port(), String::new(), Ulid::new(), 1);
    for (host, needle) in [
        ("not a url", "not a URL"),
        ("ftp://127.0.0.1:1", "scheme"),
        ("https://127.0.0.1:1", "TLS"),
    ] {
        let error = network.add_member(member(2, host)).await.expect_err(host);
        assert!(
            matches!(&error, SyneviError::InvalidConfig(m) if m.contains(needle)),
            "{host}: {error}"
        );
    }
    assert!(
        network
            .add_member(member(1, "http://127.0.0.1:1"))
            .await
            .is_err(),
        "itself"
    );

    let (inbox, _received) = channel_inbox();
    let inbox: Arc<dyn synevi_types::Inbox> = Arc::new(inbox);
    network.start(inbox.clone()).await.expect("starts");
    assert!(network.start(inbox.clone()).await.is_err(), "starts once");
    let taken = network.local_addr().expect("started");
    let second = GrpcNetwork::new(taken, String::new(), Ulid::new(), 3);
    let error = second
        .start(inbox.clone())
        .await
        .expect_err("the port is taken");
    assert!(
        matches!(&error, SyneviError::Network(m) if m.contains("cannot listen")),
        "{error}"
    );

    network.shutdown().await;
    assert_eq!(network.start(inbox).await, Err(SyneviError::ShutDown));
    // Sending after shutdown is a counted drop, never a panic.
    network.send(numbered(1, 2, 0));
}

/// Certificates made at test time, in a temporary directory: nothing secret is checked in.
mod pki {
    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };

    use crate::TlsConfig;

    pub(super) struct Ca {
        cert: Certificate,
        key: KeyPair,
    }

    impl Ca {
        pub(super) fn new(name: &str) -> Ca {
            let key = KeyPair::generate().expect("a key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = params.self_signed(&key).expect("a CA certificate");
            Ca { cert, key }
        }

        pub(super) fn pem(&self) -> String {
            self.cert.pem()
        }

        /// A node certificate for 127.0.0.1 and localhost, written with its key to `dir`;
        /// `trusted` is the CA bundle the node trusts.
        pub(super) fn issue(&self, dir: &Path, name: &str, trusted: &str) -> TlsConfig {
            let key = KeyPair::generate().expect("a key");
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                    .expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params
                .signed_by(&key, &self.cert, &self.key)
                .expect("a node certificate");
            let write = |file: String, contents: String| -> PathBuf {
                let path = dir.join(file);
                std::fs::write(&path, contents).expect("writes");
                path
            };
            TlsConfig::new(
                write(format!("{name}.pem"), cert.pem()),
                write(format!("{name}.key"), key.serialize_pem()),
                write(format!("{name}-ca.pem"), trusted.to_string()),
            )
        }
    }
}

#[tokio::test]
async fn mutual_tls_admits_members_and_refuses_others() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = pki::Ca::new("synevi test CA");
    let rogue_ca = pki::Ca::new("rogue CA");
    let tls_config = |tls: TlsConfig| GrpcConfig {
        tls: Some(tls),
        ..fast_config()
    };

    // Three members with certificates from the cluster's CA.
    let mut nodes = Vec::new();
    for serial in 1..=3u16 {
        let tls = ca.issue(dir.path(), &format!("node{serial}"), &ca.pem());
        let (network, inbox, url) = started(serial, tls_config(tls)).await;
        nodes.push((serial, network, inbox, url));
    }
    for (from, network, _, _) in &nodes {
        for (to, _, _, url) in nodes.iter().filter(|(to, ..)| to != from) {
            // `http` URLs are upgraded to TLS: a node with TLS never talks plain text.
            network.add_member(member(*to, url)).await.expect("adds");
        }
    }
    for (from, network, _, _) in &nodes {
        for to in (1..=3u16).filter(|to| to != from) {
            network.send(numbered(*from, to, u64::from(*from)));
        }
    }
    for (serial, _, inbox, _) in &mut nodes {
        let mut senders = Vec::new();
        for _ in 0..2 {
            let envelope = inbox.next("an envelope over mutual TLS").await;
            assert_eq!(envelope.to, *serial);
            assert_eq!(number_of(&envelope), Some(u64::from(envelope.from)));
            senders.push(envelope.from);
        }
        senders.sort_unstable();
        let expected: Vec<Serial> = (1..=3u16).filter(|s| s != serial).collect();
        assert_eq!(senders, expected);
    }

    // Two intruders that node 1 lists as members, so only TLS can keep them out:
    // 4 speaks plain HTTP/2 (no certificate at all); 5 has a certificate from another CA
    // (and trusts the cluster's CA, so it could verify node 1's certificate).
    let victim_url = nodes[0].3.clone();
    nodes[0]
        .1
        .add_member(member(4, "http://127.0.0.1:1"))
        .await
        .expect("adds");
    nodes[0]
        .1
        .add_member(member(5, "http://127.0.0.1:1"))
        .await
        .expect("adds");
    let (plain, _plain_inbox, _) = started(4, fast_config()).await;
    plain
        .add_member(member(1, &victim_url))
        .await
        .expect("adds");
    let both = format!("{}{}", ca.pem(), rogue_ca.pem());
    let rogue_tls = rogue_ca.issue(dir.path(), "rogue", &both);
    let (rogue, _rogue_inbox, _) = started(5, tls_config(rogue_tls)).await;
    rogue
        .add_member(member(1, &victim_url))
        .await
        .expect("adds");

    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut number = 0;
    while plain.stats().connection_failures < 3 || rogue.stats().connection_failures < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the intruders kept their streams: {:?} {:?}",
            plain.stats(),
            rogue.stats()
        );
        plain.send(numbered(4, 1, number));
        rogue.send(numbered(5, 1, number));
        number += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A member's envelope sent after all that arrives, and it is the only one there is.
    nodes[1].1.send(numbered(2, 1, 99));
    let (_, victim, inbox, _) = &mut nodes[0];
    let envelope = inbox.next("the member's envelope").await;
    assert_eq!((envelope.from, number_of(&envelope)), (2, Some(99)));
    assert!(
        inbox.try_next().is_none(),
        "nothing from the intruders arrived"
    );
    assert_eq!(victim.stats().envelopes_received, 3);
    assert_eq!(
        victim.stats().rejected_envelopes,
        0,
        "refused at the handshake, not later"
    );

    plain.shutdown().await;
    rogue.shutdown().await;
    for (_, network, _, _) in &nodes {
        network.shutdown().await;
    }
}

#[tokio::test]
async fn a_stalled_peer_is_detected_and_retried_without_holding_up_others() {
    // A "peer" whose process accepted the connections and then stopped (think SIGSTOP):
    // it never reads, never writes, never answers a ping.
    let stalled = tokio::net::TcpListener::bind(any_port())
        .await
        .expect("binds");
    let stalled_url = format!("http://{}", stalled.local_addr().expect("bound"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = stalled.accept().await {
            held.push(socket);
        }
    });
    let config = GrpcConfig {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(300),
        ..fast_config()
    };
    let (a, _a_inbox, a_url) = started(1, config.clone()).await;
    let (b, mut b_inbox, b_url) = started(2, config).await;
    b.add_member(member(1, &a_url)).await.expect("adds");
    a.add_member(member(2, &b_url)).await.expect("adds");
    a.add_member(member(9, &stalled_url)).await.expect("adds");

    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut number = 0;
    // The stalled stream is found dead by its unanswered pings and opened again, more
    // than once, while the healthy peer gets everything.
    while a.stats().connection_failures < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled peer was never given up on: {:?}",
            a.stats()
        );
        for _ in 0..100 {
            a.send(pre_accept(1, 9, 1024));
        }
        a.send(numbered(1, 2, number));
        let envelope = b_inbox.next("an envelope for the healthy peer").await;
        assert_eq!(number_of(&envelope), Some(number));
        number += 1;
    }
    assert!(a.stats().connections >= 2, "{:?}", a.stats());
    a.shutdown().await;
    b.shutdown().await;
    hold.abort();
}
