//! How a client connects, waits and retries.

use std::time::Duration;

use crate::codec::Protocol;
use crate::health::HealthPolicy;
use crate::hot::HotKeyConfig;

/// A client's settings; `Config::default()` suits a cluster on one network.
///
/// ```
/// use std::time::Duration;
/// use corecache_client::{Config, codec::Protocol, hot::HotKeyConfig};
///
/// let config = Config {
///     protocol: Protocol::Text,
///     timeout: Duration::from_millis(200),
///     hot_keys: Some(HotKeyConfig::default()),
///     ..Config::default()
/// };
/// assert_eq!(config.connections_per_node, Config::default().connections_per_node);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// The dialect of every connection. Meta (the default) and text carry
    /// corecache's `wait` and cluster commands; binary does not (QUORUM and
    /// ALL writes, quorum reads and cluster mode need one of the others).
    pub protocol: Protocol,
    /// The most connections open to one node.
    pub connections_per_node: usize,
    /// A request's limit: for its reply, and for a pooled connection.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// How long a QUORUM or ALL write's `wait` may block the server.
    pub wait_timeout: Duration,
    /// How long a call is tried again after corecache answers that the
    /// cluster is changing, or after a node could not be reached.
    pub retry_for: Duration,
    /// The pause before such a retry.
    pub retry_pause: Duration,
    /// How often a cluster's node list is asked for (also after a failure).
    pub refresh_interval: Duration,
    /// When a node is marked down and probed back.
    pub health: HealthPolicy,
    /// Hot-key relief for a corecache cluster (None: off): the servers'
    /// `stats hotkeys` are asked at each refresh, and reads of hot keys
    /// are spread over their copies. A spread read may trail the key's
    /// latest write by the copies' lag (milliseconds).
    pub hot_keys: Option<HotKeyConfig>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            protocol: Protocol::Meta,
            connections_per_node: 8,
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            wait_timeout: Duration::from_secs(1),
            retry_for: Duration::from_secs(3),
            retry_pause: Duration::from_millis(20),
            refresh_interval: Duration::from_secs(1),
            health: HealthPolicy::default(),
            hot_keys: None,
        }
    }
}
