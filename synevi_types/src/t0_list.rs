//! A compact byte encoding of `t0` lists (deps, forgotten ids), shared by the gRPC wire
//! format and the serde form of [`Deps`](crate::Deps) (and so by the LMDB store).
//!
//! Entries follow each other with no separator, each three varints (protobuf's: 7 bits per
//! byte, low bits first, the high bit set on every byte but the last):
//! - `zigzag(time[i] - time[i-1])`, with `time[-1] = 0` and wrapping `u64` arithmetic (zigzag
//!   so that unsorted lists encode too);
//! - `counter[i]`, at most `u32::MAX`;
//! - `serial[i]`, at most `u16::MAX`.
//!
//! An entry of a sorted list takes about 3 bytes, against 8 or more one field at a time.
//! Decoding is total: a list that ends inside an entry or holds a value out of range is an
//! error naming the entry, never a panic.

use crate::{Timestamp, T0};

/// Appends the encoding of `t0s` to `out`.
pub fn encode_t0s(t0s: &[T0], out: &mut Vec<u8>) {
    out.reserve(t0s.len() * 3);
    let mut previous: u64 = 0;
    for t0 in t0s {
        // Wrapping difference, read back with a wrapping sum: exact for any two u64s.
        let delta = t0.0.time.wrapping_sub(previous) as i64;
        let zigzag = ((delta << 1) ^ (delta >> 63)) as u64;
        previous = t0.0.time;
        let (counter, serial) = (u64::from(t0.0.counter), u64::from(t0.0.serial));
        // The common entry (same or next millisecond, small counter and serial): three
        // one-byte varints.
        if zigzag < 0x80 && counter < 0x80 && serial < 0x80 {
            out.extend_from_slice(&[zigzag as u8, counter as u8, serial as u8]);
            continue;
        }
        write_varint(zigzag, out);
        write_varint(counter, out);
        write_varint(serial, out);
    }
}

/// Decodes a list written by [`encode_t0s`]; the error says what is wrong, to be prefixed
/// with the name of the field that held the list.
pub fn decode_t0s(bytes: &[u8]) -> Result<Vec<T0>, String> {
    // Every entry takes at least 3 bytes.
    let mut t0s = Vec::with_capacity(bytes.len() / 3);
    let mut time: u64 = 0;
    let mut at = 0;
    while at < bytes.len() {
        let entry = t0s.len();
        // The common entry: three one-byte varints (see `encode_t0s`).
        if let Some(&[zigzag, counter, serial]) = bytes.get(at..at + 3) {
            if (zigzag | counter | serial) < 0x80 {
                at += 3;
                let delta = i64::from(zigzag >> 1) ^ -i64::from(zigzag & 1);
                time = time.wrapping_add(delta as u64);
                t0s.push(T0(Timestamp::new(time, counter.into(), serial.into())));
                continue;
            }
        }
        let (Some(zigzag), Some(counter), Some(serial)) = (
            read_varint(bytes, &mut at),
            read_varint(bytes, &mut at),
            read_varint(bytes, &mut at),
        ) else {
            return Err(format!(
                "ends inside entry {entry}, or a value in it exceeds 64 bits"
            ));
        };
        let delta = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        time = time.wrapping_add(delta as u64);
        let counter = u32::try_from(counter)
            .map_err(|_| format!("has counter {counter} above u32::MAX in entry {entry}"))?;
        let serial = u16::try_from(serial).map_err(|_| {
            format!("has serial {serial}, above the largest serial 65535, in entry {entry}")
        })?;
        t0s.push(T0(Timestamp::new(time, counter, serial)));
    }
    Ok(t0s)
}

/// Appends `value` as a varint.
#[inline]
fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads one varint at `*at`; `None` if the bytes end inside it or it exceeds 64 bits.
#[inline]
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        // The tenth byte holds bit 63 alone.
        if shift == 63 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0(time: u64, counter: u32, serial: u16) -> T0 {
        T0(Timestamp::new(time, counter, serial))
    }

    #[test]
    fn sorted_lists_take_about_three_bytes_an_entry() {
        let t0s: Vec<T0> = (0..100).map(|i| t0(1_795_000_000_000 + i, 0, 3)).collect();
        let mut bytes = Vec::new();
        encode_t0s(&t0s, &mut bytes);
        // The first entry carries the whole time (6 bytes), the others a delta of 1.
        assert_eq!(bytes.len(), 8 + 99 * 3);
        assert_eq!(decode_t0s(&bytes), Ok(t0s));
    }

    #[test]
    fn malformed_lists_are_errors_naming_the_entry() {
        let mut bytes = Vec::new();
        encode_t0s(&[t0(1, 0, 1), t0(2, 0, 1)], &mut bytes);
        bytes.pop();
        assert!(decode_t0s(&bytes)
            .unwrap_err()
            .contains("ends inside entry 1"));
        assert!(decode_t0s(&[0xff; 11])
            .unwrap_err()
            .contains("exceeds 64 bits"));
        assert!(decode_t0s(&[2, 0x80, 0x80, 0x80, 0x80, 0x10, 1])
            .unwrap_err()
            .contains("counter 4294967296"));
        assert!(decode_t0s(&[2, 0, 0xf0, 0xa2, 0x04])
            .unwrap_err()
            .contains("serial 70000"));
    }

    proptest! {
        #[test]
        fn any_list_round_trips(entries in proptest::collection::vec(
            (any::<u64>(), any::<u32>(), any::<u16>()), 0..64,
        )) {
            let t0s: Vec<T0> = entries.into_iter().map(|(a, b, c)| t0(a, b, c)).collect();
            let mut bytes = Vec::new();
            encode_t0s(&t0s, &mut bytes);
            prop_assert_eq!(decode_t0s(&bytes), Ok(t0s));
        }

        /// Values around the one-byte boundary, so one-byte entries (the fast path of both
        /// directions) and longer ones mix, in sorted and unsorted lists.
        #[test]
        fn small_values_round_trip(
            start in any::<u64>(),
            steps in proptest::collection::vec((-200i64..200, 0u32..300, 0u16..300), 0..64),
        ) {
            let mut time = start;
            let t0s: Vec<T0> = steps
                .into_iter()
                .map(|(step, counter, serial)| {
                    time = time.wrapping_add(step as u64);
                    t0(time, counter, serial)
                })
                .collect();
            let mut bytes = Vec::new();
            encode_t0s(&t0s, &mut bytes);
            prop_assert_eq!(decode_t0s(&bytes), Ok(t0s));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_t0s(&bytes);
        }

        #[test]
        fn varints_agree_with_protobuf(values in proptest::collection::vec(any::<u64>(), 0..32)) {
            // A varint's protobuf definition, bit by bit, independently of `write_varint`.
            let mut expected = Vec::new();
            for &value in &values {
                let bits = 64 - value.leading_zeros().min(63) as usize;
                let groups = bits.div_ceil(7);
                for group in 0..groups {
                    let low = ((value >> (7 * group)) & 0x7f) as u8;
                    expected.push(if group + 1 < groups { low | 0x80 } else { low });
                }
            }
            let mut ours = Vec::new();
            for &value in &values {
                write_varint(value, &mut ours);
            }
            prop_assert_eq!(&ours, &expected);
            let mut at = 0;
            for &value in &values {
                prop_assert_eq!(read_varint(&ours, &mut at), Some(value));
            }
            prop_assert_eq!(at, ours.len());
        }
    }
}
