//! Another cluster node's link, as a Session: each frame is one key
//! operation it forwards (cluster::wire), each reply frame its outcome, in
//! order. A link opens with `PEER_MAGIC`; only a node in cluster mode
//! accepts one. An op for a key this node does not act for goes on once
//! more, marked relayed, to the node this node sees acting for it: the
//! sender's view was behind (a list change it has not heard of yet, or a
//! handoff this node has cut since). A relayed op is run or refused
//! (`Refusal::NotActing`), never sent on, so it cannot loop; refused, it
//! was not run, and this node sends it again (placed again: views move
//! on) for up to HANDOFF_WAIT. An op for a key being handed to this node
//! goes to the giver (relayed), and if the giver has cut already (it refuses),
//! waits up to HANDOFF_WAIT for the handoff to end and runs here, or
//! relays it if another node acts by then (a relayed one only waits);
//! a flush_all from another node flushes this node only; `wait`'s questions
//! about a key's copies are answered at once; a quorum read's question for
//! this node's own copy of a key is answered whoever acts for it.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::Core;
use super::router::{self, Forward, ReplySlot};
use super::session::{After, Parse, Session};
use crate::cluster::wire::{self, PEER_MAGIC, Request};
use crate::cluster::{Cluster, Placement};
use crate::request::{GetOptions, KeyOp, Outcome, Refusal};

pub enum Step<'a> {
    /// The link's opening byte.
    Magic,
    Op(KeyOp<&'a [u8]>),
    /// flush_all, on this node only.
    FlushAll {
        delay: i64,
    },
    /// `wait`'s question about a key's copies (answered at once).
    Copies {
        key: &'a [u8],
        at: Option<u64>,
    },
    /// An op for a key being handed to this node: sent to the giver
    /// (unless `relayed`), or run here once the handoff has ended
    /// (`NotActing` if it has not within HANDOFF_WAIT).
    AfterHandoff {
        op: KeyOp<&'a [u8]>,
        relayed: bool,
    },
    /// An op for a key another node acts for, sent on to it once.
    Relay(KeyOp<&'a [u8]>),
    /// A relayed op for a key another node acts for (`NotActing`), or a
    /// write no node may take in the switch (`Handover`).
    Refused(Refusal),
    /// An undecodable frame: the link is closed.
    Malformed,
}

/// How long an op for a key being handed to this node waits for the
/// handoff to end (it ends a few ms after the giver's cut).
const HANDOFF_WAIT: Duration = Duration::from_millis(200);
const HANDOFF_POLL: Duration = Duration::from_millis(1);
/// How soon a relayed op that was refused goes again.
const RELAY_POLL: Duration = Duration::from_millis(2);

pub struct PeerSession<'c> {
    pub cluster: &'c Cluster,
    opened: Cell<bool>,
}

impl PeerSession<'_> {
    pub fn new(cluster: &Cluster) -> PeerSession<'_> {
        PeerSession {
            cluster,
            opened: Cell::new(false),
        }
    }

    fn acts_for(&self, key: &[u8]) -> bool {
        self.cluster.is_me(self.cluster.acting_for(key))
    }
}

impl Session for PeerSession<'_> {
    type Step<'a> = Step<'a>;

    const FORWARDS: bool = false;

    fn parse<'a>(&self, buf: &'a [u8]) -> Parse<Step<'a>> {
        if !self.opened.get() {
            return match buf.first() {
                None => Parse::Incomplete,
                Some(&PEER_MAGIC) => {
                    self.opened.set(true);
                    Parse::Step {
                        step: Step::Magic,
                        consumed: 1,
                        last: false,
                    }
                }
                Some(_) => Parse::Close { step: Step::Malformed },
            };
        }
        let (body, consumed) = match wire::frame(buf) {
            Ok(None) => return Parse::Incomplete,
            Ok(Some(frame)) => frame,
            Err(error) => {
                tracing::warn!("closing a cluster link: {error}");
                return Parse::Close { step: Step::Malformed };
            }
        };
        let placed = |op: KeyOp<&'a [u8]>, relayed: bool| match self.cluster.place(op.key(), op.mutates()) {
            Placement::Here => Step::Op(op),
            Placement::Node(_) if self.cluster.taking_over(op.key()) => Step::AfterHandoff { op, relayed },
            Placement::Node(_) if !relayed => Step::Relay(op),
            Placement::Node(_) => Step::Refused(Refusal::NotActing),
            Placement::Handover => Step::Refused(Refusal::Handover),
        };
        let step = match wire::decode_request(body) {
            Ok(Request::Key(op)) => placed(op, false),
            Ok(Request::Relayed(op)) => placed(op, true),
            Ok(Request::FlushAll { delay }) => Step::FlushAll { delay },
            Ok(Request::Copies { key, at }) if self.acts_for(key) => Step::Copies { key, at },
            Ok(Request::Copies { .. }) => Step::Refused(Refusal::NotActing),
            // Any node's own copy, for a quorum read: a look, never a write.
            Ok(Request::CopyOf { key }) => Step::Op(KeyOp::Get {
                key,
                options: GetOptions {
                    peek: true,
                    ..GetOptions::default()
                },
            }),
            Err(error) => {
                tracing::warn!("closing a cluster link: {error}");
                return Parse::Close { step: Step::Malformed };
            }
        };
        Parse::Step {
            step,
            consumed,
            last: false,
        }
    }

    fn is_barrier(step: &Step<'_>) -> bool {
        matches!(
            step,
            Step::Malformed | Step::FlushAll { .. } | Step::Copies { .. } | Step::AfterHandoff { .. } | Step::Relay(_)
        )
    }

    fn key_ops<'s>(step: &'s Step<'_>, ops: &mut Vec<KeyOp<&'s [u8]>>) -> usize {
        match step {
            Step::Op(op) => {
                ops.push(op.clone());
                1
            }
            Step::Magic
            | Step::Refused(_)
            | Step::FlushAll { .. }
            | Step::Copies { .. }
            | Step::AfterHandoff { .. }
            | Step::Relay(_)
            | Step::Malformed => 0,
        }
    }

    fn write_outcome(_: &Step<'_>, _: &[u8], outcome: &Outcome<&[u8]>, out: &mut Vec<u8>) {
        wire::encode_outcome(out, outcome);
    }

    fn finish(step: &Step<'_>, out: &mut Vec<u8>) {
        if let Step::Refused(refusal) = step {
            wire::encode_outcome(out, &Outcome::Refused(*refusal));
        }
    }

    async fn barrier<'s>(&self, core: &Core, reply_slot: &ReplySlot, step: &Self::Step<'s>, out: &mut Vec<u8>) -> After {
        match *step {
            Step::FlushAll { delay } => {
                let outcome = if router::flush_all(core, reply_slot, delay, Self::FORWARDS).await {
                    Outcome::Deleted
                } else {
                    Outcome::Refused(Refusal::ReadOnly)
                };
                wire::encode_outcome(out, &outcome);
                After::Continue
            }
            Step::Copies { key, at } => {
                let value = router::copies_here(core, reply_slot, key, at).await;
                let outcome = Outcome::Number {
                    value,
                    cas: 0,
                    ttl: 0,
                    previous_ttl: 0,
                };
                wire::encode_outcome(out, &outcome);
                After::Continue
            }
            Step::Relay(ref op) => {
                relay(core, reply_slot, op, out).await;
                After::Continue
            }
            Step::AfterHandoff { ref op, relayed } => {
                // The giver still acts for it, unless it cut (a few ms
                // before the handoff ends): then it refuses, and the op
                // waits here. A relayed op came from a node that does not
                // act for it (the giver, once it cut): it only waits.
                if !relayed {
                    let mut cut = false;
                    let mut answer = Vec::new();
                    let op = std::slice::from_ref(op);
                    router::execute(core, reply_slot, op, Forward::Relay, |_, outcome| match outcome {
                        Outcome::Refused(Refusal::NotActing) => cut = true,
                        outcome => wire::encode_outcome(&mut answer, outcome),
                    })
                    .await;
                    if !cut {
                        out.extend_from_slice(&answer);
                        return After::Continue;
                    }
                }
                let deadline = Instant::now() + HANDOFF_WAIT;
                while self.cluster.taking_over(op.key()) && Instant::now() < deadline {
                    glommio::timer::sleep(HANDOFF_POLL).await;
                }
                if self.acts_for(op.key()) {
                    router::execute(core, reply_slot, std::slice::from_ref(op), Forward::Never, |_, outcome| {
                        wire::encode_outcome(out, outcome)
                    })
                    .await;
                } else if !relayed {
                    // The handoff ended, and another node acts (a later change).
                    relay(core, reply_slot, op, out).await;
                } else {
                    wire::encode_outcome(out, &Outcome::Refused(Refusal::NotActing));
                }
                After::Continue
            }
            Step::Malformed => After::Close,
            Step::Magic | Step::Op(_) | Step::Refused(_) => After::Continue,
        }
    }
}

/// Runs an op, or sends it on (relayed) to the node this node sees acting
/// for its key. That node runs it or refuses it (its view is ahead of this
/// one's, or behind: a handoff just cut or just ended); refused, it was
/// not run, and goes again once this node's view may have moved, for up
/// to HANDOFF_WAIT.
async fn relay(core: &Core, reply_slot: &ReplySlot, op: &KeyOp<&[u8]>, out: &mut Vec<u8>) {
    let deadline = Instant::now() + HANDOFF_WAIT;
    loop {
        let mut refused = false;
        let mut answer = Vec::new();
        router::execute(
            core,
            reply_slot,
            std::slice::from_ref(op),
            Forward::Relay,
            |_, outcome| match outcome {
                Outcome::Refused(Refusal::NotActing) if Instant::now() < deadline => refused = true,
                outcome => wire::encode_outcome(&mut answer, outcome),
            },
        )
        .await;
        if !refused {
            out.extend_from_slice(&answer);
            return;
        }
        glommio::timer::sleep(RELAY_POLL).await;
    }
}
