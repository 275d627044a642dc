//! The load generator's own cost per request on the wire, without a
//! server: encode a request and decode a canned reply, for each protocol
//! and request shape, in a loop. Prints nanoseconds per request.
//!
//!   cargo run --release -p corecache-loadgen --example codec_cost

use std::time::Instant;

use corecache_loadgen::keys::KeyFormat;
use corecache_loadgen::protocol::{Codec, Protocol, Reply};
use corecache_loadgen::workload::{Op, OpKind, ValueSize};

const ROUNDS: u32 = 2_000_000;

fn codec(protocol: Protocol) -> Codec {
    Codec {
        protocol,
        keys: KeyFormat {
            prefix: "key:".into(),
            length: 20,
        },
        counter_keys: KeyFormat {
            prefix: "key:n:".into(),
            length: 20,
        },
        values: ValueSize { min: 32, max: 32 },
        ttl: 0,
        verify: true,
    }
}

/// The reply a server gives to `op` (every key a hit), by asking the codec
/// what it would send and answering it as memcached does.
fn reply(protocol: Protocol, op: &Op) -> Vec<u8> {
    let value: Vec<u8> = {
        let mut v = Vec::new();
        corecache_loadgen::workload::value_of(op.keys[0], 32, &mut v);
        v
    };
    let key = |i: u64| {
        KeyFormat {
            prefix: "key:".into(),
            length: 20,
        }
        .key(i)
    };
    let mut out = Vec::new();
    match (protocol, op.kind) {
        (Protocol::Text, OpKind::Get) => {
            for &i in &op.keys {
                let mut v = Vec::new();
                corecache_loadgen::workload::value_of(i, 32, &mut v);
                out.extend_from_slice(format!("VALUE {} 0 32\r\n", String::from_utf8(key(i)).unwrap()).as_bytes());
                out.extend_from_slice(&v);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"END\r\n");
        }
        (Protocol::Meta, OpKind::Get) => {
            for &i in &op.keys {
                let mut v = Vec::new();
                corecache_loadgen::workload::value_of(i, 32, &mut v);
                out.extend_from_slice(format!("VA 32 f0 k{}\r\n", String::from_utf8(key(i)).unwrap()).as_bytes());
                out.extend_from_slice(&v);
                out.extend_from_slice(b"\r\n");
            }
            if op.keys.len() > 1 {
                out.extend_from_slice(b"MN\r\n");
            }
        }
        (Protocol::Binary, OpKind::Get) => {
            let quiet = op.keys.len() > 1;
            for &i in &op.keys {
                let mut v = Vec::new();
                corecache_loadgen::workload::value_of(i, 32, &mut v);
                let k = key(i);
                out.extend_from_slice(&[0x81, if quiet { 0x0d } else { 0x0c }]);
                out.extend_from_slice(&(k.len() as u16).to_be_bytes());
                out.extend_from_slice(&[4, 0, 0, 0]);
                out.extend_from_slice(&((4 + k.len() + 32) as u32).to_be_bytes());
                out.extend_from_slice(&[0; 12]);
                out.extend_from_slice(&[0; 4]);
                out.extend_from_slice(&k);
                out.extend_from_slice(&v);
            }
            if quiet {
                out.extend_from_slice(&[0x81, 0x0a, 0, 0, 0, 0, 0, 0]);
                out.extend_from_slice(&[0; 16]);
            }
        }
        (Protocol::Text, _) => out.extend_from_slice(b"STORED\r\n"),
        (Protocol::Meta, _) => out.extend_from_slice(b"HD\r\n"),
        (Protocol::Binary, _) => {
            out.extend_from_slice(&[0x81, 0x01, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&[0; 16]);
        }
    }
    let _ = value;
    out
}

fn main() {
    for protocol in [Protocol::Text, Protocol::Meta, Protocol::Binary] {
        let codec = codec(protocol);
        for (name, op) in [
            (
                "get",
                Op {
                    kind: OpKind::Get,
                    keys: vec![12345],
                },
            ),
            (
                "get x10",
                Op {
                    kind: OpKind::Get,
                    keys: (1000..1010).collect(),
                },
            ),
            (
                "set",
                Op {
                    kind: OpKind::Set,
                    keys: vec![12345],
                },
            ),
        ] {
            let response = reply(protocol, &op);
            let mut out = Vec::with_capacity(1 << 16);
            let mut hits = 0u64;
            let started = Instant::now();
            for _ in 0..ROUNDS {
                out.clear();
                hits += once(&codec, &op, &mut out, &response);
            }
            let ns = started.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
            assert!(
                hits >= u64::from(ROUNDS),
                "{protocol:?} {name}: the reply was not read as a hit"
            );
            println!(
                "{:<7} {:<8} {:>7.1} ns/request",
                format!("{protocol:?}").to_lowercase(),
                name,
                ns
            );
        }
    }
}

/// One request through the codec: encoded, its reply decoded; the hits.
fn once(codec: &Codec, op: &Op, out: &mut Vec<u8>, response: &[u8]) -> u64 {
    let mut expect = codec.encode(op, out);
    let mut reply = Reply::default();
    let (used, done) = codec.decode(&mut expect, &mut reply, std::hint::black_box(response));
    assert!(done && used == response.len() && reply.verify_failures == 0);
    u64::from(reply.hits)
}
