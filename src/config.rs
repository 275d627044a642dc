//! The command line: memcached's flags (same letters, same defaults) plus
//! corecache's own, validated into a `Config`. A bad value fails at start
//! with a one-line reason.

use std::net::IpAddr;

use clap::{ArgAction, Parser};
use thiserror::Error;

use crate::cluster::ClusterConfig;
use crate::cluster::membership::PartitionPolicy;
use crate::cluster::ring::{self, NodeAddress};
use crate::store::item::HEADER_BYTES;
use crate::store::slab::PAGE_SIZE;

#[derive(Parser, Debug)]
#[command(name = "corecache", version, about = "A thread-per-core, memcached-compatible cache server")]
pub struct Args {
    /// TCP port to listen on
    #[arg(short = 'p', long = "port", default_value_t = 11211)]
    pub port: u16,
    /// Addresses to listen on, comma-separated
    #[arg(short = 'l', long = "listen", default_value = "0.0.0.0")]
    pub listen: String,
    /// UDP port: only 0 (off) is accepted, UDP is not served
    #[arg(short = 'U', long = "udp-port", default_value_t = 0)]
    pub udp_port: u16,
    /// Item memory in megabytes, for the whole server
    #[arg(short = 'm', long = "memory-limit", default_value_t = 64)]
    pub memory_mb: u64,
    /// Maximum simultaneous connections
    #[arg(short = 'c', long = "conn-limit", default_value_t = 1024)]
    pub max_connections: usize,
    /// Worker cores (default: every CPU the process may run on)
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Largest item, with k/m suffix (e.g. 1m, 128m)
    #[arg(short = 'I', long = "max-item-size", default_value = "1m")]
    pub max_item_size: String,
    /// Slab chunk growth factor (memcached's default is 1.25; finer classes
    /// waste fewer bytes per item)
    #[arg(short = 'f', long = "slab-growth-factor", default_value_t = 1.08)]
    pub growth_factor: f64,
    /// Smallest chunk payload in bytes (key + value + flags)
    #[arg(short = 'n', long = "slab-min-size", default_value_t = 48)]
    pub slab_min_size: usize,
    /// Return an error when memory is full instead of evicting
    #[arg(short = 'M', long = "disable-evictions")]
    pub disable_evictions: bool,
    /// Refuse flush_all
    #[arg(short = 'F', long = "disable-flush-all")]
    pub disable_flush_all: bool,
    /// Enable the shutdown command
    #[arg(short = 'A', long = "enable-shutdown")]
    pub enable_shutdown: bool,
    /// Requests handled per read before other connections run (accepted for
    /// compatibility; corecache yields per read)
    #[arg(short = 'R', long = "max-reqs-per-event", default_value_t = 20)]
    pub max_requests_per_event: usize,
    /// Protocols served: ascii, binary or auto (by the first byte)
    #[arg(short = 'B', long = "protocol", value_enum, default_value_t = Protocol::Auto)]
    pub protocol: Protocol,
    /// Key prefix delimiter for `stats detail` (one ASCII character)
    #[arg(short = 'D', default_value_t = ':')]
    pub prefix_delimiter: char,
    /// Listen backlog
    #[arg(short = 'b', long = "listen-backlog", default_value_t = 1024)]
    pub backlog: u32,
    /// Verbose (repeat for more: -vv)
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
    /// User to run as when started as root
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Extended options, comma-separated (unknown ones are ignored with a warning)
    #[arg(short = 'o', long = "extended")]
    pub extended: Vec<String>,
    /// CPUs the worker cores pin to, e.g. "0,1" or "0-3" (default: allowed CPUs)
    #[arg(long = "cores")]
    pub cores: Option<String>,
    /// io_uring registered memory per core, with k/m suffix
    #[arg(long = "io-memory", default_value = "1m")]
    pub io_memory: String,
    /// CPU the replication core pins to (never given to a worker; default:
    /// unpinned)
    #[arg(long = "repl-core")]
    pub repl_core: Option<usize>,
    /// Serve replicas on this port (first -l address); turns the per-shard
    /// replication logs on
    #[arg(long = "repl-port")]
    pub repl_port: Option<u16>,
    /// Replicate from the primary whose replication port is HOST:PORT
    /// (writes are refused until promoted)
    #[arg(long = "replica-of", value_name = "HOST:PORT")]
    pub replica_of: Option<String>,
    /// Replication backlog per shard, with k/m/g suffix
    #[arg(long = "repl-backlog", default_value = "16m")]
    pub repl_backlog: String,
    /// Serve Prometheus metrics over HTTP on this port (first -l address)
    #[arg(long = "metrics-port")]
    pub metrics_port: Option<u16>,
    /// Cluster mode: every node's client address and weight, comma-separated
    /// (the list ketama clients are given); this node is the entry that
    /// matches its -l and -p
    #[arg(long = "cluster-nodes", value_name = "HOST:PORT[:WEIGHT],...")]
    pub cluster_nodes: Option<String>,
    /// Start outside the cluster of --cluster-nodes (whose entries need not
    /// name this node): it learns the node list from them and takes its
    /// keys once a `cluster add` names its -l and -p
    #[arg(long = "cluster-join")]
    pub cluster_join: bool,
    /// Port for replication and failure detection between cluster nodes.
    /// Every node's sits at the same offset from its client port (default:
    /// client port + 10000)
    #[arg(long = "cluster-port")]
    pub cluster_port: Option<u16>,
    /// Copies of each key a cluster keeps (its owner and the next nodes
    /// clockwise on the ring)
    #[arg(long = "copies", default_value_t = 2)]
    pub copies: usize,
    /// What a node that cannot reach a majority of the cluster does
    #[arg(long = "partition-policy", value_enum, default_value = "read-only")]
    pub partition_policy: PartitionPolicy,
    /// Failure detection (SWIM): milliseconds between probes of a random node
    #[arg(long = "probe-interval-ms", default_value_t = 200)]
    pub probe_interval_ms: u64,
    /// Failure detection: milliseconds a probed node has to answer before
    /// other nodes are asked to probe it
    #[arg(long = "probe-timeout-ms", default_value_t = 100)]
    pub probe_timeout_ms: u64,
    /// Failure detection: milliseconds a suspected node has to refute it
    /// before it is declared down
    #[arg(long = "suspect-timeout-ms", default_value_t = 800)]
    pub suspect_timeout_ms: u64,
    /// Milliseconds a change of who is alive or acting waits before the
    /// full resyncs it calls for start: the changes of that time share one
    #[arg(long = "resync-delay-ms", default_value_t = 100)]
    pub resync_delay_ms: u64,
}

/// memcached's `-B`: which protocols the client port speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Text (classic and meta) only.
    Ascii,
    /// Binary only: a connection that opens with anything else is closed.
    Binary,
    /// Chosen per connection by its first byte.
    Auto,
}

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("-D '{0}': the prefix delimiter must be one ASCII character")]
    PrefixDelimiter(char),
    #[error("-U {0}: UDP is not supported; use -U 0")]
    Udp(u16),
    #[error("invalid size '{0}': expected a number with optional k, m or g suffix")]
    Size(String),
    #[error("-I {0}: item size must be between 1k and 1g")]
    ItemSize(String),
    #[error("-I {item}: larger than each core's memory share ({share} bytes); raise -m or lower -t")]
    ItemExceedsShare { item: String, share: usize },
    #[error("-f {0}: growth factor must be greater than 1.0")]
    GrowthFactor(f64),
    #[error("-n {0}: smallest chunk must be between 1 and 65536 bytes")]
    ChunkSize(usize),
    #[error("-t {0}: thread count must be between 1 and 256")]
    Threads(usize),
    #[error("-c {0}: need at least one connection")]
    Connections(usize),
    #[error("-m {memory_mb}: each of {threads} cores needs at least one 1 MiB page")]
    Memory { memory_mb: u64, threads: usize },
    #[error("--cores '{0}': expected CPU numbers like 0,1 or 0-3")]
    CoreList(String),
    #[error("--cores {cpu}: CPU {cpu} is not available to this process")]
    CoreUnavailable { cpu: usize },
    #[error("--repl-core {cpu}: CPU {cpu} is not available to this process")]
    ReplCoreUnavailable { cpu: usize },
    #[error("--repl-core {cpu} is also a worker core in --cores; give it a CPU of its own")]
    ReplCoreOverlap { cpu: usize },
    #[error("--repl-core {cpu} leaves no CPU for the workers")]
    NoWorkerCpu { cpu: usize },
    #[error("--cores lists {cores} CPUs but -t asks for {threads} threads")]
    CoreCount { cores: usize, threads: usize },
    #[error("-l '{0}': not an IP address")]
    Listen(String),
    #[error("--io-memory {0}: must be between 64k and 8m (locked memory is limited)")]
    IoMemory(String),
    #[error("--cluster-nodes '{0}': expected host:port[:weight] entries, comma-separated, weight 1 or more")]
    ClusterNode(String),
    #[error("--cluster-nodes lists {0} twice")]
    ClusterDuplicate(String),
    #[error("--cluster-nodes: at most {max} nodes, {count} given", max = ring::MAX_NODES)]
    ClusterSize { count: usize },
    #[error(
        "--cluster-nodes does not list this node: none of its entries is -l {listen} with -p {port} (a node that joins later takes --cluster-join and one -l address)"
    )]
    ClusterSelf { listen: String, port: u16 },
    #[error("--copies {copies}: must be between 1 and the number of nodes ({nodes})")]
    Copies { copies: usize, nodes: usize },
    #[error("--cluster-port {0}: must differ from the client port and the replication port")]
    ClusterPort(u16),
    #[error("--cluster-port needs --cluster-nodes")]
    ClusterPortAlone,
    #[error("--replica-of and --cluster-nodes exclude each other: a cluster node follows the other nodes itself")]
    ClusterReplicaOf,
    #[error(
        "--probe-interval-ms {interval} must be more than --probe-timeout-ms {timeout}, and both and --suspect-timeout-ms more than 0"
    )]
    ProbeTiming { interval: u64, timeout: u64 },
}

/// The validated configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub port: u16,
    pub listen: Vec<IpAddr>,
    pub memory_limit: usize,
    pub max_connections: usize,
    pub cores: Vec<usize>,
    pub item_size_max: usize,
    pub growth_factor: f64,
    pub slab_min_size: usize,
    pub evictions: bool,
    pub flush_enabled: bool,
    pub shutdown_enabled: bool,
    pub protocol: Protocol,
    pub prefix_delimiter: u8,
    pub max_requests_per_event: usize,
    pub backlog: u32,
    pub verbose: u8,
    pub user: Option<String>,
    pub io_memory: usize,
    pub metrics_port: Option<u16>,
    pub repl_core: Option<usize>,
    pub repl_port: Option<u16>,
    pub replica_of: Option<String>,
    pub repl_backlog: usize,
    pub cluster: Option<ClusterConfig>,
    /// `-o` options that were not understood (warned at start).
    pub ignored_options: Vec<String>,
}

impl Config {
    pub fn threads(&self) -> usize {
        self.cores.len()
    }

    /// Each shard's share of `-m`.
    pub fn shard_memory(&self) -> usize {
        self.memory_limit / self.threads()
    }

    /// What the host check compares the machine with.
    pub fn host_layout(&self) -> crate::host::Layout {
        crate::host::Layout {
            worker_cores: self.cores.clone(),
            backlog: self.backlog,
            max_connections: self.max_connections,
            io_memory: self.io_memory,
        }
    }

    /// Whether this server runs a replication core (as primary, replica or both).
    pub fn replication_enabled(&self) -> bool {
        self.repl_port.is_some() || self.replica_of.is_some() || self.cluster.is_some()
    }

    /// Largest key + value a request may carry (`-I` less the item header).
    /// The largest key + value accepted: `-I` less memcached's own item
    /// overhead (protocol::ITEM_OVERHEAD), so the values that fit are the
    /// ones that fit in memcached. corecache's header is smaller, so any
    /// such item fits its chunk.
    pub fn max_payload(&self) -> usize {
        const { assert!(crate::protocol::ITEM_OVERHEAD >= HEADER_BYTES) };
        self.item_size_max - crate::protocol::ITEM_OVERHEAD
    }
}

/// Parses "64", "512k", "1m", "1g" (case-insensitive).
pub fn parse_size(text: &str) -> Result<usize, ConfigError> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, multiplier) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 1 << 10),
        Some(b'm') => (&lower[..lower.len() - 1], 1 << 20),
        Some(b'g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (&lower[..], 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| ConfigError::Size(text.to_string()))
}

/// Parses "0,2,4-7".
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, ConfigError> {
    let bad = || ConfigError::CoreList(text.to_string());
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (usize, usize) = (first.parse().map_err(|_| bad())?, last.parse().map_err(|_| bad())?);
                if first > last {
                    return Err(bad());
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err(bad());
    }
    Ok(cpus)
}

/// CPUs this process may run on (its affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid, and sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// `-o` options corecache understands (and ignores as no-ops, like memcached
/// defaults it already has).
const KNOWN_EXTENDED: &[&str] = &["modern", "no_modern"];

impl Args {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        self.validate_with_cpus(&allowed_cpus())
    }

    pub fn validate_with_cpus(&self, allowed: &[usize]) -> Result<Config, ConfigError> {
        if self.udp_port != 0 {
            return Err(ConfigError::Udp(self.udp_port));
        }
        let item_size_max = parse_size(&self.max_item_size)?;
        if !(1 << 10..=1 << 30).contains(&item_size_max) {
            return Err(ConfigError::ItemSize(self.max_item_size.clone()));
        }
        if self.growth_factor.is_nan() || self.growth_factor <= 1.0 {
            return Err(ConfigError::GrowthFactor(self.growth_factor));
        }
        if !(1..=65536).contains(&self.slab_min_size) {
            return Err(ConfigError::ChunkSize(self.slab_min_size));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Connections(0));
        }
        if let Some(cpu) = self.repl_core.filter(|cpu| !allowed.contains(cpu)) {
            return Err(ConfigError::ReplCoreUnavailable { cpu });
        }
        // Workers never run on the replication core's CPU.
        let worker_cpus: Vec<usize> = allowed.iter().copied().filter(|&cpu| Some(cpu) != self.repl_core).collect();
        let cores = match &self.cores {
            Some(list) => {
                let cores = parse_cpu_list(list)?;
                if let Some(cpu) = self.repl_core.filter(|cpu| cores.contains(cpu)) {
                    return Err(ConfigError::ReplCoreOverlap { cpu });
                }
                if let Some(&cpu) = cores.iter().find(|cpu| !allowed.contains(cpu)) {
                    return Err(ConfigError::CoreUnavailable { cpu });
                }
                if let Some(threads) = self.threads.filter(|&t| t != cores.len()) {
                    return Err(ConfigError::CoreCount {
                        cores: cores.len(),
                        threads,
                    });
                }
                cores
            }
            // More threads than CPUs: wrap around the allowed CPUs.
            None => {
                if worker_cpus.is_empty() {
                    return Err(ConfigError::NoWorkerCpu {
                        cpu: self.repl_core.unwrap_or(0),
                    });
                }
                let threads = self.threads.unwrap_or(worker_cpus.len()).max(1);
                (0..threads).map(|i| worker_cpus[i % worker_cpus.len()]).collect()
            }
        };
        let threads = cores.len();
        if !(1..=256).contains(&threads) || self.threads == Some(0) {
            return Err(ConfigError::Threads(self.threads.unwrap_or(threads)));
        }
        let memory_limit = usize::try_from(self.memory_mb).unwrap_or(usize::MAX).saturating_mul(1 << 20);
        if memory_limit / threads < PAGE_SIZE {
            return Err(ConfigError::Memory {
                memory_mb: self.memory_mb,
                threads,
            });
        }
        if item_size_max > memory_limit / threads {
            return Err(ConfigError::ItemExceedsShare {
                item: self.max_item_size.clone(),
                share: memory_limit / threads,
            });
        }
        let listen = self
            .listen
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| a.parse().map_err(|_| ConfigError::Listen(a.to_string())))
            .collect::<Result<Vec<IpAddr>, _>>()?;
        let io_memory = parse_size(&self.io_memory)?;
        if !(64 << 10..=8 << 20).contains(&io_memory) {
            return Err(ConfigError::IoMemory(self.io_memory.clone()));
        }
        let ignored_options = self
            .extended
            .iter()
            .flat_map(|o| o.split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty() && !KNOWN_EXTENDED.contains(o))
            .map(String::from)
            .collect();
        let cluster = self.cluster(&listen)?;
        Ok(Config {
            port: self.port,
            listen,
            memory_limit,
            max_connections: self.max_connections,
            cores,
            item_size_max,
            growth_factor: self.growth_factor,
            slab_min_size: self.slab_min_size,
            evictions: !self.disable_evictions,
            flush_enabled: !self.disable_flush_all,
            shutdown_enabled: self.enable_shutdown,
            protocol: self.protocol,
            prefix_delimiter: u8::try_from(self.prefix_delimiter)
                .ok()
                .filter(u8::is_ascii)
                .ok_or(ConfigError::PrefixDelimiter(self.prefix_delimiter))?,
            max_requests_per_event: self.max_requests_per_event,
            backlog: self.backlog,
            verbose: self.verbose,
            user: self.user.clone(),
            io_memory,
            metrics_port: self.metrics_port,
            repl_core: self.repl_core,
            repl_port: self.repl_port,
            replica_of: self.replica_of.clone(),
            repl_backlog: parse_size(&self.repl_backlog)?.max(64 << 10),
            cluster,
            ignored_options,
        })
    }

    fn cluster(&self, listen: &[IpAddr]) -> Result<Option<ClusterConfig>, ConfigError> {
        let Some(list) = &self.cluster_nodes else {
            return match self.cluster_port {
                Some(_) => Err(ConfigError::ClusterPortAlone),
                None => Ok(None),
            };
        };
        if self.replica_of.is_some() {
            return Err(ConfigError::ClusterReplicaOf);
        }
        let mut nodes = parse_node_list(list)?;
        if nodes.len() > ring::MAX_NODES {
            return Err(ConfigError::ClusterSize { count: nodes.len() });
        }
        let listed = nodes
            .iter()
            .position(|node| node.port == self.port && resolves_to_one_of(&node.host, node.port, listen));
        let me = match listed {
            Some(me) => me,
            // A joining node not listed names itself by its address.
            None if self.cluster_join && listen.len() == 1 && !listen[0].is_unspecified() && nodes.len() < ring::MAX_NODES => {
                nodes.push(NodeAddress {
                    host: listen[0].to_string(),
                    port: self.port,
                    weight: 1,
                });
                nodes.len() - 1
            }
            None => {
                return Err(ConfigError::ClusterSelf {
                    listen: self.listen.clone(),
                    port: self.port,
                });
            }
        };
        if !(1..=nodes.len()).contains(&self.copies) {
            return Err(ConfigError::Copies {
                copies: self.copies,
                nodes: nodes.len(),
            });
        }
        let cluster_port = self.cluster_port.unwrap_or(self.port.wrapping_add(10000));
        if cluster_port == self.port || Some(cluster_port) == self.repl_port {
            return Err(ConfigError::ClusterPort(cluster_port));
        }
        if self.probe_timeout_ms == 0 || self.probe_interval_ms <= self.probe_timeout_ms || self.suspect_timeout_ms == 0 {
            return Err(ConfigError::ProbeTiming {
                interval: self.probe_interval_ms,
                timeout: self.probe_timeout_ms,
            });
        }
        let millis = std::time::Duration::from_millis;
        Ok(Some(ClusterConfig {
            nodes,
            me,
            joining: self.cluster_join,
            copies: self.copies,
            cluster_port_offset: i32::from(cluster_port) - i32::from(self.port),
            partition_policy: self.partition_policy,
            swim: crate::cluster::swim::Timing {
                probe_interval: millis(self.probe_interval_ms),
                probe_timeout: millis(self.probe_timeout_ms),
                suspect_timeout: millis(self.suspect_timeout_ms),
            },
            resync_delay: millis(self.resync_delay_ms),
        }))
    }
}

/// Parses "host:port[:weight],..." (weight defaults to 1).
pub fn parse_node_list(text: &str) -> Result<Vec<NodeAddress>, ConfigError> {
    let mut nodes: Vec<NodeAddress> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || ConfigError::ClusterNode(entry.to_string());
        let mut parts = entry.split(':');
        let host = parts.next().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        let port = parts.next().and_then(|p| p.parse::<u16>().ok()).ok_or_else(bad)?;
        let weight = match parts.next() {
            Some(w) => w.parse::<u32>().ok().filter(|&w| w > 0).ok_or_else(bad)?,
            None => 1,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        let node = NodeAddress {
            host: host.to_string(),
            port,
            weight,
        };
        if nodes.iter().any(|n| n.host == node.host && n.port == node.port) {
            return Err(ConfigError::ClusterDuplicate(node.to_string()));
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(ConfigError::ClusterNode(text.to_string()));
    }
    Ok(nodes)
}

/// Whether `host` (an IP address or a name) is one of the addresses this
/// node listens on.
fn resolves_to_one_of(host: &str, port: u16, listen: &[IpAddr]) -> bool {
    use std::net::ToSocketAddrs;
    match host.parse::<IpAddr>() {
        Ok(ip) => listen.contains(&ip),
        Err(_) => (host, port)
            .to_socket_addrs()
            .is_ok_and(|mut addresses| addresses.any(|address| listen.contains(&address.ip()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Args {
        Args::try_parse_from(std::iter::once("corecache").chain(line.split_whitespace())).unwrap()
    }

    #[test]
    fn defaults_are_memcacheds() {
        let config = args("").validate_with_cpus(&[0, 1]).unwrap();
        assert_eq!(config.port, 11211);
        assert_eq!(config.memory_limit, 64 << 20);
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.item_size_max, 1 << 20);
        assert_eq!(config.cores, vec![0, 1]);
        assert!(config.evictions && config.flush_enabled && !config.shutdown_enabled);
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size("128M").unwrap(), 128 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("2048").unwrap(), 2048);
        assert!(parse_size("12x").is_err());
        let config = args("-I 128m -m 1024 -t 1").validate_with_cpus(&[0, 1]).unwrap();
        assert_eq!(config.item_size_max, 128 << 20);
    }

    #[test]
    fn bad_values_fail_with_a_reason() {
        let cpus = [0, 1];
        assert_eq!(
            args("-U 11211").validate_with_cpus(&cpus).unwrap_err(),
            ConfigError::Udp(11211)
        );
        assert!(matches!(
            args("-f 1.0").validate_with_cpus(&cpus),
            Err(ConfigError::GrowthFactor(_))
        ));
        assert!(matches!(
            args("-I 2g").validate_with_cpus(&cpus),
            Err(ConfigError::ItemSize(_))
        ));
        assert!(matches!(
            args("-m 1 -t 2").validate_with_cpus(&cpus),
            Err(ConfigError::Memory { .. })
        ));
        assert!(matches!(
            args("--cores 5").validate_with_cpus(&cpus),
            Err(ConfigError::CoreUnavailable { cpu: 5 })
        ));
        assert!(matches!(
            args("--cores 0,1 -t 1").validate_with_cpus(&cpus),
            Err(ConfigError::CoreCount { .. })
        ));
        assert!(matches!(
            args("-l nowhere").validate_with_cpus(&cpus),
            Err(ConfigError::Listen(_))
        ));
        assert!(matches!(args("-t 0").validate_with_cpus(&cpus), Err(ConfigError::Threads(0))));
        assert!(Args::try_parse_from(["corecache", "-p", "notaport"]).is_err());
    }

    #[test]
    fn cpu_lists_and_threads() {
        assert_eq!(parse_cpu_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert_eq!(args("-t 1").validate_with_cpus(&[0, 1]).unwrap().cores, vec![0]);
        assert_eq!(args("--cores 1").validate_with_cpus(&[0, 1]).unwrap().cores, vec![1]);
        assert_eq!(args("-t 3").validate_with_cpus(&[0, 1]).unwrap().cores, vec![0, 1, 0]);
    }

    #[test]
    fn the_replication_core_is_kept_apart() {
        let cpus = [0, 1, 2, 3];
        assert_eq!(args("--repl-core 3").validate_with_cpus(&cpus).unwrap().cores, vec![0, 1, 2]);
        assert_eq!(
            args("--repl-core 0 -t 2").validate_with_cpus(&cpus).unwrap().cores,
            vec![1, 2]
        );
        assert_eq!(
            args("--repl-core 1 --cores 0-2").validate_with_cpus(&cpus).unwrap_err(),
            ConfigError::ReplCoreOverlap { cpu: 1 }
        );
        assert_eq!(
            args("--repl-core 9").validate_with_cpus(&cpus).unwrap_err(),
            ConfigError::ReplCoreUnavailable { cpu: 9 }
        );
        assert_eq!(
            args("--repl-core 0").validate_with_cpus(&[0]).unwrap_err(),
            ConfigError::NoWorkerCpu { cpu: 0 }
        );
    }

    #[test]
    fn unknown_extended_options_are_kept_for_a_warning() {
        let config = args("-o modern,hashpower=20 -vv").validate_with_cpus(&[0]).unwrap();
        assert_eq!(config.ignored_options, vec!["hashpower=20".to_string()]);
        assert_eq!(config.verbose, 2);
    }

    #[test]
    fn a_node_finds_itself_in_the_cluster_list() {
        let list = "--cluster-nodes 127.0.0.2:11211,127.0.0.3:11211:2,127.0.0.4:11211";
        let config = args(&format!("-l 127.0.0.3 {list}")).validate_with_cpus(&[0]).unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.me, 1);
        assert_eq!(cluster.nodes[1].weight, 2);
        assert_eq!(cluster.copies, 2);
        assert_eq!(cluster.cluster_port_of(0), 21211);
        let config = args(&format!("-l 127.0.0.4 --cluster-port 12000 {list}"))
            .validate_with_cpus(&[0])
            .unwrap();
        assert_eq!(config.cluster.unwrap().cluster_port_of(2), 12000);
    }

    #[test]
    fn cluster_lists_are_checked() {
        let at = |line: &str| args(line).validate_with_cpus(&[0]).unwrap_err();
        assert_eq!(
            at("-l 127.0.0.9 --cluster-nodes 127.0.0.2:11211,127.0.0.3:11211"),
            ConfigError::ClusterSelf {
                listen: "127.0.0.9".into(),
                port: 11211
            }
        );
        assert_eq!(
            at("-l 127.0.0.2 -p 1 --cluster-nodes 127.0.0.2:11211"),
            ConfigError::ClusterSelf {
                listen: "127.0.0.2".into(),
                port: 1
            }
        );
        for bad in ["127.0.0.2", "127.0.0.2:x", "127.0.0.2:11211:0", "127.0.0.2:1:2:3", ":11211"] {
            assert_eq!(
                at(&format!("-l 127.0.0.2 --cluster-nodes {bad}")),
                ConfigError::ClusterNode(bad.into())
            );
        }
        assert_eq!(
            at("-l 127.0.0.2 --cluster-nodes 127.0.0.2:11211,127.0.0.2:11211:3"),
            ConfigError::ClusterDuplicate("127.0.0.2:11211".into())
        );
        assert_eq!(
            at("-l 127.0.0.2 --copies 3 --cluster-nodes 127.0.0.2:11211,127.0.0.3:11211"),
            ConfigError::Copies { copies: 3, nodes: 2 }
        );
        assert_eq!(at("--cluster-port 5000"), ConfigError::ClusterPortAlone);
        assert_eq!(
            at("-l 127.0.0.2 --replica-of 127.0.0.3:7000 --cluster-nodes 127.0.0.2:11211"),
            ConfigError::ClusterReplicaOf
        );
    }
}
