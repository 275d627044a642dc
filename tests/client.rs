//! corecache-client against real servers: a 3-node corecache cluster (every
//! call in each dialect, fan-out order, consistency levels, a kill -9 under
//! load, hot keys found and their reads spread, batched and sharded
//! counters), pool limits and timeouts, and Debian's memcached x3 as plain
//! ketama servers.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use corecache_client::blocking::{Client, Store};
use corecache_client::codec::{Protocol, ServerError};
use corecache_client::counters::{Counters, ShardedCounter};
use corecache_client::hot::HotKeyConfig;
use corecache_client::ring::{Ring, point_of};
use corecache_client::topology::parse_address;
use corecache_client::{CasOutcome, Config, Consistency, Error};

const HOSTS: [(&str, usize); 3] = [("127.0.0.2", 1), ("127.0.0.3", 1), ("127.0.0.4", 1)];

fn addresses(servers: &[Server]) -> Vec<String> {
    servers.iter().map(|s| format!("{}:{}", s.host, s.port)).collect()
}

fn config(protocol: Protocol) -> Config {
    Config {
        protocol,
        ..Config::default()
    }
}

/// Every single-key call, on keys starting with `prefix`.
fn every_operation(client: &Client, prefix: &str) {
    let key = |name: &str| format!("{prefix}:{name}").into_bytes();
    let (k, counter, other) = (key("k"), key("counter"), key("other"));
    let one = Consistency::One;
    assert_eq!(client.get(&k).unwrap(), None);
    let options = Store {
        flags: 42,
        exptime: 3600,
        ..Store::default()
    };
    client.set_with(&k, b"value", options).unwrap();
    let value = client.get(&k).unwrap().expect("stored");
    assert_eq!((&value.data[..], value.flags), (&b"value"[..], 42));
    assert!(value.cas > 0, "every dialect's get asks for the CAS");
    assert!(!client.add(&k, b"x", Store::default()).unwrap(), "add of a present key");
    assert!(client.add(&other, b"new", Store::default()).unwrap());
    assert!(client.replace(&other, b"replaced", Store::default()).unwrap());
    assert!(!client.replace(&key("missing"), b"x", Store::default()).unwrap());
    assert!(client.append(&other, b"+end", Store::default()).unwrap());
    assert!(client.prepend(&other, b"start+", Store::default()).unwrap());
    assert!(!client.append(&key("missing"), b"x", Store::default()).unwrap());
    assert_eq!(client.get(&other).unwrap().unwrap().data, b"start+replaced+end");
    let cas = client.get(&k).unwrap().unwrap().cas;
    assert_eq!(client.cas(&k, b"swapped", cas, Store::default()).unwrap(), CasOutcome::Stored);
    assert_eq!(client.cas(&k, b"late", cas, Store::default()).unwrap(), CasOutcome::Exists);
    assert_eq!(
        client.cas(&key("missing"), b"x", 1, Store::default()).unwrap(),
        CasOutcome::NotFound
    );
    assert_eq!(client.get(&k).unwrap().unwrap().data, b"swapped");
    assert_eq!(client.incr(&counter, 1, one).unwrap(), None, "incr does not create");
    client.set(&counter, b"10", one).unwrap();
    assert_eq!(client.incr(&counter, 5, one).unwrap(), Some(15));
    assert_eq!(client.decr(&counter, 20, one).unwrap(), Some(0), "decr stops at 0");
    assert!(matches!(client.incr(&k, 1, one), Err(Error::Server(_))), "not a number");
    assert!(client.touch(&k, 100).unwrap());
    assert!(!client.touch(&key("missing"), 100).unwrap());
    assert_eq!(client.gat(&k, 200).unwrap().unwrap().data, b"swapped");
    assert_eq!(client.gat(&key("missing"), 200).unwrap(), None);
    assert!(client.delete(&k, one).unwrap());
    assert!(!client.delete(&k, one).unwrap());
    assert_eq!(client.get(&k).unwrap(), None);
    assert!(matches!(client.get(b"has space"), Err(Error::InvalidKey)));
    assert!(matches!(client.get(&[b'k'; 251]), Err(Error::InvalidKey)));
}

#[test]
fn every_call_works_against_a_cluster_in_each_dialect() {
    let nodes = Server::start_cluster(&HOSTS, &[]);
    let list = addresses(&nodes);
    let seeds: Vec<&str> = list.iter().map(String::as_str).collect();
    for protocol in [Protocol::Meta, Protocol::Text] {
        let client = Client::cluster(&seeds[..1], config(protocol)).unwrap();
        let (epoch, members) = client.nodes();
        assert!(epoch.is_some());
        assert_eq!(members.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>(), list);
        every_operation(&client, &format!("{protocol:?}"));
    }
    // Binary has no `cluster nodes`: the same list, given.
    let binary = Client::fixed(&seeds, config(Protocol::Binary)).unwrap();
    every_operation(&binary, "binary");
    assert!(matches!(
        Client::cluster(&seeds, config(Protocol::Binary)),
        Err(Error::NoSeed(_))
    ));
    // The client places every key where the cluster acts for it: nothing was forwarded.
    for node in &nodes {
        let stats = node.client().stats("cluster");
        let forwarded = stats.iter().find(|(name, _)| name == "forwarded_in").map(|(_, v)| v.as_str());
        assert_eq!(forwarded, Some("0"), "{}:{}", node.host, node.port);
    }
}

#[test]
fn multi_key_calls_fan_out_to_every_node_and_keep_the_keys_order() {
    let nodes = Server::start_cluster(&HOSTS, &[]);
    let list = addresses(&nodes);
    let client = Client::cluster(&[&list[1]], Config::default()).unwrap();
    let keys: Vec<Vec<u8>> = (0..90).map(|i| format!("many:{i}").into_bytes()).collect();
    let stored: Vec<(&[u8], &[u8])> = keys.iter().step_by(2).map(|k| (&k[..], &k[..])).collect();
    client.set_many(&stored, Store::default()).unwrap();
    let asked: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let values = client.get_many(&asked).unwrap();
    for (i, value) in values.iter().enumerate() {
        let expected = (i % 2 == 0).then(|| keys[i].clone());
        assert_eq!(value.as_ref().map(|v| v.data.clone()), expected, "key {i}");
    }
    // One multi-get per node: every node served some.
    let served: Vec<u64> = nodes.iter().map(|n| n.client().stat("get_hits")).collect();
    assert!(served.iter().all(|&hits| hits > 0), "{served:?}");
    assert_eq!(served.iter().sum::<u64>(), 45);
    let deleted = client.delete_many(&asked[..10]).unwrap();
    assert_eq!(deleted, (0..10).map(|i| i % 2 == 0).collect::<Vec<_>>());
    assert!(client.get_many(&asked[..10]).unwrap().iter().all(Option::is_none));
    assert!(client.get_many(&[]).unwrap().is_empty());
}

#[test]
fn writes_wait_for_the_copies_their_level_asks_and_quorum_reads_see_the_newest() {
    // Failure detection held off: a killed node stays in the preference lists.
    let mut nodes = Server::start_cluster(&HOSTS, &["--copies", "3", "--suspect-timeout-ms", "600000"]);
    let list = addresses(&nodes);
    let client = Client::cluster(
        &[&list[0]],
        Config {
            wait_timeout: Duration::from_millis(300),
            ..Config::default()
        },
    )
    .unwrap();
    for (i, level) in [Consistency::One, Consistency::Quorum, Consistency::All]
        .into_iter()
        .enumerate()
    {
        let key = format!("level:{i}");
        client.set(key.as_bytes(), b"v", level).unwrap();
        let value = client.get_quorum(key.as_bytes()).unwrap().unwrap();
        assert_eq!(value.data, b"v");
        assert_eq!(value.cas, client.get(key.as_bytes()).unwrap().unwrap().cas);
    }
    assert_eq!(client.get_quorum(b"level:none").unwrap(), None);
    nodes[2].kill();
    // Keys the live nodes act for: ALL cannot be met, ONE still is.
    let ring = Ring::new(&list.iter().map(|a| parse_address(a).unwrap()).collect::<Vec<_>>());
    let key = (0..)
        .map(|i| format!("all:{i}"))
        .find(|k| ring.owner(point_of(k.as_bytes())) == 0)
        .unwrap();
    let started = Instant::now();
    match client.set(key.as_bytes(), b"w", Consistency::All) {
        Err(Error::TooFewCopies { wanted: 3, reached }) => assert!(reached < 3),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited out the timeout");
    client.set(key.as_bytes(), b"x", Consistency::One).unwrap();
    assert_eq!(client.get(key.as_bytes()).unwrap().unwrap().data, b"x");
}

#[test]
fn a_pool_holds_at_most_its_connections_and_a_silent_node_times_out_then_is_marked_down() {
    let server = Server::start(&["-t", "1"]);
    let address = format!("{}:{}", server.host, server.port);
    let before = server.client().stat("total_connections");
    let client = Client::fixed(
        &[&address],
        Config {
            connections_per_node: 2,
            ..Config::default()
        },
    )
    .unwrap();
    client.set(b"pooled", b"v", Consistency::One).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..200 {
                    assert_eq!(client.get(b"pooled").unwrap().unwrap().data, b"v");
                }
            });
        }
    });
    // The harness's own stats connection is one more.
    let opened = server.client().stat("total_connections") - before - 1;
    assert!(opened <= 2, "{opened} connections opened");

    // A node that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let client = Client::fixed(
        &[&address],
        Config {
            timeout: Duration::from_millis(200),
            ..Config::default()
        },
    )
    .unwrap();
    for attempt in 0..3 {
        let started = Instant::now();
        let error = client.get(b"k").unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(error, Error::Io { .. }), "{attempt}: {error:?}");
        // A timeout is not sent again: one wait.
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_millis(1000),
            "{waited:?}"
        );
    }
    let started = Instant::now();
    assert!(matches!(client.get(b"k"), Err(Error::NoLiveNode)));
    assert!(started.elapsed() < Duration::from_millis(50), "marked down: no wait");
    drop(silent);
}

#[test]
fn a_kill_during_load_fails_a_bounded_number_of_calls_and_every_later_one_succeeds() {
    // QUORUM writes (2 of 3 copies): each read after its write sees it, also
    // once the acting node is gone (a ONE write may die with it).
    let mut nodes = Server::start_cluster(&HOSTS, &["--copies", "3"]);
    let list = addresses(&nodes);
    let client = Client::cluster(&[&list[0]], Config::default()).unwrap();
    const THREADS: usize = 4;
    const OPS: usize = 1500;
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let last_failure = std::sync::Mutex::new(None::<(usize, String)>);
    let killed_at = std::sync::Mutex::new(None::<Instant>);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (client, done, failed, last_failure) = (&client, &done, &failed, &last_failure);
            scope.spawn(move || {
                for i in 0..OPS {
                    let key = format!("load:{thread}:{}", i % 100);
                    let value = format!("{i}");
                    let result = client
                        .set(key.as_bytes(), value.as_bytes(), Consistency::Quorum)
                        .and_then(|()| client.get(key.as_bytes()));
                    match result {
                        Ok(Some(read)) => assert_eq!(read.data, value.as_bytes(), "{key}"),
                        Ok(None) => panic!("{key}: written, then missing"),
                        Err(error) => {
                            assert!(
                                matches!(error, Error::TooFewCopies { wanted: 2, reached: 1 }),
                                "{key}: {error}"
                            );
                            failed.fetch_add(1, Ordering::Relaxed);
                            *last_failure.lock().unwrap() = Some((i, error.to_string()));
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while done.load(Ordering::Relaxed) < THREADS * OPS / 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        nodes[1].kill();
        *killed_at.lock().unwrap() = Some(Instant::now());
    });
    let failed = failed.into_inner();
    let last = last_failure.into_inner().unwrap();
    eprintln!(
        "kill -9 under load: {failed} of {} calls failed, the last at op {:?}; load ran {:?} past the kill",
        THREADS * OPS,
        last,
        killed_at.into_inner().unwrap().unwrap().elapsed()
    );
    // A QUORUM write whose second copy was the killed node waits out its
    // wait (1 s) and reports 1 copy until the cluster declares the node
    // down (1.0-1.4 s): two per thread at most. Any other failure would be
    // a call in flight on the killed node's connections.
    assert!(failed <= 2 * THREADS, "{failed} failed, the last {last:?}");
    let (_, members) = client.nodes();
    assert_eq!(members.iter().filter(|(_, up)| !up).count(), 1, "{members:?}");
    for thread in 0..THREADS {
        for i in 0..100 {
            let key = format!("load:{thread}:{i}");
            assert!(client.get(key.as_bytes()).unwrap().is_some(), "{key}");
        }
    }
}

#[test]
fn against_three_memcached_servers_it_is_a_plain_ketama_client() {
    let mut servers: Vec<Server> = HOSTS.iter().map(|(host, _)| Server::start_memcached_on(host)).collect();
    let list = addresses(&servers);
    let seeds: Vec<&str> = list.iter().map(String::as_str).collect();
    let client = Client::fixed(&seeds, Config::default()).unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("plain:{i}")).collect();
    for key in &keys {
        client.set(key.as_bytes(), key.as_bytes(), Consistency::One).unwrap();
    }
    // Each key is on its ketama owner and nowhere else.
    let ring = Ring::new(&list.iter().map(|a| parse_address(a).unwrap()).collect::<Vec<_>>());
    let mut direct: Vec<common::Client> = servers.iter().map(Server::client).collect();
    for key in &keys {
        let owner = ring.owner(point_of(key.as_bytes()));
        for (node, connection) in direct.iter_mut().enumerate() {
            connection.send(format!("get {key}\r\n").as_bytes());
            let line = connection.line();
            if node == owner {
                assert!(line.starts_with("VALUE "), "{key} on {node}: {line}");
                connection.line();
                assert_eq!(connection.line(), "END");
            } else {
                assert_eq!(line, "END", "{key} not on {node}");
            }
        }
    }
    let asked: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    let values = client.get_many(&asked).unwrap();
    assert!(
        values
            .iter()
            .zip(&keys)
            .all(|(v, k)| v.as_ref().unwrap().data == k.as_bytes())
    );
    assert!(matches!(
        client.get_quorum(b"plain:0"),
        Err(Error::Server(ServerError::UnknownCommand))
    ));
    // A server gone: its keys go to their next node (misses there), the rest stay.
    servers[1].kill();
    let mut failed = 0;
    for key in &keys {
        match client.set(key.as_bytes(), b"again", Consistency::One) {
            Ok(()) => {}
            Err(_) => failed += 1,
        }
    }
    assert_eq!(failed, 0, "a refused connection moves the call to the next node");
    for key in &keys {
        assert_eq!(client.get(key.as_bytes()).unwrap().unwrap().data, b"again");
    }
}

/// Zipf(s) over `keys` keys: key i (0 the hottest) by inverse CDF, with a
/// xorshift so the test needs no generator crate.
struct Zipf {
    cumulative: Vec<f64>,
    state: u64,
}

impl Zipf {
    fn new(keys: usize, exponent: f64) -> Zipf {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (1..=keys)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect();
        cumulative.iter_mut().for_each(|c| *c /= total);
        Zipf {
            cumulative,
            state: 0x2545_f491_4f6c_dd1d,
        }
    }

    fn next(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let u = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        self.cumulative.partition_point(|&c| c < u).min(self.cumulative.len() - 1)
    }
}

/// Each node's `cmd_get` now.
fn gets_per_node(nodes: &[Server]) -> Vec<u64> {
    nodes.iter().map(|n| n.client().stat("cmd_get")).collect()
}

/// The busiest node's share of `served` against the mean share.
fn busiest_over_mean(served: &[u64]) -> f64 {
    let total: u64 = served.iter().sum();
    *served.iter().max().unwrap() as f64 / (total as f64 / served.len() as f64)
}

#[test]
fn hot_keys_are_named_by_the_servers_and_their_reads_spread_over_the_copies() {
    let nodes = Server::start_cluster(&HOSTS, &[]);
    let list = addresses(&nodes);
    const KEYS: usize = 1000;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("zipf:{i}")).collect();
    let plain = Client::cluster(&[&list[0]], Config::default()).unwrap();
    for key in &keys {
        plain.set(key.as_bytes(), b"v", Consistency::One).unwrap();
    }
    let run = |client: &Client, seconds: f64| {
        let mut zipf = Zipf::new(KEYS, 1.2);
        let mut counts = vec![0u64; KEYS];
        let started = Instant::now();
        while started.elapsed().as_secs_f64() < seconds {
            let i = zipf.next();
            counts[i] += 1;
            assert!(client.get(keys[i].as_bytes()).unwrap().is_some(), "{}", keys[i]);
        }
        counts
    };
    // Without relief: the nodes acting for the hottest keys take their reads.
    let before = gets_per_node(&nodes);
    let counts = run(&plain, 2.5);
    let after = gets_per_node(&nodes);
    let served_plain: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // `stats hotkeys` on the nodes names the hottest keys (each on the node acting for it).
    let mut named: Vec<String> = Vec::new();
    for node in &nodes {
        for (name, _) in node.client().stats("hotkeys") {
            if let Some(key) = name.strip_prefix("read:") {
                named.push(key.to_string());
            }
        }
    }
    let mut hottest: Vec<usize> = (0..KEYS).collect();
    hottest.sort_by_key(|&i| std::cmp::Reverse(counts[i]));
    for &i in &hottest[..5] {
        assert!(
            named.contains(&keys[i]),
            "{} ({} reads) not named: {named:?}",
            keys[i],
            counts[i]
        );
    }
    // With relief: reads of hot keys go to each copy in turn.
    let relieved = Client::cluster(
        &[&list[0]],
        Config {
            refresh_interval: Duration::from_millis(200),
            hot_keys: Some(HotKeyConfig {
                spread_above: 20,
                copies_above: 200,
                ..HotKeyConfig::default()
            }),
            ..Config::default()
        },
    )
    .unwrap();
    // The extra copies are written with the key: write the hottest again.
    run(&relieved, 0.5);
    for (key, _) in relieved.hot_keys() {
        relieved.set(&key, b"v", Consistency::One).unwrap();
    }
    let before = gets_per_node(&nodes);
    run(&relieved, 2.5);
    let after = gets_per_node(&nodes);
    let served_relieved: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let (plain_ratio, relieved_ratio) = (busiest_over_mean(&served_plain), busiest_over_mean(&served_relieved));
    eprintln!(
        "zipf 1.2 over {KEYS} keys, 3 nodes: gets per node {served_plain:?} (busiest {plain_ratio:.2}x the mean) \
         without relief, {served_relieved:?} ({relieved_ratio:.2}x) with it; hot keys known: {}",
        relieved.hot_keys().len()
    );
    assert!(
        relieved_ratio <= 1.3,
        "busiest node {relieved_ratio:.2}x the mean: {served_relieved:?}"
    );
}

#[test]
fn a_window_of_increments_is_one_incr_and_a_sharded_counter_sums_its_shards() {
    let nodes = Server::start_cluster(&HOSTS, &[]);
    let list = addresses(&nodes);
    let client = std::sync::Arc::new(Client::cluster(&[&list[0]], Config::default()).unwrap());
    let before: u64 = nodes
        .iter()
        .map(|n| n.client().stat("incr_hits") + n.client().stat("incr_misses"))
        .sum();
    {
        let counters = Counters::new(client.clone(), Duration::from_secs(60));
        for _ in 0..10_000 {
            counters.incr(b"batched", 1);
        }
        counters.flush().unwrap();
        assert_eq!(counters.requests(), (1, 0), "one incr for the window");
        counters.incr(b"batched", 5);
        // Dropped: flushed.
    }
    let after: u64 = nodes
        .iter()
        .map(|n| n.client().stat("incr_hits") + n.client().stat("incr_misses"))
        .sum();
    assert!(after - before <= 2, "{} incr requests reached the servers", after - before);
    assert_eq!(client.get(b"batched").unwrap().unwrap().data, b"10005");

    // A short window flushes by itself.
    let counters = Counters::new(client.clone(), Duration::from_millis(50));
    for _ in 0..100 {
        counters.incr(b"windowed", 2);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(client.get(b"windowed").unwrap().unwrap().data, b"200");
    drop(counters);

    let sharded = ShardedCounter::new(b"likes", 6);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..250 {
                    sharded.incr(&client, 1).unwrap();
                }
            });
        }
    });
    assert_eq!(sharded.value(&client).unwrap(), 1000);
    let ring = Ring::new(&list.iter().map(|a| parse_address(a).unwrap()).collect::<Vec<_>>());
    let mut owners: Vec<usize> = sharded.keys().iter().map(|k| ring.owner(point_of(k))).collect();
    owners.sort();
    owners.dedup();
    assert!(owners.len() >= 2, "its shards live on {owners:?}");
}
