//! `stats` and its groups, with memcached's names and order: per-core
//! reports are summed, then written with the text reply writer.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::protocol::text_reply::stat;
use crate::server::{Core, Global};
use crate::store::stats::ShardReport;

/// The version reported by `version` and `stats`: the memcached protocol
/// level corecache implements, then its own version.
pub const VERSION: &str = concat!("1.6.45-corecache-", env!("CARGO_PKG_VERSION"));

/// One core's contribution to `stats`.
#[derive(Clone, Debug, Default)]
pub struct CoreReport {
    pub shard: ShardReport,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub cmd_flush: u64,
}

impl CoreReport {
    pub fn of(core: &Core) -> CoreReport {
        CoreReport {
            shard: core.shard_now().report(),
            bytes_read: core.counters.bytes_read.get(),
            bytes_written: core.counters.bytes_written.get(),
            cmd_flush: core.counters.cmd_flush.get(),
        }
    }

    pub fn add(&mut self, other: &CoreReport) {
        self.shard.add(&other.shard);
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.cmd_flush += other.cmd_flush;
    }
}

fn rusage() -> (String, String) {
    // SAFETY: getrusage fills the zeroed struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let format = |tv: libc::timeval| format!("{}.{:06}", tv.tv_sec, tv.tv_usec);
    (format(usage.ru_utime), format(usage.ru_stime))
}

/// The general `stats` reply.
pub fn general(out: &mut Vec<u8>, global: &Global, report: &CoreReport, verbosity: u32) {
    let _ = verbosity;
    let config = &global.config;
    let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (user, system) = rusage();
    let counters = report.shard.counters.fields();
    let counter = |name: &str| counters.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
    stat(out, "pid", std::process::id());
    stat(out, "uptime", global.started.elapsed().as_secs());
    stat(out, "time", now_unix);
    stat(out, "version", VERSION);
    stat(out, "pointer_size", usize::BITS);
    stat(out, "rusage_user", user);
    stat(out, "rusage_system", system);
    stat(out, "max_connections", config.max_connections);
    stat(out, "curr_connections", global.curr_connections.load(Ordering::Relaxed));
    stat(out, "total_connections", global.total_connections.load(Ordering::Relaxed));
    stat(
        out,
        "rejected_connections",
        global.rejected_connections.load(Ordering::Relaxed),
    );
    stat(out, "cmd_get", counter("cmd_get"));
    stat(out, "cmd_set", counter("cmd_set"));
    stat(out, "cmd_flush", report.cmd_flush);
    stat(out, "cmd_touch", counter("cmd_touch"));
    for name in [
        "get_hits",
        "get_misses",
        "get_expired",
        "get_flushed",
        "delete_misses",
        "delete_hits",
        "incr_misses",
        "incr_hits",
        "decr_misses",
        "decr_hits",
        "cas_misses",
        "cas_hits",
        "cas_badval",
        "touch_hits",
        "touch_misses",
        "store_too_large",
        "store_no_memory",
    ] {
        stat(out, name, counter(name));
    }
    stat(out, "bytes_read", report.bytes_read);
    stat(out, "bytes_written", report.bytes_written);
    stat(out, "limit_maxbytes", config.memory_limit);
    stat(out, "threads", config.threads());
    stat(out, "bytes", report.shard.bytes);
    stat(out, "curr_items", report.shard.curr_items);
    stat(out, "total_items", counter("total_items"));
    stat(out, "expired_unfetched", counter("expired_unfetched"));
    stat(out, "evicted_unfetched", counter("evicted_unfetched"));
    stat(out, "evictions", counter("evictions"));
    stat(out, "reclaimed", counter("reclaimed"));
    // corecache's own: memory taken from the limit and the index's size.
    stat(out, "memory_used", report.shard.memory_used);
    stat(out, "index_bytes", report.shard.index_bytes);
}

/// `stats settings`.
pub fn settings(out: &mut Vec<u8>, global: &Global, verbosity: u32) {
    let config = &global.config;
    let on_off = |b: bool| if b { "on" } else { "off" };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    stat(out, "maxbytes", config.memory_limit);
    stat(out, "maxconns", config.max_connections);
    stat(out, "tcpport", config.port);
    stat(out, "udpport", 0);
    let listen: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
    stat(out, "inter", listen.join(","));
    stat(out, "verbosity", verbosity);
    stat(out, "oldest", 0);
    stat(out, "evictions", on_off(config.evictions));
    stat(out, "domain_socket", "NULL");
    stat(out, "umask", 700);
    stat(out, "growth_factor", format!("{:.2}", config.growth_factor));
    stat(out, "chunk_size", config.slab_min_size);
    stat(out, "num_threads", config.threads());
    stat(out, "stat_key_prefix", ":");
    stat(out, "detail_enabled", "no");
    stat(out, "reqs_per_event", config.max_requests_per_event);
    stat(out, "cas_enabled", "yes");
    stat(out, "tcp_backlog", config.backlog);
    stat(out, "binding_protocol", "auto-negotiate");
    stat(out, "auth_enabled_sasl", "no");
    stat(out, "item_size_max", config.item_size_max);
    stat(out, "maxconns_fast", "yes");
    stat(out, "flush_enabled", yes_no(config.flush_enabled));
    stat(out, "shutdown_enabled", yes_no(config.shutdown_enabled));
    stat(out, "slab_reassign", "yes");
    stat(out, "lru_segmented", "yes");
    stat(out, "hot_lru_pct", 20);
    stat(out, "warm_lru_pct", 40);
    let cores: Vec<String> = config.cores.iter().map(ToString::to_string).collect();
    stat(out, "cores", cores.join(","));
    stat(out, "io_memory", config.io_memory);
}

/// `stats items`: one block per class that holds items.
pub fn items(out: &mut Vec<u8>, report: &CoreReport) {
    for (index, class) in report.shard.classes.iter().enumerate() {
        if class.number == 0 {
            continue;
        }
        let id = index + 1;
        let mut item = |name: &str, value: u64| stat(out, &format!("items:{id}:{name}"), value);
        item("number", class.number);
        item("number_hot", class.number_hot);
        item("number_warm", class.number_warm);
        item("number_cold", class.number_cold);
        item("age", class.age);
        item("evicted", class.counters.evicted);
        item("outofmemory", class.counters.outofmemory);
        item("reclaimed", class.counters.reclaimed);
        item("expired_unfetched", class.counters.expired_unfetched);
        item("evicted_unfetched", class.counters.evicted_unfetched);
    }
}

/// `stats slabs`: one block per class that has pages, then totals.
pub fn slabs(out: &mut Vec<u8>, report: &CoreReport) {
    let mut active = 0;
    for (index, class) in report.shard.classes.iter().enumerate() {
        if class.total_pages == 0 && class.number == 0 {
            continue;
        }
        active += 1;
        let id = index + 1;
        let mut slab = |name: &str, value: u64| stat(out, &format!("{id}:{name}"), value);
        slab("chunk_size", class.chunk_size);
        slab("chunks_per_page", class.chunks_per_page);
        slab("total_pages", class.total_pages);
        slab("total_chunks", class.total_chunks);
        slab("used_chunks", class.used_chunks);
        slab("free_chunks", class.free_chunks);
        slab("get_hits", class.counters.get_hits);
        slab("cmd_set", class.counters.cmd_set);
        slab("delete_hits", class.counters.delete_hits);
        slab("incr_hits", class.counters.incr_hits);
        slab("decr_hits", class.counters.decr_hits);
        slab("cas_hits", class.counters.cas_hits);
        slab("cas_badval", class.counters.cas_badval);
        slab("touch_hits", class.counters.touch_hits);
    }
    stat(out, "active_slabs", active);
    stat(out, "total_malloced", report.shard.memory_used);
}
