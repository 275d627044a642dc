//! One client connection: fill the read buffer, parse what is complete,
//! route it, write all replies of the batch with one send. The socket is
//! touched only by `ReadBuffer::fill` and `send`, the seam where a direct
//! io_uring path can replace glommio's socket later.

use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::Core;
use super::router::{self, ReplySlot};
use crate::protocol::text::{self, Command, Parsed, TextLimits};
use crate::protocol::{BINARY_REQUEST_MAGIC, text_reply};
use crate::request::{DeleteOptions, GetOptions, KeyOp, Outcome};
use crate::stats;

const READ_BUFFER: usize = 16 * 1024;
/// Commands handled per batch before replies are sent.
const MAX_STEPS: usize = 256;

/// The connection's input: bytes `start..end` of `data` are unparsed.
struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    fn new() -> ReadBuffer {
        ReadBuffer {
            data: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
        }
    }

    fn unparsed(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, count: usize) {
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
    async fn fill(&mut self, stream: &mut TcpStream) -> std::io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // A request larger than the buffer: grow (the parser bounds
                // requests by -I and the line limits).
                self.data.resize(self.data.len() * 2, 0);
            }
        }
        let read = stream.read(&mut self.data[self.end..]).await?;
        self.end += read;
        Ok(read)
    }
}

/// A unit of the batch, in the client's order.
enum Step<'a> {
    Command(Command<'a>),
    /// An error line from the parser.
    Reply {
        text: &'static str,
        noreply: bool,
    },
    /// A rejected value: the reply, and for set the key whose old value is dropped.
    Swallow {
        reply: &'static str,
        noreply: bool,
        stale_key: Option<&'a [u8]>,
    },
    Close(&'static str),
}

impl Step<'_> {
    /// Commands that are not routed key by key.
    fn is_special(&self) -> bool {
        !matches!(
            self,
            Step::Command(Command::Get { .. } | Command::Keyed { .. }) | Step::Reply { .. } | Step::Swallow { .. }
        )
    }
}

/// What one batch left for the connection to do.
struct Batch {
    consumed: usize,
    /// Bytes of a rejected value still to discard.
    swallow: usize,
    /// The buffer ends in an incomplete request.
    need_input: bool,
    close: bool,
    shutdown: bool,
}

pub async fn serve(core: Rc<Core>, mut stream: TcpStream) {
    let reply_slot = ReplySlot::open(&core);
    let limits = TextLimits {
        max_payload: core.global.config.max_payload(),
    };
    let mut input = ReadBuffer::new();
    let mut output = Vec::with_capacity(READ_BUFFER);
    let mut swallow = 0;
    let mut need_input = true;
    let mut first_read = true;
    loop {
        if swallow > 0 {
            let discard = swallow.min(input.unparsed().len());
            input.consume(discard);
            swallow -= discard;
        }
        if need_input || swallow > 0 || input.unparsed().is_empty() {
            match input.fill(&mut stream).await {
                Ok(0) | Err(_) => return,
                Ok(read) => core.counters.bytes_read.set(core.counters.bytes_read.get() + read as u64),
            }
            if first_read {
                first_read = false;
                // The binary protocol is not served: close rather than
                // answer in a dialect the client cannot read.
                if input.unparsed()[0] == BINARY_REQUEST_MAGIC {
                    return;
                }
            }
            need_input = false;
            continue;
        }
        let batch = process(&core, &reply_slot, input.unparsed(), &mut output, &limits).await;
        input.consume(batch.consumed);
        swallow = batch.swallow;
        need_input = batch.need_input;
        if !output.is_empty() {
            if send(&core, &mut stream, &output).await.is_err() {
                return;
            }
            output.clear();
        }
        if batch.shutdown {
            tracing::info!("shutdown requested by a client");
            std::process::exit(0);
        }
        if batch.close {
            let _ = stream.close().await;
            return;
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

/// Parses up to MAX_STEPS requests from `buf`, executes them and writes
/// their replies, in order, to `out`.
async fn process(core: &Core, reply_slot: &ReplySlot, buf: &[u8], out: &mut Vec<u8>, limits: &TextLimits) -> Batch {
    let mut steps = Vec::new();
    let mut batch = Batch {
        consumed: 0,
        swallow: 0,
        need_input: false,
        close: false,
        shutdown: false,
    };
    while steps.len() < MAX_STEPS {
        match text::parse(&buf[batch.consumed..], limits) {
            Parsed::Incomplete => {
                batch.need_input = true;
                break;
            }
            Parsed::Command { command, consumed } => {
                batch.consumed += consumed;
                let last = matches!(command, Command::Quit | Command::Shutdown);
                steps.push(Step::Command(command));
                if last {
                    break;
                }
            }
            Parsed::Error {
                reply,
                consumed,
                noreply,
            } => {
                batch.consumed += consumed;
                steps.push(Step::Reply { text: reply, noreply });
            }
            Parsed::Swallow {
                reply,
                consumed,
                skip,
                noreply,
                stale_key,
            } => {
                batch.consumed += consumed;
                batch.swallow = skip;
                steps.push(Step::Swallow {
                    reply,
                    noreply,
                    stale_key,
                });
                break;
            }
            Parsed::Close { reply } => {
                steps.push(Step::Close(reply));
                break;
            }
        }
    }

    // Key-routed runs go to the router together; the special commands
    // between them (flush_all, stats, ...) act as barriers, so a pipeline
    // like "set; flush_all; get" keeps its meaning.
    let mut rest = &steps[..];
    while !rest.is_empty() {
        let run = rest.iter().position(Step::is_special).unwrap_or(rest.len());
        if run > 0 {
            execute_run(core, reply_slot, &rest[..run], out).await;
            rest = &rest[run..];
            continue;
        }
        let (special, tail) = rest.split_first().expect("non-empty");
        rest = tail;
        execute_special(core, reply_slot, special, out, &mut batch).await;
        if batch.close {
            break;
        }
    }
    batch
}

/// Ops a step contributes to a routed run.
fn step_ops<'a>(step: &Step<'a>, ops: &mut Vec<KeyOp<&'a [u8]>>) {
    match step {
        Step::Command(Command::Get { keys, touch, .. }) => {
            let options = GetOptions {
                touch: *touch,
                ..GetOptions::default()
            };
            ops.extend(Command::get_keys(keys).map(|key| KeyOp::Get { key, options }));
        }
        Step::Command(Command::Keyed { op, .. }) => ops.push(op.clone()),
        Step::Swallow {
            stale_key: Some(key), ..
        } => ops.push(KeyOp::Delete {
            key,
            options: DeleteOptions::default(),
        }),
        _ => {}
    }
}

fn op_count(step: &Step<'_>) -> usize {
    match step {
        Step::Command(Command::Get { keys, .. }) => Command::get_keys(keys).count(),
        Step::Command(Command::Keyed { .. }) | Step::Swallow { stale_key: Some(_), .. } => 1,
        _ => 0,
    }
}

/// Writes replies step by step as outcomes arrive in op order.
struct Assembler<'s, 'a> {
    steps: &'s [Step<'a>],
    step: usize,
    ops_left: usize,
    begun: bool,
}

impl Assembler<'_, '_> {
    fn outcome(&mut self, out: &mut Vec<u8>, key: &[u8], outcome: &Outcome<&[u8]>) {
        while !(self.begun && self.ops_left > 0) {
            if self.begun {
                self.finish_step(out);
            }
            self.ops_left = op_count(&self.steps[self.step]);
            self.begun = true;
        }
        self.ops_left -= 1;
        match &self.steps[self.step] {
            Step::Command(Command::Get { with_cas, .. }) => text_reply::get_outcome(out, key, *with_cas, outcome),
            Step::Command(Command::Keyed { noreply: false, .. }) => text_reply::keyed_outcome(out, outcome),
            // noreply, or the silent delete of a stale value.
            _ => {}
        }
    }

    fn finish_step(&mut self, out: &mut Vec<u8>) {
        match &self.steps[self.step] {
            Step::Command(Command::Get { .. }) => text_reply::end(out),
            Step::Reply { text, noreply: false } => text_reply::line(out, text),
            Step::Swallow {
                reply, noreply: false, ..
            } => text_reply::line(out, reply),
            _ => {}
        }
        self.step += 1;
        self.begun = false;
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        if self.begun {
            self.finish_step(out);
        }
        while self.step < self.steps.len() {
            self.finish_step(out);
        }
    }
}

async fn execute_run(core: &Core, reply_slot: &ReplySlot, steps: &[Step<'_>], out: &mut Vec<u8>) {
    let mut ops = Vec::new();
    for step in steps {
        step_ops(step, &mut ops);
    }
    let mut assembler = Assembler {
        steps,
        step: 0,
        ops_left: 0,
        begun: false,
    };
    router::execute(core, reply_slot, &ops, |index, outcome| {
        assembler.outcome(out, ops[index].key(), outcome)
    })
    .await;
    assembler.finish(out);
}

async fn execute_special(core: &Core, reply_slot: &ReplySlot, step: &Step<'_>, out: &mut Vec<u8>, batch: &mut Batch) {
    let config = &core.global.config;
    let Step::Command(command) = step else {
        if let Step::Close(reply) = step {
            text_reply::line(out, reply);
        }
        batch.close = true;
        return;
    };
    match *command {
        Command::FlushAll { delay, noreply } => {
            if !config.flush_enabled {
                if !noreply {
                    text_reply::line(out, "CLIENT_ERROR flush_all not allowed");
                }
                return;
            }
            router::flush_all(core, reply_slot, delay).await;
            if !noreply {
                text_reply::line(out, "OK");
            }
        }
        Command::Version => {
            out.extend_from_slice(b"VERSION ");
            text_reply::line(out, stats::VERSION);
        }
        Command::Verbosity { level, noreply } => {
            router::verbosity(core, reply_slot, level).await;
            if !noreply {
                text_reply::line(out, "OK");
            }
        }
        Command::Stats { group } => match group {
            b"" => {
                let report = router::report(core, reply_slot).await;
                stats::general(out, &core.global, &report, core.verbosity.get());
                text_reply::end(out);
            }
            b"settings" => {
                stats::settings(out, &core.global, core.verbosity.get());
                text_reply::end(out);
            }
            b"items" => {
                stats::items(out, &router::report(core, reply_slot).await);
                text_reply::end(out);
            }
            b"slabs" => {
                stats::slabs(out, &router::report(core, reply_slot).await);
                text_reply::end(out);
            }
            b"reset" => {
                router::reset_stats(core, reply_slot).await;
                text_reply::line(out, "RESET");
            }
            _ => text_reply::line(out, text::ERROR),
        },
        Command::Quit => batch.close = true,
        Command::Shutdown => {
            if config.shutdown_enabled {
                batch.close = true;
                batch.shutdown = true;
            } else {
                text_reply::line(out, "ERROR: shutdown not enabled");
            }
        }
        Command::Get { .. } | Command::Keyed { .. } => unreachable!("routed commands are not special"),
    }
}
