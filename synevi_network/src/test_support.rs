//! Test helpers shared by the unit tests and the conformance suite: sample messages of
//! every kind, proptest strategies, and an inbox that tests can await.

use std::time::Duration;

use proptest::prelude::*;
use synevi_types::{
    Accept, AcceptInvalidate, AcceptInvalidateOk, AcceptOk, Applied, Ballot, BeginRecovery, Bytes,
    Commit, CommitInvalidate, Deps, Envelope, Forget, Inbox, Inquire, Key, Keys, Message, Nack,
    PreAccept, PreAcceptOk, RecoverOk, Serial, Status, Timestamp, TxBody, T, T0,
};
use tokio::sync::mpsc;

/// Every status, so strategies and samples cover them all.
pub(crate) const STATUSES: [Status; 7] = [
    Status::Promised,
    Status::PreAccepted,
    Status::Accepted,
    Status::AcceptedInvalidate,
    Status::Committed,
    Status::Applied,
    Status::Invalidated,
];

pub(crate) fn timestamp() -> impl Strategy<Value = Timestamp> {
    (any::<u64>(), any::<u32>(), any::<u16>())
        .prop_map(|(time, counter, serial)| Timestamp::new(time, counter, serial))
}

fn t0() -> impl Strategy<Value = T0> {
    timestamp().prop_map(T0)
}

fn t() -> impl Strategy<Value = T> {
    timestamp().prop_map(T)
}

fn ballot() -> impl Strategy<Value = Ballot> {
    (any::<u32>(), any::<u16>()).prop_map(|(round, serial)| Ballot { round, serial })
}

fn deps() -> impl Strategy<Value = Deps> {
    proptest::collection::vec(t0(), 0..20).prop_map(Deps::from_unsorted)
}

fn t0s() -> impl Strategy<Value = Vec<T0>> {
    proptest::collection::vec(t0(), 0..20)
}

fn keys() -> impl Strategy<Value = Keys> {
    prop_oneof![
        Just(Keys::All),
        proptest::collection::btree_set(
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Key::from),
            0..6
        )
        .prop_map(Keys::set),
    ]
}

fn body() -> impl Strategy<Value = TxBody> {
    (
        any::<u128>(),
        keys(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(id, keys, payload)| TxBody {
            id,
            keys,
            payload: Bytes::from(payload),
        })
}

fn status() -> impl Strategy<Value = Status> {
    proptest::sample::select(STATUSES.to_vec())
}

/// Any message of any kind, with arbitrary field values.
pub(crate) fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (t0(), body()).prop_map(|(t0, body)| Message::PreAccept(PreAccept { t0, body })),
        (t0(), t(), deps()).prop_map(|(t0, t, deps)| Message::PreAcceptOk(PreAcceptOk {
            t0,
            t,
            deps
        })),
        (t0(), ballot(), t(), deps(), body()).prop_map(|(t0, ballot, t, deps, body)| {
            Message::Accept(Accept {
                t0,
                ballot,
                t,
                deps,
                body,
            })
        }),
        (t0(), ballot(), deps()).prop_map(|(t0, ballot, deps)| Message::AcceptOk(AcceptOk {
            t0,
            ballot,
            deps
        })),
        (t0(), t(), deps(), body()).prop_map(|(t0, t, deps, body)| Message::Commit(Commit {
            t0,
            t,
            deps,
            body
        })),
        (t0(), ballot()).prop_map(|(t0, promised)| Message::Nack(Nack { t0, promised })),
        (t0(), ballot(), proptest::option::of(body())).prop_map(|(t0, ballot, body)| {
            Message::BeginRecovery(BeginRecovery { t0, ballot, body })
        }),
        (
            (t0(), ballot(), status(), ballot(), t()),
            (
                deps(),
                proptest::option::of(body()),
                any::<bool>(),
                deps(),
                deps()
            ),
        )
            .prop_map(
                |(
                    (t0, ballot, status, accepted, t),
                    (deps, body, rejects_fast_path, committed, accepted_no_witness),
                )| {
                    Message::RecoverOk(RecoverOk {
                        t0,
                        ballot,
                        status,
                        accepted,
                        t,
                        deps,
                        body,
                        rejects_fast_path,
                        earlier_committed_witness: committed,
                        wait_for_commit: accepted_no_witness,
                    })
                }
            ),
        (t0(), ballot())
            .prop_map(|(t0, ballot)| Message::AcceptInvalidate(AcceptInvalidate { t0, ballot })),
        (t0(), ballot()).prop_map(
            |(t0, ballot)| Message::AcceptInvalidateOk(AcceptInvalidateOk { t0, ballot })
        ),
        t0().prop_map(|t0| Message::CommitInvalidate(CommitInvalidate { t0 })),
        (t0s(), t0s()).prop_map(|(t0s, committed)| Message::Applied(Applied { t0s, committed })),
        (t0(), t0s(), timestamp(), t0s(), any::<u32>()).prop_map(
            |(floor, t0s, decided_floor, settled, settled_holders)| {
                Message::Forget(Forget {
                    floor,
                    t0s,
                    decided_floor,
                    settled,
                    settled_holders,
                })
            }
        ),
        t0s().prop_map(|t0s| Message::Inquire(Inquire { t0s })),
    ]
}

/// Any envelope.
pub(crate) fn envelope() -> impl Strategy<Value = Envelope> {
    // No clock: a batch carries it, not an envelope (`wire::clock_to`).
    (any::<u16>(), any::<u16>(), message()).prop_map(|(from, to, message)| Envelope {
        from,
        to,
        message,
        clock: Timestamp::ZERO,
    })
}

fn ts(time: u64, counter: u32, serial: Serial) -> Timestamp {
    Timestamp::new(time, counter, serial)
}

/// One message of every kind, with fields that are neither zero nor default (and edge
/// values: the largest u128 id, `Keys::All` next to an empty key set, `None` bodies).
pub(crate) fn every_message_kind() -> Vec<Message> {
    let t0 = T0(ts(1_700_000_000_123, 7, 3));
    let t = T(ts(1_700_000_000_125, 0, 2));
    let ballot = Ballot {
        round: 4,
        serial: 2,
    };
    let deps = Deps::from_unsorted(vec![T0(ts(5, 1, 1)), T0(ts(3, 0, 2)), T0(ts(9, 9, 3))]);
    let body = |id: u128, keys: Keys| TxBody {
        id,
        keys,
        payload: Bytes::from_static(b"This is a transaction"),
    };
    let some_keys = Keys::set(["a", "b\u{0}c", "\u{1F600}"]);
    let no_keys = Keys::none();
    let messages = vec![
        Message::PreAccept(PreAccept {
            t0,
            body: body(u128::MAX, some_keys.clone()),
        }),
        Message::PreAcceptOk(PreAcceptOk {
            t0,
            t,
            deps: deps.clone(),
        }),
        Message::Accept(Accept {
            t0,
            ballot,
            t,
            deps: deps.clone(),
            body: body(1 << 100, Keys::All),
        }),
        Message::AcceptOk(AcceptOk {
            t0,
            ballot: Ballot::ZERO,
            deps: deps.clone(),
        }),
        Message::Commit(Commit {
            t0,
            t,
            deps: deps.clone(),
            body: body(42, no_keys),
        }),
        Message::Nack(Nack {
            t0,
            promised: ballot,
        }),
        Message::BeginRecovery(BeginRecovery {
            t0,
            ballot,
            body: None,
        }),
        Message::BeginRecovery(BeginRecovery {
            t0,
            ballot,
            body: Some(body(7, some_keys.clone())),
        }),
        Message::RecoverOk(RecoverOk {
            t0,
            ballot,
            status: Status::Accepted,
            accepted: Ballot {
                round: 3,
                serial: 1,
            },
            t,
            deps: deps.clone(),
            body: Some(body(8, some_keys)),
            rejects_fast_path: true,
            earlier_committed_witness: Deps::from_unsorted(vec![T0(ts(2, 0, 1))]),
            wait_for_commit: Deps::from_unsorted(vec![T0(ts(1, 0, 2))]),
        }),
        Message::AcceptInvalidate(AcceptInvalidate { t0, ballot }),
        Message::AcceptInvalidateOk(AcceptInvalidateOk { t0, ballot }),
        Message::CommitInvalidate(CommitInvalidate { t0 }),
        Message::Applied(Applied {
            t0s: vec![t0, T0(ts(1, 2, 3))],
            committed: vec![T0(ts(1, 2, 4))],
        }),
        Message::Forget(Forget {
            floor: t0,
            t0s: vec![T0(ts(u64::MAX, u32::MAX, u16::MAX))],
            decided_floor: ts(1_700_000_000_000, 1, 3),
            settled: vec![T0(ts(5, 0, 1))],
            settled_holders: 3,
        }),
        Message::Inquire(Inquire { t0s: vec![] }),
    ];
    // RecoverOk once per status, so every status crosses the wire.
    let mut all = messages;
    for status in STATUSES {
        all.push(Message::RecoverOk(RecoverOk {
            t0,
            ballot,
            status,
            accepted: Ballot::ZERO,
            t: t0.as_t(),
            deps: Deps::new(),
            body: None,
            rejects_fast_path: false,
            earlier_committed_witness: Deps::new(),
            wait_for_commit: Deps::new(),
        }));
    }
    all
}

/// The kinds [`every_message_kind`] covers must be every kind there is: a new `Message`
/// variant makes this match (and so the build of the tests) fail until it is added.
pub(crate) fn kind_index(message: &Message) -> usize {
    match message {
        Message::PreAccept(_) => 0,
        Message::PreAcceptOk(_) => 1,
        Message::Accept(_) => 2,
        Message::AcceptOk(_) => 3,
        Message::Commit(_) => 4,
        Message::Nack(_) => 5,
        Message::BeginRecovery(_) => 6,
        Message::RecoverOk(_) => 7,
        Message::AcceptInvalidate(_) => 8,
        Message::AcceptInvalidateOk(_) => 9,
        Message::CommitInvalidate(_) => 10,
        Message::Applied(_) => 11,
        Message::Forget(_) => 12,
        Message::Inquire(_) => 13,
    }
}

/// How many message kinds there are (see [`kind_index`]).
pub(crate) const KIND_COUNT: usize = 14;

/// A small message that carries a sequence number (as the time of its one `t0`), for order
/// and count checks.
pub(crate) fn numbered(from: Serial, to: Serial, number: u64) -> Envelope {
    Envelope {
        from,
        to,
        message: Message::Inquire(Inquire {
            t0s: vec![T0(Timestamp::new(number, 0, from))],
        }),
        clock: Timestamp::ZERO,
    }
}

/// The sequence number of an envelope made by [`numbered`].
pub(crate) fn number_of(envelope: &Envelope) -> Option<u64> {
    match &envelope.message {
        Message::Inquire(Inquire { t0s }) if t0s.len() == 1 => Some(t0s[0].0.time),
        _ => None,
    }
}

/// An inbox whose deliveries a test can await.
pub(crate) struct ChannelInbox(mpsc::UnboundedSender<Envelope>);

/// The test's end of a [`ChannelInbox`].
pub(crate) struct Received(mpsc::UnboundedReceiver<Envelope>);

pub(crate) fn channel_inbox() -> (ChannelInbox, Received) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (ChannelInbox(sender), Received(receiver))
}

impl Inbox for ChannelInbox {
    fn deliver(&self, envelope: Envelope) {
        // The test may have finished and dropped its end; nothing to do then.
        let _ = self.0.send(envelope);
    }
}

/// Generous: only a broken network waits this long, and then the test fails with a clear
/// message instead of hanging.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

impl Received {
    /// The next delivered envelope, or a panic naming `what` after [`DEADLINE`].
    pub(crate) async fn next(&mut self, what: &str) -> Envelope {
        match tokio::time::timeout(DEADLINE, self.0.recv()).await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => panic!("inbox closed while waiting for {what}"),
            Err(_) => panic!("nothing arrived within {DEADLINE:?} while waiting for {what}"),
        }
    }

    /// The next delivered envelope if one arrives within `wait`.
    pub(crate) async fn next_within(&mut self, wait: Duration) -> Option<Envelope> {
        tokio::time::timeout(wait, self.0.recv())
            .await
            .ok()
            .flatten()
    }

    /// An envelope already delivered, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<Envelope> {
        self.0.try_recv().ok()
    }
}
