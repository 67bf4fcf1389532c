//! [`KvTx`]: the store's transactions, and what executing them returns ([`KvOk`], [`KvErr`]).

use serde::{Deserialize, Serialize};
use synevi::{Keys, SyneviError, Transaction};

/// The first byte of every encoded [`KvTx`]: the encoding's version. The event log keeps
/// transactions for as long as the store lives, so a later version of this crate must still
/// recognise (or clearly refuse) what an earlier one wrote.
const ENCODING_VERSION: u8 = 1;

/// One operation on the key-value store. Every operation, reads included, is a synevi
/// transaction: it is ordered by consensus with every other operation on the same key, which
/// is what makes every read linearizable on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvTx {
    /// Reads a key.
    Get {
        /// The key.
        key: String,
    },
    /// Sets a key to a value, returning the previous value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Sets a key to `value` if its current value is `expected` (`None`: the key must not
    /// exist).
    Cas {
        /// The key.
        key: String,
        /// The value the key must have for the swap to happen; `None` means "absent".
        expected: Option<String>,
        /// The new value.
        value: String,
    },
    /// Removes a key, returning the value it had.
    Delete {
        /// The key.
        key: String,
    },
    /// Touches no key and changes nothing. A node submits it to learn that it can reach a
    /// quorum (its `/health` check): it commits only with a majority's answers, and, with
    /// an empty key set, waits for no other transaction.
    Ping,
}

/// What a successful [`KvTx`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOk {
    /// The result of [`KvTx::Get`]: the value, or `None` if the key does not exist.
    Value(Option<String>),
    /// The result of [`KvTx::Put`]: the value the key had before.
    Put {
        /// The value before the put; `None` if the key did not exist.
        previous: Option<String>,
    },
    /// The result of a successful [`KvTx::Cas`]: the key now holds the new value.
    Swapped,
    /// The result of [`KvTx::Delete`]: the value the key had.
    Deleted {
        /// The value before the delete; `None` if the key did not exist (nothing changed).
        previous: Option<String>,
    },
    /// The result of [`KvTx::Ping`].
    Pong,
}

/// The executor's refusal of a transaction (identical on every node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KvErr {
    /// A [`KvTx::Cas`] found another value than it expected; nothing changed.
    #[error("compare-and-swap failed: the current value is {current:?}")]
    CasMismatch {
        /// The key's value when the swap was tried; `None` if it does not exist.
        current: Option<String>,
    },
}

impl KvTx {
    /// The key this transaction touches (`None` for [`KvTx::Ping`]).
    pub fn key(&self) -> Option<&str> {
        match self {
            KvTx::Get { key }
            | KvTx::Put { key, .. }
            | KvTx::Cas { key, .. }
            | KvTx::Delete { key } => Some(key),
            KvTx::Ping => None,
        }
    }
}

impl Transaction for KvTx {
    type TxOk = KvOk;
    type TxErr = KvErr;

    /// A version byte, then the transaction in postcard.
    fn as_bytes(&self) -> Vec<u8> {
        // Serialising strings, options and enum tags into a vector cannot fail in postcard
        // (it fails only for types that do not know their length, which `KvTx` has none of):
        // a failure here is a bug in this crate, not bad input.
        postcard::to_extend(self, vec![ENCODING_VERSION])
            .expect("postcard serialises every KvTx into a vector")
    }

    fn from_bytes(bytes: Vec<u8>) -> Result<Self, SyneviError> {
        let decode_error = |reason: String| SyneviError::Decode {
            what: "KvTx",
            reason,
        };
        let Some((&version, body)) = bytes.split_first() else {
            return Err(decode_error("empty payload".into()));
        };
        if version != ENCODING_VERSION {
            return Err(decode_error(format!(
                "encoding version {version}, this build reads version {ENCODING_VERSION}"
            )));
        }
        let (transaction, rest) =
            postcard::take_from_bytes::<KvTx>(body).map_err(|e| decode_error(e.to_string()))?;
        if !rest.is_empty() {
            return Err(decode_error(format!(
                "{} bytes left over after the transaction",
                rest.len()
            )));
        }
        Ok(transaction)
    }

    /// Operations on one key conflict only with operations on the same key; `Ping` conflicts
    /// with nothing.
    fn keys(&self) -> Keys {
        match self.key() {
            Some(key) => Keys::single(key),
            None => Keys::set(std::iter::empty::<&str>()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<KvTx> {
        vec![
            KvTx::Get { key: "k".into() },
            KvTx::Put {
                key: "k".into(),
                value: "v".into(),
            },
            KvTx::Cas {
                key: "ключ".into(),
                expected: None,
                value: "v".into(),
            },
            KvTx::Cas {
                key: "k".into(),
                expected: Some("old".into()),
                value: "new".into(),
            },
            KvTx::Delete { key: "k".into() },
            KvTx::Ping,
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for tx in all_kinds() {
            let decoded = KvTx::from_bytes(tx.as_bytes());
            assert_eq!(decoded, Ok(tx));
        }
    }

    #[test]
    fn keys_are_the_one_key_or_none() {
        let get = KvTx::Get { key: "a".into() };
        let put_a = KvTx::Put {
            key: "a".into(),
            value: "1".into(),
        };
        let put_b = KvTx::Put {
            key: "b".into(),
            value: "1".into(),
        };
        assert_eq!(get.keys(), Keys::single("a"));
        assert!(get.keys().conflicts_with(&put_a.keys()));
        assert!(!get.keys().conflicts_with(&put_b.keys()));
        assert!(!KvTx::Ping.keys().conflicts_with(&put_a.keys()));
        assert!(!KvTx::Ping.keys().is_all());
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        assert!(KvTx::from_bytes(Vec::new()).is_err());
        assert!(KvTx::from_bytes(vec![99, 0]).is_err(), "unknown version");
        assert!(KvTx::from_bytes(vec![ENCODING_VERSION]).is_err(), "no body");
        assert!(
            KvTx::from_bytes(vec![ENCODING_VERSION, 200]).is_err(),
            "unknown tag"
        );
        let mut trailing = KvTx::Ping.as_bytes();
        trailing.push(0);
        assert!(KvTx::from_bytes(trailing).is_err(), "trailing bytes");
        // Invalid UTF-8 inside a key.
        let bad_utf8 = vec![ENCODING_VERSION, 0, 2, 0xff, 0xfe];
        assert!(KvTx::from_bytes(bad_utf8).is_err());
        // Every truncation of every kind fails cleanly.
        for tx in all_kinds() {
            let bytes = tx.as_bytes();
            for cut in 0..bytes.len() {
                assert!(
                    KvTx::from_bytes(bytes[..cut].to_vec()).is_err(),
                    "{tx:?} cut at {cut}"
                );
            }
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes (a payload from a buggy or foreign peer, or a damaged store)
        /// decode to a transaction or to an error: never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = KvTx::from_bytes(bytes);
        }

        /// Valid transactions with a few bytes changed never panic, and whatever still
        /// decodes encodes to bytes that decode to it again.
        #[test]
        fn corrupted_transactions_never_panic(
            kind in 0..all_kinds().len(),
            flips in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                1..4,
            ),
        ) {
            let mut bytes = all_kinds()[kind].as_bytes();
            for (index, value) in flips {
                let at = index.index(bytes.len());
                bytes[at] = value;
            }
            if let Ok(decoded) = KvTx::from_bytes(bytes) {
                proptest::prop_assert_eq!(KvTx::from_bytes(decoded.as_bytes()), Ok(decoded));
            }
        }
    }
}
