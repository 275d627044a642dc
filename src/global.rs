//! The host-wide state every thread shares, below the server and the
//! replication core alike: the configuration, the stop flag, connection
//! counters, each core's latest report, the replication role (`Control`)
//! and the cluster (node list, ring, membership). Written rarely (accept,
//! close, admin commands, the failure detector), read by everyone.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::config::Config;
use crate::report::CoreReport;
use crate::store::RelTime;
use crate::store::clock::CLOCK_START;

/// What all cores share: read-mostly settings and connection counters that
/// change only on accept and close (never per request).
pub struct Global {
    pub config: Config,
    /// Set by SIGTERM/SIGINT (or `shutdown`): stop accepting, finish what
    /// was read, close.
    pub stopping: AtomicBool,
    /// Each core's latest stats snapshot, for the metrics endpoint.
    pub published: Mutex<Vec<Option<CoreReport>>>,
    pub started: Instant,
    pub started_unix: i64,
    pub curr_connections: AtomicUsize,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    /// Role (primary or read-only replica) and the replication report.
    pub replication: Control,
    /// The node list and ring (cluster mode only).
    pub cluster: Option<crate::cluster::Cluster>,
}

impl Global {
    /// The coarse relative clock every shard runs on.
    pub fn now(&self) -> RelTime {
        CLOCK_START + self.started.elapsed().as_secs() as RelTime
    }
}

/// Role and link settings, shared by every thread. Admin commands change
/// them; the replication core follows.
pub struct Control {
    read_only: AtomicBool,
    /// The primary's replication address (None: this host is a primary).
    primary: Mutex<Option<String>>,
    /// Bumped on every role change: the replication core reconnects.
    generation: AtomicU64,
    /// The id of the history this host's own log belongs to.
    replid: Mutex<String>,
    /// `stats replication` lines, published by the replication core.
    report: Mutex<Vec<(String, String)>>,
}

impl Control {
    pub fn new(replica_of: Option<String>) -> Control {
        Control {
            read_only: AtomicBool::new(replica_of.is_some()),
            primary: Mutex::new(replica_of),
            generation: AtomicU64::new(0),
            replid: Mutex::new(new_replid()),
            report: Mutex::new(Vec::new()),
        }
    }

    /// Whether writes from clients are refused (a replica not promoted).
    #[inline]
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
    }

    pub fn primary(&self) -> Option<String> {
        self.primary.lock().expect("control lock").clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn replid(&self) -> String {
        self.replid.lock().expect("control lock").clone()
    }

    /// Turns this host into a primary with a new history.
    pub fn promote(&self) {
        *self.primary.lock().expect("control lock") = None;
        *self.replid.lock().expect("control lock") = new_replid();
        self.read_only.store(false, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Makes this host a read-only replica of `address`.
    pub fn follow(&self, address: String) {
        *self.primary.lock().expect("control lock") = Some(address);
        self.read_only.store(true, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn report(&self) -> Vec<(String, String)> {
        self.report.lock().expect("control lock").clone()
    }

    /// Replaces the `stats replication` lines (the replication core does, every tick).
    pub fn publish(&self, lines: Vec<(String, String)>) {
        *self.report.lock().expect("control lock") = lines;
    }
}

/// A fresh 40-hex-digit history id (time, process and a counter hashed).
fn new_replid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{nanos}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let a = xxhash_rust::xxh3::xxh3_128(seed.as_bytes());
    let b = xxhash_rust::xxh3::xxh3_64(&a.to_le_bytes());
    format!("{a:032x}{:08x}", b as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_and_following_change_role_and_history() {
        let control = Control::new(Some("127.0.0.2:7000".into()));
        assert!(control.is_read_only());
        let (first, generation) = (control.replid(), control.generation());
        control.promote();
        assert!(!control.is_read_only());
        assert_eq!(control.primary(), None);
        assert_ne!(control.replid(), first, "a promoted host starts a new history");
        assert_eq!(control.replid().len(), 40);
        assert!(control.generation() > generation);
        control.follow("127.0.0.3:7000".into());
        assert!(control.is_read_only());
        assert_eq!(control.primary().as_deref(), Some("127.0.0.3:7000"));
    }
}
