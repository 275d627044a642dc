//! The replication core: its own executor (pinned with `--repl-core`),
//! one channel pair per worker core, the per-shard backlogs, and the
//! primary and replica tasks. Publishes `stats replication` every tick.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};

use super::backlog::Backlog;
use super::gossip;
use super::primary::{self, PrimaryState};
use super::replica::{self, LinkState, Upstream};
use super::{Notify, ToReplication, ToWorker};
use crate::cluster::membership::NodeState;
use crate::global::Global;
use crate::net;

/// Why the replication core could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("cannot start the replication core: {0}")]
    Executor(String),
}

/// Messages in flight per channel before a sender waits.
const CHANNEL_CAPACITY: usize = 1024;
/// How often `stats replication` is refreshed.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// The worker's ends of its channels to the replication core.
pub struct WorkerChannels {
    pub to_core: SharedSender<ToReplication>,
    pub from_core: SharedReceiver<ToWorker>,
}

/// State of the replication core (lives on its executor only).
pub struct ReplicationCore {
    pub global: Arc<Global>,
    /// Worker shards on this host.
    pub shards: usize,
    /// Senders to each worker, by shard id (known once it said hello).
    pub workers: RefCell<Vec<Option<Rc<ConnectedSender<ToWorker>>>>>,
    pub backlogs: RefCell<Vec<Backlog>>,
    /// New log bytes or snapshot slices arrived.
    pub changed: Notify,
    pub primary: PrimaryState,
    /// Links this host follows, by source: the primary's (0), or each
    /// other cluster node's (its index).
    pub links: RefCell<Vec<LinkState>>,
    /// A worker's records were applied (acks may move).
    pub applied: Notify,
    ready: Cell<usize>,
    all_ready: Notify,
    /// Open replication sockets, shut when the server stops (io_uring
    /// would otherwise keep them, and the port, past the exit).
    sockets: RefCell<HashSet<RawFd>>,
    /// Cluster slots this node follows so far (a link per other node,
    /// started as the node list grows).
    followed: Cell<usize>,
}

/// Keeps a socket in the core's set while a link uses it.
pub struct SocketGuard<'a> {
    core: &'a ReplicationCore,
    fd: RawFd,
}

impl Drop for SocketGuard<'_> {
    fn drop(&mut self) {
        self.core.sockets.borrow_mut().remove(&self.fd);
    }
}

impl ReplicationCore {
    pub fn worker(&self, shard: usize) -> Option<Rc<ConnectedSender<ToWorker>>> {
        self.workers.borrow().get(shard).cloned().flatten()
    }

    pub fn track(&self, fd: RawFd) -> SocketGuard<'_> {
        self.sockets.borrow_mut().insert(fd);
        SocketGuard { core: self, fd }
    }

    /// Who acts for what changed: followers' writers choose their records
    /// again, and links say whether this node is stale.
    pub fn membership_moved(&self) {
        self.changed.notify();
        self.applied.notify();
    }

    async fn wait_ready(&self) {
        while self.ready.get() < self.shards {
            let epoch = self.all_ready.epoch();
            self.all_ready.changed_since(epoch).await;
        }
    }
}

/// The running replication core: each worker's channels, and the thread to
/// join at stop (it shuts its sockets first).
pub struct Started {
    pub channels: Vec<WorkerChannels>,
    pub thread: glommio::ExecutorJoinHandle<()>,
}

impl ReplicationCore {
    /// Follows every node of the list not followed yet (at start, and
    /// after the list grew).
    pub fn follow_new_nodes(self: &Rc<Self>) {
        let Some(cluster) = &self.global.cluster else {
            return;
        };
        let slots = cluster.slots();
        for node in (self.followed.get()..slots).filter(|&node| !cluster.is_me(node)) {
            let upstream = Upstream::Node {
                address: format!("{}:{}", cluster.node(node).host, cluster.cluster_port_of(node)),
                me: cluster.my_name(),
            };
            glommio::spawn_local(replica::follow(self.clone(), node, upstream)).detach();
        }
        self.followed.set(self.followed.get().max(slots));
    }
}

/// Binds the replication port (so errors show before anything starts),
/// starts the replication core, and returns each worker's channels.
pub fn start(global: &Arc<Global>) -> Result<Started, StartError> {
    let config = &global.config;
    let shards = config.threads();
    let bind = |port: u16| {
        let address = SocketAddr::new(config.listen[0], port);
        net::ensure_free(address).map_err(|source| StartError::Bind { address, source })?;
        net::bind(address, config.backlog).map_err(|source| StartError::Bind { address, source })
    };
    // Whole-host replicas on --repl-port; the other nodes on the cluster port.
    let listener = config.repl_port.map(bind).transpose()?;
    let cluster_port = config.cluster.as_ref().map(|cluster| cluster.cluster_port_of(cluster.me));
    let cluster_listener = cluster_port.map(bind).transpose()?;
    // The failure detector's datagrams use the same port number, over UDP.
    let gossip_socket = cluster_port
        .map(|port| {
            let address = SocketAddr::new(config.listen[0], port);
            std::net::UdpSocket::bind(address).map_err(|source| StartError::Bind { address, source })
        })
        .transpose()?;
    let gossip_fd = gossip_socket.map(IntoRawFd::into_raw_fd);
    // Links by source: one per slot of a node list that may grow.
    let sources = config.cluster.as_ref().map_or(1, |_| crate::cluster::ring::MAX_NODES);
    let mut worker_channels = Vec::new();
    let mut core_channels = Vec::new();
    for _ in 0..shards {
        let (to_core, from_worker) = shared_channel::new_bounded(CHANNEL_CAPACITY);
        let (to_worker, from_core) = shared_channel::new_bounded(CHANNEL_CAPACITY);
        worker_channels.push(WorkerChannels { to_core, from_core });
        core_channels.push((from_worker, to_worker));
    }
    let placement = || config.repl_core.map_or(Placement::Unbound, Placement::Fixed);
    let global = global.clone();
    let listener_fd = listener.map(IntoRawFd::into_raw_fd);
    let cluster_listener_fd = cluster_listener.map(IntoRawFd::into_raw_fd);
    let thread = LocalExecutorBuilder::new(placement())
        .name("replication")
        .io_memory(config.io_memory)
        .ring_depth(128)
        .spawn(move || async move {
            // No lower priority than the workers (it once ran at nice 10):
            // under sustained CPU load a niced replication core was not run
            // at all for a minute and more, and its replicas stayed empty.
            // To keep it off the workers' CPUs, pin it (`--repl-core`).
            let core = Rc::new(ReplicationCore {
                shards,
                workers: RefCell::new(vec![None; shards]),
                backlogs: RefCell::new((0..shards).map(|_| Backlog::new(global.config.repl_backlog)).collect()),
                changed: Notify::default(),
                primary: PrimaryState::default(),
                links: RefCell::new((0..sources).map(|_| LinkState::default()).collect()),
                applied: Notify::default(),
                ready: Cell::new(0),
                all_ready: Notify::default(),
                sockets: RefCell::default(),
                followed: Cell::new(0),
                global,
            });
            for (from_worker, to_worker) in core_channels {
                glommio::spawn_local(serve_worker(core.clone(), from_worker, to_worker)).detach();
            }
            core.wait_ready().await;
            for fd in listener_fd.into_iter().chain(cluster_listener_fd) {
                // SAFETY: the descriptor was bound above and is owned by nothing else.
                let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
                glommio::spawn_local(primary::serve(core.clone(), listener)).detach();
            }
            if let Some(fd) = gossip_fd {
                // SAFETY: the socket was bound above and is owned by nothing else.
                let socket = unsafe { glommio::net::UdpSocket::from_raw_fd(fd) };
                glommio::spawn_local(gossip::run(core.clone(), socket)).detach();
            }
            if core.global.cluster.is_some() {
                glommio::spawn_local(refresh_when_stale(core.clone())).detach();
            }
            match &core.global.cluster {
                None => {
                    glommio::spawn_local(replica::follow(core.clone(), 0, Upstream::Primary)).detach();
                }
                Some(_) => core.follow_new_nodes(),
            }
            while !core.global.stopping.load(Ordering::Relaxed) {
                publish(&core);
                glommio::timer::sleep(PUBLISH_INTERVAL).await;
            }
            // SAFETY: shutdown on descriptors this core owns; a closed one just fails.
            unsafe {
                let listeners = listener_fd.into_iter().chain(cluster_listener_fd);
                for fd in listeners.chain(core.sockets.borrow().iter().copied()) {
                    libc::shutdown(fd, libc::SHUT_RDWR);
                }
            }
        })
        .map_err(|error| match config.repl_core {
            Some(cpu) => StartError::Executor(format!("on CPU {cpu}: {error}")),
            None => StartError::Executor(error.to_string()),
        })?;
    Ok(Started {
        channels: worker_channels,
        thread,
    })
}

/// Receives one worker's messages: log bytes into its backlog, snapshot
/// slices to their replica, applied offsets to the link.
async fn serve_worker(core: Rc<ReplicationCore>, from_worker: SharedReceiver<ToReplication>, to_worker: SharedSender<ToWorker>) {
    let receiver = from_worker.connect().await;
    let sender = Rc::new(to_worker.connect().await);
    let Some(ToReplication::Hello { shard }) = receiver.recv().await else {
        return;
    };
    core.workers.borrow_mut()[shard] = Some(sender);
    core.ready.set(core.ready.get() + 1);
    core.all_ready.notify();
    while let Some(message) = receiver.recv().await {
        match message {
            ToReplication::Hello { .. } => {}
            ToReplication::Log { offset, bytes, since } => {
                core.backlogs.borrow_mut()[shard].append(offset, &bytes, since);
                core.changed.notify();
            }
            ToReplication::Slice {
                follower,
                attempt,
                at_offset,
                records,
                next_cursor,
                took,
            } => {
                core.primary.slice_taken(took);
                let slice = primary::Slice {
                    at_offset,
                    records,
                    next_cursor,
                };
                primary::deliver_slice(&core, shard, follower, attempt, slice);
                core.changed.notify();
            }
            ToReplication::Applied {
                source,
                primary_shard,
                offset,
            } => {
                if let Some(link) = core.links.borrow_mut().get_mut(source) {
                    link.applied(shard, primary_shard, offset);
                }
                core.applied.notify();
            }
        }
    }
}

/// A cluster node that lost the majority takes fresh copies once it has it
/// again: every link to another node starts over with a full resync; once
/// each live node's has completed as a merge (every copy it holds of this
/// node's keys: it takes this node as stale) on a connection made since,
/// it acts for its keys again.
async fn refresh_when_stale(core: Rc<ReplicationCore>) {
    const POLL: Duration = Duration::from_millis(20);
    // A node never heard from this long after start is not waited for (it
    // may never have been started; it holds nothing of this node's keys).
    const START_GRACE: Duration = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let Some(cluster) = core.global.cluster.as_ref() else {
        return;
    };
    let membership = &cluster.membership;
    while !core.global.stopping.load(Ordering::Relaxed) {
        glommio::timer::sleep(POLL).await;
        // A node off the list (joining, or left) holds no keys to refresh.
        if !(membership.is_stale() && membership.has_majority() && membership.is_member(cluster.me())) {
            continue;
        }
        // Every other member: the nodes that may have acted for its keys.
        let others: Vec<usize> = (0..cluster.slots())
            .filter(|&node| !cluster.is_me(node) && membership.is_member(node))
            .collect();
        let marks: Vec<u64> = {
            let mut links = core.links.borrow_mut();
            for &node in &others {
                links[node].restart = true;
            }
            links.iter().map(|link| link.connections).collect()
        };
        tracing::info!("back in the majority: taking fresh copies from every node");
        while membership.has_majority() && !core.global.stopping.load(Ordering::Relaxed) {
            glommio::timer::sleep(POLL).await;
            let links = core.links.borrow();
            let unheard = |node: usize| membership.state(node) == NodeState::Unknown && started.elapsed() >= START_GRACE;
            let fresh = |node: &usize| membership.is_down(*node) || unheard(*node) || links[*node].merged_on > marks[*node];
            if others.iter().all(fresh) {
                membership.refreshed();
                core.membership_moved();
                tracing::info!("fresh copies taken: acting for this node's keys again");
                break;
            }
        }
    }
}

/// Refreshes the lines of `stats replication` (and each cluster node's lag).
fn publish(core: &ReplicationCore) {
    if let Some(cluster) = &core.global.cluster {
        let mut lags = vec![None; cluster.slots()];
        for (node, lag) in primary::lag_by_node(core) {
            lags[node] = Some(lag);
        }
        for (node, lag) in lags.into_iter().enumerate() {
            cluster.membership.set_lag(node, lag);
        }
    }
    let control = &core.global.replication;
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut stat = |name: String, value: String| lines.push((name, value));
    let role = if control.primary().is_some() { "replica" } else { "primary" };
    stat("role".into(), role.into());
    stat("replid".into(), control.replid());
    if let Some(port) = core.global.config.repl_port {
        stat("repl_port".into(), port.to_string());
    }
    stat("shards".into(), core.shards.to_string());
    {
        let backlogs = core.backlogs.borrow();
        for (shard, backlog) in backlogs.iter().enumerate() {
            stat(format!("shard_{shard}_offset"), backlog.end().to_string());
            stat(format!("shard_{shard}_backlog_start"), backlog.start().to_string());
        }
    }
    primary::report(core, &mut stat);
    replica::report(core, &mut stat);
    control.publish(lines);
}
