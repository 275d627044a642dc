//! Bad input and limits: memcached's error, the connection survives where
//! memcached's would, nothing stored is lost.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Client, Server, free_port, start_failure, start_failure_with, value_block, version_line};

#[test]
fn errors_keep_the_connection_and_the_data() {
    for threads in ["1", "2"] {
        let server = Server::start(&["-t", threads]);
        let mut c = server.client();
        c.roundtrip(b"set keep 0 0 4\r\nsafe\r\n", b"STORED\r\n");
        let long_key = "k".repeat(251);
        c.roundtrip(
            format!("get {long_key}\r\n").as_bytes(),
            b"CLIENT_ERROR bad command line format\r\n",
        );
        // A refused storage line's data block is swallowed, never run.
        c.roundtrip(
            format!("set {long_key} 0 0 10\r\nget keep\r\n\r\n").as_bytes(),
            b"CLIENT_ERROR bad command line format\r\n",
        );
        // Control bytes in keys are accepted, as memcached does (memaslap sends them).
        c.roundtrip(
            b"set \x10\x10key 0 0 1\r\nx\r\nget \x10\x10key\r\n",
            b"STORED\r\nVALUE \x10\x10key 0 1\r\nx\r\nEND\r\n",
        );
        // The declared bytes are read; the "\n" left over is a line too short.
        c.roundtrip(
            b"set keep 0 0 2\r\nabc\r\n",
            b"CLIENT_ERROR bad data chunk\r\nCLIENT_ERROR bad command line format\r\n",
        );
        c.roundtrip(b"set keep 0 0 -1\r\n", b"CLIENT_ERROR bad command line format\r\n");
        c.roundtrip(b"set keep abc 0 1\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\n");
        c.roundtrip(b"set keep 0 0\r\n", b"CLIENT_ERROR bad command line format\r\n");
        c.roundtrip(b"delete nokey 10 noreply\r\n", b"");
        c.roundtrip(b"nonsense\r\n", b"ERROR\r\n");
        c.roundtrip(b"\r\n", b"CLIENT_ERROR bad command line format\r\n");
        c.roundtrip(b"shutdown\r\n", b"SERVER_ERROR: shutdown not enabled\r\n");
        c.roundtrip(b"touch keep abc\r\n", b"CLIENT_ERROR invalid exptime argument\r\n");
        // A maximal key is fine.
        let max_key = "m".repeat(250);
        c.roundtrip(format!("set {max_key} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
        c.roundtrip(
            b"get keep\r\n",
            &[value_block("keep", 0, b"safe"), b"END\r\n".to_vec()].concat(),
        );
    }
}

#[test]
fn too_large_values_are_swallowed() {
    let server = Server::start(&["-t", "2", "-I", "1k"]);
    let mut c = server.client();
    c.roundtrip(b"set big 0 0 1\r\nx\r\nset other 0 0 5\r\nsmall\r\n", b"STORED\r\nSTORED\r\n");
    // The value arrives in pieces after the error; it must not be parsed as commands.
    c.send(b"set big 0 0 5000\r\n");
    c.expect(b"SERVER_ERROR object too large for cache\r\n");
    let body = b"get other\r\n".repeat(500);
    c.send(&body[..3000]);
    std::thread::sleep(Duration::from_millis(50));
    c.send(&body[3000..5000]);
    c.send(b"\r\nget big other\r\n");
    // memcached drops the old value of a set that failed.
    c.expect(&[value_block("other", 0, b"small"), b"END\r\n".to_vec()].concat());
    // A too-large cas keeps the value (only set drops it).
    c.roundtrip(
        b"set keep 0 0 1\r\nk\r\ncas keep 0 0 5000 1\r\n",
        b"STORED\r\nSERVER_ERROR object too large for cache\r\n",
    );
    c.send(&vec![b'z'; 5002]);
    c.roundtrip(b"get keep\r\n", &[value_block("keep", 0, b"k"), b"END\r\n".to_vec()].concat());
    c.roundtrip(b"add big 0 0 2000 noreply\r\n", b"");
    c.send(&vec![b'z'; 2002]);
    c.roundtrip(b"get big\r\n", b"END\r\n");
}

#[test]
fn endless_line_is_refused_and_closed() {
    let server = Server::start(&["-t", "1"]);
    let mut c = server.client();
    let junk = vec![b'x'; 64 * 1024];
    let _ = c.stream.write_all(&junk);
    // memcached closes without a word.
    assert!(c.hung_up_silently());
    // An endless get line is bounded too.
    let mut c = server.client();
    let mut line = b"get ".to_vec();
    line.extend(std::iter::repeat_n(b'k', 2 << 20));
    let _ = c.stream.write_all(&line);
    assert!(c.hung_up_silently());
    // A get line of 2048 spaces and a key is fine, as in memcached.
    let mut c = server.client();
    let spaces = " ".repeat(2048);
    c.send(format!("get {spaces} manyspaces").as_bytes());
    std::thread::sleep(Duration::from_millis(100));
    c.roundtrip(b"\r\n", b"END\r\n");
    // An HTTP request line is hung up on (no cross-protocol use from browsers).
    let mut c = server.client();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.hung_up_silently());
    // The server is fine.
    server.client().roundtrip(b"version\r\n", &version_line());
}

#[test]
fn connection_limit_refuses_with_memcacheds_error() {
    let server = Server::start(&["-t", "2", "-c", "3"]);
    // The harness's readiness probe may hold a slot for a moment.
    let mut open: Vec<Client> = (0..3).map(|_| admitted_client(&server)).collect();
    let mut refused = server.client();
    refused.expect(b"ERROR Too many open connections\r\n");
    assert!(refused.is_closed());
    assert!(open[0].stat("rejected_connections") >= 1);
    // A slot frees when a client leaves.
    drop(open.pop());
    admitted_client(&server);
}

/// A client that got past the connection limit, retrying for a few seconds.
fn admitted_client(server: &Server) -> Client {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = server.client();
        c.send(b"version\r\n");
        let line = c.line();
        if line.starts_with("VERSION") {
            return c;
        }
        assert_eq!(line, "ERROR Too many open connections");
        assert!(Instant::now() < deadline, "no connection slot freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn flush_all_can_be_disabled() {
    let server = Server::start(&["-t", "2", "-F"]);
    let mut c = server.client();
    c.roundtrip(
        b"set k 0 0 1\r\nv\r\nflush_all\r\n",
        b"STORED\r\nCLIENT_ERROR flush_all not allowed\r\n",
    );
    c.roundtrip(b"get k\r\n", &[value_block("k", 0, b"v"), b"END\r\n".to_vec()].concat());
}

#[test]
fn without_evictions_a_full_cache_says_out_of_memory() {
    let server = Server::start(&["-t", "1", "-m", "1", "-M"]);
    let mut c = server.client();
    let value = vec![b'v'; 1000];
    let mut answers = Vec::new();
    for i in 0..2000 {
        c.send(format!("set m{i} 0 0 {}\r\n", value.len()).as_bytes());
        c.send(&value);
        c.send(b"\r\n");
        answers.push(c.line());
    }
    assert_eq!(answers[0], "STORED");
    assert_eq!(answers.last().unwrap(), "SERVER_ERROR out of memory storing object");
    // Nothing stored was evicted.
    c.roundtrip(b"get m0\r\n", &[value_block("m0", 0, &value), b"END\r\n".to_vec()].concat());
    assert_eq!(c.stat("evictions"), 0);
}

#[test]
fn a_slow_client_does_not_stall_others_on_its_core() {
    let server = Server::start(&["-t", "1"]);
    let mut slow = server.client();
    // Half a request, then silence.
    slow.send(b"set slow 0 0 9\r\nhalf");
    // A client that never reads its (large) replies.
    let mut deaf = server.client();
    deaf.roundtrip(format!("set blob 0 0 {}\r\n", 500_000).as_bytes(), b"");
    deaf.send(&vec![b'b'; 500_000]);
    deaf.send(b"\r\n");
    let _ = deaf.stream.set_write_timeout(Some(Duration::from_secs(2)));
    for _ in 0..20 {
        let _ = deaf.stream.write_all(&b"get blob\r\n".repeat(10));
    }
    let mut fast = server.client();
    let started = Instant::now();
    for i in 0..100 {
        fast.roundtrip(
            format!("set fast{i} 0 0 1\r\nx\r\nget fast{i}\r\n").as_bytes(),
            &[
                b"STORED\r\n".to_vec(),
                value_block(&format!("fast{i}"), 0, b"x"),
                b"END\r\n".to_vec(),
            ]
            .concat(),
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5), "fast client stalled");
    slow.send(b"-rest\r\n");
    slow.expect(b"STORED\r\n");
}

#[test]
fn very_large_items_up_to_128m() {
    let server = Server::start(&["-t", "1", "-I", "128m", "-m", "512"]);
    let mut c = server.client();
    let size = 120 << 20;
    let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    c.send(format!("set huge 7 0 {size}\r\n").as_bytes());
    c.send(&value);
    c.roundtrip(b"\r\n", b"STORED\r\n");
    c.roundtrip(
        b"get huge\r\n",
        &[value_block("huge", 7, &value), b"END\r\n".to_vec()].concat(),
    );
    c.send(format!("set huge 0 0 {}\r\n", 129 << 20).as_bytes());
    c.expect(b"SERVER_ERROR object too large for cache\r\n");
}

#[test]
fn shutdown_when_enabled() {
    let mut server = Server::start(&["-t", "2", "-A"]);
    let mut c = server.client();
    c.send(b"shutdown\r\n");
    assert!(server.wait_exit(Duration::from_secs(5)).is_some(), "server did not exit");
}

#[test]
fn bad_flags_fail_at_start_with_a_reason() {
    for (args, reason) in [
        (&["-U", "11211"][..], "UDP is not supported"),
        (&["-I", "lots"], "invalid size"),
        (&["-f", "0.5"], "growth factor"),
        (&["-t", "0"], "thread count"),
        (&["-m", "1", "-t", "2"], "at least one 1 MiB page"),
        (&["--cores", "999"], "not available"),
        (&["--cores", "0", "--repl-core", "0"], "also a worker core"),
        (&["-p", "notaport"], "invalid value"),
    ] {
        let (code, stderr) = start_failure(args);
        assert_ne!(code, 0, "{args:?} should fail");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[test]
fn a_second_server_on_the_same_port_is_refused() {
    let server = Server::start(&["-t", "2"]);
    let port = server.port.to_string();
    let (code, stderr) = start_failure(&["-t", "2", "-l", "127.0.0.1", "-p", &port]);
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot listen on 127.0.0.1"), "{stderr}");
}

#[test]
fn a_huge_multi_get_streams_instead_of_buffering() {
    let server = Server::start(&["-t", "1", "-m", "8"]);
    let mut c = server.client();
    let value = vec![b'v'; 64 * 1024];
    c.send(format!("set big 0 0 {}\r\n", value.len()).as_bytes());
    c.send(&value);
    c.roundtrip(b"\r\n", b"STORED\r\n");
    // 2000 hits of 64 KiB: a 128 MiB reply to one line.
    let keys = vec!["big"; 2000].join(" ");
    c.send(format!("get {keys}\r\n").as_bytes());
    let block = value_block("big", 0, &value);
    let mut received = vec![0u8; block.len()];
    for _ in 0..2000 {
        c.stream.read_exact(&mut received).unwrap();
        assert!(received == block);
    }
    c.expect(b"END\r\n");
    let peak_kib = server.memory_kib("VmHWM");
    assert!(peak_kib < 96 * 1024, "server peaked at {peak_kib} KiB for a streamed reply");
}

/// A client that keeps sending while it reads none of its replies is
/// slowed by TCP's flow control, not buffered by the server: once its
/// replies stop going out, the server stops taking in its requests.
#[test]
fn a_client_that_does_not_read_cannot_make_the_server_buffer_its_requests() {
    let server = Server::start(&["-t", "1", "-m", "8"]);
    let mut c = server.client();
    let value = vec![b'v'; 64 * 1024];
    c.send(format!("set big 0 0 {}\r\n", value.len()).as_bytes());
    c.send(&value);
    c.roundtrip(b"\r\n", b"STORED\r\n");
    let before = server.memory_kib("VmRSS");
    // 64 MiB of replies nobody reads yet, then 64 MiB of requests.
    let mut requests = b"get big\r\n".repeat(1000);
    let mut set = format!("set small 0 0 {}\r\n", value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    requests.extend_from_slice(&set.repeat(1000));
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&requests).is_ok());
    std::thread::sleep(Duration::from_secs(2));
    let grown = server.memory_kib("VmRSS").saturating_sub(before);
    // Now read everything: the requests then go through.
    let mut hit = value_block("big", 0, &value);
    hit.extend_from_slice(b"END\r\n");
    for _ in 0..1000 {
        c.expect(&hit);
    }
    for _ in 0..1000 {
        c.expect(b"STORED\r\n");
    }
    assert!(sender.join().unwrap(), "every request was sent");
    // Its replies in flight account for some 32 MiB; 64 MiB of requests would double it.
    assert!(grown < 64 * 1024, "server grew by {grown} KiB while its client read nothing");
}

/// A core that cannot start (here: locked memory below what io_uring
/// needs) ends the server with the reason, instead of leaving the other
/// cores serving while requests for the lost core's keys wait forever.
#[test]
fn a_core_that_cannot_start_ends_the_server_with_its_reason() {
    use std::os::unix::process::CommandExt;
    for replication in [false, true] {
        let (port, repl_port) = (free_port("127.0.0.1").to_string(), free_port("127.0.0.1").to_string());
        let mut args = vec!["-t", "2", "-l", "127.0.0.1", "-p", &port];
        if replication {
            args.extend(["--repl-port", &repl_port]);
        }
        let (code, stderr) = start_failure_with(&args, |command| {
            // SAFETY: only setrlimit runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: 64 * 1024,
                        rlim_max: 64 * 1024,
                    };
                    if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        });
        assert_eq!(code, 71, "{args:?}: {stderr}");
        assert!(
            stderr.contains("ended before the server was stopped") && stderr.contains("MemLockLimit"),
            "{args:?}: {stderr}"
        );
    }
}
