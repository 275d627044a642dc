//! What travels on a replication link. The replica opens with one text
//! line, the primary answers with one; from then on both sides send
//! frames: a 15-byte header (kind, shard, offset, payload length; little
//! endian) and the payload.
//!
//! ```text
//! replica -> primary  REPLICATE <replid|-> <offset|-> <offset|-> ...\r\n
//!                     (a cluster node: REPLICATE-NODE <its host:port> <replid|-> ...)
//! primary -> replica  PRIMARY <replid> <shards>\r\n
//! primary -> replica  LOG(shard, offset, records) FULL_BEGIN(shard, offset)
//!                     SNAPSHOT(shard, records) FULL_END(shard) CONTINUE(shard, offset) PING
//!                     KEPT(shard, end offset, whole records)
//! replica -> primary  ACK(shard, applied offset)
//!                     STATE(a cluster node, first and on each change: bit 0 set if it
//!                     is stale, bit 1 if it takes the primary as acting for its keys;
//!                     payload: the digest of the node list it says so under, u64 LE)
//! ```
//!
//! A cluster node receives only the records of keys it holds copies of:
//! KEPT frames carry the log's records for it, whole, and the offset the
//! log stands at after them (the records left out count as sent). Its
//! FULL_END carries one byte, 1 when the resync was a merge (every copy
//! the primary holds of the node's keys: it did not act for them there).

use futures_lite::{AsyncRead, AsyncReadExt};

pub const HEADER: usize = 15;
/// Read buffer kept between frames once a large one has passed.
const KEEP_CAPACITY: usize = 4 << 20;
/// Longest handshake line accepted.
const MAX_LINE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Log bytes of a shard starting at `offset`.
    Log = 1,
    /// A full resync of the shard begins; the log continues from `offset`.
    FullBegin = 2,
    /// Records of the shard's snapshot.
    Snapshot = 3,
    FullEnd = 4,
    /// Nothing to send: the link is alive.
    Ping = 5,
    /// Partial resync: the shard's log continues from `offset`.
    Continue = 6,
    /// The records of the log kept for this replica; the log stands at `offset` after them.
    Kept = 7,
    /// The replica has applied the shard's log up to `offset`.
    Ack = 16,
    /// A cluster node says whether it is stale (`offset` bit 0) and whether
    /// it takes the primary as acting for its keys (bit 1: it stopped
    /// acting for them and the primary has applied its handover resync).
    State = 17,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Log,
            2 => Kind::FullBegin,
            3 => Kind::Snapshot,
            4 => Kind::FullEnd,
            5 => Kind::Ping,
            6 => Kind::Continue,
            7 => Kind::Kept,
            16 => Kind::Ack,
            17 => Kind::State,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub shard: u16,
    pub offset: u64,
    pub length: u32,
}

pub fn write_frame(out: &mut Vec<u8>, kind: Kind, shard: usize, offset: u64, payload: &[u8]) {
    write_header(out, kind, shard, offset, payload.len());
    out.extend_from_slice(payload);
}

/// A header whose payload the caller appends next.
pub fn write_header(out: &mut Vec<u8>, kind: Kind, shard: usize, offset: u64, length: usize) {
    out.push(kind as u8);
    out.extend_from_slice(&(shard as u16).to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&(length as u32).to_le_bytes());
}

/// Sets the payload length of the header at the front of `frame`.
pub fn set_length(frame: &mut [u8], length: usize) {
    frame[11..15].copy_from_slice(&(length as u32).to_le_bytes());
}

/// Sets the offset of the header at the front of `frame`.
pub fn set_offset(frame: &mut [u8], offset: u64) {
    frame[3..11].copy_from_slice(&offset.to_le_bytes());
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("replication link: {0}")]
    Io(#[from] std::io::Error),
    #[error("replication link: {0}")]
    Socket(#[from] glommio::GlommioError<()>),
    #[error("replication link closed")]
    Closed,
    #[error("replication link: bad frame kind {0}")]
    BadKind(u8),
    #[error("replication link: bad handshake line")]
    BadHandshake,
}

/// Reads frames from a stream, buffering what arrives.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    /// Largest payload accepted.
    max_payload: usize,
}

impl FrameReader {
    pub fn new(max_payload: usize) -> FrameReader {
        FrameReader {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            max_payload,
        }
    }

    async fn fill(&mut self, stream: &mut (impl AsyncRead + Unpin + ?Sized), need: usize) -> Result<(), WireError> {
        while self.buf.len() - self.start < need {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
                // One huge frame must not pin its buffer for the link's life.
                if self.buf.capacity() > KEEP_CAPACITY && self.buf.len() < KEEP_CAPACITY && need < KEEP_CAPACITY {
                    self.buf.shrink_to(KEEP_CAPACITY);
                }
            }
            let had = self.buf.len();
            let want = (need - had).max(64 * 1024);
            self.buf.resize(had + want, 0);
            let read = stream.read(&mut self.buf[had..]).await;
            let read = match read {
                Ok(read) => read,
                Err(error) => {
                    self.buf.truncate(had);
                    return Err(error.into());
                }
            };
            self.buf.truncate(had + read);
            if read == 0 {
                return Err(WireError::Closed);
            }
        }
        Ok(())
    }

    /// The next handshake line, without its "\r\n".
    pub async fn line(&mut self, stream: &mut (impl AsyncRead + Unpin + ?Sized)) -> Result<String, WireError> {
        loop {
            if let Some(end) = memchr::memchr(b'\n', &self.buf[self.start..]) {
                let line = &self.buf[self.start..self.start + end];
                let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned();
                self.start += end + 1;
                return Ok(line);
            }
            if self.buf.len() - self.start > MAX_LINE {
                return Err(WireError::BadHandshake);
            }
            let need = self.buf.len() - self.start + 1;
            self.fill(stream, need).await?;
        }
    }

    /// The next frame: its header and payload.
    pub async fn frame(&mut self, stream: &mut (impl AsyncRead + Unpin + ?Sized)) -> Result<(Header, &[u8]), WireError> {
        self.fill(stream, HEADER).await?;
        let bytes = &self.buf[self.start..self.start + HEADER];
        let kind = Kind::from_byte(bytes[0]).ok_or(WireError::BadKind(bytes[0]))?;
        let header = Header {
            kind,
            shard: u16::from_le_bytes([bytes[1], bytes[2]]),
            offset: u64::from_le_bytes(bytes[3..11].try_into().expect("8 bytes")),
            length: u32::from_le_bytes(bytes[11..15].try_into().expect("4 bytes")),
        };
        if header.length as usize > self.max_payload {
            return Err(WireError::BadKind(bytes[0]));
        }
        self.fill(stream, HEADER + header.length as usize).await?;
        let payload = self.start + HEADER..self.start + HEADER + header.length as usize;
        self.start = payload.end;
        Ok((header, &self.buf[payload]))
    }
}

/// The replica's opening line: the primary history it follows and, per
/// primary shard, the offset it has applied (None: must resync fully).
/// A cluster node names itself (`node`, its client address; slots are each
/// node's own): it is sent only its keys.
pub fn replicate_line(node: Option<&str>, replid: Option<&str>, offsets: &[Option<u64>]) -> String {
    let mut line = match node {
        Some(node) => format!("REPLICATE-NODE {node} {}", replid.unwrap_or("-")),
        None => format!("REPLICATE {}", replid.unwrap_or("-")),
    };
    for offset in offsets {
        match offset {
            Some(offset) => line.push_str(&format!(" {offset}")),
            None => line.push_str(" -"),
        }
    }
    line.push_str("\r\n");
    line
}

/// What a replica's opening line says.
#[derive(Debug, PartialEq, Eq)]
pub struct Replicate {
    pub node: Option<String>,
    pub replid: Option<String>,
    pub offsets: Vec<Option<u64>>,
}

pub fn parse_replicate(line: &str) -> Result<Replicate, WireError> {
    let mut words = line.split_ascii_whitespace();
    let node = match words.next() {
        Some("REPLICATE") => None,
        Some("REPLICATE-NODE") => Some(words.next().ok_or(WireError::BadHandshake)?.to_string()),
        _ => return Err(WireError::BadHandshake),
    };
    let replid = words.next().ok_or(WireError::BadHandshake)?;
    let replid = (replid != "-").then(|| replid.to_string());
    let offsets = words.map(|word| word.parse().ok()).collect();
    Ok(Replicate { node, replid, offsets })
}

pub fn primary_line(replid: &str, shards: usize) -> String {
    format!("PRIMARY {replid} {shards}\r\n")
}

pub fn parse_primary(line: &str) -> Result<(String, usize), WireError> {
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    match words[..] {
        ["PRIMARY", replid, shards] => Ok((replid.to_string(), shards.parse().map_err(|_| WireError::BadHandshake)?)),
        _ => Err(WireError::BadHandshake),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_lines_round_trip() {
        let line = replicate_line(None, Some("abc"), &[Some(5), None, Some(0)]);
        assert_eq!(line, "REPLICATE abc 5 - 0\r\n");
        let expected = Replicate {
            node: None,
            replid: Some("abc".to_string()),
            offsets: vec![Some(5), None, Some(0)],
        };
        assert_eq!(parse_replicate(line.trim_end()).unwrap(), expected);
        let line = replicate_line(Some("127.0.0.3:11211"), None, &[None]);
        assert_eq!(line, "REPLICATE-NODE 127.0.0.3:11211 - -\r\n");
        let expected = Replicate {
            node: Some("127.0.0.3:11211".to_string()),
            replid: None,
            offsets: vec![None],
        };
        assert_eq!(parse_replicate(line.trim_end()).unwrap(), expected);
        assert!(parse_replicate("REPLICATE-NODE x").is_err());
        assert_eq!(parse_primary("PRIMARY xyz 2").unwrap(), ("xyz".to_string(), 2));
        assert!(parse_primary("PRIMARY xyz").is_err());
    }

    #[test]
    fn frames_split_at_every_byte_are_read_whole() {
        let mut bytes = b"PRIMARY id 2\r\n".to_vec();
        write_frame(&mut bytes, Kind::Log, 1, 77, b"records");
        write_frame(&mut bytes, Kind::Ping, 0, 0, b"");
        write_frame(&mut bytes, Kind::Ack, 3, u64::MAX, b"");
        for split in 0..bytes.len() {
            let mut stream = futures_lite::io::Cursor::new(bytes.clone()).chain(futures_lite::io::empty());
            let mut parts = futures_lite::io::Cursor::new(bytes[..split].to_vec())
                .chain(futures_lite::io::Cursor::new(bytes[split..].to_vec()));
            for reader_stream in [&mut stream as &mut (dyn AsyncRead + Unpin), &mut parts] {
                let mut reader = FrameReader::new(1 << 20);
                futures_lite::future::block_on(async {
                    assert_eq!(reader.line(reader_stream).await.unwrap(), "PRIMARY id 2");
                    let (header, payload) = reader.frame(reader_stream).await.unwrap();
                    assert_eq!(
                        (header.kind, header.shard, header.offset, payload),
                        (Kind::Log, 1, 77, &b"records"[..])
                    );
                    assert_eq!(reader.frame(reader_stream).await.unwrap().0.kind, Kind::Ping);
                    let (ack, _) = reader.frame(reader_stream).await.unwrap();
                    assert_eq!((ack.kind, ack.shard, ack.offset), (Kind::Ack, 3, u64::MAX));
                    assert!(matches!(reader.frame(reader_stream).await, Err(WireError::Closed)));
                });
            }
        }
    }
}
