//! Runs the load generator against a corecache it starts, for a couple of
//! seconds, and checks the JSON report.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corecache_loadgen::results::Report;

/// The server binary, built next to this test by `cargo test --workspace`.
fn corecache_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let binary = deps.parent().unwrap().parent().unwrap().join("corecache");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test --workspace`",
        binary.display()
    );
    binary
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server() -> (Server, u16) {
    // Another test may grab the same free port first: then try another.
    for _ in 0..5 {
        if let Some(started) = try_start_server() {
            return started;
        }
    }
    panic!("corecache did not start");
}

fn try_start_server() -> Option<(Server, u16)> {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(corecache_binary())
        .args(["-t", "2", "-l", "127.0.0.1", "-p", &port.to_string()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A VERSION reply, not just a connect (a connect can reach itself).
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut reply = [0u8; 8];
            if stream.write_all(b"version\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"VERSION " {
                return Some((server, port));
            }
        }
        if let Ok(Some(_)) = server.0.try_wait() {
            return None;
        }
        assert!(Instant::now() < deadline, "corecache did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn loadgen(port: u16, extra: &[&str]) -> Report {
    let json = std::env::temp_dir().join(format!("loadgen-{port}-{}.json", extra.len()));
    let output = Command::new(env!("CARGO_BIN_EXE_corecache-loadgen"))
        .args(["run", "-s", &format!("127.0.0.1:{port}"), "--cpus", "0", "--warmup", "0.5"])
        .args(["--json", json.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("p99 us"), "{table}");
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(json);
    report
}

#[test]
fn closed_loop_report_for_each_protocol() {
    let (_server, port) = start_server();
    for protocol in ["text", "meta", "binary"] {
        let report = loadgen(
            port,
            &[
                "--protocol",
                protocol,
                "--duration",
                "1.5",
                "-c",
                "4",
                "--pipeline",
                "8",
                "--keys",
                "2000",
                "--prefill",
                "--verify",
                "--multiget",
                "2",
                "--incr",
                "1",
                "--delete",
                "1",
            ],
        );
        assert_eq!(report.protocol, protocol);
        assert!(report.operations > 1000, "{protocol}: {} operations", report.operations);
        assert!(report.errors.is_empty(), "{protocol}: {:?}", report.errors);
        assert_eq!(report.verify_failures, 0);
        assert!(
            report.hits > 0 && report.hit_ratio > 0.3,
            "{protocol}: hit ratio {}",
            report.hit_ratio
        );
        let all = &report.latency["all"];
        assert!(all.p50_us > 0.0 && all.p50_us <= all.p99_us && all.p99_us <= all.max_us);
        for kind in ["get", "set", "delete", "incr"] {
            assert!(report.latency[kind].count > 0, "{protocol}: no {kind}");
        }
        assert!(report.loadgen_cpu_us_per_op > 0.0);
    }
}

#[test]
fn open_loop_holds_the_rate() {
    let (_server, port) = start_server();
    let report = loadgen(port, &["--rate", "2000", "--arrivals", "even", "--duration", "2", "-c", "4"]);
    assert_eq!(report.mode, "open-loop");
    assert!((report.ops_per_sec - 2000.0).abs() < 200.0, "{} ops/s", report.ops_per_sec);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

#[test]
fn request_budget_stops_the_run() {
    let (_server, port) = start_server();
    let report = loadgen(port, &["--requests", "5000", "-c", "2"]);
    assert_eq!(report.operations, 5000);
}
