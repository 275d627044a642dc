//! `corecache-loadgen run --cluster` against a 3-node cluster: each
//! request goes to its key's node (the count per node the report gives is
//! each node's own count), a split multi-key get checks out, and a kill -9
//! during the run fails only what was in flight on the killed node's
//! links and what the cluster refuses until it declares the node down; a
//! run after that has no error.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::Server;
use corecache_loadgen::results::Report;

const HOSTS: [(&str, usize); 3] = [("127.0.0.2", 1), ("127.0.0.3", 1), ("127.0.0.4", 1)];
const CONNECTIONS: usize = 2;
const PIPELINE: usize = 4;

/// The load generator, built next to the server by `cargo test --workspace`.
fn loadgen_binary() -> PathBuf {
    let binary = std::path::Path::new(common::BINARY).with_file_name("corecache-loadgen");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test --workspace`",
        binary.display()
    );
    binary
}

fn addresses(nodes: &[Server]) -> Vec<String> {
    nodes.iter().map(|s| format!("{}:{}", s.host, s.port)).collect()
}

fn loadgen(list: &[String], name: &str, extra: &[&str]) -> (Report, Output) {
    let json = std::env::temp_dir().join(format!("loadgen-cluster-{}-{name}.json", std::process::id()));
    let connections = CONNECTIONS.to_string();
    let pipeline = PIPELINE.to_string();
    let output = Command::new(loadgen_binary())
        .args(["run", "--cluster", &list.join(","), "--cpus", "0", "--warmup", "0"])
        .args(["-c", &connections, "--pipeline", &pipeline, "--keys", "2000"])
        .args(["--json", json.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(json);
    (report, output)
}

#[test]
fn each_request_goes_to_its_keys_node_and_a_split_multiget_checks_out() {
    let nodes = Server::start_cluster(&HOSTS, &[]);
    let list = addresses(&nodes);
    // Gets only, after a prefill of sets: each node's cmd_get is then what
    // the load generator sent it (no warm-up, so every request is counted).
    let (report, _) = loadgen(
        &list,
        "gets",
        &["--prefill", "--verify", "--get", "1", "--set", "0", "--requests", "6000"],
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.operations, report.misses, report.verify_failures), (6000, 0, 0));
    let served: Vec<u64> = nodes.iter().map(|n| n.client().stat("cmd_get")).collect();
    let sent: Vec<u64> = list.iter().map(|a| report.requests_per_node[a]).collect();
    assert_eq!(sent, served, "requests per node, as sent and as each node counts them");
    assert!(served.iter().all(|&n| n > 1000), "every node takes a share: {served:?}");

    // Gets of 5 keys, split by node: each operation hits all 5 keys (the
    // parts' hits add up), more requests than operations.
    let (report, _) = loadgen(&list, "multiget", &["--verify", "--multiget", "5", "--requests", "2000"]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let gets = report.latency["get"].count;
    assert_eq!(report.misses, 0);
    assert_eq!(report.verify_failures, 0);
    assert!(report.hits >= gets * 5, "{} hits for {gets} gets of 5 keys", report.hits);
    let requests: u64 = report.requests_per_node.values().sum();
    assert!(
        requests > report.operations,
        "{requests} requests for {} operations",
        report.operations
    );
}

#[test]
fn a_kill_during_the_run_fails_what_was_in_flight_and_what_the_cluster_refused_then_nothing() {
    let mut nodes = Server::start_cluster(&HOSTS, &["--copies", "2"]);
    let list = addresses(&nodes);
    let killed = list[1].clone();
    let run = {
        let list = list.clone();
        std::thread::spawn(move || loadgen(&list, "kill", &["--prefill", "--duration", "4"]))
    };
    std::thread::sleep(Duration::from_millis(2000));
    nodes[1].kill();
    let (report, output) = run.join().unwrap();
    eprintln!("kill -9 during the run: {:?}", report.errors);
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    // The killed node's links break: what was in flight on them fails, at
    // most a pipeline per connection.
    let broken: u64 = report
        .errors
        .iter()
        .filter(|(kind, _)| kind.starts_with(&killed))
        .map(|(_, count)| count)
        .sum();
    assert!(broken as usize <= CONNECTIONS * PIPELINE, "{:?}", report.errors);
    // The rest are the next node's refusals while the cluster has not yet
    // declared the killed node down (the load generator does not retry).
    for kind in report.errors.keys() {
        assert!(
            kind.starts_with(&killed) || kind == "SERVER_ERROR the node acting for the key cannot be reached",
            "{:?}",
            report.errors
        );
    }
    // Once the cluster has declared it down, no request fails, and the
    // killed node gets none (its connect is refused: marked down at once).
    let (report, _) = loadgen(&list, "after", &["--verify", "--requests", "5000"]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.operations, report.verify_failures), (5000, 0));
    assert_eq!(report.requests_per_node[&killed], 0, "{:?}", report.requests_per_node);
}
