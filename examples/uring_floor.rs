//! The floor of a direct io_uring socket path, for the question issue #7
//! asks before adopting one: a single pinned thread that answers text
//! `get` with a canned 32-byte VALUE block and `set` with STORED (exactly
//! what `echo_floor` answers over glommio's sockets), using one ring with
//! multishot accept, multishot receive into provided buffers, and every
//! send of a loop turn submitted together with one `io_uring_enter`.
//! Its CPU per operation against `echo_floor`'s and memcached's says what
//! replacing glommio's socket path could win.
//!
//!   cargo run --release --example uring_floor -- 31800 0   # port, CPU

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

const HIT: &[u8] = b"VALUE key:0000000000000001 0 32\r\nabcdefghijklmnopqrstuvwxyzabcdef\r\nEND\r\n";
const BUFFER_GROUP: u16 = 1;
const BUFFER_SIZE: usize = 4096;
const BUFFERS: u16 = 1024;
const ACCEPT: u64 = 1 << 32;
const RECEIVE: u64 = 2 << 32;
const SEND: u64 = 3 << 32;
const PROVIDE: u64 = 4 << 32;

#[derive(Default)]
struct Connection {
    /// An incomplete line carried to the next receive.
    partial: Vec<u8>,
    skip_data_line: bool,
    /// Replies not yet handed to the kernel, and the send in flight.
    out: Vec<u8>,
    sending: Vec<u8>,
    send_in_flight: bool,
    closed: bool,
}

impl Connection {
    fn take_input(&mut self, data: &[u8]) {
        if self.partial.is_empty() {
            self.answer(data);
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(data);
            self.answer(&joined);
        }
    }

    fn answer(&mut self, data: &[u8]) {
        let mut at = 0;
        while let Some(end) = memchr::memchr(b'\n', &data[at..]) {
            let line = &data[at..at + end];
            at += end + 1;
            if self.skip_data_line {
                self.skip_data_line = false;
                self.out.extend_from_slice(b"STORED\r\n");
            } else if line.starts_with(b"set ") {
                self.skip_data_line = true;
            } else {
                self.out.extend_from_slice(HIT);
            }
        }
        self.partial.extend_from_slice(&data[at..]);
    }
}

struct Ring {
    ring: IoUring,
}

impl Ring {
    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: every buffer an entry points at outlives its completion
        // (connection buffers are only replaced after their send completes).
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit().expect("submit");
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(31800);
    let cpu: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    // SAFETY: plain affinity call on this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let mut ring = Ring {
        ring: IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(4096)
            .expect("io_uring"),
    };
    let mut buffers = vec![0u8; BUFFER_SIZE * usize::from(BUFFERS)];
    let provide = |bid: u16, buffers: &mut Vec<u8>| {
        let count = if bid == u16::MAX { BUFFERS } else { 1 };
        let start = if bid == u16::MAX { 0 } else { bid };
        opcode::ProvideBuffers::new(
            buffers[usize::from(start) * BUFFER_SIZE..].as_mut_ptr(),
            BUFFER_SIZE as i32,
            count,
            BUFFER_GROUP,
            start,
        )
        .build()
        .user_data(PROVIDE)
    };
    ring.push(provide(u16::MAX, &mut buffers));
    ring.push(
        opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .build()
            .user_data(ACCEPT),
    );
    let mut connections: HashMap<i32, Connection> = HashMap::new();
    let mut ready: Vec<i32> = Vec::new();
    loop {
        ring.ring.submit_and_wait(1).expect("submit_and_wait");
        let completions: Vec<cqueue::Entry> = ring.ring.completion().collect();
        for completion in completions {
            let (tag, fd) = (completion.user_data() & !0xffff_ffff, completion.user_data() as u32 as i32);
            let result = completion.result();
            match tag {
                ACCEPT => {
                    if result >= 0 {
                        let _ =
                            socket2::SockRef::from(&unsafe { std::os::fd::BorrowedFd::borrow_raw(result) }).set_tcp_nodelay(true);
                        connections.insert(result, Connection::default());
                        ring.push(
                            opcode::RecvMulti::new(types::Fd(result), BUFFER_GROUP)
                                .build()
                                .user_data(RECEIVE | result as u64),
                        );
                    }
                    if !cqueue::more(completion.flags()) {
                        ring.push(
                            opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
                                .build()
                                .user_data(ACCEPT),
                        );
                    }
                }
                RECEIVE => {
                    let Some(connection) = connections.get_mut(&fd) else {
                        continue;
                    };
                    if let Some(bid) = cqueue::buffer_select(completion.flags()) {
                        if result > 0 {
                            let at = usize::from(bid) * BUFFER_SIZE;
                            connection.take_input(&buffers[at..at + result as usize]);
                            if !connection.out.is_empty() {
                                ready.push(fd);
                            }
                        }
                        ring.push(provide(bid, &mut buffers));
                    }
                    if result == 0 || (result < 0 && result != -libc::ENOBUFS) {
                        connection.closed = true;
                    } else if !cqueue::more(completion.flags()) {
                        ring.push(
                            opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP)
                                .build()
                                .user_data(RECEIVE | fd as u64),
                        );
                    }
                }
                SEND => {
                    let Some(connection) = connections.get_mut(&fd) else {
                        continue;
                    };
                    connection.send_in_flight = false;
                    if result < 0 {
                        connection.closed = true;
                        connection.sending.clear();
                    } else {
                        connection.sending.drain(..result as usize);
                        if !connection.sending.is_empty() || !connection.out.is_empty() {
                            ready.push(fd);
                        }
                    }
                }
                _ => {}
            }
        }
        // One send per connection per turn, all submitted together.
        for fd in ready.drain(..) {
            let Some(connection) = connections.get_mut(&fd) else {
                continue;
            };
            if connection.closed {
                continue;
            }
            if connection.send_in_flight {
                continue;
            }
            // What a partial send left goes first; else everything answered so far.
            if connection.sending.is_empty() {
                std::mem::swap(&mut connection.sending, &mut connection.out);
            }
            if connection.sending.is_empty() {
                continue;
            }
            connection.send_in_flight = true;
            let bytes = &connection.sending;
            ring.push(
                opcode::Send::new(types::Fd(fd), bytes.as_ptr(), bytes.len() as u32)
                    .build()
                    .user_data(SEND | fd as u64),
            );
        }
        connections.retain(|&fd, connection| {
            if connection.closed && !connection.send_in_flight {
                // SAFETY: the connection's descriptor, closed once.
                unsafe { libc::close(fd) };
                false
            } else {
                true
            }
        });
    }
}
