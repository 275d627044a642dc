//! Routing: hash each key once, run it on the local shard or send it to the
//! owning core, and hand back outcomes in request order. Everything parsed
//! from one read that goes to the same core travels as one message.
//! The router knows keys and shards, not wire formats.

use std::cell::RefCell;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::channels::channel_mesh::{FullMesh, Receivers, Senders};

use super::Core;
use crate::hash::KeyHash;
use crate::request::{KeyOp, Outcome};
use crate::stats::CoreReport;
use crate::store::Shard;

/// A request to the core that owns the shard.
pub enum ToShard {
    /// Key operations, in the client's order, with their hashes.
    Ops {
        slot: u32,
        ops: Vec<(KeyHash, KeyOp<Vec<u8>>)>,
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
    /// `lru_crawler metadump`: the classes asked for (None: all).
    Metadump {
        slot: u32,
        classes: Option<Vec<usize>>,
    },
}

/// The owning core's answer.
pub enum FromShard {
    Outcomes { slot: u32, outcomes: Vec<Outcome<Vec<u8>>> },
    Report { slot: u32, report: Box<CoreReport> },
    Dump { slot: u32, lines: Vec<u8> },
    Done { slot: u32 },
}

impl FromShard {
    fn slot(&self) -> u32 {
        match *self {
            FromShard::Outcomes { slot, .. }
            | FromShard::Report { slot, .. }
            | FromShard::Dump { slot, .. }
            | FromShard::Done { slot } => slot,
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

    fn deliver(&mut self, peer: usize, reply: FromShard) {
        let slot = &mut self.slots[reply.slot() as usize];
        slot.replies.push((peer, reply));
        if slot.replies.len() >= slot.expected
            && let Some(waker) = slot.waker.take()
        {
            waker.wake();
        }
    }
}

/// A connection's reply slot, released when the connection ends.
pub struct ReplySlot {
    core: Rc<Core>,
    pub slot: u32,
}

impl ReplySlot {
    pub fn open(core: &Rc<Core>) -> ReplySlot {
        let slot = core.pending.borrow_mut().open();
        ReplySlot {
            core: core.clone(),
            slot,
        }
    }

    /// Waits until `expected` replies have arrived and takes them.
    async fn wait(&self, expected: usize) -> Vec<(usize, FromShard)> {
        self.core.pending.borrow_mut().slots[self.slot as usize].expected = expected;
        std::future::poll_fn(|cx| {
            let mut pending = self.core.pending.borrow_mut();
            let slot = &mut pending.slots[self.slot as usize];
            if slot.replies.len() >= expected {
                slot.expected = 0;
                Poll::Ready(std::mem::take(&mut slot.replies))
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
        ToShard::Ops { slot, ops } => {
            let mut shard = core.shard_now();
            let outcomes = ops
                .iter()
                .map(|(hash, op)| {
                    run_local(core, &mut shard, *hash, &op.as_borrowed(), |outcome| {
                        outcome.to_owned_outcome()
                    })
                })
                .collect();
            FromShard::Outcomes { slot, outcomes }
        }
        ToShard::FlushAll { slot, delay } => {
            flush_local(core, delay);
            FromShard::Done { slot }
        }
        ToShard::Report { slot } => FromShard::Report {
            slot,
            report: Box::new(CoreReport::of(core)),
        },
        ToShard::ResetStats { slot } => {
            reset_local_stats(core);
            FromShard::Done { slot }
        }
        ToShard::Verbosity { slot, level } => {
            core.verbosity.set(level);
            FromShard::Done { slot }
        }
        ToShard::Metadump { slot, classes } => {
            let mut lines = Vec::new();
            dump_local(core, classes.as_deref(), &mut lines);
            FromShard::Dump { slot, lines }
        }
    }
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

fn reset_local_stats(core: &Core) {
    core.shard.borrow_mut().reset_counters();
    core.counters.bytes_read.set(0);
    core.counters.bytes_written.set(0);
    core.counters.cmd_flush.set(0);
}

/// Executes key operations wherever their shards live and calls `each`
/// with every outcome in the order of `ops`. Remote operations go out as
/// one message per owning core; local ones run on this core's shard.
pub async fn execute(core: &Core, reply_slot: &ReplySlot, ops: &[KeyOp<&[u8]>], mut each: impl FnMut(usize, &Outcome<&[u8]>)) {
    // A replica refuses writes from clients (one atomic load per batch).
    let read_only = core.global.replication.is_read_only();
    let refused = |op: &KeyOp<&[u8]>| read_only && op.mutates();
    let Some(mesh) = &core.mesh else {
        // One core: everything is local, nothing to gather.
        let mut shard = core.shard_now();
        for (index, op) in ops.iter().enumerate() {
            if refused(op) {
                each(index, &Outcome::ReadOnly);
                continue;
            }
            run_local(core, &mut shard, KeyHash::of(op.key()), op, |outcome| each(index, outcome));
        }
        return;
    };
    let hashes: Vec<KeyHash> = ops.iter().map(|op| KeyHash::of(op.key())).collect();
    // Outcomes from each other core, in the order their ops were sent.
    let mut remote: Vec<std::vec::IntoIter<Outcome<Vec<u8>>>> = (0..core.cores).map(|_| Vec::new().into_iter()).collect();
    {
        let mut batches: Vec<Vec<(KeyHash, KeyOp<Vec<u8>>)>> = (0..core.cores).map(|_| Vec::new()).collect();
        for (op, hash) in ops.iter().zip(&hashes) {
            let owner = hash.shard(core.cores);
            if owner != core.id && !refused(op) {
                batches[owner].push((*hash, op.to_owned_op()));
            }
        }
        let mut sent = 0;
        for (peer, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                let message = ToShard::Ops {
                    slot: reply_slot.slot,
                    ops: batch,
                };
                if mesh.requests.send_to(peer, message).await.is_ok() {
                    sent += 1;
                }
            }
        }
        if sent > 0 {
            for (peer, reply) in reply_slot.wait(sent).await {
                if let FromShard::Outcomes { outcomes, .. } = reply {
                    remote[peer] = outcomes.into_iter();
                }
            }
        }
    }
    let mut shard = core.shard_now();
    for (index, (op, hash)) in ops.iter().zip(&hashes).enumerate() {
        let owner = hash.shard(core.cores);
        if refused(op) {
            each(index, &Outcome::ReadOnly);
        } else if owner == core.id {
            run_local(core, &mut shard, *hash, op, |outcome| each(index, outcome));
        } else {
            // A core that could not be reached answers like a failed store.
            let outcome = remote[owner].next().unwrap_or(Outcome::OutOfMemory);
            each(index, &outcome.as_borrowed());
        }
    }
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
    reply_slot.wait(sent).await.into_iter().map(|(_, reply)| reply).collect()
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

/// flush_all on every shard; false (and nothing flushed) on a read-only replica.
pub async fn flush_all(core: &Core, reply_slot: &ReplySlot, delay: i64) -> bool {
    if core.global.replication.is_read_only() {
        return false;
    }
    core.counters.cmd_flush.set(core.counters.cmd_flush.get() + 1);
    flush_local(core, delay);
    broadcast(core, reply_slot, |slot| ToShard::FlushAll { slot, delay }).await;
    true
}

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
    let mut total = CoreReport::of(core);
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
