//! `stats` and its groups, with memcached's names and order, written from
//! the summed per-core reports and the host-wide state (the server's
//! stats_command.rs gathers the reports and calls these).

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cluster::membership::Handoff;

use crate::global::Global;
pub use crate::report::{CommandLatency, CoreReport, LATENCY_COMMANDS};

/// The version reported by `version` and `stats`: the memcached protocol
/// level corecache implements, then its own version.
pub const VERSION: &str = concat!("1.6.45-corecache-", env!("CARGO_PKG_VERSION"));

/// Receives each stat as (name, value); each protocol writes them its way.
pub type Emit<'a> = dyn FnMut(&str, &str) + 'a;

/// `stats detail`'s three subcommands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    On,
    Off,
    Dump,
}

impl Detail {
    /// The subcommand of a `stats detail ...` group; None when the group is
    /// not `detail`, Some(None) for a subcommand memcached does not know.
    pub fn of_group(group: &[u8]) -> Option<Option<Detail>> {
        let mut words = group.split(|&b| b == b' ').filter(|word| !word.is_empty());
        if words.next() != Some(b"detail") {
            return None;
        }
        Some(match words.next() {
            Some(b"on") => Some(Detail::On),
            Some(b"off") => Some(Detail::Off),
            Some(b"dump") => Some(Detail::Dump),
            _ => None,
        })
    }
}

pub const DETAIL_USAGE: &str = "CLIENT_ERROR usage: stats detail on|off|dump";

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
pub fn general(emit: &mut Emit<'_>, global: &Global, report: &CoreReport) {
    let config = &global.config;
    let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (user, system) = rusage();
    let counters = report.shard.counters.fields();
    let counter = |name: &str| counters.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
    emit("pid", &(std::process::id()).to_string());
    emit("uptime", &global.started.elapsed().as_secs().to_string());
    emit("time", &now_unix.to_string());
    emit("version", VERSION);
    emit("pointer_size", &(usize::BITS).to_string());
    emit("rusage_user", &user.to_string());
    emit("rusage_system", &system.to_string());
    emit("max_connections", &config.max_connections.to_string());
    emit(
        "curr_connections",
        &(global.curr_connections.load(Ordering::Relaxed)).to_string(),
    );
    emit(
        "total_connections",
        &(global.total_connections.load(Ordering::Relaxed)).to_string(),
    );
    emit(
        "rejected_connections",
        &global.rejected_connections.load(Ordering::Relaxed).to_string(),
    );
    emit("conn_yields", &report.conn_yields.to_string());
    emit("cmd_get", &counter("cmd_get").to_string());
    emit("cmd_set", &counter("cmd_set").to_string());
    emit("cmd_flush", &report.cmd_flush.to_string());
    emit("cmd_touch", &counter("cmd_touch").to_string());
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
        emit(name, &counter(name).to_string());
    }
    emit("bytes_read", &report.bytes_read.to_string());
    emit("bytes_written", &report.bytes_written.to_string());
    emit("limit_maxbytes", &config.memory_limit.to_string());
    emit("threads", &config.threads().to_string());
    emit("bytes", &report.shard.bytes.to_string());
    emit("curr_items", &report.shard.curr_items.to_string());
    emit("total_items", &counter("total_items").to_string());
    emit("expired_unfetched", &counter("expired_unfetched").to_string());
    emit("evicted_unfetched", &counter("evicted_unfetched").to_string());
    emit("evictions", &counter("evictions").to_string());
    emit("reclaimed", &counter("reclaimed").to_string());
    // corecache's own: memory taken from the limit and the index's size.
    emit("memory_used", &report.shard.memory_used.to_string());
    emit("index_bytes", &report.shard.index_bytes.to_string());
    // Replication, with the `stats replication` names prefixed.
    if global.config.replication_enabled() {
        for (name, value) in global.replication.report() {
            emit(&format!("repl_{name}"), &value);
        }
    } else {
        emit("repl_role", "off");
    }
}

/// `stats replication`: role, link, per-shard offsets, per-replica lag and
/// resync counts, as the replication core last published them.
pub fn replication(emit: &mut Emit<'_>, global: &Global) {
    if !global.config.replication_enabled() {
        emit("role", "off");
        return;
    }
    for (name, value) in global.replication.report() {
        emit(&name, &value);
    }
}

/// `stats cluster` (and the cluster metrics): the node list, who is alive,
/// forwarding counts, failovers, resyncs and each node's lag.
pub fn cluster(global: &Global) -> Vec<(String, String)> {
    let Some(cluster) = &global.cluster else {
        return vec![("cluster".into(), "off".into())];
    };
    let membership = &cluster.membership;
    let layout = cluster.layout();
    let list = &layout.list;
    let mut lines: Vec<(String, String)> = vec![
        ("node_list_epoch".into(), list.epoch().to_string()),
        ("node_list_digest".into(), format!("{:016x}", list.digest())),
        (
            "node_list_changes".into(),
            cluster.list_changes.load(Ordering::Relaxed).to_string(),
        ),
        ("membership_epoch".into(), membership.epoch().to_string()),
        ("nodes".into(), list.members().count().to_string()),
        ("slots".into(), list.len().to_string()),
        ("self".into(), cluster.me().to_string()),
        ("member".into(), u8::from(list.is_member(cluster.me())).to_string()),
        ("copies".into(), cluster.config.copies.to_string()),
        ("majority".into(), u8::from(membership.has_majority()).to_string()),
        ("stale".into(), u8::from(membership.is_stale()).to_string()),
        ("acting".into(), u8::from(membership.is_acting()).to_string()),
        // Nodes this one still owes a handover or a handoff of keys (a
        // node that left may stop once it is 0), and whether it still
        // leaves keys it takes to the nodes giving them.
        (
            "handing_over".into(),
            (0..list.len())
                .filter(|&node| !cluster.is_me(node))
                .filter(|&node| membership.awaits_handover(node).is_some() || membership.handoff(node) != Handoff::None)
                .count()
                .to_string(),
        ),
        ("taking".into(), u8::from(membership.is_taking()).to_string()),
        (
            "forwarded_out".into(),
            cluster.forwarded_out.load(Ordering::Relaxed).to_string(),
        ),
        (
            "forwarded_in".into(),
            cluster.forwarded_in.load(Ordering::Relaxed).to_string(),
        ),
        ("failovers".into(), membership.failovers().to_string()),
        (
            "quorum_reads".into(),
            cluster.quorum_reads.load(Ordering::Relaxed).to_string(),
        ),
        (
            "quorum_repairs".into(),
            cluster.quorum_repairs.load(Ordering::Relaxed).to_string(),
        ),
    ];
    let report = global.replication.report();
    for (stat, name) in [("full_resyncs", "resyncs_full"), ("partial_resyncs", "resyncs_partial")] {
        let value = report.iter().find(|(line, _)| line == stat).map_or("0", |(_, value)| value);
        lines.push((name.into(), value.into()));
    }
    for node in 0..list.len() {
        let state = if list.is_member(node) {
            membership.describe(node)
        } else {
            "removed"
        };
        lines.push((format!("node_{node}_state"), state.into()));
        if let Some(lag) = membership.lag(node) {
            lines.push((format!("node_{node}_lag_us"), lag.as_micros().to_string()));
        }
    }
    lines
}

/// `stats settings`.
pub fn settings(emit: &mut Emit<'_>, global: &Global, verbosity: u32) {
    let config = &global.config;
    let on_off = |b: bool| if b { "on" } else { "off" };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    emit("maxbytes", &config.memory_limit.to_string());
    emit("maxconns", &config.max_connections.to_string());
    emit("tcpport", &config.port.to_string());
    emit("udpport", &0.to_string());
    let listen: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
    emit("inter", &(listen.join(",")).to_string());
    emit("verbosity", &verbosity.to_string());
    emit("oldest", &0.to_string());
    emit("evictions", on_off(config.evictions));
    emit("domain_socket", "NULL");
    emit("umask", &700.to_string());
    emit("growth_factor", &(format!("{:.2}", config.growth_factor)).to_string());
    emit("chunk_size", &config.slab_min_size.to_string());
    emit("num_threads", &config.threads().to_string());
    emit("stat_key_prefix", ":");
    emit("detail_enabled", "no");
    emit("reqs_per_event", &config.max_requests_per_event.to_string());
    emit("cas_enabled", "yes");
    emit("tcp_backlog", &config.backlog.to_string());
    emit("binding_protocol", "auto-negotiate");
    emit("auth_enabled_sasl", "no");
    emit("item_size_max", &config.item_size_max.to_string());
    emit("maxconns_fast", "yes");
    emit("flush_enabled", yes_no(config.flush_enabled));
    emit("shutdown_enabled", yes_no(config.shutdown_enabled));
    emit("slab_reassign", "yes");
    emit("lru_segmented", "yes");
    emit("hot_lru_pct", &20.to_string());
    emit("warm_lru_pct", &40.to_string());
    let cores: Vec<String> = config.cores.iter().map(ToString::to_string).collect();
    emit("cores", &(cores.join(",")).to_string());
    emit("io_memory", &config.io_memory.to_string());
    emit(
        "repl_core",
        &config.repl_core.map_or("none".to_string(), |cpu| cpu.to_string()),
    );
}

/// `stats items`: one block per class that holds items.
pub fn items(emit: &mut Emit<'_>, report: &CoreReport) {
    for (index, class) in report.shard.classes.iter().enumerate() {
        if class.number == 0 {
            continue;
        }
        let id = index + 1;
        let mut item = |name: &str, value: u64| emit(&format!("items:{id}:{name}"), &value.to_string());
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

/// `stats hotkeys`: each shard's hottest keys merged, reads then writes,
/// hottest first: `STAT <read|write>:<key> <estimated ops/s>`.
pub fn hot_keys(emit: &mut Emit<'_>, report: &CoreReport) {
    emit("sample_every", &crate::store::hot_keys::SAMPLE_EVERY.to_string());
    for hot in &report.shard.hot_keys {
        let name = format!("{}:{}", hot.kind.name(), String::from_utf8_lossy(&hot.key));
        emit(&name, &hot.ops_per_sec.to_string());
    }
}

/// `stats slabs`: one block per class that has pages, then totals.
pub fn slabs(emit: &mut Emit<'_>, report: &CoreReport) {
    let mut active = 0;
    for (index, class) in report.shard.classes.iter().enumerate() {
        if class.total_pages == 0 && class.number == 0 {
            continue;
        }
        active += 1;
        let id = index + 1;
        let mut slab = |name: &str, value: u64| emit(&format!("{id}:{name}"), &value.to_string());
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
    emit("active_slabs", &active.to_string());
    emit("total_malloced", &report.shard.memory_used.to_string());
}
