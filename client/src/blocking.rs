//! The blocking driver, on `std::net`: a bounded pool of connections per
//! node, each request (and its `wait`) written in one send, multi-key calls
//! written to every node they touch before any reply is read.
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

use crate::call::{Call, CasOutcome, Consistency, Outcome, Value, Wire};
use crate::codec::{Event, Expect, Fetch, Protocol, Reply, StoreMode, valid_key};
use crate::config::Config;
use crate::error::Error;
use crate::hot::{Heat, HotKeyConfig, HotKeys, copy_key};
use crate::topology::{Topology, parse_address};

/// A cluster-aware client; share it between threads (`&Client` is enough).
pub struct Client {
    config: Config,
    /// Seeds asked for `cluster nodes`; empty for a fixed list.
    seeds: Vec<String>,
    shared: Mutex<Shared>,
}

struct Shared {
    topology: Topology,
    pools: HashMap<String, Arc<Pool>>,
    /// The cluster's `--copies` (1 for a fixed list).
    copies: u32,
    refreshed: Instant,
    /// A failure since the last refresh: refresh before the next call.
    stale: bool,
    /// The hot keys the nodes last reported (with `Config::hot_keys`).
    hot: HotKeys,
}

impl Client {
    /// A client of a corecache cluster: the node list comes from the first
    /// seed that answers `cluster nodes`, and is asked again every
    /// `config.refresh_interval` and after a node fails.
    pub fn cluster(seeds: &[&str], config: Config) -> Result<Client, Error> {
        for seed in seeds {
            parse_address(seed)?;
        }
        let client = Client {
            seeds: seeds.iter().map(|s| s.to_string()).collect(),
            shared: Mutex::new(Shared {
                topology: Topology::fixed(&[], config.health),
                pools: HashMap::new(),
                copies: 1,
                refreshed: Instant::now(),
                stale: false,
                hot: HotKeys::default(),
            }),
            config,
        };
        client.refresh()?;
        Ok(client)
    }

    /// A ketama client of a fixed list (`host:port[:weight]`), as for
    /// plain memcached servers: no cluster commands are sent.
    pub fn fixed(servers: &[&str], config: Config) -> Result<Client, Error> {
        let nodes = servers.iter().map(|s| parse_address(s)).collect::<Result<Vec<_>, _>>()?;
        Ok(Client {
            seeds: Vec::new(),
            shared: Mutex::new(Shared {
                topology: Topology::fixed(&nodes, config.health),
                pools: HashMap::new(),
                copies: 1,
                refreshed: Instant::now(),
                stale: false,
                hot: HotKeys::default(),
            }),
            config,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The node list's epoch (None for a fixed list) and each node's
    /// address and whether it is taken as up.
    pub fn nodes(&self) -> (Option<u64>, Vec<(String, bool)>) {
        let shared = self.lock();
        let nodes = shared
            .topology
            .nodes()
            .iter()
            .map(|n| (n.address.clone(), n.health.is_up() && !n.reported_down));
        (shared.topology.epoch(), nodes.collect())
    }

    /// Asks the cluster for its node list now (a no-op for a fixed list).
    pub fn refresh(&self) -> Result<(), Error> {
        if self.seeds.is_empty() {
            return Ok(());
        }
        // Live members first, then the seeds.
        let mut candidates: Vec<String> = {
            let shared = self.lock();
            let nodes = shared.topology.nodes();
            nodes
                .iter()
                .filter(|n| n.health.is_up() && !n.reported_down)
                .map(|n| n.address.clone())
                .collect()
        };
        candidates.extend(self.seeds.iter().cloned());
        let mut last = String::from("no seeds");
        for address in candidates {
            match self.ask_cluster(&address) {
                Ok((nodes, copies)) => {
                    let live = {
                        let mut shared = self.lock();
                        shared.topology.apply(&nodes)?;
                        shared.copies = copies;
                        shared.refreshed = Instant::now();
                        shared.stale = false;
                        let nodes = shared.topology.nodes();
                        nodes
                            .iter()
                            .filter(|n| n.health.is_up() && !n.reported_down)
                            .map(|n| n.address.clone())
                            .collect::<Vec<_>>()
                    };
                    if self.config.hot_keys.is_some() {
                        self.learn_hot_keys(&live);
                    }
                    return Ok(());
                }
                Err(error) => last = format!("{address}: {error}"),
            }
        }
        self.lock().refreshed = Instant::now();
        Err(Error::NoSeed(last))
    }

    /// Every live node's `stats hotkeys` (each reports the keys it serves).
    fn learn_hot_keys(&self, live: &[String]) {
        let mut reported = Vec::new();
        for address in live {
            if let Ok(stats) = self.ask_stats(address, "hotkeys") {
                reported.extend(stats);
            }
        }
        self.lock().hot.learn(&reported);
    }

    /// `stats <group>` from one node.
    fn ask_stats(&self, address: &str, group: &str) -> Result<Vec<(String, String)>, Error> {
        let pool = self.pool(address);
        let mut lease = pool.take(&self.config)?;
        let connection = lease.connection();
        let protocol = self.config.protocol;
        connection.expects.push(protocol.stats(Some(group), &mut connection.out)?);
        let mut reply = None;
        connection.exchange(protocol, &mut |_, event| {
            if let Event::Done(done) = event {
                reply = Some(done);
            }
        })?;
        lease.keep();
        match reply {
            Some(Reply::Stats(stats)) => Ok(stats),
            Some(Reply::Error(error)) => Err(Error::Server(error)),
            other => Err(Error::UnexpectedReply {
                request: "stats",
                reply: format!("{other:?}"),
            }),
        }
    }

    /// The hot keys the nodes last reported, hottest first, with their
    /// estimated reads per second.
    pub fn hot_keys(&self) -> Vec<(Vec<u8>, u64)> {
        self.lock().hot.hottest()
    }

    /// `cluster nodes` and the `copies` of `stats cluster`, from one node.
    fn ask_cluster(&self, address: &str) -> Result<(crate::codec::ClusterNodes, u32), Error> {
        let pool = self.pool(address);
        let mut lease = pool.take(&self.config)?;
        let connection = lease.connection();
        let protocol = self.config.protocol;
        connection.expects.push(protocol.cluster_nodes(&mut connection.out)?);
        connection.expects.push(protocol.stats(Some("cluster"), &mut connection.out)?);
        let (mut nodes, mut copies) = (None, 1);
        connection.exchange(protocol, &mut |_, event| match event {
            Event::Done(Reply::Nodes(list)) => nodes = Some(list),
            Event::Done(Reply::Stats(stats)) => {
                copies = stats
                    .iter()
                    .find(|(name, _)| name == "copies")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(1)
            }
            _ => {}
        })?;
        lease.keep();
        let nodes = nodes.ok_or_else(|| Error::UnexpectedReply {
            request: "cluster nodes",
            reply: "not a corecache cluster node".into(),
        })?;
        Ok((nodes, copies))
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
        if self.seeds.is_empty() {
            return;
        }
        let due = {
            let mut shared = self.lock();
            let due = shared.stale || shared.refreshed.elapsed() >= self.config.refresh_interval;
            if due {
                // One caller refreshes; the others go on with the list they have.
                shared.stale = false;
                shared.refreshed = Instant::now();
            }
            due
        };
        if due {
            let _ = self.refresh();
        }
    }

    /// The node a call goes to now (the key's, or the one named) and its pool.
    fn route(&self, key: &[u8], to: Option<usize>) -> Result<(usize, Arc<Pool>, Wire), Error> {
        let mut shared = self.lock();
        let node = match to {
            Some(node) if node < shared.topology.nodes().len() => node,
            _ => shared.topology.route(key, Instant::now()).ok_or(Error::NoLiveNode)?,
        };
        let address = shared.topology.nodes()[node].address.clone();
        let wire = Wire {
            protocol: self.config.protocol,
            copies: shared.copies,
            wait_ms: self.config.wait_timeout.as_millis() as u32,
        };
        let limit = self.config.connections_per_node;
        let pool = shared
            .pools
            .entry(address)
            .or_insert_with_key(|a| Arc::new(Pool::new(a, limit)))
            .clone();
        Ok((node, pool, wire))
    }

    /// Marks what a request to `node` showed of it.
    fn report(&self, address: &str, result: Result<(), &Error>) {
        let mut shared = self.lock();
        let now = Instant::now();
        let policy = *shared.topology.policy();
        let Some(index) = shared.topology.nodes().iter().position(|n| n.address == address) else {
            return;
        };
        let node = shared.topology.node_mut(index);
        match result {
            Ok(()) => {
                if !node.health.is_up() {
                    node.health.success();
                }
            }
            Err(Error::Io { source, .. }) if is_timeout(source) => node.health.soft_failure(&policy, now),
            Err(Error::Io { .. } | Error::Decode { .. }) => {
                node.health.hard_failure(&policy, now);
                shared.stale = true;
                // Its idle connections are to the process that failed.
                if let Some(pool) = shared.pools.get(address) {
                    pool.close_idle();
                }
            }
            Err(_) => {}
        }
    }

    /// Runs one call on the node its key goes to. A node that cannot be
    /// reached is marked down and the call goes to the next; a reply lost
    /// after sending is an error unless the call is repeatable; corecache's
    /// "try again" refusals are retried for up to `config.retry_for`.
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
        let deadline = Instant::now() + self.config.retry_for;
        let mut resent = false;
        loop {
            let (_, pool, wire) = self.route(call.key(), to)?;
            let mut lease = match pool.take(&self.config) {
                Ok(lease) => lease,
                Err(error) => {
                    self.report(&pool.address, Err(&error));
                    to = None;
                    if matches!(error, Error::Io { .. }) && Instant::now() < deadline {
                        continue; // nothing was sent: the next node
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
                    self.report(&pool.address, Ok(()));
                    match answer.finish(name) {
                        Err(error) if error.is_transient() && Instant::now() < deadline => {
                            self.lock().stale = true;
                            std::thread::sleep(self.config.retry_pause);
                            self.refresh_if_due();
                        }
                        outcome => return outcome,
                    }
                }
                Err(error) => {
                    self.report(&pool.address, Err(&error));
                    to = None;
                    // A broken connection (a node gone) is sent again, to
                    // the next node; a timeout is not (it may be slow, not gone).
                    let broken = matches!(&error, Error::Io { source, .. } if !is_timeout(source));
                    if broken && call.repeatable() && !resent && Instant::now() < deadline {
                        resent = true;
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    /// The key's value, or None on a miss. With `Config::hot_keys`, a hot
    /// key's read goes to one of its copies in turn.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>, Error> {
        match (&self.config.hot_keys, self.seeds.is_empty()) {
            (Some(config), false) => self.get_hot(key, config),
            _ => self.get_from(key, None),
        }
    }

    fn get_from(&self, key: &[u8], to: Option<usize>) -> Result<Option<Value>, Error> {
        let call = match to {
            Some(_) => Call::LocalGet { key },
            None => Call::Get { key, touch: None },
        };
        match self.call_on(call, "get", to)? {
            Outcome::Value(value) => Ok(value),
            other => Err(unexpected("get", other)),
        }
    }

    fn get_hot(&self, key: &[u8], config: &HotKeyConfig) -> Result<Option<Value>, Error> {
        let heat = self.lock().hot.heat(config, key);
        if heat == Heat::Cold {
            return self.get_from(key, None);
        }
        // The live copies of its preference list, then (for the hottest)
        // its extra copies on other nodes: one in turn.
        let (copy, node, acting) = {
            let mut shared = self.lock();
            let live: Vec<usize> = {
                let listed = shared.topology.preference(key, shared.copies as usize);
                listed
                    .into_iter()
                    .filter(|&n| shared.topology.nodes()[n].health.is_up())
                    .collect()
            };
            let extra = match heat {
                Heat::Copied => extra_copies(&shared, config, key),
                _ => Vec::new(),
            };
            if live.is_empty() {
                (None, None, None)
            } else {
                let pick = shared.hot.next(live.len() + extra.len());
                match pick.checked_sub(live.len()) {
                    Some(at) => (Some(extra[at].clone()), None, Some(live[0])),
                    None => (None, Some(live[pick]), Some(live[0])),
                }
            }
        };
        if let Some(copy) = copy
            && let Some(value) = self.get_from(&copy, None)?
        {
            // An extra copy not written since the key became hot is a miss:
            // then the key is read.
            return Ok(Some(value));
        }
        match node {
            Some(node) if Some(node) != acting => match self.get_from(key, Some(node))? {
                Some(value) => Ok(Some(value)),
                // Not on that copy (yet): the acting node's answer.
                None => self.get_from(key, None),
            },
            _ => self.get_from(key, None),
        }
    }

    /// After a write of a key with extra copies: the copies get a set's
    /// value (for at most `copy_ttl`), or are deleted (any other write).
    fn write_copies(&self, key: &[u8], set: Option<(&[u8], Store)>) -> Result<(), Error> {
        let Some(config) = &self.config.hot_keys else {
            return Ok(());
        };
        if self.seeds.is_empty() || self.lock().hot.heat(config, key) != Heat::Copied {
            return Ok(());
        }
        let copies = extra_copies(&self.lock(), config, key);
        let names: Vec<&[u8]> = copies.iter().map(|c| &c[..]).collect();
        match set {
            Some((value, options)) => {
                let exptime = match options.exptime {
                    0 => config.copy_ttl,
                    exptime => exptime.min(config.copy_ttl),
                };
                let items: Vec<(&[u8], &[u8])> = names.iter().map(|name| (*name, value)).collect();
                let options = Store {
                    exptime,
                    consistency: Consistency::One,
                    ..options
                };
                self.set_many(&items, options)
            }
            None => self.delete_many(&names).map(|_| ()),
        }
    }

    /// A get that also sets the key's expiry (memcached's `gat`).
    pub fn gat(&self, key: &[u8], exptime: u32) -> Result<Option<Value>, Error> {
        match self.call(
            Call::Get {
                key,
                touch: Some(exptime),
            },
            "gat",
        )? {
            Outcome::Value(value) => Ok(value),
            other => Err(unexpected("gat", other)),
        }
    }

    /// A quorum read (corecache's `cluster get`): the newest of a majority
    /// of the key's copies; older copies found are repaired by the cluster.
    pub fn get_quorum(&self, key: &[u8]) -> Result<Option<Value>, Error> {
        match self.call(Call::QuorumGet { key }, "cluster get")? {
            Outcome::Value(value) => Ok(value),
            other => Err(unexpected("cluster get", other)),
        }
    }

    fn store(&self, mode: StoreMode, key: &[u8], value: &[u8], options: Store, name: &'static str) -> Result<Outcome, Error> {
        let call = Call::Store {
            mode,
            key,
            value,
            flags: options.flags,
            exptime: options.exptime,
            consistency: options.consistency,
        };
        let outcome = self.call(call, name)?;
        if mode != StoreMode::Set {
            // The copies cannot follow an append or a lost race: dropped.
            self.write_copies(key, None)?;
        }
        Ok(outcome)
    }

    /// Stores `value` (flags 0, no expiry); see `store_with` for the rest.
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

    pub fn set_with(&self, key: &[u8], value: &[u8], options: Store) -> Result<(), Error> {
        match self.store(StoreMode::Set, key, value, options, "set")? {
            Outcome::Stored(_) => self.write_copies(key, Some((value, options))),
            other => Err(unexpected("set", other)),
        }
    }

    /// add, replace, append or prepend: true if stored.
    pub fn store_with(&self, mode: StoreMode, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        match self.store(mode, key, value, options, "store")? {
            Outcome::Stored(stored) => Ok(stored),
            Outcome::Cas(outcome) => Ok(outcome == CasOutcome::Stored),
            other => Err(unexpected("store", other)),
        }
    }

    pub fn add(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Add, key, value, options)
    }

    pub fn replace(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Replace, key, value, options)
    }

    pub fn append(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Append, key, value, options)
    }

    pub fn prepend(&self, key: &[u8], value: &[u8], options: Store) -> Result<bool, Error> {
        self.store_with(StoreMode::Prepend, key, value, options)
    }

    /// Stores `value` only if the key's CAS is still `cas` (from a get).
    pub fn cas(&self, key: &[u8], value: &[u8], cas: u64, options: Store) -> Result<CasOutcome, Error> {
        match self.store(StoreMode::Cas(cas), key, value, options, "cas")? {
            Outcome::Cas(outcome) => Ok(outcome),
            other => Err(unexpected("cas", other)),
        }
    }

    /// True if the key was there.
    pub fn delete(&self, key: &[u8], consistency: Consistency) -> Result<bool, Error> {
        match self.call(Call::Delete { key, consistency }, "delete")? {
            Outcome::Found(found) => {
                self.write_copies(key, None)?;
                Ok(found)
            }
            other => Err(unexpected("delete", other)),
        }
    }

    /// The new value, or None if the key is missing (it is not created).
    pub fn incr(&self, key: &[u8], delta: u64, consistency: Consistency) -> Result<Option<u64>, Error> {
        self.arith(key, delta, true, consistency)
    }

    /// Decrements, stopping at 0 as memcached does.
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
        match self.call(call, if increment { "incr" } else { "decr" })? {
            Outcome::Number(number) => {
                self.write_copies(key, None)?;
                Ok(number)
            }
            other => Err(unexpected("incr", other)),
        }
    }

    /// Sets the key's expiry; true if the key was there.
    pub fn touch(&self, key: &[u8], exptime: u32) -> Result<bool, Error> {
        match self.call(Call::Touch { key, exptime }, "touch")? {
            Outcome::Found(found) => Ok(found),
            other => Err(unexpected("touch", other)),
        }
    }

    /// Values of `keys`, in their order (None for a miss): one multi-get
    /// per node, written to every node before any reply is read.
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>, Error> {
        let mut values = vec![None; keys.len()];
        self.fan_out(
            keys,
            |protocol, group, out, expects| {
                expects.push(protocol.get(group.iter().map(|&i| keys[i]), Fetch { cas: true, touch: None }, out));
                Ok(())
            },
            &mut |group, _, event| {
                if let Event::Item(item) = event {
                    // Hits come in request order: the first not yet found with this key.
                    if let Some(&index) = group.iter().find(|&&i| keys[i] == item.key && values[i].is_none()) {
                        values[index] = Some(Value {
                            data: item.value.to_vec(),
                            flags: item.flags,
                            cas: item.cas,
                        });
                    }
                }
                Ok(())
            },
        )?;
        Ok(values)
    }

    /// Stores every `(key, value)`, each as one request, all of a node's in
    /// one send.
    pub fn set_many(&self, items: &[(&[u8], &[u8])], options: Store) -> Result<(), Error> {
        let keys: Vec<&[u8]> = items.iter().map(|(key, _)| *key).collect();
        let wire_copies = self.lock().copies;
        let wait = options.consistency.copies(wire_copies);
        self.fan_out(
            &keys,
            |protocol, group, out, expects| {
                for &index in group.iter() {
                    let (key, value) = items[index];
                    expects.push(protocol.store(StoreMode::Set, key, value, options.flags, options.exptime, out));
                }
                if let Some(copies) = wait {
                    // The connection's last write is the group's last set.
                    expects.push(protocol.wait(copies, self.config.wait_timeout.as_millis() as u32, out)?);
                }
                Ok(())
            },
            &mut |_, _, event| match event {
                Event::Done(Reply::Error(error)) => Err(Error::Server(error)),
                Event::Done(Reply::Copies(reached)) if wait.is_some_and(|wanted| reached < wanted) => Err(Error::TooFewCopies {
                    wanted: wait.unwrap(),
                    reached,
                }),
                _ => Ok(()),
            },
        )
    }

    /// Deletes every key; true for each that was there.
    pub fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<bool>, Error> {
        let mut found = vec![false; keys.len()];
        self.fan_out(
            keys,
            |protocol, group, out, expects| {
                for &index in group.iter() {
                    expects.push(protocol.delete(keys[index], out));
                }
                Ok(())
            },
            &mut |group, request, event| match event {
                Event::Done(Reply::Deleted) => {
                    found[group[request]] = true;
                    Ok(())
                }
                Event::Done(Reply::Error(error)) => Err(Error::Server(error)),
                _ => Ok(()),
            },
        )?;
        Ok(found)
    }

    /// Splits `keys` by node, writes each node's requests (built by
    /// `encode` from its keys' indexes) on one of its connections, then
    /// reads every node's replies, handing each event to `on_event` with
    /// the group and the request's place in it. A node that cannot be
    /// reached gets its keys placed again (on the next nodes).
    fn fan_out(
        &self,
        keys: &[&[u8]],
        encode: impl Fn(Protocol, &[usize], &mut Vec<u8>, &mut Vec<Expect>) -> Result<(), Error>,
        on_event: &mut GroupEvent,
    ) -> Result<(), Error> {
        if !keys.iter().all(|key| valid_key(key)) {
            return Err(Error::InvalidKey);
        }
        self.refresh_if_due();
        let protocol = self.config.protocol;
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        let deadline = Instant::now() + self.config.retry_for;
        while !pending.is_empty() {
            let pending_keys: Vec<&[u8]> = pending.iter().map(|&i| keys[i]).collect();
            let groups = {
                let mut shared = self.lock();
                shared.topology.split(&pending_keys, Instant::now())
            };
            let mut sent = Vec::new();
            let mut unplaced = Vec::new();
            for (node, members) in groups {
                let members: Vec<usize> = members.into_iter().map(|m| pending[m]).collect();
                let Some(node) = node else {
                    return Err(Error::NoLiveNode);
                };
                let address = self.lock().topology.nodes()[node].address.clone();
                let pool = self.pool(&address);
                match pool.take(&self.config) {
                    Ok(mut lease) => {
                        let connection = lease.connection();
                        encode(protocol, &members, &mut connection.out, &mut connection.expects)?;
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
                let result = connection.receive(protocol, &mut |request, event| {
                    if failed.is_none() {
                        failed = on_event(&members, request, event).err();
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
        Ok(())
    }
}

/// The names of a key's extra copies: `key#i` for the first `i` whose node
/// holds no copy yet (not in the key's preference list, nor another extra
/// copy's), up to `extra_copies` of them; so each copy adds a node.
fn extra_copies(shared: &Shared, config: &HotKeyConfig, key: &[u8]) -> Vec<Vec<u8>> {
    let topology = &shared.topology;
    let mut holders = topology.preference(key, shared.copies as usize);
    let mut names = Vec::new();
    for i in 1..=64 {
        if names.len() == config.extra_copies as usize || holders.len() >= topology.nodes().len() {
            break;
        }
        let Some(name) = copy_key(key, i) else { break };
        if let Some(&node) = topology.preference(&name, 1).first()
            && !holders.contains(&node)
        {
            holders.push(node);
            names.push(name);
        }
    }
    names
}

/// A fan-out's event handler: the group's key indexes, the request's
/// place in the group, the event; an error fails the call.
type GroupEvent<'a> = dyn FnMut(&[usize], usize, Event) -> Result<(), Error> + 'a;

/// A write's flags, expiry and consistency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Store {
    pub flags: u32,
    /// Seconds (up to 30 days), or an absolute Unix time; 0: no expiry.
    pub exptime: u32,
    pub consistency: Consistency,
}

fn unexpected(request: &'static str, outcome: Outcome) -> Error {
    Error::UnexpectedReply {
        request,
        reply: format!("{outcome:?}"),
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

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
        let mut at = 0;
        for request in 0..self.expects.len() {
            loop {
                let decoded = protocol.decode(&mut self.expects[request], &self.input[at..]);
                match decoded {
                    Ok(Some((used, event))) => {
                        at += used;
                        let done = matches!(event, Event::Done(_));
                        on_event(request, event);
                        if done {
                            break;
                        }
                    }
                    Ok(None) => {
                        // Keep only the undecoded tail, then read more.
                        self.input.drain(..at);
                        at = 0;
                        let start = self.input.len();
                        self.input.resize(start + 16 * 1024, 0);
                        let read = self.stream.read(&mut self.input[start..]);
                        match read {
                            Ok(0) => {
                                let closed = io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection");
                                return Err(self.io_error(closed));
                            }
                            Ok(n) => self.input.truncate(start + n),
                            Err(error) if error.kind() == io::ErrorKind::Interrupted => self.input.truncate(start),
                            Err(error) => return Err(self.io_error(error)),
                        }
                    }
                    Err(source) => {
                        return Err(Error::Decode {
                            address: self.address.clone(),
                            source,
                        });
                    }
                }
            }
        }
        self.input.drain(..at);
        self.expects.clear();
        Ok(())
    }

    fn exchange(&mut self, protocol: Protocol, on_event: &mut dyn FnMut(usize, Event)) -> Result<(), Error> {
        self.send()?;
        self.receive(protocol, on_event)
    }
}
