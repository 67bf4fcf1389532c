//! Conversion between the `synevi_types` messages and the prost types generated from
//! `proto/synevi.proto`, both ways.
//!
//! Encoding cannot fail. Decoding is strict and total: anything the Rust types cannot hold
//! (a missing timestamp, ballot or key set, a serial above `u16::MAX`, an unknown status)
//! is a [`SyneviError::Decode`] naming the field, never a panic and never a default value
//! silently standing in for a missing one.

use prost::Message as _;
use synevi_types::{
    decode_t0s, encode_t0s, Accept, AcceptInvalidate, AcceptInvalidateOk, AcceptOk, Applied,
    Ballot, BeginRecovery, Bytes, Commit, CommitInvalidate, Deps, Envelope, Forget, Inquire, Key,
    KeySet, Keys, Message, Nack, PreAccept, PreAcceptOk, RecoverOk, Serial, Status, SyneviError,
    Timestamp, TxBody, T, T0,
};

use super::proto;

/// Encodes one envelope as the protobuf `synevi.v1.Envelope` (without gRPC framing).
///
/// With [`decode_envelope`], this is the wire format of [`crate::GrpcNetwork`], exposed for
/// fuzzing, benchmarks and tools. The envelope's `clock` is not in it: the network sends it
/// once per batch, and [`decode_envelope`] gives [`Timestamp::ZERO`].
pub fn encode_envelope(envelope: &Envelope) -> Vec<u8> {
    envelope_to_proto(envelope.clone()).encode_to_vec()
}

/// Decodes the protobuf `synevi.v1.Envelope`; any malformed input is a
/// [`SyneviError::Decode`].
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, SyneviError> {
    let decoded = proto::Envelope::decode(bytes).map_err(|error| SyneviError::Decode {
        what: "envelope",
        reason: error.to_string(),
    })?;
    envelope_from_proto(decoded)
}

/// The bytes `envelope` takes inside an encoded `Batch`: its own length plus the field key
/// and length prefix that frame it there.
pub(crate) fn framed_len(envelope: &proto::Envelope) -> usize {
    field_len(envelope.encoded_len())
}

/// A length-delimited field of `Batch` (numbers below 16: a one-byte key) holding `len`
/// bytes: key, length prefix, contents.
fn field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// The most bytes a batch's `clock` takes: field key and length (2), then time (key and up
/// to 10), counter (key and up to 5) and serial (key and up to 3).
pub(crate) const CLOCK_FRAMED_MAX: usize = 2 + 11 + 6 + 4;

/// The bytes a batch's `clock` takes: field 2, length-delimited, a one-byte key.
pub(crate) fn framed_clock_len(clock: &proto::Timestamp) -> usize {
    field_len(clock.encoded_len())
}

/// The envelope without its `clock`, which travels once per batch ([`clock_to`]).
pub(crate) fn envelope_to_proto(envelope: Envelope) -> proto::Envelope {
    use proto::envelope::Message as M;
    let message = match envelope.message {
        Message::PreAccept(m) => M::PreAccept(proto::PreAccept {
            t0: Some(t0_to(m.t0)),
            body: Some(body_to(m.body)),
        }),
        Message::PreAcceptOk(m) => M::PreAcceptOk(proto::PreAcceptOk {
            t0: Some(t0_to(m.t0)),
            t: Some(t_to(m.t)),
            deps: deps_to(&m.deps),
        }),
        Message::Accept(m) => M::Accept(proto::Accept {
            t0: Some(t0_to(m.t0)),
            ballot: Some(ballot_to(m.ballot)),
            t: Some(t_to(m.t)),
            deps: deps_to(&m.deps),
            body: Some(body_to(m.body)),
        }),
        Message::AcceptOk(m) => M::AcceptOk(proto::AcceptOk {
            t0: Some(t0_to(m.t0)),
            ballot: Some(ballot_to(m.ballot)),
            deps: deps_to(&m.deps),
        }),
        Message::Commit(m) => M::Commit(proto::Commit {
            t0: Some(t0_to(m.t0)),
            t: Some(t_to(m.t)),
            deps: deps_to(&m.deps),
            body: Some(body_to(m.body)),
        }),
        Message::Nack(m) => M::Nack(proto::Nack {
            t0: Some(t0_to(m.t0)),
            promised: Some(ballot_to(m.promised)),
        }),
        Message::BeginRecovery(m) => M::BeginRecovery(proto::BeginRecovery {
            t0: Some(t0_to(m.t0)),
            ballot: Some(ballot_to(m.ballot)),
            body: m.body.map(body_to),
        }),
        Message::RecoverOk(m) => M::RecoverOk(proto::RecoverOk {
            t0: Some(t0_to(m.t0)),
            ballot: Some(ballot_to(m.ballot)),
            status: status_to(m.status) as i32,
            accepted: Some(ballot_to(m.accepted)),
            t: Some(t_to(m.t)),
            deps: deps_to(&m.deps),
            body: m.body.map(body_to),
            rejects_fast_path: m.rejects_fast_path,
            earlier_committed_witness: deps_to(&m.earlier_committed_witness),
            wait_for_commit: deps_to(&m.wait_for_commit),
        }),
        Message::AcceptInvalidate(m) => M::AcceptInvalidate(proto::AcceptInvalidate {
            t0: Some(t0_to(m.t0)),
            ballot: Some(ballot_to(m.ballot)),
        }),
        Message::AcceptInvalidateOk(m) => M::AcceptInvalidateOk(proto::AcceptInvalidateOk {
            t0: Some(t0_to(m.t0)),
            ballot: Some(ballot_to(m.ballot)),
        }),
        Message::CommitInvalidate(m) => M::CommitInvalidate(proto::CommitInvalidate {
            t0: Some(t0_to(m.t0)),
        }),
        Message::Applied(m) => M::Applied(proto::Applied {
            t0s: t0s_to(&m.t0s),
            committed: t0s_to(&m.committed),
        }),
        Message::Forget(m) => M::Forget(proto::Forget {
            floor: Some(t0_to(m.floor)),
            t0s: t0s_to(&m.t0s),
            decided_floor: Some(timestamp_to(m.decided_floor)),
            settled: t0s_to(&m.settled),
            settled_holders: m.settled_holders,
        }),
        Message::Inquire(m) => M::Inquire(proto::Inquire {
            t0s: t0s_to(&m.t0s),
        }),
    };
    proto::Envelope {
        from: u32::from(envelope.from),
        to: u32::from(envelope.to),
        message: Some(message),
    }
}

/// Decodes one envelope on its own (see [`Decoder`] for a stream's envelopes).
pub(crate) fn envelope_from_proto(envelope: proto::Envelope) -> Result<Envelope, SyneviError> {
    Decoder::default().envelope(envelope)
}

/// Decodes the envelopes of one stream. It remembers the key set of the last transaction
/// body it decoded, and a body that names the same keys shares it instead of copying them
/// out of the frame into a set of its own: with a hot key every PreAccept and Commit names
/// the same one, and each copy cost three allocations (the key's bytes, a list to sort, the
/// shared set), for every body, on every node. Only an exact match (same keys, same order,
/// as a sorted set encodes) is shared; anything else is decoded as before.
#[derive(Default)]
pub(crate) struct Decoder {
    last_keys: Option<KeySet>,
}

impl Decoder {
    /// Decodes one envelope of the stream.
    pub(crate) fn envelope(&mut self, envelope: proto::Envelope) -> Result<Envelope, SyneviError> {
        use proto::envelope::Message as M;
        let from = serial_from(envelope.from, "Envelope.from")?;
        let to = serial_from(envelope.to, "Envelope.to")?;
        let message = match required(envelope.message, "Envelope.message")? {
            M::PreAccept(m) => Message::PreAccept(PreAccept {
                t0: t0_from(m.t0, "PreAccept.t0")?,
                body: self.body_from(required(m.body, "PreAccept.body")?, "PreAccept.body")?,
            }),
            M::PreAcceptOk(m) => Message::PreAcceptOk(PreAcceptOk {
                t0: t0_from(m.t0, "PreAcceptOk.t0")?,
                t: t_from(m.t, "PreAcceptOk.t")?,
                deps: deps_from(m.deps, "PreAcceptOk.deps")?,
            }),
            M::Accept(m) => Message::Accept(Accept {
                t0: t0_from(m.t0, "Accept.t0")?,
                ballot: ballot_from(m.ballot, "Accept.ballot")?,
                t: t_from(m.t, "Accept.t")?,
                deps: deps_from(m.deps, "Accept.deps")?,
                body: self.body_from(required(m.body, "Accept.body")?, "Accept.body")?,
            }),
            M::AcceptOk(m) => Message::AcceptOk(AcceptOk {
                t0: t0_from(m.t0, "AcceptOk.t0")?,
                ballot: ballot_from(m.ballot, "AcceptOk.ballot")?,
                deps: deps_from(m.deps, "AcceptOk.deps")?,
            }),
            M::Commit(m) => Message::Commit(Commit {
                t0: t0_from(m.t0, "Commit.t0")?,
                t: t_from(m.t, "Commit.t")?,
                deps: deps_from(m.deps, "Commit.deps")?,
                body: self.body_from(required(m.body, "Commit.body")?, "Commit.body")?,
            }),
            M::Nack(m) => Message::Nack(Nack {
                t0: t0_from(m.t0, "Nack.t0")?,
                promised: ballot_from(m.promised, "Nack.promised")?,
            }),
            M::BeginRecovery(m) => Message::BeginRecovery(BeginRecovery {
                t0: t0_from(m.t0, "BeginRecovery.t0")?,
                ballot: ballot_from(m.ballot, "BeginRecovery.ballot")?,
                body: m
                    .body
                    .map(|body| self.body_from(body, "BeginRecovery.body"))
                    .transpose()?,
            }),
            M::RecoverOk(m) => Message::RecoverOk(RecoverOk {
                t0: t0_from(m.t0, "RecoverOk.t0")?,
                ballot: ballot_from(m.ballot, "RecoverOk.ballot")?,
                status: status_from(m.status)?,
                accepted: ballot_from(m.accepted, "RecoverOk.accepted")?,
                t: t_from(m.t, "RecoverOk.t")?,
                deps: deps_from(m.deps, "RecoverOk.deps")?,
                body: m
                    .body
                    .map(|body| self.body_from(body, "RecoverOk.body"))
                    .transpose()?,
                rejects_fast_path: m.rejects_fast_path,
                earlier_committed_witness: deps_from(
                    m.earlier_committed_witness,
                    "RecoverOk.earlier_committed_witness",
                )?,
                wait_for_commit: deps_from(m.wait_for_commit, "RecoverOk.wait_for_commit")?,
            }),
            M::AcceptInvalidate(m) => Message::AcceptInvalidate(AcceptInvalidate {
                t0: t0_from(m.t0, "AcceptInvalidate.t0")?,
                ballot: ballot_from(m.ballot, "AcceptInvalidate.ballot")?,
            }),
            M::AcceptInvalidateOk(m) => Message::AcceptInvalidateOk(AcceptInvalidateOk {
                t0: t0_from(m.t0, "AcceptInvalidateOk.t0")?,
                ballot: ballot_from(m.ballot, "AcceptInvalidateOk.ballot")?,
            }),
            M::CommitInvalidate(m) => Message::CommitInvalidate(CommitInvalidate {
                t0: t0_from(m.t0, "CommitInvalidate.t0")?,
            }),
            M::Applied(m) => Message::Applied(Applied {
                t0s: t0s_from(m.t0s, "Applied.t0s")?,
                committed: t0s_from(m.committed, "Applied.committed")?,
            }),
            M::Forget(m) => Message::Forget(Forget {
                floor: t0_from(m.floor, "Forget.floor")?,
                t0s: t0s_from(m.t0s, "Forget.t0s")?,
                decided_floor: timestamp_from(
                    required(m.decided_floor, "Forget.decided_floor")?,
                    "Forget.decided_floor",
                )?,
                settled: t0s_from(m.settled, "Forget.settled")?,
                settled_holders: m.settled_holders,
            }),
            M::Inquire(m) => Message::Inquire(Inquire {
                t0s: t0s_from(m.t0s, "Inquire.t0s")?,
            }),
        };
        Ok(Envelope {
            from,
            to,
            message,
            clock: Timestamp::ZERO,
        })
    }

    fn body_from(&mut self, body: proto::TxBody, field: &str) -> Result<TxBody, SyneviError> {
        Ok(TxBody {
            id: (u128::from(body.id_high) << 64) | u128::from(body.id_low),
            keys: self.keys_from(required(body.keys, field)?, field)?,
            payload: owned(body.payload),
        })
    }

    fn keys_from(&mut self, keys: proto::Keys, field: &str) -> Result<Keys, SyneviError> {
        use proto::keys::Kind;
        match keys.kind {
            Some(Kind::All(proto::AllKeys {})) => Ok(Keys::All),
            Some(Kind::Set(set)) => {
                if let Some(last) = &self.last_keys {
                    let same = last.len() == set.keys.len()
                        && last
                            .iter()
                            .zip(&set.keys)
                            .all(|(key, bytes)| key.as_bytes() == bytes.as_ref());
                    if same {
                        return Ok(Keys::Set(last.clone()));
                    }
                }
                let keys: KeySet = set.keys.into_iter().map(|key| Key(owned(key))).collect();
                self.last_keys = Some(keys.clone());
                Ok(Keys::Set(keys))
            }
            None => Err(malformed(
                field,
                "has keys that are neither `all` nor a set",
            )),
        }
    }
}

/// A batch's `clock`: [`Timestamp::ZERO`] (nothing known) goes as no field at all.
pub(crate) fn clock_to(clock: Timestamp) -> Option<proto::Timestamp> {
    (clock > Timestamp::ZERO).then(|| timestamp_to(clock))
}

/// A batch's `clock`; absent is [`Timestamp::ZERO`].
pub(crate) fn clock_from(clock: Option<proto::Timestamp>) -> Result<Timestamp, SyneviError> {
    clock.map_or(Ok(Timestamp::ZERO), |clock| {
        timestamp_from(clock, "Batch.clock")
    })
}

fn malformed(field: &str, problem: &str) -> SyneviError {
    SyneviError::Decode {
        what: "envelope",
        reason: format!("{field} {problem}"),
    }
}

fn required<V>(value: Option<V>, field: &str) -> Result<V, SyneviError> {
    value.ok_or_else(|| malformed(field, "is missing"))
}

fn serial_from(value: u32, field: &str) -> Result<Serial, SyneviError> {
    Serial::try_from(value).map_err(|_| {
        malformed(
            field,
            &format!("is {value}, above the largest serial 65535"),
        )
    })
}

fn timestamp_to(timestamp: Timestamp) -> proto::Timestamp {
    proto::Timestamp {
        time: timestamp.time,
        counter: timestamp.counter,
        serial: u32::from(timestamp.serial),
    }
}

fn timestamp_from(timestamp: proto::Timestamp, field: &str) -> Result<Timestamp, SyneviError> {
    Ok(Timestamp::new(
        timestamp.time,
        timestamp.counter,
        serial_from(timestamp.serial, field)?,
    ))
}

fn t0_to(t0: T0) -> proto::Timestamp {
    timestamp_to(t0.0)
}

fn t_to(t: T) -> proto::Timestamp {
    timestamp_to(t.0)
}

fn t0_from(t0: Option<proto::Timestamp>, field: &str) -> Result<T0, SyneviError> {
    timestamp_from(required(t0, field)?, field).map(T0)
}

fn t_from(t: Option<proto::Timestamp>, field: &str) -> Result<T, SyneviError> {
    timestamp_from(required(t, field)?, field).map(T)
}

fn t0s_to(t0s: &[T0]) -> Option<proto::Timestamps> {
    // An entry of a sorted list is about 3 bytes; 4 covers most without reallocating.
    let mut entries = Vec::with_capacity(t0s.len() * 4);
    encode_t0s(t0s, &mut entries);
    Some(proto::Timestamps {
        entries: entries.into(),
    })
}

fn t0s_from(t0s: Option<proto::Timestamps>, field: &str) -> Result<Vec<T0>, SyneviError> {
    match t0s {
        Some(list) => decode_t0s(&list.entries).map_err(|reason| malformed(field, &reason)),
        None => Ok(Vec::new()),
    }
}

fn deps_to(deps: &Deps) -> Option<proto::Timestamps> {
    t0s_to(deps.as_slice())
}

fn deps_from(deps: Option<proto::Timestamps>, field: &str) -> Result<Deps, SyneviError> {
    // Senders encode `Deps` as it is held: strictly ascending. Anything else comes from a
    // broken sender and is refused, as `Deps`' own decoding does, rather than repaired.
    Deps::try_from(t0s_from(deps, field)?).map_err(|reason| malformed(field, &reason))
}

fn ballot_to(ballot: Ballot) -> proto::Ballot {
    proto::Ballot {
        round: ballot.round,
        serial: u32::from(ballot.serial),
    }
}

fn ballot_from(ballot: Option<proto::Ballot>, field: &str) -> Result<Ballot, SyneviError> {
    let ballot = required(ballot, field)?;
    Ok(Ballot {
        round: ballot.round,
        serial: serial_from(ballot.serial, field)?,
    })
}

fn body_to(body: TxBody) -> proto::TxBody {
    proto::TxBody {
        id_high: (body.id >> 64) as u64,
        id_low: body.id as u64,
        keys: Some(keys_to(body.keys)),
        payload: body.payload,
    }
}

/// A copy of `bytes` in an allocation of its own. Decoded `bytes` fields are slices of the
/// frame they came in, and a slice keeps the whole frame's buffer alive: a payload or a key
/// that outlives the message (in a transaction's state, the conflict index, an in-memory
/// event log) would pin every frame that carried one, tens of KiB each, for as long as it
/// lives (measured with one hot key, 3 nodes in memory: a fifth to a quarter of the
/// process's resident memory, and a seventh of its throughput).
fn owned(bytes: Bytes) -> Bytes {
    Bytes::copy_from_slice(&bytes)
}

fn keys_to(keys: Keys) -> proto::Keys {
    use proto::keys::Kind;
    let kind = match keys {
        Keys::All => Kind::All(proto::AllKeys {}),
        Keys::Set(set) => Kind::Set(proto::KeySet {
            keys: set.iter().map(|key| key.0.clone()).collect(),
        }),
    };
    proto::Keys { kind: Some(kind) }
}

fn status_to(status: Status) -> proto::TxStatus {
    match status {
        Status::Promised => proto::TxStatus::Promised,
        Status::PreAccepted => proto::TxStatus::PreAccepted,
        Status::Accepted => proto::TxStatus::Accepted,
        Status::AcceptedInvalidate => proto::TxStatus::AcceptedInvalidate,
        Status::Committed => proto::TxStatus::Committed,
        Status::Applied => proto::TxStatus::Applied,
        Status::Invalidated => proto::TxStatus::Invalidated,
    }
}

fn status_from(status: i32) -> Result<Status, SyneviError> {
    let field = "RecoverOk.status";
    match proto::TxStatus::try_from(status) {
        Ok(proto::TxStatus::Promised) => Ok(Status::Promised),
        Ok(proto::TxStatus::PreAccepted) => Ok(Status::PreAccepted),
        Ok(proto::TxStatus::Accepted) => Ok(Status::Accepted),
        Ok(proto::TxStatus::AcceptedInvalidate) => Ok(Status::AcceptedInvalidate),
        Ok(proto::TxStatus::Committed) => Ok(Status::Committed),
        Ok(proto::TxStatus::Applied) => Ok(Status::Applied),
        Ok(proto::TxStatus::Invalidated) => Ok(Status::Invalidated),
        Ok(proto::TxStatus::Unspecified) => Err(malformed(field, "is not set")),
        Err(_) => Err(malformed(
            field,
            &format!("is {status}, not a known status"),
        )),
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
