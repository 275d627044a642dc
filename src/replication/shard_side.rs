//! The worker core's part of replication: the shard's log (records of
//! the changes this core applied, handed to the replication core every
//! millisecond), snapshot slices, and applying a primary's records.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::{SharedReceiver, SharedSender};

use super::record::Record;
use super::{Notify, ToReplication, ToWorker};
use crate::cluster::Cluster;
use crate::cluster::membership::View;
use crate::global::Global;
use crate::hash::KeyHash;
use crate::request::KeyOp;
use crate::store::{Replicated, Shard};

/// What a worker core gives its replication tasks (server::Core is one):
/// replication knows nothing of the server's sockets and connections.
pub trait Worker: 'static {
    fn shard_id(&self) -> usize;
    /// The shard, with its clock brought up to date.
    fn shard_now(&self) -> std::cell::RefMut<'_, Shard>;
    fn replication(&self) -> Option<&ShardReplication>;
    fn global(&self) -> &Global;
}

/// How often new log bytes are handed over while writes are flowing, and
/// while idle.
const FLUSH_BUSY: Duration = Duration::from_millis(1);
const FLUSH_IDLE: Duration = Duration::from_millis(10);
/// Bytes of keys and values per snapshot slice.
const SLICE_BYTES: usize = 64 * 1024;

/// The log of one shard as its core writes it.
pub struct ShardLog {
    /// Records not yet handed to the replication core.
    pending: Vec<u8>,
    /// Offset just past the last record written.
    end: u64,
    /// Pending bytes beyond this are dropped (the replication core is not
    /// keeping up); the offset still advances, so replicas resync fully.
    limit: usize,
    /// Bytes were dropped: the replication core must hear where the log
    /// continues even if nothing more is written.
    dropped: bool,
    /// When the oldest pending record was written (lag is measured from it).
    since: Option<Instant>,
}

/// The hand-over buffer holds at least this much, whatever the backlog size
/// (the backlog keeps its newest bytes of a larger chunk).
const MIN_PENDING_LIMIT: usize = 16 << 20;

impl ShardLog {
    pub fn new(backlog: usize) -> ShardLog {
        ShardLog {
            pending: Vec::new(),
            end: 0,
            limit: backlog.max(MIN_PENDING_LIMIT),
            dropped: false,
            since: None,
        }
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    pub fn append(&mut self, record: Record<'_>) {
        self.append_marked(record, false);
    }

    /// Appends a record, marked relayed if it was applied from another
    /// cluster node (record.rs).
    pub fn append_marked(&mut self, record: Record<'_>, relayed: bool) {
        let before = self.pending.len();
        if before == 0 && self.since.is_none() {
            self.since = Some(Instant::now());
        }
        if relayed {
            record.encode_relayed(&mut self.pending);
        } else {
            record.encode(&mut self.pending);
        }
        self.end += (self.pending.len() - before) as u64;
        if self.pending.len() > self.limit {
            self.pending.clear();
            self.dropped = true;
        }
    }

    /// The key's state as the shard now holds it: a set, or a delete.
    pub fn append_state(&mut self, shard: &Shard, hash: KeyHash, key: &[u8]) {
        match shard.item_state(hash, key) {
            Some(state) => self.append(Record::Set(state)),
            None => self.append(Record::Delete { key }),
        }
    }

    /// The pending bytes as a message, if there are any (an empty one
    /// after a drop: it moves the backlog to where the log continues).
    pub fn take_chunk(&mut self) -> Option<ToReplication> {
        if self.pending.is_empty() && !self.dropped {
            return None;
        }
        self.dropped = false;
        let bytes = std::mem::take(&mut self.pending);
        Some(ToReplication::Log {
            offset: self.end - bytes.len() as u64,
            bytes,
            since: self.since.take().unwrap_or_else(Instant::now),
        })
    }
}

/// A worker core's replication state.
pub struct ShardReplication {
    pub log: RefCell<ShardLog>,
    /// Messages for the replication core, in order.
    outbox: RefCell<VecDeque<ToReplication>>,
    /// Replies (slices, applied offsets) go out at once, not at the next tick.
    reply_ready: Notify,
    channels: Cell<Option<(SharedSender<ToReplication>, SharedReceiver<ToWorker>)>>,
}

impl ShardReplication {
    pub fn new(backlog: usize, to_core: SharedSender<ToReplication>, from_core: SharedReceiver<ToWorker>) -> ShardReplication {
        ShardReplication {
            log: RefCell::new(ShardLog::new(backlog)),
            outbox: RefCell::new(VecDeque::new()),
            reply_ready: Notify::default(),
            channels: Cell::new(Some((to_core, from_core))),
        }
    }

    /// Logs what a key operation left behind, if it was a write (or a
    /// repair that re-sends it).
    #[inline]
    pub fn record_op(&self, shard: &Shard, hash: KeyHash, op: &KeyOp<&[u8]>) {
        if op.logs_state() {
            self.log.borrow_mut().append_state(shard, hash, op.key());
        }
    }

    pub fn record_flush(&self, effective_unix: i64) {
        self.log.borrow_mut().append(Record::Flush { effective_unix });
    }

    /// Moves pending log bytes to the outbox (before anything that must
    /// come after them).
    fn flush_log(&self) {
        if let Some(chunk) = self.log.borrow_mut().take_chunk() {
            self.outbox.borrow_mut().push_back(chunk);
        }
    }

    /// Queues a reply after the log written so far, and wakes the sender.
    fn reply(&self, message: ToReplication) {
        self.flush_log();
        self.outbox.borrow_mut().push_back(message);
        self.reply_ready.notify();
    }
}

/// Starts the worker's two replication tasks: one hands the log and
/// replies to the replication core, one serves its requests.
pub fn spawn_tasks<W: Worker>(core: &Rc<W>) {
    let Some(replication) = core.replication() else {
        return;
    };
    let Some((to_core, from_core)) = replication.channels.take() else {
        return;
    };
    let sender_core = core.clone();
    glommio::spawn_local(async move {
        let sender = to_core.connect().await;
        let replication = sender_core.replication().expect("replication");
        if sender
            .send(ToReplication::Hello {
                shard: sender_core.shard_id(),
            })
            .await
            .is_err()
        {
            return;
        }
        let mut idle_turns = 0u32;
        loop {
            let epoch = replication.reply_ready.epoch();
            replication.flush_log();
            let mut sent_any = false;
            loop {
                let message = replication.outbox.borrow_mut().pop_front();
                let Some(message) = message else { break };
                sent_any = true;
                if sender.send(message).await.is_err() {
                    return;
                }
            }
            idle_turns = if sent_any { 0 } else { idle_turns.saturating_add(1) };
            let pause = if idle_turns > 100 { FLUSH_IDLE } else { FLUSH_BUSY };
            futures_lite::future::or(replication.reply_ready.changed_since(epoch), glommio::timer::sleep(pause)).await;
        }
    })
    .detach();

    let core = core.clone();
    glommio::spawn_local(async move {
        let receiver = from_core.connect().await;
        while let Some(message) = receiver.recv().await {
            serve(&*core, message);
        }
    })
    .detach();
}

fn serve(core: &impl Worker, message: ToWorker) {
    let replication = core.replication().expect("replication");
    match message {
        ToWorker::Snapshot {
            follower,
            attempt,
            cursor,
        } => {
            replication.flush_log();
            let started = Instant::now();
            let shard = core.shard_now();
            let mut records = Vec::new();
            let mut cursor = cursor;
            let more = shard.visit_items(&mut cursor, SLICE_BYTES, |state| Record::Set(state).encode(&mut records));
            let at_offset = replication.log.borrow().end();
            replication.reply(ToReplication::Slice {
                follower,
                attempt,
                at_offset,
                records,
                next_cursor: more.then_some(cursor),
                took: started.elapsed(),
            });
        }
        ToWorker::Apply {
            source,
            generation,
            primary_shard,
            primary_shards,
            offset,
            records,
            snapshot,
        } => {
            let from = Source::new(core, source, primary_shard, primary_shards);
            apply_and_report(core, generation, &from, offset, |shard, log| {
                for (hash, record) in HashedRecords(&records) {
                    apply(shard, log, hash, record, &from, snapshot);
                }
            })
        }
        ToWorker::DropShard {
            source,
            generation,
            primary_shard,
            primary_shards,
            offset,
            view,
        } => {
            let from = Source::new(core, source, primary_shard, primary_shards);
            apply_and_report(core, generation, &from, offset, |shard, log| {
                if from.cluster.is_none() {
                    // This host's own flush marks (from before it followed)
                    // must not hide what the primary sends.
                    shard.forget_flush();
                }
                drop_source_shard(shard, log, &from, view.as_ref());
            })
        }
    }
}

/// Where records come from: one shard of a primary, or of another cluster
/// node (whose records are only the keys it acts for).
struct Source<'a> {
    index: usize,
    primary_shard: usize,
    primary_shards: usize,
    cluster: Option<&'a Cluster>,
}

impl<'a> Source<'a> {
    fn new(core: &'a impl Worker, index: usize, primary_shard: usize, primary_shards: usize) -> Source<'a> {
        Source {
            index,
            primary_shard,
            primary_shards,
            cluster: core.global().cluster.as_ref(),
        }
    }

    /// Whether this source's shard sends the key (so a full resync of it
    /// replaces the key): a cluster node by the view it resyncs with
    /// (without one, it sends none).
    fn sends(&self, hash: KeyHash, key: &[u8], view: Option<&View>) -> bool {
        hash.shard(self.primary_shards) == self.primary_shard
            && match (self.cluster, view) {
                (None, _) => true,
                (Some(cluster), Some(view)) => cluster.replicated_from(view, self.index, key),
                (Some(_), None) => false,
            }
    }
}

/// Changes the shard as a primary's link asked (unless a promote or follow
/// has ended that link since), then reports the primary shard's offset
/// reached.
fn apply_and_report(
    core: &impl Worker,
    generation: u64,
    from: &Source<'_>,
    offset: u64,
    change: impl FnOnce(&mut Shard, &mut ShardLog),
) {
    if generation != core.global().replication.generation() {
        return;
    }
    let replication = core.replication().expect("replication");
    change(&mut core.shard_now(), &mut replication.log.borrow_mut());
    replication.reply(ToReplication::Applied {
        source: from.index,
        primary_shard: from.primary_shard,
        offset,
    });
}

/// Removes every key the source's shard sends (by `view`, a cluster
/// node's as it resyncs). Not on a stale cluster node (membership.rs): the
/// snapshot's newer items replace its older ones instead.
fn drop_source_shard(shard: &mut Shard, log: &mut ShardLog, from: &Source<'_>, view: Option<&View>) {
    if from.cluster.is_some_and(|cluster| cluster.membership.is_stale()) {
        return;
    }
    let relayed = from.cluster.is_some();
    shard.remove_where(
        |hash, key| from.sends(hash, key, view),
        |key| log.append_marked(Record::Delete { key }, relayed),
    );
}

/// Applies one record from a primary and logs the result here in turn
/// (so this host can serve replicas of its own; from another cluster node,
/// marked relayed, so that it is not sent on to the other nodes). A
/// snapshot record from another cluster node never replaces a newer item
/// (a larger CAS): a node whose view of who acts for a key lagged may send
/// an older copy than the one held here, and a merge (membership.rs) sends
/// every copy a node holds, old ones too. The larger CAS is the newer
/// write: a node takes CAS values above every one it applies.
fn apply(shard: &mut Shard, log: &mut ShardLog, hash: KeyHash, record: Record<'_>, from: &Source<'_>, snapshot: bool) {
    let relayed = from.cluster.is_some();
    match record {
        Record::Set(state) => match shard.put_replicated(hash, state, relayed && snapshot) {
            Replicated::Stored => log.append_marked(record, relayed),
            Replicated::KeptNewer => {}
            Replicated::NoRoom => log.append_marked(Record::Delete { key: state.key }, relayed),
        },
        Record::Delete { key } => {
            shard.remove_key(hash, key);
            log.append_marked(record, relayed);
        }
        Record::Flush { effective_unix } => {
            if effective_unix == 0 || effective_unix <= shard.unix_now() {
                // Never from a cluster node (flushes are not sent on).
                drop_source_shard(shard, log, from, None);
            } else {
                // A delayed flush applies to the whole replica: close enough
                // to the primary, whose every shard logs the same flush. By
                // time only: the primary's CAS values are not this host's.
                shard.flush_at_unix(effective_unix);
                log.append(record);
            }
        }
    }
}

/// Appends a record, with the hash the replication core routed it by, to a
/// worker's batch (the key is hashed once on its way through a replica).
pub fn push_hashed(batch: &mut Vec<u8>, hash: KeyHash, raw_record: &[u8]) {
    batch.extend_from_slice(&hash.0.to_le_bytes());
    batch.extend_from_slice(raw_record);
}

/// The (hash, record) pairs of a batch built by `push_hashed`.
struct HashedRecords<'a>(&'a [u8]);

impl<'a> Iterator for HashedRecords<'a> {
    type Item = (KeyHash, Record<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let (hash, rest) = self.0.split_first_chunk::<8>()?;
        // The replication core checked every record before batching it.
        let (record, length) = Record::decode(rest).ok().flatten()?;
        self.0 = &rest[length..];
        Some((KeyHash(u64::from_le_bytes(*hash)), record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ItemState;

    fn chunk(log: &mut ShardLog) -> Option<(u64, usize)> {
        match log.take_chunk()? {
            ToReplication::Log { offset, bytes, .. } => Some((offset, bytes.len())),
            _ => None,
        }
    }

    #[test]
    fn hashed_batches_give_back_their_records() {
        let mut batch = Vec::new();
        let mut raw = Vec::new();
        Record::Delete { key: b"one" }.encode(&mut raw);
        push_hashed(&mut batch, KeyHash(7), &raw);
        raw.clear();
        Record::Flush { effective_unix: 5 }.encode(&mut raw);
        push_hashed(&mut batch, KeyHash(0), &raw);
        let read: Vec<_> = HashedRecords(&batch).collect();
        assert_eq!(
            read,
            vec![
                (KeyHash(7), Record::Delete { key: b"one" }),
                (KeyHash(0), Record::Flush { effective_unix: 5 })
            ]
        );
    }

    #[test]
    fn chunks_carry_their_offsets_and_a_drop_moves_the_log_on() {
        let mut log = ShardLog::new(0);
        assert_eq!(chunk(&mut log), None, "nothing written, nothing sent");
        log.append(Record::Delete { key: b"abc" });
        assert_eq!(chunk(&mut log), Some((0, 5)));
        log.append(Record::Delete { key: b"de" });
        assert_eq!(chunk(&mut log), Some((5, 4)));
        let big = vec![b'v'; MIN_PENDING_LIMIT];
        log.append(Record::Set(ItemState {
            key: b"big",
            client_flags: 0,
            expiry_unix: 0,
            cas: 1,
            value: &big,
        }));
        let end = log.end();
        assert!(end > MIN_PENDING_LIMIT as u64);
        assert_eq!(chunk(&mut log), Some((end, 0)), "an empty chunk says where the log goes on");
        assert_eq!(chunk(&mut log), None);
    }
}
