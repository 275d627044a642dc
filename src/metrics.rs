//! `--metrics-port`: the stats counters and per-command latency as
//! Prometheus text, served by tiny_http on a thread of its own (off the
//! cores). Cores publish a snapshot of their counters once a second;
//! names follow memcached_exporter where it has one.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::global::Global;
use crate::report::{CoreReport, LATENCY_COMMANDS};

/// Serves /metrics until the server stops.
pub fn serve(global: Arc<Global>, address: SocketAddr) -> std::io::Result<std::thread::JoinHandle<()>> {
    let server = tiny_http::Server::http(address).map_err(|error| std::io::Error::other(error.to_string()))?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        while !global.stopping.load(Ordering::Relaxed) {
            let Ok(Some(request)) = server.recv_timeout(std::time::Duration::from_millis(200)) else {
                continue;
            };
            let response = if request.url() == "/metrics" {
                let header = tiny_http::Header::from_bytes("Content-Type", "text/plain; version=0.0.4").expect("static header");
                tiny_http::Response::from_string(render(&global)).with_header(header)
            } else {
                tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
            };
            let _ = request.respond(response);
        }
    })
}

/// The exposition text for the latest snapshots of every core.
pub fn render(global: &Global) -> String {
    let mut total = CoreReport::default();
    for report in global.published.lock().expect("snapshot lock").iter().flatten() {
        total.add(report);
    }
    let counters = total.shard.counters.fields();
    let counter = |name: &str| counters.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let config = &global.config;
    metric("memcached_up", "gauge", "Whether the server answers.", &[("", 1.0)]);
    metric(
        "memcached_uptime_seconds",
        "counter",
        "Seconds since the server started.",
        &[("", global.started.elapsed().as_secs_f64())],
    );
    let version = format!("{{version=\"{}\"}}", crate::stats::VERSION);
    metric("memcached_version", "gauge", "The server's version.", &[(&version, 1.0)]);
    let commands: Vec<(String, f64)> = [
        ("get", "hit", counter("get_hits")),
        ("get", "miss", counter("get_misses")),
        ("set", "hit", counter("cmd_set")),
        ("delete", "hit", counter("delete_hits")),
        ("delete", "miss", counter("delete_misses")),
        ("incr", "hit", counter("incr_hits")),
        ("incr", "miss", counter("incr_misses")),
        ("decr", "hit", counter("decr_hits")),
        ("decr", "miss", counter("decr_misses")),
        ("cas", "hit", counter("cas_hits")),
        ("cas", "miss", counter("cas_misses")),
        ("cas", "badval", counter("cas_badval")),
        ("touch", "hit", counter("touch_hits")),
        ("touch", "miss", counter("touch_misses")),
        ("flush", "hit", total.cmd_flush),
    ]
    .iter()
    .map(|(command, status, value)| (format!("{{command=\"{command}\",status=\"{status}\"}}"), *value as f64))
    .collect();
    let commands: Vec<(&str, f64)> = commands.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric("memcached_commands_total", "counter", "Commands by outcome.", &commands);
    let gauges: [(&str, &str, &str, f64); 14] = [
        (
            "memcached_current_items",
            "gauge",
            "Items stored.",
            total.shard.curr_items as f64,
        ),
        (
            "memcached_current_bytes",
            "gauge",
            "Bytes of the items stored.",
            total.shard.bytes as f64,
        ),
        (
            "memcached_limit_bytes",
            "gauge",
            "Item memory limit (-m).",
            config.memory_limit as f64,
        ),
        (
            "memcached_items_total",
            "counter",
            "Items ever stored.",
            counter("total_items") as f64,
        ),
        (
            "memcached_items_evicted_total",
            "counter",
            "Items evicted to make room.",
            counter("evictions") as f64,
        ),
        (
            "memcached_items_reclaimed_total",
            "counter",
            "Expired items reclaimed.",
            counter("reclaimed") as f64,
        ),
        (
            "memcached_current_connections",
            "gauge",
            "Open client connections.",
            global.curr_connections.load(Ordering::Relaxed) as f64,
        ),
        (
            "memcached_connections_total",
            "counter",
            "Client connections accepted.",
            global.total_connections.load(Ordering::Relaxed) as f64,
        ),
        (
            "memcached_connections_rejected_total",
            "counter",
            "Connections refused at the -c limit.",
            global.rejected_connections.load(Ordering::Relaxed) as f64,
        ),
        (
            "memcached_max_connections",
            "gauge",
            "Connection limit (-c).",
            config.max_connections as f64,
        ),
        (
            "memcached_read_bytes_total",
            "counter",
            "Bytes read from clients.",
            total.bytes_read as f64,
        ),
        (
            "memcached_written_bytes_total",
            "counter",
            "Bytes written to clients.",
            total.bytes_written as f64,
        ),
        (
            "corecache_memory_used_bytes",
            "gauge",
            "Slab pages and large items taken from the limit.",
            total.shard.memory_used as f64,
        ),
        ("corecache_threads", "gauge", "Worker cores.", config.threads() as f64),
    ];
    for (name, kind, help, value) in gauges {
        metric(name, kind, help, &[("", value)]);
    }
    if global.config.replication_enabled() {
        // `stats replication` as it was last published: the role as a label,
        // every numeric line as a sample named by its stat.
        let report = global.replication.report();
        let role = report
            .iter()
            .find(|(name, _)| name == "role")
            .map_or("unknown", |(_, value)| value.as_str());
        let role_label = format!("{{role=\"{role}\"}}");
        metric(
            "corecache_replication_role",
            "gauge",
            "This host's replication role.",
            &[(&role_label, 1.0)],
        );
        let labels = numeric_by_stat(&report);
        metric(
            "corecache_replication",
            "gauge",
            "The numeric lines of `stats replication` (offsets, lag, resyncs), by stat.",
            &as_samples(&labels),
        );
    }
    // Only the reported top keys: the label count stays bounded.
    let hot: Vec<(String, f64)> = total
        .shard
        .hot_keys
        .iter()
        .map(|hot| {
            let key = String::from_utf8_lossy(&hot.key).replace('\\', "\\\\").replace('"', "\\\"");
            (
                format!("{{key=\"{key}\",kind=\"{}\"}}", hot.kind.name()),
                hot.ops_per_sec as f64,
            )
        })
        .collect();
    let hot: Vec<(&str, f64)> = hot.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "corecache_hot_key_ops_per_second",
        "gauge",
        "The hottest keys' estimated accesses per second (sampled), by key and read or write; at most 10 of each.",
        &hot,
    );
    if global.cluster.is_some() {
        let lines = crate::stats::cluster(global);
        metric(
            "corecache_cluster",
            "gauge",
            "The numeric lines of `stats cluster` (epochs, forwarded requests, failovers, resyncs, lag), by stat.",
            &as_samples(&numeric_by_stat(&lines)),
        );
        // node_<i>_state lines: one sample per node, its state as a label.
        let states: Vec<(String, f64)> = lines
            .iter()
            .filter_map(|(name, state)| {
                let node = name.strip_prefix("node_")?.strip_suffix("_state")?;
                Some((format!("{{node=\"{node}\",state=\"{state}\"}}"), 1.0))
            })
            .collect();
        metric(
            "corecache_cluster_node_state",
            "gauge",
            "Each node's state as this node sees it.",
            &as_samples(&states),
        );
    }
    let _ = writeln!(
        out,
        "# HELP corecache_request_duration_seconds Server time per request, from parse to reply, by command."
    );
    let _ = writeln!(out, "# TYPE corecache_request_duration_seconds summary");
    for (index, command) in LATENCY_COMMANDS.iter().enumerate() {
        let histogram = &total.latency.histograms[index];
        for quantile in [0.5, 0.9, 0.99, 0.999] {
            let seconds = histogram.value_at_quantile(quantile) as f64 / 1e9;
            let _ = writeln!(
                out,
                "corecache_request_duration_seconds{{command=\"{command}\",quantile=\"{quantile}\"}} {seconds}"
            );
        }
        let sum = histogram.mean() * histogram.len() as f64 / 1e9;
        let _ = writeln!(out, "corecache_request_duration_seconds_sum{{command=\"{command}\"}} {sum}");
        let _ = writeln!(
            out,
            "corecache_request_duration_seconds_count{{command=\"{command}\"}} {}",
            histogram.len()
        );
    }
    out
}

/// The numeric lines of a `stats` group as samples labelled by stat name.
fn numeric_by_stat(lines: &[(String, String)]) -> Vec<(String, f64)> {
    lines
        .iter()
        .filter_map(|(name, value)| Some((format!("{{stat=\"{name}\"}}"), value.parse::<f64>().ok()?)))
        .collect()
}

fn as_samples(labels: &[(String, f64)]) -> Vec<(&str, f64)> {
    labels.iter().map(|(label, value)| (label.as_str(), *value)).collect()
}
