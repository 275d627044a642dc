//! The per-shard store: knows items, memory and time; nothing of sockets
//! or wire formats.
//!
//! - `shard`: the store API (execute a KeyOp, flush, sweep, report)
//! - `slab`: pages and size-classed chunks under the memory limit
//! - `item`: the item layout inside a chunk
//! - `lru`: segmented hot/warm/cold LRU per class
//! - `index`: hash -> item handle
//! - `clock`: relative time and exptime conversion
//! - `stats`: counters with memcached's names
//! - `prefix_stats`: `stats detail` counts per key prefix
//! - `hot_keys`: the shard's hottest keys, sampled (`stats hotkeys`)
//! - `replicated`: key state, snapshot walk and applying another host's items

pub mod clock;
mod commands;
pub mod hot_keys;
pub mod index;
pub mod item;
pub mod lru;
pub mod prefix_stats;
mod replicated;
pub mod shard;
pub mod slab;
pub mod stats;

pub use clock::{Clock, RelTime};
pub use replicated::{ItemState, Replicated};
pub use shard::{KEY_MAX_LENGTH, Shard, ShardConfig};

#[cfg(test)]
mod tests;
