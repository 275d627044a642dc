//! Store tests: semantics of every operation, LRU order, eviction at the
//! memory limit, expiry on a hand-driven clock, slab accounting, and a
//! property test against a plain HashMap model.

use std::collections::HashMap;

use proptest::prelude::*;

use super::clock::CLOCK_START;
use super::slab::PAGE_SIZE;
use super::{Replicated, Shard, ShardConfig};
use crate::hash::KeyHash;
use crate::request::{ArithOptions, DeleteOptions, GetOptions, KeyOp, Outcome, Recache, StoreMode, StoreOptions};

const START_UNIX: i64 = 1_700_000_000;

fn config(memory_limit: usize) -> ShardConfig {
    ShardConfig {
        shard_id: 3,
        memory_limit,
        smallest_chunk: 48,
        growth_factor: 1.25,
        item_size_max: 1 << 20,
        evictions: true,
        started_unix: START_UNIX,
    }
}

fn shard() -> Shard {
    Shard::new(&config(64 * PAGE_SIZE))
}

fn run<'s>(shard: &'s mut Shard, op: KeyOp<&[u8]>) -> Outcome<&'s [u8]> {
    let hash = KeyHash::of(op.key());
    shard.execute(hash, &op)
}

/// A store; `cas` 0 means no compare (classic set family).
fn store(shard: &mut Shard, mode: StoreMode, key: &[u8], value: &[u8], exptime: i64, cas: u64) -> Outcome<Vec<u8>> {
    store_with(
        shard,
        mode,
        key,
        value,
        exptime,
        StoreOptions {
            compare_cas: (cas != 0).then_some(cas),
            ..StoreOptions::default()
        },
    )
}

fn store_with(
    shard: &mut Shard,
    mode: StoreMode,
    key: &[u8],
    value: &[u8],
    exptime: i64,
    options: StoreOptions,
) -> Outcome<Vec<u8>> {
    run(
        shard,
        KeyOp::Store {
            mode,
            key,
            client_flags: 0,
            exptime,
            value,
            options,
        },
    )
    .to_owned_outcome()
}

fn stored(outcome: Outcome<Vec<u8>>) -> bool {
    matches!(outcome, Outcome::Stored { .. })
}

fn get_op(key: &[u8]) -> KeyOp<&[u8]> {
    KeyOp::Get {
        key,
        options: GetOptions::default(),
    }
}

fn delete_op(key: &[u8]) -> KeyOp<&[u8]> {
    KeyOp::Delete {
        key,
        options: DeleteOptions::default(),
    }
}

fn set(shard: &mut Shard, key: &[u8], value: &[u8]) {
    assert!(stored(store(shard, StoreMode::Set, key, value, 0, 0)));
}

fn get(shard: &mut Shard, key: &[u8]) -> Option<Vec<u8>> {
    match run(shard, get_op(key)) {
        Outcome::Hit { value, .. } => Some(value.to_vec()),
        Outcome::Miss => None,
        other => panic!("get answered {other:?}"),
    }
}

fn gets(shard: &mut Shard, key: &[u8]) -> (u32, u64, Vec<u8>) {
    match run(shard, get_op(key)) {
        Outcome::Hit { info, value } => (info.client_flags, info.cas, value.to_vec()),
        other => panic!("gets answered {other:?}"),
    }
}

fn number(value: u64) -> Outcome<Vec<u8>> {
    Outcome::Number {
        value,
        cas: 0,
        ttl: 0,
        previous_ttl: 0,
    }
}

/// incr/decr, with CAS and TTL zeroed so tests compare the number.
fn arith(shard: &mut Shard, key: &[u8], incr: bool, delta: u64) -> Outcome<Vec<u8>> {
    run(
        shard,
        KeyOp::Arith {
            key,
            incr,
            delta,
            options: ArithOptions::default(),
        },
    )
    .to_owned_outcome()
    .normalized()
}

#[test]
fn store_modes() {
    let mut shard = shard();
    assert_eq!(store(&mut shard, StoreMode::Replace, b"k", b"v", 0, 0), Outcome::NotStored);
    assert_eq!(store(&mut shard, StoreMode::Append, b"k", b"v", 0, 0), Outcome::NotStored);
    assert!(stored(store(&mut shard, StoreMode::Add, b"k", b"one", 0, 0)));
    assert_eq!(store(&mut shard, StoreMode::Add, b"k", b"two", 0, 0), Outcome::NotStored);
    assert!(stored(store(&mut shard, StoreMode::Replace, b"k", b"three", 0, 0)));
    assert!(stored(store(&mut shard, StoreMode::Append, b"k", b"!", 0, 0)));
    assert!(stored(store(&mut shard, StoreMode::Prepend, b"k", b"<", 0, 0)));
    assert_eq!(get(&mut shard, b"k").unwrap(), b"<three!");
    assert_eq!(get(&mut shard, b"missing"), None);
}

#[test]
fn append_keeps_flags_and_expiry() {
    let mut shard = shard();
    let op = KeyOp::Store {
        mode: StoreMode::Set,
        key: &b"k"[..],
        client_flags: 42,
        exptime: 10,
        value: &b"a"[..],
        options: StoreOptions::default(),
    };
    assert!(matches!(run(&mut shard, op), Outcome::Stored { .. }));
    assert!(stored(store(&mut shard, StoreMode::Append, b"k", b"b", 0, 0)));
    assert_eq!(gets(&mut shard, b"k").0, 42);
    shard.set_now(CLOCK_START + 10);
    assert_eq!(get(&mut shard, b"k"), None, "append must keep the expiry");
}

#[test]
fn cas_is_checked_unique_and_tagged_with_the_shard() {
    let mut shard = shard();
    assert_eq!(store(&mut shard, StoreMode::Set, b"k", b"v", 0, 1), Outcome::NotFound);
    set(&mut shard, b"k", b"v1");
    let (_, cas1, _) = gets(&mut shard, b"k");
    assert_eq!(cas1 & 0xff, 3, "low byte names the shard");
    assert_eq!(store(&mut shard, StoreMode::Set, b"k", b"v2", 0, cas1 + 1), Outcome::Exists);
    assert!(stored(store(&mut shard, StoreMode::Set, b"k", b"v2", 0, cas1)));
    let (_, cas2, value) = gets(&mut shard, b"k");
    assert_eq!(value, b"v2");
    assert_ne!(cas1, cas2);
    assert_eq!(store(&mut shard, StoreMode::Set, b"k", b"v3", 0, cas1), Outcome::Exists);
    let report = shard.report();
    assert_eq!(
        (
            report.counters.cas_hits,
            report.counters.cas_badval,
            report.counters.cas_misses
        ),
        (1, 2, 1)
    );
}

#[test]
fn incr_and_decr() {
    let mut shard = shard();
    assert_eq!(arith(&mut shard, b"n", true, 1), Outcome::NotFound);
    set(&mut shard, b"n", b"9");
    assert_eq!(arith(&mut shard, b"n", true, 1), number(10));
    assert_eq!(get(&mut shard, b"n").unwrap(), b"10", "value grows a digit");
    assert_eq!(arith(&mut shard, b"n", false, 3), number(7));
    assert_eq!(get(&mut shard, b"n").unwrap(), b"7 ", "and shrinks in place, padded");
    assert_eq!(arith(&mut shard, b"n", false, 100), number(0), "decr floors at 0");
    set(&mut shard, b"n", b"18446744073709551615");
    assert_eq!(arith(&mut shard, b"n", true, 2), number(1), "incr wraps");
    set(&mut shard, b"n", b"12abc");
    assert_eq!(arith(&mut shard, b"n", true, 1), Outcome::NonNumeric);
    set(&mut shard, b"n", b"5  ");
    assert_eq!(arith(&mut shard, b"n", true, 1), number(6), "trailing spaces are accepted");
    assert_eq!(
        get(&mut shard, b"n").unwrap(),
        b"6  ",
        "a shorter result is padded, as memcached"
    );
    set(&mut shard, b"n", b"  7");
    assert_eq!(arith(&mut shard, b"n", true, 1), number(8), "leading spaces are accepted");
    set(&mut shard, b"n", b"-0");
    assert_eq!(arith(&mut shard, b"n", true, 1), number(1), "-0 is 0");
    set(&mut shard, b"n", b"-1");
    assert_eq!(arith(&mut shard, b"n", true, 1), Outcome::NonNumeric);
    set(&mut shard, b"n", b" ");
    assert_eq!(arith(&mut shard, b"n", true, 1), Outcome::NonNumeric, "no digits, no number");
    set(&mut shard, b"n", b"");
    assert_eq!(arith(&mut shard, b"n", true, 1), Outcome::NonNumeric);
    set(&mut shard, b"n", b"1");
    // A new CAS on every change.
    let (_, before, _) = gets(&mut shard, b"n");
    arith(&mut shard, b"n", true, 1);
    assert_ne!(gets(&mut shard, b"n").1, before);
}

#[test]
fn delete_and_touch() {
    let mut shard = shard();
    set(&mut shard, b"k", b"v");
    assert_eq!(
        run(&mut shard, KeyOp::Touch { key: b"k", exptime: 5 })
            .to_owned_outcome()
            .normalized(),
        Outcome::Touched { cas: 0 }
    );
    assert_eq!(run(&mut shard, KeyOp::Touch { key: b"x", exptime: 5 }), Outcome::NotFound);
    shard.set_now(CLOCK_START + 5);
    assert_eq!(get(&mut shard, b"k"), None, "touch set the expiry");
    set(&mut shard, b"k", b"v");
    assert_eq!(run(&mut shard, delete_op(b"k")), Outcome::Deleted);
    assert_eq!(run(&mut shard, delete_op(b"k")), Outcome::NotFound);
    assert!(shard.is_empty());
}

#[test]
fn expiry_follows_the_clock() {
    let mut shard = shard();
    assert!(stored(store(&mut shard, StoreMode::Set, b"ttl", b"v", 10, 0)));
    assert!(stored(store(&mut shard, StoreMode::Set, b"abs", b"v", START_UNIX + 20, 0)));
    assert!(stored(store(&mut shard, StoreMode::Set, b"neg", b"v", -1, 0)));
    assert!(stored(store(&mut shard, StoreMode::Set, b"forever", b"v", 0, 0)));
    assert_eq!(get(&mut shard, b"neg"), None, "negative exptime is already expired");
    shard.set_now(CLOCK_START + 9);
    assert!(get(&mut shard, b"ttl").is_some());
    shard.set_now(CLOCK_START + 10);
    assert_eq!(get(&mut shard, b"ttl"), None);
    shard.set_now(CLOCK_START + 19);
    assert!(get(&mut shard, b"abs").is_some());
    shard.set_now(CLOCK_START + 20);
    assert_eq!(get(&mut shard, b"abs"), None);
    shard.set_now(CLOCK_START + 1_000_000);
    assert!(get(&mut shard, b"forever").is_some());
    let report = shard.report();
    assert_eq!(report.counters.get_expired, 3);
    assert_eq!(report.curr_items, 1);
}

#[test]
fn gat_updates_expiry() {
    let mut shard = shard();
    assert!(stored(store(&mut shard, StoreMode::Set, b"k", b"v", 5, 0)));
    let hit = run(
        &mut shard,
        KeyOp::Get {
            key: b"k",
            options: GetOptions {
                touch: Some(100),
                ..GetOptions::default()
            },
        },
    );
    assert!(matches!(hit, Outcome::Hit { .. }));
    shard.set_now(CLOCK_START + 50);
    assert!(get(&mut shard, b"k").is_some());
}

#[test]
fn the_sweep_reclaims_expired_items_without_reads() {
    let mut shard = shard();
    for i in 0..1000 {
        let key = format!("key{i}");
        let exptime = if i % 2 == 0 { 5 } else { 0 };
        assert!(stored(store(
            &mut shard,
            StoreMode::Set,
            key.as_bytes(),
            b"value",
            exptime,
            0
        )));
    }
    let bytes_before = shard.report().bytes;
    shard.set_now(CLOCK_START + 5);
    let mut freed = 0;
    // Incremental: small budgets, several passes.
    for _ in 0..2000 {
        freed += shard.sweep(100);
    }
    assert_eq!(freed, 500);
    let report = shard.report();
    assert_eq!(report.curr_items, 500);
    assert_eq!(report.counters.reclaimed, 500);
    assert_eq!(report.counters.expired_unfetched, 500);
    assert!(report.bytes < bytes_before);
}

#[test]
fn flush_all_now_and_later() {
    let mut shard = shard();
    set(&mut shard, b"a", b"1");
    set(&mut shard, b"b", b"2");
    shard.flush_all(0);
    assert_eq!(get(&mut shard, b"a"), None);
    set(&mut shard, b"c", b"3");
    assert!(get(&mut shard, b"c").is_some(), "items stored after the flush live");
    assert_eq!(shard.report().counters.get_flushed, 1);

    shard.flush_all(10);
    shard.set_now(CLOCK_START + 5);
    assert!(get(&mut shard, b"c").is_some(), "a delayed flush waits");
    shard.set_now(CLOCK_START + 10);
    assert_eq!(get(&mut shard, b"c"), None);
}

#[test]
fn flush_all_ignores_cas_values_chosen_by_clients() {
    let mut shard = shard();
    let explicit = |cas| StoreOptions {
        new_cas: Some(cas),
        ..StoreOptions::default()
    };
    // An item with a CAS far above the shard's counter dies all the same.
    assert!(stored(store_with(
        &mut shard,
        StoreMode::Set,
        b"big",
        b"x",
        0,
        explicit(1 << 40)
    )));
    shard.flush_all(0);
    assert_eq!(get(&mut shard, b"big"), None);
    // One stored after the flush, in the same second, with a tiny CAS lives.
    assert!(stored(store_with(&mut shard, StoreMode::Set, b"small", b"y", 0, explicit(5))));
    assert_eq!(get(&mut shard, b"small").unwrap(), b"y");
}

#[test]
fn repeated_flushes_never_bring_an_item_back() {
    let mut shard = shard();
    set(&mut shard, b"old", b"1");
    shard.flush_all(0);
    set(&mut shard, b"mid", b"2");
    // A second flush in the same second flips the generation back: what
    // was flushed first must stay gone.
    shard.flush_all(0);
    assert_eq!(get(&mut shard, b"old"), None);
    assert_eq!(get(&mut shard, b"mid"), None);
    set(&mut shard, b"new", b"3");
    // And in later seconds, by time.
    shard.set_now(CLOCK_START + 5);
    shard.flush_all(0);
    shard.set_now(CLOCK_START + 9);
    set(&mut shard, b"newer", b"4");
    shard.flush_all(0);
    assert_eq!(get(&mut shard, b"new"), None);
    assert_eq!(get(&mut shard, b"newer"), None);
    set(&mut shard, b"last", b"5");
    assert_eq!(get(&mut shard, b"last").unwrap(), b"5");
    assert_eq!(shard.len(), 1, "the dead are reclaimed as they are met");
}

#[test]
fn lru_evicts_the_least_recently_used_first() {
    // One page of one class: a known number of slots.
    let mut shard = Shard::new(&config(PAGE_SIZE));
    let value = [b'v'; 100];
    let mut stored = 0;
    while shard.report().counters.evictions == 0 {
        set(&mut shard, format!("key{stored:05}").as_bytes(), &value);
        stored += 1;
    }
    let capacity = stored - 1;
    assert!(capacity > 1000, "capacity {capacity}");
    // key00000 was the oldest: it went first.
    assert_eq!(get(&mut shard, b"key00000"), None);
    // Read the next 100 oldest: they become active and move up.
    for i in 1..=100 {
        assert!(get(&mut shard, format!("key{i:05}").as_bytes()).is_some());
    }
    // Store a further quarter of the capacity.
    for i in 0..capacity / 4 {
        set(&mut shard, format!("new{i:05}").as_bytes(), &value);
    }
    for i in 1..=100 {
        assert!(
            get(&mut shard, format!("key{i:05}").as_bytes()).is_some(),
            "recently read key{i:05} was evicted"
        );
    }
    // The unread old ones right after them were evicted instead.
    for i in 101..=200 {
        assert_eq!(
            get(&mut shard, format!("key{i:05}").as_bytes()),
            None,
            "key{i:05} should have been evicted"
        );
    }
    let report = shard.report();
    assert!(report.memory_used <= PAGE_SIZE as u64);
    assert!(report.counters.evicted_unfetched > 0);
}

#[test]
fn memory_limit_holds_under_mixed_sizes() {
    let limit = 4 * PAGE_SIZE;
    let mut shard = Shard::new(&ShardConfig {
        item_size_max: 2 * PAGE_SIZE,
        ..config(limit)
    });
    let mut rng = 12345u64;
    for i in 0..20_000u64 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let size = match rng >> 60 {
            0 => (rng >> 20) as usize % (PAGE_SIZE + PAGE_SIZE / 2),
            1..=4 => (rng >> 20) as usize % 20_000,
            _ => (rng >> 20) as usize % 500,
        };
        let value = vec![b'x'; size];
        let key = format!("key{}", i % 5000);
        assert!(
            stored(store(&mut shard, StoreMode::Set, key.as_bytes(), &value, 0, 0)),
            "size {size}"
        );
        assert!(shard.memory_used() <= limit, "{} > {limit}", shard.memory_used());
        assert_eq!(get(&mut shard, key.as_bytes()).map(|v| v.len()), Some(size));
    }
    let report = shard.report();
    assert!(report.counters.evictions > 0);
    assert!(report.bytes <= report.memory_used);
}

#[test]
fn items_larger_than_a_page_are_stored_and_accounted() {
    let mut shard = Shard::new(&ShardConfig {
        item_size_max: 4 * PAGE_SIZE,
        ..config(8 * PAGE_SIZE)
    });
    let big = vec![7u8; 3 * PAGE_SIZE];
    set(&mut shard, b"big", &big);
    assert_eq!(get(&mut shard, b"big").unwrap(), big);
    assert!(shard.memory_used() >= 3 * PAGE_SIZE);
    assert_eq!(
        store(&mut shard, StoreMode::Set, b"huge", &vec![0; 4 * PAGE_SIZE], 0, 0),
        Outcome::TooLarge
    );
    assert_eq!(run(&mut shard, delete_op(b"big")), Outcome::Deleted);
    assert_eq!(shard.memory_used(), 0);
}

#[test]
fn a_failed_set_drops_the_old_value() {
    let mut shard = Shard::new(&ShardConfig {
        item_size_max: 1000,
        ..config(4 * PAGE_SIZE)
    });
    set(&mut shard, b"k", b"old");
    assert_eq!(store(&mut shard, StoreMode::Set, b"k", &[0; 2000], 0, 0), Outcome::TooLarge);
    assert_eq!(get(&mut shard, b"k"), None);
    set(&mut shard, b"k", b"old");
    assert_eq!(
        store(&mut shard, StoreMode::Replace, b"k", &[0; 2000], 0, 0),
        Outcome::TooLarge
    );
    assert!(get(&mut shard, b"k").is_some(), "only set drops it");
}

#[test]
fn pages_move_to_the_class_that_needs_them() {
    let mut shard = Shard::new(&config(2 * PAGE_SIZE));
    for i in 0..50_000 {
        set(&mut shard, format!("small{i}").as_bytes(), b"v");
    }
    // Every page now belongs to the small class; a big value still fits.
    let value = vec![1u8; 100_000];
    set(&mut shard, b"big", &value);
    assert_eq!(get(&mut shard, b"big").unwrap(), value);
    assert!(shard.memory_used() <= 2 * PAGE_SIZE);
}

#[test]
fn without_evictions_a_full_shard_refuses() {
    let mut shard = Shard::new(&ShardConfig {
        evictions: false,
        ..config(PAGE_SIZE)
    });
    let mut outcome = Outcome::NotStored;
    let mut count = 0;
    while count == 0 || stored(outcome.clone()) {
        outcome = store(&mut shard, StoreMode::Set, format!("k{count}").as_bytes(), &[0; 200], 100, 0);
        count += 1;
    }
    assert_eq!(outcome, Outcome::OutOfMemory);
    assert!(get(&mut shard, b"k0").is_some(), "nothing was evicted");
    assert_eq!(shard.report().counters.evictions, 0);
    // Expired items are still reclaimed with -M.
    shard.set_now(CLOCK_START + 100);
    assert!(stored(store(&mut shard, StoreMode::Set, b"fresh", &[0; 200], 0, 0)));
    assert_eq!(shard.report().counters.reclaimed, 1);
}

fn meta_get(shard: &mut Shard, key: &[u8], options: GetOptions) -> Option<(crate::request::ItemInfo, Vec<u8>)> {
    match run(shard, KeyOp::Get { key, options }) {
        Outcome::Hit { info, value } => Some((info, value.to_vec())),
        Outcome::Miss => None,
        other => panic!("meta get answered {other:?}"),
    }
}

#[test]
fn vivify_on_miss_wins_once() {
    let mut shard = shard();
    let vivify = GetOptions {
        vivify: Some(30),
        claims_win: true,
        ..GetOptions::default()
    };
    let (info, value) = meta_get(&mut shard, b"k", vivify).unwrap();
    assert_eq!((info.recache, value.len(), info.ttl), (Recache::Won, 0, 30));
    let (info, _) = meta_get(&mut shard, b"k", vivify).unwrap();
    assert_eq!(info.recache, Recache::AlreadyWon);
    // The winner stores the real value: the placeholder is gone.
    set(&mut shard, b"k", b"real");
    let (info, value) = meta_get(&mut shard, b"k", vivify).unwrap();
    assert_eq!((info.recache, value.as_slice()), (Recache::None, &b"real"[..]));
}

#[test]
fn recache_is_won_when_ttl_runs_low() {
    let mut shard = shard();
    assert!(stored(store(&mut shard, StoreMode::Set, b"k", b"v", 100, 0)));
    let recache = GetOptions {
        recache_below: Some(30),
        claims_win: true,
        ..GetOptions::default()
    };
    assert_eq!(meta_get(&mut shard, b"k", recache).unwrap().0.recache, Recache::None);
    shard.set_now(CLOCK_START + 80);
    assert_eq!(meta_get(&mut shard, b"k", recache).unwrap().0.recache, Recache::Won);
    assert_eq!(meta_get(&mut shard, b"k", recache).unwrap().0.recache, Recache::AlreadyWon);
}

#[test]
fn invalidation_marks_stale_and_hands_out_one_win() {
    let mut shard = shard();
    set(&mut shard, b"k", b"v1");
    let (_, cas, _) = gets(&mut shard, b"k");
    let invalidate = DeleteOptions {
        invalidate: true,
        touch: Some(30),
        ..DeleteOptions::default()
    };
    let outcome = run(
        &mut shard,
        KeyOp::Delete {
            key: b"k",
            options: invalidate,
        },
    )
    .to_owned_outcome();
    assert_eq!(outcome, Outcome::Deleted);
    // A classic get sees the stale value but takes no win (memcached).
    assert_eq!(get(&mut shard, b"k").unwrap(), b"v1");
    let mg = GetOptions {
        claims_win: true,
        ..GetOptions::default()
    };
    let (info, value) = meta_get(&mut shard, b"k", mg).unwrap();
    assert!(info.stale && info.cas != cas && info.ttl == 30);
    assert_eq!((info.recache, value.as_slice()), (Recache::Won, &b"v1"[..]));
    assert_eq!(meta_get(&mut shard, b"k", mg).unwrap().0.recache, Recache::AlreadyWon);
    // A set with the old CAS and I is accepted but stays stale.
    let stale_set = StoreOptions {
        compare_cas: Some(cas),
        invalidate: true,
        ..StoreOptions::default()
    };
    assert!(stored(store_with(&mut shard, StoreMode::Set, b"k", b"v2", 0, stale_set)));
    assert!(meta_get(&mut shard, b"k", GetOptions::default()).unwrap().0.stale);
    // A plain set clears it.
    set(&mut shard, b"k", b"v3");
    assert!(!meta_get(&mut shard, b"k", GetOptions::default()).unwrap().0.stale);
}

#[test]
fn explicit_cas_and_emptied_values() {
    let mut shard = shard();
    let explicit = StoreOptions {
        new_cas: Some(12345),
        ..StoreOptions::default()
    };
    assert_eq!(
        store_with(&mut shard, StoreMode::Set, b"k", b"value", 0, explicit),
        Outcome::Stored {
            cas: 12345,
            value_len: 5
        }
    );
    assert_eq!(gets(&mut shard, b"k").1, 12345);
    let empty = DeleteOptions {
        remove_value: true,
        ..DeleteOptions::default()
    };
    assert_eq!(
        run(
            &mut shard,
            KeyOp::Delete {
                key: b"k",
                options: empty
            }
        )
        .to_owned_outcome(),
        Outcome::Deleted
    );
    assert_eq!(get(&mut shard, b"k").unwrap(), b"");
    let compare = DeleteOptions {
        compare_cas: Some(1),
        ..DeleteOptions::default()
    };
    assert_eq!(
        run(
            &mut shard,
            KeyOp::Delete {
                key: b"k",
                options: compare
            }
        )
        .to_owned_outcome(),
        Outcome::Exists
    );
}

#[test]
fn append_can_vivify() {
    let mut shard = shard();
    let vivify = StoreOptions {
        vivify: Some(0),
        ..StoreOptions::default()
    };
    assert!(stored(store_with(&mut shard, StoreMode::Append, b"k", b"first", 0, vivify)));
    assert!(stored(store_with(&mut shard, StoreMode::Append, b"k", b"+second", 0, vivify)));
    assert_eq!(get(&mut shard, b"k").unwrap(), b"first+second");
}

#[test]
fn arithmetic_with_initial_value_and_cas() {
    let mut shard = shard();
    let op = |options| KeyOp::Arith {
        key: &b"n"[..],
        incr: true,
        delta: 5,
        options,
    };
    let vivify = ArithOptions {
        vivify: Some((10, 0)),
        ..ArithOptions::default()
    };
    // A miss creates the item with the initial value, no delta applied.
    let Outcome::Number { value: 10, cas, .. } = run(&mut shard, op(vivify)).to_owned_outcome() else {
        panic!()
    };
    assert!(matches!(
        run(&mut shard, op(vivify)).to_owned_outcome(),
        Outcome::Number { value: 15, .. }
    ));
    let stale_cas = ArithOptions {
        compare_cas: Some(cas),
        ..ArithOptions::default()
    };
    assert_eq!(run(&mut shard, op(stale_cas)).to_owned_outcome(), Outcome::Exists);
    assert_eq!(
        run(&mut shard, op(ArithOptions::default())).to_owned_outcome().normalized(),
        number(20)
    );
}

#[derive(Clone, Debug)]
enum ModelOp {
    Set(u8, Vec<u8>),
    Add(u8, Vec<u8>),
    Replace(u8, Vec<u8>),
    Append(u8, Vec<u8>),
    Prepend(u8, Vec<u8>),
    Delete(u8),
    Incr(u8, u64),
    Get(u8),
}

/// The model's reading of a counter (C's strtoull as memcached checks it):
/// white space, an optional '+', digits, then white space or the end.
fn model_counter(value: &[u8]) -> Option<u64> {
    let blank = |b: &u8| b" \t\n\x0b\x0c\r".contains(b);
    let skipped = value.iter().take_while(|b| blank(b)).count();
    let rest = &value[skipped..];
    let negative = rest.starts_with(b"-");
    let unsigned = rest.strip_prefix(b"+").or(rest.strip_prefix(b"-")).unwrap_or(rest);
    let digits = unsigned.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    if unsigned.get(digits).is_some_and(|b| !blank(b)) {
        return None;
    }
    let number: u64 = std::str::from_utf8(&unsigned[..digits]).ok()?.parse().ok()?;
    // strtoull negates; memcached refuses what then reads as negative.
    if negative {
        return (number == 0).then_some(0).or_else(|| {
            let negated = number.wrapping_neg();
            ((negated as i64) >= 0).then_some(negated)
        });
    }
    Some(number)
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    let key = 0u8..16;
    // Mostly digits, so incr meets numbers as well as junk.
    let value = prop_oneof![
        (0u64..100_000).prop_map(|n| n.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..200),
    ];
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(k, v)| ModelOp::Set(k, v)),
        (key.clone(), value.clone()).prop_map(|(k, v)| ModelOp::Add(k, v)),
        (key.clone(), value.clone()).prop_map(|(k, v)| ModelOp::Replace(k, v)),
        (key.clone(), value.clone()).prop_map(|(k, v)| ModelOp::Append(k, v)),
        (key.clone(), value).prop_map(|(k, v)| ModelOp::Prepend(k, v)),
        key.clone().prop_map(ModelOp::Delete),
        (key.clone(), 0u64..1000).prop_map(|(k, d)| ModelOp::Incr(k, d)),
        key.prop_map(ModelOp::Get),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn shard_matches_a_hashmap(ops in prop::collection::vec(model_op(), 1..300)) {
        let mut shard = shard();
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for op in ops {
            match op {
                ModelOp::Set(k, v) => {
                    let key = vec![b'k', k];
                    prop_assert!(stored(store(&mut shard, StoreMode::Set, &key, &v, 0, 0)));
                    model.insert(key, v);
                }
                ModelOp::Add(k, v) => {
                    let key = vec![b'k', k];
                    let expected = if model.contains_key(&key) { Outcome::NotStored } else { Outcome::Stored { cas: 0, value_len: 0 } };
                    prop_assert_eq!(store(&mut shard, StoreMode::Add, &key, &v, 0, 0).normalized(), expected.clone());
                    model.entry(key).or_insert(v);
                }
                ModelOp::Replace(k, v) => {
                    let key = vec![b'k', k];
                    let expected = if model.contains_key(&key) { Outcome::Stored { cas: 0, value_len: 0 } } else { Outcome::NotStored };
                    prop_assert_eq!(store(&mut shard, StoreMode::Replace, &key, &v, 0, 0).normalized(), expected);
                    if let Some(old) = model.get_mut(&key) { *old = v; }
                }
                ModelOp::Append(k, v) => {
                    let key = vec![b'k', k];
                    let expected = if model.contains_key(&key) { Outcome::Stored { cas: 0, value_len: 0 } } else { Outcome::NotStored };
                    prop_assert_eq!(store(&mut shard, StoreMode::Append, &key, &v, 0, 0).normalized(), expected);
                    if let Some(old) = model.get_mut(&key) { old.extend_from_slice(&v); }
                }
                ModelOp::Prepend(k, v) => {
                    let key = vec![b'k', k];
                    let expected = if model.contains_key(&key) { Outcome::Stored { cas: 0, value_len: 0 } } else { Outcome::NotStored };
                    prop_assert_eq!(store(&mut shard, StoreMode::Prepend, &key, &v, 0, 0).normalized(), expected);
                    if let Some(old) = model.get_mut(&key) { *old = [v, old.clone()].concat(); }
                }
                ModelOp::Delete(k) => {
                    let key = vec![b'k', k];
                    let expected = if model.remove(&key).is_some() { Outcome::Deleted } else { Outcome::NotFound };
                    prop_assert_eq!(run(&mut shard, delete_op(&key)).to_owned_outcome(), expected);
                }
                ModelOp::Incr(k, delta) => {
                    let key = vec![b'k', k];
                    let old = model.get(&key).cloned();
                    let expected = match &old {
                        None => Outcome::NotFound,
                        Some(v) => match model_counter(v) {
                            Some(n) => number(n.wrapping_add(delta)),
                            None => Outcome::NonNumeric,
                        },
                    };
                    prop_assert_eq!(arith(&mut shard, &key, true, delta), expected.clone());
                    if let Outcome::Number { value, .. } = expected {
                        // memcached pads a shorter result to the old length.
                        let mut digits = value.to_string().into_bytes();
                        let old_len = old.map_or(0, |old| old.len());
                        if digits.len() < old_len { digits.resize(old_len, b' '); }
                        model.insert(key, digits);
                    }
                }
                ModelOp::Get(k) => {
                    let key = vec![b'k', k];
                    prop_assert_eq!(get(&mut shard, &key), model.get(&key).cloned());
                }
            }
        }
        prop_assert_eq!(shard.len(), model.len());
        let expected_bytes: usize = model.iter().map(|(k, v)| super::item::item_size(k.len(), v.len(), 0)).sum();
        prop_assert_eq!(shard.report().bytes as usize, expected_bytes);
    }
}

/// Outcomes with CAS, TTL and sizes zeroed, for comparing kinds and numbers.
trait Normalized {
    fn normalized(self) -> Self;
}

impl Normalized for Outcome<Vec<u8>> {
    fn normalized(self) -> Self {
        match self {
            Outcome::Stored { .. } => Outcome::Stored { cas: 0, value_len: 0 },
            Outcome::Touched { .. } => Outcome::Touched { cas: 0 },
            Outcome::Number { value, .. } => Outcome::Number {
                value,
                cas: 0,
                ttl: 0,
                previous_ttl: 0,
            },
            other => other,
        }
    }
}

mod replicated {
    use super::*;
    use crate::store::ItemState;

    fn set(shard: &mut Shard, key: &[u8], value: &[u8], exptime: i64) {
        assert!(matches!(
            store(shard, StoreMode::Set, key, value, exptime, 0),
            Outcome::Stored { .. }
        ));
    }

    #[test]
    fn item_state_reads_a_live_item_with_unix_expiry_and_nothing_else() {
        let mut shard = shard();
        set(&mut shard, b"a", b"one", 100);
        let state = shard.item_state(KeyHash::of(b"a"), b"a").unwrap();
        assert_eq!((state.key, state.value), (&b"a"[..], &b"one"[..]));
        assert_eq!(state.expiry_unix, START_UNIX + 100, "relative exptime becomes unix time");
        set(&mut shard, b"forever", b"x", 0);
        assert_eq!(shard.item_state(KeyHash::of(b"forever"), b"forever").unwrap().expiry_unix, 0);
        shard.set_now(CLOCK_START + 100);
        assert_eq!(
            shard.item_state(KeyHash::of(b"a"), b"a"),
            None,
            "expired items are not logged as live"
        );
        assert_eq!(shard.item_state(KeyHash::of(b"none"), b"none"), None);
    }

    #[test]
    fn a_replicated_item_keeps_the_primarys_cas_and_expiry_and_later_cas_values_exceed_it() {
        let mut replica = Shard::new(&ShardConfig {
            started_unix: START_UNIX + 50,
            ..config(64 * PAGE_SIZE)
        });
        let state = ItemState {
            key: b"k",
            value: b"v1",
            client_flags: 9,
            expiry_unix: START_UNIX + 1000,
            cas: 0x0050_0003,
        };
        assert_eq!(replica.put_replicated(KeyHash::of(b"k"), state, false), Replicated::Stored);
        let held = replica.item_state(KeyHash::of(b"k"), b"k").unwrap();
        assert_eq!(
            held, state,
            "same value, flags, CAS and absolute expiry on a host started later"
        );
        assert_eq!(
            replica.put_replicated(KeyHash::of(b"k"), ItemState { value: b"v2", ..state }, false),
            Replicated::Stored
        );
        assert_eq!(replica.len(), 1, "applying again replaces");
        let older = ItemState {
            value: b"v0",
            cas: state.cas - 1,
            ..state
        };
        assert_eq!(replica.put_replicated(KeyHash::of(b"k"), older, true), Replicated::KeptNewer);
        assert_eq!(replica.item_state(KeyHash::of(b"k"), b"k").unwrap().value, b"v2");
        assert_eq!(replica.put_replicated(KeyHash::of(b"k"), older, false), Replicated::Stored);
        let Outcome::Stored { cas, .. } = store(&mut replica, StoreMode::Set, b"own", b"x", 0, 0) else {
            panic!("stored");
        };
        assert!(cas > state.cas, "own CAS {cas:#x} above the applied {:#x}", state.cas);
    }

    #[test]
    fn a_snapshot_walk_visits_every_live_item_once_in_slices() {
        let mut shard = shard();
        for i in 0..1000 {
            set(&mut shard, format!("key-{i}").as_bytes(), &vec![b'v'; i % 300], 0);
        }
        set(&mut shard, b"dies", b"x", 5);
        shard.set_now(CLOCK_START + 10);
        let mut seen = HashMap::new();
        let mut cursor = 0;
        let mut slices = 0;
        while shard.visit_items(&mut cursor, 4096, |state| *seen.entry(state.key.to_vec()).or_insert(0) += 1) {
            slices += 1;
        }
        assert!(slices > 10, "{slices} slices");
        assert_eq!(seen.len(), 1000, "the expired item is left out");
        assert!(seen.values().all(|&count| count == 1));
    }

    #[test]
    fn remove_where_drops_exactly_the_chosen_keys() {
        let mut shard = shard();
        for i in 0..200 {
            set(&mut shard, format!("key-{i}").as_bytes(), b"v", 0);
        }
        let mut removed = Vec::new();
        let count = shard.remove_where(|hash, _| hash.shard(2) == 1, |key| removed.push(key.to_vec()));
        assert_eq!(count, removed.len());
        assert!(count > 50 && count < 150, "{count}");
        assert_eq!(shard.len(), 200 - count);
        for key in removed {
            assert_eq!(KeyHash::of(&key).shard(2), 1);
            assert!(shard.item_state(KeyHash::of(&key), &key).is_none());
        }
        let kept = (0..200)
            .map(|i| format!("key-{i}"))
            .find(|key| KeyHash::of(key.as_bytes()).shard(2) == 0)
            .unwrap();
        let hash = KeyHash::of(kept.as_bytes());
        assert!(shard.remove_key(hash, kept.as_bytes()));
        assert!(!shard.remove_key(hash, kept.as_bytes()), "already gone");
    }
}
