//! Running a plan: one pinned glommio executor per load CPU, its
//! connections as tasks. Phases: prefill, warm-up, measurement.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corecache_client::blocking::Client;
use glommio::{LocalExecutorBuilder, Placement};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::keys::KeyChooser;
use crate::links::{self, Arrived, Links, Target};
use crate::options::{Plan, Servers};
use crate::protocol::Reply;
use crate::results::{LatencySummary, Recorder, Report};
use crate::schedule::Schedule;
use crate::workload::{Op, OpKind, Workload};

/// Locked memory per load thread (glommio registers it with io_uring).
const IO_MEMORY: usize = 1 << 20;
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

/// The server, or the cluster's nodes: asked of the seeds with `cluster
/// nodes`; seeds that do not know it (plain memcached) are taken as a
/// fixed ketama list.
fn target(plan: &Plan) -> std::io::Result<Target> {
    let seeds = match &plan.servers {
        Servers::One(address) => return Ok(Target::Server(*address)),
        Servers::Cluster(seeds) => seeds.iter().map(String::as_str).collect::<Vec<_>>(),
    };
    let config = corecache_client::Config::default();
    let client = match Client::cluster(&seeds, config.clone()) {
        Ok(client) => client,
        Err(corecache_client::Error::NoSeed(why)) => {
            eprintln!("corecache-loadgen: {why}; taking the list as plain ketama servers");
            Client::fixed(&seeds, config).map_err(std::io::Error::other)?
        }
        Err(error) => return Err(std::io::Error::other(error)),
    };
    let topology = client.topology();
    let epoch = topology.epoch().map_or("none".to_string(), |e| e.to_string());
    eprintln!("corecache-loadgen: {} nodes, epoch {epoch}", topology.nodes().len());
    Ok(Target::Cluster(topology))
}

/// Runs the whole plan; returns the merged measurements and the report.
pub fn run(plan: &Plan, progress: Arc<Progress>) -> std::io::Result<(Recorder, Report)> {
    let target = target(plan)?;
    if plan.prefill {
        prefill(plan, &target)?;
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
        let (progress, target) = (shared.clone(), target.clone());
        async move { load_thread(&plan, &target, thread, timeline, progress).await }
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
        requests_per_node: total.requests_per_node.clone(),
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

async fn load_thread(plan: &Plan, target: &Target, thread: usize, timeline: Timeline, progress: Arc<Progress>) -> Recorder {
    let recorder = Rc::new(RefCell::new(Recorder::default()));
    let tasks: Vec<_> = (0..plan.connections)
        .map(|index| {
            let connection = thread * plan.connections + index;
            let (plan, target, recorder, progress) = (plan.clone(), target.clone(), recorder.clone(), progress.clone());
            glommio::spawn_local(async move {
                let rate_per_connection = plan.rate.map(|rate| rate / plan.total_connections() as f64);
                let result = match Links::connect(&target, timeline.measure_from).await {
                    Err(error) => Err(error),
                    Ok(links) => {
                        let links = RefCell::new(links);
                        let result = match rate_per_connection {
                            Some(rate) => open_loop(&plan, &links, connection, rate, timeline, &recorder, &progress).await,
                            None => closed_loop(&plan, &links, connection, timeline, &recorder, &progress).await,
                        };
                        recorder.borrow_mut().requests_sent(&links.borrow().requests_per_node());
                        result
                    }
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

/// Records each completed operation started in the measured window.
fn recording<'a>(recorder: &'a RefCell<Recorder>, measure_from: Instant) -> impl FnMut(OpKind, Instant, Instant, &Reply) + 'a {
    move |kind, since, now, reply| {
        if since >= measure_from {
            recorder.borrow_mut().record(kind, now - since, reply);
        }
    }
}

/// Queues `op`; an operation no live node takes is an error.
fn send(plan: &Plan, links: &mut Links, op: &Op, since: Instant, recorder: &RefCell<Recorder>) {
    if let Err(error) = links.send(&plan.codec, op, since) {
        recorder.borrow_mut().error(&error.to_string());
    }
}

/// As fast as replies allow: `pipeline` operations in flight, topped up
/// after every read with one send per link.
async fn closed_loop(
    plan: &Plan,
    links: &RefCell<Links>,
    connection: usize,
    timeline: Timeline,
    recorder: &RefCell<Recorder>,
    progress: &Progress,
) -> std::io::Result<()> {
    let (mut workload, mut rng) = workload(plan, connection);
    let mut op = Op {
        kind: OpKind::Get,
        keys: Vec::new(),
    };
    let mut completed = recording(recorder, timeline.measure_from);
    let mut sending = true;
    loop {
        let now = Instant::now();
        {
            let mut links = links.borrow_mut();
            while sending && links.in_flight() < plan.pipeline {
                if !may_send(plan, progress, now, &timeline) {
                    sending = false;
                    break;
                }
                workload.next(&mut rng, &mut op);
                send(plan, &mut links, &op, now, recorder);
            }
        }
        links::flush(links, &mut completed).await?;
        if links.borrow().in_flight() == 0 {
            return Ok(());
        }
        let drain_deadline = timeline.until.max(now) + DRAIN;
        loop {
            match links::replies(links, &plan.codec, &mut completed).await? {
                Arrived::Replies(0) => {}
                Arrived::Replies(done) => {
                    progress.operations.fetch_add(done as u64, Ordering::Relaxed);
                    break;
                }
                Arrived::TimedOut if Instant::now() > drain_deadline => {
                    recorder.borrow_mut().error("timeout waiting for replies");
                    return Ok(());
                }
                Arrived::TimedOut => {}
            }
        }
    }
}

/// On schedule: requests go out at their intended times (all that are due
/// in one send per link), replies are read by a second task; latency counts
/// from the intended time, so queueing behind a stalled server is measured.
async fn open_loop(
    plan: &Plan,
    links: &RefCell<Links>,
    connection: usize,
    rate: f64,
    timeline: Timeline,
    recorder: &RefCell<Recorder>,
    progress: &Progress,
) -> std::io::Result<()> {
    let writing = Cell::new(true);
    let (mut workload, mut rng) = workload(plan, connection);
    let schedule = Schedule::new(plan.arrivals, rate);

    let send = async {
        let mut op = Op {
            kind: OpKind::Get,
            keys: Vec::new(),
        };
        let mut completed = recording(recorder, timeline.measure_from);
        // Stagger the first request by a random gap.
        let mut next = Instant::now() + schedule.next_gap(&mut rng);
        let result = loop {
            let now = Instant::now();
            {
                let mut links = links.borrow_mut();
                while next <= now {
                    if !may_send(plan, progress, next, &timeline) {
                        break;
                    }
                    workload.next(&mut rng, &mut op);
                    send(plan, &mut links, &op, next, recorder);
                    next += schedule.next_gap(&mut rng);
                }
            }
            if let Err(error) = links::flush(links, &mut completed).await {
                break Err(error);
            }
            if next >= timeline.until || !may_send_later(plan, progress) {
                break Ok(());
            }
            glommio::timer::sleep(next.saturating_duration_since(Instant::now())).await;
        };
        writing.set(false);
        result
    };
    let receive = async {
        let mut completed = recording(recorder, timeline.measure_from);
        loop {
            if !writing.get() && links.borrow().in_flight() == 0 {
                return Ok(());
            }
            match links::replies(links, &plan.codec, &mut completed).await? {
                Arrived::Replies(done) => {
                    progress.operations.fetch_add(done as u64, Ordering::Relaxed);
                }
                Arrived::TimedOut if !writing.get() && Instant::now() > timeline.until + DRAIN => {
                    recorder.borrow_mut().error("timeout waiting for replies");
                    return Ok(());
                }
                Arrived::TimedOut => {}
            }
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
fn prefill(plan: &Plan, target: &Target) -> std::io::Result<()> {
    let target = target.clone();
    let results = on_each_cpu(plan, move |plan, thread| {
        let target = target.clone();
        async move {
            let tasks: Vec<_> = (0..plan.connections)
                .map(|index| {
                    let (plan, target) = (plan.clone(), target.clone());
                    glommio::spawn_local(
                        async move { prefill_connection(&plan, &target, thread * plan.connections + index).await },
                    )
                })
                .collect();
            let mut result = Ok(());
            for task in tasks {
                result = result.and(task.await);
            }
            result
        }
    })?;
    results.into_iter().collect()
}

async fn prefill_connection(plan: &Plan, target: &Target, connection: usize) -> std::io::Result<()> {
    const BATCH: usize = 64;
    /// Longest wait for a batch's replies.
    const STALL: Duration = Duration::from_secs(5);
    let never = Instant::now() + Duration::from_secs(86_400 * 365);
    let links = RefCell::new(Links::connect(target, never).await?);
    let total = plan.total_connections() as u64;
    let mine: Vec<u64> = (connection as u64..plan.keys).step_by(total as usize).collect();
    let seed_counters = plan.mix.incr > 0;
    let codec = &plan.codec;
    let failure = RefCell::new(None::<String>);
    let mut completed = |_: OpKind, _: Instant, _: Instant, reply: &Reply| {
        if let Some(error) = &reply.error {
            failure.borrow_mut().get_or_insert_with(|| error.clone());
        }
    };
    let prefill_error = |error: &dyn std::fmt::Display| std::io::Error::other(format!("prefill: {error}"));
    for batch in mine.chunks(BATCH) {
        let now = Instant::now();
        {
            let mut links = links.borrow_mut();
            for &index in batch {
                links
                    .send_request(codec, OpKind::Set, index, now, |out| codec.encode_set(index, out))
                    .map_err(|e| prefill_error(&e))?;
                if seed_counters {
                    links
                        .send_request(codec, OpKind::Incr, index, now, |out| codec.encode_counter_seed(index, out))
                        .map_err(|e| prefill_error(&e))?;
                }
            }
        }
        links::flush(&links, &mut completed).await?;
        let mut progressed = Instant::now();
        while links.borrow().in_flight() > 0 {
            match links::replies(&links, codec, &mut completed).await? {
                Arrived::Replies(_) => progressed = Instant::now(),
                Arrived::TimedOut if progressed.elapsed() > STALL => return Err(prefill_error(&"no reply")),
                Arrived::TimedOut => {}
            }
        }
        if let Some(error) = failure.borrow_mut().take() {
            return Err(prefill_error(&error));
        }
    }
    Ok(())
}
