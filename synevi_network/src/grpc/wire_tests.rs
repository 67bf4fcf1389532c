use super::*;
use crate::test_support::{self, every_message_kind, kind_index, KIND_COUNT};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn sample(message: Message) -> Envelope {
    Envelope {
        from: 1,
        to: 2,
        message,
        clock: Timestamp::ZERO,
    }
}

#[test]
fn every_kind_round_trips_through_bytes() {
    let messages = every_message_kind();
    let kinds: BTreeSet<usize> = messages.iter().map(kind_index).collect();
    assert_eq!(
        kinds.len(),
        KIND_COUNT,
        "the samples cover every message kind"
    );
    for message in messages {
        let envelope = sample(message);
        let bytes = encode_envelope(&envelope);
        assert_eq!(decode_envelope(&bytes), Ok(envelope));
    }
}

#[test]
fn keys_all_and_the_empty_set_stay_apart() {
    for keys in [Keys::All, Keys::none()] {
        let envelope = sample(Message::PreAccept(PreAccept {
            t0: T0(Timestamp::new(1, 2, 3)),
            body: TxBody {
                id: 9,
                keys: keys.clone(),
                payload: bytes::Bytes::new(),
            },
        }));
        let decoded = decode_envelope(&encode_envelope(&envelope)).expect("decodes");
        let Message::PreAccept(decoded) = decoded.message else {
            panic!("kind changed")
        };
        assert_eq!(decoded.body.keys, keys);
    }
}

/// Whether `inner` lies inside `outer`'s memory.
fn points_into(inner: &[u8], outer: &[u8]) -> bool {
    let range = outer.as_ptr_range();
    !inner.is_empty() && range.contains(&inner.as_ptr())
}

#[test]
fn decoded_payloads_and_keys_do_not_keep_their_frame_alive() {
    let envelope = sample(Message::PreAccept(PreAccept {
        t0: T0(Timestamp::new(1, 2, 3)),
        body: TxBody {
            id: 9,
            keys: Keys::single("a key"),
            payload: bytes::Bytes::from_static(b"the application's bytes"),
        },
    }));
    let frame = proto::Batch {
        envelopes: vec![envelope_to_proto(envelope.clone())],
        clock: None,
    };
    // A frame as the server receives it: one buffer, which prost decodes `bytes` fields
    // from as slices of it.
    let buffer = bytes::Bytes::from(frame.encode_to_vec());
    let decoded = proto::Batch::decode(buffer.clone()).expect("decodes");
    let Some(proto::envelope::Message::PreAccept(raw)) = &decoded.envelopes[0].message else {
        panic!("kind changed")
    };
    let raw_payload = &raw.body.as_ref().expect("a body").payload;
    assert!(
        points_into(raw_payload, &buffer),
        "prost slices the frame (else this test checks nothing)"
    );
    let mut envelopes = decoded.envelopes.into_iter();
    let received = envelope_from_proto(envelopes.next().expect("one")).expect("valid");
    assert_eq!(received, envelope);
    let Message::PreAccept(received) = received.message else {
        panic!("kind changed")
    };
    assert!(!points_into(&received.body.payload, &buffer));
    let Keys::Set(keys) = &received.body.keys else {
        panic!("keys changed")
    };
    assert!(keys.iter().all(|key| !points_into(key.as_bytes(), &buffer)));
}

/// A stream's decoder shares the key set of consecutive bodies that name the same keys, and
/// decodes any other set (a different one, or one not sorted as a set encodes) on its own.
#[test]
fn a_stream_shares_the_key_set_of_bodies_with_the_same_keys() {
    let pre_accept = |t: u64, keys: Keys| {
        envelope_to_proto(sample(Message::PreAccept(PreAccept {
            t0: T0(Timestamp::new(t, 0, 1)),
            body: TxBody {
                id: u128::from(t),
                keys,
                payload: bytes::Bytes::from_static(b"p"),
            },
        })))
    };
    let key_set = |envelope: Envelope| match envelope.message {
        Message::PreAccept(PreAccept {
            body: TxBody {
                keys: Keys::Set(set),
                ..
            },
            ..
        }) => set,
        other => panic!("a PreAccept with a key set, not {other:?}"),
    };
    let mut decoder = Decoder::default();
    let mut decode = |envelope| key_set(decoder.envelope(envelope).expect("valid"));
    let hot = || Keys::set(["hot", "second"]);
    let first = decode(pre_accept(1, hot()));
    let second = decode(pre_accept(2, hot()));
    assert!(
        std::ptr::eq(first.as_ptr(), second.as_ptr()),
        "the same keys share one set"
    );
    // The same keys, but not in the sorted order a set encodes in: decoded (and sorted) on
    // their own, equal to the remembered set as a set, never taken for it element by element.
    let mut unsorted = pre_accept(3, Keys::single("x"));
    if let Some(proto::envelope::Message::PreAccept(m)) = &mut unsorted.message {
        if let Some(proto::Keys {
            kind: Some(proto::keys::Kind::Set(set)),
        }) = m.body.as_mut().and_then(|body| body.keys.as_mut())
        {
            set.keys = vec![
                bytes::Bytes::from_static(b"second"),
                bytes::Bytes::from_static(b"hot"),
            ];
        }
    }
    let reordered = decode(unsorted);
    assert_eq!(reordered, second);
    assert!(!std::ptr::eq(reordered.as_ptr(), second.as_ptr()));
    let other = decode(pre_accept(4, Keys::single("cold")));
    assert_eq!(other.len(), 1);
    assert!(!std::ptr::eq(other.as_ptr(), reordered.as_ptr()));
    let again = decode(pre_accept(5, Keys::single("cold")));
    assert!(std::ptr::eq(other.as_ptr(), again.as_ptr()));
}

fn decode_error(envelope: proto::Envelope) -> String {
    match envelope_from_proto(envelope) {
        Err(SyneviError::Decode { what, reason }) => {
            assert_eq!(what, "envelope");
            reason
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

fn pre_accept_proto() -> proto::Envelope {
    envelope_to_proto(sample(Message::PreAccept(PreAccept {
        t0: T0(Timestamp::new(1, 2, 3)),
        body: TxBody {
            id: 9,
            keys: Keys::All,
            payload: bytes::Bytes::from_static(b"x"),
        },
    })))
}

#[test]
fn missing_fields_are_decode_errors_that_name_the_field() {
    let mut no_message = pre_accept_proto();
    no_message.message = None;
    assert!(decode_error(no_message).contains("Envelope.message is missing"));

    let mut no_t0 = pre_accept_proto();
    if let Some(proto::envelope::Message::PreAccept(m)) = &mut no_t0.message {
        m.t0 = None;
    }
    assert!(decode_error(no_t0).contains("PreAccept.t0 is missing"));

    let mut no_body = pre_accept_proto();
    if let Some(proto::envelope::Message::PreAccept(m)) = &mut no_body.message {
        m.body = None;
    }
    assert!(decode_error(no_body).contains("PreAccept.body is missing"));

    let mut no_keys = pre_accept_proto();
    if let Some(proto::envelope::Message::PreAccept(m)) = &mut no_keys.message {
        if let Some(body) = &mut m.body {
            body.keys = None;
        }
    }
    assert!(decode_error(no_keys).contains("PreAccept.body is missing"));

    let mut empty_keys = pre_accept_proto();
    if let Some(proto::envelope::Message::PreAccept(m)) = &mut empty_keys.message {
        if let Some(body) = &mut m.body {
            body.keys = Some(proto::Keys { kind: None });
        }
    }
    assert!(decode_error(empty_keys).contains("neither `all` nor a set"));

    let no_ballot = proto::Envelope {
        from: 1,
        to: 2,
        message: Some(proto::envelope::Message::Nack(proto::Nack {
            t0: Some(proto::Timestamp::default()),
            promised: None,
        })),
    };
    assert!(decode_error(no_ballot).contains("Nack.promised is missing"));
}

#[test]
fn out_of_range_values_are_decode_errors() {
    let mut big_from = pre_accept_proto();
    big_from.from = 70_000;
    assert!(decode_error(big_from).contains("Envelope.from is 70000"));

    let mut big_serial = pre_accept_proto();
    if let Some(proto::envelope::Message::PreAccept(m)) = &mut big_serial.message {
        m.t0 = Some(proto::Timestamp {
            time: 1,
            counter: 1,
            serial: 65_536,
        });
    }
    assert!(decode_error(big_serial).contains("PreAccept.t0 is 65536"));

    let recover_ok = |status: i32| proto::Envelope {
        from: 1,
        to: 2,
        message: Some(proto::envelope::Message::RecoverOk(proto::RecoverOk {
            t0: Some(proto::Timestamp::default()),
            ballot: Some(proto::Ballot::default()),
            status,
            accepted: Some(proto::Ballot::default()),
            t: Some(proto::Timestamp::default()),
            ..proto::RecoverOk::default()
        })),
    };
    assert!(decode_error(recover_ok(0)).contains("RecoverOk.status is not set"));
    assert!(decode_error(recover_ok(99)).contains("RecoverOk.status is 99"));
    assert!(envelope_from_proto(recover_ok(proto::TxStatus::Committed as i32)).is_ok());
}

/// A timestamp list as the proto file describes it, written out here independently of
/// `wire.rs`: per entry, zigzag time delta, counter, serial, each a varint.
fn timestamps(entries: &[(u64, u64, u64)]) -> Option<proto::Timestamps> {
    let mut previous = 0u64;
    let mut bytes = Vec::new();
    for &(time, counter, serial) in entries {
        let delta = time.wrapping_sub(previous) as i64;
        prost::encoding::encode_varint(((delta << 1) ^ (delta >> 63)) as u64, &mut bytes);
        prost::encoding::encode_varint(counter, &mut bytes);
        prost::encoding::encode_varint(serial, &mut bytes);
        previous = time;
    }
    Some(proto::Timestamps {
        entries: bytes.into(),
    })
}

fn pre_accept_ok(deps: Option<proto::Timestamps>) -> proto::Envelope {
    let t0 = proto::Timestamp {
        time: 9,
        counter: 0,
        serial: 1,
    };
    proto::Envelope {
        from: 1,
        to: 2,
        message: Some(proto::envelope::Message::PreAcceptOk(proto::PreAcceptOk {
            t0: Some(t0),
            t: Some(t0),
            deps,
        })),
    }
}

#[test]
fn unsorted_or_duplicated_deps_are_decode_errors() {
    assert!(envelope_from_proto(pre_accept_ok(timestamps(&[(1, 0, 1), (2, 0, 1)]))).is_ok());
    assert!(
        envelope_from_proto(pre_accept_ok(None)).is_ok(),
        "absent is empty"
    );
    let unsorted = decode_error(pre_accept_ok(timestamps(&[(2, 0, 1), (1, 0, 1)])));
    assert!(unsorted.contains("PreAcceptOk.deps"), "{unsorted}");
    let duplicated = decode_error(pre_accept_ok(timestamps(&[(1, 0, 1), (1, 0, 1)])));
    assert!(duplicated.contains("ascending"), "{duplicated}");
}

#[test]
fn truncated_timestamp_lists_and_out_of_range_values_are_decode_errors() {
    let whole = timestamps(&[(1, 0, 1), (2, 0, 1)]);
    let mut truncated = whole.clone();
    if let Some(list) = &mut truncated {
        list.entries = list.entries.slice(..list.entries.len() - 1);
    }
    assert!(envelope_from_proto(pre_accept_ok(whole)).is_ok());
    let reason = decode_error(pre_accept_ok(truncated));
    assert!(reason.contains("ends inside entry 1"), "{reason}");
    let reason = decode_error(pre_accept_ok(timestamps(&[(1, 0, 70_000)])));
    assert!(reason.contains("serial 70000"), "{reason}");
    let reason = decode_error(pre_accept_ok(timestamps(&[(1, 1 << 32, 1)])));
    assert!(reason.contains("counter 4294967296"), "{reason}");
    let overlong = proto::Timestamps {
        entries: vec![0xff; 11].into(),
    };
    let reason = decode_error(pre_accept_ok(Some(overlong)));
    assert!(reason.contains("exceeds 64 bits"), "{reason}");
}

#[test]
fn timestamp_lists_round_trip_with_any_times_sorted_or_not() {
    let t0s: Vec<T0> = [
        (5, 1, 2),
        (u64::MAX, u32::MAX, u16::MAX),
        (0, 0, 0),
        (7, 3, 1),
    ]
    .into_iter()
    .map(|(time, counter, serial)| T0(Timestamp::new(time, counter, serial)))
    .collect();
    let forget = Envelope {
        from: 1,
        to: 2,
        clock: Timestamp::ZERO,
        message: Message::Forget(Forget {
            floor: t0s[0],
            t0s: t0s.clone(),
            decided_floor: t0s[0].0,
            settled: t0s.clone(),
            settled_holders: u32::MAX,
        }),
    };
    let decoded = envelope_from_proto(envelope_to_proto(forget.clone())).expect("decodes");
    assert_eq!(decoded, forget);
}

#[test]
fn sorted_deps_take_a_few_bytes_each() {
    // 500 deps a few milliseconds apart, as a busy node's are.
    let deps = Deps::from_unsorted(
        (0..500u64)
            .map(|i| {
                T0(Timestamp::new(
                    1_700_000_000_000 + i * 3,
                    (i % 4) as u32,
                    (i % 5) as u16,
                ))
            })
            .collect(),
    );
    let envelope = sample(Message::PreAcceptOk(PreAcceptOk {
        t0: T0(Timestamp::new(1_700_000_001_000, 0, 1)),
        t: T(Timestamp::new(1_700_000_001_000, 0, 1)),
        deps,
    }));
    let bytes = encode_envelope(&envelope);
    assert!(bytes.len() < 500 * 4, "{} bytes for 500 deps", bytes.len());
    assert_eq!(decode_envelope(&bytes), Ok(envelope));
}

#[test]
fn undecodable_bytes_are_decode_errors() {
    // A length prefix that runs past the end of the input.
    assert!(matches!(
        decode_envelope(&[0x1a, 0xff, 0x01]),
        Err(SyneviError::Decode { .. })
    ));
    // Valid protobuf, but no message: still an error, never a default message.
    assert!(matches!(
        decode_envelope(&[]),
        Err(SyneviError::Decode { .. })
    ));
}

#[test]
fn framed_len_is_what_the_envelope_adds_to_a_batch() {
    for message in every_message_kind() {
        let encoded = envelope_to_proto(sample(message));
        let size = framed_len(&encoded);
        let one = proto::Batch {
            envelopes: vec![encoded.clone()],
            clock: None,
        };
        assert_eq!(one.encoded_len(), size);
        let two = proto::Batch {
            envelopes: vec![encoded.clone(), encoded],
            clock: None,
        };
        assert_eq!(two.encoded_len(), 2 * size);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every envelope of every kind survives encoding and decoding unchanged.
    #[test]
    fn round_trip(envelope in test_support::envelope()) {
        let bytes = encode_envelope(&envelope);
        prop_assert_eq!(decode_envelope(&bytes), Ok(envelope));
    }

    /// Arbitrary bytes decode to an envelope or to a `Decode` error: never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        match decode_envelope(&bytes) {
            Ok(_) | Err(SyneviError::Decode { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    /// Corrupting valid envelopes (the likelier input from a buggy peer) never panics, and
    /// whatever still decodes re-encodes to an envelope that decodes to itself.
    #[test]
    fn corrupted_envelopes_never_panic(
        envelope in test_support::envelope(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode_envelope(&envelope);
        if !bytes.is_empty() {
            for (index, value) in flips {
                let at = index.index(bytes.len());
                bytes[at] = value;
            }
        }
        if let Ok(decoded) = decode_envelope(&bytes) {
            let again = encode_envelope(&decoded);
            prop_assert_eq!(decode_envelope(&again), Ok(decoded));
        }
    }
}
