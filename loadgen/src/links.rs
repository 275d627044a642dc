//! One load connection's sockets and the requests waiting on them: a link
//! to the server, or (`--cluster`) one to each node, every request going to
//! its key's node by corecache-client's topology (the ring the servers
//! use, and each node's health). A multi-key get is split by node and
//! completes with its last part.
//!
//! A link that breaks fails what waits on it and marks its node down; its
//! keys then go to the next live node, as a ketama client's do. It is not
//! reconnected during the run.
//!
//! Reads and writes are polls that borrow the links only while they run,
//! so an open-loop sender and its receiver can share one `RefCell<Links>`.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use corecache_client::codec::Expect;
use corecache_client::topology::Topology;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::protocol::{Codec, Reply};
use crate::workload::{Op, OpKind};

const READ_CHUNK: usize = 64 * 1024;
/// A read that waits longer than this reports `Arrived::TimedOut`.
const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// Where the run's requests go.
#[derive(Clone, Debug)]
pub enum Target {
    Server(SocketAddr),
    /// The nodes and ring of a corecache cluster (from `cluster nodes`),
    /// or a fixed ketama list of plain servers.
    Cluster(Topology),
}

/// What a wait for replies saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrived {
    /// Bytes came; this many operations completed with them.
    Replies(usize),
    /// Nothing came within the read timeout.
    TimedOut,
}

pub struct Links {
    links: Vec<Link>,
    /// None: one server, every request on link 0.
    topology: Option<Topology>,
    /// Operations in flight, by slot; `free` lists the unused slots.
    ops: Vec<InFlight>,
    free: Vec<u32>,
    in_flight: usize,
    /// Operations started at or after this are counted per node.
    count_from: Instant,
    /// Scratch, reused by every operation: each link's keys of the
    /// operation being split, a part of it, a key spelled for routing.
    groups: Vec<Vec<u64>>,
    part: Op,
    key: Vec<u8>,
    chunk: Vec<u8>,
    last_error: Option<String>,
}

struct Link {
    address: String,
    stream: Option<TcpStream>,
    waiting: VecDeque<Part>,
    out: Vec<u8>,
    written: usize,
    buffer: Vec<u8>,
    /// Requests sent for counted operations.
    requests: u64,
}

#[derive(Clone, Copy)]
struct Part {
    op: u32,
    expect: Expect,
}

struct InFlight {
    kind: OpKind,
    since: Instant,
    parts: u32,
    reply: Reply,
}

/// No live node takes one of an operation's keys.
#[derive(Debug, thiserror::Error)]
#[error("no live node")]
pub struct NoLiveNode;

async fn connect(address: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| io::Error::other(format!("{address}: {e}")))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(stream)
}

impl Links {
    /// Connects to the server, or to every node of the cluster (a node
    /// that refuses is marked down; all refusing is an error).
    pub async fn connect(target: &Target, count_from: Instant) -> io::Result<Links> {
        let (addresses, mut topology) = match target {
            Target::Server(address) => (vec![address.to_string()], None),
            Target::Cluster(topology) => {
                let addresses = topology.nodes().iter().map(|n| n.address.clone()).collect();
                (addresses, Some(topology.clone()))
            }
        };
        let mut links = Vec::with_capacity(addresses.len());
        let mut last_error = None;
        for (node, address) in addresses.into_iter().enumerate() {
            let stream = match connect(&address).await {
                Ok(stream) => Some(stream),
                Err(error) if topology.is_some() => {
                    mark_down(topology.as_mut(), node);
                    last_error = Some(error.to_string());
                    None
                }
                Err(error) => return Err(error),
            };
            links.push(Link {
                address,
                stream,
                waiting: VecDeque::new(),
                out: Vec::new(),
                written: 0,
                buffer: Vec::new(),
                requests: 0,
            });
        }
        let links = Links {
            groups: vec![Vec::new(); links.len()],
            links,
            topology,
            ops: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            count_from,
            part: Op {
                kind: OpKind::Get,
                keys: Vec::new(),
            },
            key: Vec::new(),
            chunk: vec![0; READ_CHUNK],
            last_error,
        };
        links.check_live()?;
        Ok(links)
    }

    /// Operations sent and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Requests sent to each node for operations started in the measured
    /// part of the run.
    pub fn requests_per_node(&self) -> BTreeMap<String, u64> {
        self.links.iter().map(|l| (l.address.clone(), l.requests)).collect()
    }

    /// Queues `op`'s requests (sent by the next flush); a multi-key get
    /// becomes one request per node its keys go to.
    pub fn send(&mut self, codec: &Codec, op: &Op, since: Instant) -> Result<(), NoLiveNode> {
        if self.topology.is_none() {
            let slot = self.slot(op.kind, since, 1);
            let link = &mut self.links[0];
            let expect = codec.encode(op, &mut link.out);
            self.queue(0, slot, expect, since);
            return Ok(());
        }
        for &index in &op.keys {
            match self.route(codec, op.kind, index, since) {
                Ok(node) => self.groups[node].push(index),
                Err(error) => {
                    self.groups.iter_mut().for_each(Vec::clear);
                    return Err(error);
                }
            }
        }
        let parts = self.groups.iter().filter(|g| !g.is_empty()).count() as u32;
        let slot = self.slot(op.kind, since, parts);
        self.part.kind = op.kind;
        for node in 0..self.groups.len() {
            if self.groups[node].is_empty() {
                continue;
            }
            std::mem::swap(&mut self.part.keys, &mut self.groups[node]);
            let expect = codec.encode(&self.part, &mut self.links[node].out);
            std::mem::swap(&mut self.part.keys, &mut self.groups[node]);
            self.groups[node].clear();
            self.queue(node, slot, expect, since);
        }
        Ok(())
    }

    /// Queues one request for key `index` that `encode` writes (prefill's
    /// stores): routed by the key `kind` spells.
    pub fn send_request(
        &mut self,
        codec: &Codec,
        kind: OpKind,
        index: u64,
        since: Instant,
        encode: impl FnOnce(&mut Vec<u8>) -> Expect,
    ) -> Result<(), NoLiveNode> {
        let node = match self.topology {
            None => 0,
            Some(_) => self.route(codec, kind, index, since)?,
        };
        let slot = self.slot(kind, since, 1);
        let expect = encode(&mut self.links[node].out);
        self.queue(node, slot, expect, since);
        Ok(())
    }

    /// The live node key `index` goes to; a node whose link is closed is
    /// marked down again when the topology offers it for a probe.
    fn route(&mut self, codec: &Codec, kind: OpKind, index: u64, now: Instant) -> Result<usize, NoLiveNode> {
        let topology = self.topology.as_mut().expect("a cluster");
        self.key.clear();
        codec.write_key(kind, index, &mut self.key);
        for _ in 0..=self.links.len() {
            let node = topology.route(&self.key, now).ok_or(NoLiveNode)?;
            if self.links[node].stream.is_some() {
                return Ok(node);
            }
            mark_down(Some(topology), node);
        }
        Err(NoLiveNode)
    }

    fn slot(&mut self, kind: OpKind, since: Instant, parts: u32) -> u32 {
        let op = InFlight {
            kind,
            since,
            parts,
            reply: Reply::default(),
        };
        self.in_flight += 1;
        match self.free.pop() {
            Some(slot) => {
                self.ops[slot as usize] = op;
                slot
            }
            None => {
                self.ops.push(op);
                (self.ops.len() - 1) as u32
            }
        }
    }

    fn queue(&mut self, node: usize, op: u32, expect: Expect, since: Instant) {
        let link = &mut self.links[node];
        link.waiting.push_back(Part { op, expect });
        if since >= self.count_from {
            link.requests += 1;
        }
    }

    /// One part of slot `op` is done; the operation completes with its last.
    fn part_done(&mut self, op: u32, now: Instant, completed: &mut impl FnMut(OpKind, Instant, Instant, &Reply)) -> bool {
        let entry = &mut self.ops[op as usize];
        entry.parts -= 1;
        if entry.parts > 0 {
            return false;
        }
        completed(entry.kind, entry.since, now, &entry.reply);
        self.free.push(op);
        self.in_flight -= 1;
        true
    }

    /// Reads the replies now buffered on link `node`; how many operations
    /// they completed.
    fn take_replies(
        &mut self,
        node: usize,
        codec: &Codec,
        now: Instant,
        completed: &mut impl FnMut(OpKind, Instant, Instant, &Reply),
    ) -> usize {
        let mut at = 0;
        let mut done = 0;
        loop {
            let link = &mut self.links[node];
            let Some(front) = link.waiting.front_mut() else { break };
            let reply = &mut self.ops[front.op as usize].reply;
            let (used, whole) = codec.decode(&mut front.expect, reply, &link.buffer[at..]);
            at += used;
            if !whole {
                break;
            }
            let op = front.op;
            link.waiting.pop_front();
            done += usize::from(self.part_done(op, now, completed));
        }
        self.links[node].buffer.drain(..at);
        done
    }

    /// Link `node` broke: what waits on it fails, its node is marked down.
    /// How many operations that completed.
    fn broke(&mut self, node: usize, error: &io::Error, completed: &mut impl FnMut(OpKind, Instant, Instant, &Reply)) -> usize {
        let link = &mut self.links[node];
        let message = format!("{}: {error}", link.address);
        link.stream = None;
        link.out.clear();
        link.written = 0;
        link.buffer.clear();
        let waiting = std::mem::take(&mut link.waiting);
        let now = Instant::now();
        let mut done = 0;
        for part in waiting {
            let reply = &mut self.ops[part.op as usize].reply;
            reply.error.get_or_insert_with(|| message.clone());
            done += usize::from(self.part_done(part.op, now, completed));
        }
        mark_down(self.topology.as_mut(), node);
        self.last_error = Some(message);
        done
    }

    fn check_live(&self) -> io::Result<()> {
        if self.links.iter().any(|l| l.stream.is_some()) {
            return Ok(());
        }
        let error = self.last_error.clone().unwrap_or_else(|| "no link".into());
        Err(io::Error::new(io::ErrorKind::NotConnected, error))
    }

    /// Writes what is queued on every link; Ready once all of it is sent.
    pub fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        completed: &mut impl FnMut(OpKind, Instant, Instant, &Reply),
    ) -> Poll<io::Result<()>> {
        let mut blocked = false;
        for node in 0..self.links.len() {
            loop {
                let link = &mut self.links[node];
                let Some(stream) = link.stream.as_mut() else { break };
                if link.written == link.out.len() {
                    link.out.clear();
                    link.written = 0;
                    break;
                }
                match Pin::new(stream).poll_write(cx, &link.out[link.written..]) {
                    Poll::Ready(Ok(0)) => {
                        let error = io::Error::new(io::ErrorKind::WriteZero, "server stopped reading");
                        self.broke(node, &error, completed);
                    }
                    Poll::Ready(Ok(sent)) => link.written += sent,
                    Poll::Ready(Err(error)) => {
                        self.broke(node, &error, completed);
                    }
                    Poll::Pending => {
                        blocked = true;
                        break;
                    }
                }
            }
        }
        self.check_live()?;
        if blocked { Poll::Pending } else { Poll::Ready(Ok(())) }
    }

    /// Waits for bytes on any live link (each is polled, so a request
    /// queued meanwhile by an open-loop sender is read when it is answered)
    /// and reads the replies they complete.
    pub fn poll_replies(
        &mut self,
        cx: &mut Context<'_>,
        codec: &Codec,
        completed: &mut impl FnMut(OpKind, Instant, Instant, &Reply),
    ) -> Poll<io::Result<Arrived>> {
        let (mut arrived, mut timed_out, mut done) = (false, false, 0);
        let mut now = None;
        for node in 0..self.links.len() {
            let link = &mut self.links[node];
            let Some(stream) = link.stream.as_mut() else { continue };
            let error = match Pin::new(stream).poll_read(cx, &mut self.chunk) {
                Poll::Pending => continue,
                Poll::Ready(Ok(0)) => io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"),
                Poll::Ready(Ok(read)) => {
                    link.buffer.extend_from_slice(&self.chunk[..read]);
                    // One clock read per wake-up, for every reply it brings.
                    let now = *now.get_or_insert_with(Instant::now);
                    done += self.take_replies(node, codec, now, completed);
                    arrived = true;
                    continue;
                }
                Poll::Ready(Err(error)) if corecache_client::state::is_timeout(&error) => {
                    timed_out = true;
                    continue;
                }
                Poll::Ready(Err(error)) => error,
            };
            done += self.broke(node, &error, completed);
            arrived = true;
        }
        self.check_live()?;
        if arrived {
            Poll::Ready(Ok(Arrived::Replies(done)))
        } else if timed_out {
            Poll::Ready(Ok(Arrived::TimedOut))
        } else {
            Poll::Pending
        }
    }
}

fn mark_down(topology: Option<&mut Topology>, node: usize) {
    if let Some(topology) = topology {
        let policy = *topology.policy();
        topology.node_mut(node).health.hard_failure(&policy, Instant::now());
    }
}

/// Writes what is queued on every link.
pub async fn flush(
    links: &std::cell::RefCell<Links>,
    completed: &mut impl FnMut(OpKind, Instant, Instant, &Reply),
) -> io::Result<()> {
    std::future::poll_fn(|cx| links.borrow_mut().poll_flush(cx, completed)).await
}

/// Waits for replies on any link.
pub async fn replies(
    links: &std::cell::RefCell<Links>,
    codec: &Codec,
    completed: &mut impl FnMut(OpKind, Instant, Instant, &Reply),
) -> io::Result<Arrived> {
    std::future::poll_fn(|cx| links.borrow_mut().poll_replies(cx, codec, completed)).await
}
