//! The text protocol end to end, through the real binary, with one core and
//! with two (so keys cross cores).

mod common;

use std::time::Duration;

use common::{Server, value_block, version_line};

const CORE_COUNTS: [&str; 2] = ["1", "2"];

/// One server per core count, started as the test reaches it.
fn servers<'a>(extra: &'a [&'a str]) -> impl Iterator<Item = Server> + 'a {
    CORE_COUNTS.iter().map(move |threads| {
        let mut args = vec!["-t", threads];
        args.extend_from_slice(extra);
        Server::start(&args)
    })
}

#[test]
fn storage_and_retrieval_replies_are_memcacheds() {
    for server in servers(&[]) {
        let mut c = server.client();
        c.roundtrip(b"set foo 5 0 3\r\nbar\r\n", b"STORED\r\n");
        c.roundtrip(b"get foo\r\n", &[value_block("foo", 5, b"bar"), b"END\r\n".to_vec()].concat());
        c.roundtrip(b"add foo 0 0 1\r\nx\r\n", b"NOT_STORED\r\n");
        c.roundtrip(b"replace nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n");
        c.roundtrip(b"append foo 0 0 2\r\n!!\r\n", b"STORED\r\n");
        c.roundtrip(b"prepend foo 0 0 2\r\n<<\r\n", b"STORED\r\n");
        c.roundtrip(
            b"get foo\r\n",
            &[value_block("foo", 5, b"<<bar!!"), b"END\r\n".to_vec()].concat(),
        );
        c.send(b"gets foo\r\n");
        let header = c.line();
        let cas: u64 = header.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(header, format!("VALUE foo 5 7 {cas}"));
        c.expect(b"<<bar!!\r\nEND\r\n");
        c.roundtrip(format!("cas foo 0 0 1 {}\r\nx\r\n", cas + 1).as_bytes(), b"EXISTS\r\n");
        c.roundtrip(format!("cas foo 0 0 1 {cas}\r\ny\r\n").as_bytes(), b"STORED\r\n");
        c.roundtrip(b"cas nope 0 0 1 1\r\ny\r\n", b"NOT_FOUND\r\n");
        c.roundtrip(b"touch foo 100\r\n", b"TOUCHED\r\n");
        c.roundtrip(b"touch nope 100\r\n", b"NOT_FOUND\r\n");
        c.roundtrip(
            b"gat 100 foo nope\r\n",
            &[value_block("foo", 0, b"y"), b"END\r\n".to_vec()].concat(),
        );
        c.send(b"gats 100 foo\r\n");
        assert!(c.line().starts_with("VALUE foo 0 1 "));
        c.expect(b"y\r\nEND\r\n");
        c.roundtrip(b"delete foo\r\n", b"DELETED\r\n");
        c.roundtrip(b"delete foo 0\r\n", b"NOT_FOUND\r\n");
        // memcached 1.6.45 ignores what follows the key.
        c.roundtrip(b"delete foo 5\r\n", b"NOT_FOUND\r\n");
        c.roundtrip(b"get foo\r\n", b"END\r\n");
    }
}

#[test]
fn incr_decr_follow_memcached() {
    for server in servers(&[]) {
        let mut c = server.client();
        c.roundtrip(b"incr n 1\r\n", b"NOT_FOUND\r\n");
        c.roundtrip(b"set n 0 0 2\r\n99\r\n", b"STORED\r\n");
        c.roundtrip(b"incr n 1\r\n", b"100\r\n");
        c.roundtrip(b"get n\r\n", &[value_block("n", 0, b"100"), b"END\r\n".to_vec()].concat());
        c.roundtrip(b"decr n 95\r\n", b"5\r\n");
        // As memcached: a shorter result overwrites the value in place, padded.
        c.roundtrip(b"get n\r\n", &[value_block("n", 0, b"5  "), b"END\r\n".to_vec()].concat());
        c.roundtrip(b"decr n 10\r\n", b"0\r\n");
        c.roundtrip(b"set n 0 0 20\r\n18446744073709551615\r\n", b"STORED\r\n");
        c.roundtrip(b"incr n 1\r\n", b"0\r\n");
        c.roundtrip(b"set s 0 0 3\r\nabc\r\n", b"STORED\r\n");
        c.roundtrip(
            b"incr s 1\r\n",
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        );
        c.roundtrip(b"incr n x\r\n", b"CLIENT_ERROR invalid numeric delta argument\r\n");
        c.roundtrip(
            b"incr n 1 noreply\r\nget n\r\n",
            &[
                value_block("n", 0, format!("1{}", " ".repeat(19)).as_bytes()),
                b"END\r\n".to_vec(),
            ]
            .concat(),
        );
    }
}

#[test]
fn pipelined_commands_across_shards_keep_their_order() {
    for server in servers(&[]) {
        let mut c = server.client();
        let mut request = Vec::new();
        let mut expected = Vec::new();
        for i in 0..300 {
            let key = format!("key:{i}");
            let value = format!("value-{i}");
            request.extend_from_slice(format!("set {key} {i} 0 {}\r\n{value}\r\n", value.len()).as_bytes());
            expected.extend_from_slice(b"STORED\r\n");
            request.extend_from_slice(format!("get {key} missing:{i}\r\n").as_bytes());
            expected.extend_from_slice(&value_block(&key, i, value.as_bytes()));
            expected.extend_from_slice(b"END\r\n");
            if i % 3 == 0 {
                request.extend_from_slice(format!("delete {key}\r\nget {key}\r\n").as_bytes());
                expected.extend_from_slice(b"DELETED\r\nEND\r\n");
            }
            if i % 7 == 0 {
                request.extend_from_slice(format!("incr counter:{i} 1\r\nbogus {i}\r\n").as_bytes());
                expected.extend_from_slice(b"NOT_FOUND\r\nERROR\r\n");
            }
        }
        c.roundtrip(&request, &expected);
    }
}

#[test]
fn multi_get_spans_shards_in_key_order() {
    for server in servers(&[]) {
        let mut c = server.client();
        let mut keys = Vec::new();
        let mut expected = Vec::new();
        for i in 0..200 {
            let key = format!("multi{i}");
            if i % 4 != 3 {
                c.roundtrip(format!("set {key} 0 0 {}\r\n{key}\r\n", key.len()).as_bytes(), b"STORED\r\n");
                expected.extend_from_slice(&value_block(&key, 0, key.as_bytes()));
            }
            keys.push(key);
        }
        expected.extend_from_slice(b"END\r\n");
        c.roundtrip(format!("get {}\r\n", keys.join(" ")).as_bytes(), &expected);
        // Repeated keys are answered each time, as memcached does.
        c.roundtrip(
            b"get multi0 multi0\r\n",
            &[
                value_block("multi0", 0, b"multi0"),
                value_block("multi0", 0, b"multi0"),
                b"END\r\n".to_vec(),
            ]
            .concat(),
        );
    }
}

#[test]
fn flush_all_reaches_every_shard() {
    for server in servers(&[]) {
        let mut c = server.client();
        for i in 0..100 {
            c.roundtrip(format!("set f{i} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
        }
        // In one pipeline: the flush separates the set before it from the get after.
        c.roundtrip(
            b"set late 0 0 1\r\ny\r\nflush_all\r\nget late\r\n",
            b"STORED\r\nOK\r\nEND\r\n",
        );
        let keys: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
        c.roundtrip(format!("get {}\r\n", keys.join(" ")).as_bytes(), b"END\r\n");
        c.roundtrip(b"flush_all noreply\r\nversion\r\n", &version_line());
        assert_eq!(c.stat("cmd_flush"), 2);
    }
}

#[test]
fn items_expire() {
    for server in servers(&[]) {
        let mut c = server.client();
        c.roundtrip(
            b"set short 0 1 1\r\na\r\nset long 0 100 1\r\nb\r\nset gone 0 -1 1\r\nc\r\n",
            b"STORED\r\nSTORED\r\nSTORED\r\n",
        );
        c.roundtrip(b"get gone\r\n", b"END\r\n");
        c.roundtrip(
            b"get short\r\n",
            &[value_block("short", 0, b"a"), b"END\r\n".to_vec()].concat(),
        );
        std::thread::sleep(Duration::from_millis(2100));
        c.roundtrip(
            b"get short long\r\n",
            &[value_block("long", 0, b"b"), b"END\r\n".to_vec()].concat(),
        );
        // "short" was found dead by the get or, earlier, by the active sweep.
        assert_eq!(c.stat("get_expired") + c.stat("reclaimed"), 2);
    }
}

#[test]
fn eviction_keeps_memory_within_a_small_limit() {
    for server in servers(&["-m", "2"]) {
        let mut c = server.client();
        let value = vec![b'v'; 1000];
        // 10 MB through a 2 MB cache, pipelined in chunks.
        for chunk in 0..100 {
            let mut request = Vec::new();
            for i in 0..100 {
                request.extend_from_slice(format!("set evict{} 0 0 {}\r\n", chunk * 100 + i, value.len()).as_bytes());
                request.extend_from_slice(&value);
                request.extend_from_slice(b"\r\n");
            }
            c.roundtrip(&request, &b"STORED\r\n".repeat(100));
        }
        let stats = c.stats("");
        let stat = |name: &str| stats.iter().find(|(n, _)| n == name).unwrap().1.parse::<u64>().unwrap();
        assert!(stat("evictions") > 5000, "evictions {}", stat("evictions"));
        assert!(stat("memory_used") <= 2 << 20, "memory_used {}", stat("memory_used"));
        assert!(stat("bytes") <= 2 << 20);
        assert_eq!(stat("curr_items") + stat("evictions"), 10_000);
        // The newest keys survive.
        c.roundtrip(
            b"get evict9999\r\n",
            &[value_block("evict9999", 0, &value), b"END\r\n".to_vec()].concat(),
        );
    }
}

#[test]
fn stats_groups() {
    for server in servers(&[]) {
        let mut c = server.client();
        c.roundtrip(
            b"set a 0 0 1\r\n1\r\nget a b\r\n",
            &[b"STORED\r\n".to_vec(), value_block("a", 0, b"1"), b"END\r\n".to_vec()].concat(),
        );
        let stats = c.stats("");
        for name in [
            "pid",
            "uptime",
            "time",
            "version",
            "pointer_size",
            "rusage_user",
            "rusage_system",
            "curr_connections",
            "total_connections",
            "rejected_connections",
            "cmd_get",
            "cmd_set",
            "cmd_flush",
            "cmd_touch",
            "get_hits",
            "get_misses",
            "get_expired",
            "get_flushed",
            "delete_misses",
            "delete_hits",
            "incr_misses",
            "incr_hits",
            "decr_misses",
            "decr_hits",
            "cas_misses",
            "cas_hits",
            "cas_badval",
            "touch_hits",
            "touch_misses",
            "bytes_read",
            "bytes_written",
            "limit_maxbytes",
            "threads",
            "bytes",
            "curr_items",
            "total_items",
            "evictions",
            "reclaimed",
            "expired_unfetched",
            "evicted_unfetched",
        ] {
            assert!(stats.iter().any(|(n, _)| n == name), "stats lacks {name}");
        }
        let stat = |name: &str| stats.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(stat("cmd_get"), "2");
        assert_eq!(stat("get_hits"), "1");
        assert_eq!(stat("get_misses"), "1");
        assert_eq!(stat("curr_items"), "1");
        let settings = c.stats("settings");
        assert!(settings.iter().any(|(n, v)| n == "item_size_max" && v == "1048576"));
        let items = c.stats("items");
        assert!(
            items
                .iter()
                .any(|(n, v)| n.starts_with("items:") && n.ends_with(":number") && v == "1")
        );
        let slabs = c.stats("slabs");
        assert!(slabs.iter().any(|(n, _)| n == "active_slabs"));
        c.roundtrip(b"stats reset\r\n", b"RESET\r\n");
        assert_eq!(c.stat("cmd_get"), 0);
        c.roundtrip(b"stats nonsense\r\n", b"ERROR\r\n");
        c.roundtrip(
            b"verbosity 1\r\nverbosity 0 noreply\r\nverbosity\r\n",
            b"OK\r\nCLIENT_ERROR bad command line format\r\n",
        );
    }
}

#[test]
fn quit_closes_and_version_answers() {
    for server in servers(&[]) {
        let mut c = server.client();
        c.roundtrip(b"version\r\n", &version_line());
        c.send(b"quit\r\n");
        assert!(c.is_closed());
    }
}

#[test]
fn metadump_lists_every_key_of_every_shard() {
    for server in servers(&[]) {
        let mut c = server.client();
        for i in 0..50 {
            c.roundtrip(format!("set dump/{i} 0 100 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
        }
        c.roundtrip(b"set forever 0 0 1\r\nx\r\ndelete dump/0\r\n", b"STORED\r\nDELETED\r\n");
        let mut keys = Vec::new();
        for line in c.metadump() {
            let fields: Vec<&str> = line.split(' ').collect();
            assert!(
                fields[0].starts_with("key=") && fields[1].starts_with("exp=") && fields[2].starts_with("la="),
                "{line}"
            );
            assert!(
                fields[3].starts_with("cas=")
                    && fields[4] == "fetch=no"
                    && fields[5] == "cls=1"
                    && fields[6].starts_with("size=")
            );
            if fields[0] == "key=forever" {
                assert_eq!(fields[1], "exp=-1");
            }
            keys.push(fields[0][4..].to_string());
        }
        keys.sort();
        let mut expected: Vec<String> = (1..50).map(|i| format!("dump%2F{i}")).collect();
        expected.push("forever".into());
        expected.sort();
        assert_eq!(keys, expected);
        c.roundtrip(b"lru_crawler crawl all\r\n", b"ERROR\r\n");
    }
}
