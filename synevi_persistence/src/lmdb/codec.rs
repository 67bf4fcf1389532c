//! How the LMDB store lays out keys and values.
//!
//! Keys are fixed-width big-endian bytes, so LMDB's byte-wise order is the order of what they
//! encode. Values are postcard (compact, deterministic, versioned by [`FORMAT_VERSION`]).
//! Every decoder returns an error for bytes it does not understand; bytes come from the disk
//! and may be damaged or foreign.

use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::Serialize;
use synevi_types::{Serial, Timestamp, T0};

/// The on-disk format this build writes and reads. Bump it when a key layout or a value's
/// encoding changes; an old build then refuses a newer store instead of misreading it.
/// 2: deps in records as the compact varint list of `synevi_types::encode_t0s`.
/// 3: `NodeMeta::applied_recorded_through` (records of executed transactions may say
/// committed; a version-2 build would execute them again).
/// 4: pre-accepted records without their deps (the core computes them again on restart; a
/// version-3 build would answer a retransmitted PreAccept with none).
/// 5: the commit log (`commit.log`, see `log.rs`): commits it holds are not yet in LMDB,
/// which a version-4 build would not read.
/// 6: the commit log in two files that take turns (`commit-0.log`, `commit-1.log`).
pub(crate) const FORMAT_VERSION: u32 = 6;

/// Opens the format record; foreign data almost never starts with it.
const FORMAT_MAGIC: &[u8; 12] = b"synevi-store";

/// Length of the format record: magic, version (u32), serial (u16).
const FORMAT_RECORD_LEN: usize = FORMAT_MAGIC.len() + 4 + 2;

/// The names of the tables (LMDB named databases) of a synevi store.
pub(crate) mod table {
    /// The format record and the node's metadata.
    pub(crate) const META: &str = "meta";
    /// Transaction records, keyed by `t0`.
    pub(crate) const TRANSACTIONS: &str = "transactions";
    /// Forgotten ids still remembered, keyed by coordinator serial then `t0`; no value.
    pub(crate) const FORGOTTEN: &str = "forgotten";
    /// Each coordinator's floor, keyed by serial.
    pub(crate) const FLOORS: &str = "floors";
    /// The event log, keyed by `seq`.
    pub(crate) const EVENTS: &str = "events";
    /// Every table; a store holds these and nothing else.
    pub(crate) const ALL: [&str; 5] = [META, TRANSACTIONS, FORGOTTEN, FLOORS, EVENTS];
}

/// Key of the format record in [`table::META`].
pub(crate) const KEY_FORMAT: &[u8] = b"format";
/// Key of the node's [`synevi_types::NodeMeta`] in [`table::META`].
pub(crate) const KEY_NODE_META: &[u8] = b"node";
/// Key in [`table::META`] of the number of the last commit-log record LMDB holds (u64,
/// big-endian); absent before the first checkpoint.
pub(crate) const KEY_LOG_CHECKPOINT: &[u8] = b"log";

/// What the format record says: which format, and which node the store belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FormatRecord {
    pub(crate) version: u32,
    pub(crate) serial: Serial,
}

impl FormatRecord {
    pub(crate) fn encode(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(FORMAT_RECORD_LEN);
        bytes.extend_from_slice(FORMAT_MAGIC);
        bytes.extend_from_slice(&self.version.to_be_bytes());
        bytes.extend_from_slice(&self.serial.to_be_bytes());
        debug_assert_eq!(bytes.len(), FORMAT_RECORD_LEN);
        bytes
    }

    /// Decodes the record; the error says what is wrong with it.
    pub(crate) fn decode(bytes: &[u8]) -> Result<FormatRecord, String> {
        if bytes.len() != FORMAT_RECORD_LEN {
            return Err(format!(
                "the format record is {} bytes long, expected {FORMAT_RECORD_LEN}",
                bytes.len()
            ));
        }
        let (magic, rest) = bytes.split_at(FORMAT_MAGIC.len());
        if magic != FORMAT_MAGIC {
            return Err("the format record does not start with the synevi marker".into());
        }
        let (version, serial) = rest.split_at(4);
        Ok(FormatRecord {
            version: u32::from_be_bytes(fixed(version)?),
            serial: Serial::from_be_bytes(fixed(serial)?),
        })
    }
}

/// The key of a transaction record: `t0`, big-endian.
pub(crate) fn t0_key(t0: T0) -> [u8; 16] {
    t0.0.to_be_bytes()
}

/// Inverse of [`t0_key`].
pub(crate) fn decode_t0(bytes: &[u8]) -> Result<T0, String> {
    Timestamp::from_be_bytes(fixed(bytes)?)
        .map(T0)
        .ok_or_else(|| "a timestamp uses bits above the 112 a timestamp has".into())
}

/// The key of a forgotten id: a coordinator's serial, then `t0`. The serial first makes
/// "this coordinator's ids below its floor" one contiguous range to delete; the range's ends
/// are built with the same function, with any `t0`.
pub(crate) fn forgotten_key_under(serial: Serial, t0: T0) -> [u8; 18] {
    let mut key = [0; 18];
    key[..2].copy_from_slice(&serial.to_be_bytes());
    key[2..].copy_from_slice(&t0_key(t0));
    key
}

/// Inverse of [`forgotten_key_under`] for stored ids; checks that the two copies of the serial agree.
pub(crate) fn decode_forgotten(bytes: &[u8]) -> Result<T0, String> {
    if bytes.len() != 18 {
        return Err(format!(
            "a forgotten id's key is {} bytes long, expected 18",
            bytes.len()
        ));
    }
    let serial = Serial::from_be_bytes(fixed(&bytes[..2])?);
    let t0 = decode_t0(&bytes[2..])?;
    if t0.0.serial != serial {
        return Err(format!(
            "forgotten id {t0} is filed under coordinator serial {serial}"
        ));
    }
    Ok(t0)
}

/// The key of a floor: the coordinator's serial, big-endian.
pub(crate) fn serial_key(serial: Serial) -> [u8; 2] {
    serial.to_be_bytes()
}

/// Inverse of [`serial_key`].
pub(crate) fn decode_serial(bytes: &[u8]) -> Result<Serial, String> {
    Ok(Serial::from_be_bytes(fixed(bytes)?))
}

/// The key of an event: its `seq`, big-endian.
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Inverse of [`seq_key`].
pub(crate) fn decode_seq(bytes: &[u8]) -> Result<u64, String> {
    Ok(u64::from_be_bytes(fixed(bytes)?))
}

/// Encodes a value with postcard into a buffer of its own (tests; the store appends).
#[cfg(test)]
pub(crate) fn encode_value<V: Serialize>(value: &V) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(value).map_err(|error| error.to_string())
}

/// Appends a value's postcard encoding to `buf` and says where in `buf` it lies. A batch
/// encodes all its values into one buffer: one allocation that grows a few times per batch,
/// instead of one per value that grows a few times per value. On an error `buf` is left as
/// it was.
pub(crate) fn append_value<V: Serialize>(
    buf: &mut Vec<u8>,
    value: &V,
) -> Result<Range<usize>, String> {
    let start = buf.len();
    match postcard::serialize_with_flavor(value, Append(buf)) {
        Ok(()) => Ok(start..buf.len()),
        Err(error) => {
            buf.truncate(start);
            Err(error.to_string())
        }
    }
}

/// A postcard output that appends to a borrowed buffer.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Decodes a value with postcard; trailing bytes are an error, because a value that decodes
/// with bytes left over was written by something else.
pub(crate) fn decode_value<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, String> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|error| error.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes left over after the value", rest.len()));
    }
    Ok(value)
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("a key is {} bytes long, expected {N}", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use synevi_types::{Ballot, Bytes, Deps, Keys, Status, TxBody, TxRecord, T};

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        (any::<u64>(), any::<u32>(), any::<u16>())
            .prop_map(|(time, counter, serial)| Timestamp::new(time, counter, serial))
    }

    proptest! {
        #[test]
        fn keys_sort_like_what_they_encode(a in timestamp(), b in timestamp()) {
            prop_assert_eq!(t0_key(T0(a)).cmp(&t0_key(T0(b))), a.cmp(&b));
            let (fa, fb) = (forgotten_key_under(a.serial, T0(a)), forgotten_key_under(b.serial, T0(b)));
            prop_assert_eq!(fa.cmp(&fb), (a.serial, a).cmp(&(b.serial, b)));
            prop_assert_eq!(decode_forgotten(&fa), Ok(T0(a)));
            prop_assert_eq!(decode_t0(&t0_key(T0(a))), Ok(T0(a)));
        }

        #[test]
        fn decoders_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_t0(&bytes);
            let _ = decode_forgotten(&bytes);
            let _ = decode_serial(&bytes);
            let _ = decode_seq(&bytes);
            let _ = FormatRecord::decode(&bytes);
            let _ = decode_value::<TxRecord>(&bytes);
            let _ = decode_value::<synevi_types::Event>(&bytes);
            let _ = decode_value::<synevi_types::NodeMeta>(&bytes);
        }

        #[test]
        fn records_round_trip(time in any::<u64>(), salt in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..40)) {
            let t0 = T0(Timestamp::new(time, 1, 2));
            let record = TxRecord {
                t0,
                status: Status::Committed,
                t: T(Timestamp::new(time, 2, 3)),
                deps: Deps::from_unsorted(vec![T0(Timestamp::new(time / 2, 0, 1))]),
                promised: Ballot { round: u32::from(salt), serial: 3 },
                accepted: Ballot::ZERO,
                body: Some(TxBody { id: u128::from(salt), keys: Keys::All, payload: Bytes::from(payload) }),
            };
            let bytes = encode_value(&record).expect("encodes");
            prop_assert_eq!(decode_value::<TxRecord>(&bytes), Ok(record));
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(decode_value::<TxRecord>(&longer).is_err());
            prop_assert!(decode_value::<TxRecord>(&bytes[..bytes.len() - 1]).is_err());
        }

        /// The store appends a batch's values to one buffer: each one's range must hold
        /// exactly the bytes it encodes to alone (the stored format does not change), right
        /// after the one before.
        #[test]
        fn appended_values_are_the_values_alone(
            values in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300), 0usize..40), 0..12),
        ) {
            let records: Vec<TxRecord> = values
                .into_iter()
                .map(|(time, payload, deps)| TxRecord {
                    t0: T0(Timestamp::new(time, 0, 1)),
                    status: Status::PreAccepted,
                    t: T(Timestamp::new(time, 1, 2)),
                    deps: Deps::from_unsorted((0..deps as u64).map(|d| T0(Timestamp::new(d * 7, 0, 3))).collect()),
                    promised: Ballot::ZERO,
                    accepted: Ballot::ZERO,
                    body: Some(TxBody { id: u128::from(time), keys: Keys::All, payload: Bytes::from(payload) }),
                })
                .collect();
            let mut buf = Vec::new();
            let mut end = 0;
            for record in &records {
                let range = append_value(&mut buf, record).expect("encodes");
                prop_assert_eq!(range.start, end);
                end = range.end;
                prop_assert_eq!(&buf[range.clone()], &encode_value(record).expect("encodes")[..]);
                prop_assert_eq!(decode_value::<TxRecord>(&buf[range]), Ok(record.clone()));
            }
            prop_assert_eq!(buf.len(), end);
        }
    }

    proptest! {
        /// Key sets were `BTreeSet<Key>`s in format version 2; a `KeySet` (a sorted slice)
        /// must encode to the same bytes, and decode what a `BTreeSet` wrote, so stored
        /// records keep their format.
        #[test]
        fn key_sets_keep_the_stored_format(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..6),
        ) {
            #[derive(serde::Serialize)]
            enum Version2Keys {
                #[allow(dead_code)]
                All,
                Set(std::collections::BTreeSet<synevi_types::Key>),
            }
            let set: std::collections::BTreeSet<synevi_types::Key> =
                keys.iter().cloned().map(synevi_types::Key::from).collect();
            let old = encode_value(&Version2Keys::Set(set)).expect("encodes");
            let new = Keys::set(keys);
            prop_assert_eq!(&encode_value(&new).expect("encodes"), &old);
            prop_assert_eq!(decode_value::<Keys>(&old), Ok(new));
        }
    }

    #[test]
    fn format_record_round_trips_and_rejects_damage() {
        let record = FormatRecord {
            version: FORMAT_VERSION,
            serial: 513,
        };
        let bytes = record.encode();
        assert_eq!(FormatRecord::decode(&bytes), Ok(record));
        let mut damaged = bytes.clone();
        damaged[0] ^= 1;
        assert!(FormatRecord::decode(&damaged)
            .expect_err("damaged")
            .contains("marker"));
        assert!(FormatRecord::decode(&bytes[1..])
            .expect_err("short")
            .contains("long"));
    }
}
