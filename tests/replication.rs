//! Replication across hosts: a primary and replicas as separate processes
//! on their own loopback addresses, under a bounded write load. Links are
//! cut with a fault-injecting TCP proxy of the test's own.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, REPL_PORT, Server};

const PRIMARY_HOST: &str = "127.0.0.2";
const REPLICA_HOST: &str = "127.0.0.3";
const PROXY_HOST: &str = "127.0.0.4";
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

fn start_primary(extra: &[&str]) -> Server {
    Server::start_on(PRIMARY_HOST, &[&["-t", "2", "--repl-port", REPL_PORT], extra].concat())
}

fn start_replica(primary: &str, threads: &str) -> Server {
    Server::start_on(
        REPLICA_HOST,
        &["-t", threads, "--repl-port", REPL_PORT, "--replica-of", primary],
    )
}

/// One round of writes over keys `from..to`: every kind of change the log
/// carries (set with flags and TTLs, append, incr, delete, touch, add),
/// pipelined with noreply and ended by a `version` round trip.
fn write_round(client: &mut Client, keys: std::ops::Range<usize>, round: usize, value_bytes: usize) {
    let mut batch = Vec::new();
    for i in keys {
        let key = format!("key-{i}");
        let value = format!("r{round}-{i}-{}", "x".repeat((i * 7 + round) % value_bytes.max(1)));
        let flags = (i * 31 + round) % 65536;
        let set = |batch: &mut Vec<u8>, exptime: u64| {
            batch.extend_from_slice(format!("set {key} {flags} {exptime} {} noreply\r\n{value}\r\n", value.len()).as_bytes());
        };
        match (i + round) % 7 {
            0 => set(&mut batch, 0),
            1 => set(&mut batch, 3600),
            2 => {
                set(&mut batch, 0);
                batch.extend_from_slice(format!("append {key} 0 0 4 noreply\r\n+app\r\n").as_bytes());
            }
            3 => {
                batch.extend_from_slice(format!("set {key} {flags} 0 2 noreply\r\n10\r\n").as_bytes());
                batch.extend_from_slice(format!("incr {key} {round} noreply\r\n").as_bytes());
            }
            4 => {
                set(&mut batch, 0);
                batch.extend_from_slice(format!("delete {key} noreply\r\n").as_bytes());
            }
            5 => {
                set(&mut batch, 0);
                batch.extend_from_slice(format!("touch {key} 7200 noreply\r\n").as_bytes());
            }
            _ => batch.extend_from_slice(format!("add {key} {flags} 0 {} noreply\r\n{value}\r\n", value.len()).as_bytes()),
        }
    }
    batch.extend_from_slice(b"version\r\n");
    client.send(&batch);
    assert!(client.line().starts_with("VERSION"), "writes were answered with an error");
}

/// A writer on its own thread: `rounds` rounds over `keys`, then it stops.
fn write_in_background(server: &Server, keys: usize, rounds: usize, value_bytes: usize) -> std::thread::JoinHandle<()> {
    let (host, port) = (server.host.clone(), server.port);
    std::thread::spawn(move || {
        let mut client = Client::connect_to(&host, port);
        for round in 0..rounds {
            for start in (0..keys).step_by(500) {
                write_round(&mut client, start..(start + 500).min(keys), round, value_bytes);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    flags: u32,
    cas: u64,
    value: Vec<u8>,
    /// metadump's exp= (unix time, -1 never) and size=.
    exp: i64,
    size: u64,
}

/// Every item a host holds: metadump lists the keys (with expiry, CAS and
/// size), `gets` reads flags, value and CAS.
fn contents(server: &Server) -> BTreeMap<String, Entry> {
    let mut client = server.client();
    let mut listed = BTreeMap::new();
    for line in client.metadump() {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|part| part.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
                .unwrap_or_else(|| panic!("{name} in {line}"))
                .to_string()
        };
        listed.insert(
            field("key"),
            (field("exp").parse::<i64>().unwrap(), field("size").parse::<u64>().unwrap()),
        );
    }
    let keys: Vec<&String> = listed.keys().collect();
    let mut entries = BTreeMap::new();
    for chunk in keys.chunks(100) {
        let names: Vec<&str> = chunk.iter().map(|key| key.as_str()).collect();
        client.send(format!("gets {}\r\n", names.join(" ")).as_bytes());
        loop {
            let line = client.line();
            if line == "END" {
                break;
            }
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(words[0], "VALUE", "{line}");
            let length: usize = words[3].parse().unwrap();
            let mut value = vec![0; length + 2];
            client.stream.read_exact(&mut value).unwrap();
            value.truncate(length);
            let (exp, size) = listed[words[1]];
            entries.insert(
                words[1].to_string(),
                Entry {
                    flags: words[2].parse().unwrap(),
                    cas: words[4].parse().unwrap(),
                    value,
                    exp,
                    size,
                },
            );
        }
    }
    entries
}

/// Waits until every replica holds exactly what the primary holds; returns
/// how many items that is.
fn assert_converged(primary: &Server, replicas: &[&Server]) -> usize {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let expected = contents(primary);
        let mut first_difference = None;
        for replica in replicas {
            let held = contents(replica);
            if held != expected {
                let key = expected
                    .iter()
                    .find(|(key, entry)| held.get(*key) != Some(entry))
                    .map(|(key, _)| key.clone())
                    .or_else(|| held.keys().find(|key| !expected.contains_key(*key)).cloned());
                first_difference = Some(format!(
                    "{}:{} holds {} items, primary {}; first difference at {key:?}: {:?} vs {:?}",
                    replica.host,
                    replica.port,
                    held.len(),
                    expected.len(),
                    key.as_ref().and_then(|key| held.get(key)),
                    key.as_ref().and_then(|key| expected.get(key)),
                ));
                break;
            }
        }
        match first_difference {
            None => return expected.len(),
            Some(difference) if Instant::now() > deadline => {
                // What each host says of its links tells a stuck link from a slow one.
                let reports: Vec<String> = std::iter::once(primary)
                    .chain(replicas.iter().copied())
                    .map(|server| {
                        let stats = server.client().stats("replication");
                        let threads = server.threads();
                        format!(
                            "{}:{} (pid {}): {stats:?}\n  threads: {threads}",
                            server.host,
                            server.port,
                            server.pid()
                        )
                    })
                    .collect();
                panic!("replicas did not converge: {difference}\n{}", reports.join("\n"))
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A `stats replication` line, if the replication core has published it.
fn published_stat(server: &Server, name: &str) -> Option<String> {
    server
        .client()
        .stats("replication")
        .into_iter()
        .find(|(stat, _)| stat == name)
        .map(|(_, value)| value)
}

fn replication_stat(server: &Server, name: &str) -> String {
    published_stat(server, name).unwrap_or_else(|| panic!("no replication stat {name}"))
}

fn counter(server: &Server, name: &str) -> u64 {
    replication_stat(server, name).parse().unwrap()
}

/// Waits for a replication stat to satisfy `ok` (stats are refreshed every 100 ms).
fn wait_for_stat(server: &Server, name: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Not published yet: a starting replication core waits for every worker first.
        let value = published_stat(server, name);
        if let Some(value) = value.as_ref().filter(|value| ok(value)) {
            return value.clone();
        }
        assert!(Instant::now() < deadline, "stat {name} stuck at {value:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP proxy between two hosts whose link the test can cut and restore.
struct Proxy {
    address: String,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: String) -> Proxy {
        let listener = TcpListener::bind((PROXY_HOST, 0)).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (accept_cut, accept_links) = (cut.clone(), links.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                // While cut, connections are accepted and dropped at once.
                if accept_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else { continue };
                let mut links = accept_links.lock().unwrap();
                links.push(client.try_clone().unwrap());
                links.push(server.try_clone().unwrap());
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { address, cut, links }
    }

    /// Breaks every open connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            let _ = link.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[test]
fn replicas_with_other_core_counts_converge_to_the_primary_under_writes() {
    let primary = start_primary(&[]);
    write_round(&mut primary.client(), 0..2000, 0, 100);
    // One replica starts from a snapshot of existing data, during writes.
    let writer = write_in_background(&primary, 3000, 6, 100);
    let one_core = start_replica(&primary.repl_address(), "1");
    let two_cores = start_replica(&primary.repl_address(), "2");
    writer.join().unwrap();
    let items = assert_converged(&primary, &[&one_core, &two_cores]);
    assert!(items > 1500, "{items} items");

    // Replicas refuse writes, with a clear error, and keep serving reads.
    let mut client = one_core.client();
    client.roundtrip(b"set key-0 0 0 1\r\nz\r\n", b"SERVER_ERROR read-only replica\r\n");
    client.roundtrip(b"delete key-0\r\n", b"SERVER_ERROR read-only replica\r\n");
    client.roundtrip(b"incr key-3 1\r\n", b"SERVER_ERROR read-only replica\r\n");
    client.roundtrip(b"ms key-0 1\r\nz\r\n", b"SERVER_ERROR read-only replica\r\n");
    client.roundtrip(b"flush_all\r\n", b"SERVER_ERROR read-only replica\r\n");
    client.roundtrip(b"mn\r\n", b"MN\r\n");

    // A flush on the primary reaches the replicas.
    primary.client().roundtrip(b"flush_all\r\n", b"OK\r\n");
    primary.client().roundtrip(b"set after 1 0 2\r\nok\r\n", b"STORED\r\n");
    assert_eq!(assert_converged(&primary, &[&one_core, &two_cores]), 1);

    // What stats say about it.
    assert_eq!(replication_stat(&primary, "role"), "primary");
    assert_eq!(wait_for_stat(&primary, "replicas", |v| v == "2"), "2");
    wait_for_stat(&primary, "replica_0_lag_bytes", |v| v == "0");
    assert!(replication_stat(&primary, "replica_0_address").starts_with(REPLICA_HOST));
    assert_eq!(replication_stat(&one_core, "role"), "replica");
    assert_eq!(replication_stat(&one_core, "primary"), primary.repl_address());
    assert_eq!(wait_for_stat(&one_core, "link", |v| v == "up"), "up");
    assert_eq!(
        replication_stat(&one_core, "primary_replid"),
        replication_stat(&primary, "replid")
    );
    assert_eq!(counter(&one_core, "link_full_resyncs"), 2, "one full sync per primary shard");
    for shard in 0..2 {
        // Both sides' reports are up to 100 ms old: read the primary's again each time.
        let applied = format!("primary_shard_{shard}_applied");
        wait_for_stat(&two_cores, &applied, |v| {
            v == replication_stat(&primary, &format!("shard_{shard}_offset"))
        });
    }
    let general = primary.client().stats("");
    assert!(general.iter().any(|(name, value)| name == "repl_role" && value == "primary"));
}

#[test]
fn a_replica_killed_mid_stream_resyncs_when_restarted() {
    let primary = start_primary(&[]);
    let mut replica = start_replica(&primary.repl_address(), "1");
    let writer = write_in_background(&primary, 3000, 8, 100);
    // Killed once its full resync has begun (on a busy host that can take
    // longer than any fixed pause).
    wait_for_stat(&primary, "full_resyncs", |v| v.parse::<u64>().unwrap() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    replica.kill();
    std::thread::sleep(Duration::from_millis(300));
    // Restarted, the replica holds nothing, so every shard resyncs fully.
    let replica = start_replica(&primary.repl_address(), "1");
    writer.join().unwrap();
    assert_converged(&primary, &[&replica]);
    assert_eq!(counter(&replica, "link_full_resyncs"), 2);
    assert!(counter(&primary, "full_resyncs") >= 4);
}

#[test]
fn a_cut_link_resumes_from_the_backlog() {
    let primary = start_primary(&[]);
    let proxy = Proxy::start(primary.repl_address());
    let replica = start_replica(&proxy.address, "2");
    write_round(&mut primary.client(), 0..1000, 0, 50);
    assert_converged(&primary, &[&replica]);
    let full_before = counter(&primary, "full_resyncs");

    proxy.cut();
    wait_for_stat(&replica, "link", |v| v != "up");
    for round in 1..4 {
        write_round(&mut primary.client(), 0..1000, round, 50);
    }
    std::thread::sleep(Duration::from_millis(300));
    proxy.restore();
    let writer = write_in_background(&primary, 1000, 3, 50);
    writer.join().unwrap();
    assert_converged(&primary, &[&replica]);
    assert_eq!(counter(&primary, "full_resyncs"), full_before, "no snapshot was needed");
    assert!(counter(&primary, "partial_resyncs") >= 2);
    assert!(counter(&replica, "link_partial_resyncs") >= 2);
}

#[test]
fn a_backlog_overrun_forces_a_full_resync_while_the_primary_serves() {
    let primary = start_primary(&["--repl-backlog", "64k"]);
    let proxy = Proxy::start(primary.repl_address());
    let replica = start_replica(&proxy.address, "1");
    write_round(&mut primary.client(), 0..500, 0, 50);
    assert_converged(&primary, &[&replica]);

    proxy.cut();
    wait_for_stat(&replica, "link", |v| v != "up");
    // Far more than 64 KiB per shard while the link is down.
    for start in (0..20_000).step_by(1000) {
        write_round(&mut primary.client(), start..start + 1000, 1, 400);
    }
    let full_before = counter(&replica, "link_full_resyncs");

    // Reads on the primary while the snapshot runs: their latency is reported.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (host, port, stop) = (primary.host.clone(), primary.port, stop.clone());
        std::thread::spawn(move || {
            let mut client = Client::connect_to(&host, port);
            let mut latencies = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                client.send(format!("get key-{}\r\n", i % 20_000).as_bytes());
                while client.line() != "END" {}
                latencies.push(started.elapsed());
                i += 1;
            }
            latencies
        })
    };
    proxy.restore();
    let writer = write_in_background(&primary, 2000, 2, 100);
    writer.join().unwrap();
    let items = assert_converged(&primary, &[&replica]);
    stop.store(true, Ordering::SeqCst);
    let mut latencies = reader.join().unwrap();
    // The primary kept serving while the snapshot ran.
    assert!(
        latencies.len() > 100,
        "only {} reads answered during the resync",
        latencies.len()
    );
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "primary get latency during the full resync of {items} items: {} requests, p50 {:?} p99 {:?} max {:?}",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    assert!(
        counter(&replica, "link_full_resyncs") >= full_before + 2,
        "both shards fell out of the backlog"
    );
}

#[test]
fn a_promoted_replica_takes_writes_and_the_other_follows_it() {
    let mut primary = start_primary(&[]);
    let first = start_replica(&primary.repl_address(), "1");
    let second = start_replica(&primary.repl_address(), "2");
    write_round(&mut primary.client(), 0..2000, 0, 100);
    assert_converged(&primary, &[&first, &second]);
    let old_replid = replication_stat(&first, "replid");
    primary.kill();

    let mut client = first.client();
    client.roundtrip(b"replication promote\r\n", b"OK\r\n");
    assert_eq!(wait_for_stat(&first, "role", |v| v == "primary"), "primary");
    assert_ne!(replication_stat(&first, "replid"), old_replid, "a new history");
    client.roundtrip(b"set promoted 7 0 3\r\nyes\r\n", b"STORED\r\n");
    write_round(&mut client, 0..2000, 1, 100);
    // New CAS values stay above the ones the old primary gave out (per
    // shard; `first` has one, so above all of them).
    client.send(b"gets promoted\r\n");
    let cas: u64 = client.line().rsplit(' ').next().unwrap().parse().unwrap();
    client.expect(b"yes\r\nEND\r\n");
    let old_cas_max = contents(&second).values().map(|entry| entry.cas).max().unwrap();
    assert!(cas > old_cas_max, "cas {cas} vs {old_cas_max}");

    second
        .client()
        .roundtrip(b"set x 0 0 1\r\nx\r\n", b"SERVER_ERROR read-only replica\r\n");
    second.client().roundtrip(
        format!("replication follow {}\r\n", first.repl_address()).as_bytes(),
        b"OK\r\n",
    );
    let writer = write_in_background(&first, 2000, 3, 100);
    writer.join().unwrap();
    assert_converged(&first, &[&second]);
    assert_eq!(replication_stat(&second, "primary"), first.repl_address());
    second
        .client()
        .roundtrip(b"replication follow nowhere\r\n", b"CLIENT_ERROR bad replication address\r\n");
}

#[test]
fn a_primary_that_flushed_can_follow_another_and_promotion_fences_the_old_stream() {
    let first = start_primary(&[]);
    let second = start_primary(&[]);
    // `second` flushes after its CAS counter has run ahead of `first`'s.
    for round in 0..3 {
        write_round(&mut second.client(), 0..300, round, 20);
    }
    second.client().roundtrip(b"flush_all\r\n", b"OK\r\n");
    write_round(&mut first.client(), 0..300, 0, 20);
    second.client().roundtrip(
        format!("replication follow {}\r\n", first.repl_address()).as_bytes(),
        b"OK\r\n",
    );
    assert!(
        assert_converged(&first, &[&second]) > 100,
        "received items are not hidden by the old flush"
    );

    // Promoted while the old primary keeps writing: the new primary's own
    // writes are not overwritten by what was still on its way.
    let writer = write_in_background(&first, 300, 20, 20);
    std::thread::sleep(Duration::from_millis(100));
    let mut client = second.client();
    client.roundtrip(b"replication promote\r\n", b"OK\r\n");
    std::thread::sleep(Duration::from_millis(300));
    write_round(&mut client, 0..300, 99, 20);
    let mine = contents(&second);
    writer.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(contents(&second), mine, "nothing from the old primary lands after promotion");
}

#[test]
fn admin_commands_need_replication() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.roundtrip(
        b"replication promote\r\n",
        b"SERVER_ERROR replication is off (start with --repl-port or --replica-of)\r\n",
    );
    client.roundtrip(b"replication\r\n", b"CLIENT_ERROR bad command line format\r\n");
    assert_eq!(client.stats("replication"), vec![("role".to_string(), "off".to_string())]);
}
