//! Log records: what a shard's log holds and what a snapshot is made of.
//! Each record carries the resulting state of one key (or a flush), so
//! applying one twice, or a suffix of the log again, gives the same store.
//!
//! Layout (little endian):
//! - Set:    `S` key_len:u8 flags:u32 expiry:i64 cas:u64 value_len:u32 key value
//! - Delete: `D` key_len:u8 key
//! - Flush:  `F` effective:i64   (unix time it takes effect; 0: at once)
//!
//! `expiry` is a unix time (0: never), so hosts started at different times
//! agree on it exactly.
//!
//! A cluster node logs the records it applied from another node with the
//! tag in lower case (`s`, `d`): relayed records, which go to whole-host
//! replicas but never on to other cluster nodes (only the node acting for
//! a key sends its copies; two nodes acting for a key for a moment must not
//! echo each other's records forever).

use crate::store::ItemState;

const SET: u8 = b'S';
const DELETE: u8 = b'D';
const FLUSH: u8 = b'F';
/// The tag of a relayed record is its tag in lower case.
const RELAYED: u8 = 0x20;
const SET_HEADER: usize = 1 + 1 + 4 + 8 + 8 + 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// The key's item as it now stands.
    Set(ItemState<'a>),
    Delete {
        key: &'a [u8],
    },
    Flush {
        effective_unix: i64,
    },
}

/// A record that cannot be read: the stream is corrupt.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt replication record (tag {tag:#04x})")]
pub struct CorruptRecord {
    pub tag: u8,
}

impl<'a> Record<'a> {
    /// The key a record is about (none for a flush).
    pub fn key(&self) -> Option<&'a [u8]> {
        match *self {
            Record::Set(ItemState { key, .. }) | Record::Delete { key } => Some(key),
            Record::Flush { .. } => None,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Record::Set(ItemState {
                key,
                client_flags,
                expiry_unix,
                cas,
                value,
            }) => {
                out.reserve(SET_HEADER + key.len() + value.len());
                out.push(SET);
                out.push(key.len() as u8);
                out.extend_from_slice(&client_flags.to_le_bytes());
                out.extend_from_slice(&expiry_unix.to_le_bytes());
                out.extend_from_slice(&cas.to_le_bytes());
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(value);
            }
            Record::Delete { key } => {
                out.push(DELETE);
                out.push(key.len() as u8);
                out.extend_from_slice(key);
            }
            Record::Flush { effective_unix } => {
                out.push(FLUSH);
                out.extend_from_slice(&effective_unix.to_le_bytes());
            }
        }
    }

    /// Encodes the record as relayed (applied here from another node).
    pub fn encode_relayed(&self, out: &mut Vec<u8>) {
        let at = out.len();
        self.encode(out);
        if !matches!(self, Record::Flush { .. }) {
            out[at] |= RELAYED;
        }
    }

    /// Whether the encoded record at the front of `raw` is relayed.
    pub fn is_relayed(raw: &[u8]) -> bool {
        raw.first().is_some_and(|&tag| unrelayed(tag) != tag)
    }

    /// Reads one record from the front of `buf` (relayed or not): the
    /// record and its length, `Ok(None)` if `buf` holds only part of one.
    pub fn decode(buf: &'a [u8]) -> Result<Option<(Record<'a>, usize)>, CorruptRecord> {
        let Some(&tag) = buf.first() else {
            return Ok(None);
        };
        let tag = unrelayed(tag);
        let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        match tag {
            SET => {
                if buf.len() < SET_HEADER {
                    return Ok(None);
                }
                let key_len = usize::from(buf[1]);
                let value_len = u32_at(22) as usize;
                let total = SET_HEADER + key_len + value_len;
                if buf.len() < total {
                    return Ok(None);
                }
                let key = &buf[SET_HEADER..SET_HEADER + key_len];
                let record = Record::Set(ItemState {
                    key,
                    client_flags: u32_at(2),
                    expiry_unix: u64_at(6) as i64,
                    cas: u64_at(14),
                    value: &buf[SET_HEADER + key_len..total],
                });
                Ok(Some((record, total)))
            }
            DELETE => {
                let Some(&key_len) = buf.get(1) else {
                    return Ok(None);
                };
                let total = 2 + usize::from(key_len);
                if buf.len() < total {
                    return Ok(None);
                }
                Ok(Some((Record::Delete { key: &buf[2..total] }, total)))
            }
            FLUSH => {
                if buf.len() < 9 {
                    return Ok(None);
                }
                Ok(Some((
                    Record::Flush {
                        effective_unix: u64_at(1) as i64,
                    },
                    9,
                )))
            }
            tag => Err(CorruptRecord { tag }),
        }
    }
}

/// A record's tag without its relayed mark.
fn unrelayed(tag: u8) -> u8 {
    if tag == SET | RELAYED || tag == DELETE | RELAYED {
        tag & !RELAYED
    } else {
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole records at the front of `buf`, and how many bytes they take.
    fn decode_all(buf: &[u8]) -> Result<(Vec<Record<'_>>, usize), CorruptRecord> {
        let mut records = Vec::new();
        let mut at = 0;
        while let Some((record, length)) = Record::decode(&buf[at..])? {
            records.push(record);
            at += length;
        }
        Ok((records, at))
    }

    fn sample() -> Vec<Record<'static>> {
        vec![
            Record::Set(ItemState {
                key: b"alpha",
                client_flags: 0xdead_beef,
                expiry_unix: 1_800_000_000,
                cas: 0x0102_0304_0506_0708,
                value: b"one\r\ntwo",
            }),
            Record::Delete { key: b"beta" },
            Record::Flush { effective_unix: 0 },
            Record::Set(ItemState {
                key: b"k",
                client_flags: 0,
                expiry_unix: 0,
                cas: 1,
                value: b"",
            }),
        ]
    }

    #[test]
    fn records_round_trip() {
        let mut bytes = Vec::new();
        for record in sample() {
            record.encode(&mut bytes);
        }
        let (records, used) = decode_all(&bytes).unwrap();
        assert_eq!(records, sample());
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn a_stream_split_at_every_byte_yields_only_whole_records() {
        let mut bytes = Vec::new();
        for record in sample() {
            record.encode(&mut bytes);
        }
        for split in 0..bytes.len() {
            let (front, used) = decode_all(&bytes[..split]).unwrap();
            let (back, rest) = decode_all(&bytes[used..]).unwrap();
            assert!(used <= split);
            assert_eq!(rest, bytes.len() - used);
            let joined: Vec<_> = front.into_iter().chain(back).collect();
            assert_eq!(joined, sample(), "split at {split}");
        }
    }

    #[test]
    fn relayed_records_read_the_same_and_say_so() {
        for record in sample() {
            let (mut plain, mut relayed) = (Vec::new(), Vec::new());
            record.encode(&mut plain);
            record.encode_relayed(&mut relayed);
            assert!(!Record::is_relayed(&plain));
            assert_eq!(Record::is_relayed(&relayed), !matches!(record, Record::Flush { .. }));
            assert_eq!(Record::decode(&relayed).unwrap(), Some((record, plain.len())));
        }
    }

    #[test]
    fn an_unknown_tag_is_corrupt() {
        assert_eq!(Record::decode(b"Zxyz"), Err(CorruptRecord { tag: b'Z' }));
    }
}
