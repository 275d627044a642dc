//! Routing: hash each key once, run it on the local shard or send it to the
//! owning core (in cluster mode first: to the node acting for it), and hand
//! back outcomes in request order. Everything parsed
//! from one read that goes to the same core travels as one message, an
//! `OpBatch`: its keys and values packed in one buffer, its outcomes and hit
//! values packed on the way back. A batch returns to the connection that
//! sent it and is reused, so forwarding allocates nothing once its buffers
//! have grown. The router knows keys and shards, not wire formats.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{FullMesh, Receivers, Senders};

use super::Core;
use crate::cluster::Placement;
use crate::hash::KeyHash;
use crate::report::CoreReport;
use crate::request::{GetOptions, KeyOp, Outcome, Refusal};
use crate::store::Shard;
use crate::store::prefix_stats::PrefixCounts;

/// Where a key or value sits in a batch's byte buffer.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn of(self, bytes: &[u8]) -> &[u8] {
        &bytes[self.start..self.end]
    }
}

/// Copies `data` to the end of `bytes` and says where it went.
fn pack(bytes: &mut Vec<u8>, data: &[u8]) -> Span {
    let start = bytes.len();
    bytes.extend_from_slice(data);
    Span { start, end: bytes.len() }
}

/// Buffers grown past this are dropped rather than kept for the next batch
/// (a huge value should not pin its memory to a connection).
const RETAINED_BATCH_BYTES: usize = 1 << 20;

/// One core's share of a connection's batch. Travels to the owning core
/// with `ops` and `bytes` filled, comes back with `outcomes` and `values`.
#[derive(Default)]
pub struct OpBatch {
    /// Key operations in the client's order, with their hashes.
    ops: Vec<(KeyHash, KeyOp<Span>)>,
    bytes: Vec<u8>,
    /// One outcome per op; hit values are spans of `values`.
    outcomes: Vec<Outcome<Span>>,
    values: Vec<u8>,
}

impl OpBatch {
    fn push(&mut self, hash: KeyHash, op: &KeyOp<&[u8]>) {
        let bytes = &mut self.bytes;
        self.ops.push((hash, op.map_bytes(|data| pack(bytes, data))));
    }

    /// Adds an outcome that came from another node, copying its value in.
    pub(super) fn push_outcome(&mut self, outcome: &Outcome<&[u8]>) {
        let values = &mut self.values;
        self.outcomes.push(outcome.map_value(|value| pack(values, value)));
    }

    pub(super) fn outcome_count(&self) -> usize {
        self.outcomes.len()
    }

    fn outcome(&self, index: usize) -> Option<Outcome<&[u8]>> {
        let outcome = self.outcomes.get(index)?;
        Some(outcome.map_value(|span| span.of(&self.values)))
    }

    /// Empties the batch for reuse, keeping its buffers unless one grew huge.
    fn clear(&mut self) {
        self.ops.clear();
        self.outcomes.clear();
        for buffer in [&mut self.bytes, &mut self.values] {
            buffer.clear();
            if buffer.capacity() > RETAINED_BATCH_BYTES {
                *buffer = Vec::new();
            }
        }
    }
}

/// A request to the core that owns the shard.
pub enum ToShard {
    Ops {
        slot: u32,
        batch: OpBatch,
    },
    FlushAll {
        slot: u32,
        delay: i64,
    },
    Report {
        slot: u32,
    },
    ResetStats {
        slot: u32,
    },
    Verbosity {
        slot: u32,
        level: u32,
    },
    /// `stats detail on|off`: the prefix delimiter, or None to stop.
    Detail {
        slot: u32,
        delimiter: Option<u8>,
    },
    /// `stats detail dump`.
    PrefixDump {
        slot: u32,
    },
    /// `lru_crawler metadump`: the classes asked for (None: all).
    Metadump {
        slot: u32,
        classes: Option<Vec<usize>>,
    },
    /// `wait`: where the shard's replication log stands.
    LogEnd {
        slot: u32,
    },
}

/// The owning core's answer.
pub enum FromShard {
    Outcomes {
        slot: u32,
        batch: OpBatch,
    },
    Report {
        slot: u32,
        report: Box<CoreReport>,
    },
    Dump {
        slot: u32,
        lines: Vec<u8>,
    },
    Prefixes {
        slot: u32,
        counts: Vec<(Vec<u8>, PrefixCounts)>,
    },
    Done {
        slot: u32,
    },
    LogEnd {
        slot: u32,
        offset: u64,
    },
}

impl FromShard {
    fn slot(&self) -> u32 {
        match *self {
            FromShard::Outcomes { slot, .. }
            | FromShard::Report { slot, .. }
            | FromShard::Dump { slot, .. }
            | FromShard::Prefixes { slot, .. }
            | FromShard::Done { slot }
            | FromShard::LogEnd { slot, .. } => slot,
        }
    }
}

/// This core's ends of the two channel meshes.
pub struct Mesh {
    requests: Senders<ToShard>,
    replies: Senders<FromShard>,
    receivers: RefCell<Option<(Receivers<ToShard>, Receivers<FromShard>)>>,
}

impl Mesh {
    pub async fn join(requests: FullMesh<ToShard>, replies: FullMesh<FromShard>) -> Mesh {
        let (request_senders, request_receivers) = requests.join().await.expect("joining the request mesh");
        let (reply_senders, reply_receivers) = replies.join().await.expect("joining the reply mesh");
        assert_eq!(
            request_senders.peer_id(),
            reply_senders.peer_id(),
            "meshes must agree on peer ids"
        );
        Mesh {
            requests: request_senders,
            replies: reply_senders,
            receivers: RefCell::new(Some((request_receivers, reply_receivers))),
        }
    }

    pub fn peer_id(&self) -> usize {
        self.requests.peer_id()
    }
}

/// Replies awaited by this core's connections. Each connection owns one slot
/// for its lifetime; the mesh reply tasks fill it and wake the connection.
#[derive(Default)]
pub struct Pending {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

#[derive(Default)]
struct Slot {
    expected: usize,
    replies: Vec<(usize, FromShard)>,
    waker: Option<Waker>,
}

impl Pending {
    pub fn open(&mut self) -> u32 {
        match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        }
    }

    pub fn close(&mut self, slot: u32) {
        self.slots[slot as usize] = Slot::default();
        self.free.push(slot);
    }

    pub(super) fn deliver(&mut self, peer: usize, reply: FromShard) {
        let slot = &mut self.slots[reply.slot() as usize];
        slot.replies.push((peer, reply));
        if slot.replies.len() >= slot.expected
            && let Some(waker) = slot.waker.take()
        {
            waker.wake();
        }
    }
}

/// A connection's reply slot, released when the connection ends. It also
/// keeps what the connection's forwarded batches are built in.
pub struct ReplySlot {
    core: Rc<Core>,
    pub slot: u32,
    forwarding: RefCell<Forwarding>,
    /// The key of the connection's last write (cluster mode), for `wait`.
    last_write: RefCell<Vec<u8>>,
}

/// A connection's lists for routing a batch over several cores and nodes,
/// reused from batch to batch.
#[derive(Default)]
struct Forwarding {
    routes: Vec<Route>,
    /// Per core, then per node: the batch going there, then its answers.
    batches: Vec<OpBatch>,
    /// Per core, then per node: how many of its answers have been handed out.
    answered: Vec<usize>,
    replies: Vec<(usize, FromShard)>,
    /// Per node: whether the batch has ops it acts for.
    nodes_used: Vec<bool>,
}

impl ReplySlot {
    pub fn open(core: &Rc<Core>) -> ReplySlot {
        let slot = core.pending.borrow_mut().open();
        ReplySlot {
            core: core.clone(),
            slot,
            forwarding: RefCell::default(),
            last_write: RefCell::default(),
        }
    }

    /// Waits until `expected` replies have arrived and moves them into
    /// `into` (an empty list whose allocation the slot keeps for next time).
    async fn wait(&self, expected: usize, into: &mut Vec<(usize, FromShard)>) {
        self.core.pending.borrow_mut().slots[self.slot as usize].expected = expected;
        std::future::poll_fn(|cx| {
            let mut pending = self.core.pending.borrow_mut();
            let slot = &mut pending.slots[self.slot as usize];
            if slot.replies.len() >= expected {
                slot.expected = 0;
                std::mem::swap(&mut slot.replies, into);
                Poll::Ready(())
            } else {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for ReplySlot {
    fn drop(&mut self) {
        self.core.pending.borrow_mut().close(self.slot);
    }
}

/// Starts the tasks that serve other cores' requests and collect replies.
pub fn spawn_mesh_tasks(core: &Rc<Core>) {
    let Some(mesh) = &core.mesh else {
        return;
    };
    let Some((mut requests, mut replies)) = mesh.receivers.borrow_mut().take() else {
        return;
    };
    for (peer, receiver) in requests.streams() {
        let core = core.clone();
        glommio::spawn_local(async move {
            while let Some(request) = receiver.recv().await {
                let reply = serve_request(&core, request);
                let mesh = core.mesh.as_ref().expect("mesh");
                if mesh.replies.send_to(peer, reply).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    for (peer, receiver) in replies.streams() {
        let core = core.clone();
        glommio::spawn_local(async move {
            while let Some(reply) = receiver.recv().await {
                core.pending.borrow_mut().deliver(peer, reply);
            }
        })
        .detach();
    }
}

/// Runs another core's request on this core's shard.
fn serve_request(core: &Core, request: ToShard) -> FromShard {
    match request {
        ToShard::Ops { slot, mut batch } => {
            let mut shard = core.shard_now();
            let OpBatch {
                ops,
                bytes,
                outcomes,
                values,
            } = &mut batch;
            for (hash, op) in ops.iter() {
                let op = op.map_bytes(|span| span.of(bytes));
                let outcome = run_local(core, &mut shard, *hash, &op, |outcome| {
                    outcome.map_value(|value| pack(values, value))
                });
                outcomes.push(outcome);
            }
            FromShard::Outcomes { slot, batch }
        }
        ToShard::FlushAll { slot, delay } => {
            flush_local(core, delay);
            FromShard::Done { slot }
        }
        ToShard::Report { slot } => FromShard::Report {
            slot,
            report: Box::new(core.report()),
        },
        ToShard::ResetStats { slot } => {
            reset_local_stats(core);
            FromShard::Done { slot }
        }
        ToShard::Verbosity { slot, level } => {
            core.verbosity.set(level);
            FromShard::Done { slot }
        }
        ToShard::Detail { slot, delimiter } => {
            core.shard.borrow_mut().set_prefix_stats(delimiter);
            FromShard::Done { slot }
        }
        ToShard::PrefixDump { slot } => FromShard::Prefixes {
            slot,
            counts: local_prefixes(core),
        },
        ToShard::Metadump { slot, classes } => {
            let mut lines = Vec::new();
            dump_local(core, classes.as_deref(), &mut lines);
            FromShard::Dump { slot, lines }
        }
        ToShard::LogEnd { slot } => FromShard::LogEnd {
            slot,
            offset: local_log_end(core),
        },
    }
}

fn local_log_end(core: &Core) -> u64 {
    core.replication
        .as_ref()
        .map_or(0, |replication| replication.log.borrow().end())
}

fn dump_local(core: &Core, classes: Option<&[usize]>, out: &mut Vec<u8>) {
    core.shard_now()
        .metadump(|class| classes.is_none_or(|wanted| wanted.contains(&class)), out);
}

/// Every shard's metadump lines, this core's first.
pub async fn metadump(core: &Core, reply_slot: &ReplySlot, classes: Option<Vec<usize>>, out: &mut Vec<u8>) {
    dump_local(core, classes.as_deref(), out);
    let replies = broadcast(core, reply_slot, |slot| ToShard::Metadump {
        slot,
        classes: classes.clone(),
    })
    .await;
    for reply in replies {
        if let FromShard::Dump { lines, .. } = reply {
            out.extend_from_slice(&lines);
        }
    }
}

fn local_prefixes(core: &Core) -> Vec<(Vec<u8>, PrefixCounts)> {
    let shard = core.shard.borrow();
    shard
        .prefix_stats()
        .counts()
        .map(|(prefix, counts)| (prefix.to_vec(), *counts))
        .collect()
}

/// `stats detail on|off` on every shard.
pub async fn set_detail(core: &Core, reply_slot: &ReplySlot, on: bool) {
    let delimiter = on.then_some(core.global.config.prefix_delimiter);
    core.shard.borrow_mut().set_prefix_stats(delimiter);
    broadcast(core, reply_slot, |slot| ToShard::Detail { slot, delimiter }).await;
}

/// `stats detail dump`: every shard's counts, summed per prefix, in prefix order.
pub async fn prefix_stats(core: &Core, reply_slot: &ReplySlot) -> BTreeMap<Vec<u8>, PrefixCounts> {
    let mut merged = BTreeMap::new();
    let mut add = |counts: Vec<(Vec<u8>, PrefixCounts)>| {
        for (prefix, counts) in counts {
            merged.entry(prefix).or_insert_with(PrefixCounts::default).add(&counts);
        }
    };
    add(local_prefixes(core));
    for reply in broadcast(core, reply_slot, |slot| ToShard::PrefixDump { slot }).await {
        if let FromShard::Prefixes { counts, .. } = reply {
            add(counts);
        }
    }
    merged
}

fn reset_local_stats(core: &Core) {
    core.shard.borrow_mut().reset_counters();
    core.counters.bytes_read.set(0);
    core.counters.bytes_written.set(0);
    core.counters.cmd_flush.set(0);
}

/// Where one operation of a batch runs.
#[derive(Clone, Copy)]
enum Route {
    /// Not run: a write on a read-only replica, or the partition policy.
    Refused(Refusal),
    /// On a shard of this node: this core's or another core's.
    Shard(KeyHash),
    /// On the cluster node acting for the key.
    Node(usize),
}

/// Whether `execute` sends ops of keys another cluster node acts for to
/// that node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Forward {
    /// Never: ops another node sent here run here (or are refused).
    Never,
    /// A client's ops: to the node acting for them, which may send one on
    /// once more if its view is ahead of this node's (peer_session.rs).
    Client,
    /// Ops another node sent here, sent on once (marked relayed): the node
    /// they reach runs them or refuses them, never sends them on.
    Relay,
}

/// Executes key operations wherever their keys live and calls `each` with
/// every outcome in the order of `ops`. Remote operations go out as one
/// message per owning core and one batch of frames per node acting for
/// them (cluster mode, unless `Forward::Never`); local ones run on this
/// core's shard.
pub async fn execute(
    core: &Core,
    reply_slot: &ReplySlot,
    ops: &[KeyOp<&[u8]>],
    forward: Forward,
    mut each: impl FnMut(usize, &Outcome<&[u8]>),
) {
    // A replica refuses writes from clients, and a cluster node without a
    // majority what its partition policy says (one atomic load each per batch).
    let read_only = core.global.replication.is_read_only();
    let minority = core
        .global
        .cluster
        .as_ref()
        .map(|cluster| &cluster.membership)
        .filter(|membership| !membership.has_majority());
    let refused = |op: &KeyOp<&[u8]>| {
        if read_only && op.mutates() {
            return Some(Refusal::ReadOnly);
        }
        minority.and_then(|membership| membership.refusal(op.mutates()))
    };
    let cluster = match (&core.global.cluster, &core.links) {
        (Some(cluster), Some(links)) if forward != Forward::Never => Some((cluster, links)),
        _ => None,
    };
    if forward == Forward::Client
        && cluster.is_some()
        && let Some(op) = ops.iter().rev().find(|op| op.mutates())
    {
        // One copy per batch, into a buffer the connection keeps.
        let mut last = reply_slot.last_write.borrow_mut();
        last.clear();
        last.extend_from_slice(op.key());
    }
    if core.mesh.is_none() && cluster.is_none() {
        // One core and no other node: everything is local, nothing to gather.
        let mut shard = core.shard_now();
        for (index, op) in ops.iter().enumerate() {
            if let Some(refusal) = refused(op) {
                each(index, &Outcome::Refused(refusal));
                continue;
            }
            run_local(core, &mut shard, KeyHash::of(op.key()), op, |outcome| each(index, outcome));
        }
        return;
    }
    // The lists are taken out for the batch (it awaits) and put back after.
    let mut forwarding = reply_slot.forwarding.take();
    let Forwarding {
        routes,
        batches,
        answered,
        replies,
        nodes_used,
    } = &mut forwarding;
    // The node list may grow while the batch is placed: a node of a slot
    // past the count read here widens the tables.
    nodes_used.clear();
    nodes_used.resize(cluster.map_or(0, |(cluster, _)| cluster.slots()), false);
    routes.clear();
    routes.extend(ops.iter().map(|op| {
        if let Some(refusal) = refused(op) {
            return Route::Refused(refusal);
        }
        if let Some((cluster, _)) = cluster {
            match cluster.place(op.key(), op.mutates()) {
                Placement::Here => {}
                Placement::Node(node) => {
                    if node >= nodes_used.len() {
                        nodes_used.resize(node + 1, false);
                    }
                    nodes_used[node] = true;
                    return Route::Node(node);
                }
                Placement::Handover => return Route::Refused(Refusal::Handover),
            }
        }
        Route::Shard(KeyHash::of(op.key()))
    }));
    let node_count = nodes_used.len();
    let peers = core.cores + node_count;
    batches.resize_with(peers, OpBatch::default);
    answered.clear();
    answered.resize(peers, 0);
    for (op, route) in ops.iter().zip(routes.iter()) {
        if let Route::Shard(hash) = *route
            && hash.shard(core.cores) != core.id
        {
            batches[hash.shard(core.cores)].push(hash, op);
        }
    }
    let mut sent = 0;
    if let Some(mesh) = &core.mesh {
        for (peer, batch) in batches[..core.cores].iter_mut().enumerate() {
            if !batch.ops.is_empty() {
                let message = ToShard::Ops {
                    slot: reply_slot.slot,
                    batch: std::mem::take(batch),
                };
                if mesh.requests.send_to(peer, message).await.is_ok() {
                    sent += 1;
                }
            }
        }
    }
    if let Some((cluster, links)) = cluster {
        let forwarded = routes.iter().filter(|route| matches!(route, Route::Node(_))).count();
        cluster.forwarded_out.fetch_add(forwarded as u64, Ordering::Relaxed);
        for node in (0..node_count).filter(|&node| nodes_used[node]) {
            let for_node = ops
                .iter()
                .zip(routes.iter())
                .filter(move |(_, route)| matches!(route, Route::Node(n) if *n == node))
                .map(|(op, _)| op);
            let batch = std::mem::take(&mut batches[core.cores + node]);
            match links.send(node, reply_slot.slot, for_node, forward == Forward::Relay, batch) {
                Ok(()) => sent += 1,
                Err(batch) => batches[core.cores + node] = batch,
            }
        }
    }
    if sent > 0 {
        reply_slot.wait(sent, replies).await;
        for (peer, reply) in replies.drain(..) {
            if let FromShard::Outcomes { batch, .. } = reply {
                batches[peer] = batch;
            }
        }
    }
    let mut shard = core.shard_now();
    for (index, (op, route)) in ops.iter().zip(routes.iter()).enumerate() {
        let (peer, unanswered) = match *route {
            Route::Refused(refusal) => {
                each(index, &Outcome::Refused(refusal));
                continue;
            }
            Route::Shard(hash) if hash.shard(core.cores) == core.id => {
                run_local(core, &mut shard, hash, op, |outcome| each(index, outcome));
                continue;
            }
            // A core that could not be reached answers like a failed store.
            Route::Shard(hash) => (hash.shard(core.cores), Outcome::OutOfMemory),
            Route::Node(node) => (core.cores + node, Outcome::Refused(Refusal::Unreachable)),
        };
        let outcome = batches[peer].outcome(answered[peer]).unwrap_or(unanswered);
        answered[peer] += 1;
        each(index, &outcome);
    }
    batches.iter_mut().for_each(OpBatch::clear);
    reply_slot.forwarding.replace(forwarding);
}

/// Sends a request to every other core and waits for all their answers.
async fn broadcast(core: &Core, reply_slot: &ReplySlot, message: impl Fn(u32) -> ToShard) -> Vec<FromShard> {
    let Some(mesh) = &core.mesh else {
        return Vec::new();
    };
    let mut sent = 0;
    for peer in (0..core.cores).filter(|&peer| peer != core.id) {
        if mesh.requests.send_to(peer, message(reply_slot.slot)).await.is_ok() {
            sent += 1;
        }
    }
    let mut replies = Vec::new();
    reply_slot.wait(sent, &mut replies).await;
    replies.into_iter().map(|(_, reply)| reply).collect()
}

/// Runs a key operation on this core's shard, hands its outcome to
/// `deliver` (whose result it returns), then records what it left behind
/// in the shard's replication log (writes only; nothing when replication
/// is off). Every key operation a shard executes goes through here.
#[inline]
fn run_local<R>(
    core: &Core,
    shard: &mut Shard,
    hash: KeyHash,
    op: &KeyOp<&[u8]>,
    deliver: impl FnOnce(&Outcome<&[u8]>) -> R,
) -> R {
    let delivered = deliver(&shard.execute(hash, op));
    if let Some(replication) = &core.replication {
        replication.record_op(shard, hash, op);
    }
    delivered
}

fn flush_local(core: &Core, delay: i64) {
    let mut shard = core.shard_now();
    shard.flush_all(delay);
    if let Some(replication) = &core.replication {
        replication.record_flush(shard.flush_effective_unix(delay));
    }
}

/// flush_all on every shard, and in cluster mode (when `forward`) on every
/// other node, which flushes its own shards only; false (and nothing
/// flushed) on a read-only replica. A node that cannot be reached is not
/// waited for.
pub async fn flush_all(core: &Core, reply_slot: &ReplySlot, delay: i64, forward: bool) -> bool {
    if core.global.replication.is_read_only() {
        return false;
    }
    core.counters.cmd_flush.set(core.counters.cmd_flush.get() + 1);
    flush_local(core, delay);
    broadcast(core, reply_slot, |slot| ToShard::FlushAll { slot, delay }).await;
    if let Some(links) = core.links.as_ref().filter(|_| forward) {
        let sent = links
            .nodes()
            .filter(|&node| links.flush_all(node, reply_slot.slot, delay, OpBatch::default()).is_ok())
            .count();
        let mut replies = Vec::new();
        reply_slot.wait(sent, &mut replies).await;
    }
    true
}

/// `wait`: how many copies of the connection's last write there are,
/// counting the node acting for its key, once there are `copies` or the
/// timeout has passed. 0 before the connection's first write, or when the
/// node acting for the key cannot be asked. The acting node is asked where
/// the key's shard log stands, then how many copies have applied that far,
/// again every WAIT_POLL: each question is answered at once, so a wait
/// never holds up the node link it travels on.
pub async fn wait(core: &Core, reply_slot: &ReplySlot, copies: u32, timeout: Duration) -> u32 {
    let Some(cluster) = &core.global.cluster else {
        return 0;
    };
    let key = reply_slot.last_write.borrow().clone();
    if key.is_empty() {
        return 0;
    }
    let deadline = Instant::now() + timeout;
    let acting = cluster.acting_for(&key);
    let ask = |at: Option<u64>| {
        let key = &key;
        async move {
            if cluster.is_me(acting) {
                return Some(copies_here(core, reply_slot, key, at).await);
            }
            let links = core.links.as_ref()?;
            links.copies(acting, reply_slot.slot, key, at, OpBatch::default()).ok()?;
            let mut replies = Vec::new();
            reply_slot.wait(1, &mut replies).await;
            match replies.pop() {
                Some((_, FromShard::Outcomes { batch, .. })) => match batch.outcome(0) {
                    Some(Outcome::Number { value, .. }) => Some(value),
                    _ => None,
                },
                _ => None,
            }
        }
    };
    let Some(offset) = ask(None).await else {
        return 0;
    };
    loop {
        let Some(count) = ask(Some(offset)).await else {
            return 0;
        };
        let count = count as u32;
        let now = Instant::now();
        if count >= copies || now >= deadline {
            return count;
        }
        glommio::timer::sleep(WAIT_POLL.min(deadline - now)).await;
    }
}

/// For a key this node acts for: with `at` None, where its shard's log
/// stands now (at or past its last write); with `at`, how many copies have
/// applied the log that far: this node, then the other nodes of the key's
/// preference list in order, as long as each one's acks reached it. In
/// order, so that the node that takes over if this one dies (the next one)
/// is among those counted.
pub async fn copies_here(core: &Core, reply_slot: &ReplySlot, key: &[u8], at: Option<u64>) -> u64 {
    let Some(cluster) = &core.global.cluster else {
        return 0;
    };
    let shard = KeyHash::of(key).shard(core.cores);
    let Some(offset) = at else {
        if shard == core.id {
            return local_log_end(core);
        }
        let Some(mesh) = &core.mesh else {
            return 0;
        };
        if mesh
            .requests
            .send_to(shard, ToShard::LogEnd { slot: reply_slot.slot })
            .await
            .is_err()
        {
            return 0;
        }
        let mut replies = Vec::new();
        reply_slot.wait(1, &mut replies).await;
        return match replies.pop() {
            Some((_, FromShard::LogEnd { offset, .. })) => offset,
            _ => 0,
        };
    };
    let holders = cluster
        .preference_list(key)
        .into_iter()
        .filter(|&node| !cluster.is_me(node))
        .take_while(|&node| cluster.acked(node, shard) >= offset)
        .count();
    1 + holders as u64
}

/// A key's copy on one node, as a quorum read found it.
pub struct FoundCopy {
    pub client_flags: u32,
    pub cas: u64,
    pub value: Vec<u8>,
}

/// What `quorum_get` found.
pub struct QuorumRead {
    /// The copy with the largest CAS among those asked (None: a miss on each).
    pub newest: Option<FoundCopy>,
    /// Some copy asked was older (or missing), and the node acting for the
    /// key, which holds the newest, was asked to send its state again.
    pub repaired: bool,
}

/// A copy, a miss (Ok(None)), or no answer (Err: refused, unreachable).
fn found(outcome: &Outcome<&[u8]>) -> Result<Option<FoundCopy>, ()> {
    match outcome {
        Outcome::Hit { info, value } => Ok(Some(FoundCopy {
            client_flags: info.client_flags,
            cas: info.cas,
            value: value.to_vec(),
        })),
        Outcome::Miss => Ok(None),
        _ => Err(()),
    }
}

/// This node's own copy of `key`, whether or not it acts for it: a get
/// run here, never forwarded (`cluster local`).
pub async fn local_get(core: &Core, reply_slot: &ReplySlot, key: &[u8]) -> Option<FoundCopy> {
    let look = KeyOp::Get {
        key,
        options: GetOptions::default(),
    };
    let mut copy = None;
    execute(core, reply_slot, std::slice::from_ref(&look), Forward::Never, |_, outcome| {
        copy = found(outcome).ok().flatten()
    })
    .await;
    copy
}

/// A read that asks a majority of the key's live preference list, and the
/// node acting for it, for their own copies, and returns the one with the
/// largest CAS: the newest write (a node acting for a key gives out CAS
/// values above every one it applied). When a copy asked is older or
/// missing and the acting node's is the newest, the acting node logs the
/// key's state again, which every copy applies. None when fewer than a
/// majority of the preference list answered.
pub async fn quorum_get(core: &Core, reply_slot: &ReplySlot, key: &[u8]) -> Option<QuorumRead> {
    let cluster = core.global.cluster.as_ref()?;
    let acting = cluster.acting_for(key);
    let listed: Vec<usize> = cluster.preference_list(key);
    let quorum = listed.len() / 2 + 1;
    let mut asked: Vec<usize> = listed.iter().copied().take(quorum).collect();
    if !asked.contains(&acting) {
        asked.push(acting);
    }
    let mut copies: Vec<(usize, Option<FoundCopy>)> = Vec::with_capacity(asked.len());
    if let Some(&me) = asked.iter().find(|&&node| cluster.is_me(node)) {
        let look = KeyOp::Get {
            key,
            options: GetOptions {
                peek: true,
                ..GetOptions::default()
            },
        };
        let mut answer = Err(());
        execute(core, reply_slot, std::slice::from_ref(&look), Forward::Never, |_, outcome| {
            answer = found(outcome)
        })
        .await;
        if let Ok(copy) = answer {
            copies.push((me, copy));
        }
    }
    // The other nodes all at once; each answers whether or not it acts.
    let mut sent = 0;
    if let Some(links) = &core.links {
        for &node in asked.iter().filter(|&&node| !cluster.is_me(node)) {
            if links.copy_of(node, reply_slot.slot, key, OpBatch::default()).is_ok() {
                sent += 1;
            }
        }
    }
    let mut replies = Vec::new();
    if sent > 0 {
        reply_slot.wait(sent, &mut replies).await;
    }
    for (peer, reply) in replies {
        if let FromShard::Outcomes { batch, .. } = reply
            && let Some(Ok(copy)) = batch.outcome(0).map(|outcome| found(&outcome))
        {
            copies.push((peer - core.cores, copy));
        }
    }
    if copies.iter().filter(|(node, _)| listed.contains(node)).count() < quorum {
        return None;
    }
    let cas_of = |copy: &Option<FoundCopy>| copy.as_ref().map(|copy| copy.cas);
    let newest_at = (0..copies.len()).max_by_key(|&at| cas_of(&copies[at].1))?;
    let newest_cas = cas_of(&copies[newest_at].1);
    let stale = copies.iter().any(|(_, copy)| cas_of(copy) != newest_cas);
    let acting_newest = copies
        .iter()
        .any(|(node, copy)| *node == acting && cas_of(copy) == newest_cas);
    let repaired = stale && acting_newest;
    if repaired {
        let resend = KeyOp::Get {
            key,
            options: GetOptions {
                peek: true,
                resend: true,
                ..GetOptions::default()
            },
        };
        execute(core, reply_slot, std::slice::from_ref(&resend), Forward::Client, |_, _| {}).await;
        cluster.quorum_repairs.fetch_add(1, Ordering::Relaxed);
    }
    cluster.quorum_reads.fetch_add(1, Ordering::Relaxed);
    let newest = copies.swap_remove(newest_at).1;
    Some(QuorumRead { newest, repaired })
}

/// How often `wait` looks at the copies' acks.
const WAIT_POLL: Duration = Duration::from_millis(1);

pub async fn verbosity(core: &Core, reply_slot: &ReplySlot, level: u32) {
    core.verbosity.set(level);
    broadcast(core, reply_slot, |slot| ToShard::Verbosity { slot, level }).await;
}

pub async fn reset_stats(core: &Core, reply_slot: &ReplySlot) {
    reset_local_stats(core);
    broadcast(core, reply_slot, |slot| ToShard::ResetStats { slot }).await;
}

/// Every core's report, summed.
pub async fn report(core: &Core, reply_slot: &ReplySlot) -> CoreReport {
    let mut total = core.report();
    for reply in broadcast(core, reply_slot, |slot| ToShard::Report { slot }).await {
        if let FromShard::Report { report, .. } = reply {
            total.add(&report);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{ItemInfo, StoreMode};

    #[test]
    fn a_batch_carries_ops_and_outcomes_as_spans_and_keeps_its_buffers() {
        let set = KeyOp::Store {
            mode: StoreMode::Set,
            key: &b"alpha"[..],
            client_flags: 5,
            exptime: 0,
            value: &b"one"[..],
            options: Default::default(),
        };
        let get = KeyOp::Get {
            key: &b"beta"[..],
            options: Default::default(),
        };
        let mut batch = OpBatch::default();
        batch.push(KeyHash::of(b"alpha"), &set);
        batch.push(KeyHash::of(b"beta"), &get);
        let unpacked: Vec<KeyOp<&[u8]>> = batch
            .ops
            .iter()
            .map(|(_, op)| op.map_bytes(|span| span.of(&batch.bytes)))
            .collect();
        assert_eq!(unpacked, vec![set, get]);
        assert_eq!(batch.ops[1].0, KeyHash::of(b"beta"));

        // The owning core's answers.
        batch.outcomes.push(Outcome::Stored { cas: 1, value_len: 3 });
        let value = pack(&mut batch.values, b"two");
        batch.outcomes.push(Outcome::Hit {
            info: ItemInfo::default(),
            value,
        });
        assert_eq!(batch.outcome(0), Some(Outcome::Stored { cas: 1, value_len: 3 }));
        let hit = Outcome::Hit {
            info: ItemInfo::default(),
            value: &b"two"[..],
        };
        assert_eq!(batch.outcome(1), Some(hit));
        assert_eq!(batch.outcome(2), None, "an op without an answer");

        let capacity = batch.bytes.capacity();
        batch.clear();
        assert!(batch.ops.is_empty() && batch.outcomes.is_empty() && batch.bytes.is_empty() && batch.values.is_empty());
        assert_eq!(batch.bytes.capacity(), capacity, "kept for the next batch");
        pack(&mut batch.values, &vec![0; RETAINED_BATCH_BYTES + 1]);
        batch.clear();
        assert_eq!(batch.values.capacity(), 0, "a huge buffer is not kept");
    }

    #[test]
    fn reply_slots_collect_their_own_replies_and_are_reused() {
        let mut pending = Pending::default();
        let first = pending.open();
        let second = pending.open();
        assert_ne!(first, second);
        pending.slots[first as usize].expected = 2;
        pending.deliver(1, FromShard::Done { slot: first });
        pending.deliver(3, FromShard::Done { slot: second });
        pending.deliver(2, FromShard::Done { slot: first });
        let peers: Vec<usize> = pending.slots[first as usize].replies.iter().map(|(peer, _)| *peer).collect();
        assert_eq!(peers, vec![1, 2], "replies kept in arrival order, per slot");
        assert_eq!(pending.slots[second as usize].replies.len(), 1);
        pending.close(first);
        assert!(pending.slots[first as usize].replies.is_empty(), "a closed slot is emptied");
        assert_eq!(pending.open(), first, "and reused");
    }
}
