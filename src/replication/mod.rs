//! Replication: every shard logs the resulting state of each change it
//! applies; a dedicated replication core keeps a bounded backlog per shard
//! and streams it to replicas; a replica applies what it receives onto its
//! own shards by key hash.
//!
//! - `record`: the log's record format (a key's resulting state, a delete, a flush)
//! - `backlog`: a shard's recent log on the replication core, by offset
//! - `wire`: the link between hosts (handshake lines, frames)
//! - `shard_side`: what runs on each worker core (log, snapshot slices, apply)
//! - `core`: the replication core: its executor, channels to the workers, stats
//! - `primary`: serving replicas (partial resync, snapshot, streaming, acks)
//! - `replica`: following a primary (handshake, applying, acking)
//! - `gossip`: the failure detector's UDP socket (cluster mode)
//!
//! A change travels: router executes a write on its shard ->
//! `shard_side` logs the key's state -> every millisecond the log's new
//! bytes go to the replication core -> `primary` appends them to the
//! shard's backlog and writes them to each replica -> the replica's
//! `replica` task splits records by its own shards -> each worker applies
//! them (and logs them in turn) -> the replica acks the applied offset.
//!
//! In a cluster every node is both: it follows every other node (records
//! of the keys it holds copies of) and serves them (records of the keys it
//! acts for), on the cluster port.

pub mod backlog;
pub mod core;
pub mod gossip;
pub mod primary;
pub mod record;
pub mod replica;
pub mod shard_side;
pub mod wire;

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};

/// Worker core -> replication core.
pub enum ToReplication {
    /// The first message: which shard this channel carries.
    Hello { shard: usize },
    /// Log bytes starting at `offset`; `since`: when the oldest was written.
    Log {
        offset: u64,
        bytes: Vec<u8>,
        since: std::time::Instant,
    },
    /// Part of a snapshot for a replica, taken when the log stood at `at_offset`.
    Slice {
        follower: u64,
        attempt: u32,
        at_offset: u64,
        records: Vec<u8>,
        next_cursor: Option<usize>,
        /// How long taking it kept the shard's core from other work.
        took: std::time::Duration,
    },
    /// Records of a primary shard applied up to `offset` (on a replica;
    /// `source`: which primary, see `ToWorker::Apply`).
    Applied {
        source: usize,
        primary_shard: usize,
        offset: u64,
    },
}

/// Replication core -> worker core.
pub enum ToWorker {
    /// Take the next slice of a snapshot from `cursor` on. `attempt` tells
    /// a restarted snapshot's slices from a stale one's.
    Snapshot { follower: u64, attempt: u32, cursor: usize },
    /// Apply a primary shard's records (which belong to this shard), unless
    /// the role changed since the link that received them started
    /// (`generation`): a promoted host must not take its old primary's writes.
    /// `source`: 0 for the primary of `--replica-of`, the node's index for
    /// another cluster node.
    Apply {
        source: usize,
        generation: u64,
        primary_shard: usize,
        primary_shards: usize,
        offset: u64,
        records: Vec<u8>,
        /// Snapshot records (a key's state when the slice was taken), not log.
        snapshot: bool,
    },
    /// A full resync of a primary shard starts at `offset`: drop its keys
    /// (in a cluster, those the source node sends this one by its `view`).
    DropShard {
        source: usize,
        generation: u64,
        primary_shard: usize,
        primary_shards: usize,
        offset: u64,
        view: Option<crate::cluster::membership::View>,
    },
}

/// Wakes every task waiting for news (new log bytes, a slice, an ack).
#[derive(Default)]
pub struct Notify {
    epoch: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    pub fn notify(&self) {
        self.epoch.set(self.epoch.get() + 1);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Waits until something happened after `epoch` was read.
    pub async fn changed_since(&self, epoch: u64) {
        std::future::poll_fn(|cx| {
            if self.epoch.get() != epoch {
                Poll::Ready(())
            } else {
                // A task polled again (say, after racing a timer) is listed once.
                let mut waiters = self.waiters.borrow_mut();
                if !waiters.iter().any(|waiter| waiter.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_waiting_again_is_not_listed_twice() {
        struct Task;
        impl std::task::Wake for Task {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        let notify = Notify::default();
        let waker = std::task::Waker::from(std::sync::Arc::new(Task));
        let mut context = std::task::Context::from_waker(&waker);
        let epoch = notify.epoch();
        for _ in 0..100 {
            let mut wait = std::pin::pin!(notify.changed_since(epoch));
            assert!(wait.as_mut().poll(&mut context).is_pending());
        }
        assert_eq!(notify.waiters.borrow().len(), 1);
        notify.notify();
        assert!(notify.waiters.borrow().is_empty());
        let mut wait = std::pin::pin!(notify.changed_since(epoch));
        assert!(wait.as_mut().poll(&mut context).is_ready());
    }
}
