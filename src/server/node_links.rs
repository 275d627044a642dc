//! This core's links to the other cluster nodes: one pipelined connection
//! per node, opened on first use, carrying the key operations of every
//! connection on this core whose keys another node acts for. Each batch of
//! a connection's ops for one node goes out as consecutive frames
//! (cluster::wire); the node answers frame by frame, in order, so the
//! outcomes are handed back to the waiting batches first in, first out,
//! into the connection's reply slot like a core's (peer id `cores + node`).
//!
//! A link is written by one task and read by another (each on its own
//! descriptor of the same socket), so a batch never waits for another
//! batch's write. A link that fails hands every waiting batch back with the
//! outcomes it has; the rest are `Refused(Unreachable)`. For `RETRY_AFTER`
//! afterwards, batches for that node are refused at once, then the next
//! one reconnects.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use super::connection::ReadBuffer;
use super::router::{FromShard, OpBatch, Pending};
use crate::cluster::wire::{self, PEER_MAGIC};
use crate::global::Global;
use crate::request::KeyOp;

/// How long a connect to a node may take before the link counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failure, batches for the node are refused this long before the
/// link is tried again (so a dead node costs a refusal, not a connect, per batch).
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// One link per other node (None for this node itself, and for slots not
/// used yet: a link opens on first use, also for a node that joined).
pub struct NodeLinks {
    global: Arc<Global>,
    first_peer: usize,
    pending: Rc<RefCell<Pending>>,
    links: RefCell<Vec<Option<Rc<Link>>>>,
}

impl NodeLinks {
    /// `first_peer` is the reply-slot peer id of slot 0 (the core count).
    pub fn new(global: &Arc<Global>, first_peer: usize, pending: &Rc<RefCell<Pending>>) -> NodeLinks {
        NodeLinks {
            global: global.clone(),
            first_peer,
            pending: pending.clone(),
            links: RefCell::default(),
        }
    }

    /// The link to `node`, made on first use. The name is resolved here,
    /// once per node (a name that is not an address may block the core
    /// for the lookup: list nodes by address).
    fn link(&self, node: usize) -> Option<Rc<Link>> {
        let cluster = self.global.cluster.as_ref()?;
        if cluster.is_me(node) || node >= cluster.slots() {
            return None;
        }
        let mut links = self.links.borrow_mut();
        if links.len() <= node {
            links.resize(node + 1, None);
        }
        let link = links[node].get_or_insert_with(|| {
            let address = cluster.node(node);
            let resolved = (address.host.as_str(), address.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut found| found.next());
            if resolved.is_none() {
                tracing::warn!("cluster node {address} does not resolve: its keys are unreachable");
            }
            Rc::new(Link {
                address: resolved,
                name: address.to_string(),
                peer: self.first_peer + node,
                pending: self.pending.clone(),
                state: RefCell::new(State::default()),
            })
        });
        Some(link.clone())
    }

    /// Queues `ops` for `node` (`relayed`: as ops this node took from
    /// another node's link, which `node` never sends on), with the batch
    /// their outcomes come back in (delivered to `slot`). Gives the batch
    /// back when the node cannot be reached now: nothing was sent and no
    /// reply will come.
    pub fn send<'o>(
        &self,
        node: usize,
        slot: u32,
        ops: impl Iterator<Item = &'o KeyOp<&'o [u8]>>,
        relayed: bool,
        batch: OpBatch,
    ) -> Result<(), OpBatch> {
        self.queue(node, slot, batch, |out| {
            let mut count = 0;
            for op in ops {
                wire::encode_op(out, op, relayed);
                count += 1;
            }
            count
        })
    }

    /// Asks `node` for a flush_all of its own shards; its acknowledgement
    /// comes back in `batch` like an op's outcome.
    pub fn flush_all(&self, node: usize, slot: u32, delay: i64, batch: OpBatch) -> Result<(), OpBatch> {
        self.queue(node, slot, batch, |out| {
            wire::encode_flush_all(out, delay);
            1
        })
    }

    /// Asks `node` about the copies of a key it acts for (`wait`); the
    /// answer comes back in `batch` as an `Outcome::Number`.
    pub fn copies(&self, node: usize, slot: u32, key: &[u8], at: Option<u64>, batch: OpBatch) -> Result<(), OpBatch> {
        self.queue(node, slot, batch, |out| {
            wire::encode_copies(out, key, at);
            1
        })
    }

    /// Asks `node` for its own copy of a key (a quorum read); the answer
    /// comes back in `batch` like a get's outcome.
    pub fn copy_of(&self, node: usize, slot: u32, key: &[u8], batch: OpBatch) -> Result<(), OpBatch> {
        self.queue(node, slot, batch, |out| {
            wire::encode_copy_of(out, key);
            1
        })
    }

    fn queue(&self, node: usize, slot: u32, batch: OpBatch, encode: impl FnOnce(&mut Vec<u8>) -> usize) -> Result<(), OpBatch> {
        match self.link(node) {
            Some(link) => link.queue(slot, batch, encode),
            None => Err(batch),
        }
    }

    /// The other members of the node list (what a flush_all reaches).
    pub fn nodes(&self) -> impl Iterator<Item = usize> + '_ {
        let cluster = self.global.cluster.as_ref();
        (0..cluster.map_or(0, |cluster| cluster.slots()))
            .filter(move |&node| cluster.is_some_and(|cluster| !cluster.is_me(node) && cluster.membership.is_member(node)))
    }
}

struct Link {
    address: Option<SocketAddr>,
    name: String,
    peer: usize,
    pending: Rc<RefCell<Pending>>,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    phase: Phase,
    /// Counts the link's connections: a task of an earlier one finds it
    /// changed and stops.
    generation: u64,
    /// Frames not yet written.
    out: Vec<u8>,
    /// Batches sent (or queued), oldest first, each with its op count.
    waiting: VecDeque<Waiter>,
    /// The writer task, when it is waiting for frames.
    writer: Option<Waker>,
    /// The open socket (shut down on failure, to end the reader's read).
    socket: Option<RawFd>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Closed,
    /// Connecting or connected.
    Open,
    Failed {
        until: Instant,
    },
}

struct Waiter {
    slot: u32,
    expected: usize,
    batch: OpBatch,
}

impl Link {
    /// Queues the frames `encode` writes (it returns how many replies they
    /// ask for), opening the link if it is closed.
    fn queue(self: &Rc<Link>, slot: u32, batch: OpBatch, encode: impl FnOnce(&mut Vec<u8>) -> usize) -> Result<(), OpBatch> {
        let mut state = self.state.borrow_mut();
        match state.phase {
            Phase::Open => {}
            Phase::Failed { until } if Instant::now() < until => return Err(batch),
            Phase::Closed | Phase::Failed { .. } => {
                if self.address.is_none() {
                    return Err(batch);
                }
                state.phase = Phase::Open;
                state.generation += 1;
                state.out.clear();
                state.out.push(PEER_MAGIC);
                glommio::spawn_local(self.clone().run(state.generation)).detach();
            }
        }
        let before = state.out.len();
        let expected = encode(&mut state.out);
        if expected == 0 {
            state.out.truncate(before);
            return Err(batch);
        }
        state.waiting.push_back(Waiter { slot, expected, batch });
        if let Some(writer) = state.writer.take() {
            writer.wake();
        }
        Ok(())
    }

    /// Connects, starts the reader, then writes frames as they are queued.
    async fn run(self: Rc<Link>, generation: u64) {
        let address = self.address.expect("only a resolved link opens");
        let stream = match TcpStream::connect_timeout(address, CONNECT_TIMEOUT).await {
            Ok(stream) => stream,
            Err(error) => {
                self.fail(generation, &format!("cannot connect: {error}"));
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        // SAFETY: dup of a socket this task owns; the copy is owned by the reader.
        let reader = match unsafe { libc::dup(stream.as_raw_fd()) } {
            -1 => {
                self.fail(generation, &std::io::Error::last_os_error().to_string());
                return;
            }
            fd => unsafe { TcpStream::from_raw_fd(fd) },
        };
        {
            let mut state = self.state.borrow_mut();
            if state.generation != generation {
                return;
            }
            state.socket = Some(stream.as_raw_fd());
        }
        glommio::spawn_local(self.clone().read_outcomes(generation, reader)).detach();
        self.write_frames(generation, stream).await;
    }

    async fn write_frames(&self, generation: u64, mut stream: TcpStream) {
        let mut frames = Vec::new();
        loop {
            let more = std::future::poll_fn(|cx| {
                let mut state = self.state.borrow_mut();
                if state.generation != generation {
                    return Poll::Ready(false);
                }
                if state.out.is_empty() {
                    state.writer = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                std::mem::swap(&mut state.out, &mut frames);
                Poll::Ready(true)
            })
            .await;
            if !more {
                return;
            }
            if let Err(error) = stream.write_all(&frames).await {
                self.fail(generation, &format!("cannot write: {error}"));
                return;
            }
            frames.clear();
        }
    }

    async fn read_outcomes(self: Rc<Link>, generation: u64, mut stream: TcpStream) {
        let mut input = ReadBuffer::new();
        loop {
            loop {
                let used = match wire::frame(input.unparsed()) {
                    Ok(None) => break,
                    Ok(Some((body, used))) => match wire::decode_outcome(body) {
                        Ok(outcome) if self.deliver(generation, &outcome) => used,
                        Ok(_) => {
                            self.fail(generation, "an outcome nothing was waiting for");
                            return;
                        }
                        Err(error) => {
                            self.fail(generation, &error.to_string());
                            return;
                        }
                    },
                    Err(error) => {
                        self.fail(generation, &error.to_string());
                        return;
                    }
                };
                input.consume(used);
            }
            match input.fill(&mut stream).await {
                Ok(0) => return self.fail(generation, "closed by the node"),
                Ok(_) => {}
                Err(error) => return self.fail(generation, &error.to_string()),
            }
        }
    }

    /// Hands an outcome to the oldest waiting batch; a complete batch goes
    /// back to its connection. False when no batch was waiting.
    fn deliver(&self, generation: u64, outcome: &crate::request::Outcome<&[u8]>) -> bool {
        let mut state = self.state.borrow_mut();
        if state.generation != generation {
            return true;
        }
        let Some(front) = state.waiting.front_mut() else {
            return false;
        };
        front.batch.push_outcome(outcome);
        if front.batch.outcome_count() == front.expected {
            let done = state.waiting.pop_front().expect("the front batch");
            self.pending.borrow_mut().deliver(
                self.peer,
                FromShard::Outcomes {
                    slot: done.slot,
                    batch: done.batch,
                },
            );
        }
        true
    }

    /// Ends this connection of the link: every waiting batch goes back with
    /// what it has, and the node is refused for `RETRY_AFTER`.
    fn fail(&self, generation: u64, why: &str) {
        let mut state = self.state.borrow_mut();
        if state.generation != generation {
            return;
        }
        if state.socket.is_some() {
            tracing::warn!("cluster link to {} failed: {why}", self.name);
        } else {
            tracing::debug!("cluster link to {} failed: {why}", self.name);
        }
        state.generation += 1;
        state.phase = Phase::Failed {
            until: Instant::now() + RETRY_AFTER,
        };
        state.out.clear();
        if let Some(fd) = state.socket.take() {
            // SAFETY: the writer still owns this descriptor (it stops only
            // once it sees the generation change made here).
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        if let Some(writer) = state.writer.take() {
            writer.wake();
        }
        let mut pending = self.pending.borrow_mut();
        for waiter in state.waiting.drain(..) {
            pending.deliver(
                self.peer,
                FromShard::Outcomes {
                    slot: waiter.slot,
                    batch: waiter.batch,
                },
            );
        }
    }
}
