//! corecache: a thread-per-core, shared-nothing memcached-compatible cache.
//!
//! # Layout
//!
//! ```text
//! config.rs        command line (memcached's flags) -> validated Config
//! global.rs        the host-wide state every thread shares (settings,
//!                  counters, reports, the replication role, the cluster):
//!                  below both server/ and replication/, which never import
//!                  each other's insides (the worker side of replication
//!                  sees a core through the shard_side::Worker trait)
//! hash.rs          the one key hasher: picks the shard, feeds the index
//! host.rs          the host check (sysctls, IRQs, limits) for a core layout
//! metrics.rs       Prometheus exposition of stats and latency (--metrics-port)
//! net.rs           binding listening sockets (client, replication, cluster ports)
//! report.rs        each core's published counters and latencies (plain data)
//! request.rs       protocol-neutral requests (KeyOp) and answers (Outcome)
//! protocol/        bytes <-> requests, one parser and one reply writer per
//!                  protocol: text (+ meta commands) and binary, each held to
//!                  memcached 1.6.45's behaviour on the wire (its t/ suite,
//!                  tests/conformance; the differential test, tests/differential)
//! server/          cores and sockets: one glommio executor per core
//!   mod.rs           starts the cores, the channel mesh, the sweeper; a core
//!                    that ends before a stop ends the process
//!   listener.rs      SO_REUSEPORT listener per core, connection limit
//!   connection.rs    read buffer -> parse -> route -> replies, one send;
//!                    the first byte picks the protocol's Session
//!   session.rs       what a protocol provides to the connection
//!   text_session.rs, binary_session.rs   the two client Sessions
//!   peer_session.rs  another cluster node's link: forwarded ops in,
//!                    outcomes out (cluster::wire frames)
//!   node_links.rs    this core's pipelined links to the other nodes
//!   router.rs        hash once, run local ops, batch remote ops per core
//!                    and per node acting for them
//! store/           one Shard per core: index + slab + segmented LRU + expiry
//!                  (+ flush generations, `stats detail` prefix counts, the
//!                  sampled hot keys of `stats hotkeys`)
//! replication/     per-shard logs, the replication core (backlogs, primary
//!                  and replica links, filtered per cluster node), applying
//!                  records on a replica, the failure detector's and the
//!                  node list's UDP socket (gossip.rs)
//! cluster/         several hosts as one cache: the node list and how its
//!                  changes merge (node_list.rs), the ketama ring (ring, from
//!                  corecache-client: one ring for the server and clients),
//!                  each key's preference list and acting node, and the
//!                  handoffs of a list change (mod.rs; the ring placing
//!                  each giver, givers.rs), who is alive and
//!                  who may act, the partition policy (membership.rs), SWIM
//!                  as plain code (swim.rs), the forwarding frames (wire.rs)
//! stats.rs         `stats` output: shard reports + server counters
//! ```
//!
//! A request travels: bytes read by `server::connection` -> parsed by
//! `protocol::text` or `protocol::binary` into steps -> `server::router`
//! hashes each key once (in cluster mode first places it on the ring: a
//! key another node acts for goes to it over `server::node_links`),
//! runs it on the local `store::Shard` or batches it to the owning core over
//! the channel mesh -> `Outcome`s come back in request order ->
//! the protocol's reply writer writes them -> one send per batch.
//! A write also leaves the key's new state in the shard's replication log
//! (`replication::shard_side`), which the replication core streams to
//! replicas, and in a cluster to the other nodes of the key's preference
//! list (`replication::primary`, filtered by `cluster::Cluster::replicates_to`).

pub mod cluster;
pub mod config;
pub mod global;
pub mod hash;
pub mod host;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod replication;
pub mod report;
pub mod request;
pub mod server;
pub mod stats;
pub mod store;
