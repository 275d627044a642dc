//! Cluster mode: the node list, finding oneself in it, and each key's
//! preference list as the nodes report it. (Placement against uhashring and
//! twemproxy: tests/cluster/placement.py, run by .ci/run.)

mod common;

use common::{Server, start_failure};

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

#[test]
fn every_node_reports_the_list_and_the_same_preference_lists() {
    let nodes = Server::start_cluster(&HOSTS, &[]);
    let addresses: Vec<String> = nodes.iter().map(|n| format!("{}:{}", n.host, n.port)).collect();
    for (index, node) in nodes.iter().enumerate() {
        let listed = lines_until_end(&mut node.client(), "cluster nodes");
        let expected: Vec<String> = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| format!("NODE {a} 1 {}", if i == index { "self" } else { "unknown" }))
            .collect();
        assert_eq!(listed, expected);
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
