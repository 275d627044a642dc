//! Microbenchmarks: request parsing per protocol (ns per request), shard
//! get/set (ns per operation), and sets under eviction pressure.
//!
//!   cargo bench --bench micro

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use corecache::hash::KeyHash;
use corecache::protocol::{binary, meta, text};
use corecache::request::{GetOptions, KeyOp, StoreMode, StoreOptions};
use corecache::store::{Shard, ShardConfig};

const LIMITS: text::TextLimits = text::TextLimits { max_payload: 1 << 20 };

fn binary_get(key: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80, 0x00];
    frame.extend_from_slice(&(key.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(&(key.len() as u32).to_be_bytes());
    frame.extend_from_slice(&[0; 12]);
    frame.extend_from_slice(key);
    frame
}

fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("text get", |b| {
        b.iter(|| text::parse(black_box(b"get key:0000000000012345\r\n"), &LIMITS))
    });
    let set = b"set key:0000000000012345 0 0 32\r\nabcdefghijklmnopqrstuvwxyzabcdef\r\n";
    group.bench_function("text set", |b| b.iter(|| text::parse(black_box(set), &LIMITS)));
    group.bench_function("meta mg", |b| {
        b.iter(|| text::parse(black_box(b"mg key:0000000000012345 v c f t k Oabc\r\n"), &LIMITS))
    });
    let line: &[u8] = b"mg key:0000000000012345 v c f t k Oabc";
    group.bench_function("meta flags only", |b| {
        b.iter(|| meta::parse(b"mg", black_box(line), b"", 1 << 20).is_error())
    });
    let get = binary_get(b"key:0000000000012345");
    group.bench_function("binary get", |b| b.iter(|| binary::parse(black_box(&get), 1 << 20)));
    group.finish();
}

fn config(memory_limit: usize) -> ShardConfig {
    ShardConfig {
        shard_id: 0,
        memory_limit,
        smallest_chunk: 48,
        growth_factor: 1.25,
        item_size_max: 1 << 20,
        evictions: true,
        started_unix: 1_700_000_000,
    }
}

fn keys(count: usize) -> Vec<(Vec<u8>, KeyHash)> {
    (0..count)
        .map(|i| {
            let key = format!("key:{i:016}").into_bytes();
            let hash = KeyHash::of(&key);
            (key, hash)
        })
        .collect()
}

fn store_op<'a>(key: &'a [u8], value: &'a [u8]) -> KeyOp<&'a [u8]> {
    KeyOp::Store {
        mode: StoreMode::Set,
        key,
        client_flags: 0,
        exptime: 0,
        value,
        options: StoreOptions::default(),
    }
}

fn shard(c: &mut Criterion) {
    let value = [b'v'; 32];
    let keys = keys(100_000);
    let mut shard = Shard::new(&config(256 << 20));
    for (key, hash) in &keys {
        shard.execute(*hash, &store_op(key, &value));
    }
    let mut group = c.benchmark_group("shard");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("get hit", |b| {
        b.iter(|| {
            let (key, hash) = &keys[i % keys.len()];
            i += 1;
            let op = KeyOp::Get {
                key: &key[..],
                options: GetOptions::default(),
            };
            black_box(matches!(shard.execute(*hash, &op), corecache::request::Outcome::Hit { .. }))
        })
    });
    group.bench_function("set replace", |b| {
        b.iter(|| {
            let (key, hash) = &keys[i % keys.len()];
            i += 1;
            black_box(shard.execute(*hash, &store_op(key, &value)).to_owned_outcome())
        })
    });
    // 8 MiB for a million distinct keys: nearly every set evicts.
    let mut small = Shard::new(&config(8 << 20));
    let many = self::keys(1_000_000);
    group.bench_function("set under eviction", |b| {
        b.iter(|| {
            let (key, hash) = &many[i % many.len()];
            i += 1;
            black_box(small.execute(*hash, &store_op(key, &value)).to_owned_outcome())
        })
    });
    group.finish();
}

criterion_group!(benches, parsing, shard);
criterion_main!(benches);
