//! Following a primary: connect to its replication port, say which
//! history and offsets this host holds, then apply what arrives. Records
//! are split by this host's own shards (its core count may differ from
//! the primary's) and sent to the workers, which apply them in order and
//! report the offsets they reached; the smallest per primary shard is
//! acked. The link reconnects on failure, and follows the admin commands
//! (`replication follow`, `replication promote`).
//!
//! A cluster node follows every other node the same way, one link each
//! (its `source`, the node's index), and is sent only the keys it holds
//! copies of.

use std::net::ToSocketAddrs;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::ToWorker;
use super::core::ReplicationCore;
use super::primary::LINK_TIMEOUT;
use super::record::Record;
use super::shard_side::push_hashed;
use super::wire::{self, FrameReader, Kind, WireError};
use crate::cluster::membership::View;
use crate::hash::KeyHash;

/// Largest frame payload accepted from a primary (frames are 256 KiB of
/// log, or one snapshot slice, which may hold one item of up to 1 GiB).
const MAX_PAYLOAD: usize = (1 << 30) + (1 << 20);
/// More shards than any primary runs (-t is at most 256): a corrupt handshake.
const MAX_PRIMARY_SHARDS: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
const ACK_INTERVAL: Duration = Duration::from_millis(1);
const ACK_HEARTBEAT: Duration = Duration::from_millis(500);

/// The replica side's view of the link.
#[derive(Default)]
pub struct LinkState {
    address: Option<String>,
    state: &'static str,
    primary_replid: Option<String>,
    primary_shards: usize,
    /// Per primary shard: offset received up to (whole records or not),
    /// bytes of a record cut by a frame boundary, whether a full copy is held.
    received: Vec<u64>,
    carry: Vec<Vec<u8>>,
    synced: Vec<bool>,
    /// [local shard][primary shard]: offset the worker has applied up to.
    applied: Vec<Vec<u64>>,
    full_resyncs: u64,
    partial_resyncs: u64,
    /// Per primary shard: its last full resync was a merge (wire.rs).
    merged: Vec<bool>,
    /// Connections made, and the one (by that count) on which the last
    /// full resync completed that was a merge in every shard.
    pub connections: u64,
    pub merged_on: u64,
    /// Drop the link and start again with a full resync (a stale cluster
    /// node taking fresh copies).
    pub restart: bool,
}

impl LinkState {
    /// A worker reports that it applied a primary shard up to `offset`.
    pub fn applied(&mut self, local_shard: usize, primary_shard: usize, offset: u64) {
        if let Some(slot) = self.applied.get_mut(local_shard).and_then(|row| row.get_mut(primary_shard)) {
            *slot = offset;
        }
    }

    /// Offset applied by every worker, per primary shard.
    fn applied_offsets(&self) -> Vec<u64> {
        (0..self.primary_shards)
            .map(|shard| self.applied.iter().map(|row| row[shard]).min().unwrap_or(0))
            .collect()
    }

    /// Starts over for a primary with another history or shard count.
    fn reset(&mut self, replid: String, shards: usize, local_shards: usize) {
        self.primary_replid = Some(replid);
        self.primary_shards = shards;
        self.received = vec![0; shards];
        self.carry = vec![Vec::new(); shards];
        self.synced = vec![false; shards];
        self.merged = vec![false; shards];
        self.applied = vec![vec![0; shards]; local_shards];
    }
}

/// Whom a link follows.
pub enum Upstream {
    /// The primary that `--replica-of` or `replication follow` names.
    Primary,
    /// Another cluster node, at its cluster address; `me` is this node's
    /// name (its client address).
    Node { address: String, me: String },
}

/// Keeps a link to the upstream; its records are `source`'s.
pub async fn follow(core: Rc<ReplicationCore>, source: usize, upstream: Upstream) {
    let me = match &upstream {
        Upstream::Primary => None,
        Upstream::Node { me, .. } => Some(me.clone()),
    };
    loop {
        let generation = core.global.replication.generation();
        let address = match &upstream {
            Upstream::Primary => core.global.replication.primary(),
            Upstream::Node { address, .. } => Some(address.clone()),
        };
        // A node off the list and down (it left, and stopped) is not
        // called; it is followed again if it comes back.
        let gone =
            |cluster: &crate::cluster::Cluster| !cluster.membership.is_member(source) && cluster.membership.is_down(source);
        let address = address.filter(|_| me.is_none() || !core.global.cluster.as_ref().is_some_and(gone));
        let Some(address) = address else {
            {
                let link = &mut core.links.borrow_mut()[source];
                link.address = None;
                link.state = "none";
            }
            glommio::timer::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        {
            let link = &mut core.links.borrow_mut()[source];
            if link.address.as_deref() != Some(address.as_str()) {
                link.primary_replid = None;
            }
            link.address = Some(address.clone());
            link.state = "connecting";
        }
        let result = futures_lite::future::or(link_once(&core, source, me.as_deref(), &address, generation), async {
            while core.global.replication.generation() == generation && !core.links.borrow()[source].restart {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
        .await;
        {
            let link = &mut core.links.borrow_mut()[source];
            if link.restart {
                // Unknown history: the next handshake asks for a full resync.
                link.restart = false;
                link.primary_replid = None;
            }
        }
        if let Err(error) = result {
            tracing::info!("link to primary {address}: {error}");
        }
        core.links.borrow_mut()[source].state = "down";
        glommio::timer::sleep(RECONNECT_PAUSE).await;
    }
}

async fn link_once(
    core: &Rc<ReplicationCore>,
    source: usize,
    me: Option<&str>,
    address: &str,
    generation: u64,
) -> Result<(), WireError> {
    let stream = connect_from(core.global.config.listen[0], address.to_string()).await?;
    stream.set_read_timeout(Some(LINK_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let _tracked = core.track(stream.as_raw_fd());
    let (mut input, mut output) = futures_lite::io::split(stream);
    let hello = {
        let link = &core.links.borrow()[source];
        let applied = link.applied_offsets();
        let offsets: Vec<Option<u64>> = (0..link.primary_shards)
            .map(|shard| link.synced[shard].then_some(applied[shard]))
            .collect();
        wire::replicate_line(me, link.primary_replid.as_deref(), &offsets)
    };
    output.write_all(hello.as_bytes()).await?;
    let mut reader = FrameReader::new(MAX_PAYLOAD);
    let (replid, shards) = wire::parse_primary(&reader.line(&mut input).await?)?;
    if shards == 0 || shards > MAX_PRIMARY_SHARDS {
        return Err(WireError::BadHandshake);
    }
    {
        let link = &mut core.links.borrow_mut()[source];
        if link.primary_replid.as_deref() != Some(replid.as_str()) || link.primary_shards != shards {
            link.reset(replid, shards, core.shards);
        }
        link.connections += 1;
        // Whatever was cut mid-record is sent again from the applied offset.
        link.received = link.applied_offsets();
        link.carry.iter_mut().for_each(Vec::clear);
        link.state = "sync";
    }
    futures_lite::future::or(
        apply_frames(core, source, generation, &mut input, &mut reader),
        send_acks(core, source, &mut output),
    )
    .await
}

/// Resolves and connects from this host's own address (so the primary sees
/// which host follows it), on a helper thread: both may block.
async fn connect_from(local: std::net::IpAddr, address: String) -> std::io::Result<glommio::net::TcpStream> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<std::os::fd::RawFd> {
            // Name resolution may block too: it happens here, off the core.
            let target = address
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "address does not resolve"))?;
            let socket = socket2::Socket::new(socket2::Domain::for_address(target), socket2::Type::STREAM, None)?;
            if local.is_ipv4() == target.is_ipv4() && !local.is_unspecified() {
                socket.bind(&std::net::SocketAddr::new(local, 0).into())?;
            }
            socket.connect_timeout(&target.into(), CONNECT_TIMEOUT)?;
            Ok(socket.into_raw_fd())
        })
        .await?;
    // SAFETY: the descriptor was just connected and is owned by nothing else.
    Ok(unsafe { glommio::net::TcpStream::from_raw_fd(fd) })
}

/// Reads frames and hands their records to the workers.
async fn apply_frames(
    core: &ReplicationCore,
    source: usize,
    generation: u64,
    input: &mut (impl AsyncRead + Unpin),
    reader: &mut FrameReader,
) -> Result<(), WireError> {
    let mut batches: Vec<Vec<u8>> = vec![Vec::new(); core.shards];
    loop {
        let (header, payload) = reader.frame(input).await?;
        let shard = usize::from(header.shard);
        let mut messages = Vec::new();
        {
            let link = &mut core.links.borrow_mut()[source];
            let shards = link.primary_shards;
            if shard >= shards && header.kind != Kind::Ping {
                return Err(WireError::BadKind(header.kind as u8));
            }
            match header.kind {
                Kind::Continue => {
                    link.partial_resyncs += 1;
                    link.received[shard] = header.offset;
                }
                Kind::FullBegin => {
                    link.full_resyncs += 1;
                    link.synced[shard] = false;
                    link.merged[shard] = false;
                    link.received[shard] = header.offset;
                    link.carry[shard].clear();
                    // Empty: a whole-host primary's, drop everything of the
                    // shard. [1]: a merge, drop nothing (newer copies win).
                    // [0, view..]: drop what the sender sends by its view.
                    let view = match payload {
                        [] => Some(None),
                        [1] => None,
                        [0, view @ ..] => {
                            let list = &core.global.cluster.as_ref().ok_or(WireError::BadHandshake)?.layout().list;
                            Some(Some(
                                View::from_wire(view, list).ok_or(WireError::BadKind(header.kind as u8))?,
                            ))
                        }
                        _ => return Err(WireError::BadKind(header.kind as u8)),
                    };
                    for worker in (0..core.shards).filter(|_| view.is_some()) {
                        messages.push((
                            worker,
                            ToWorker::DropShard {
                                source,
                                generation,
                                primary_shard: shard,
                                primary_shards: shards,
                                offset: header.offset,
                                view: view.clone().flatten(),
                            },
                        ));
                    }
                }
                Kind::FullEnd => {
                    link.synced[shard] = true;
                    link.merged[shard] = payload == [1];
                    if link.synced.iter().all(|&synced| synced) && link.merged.iter().all(|&merged| merged) {
                        link.merged_on = link.connections;
                    }
                }
                Kind::Log | Kind::Snapshot | Kind::Kept => {
                    let mut carry = std::mem::take(&mut link.carry[shard]);
                    let bytes: &[u8] = if header.kind == Kind::Log {
                        if header.offset != link.received[shard] {
                            return Err(WireError::BadKind(header.kind as u8));
                        }
                        link.received[shard] += payload.len() as u64;
                        carry.extend_from_slice(payload);
                        &carry
                    } else {
                        if header.kind == Kind::Kept {
                            // Whole records, and where the log stands after them.
                            if header.offset < link.received[shard] || !carry.is_empty() {
                                return Err(WireError::BadKind(header.kind as u8));
                            }
                            link.received[shard] = header.offset;
                        }
                        payload
                    };
                    let used = split_by_shard(bytes, core.shards, &mut batches)?;
                    if header.kind == Kind::Log {
                        carry.drain(..used);
                    } else if used != payload.len() {
                        return Err(WireError::BadKind(header.kind as u8));
                    }
                    let offset = link.received[shard] - carry.len() as u64;
                    link.carry[shard] = carry;
                    // Every worker hears of every frame, so that the smallest
                    // offset they report is one they all reached.
                    for (worker, batch) in batches.iter_mut().enumerate() {
                        messages.push((
                            worker,
                            ToWorker::Apply {
                                source,
                                generation,
                                primary_shard: shard,
                                primary_shards: shards,
                                offset,
                                records: std::mem::take(batch),
                                snapshot: header.kind == Kind::Snapshot,
                            },
                        ));
                    }
                }
                Kind::Ping | Kind::Ack | Kind::State => {}
            }
            if link.synced.iter().all(|&synced| synced) {
                link.state = "up";
            }
        }
        for (worker, message) in messages {
            let Some(sender) = core.worker(worker) else { continue };
            if sender.send(message).await.is_err() {
                return Err(WireError::Closed);
            }
        }
    }
}

/// Copies each whole record at the front of `bytes` into the batch of
/// the local shard that owns its key (a flush goes to every shard).
/// Returns the bytes used.
fn split_by_shard(bytes: &[u8], shards: usize, batches: &mut [Vec<u8>]) -> Result<usize, WireError> {
    let mut at = 0;
    while let Some((record, length)) = Record::decode(&bytes[at..]).map_err(|_| WireError::BadKind(bytes[at]))? {
        let raw = &bytes[at..at + length];
        match record.key() {
            Some(key) => {
                let hash = KeyHash::of(key);
                push_hashed(&mut batches[hash.shard(shards)], hash, raw);
            }
            None => batches.iter_mut().for_each(|batch| push_hashed(batch, KeyHash(0), raw)),
        }
        at += length;
    }
    Ok(at)
}

/// Acks the applied offsets when they move, and at least every heartbeat.
/// A cluster node says whether it is stale first, then with every
/// heartbeat and whenever its view changes (the primary forgets what it
/// said when it sees this node down).
async fn send_acks(core: &ReplicationCore, source: usize, output: &mut (impl AsyncWrite + Unpin)) -> Result<(), WireError> {
    let mut last: Vec<u64> = Vec::new();
    let mut last_sent = Instant::now();
    let mut said_at = None;
    let mut out = Vec::new();
    loop {
        let epoch = core.applied.epoch();
        let heartbeat = last_sent.elapsed() >= ACK_HEARTBEAT;
        if let Some(membership) = core.global.cluster.as_ref().map(|cluster| &cluster.membership) {
            let said = membership.said_to(source).to_bits();
            let digest = membership.list_digest();
            let now = (membership.epoch(), said, digest);
            if heartbeat || said_at != Some(now) {
                wire::write_frame(&mut out, Kind::State, 0, said, &digest.to_le_bytes());
                said_at = Some(now);
            }
        }
        let offsets = core.links.borrow()[source].applied_offsets();
        if !out.is_empty() || offsets != last || heartbeat {
            for (shard, &offset) in offsets.iter().enumerate() {
                wire::write_frame(&mut out, Kind::Ack, shard, offset, &[]);
            }
            output.write_all(&out).await?;
            out.clear();
            last = offsets;
            last_sent = Instant::now();
        }
        futures_lite::future::or(core.applied.changed_since(epoch), glommio::timer::sleep(ACK_HEARTBEAT)).await;
        glommio::timer::sleep(ACK_INTERVAL).await;
    }
}

/// `stats replication` lines about the links this host follows: the
/// primary's, or in a cluster each other node's (prefixed `node_<i>_`).
pub fn report(core: &ReplicationCore, stat: &mut impl FnMut(String, String)) {
    let clustered = core.global.cluster.is_some();
    for (source, link) in core.links.borrow().iter().enumerate() {
        let Some(address) = &link.address else {
            continue;
        };
        let prefix = if clustered { format!("node_{source}_") } else { String::new() };
        stat(format!("{prefix}primary"), address.clone());
        stat(format!("{prefix}link"), link.state.into());
        stat(
            format!("{prefix}primary_replid"),
            link.primary_replid.clone().unwrap_or_else(|| "-".into()),
        );
        stat(format!("{prefix}primary_shards"), link.primary_shards.to_string());
        for (shard, offset) in link.applied_offsets().into_iter().enumerate() {
            stat(format!("{prefix}primary_shard_{shard}_applied"), offset.to_string());
        }
        stat(format!("{prefix}link_full_resyncs"), link.full_resyncs.to_string());
        stat(format!("{prefix}link_partial_resyncs"), link.partial_resyncs.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_go_to_the_shard_owning_their_key_and_a_flush_to_every_shard() {
        let mut bytes = Vec::new();
        let keys: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
        for key in &keys {
            Record::Delete { key: key.as_bytes() }.encode(&mut bytes);
        }
        Record::Flush { effective_unix: 0 }.encode(&mut bytes);
        let whole = bytes.len();
        bytes.extend_from_slice(b"S\x05"); // the start of a record cut by a frame
        let mut batches = vec![Vec::new(); 3];
        assert_eq!(split_by_shard(&bytes, 3, &mut batches).unwrap(), whole);
        let mut seen = 0;
        for (shard, batch) in batches.iter().enumerate() {
            let mut at = 0;
            let mut flushes = 0;
            while at < batch.len() {
                let hash = KeyHash(u64::from_le_bytes(batch[at..at + 8].try_into().unwrap()));
                let (record, length) = Record::decode(&batch[at + 8..]).unwrap().unwrap();
                match record.key() {
                    Some(key) => {
                        assert_eq!(hash, KeyHash::of(key), "the routing hash travels with the record");
                        assert_eq!(hash.shard(3), shard);
                        seen += 1;
                    }
                    None => flushes += 1,
                }
                at += 8 + length;
            }
            assert_eq!(flushes, 1, "shard {shard} hears of the flush");
        }
        assert_eq!(seen, keys.len());
    }
}
