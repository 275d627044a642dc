//! corecache-client's tokio driver against real servers: the cases of
//! tests/client.rs, under `#[tokio::test]` (every call in each dialect,
//! fan-out order, consistency levels, pool limits and timeouts, a kill -9
//! under load, Debian's memcached x3 as plain ketama servers).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use corecache_client::codec::{Protocol, ServerError};
use corecache_client::ring::{Ring, point_of};
use corecache_client::tokio_driver::{Client, Store};
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

/// The ring over `list`, as the client builds it.
fn ring(list: &[String]) -> Ring {
    Ring::new(&list.iter().map(|a| parse_address(a).unwrap()).collect::<Vec<_>>())
}

/// Starts servers on a blocking thread (the harness waits with sleeps).
async fn blocking<T: Send + 'static>(start: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(start).await.unwrap()
}

async fn every_operation(client: &Client, prefix: &str) {
    let key = |name: &str| format!("{prefix}:{name}").into_bytes();
    let (k, counter, other, missing) = (key("k"), key("counter"), key("other"), key("missing"));
    let one = Consistency::One;
    let plain = Store::default();
    assert_eq!(client.get(&k).await.unwrap(), None);
    let options = Store {
        flags: 42,
        exptime: 3600,
        ..Store::default()
    };
    client.set_with(&k, b"value", options).await.unwrap();
    let value = client.get(&k).await.unwrap().expect("stored");
    assert_eq!((&value.data[..], value.flags), (&b"value"[..], 42));
    assert!(value.cas > 0);
    assert!(!client.add(&k, b"x", plain).await.unwrap());
    assert!(client.add(&other, b"new", plain).await.unwrap());
    assert!(client.replace(&other, b"replaced", plain).await.unwrap());
    assert!(!client.replace(&missing, b"x", plain).await.unwrap());
    assert!(client.append(&other, b"+end", plain).await.unwrap());
    assert!(client.prepend(&other, b"start+", plain).await.unwrap());
    assert_eq!(client.get(&other).await.unwrap().unwrap().data, b"start+replaced+end");
    let cas = client.get(&k).await.unwrap().unwrap().cas;
    assert_eq!(client.cas(&k, b"swapped", cas, plain).await.unwrap(), CasOutcome::Stored);
    assert_eq!(client.cas(&k, b"late", cas, plain).await.unwrap(), CasOutcome::Exists);
    assert_eq!(client.cas(&missing, b"x", 1, plain).await.unwrap(), CasOutcome::NotFound);
    assert_eq!(client.incr(&counter, 1, one).await.unwrap(), None);
    client.set(&counter, b"10", one).await.unwrap();
    assert_eq!(client.incr(&counter, 5, one).await.unwrap(), Some(15));
    assert_eq!(client.decr(&counter, 20, one).await.unwrap(), Some(0));
    assert!(matches!(client.incr(&k, 1, one).await, Err(Error::Server(_))));
    assert!(client.touch(&k, 100).await.unwrap());
    assert!(!client.touch(&missing, 100).await.unwrap());
    assert_eq!(client.gat(&k, 200).await.unwrap().unwrap().data, b"swapped");
    assert!(client.delete(&k, one).await.unwrap());
    assert!(!client.delete(&k, one).await.unwrap());
    assert!(matches!(client.get(b"has space").await, Err(Error::InvalidKey)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_works_against_a_cluster_in_each_dialect() {
    let nodes = blocking(|| Server::start_cluster(&HOSTS, &[])).await;
    let list = addresses(&nodes);
    let seeds: Vec<&str> = list.iter().map(String::as_str).collect();
    for protocol in [Protocol::Meta, Protocol::Text] {
        let client = Client::cluster(&seeds[..1], config(protocol)).await.unwrap();
        assert_eq!(client.nodes().1.len(), 3);
        every_operation(&client, &format!("{protocol:?}")).await;
    }
    let binary = Client::fixed(&seeds, config(Protocol::Binary)).unwrap();
    every_operation(&binary, "binary").await;
    assert!(matches!(
        Client::cluster(&seeds, config(Protocol::Binary)).await,
        Err(Error::NoSeed(_))
    ));
    blocking(move || {
        for node in &nodes {
            let stats = node.client().stats("cluster");
            let forwarded = stats.iter().find(|(name, _)| name == "forwarded_in").map(|(_, v)| v.clone());
            assert_eq!(
                forwarded.as_deref(),
                Some("0"),
                "the client places every key where the cluster acts for it"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_calls_fan_out_and_consistency_levels_hold() {
    let mut nodes = blocking(|| Server::start_cluster(&HOSTS, &["--copies", "3", "--suspect-timeout-ms", "600000"])).await;
    let list = addresses(&nodes);
    let client = Client::cluster(
        &[&list[1]],
        Config {
            wait_timeout: Duration::from_millis(300),
            ..Config::default()
        },
    )
    .await
    .unwrap();
    let keys: Vec<Vec<u8>> = (0..90).map(|i| format!("many:{i}").into_bytes()).collect();
    let stored: Vec<(&[u8], &[u8])> = keys.iter().step_by(2).map(|k| (&k[..], &k[..])).collect();
    client.set_many(&stored, Store::default()).await.unwrap();
    let asked: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let values = client.get_many(&asked).await.unwrap();
    for (i, value) in values.iter().enumerate() {
        assert_eq!(
            value.as_ref().map(|v| v.data.clone()),
            (i % 2 == 0).then(|| keys[i].clone()),
            "key {i}"
        );
    }
    assert_eq!(client.delete_many(&asked[..4]).await.unwrap(), [true, false, true, false]);
    for level in [Consistency::One, Consistency::Quorum, Consistency::All] {
        client.set(b"level", b"v", level).await.unwrap();
        let newest = client.get_quorum(b"level").await.unwrap().unwrap();
        assert_eq!(newest.cas, client.get(b"level").await.unwrap().unwrap().cas);
    }
    // Kept: the others must live on.
    let _nodes = blocking(move || {
        nodes[2].kill();
        nodes
    })
    .await;
    let key = (0..)
        .map(|i| format!("all:{i}"))
        .find(|k| ring(&list).owner(point_of(k.as_bytes())) == 0)
        .unwrap();
    let started = Instant::now();
    match client.set(key.as_bytes(), b"w", Consistency::All).await {
        Err(Error::TooFewCopies { wanted: 3, reached }) => assert!(reached < 3),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_holds_at_most_its_connections_and_a_silent_node_times_out_then_is_marked_down() {
    let server = blocking(|| Server::start(&["-t", "1"])).await;
    let address = format!("{}:{}", server.host, server.port);
    let server = Arc::new(server);
    let before = blocking({
        let server = server.clone();
        move || server.client().stat("total_connections")
    })
    .await;
    let client = Arc::new(
        Client::fixed(
            &[&address],
            Config {
                connections_per_node: 2,
                ..Config::default()
            },
        )
        .unwrap(),
    );
    client.set(b"pooled", b"v", Consistency::One).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    assert_eq!(client.get(b"pooled").await.unwrap().unwrap().data, b"v");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let after = blocking({
        let server = server.clone();
        move || server.client().stat("total_connections")
    })
    .await;
    assert!(after - before - 1 <= 2, "{} connections opened", after - before - 1);

    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
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
        let error = client.get(b"k").await.unwrap_err();
        assert!(matches!(error, Error::Io { .. }), "{attempt}: {error:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_millis(1000),
            "{waited:?}"
        );
    }
    let started = Instant::now();
    assert!(matches!(client.get(b"k").await, Err(Error::NoLiveNode)));
    assert!(started.elapsed() < Duration::from_millis(50));
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_load_fails_a_bounded_number_of_calls_and_every_later_one_succeeds() {
    let nodes = blocking(|| Server::start_cluster(&HOSTS, &["--copies", "3"])).await;
    let list = addresses(&nodes);
    let client = Arc::new(Client::cluster(&[&list[0]], Config::default()).await.unwrap());
    const TASKS: usize = 4;
    const OPS: usize = 1500;
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (client, done, failed) = (client.clone(), done.clone(), failed.clone());
            tokio::spawn(async move {
                for i in 0..OPS {
                    let key = format!("load:{task}:{}", i % 100);
                    let value = i.to_string();
                    match client.set(key.as_bytes(), value.as_bytes(), Consistency::Quorum).await {
                        Ok(()) => {
                            let read = client.get(key.as_bytes()).await.unwrap();
                            assert_eq!(read.map(|v| v.data), Some(value.into_bytes()), "{key}");
                        }
                        // Stored on the acting node, its second copy the killed one (see tests/client.rs).
                        Err(Error::TooFewCopies { wanted: 2, reached: 1 }) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => panic!("{key}: {error}"),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while done.load(Ordering::Relaxed) < TASKS * OPS / 3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let nodes = blocking(move || {
        let mut nodes = nodes;
        nodes[1].kill();
        nodes
    })
    .await;
    for task in tasks {
        task.await.unwrap();
    }
    let failed = failed.load(Ordering::Relaxed);
    eprintln!("tokio: kill -9 under load: {failed} of {} calls failed", TASKS * OPS * 2);
    assert!(failed <= 2 * TASKS, "{failed}");
    for task in 0..TASKS {
        for i in 0..100 {
            let key = format!("load:{task}:{i}");
            assert!(client.get(key.as_bytes()).await.unwrap().is_some(), "{key}");
        }
    }
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_three_memcached_servers_it_is_a_plain_ketama_client() {
    let servers = blocking(|| {
        HOSTS
            .iter()
            .map(|(host, _)| Server::start_memcached_on(host))
            .collect::<Vec<_>>()
    })
    .await;
    let list = addresses(&servers);
    let seeds: Vec<&str> = list.iter().map(String::as_str).collect();
    let client = Client::fixed(&seeds, Config::default()).unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("plain:{i}")).collect();
    for key in &keys {
        client.set(key.as_bytes(), key.as_bytes(), Consistency::One).await.unwrap();
    }
    let owners: Vec<usize> = keys.iter().map(|k| ring(&list).owner(point_of(k.as_bytes()))).collect();
    let keys_for_check = keys.clone();
    let mut servers = blocking(move || {
        let mut direct: Vec<common::Client> = servers.iter().map(Server::client).collect();
        for (key, &owner) in keys_for_check.iter().zip(&owners) {
            for (node, connection) in direct.iter_mut().enumerate() {
                connection.send(format!("get {key}\r\n").as_bytes());
                let line = connection.line();
                assert_eq!(line.starts_with("VALUE "), node == owner, "{key} on {node}: {line}");
                if node == owner {
                    connection.line();
                    assert_eq!(connection.line(), "END");
                }
            }
        }
        servers
    })
    .await;
    let asked: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    let values = client.get_many(&asked).await.unwrap();
    assert!(
        values
            .iter()
            .zip(&keys)
            .all(|(v, k)| v.as_ref().unwrap().data == k.as_bytes())
    );
    assert!(matches!(
        client.get_quorum(b"plain:0").await,
        Err(Error::Server(ServerError::UnknownCommand))
    ));
    servers[1].kill();
    for key in &keys {
        client.set(key.as_bytes(), b"again", Consistency::One).await.unwrap();
    }
    for key in &keys {
        assert_eq!(client.get(key.as_bytes()).await.unwrap().unwrap().data, b"again");
    }
}
