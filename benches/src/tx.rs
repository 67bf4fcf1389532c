//! [`BenchTx`], the transaction every workload submits, and [`Counter`], the executor that
//! applies it: as little application work as possible, so the figures are synevi's own.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use synevi::{Executor, Keys, SyneviError, SyneviResult, Transaction};

/// The seed's payload: every benchmark transaction carries these bytes.
pub const SEED_PAYLOAD: &[u8] = b"This is a transaction";

/// Leading byte of an encoded [`BenchTx`] that conflicts with everything.
const TAG_ALL: u8 = 0;
/// Leading byte of an encoded [`BenchTx`] with one key (then a big-endian `u16` key length).
const TAG_SINGLE: u8 = 1;

/// What a benchmark transaction touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxKeys {
    /// Everything: the trait's default ([`Keys::All`]), as in the seed's workload.
    All,
    /// One key.
    Single(Bytes),
}

/// A benchmark transaction: its keys and an opaque payload.
///
/// Encoding: `0, payload` for [`TxKeys::All`]; `1, key length (u16, big-endian), key,
/// payload` for [`TxKeys::Single`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchTx {
    /// What the transaction conflicts with.
    pub keys: TxKeys,
    /// The application's bytes (the seed's sentence).
    pub payload: Bytes,
}

impl BenchTx {
    /// The seed's transaction: its payload, conflicting with every other transaction.
    pub fn seed() -> Self {
        BenchTx {
            keys: TxKeys::All,
            payload: Bytes::from_static(SEED_PAYLOAD),
        }
    }

    /// The seed's payload on one key.
    pub fn on_key(key: Bytes) -> Self {
        BenchTx {
            keys: TxKeys::Single(key),
            payload: Bytes::from_static(SEED_PAYLOAD),
        }
    }
}

/// The executor trait asks for `Serialize`; a benchmark transaction serialises as its
/// encoding.
impl serde::Serialize for BenchTx {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.as_bytes())
    }
}

impl Transaction for BenchTx {
    type TxErr = ();
    type TxOk = ();

    fn as_bytes(&self) -> Vec<u8> {
        let mut bytes = BytesMut::with_capacity(3 + self.payload.len() + 16);
        match &self.keys {
            TxKeys::All => bytes.put_u8(TAG_ALL),
            TxKeys::Single(key) => {
                // Keys are made by the harness and are a few bytes long; a longer one would
                // be a bug here, not bad input.
                let length = u16::try_from(key.len()).expect("benchmark keys are short");
                bytes.put_u8(TAG_SINGLE);
                bytes.put_u16(length);
                bytes.put_slice(key);
            }
        }
        bytes.put_slice(&self.payload);
        bytes.to_vec()
    }

    fn from_bytes(bytes: Vec<u8>) -> Result<Self, SyneviError> {
        let malformed = |reason: &str| SyneviError::Decode {
            what: "BenchTx",
            reason: reason.to_string(),
        };
        let mut bytes = Bytes::from(bytes);
        if !bytes.has_remaining() {
            return Err(malformed("empty"));
        }
        let keys = match bytes.get_u8() {
            TAG_ALL => TxKeys::All,
            TAG_SINGLE => {
                if bytes.remaining() < 2 {
                    return Err(malformed("the key length is cut off"));
                }
                let length = usize::from(bytes.get_u16());
                if bytes.remaining() < length {
                    return Err(malformed("the key is cut off"));
                }
                TxKeys::Single(bytes.split_to(length))
            }
            _ => return Err(malformed("unknown key tag")),
        };
        Ok(BenchTx {
            keys,
            payload: bytes,
        })
    }

    fn keys(&self) -> Keys {
        match &self.keys {
            TxKeys::All => Keys::All,
            TxKeys::Single(key) => Keys::single(synevi::Key(key.clone())),
        }
    }
}

/// Counts what it executes; nothing else.
#[derive(Debug, Default)]
pub struct Counter {
    executed: AtomicU64,
}

impl Counter {
    /// How many transactions this executor has applied.
    pub fn executed(&self) -> u64 {
        self.executed.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl Executor for Counter {
    type Tx = BenchTx;

    async fn execute(&self, _transaction: BenchTx) -> SyneviResult<Self> {
        self.executed.fetch_add(1, Ordering::Relaxed);
        Ok(Ok(()))
    }

    /// An atomic increment: nothing to wait for.
    fn executes_inline(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        for tx in [BenchTx::seed(), BenchTx::on_key(Bytes::from_static(b"c17"))] {
            let decoded = BenchTx::from_bytes(tx.as_bytes()).expect("decodes");
            assert_eq!(decoded, tx);
        }
    }

    #[test]
    fn the_seed_transaction_conflicts_with_everything() {
        assert!(BenchTx::seed().keys().is_all());
        assert!(!BenchTx::on_key(Bytes::from_static(b"k")).keys().is_all());
    }

    #[test]
    fn malformed_bytes_are_errors() {
        for bytes in [
            vec![],
            vec![7],
            vec![TAG_SINGLE, 0],
            vec![TAG_SINGLE, 0, 9, b'x'],
        ] {
            assert!(BenchTx::from_bytes(bytes).is_err());
        }
    }
}
