//! The text protocol (classic commands) as a Session.

use super::Core;
use super::router::{self, ReplySlot};
use super::session::{After, Parse, Session};
use super::stats_command;
use crate::cluster::Cluster;
use crate::cluster::node_list::{Change, Datagram, NodeList};
use crate::protocol::text::{self, ClusterAdmin, Command, Parsed, ReplicationAdmin, TextLimits};
use crate::protocol::text_reply;
use crate::request::{DeleteOptions, GetOptions, KeyOp, Outcome, Refusal};
use crate::stats;

/// A unit of a text batch, in the client's order.
pub enum Step<'a> {
    Command(Command<'a>),
    /// An error line from the parser.
    Reply {
        text: &'static str,
        noreply: bool,
    },
    /// A rejected value: the reply, and for set the key whose old value is dropped.
    Swallow {
        reply: &'static str,
        noreply: bool,
        stale_key: Option<&'a [u8]>,
    },
    Close,
}

pub struct TextSession {
    pub limits: TextLimits,
}

impl Session for TextSession {
    type Step<'a> = Step<'a>;

    fn parse<'a>(&self, buf: &'a [u8]) -> Parse<Step<'a>> {
        match text::parse(buf, &self.limits) {
            Parsed::Incomplete => Parse::Incomplete,
            Parsed::Command { command, consumed } => Parse::Step {
                last: matches!(command, Command::Quit | Command::Shutdown { valid_mode: true }),
                step: Step::Command(command),
                consumed,
            },
            Parsed::Error {
                reply,
                consumed,
                noreply,
            } => Parse::Step {
                step: Step::Reply { text: reply, noreply },
                consumed,
                last: false,
            },
            Parsed::Swallow {
                reply,
                consumed,
                skip,
                noreply,
                stale_key,
            } => Parse::Swallow {
                step: Step::Swallow {
                    reply,
                    noreply,
                    stale_key,
                },
                consumed,
                skip,
            },
            Parsed::Close => Parse::Close { step: Step::Close },
        }
    }

    fn is_barrier(step: &Step<'_>) -> bool {
        !matches!(
            step,
            Step::Command(Command::Get { .. } | Command::Keyed { .. } | Command::Meta(_) | Command::MetaNoop)
                | Step::Reply { .. }
                | Step::Swallow { .. }
        )
    }

    fn key_ops<'s>(step: &'s Step<'_>, ops: &mut Vec<KeyOp<&'s [u8]>>) -> usize {
        let before = ops.len();
        match step {
            Step::Command(Command::Get { keys, touch, .. }) => {
                let options = GetOptions {
                    touch: *touch,
                    ..GetOptions::default()
                };
                ops.extend(Command::get_keys(keys).map(|key| KeyOp::Get { key, options }));
            }
            Step::Command(Command::Keyed { op, .. }) => ops.push(op.clone()),
            Step::Command(Command::Meta(meta)) => ops.push(meta.key_op()),
            // A set whose value was refused drops the old value, as memcached.
            Step::Swallow {
                stale_key: Some(key), ..
            } => ops.push(KeyOp::Delete {
                key,
                options: DeleteOptions::default(),
            }),
            _ => {}
        }
        ops.len() - before
    }

    fn write_outcome(step: &Step<'_>, key: &[u8], outcome: &Outcome<&[u8]>, out: &mut Vec<u8>) {
        match step {
            Step::Command(Command::Get { with_cas, .. }) => text_reply::get_outcome(out, key, *with_cas, outcome),
            Step::Command(Command::Keyed { noreply: false, .. }) => text_reply::keyed_outcome(out, outcome),
            Step::Command(Command::Meta(meta)) => text_reply::meta_outcome(out, meta, outcome),
            // noreply, or the silent delete of a stale value.
            _ => {}
        }
    }

    fn finish(step: &Step<'_>, out: &mut Vec<u8>) {
        match step {
            Step::Command(Command::Get { .. }) => text_reply::end(out),
            Step::Command(Command::MetaNoop) => text_reply::line(out, "MN"),
            Step::Reply { text, noreply: false } => text_reply::line(out, text),
            Step::Swallow {
                reply, noreply: false, ..
            } => text_reply::line(out, reply),
            _ => {}
        }
    }

    async fn barrier<'s>(&self, core: &Core, reply_slot: &ReplySlot, step: &Self::Step<'s>, out: &mut Vec<u8>) -> After {
        let config = &core.global.config;
        let command = match step {
            Step::Command(command) => command,
            Step::Close => return After::Close,
            _ => return After::Continue,
        };
        match *command {
            Command::FlushAll { delay, noreply } => {
                let reply = if !config.flush_enabled {
                    Some("CLIENT_ERROR flush_all not allowed")
                } else if router::flush_all(core, reply_slot, delay, Self::FORWARDS).await {
                    Some("OK")
                } else {
                    None
                };
                if !noreply {
                    match reply {
                        Some(reply) => text_reply::line(out, reply),
                        None => text_reply::refused(out, Refusal::ReadOnly),
                    }
                }
            }
            Command::Version => {
                out.extend_from_slice(b"VERSION ");
                text_reply::line(out, stats::VERSION);
            }
            Command::Verbosity { level, noreply } => {
                router::verbosity(core, reply_slot, level).await;
                if !noreply {
                    text_reply::line(out, "OK");
                }
            }
            Command::Stats { group } => {
                // memcached reads only the first word: "stats reset x" resets.
                if let Some(detail) = stats::Detail::of_group(group) {
                    match detail {
                        None => text_reply::line(out, stats::DETAIL_USAGE),
                        Some(detail) => match stats_command::run_detail(detail, core, reply_slot).await {
                            Some(dump) => out.extend_from_slice(&dump),
                            None => text_reply::line(out, "OK"),
                        },
                    }
                } else if group.split(|&b| b == b' ').next() == Some(b"reset") {
                    router::reset_stats(core, reply_slot).await;
                    text_reply::line(out, "RESET");
                } else if stats_command::write_group(out, core, reply_slot, group, &mut |out, name, value| {
                    text_reply::stat(out, name, value)
                })
                .await
                {
                    text_reply::end(out);
                } else {
                    text_reply::line(out, text::ERROR);
                }
            }
            Command::Metadump { ref classes } => {
                // memcached 1.6.45 says OK before the first line.
                text_reply::line(out, "OK");
                router::metadump(core, reply_slot, classes.clone(), out).await;
                text_reply::end(out);
            }
            Command::Replication(admin) => text_reply::line(out, replication_admin(core, admin)),
            Command::ClusterGet(key) => quorum_get(core, reply_slot, key, out).await,
            Command::ClusterLocal(key) => local_get(core, reply_slot, key, out).await,
            Command::Cluster(admin) => cluster_admin(core, admin, out),
            Command::Wait(wait) => match (&core.global.cluster, wait) {
                // Not a memcached command: unknown outside cluster mode.
                (None, _) => text_reply::line(out, "ERROR"),
                (Some(_), None) => text_reply::line(out, "CLIENT_ERROR bad command line format"),
                (Some(_), Some(wait)) => {
                    let timeout = std::time::Duration::from_millis(u64::from(wait.timeout_ms));
                    let count = router::wait(core, reply_slot, wait.copies, timeout).await;
                    text_reply::line(out, &format!("COPIES {count}"));
                }
            },
            Command::SlabsAutomoveOff => text_reply::line(out, "OK"),
            Command::Quit => return After::Close,
            Command::Shutdown { valid_mode } => {
                if !config.shutdown_enabled {
                    text_reply::line(out, "SERVER_ERROR: shutdown not enabled");
                } else if valid_mode {
                    return After::Shutdown;
                } else {
                    text_reply::line(out, "CLIENT_ERROR invalid shutdown mode");
                }
            }
            Command::Get { .. } | Command::Keyed { .. } | Command::Meta(_) | Command::MetaNoop => {}
        }
        After::Continue
    }
}

/// `cluster nodes`: `EPOCH <epoch> <digest>` of the node list, then per
/// member `NODE <host:port> <weight> <state> share=<key space acted for>
/// lag_us=<copies' lag, or -> [self]`; `cluster owner <key>`: its live
/// preference list, `OWNER <host:port>` (the node acting for it) then
/// `REPLICA <host:port>` per further copy. Both end with END. `cluster
/// add|remove|weight` change the list (node_list.rs) and answer OK.
fn cluster_admin(core: &Core, admin: ClusterAdmin<'_>, out: &mut Vec<u8>) {
    use std::io::Write;
    let Some(cluster) = &core.global.cluster else {
        return text_reply::line(out, "SERVER_ERROR cluster mode is off (start with --cluster-nodes)");
    };
    let layout = cluster.layout();
    let list = &layout.list;
    let change = match admin {
        ClusterAdmin::Nodes => {
            let membership = &cluster.membership;
            let _ = write!(out, "EPOCH {} {:016x}\r\n", list.epoch(), list.digest());
            let shares = cluster.shares();
            for (index, node) in list.members() {
                let share = shares.get(index).copied().unwrap_or(0.0);
                let state = membership.describe(index);
                let lag = membership
                    .lag(index)
                    .map_or("-".to_string(), |lag| lag.as_micros().to_string());
                let me = if cluster.is_me(index) { " self" } else { "" };
                let _ = write!(
                    out,
                    "NODE {node} {} {state} share={share:.4} lag_us={lag}{me}\r\n",
                    node.weight
                );
            }
            return text_reply::end(out);
        }
        ClusterAdmin::Owner(key) => {
            let acting = cluster.acting_for(key);
            let _ = write!(out, "OWNER {}\r\n", list.node(acting));
            for index in cluster.preference_list(key).into_iter().filter(|&index| index != acting) {
                let _ = write!(out, "REPLICA {}\r\n", list.node(index));
            }
            return text_reply::end(out);
        }
        ClusterAdmin::Add(entry) => std::str::from_utf8(entry)
            .ok()
            .and_then(|entry| crate::config::parse_node_list(entry).ok())
            .filter(|nodes| nodes.len() == 1 && nodes[0].port != 0)
            .map(|mut nodes| Change::Add(nodes.remove(0))),
        ClusterAdmin::Remove(address) => parse_address(address).map(|(host, port)| Change::Remove { host, port }),
        ClusterAdmin::Weight(address, weight) => parse_address(address).map(|(host, port)| Change::Weight { host, port, weight }),
    };
    let Some(change) = change else {
        return text_reply::line(out, "CLIENT_ERROR bad node address (host:port[:weight])");
    };
    match list.changed(&change, &cluster.my_name()) {
        Ok(changed) => match send_list_change(core, cluster, &changed) {
            Ok(()) => text_reply::line(out, "OK"),
            Err(error) => {
                let _ = write!(out, "SERVER_ERROR node list change not sent: {error}\r\n");
            }
        },
        Err(error) => {
            let _ = write!(out, "SERVER_ERROR {error}\r\n");
        }
    }
}

/// `host:port` of a node, as the list names it.
fn parse_address(address: &[u8]) -> Option<(String, u16)> {
    let (host, port) = std::str::from_utf8(address).ok()?.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok().filter(|&port| port != 0)?)).filter(|(host, _)| !host.is_empty())
}

/// Hands a changed list to this node's gossip (the replication core takes
/// it in and spreads it) as a node-list datagram to its own cluster port.
fn send_list_change(core: &Core, cluster: &Cluster, list: &NodeList) -> std::io::Result<()> {
    let listen = core.global.config.listen[0];
    let host = if listen.is_unspecified() {
        match listen {
            std::net::IpAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        }
    } else {
        listen
    };
    let to = std::net::SocketAddr::new(host, cluster.cluster_port_of(cluster.me()));
    let from = std::net::SocketAddr::new(host, 0);
    std::net::UdpSocket::bind(from)?.send_to(&Datagram::list(list), to)?;
    Ok(())
}

/// `cluster get <key>`: the newest of a majority of the key's copies, as
/// `gets` answers (`VALUE <key> <flags> <bytes> <cas>`, the data, `END`).
async fn quorum_get(core: &Core, reply_slot: &ReplySlot, key: &[u8], out: &mut Vec<u8>) {
    if core.global.cluster.is_none() {
        return text_reply::line(out, "SERVER_ERROR cluster mode is off (start with --cluster-nodes)");
    }
    let Some(read) = router::quorum_get(core, reply_slot, key).await else {
        return text_reply::line(out, "SERVER_ERROR fewer than a majority of the key's copies answered");
    };
    write_copy(out, key, read.newest.as_ref());
}

/// `cluster local <key>`: this node's own copy, as `gets` answers; the
/// node need not act for the key (a copy may trail the acting node's
/// latest write by the copies' lag).
async fn local_get(core: &Core, reply_slot: &ReplySlot, key: &[u8], out: &mut Vec<u8>) {
    if core.global.cluster.is_none() {
        return text_reply::line(out, "SERVER_ERROR cluster mode is off (start with --cluster-nodes)");
    }
    let copy = router::local_get(core, reply_slot, key).await;
    write_copy(out, key, copy.as_ref());
}

/// A copy found (or none) as `gets` answers: `VALUE <key> <flags> <bytes>
/// <cas>`, the data, `END`.
fn write_copy(out: &mut Vec<u8>, key: &[u8], copy: Option<&router::FoundCopy>) {
    use std::io::Write;
    if let Some(copy) = copy {
        out.extend_from_slice(b"VALUE ");
        out.extend_from_slice(key);
        let _ = write!(out, " {} {} {}\r\n", copy.client_flags, copy.value.len(), copy.cas);
        out.extend_from_slice(&copy.value);
        out.extend_from_slice(b"\r\n");
    }
    text_reply::end(out);
}

/// `replication promote` and `replication follow`: the reply line.
fn replication_admin(core: &Core, admin: ReplicationAdmin<'_>) -> &'static str {
    let control = &core.global.replication;
    if !core.global.config.replication_enabled() {
        return "SERVER_ERROR replication is off (start with --repl-port or --replica-of)";
    }
    if core.global.cluster.is_some() {
        return "SERVER_ERROR a cluster node follows the other nodes itself (no promote or follow)";
    }
    match admin {
        ReplicationAdmin::Promote => control.promote(),
        ReplicationAdmin::Follow(address) => {
            // Only the form is checked here (a worker must not wait on DNS);
            // the replication core resolves the name when it connects.
            let Some(address) = std::str::from_utf8(address).ok().filter(|address| {
                address
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port != 0))
            }) else {
                return "CLIENT_ERROR bad replication address";
            };
            control.follow(address.to_string());
        }
    }
    "OK"
}
