//! Meta commands end to end against `-t 2`, so keys cross cores.

mod common;

use common::Server;

fn server() -> Server {
    Server::start(&["-t", "2"])
}

#[test]
fn meta_get_returns_the_flags_asked_for_in_order() {
    let server = server();
    let mut c = server.client();
    c.send(b"ms user:1 5 T100 F7 c\r\nhello\r\n");
    let stored = c.line();
    assert!(stored.starts_with("HD c"), "{stored}");
    let cas = &stored[4..];
    c.roundtrip(
        b"mg user:1 s v f t k Oq1 c h\r\n",
        format!("VA 5 s5 f7 t100 kuser:1 Oq1 c{cas} h0\r\nhello\r\n").as_bytes(),
    );
    // Now it has been hit; 'u' reads without bumping.
    c.roundtrip(b"mg user:1 h u\r\n", b"HD h1\r\n");
    c.roundtrip(format!("mg user:1 v C{cas}\r\n").as_bytes(), b"HD\r\n");
    c.roundtrip(b"mg user:1 T5 t\r\n", b"HD t5\r\n");
    c.roundtrip(b"mg nobody v\r\n", b"EN\r\n");
}

#[test]
fn quiet_pipeline_ends_with_mn() {
    let server = server();
    let mut c = server.client();
    let mut request = Vec::new();
    for i in 0..40 {
        request.extend_from_slice(format!("ms key{i} 2 q\r\nv{}\r\n", i % 10).as_bytes());
    }
    for i in 0..60 {
        request.extend_from_slice(format!("mg key{i} v q k\r\n").as_bytes());
    }
    request.extend_from_slice(b"mn\r\n");
    let mut expected = Vec::new();
    for i in 0..40 {
        expected.extend_from_slice(format!("VA 2 kkey{i}\r\nv{}\r\n", i % 10).as_bytes());
    }
    expected.extend_from_slice(b"MN\r\n");
    c.roundtrip(&request, &expected);
}

#[test]
fn invalidation_then_recache_win() {
    let server = server();
    let mut c = server.client();
    c.roundtrip(b"ms page 3\r\nold\r\n", b"HD\r\n");
    c.roundtrip(b"md page I T30\r\n", b"HD\r\n");
    // The first reader wins the recache, later ones see Z; all see X.
    c.roundtrip(b"mg page v\r\n", b"VA 3 X W\r\nold\r\n");
    c.roundtrip(b"mg page v\r\n", b"VA 3 Z X\r\nold\r\n");
    c.send(b"mg page c\r\n");
    let cas_line = c.line();
    let cas: u64 = cas_line.split(' ').nth(1).unwrap()[1..].parse().unwrap();
    // A write with an older CAS and I lands, still stale, and keeps the
    // win already handed out (memcached's t/metaget.t).
    c.roundtrip(format!("ms page 3 I C{}\r\nnew\r\n", cas - 1).as_bytes(), b"HD\r\n");
    c.roundtrip(b"mg page v\r\n", b"VA 3 Z X\r\nnew\r\n");
    c.roundtrip(b"ms page 5\r\nfresh\r\n", b"HD\r\n");
    c.roundtrip(b"mg page v\r\n", b"VA 5\r\nfresh\r\n");
    // Vivify on miss: one winner.
    c.roundtrip(b"mg hot N30 v\r\n", b"VA 0 W\r\n\r\n");
    c.roundtrip(b"mg hot N30 v\r\n", b"VA 0 Z\r\n\r\n");
    // E gives a vivified item the client's CAS.
    c.roundtrip(b"mg cold N30 E777 c\r\n", b"HD c777 W\r\n");
}

#[test]
fn meta_set_modes_delete_and_arithmetic() {
    let server = server();
    let mut c = server.client();
    c.roundtrip(b"ms k 1 ME\r\na\r\nms k 1 ME\r\nb\r\n", b"HD\r\nNS\r\n");
    c.roundtrip(
        b"ms k 1 MA\r\nz\r\nms k 1 MP\r\n<\r\nmg k v\r\n",
        b"HD\r\nHD\r\nVA 3\r\n<az\r\n",
    );
    c.roundtrip(b"ms nope 1 MR\r\nx\r\nms nope 1 MA\r\nx\r\n", b"NS\r\nNS\r\n");
    c.roundtrip(b"ms grow 1 MA N0\r\nx\r\nmg grow v\r\n", b"HD\r\nVA 1\r\nx\r\n");
    c.roundtrip(b"ms k 1 C1\r\nx\r\n", b"EX\r\n");
    c.roundtrip(b"md k C1\r\nmd k q\r\nmd k\r\n", b"EX\r\nNF\r\n");
    c.roundtrip(b"ma n\r\n", b"NF\r\n");
    c.roundtrip(
        b"ma n N0 J10 v\r\nma n v\r\nma n MD D20 v\r\n",
        b"VA 2\r\n10\r\nVA 2\r\n11\r\nVA 1\r\n0\r\n",
    );
    c.roundtrip(
        b"ms s 3\r\nabc\r\nma s\r\n",
        b"HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    c.roundtrip(b"md gone x\r\n", b"NF\r\n");
    c.roundtrip(b"ms t 4\r\nkeep\r\nmd t x\r\nmg t v s\r\n", b"HD\r\nHD\r\nVA 0 s0\r\n\r\n");
}

#[test]
fn base64_keys_and_debug() {
    let server = server();
    let mut c = server.client();
    // "binary\x00key" in base64.
    c.roundtrip(b"ms YmluYXJ5AGtleQ== 2 b\r\nhi\r\n", b"HD\r\n");
    c.roundtrip(b"mg YmluYXJ5AGtleQ== b k v\r\n", b"VA 2 kYmluYXJ5AGtleQ== b\r\nhi\r\n");
    c.send(b"me YmluYXJ5AGtleQ== b\r\n");
    let debug = c.line();
    assert!(debug.starts_with("ME YmluYXJ5AGtleQ== exp=-1 la="), "{debug}");
    assert!(debug.contains(" fetch=yes cls=") && debug.ends_with(" size=42"), "{debug}");
    c.roundtrip(b"me nothing\r\n", b"EN\r\n");
}

#[test]
fn meta_errors_keep_the_connection() {
    let server = server();
    let mut c = server.client();
    c.roundtrip(b"mg\r\n", b"CLIENT_ERROR bad command line format\r\n");
    c.roundtrip(b"mg k z\r\n", b"CLIENT_ERROR invalid flag\r\n");
    c.roundtrip(b"mg k !\r\n", b"CLIENT_ERROR bad command line format\r\n");
    c.roundtrip(b"mg k v v\r\n", b"CLIENT_ERROR duplicate flag\r\n");
    c.roundtrip(b"mg k Tx\r\n", b"CLIENT_ERROR bad token in command line format\r\n");
    c.roundtrip(b"mg %%% b\r\n", b"CLIENT_ERROR error decoding key\r\n");
    c.roundtrip(
        b"ms k 2\r\nabc\r\n",
        b"CLIENT_ERROR bad data chunk\r\nCLIENT_ERROR bad command line format\r\n",
    );
    c.roundtrip(b"mx k\r\n", b"ERROR\r\n");
    c.roundtrip(b"mn\r\n", b"MN\r\n");
    // A refused ms swallows its data block: the value is never run.
    c.roundtrip(b"ms victim 1\r\nx\r\n", b"HD\r\n");
    c.roundtrip(
        b"ms k 13 MZ\r\ndelete victim\r\nmn\r\n",
        b"CLIENT_ERROR invalid mode for ms M token\r\nMN\r\n",
    );
    c.roundtrip(b"mg victim v\r\n", b"VA 1\r\nx\r\n");
    // Lengths that do not fit memcached's signed 32 bits are refused, not trusted.
    c.roundtrip(
        b"ms kk 18446744073709551614\r\nmn\r\n",
        b"CLIENT_ERROR bad command line format\r\nMN\r\n",
    );
}

#[test]
fn meta_debug_changes_nothing() {
    let server = server();
    let mut c = server.client();
    c.roundtrip(b"ms k 1\r\nx\r\nmd k I\r\n", b"HD\r\nHD\r\n");
    c.send(b"me k\r\n");
    assert!(c.line().starts_with("ME k exp=-1 "));
    // The recache win is still there for a real reader.
    c.roundtrip(b"mg k v\r\n", b"VA 1 X W\r\nx\r\n");
    let get_hits = c.stat("get_hits");
    c.send(b"me k\r\n");
    c.line();
    assert_eq!(c.stat("get_hits"), get_hits, "me is not a get");
}

#[test]
fn a_refused_meta_set_drops_the_old_value() {
    let server = Server::start(&["-t", "2", "-I", "1k"]);
    let mut c = server.client();
    c.roundtrip(b"ms k 3\r\nold\r\nms keep 3\r\nold\r\n", b"HD\r\nHD\r\n");
    c.send(b"ms k 5000 T0\r\n");
    c.send(&vec![b'x'; 5002]);
    c.roundtrip(b"mg k v\r\n", b"SERVER_ERROR object too large for cache\r\nEN\r\n");
    // Append mode keeps it.
    c.send(b"ms keep 5000 MA\r\n");
    c.send(&vec![b'x'; 5002]);
    c.roundtrip(
        b"mg keep v\r\n",
        b"SERVER_ERROR object too large for cache\r\nVA 3\r\nold\r\n",
    );
}
