//! The failure detector's I/O: SWIM datagrams over UDP on the cluster port,
//! run by the replication core. cluster/swim.rs decides; this task feeds
//! it datagrams and the clock, sends what it says, and writes each node's
//! state to the cluster's membership (read by every worker).
//!
//! The node list travels on the same socket (cluster/node_list.rs): every
//! LIST_INTERVAL each node sends every other its list's digest; a node
//! whose list differs answers with its whole list, and a node that merges
//! in a list and still differs from it answers with its own. A change
//! (an admin command on a worker, sent here as a list datagram, or heard
//! from another node) is pushed to every node at once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Notify;
use super::core::ReplicationCore;
use crate::cluster::Cluster;
use crate::cluster::membership::NodeState;
use crate::cluster::node_list::{Datagram, NodeList};
use crate::cluster::swim::Swim;

/// Largest datagram read (foca's packets are at most 1400 bytes).
const MAX_DATAGRAM: usize = 64 * 1024;
/// Datagrams held for the detector before the oldest is dropped.
const MAX_QUEUED: usize = 1024;
/// How often each node sends the others its list's digest.
const LIST_INTERVAL: Duration = Duration::from_millis(500);

type Inbox = Rc<RefCell<VecDeque<(Vec<u8>, SocketAddr)>>>;

pub async fn run(core: Rc<ReplicationCore>, socket: glommio::net::UdpSocket) {
    let Some(cluster) = core.global.cluster.as_ref() else {
        return;
    };
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64);
    let mut list = cluster.layout().list.clone();
    let mut swim = Swim::new(cluster.me(), names(&list), cluster.config.swim, boot, Instant::now());
    let mut addresses = resolve(cluster, &list).await;
    let socket = Rc::new(socket);
    let inbox: Inbox = Rc::default();
    let arrived = Rc::new(Notify::default());
    glommio::spawn_local(receive(socket.clone(), inbox.clone(), arrived.clone())).detach();
    let mut next_digest = Instant::now();
    while !core.global.stopping.load(Ordering::Relaxed) {
        let epoch = arrived.epoch();
        let now = Instant::now();
        // Where to send this node's whole list: nodes whose list differs.
        let mut answer: Vec<SocketAddr> = Vec::new();
        let mut changed = false;
        while let Some((datagram, from)) = inbox.borrow_mut().pop_front() {
            match Datagram::parse(&datagram) {
                Ok(Datagram::Swim(datagram)) => swim.receive(datagram, now),
                Ok(Datagram::List(theirs)) => {
                    changed |= list.merge(&theirs);
                    if theirs.digest() != list.digest() && !answer.contains(&from) {
                        answer.push(from);
                    }
                }
                Ok(Datagram::Digest(digest)) => {
                    if digest != list.digest() && !answer.contains(&from) {
                        answer.push(from);
                    }
                }
                Err(error) => tracing::debug!("cluster datagram from {from}: {error}"),
            }
        }
        if changed && cluster.apply_list(list.clone()) {
            swim.set_names(&names(&list));
            addresses = resolve(cluster, &list).await;
            core.follow_new_nodes();
            core.membership_moved();
            // Spread it at once.
            answer = addresses
                .iter()
                .enumerate()
                .filter(|&(node, _)| !cluster.is_me(node))
                .filter_map(|(_, address)| *address)
                .collect();
        }
        let whole = Datagram::list(&list);
        for address in answer {
            let _ = socket.send_to(&whole, address).await;
        }
        if now >= next_digest {
            next_digest = now + LIST_INTERVAL;
            let digest = Datagram::digest(&list);
            for (_, address) in addresses.iter().enumerate().filter(|&(node, _)| !cluster.is_me(node)) {
                if let Some(address) = address {
                    let _ = socket.send_to(&digest, *address).await;
                }
            }
        }
        swim.tick(now);
        for (node, data) in swim.outgoing() {
            if let Some(&Some(address)) = addresses.get(node) {
                // Lost datagrams are what SWIM is built for.
                let _ = socket.send_to(&data, address).await;
            }
        }
        let before = cluster.membership.epoch();
        swim.states();
        for node in swim.restarts() {
            // A new process: it went down (perhaps too fast to be seen) and is back.
            cluster.membership.set(node, NodeState::Down);
        }
        for (node, &state) in swim.states().iter().enumerate() {
            cluster.membership.set(node, state);
        }
        if cluster.membership.epoch() != before {
            core.membership_moved();
        }
        let wait = swim
            .next_deadline()
            .min(next_digest)
            .saturating_duration_since(Instant::now());
        futures_lite::future::or(arrived.changed_since(epoch), glommio::timer::sleep(wait)).await;
    }
}

async fn receive(socket: Rc<glommio::net::UdpSocket>, inbox: Inbox, arrived: Rc<Notify>) {
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((length, from)) => {
                let mut inbox = inbox.borrow_mut();
                if inbox.len() >= MAX_QUEUED {
                    inbox.pop_front();
                }
                inbox.push_back((buf[..length].to_vec(), from));
                arrived.notify();
            }
            Err(error) => {
                tracing::debug!("failure detector socket: {error}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Each slot's name, as SWIM knows nodes.
fn names(list: &NodeList) -> Vec<String> {
    list.entries().iter().map(|entry| entry.node.to_string()).collect()
}

/// Every node's cluster address, resolved off the core (names may block).
async fn resolve(cluster: &Cluster, list: &NodeList) -> Vec<Option<SocketAddr>> {
    let offset = cluster.config.cluster_port_offset;
    let targets: Vec<(String, u16)> = list
        .entries()
        .iter()
        .map(|entry| (entry.node.host.clone(), (i32::from(entry.node.port) + offset) as u16))
        .collect();
    glommio::executor()
        .spawn_blocking(move || {
            targets
                .iter()
                .map(|target| target.to_socket_addrs().ok().and_then(|mut found| found.next()))
                .collect()
        })
        .await
}
