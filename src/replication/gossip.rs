//! The failure detector's I/O: SWIM datagrams over UDP on the cluster port,
//! run by the replication core. cluster/swim.rs decides; this task feeds
//! it datagrams and the clock, sends what it says, and writes each node's
//! state to the cluster's membership (read by every worker).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Notify;
use super::core::ReplicationCore;
use crate::cluster::membership::NodeState;
use crate::cluster::swim::Swim;

/// Largest datagram read (foca's packets are at most 1400 bytes).
const MAX_DATAGRAM: usize = 64 * 1024;
/// Datagrams held for the detector before the oldest is dropped.
const MAX_QUEUED: usize = 1024;

pub async fn run(core: Rc<ReplicationCore>, socket: glommio::net::UdpSocket) {
    let Some(cluster) = core.global.cluster.as_ref() else {
        return;
    };
    let config = &cluster.config;
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64);
    let mut swim = Swim::new(config.me, config.nodes.len(), config.swim, boot, Instant::now());
    let addresses = resolve(config).await;
    let socket = Rc::new(socket);
    let inbox: Rc<RefCell<VecDeque<Vec<u8>>>> = Rc::default();
    let arrived = Rc::new(Notify::default());
    glommio::spawn_local(receive(socket.clone(), inbox.clone(), arrived.clone())).detach();
    while !core.global.stopping.load(Ordering::Relaxed) {
        let epoch = arrived.epoch();
        let now = Instant::now();
        while let Some(datagram) = inbox.borrow_mut().pop_front() {
            swim.receive(&datagram, now);
        }
        swim.tick(now);
        for (node, data) in swim.outgoing() {
            if let Some(address) = addresses[node] {
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
        let wait = swim.next_deadline().saturating_duration_since(Instant::now());
        futures_lite::future::or(arrived.changed_since(epoch), glommio::timer::sleep(wait)).await;
    }
}

async fn receive(socket: Rc<glommio::net::UdpSocket>, inbox: Rc<RefCell<VecDeque<Vec<u8>>>>, arrived: Rc<Notify>) {
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((length, _)) => {
                let mut inbox = inbox.borrow_mut();
                if inbox.len() >= MAX_QUEUED {
                    inbox.pop_front();
                }
                inbox.push_back(buf[..length].to_vec());
                arrived.notify();
            }
            Err(error) => {
                tracing::debug!("failure detector socket: {error}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Every node's cluster address, resolved off the core (names may block).
async fn resolve(config: &crate::cluster::ClusterConfig) -> Vec<Option<SocketAddr>> {
    let targets: Vec<(String, u16)> = (0..config.nodes.len())
        .map(|node| (config.nodes[node].host.clone(), config.cluster_port_of(node)))
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
