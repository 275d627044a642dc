//! Serving replicas. Each connected replica (a follower) gets a writer
//! that streams every shard's log from the follower's offset, and a reader
//! for its acks. A shard whose offset is not in the backlog (or whose
//! history the follower does not share) is resynced fully: snapshot slices
//! taken by the shard's core, interleaved with the log at the offsets they
//! were taken at. Nothing here can slow a shard: a slow follower only falls
//! behind, and out of the backlog.
//!
//! A follower that is another cluster node is sent only the records of the
//! keys this node acts for and that node holds copies of (KEPT frames;
//! snapshots the same, and more in a merge or a handover: `fill`): the
//! ring lookup for each record runs here, on the replication core, never
//! on a worker.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use hdrhistogram::Histogram;

use super::ToWorker;
use super::backlog::Backlog;
use super::core::ReplicationCore;
use super::record::Record;
use super::wire::{self, FrameReader, Kind, WireError};
use crate::cluster::membership::{Handoff, Said};

/// Log bytes per frame, and per shard per writer turn.
const FRAME_BYTES: usize = 256 * 1024;
/// A silent link is pinged this often, and dropped after LINK_TIMEOUT.
const PING_INTERVAL: Duration = Duration::from_millis(500);
/// After a handoff's cut, how long a write placed here before it may take
/// to reach this core's backlog: the offsets the other node must apply are
/// taken this long after the cut.
const CUT_GRACE: Duration = Duration::from_millis(20);
/// How often a follower's acks are looked at while a cut waits for them.
const CUT_POLL: Duration = Duration::from_millis(1);
pub const LINK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a follower stands with one shard.
enum Sync {
    Streaming,
    /// Its offset is unusable: a snapshot must be asked for.
    NeedSnapshot,
    /// A snapshot is running; `begun` once FULL_BEGIN was sent.
    Snapshot {
        begun: bool,
    },
}

/// A slice of a shard's snapshot, taken when the log stood at `at_offset`.
pub struct Slice {
    pub at_offset: u64,
    pub records: Vec<u8>,
    pub next_cursor: Option<usize>,
}

struct FollowerShard {
    /// Log offset sent up to, and acked up to.
    sent: u64,
    acked: u64,
    sync: Sync,
    slices: VecDeque<Slice>,
    /// Snapshots started for this shard: slices of an abandoned one are dropped.
    attempt: u32,
    /// Backlog chunk end already counted in the lag histogram.
    sampled: u64,
    /// Where the last full resync ended (None: none since the follower connected).
    resynced_to: Option<u64>,
}

struct Follower {
    id: u64,
    address: SocketAddr,
    /// The cluster node following (None: a whole-host replica, sent everything).
    node: Option<usize>,
    /// The membership epoch its copies were chosen at: when nodes go down or
    /// come back, preference lists change, and every shard is resent.
    epoch: Cell<u64>,
    /// When the resend for a newer epoch starts (the cluster's resync
    /// delay after the first change since `epoch`; None: no change waits).
    resync_at: Cell<Option<Instant>>,
    shards: RefCell<Vec<FollowerShard>>,
    /// A handoff to it was cut (membership.rs): when the log offsets to
    /// wait for are taken (CUT_GRACE after the cut), and then those offsets.
    cut: RefCell<Option<(Instant, Option<Vec<u64>>)>>,
}

/// Which records a follower is sent (None: all of them, as they are); the
/// bool says whether the record is relayed (record.rs).
type Keep<'a> = Option<&'a dyn Fn(&Record<'_>, bool) -> bool>;

/// What a follower is sent of the log and of snapshots, and whether its
/// snapshots are merges; FULL_BEGIN carries this node's view, FULL_END
/// whether it was a merge (wire.rs).
#[derive(Clone, Copy, Default)]
struct Selection<'a> {
    log: Keep<'a>,
    snapshot: Keep<'a>,
    merge: bool,
    /// This node's view, as FULL_BEGIN carries it (View::to_wire).
    view: &'a [u8],
    /// No snapshot starts: a resync waits for the resync delay.
    hold: bool,
}

/// Everything about the replicas this host serves.
pub struct PrimaryState {
    followers: RefCell<BTreeMap<u64, Rc<Follower>>>,
    next_id: Cell<u64>,
    full_resyncs: Cell<u64>,
    partial_resyncs: Cell<u64>,
    /// Microseconds from a write to the replica's ack of it.
    lag: RefCell<Histogram<u64>>,
    /// Microseconds a shard's core spent taking each snapshot slice.
    slices: RefCell<Histogram<u64>>,
}

impl PrimaryState {
    pub fn slice_taken(&self, took: Duration) {
        let _ = self.slices.borrow_mut().record((took.as_micros() as u64).max(1));
    }
}

impl Default for PrimaryState {
    fn default() -> PrimaryState {
        PrimaryState {
            followers: RefCell::default(),
            next_id: Cell::new(1),
            full_resyncs: Cell::new(0),
            partial_resyncs: Cell::new(0),
            lag: RefCell::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")),
            slices: RefCell::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")),
        }
    }
}

pub async fn serve(core: Rc<ReplicationCore>, listener: glommio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let core = core.clone();
                glommio::spawn_local(async move {
                    if let Err(error) = follower(&core, stream).await {
                        tracing::info!("replica link ended: {error}");
                    }
                })
                .detach();
            }
            Err(error) => {
                tracing::warn!("replication accept: {error}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One follower's connection, from handshake to close.
async fn follower(core: &Rc<ReplicationCore>, stream: glommio::net::TcpStream) -> Result<(), WireError> {
    let address = stream.peer_addr()?;
    let _tracked = core.track(stream.as_raw_fd());
    stream.set_read_timeout(Some(LINK_TIMEOUT))?;
    let (mut input, mut output) = futures_lite::io::split(stream);
    // Acks carry nothing, STATE frames the 8-byte list digest.
    let mut reader = FrameReader::new(8);
    let wire::Replicate { node, replid, offsets } = wire::parse_replicate(&reader.line(&mut input).await?)?;
    // Only another node of the list may ask for its keys (one this node
    // has not heard of yet tries again).
    let node = match (node, &core.global.cluster) {
        (None, _) => None,
        (Some(name), Some(cluster)) => {
            let slot = cluster.layout().list.slot_named(&name).filter(|&slot| !cluster.is_me(slot));
            Some(slot.ok_or(WireError::BadHandshake)?)
        }
        (Some(_), None) => return Err(WireError::BadHandshake),
    };
    // A node back from down gets a full resync, whatever it says it holds;
    // so does one being handed its keys (the handover is a full resync).
    let returning = node.zip(core.global.cluster.as_ref()).is_some_and(|(node, cluster)| {
        cluster.membership.is_returning(node) || cluster.membership.awaits_handover(node).is_some()
    });
    let own = core.global.replication.replid();
    let same_history = !returning && replid.as_deref() == Some(own.as_str()) && offsets.len() == core.shards;
    let mut hello = wire::primary_line(&own, core.shards).into_bytes();
    let shards = {
        let backlogs = core.backlogs.borrow();
        (0..core.shards)
            .map(|shard| {
                let offset = offsets.get(shard).copied().flatten().filter(|_| same_history);
                match offset.filter(|&offset| backlogs[shard].holds(offset)) {
                    Some(offset) => {
                        wire::write_frame(&mut hello, Kind::Continue, shard, offset, &[]);
                        core.primary.partial_resyncs.set(core.primary.partial_resyncs.get() + 1);
                        FollowerShard::new(offset, Sync::Streaming)
                    }
                    None => FollowerShard::new(0, Sync::NeedSnapshot),
                }
            })
            .collect()
    };
    output.write_all(&hello).await?;
    let id = core.primary.next_id.get();
    core.primary.next_id.set(id + 1);
    let epoch = core.global.cluster.as_ref().map_or(0, |cluster| cluster.membership.epoch());
    let follower = Rc::new(Follower {
        id,
        address,
        node,
        epoch: Cell::new(epoch),
        resync_at: Cell::new(None),
        shards: RefCell::new(shards),
        cut: RefCell::new(None),
    });
    core.primary.followers.borrow_mut().insert(id, follower.clone());
    tracing::info!("replica {address} connected");
    let result = futures_lite::future::or(
        write_loop(core, &follower, &mut output),
        read_acks(core, &follower, &mut input, &mut reader),
    )
    .await;
    core.primary.followers.borrow_mut().remove(&id);
    result
}

impl FollowerShard {
    fn new(offset: u64, sync: Sync) -> FollowerShard {
        FollowerShard {
            sent: offset,
            acked: offset,
            sync,
            slices: VecDeque::new(),
            attempt: 0,
            sampled: offset,
            resynced_to: None,
        }
    }
}

/// Streams logs and snapshots to a follower until the link fails.
async fn write_loop(
    core: &ReplicationCore,
    follower: &Follower,
    output: &mut (impl AsyncWrite + Unpin),
) -> Result<(), WireError> {
    let mut out = Vec::new();
    let mut last_send = Instant::now();
    loop {
        let epoch = core.changed.epoch();
        let requests = fill(core, follower, &mut out);
        for (shard, attempt, cursor) in requests {
            if let Some(worker) = core.worker(shard) {
                let request = ToWorker::Snapshot {
                    follower: follower.id,
                    attempt,
                    cursor,
                };
                if worker.send(request).await.is_err() {
                    return Err(WireError::Closed);
                }
            }
        }
        if !out.is_empty() {
            output.write_all(&out).await?;
            out.clear();
            last_send = Instant::now();
            continue;
        }
        if last_send.elapsed() >= PING_INTERVAL {
            wire::write_frame(&mut out, Kind::Ping, 0, 0, &[]);
            output.write_all(&out).await?;
            out.clear();
            last_send = Instant::now();
        }
        let cutting = follower.cut.borrow().is_some();
        let mut wait = if cutting { CUT_POLL } else { PING_INTERVAL };
        if let Some(at) = follower.resync_at.get() {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        futures_lite::future::or(core.changed.changed_since(epoch), glommio::timer::sleep(wait)).await;
    }
}

/// Writes whatever each shard has for the follower into `out`; returns
/// the snapshot slices to ask the shards for (shard, attempt, cursor).
fn fill(core: &ReplicationCore, follower: &Follower, out: &mut Vec<u8>) -> Vec<(usize, u32, usize)> {
    let cluster = core.global.cluster.as_ref();
    // While handing the follower over, its own keys too: a write this
    // node routed to itself just before it stopped acting may run after
    // the handover's snapshot passed its key.
    let handing_over = cluster
        .zip(follower.node)
        .is_some_and(|(cluster, node)| cluster.membership.awaits_handover(node).is_some());
    let keep = |record: &Record<'_>, relayed: bool| match (record.key(), cluster, follower.node) {
        (Some(key), Some(cluster), Some(node)) => !relayed && cluster.resyncs_to(key, node, handing_over),
        // Every node hears a flush_all itself; a key-less record is not sent on.
        _ => false,
    };
    let every_copy = |record: &Record<'_>, _: bool| match (record.key(), cluster, follower.node) {
        (Some(key), Some(cluster), Some(node)) => cluster.holds_copy(key, node),
        _ => false,
    };
    let mut selection = Selection::default();
    let mut view = Vec::new();
    if let (Some(cluster), Some(node)) = (cluster, follower.node) {
        if cluster.membership.is_down(node) {
            // Nothing goes to a node this one sees down: what it is sent
            // once it is back is chosen with it in the preference lists.
            return Vec::new();
        }
        let epoch = cluster.membership.epoch();
        if follower.epoch.get() != epoch {
            resync_for_epoch(follower, node, epoch, cluster.config.resync_delay, Instant::now());
        }
        // A node that may not act is sent every copy of its keys held here,
        // not only those acted for, and drops nothing first (a merge,
        // membership.rs): whatever views differ, it ends with the newest
        // copy any node holds. One this node is handing over is sent its
        // own keys too: what this node took while acting in its place.
        // Otherwise only what this node acts for: a copy of a key the
        // follower acts for could bring back what it deleted. Any change of
        // view is a new epoch, which restarts the resync under the new one.
        let merge = !cluster.membership.may_act(node);
        // Only a FULL_BEGIN carries the view: encoded when one may go out.
        let beginning = |shard: &FollowerShard| matches!(shard.sync, Sync::NeedSnapshot | Sync::Snapshot { begun: false });
        if !merge && follower.shards.borrow().iter().any(beginning) {
            view = cluster.membership.view().to_wire(&cluster.layout().list);
        }
        selection = Selection {
            log: Some(&keep),
            snapshot: Some(if merge { &every_copy } else { &keep }),
            merge,
            view: &view,
            hold: follower.resync_at.get().is_some(),
        };
    }
    let (requests, snapshots) = fill_shards(&core.backlogs.borrow(), &mut follower.shards.borrow_mut(), selection, out);
    core.primary.full_resyncs.set(core.primary.full_resyncs.get() + snapshots);
    if let (Some(cluster), Some(node)) = (cluster, follower.node) {
        let membership = &cluster.membership;
        // Every shard's resync done and applied (acked past its end: under a
        // steady write load the acks never catch up with what was just sent).
        let caught_up = |shards: &[FollowerShard]| {
            shards
                .iter()
                .all(|shard| matches!(shard.sync, Sync::Streaming) && shard.resynced_to.is_some_and(|end| shard.acked >= end))
        };
        if membership.is_returning(node)
            && follower.epoch.get() >= membership.returning_epoch(node)
            && caught_up(&follower.shards.borrow())
        {
            // It holds fresh copies of everything this node acted for in
            // its place: it acts for its keys again.
            membership.returned(node);
            core.membership_moved();
        }
        if membership
            .awaits_handover(node)
            .is_some_and(|since| follower.epoch.get() >= since && caught_up(&follower.shards.borrow()))
        {
            // It holds what this node took in its place: it may act.
            membership.handed_over(node);
            core.membership_moved();
        }
        hand_off(core, follower, node, caught_up(&follower.shards.borrow()));
    }
    requests
}

/// The keys the follower should hold changed (a new membership epoch): a
/// full resync of each shard (unless a merge, it drops what this node
/// sends it, then reloads). It starts `delay` after the first change seen,
/// so that the changes of a failover or a return (several epochs within
/// milliseconds) share one; a resync running meanwhile is given up at once
/// (its filter is out of date), and the log goes on under the new one.
fn resync_for_epoch(follower: &Follower, node: usize, epoch: u64, delay: Duration, now: Instant) {
    let at = match follower.resync_at.get() {
        Some(at) => at,
        None => {
            for shard in follower.shards.borrow_mut().iter_mut() {
                if let Sync::Snapshot { begun } = shard.sync {
                    // Nothing of it counts: it is not caught up until the
                    // next one ends. Begun, its log offset is good: the log
                    // goes on meanwhile.
                    shard.sync = if begun { Sync::Streaming } else { Sync::NeedSnapshot };
                    shard.slices.clear();
                    shard.resynced_to = None;
                }
            }
            follower.resync_at.set(Some(now + delay));
            now + delay
        }
    };
    if now < at {
        return;
    }
    follower.resync_at.set(None);
    follower.epoch.set(epoch);
    tracing::info!("node {node}: full resync for epoch {epoch}");
    for shard in follower.shards.borrow_mut().iter_mut() {
        shard.sync = Sync::NeedSnapshot;
        shard.slices.clear();
    }
}

/// A handoff of keys to the follower after a list change (membership.rs):
/// once it acts and holds a copy of them made since the change, this node
/// stops acting for them (the cut); once it has applied this node's log up
/// to where it stood CUT_GRACE after the cut, the handoff has ended and it
/// is told so (it then acts for them).
fn hand_off(core: &ReplicationCore, follower: &Follower, node: usize, caught_up: bool) {
    let Some(cluster) = &core.global.cluster else {
        return;
    };
    let membership = &cluster.membership;
    match membership.handoff(node) {
        Handoff::None => {
            follower.cut.replace(None);
        }
        Handoff::Handing => {
            if caught_up
                && follower.epoch.get() >= membership.handing_epoch(node)
                && membership.may_act(node)
                && membership.says_acting(node)
            {
                membership.cut(node);
                follower.cut.replace(Some((Instant::now() + CUT_GRACE, None)));
            }
        }
        Handoff::Cut => {
            let mut cut = follower.cut.borrow_mut();
            // A link made after the cut waits the grace from now.
            let (at, offsets) = cut.get_or_insert_with(|| (Instant::now() + CUT_GRACE, None));
            if offsets.is_none() && Instant::now() >= *at {
                *offsets = Some(core.backlogs.borrow().iter().map(Backlog::end).collect());
            }
            let applied = offsets.as_ref().is_some_and(|offsets| {
                let shards = follower.shards.borrow();
                shards.iter().zip(offsets).all(|(shard, &offset)| shard.acked >= offset)
            });
            if applied {
                *cut = None;
                membership.handed_off(node);
                core.membership_moved();
            }
        }
    }
}

/// `fill` for given backlogs, follower states and filter; also returns how
/// many snapshots it started.
fn fill_shards(
    backlogs: &[Backlog],
    shards: &mut [FollowerShard],
    selection: Selection<'_>,
    out: &mut Vec<u8>,
) -> (Vec<(usize, u32, usize)>, u64) {
    let keep = selection.log;
    let mut requests = Vec::new();
    let mut snapshots = 0;
    for (index, shard) in shards.iter_mut().enumerate() {
        let backlog = &backlogs[index];
        let sending_log = matches!(shard.sync, Sync::Streaming | Sync::Snapshot { begun: true });
        if sending_log && !backlog.holds(shard.sent) {
            // Fell out of the backlog: only a snapshot can bring it back.
            shard.sync = Sync::NeedSnapshot;
            shard.slices.clear();
        }
        match shard.sync {
            Sync::NeedSnapshot if selection.hold => {}
            Sync::NeedSnapshot => {
                snapshots += 1;
                shard.sync = Sync::Snapshot { begun: false };
                shard.attempt += 1;
                requests.push((index, shard.attempt, 0));
            }
            Sync::Snapshot { begun } => {
                let Some(slice) = shard.slices.front() else {
                    if begun {
                        send_log(backlog, index, &mut shard.sent, u64::MAX, keep, out);
                    }
                    continue;
                };
                if !begun {
                    match (selection.log, selection.merge) {
                        (None, _) => wire::write_frame(out, Kind::FullBegin, index, slice.at_offset, &[]),
                        (Some(_), true) => wire::write_frame(out, Kind::FullBegin, index, slice.at_offset, &[1]),
                        (Some(_), false) => {
                            wire::write_header(out, Kind::FullBegin, index, slice.at_offset, 1 + selection.view.len());
                            out.push(0);
                            out.extend_from_slice(selection.view);
                        }
                    }
                    shard.sent = slice.at_offset;
                    shard.acked = shard.acked.min(slice.at_offset);
                    shard.sampled = slice.at_offset;
                    shard.sync = Sync::Snapshot { begun: true };
                }
                // The log up to where the slice was taken goes first.
                send_log(backlog, index, &mut shard.sent, slice.at_offset, keep, out);
                if shard.sent == slice.at_offset {
                    let slice = shard.slices.pop_front().expect("front slice");
                    let at = out.len();
                    wire::write_header(out, Kind::Snapshot, index, slice.at_offset, 0);
                    let (_, length) = copy_records(&slice.records, selection.snapshot, out);
                    wire::set_length(&mut out[at..], length);
                    match slice.next_cursor {
                        Some(cursor) => requests.push((index, shard.attempt, cursor)),
                        None => {
                            let merged: &[u8] = match (selection.log, selection.merge) {
                                (None, _) => &[],
                                (Some(_), merge) => &[merge as u8],
                            };
                            wire::write_frame(out, Kind::FullEnd, index, shard.sent, merged);
                            shard.sync = Sync::Streaming;
                            shard.resynced_to = Some(shard.sent);
                        }
                    }
                }
            }
            Sync::Streaming => send_log(backlog, index, &mut shard.sent, u64::MAX, keep, out),
        }
    }
    (requests, snapshots)
}

/// Appends the backlog's bytes from `sent` up to `limit`: as they are in a
/// LOG frame, or, with a filter, the records it keeps in a KEPT frame.
fn send_log(backlog: &Backlog, shard: usize, sent: &mut u64, limit: u64, keep: Keep<'_>, out: &mut Vec<u8>) {
    let until = backlog.end().min(limit);
    if *sent >= until || !backlog.holds(*sent) {
        return;
    }
    let length = ((until - *sent) as usize).min(FRAME_BYTES);
    if keep.is_none() {
        wire::write_header(out, Kind::Log, shard, *sent, length);
        let copied = backlog.read(*sent, length, out);
        debug_assert_eq!(copied, length);
        *sent += copied as u64;
        return;
    }
    // Records are filtered whole; `sent` stays on a record boundary (chunks
    // reach the backlog as whole records, and resyncs start on one).
    let mut window = Vec::with_capacity(length);
    backlog.read(*sent, length, &mut window);
    let at = out.len();
    wire::write_header(out, Kind::Kept, shard, 0, 0);
    let (mut used, mut kept) = copy_records(&window, keep, out);
    if used == 0 {
        // One record longer than a frame: read it whole.
        window.clear();
        backlog.read(*sent, (until - *sent) as usize, &mut window);
        (used, kept) = copy_records(&window, keep, out);
    }
    if used == 0 {
        tracing::warn!("replication log of shard {shard} is corrupt at offset {sent}: skipped to {until}");
        used = (until - *sent) as usize;
    }
    *sent += used as u64;
    wire::set_length(&mut out[at..], kept);
    wire::set_offset(&mut out[at..], *sent);
}

/// Copies the whole records at the front of `records` that `keep` keeps
/// (all of them without a filter) to `out`; returns the bytes read and the
/// bytes copied.
fn copy_records(records: &[u8], keep: Keep<'_>, out: &mut Vec<u8>) -> (usize, usize) {
    let Some(keep) = keep else {
        out.extend_from_slice(records);
        return (records.len(), records.len());
    };
    let (mut at, before) = (0, out.len());
    while let Ok(Some((record, length))) = Record::decode(&records[at..]) {
        if keep(&record, Record::is_relayed(&records[at..])) {
            out.extend_from_slice(&records[at..at + length]);
        }
        at += length;
    }
    (at, out.len() - before)
}

/// A shard's snapshot slice reaches the follower that asked for it.
pub fn deliver_slice(core: &ReplicationCore, shard: usize, follower: u64, attempt: u32, slice: Slice) {
    let followers = core.primary.followers.borrow();
    let Some(follower) = followers.get(&follower) else {
        return;
    };
    let mut shards = follower.shards.borrow_mut();
    if let Some(state) = shards.get_mut(shard)
        && matches!(state.sync, Sync::Snapshot { .. })
        && state.attempt == attempt
    {
        state.slices.push_back(slice);
    }
}

/// The node list digest a STATE frame's payload carries (wire.rs).
fn list_digest(payload: &[u8]) -> u64 {
    payload.try_into().map_or(0, u64::from_le_bytes)
}

/// Reads a follower's acks; each moves its offsets and samples the lag.
async fn read_acks(
    core: &ReplicationCore,
    follower: &Follower,
    input: &mut (impl AsyncRead + Unpin),
    reader: &mut FrameReader,
) -> Result<(), WireError> {
    loop {
        let (header, payload) = reader.frame(input).await?;
        if header.kind == Kind::State {
            if let (Some(node), Some(cluster)) = (follower.node, &core.global.cluster)
                && cluster
                    .membership
                    .set_said(node, Said::from_bits(header.offset), list_digest(payload))
            {
                core.membership_moved();
            }
            continue;
        }
        if header.kind != Kind::Ack {
            continue;
        }
        let shard = usize::from(header.shard);
        let backlogs = core.backlogs.borrow();
        let mut shards = follower.shards.borrow_mut();
        let (Some(state), Some(backlog)) = (shards.get_mut(shard), backlogs.get(shard)) else {
            continue;
        };
        state.acked = header.offset.min(state.sent);
        if let (Some(node), Some(cluster)) = (follower.node, &core.global.cluster) {
            cluster.set_acked(node, shard, state.acked);
        }
        if let Some((end, arrived)) = backlog.arrival_before(state.acked)
            && end > state.sampled
        {
            state.sampled = end;
            let micros = arrived.elapsed().as_micros() as u64;
            let _ = core.primary.lag.borrow_mut().record(micros.max(1));
        }
    }
}

/// How far behind each cluster node following this one is (the oldest
/// record it has not acked, over every shard).
pub fn lag_by_node(core: &ReplicationCore) -> Vec<(usize, Duration)> {
    let backlogs = core.backlogs.borrow();
    let now = Instant::now();
    let followers = core.primary.followers.borrow();
    followers
        .values()
        .filter_map(|follower| {
            let lag = follower
                .shards
                .borrow()
                .iter()
                .zip(backlogs.iter())
                .map(|(state, backlog)| backlog.age_after(state.acked, now))
                .max()
                .unwrap_or_default();
            Some((follower.node?, lag))
        })
        .collect()
}

/// `stats replication` lines about the followers.
pub fn report(core: &ReplicationCore, stat: &mut impl FnMut(String, String)) {
    let primary = &core.primary;
    let followers = primary.followers.borrow();
    let backlogs = core.backlogs.borrow();
    let now = Instant::now();
    stat("replicas".into(), followers.len().to_string());
    for (index, follower) in followers.values().enumerate() {
        let shards = follower.shards.borrow();
        let lag_bytes: u64 = shards
            .iter()
            .zip(backlogs.iter())
            .map(|(state, backlog)| backlog.end().saturating_sub(state.acked))
            .sum();
        let lag = shards
            .iter()
            .zip(backlogs.iter())
            .map(|(state, backlog)| backlog.age_after(state.acked, now))
            .max()
            .unwrap_or_default();
        let syncing = shards.iter().any(|state| !matches!(state.sync, Sync::Streaming));
        let prefix = format!("replica_{index}");
        stat(format!("{prefix}_address"), follower.address.to_string());
        stat(format!("{prefix}_state"), if syncing { "sync" } else { "online" }.into());
        stat(format!("{prefix}_lag_bytes"), lag_bytes.to_string());
        stat(format!("{prefix}_lag_ms"), lag.as_millis().to_string());
        for (shard, state) in shards.iter().enumerate() {
            stat(format!("{prefix}_shard_{shard}_acked"), state.acked.to_string());
        }
    }
    stat("full_resyncs".into(), primary.full_resyncs.get().to_string());
    stat("partial_resyncs".into(), primary.partial_resyncs.get().to_string());
    let lag = primary.lag.borrow();
    stat("lag_samples".into(), lag.len().to_string());
    for (name, quantile) in [("lag_p50_us", 0.5), ("lag_p99_us", 0.99), ("lag_max_us", 1.0)] {
        stat(name.into(), lag.value_at_quantile(quantile).to_string());
    }
    // How long snapshots held a shard's core (its other work waited that long).
    let slices = primary.slices.borrow();
    stat("snapshot_slices".into(), slices.len().to_string());
    for (name, quantile) in [("snapshot_slice_p50_us", 0.5), ("snapshot_slice_max_us", 1.0)] {
        stat(name.into(), slices.value_at_quantile(quantile).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered<'a>(keep: &'a dyn Fn(&Record<'_>, bool) -> bool) -> Selection<'a> {
        Selection {
            log: Some(keep),
            snapshot: Some(keep),
            merge: false,
            view: &[3, 1],
            hold: false,
        }
    }

    /// The frames `fill_shards` wrote, as (kind, offset, payload).
    fn frames(out: &mut Vec<u8>) -> Vec<(Kind, u64, Vec<u8>)> {
        let mut stream = futures_lite::io::Cursor::new(std::mem::take(out));
        let mut reader = FrameReader::new(1 << 20);
        let mut frames = Vec::new();
        futures_lite::future::block_on(async {
            while let Ok((header, payload)) = reader.frame(&mut stream).await {
                frames.push((header.kind, header.offset, payload.to_vec()));
            }
        });
        frames
    }

    fn slice(at_offset: u64, records: &[u8], next_cursor: Option<usize>) -> Slice {
        Slice {
            at_offset,
            records: records.to_vec(),
            next_cursor,
        }
    }

    #[test]
    fn a_snapshot_is_interleaved_with_the_log_at_the_offsets_its_slices_were_taken() {
        let now = std::time::Instant::now();
        let mut backlogs = vec![Backlog::new(1 << 20)];
        backlogs[0].append(0, &[b'a'; 100], now);
        let mut shards = vec![FollowerShard::new(0, Sync::NeedSnapshot)];
        let mut out = Vec::new();

        let (requests, started) = fill_shards(&backlogs, &mut shards, Selection::default(), &mut out);
        assert_eq!((requests, started), (vec![(0, 1, 0)], 1), "the first slice is asked for");
        assert!(out.is_empty(), "nothing is sent before the first slice");

        // The first slice was taken when the log stood at 150.
        backlogs[0].append(100, &[b'b'; 50], now);
        shards[0].slices.push_back(slice(150, b"S1", Some(7)));
        let (requests, _) = fill_shards(&backlogs, &mut shards, Selection::default(), &mut out);
        assert_eq!(requests, vec![(0, 1, 7)]);
        assert_eq!(
            frames(&mut out),
            vec![(Kind::FullBegin, 150, vec![]), (Kind::Snapshot, 150, b"S1".to_vec())]
        );

        // While the next slice is taken, the log goes on from 150.
        backlogs[0].append(150, &[b'c'; 30], now);
        fill_shards(&backlogs, &mut shards, Selection::default(), &mut out);
        assert_eq!(frames(&mut out), vec![(Kind::Log, 150, vec![b'c'; 30])]);

        // The last slice, taken at 200: the log up to 200 goes first.
        backlogs[0].append(180, &[b'd'; 40], now);
        shards[0].slices.push_back(slice(200, b"S2", None));
        let (requests, _) = fill_shards(&backlogs, &mut shards, Selection::default(), &mut out);
        assert!(requests.is_empty());
        assert_eq!(
            frames(&mut out),
            vec![
                (Kind::Log, 180, vec![b'd'; 20]),
                (Kind::Snapshot, 200, b"S2".to_vec()),
                (Kind::FullEnd, 200, vec![])
            ]
        );
        // Then it streams.
        fill_shards(&backlogs, &mut shards, Selection::default(), &mut out);
        assert_eq!(frames(&mut out), vec![(Kind::Log, 200, vec![b'd'; 20])]);
    }

    #[test]
    fn a_new_epoch_gives_up_running_snapshots_at_once_and_resyncs_after_the_delay() {
        let now = std::time::Instant::now();
        let mut backlogs = vec![Backlog::new(1 << 20), Backlog::new(1 << 20)];
        backlogs[0].append(0, &[b'a'; 100], now);
        backlogs[1].append(0, &[b'b'; 100], now);
        let mut running = FollowerShard::new(0, Sync::Snapshot { begun: true });
        running.slices.push_back(slice(100, b"S1", Some(3)));
        running.resynced_to = Some(0);
        let follower = Follower {
            id: 1,
            address: "127.0.0.1:1".parse().unwrap(),
            node: Some(1),
            epoch: Cell::new(4),
            resync_at: Cell::new(None),
            shards: RefCell::new(vec![running, FollowerShard::new(0, Sync::Snapshot { begun: false })]),
            cut: RefCell::new(None),
        };
        let delay = Duration::from_millis(100);
        resync_for_epoch(&follower, 1, 5, delay, now);
        {
            let shards = follower.shards.borrow();
            assert!(matches!(shards[0].sync, Sync::Streaming) && shards[0].slices.is_empty());
            assert_eq!(shards[0].resynced_to, None, "a given-up resync does not count as caught up");
            assert!(matches!(shards[1].sync, Sync::NeedSnapshot));
        }
        assert_eq!((follower.epoch.get(), follower.resync_at.get()), (4, Some(now + delay)));
        // Meanwhile the log goes on where it can, and no snapshot starts.
        let hold = Selection {
            hold: true,
            ..Selection::default()
        };
        let mut out = Vec::new();
        let (requests, started) = fill_shards(&backlogs, &mut follower.shards.borrow_mut(), hold, &mut out);
        assert_eq!((requests, started), (vec![], 0));
        assert_eq!(frames(&mut out), vec![(Kind::Log, 0, vec![b'a'; 100])]);
        // A later change within the delay shares the resync; once it is over, every shard resyncs.
        resync_for_epoch(&follower, 1, 6, delay, now + delay / 2);
        assert_eq!(follower.resync_at.get(), Some(now + delay));
        resync_for_epoch(&follower, 1, 6, delay, now + delay);
        assert_eq!((follower.epoch.get(), follower.resync_at.get()), (6, None));
        assert!(
            follower
                .shards
                .borrow()
                .iter()
                .all(|shard| matches!(shard.sync, Sync::NeedSnapshot))
        );
    }

    #[test]
    fn a_follower_that_falls_out_of_the_backlog_starts_a_new_snapshot() {
        let now = std::time::Instant::now();
        let mut backlogs = vec![Backlog::new(64)];
        backlogs[0].append(0, &[b'a'; 10], now);
        let mut shards = vec![FollowerShard::new(0, Sync::Streaming)];
        let mut out = Vec::new();
        fill_shards(&backlogs, &mut shards, Selection::default(), &mut out);
        assert_eq!(frames(&mut out), vec![(Kind::Log, 0, vec![b'a'; 10])]);
        backlogs[0].append(10, &[b'b'; 100], now);
        let (requests, started) = fill_shards(&backlogs, &mut shards, Selection::default(), &mut out);
        assert_eq!((requests, started), (vec![(0, 1, 0)], 1));
        assert!(out.is_empty());
        // A snapshot that is not yet begun waits for its slice, whatever the backlog does.
        backlogs[0].append(110, &[b'c'; 100], now);
        let (requests, started) = fill_shards(&backlogs, &mut shards, Selection::default(), &mut out);
        assert_eq!((requests, started), (vec![], 0));
    }

    #[test]
    fn a_filtered_follower_gets_only_kept_records_whole_and_the_offset_past_the_rest() {
        let now = std::time::Instant::now();
        let set = |key: &'static [u8], value: &'static [u8]| {
            Record::Set(crate::store::ItemState {
                key,
                client_flags: 1,
                expiry_unix: 0,
                cas: 9,
                value,
            })
        };
        let big = vec![b'v'; FRAME_BYTES + 10].leak();
        let records = [
            set(b"mine", b"1"),
            set(b"other", b"2"),
            Record::Flush { effective_unix: 0 },
            set(b"mine2", big),
        ];
        let mut log = Vec::new();
        for record in &records {
            record.encode(&mut log);
        }
        let mut backlogs = vec![Backlog::new(1 << 22)];
        backlogs[0].append(0, &log, now);
        let keep = |record: &Record<'_>, _: bool| record.key().is_some_and(|key| key.starts_with(b"mine"));
        let mut shards = vec![FollowerShard::new(0, Sync::Streaming)];
        let mut out = Vec::new();
        let mut kept = Vec::new();
        // The first frame holds what fits; the big record comes whole in the next.
        while shards[0].sent < log.len() as u64 {
            fill_shards(&backlogs, &mut shards, filtered(&keep), &mut out);
            for (kind, offset, payload) in frames(&mut out) {
                assert_eq!(kind, Kind::Kept);
                assert!(offset <= log.len() as u64);
                kept.extend(payload);
            }
        }
        let mut expected = Vec::new();
        for record in [records[0], records[3]] {
            record.encode(&mut expected);
        }
        assert_eq!(kept, expected);
        assert_eq!(shards[0].sent, log.len() as u64, "the records left out count as sent");

        // A snapshot slice is filtered the same way.
        let mut slice_records = Vec::new();
        records[1].encode(&mut slice_records);
        records[0].encode(&mut slice_records);
        shards[0] = FollowerShard::new(0, Sync::Snapshot { begun: false });
        shards[0].slices.push_back(slice(log.len() as u64, &slice_records, None));
        fill_shards(&backlogs, &mut shards, filtered(&keep), &mut out);
        let mut mine = Vec::new();
        records[0].encode(&mut mine);
        assert_eq!(
            frames(&mut out),
            vec![
                (Kind::FullBegin, log.len() as u64, vec![0, 3, 1]),
                (Kind::Snapshot, log.len() as u64, mine),
                (Kind::FullEnd, log.len() as u64, vec![0])
            ]
        );

        // A merge sends the snapshot's records its own filter keeps, and says so.
        let every = |record: &Record<'_>, _: bool| record.key().is_some();
        let merge = Selection {
            log: Some(&keep),
            snapshot: Some(&every),
            merge: true,
            view: &[3, 1],
            hold: false,
        };
        shards[0] = FollowerShard::new(0, Sync::Snapshot { begun: false });
        shards[0].slices.push_back(slice(log.len() as u64, &slice_records, None));
        fill_shards(&backlogs, &mut shards, merge, &mut out);
        assert_eq!(
            frames(&mut out),
            vec![
                (Kind::FullBegin, log.len() as u64, vec![1]),
                (Kind::Snapshot, log.len() as u64, slice_records.clone()),
                (Kind::FullEnd, log.len() as u64, vec![1])
            ]
        );
    }
}
