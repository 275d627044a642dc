//! The blocking driver, on `std::net`: a bounded pool of connections per
//! node, each request (and its `wait`) written in one send, multi-key calls
//! written to every node they touch before any reply is read. Where calls
//! go and when they are tried again is `State`'s (plain code); this moves
//! the bytes.
//!
//! ```no_run
//! use corecache_client::{blocking::Client, Config, Consistency};
//!
//! let client = Client::cluster(&["127.0.0.2:11211"], Config::default())?;
//! client.set(b"user:42", b"Ada", Consistency::Quorum)?;
//! assert_eq!(client.get(b"user:42")?.map(|v| v.data), Some(b"Ada".to_vec()));
//! # Ok::<(), corecache_client::Error>(())
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

pub use crate::call::Store;
use crate::call::{Call, CasOutcome, Consistency, Outcome, Value};
use crate::codec::{ClusterNodes, Event, Expect, Protocol, StoreMode, read_replies, valid_key};
use crate::config::Config;
use crate::error::Error;
use crate::many::Many;
use crate::state::{Attempts, HotRead, Seen, State};
use crate::topology::{Topology, parse_address};

/// A cluster-aware client; share it between threads (`&Client` is enough).
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
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// let client = Client::cluster(&["127.0.0.1:11211"], Config::default())?;
    /// let (epoch, nodes) = client.nodes();
    /// println!("epoch {epoch:?}: {nodes:?}");
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn cluster(seeds: &[&str], config: Config) -> Result<Client, Error> {
        for seed in seeds {
            parse_address(seed)?;
        }
        let client = Client::new(
            seeds.iter().map(|s| s.to_string()).collect(),
            Topology::fixed(&[], config.health),
            config,
        );
        client.refresh()?;
        Ok(client)
    }

    /// A ketama client of a fixed list (`host:port[:weight]`), as for
    /// plain memcached servers: no cluster commands are sent.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// let client = Client::fixed(&["127.0.0.1:11211", "127.0.0.2:11211:2"], Config::default())?;
    /// client.set(b"k", b"v", Consistency::One)?;
    /// # Ok::<(), corecache_client::Error>(())
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
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// for (address, up) in client.nodes().1 {
    ///     println!("{address}: {}", if up { "up" } else { "down" });
    /// }
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn nodes(&self) -> (Option<u64>, Vec<(String, bool)>) {
        self.lock().state.nodes()
    }

    /// The node list, ring and health as this client has them (a driver
    /// of its own, such as the load generator's, routes with a copy).
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, Config};
    /// let client = Client::cluster(&["127.0.0.1:11211"], Config::default())?;
    /// let mut topology = client.topology();
    /// let node = topology.route(b"some-key", std::time::Instant::now());
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn topology(&self) -> Topology {
        self.lock().state.topology.clone()
    }

    /// The hot keys the nodes last reported, hottest first, with their
    /// estimated reads per second (with `Config::hot_keys`).
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// for (key, reads_per_second) in client.hot_keys() {
    ///     println!("{}: {reads_per_second}/s", String::from_utf8_lossy(&key));
    /// }
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn hot_keys(&self) -> Vec<(Vec<u8>, u64)> {
        self.lock().state.hot.hottest()
    }

    /// Asks the cluster for its node list now (a no-op for a fixed list);
    /// with `Config::hot_keys`, every live node for its hot keys too.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// client.refresh()?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn refresh(&self) -> Result<(), Error> {
        if self.seeds.is_empty() {
            return Ok(());
        }
        // Live members first, then the seeds.
        let mut candidates = self.lock().state.live();
        candidates.extend(self.seeds.iter().cloned());
        let mut last = String::from("no seeds");
        for address in candidates {
            match self.ask_cluster(&address) {
                Ok((nodes, copies)) => {
                    let live = {
                        let mut shared = self.lock();
                        shared.state.refreshed(&nodes, copies, Instant::now())?;
                        shared.state.live()
                    };
                    if self.config.hot_keys.is_some() {
                        let reported: Vec<(String, String)> = live
                            .iter()
                            .filter_map(|address| self.ask_stats(address, "hotkeys").ok())
                            .flatten()
                            .collect();
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
    fn ask(
        &self,
        address: &str,
        encode: impl FnOnce(Protocol, &mut Vec<u8>, &mut Vec<Expect>) -> Result<(), Error>,
        on_event: &mut dyn FnMut(usize, Event),
    ) -> Result<(), Error> {
        let pool = self.pool(address);
        let mut lease = pool.take(&self.config)?;
        let connection = lease.connection();
        encode(self.config.protocol, &mut connection.out, &mut connection.expects)?;
        connection.exchange(self.config.protocol, on_event)?;
        lease.keep();
        Ok(())
    }

    /// `stats <group>` from one node.
    fn ask_stats(&self, address: &str, group: &str) -> Result<Vec<(String, String)>, Error> {
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
        )?;
        crate::call::stats_of(reply)
    }

    /// `cluster nodes` and the `copies` of `stats cluster`, from one node.
    fn ask_cluster(&self, address: &str) -> Result<(ClusterNodes, u32), Error> {
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
        )?;
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
    fn refresh_if_due(&self) {
        if !self.seeds.is_empty() && self.lock().state.refresh_due(self.config.refresh_interval, Instant::now()) {
            let _ = self.refresh();
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
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// use corecache_client::call::Call;
    /// let outcome = client.call(Call::Touch { key: b"k", exptime: 60 }, "touch")?;
    /// let found = outcome.found("touch")?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn call(&self, call: Call, name: &'static str) -> Result<Outcome, Error> {
        self.call_on(call, name, None)
    }

    /// `call`, sent to node `to` (an index into the node list) rather than
    /// to the key's node; once that node fails, to the key's.
    fn call_on(&self, call: Call, name: &'static str, mut to: Option<usize>) -> Result<Outcome, Error> {
        if !valid_key(call.key()) {
            return Err(Error::InvalidKey);
        }
        self.refresh_if_due();
        let mut attempts = Attempts::new(&call, &self.config, Instant::now());
        loop {
            let (address, wire) = {
                let mut shared = self.lock();
                let address = shared.state.route(call.key(), to, Instant::now())?;
                (address, shared.state.wire(&self.config))
            };
            let pool = self.pool(&address);
            let mut lease = match pool.take(&self.config) {
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
            let result = connection.exchange(wire.protocol, &mut |request, event| answer.event(request, event));
            match result {
                Ok(()) => {
                    lease.keep();
                    self.report(&address, Ok(()));
                    match answer.finish(name) {
                        Err(error) if attempts.refused(&error, Instant::now()) => {
                            self.lock().state.mark_stale();
                            std::thread::sleep(self.config.retry_pause);
                            self.refresh_if_due();
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
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// if let Some(value) = client.get(b"user:1")? {
    ///     println!("{} bytes, flags {}", value.data.len(), value.flags);
    /// }
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>, Error> {
        let read = match (&self.config.hot_keys, self.seeds.is_empty()) {
            (Some(config), false) => self.lock().state.hot_read(config, key),
            _ => HotRead::Acting,
        };
        let acting = || self.call(Call::Get { key, touch: None }, "get")?.value("get");
        match read {
            HotRead::Acting => acting(),
            // Not there (yet): the acting node's answer.
            HotRead::Copy(node) => match self.call_on(Call::LocalGet { key }, "get", Some(node))?.value("get")? {
                Some(value) => Ok(Some(value)),
                None => acting(),
            },
            HotRead::Extra(copy) => match self.call(Call::Get { key: &copy, touch: None }, "get")?.value("get")? {
                Some(value) => Ok(Some(value)),
                None => acting(),
            },
        }
    }

    /// After a write of a key with extra copies: the copies get a set's
    /// value (for at most `copy_ttl`), or are deleted (any other write).
    fn write_copies(&self, key: &[u8], set: Option<(&[u8], Store)>) -> Result<(), Error> {
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
                self.set_many(&items, options.for_copies(config))
            }
            None => self.delete_many(&names).map(|_| ()),
        }
    }

    /// A get that also sets the key's expiry (memcached's `gat`).
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// // Read it and keep it 5 more minutes.
    /// let value = client.gat(b"session:9", 300)?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn gat(&self, key: &[u8], exptime: u32) -> Result<Option<Value>, Error> {
        self.call(
            Call::Get {
                key,
                touch: Some(exptime),
            },
            "gat",
        )?
        .value("gat")
    }

    /// A quorum read (corecache's `cluster get`): the newest of a majority
    /// of the key's copies; older copies found are repaired by the cluster.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let newest = client.get_quorum(b"balance:7")?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn get_quorum(&self, key: &[u8]) -> Result<Option<Value>, Error> {
        self.call(Call::QuorumGet { key }, "cluster get")?.value("cluster get")
    }

    fn store(&self, mode: StoreMode, key: &[u8], value: &[u8], options: Store, name: &'static str) -> Result<Outcome, Error> {
        let outcome = self.call(options.call(mode, key, value), name)?;
        match mode {
            StoreMode::Set => self.write_copies(key, Some((value, options)))?,
            // The copies cannot follow an append or a lost race: dropped.
            _ => self.write_copies(key, None)?,
        }
        Ok(outcome)
    }

    /// Stores `value` (flags 0, no expiry); see `set_with` for the rest.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// client.set(b"user:1", b"{\"name\":\"ada\"}", Consistency::Quorum)?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn set(&self, key: &[u8], value: &[u8], consistency: Consistency) -> Result<(), Error> {
        self.set_with(
            key,
            value,
            Store {
                consistency,
                ..Store::default()
            },
        )
    }

    /// Stores `value` with its flags, expiry and consistency.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let options = Store { flags: 3, exptime: 60, consistency: Consistency::One };
    /// client.set_with(b"user:1", b"ada", options)?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn set_with(&self, key: &[u8], value: &[u8], options: Store) -> Result<(), Error> {
        self.store(StoreMode::Set, key, value, options, "set")?
            .stored("set")
            .map(|_| ())
    }

    /// add, replace, append or prepend: true if stored.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// use corecache_client::codec::StoreMode;
    /// let stored = client.store_with(StoreMode::Append, b"log", b",entry", Store::default())?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn store_with(&self, mode: StoreMode, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store(mode, key, value, options, "store")?.stored("store")
    }

    /// Stores only if the key is missing; true if stored.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let created = client.add(b"lock:job", b"me", Store { exptime: 30, ..Store::default() })?;
    /// if !created {
    ///     println!("somebody holds the lock");
    /// }
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn add(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Add, key, value, options)
    }

    /// Stores only if the key is there; true if stored.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let replaced = client.replace(b"user:1", b"grace", Store::default())?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn replace(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Replace, key, value, options)
    }

    /// Adds `value` after the stored one; true if the key was there.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let appended = client.append(b"log", b",entry", Store::default())?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn append(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Append, key, value, options)
    }

    /// Adds `value` before the stored one; true if the key was there.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let prepended = client.prepend(b"log", b"entry,", Store::default())?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn prepend(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Prepend, key, value, options)
    }

    /// Stores `value` only if the key's CAS is still `cas` (from a get).
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// // Read-modify-write: retried by the caller on Exists.
    /// let current = client.get(b"count")?.expect("set before");
    /// match client.cas(b"count", b"2", current.cas, Store::default())? {
    ///     CasOutcome::Stored => {}
    ///     CasOutcome::Exists => println!("another write came first"),
    ///     CasOutcome::NotFound => println!("deleted meanwhile"),
    /// }
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn cas(&self, key: &[u8], value: &[u8], cas: u64, options: Store) -> Result<CasOutcome, Error> {
        self.store(StoreMode::Cas(cas), key, value, options, "cas")?.cas("cas")
    }

    /// True if the key was there.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let was_there = client.delete(b"user:1", Consistency::One)?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn delete(&self, key: &[u8], consistency: Consistency) -> Result<bool, Error> {
        let found = self.call(Call::Delete { key, consistency }, "delete")?.found("delete")?;
        self.write_copies(key, None)?;
        Ok(found)
    }

    /// The new value, or None if the key is missing (it is not created).
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// client.set(b"hits", b"0", Consistency::One)?;
    /// assert_eq!(client.incr(b"hits", 5, Consistency::One)?, Some(5));
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn incr(&self, key: &[u8], delta: u64, consistency: Consistency) -> Result<Option<u64>, Error> {
        self.arith(key, delta, true, consistency)
    }

    /// Decrements, stopping at 0 as memcached does.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// client.set(b"stock", b"2", Consistency::One)?;
    /// assert_eq!(client.decr(b"stock", 5, Consistency::One)?, Some(0));
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn decr(&self, key: &[u8], delta: u64, consistency: Consistency) -> Result<Option<u64>, Error> {
        self.arith(key, delta, false, consistency)
    }

    fn arith(&self, key: &[u8], delta: u64, increment: bool, consistency: Consistency) -> Result<Option<u64>, Error> {
        let call = Call::Arith {
            key,
            delta,
            increment,
            consistency,
        };
        let number = self.call(call, "incr")?.number("incr")?;
        self.write_copies(key, None)?;
        Ok(number)
    }

    /// Sets the key's expiry; true if the key was there.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let found = client.touch(b"session:9", 600)?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn touch(&self, key: &[u8], exptime: u32) -> Result<bool, Error> {
        self.call(Call::Touch { key, exptime }, "touch")?.found("touch")
    }

    /// Values of `keys`, in their order (None for a miss): one multi-get
    /// per node, written to every node before any reply is read.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let keys: [&[u8]; 3] = [b"a", b"b", b"c"];
    /// let values = client.get_many(&keys)?;
    /// for (key, value) in ["a", "b", "c"].iter().zip(&values) {
    ///     println!("{key}: {:?}", value.as_ref().map(|v| v.data.len()));
    /// }
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>, Error> {
        Ok(self.fan_out(Many::Get { keys })?.values)
    }

    /// Stores every `(key, value)`, each as one request, all of a node's in
    /// one send (with QUORUM or ALL, one `wait` per node after its last).
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let items: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"2")];
    /// client.set_many(&items, Store::default())?;
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn set_many(&self, items: &[(&[u8], &[u8])], options: Store) -> Result<(), Error> {
        let wait = options.consistency.copies(self.lock().state.copies);
        let many = Many::Set {
            items,
            flags: options.flags,
            exptime: options.exptime,
            wait,
        };
        self.fan_out(many).map(|_| ())
    }

    /// Deletes every key; true for each that was there.
    ///
    /// ```no_run
    /// # use corecache_client::{blocking::Client, CasOutcome, Config, Consistency, Store};
    /// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
    /// let keys: [&[u8]; 2] = [b"a", b"b"];
    /// let found = client.delete_many(&keys)?;
    /// assert_eq!(found.len(), 2);
    /// # Ok::<(), corecache_client::Error>(())
    /// ```
    pub fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<bool>, Error> {
        Ok(self.fan_out(Many::Delete { keys })?.found)
    }

    /// Splits the call's keys by node, writes each node's requests on one
    /// of its connections, then reads every node's replies. A node that
    /// cannot be reached gets its keys placed again (on the next nodes).
    fn fan_out(&self, many: Many) -> Result<crate::many::Gathered, Error> {
        let keys = many.keys();
        if !keys.iter().all(|key| valid_key(key)) {
            return Err(Error::InvalidKey);
        }
        self.refresh_if_due();
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
                match pool.take(&self.config) {
                    Ok(mut lease) => {
                        let connection = lease.connection();
                        many.encode(&wire, &members, &mut connection.out, &mut connection.expects)?;
                        if let Err(error) = connection.send() {
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
                let result = connection.receive(wire.protocol, &mut |request, event| {
                    if failed.is_none() {
                        failed = many.event(&mut gathered, &members, request, event).err();
                    }
                });
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

/// One node's connections: at most `limit` open, idle ones reused.
struct Pool {
    address: String,
    limit: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Connection>,
    open: usize,
}

impl Pool {
    fn new(address: &str, limit: usize) -> Pool {
        Pool {
            address: address.to_string(),
            limit: limit.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn close_idle(&self) {
        let mut state = self.lock();
        state.open -= state.idle.len();
        state.idle.clear();
        drop(state);
        self.freed.notify_all();
    }

    /// An idle connection, a new one if fewer than `limit` are open, or
    /// the first one given back within the request timeout.
    fn take(self: &Arc<Pool>, config: &Config) -> Result<Lease, Error> {
        let deadline = Instant::now() + config.timeout;
        let mut state = self.lock();
        loop {
            if let Some(connection) = state.idle.pop() {
                return Ok(Lease {
                    pool: self.clone(),
                    connection: Some(connection),
                    keep: false,
                });
            }
            if state.open < self.limit {
                state.open += 1;
                drop(state);
                return match Connection::open(&self.address, config) {
                    Ok(connection) => Ok(Lease {
                        pool: self.clone(),
                        connection: Some(connection),
                        keep: false,
                    }),
                    Err(source) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(Error::Io {
                            address: self.address.clone(),
                            source,
                        })
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::PoolExhausted {
                    address: self.address.clone(),
                });
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A connection taken from a pool: given back when dropped if the
/// exchange on it completed (`keep`), else closed.
struct Lease {
    pool: Arc<Pool>,
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
        let mut state = self.pool.lock();
        match self.connection.take() {
            Some(mut connection) if self.keep => {
                connection.out.clear();
                connection.expects.clear();
                state.idle.push(connection);
            }
            _ => state.open -= 1,
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}

/// One TCP connection and its buffers.
struct Connection {
    address: String,
    stream: TcpStream,
    /// Requests not sent yet.
    out: Vec<u8>,
    /// Their replies' shapes, in order.
    expects: Vec<Expect>,
    input: Vec<u8>,
}

impl Connection {
    fn open(address: &str, config: &Config) -> io::Result<Connection> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing");
        for socket in address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&socket, config.connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(config.timeout))?;
                    stream.set_write_timeout(Some(config.timeout))?;
                    return Ok(Connection {
                        address: address.to_string(),
                        stream,
                        out: Vec::new(),
                        expects: Vec::new(),
                        input: Vec::with_capacity(16 * 1024),
                    });
                }
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::Io {
            address: self.address.clone(),
            source,
        }
    }

    /// Writes the requests in one send.
    fn send(&mut self) -> Result<(), Error> {
        let result = self.stream.write_all(&self.out);
        self.out.clear();
        result.map_err(|source| self.io_error(source))
    }

    /// Reads the reply to every expected request, in order.
    fn receive(&mut self, protocol: Protocol, on_event: &mut dyn FnMut(usize, Event)) -> Result<(), Error> {
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
            let read = self.stream.read(&mut self.input[start..]);
            match read {
                Ok(0) => {
                    self.input.truncate(start);
                    let closed = io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection");
                    return Err(self.io_error(closed));
                }
                Ok(n) => self.input.truncate(start + n),
                Err(error) => {
                    self.input.truncate(start);
                    if error.kind() != io::ErrorKind::Interrupted {
                        return Err(self.io_error(error));
                    }
                }
            }
        }
    }

    fn exchange(&mut self, protocol: Protocol, on_event: &mut dyn FnMut(usize, Event)) -> Result<(), Error> {
        self.send()?;
        self.receive(protocol, on_event)
    }
}
