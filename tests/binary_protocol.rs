//! The binary protocol end to end against `-t 2` (keys cross cores), with a
//! request encoder and response decoder of the test's own.

mod common;

use std::io::Read;

use common::{Client, Server};

const GET: u8 = 0x00;
const SET: u8 = 0x01;
const ADD: u8 = 0x02;
const DELETE: u8 = 0x04;
const INCREMENT: u8 = 0x05;
const DECREMENT: u8 = 0x06;
const FLUSH: u8 = 0x08;
const NOOP: u8 = 0x0a;
const VERSION: u8 = 0x0b;
const GETKQ: u8 = 0x0d;
const APPENDQ: u8 = 0x19;
const SETQ: u8 = 0x11;
const TOUCH: u8 = 0x1c;
const GAT: u8 = 0x1d;
const STAT: u8 = 0x10;

const NOT_FOUND: u16 = 0x01;
const EXISTS: u16 = 0x02;
const TOO_LARGE: u16 = 0x03;
const INVALID: u16 = 0x04;
const NON_NUMERIC: u16 = 0x06;
const UNKNOWN: u16 = 0x81;

fn request(opcode: u8, key: &[u8], extras: &[u8], value: &[u8], cas: u64, opaque: u32) -> Vec<u8> {
    let mut frame = vec![0x80, opcode];
    frame.extend_from_slice(&(key.len() as u16).to_be_bytes());
    frame.push(extras.len() as u8);
    frame.extend_from_slice(&[0, 0, 0]);
    frame.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&opaque.to_be_bytes());
    frame.extend_from_slice(&cas.to_be_bytes());
    frame.extend_from_slice(extras);
    frame.extend_from_slice(key);
    frame.extend_from_slice(value);
    frame
}

fn set_extras(flags: u32, exptime: u32) -> Vec<u8> {
    [flags.to_be_bytes(), exptime.to_be_bytes()].concat()
}

fn arith_extras(delta: u64, initial: u64, exptime: u32) -> Vec<u8> {
    [&delta.to_be_bytes()[..], &initial.to_be_bytes(), &exptime.to_be_bytes()].concat()
}

#[derive(Debug)]
struct Response {
    opcode: u8,
    status: u16,
    opaque: u32,
    cas: u64,
    extras: Vec<u8>,
    key: Vec<u8>,
    value: Vec<u8>,
}

fn response(client: &mut Client) -> Response {
    let mut header = [0u8; 24];
    client.stream.read_exact(&mut header).expect("response header");
    assert_eq!(header[0], 0x81, "response magic");
    assert_eq!(header[5], 0, "data type");
    let key_len = u16::from_be_bytes([header[2], header[3]]) as usize;
    let extras_len = header[4] as usize;
    let body_len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
    let mut body = vec![0; body_len];
    client.stream.read_exact(&mut body).expect("response body");
    Response {
        opcode: header[1],
        status: u16::from_be_bytes([header[6], header[7]]),
        opaque: u32::from_be_bytes(header[12..16].try_into().unwrap()),
        cas: u64::from_be_bytes(header[16..24].try_into().unwrap()),
        extras: body[..extras_len].to_vec(),
        key: body[extras_len..extras_len + key_len].to_vec(),
        value: body[extras_len + key_len..].to_vec(),
    }
}

fn server() -> Server {
    Server::start(&["-t", "2", "-I", "1k"])
}

#[test]
fn quiet_getkq_batch_ends_with_noop() {
    let server = server();
    let mut c = server.client();
    let mut batch = Vec::new();
    for i in 0..50u32 {
        if i % 2 == 0 {
            batch.extend(request(
                SETQ,
                format!("key{i}").as_bytes(),
                &set_extras(i, 0),
                format!("value{i}").as_bytes(),
                0,
                i,
            ));
        }
    }
    for i in 0..50u32 {
        batch.extend(request(GETKQ, format!("key{i}").as_bytes(), &[], &[], 0, 1000 + i));
    }
    batch.extend(request(NOOP, b"", &[], &[], 0, 7777));
    c.send(&batch);
    // Quiet sets say nothing; GETKQ answers only hits, in order; NOOP ends it.
    for i in (0..50u32).step_by(2) {
        let r = response(&mut c);
        assert_eq!((r.opcode, r.status, r.opaque), (GETKQ, 0, 1000 + i));
        assert_eq!(r.key, format!("key{i}").as_bytes());
        assert_eq!(r.value, format!("value{i}").as_bytes());
        assert_eq!(r.extras, i.to_be_bytes());
        assert_ne!(r.cas, 0);
    }
    let noop = response(&mut c);
    assert_eq!((noop.opcode, noop.status, noop.opaque), (NOOP, 0, 7777));
}

#[test]
fn cas_conflicts_and_add() {
    let server = server();
    let mut c = server.client();
    c.send(&request(SET, b"k", &set_extras(0, 0), b"one", 0, 1));
    let stored = response(&mut c);
    assert_eq!((stored.opcode, stored.status), (SET, 0));
    c.send(&request(SET, b"k", &set_extras(0, 0), b"two", stored.cas + 1, 2));
    let conflict = response(&mut c);
    assert_eq!((conflict.status, conflict.cas), (EXISTS, 0));
    assert_eq!(conflict.value, b"Data exists for key.");
    c.send(&request(SET, b"k", &set_extras(0, 0), b"two", stored.cas, 3));
    assert_eq!(response(&mut c).status, 0);
    c.send(&request(ADD, b"k", &set_extras(0, 0), b"three", 0, 4));
    assert_eq!(response(&mut c).status, EXISTS);
    c.send(&request(GET, b"k", &[], &[], 0, 5));
    let get = response(&mut c);
    assert_eq!((get.status, get.value.as_slice(), get.opaque), (0, &b"two"[..], 5));
    c.send(&request(DELETE, b"k", &[], &[], 1, 6));
    assert_eq!(response(&mut c).status, EXISTS, "delete honours the CAS");
    c.send(&request(DELETE, b"k", &[], &[], 0, 7));
    let deleted = response(&mut c);
    assert_eq!((deleted.status, deleted.cas), (0, 0));
    c.send(&request(GET, b"k", &[], &[], 0, 8));
    let miss = response(&mut c);
    assert_eq!((miss.status, miss.value.as_slice()), (NOT_FOUND, &b"Not found"[..]));
}

#[test]
fn incr_decr_with_and_without_initial_value() {
    let server = server();
    let mut c = server.client();
    // 0xffffffff: do not create.
    c.send(&request(INCREMENT, b"n", &arith_extras(1, 5, u32::MAX), &[], 0, 1));
    assert_eq!(response(&mut c).status, NOT_FOUND);
    c.send(&request(INCREMENT, b"n", &arith_extras(1, 5, 0), &[], 0, 2));
    let created = response(&mut c);
    assert_eq!((created.status, created.value.as_slice()), (0, &5u64.to_be_bytes()[..]));
    assert_ne!(created.cas, 0);
    c.send(&request(INCREMENT, b"n", &arith_extras(10, 5, 0), &[], 0, 3));
    assert_eq!(response(&mut c).value, 15u64.to_be_bytes());
    c.send(&request(DECREMENT, b"n", &arith_extras(100, 5, 0), &[], 0, 4));
    assert_eq!(response(&mut c).value, 0u64.to_be_bytes(), "decr floors at 0");
    c.send(&request(SET, b"s", &set_extras(0, 0), b"abc", 0, 5));
    response(&mut c);
    c.send(&request(INCREMENT, b"s", &arith_extras(1, 0, 0), &[], 0, 6));
    assert_eq!(response(&mut c).status, NON_NUMERIC);
    c.send(&request(APPENDQ, b"n", &[], b"7", 0, 7));
    c.send(&request(GET, b"n", &[], &[], 0, 8));
    // "15" became "0 " in place (memcached pads a shorter counter).
    assert_eq!(response(&mut c).value, b"0 7");
}

#[test]
fn touch_gat_flush_version_stat() {
    let server = server();
    let mut c = server.client();
    c.send(&request(SET, b"t", &set_extras(9, 0), b"v", 0, 1));
    response(&mut c);
    c.send(&request(TOUCH, b"t", &100u32.to_be_bytes(), &[], 0, 2));
    let touched = response(&mut c);
    assert_eq!(
        (touched.status, touched.extras.as_slice(), touched.value.len()),
        (0, &9u32.to_be_bytes()[..], 0)
    );
    c.send(&request(GAT, b"t", &100u32.to_be_bytes(), &[], 0, 3));
    assert_eq!(response(&mut c).value, b"v");
    // Expirations are unsigned: 0xfffffffe is an absolute time far ahead.
    c.send(&request(SET, b"far", &set_extras(0, 0xffff_fffe), b"v", 0, 9));
    response(&mut c);
    c.send(&request(GET, b"far", &[], &[], 0, 10));
    assert_eq!(response(&mut c).status, 0, "not expired at once");
    c.send(&request(VERSION, b"", &[], &[], 0, 4));
    assert!(response(&mut c).value.starts_with(b"1.6"));
    c.send(&request(STAT, b"", &[], &[], 0, 5));
    let mut names = Vec::new();
    loop {
        let stat = response(&mut c);
        assert_eq!((stat.opcode, stat.status), (STAT, 0));
        if stat.key.is_empty() {
            break;
        }
        names.push(String::from_utf8(stat.key).unwrap());
    }
    assert!(names.iter().any(|n| n == "curr_items") && names.iter().any(|n| n == "cmd_set"));
    c.send(&request(FLUSH, b"", &[], &[], 0, 6));
    assert_eq!(response(&mut c).status, 0);
    c.send(&request(GET, b"t", &[], &[], 0, 7));
    assert_eq!(response(&mut c).status, NOT_FOUND);
}

#[test]
fn oversized_values_and_bad_frames() {
    let server = server();
    let mut c = server.client();
    // Over -I 1k: "too large", the body is swallowed, the connection lives,
    // and (as memcached) the old value of a refused SET is gone.
    c.send(&request(SET, b"big", &set_extras(0, 0), b"old", 0, 0));
    response(&mut c);
    c.send(&request(SET, b"big", &set_extras(0, 0), &vec![b'x'; 5000], 0, 1));
    let too_large = response(&mut c);
    assert_eq!((too_large.status, too_large.opaque), (TOO_LARGE, 1));
    c.send(&request(GET, b"big", &[], &[], 0, 11));
    assert_eq!(response(&mut c).status, NOT_FOUND);
    c.send(&request(NOOP, b"", &[], &[], 0, 2));
    assert_eq!(response(&mut c).opcode, NOOP);
    // Unknown opcode: answered, connection lives.
    c.send(&request(0x55, b"", &[], b"junk", 0, 3));
    assert_eq!(response(&mut c).status, UNKNOWN);
    c.send(&request(NOOP, b"", &[], &[], 0, 4));
    assert_eq!(response(&mut c).opcode, NOOP);
    // A get with extras is malformed: invalid arguments, then close.
    c.send(&request(GET, b"k", &[1, 2, 3, 4], &[], 0, 5));
    assert_eq!(response(&mut c).status, INVALID);
    assert!(c.is_closed());
    // A header that claims a huge body for a get is refused without waiting for it.
    let mut c = server.client();
    let mut huge = request(GET, b"k", &[], &[], 0, 6);
    huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    c.send(&huge);
    assert_eq!(response(&mut c).status, INVALID);
    assert!(c.is_closed());
}

#[test]
fn text_and_binary_clients_share_the_data() {
    let server = server();
    let mut text = server.client();
    text.roundtrip(b"set shared 3 0 5\r\nhello\r\n", b"STORED\r\n");
    let mut binary = server.client();
    binary.send(&request(GET, b"shared", &[], &[], 0, 1));
    let hit = response(&mut binary);
    assert_eq!(
        (hit.extras.as_slice(), hit.value.as_slice()),
        (&3u32.to_be_bytes()[..], &b"hello"[..])
    );
}
