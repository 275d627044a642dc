//! Cores and sockets. One glommio executor per worker core, pinned, each
//! owning one `Shard`, its own SO_REUSEPORT listener and its connections.
//! Cores talk only over two channel meshes: requests to the owning shard,
//! replies back (two meshes, so that a core waiting to send a reply can
//! never block a core waiting to send a request). The process lives as long
//! as all of its cores: one that could not start or panicked ends it.

pub mod binary_session;
pub mod connection;
pub mod listener;
pub mod node_links;
pub mod peer_session;
pub mod router;
pub mod session;
pub mod stats_command;
pub mod text_session;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::channels::channel_mesh::FullMesh;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use thiserror::Error;

use crate::config::Config;
use crate::global::Control;
pub use crate::global::Global;
use crate::replication::core::WorkerChannels;
use crate::replication::shard_side::ShardReplication;
use crate::report::{CommandLatency, CoreReport};
use crate::store::{Shard, ShardConfig};
use router::{FromShard, Mesh, Pending, ToShard};

/// Messages in flight per pair of cores before a sender waits.
const MESH_CAPACITY: usize = 1024;
/// The active expiry sweep: how often, and how many chunks per run.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
const SWEEP_BUDGET: usize = 10_000;
/// Sweep ticks between two stats snapshots for the metrics endpoint.
const PUBLISH_EVERY: u32 = 10;
/// How often a core looks at the stop flag, and how long a stop may take.
const STOP_POLL: Duration = Duration::from_millis(50);
const STOP_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("cannot start core {core} on CPU {cpu}: {reason}")]
    Executor { core: usize, cpu: usize, reason: String },
    #[error("cannot switch to user '{user}': {reason}")]
    User { user: String, reason: String },
    #[error("{thread} ended before the server was stopped: {reason}")]
    Stopped { thread: String, reason: String },
    #[error(transparent)]
    Replication(#[from] crate::replication::core::StartError),
}

/// Counters a core keeps outside its shard.
#[derive(Default)]
pub struct CoreCounters {
    pub bytes_read: Cell<u64>,
    pub bytes_written: Cell<u64>,
    pub cmd_flush: Cell<u64>,
    /// Times a connection reached `-R` requests with more waiting (and gave
    /// way to the core's other connections if they had work).
    pub conn_yields: Cell<u64>,
}

/// One worker core's state, shared by its tasks (never across threads).
pub struct Core {
    pub id: usize,
    pub cores: usize,
    pub shard: RefCell<Shard>,
    pub global: Arc<Global>,
    pub mesh: Option<Mesh>,
    /// Replies awaited by this core's connections (from other cores and nodes).
    pub pending: Rc<RefCell<Pending>>,
    /// Links to the other cluster nodes (cluster mode only).
    pub links: Option<node_links::NodeLinks>,
    pub counters: CoreCounters,
    pub verbosity: Cell<u32>,
    pub latency: RefCell<CommandLatency>,
    /// Sockets of the open connections (shut for reading on stop).
    pub connections: RefCell<HashSet<RawFd>>,
    /// This shard's replication log (None when replication is off).
    pub replication: Option<ShardReplication>,
}

impl Core {
    /// The shard, with its clock brought up to date.
    pub fn shard_now(&self) -> std::cell::RefMut<'_, Shard> {
        let mut shard = self.shard.borrow_mut();
        shard.set_now(self.global.now());
        shard
    }

    /// This core's contribution to `stats`.
    pub fn report(&self) -> CoreReport {
        CoreReport {
            shard: self.shard_now().report(),
            bytes_read: self.counters.bytes_read.get(),
            bytes_written: self.counters.bytes_written.get(),
            cmd_flush: self.counters.cmd_flush.get(),
            conn_yields: self.counters.conn_yields.get(),
            latency: self.latency.borrow().clone(),
        }
    }
}

/// What the replication tasks on this core work with.
impl crate::replication::shard_side::Worker for Core {
    fn shard_id(&self) -> usize {
        self.id
    }

    fn shard_now(&self) -> std::cell::RefMut<'_, Shard> {
        Core::shard_now(self)
    }

    fn replication(&self) -> Option<&ShardReplication> {
        self.replication.as_ref()
    }

    fn global(&self) -> &Global {
        &self.global
    }
}

/// Binds every listening socket up front (so errors are reported before any
/// core starts), one per address per core: SO_REUSEPORT lets the kernel
/// spread connections over the cores.
fn bind_listeners(config: &Config) -> Result<Vec<Vec<OwnedFd>>, ServerError> {
    for &ip in &config.listen {
        let address = SocketAddr::new(ip, config.port);
        crate::net::ensure_free(address).map_err(|source| ServerError::Bind { address, source })?;
    }
    (0..config.threads())
        .map(|_| {
            config
                .listen
                .iter()
                .map(|&ip| {
                    let address = SocketAddr::new(ip, config.port);
                    crate::net::bind(address, config.backlog).map_err(|source| ServerError::Bind { address, source })
                })
                .collect()
        })
        .collect()
}

/// Runs the server until shutdown.
pub fn run(config: Config) -> Result<(), ServerError> {
    let listeners = bind_listeners(&config)?;
    drop_privileges(config.user.as_deref())?;
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let global = Arc::new(Global {
        config: config.clone(),
        started: Instant::now(),
        started_unix,
        curr_connections: AtomicUsize::new(0),
        total_connections: AtomicU64::new(0),
        rejected_connections: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
        published: Mutex::new(vec![None; config.threads()]),
        replication: Control::new(config.replica_of.clone()),
        cluster: config
            .cluster
            .clone()
            .map(|cluster| crate::cluster::Cluster::new(cluster, config.threads())),
    });
    watch_signals(global.clone())?;
    if let Some(port) = config.metrics_port {
        let address = SocketAddr::new(config.listen[0], port);
        crate::metrics::serve(global.clone(), address).map_err(|source| ServerError::Bind { address, source })?;
    }
    let cores = config.threads();
    let (mut replication_channels, replication_thread): (Vec<Option<WorkerChannels>>, _) = if config.replication_enabled() {
        let started = crate::replication::core::start(&global)?;
        (started.channels.into_iter().map(Some).collect(), Some(started.thread))
    } else {
        (Vec::new(), None)
    };
    let request_mesh = FullMesh::<ToShard>::full(cores, MESH_CAPACITY);
    let reply_mesh = FullMesh::<FromShard>::full(cores, MESH_CAPACITY);

    let mut handles = Vec::new();
    for (index, fds) in listeners.into_iter().enumerate() {
        let cpu = config.cores[index];
        let global = global.clone();
        let (request_mesh, reply_mesh) = (request_mesh.clone(), reply_mesh.clone());
        let fds: Vec<RawFd> = fds.into_iter().map(IntoRawFd::into_raw_fd).collect();
        let channels = replication_channels.get_mut(index).and_then(Option::take);
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("core-{index}"))
            .io_memory(config.io_memory)
            .ring_depth(256)
            .spawn(move || async move {
                let mesh = if cores > 1 {
                    Some(Mesh::join(request_mesh, reply_mesh).await)
                } else {
                    None
                };
                // The mesh numbers peers by executor id: that is the shard id.
                let id = mesh.as_ref().map_or(0, Mesh::peer_id);
                let shard = Shard::new(&ShardConfig {
                    shard_id: id,
                    memory_limit: global.config.shard_memory(),
                    smallest_chunk: global.config.slab_min_size,
                    growth_factor: global.config.growth_factor,
                    item_size_max: global.config.item_size_max,
                    evictions: global.config.evictions,
                    started_unix: global.started_unix,
                });
                let pending = Rc::new(RefCell::new(Pending::default()));
                let core = Rc::new(Core {
                    id,
                    cores,
                    shard: RefCell::new(shard),
                    mesh,
                    links: global
                        .cluster
                        .as_ref()
                        .map(|_| node_links::NodeLinks::new(&global, cores, &pending)),
                    pending,
                    counters: CoreCounters::default(),
                    verbosity: Cell::new(0),
                    latency: RefCell::new(CommandLatency::default()),
                    connections: RefCell::new(HashSet::new()),
                    replication: channels.map(|channels: WorkerChannels| {
                        ShardReplication::new(global.config.repl_backlog, channels.to_core, channels.from_core)
                    }),
                    global,
                });
                router::spawn_mesh_tasks(&core);
                crate::replication::shard_side::spawn_tasks(&core);
                glommio::spawn_local(sweep(core.clone())).detach();
                glommio::spawn_local(stop_when_asked(core.clone(), fds.clone())).detach();
                let accepts: Vec<_> = fds
                    .into_iter()
                    // SAFETY: each fd was just bound for this core and is owned by nothing else.
                    .map(|fd| {
                        glommio::spawn_local(listener::accept_loop(core.clone(), unsafe {
                            glommio::net::TcpListener::from_raw_fd(fd)
                        }))
                    })
                    .collect();
                for accept in accepts {
                    accept.await;
                }
                // Stopping: let the connections answer what they have read.
                let deadline = Instant::now() + STOP_DEADLINE;
                while !core.connections.borrow().is_empty() && Instant::now() < deadline {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            })
            .map_err(|error| ServerError::Executor {
                core: index,
                cpu,
                reason: error.to_string(),
            })?;
        handles.push(handle);
    }
    let mut threads: Vec<(String, ExecutorJoinHandle<()>)> = handles
        .into_iter()
        .enumerate()
        .map(|(index, handle)| (format!("core {index}"), handle))
        .collect();
    threads.extend(replication_thread.map(|thread| ("the replication core".to_string(), thread)));
    supervise(&global, threads)
}

/// Waits for every executor. One that ends before a stop was asked for
/// (it could not start, or it panicked) ends the whole process with its
/// reason: the other cores would go on serving, and every request for a
/// key the lost core owns (or, for the replication core, every replica)
/// would wait forever.
fn supervise(global: &Global, threads: Vec<(String, ExecutorJoinHandle<()>)>) -> Result<(), ServerError> {
    let (ended, endings) = std::sync::mpsc::channel();
    let count = threads.len();
    for (name, handle) in threads {
        let ended = ended.clone();
        std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || {
                let result = handle.join();
                let _ = ended.send((name, result));
            })
            .map_err(|error| ServerError::Stopped {
                thread: "a supervisor".into(),
                reason: error.to_string(),
            })?;
    }
    for _ in 0..count {
        let (thread, result) = endings.recv().expect("every supervisor reports");
        if !global.stopping.load(Ordering::Relaxed) {
            let reason = match result {
                Ok(()) => "it ended".to_string(),
                Err(error) => error.to_string(),
            };
            return Err(ServerError::Stopped { thread, reason });
        }
    }
    Ok(())
}

/// Active expiry: a bounded slice of the shard is swept on every tick.
/// Every PUBLISH_EVERY ticks the core also publishes its stats snapshot.
async fn sweep(core: Rc<Core>) {
    let mut ticks = 0u32;
    loop {
        glommio::timer::sleep(SWEEP_INTERVAL).await;
        core.shard_now().sweep(SWEEP_BUDGET);
        ticks += 1;
        if ticks.is_multiple_of(PUBLISH_EVERY) && core.global.config.metrics_port.is_some() {
            let report = core.report();
            core.global.published.lock().expect("snapshot lock")[core.id] = Some(report);
        }
    }
}

/// On stop: shut the listeners (accepts end) and the read side of every
/// connection (each answers the complete requests it has, then closes).
async fn stop_when_asked(core: Rc<Core>, listeners: Vec<RawFd>) {
    while !core.global.stopping.load(Ordering::Relaxed) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    // SAFETY: shutdown on descriptors this core owns; a closed one just fails.
    unsafe {
        for fd in listeners {
            libc::shutdown(fd, libc::SHUT_RDWR);
        }
        for &fd in core.connections.borrow().iter() {
            libc::shutdown(fd, libc::SHUT_RD);
        }
    }
}

/// SIGTERM and SIGINT start a graceful stop; the process exits 0 when the
/// cores are done, or after STOP_DEADLINE whatever happens.
fn watch_signals(global: Arc<Global>) -> Result<(), ServerError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(|error| ServerError::Executor {
        core: 0,
        cpu: 0,
        reason: format!("cannot install signal handlers: {error}"),
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                tracing::info!("stopping");
                stop(&global);
            }
        })
        .map(|_| ())
        .map_err(|error| ServerError::Executor {
            core: 0,
            cpu: 0,
            reason: error.to_string(),
        })
}

/// Starts a graceful stop, bounded by STOP_DEADLINE.
pub fn stop(global: &Global) {
    if global.stopping.swap(true, Ordering::Relaxed) {
        return;
    }
    std::thread::spawn(|| {
        std::thread::sleep(STOP_DEADLINE);
        std::process::exit(0);
    });
}

/// `-u`: when started as root, switch to this user (as memcached does).
fn drop_privileges(user: Option<&str>) -> Result<(), ServerError> {
    // SAFETY: plain libc calls; getpwnam's result is read before any other call.
    unsafe {
        if libc::getuid() != 0 {
            return Ok(());
        }
        let Some(user) = user else {
            return Ok(());
        };
        let error = |reason: &str| ServerError::User {
            user: user.to_string(),
            reason: reason.to_string(),
        };
        let name = std::ffi::CString::new(user).map_err(|_| error("invalid name"))?;
        let entry = libc::getpwnam(name.as_ptr());
        if entry.is_null() {
            return Err(error("no such user"));
        }
        let (uid, gid) = ((*entry).pw_uid, (*entry).pw_gid);
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
            return Err(error(&std::io::Error::last_os_error().to_string()));
        }
    }
    Ok(())
}
