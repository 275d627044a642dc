//! What a protocol must provide to be served: parse steps from the read
//! buffer, say which key operations each step routes, write their outcomes,
//! and run the steps that are not key operations (flush, stats, quit...).
//! `connection` drives any Session the same way, so ordering, batching and
//! barriers are written once for every protocol.

use super::Core;
use super::router::ReplySlot;
use crate::request::{KeyOp, Outcome};

/// The parser's verdict on the front of the buffer.
pub enum Parse<S> {
    Incomplete,
    Step {
        step: S,
        consumed: usize,
        /// Stop parsing after this step (quit, shutdown).
        last: bool,
    },
    /// A step whose request body is still to be discarded.
    Swallow {
        step: S,
        consumed: usize,
        skip: usize,
    },
    /// A step after which the connection closes.
    Close {
        step: S,
    },
}

/// What a barrier step leaves the connection to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    Close,
    /// Close, and stop the server (`shutdown` with -A).
    Shutdown,
}

#[allow(async_fn_in_trait)] // single-threaded executor: no Send bound wanted
pub trait Session {
    type Step<'a>;

    /// Whether key operations for keys another cluster node acts for are
    /// forwarded to it (a link from another node's forwarding is not).
    const FORWARDS: bool = true;

    fn parse<'a>(&self, buf: &'a [u8]) -> Parse<Self::Step<'a>>;

    /// Steps that are not routed key by key; they run alone, in order,
    /// after everything before them (a pipeline's barrier).
    fn is_barrier(step: &Self::Step<'_>) -> bool;

    /// Appends the step's key operations; returns how many.
    fn key_ops<'s>(step: &'s Self::Step<'_>, ops: &mut Vec<KeyOp<&'s [u8]>>) -> usize;

    /// Writes the reply for one of the step's operations.
    fn write_outcome(step: &Self::Step<'_>, key: &[u8], outcome: &Outcome<&[u8]>, out: &mut Vec<u8>);

    /// Writes what follows the step's outcomes (END, an error line...).
    fn finish(step: &Self::Step<'_>, out: &mut Vec<u8>);

    async fn barrier<'s>(&self, core: &Core, reply_slot: &ReplySlot, step: &Self::Step<'s>, out: &mut Vec<u8>) -> After;
}
