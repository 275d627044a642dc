//! Wire protocols: bytes in, protocol-neutral requests out; outcomes in,
//! bytes out. Protocols know nothing of shards or cores.
//!
//! - `text`: the text protocol parser (memcached's proto_text.c)
//! - `meta`: the meta commands of the text protocol (mg, ms, md, ma, mn, me)
//! - `text_reply`: the text protocol's one reply writer, meta replies included
//! - `binary`: the binary protocol parser (memcached's proto_bin.c)
//! - `binary_reply`: the binary protocol's one reply writer
//!
//! A connection whose first byte is `binary::REQUEST_MAGIC` speaks binary;
//! any other speaks text.

pub mod binary;
pub mod binary_reply;
pub mod meta;
pub mod text;
pub mod text_reply;
