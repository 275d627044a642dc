//! Many clients at once on -t 2, pipelining random commands over keys
//! that live on both cores; each client owns its keys and checks every
//! reply against its own model of what they hold.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Client, Server};

/// A tiny deterministic generator (no dependency needed for a test).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn run_client(port: u16, client: u64) {
    let mut c = Client::connect(port);
    let mut rng = Lcg(client * 7919 + 1);
    let mut model: HashMap<String, Vec<u8>> = HashMap::new();
    for _round in 0..60 {
        // One pipelined batch of 30 commands, replies checked in order.
        let mut request = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..30 {
            let key = format!("c{client}:k{}", rng.next(40));
            match rng.next(6) {
                0 | 1 => {
                    let value = format!("v{}", rng.next(1_000_000)).into_bytes();
                    request.extend_from_slice(format!("set {key} 0 0 {}\r\n", value.len()).as_bytes());
                    request.extend_from_slice(&value);
                    request.extend_from_slice(b"\r\n");
                    expected.extend_from_slice(b"STORED\r\n");
                    model.insert(key, value);
                }
                2 => {
                    request.extend_from_slice(format!("delete {key}\r\n").as_bytes());
                    expected.extend_from_slice(if model.remove(&key).is_some() {
                        b"DELETED\r\n"
                    } else {
                        b"NOT_FOUND\r\n"
                    });
                }
                3 => {
                    request.extend_from_slice(format!("append {key} 0 0 1\r\n+\r\n").as_bytes());
                    match model.get_mut(&key) {
                        Some(value) => {
                            value.push(b'+');
                            expected.extend_from_slice(b"STORED\r\n");
                        }
                        None => expected.extend_from_slice(b"NOT_STORED\r\n"),
                    }
                }
                _ => {
                    // A multi-get of three keys, some on each core.
                    let keys: Vec<String> = (0..3).map(|_| format!("c{client}:k{}", rng.next(40))).collect();
                    request.extend_from_slice(format!("get {}\r\n", keys.join(" ")).as_bytes());
                    for key in &keys {
                        if let Some(value) = model.get(key) {
                            expected.extend_from_slice(format!("VALUE {key} 0 {}\r\n", value.len()).as_bytes());
                            expected.extend_from_slice(value);
                            expected.extend_from_slice(b"\r\n");
                        }
                    }
                    expected.extend_from_slice(b"END\r\n");
                }
            }
        }
        c.send(&request);
        c.expect(&expected);
    }
}

#[test]
fn concurrent_pipelined_clients_see_their_own_writes() {
    let server = Server::start(&["-t", "2"]);
    let port = server.port;
    let clients: Vec<_> = (0..8)
        .map(|client| std::thread::spawn(move || run_client(port, client)))
        .collect();
    for client in clients {
        client.join().expect("a client saw a wrong reply");
    }
    // And the server still answers.
    let mut c = server.client();
    c.send(b"version\r\n");
    assert!(c.line().starts_with("VERSION "));
}

/// A `get` reply holding one value.
fn hit(key: &str, value: &str) -> Vec<u8> {
    [common::value_block(key, 0, value.as_bytes()), b"END\r\n".to_vec()].concat()
}

/// Connections come and go quickly, some leaving with replies unread or
/// requests half sent: every connection still gets exactly its own
/// replies, and the server's connection count returns to the test's own.
#[test]
fn connections_that_come_and_go_get_only_their_own_replies() {
    let server = Server::start(&["-t", "2"]);
    let port = server.port;
    let churners: Vec<_> = (0..4u64)
        .map(|thread| {
            std::thread::spawn(move || {
                for round in 0..150u64 {
                    let mut c = Client::connect(port);
                    let key = format!("churn{thread}:{round}");
                    let value = format!("value-{thread}-{round}");
                    c.send(format!("set {key} 0 0 {}\r\n{value}\r\nget {key}\r\n", value.len()).as_bytes());
                    match round % 3 {
                        // Leaves without reading the replies.
                        0 => {}
                        // Leaves in the middle of a request.
                        1 => c.send(b"set half 0 0 10\r\nabc"),
                        _ => c.expect(&[b"STORED\r\n".to_vec(), hit(&key, &value)].concat()),
                    }
                }
            })
        })
        .collect();
    for churner in churners {
        churner.join().expect("a connection saw a wrong reply");
    }
    let mut c = server.client();
    for thread in 0..4 {
        let key = format!("churn{thread}:149");
        c.roundtrip(
            format!("get {key}\r\n").as_bytes(),
            &hit(&key, &format!("value-{thread}-149")),
        );
    }
    // The departed connections are all closed on the server's side.
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.stat("curr_connections") != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.stat("curr_connections"), 1, "only this client is still connected");
}
