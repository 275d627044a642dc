//! Another cluster node's link, as a Session: each frame is one key
//! operation it forwards (cluster::wire), each reply frame its outcome, in
//! order. A link opens with `PEER_MAGIC`; only a node in cluster mode
//! accepts one. An op for a key this node does not act for is refused
//! (`Refusal::NotActing`), never forwarded again, so a request cannot loop.

use std::cell::Cell;

use super::Core;
use super::router::ReplySlot;
use super::session::{After, Parse, Session};
use crate::cluster::Cluster;
use crate::cluster::wire::{self, PEER_MAGIC};
use crate::request::{KeyOp, Outcome, Refusal};

pub enum Step<'a> {
    /// The link's opening byte.
    Magic,
    Op(KeyOp<&'a [u8]>),
    /// An op for a key another node acts for.
    NotActing,
    /// An undecodable frame: the link is closed.
    Malformed,
}

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

    /// Whether this node acts for the key. Until failure detection, the
    /// node acting for a key is its owner on the ring.
    fn acts_for(&self, key: &[u8]) -> bool {
        self.cluster.preference_list(key).next() == Some(self.cluster.config.me)
    }
}

impl Session for PeerSession<'_> {
    type Step<'a> = Step<'a>;

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
        let step = match wire::decode_op(body) {
            Ok(op) if self.acts_for(op.key()) => Step::Op(op),
            Ok(_) => Step::NotActing,
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
        matches!(step, Step::Malformed)
    }

    fn key_ops<'s>(step: &'s Step<'_>, ops: &mut Vec<KeyOp<&'s [u8]>>) -> usize {
        match step {
            Step::Op(op) => {
                ops.push(op.clone());
                1
            }
            Step::Magic | Step::NotActing | Step::Malformed => 0,
        }
    }

    fn write_outcome(_: &Step<'_>, _: &[u8], outcome: &Outcome<&[u8]>, out: &mut Vec<u8>) {
        wire::encode_outcome(out, outcome);
    }

    fn finish(step: &Step<'_>, out: &mut Vec<u8>) {
        if let Step::NotActing = step {
            wire::encode_outcome(out, &Outcome::Refused(Refusal::NotActing));
        }
    }

    async fn barrier<'s>(&self, _: &Core, _: &ReplySlot, step: &Self::Step<'s>, _: &mut Vec<u8>) -> After {
        match step {
            Step::Malformed => After::Close,
            _ => After::Continue,
        }
    }
}
