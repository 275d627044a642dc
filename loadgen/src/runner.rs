//! Running a plan: one pinned glommio executor per load CPU, its
//! connections as tasks. Phases: prefill, warm-up, measurement.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::keys::KeyChooser;
use crate::options::Plan;
use corecache_client::codec::Expect;

use crate::protocol::{Codec, Reply};
use crate::results::{LatencySummary, Recorder, Report};
use crate::schedule::Schedule;
use crate::workload::{Op, OpKind, Workload};

/// Locked memory per load thread (glommio registers it with io_uring).
const IO_MEMORY: usize = 1 << 20;
const READ_BUFFER: usize = 64 * 1024;
/// How long to wait for replies still in flight when the run ends.
const DRAIN: Duration = Duration::from_secs(2);

/// Counters the progress line reads while the run goes on.
#[derive(Default)]
pub struct Progress {
    pub operations: AtomicU64,
    pub measured_sent: AtomicU64,
    pub done: AtomicBool,
}

/// When a connection's phases start and end.
#[derive(Clone, Copy)]
struct Timeline {
    measure_from: Instant,
    until: Instant,
}

/// A request waiting for its reply.
struct Pending {
    kind: OpKind,
    /// Its reply's shape, and what has been read of it.
    expect: Expect,
    reply: Reply,
    /// When it was sent (closed loop) or meant to be sent (open loop).
    since: Instant,
}

/// Runs the whole plan; returns the merged measurements and the report.
pub fn run(plan: &Plan, progress: Arc<Progress>) -> std::io::Result<(Recorder, Report)> {
    if plan.prefill {
        prefill(plan)?;
    }
    let usage_before = cpu_time();
    let started = Instant::now();
    let measure_from = started + plan.warmup;
    let until = if plan.requests.is_some() {
        started + Duration::from_secs(86_400)
    } else {
        measure_from + plan.duration
    };
    let timeline = Timeline { measure_from, until };
    let shared = progress.clone();
    let recorders = on_each_cpu(plan, move |plan, thread| {
        let progress = shared.clone();
        async move { load_thread(&plan, thread, timeline, progress).await }
    })?;
    let mut total = Recorder::default();
    for recorder in &recorders {
        total.merge(recorder);
    }
    let ended = Instant::now();
    progress.done.store(true, Ordering::Relaxed);
    let seconds = ended
        .min(until)
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    let cpu = cpu_time() - usage_before;
    let all_operations = progress.operations.load(Ordering::Relaxed).max(1);
    let report = report(plan, &total, seconds, cpu.as_secs_f64() * 1e6 / all_operations as f64);
    Ok((total, report))
}

fn report(plan: &Plan, total: &Recorder, seconds: f64, cpu_us_per_op: f64) -> Report {
    let mut latency: std::collections::BTreeMap<String, LatencySummary> = total
        .latency
        .iter()
        .filter(|(_, histogram)| !histogram.is_empty())
        .map(|(kind, histogram)| (kind.name().to_string(), LatencySummary::of(histogram)))
        .collect();
    latency.insert("all".into(), LatencySummary::of(&total.all()));
    let operations = total.operations();
    let lookups = total.hits + total.misses;
    Report {
        protocol: format!("{:?}", plan.codec.protocol).to_lowercase(),
        mode: if plan.rate.is_some() {
            "open-loop".into()
        } else {
            "closed-loop".into()
        },
        threads: plan.cpus.len(),
        connections: plan.connections,
        pipeline: plan.pipeline,
        target_rate: plan.rate,
        seconds,
        operations,
        ops_per_sec: operations as f64 / seconds,
        hits: total.hits,
        misses: total.misses,
        hit_ratio: if lookups == 0 {
            0.0
        } else {
            total.hits as f64 / lookups as f64
        },
        errors: total.errors.clone(),
        verify_failures: total.verify_failures,
        loadgen_cpu_us_per_op: cpu_us_per_op,
        latency,
    }
}

/// User + system CPU of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let of = |tv: libc::timeval| Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64);
    of(usage.ru_utime) + of(usage.ru_stime)
}

async fn load_thread(plan: &Plan, thread: usize, timeline: Timeline, progress: Arc<Progress>) -> Recorder {
    let recorder = Rc::new(RefCell::new(Recorder::default()));
    let tasks: Vec<_> = (0..plan.connections)
        .map(|index| {
            let connection = thread * plan.connections + index;
            let (plan, recorder, progress) = (plan.clone(), recorder.clone(), progress.clone());
            glommio::spawn_local(async move {
                let rate_per_connection = plan.rate.map(|rate| rate / plan.total_connections() as f64);
                let result = match rate_per_connection {
                    Some(rate) => open_loop(&plan, connection, rate, timeline, &recorder, &progress).await,
                    None => closed_loop(&plan, connection, timeline, &recorder, &progress).await,
                };
                if let Err(error) = result {
                    recorder.borrow_mut().error(&format!("connection: {error}"));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    Rc::try_unwrap(recorder).map(RefCell::into_inner).unwrap_or_default()
}

fn workload(plan: &Plan, connection: usize) -> (Workload, SmallRng) {
    let rng = SmallRng::seed_from_u64(plan.seed.wrapping_mul(1_000_003).wrapping_add(connection as u64));
    let start = plan.keys / plan.total_connections() as u64 * connection as u64;
    let workload = Workload {
        mix: plan.mix,
        chooser: KeyChooser::new(plan.keys, plan.pattern.clone(), start),
        multiget: plan.multiget,
    };
    (workload, rng)
}

/// Whether this connection may start another measured request.
fn may_send(plan: &Plan, progress: &Progress, now: Instant, timeline: &Timeline) -> bool {
    if now >= timeline.until {
        return false;
    }
    match plan.requests {
        Some(limit) if now >= timeline.measure_from => progress.measured_sent.fetch_add(1, Ordering::Relaxed) < limit,
        _ => true,
    }
}

/// Reads replies for the oldest pending requests; returns how many completed.
fn take_replies(
    codec: &Codec,
    buffer: &mut Vec<u8>,
    pending: &mut VecDeque<Pending>,
    recorder: &RefCell<Recorder>,
    measure_from: Instant,
    progress: &Progress,
) -> usize {
    let mut at = 0;
    let mut completed = 0;
    let now = Instant::now();
    while let Some(front) = pending.front_mut() {
        let (used, done) = codec.decode(&mut front.expect, &mut front.reply, &buffer[at..]);
        at += used;
        if !done {
            break;
        }
        if front.since >= measure_from {
            recorder.borrow_mut().record(front.kind, now - front.since, &front.reply);
        }
        pending.pop_front();
        completed += 1;
    }
    buffer.drain(..at);
    progress.operations.fetch_add(completed as u64, Ordering::Relaxed);
    completed
}

async fn connect(plan: &Plan) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(plan.server)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    Ok(stream)
}

/// Reads once into `buffer`; Ok(false) on a read timeout.
async fn read_some(stream: &mut (impl AsyncReadExt + Unpin), buffer: &mut Vec<u8>, chunk: &mut [u8]) -> std::io::Result<bool> {
    match stream.read(chunk).await {
        Ok(0) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "server closed the connection",
        )),
        Ok(read) => {
            buffer.extend_from_slice(&chunk[..read]);
            Ok(true)
        }
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut || error.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(error) => Err(error),
    }
}

/// As fast as replies allow: `pipeline` requests in flight, topped up after
/// every read with one send.
async fn closed_loop(
    plan: &Plan,
    connection: usize,
    timeline: Timeline,
    recorder: &RefCell<Recorder>,
    progress: &Progress,
) -> std::io::Result<()> {
    let mut stream = connect(plan).await?;
    let (mut workload, mut rng) = workload(plan, connection);
    let mut op = Op {
        kind: OpKind::Get,
        keys: Vec::new(),
    };
    let mut pending = VecDeque::new();
    let mut out = Vec::new();
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; READ_BUFFER];
    let mut sending = true;
    loop {
        let now = Instant::now();
        while sending && pending.len() < plan.pipeline {
            if !may_send(plan, progress, now, &timeline) {
                sending = false;
                break;
            }
            workload.next(&mut rng, &mut op);
            let expect = plan.codec.encode(&op, &mut out);
            pending.push_back(Pending {
                kind: op.kind,
                expect,
                reply: Reply::default(),
                since: now,
            });
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if pending.is_empty() {
            return Ok(());
        }
        let drain_deadline = timeline.until.max(now) + DRAIN;
        loop {
            if !read_some(&mut stream, &mut buffer, &mut chunk).await? && Instant::now() > drain_deadline {
                recorder.borrow_mut().error("timeout waiting for replies");
                return Ok(());
            }
            if take_replies(
                &plan.codec,
                &mut buffer,
                &mut pending,
                recorder,
                timeline.measure_from,
                progress,
            ) > 0
            {
                break;
            }
        }
    }
}

/// On schedule: requests go out at their intended times (all that are due
/// in one send), replies are read by a second task; latency counts from the
/// intended time, so queueing behind a stalled server is measured.
async fn open_loop(
    plan: &Plan,
    connection: usize,
    rate: f64,
    timeline: Timeline,
    recorder: &RefCell<Recorder>,
    progress: &Progress,
) -> std::io::Result<()> {
    let stream = connect(plan).await?;
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let pending = Rc::new(RefCell::new(VecDeque::<Pending>::new()));
    let writing = Rc::new(std::cell::Cell::new(true));
    let (mut workload, mut rng) = workload(plan, connection);
    let schedule = Schedule::new(plan.arrivals, rate);

    let send = {
        let (pending, writing) = (pending.clone(), writing.clone());
        async move {
            let mut op = Op {
                kind: OpKind::Get,
                keys: Vec::new(),
            };
            let mut out = Vec::new();
            // Stagger the first request by a random gap.
            let mut next = Instant::now() + schedule.next_gap(&mut rng);
            let result = loop {
                let now = Instant::now();
                while next <= now {
                    if !may_send(plan, progress, next, &timeline) {
                        break;
                    }
                    workload.next(&mut rng, &mut op);
                    let expect = plan.codec.encode(&op, &mut out);
                    pending.borrow_mut().push_back(Pending {
                        kind: op.kind,
                        expect,
                        reply: Reply::default(),
                        since: next,
                    });
                    next += schedule.next_gap(&mut rng);
                }
                if !out.is_empty() {
                    if let Err(error) = writer.write_all(&out).await {
                        break Err(error);
                    }
                    out.clear();
                }
                if next >= timeline.until || !may_send_later(plan, progress) {
                    break Ok(());
                }
                glommio::timer::sleep(next.saturating_duration_since(Instant::now())).await;
            };
            writing.set(false);
            result
        }
    };
    let receive = async {
        let mut buffer = Vec::new();
        let mut chunk = vec![0u8; READ_BUFFER];
        loop {
            if !writing.get() && pending.borrow().is_empty() {
                return Ok(());
            }
            let got = read_some(&mut reader, &mut buffer, &mut chunk).await?;
            if !got && !writing.get() && Instant::now() > timeline.until + DRAIN {
                recorder.borrow_mut().error("timeout waiting for replies");
                return Ok(());
            }
            take_replies(
                &plan.codec,
                &mut buffer,
                &mut pending.borrow_mut(),
                recorder,
                timeline.measure_from,
                progress,
            );
        }
    };
    let (sent, received) = futures_lite::future::zip(send, receive).await;
    sent.and(received)
}

/// With --requests, whether the measured budget still has room.
fn may_send_later(plan: &Plan, progress: &Progress) -> bool {
    plan.requests
        .is_none_or(|limit| progress.measured_sent.load(Ordering::Relaxed) < limit)
}

/// Runs `work` on one pinned glommio executor per load CPU (thread index
/// given) and collects what each returns.
fn on_each_cpu<T, F, Fut>(plan: &Plan, work: F) -> std::io::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(Plan, usize) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let threads: Vec<_> = plan
        .cpus
        .iter()
        .enumerate()
        .map(|(thread, &cpu)| {
            let (plan, work) = (plan.clone(), work.clone());
            LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .io_memory(IO_MEMORY)
                .name(&format!("load-{thread}"))
                .spawn(move || work(plan, thread))
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    threads
        .into_iter()
        .map(|thread| thread.join().map_err(|e| std::io::Error::other(e.to_string())))
        .collect()
}

/// Stores every key once (and seeds counters), closed loop, unmeasured.
fn prefill(plan: &Plan) -> std::io::Result<()> {
    let results = on_each_cpu(plan, |plan, thread| async move {
        let tasks: Vec<_> = (0..plan.connections)
            .map(|index| {
                let plan = plan.clone();
                glommio::spawn_local(async move { prefill_connection(&plan, thread * plan.connections + index).await })
            })
            .collect();
        let mut result = Ok(());
        for task in tasks {
            result = result.and(task.await);
        }
        result
    })?;
    results.into_iter().collect()
}

async fn prefill_connection(plan: &Plan, connection: usize) -> std::io::Result<()> {
    const BATCH: u64 = 64;
    let mut stream = connect(plan).await?;
    let total = plan.total_connections() as u64;
    let mine: Vec<u64> = (connection as u64..plan.keys).step_by(total as usize).collect();
    let seed_counters = plan.mix.incr > 0;
    let mut out = Vec::new();
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; READ_BUFFER];
    let mut expects = VecDeque::new();
    for batch in mine.chunks(BATCH as usize) {
        for &index in batch {
            expects.push_back(plan.codec.encode_set(index, &mut out));
            if seed_counters {
                expects.push_back(plan.codec.encode_counter_seed(index, &mut out));
            }
        }
        stream.write_all(&out).await?;
        out.clear();
        let mut reply = Reply::default();
        while !expects.is_empty() {
            if !read_some(&mut stream, &mut buffer, &mut chunk).await? {
                return Err(std::io::Error::other("prefill: no reply"));
            }
            let mut at = 0;
            while let Some(expect) = expects.front_mut() {
                let (used, done) = plan.codec.decode(expect, &mut reply, &buffer[at..]);
                at += used;
                if !done {
                    break;
                }
                if let Some(error) = reply.error.take() {
                    return Err(std::io::Error::other(format!("prefill: {error}")));
                }
                expects.pop_front();
            }
            buffer.drain(..at);
        }
    }
    Ok(())
}
