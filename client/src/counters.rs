//! Hot counters on the blocking driver: increments coalesced over a window
//! into one `incr` per key (`Counters`), and a counter spread over `n` keys
//! whose reads sum them (`ShardedCounter`). Both create a missing counter
//! with the first delta, so no increment is lost to a miss.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::blocking::{Client, Store};
use crate::call::Consistency;
use crate::error::Error;
use crate::hot::CounterBatch;

/// Adds `delta` to `key`, creating it (as `delta`) if it is missing.
fn add_to(client: &Client, key: &[u8], delta: u64) -> Result<u64, Error> {
    loop {
        if let Some(value) = client.incr(key, delta, Consistency::One)? {
            return Ok(value);
        }
        if client.add(key, delta.to_string().as_bytes(), Store::default())? {
            return Ok(delta);
        }
        // Another writer created it between the two: increment that.
    }
}

/// Increments coalesced over a window: each key's increments of one window
/// become one `incr` of their sum, sent by a background thread at the end
/// of the window, on `flush`, and when dropped.
///
/// ```no_run
/// use std::{sync::Arc, time::Duration};
/// use corecache_client::{blocking::Client, counters::Counters, Config};
///
/// let client = Arc::new(Client::cluster(&["127.0.0.2:11211"], Config::default())?);
/// let counters = Counters::new(client, Duration::from_millis(50));
/// for _ in 0..10_000 {
///     counters.incr(b"page:views", 1);
/// }
/// counters.flush()?; // one incr of 10,000 (or a few, across windows)
/// # Ok::<(), corecache_client::Error>(())
/// ```
pub struct Counters {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

struct Shared {
    client: Arc<Client>,
    batch: Mutex<CounterBatch>,
    stop: Mutex<bool>,
    wake: Condvar,
    requests: AtomicU64,
    failures: AtomicU64,
}

impl Shared {
    fn flush(&self) -> Result<(), Error> {
        let (sums, _) = self.batch.lock().unwrap_or_else(|p| p.into_inner()).drain();
        let mut first_error = None;
        for (key, sum) in sums {
            self.requests.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = add_to(&self.client, &key, sum) {
                // Not lost: back in the batch for the next window.
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.batch.lock().unwrap_or_else(|p| p.into_inner()).add(&key, sum);
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Counters {
    /// Coalesces over `window` (50-100 ms suits most counters).
    pub fn new(client: Arc<Client>, window: Duration) -> Counters {
        let shared = Arc::new(Shared {
            client,
            batch: Mutex::new(CounterBatch::default()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let flusher = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut stopped = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
                while !*stopped {
                    stopped = shared.wake.wait_timeout(stopped, window).unwrap_or_else(|p| p.into_inner()).0;
                    drop(stopped);
                    let _ = shared.flush();
                    stopped = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
                }
            })
        };
        Counters {
            shared,
            flusher: Some(flusher),
        }
    }

    /// Adds `delta` to `key` in the current window (nothing is sent now).
    pub fn incr(&self, key: &[u8], delta: u64) {
        self.shared.batch.lock().unwrap_or_else(|p| p.into_inner()).add(key, delta);
    }

    /// Sends what is pending now.
    pub fn flush(&self) -> Result<(), Error> {
        self.shared.flush()
    }

    /// `incr` requests sent so far (one per key per window), and how many
    /// of them failed (their sums were kept for the next window).
    pub fn requests(&self) -> (u64, u64) {
        (
            self.shared.requests.load(Ordering::Relaxed),
            self.shared.failures.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        let _ = self.shared.flush();
    }
}

/// A counter kept as `n` keys `key:0..key:n-1`, so its increments land on
/// up to `n` nodes; a read sums them (one multi-get).
pub struct ShardedCounter {
    keys: Vec<Vec<u8>>,
    next: AtomicUsize,
}

impl ShardedCounter {
    /// The counter `key`, kept as `key:0` .. `key:{shards-1}`.
    pub fn new(key: &[u8], shards: usize) -> ShardedCounter {
        let keys = (0..shards.max(1))
            .map(|i| {
                let mut name = key.to_vec();
                name.push(b':');
                name.extend_from_slice(i.to_string().as_bytes());
                name
            })
            .collect();
        ShardedCounter {
            keys,
            next: AtomicUsize::new(0),
        }
    }

    /// The keys it is kept under.
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// Adds `delta` to the next shard in turn.
    pub fn incr(&self, client: &Client, delta: u64) -> Result<(), Error> {
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % self.keys.len();
        add_to(client, &self.keys[shard], delta).map(|_| ())
    }

    /// The sum of the shards (a missing shard counts 0).
    pub fn value(&self, client: &Client) -> Result<u64, Error> {
        let keys: Vec<&[u8]> = self.keys.iter().map(|k| &k[..]).collect();
        let mut sum: u64 = 0;
        for value in client.get_many(&keys)?.into_iter().flatten() {
            let text = std::str::from_utf8(&value.data).ok();
            let number = text
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| Error::UnexpectedReply {
                    request: "sharded counter",
                    reply: String::from_utf8_lossy(&value.data).into_owned(),
                })?;
            sum = sum.saturating_add(number);
        }
        Ok(sum)
    }
}
