//! Cluster mode: the node list, finding oneself in it, and each key's
//! preference list as the nodes report it. (Placement against uhashring and
//! twemproxy: tests/cluster/placement.py, run by .ci/run.)

mod common;

use std::io::Write;

use common::{Server, start_failure};
use corecache::cluster::wire;
use corecache::request::{KeyOp, Outcome, Refusal, StoreMode};

const HOSTS: [(&str, usize); 3] = [("127.0.0.2", 1), ("127.0.0.3", 2), ("127.0.0.4", 1)];

/// The reply lines of a command that ends with END.
fn lines_until_end(client: &mut common::Client, command: &str) -> Vec<String> {
    client.send(format!("{command}\r\n").as_bytes());
    let mut lines = Vec::new();
    loop {
        let line = client.line();
        if line == "END" {
            return lines;
        }
        lines.push(line);
    }
}

/// The NODE lines of `cluster nodes` (after its EPOCH line).
fn node_lines(client: &mut common::Client) -> Vec<String> {
    let mut lines = lines_until_end(client, "cluster nodes");
    assert!(lines[0].starts_with("EPOCH "), "{lines:?}");
    lines.remove(0);
    lines
}

#[test]
fn every_node_reports_the_list_and_the_same_preference_lists() {
    let nodes = Server::start_cluster(&HOSTS, &[]);
    let addresses: Vec<String> = nodes.iter().map(|n| format!("{}:{}", n.host, n.port)).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for (index, node) in nodes.iter().enumerate() {
        // Every node finds the others alive (failure detection) within a bound.
        let listed = loop {
            let listed = node_lines(&mut node.client());
            if listed.iter().all(|line| line.split(' ').nth(3) == Some("alive")) {
                break listed;
            }
            assert!(std::time::Instant::now() < deadline, "node {index}: {listed:?}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut share = 0.0;
        for (i, (line, address)) in listed.iter().zip(&addresses).enumerate() {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields[..4], ["NODE", address, "1", "alive"], "{line}");
            share += fields[4].strip_prefix("share=").unwrap().parse::<f64>().unwrap();
            assert!(fields[5].starts_with("lag_us="), "{line}");
            assert_eq!(fields.get(6) == Some(&"self"), i == index, "{line}");
        }
        assert!(
            (share - 1.0).abs() < 1e-3,
            "the shares (4 decimals each) cover the key space: {share}"
        );
    }
    let mut clients: Vec<_> = nodes.iter().map(Server::client).collect();
    for i in 0..200 {
        let key = format!("key:{i}");
        let first = lines_until_end(&mut clients[0], &format!("cluster owner {key}"));
        assert_eq!(first.len(), 2, "{first:?}");
        assert!(first[0].starts_with("OWNER ") && first[1].starts_with("REPLICA "));
        assert_ne!(first[0][6..], first[1][8..]);
        for client in &mut clients[1..] {
            assert_eq!(lines_until_end(client, &format!("cluster owner {key}")), first);
        }
    }
}

#[test]
fn copies_choose_the_preference_list_length() {
    let nodes = Server::start_cluster(&HOSTS, &["--copies", "3"]);
    let owners = lines_until_end(&mut nodes[1].client(), "cluster owner foo");
    assert_eq!(owners.len(), 3);
}

#[test]
fn cluster_commands_need_cluster_mode_and_a_key() {
    let server = Server::start(&["-t", "1"]);
    let mut client = server.client();
    client.roundtrip(
        b"cluster nodes\r\n",
        b"SERVER_ERROR cluster mode is off (start with --cluster-nodes)\r\n",
    );
    client.roundtrip(b"cluster owner\r\n", b"CLIENT_ERROR bad command line format\r\n");
    client.roundtrip(b"cluster\r\n", b"CLIENT_ERROR bad command line format\r\n");
}

#[test]
fn node_list_changes_are_checked_and_reach_every_node() {
    let nodes = Server::start_cluster(&HOSTS, &[]);
    let names: Vec<String> = nodes.iter().map(|n| format!("{}:{}", n.host, n.port)).collect();
    let mut client = nodes[0].client();
    for (command, reply) in [
        ("cluster add 127.0.0.9", "CLIENT_ERROR bad node address (host:port[:weight])"),
        (
            "cluster add 127.0.0.9:0",
            "CLIENT_ERROR bad node address (host:port[:weight])",
        ),
        (
            "cluster add 127.0.0.9:5000:0",
            "CLIENT_ERROR bad node address (host:port[:weight])",
        ),
        (
            "cluster remove 127.0.0.9:5000",
            "SERVER_ERROR 127.0.0.9:5000 is not in the node list",
        ),
        (
            "cluster weight 127.0.0.9:5000 2",
            "SERVER_ERROR 127.0.0.9:5000 is not in the node list",
        ),
        ("cluster weight x", "CLIENT_ERROR bad command line format"),
    ] {
        client.roundtrip(format!("{command}\r\n").as_bytes(), format!("{reply}\r\n").as_bytes());
    }
    client.roundtrip(
        format!("cluster add {}\r\n", names[1]).as_bytes(),
        format!("SERVER_ERROR {} is already in the node list\r\n", names[1]).as_bytes(),
    );
    // A weight change made on one node reaches the others' `cluster nodes`.
    client.roundtrip(format!("cluster weight {} 3\r\n", names[2]).as_bytes(), b"OK\r\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for (index, node) in nodes.iter().enumerate() {
        loop {
            let mut watcher = node.client();
            let epoch = lines_until_end(&mut watcher, "cluster nodes").remove(0);
            let listed = node_lines(&mut watcher);
            let weight = listed[2].split(' ').nth(2).map(str::to_string);
            if epoch.starts_with("EPOCH 1 ") && weight.as_deref() == Some("3") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "node {index}: {epoch} {listed:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[test]
fn a_node_missing_from_its_list_does_not_start() {
    let (code, stderr) = start_failure(&["-l", "127.0.0.2", "-p", "23000", "--cluster-nodes", "127.0.0.3:23000"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--cluster-nodes does not list this node: none of its entries is -l 127.0.0.2 with -p 23000"),
        "{stderr}"
    );
    let (code, stderr) = start_failure(&["-l", "127.0.0.2", "--cluster-nodes", "127.0.0.2:11211:x"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("expected host:port[:weight]"), "{stderr}");
}

/// Sends `ops` on a cluster link (PEER_MAGIC, one frame per op; `relayed`:
/// as ops the sender took from another node's link) and reads one outcome
/// per op.
fn forward(stream: &mut std::net::TcpStream, ops: &[KeyOp<&[u8]>], relayed: bool) -> Vec<Outcome<Vec<u8>>> {
    use std::io::{Read, Write};
    let mut bytes = Vec::new();
    for op in ops {
        wire::encode_op(&mut bytes, op, relayed);
    }
    stream.write_all(&bytes).unwrap();
    let mut input = Vec::new();
    let mut outcomes = Vec::new();
    while outcomes.len() < ops.len() {
        while let Some((body, used)) = wire::frame(&input).unwrap() {
            outcomes.push(wire::decode_outcome(body).unwrap().to_owned_outcome());
            input.drain(..used);
        }
        if outcomes.len() == ops.len() {
            break;
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).unwrap();
        assert!(read > 0, "link closed after {} outcomes", outcomes.len());
        input.extend_from_slice(&chunk[..read]);
    }
    outcomes
}

fn set(key: &[u8]) -> KeyOp<&[u8]> {
    KeyOp::Store {
        mode: StoreMode::Set,
        key,
        client_flags: 7,
        exptime: 0,
        value: b"forwarded",
        options: Default::default(),
    }
}

#[test]
fn a_node_runs_forwarded_ops_for_its_keys_relays_the_others_once_and_refuses_relayed_ones() {
    let nodes = Server::start_cluster(&HOSTS, &[]);
    let node = &nodes[1];
    let me = format!("OWNER {}:{}", node.host, node.port);
    let mut owned = Vec::new();
    let mut foreign = Vec::new();
    let mut client = node.client();
    for i in 0..100 {
        let key = format!("k{i}");
        let owner = lines_until_end(&mut client, &format!("cluster owner {key}"));
        if owner[0] == me { owned.push(key) } else { foreign.push(key) }
    }
    assert!(owned.len() >= 2 && foreign.len() >= 2);

    let mut link = std::net::TcpStream::connect((node.host.as_str(), node.port)).unwrap();
    link.write_all(&[wire::PEER_MAGIC]).unwrap();
    let mut ops: Vec<KeyOp<&[u8]>> = owned.iter().map(|k| set(k.as_bytes())).collect();
    ops.push(set(foreign[0].as_bytes()));
    ops.push(KeyOp::Get {
        key: owned[0].as_bytes(),
        options: Default::default(),
    });
    let outcomes = forward(&mut link, &ops, false);
    // The foreign key's op too: the sender's view was behind, so it went
    // on to the node acting for the key.
    for outcome in &outcomes[..owned.len() + 1] {
        assert!(matches!(outcome, Outcome::Stored { .. }), "{outcome:?}");
    }
    match &outcomes[owned.len() + 1] {
        Outcome::Hit { info, value } => assert_eq!((info.client_flags, value.as_slice()), (7, &b"forwarded"[..])),
        other => panic!("{other:?}"),
    }
    // What a link stored is the cluster's: clients read it, the relayed one too.
    for key in [&owned[0], &foreign[0]] {
        client.roundtrip(
            format!("get {key}\r\n").as_bytes(),
            format!("VALUE {key} 7 9\r\nforwarded\r\nEND\r\n").as_bytes(),
        );
    }
    // A relayed op is run or refused, never sent on again.
    let relayed = forward(&mut link, &[set(owned[1].as_bytes()), set(foreign[1].as_bytes())], true);
    assert!(matches!(relayed[0], Outcome::Stored { .. }), "{:?}", relayed[0]);
    assert_eq!(relayed[1], Outcome::Refused(Refusal::NotActing));
    client.roundtrip(format!("get {}\r\n", foreign[1]).as_bytes(), b"END\r\n");
    // A frame that does not decode closes the link, and only the link.
    link.write_all(&[1, 0, 0, 0, 0xee]).unwrap();
    let mut rest = Vec::new();
    use std::io::Read;
    assert_eq!(link.read_to_end(&mut rest).unwrap(), 0);
    client.roundtrip(b"version\r\n", &common::version_line());
}

#[test]
fn without_cluster_mode_the_peer_byte_is_text_as_in_memcached() {
    let server = Server::start(&["-t", "1"]);
    let mut client = server.client();
    client.roundtrip(&[wire::PEER_MAGIC, b'\r', b'\n'], b"CLIENT_ERROR bad command line format\r\n");
}

/// The node `cluster owner` names for `key`, as an index into `nodes`.
/// Waits until every other node has declared `dead` down, within `bound`
/// (until they agree, one may forward a key to another, which refuses it).
fn wait_until_down(nodes: &[Server], dead: usize, bound: std::time::Duration) {
    let started = std::time::Instant::now();
    for survivor in (0..nodes.len()).filter(|&node| node != dead) {
        let mut watcher = nodes[survivor].client();
        loop {
            let listed = node_lines(&mut watcher);
            if listed[dead].split(' ').nth(3) == Some("down") {
                break;
            }
            assert!(
                started.elapsed() < bound,
                "node {dead} not down on node {survivor}: {listed:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A key's preference list (node indexes, the owner first), as `cluster owner` gives it.
fn preference_of(nodes: &[Server], client: &mut common::Client, key: &str) -> Vec<usize> {
    lines_until_end(client, &format!("cluster owner {key}"))
        .iter()
        .map(|line| {
            let address = line.split(' ').nth(1).expect("OWNER or REPLICA <address>");
            nodes
                .iter()
                .position(|node| format!("{}:{}", node.host, node.port) == address)
                .expect("a listed node")
        })
        .collect()
}

fn owner_of(nodes: &[Server], client: &mut common::Client, key: &str) -> usize {
    preference_of(nodes, client, key)[0]
}

/// One key owned by each node, found by asking node 0.
fn key_per_node(nodes: &[Server]) -> Vec<String> {
    let mut client = nodes[0].client();
    let mut keys = vec![None; nodes.len()];
    for i in 0.. {
        let key = format!("pernode{i}");
        let owner = owner_of(nodes, &mut client, &key);
        keys[owner].get_or_insert(key);
        if keys.iter().all(Option::is_some) {
            return keys.into_iter().map(Option::unwrap).collect();
        }
    }
    unreachable!()
}

#[test]
fn any_node_answers_any_key_with_large_values_and_multigets() {
    let nodes = Server::start_cluster(&HOSTS, &[]);
    let keys = key_per_node(&nodes);
    // A value near -I crosses the links whole (the link's read buffer grows).
    let big: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut writer = nodes[0].client();
    for key in &keys {
        let mut request = format!("set {key} 3 0 {}\r\n", big.len()).into_bytes();
        request.extend_from_slice(&big);
        request.extend_from_slice(b"\r\n");
        writer.roundtrip(&request, b"STORED\r\n");
    }
    for node in &nodes {
        let mut reader = node.client();
        let mut expected = Vec::new();
        for key in &keys {
            expected.extend_from_slice(&common::value_block(key, 3, &big));
        }
        expected.extend_from_slice(b"END\r\n");
        reader.roundtrip(format!("get {} nothing-here\r\n", keys.join(" ")).as_bytes(), &expected);
    }
    // Each key is held by the nodes of its preference list (the copies
    // trail their owner by the replication lag), and by no other.
    let mut client = nodes[0].client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for key in &keys {
        let listed = preference_of(&nodes, &mut client, key);
        assert_eq!(listed.len(), 2, "--copies is 2 by default");
        for (index, node) in nodes.iter().enumerate() {
            loop {
                let held = node
                    .client()
                    .metadump()
                    .iter()
                    .any(|line| line.starts_with(&format!("key={key} ")));
                if held == listed.contains(&index) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{key} on node {index}: held {held}, list {listed:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn an_unreachable_node_s_keys_are_refused_and_the_rest_served() {
    // Failure detection is held off: this is the time before a node is declared down.
    let mut nodes = Server::start_cluster(&HOSTS, &["--suspect-timeout-ms", "600000"]);
    let keys = key_per_node(&nodes);
    let mut client = nodes[0].client();
    for key in &keys {
        client.roundtrip(format!("set {key} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
    }
    nodes[2].kill();
    let (down, up) = (&keys[2], &keys[1]);
    // Twice: the link's failure, then the refusal while it waits to retry.
    for _ in 0..2 {
        client.roundtrip(
            format!("set {down} 0 0 1\r\ny\r\n").as_bytes(),
            b"SERVER_ERROR the node acting for the key cannot be reached\r\n",
        );
        client.roundtrip(
            format!("mg {down} v\r\n").as_bytes(),
            b"SERVER_ERROR the node acting for the key cannot be reached\r\n",
        );
        // In a multi-get an unreachable key is a miss; the others are served.
        client.roundtrip(
            format!("get {down} {up}\r\n").as_bytes(),
            format!("VALUE {up} 0 1\r\nx\r\nEND\r\n").as_bytes(),
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    client.roundtrip(format!("set {up} 0 0 1\r\nz\r\n").as_bytes(), b"STORED\r\n");
    client.roundtrip(b"flush_all\r\n", b"OK\r\n");
    client.roundtrip(format!("get {up}\r\n").as_bytes(), b"END\r\n");
}

#[test]
fn a_dead_node_s_keys_are_served_by_the_next_node_with_their_values() {
    let mut nodes = Server::start_cluster(&HOSTS, &[]);
    let keys: Vec<String> = (0..200).map(|i| format!("failover{i}")).collect();
    let mut client = nodes[0].client();
    for (i, key) in keys.iter().enumerate() {
        client.roundtrip(format!("set {key} {i} 0 2\r\nv{}\r\n", i % 10).as_bytes(), b"STORED\r\n");
    }
    // The copies trail by the replication lag: wait until node 1's keys are on their second node.
    let lists: Vec<Vec<usize>> = keys.iter().map(|key| preference_of(&nodes, &mut client, key)).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for (index, node) in nodes.iter().enumerate() {
        loop {
            let dump = node.client().metadump();
            let held = |key: &str| dump.iter().any(|line| line.starts_with(&format!("key={key} ")));
            if keys.iter().zip(&lists).all(|(key, list)| held(key) == list.contains(&index)) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "copies on node {index}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    // CAS is the key's version: kept from before the failover, exceeded after it.
    let cas_of = |client: &mut common::Client, key: &str| -> u64 {
        client.send(format!("mg {key} c\r\n").as_bytes());
        client.line().strip_prefix("HD c").expect("HD c<cas>").parse().unwrap()
    };
    let before: Vec<u64> = keys.iter().map(|key| cas_of(&mut client, key)).collect();
    nodes[1].kill();
    wait_until_down(&nodes, 1, std::time::Duration::from_secs(5));
    let after: Vec<u64> = keys.iter().map(|key| cas_of(&mut client, key)).collect();
    assert_eq!(after, before, "the copies carry their owner's CAS");
    // Every key answers with its value, from whichever node acts for it now.
    for (i, key) in keys.iter().enumerate() {
        let value = format!("v{}", i % 10);
        let expected = common::value_block(key, i as u32, value.as_bytes());
        client.roundtrip(format!("get {key}\r\n").as_bytes(), &[expected, b"END\r\n".to_vec()].concat());
        assert!(!preference_of(&nodes, &mut client, key).contains(&1));
    }
    for (key, &cas) in keys.iter().zip(&before) {
        client.roundtrip(format!("set {key} 0 0 1\r\nw\r\n").as_bytes(), b"STORED\r\n");
        assert!(cas_of(&mut client, key) > cas, "{key}: a newer write has a larger CAS");
    }
}

#[test]
fn wait_counts_the_copies_of_the_connection_s_last_write() {
    // Failure detection held off: a killed node stays in the preference lists.
    let mut nodes = Server::start_cluster(&HOSTS, &["--copies", "3", "--suspect-timeout-ms", "600000"]);
    let keys = key_per_node(&nodes);
    let mut client = nodes[0].client();
    client.roundtrip(b"wait 1 10\r\n", b"COPIES 0\r\n");
    client.roundtrip(b"wait 1\r\n", b"CLIENT_ERROR bad command line format\r\n");
    // Its own key, and keys it forwards: the node acting for each is asked.
    for key in &keys {
        client.roundtrip(format!("set {key} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
        client.roundtrip(b"wait 3 5000\r\n", b"COPIES 3\r\n");
    }
    // A read is not a write: the last write is still the one waited for.
    client.roundtrip(
        format!("mg {} v\r\nwait 3 5000\r\n", keys[1]).as_bytes(),
        b"VA 1\r\nx\r\nCOPIES 3\r\n",
    );
    // Copies count in preference-list order (the next node is the one a
    // failover would use): with node 2 down, a key listed [0, 1, 2] has 2,
    // a key listed [0, 2, 1] has 1.
    let listed = |client: &mut common::Client, order: &[usize]| {
        (0..)
            .map(|i| format!("ordered{i}"))
            .find(|key| preference_of(&nodes, client, key) == order)
            .unwrap()
    };
    let (last, first) = (listed(&mut client, &[0, 1, 2]), listed(&mut client, &[0, 2, 1]));
    nodes[2].kill();
    let started = std::time::Instant::now();
    client.roundtrip(format!("set {last} 0 0 1\r\ny\r\n").as_bytes(), b"STORED\r\n");
    client.roundtrip(b"wait 3 300\r\n", b"COPIES 2\r\n");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "it waited for the timeout"
    );
    client.roundtrip(b"wait 2 5000\r\n", b"COPIES 2\r\n");
    client.roundtrip(format!("set {first} 0 0 1\r\ny\r\n").as_bytes(), b"STORED\r\n");
    client.roundtrip(b"wait 2 100\r\n", b"COPIES 1\r\n");
    let plain = Server::start(&["-t", "1"]);
    plain.client().roundtrip(b"wait 1 1\r\n", b"ERROR\r\n");
}

#[test]
fn writes_on_two_copies_survive_a_kill_of_the_node_acting_for_them() {
    let mut nodes = Server::start_cluster(&HOSTS, &["--copies", "3"]);
    let mut client = nodes[0].client();
    let keys: Vec<String> = (0..200)
        .map(|i| format!("waited{i}"))
        .filter(|key| owner_of(&nodes, &mut client, key) == 1)
        .collect();
    assert!(!keys.is_empty());
    // Straight to the node acting for them, each write waited for on 2 copies.
    let mut writer = nodes[1].client();
    for (i, key) in keys.iter().enumerate() {
        writer.roundtrip(format!("set {key} {i} 0 1\r\nv\r\n").as_bytes(), b"STORED\r\n");
        writer.send(b"wait 2 5000\r\n");
        let copies: u32 = writer.line().strip_prefix("COPIES ").unwrap().parse().unwrap();
        assert!(copies >= 2, "{key}: {copies} copies");
    }
    nodes[1].kill();
    wait_until_down(&nodes, 1, std::time::Duration::from_secs(10));
    for (i, key) in keys.iter().enumerate() {
        let expected = [common::value_block(key, i as u32, b"v"), b"END\r\n".to_vec()].concat();
        client.roundtrip(format!("get {key}\r\n").as_bytes(), &expected);
    }
}

#[test]
fn a_quorum_read_returns_the_newest_copy_through_any_node() {
    let nodes = Server::start_cluster(&HOSTS, &["--copies", "3"]);
    let keys = key_per_node(&nodes);
    for (i, node) in nodes.iter().enumerate() {
        let mut client = node.client();
        for key in &keys {
            client.roundtrip(format!("set {key} 7 0 2\r\nv{i}\r\n").as_bytes(), b"STORED\r\n");
            client.roundtrip(b"wait 3 5000\r\n", b"COPIES 3\r\n");
            client.send(format!("mg {key} c\r\n").as_bytes());
            let cas: u64 = client.line().strip_prefix("HD c").expect("HD c<cas>").parse().unwrap();
            client.roundtrip(
                format!("cluster get {key}\r\n").as_bytes(),
                format!("VALUE {key} 7 2 {cas}\r\nv{i}\r\nEND\r\n").as_bytes(),
            );
        }
        client.roundtrip(b"cluster get absent\r\n", b"END\r\n");
        client.roundtrip(b"cluster get\r\n", b"CLIENT_ERROR bad command line format\r\n");
    }
    // Every copy agreed: nothing to repair (three keys and the absent one read here).
    let mut client = nodes[0].client();
    let stats = lines_until_end(&mut client, "stats cluster");
    assert!(stats.contains(&"STAT quorum_repairs 0".to_string()), "{stats:?}");
    assert!(stats.contains(&"STAT quorum_reads 4".to_string()), "{stats:?}");
    let plain = Server::start(&["-t", "1"]);
    plain.client().roundtrip(
        b"cluster get x\r\n",
        b"SERVER_ERROR cluster mode is off (start with --cluster-nodes)\r\n",
    );
}
