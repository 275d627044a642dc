//! corecache-client: a memcached client that knows corecache's cluster:
//! ketama placement (the server's own ring), a pool per node, failed
//! nodes marked down and probed back, multi-key calls fanned out to every
//! node at once, per-call consistency (ONE, QUORUM, ALL; quorum reads),
//! and hot-key relief (reads spread over copies, batched and sharded
//! counters).
//! It also works as a plain ketama client of memcached servers.
//!
//! # Layout
//!
//! ```text
//! codec/       the client side of the three dialects, sans-IO: encoders
//!   mod.rs       append a request and return what its reply looks like;
//!   text.rs      `Protocol::decode` reads that reply one event at a time
//!   meta.rs      (each value, then the end) without copying values
//!   binary.rs
//! ring.rs      the ketama ring (libmemcached's), the one the server uses
//! health.rs    mcrouter-style TKO: down at once on a hard failure, after N
//!              timeouts on soft ones; probed back with a doubling backoff
//! topology.rs  node list (fixed or from `cluster nodes`) + ring + health:
//!              which node each key goes to, keys split by node
//! call.rs      one key's call: its requests (and `wait` for QUORUM/ALL)
//!              and how the replies become its outcome
//! many.rs      a multi-key call: each node's group of requests, the
//!              replies gathered in the keys' order
//! state.rs     what a driver keeps between calls (topology, copies, hot
//!              keys, refresh due), where a call goes, when it is retried
//! hot.rs       hot keys: learnt from the servers' `stats hotkeys`, how a
//!              hot read is spread (copies, `key#i` extra copies), counter
//!              increments summed per key
//! config.rs    timeouts, pool size, retries, refresh interval
//! error.rs     the typed errors of every call
//! blocking.rs  the driver on std::net: pools, one send per batch, fan-out
//! tokio_driver.rs  the same calls as async functions on tokio (feature
//!              `tokio`)
//! counters.rs  on it: increments coalesced over a window (a background
//!              flush), and counters sharded over n keys
//! ```
//!
//! Everything but the driver is plain code with no runtime: a driver moves
//! the bytes `codec` and `call` produce and reports what it saw to
//! `topology`.
//!
//! ```no_run
//! use corecache_client::{blocking::Client, Config, Consistency};
//!
//! let client = Client::fixed(&["127.0.0.1:11211", "127.0.0.2:11211"], Config::default())?;
//! client.set(b"greeting", b"hello", Consistency::One)?;
//! let values = client.get_many(&[b"greeting", b"missing"])?;
//! assert_eq!(values[0].as_ref().map(|v| &v.data[..]), Some(&b"hello"[..]));
//! assert!(values[1].is_none());
//! # Ok::<(), corecache_client::Error>(())
//! ```

pub mod blocking;
pub mod call;
pub mod codec;
pub mod config;
pub mod counters;
pub mod error;
pub mod health;
pub mod hot;
pub mod many;
pub mod ring;
pub mod state;
#[cfg(feature = "tokio")]
pub mod tokio_driver;
pub mod topology;

pub use call::{CasOutcome, Consistency, Store, Value};
pub use config::Config;
pub use error::Error;
