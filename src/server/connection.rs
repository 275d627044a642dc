//! One client connection: fill the read buffer, parse what is complete,
//! route it, write all replies of the batch with one send. The first byte
//! picks the protocol. The socket is touched only by `ReadBuffer::fill` and
//! `send`: the seam where a direct io_uring path can replace glommio's
//! socket later.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::Core;
use super::binary_session::BinarySession;
use super::peer_session::PeerSession;
use super::router::{self, ReplySlot};
use super::session::{After, Parse, Session};
use super::text_session::TextSession;
use crate::cluster::wire::PEER_MAGIC;
use crate::config::Protocol;
use crate::protocol::binary::REQUEST_MAGIC;
use crate::protocol::text::TextLimits;
use crate::report::{CommandLatency, LATENCY_COMMANDS};
use crate::request::KeyOp;

/// The latency slot of commands that are not key operations.
const OTHER_COMMANDS: usize = LATENCY_COMMANDS.len() - 1;

const READ_BUFFER: usize = 16 * 1024;
/// Most requests handled per batch before replies are sent (a batch is
/// `-R` requests, memcached's requests per event, at most this many).
const MAX_STEPS: usize = 256;
/// Key operations routed together; a longer run (a huge multi-get) is
/// routed in slices of this many.
const OPS_PER_ROUTE: usize = 256;
/// Replies gathered past this size are sent before the run goes on.
const FLUSH_AT: usize = 4 << 20;

/// The connection's input: bytes `start..end` of `data` are unparsed.
pub(super) struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    pub(super) fn new() -> ReadBuffer {
        ReadBuffer {
            data: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
        }
    }

    pub(super) fn unparsed(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(super) fn consume(&mut self, count: usize) {
        self.start += count;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // Give back the memory a large value needed.
            if self.data.len() > 4 * READ_BUFFER {
                self.data = vec![0; READ_BUFFER];
            }
        }
    }

    /// Reads more bytes; returns 0 at end of stream.
    pub(super) async fn fill(&mut self, stream: &mut TcpStream) -> std::io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // A request larger than the buffer: grow (the parsers bound
                // requests by -I and their line and frame limits).
                self.data.resize(self.data.len() * 2, 0);
            }
        }
        let read = stream.read(&mut self.data[self.end..]).await?;
        self.end += read;
        Ok(read)
    }
}

/// What one batch left for the connection to do.
struct Batch {
    consumed: usize,
    /// Bytes of a rejected request body still to discard.
    swallow: usize,
    /// The buffer ends in an incomplete request.
    need_input: bool,
    /// The batch stopped at `-R` requests with more possibly waiting.
    full: bool,
    after: After,
}

/// The lists a batch is built in, kept for the connection's life so that a
/// batch allocates nothing once they have grown to its size.
struct Scratch<S: Session> {
    steps: Vec<S::Step<'static>>,
    ops: Vec<KeyOp<&'static [u8]>>,
    /// How many of `ops` each step of a run owns.
    op_counts: Vec<usize>,
}

impl<S: Session> Scratch<S> {
    fn new() -> Scratch<S> {
        Scratch {
            steps: Vec::new(),
            ops: Vec::new(),
            op_counts: Vec::new(),
        }
    }
}

/// An empty list's allocation, reused for the same element type with another
/// lifetime (the batch's borrow of the read buffer): std collects in place
/// when the layouts match, so this neither allocates nor frees.
fn recycle<From, To>(mut list: Vec<From>) -> Vec<To> {
    list.clear();
    list.into_iter().map(|_| unreachable!("the list was cleared")).collect()
}

pub async fn serve(core: Rc<Core>, mut stream: TcpStream) {
    let fd = stream.as_raw_fd();
    core.connections.borrow_mut().insert(fd);
    serve_until_closed(&core, &mut stream).await;
    core.connections.borrow_mut().remove(&fd);
    let _ = stream.close().await;
}

/// Serves until the client leaves (or asks for a shutdown).
async fn serve_until_closed(core: &Rc<Core>, stream: &mut TcpStream) {
    let reply_slot = ReplySlot::open(core);
    let mut input = ReadBuffer::new();
    if fill(core, &mut input, stream).await == 0 {
        return;
    }
    let max_payload = core.global.config.max_payload();
    if let Some(cluster) = &core.global.cluster
        && input.unparsed()[0] == PEER_MAGIC
    {
        serve_session(core, &reply_slot, &PeerSession::new(cluster), &mut input, stream).await;
        return;
    }
    let binary = match core.global.config.protocol {
        Protocol::Auto => input.unparsed()[0] == REQUEST_MAGIC,
        Protocol::Binary if input.unparsed()[0] != REQUEST_MAGIC => return, // memcached: invalid magic, close
        Protocol::Binary => true,
        Protocol::Ascii => false,
    };
    let after = if binary {
        serve_session(core, &reply_slot, &BinarySession { max_payload }, &mut input, stream).await
    } else {
        let limits = TextLimits { max_payload };
        serve_session(core, &reply_slot, &TextSession { limits }, &mut input, stream).await
    };
    if after == After::Shutdown {
        tracing::info!("shutdown requested by a client");
        super::stop(&core.global);
    }
}

/// Reads into the buffer, counting bytes; 0 on end of stream or error.
async fn fill(core: &Core, input: &mut ReadBuffer, stream: &mut TcpStream) -> usize {
    match input.fill(stream).await {
        Ok(read) => {
            core.counters.bytes_read.set(core.counters.bytes_read.get() + read as u64);
            read
        }
        Err(_) => 0,
    }
}

async fn serve_session<S: Session>(
    core: &Core,
    reply_slot: &ReplySlot,
    session: &S,
    input: &mut ReadBuffer,
    stream: &mut TcpStream,
) -> After {
    let mut output = Vec::with_capacity(READ_BUFFER);
    let mut scratch = Scratch::<S>::new();
    let mut swallow = 0;
    let mut need_input = false;
    loop {
        if swallow > 0 {
            let discard = swallow.min(input.unparsed().len());
            input.consume(discard);
            swallow -= discard;
        }
        if need_input || swallow > 0 || input.unparsed().is_empty() {
            if fill(core, input, stream).await == 0 {
                return After::Close;
            }
            need_input = false;
            continue;
        }
        let batch = process(core, reply_slot, session, input.unparsed(), &mut output, &mut scratch, stream).await;
        input.consume(batch.consumed);
        swallow = batch.swallow;
        need_input = batch.need_input;
        // As memcached's -R: after that many requests a connection with more
        // waiting gives way to the core's other connections, with its
        // replies sent. When nothing else needs the core, it goes on and the
        // next batch's replies join the same send.
        let more_waiting = batch.full && batch.after == After::Continue && !input.unparsed().is_empty();
        if more_waiting {
            core.counters.conn_yields.set(core.counters.conn_yields.get() + 1);
            if !glommio::executor().need_preempt() && output.len() < FLUSH_AT {
                continue;
            }
        }
        if !output.is_empty() {
            if send(core, stream, &output).await.is_err() {
                return After::Close;
            }
            output.clear();
        }
        if batch.after != After::Continue {
            return batch.after;
        }
        if more_waiting {
            glommio::yield_if_needed().await;
        }
    }
}

async fn send(core: &Core, stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    core.counters
        .bytes_written
        .set(core.counters.bytes_written.get() + bytes.len() as u64);
    Ok(())
}

/// Parses up to `-R` requests from `buf`, executes them and writes
/// their replies, in order, to `out`.
async fn process<S: Session>(
    core: &Core,
    reply_slot: &ReplySlot,
    session: &S,
    buf: &[u8],
    out: &mut Vec<u8>,
    scratch: &mut Scratch<S>,
    stream: &mut TcpStream,
) -> Batch {
    let started = Instant::now();
    let mut steps: Vec<S::Step<'_>> = recycle(std::mem::take(&mut scratch.steps));
    let mut batch = Batch {
        consumed: 0,
        swallow: 0,
        need_input: false,
        full: false,
        after: After::Continue,
    };
    let max_steps = core.global.config.max_requests_per_event.clamp(1, MAX_STEPS);
    loop {
        if steps.len() == max_steps {
            batch.full = true;
            break;
        }
        match session.parse(&buf[batch.consumed..]) {
            Parse::Incomplete => {
                batch.need_input = true;
                break;
            }
            Parse::Step { step, consumed, last } => {
                batch.consumed += consumed;
                steps.push(step);
                if last {
                    break;
                }
            }
            Parse::Swallow { step, consumed, skip } => {
                batch.consumed += consumed;
                batch.swallow = skip;
                steps.push(step);
                // What follows in the buffer is the body being discarded.
                break;
            }
            Parse::Close { step } => {
                steps.push(step);
                break;
            }
        }
    }

    // Key-routed runs go to the router together; barrier steps between them
    // (flush_all, stats, ...) run alone, so a pipeline like
    // "set; flush_all; get" keeps its meaning.
    let mut rest = &steps[..];
    while !rest.is_empty() {
        let run = rest.iter().position(S::is_barrier).unwrap_or(rest.len());
        if run > 0 {
            if execute_run::<S>(core, reply_slot, &rest[..run], out, scratch, stream, started)
                .await
                .is_err()
            {
                batch.after = After::Close;
                break;
            }
            rest = &rest[run..];
            continue;
        }
        batch.after = session.barrier(core, reply_slot, &rest[0], out).await;
        core.latency
            .borrow_mut()
            .record(OTHER_COMMANDS, started.elapsed().as_nanos() as u64);
        rest = &rest[1..];
        if batch.after != After::Continue {
            break;
        }
    }
    scratch.steps = recycle(steps);
    batch
}

/// Routes the key operations of consecutive non-barrier steps as one batch
/// and writes every step's replies in order.
async fn execute_run<S: Session>(
    core: &Core,
    reply_slot: &ReplySlot,
    steps: &[S::Step<'_>],
    out: &mut Vec<u8>,
    scratch: &mut Scratch<S>,
    stream: &mut TcpStream,
    started: Instant,
) -> std::io::Result<()> {
    let mut ops: Vec<KeyOp<&[u8]>> = recycle(std::mem::take(&mut scratch.ops));
    let counts = &mut scratch.op_counts;
    counts.clear();
    counts.extend(steps.iter().map(|step| S::key_ops(step, &mut ops)));
    // Outcomes arrive in op order; step `current` owns the next `left` of them.
    let mut current = 0;
    let mut left = counts.first().copied().unwrap_or(0);
    let advance = |out: &mut Vec<u8>, current: &mut usize, left: &mut usize| {
        while *current < steps.len() && *left == 0 {
            S::finish(&steps[*current], out);
            *current += 1;
            *left = counts.get(*current).copied().unwrap_or(0);
        }
    };
    advance(out, &mut current, &mut left);
    // Routed in slices so that a huge multi-get streams its replies instead
    // of gathering them all in memory; a normal pipeline is one slice.
    let mut sent = Ok(());
    if !S::FORWARDS
        && let Some(cluster) = &core.global.cluster
    {
        // Ops another node forwarded here.
        cluster
            .forwarded_in
            .fetch_add(ops.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    let forward = if S::FORWARDS {
        router::Forward::Client
    } else {
        router::Forward::Never
    };
    for (slice, slice_ops) in ops.chunks(OPS_PER_ROUTE).enumerate() {
        let base = slice * OPS_PER_ROUTE;
        router::execute(core, reply_slot, slice_ops, forward, |index, outcome| {
            S::write_outcome(&steps[current], ops[base + index].key(), outcome, out);
            left -= 1;
            advance(out, &mut current, &mut left);
        })
        .await;
        if out.len() >= FLUSH_AT {
            sent = send(core, stream, out).await;
            out.clear();
            if sent.is_err() {
                break;
            }
        }
    }
    // One clock read per run: every op of the batch took this long.
    let nanos = started.elapsed().as_nanos() as u64;
    let mut latency = core.latency.borrow_mut();
    for op in &ops {
        latency.record(CommandLatency::command_of(op), nanos);
    }
    scratch.ops = recycle(ops);
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_list_keeps_its_allocation() {
        let request = b"get a b c\r\n".to_vec();
        let mut ops: Vec<KeyOp<&'static [u8]>> = Vec::with_capacity(64);
        ops.push(KeyOp::Delete {
            key: b"x",
            options: Default::default(),
        });
        let address = ops.as_ptr() as usize;
        // Borrowing a shorter-lived buffer, as a batch borrows the read buffer.
        let mut batch: Vec<KeyOp<&[u8]>> = recycle(ops);
        assert!(batch.is_empty());
        assert_eq!(batch.as_ptr() as usize, address, "no new allocation");
        batch.push(KeyOp::Delete {
            key: &request[4..5],
            options: Default::default(),
        });
        let back: Vec<KeyOp<&'static [u8]>> = recycle(batch);
        assert_eq!((back.as_ptr() as usize, back.capacity() >= 64), (address, true));
    }
}
