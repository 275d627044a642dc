//! Operating corecache: the host check, the apply script's dry run, a
//! graceful stop under load, running unprivileged, the metrics endpoint.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BINARY, Server, version_line};

#[test]
fn check_host_reports_every_item_and_exits_cleanly() {
    let output = Command::new(BINARY).args(["check-host", "-t", "1"]).output().unwrap();
    let code = output.status.code().unwrap();
    assert!(code == 0 || code == 1, "exit {code}");
    let report = String::from_utf8_lossy(&output.stdout);
    for item in [
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.core.rmem_max",
        "net.core.busy_poll",
        "transparent hugepages",
        "cpu governor",
        "irqbalance",
        "nic irq affinity",
        "RLIMIT_NOFILE",
        "RLIMIT_MEMLOCK",
    ] {
        assert!(report.contains(item), "no {item} in:\n{report}");
    }
    let ready = report.lines().last().unwrap();
    assert_eq!(ready == "host ready: yes", code == 0, "{ready}");
    // As an ordinary user too (nobody), where some files are unreadable.
    if unsafe { libc::getuid() } == 0 {
        use std::os::unix::process::CommandExt;
        let output = Command::new(BINARY)
            .args(["check-host", "-t", "1"])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(matches!(output.status.code(), Some(0 | 1)), "{:?}", output);
        assert!(String::from_utf8_lossy(&output.stdout).contains("host ready:"));
    }
}

fn host_settings() -> Vec<String> {
    [
        "/proc/sys/net/core/somaxconn",
        "/proc/sys/net/ipv4/tcp_max_syn_backlog",
        "/proc/sys/net/core/rmem_max",
        "/proc/sys/net/core/wmem_max",
        "/proc/sys/net/core/busy_read",
        "/proc/sys/net/core/busy_poll",
        "/sys/kernel/mm/transparent_hugepage/enabled",
    ]
    .iter()
    .map(|path| std::fs::read_to_string(path).unwrap_or_default())
    .collect()
}

#[test]
fn apply_dry_run_changes_nothing() {
    let before = host_settings();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/apply.sh");
    let output = Command::new(script)
        .args(["--dry-run", "-t", "1", "-b", "65000", "-c", "100000"])
        .env("CORECACHE", BINARY)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    // -b 65000 asks for a larger somaxconn than any default: one change at least.
    assert!(
        printed
            .lines()
            .any(|line| line.starts_with("would run: sysctl -w net.core.somaxconn=65000")),
        "{printed}"
    );
    assert!(printed.lines().all(|line| line.starts_with("would run: ")), "{printed}");
    assert_eq!(host_settings(), before);
}

#[test]
fn graceful_stop_answers_everything_it_read() {
    let mut server = Server::start(&["-t", "2"]);
    let mut client = server.client();
    let mut batch = Vec::new();
    for i in 0..20_000 {
        batch.extend_from_slice(format!("set stop{i} 0 0 5\r\nvalue\r\n").as_bytes());
    }
    client.send(&batch);
    // The stop comes once the server is answering (before that it has read
    // nothing it owes a reply to).
    let mut replies = vec![0; 8];
    client.stream.read_exact(&mut replies).unwrap();
    server.signal("TERM");
    let started = Instant::now();
    let _ = client.stream.read_to_end(&mut replies);
    // Every reply is whole: nothing read was left half-answered.
    assert!(replies.len().is_multiple_of(b"STORED\r\n".len()), "partial reply at the end");
    assert!(replies.chunks(8).all(|reply| reply == b"STORED\r\n"));
    assert!(!replies.is_empty());
    let status = server.wait_exit(Duration::from_secs(7)).expect("server did not stop");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(7));
}

#[test]
fn stops_on_sigint_when_idle() {
    let mut server = Server::start(&["-t", "1"]);
    let _idle = server.client();
    server.signal("INT");
    let status = server.wait_exit(Duration::from_secs(7)).expect("server did not stop");
    assert!(status.success());
}

#[test]
fn serves_as_an_unprivileged_user() {
    if unsafe { libc::getuid() } != 0 {
        // Already unprivileged: every other test shows it.
        return;
    }
    let server = Server::start_as(Some(65534), &["-t", "2"]);
    let mut c = server.client();
    c.roundtrip(b"set u 0 0 1\r\nx\r\nget u\r\n", b"STORED\r\nVALUE u 0 1\r\nx\r\nEND\r\n");
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    assert!(
        status.lines().any(|line| line.starts_with("Uid:") && line.contains("65534")),
        "{status}"
    );
    // -u drops root to that user after binding.
    let server = Server::start(&["-t", "1", "-u", "nobody"]);
    server.client().roundtrip(b"version\r\n", &version_line());
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    assert!(
        status.lines().any(|line| line.starts_with("Uid:") && line.contains("65534")),
        "{status}"
    );
}

fn scrape(port: u16) -> prometheus_parse::Scrape {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.") && head.contains(" 200 "), "{head}");
    prometheus_parse::Scrape::parse(body.lines().map(|line| Ok(line.to_string()))).unwrap()
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && label.is_none_or(|(key, value)| s.labels.get(key) == Some(value)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn the_hottest_keys_are_in_stats_hotkeys_and_on_metrics() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(&["-t", "2", "--metrics-port", &metrics_port.to_string()]);
    let mut c = server.client();
    c.roundtrip(b"set hot 0 0 1\r\nx\r\n", b"STORED\r\n");
    // Reads of one key and writes of another, against a spread of cold
    // keys, over more than a whole second (rates are per second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut batch = Vec::new();
        for i in 0..200 {
            batch.extend_from_slice(b"get hot\r\nset written 0 0 1\r\ny\r\n");
            batch.extend_from_slice(format!("get cold{i}\r\n").as_bytes());
        }
        c.send(&batch);
        for _ in 0..200 {
            c.expect(b"VALUE hot 0 1\r\nx\r\nEND\r\nSTORED\r\nEND\r\n");
        }
        let stats = c.stats("hotkeys");
        let rate = |name: &str| stats.iter().find(|(n, _)| n == name).map(|(_, v)| v.parse::<u64>().unwrap());
        let scraped = scrape(metrics_port);
        let metric = |key: &str, kind: &str| {
            scraped.samples.iter().any(|s| {
                s.metric == "corecache_hot_key_ops_per_second"
                    && s.labels.get("key") == Some(key)
                    && s.labels.get("kind") == Some(kind)
            })
        };
        if rate("read:hot").is_some_and(|r| r > 0) && rate("write:written").is_some_and(|r| r > 0) && metric("hot", "read") {
            assert_eq!(stats[0], ("sample_every".to_string(), "8".to_string()));
            assert!(metric("written", "write"));
            assert!(rate("read:cold0").unwrap_or(0) < rate("read:hot").unwrap(), "{stats:?}");
            let samples = scraped
                .samples
                .iter()
                .filter(|s| s.metric == "corecache_hot_key_ops_per_second")
                .count();
            assert!(samples <= 20, "at most 10 of each kind: {samples}");
            break;
        }
        assert!(Instant::now() < deadline, "no hot keys after 10 s: {stats:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(&["-t", "2", "--metrics-port", &metrics_port.to_string()]);
    let before = scrape(metrics_port);
    assert_eq!(sample(&before, "memcached_up", None), 1.0);
    let sets_before = sample(&before, "memcached_commands_total", Some(("command", "set")));
    let mut c = server.client();
    for i in 0..100 {
        c.roundtrip(
            format!("set m{i} 0 0 1\r\nx\r\nget m{i}\r\n").as_bytes(),
            format!("STORED\r\nVALUE m{i} 0 1\r\nx\r\nEND\r\n").as_bytes(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = scrape(metrics_port);
        let sets = sample(&now, "memcached_commands_total", Some(("command", "set")));
        let hits = sample(&now, "memcached_commands_total", Some(("status", "hit")));
        let items = sample(&now, "memcached_current_items", None);
        let get_count = now
            .samples
            .iter()
            .find(|s| s.metric == "corecache_request_duration_seconds" && s.labels.get("command") == Some("get"))
            .is_some();
        if sets >= sets_before + 100.0 && items >= 100.0 && hits >= 200.0 && get_count {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics did not move: sets {sets}, items {items}, hits {hits}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_carry_the_replication_report() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(&[
        "-t",
        "1",
        "--repl-port",
        common::REPL_PORT,
        "--metrics-port",
        &metrics_port.to_string(),
    ]);
    server.client().roundtrip(b"set r 0 0 1\r\nx\r\n", b"STORED\r\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = scrape(metrics_port);
        let role = sample(&now, "corecache_replication_role", Some(("role", "primary")));
        let offset = sample(&now, "corecache_replication", Some(("stat", "shard_0_offset")));
        if role == 1.0 && offset > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "role {role}, log offset {offset}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
