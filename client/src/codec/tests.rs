use super::*;

type Owned = (Vec<u8>, u32, u64, Vec<u8>);

/// Decodes one reply from `whole`, arriving in two reads split at `cut`:
/// the values found, the reply, the bytes taken.
fn decode_split(protocol: Protocol, mut expect: Expect, whole: &[u8], cut: usize) -> (Vec<Owned>, Reply, usize) {
    let mut buffer = whole[..cut].to_vec();
    let mut at = 0;
    let mut items = Vec::new();
    loop {
        match protocol.decode(&mut expect, &buffer[at..]).unwrap() {
            None => {
                assert!(
                    buffer.len() < whole.len(),
                    "incomplete with the whole reply: {:?}",
                    String::from_utf8_lossy(whole)
                );
                buffer.extend_from_slice(&whole[buffer.len()..]);
            }
            Some((used, Event::Item(item))) => {
                items.push((item.key.to_vec(), item.flags, item.cas, item.value.to_vec()));
                at += used;
            }
            Some((used, Event::Done(reply))) => return (items, reply, at + used),
        }
    }
}

/// The same reply at every split; it takes all of `whole` but `left`.
fn decode_everywhere(protocol: Protocol, expect: Expect, whole: &[u8], left: usize) -> (Vec<Owned>, Reply) {
    let (items, reply, used) = decode_split(protocol, expect, whole, whole.len());
    assert_eq!(used, whole.len() - left, "bytes taken");
    for cut in 0..whole.len() {
        assert_eq!(
            decode_split(protocol, expect, whole, cut),
            (items.clone(), reply.clone(), used),
            "split at {cut}"
        );
    }
    (items, reply)
}

fn item(key: &str, flags: u32, cas: u64, value: &str) -> Owned {
    (key.into(), flags, cas, value.into())
}

fn encoded(make: impl FnOnce(&mut Vec<u8>) -> Expect) -> (Vec<u8>, Expect) {
    let mut out = Vec::new();
    let expect = make(&mut out);
    (out, expect)
}

#[test]
fn text_requests_are_memcached_commands() {
    let text = Protocol::Text;
    let keys: [&[u8]; 2] = [b"a", b"bc"];
    assert_eq!(encoded(|o| text.get(keys, Fetch::default(), o)).0, b"get a bc\r\n");
    assert_eq!(
        encoded(|o| text.get(keys, Fetch { cas: true, touch: None }, o)).0,
        b"gets a bc\r\n"
    );
    assert_eq!(
        encoded(|o| text.get(
            keys,
            Fetch {
                cas: true,
                touch: Some(9)
            },
            o
        ))
        .0,
        b"gats 9 a bc\r\n"
    );
    assert_eq!(
        encoded(|o| text.get(
            [&b"a"[..]],
            Fetch {
                cas: false,
                touch: Some(0)
            },
            o
        ))
        .0,
        b"gat 0 a\r\n"
    );
    for (mode, line) in [
        (StoreMode::Set, "set k 5 60 2\r\nvv\r\n"),
        (StoreMode::Add, "add k 5 60 2\r\nvv\r\n"),
        (StoreMode::Replace, "replace k 5 60 2\r\nvv\r\n"),
        (StoreMode::Append, "append k 5 60 2\r\nvv\r\n"),
        (StoreMode::Prepend, "prepend k 5 60 2\r\nvv\r\n"),
        (StoreMode::Cas(77), "cas k 5 60 2 77\r\nvv\r\n"),
    ] {
        assert_eq!(encoded(|o| text.store(mode, b"k", b"vv", 5, 60, o)).0, line.as_bytes());
    }
    assert_eq!(encoded(|o| text.delete(b"k", o)).0, b"delete k\r\n");
    assert_eq!(encoded(|o| text.arith(b"k", 3, true, o)).0, b"incr k 3\r\n");
    assert_eq!(encoded(|o| text.arith(b"k", 3, false, o)).0, b"decr k 3\r\n");
    assert_eq!(encoded(|o| text.touch(b"k", 10, o)).0, b"touch k 10\r\n");
    assert_eq!(encoded(|o| text.wait(2, 500, o).unwrap()).0, b"wait 2 500\r\n");
    assert_eq!(encoded(|o| text.cluster_get(b"k", o).unwrap()).0, b"cluster get k\r\n");
    assert_eq!(encoded(|o| text.cluster_local(b"k", o).unwrap()).0, b"cluster local k\r\n");
    assert_eq!(encoded(|o| Protocol::Meta.cluster_nodes(o).unwrap()).0, b"cluster nodes\r\n");
    assert!(Protocol::Binary.wait(1, 1, &mut Vec::new()).is_err());
}

#[test]
fn text_replies_at_every_split() {
    let text = Protocol::Text;
    let (_, get) = encoded(|o| text.get([&b"a"[..], b"b", b"c"], Fetch { cas: true, touch: None }, o));
    // The bytes after the reply belong to the next one.
    let (items, reply) = decode_everywhere(
        text,
        get,
        b"VALUE a 1 2 10\r\nxy\r\nVALUE c 0 0 11\r\n\r\nEND\r\nSTORED\r\n",
        8,
    );
    assert_eq!(items, [item("a", 1, 10, "xy"), item("c", 0, 11, "")]);
    assert_eq!(reply, Reply::Values { found: 2 });
    let (_, miss) = encoded(|o| text.get([&b"a"[..]], Fetch::default(), o));
    assert_eq!(
        decode_everywhere(text, miss, b"END\r\n", 0),
        (vec![], Reply::Values { found: 0 })
    );
    let (_, value_with_crlf) = encoded(|o| text.get([&b"a"[..]], Fetch::default(), o));
    assert_eq!(
        decode_everywhere(text, value_with_crlf, b"VALUE a 0 4\r\n\r\nEN\r\nEND\r\n", 0).0,
        [item("a", 0, 0, "\r\nEN")]
    );
    let store = encoded(|o| text.store(StoreMode::Set, b"k", b"v", 0, 0, o)).1;
    for (line, expected) in [
        ("STORED\r\n", Reply::Stored),
        ("NOT_STORED\r\n", Reply::NotStored),
        ("EXISTS\r\n", Reply::Exists),
        ("NOT_FOUND\r\n", Reply::NotFound),
        (
            "SERVER_ERROR out of memory storing object\r\n",
            Reply::Error(ServerError::Server("out of memory storing object".into())),
        ),
        (
            "CLIENT_ERROR bad data chunk\r\n",
            Reply::Error(ServerError::Client("bad data chunk".into())),
        ),
        ("ERROR\r\n", Reply::Error(ServerError::UnknownCommand)),
    ] {
        assert_eq!(decode_everywhere(text, store, line.as_bytes(), 0).1, expected, "{line}");
    }
    let arith = encoded(|o| text.arith(b"k", 1, true, o)).1;
    assert_eq!(
        decode_everywhere(text, arith, b"18446744073709551615\r\n", 0).1,
        Reply::Number(u64::MAX)
    );
    assert_eq!(decode_everywhere(text, arith, b"NOT_FOUND\r\n", 0).1, Reply::NotFound);
    let delete = encoded(|o| text.delete(b"k", o)).1;
    assert_eq!(decode_everywhere(text, delete, b"DELETED\r\n", 0).1, Reply::Deleted);
    let touch = encoded(|o| text.touch(b"k", 1, o)).1;
    assert_eq!(decode_everywhere(text, touch, b"TOUCHED\r\n", 0).1, Reply::Touched);
    let wait = encoded(|o| text.wait(3, 10, o).unwrap()).1;
    assert_eq!(decode_everywhere(text, wait, b"COPIES 2\r\n", 0).1, Reply::Copies(2));
    assert_eq!(
        decode_everywhere(text, wait, b"ERROR\r\n", 0).1,
        Reply::Error(ServerError::UnknownCommand)
    );
    // A quorum read answers in text framing on a meta connection too.
    let quorum = encoded(|o| Protocol::Meta.cluster_get(b"k", o).unwrap()).1;
    assert_eq!(
        decode_everywhere(Protocol::Meta, quorum, b"VALUE k 3 1 99\r\nv\r\nEND\r\n", 0),
        (vec![item("k", 3, 99, "v")], Reply::Values { found: 1 })
    );
    assert_eq!(
        decode_everywhere(Protocol::Meta, quorum, b"ERROR\r\n", 0).1,
        Reply::Error(ServerError::UnknownCommand)
    );
}

#[test]
fn cluster_nodes_reply_at_every_split() {
    let nodes = encoded(|o| Protocol::Text.cluster_nodes(o).unwrap()).1;
    let reply = b"EPOCH 7 ab12\r\nNODE 127.0.0.2:11211 1 alive share=0.5 lag_us=- self\r\nNODE 127.0.0.3:11211 2 down share=0.5 lag_us=40\r\nEND\r\n";
    let (_, reply) = decode_everywhere(Protocol::Meta, nodes, reply, 0);
    let Reply::Nodes(list) = reply else { panic!("{reply:?}") };
    assert_eq!((list.epoch, list.digest.as_str()), (7, "ab12"));
    assert_eq!(
        list.nodes,
        [
            ClusterNode {
                address: "127.0.0.2:11211".into(),
                weight: 1,
                state: "alive".into(),
                is_self: true
            },
            ClusterNode {
                address: "127.0.0.3:11211".into(),
                weight: 2,
                state: "down".into(),
                is_self: false
            },
        ]
    );
    assert_eq!(
        decode_everywhere(Protocol::Text, nodes, b"ERROR\r\n", 0).1,
        Reply::Error(ServerError::UnknownCommand)
    );
}

#[test]
fn stats_reply_at_every_split() {
    let stats = encoded(|o| Protocol::Text.stats(Some("cluster"), o).unwrap());
    assert_eq!(stats.0, b"stats cluster\r\n");
    let (_, reply) = decode_everywhere(Protocol::Text, stats.1, b"STAT copies 3\r\nSTAT version 1.6 x\r\nEND\r\n", 0);
    assert_eq!(
        reply,
        Reply::Stats(vec![("copies".into(), "3".into()), ("version".into(), "1.6 x".into())])
    );
}

#[test]
fn meta_requests_are_meta_commands() {
    let meta = Protocol::Meta;
    assert_eq!(encoded(|o| meta.get([&b"a"[..]], Fetch::default(), o)).0, b"mg a v f k\r\n");
    assert_eq!(
        encoded(|o| meta.get(
            [&b"a"[..], b"b"],
            Fetch {
                cas: true,
                touch: Some(5)
            },
            o
        ))
        .0,
        b"mg a v f k c T5 q\r\nmg b v f k c T5 q\r\nmn\r\n"
    );
    for (mode, line) in [
        (StoreMode::Set, "ms k 2 F5 T60\r\nvv\r\n"),
        (StoreMode::Add, "ms k 2 F5 T60 ME\r\nvv\r\n"),
        (StoreMode::Replace, "ms k 2 F5 T60 MR\r\nvv\r\n"),
        (StoreMode::Append, "ms k 2 F5 T60 MA\r\nvv\r\n"),
        (StoreMode::Prepend, "ms k 2 F5 T60 MP\r\nvv\r\n"),
        (StoreMode::Cas(77), "ms k 2 F5 T60 C77\r\nvv\r\n"),
    ] {
        assert_eq!(encoded(|o| meta.store(mode, b"k", b"vv", 5, 60, o)).0, line.as_bytes());
    }
    assert_eq!(encoded(|o| meta.delete(b"k", o)).0, b"md k\r\n");
    assert_eq!(encoded(|o| meta.arith(b"k", 3, false, o)).0, b"ma k D3 MD v\r\n");
    assert_eq!(encoded(|o| meta.touch(b"k", 10, o)).0, b"mg k T10\r\n");
}

#[test]
fn meta_replies_at_every_split() {
    let meta = Protocol::Meta;
    let many = encoded(|o| meta.get([&b"a"[..], b"b", b"c"], Fetch { cas: true, touch: None }, o)).1;
    let (items, reply) = decode_everywhere(meta, many, b"VA 2 f3 ka c9\r\nxy\r\nVA 0 f0 kc c8\r\n\r\nMN\r\nHD\r\n", 4);
    assert_eq!(items, [item("a", 3, 9, "xy"), item("c", 0, 8, "")]);
    assert_eq!(reply, Reply::Values { found: 2 });
    // An error in a quiet batch still ends at its MN.
    let (items, reply) = decode_everywhere(
        meta,
        many,
        b"CLIENT_ERROR bad command line format\r\nVA 1 f0 kc\r\nz\r\nMN\r\n",
        0,
    );
    assert_eq!(
        (items, reply),
        (vec![], Reply::Error(ServerError::Client("bad command line format".into())))
    );
    let one = encoded(|o| meta.get([&b"a"[..]], Fetch::default(), o)).1;
    assert_eq!(
        decode_everywhere(meta, one, b"VA 1 f0 ka\r\nx\r\nHD\r\n", 4),
        (vec![item("a", 0, 0, "x")], Reply::Values { found: 1 })
    );
    assert_eq!(
        decode_everywhere(meta, one, b"EN\r\n", 0),
        (vec![], Reply::Values { found: 0 })
    );
    let store = encoded(|o| meta.store(StoreMode::Cas(1), b"k", b"v", 0, 0, o)).1;
    for (line, expected) in [
        ("HD\r\n", Reply::Stored),
        ("NS\r\n", Reply::NotStored),
        ("EX\r\n", Reply::Exists),
        ("NF\r\n", Reply::NotFound),
        (
            "SERVER_ERROR out of memory\r\n",
            Reply::Error(ServerError::Server("out of memory".into())),
        ),
    ] {
        assert_eq!(decode_everywhere(meta, store, line.as_bytes(), 0).1, expected, "{line}");
    }
    let arith = encoded(|o| meta.arith(b"k", 1, true, o)).1;
    assert_eq!(decode_everywhere(meta, arith, b"VA 2\r\n42\r\n", 0).1, Reply::Number(42));
    assert_eq!(decode_everywhere(meta, arith, b"NF\r\n", 0).1, Reply::NotFound);
    let delete = encoded(|o| meta.delete(b"k", o)).1;
    assert_eq!(decode_everywhere(meta, delete, b"HD\r\n", 0).1, Reply::Deleted);
    let touch = encoded(|o| meta.touch(b"k", 1, o)).1;
    assert_eq!(decode_everywhere(meta, touch, b"HD\r\n", 0).1, Reply::Touched);
    assert_eq!(decode_everywhere(meta, touch, b"EN\r\n", 0).1, Reply::NotFound);
}

/// A binary response packet.
fn response(opcode: u8, status: u16, cas: u64, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x81, opcode];
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.push(0);
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&cas.to_be_bytes());
    [out, extras.to_vec(), key.to_vec(), value.to_vec()].concat()
}

#[test]
fn binary_requests_carry_their_fields() {
    let binary = Protocol::Binary;
    let (out, _) = encoded(|o| {
        binary.get(
            [&b"a"[..], b"b"],
            Fetch {
                cas: false,
                touch: Some(7),
            },
            o,
        )
    });
    // GATKQ a, GATKQ b (4 bytes of exptime each), NOOP.
    assert_eq!(out.len(), 3 * 24 + 2 * (4 + 1));
    assert_eq!((out[1], out[24 + 5 + 1], out[2 * (24 + 5) + 1]), (0x24, 0x24, 0x0a));
    assert_eq!(&out[24..28], &7u32.to_be_bytes());
    let (out, _) = encoded(|o| binary.store(StoreMode::Cas(0x0102), b"k", b"vv", 5, 60, o));
    assert_eq!(out[1], 0x01);
    assert_eq!(&out[8..12], &11u32.to_be_bytes(), "body: 8 extras, key, value");
    assert_eq!(&out[16..24], &0x0102u64.to_be_bytes());
    assert_eq!(&out[24..32], &[0, 0, 0, 5, 0, 0, 0, 60]);
    assert_eq!(&out[32..], b"kvv");
    let (out, _) = encoded(|o| binary.store(StoreMode::Append, b"k", b"vv", 5, 60, o));
    assert_eq!((out[1], out[4], &out[24..]), (0x0e, 0, &b"kvv"[..]));
    let (out, _) = encoded(|o| binary.arith(b"k", 3, false, o));
    assert_eq!(
        (out[1], out[4], &out[24..32], &out[40..44]),
        (0x06, 20, &3u64.to_be_bytes()[..], &[0xff; 4][..])
    );
}

#[test]
fn binary_replies_at_every_split() {
    let binary = Protocol::Binary;
    let many = encoded(|o| binary.get([&b"a"[..], b"b"], Fetch::default(), o)).1;
    let whole = [
        response(0x0d, 0, 9, &3u32.to_be_bytes(), b"a", b"xy"),
        response(0x0a, 0, 0, &[], b"", b""),
        response(0x01, 0, 0, &[], b"", b""),
    ]
    .concat();
    let (items, reply) = decode_everywhere(binary, many, &whole, 24);
    assert_eq!((items, reply), (vec![item("a", 3, 9, "xy")], Reply::Values { found: 1 }));
    let error = [
        response(0x0d, 0x82, 0, &[], b"", b"out of memory"),
        response(0x0a, 0, 0, &[], b"", b""),
    ]
    .concat();
    assert_eq!(
        decode_everywhere(binary, many, &error, 0).1,
        Reply::Error(ServerError::Binary {
            status: 0x82,
            message: "out of memory".into()
        })
    );
    let one = encoded(|o| binary.get([&b"a"[..]], Fetch::default(), o)).1;
    assert_eq!(
        decode_everywhere(binary, one, &response(0x0c, 1, 0, &[], b"", b"Not found"), 0).1,
        Reply::Values { found: 0 }
    );
    for (mode, status, expected) in [
        (StoreMode::Set, 0, Reply::Stored),
        (StoreMode::Add, 2, Reply::NotStored),
        (StoreMode::Replace, 1, Reply::NotStored),
        (StoreMode::Append, 5, Reply::NotStored),
        (StoreMode::Cas(1), 2, Reply::Exists),
        (StoreMode::Cas(1), 1, Reply::NotFound),
    ] {
        let store = encoded(|o| binary.store(mode, b"k", b"v", 0, 0, o)).1;
        assert_eq!(
            decode_everywhere(binary, store, &response(0x01, status, 0, &[], b"", b""), 0).1,
            expected
        );
    }
    let arith = encoded(|o| binary.arith(b"k", 1, true, o)).1;
    assert_eq!(
        decode_everywhere(binary, arith, &response(0x05, 0, 0, &[], b"", &42u64.to_be_bytes()), 0).1,
        Reply::Number(42)
    );
    assert_eq!(
        decode_everywhere(binary, arith, &response(0x05, 1, 0, &[], b"", b""), 0).1,
        Reply::NotFound
    );
    assert!(
        binary.decode(&mut arith.clone(), &[0x80; 24]).is_err(),
        "a request's magic is out of step"
    );
}

#[test]
fn a_noop_is_answered_in_every_dialect() {
    for (protocol, reply) in [
        (Protocol::Text, b"MN\r\n".to_vec()),
        (Protocol::Meta, b"MN\r\n".to_vec()),
        (Protocol::Binary, response(0x0a, 0, 0, &[], b"", b"")),
    ] {
        let (out, noop) = encoded(|o| protocol.noop(o));
        assert_eq!(out.len(), if protocol == Protocol::Binary { 24 } else { 4 });
        assert_eq!(decode_everywhere(protocol, noop, &reply, 0).1, Reply::Values { found: 0 });
    }
}

#[test]
fn keys_memcached_would_refuse_are_invalid() {
    assert!(valid_key(b"user:42"));
    assert!(valid_key(&[b'k'; 250]));
    for key in [&b""[..], &[b'k'; 251], b"a b", b"a\r\nb", b"tab\t"] {
        assert!(!valid_key(key), "{key:?}");
    }
}
