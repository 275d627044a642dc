//! corecache-loadgen: a load generator for memcached-protocol servers that
//! tells the truth about latency.
//!
//! # Layout
//!
//! ```text
//! options.rs    command line -> Plan (validated)
//! keys.rs       key space and distributions (uniform, zipf, sequential)
//! workload.rs   the operation mix, value sizes, deterministic values
//! schedule.rs   open-loop arrival times (Poisson or even)
//! protocol.rs   operations on the wire (text, meta, binary) through
//!               corecache-client's codec; values checked as they are read
//! links.rs      one load connection's sockets: to the server, or to each
//!               node of a cluster (--cluster), requests routed by
//!               corecache-client's topology; replies matched to requests
//! results.rs    HdrHistograms per operation, counters, reports
//! runner.rs     pinned glommio threads, connections, phases
//! chart.rs      SVG latency-by-percentile chart from JSON reports
//! ```
//!
//! A run: prefill (optional, unmeasured) -> warm-up (discarded) ->
//! measurement. Each thread is a pinned glommio executor (io_uring) with its
//! connections as tasks; a connection writes every request it has ready in
//! one send. In open loop, latency is measured from each request's
//! intended send time, so a stalled server shows in the tail.

pub mod chart;
pub mod keys;
pub mod links;
pub mod options;
pub mod protocol;
pub mod results;
pub mod runner;
pub mod schedule;
pub mod workload;
