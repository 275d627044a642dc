//! The tokio driver (cargo feature `tokio`): the blocking driver's calls
//! as async functions, on tokio's TCP streams, with the same plain-code
//! core (`State`, `Call`, `Many`, the codec): a bounded pool per node (a
//! semaphore), each request and its `wait` in one send, multi-key calls
//! written to every node before any reply is read.
//!
//! ```no_run
//! # async fn example() -> Result<(), corecache_client::Error> {
//! use corecache_client::{tokio_driver::Client, Config, Consistency};
//!
//! let client = Client::cluster(&["127.0.0.2:11211"], Config::default()).await?;
//! client.set(b"user:42", b"Ada", Consistency::Quorum).await?;
//! assert_eq!(client.get(b"user:42").await?.map(|v| v.data), Some(b"Ada".to_vec()));
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::tokio::io::{AsyncReadExt, AsyncWriteExt};
use ::tokio::net::TcpStream;
use ::tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use crate::call::Store;
use crate::call::{Call, CasOutcome, Consistency, Outcome, Value};
use crate::codec::{ClusterNodes, Event, Expect, Protocol, StoreMode, read_replies, valid_key};
use crate::config::Config;
use crate::error::Error;
use crate::many::Many;
use crate::state::{Attempts, HotRead, Seen, State};
use crate::topology::{Topology, parse_address};

/// A cluster-aware client for tokio; share it between tasks (`Arc<Client>`).
pub struct Client {
    config: Config,
    /// Seeds asked for `cluster nodes`; empty for a fixed list.
    seeds: Vec<String>,
    shared: Mutex<Shared>,
}

struct Shared {
    state: State,
    pools: HashMap<String, Arc<Pool>>,
}

impl Client {
    /// A client of a corecache cluster: the node list comes from the first
    /// seed that answers `cluster nodes`, and is asked again every
    /// `config.refresh_interval` and after a node fails.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// let client = Client::cluster(&["127.0.0.1:11211"], Config::default()).await?;
    /// let (epoch, nodes) = client.nodes();
    /// println!("epoch {epoch:?}: {nodes:?}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cluster(seeds: &[&str], config: Config) -> Result<Client, Error> {
        for seed in seeds {
            parse_address(seed)?;
        }
        let client = Client::new(
            seeds.iter().map(|s| s.to_string()).collect(),
            Topology::fixed(&[], config.health),
            config,
        );
        client.refresh().await?;
        Ok(client)
    }

    /// A ketama client of a fixed list (`host:port[:weight]`), as for
    /// plain memcached servers: no cluster commands are sent.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// let client = Client::fixed(&["127.0.0.1:11211", "127.0.0.2:11211:2"], Config::default())?;
    /// client.set(b"k", b"v", Consistency::One).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn fixed(servers: &[&str], config: Config) -> Result<Client, Error> {
        let nodes = servers.iter().map(|s| parse_address(s)).collect::<Result<Vec<_>, _>>()?;
        Ok(Client::new(Vec::new(), Topology::fixed(&nodes, config.health), config))
    }

    fn new(seeds: Vec<String>, topology: Topology, config: Config) -> Client {
        Client {
            seeds,
            shared: Mutex::new(Shared {
                state: State::new(topology, Instant::now()),
                pools: HashMap::new(),
            }),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The node list's epoch (None for a fixed list) and each node's
    /// address and whether it is taken as up.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// for (address, up) in client.nodes().1 {
    ///     println!("{address}: {}", if up { "up" } else { "down" });
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn nodes(&self) -> (Option<u64>, Vec<(String, bool)>) {
        self.lock().state.nodes()
    }

    /// The hot keys the nodes last reported, hottest first, with their
    /// estimated reads per second (with `Config::hot_keys`).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// for (key, reads_per_second) in client.hot_keys() {
    ///     println!("{}: {reads_per_second}/s", String::from_utf8_lossy(&key));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn hot_keys(&self) -> Vec<(Vec<u8>, u64)> {
        self.lock().state.hot.hottest()
    }

    /// Asks the cluster for its node list now (a no-op for a fixed list);
    /// with `Config::hot_keys`, every live node for its hot keys too.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// client.refresh().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn refresh(&self) -> Result<(), Error> {
        if self.seeds.is_empty() {
            return Ok(());
        }
        // Live members first, then the seeds.
        let mut candidates = self.lock().state.live();
        candidates.extend(self.seeds.iter().cloned());
        let mut last = String::from("no seeds");
        for address in candidates {
            match self.ask_cluster(&address).await {
                Ok((nodes, copies)) => {
                    let live = {
                        let mut shared = self.lock();
                        shared.state.refreshed(&nodes, copies, Instant::now())?;
                        shared.state.live()
                    };
                    if self.config.hot_keys.is_some() {
                        let mut reported: Vec<(String, String)> = Vec::new();
                        for address in &live {
                            if let Ok(stats) = self.ask_stats(address, "hotkeys").await {
                                reported.extend(stats);
                            }
                        }
                        self.lock().state.hot.learn(&reported);
                    }
                    return Ok(());
                }
                Err(error) => last = format!("{address}: {error}"),
            }
        }
        Err(Error::NoSeed(last))
    }

    /// Sends `encode`'s requests to `address` and hands each event to `on_event`.
    async fn ask(
        &self,
        address: &str,
        encode: impl FnOnce(Protocol, &mut Vec<u8>, &mut Vec<Expect>) -> Result<(), Error> + Send,
        on_event: &mut (dyn FnMut(usize, Event) + Send),
    ) -> Result<(), Error> {
        let pool = self.pool(address);
        let mut lease = pool.take(&self.config).await?;
        let connection = lease.connection();
        encode(self.config.protocol, &mut connection.out, &mut connection.expects)?;
        connection.exchange(self.config.protocol, on_event).await?;
        lease.keep();
        Ok(())
    }

    /// `stats <group>` from one node.
    async fn ask_stats(&self, address: &str, group: &str) -> Result<Vec<(String, String)>, Error> {
        let mut reply = None;
        self.ask(
            address,
            |protocol, out, expects| {
                expects.push(protocol.stats(Some(group), out)?);
                Ok(())
            },
            &mut |_, event| {
                if let Event::Done(done) = event {
                    reply = Some(done);
                }
            },
        )
        .await?;
        crate::call::stats_of(reply)
    }

    /// `cluster nodes` and the `copies` of `stats cluster`, from one node.
    async fn ask_cluster(&self, address: &str) -> Result<(ClusterNodes, u32), Error> {
        let mut replies = (None, None);
        self.ask(
            address,
            |protocol, out, expects| {
                expects.push(protocol.cluster_nodes(out)?);
                expects.push(protocol.stats(Some("cluster"), out)?);
                Ok(())
            },
            &mut |request, event| match (request, event) {
                (0, Event::Done(reply)) => replies.0 = Some(reply),
                (_, Event::Done(reply)) => replies.1 = Some(reply),
                _ => {}
            },
        )
        .await?;
        crate::call::cluster_of(replies.0, replies.1)
    }

    fn pool(&self, address: &str) -> Arc<Pool> {
        let mut shared = self.lock();
        let limit = self.config.connections_per_node;
        shared
            .pools
            .entry(address.to_string())
            .or_insert_with(|| Arc::new(Pool::new(address, limit)))
            .clone()
    }

    /// Refreshes the list if it is due (a failure, or the interval).
    async fn refresh_if_due(&self) {
        if !self.seeds.is_empty() && self.lock().state.refresh_due(self.config.refresh_interval, Instant::now()) {
            let _ = self.refresh().await;
        }
    }

    /// Marks what a request to `address` showed of it.
    fn report(&self, address: &str, result: Result<(), &Error>) {
        let seen = Seen::of(result);
        let mut shared = self.lock();
        shared.state.report(address, seen, Instant::now());
        if seen == Seen::Failed
            && let Some(pool) = shared.pools.get(address)
        {
            pool.close_idle();
        }
    }

    /// Runs one call on the node its key goes to (see `state::Attempts`
    /// for when it is tried again).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// use corecache_client::call::Call;
    /// let outcome = client.call(Call::Touch { key: b"k", exptime: 60 }, "touch").await?;
    /// let found = outcome.found("touch")?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn call(&self, call: Call<'_>, name: &'static str) -> Result<Outcome, Error> {
        self.call_on(call, name, None).await
    }

    /// `call`, sent to node `to` (an index into the node list) rather than
    /// to the key's node; once that node fails, to the key's.
    async fn call_on(&self, call: Call<'_>, name: &'static str, mut to: Option<usize>) -> Result<Outcome, Error> {
        if !valid_key(call.key()) {
            return Err(Error::InvalidKey);
        }
        self.refresh_if_due().await;
        let mut attempts = Attempts::new(&call, &self.config, Instant::now());
        loop {
            let (address, wire) = {
                let mut shared = self.lock();
                let address = shared.state.route(call.key(), to, Instant::now())?;
                (address, shared.state.wire(&self.config))
            };
            let pool = self.pool(&address);
            let mut lease = match pool.take(&self.config).await {
                Ok(lease) => lease,
                Err(error) => {
                    self.report(&address, Err(&error));
                    to = None;
                    if attempts.unsent(&error, Instant::now()) {
                        continue;
                    }
                    return Err(error);
                }
            };
            let connection = lease.connection();
            call.encode(&wire, &mut connection.out, &mut connection.expects)?;
            let mut answer = call.answer(&wire);
            let result = connection
                .exchange(wire.protocol, &mut |request, event| answer.event(request, event))
                .await;
            match result {
                Ok(()) => {
                    lease.keep();
                    self.report(&address, Ok(()));
                    match answer.finish(name) {
                        Err(error) if attempts.refused(&error, Instant::now()) => {
                            self.lock().state.mark_stale();
                            ::tokio::time::sleep(self.config.retry_pause).await;
                            self.refresh_if_due().await;
                        }
                        outcome => return outcome,
                    }
                }
                Err(error) => {
                    self.report(&address, Err(&error));
                    to = None;
                    if !attempts.lost(&error, Instant::now()) {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// The key's value, or None on a miss. With `Config::hot_keys`, a hot
    /// key's read goes to one of its copies in turn.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// if let Some(value) = client.get(b"user:1").await? {
    ///     println!("{} bytes, flags {}", value.data.len(), value.flags);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get(&self, key: &[u8]) -> Result<Option<Value>, Error> {
        let read = match (&self.config.hot_keys, self.seeds.is_empty()) {
            (Some(config), false) => self.lock().state.hot_read(config, key),
            _ => HotRead::Acting,
        };
        let found = match read {
            HotRead::Acting => None,
            HotRead::Copy(node) => self.call_on(Call::LocalGet { key }, "get", Some(node)).await?.value("get")?,
            HotRead::Extra(copy) => self.call(Call::Get { key: &copy, touch: None }, "get").await?.value("get")?,
        };
        match found {
            Some(value) => Ok(Some(value)),
            // Not there (yet), or a cold key: the acting node's answer.
            None => self.call(Call::Get { key, touch: None }, "get").await?.value("get"),
        }
    }

    /// After a write of a key with extra copies: the copies get a set's
    /// value (for at most `copy_ttl`), or are deleted (any other write).
    async fn write_copies(&self, key: &[u8], set: Option<(&[u8], Store)>) -> Result<(), Error> {
        let Some(config) = &self.config.hot_keys else {
            return Ok(());
        };
        let copies = self.lock().state.copies_to_write(config, key);
        if copies.is_empty() {
            return Ok(());
        }
        let names: Vec<&[u8]> = copies.iter().map(|c| &c[..]).collect();
        match set {
            Some((value, options)) => {
                let items: Vec<(&[u8], &[u8])> = names.iter().map(|name| (*name, value)).collect();
                self.set_many(&items, options.for_copies(config)).await
            }
            None => self.delete_many(&names).await.map(|_| ()),
        }
    }

    /// A get that also sets the key's expiry (memcached's `gat`).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// // Read it and keep it 5 more minutes.
    /// let value = client.gat(b"session:9", 300).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn gat(&self, key: &[u8], exptime: u32) -> Result<Option<Value>, Error> {
        self.call(
            Call::Get {
                key,
                touch: Some(exptime),
            },
            "gat",
        )
        .await?
        .value("gat")
    }

    /// A quorum read (corecache's `cluster get`): the newest of a majority
    /// of the key's copies; older copies found are repaired by the cluster.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let newest = client.get_quorum(b"balance:7").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_quorum(&self, key: &[u8]) -> Result<Option<Value>, Error> {
        self.call(Call::QuorumGet { key }, "cluster get").await?.value("cluster get")
    }

    async fn store(
        &self,
        mode: StoreMode,
        key: &[u8],
        value: &[u8],
        options: Store,
        name: &'static str,
    ) -> Result<Outcome, Error> {
        let outcome = self.call(options.call(mode, key, value), name).await?;
        match mode {
            StoreMode::Set => self.write_copies(key, Some((value, options))).await?,
            // The copies cannot follow an append or a lost race: dropped.
            _ => self.write_copies(key, None).await?,
        }
        Ok(outcome)
    }

    /// Stores `value` (flags 0, no expiry); see `set_with` for the rest.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// client.set(b"user:1", b"{\"name\":\"ada\"}", Consistency::Quorum).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set(&self, key: &[u8], value: &[u8], consistency: Consistency) -> Result<(), Error> {
        self.set_with(
            key,
            value,
            Store {
                consistency,
                ..Store::default()
            },
        )
        .await
    }

    /// Stores `value` with its flags, expiry and consistency.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let options = Store { flags: 3, exptime: 60, consistency: Consistency::One };
    /// client.set_with(b"user:1", b"ada", options).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_with(&self, key: &[u8], value: &[u8], options: Store) -> Result<(), Error> {
        self.store(StoreMode::Set, key, value, options, "set")
            .await?
            .stored("set")
            .map(|_| ())
    }

    /// add, replace, append or prepend: true if stored.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// use corecache_client::codec::StoreMode;
    /// let stored = client.store_with(StoreMode::Append, b"log", b",entry", Store::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn store_with(&self, mode: StoreMode, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store(mode, key, value, options, "store").await?.stored("store")
    }

    /// Stores only if the key is missing; true if stored.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let created = client.add(b"lock:job", b"me", Store { exptime: 30, ..Store::default() }).await?;
    /// if !created {
    ///     println!("somebody holds the lock");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn add(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Add, key, value, options).await
    }

    /// Stores only if the key is there; true if stored.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let replaced = client.replace(b"user:1", b"grace", Store::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn replace(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Replace, key, value, options).await
    }

    /// Adds `value` after the stored one; true if the key was there.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let appended = client.append(b"log", b",entry", Store::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn append(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Append, key, value, options).await
    }

    /// Adds `value` before the stored one; true if the key was there.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let prepended = client.prepend(b"log", b"entry,", Store::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn prepend(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Prepend, key, value, options).await
    }

    /// Stores `value` only if the key's CAS is still `cas` (from a get).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// // Read-modify-write: retried by the caller on Exists.
    /// let current = client.get(b"count").await?.expect("set before");
    /// match client.cas(b"count", b"2", current.cas, Store::default()).await? {
    ///     CasOutcome::Stored => {}
    ///     CasOutcome::Exists => println!("another write came first"),
    ///     CasOutcome::NotFound => println!("deleted meanwhile"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cas(&self, key: &[u8], value: &[u8], cas: u64, options: Store) -> Result<CasOutcome, Error> {
        self.store(StoreMode::Cas(cas), key, value, options, "cas").await?.cas("cas")
    }

    /// True if the key was there.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let was_there = client.delete(b"user:1", Consistency::One).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete(&self, key: &[u8], consistency: Consistency) -> Result<bool, Error> {
        let found = self
            .call(Call::Delete { key, consistency }, "delete")
            .await?
            .found("delete")?;
        self.write_copies(key, None).await?;
        Ok(found)
    }

    /// The new value, or None if the key is missing (it is not created).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// client.set(b"hits", b"0", Consistency::One).await?;
    /// assert_eq!(client.incr(b"hits", 5, Consistency::One).await?, Some(5));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn incr(&self, key: &[u8], delta: u64, consistency: Consistency) -> Result<Option<u64>, Error> {
        self.arith(key, delta, true, consistency).await
    }

    /// Decrements, stopping at 0 as memcached does.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// client.set(b"stock", b"2", Consistency::One).await?;
    /// assert_eq!(client.decr(b"stock", 5, Consistency::One).await?, Some(0));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn decr(&self, key: &[u8], delta: u64, consistency: Consistency) -> Result<Option<u64>, Error> {
        self.arith(key, delta, false, consistency).await
    }

    async fn arith(&self, key: &[u8], delta: u64, increment: bool, consistency: Consistency) -> Result<Option<u64>, Error> {
        let call = Call::Arith {
            key,
            delta,
            increment,
            consistency,
        };
        let number = self.call(call, "incr").await?.number("incr")?;
        self.write_copies(key, None).await?;
        Ok(number)
    }

    /// Sets the key's expiry; true if the key was there.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let found = client.touch(b"session:9", 600).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn touch(&self, key: &[u8], exptime: u32) -> Result<bool, Error> {
        self.call(Call::Touch { key, exptime }, "touch").await?.found("touch")
    }

    /// Values of `keys`, in their order (None for a miss): one multi-get
    /// per node, written to every node before any reply is read.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let keys: [&[u8]; 3] = [b"a", b"b", b"c"];
    /// let values = client.get_many(&keys).await?;
    /// for (key, value) in ["a", "b", "c"].iter().zip(&values) {
    ///     println!("{key}: {:?}", value.as_ref().map(|v| v.data.len()));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>, Error> {
        Ok(self.fan_out(Many::Get { keys }).await?.values)
    }

    /// Stores every `(key, value)`, each as one request, all of a node's in
    /// one send (with QUORUM or ALL, one `wait` per node after its last).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let items: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"2")];
    /// client.set_many(&items, Store::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_many(&self, items: &[(&[u8], &[u8])], options: Store) -> Result<(), Error> {
        let wait = options.consistency.copies(self.lock().state.copies);
        let many = Many::Set {
            items,
            flags: options.flags,
            exptime: options.exptime,
            wait,
        };
        self.fan_out(many).await.map(|_| ())
    }

    /// Deletes every key; true for each that was there.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), corecache_client::Error> {
    /// # use corecache_client::{tokio_driver::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let keys: [&[u8]; 2] = [b"a", b"b"];
    /// let found = client.delete_many(&keys).await?;
    /// assert_eq!(found.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<bool>, Error> {
        Ok(self.fan_out(Many::Delete { keys }).await?.found)
    }

    /// Splits the call's keys by node, writes each node's requests on one
    /// of its connections, then reads every node's replies. A node that
    /// cannot be reached gets its keys placed again (on the next nodes).
    async fn fan_out(&self, many: Many<'_>) -> Result<crate::many::Gathered, Error> {
        let keys = many.keys();
        if !keys.iter().all(|key| valid_key(key)) {
            return Err(Error::InvalidKey);
        }
        self.refresh_if_due().await;
        let mut gathered = many.gathered();
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        let deadline = Instant::now() + self.config.retry_for;
        while !pending.is_empty() {
            let pending_keys: Vec<&[u8]> = pending.iter().map(|&i| keys[i]).collect();
            let (groups, wire) = {
                let mut shared = self.lock();
                let groups = shared.state.topology.split(&pending_keys, Instant::now());
                let groups: Result<Vec<(String, Vec<usize>)>, Error> = groups
                    .into_iter()
                    .map(|(node, members)| {
                        let node = node.ok_or(Error::NoLiveNode)?;
                        let address = shared.state.topology.nodes()[node].address.clone();
                        Ok((address, members.into_iter().map(|m| pending[m]).collect()))
                    })
                    .collect();
                (groups?, shared.state.wire(&self.config))
            };
            let mut sent = Vec::new();
            let mut unplaced = Vec::new();
            for (address, members) in groups {
                let pool = self.pool(&address);
                match pool.take(&self.config).await {
                    Ok(mut lease) => {
                        let connection = lease.connection();
                        many.encode(&wire, &members, &mut connection.out, &mut connection.expects)?;
                        if let Err(error) = connection.send().await {
                            self.report(&address, Err(&error));
                            return Err(error);
                        }
                        sent.push((address, lease, members));
                    }
                    Err(error) => {
                        self.report(&address, Err(&error));
                        if !matches!(error, Error::Io { .. }) || Instant::now() >= deadline {
                            return Err(error);
                        }
                        unplaced.extend(members);
                    }
                }
            }
            let mut first_error = None;
            for (address, mut lease, members) in sent {
                let connection = lease.connection();
                let mut failed = None;
                let result = connection
                    .receive(wire.protocol, &mut |request, event| {
                        if failed.is_none() {
                            failed = many.event(&mut gathered, &members, request, event).err();
                        }
                    })
                    .await;
                match result {
                    Ok(()) => {
                        lease.keep();
                        self.report(&address, Ok(()));
                    }
                    Err(error) => {
                        self.report(&address, Err(&error));
                        failed.get_or_insert(error);
                    }
                }
                if let Some(error) = failed {
                    first_error.get_or_insert(error);
                }
            }
            if let Some(error) = first_error {
                return Err(error);
            }
            pending = unplaced;
        }
        Ok(gathered)
    }
}

/// How much a read asks for at once.
const READ_CHUNK: usize = 16 * 1024;

/// One node's connections: at most `limit` leased at once (the
/// semaphore's permits), idle ones reused.
struct Pool {
    address: String,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    fn new(address: &str, limit: usize) -> Pool {
        Pool {
            address: address.to_string(),
            permits: Arc::new(Semaphore::new(limit.max(1))),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn close_idle(&self) {
        self.idle().clear();
    }

    /// An idle connection or a new one, once a permit is free within the
    /// request timeout.
    async fn take(self: &Arc<Pool>, config: &Config) -> Result<Lease, Error> {
        let permit = match ::tokio::time::timeout(config.timeout, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(Error::PoolExhausted {
                    address: self.address.clone(),
                });
            }
        };
        let idle = self.idle().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => Connection::open(&self.address, config).await.map_err(|source| Error::Io {
                address: self.address.clone(),
                source,
            })?,
        };
        Ok(Lease {
            pool: self.clone(),
            _permit: permit,
            connection: Some(connection),
            keep: false,
        })
    }
}

/// A connection taken from a pool: given back when dropped if the
/// exchange on it completed (`keep`), else closed; its permit is released.
struct Lease {
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
    connection: Option<Connection>,
    keep: bool,
}

impl Lease {
    fn connection(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("a lease holds its connection until dropped")
    }

    fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(mut connection) = self.connection.take()
            && self.keep
        {
            connection.out.clear();
            connection.expects.clear();
            self.pool.idle().push(connection);
        }
    }
}

/// One TCP connection and its buffers.
struct Connection {
    address: String,
    stream: TcpStream,
    timeout: Duration,
    /// Requests not sent yet.
    out: Vec<u8>,
    /// Their replies' shapes, in order.
    expects: Vec<Expect>,
    input: Vec<u8>,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no answer within the request timeout")
}

impl Connection {
    async fn open(address: &str, config: &Config) -> io::Result<Connection> {
        let stream = ::tokio::time::timeout(config.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| timed_out())??;
        stream.set_nodelay(true)?;
        Ok(Connection {
            address: address.to_string(),
            stream,
            timeout: config.timeout,
            out: Vec::new(),
            expects: Vec::new(),
            input: Vec::with_capacity(READ_CHUNK),
        })
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::Io {
            address: self.address.clone(),
            source,
        }
    }

    /// Writes the requests in one send.
    async fn send(&mut self) -> Result<(), Error> {
        let result = ::tokio::time::timeout(self.timeout, self.stream.write_all(&self.out)).await;
        self.out.clear();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(self.io_error(source)),
            Err(_) => Err(self.io_error(timed_out())),
        }
    }

    /// Reads the reply to every expected request, in order.
    async fn receive(&mut self, protocol: Protocol, on_event: &mut (dyn FnMut(usize, Event) + Send)) -> Result<(), Error> {
        let mut next = 0;
        loop {
            let used =
                read_replies(protocol, &mut self.expects, &mut next, &self.input, on_event).map_err(|source| Error::Decode {
                    address: self.address.clone(),
                    source,
                })?;
            self.input.drain(..used);
            if next == self.expects.len() {
                self.expects.clear();
                return Ok(());
            }
            let start = self.input.len();
            self.input.resize(start + READ_CHUNK, 0);
            let read = ::tokio::time::timeout(self.timeout, self.stream.read(&mut self.input[start..])).await;
            match read {
                Ok(Ok(0)) => {
                    self.input.truncate(start);
                    let closed = io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection");
                    return Err(self.io_error(closed));
                }
                Ok(Ok(n)) => self.input.truncate(start + n),
                Ok(Err(error)) => {
                    self.input.truncate(start);
                    return Err(self.io_error(error));
                }
                Err(_) => {
                    self.input.truncate(start);
                    return Err(self.io_error(timed_out()));
                }
            }
        }
    }

    async fn exchange(&mut self, protocol: Protocol, on_event: &mut (dyn FnMut(usize, Event) + Send)) -> Result<(), Error> {
        self.send().await?;
        self.receive(protocol, on_event).await
    }
}
