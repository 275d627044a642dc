//! The worker's own io_uring for client sockets. Listeners accept with a
//! multishot accept, connections receive with a multishot receive into a
//! pool of provided buffers, and sends are queued without a system call:
//! everything queued is submitted in one go when the core has nothing left
//! to run and sleeps in this ring (glommio parks through the hook below,
//! see vendor/glommio/PATCHED.md), or once it has waited one executor loop
//! while the core stays busy. A wake then costs one ring entry instead of
//! a receive and a send system call per connection; the measurements are
//! in benches/results/2026-11-23/socket-ring/.
//!
//! Connection tasks see a `Socket`: `recv` copies what arrived, `send`
//! copies the replies into the socket's queue and returns. The ring owns
//! every buffer the kernel may still read or write, and a socket is closed
//! only once nothing of it is in flight.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Poll, Waker};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

/// Receive buffers handed to the kernel, per core.
const BUFFER_SIZE: usize = 16 * 1024;
const BUFFER_COUNT: u16 = 128;
const BUFFER_GROUP: u16 = 1;
const RING_ENTRIES: u32 = 1024;
/// A sender waits while this much is queued behind the send in flight.
const SEND_QUEUE_LIMIT: usize = 4 << 20;

/// What a completion is for: the kind in the top byte, the socket or
/// listener index in the low 32 bits.
const KIND_SHIFT: u32 = 56;
const ACCEPT: u64 = 1;
const RECEIVE: u64 = 2;
const SEND: u64 = 3;
const PROVIDE: u64 = 4;
const CANCEL: u64 = 5;
const GLOMMIO_READY: u64 = 6;

fn user_data(kind: u64, index: u32) -> u64 {
    (kind << KIND_SHIFT) | u64::from(index)
}

/// One core's ring, its sockets and its listeners.
pub struct SocketRing {
    ring: RefCell<IoUring>,
    state: RefCell<State>,
    /// Set when glommio's ring descriptor is watched by a poll in this ring.
    glommio_watched: Cell<bool>,
    /// Queued entries were already pending at the previous poll: submit
    /// them even though the executor is busy.
    queued_since_poll: Cell<bool>,
    /// Completions being handled (kept to reuse its memory).
    completions: Cell<Vec<cqueue::Entry>>,
}

struct State {
    sockets: Vec<SocketState>,
    free_sockets: Vec<u32>,
    listeners: Vec<ListenerState>,
    buffers: Box<[u8]>,
    /// Sockets whose receive stopped for want of buffers.
    starved: Vec<u32>,
}

#[derive(Default)]
struct SocketState {
    fd: RawFd,
    /// Bytes received and not yet taken by the connection.
    received: Vec<u8>,
    taken: usize,
    end_of_stream: bool,
    error: Option<i32>,
    reader: Option<Waker>,
    receiving: bool,
    /// The send in flight (`sending[sent..]` is still the kernel's) and
    /// the replies queued behind it.
    sending: Vec<u8>,
    sent: usize,
    queued: Vec<u8>,
    writer: Option<Waker>,
    /// The connection has let go; the slot is freed once nothing is in flight.
    released: bool,
    /// A cancel of the receive is in flight: the slot (whose index the
    /// cancel names) is not reused before the cancel's own completion.
    cancelling: bool,
    in_use: bool,
}

impl SocketState {
    fn idle(&self) -> bool {
        !self.receiving && !self.cancelling && self.sending.is_empty()
    }
}

struct ListenerState {
    fd: RawFd,
    accepted: VecDeque<RawFd>,
    /// The multishot accept is armed.
    accepting: bool,
    error: Option<i32>,
    waiter: Option<Waker>,
}

impl SocketRing {
    pub fn new() -> io::Result<Rc<SocketRing>> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(RING_ENTRIES)?;
        let this = Rc::new(SocketRing {
            ring: RefCell::new(ring),
            state: RefCell::new(State {
                sockets: Vec::new(),
                free_sockets: Vec::new(),
                listeners: Vec::new(),
                buffers: vec![0u8; BUFFER_SIZE * usize::from(BUFFER_COUNT)].into_boxed_slice(),
                starved: Vec::new(),
            }),
            glommio_watched: Cell::new(false),
            queued_since_poll: Cell::new(false),
            completions: Cell::new(Vec::with_capacity(RING_ENTRIES as usize)),
        });
        {
            let mut state = this.state.borrow_mut();
            let buffers = state.buffers.as_mut_ptr();
            this.push(
                opcode::ProvideBuffers::new(buffers, BUFFER_SIZE as i32, BUFFER_COUNT, BUFFER_GROUP, 0)
                    .build()
                    .user_data(user_data(PROVIDE, 0)),
            );
        }
        Ok(this)
    }

    /// Lets this thread's glommio executor sleep in this ring.
    pub fn install_park_hook(self: &Rc<Self>) {
        glommio::set_park_hook(Some(Box::new(ParkInRing(self.clone()))));
    }

    fn push(&self, entry: squeue::Entry) {
        let mut ring = self.ring.borrow_mut();
        // SAFETY: every buffer an entry points at is owned by `State` and
        // outlives the entry's completion (see `SocketState::released`).
        while unsafe { ring.submission().push(&entry) }.is_err() {
            if let Err(error) = ring.submit() {
                tracing::error!("socket ring submit failed: {error}");
            }
        }
    }

    /// Starts accepting on a listening socket this ring now owns.
    pub fn listen(self: &Rc<Self>, fd: RawFd) -> Listener {
        let index = {
            let mut state = self.state.borrow_mut();
            state.listeners.push(ListenerState {
                fd,
                accepted: VecDeque::new(),
                accepting: true,
                error: None,
                waiter: None,
            });
            (state.listeners.len() - 1) as u32
        };
        self.arm_accept(fd, index);
        Listener {
            ring: self.clone(),
            index,
        }
    }

    fn arm_accept(&self, fd: RawFd, index: u32) {
        self.push(
            opcode::AcceptMulti::new(types::Fd(fd))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(user_data(ACCEPT, index)),
        );
    }

    /// Takes an accepted descriptor: its bytes arrive through this ring.
    fn adopt(self: &Rc<Self>, fd: RawFd) -> Socket {
        let index = {
            let mut state = self.state.borrow_mut();
            let index = state.free_sockets.pop().unwrap_or_else(|| {
                state.sockets.push(SocketState::default());
                (state.sockets.len() - 1) as u32
            });
            state.sockets[index as usize] = SocketState {
                fd,
                in_use: true,
                receiving: true,
                ..SocketState::default()
            };
            index
        };
        self.arm_receive(fd, index);
        Socket {
            ring: self.clone(),
            index,
        }
    }

    fn arm_receive(&self, fd: RawFd, index: u32) {
        self.push(
            opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP)
                .build()
                .user_data(user_data(RECEIVE, index)),
        );
    }

    /// Handles every completion; true if a task was woken.
    fn reap(&self) -> bool {
        let mut woke = false;
        let mut completions = self.completions.take();
        loop {
            completions.extend(self.ring.borrow_mut().completion());
            if completions.is_empty() {
                break;
            }
            for completion in completions.drain(..) {
                woke |= self.complete(&completion);
            }
        }
        self.completions.set(completions);
        let starved = std::mem::take(&mut self.state.borrow_mut().starved);
        for index in starved {
            let fd = self.state.borrow().sockets[index as usize].fd;
            self.arm_receive(fd, index);
        }
        woke
    }

    fn complete(&self, completion: &cqueue::Entry) -> bool {
        let kind = completion.user_data() >> KIND_SHIFT;
        let index = completion.user_data() as u32;
        let result = completion.result();
        let more = cqueue::more(completion.flags());
        match kind {
            ACCEPT => self.accepted(index, result, more),
            RECEIVE => self.received(index, result, more, cqueue::buffer_select(completion.flags())),
            SEND => self.sent(index, result),
            GLOMMIO_READY => {
                self.glommio_watched.set(false);
                false
            }
            CANCEL => {
                let mut state = self.state.borrow_mut();
                state.sockets[index as usize].cancelling = false;
                self.free_if_idle(&mut state, index);
                false
            }
            PROVIDE => {
                if result < 0 {
                    tracing::error!("providing receive buffers failed: {}", io::Error::from_raw_os_error(-result));
                }
                false
            }
            _ => false,
        }
    }

    fn accepted(&self, index: u32, result: i32, more: bool) -> bool {
        let mut state = self.state.borrow_mut();
        let listener = &mut state.listeners[index as usize];
        if result >= 0 {
            listener.accepted.push_back(result);
        } else {
            listener.error = Some(-result);
        }
        // After an error the accept is armed again only when asked for the
        // next connection (a listener shut on stop would fail forever).
        let rearm = !more && result >= 0;
        listener.accepting = more || rearm;
        let fd = listener.fd;
        let waiter = listener.waiter.take();
        drop(state);
        if rearm {
            self.arm_accept(fd, index);
        }
        waiter.map(Waker::wake).is_some()
    }

    fn received(&self, index: u32, result: i32, more: bool, buffer: Option<u16>) -> bool {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let socket = &mut state.sockets[index as usize];
        if let Some(buffer) = buffer {
            let start = usize::from(buffer) * BUFFER_SIZE;
            if result > 0 && !socket.released {
                socket
                    .received
                    .extend_from_slice(&state.buffers[start..start + result as usize]);
            }
            let address = state.buffers[start..].as_mut_ptr();
            self.push(
                opcode::ProvideBuffers::new(address, BUFFER_SIZE as i32, 1, BUFFER_GROUP, buffer)
                    .build()
                    .user_data(user_data(PROVIDE, 0)),
            );
        }
        if !more {
            socket.receiving = false;
            match result {
                0 => socket.end_of_stream = true,
                error if error == -libc::ENOBUFS && !socket.released => {
                    socket.receiving = true;
                    state.starved.push(index);
                }
                error if error < 0 => {
                    if !socket.released && error != -libc::ECANCELED {
                        socket.error = Some(-error);
                    }
                    socket.end_of_stream = true;
                }
                _ => {
                    // A multishot receive can end after data; arm it again.
                    if !socket.released {
                        socket.receiving = true;
                        let fd = socket.fd;
                        self.arm_receive(fd, index);
                    }
                }
            }
        }
        let socket = &mut state.sockets[index as usize];
        if socket.released {
            self.free_if_idle(state, index);
            return false;
        }
        socket.reader.take().map(Waker::wake).is_some()
    }

    fn sent(&self, index: u32, result: i32) -> bool {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let socket = &mut state.sockets[index as usize];
        if result < 0 {
            socket.error.get_or_insert(-result);
            socket.sending.clear();
            socket.queued.clear();
            socket.sent = 0;
        } else {
            socket.sent += result as usize;
            if socket.sent == socket.sending.len() {
                socket.sending.clear();
                socket.sent = 0;
                std::mem::swap(&mut socket.sending, &mut socket.queued);
            }
            if !socket.sending.is_empty() {
                let remaining = &socket.sending[socket.sent..];
                let entry = opcode::Send::new(types::Fd(socket.fd), remaining.as_ptr(), remaining.len() as u32)
                    .build()
                    .user_data(user_data(SEND, index));
                self.push(entry);
            }
        }
        if socket.released {
            self.free_if_idle(state, index);
            return false;
        }
        socket.writer.take().map(Waker::wake).is_some()
    }

    /// Closes a released socket once the kernel holds nothing of it.
    fn free_if_idle(&self, state: &mut State, index: u32) {
        let socket = &mut state.sockets[index as usize];
        if socket.in_use && socket.released && socket.idle() {
            // SAFETY: the descriptor was accepted by this ring and nothing
            // in flight refers to it any more.
            unsafe { libc::close(socket.fd) };
            *socket = SocketState::default();
            state.free_sockets.push(index);
        }
    }

    /// Submits what is queued when it has waited a whole executor loop.
    fn submit_if_waiting(&self) {
        let mut ring = self.ring.borrow_mut();
        let queued = !ring.submission().is_empty();
        let task_work = ring.submission().taskrun();
        if (queued && self.queued_since_poll.get()) || task_work {
            if let Err(error) = ring.submit() {
                tracing::error!("socket ring submit failed: {error}");
            }
            self.queued_since_poll.set(false);
        } else {
            self.queued_since_poll.set(queued);
        }
    }

    fn sleep(&self, glommio_ring: RawFd) -> io::Result<()> {
        if !self.glommio_watched.get() {
            self.glommio_watched.set(true);
            self.push(
                opcode::PollAdd::new(types::Fd(glommio_ring), libc::POLLIN as u32)
                    .build()
                    .user_data(user_data(GLOMMIO_READY, 0)),
            );
        }
        self.queued_since_poll.set(false);
        match self.ring.borrow_mut().submit_and_wait(1) {
            Ok(_) => Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::EINTR) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// glommio's park hook: reap before every poll, sleep in this ring.
struct ParkInRing(Rc<SocketRing>);

impl glommio::ParkHook for ParkInRing {
    fn has_work(&mut self, about_to_park: bool) -> bool {
        if !about_to_park {
            self.0.submit_if_waiting();
        }
        self.0.reap()
    }

    fn sleep(&mut self, glommio_ring_fd: RawFd) -> io::Result<()> {
        self.0.sleep(glommio_ring_fd)?;
        self.0.reap();
        Ok(())
    }
}

/// A listening socket served by the ring.
pub struct Listener {
    ring: Rc<SocketRing>,
    index: u32,
}

impl Listener {
    /// The next connection, or the error that stopped accepting (a
    /// listener shut down on stop ends this way).
    pub async fn accept(&self) -> io::Result<Socket> {
        std::future::poll_fn(|cx| {
            let mut state = self.ring.state.borrow_mut();
            let listener = &mut state.listeners[self.index as usize];
            if let Some(fd) = listener.accepted.pop_front() {
                drop(state);
                return Poll::Ready(Ok(self.ring.adopt(fd)));
            }
            if let Some(error) = listener.error.take() {
                return Poll::Ready(Err(io::Error::from_raw_os_error(error)));
            }
            if !listener.accepting {
                listener.accepting = true;
                let fd = listener.fd;
                drop(state);
                self.ring.arm_accept(fd, self.index);
                state = self.ring.state.borrow_mut();
            }
            state.listeners[self.index as usize].waiter = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// A connection's socket. Dropping it closes the descriptor once the
/// replies already queued have gone out (or failed).
pub struct Socket {
    ring: Rc<SocketRing>,
    index: u32,
}

impl Socket {
    pub fn fd(&self) -> RawFd {
        self.ring.state.borrow().sockets[self.index as usize].fd
    }

    /// Copies received bytes into `buffer`; 0 at the end of the stream.
    pub async fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            let mut state = self.ring.state.borrow_mut();
            let socket = &mut state.sockets[self.index as usize];
            let available = socket.received.len() - socket.taken;
            if available > 0 {
                let count = available.min(buffer.len());
                buffer[..count].copy_from_slice(&socket.received[socket.taken..socket.taken + count]);
                socket.taken += count;
                if socket.taken == socket.received.len() {
                    socket.received.clear();
                    socket.taken = 0;
                    // Give back the memory a large value needed.
                    if socket.received.capacity() > 4 * BUFFER_SIZE {
                        socket.received = Vec::new();
                    }
                }
                return Poll::Ready(Ok(count));
            }
            if let Some(error) = socket.error {
                return Poll::Ready(Err(io::Error::from_raw_os_error(error)));
            }
            if socket.end_of_stream {
                return Poll::Ready(Ok(0));
            }
            socket.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Queues `bytes` to be sent after everything queued before; waits
    /// only while a slow reader leaves more than SEND_QUEUE_LIMIT queued.
    pub async fn send(&self, bytes: &[u8]) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut state = self.ring.state.borrow_mut();
            let socket = &mut state.sockets[self.index as usize];
            if let Some(error) = socket.error {
                return Poll::Ready(Err(io::Error::from_raw_os_error(error)));
            }
            if socket.queued.len() >= SEND_QUEUE_LIMIT {
                socket.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        })
        .await?;
        let mut state = self.ring.state.borrow_mut();
        let socket = &mut state.sockets[self.index as usize];
        if socket.sending.is_empty() {
            socket.sending.extend_from_slice(bytes);
            let entry = opcode::Send::new(types::Fd(socket.fd), socket.sending.as_ptr(), socket.sending.len() as u32)
                .build()
                .user_data(user_data(SEND, self.index));
            drop(state);
            self.ring.push(entry);
        } else {
            socket.queued.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Waits until everything queued has been sent (or the send failed).
    pub async fn flush(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.ring.state.borrow_mut();
            let socket = &mut state.sockets[self.index as usize];
            if socket.sending.is_empty() || socket.error.is_some() {
                Poll::Ready(())
            } else {
                socket.writer = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let mut state = self.ring.state.borrow_mut();
        let socket = &mut state.sockets[self.index as usize];
        socket.released = true;
        socket.reader = None;
        socket.writer = None;
        socket.received = Vec::new();
        if socket.receiving {
            socket.cancelling = true;
            self.ring.push(
                opcode::AsyncCancel::new(user_data(RECEIVE, self.index))
                    .build()
                    .user_data(user_data(CANCEL, self.index)),
            );
        }
        self.ring.free_if_idle(&mut state, self.index);
    }
}
