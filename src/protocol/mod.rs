//! Wire protocols: bytes in, protocol-neutral requests out; outcomes in,
//! bytes out. Protocols know nothing of shards or cores.
//!
//! - `text`: the classic text protocol parser (memcached's proto_text.c)
//! - `text_reply`: the text protocol's one reply writer
//! - `binary`: the binary protocol parser (memcached's proto_bin.c)
//! - `binary_reply`: the binary protocol's one reply writer
//!
//! A connection whose first byte is `binary::REQUEST_MAGIC` speaks binary;
//! any other speaks text.

pub mod binary;
pub mod binary_reply;
pub mod text;
pub mod text_reply;
