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

/// memcached's bytes per item beyond key and value: a 48-byte header, an
/// 8-byte CAS, the key's NUL and the value's "\r\n". `-I` is the limit of
/// that total, as in memcached.
pub const ITEM_OVERHEAD: usize = 59;
/// And the 4 bytes memcached adds for non-zero client flags.
pub const FLAGS_OVERHEAD: usize = 4;

/// Whether an item is over `-I` as memcached counts it (`max_payload` is
/// `-I` less ITEM_OVERHEAD).
pub fn too_large(key_len: usize, value_len: usize, client_flags: u32, max_payload: usize) -> bool {
    let flags = if client_flags != 0 { FLAGS_OVERHEAD } else { 0 };
    key_len + value_len + flags > max_payload
}

pub mod binary;
pub mod binary_reply;
pub mod meta;
pub mod text;
pub mod text_reply;
