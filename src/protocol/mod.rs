//! Wire protocols: bytes in, protocol-neutral requests out; outcomes in,
//! bytes out. Protocols know nothing of shards or cores.
//!
//! - `text`: the classic text protocol parser (memcached's proto_text.c)
//! - `text_reply`: the text protocol's one reply writer

pub mod text;
pub mod text_reply;

/// The first byte of every binary-protocol request.
pub const BINARY_REQUEST_MAGIC: u8 = 0x80;
