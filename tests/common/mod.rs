//! The one test harness: starts the real corecache binary on a free
//! loopback port and talks to it over TCP.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_corecache");

pub struct Server {
    /// Loopback address the server listens on (127.0.0.1 unless asked).
    pub host: String,
    pub port: u16,
    /// The port that replaced `{repl_port}` in the arguments, if any.
    pub repl_port: Option<u16>,
    child: Child,
}

/// Stands in an argument list for a free port, chosen at each start attempt.
pub const REPL_PORT: &str = "{repl_port}";

/// True once a corecache answers `version` on the port. A bare connect is
/// not enough: a connect to an unused port in the ephemeral range can
/// connect the socket to itself.
fn answers_version(host: &str, port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((host, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reply = [0u8; 8];
    stream.write_all(b"version\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"VERSION "
}

/// A port free on `host` now, and never handed out before in this test
/// process: tests run in parallel threads, and the kernel may offer two of
/// them the same port before either server binds it.
pub fn free_port(host: &str) -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<(String, u16)>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind((host, 0)).unwrap().local_addr().unwrap().port();
        if HANDED_OUT.lock().unwrap().insert((host.to_string(), port)) {
            return port;
        }
    }
}

/// A free client port for a cluster node whose cluster port (client port +
/// 10000, TCP for copies and UDP for failure detection) is free too.
pub fn free_cluster_port(host: &str) -> u16 {
    loop {
        let port = free_port(host);
        let Some(cluster_port) = port.checked_add(10000) else {
            continue;
        };
        let tcp = TcpListener::bind((host, cluster_port));
        let udp = std::net::UdpSocket::bind((host, cluster_port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
}

impl Server {
    /// Starts corecache with `args` (plus port and loopback address) and
    /// waits until it accepts connections.
    pub fn start(args: &[&str]) -> Server {
        Server::start_as(None, args)
    }

    /// Starts corecache as another user (uid), e.g. 65534 (nobody).
    pub fn start_as(uid: Option<u32>, args: &[&str]) -> Server {
        Server::start_full("127.0.0.1", uid, args)
    }

    /// Starts corecache listening on another loopback address (a "host").
    pub fn start_on(host: &str, args: &[&str]) -> Server {
        Server::start_full(host, None, args)
    }

    /// Starts a cluster node: corecache on each of `hosts` (loopback
    /// addresses, one "host" each) with `threads` cores, all given the
    /// node list of every host's chosen port, plus `args`.
    pub fn start_cluster(hosts: &[(&str, usize)], args: &[&str]) -> Vec<Server> {
        // A port checked free may be taken before the node binds it: then
        // the whole cluster starts again on other ports.
        for _ in 0..5 {
            let ports: Vec<u16> = hosts.iter().map(|(host, _)| free_cluster_port(host)).collect();
            let list: Vec<String> = hosts
                .iter()
                .zip(&ports)
                .map(|((host, _), port)| format!("{host}:{port}"))
                .collect();
            let list = list.join(",");
            let nodes: Option<Vec<Server>> = hosts
                .iter()
                .zip(&ports)
                .map(|(&(host, threads), &port)| {
                    let mut node_args = vec!["-t".to_string(), threads.to_string(), "--cluster-nodes".into(), list.clone()];
                    node_args.extend(args.iter().map(|arg| arg.to_string()));
                    Server::try_start(host, port, None, &node_args)
                })
                .collect();
            if let Some(nodes) = nodes {
                // A node starts stale (it may be back from a crash) and acts
                // once it has had every other node's copies: wait for that.
                for node in &nodes {
                    node.wait_until_fresh();
                }
                return nodes;
            }
        }
        panic!("cluster nodes did not start");
    }

    /// Waits until this cluster node has taken the others' copies and acts
    /// for its keys, the others taking it as acting (`stats cluster` says
    /// `acting 1`).
    pub fn wait_until_fresh(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut client = self.client();
        loop {
            let stats = client.stats("cluster");
            if stats.iter().any(|(name, value)| name == "acting" && value == "1") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {}:{} still stale: {stats:?}",
                self.host,
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_full(host: &str, uid: Option<u32>, args: &[&str]) -> Server {
        // Another test may take the same free port first: then try another.
        for _ in 0..5 {
            let repl_port = args.contains(&REPL_PORT).then(|| free_port(host));
            let args: Vec<String> = args
                .iter()
                .map(|&arg| match (arg, repl_port) {
                    (REPL_PORT, Some(port)) => port.to_string(),
                    _ => arg.to_string(),
                })
                .collect();
            if let Some(mut server) = Server::try_start(host, free_port(host), uid, &args) {
                server.repl_port = repl_port;
                return server;
            }
        }
        panic!("corecache did not start");
    }

    /// Starts Debian's memcached (`/usr/bin/memcached`) on `host`, as a
    /// peer: a plain server for the client library's ketama mode.
    pub fn start_memcached_on(host: &str) -> Server {
        let mut args: Vec<String> = ["-U", "0", "-t", "1", "-m", "64"].map(String::from).to_vec();
        // memcached refuses to run as root without -u.
        if unsafe { libc::geteuid() } == 0 {
            args.extend(["-u".to_string(), "root".to_string()]);
        }
        for _ in 0..5 {
            if let Some(server) = Server::try_start_program("/usr/bin/memcached", host, free_port(host), None, &args) {
                return server;
            }
        }
        panic!("memcached did not start");
    }

    fn try_start(host: &str, port: u16, uid: Option<u32>, args: &[String]) -> Option<Server> {
        Server::try_start_program(BINARY, host, port, uid, args)
    }

    fn try_start_program(program: &str, host: &str, port: u16, uid: Option<u32>, args: &[String]) -> Option<Server> {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(program);
        if let Some(uid) = uid {
            command.uid(uid).gid(uid);
        }
        let child = command
            .args(["-p", &port.to_string(), "-l", host])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("start {program}: {error}"));
        let mut server = Server {
            host: host.to_string(),
            port,
            repl_port: None,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !answers_version(host, port) {
            if let Ok(Some(status)) = server.child.try_wait() {
                eprintln!("corecache exited at start on port {port}: {status}");
                return None;
            }
            assert!(Instant::now() < deadline, "corecache did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Another test's server may hold the port (both were handed it as
        // free): then this one failed to bind, and the answer was not its own.
        let pid = server.client().stat("pid");
        if pid != u64::from(server.pid()) {
            eprintln!("port {host}:{port} is another server's (pid {pid}): trying another");
            return None;
        }
        Some(server)
    }

    pub fn client(&self) -> Client {
        Client::connect_to(&self.host, self.port)
    }

    /// `host:port` of the replication port.
    pub fn repl_address(&self) -> String {
        format!("{}:{}", self.host, self.repl_port.expect("started with a replication port"))
    }

    /// kill -9, and reap the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A memory line of the server's /proc status (VmRSS, VmHWM...), in KiB.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }

    /// Each thread's name, state and kernel wait point (a stuck core shows
    /// where it sleeps), for failure reports.
    pub fn threads(&self) -> String {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .into_iter()
            .flatten()
            .flatten();
        let describe = |task: std::path::PathBuf| {
            let read = |file: &str| std::fs::read_to_string(task.join(file)).unwrap_or_default();
            let stat = read("stat");
            // After the ")" that ends the name: state, then 10 fields to utime and stime.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |(_, rest)| rest)
                .split_whitespace()
                .collect();
            let field = |index: usize| fields.get(index).copied().unwrap_or("?");
            format!(
                "{} {} wchan={} utime={} stime={}",
                read("comm").trim(),
                field(0),
                read("wchan"),
                field(11),
                field(12)
            )
        };
        tasks.map(|task| describe(task.path())).collect::<Vec<_>>().join("; ")
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with arguments that must make it fail at start; its
/// exit code and standard error.
pub fn start_failure(args: &[&str]) -> (i32, String) {
    start_failure_with(args, |_| {})
}

/// `start_failure` with the command adjusted first (say, a lower limit). A
/// server that goes on running fails the test instead of hanging it.
pub fn start_failure_with(args: &[&str], adjust: impl FnOnce(&mut Command)) -> (i32, String) {
    let mut command = Command::new(BINARY);
    command.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    adjust(&mut command);
    let mut child = command.spawn().expect("run corecache");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: corecache went on running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut stderr).unwrap();
    (status.code().unwrap_or(-1), stderr)
}

pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Client::connect_to("127.0.0.1", port)
    }

    pub fn connect_to(host: &str, port: u16) -> Client {
        let stream = TcpStream::connect((host, port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads exactly `expected.len()` bytes and compares them.
    pub fn expect(&mut self, expected: &[u8]) {
        let mut got = vec![0; expected.len()];
        if let Err(error) = self.stream.read_exact(&mut got) {
            panic!("reading {:?}: {error}", String::from_utf8_lossy(expected));
        }
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
    }

    /// Sends a request and checks the exact reply.
    pub fn roundtrip(&mut self, request: &[u8], expected: &[u8]) {
        self.send(request);
        self.expect(expected);
    }

    /// The bytes of one line, up to (not including) its "\n".
    fn line_bytes(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let mut byte = [0u8];
        loop {
            self.stream.read_exact(&mut byte).expect("read line");
            if byte[0] == b'\n' {
                return line;
            }
            line.push(byte[0]);
        }
    }

    /// Reads one line ending in "\n" (metadump's lines have no "\r").
    pub fn line_lf(&mut self) -> String {
        let line = self.line_bytes();
        String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(&line)).into_owned()
    }

    /// Reads one line, without its "\r\n".
    pub fn line(&mut self) -> String {
        let mut line = self.line_bytes();
        assert_eq!(line.pop(), Some(b'\r'), "line ends with CRLF");
        String::from_utf8_lossy(&line).into_owned()
    }

    /// `lru_crawler metadump all`: one line per item, END not included.
    pub fn metadump(&mut self) -> Vec<String> {
        self.send(b"lru_crawler metadump all\r\n");
        assert_eq!(self.line_lf(), "OK");
        std::iter::from_fn(|| Some(self.line_lf()))
            .take_while(|line| line != "END")
            .collect()
    }

    /// `stats [group]` as (name, value) pairs.
    pub fn stats(&mut self, group: &str) -> Vec<(String, String)> {
        let request = if group.is_empty() {
            "stats\r\n".to_string()
        } else {
            format!("stats {group}\r\n")
        };
        self.send(request.as_bytes());
        let mut stats = Vec::new();
        loop {
            let line = self.line();
            if line == "END" {
                return stats;
            }
            let mut parts = line.splitn(3, ' ');
            assert_eq!(parts.next(), Some("STAT"), "{line}");
            stats.push((parts.next().unwrap().to_string(), parts.next().unwrap_or("").to_string()));
        }
    }

    pub fn stat(&mut self, name: &str) -> u64 {
        let stats = self.stats("");
        let value = &stats
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no stat {name}"))
            .1;
        value.parse().unwrap()
    }

    /// True once the server has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8];
        matches!(self.stream.read(&mut byte), Ok(0))
    }

    /// The server hung up without sending a byte (a reset counts: it closed
    /// with input of ours unread, as memcached does).
    pub fn hung_up_silently(&mut self) -> bool {
        let mut byte = [0u8];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// The reply to `version`.
pub fn version_line() -> Vec<u8> {
    format!("VERSION 1.6.45-corecache-{}\r\n", env!("CARGO_PKG_VERSION")).into_bytes()
}

/// `VALUE` block as the text protocol writes it.
pub fn value_block(key: &str, flags: u32, data: &[u8]) -> Vec<u8> {
    let mut block = format!("VALUE {key} {flags} {}\r\n", data.len()).into_bytes();
    block.extend_from_slice(data);
    block.extend_from_slice(b"\r\n");
    block
}
