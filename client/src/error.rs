//! What a call can fail with.

use thiserror::Error;

use crate::codec::{DecodeError, ServerError, Unsupported};
use crate::topology::BadAddress;

/// Why a call failed; each driver's calls return it.
///
/// ```no_run
/// # use corecache_client::{blocking::Client, Config, Consistency, Error};
/// # let client = Client::fixed(&["127.0.0.1:11211"], Config::default())?;
/// match client.set(b"k", b"v", Consistency::Quorum) {
///     Ok(()) => {}
///     // Stored on the acting node, but fewer copies answered `wait` in time.
///     Err(Error::TooFewCopies { wanted, reached }) => eprintln!("{reached} of {wanted} copies"),
///     Err(other) => return Err(other),
/// }
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Error)]
pub enum Error {
    /// Empty, longer than 250 bytes, or holding a space or control byte.
    #[error("invalid key (1 to 250 bytes, no spaces or control characters)")]
    InvalidKey,
    /// Every node the key could go to is marked down.
    #[error("no live node for the key")]
    NoLiveNode,
    /// Connecting, sending or receiving failed (the node is marked down,
    /// or, for a timeout, closer to it).
    #[error("{address}: {source}")]
    Io {
        address: String,
        #[source]
        source: std::io::Error,
    },
    /// No connection of the node's pool came free in time.
    #[error("{address}: every pooled connection stayed busy for the request's timeout")]
    PoolExhausted { address: String },
    /// The server answered with an error.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The server's bytes were not a reply to the request.
    #[error("{address}: {source}")]
    Decode {
        address: String,
        #[source]
        source: DecodeError,
    },
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// The write was stored, but `wait` saw fewer copies than asked.
    #[error("the write reached {reached} of the {wanted} copies asked for")]
    TooFewCopies { wanted: u32, reached: u32 },
    /// A reply that does not answer the request (a server bug, or not a
    /// corecache cluster).
    #[error("unexpected reply {reply} to {request}")]
    UnexpectedReply { request: &'static str, reply: String },
    #[error(transparent)]
    BadAddress(#[from] BadAddress),
    /// None of the seeds answered `cluster nodes`.
    #[error("no seed answered cluster nodes: {0}")]
    NoSeed(String),
}

impl Error {
    /// A refusal corecache gives while its cluster changes, or a failure a
    /// retry on another node may not meet.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Error::Server(error) if error.is_transient())
    }
}
