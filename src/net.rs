//! Listening sockets, as the client port and the replication and cluster
//! ports bind them.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Fails if anything listens on `address` already. SO_REUSEPORT would
/// otherwise let a second server silently share the port with the first;
/// a plain bind is refused by any existing socket there.
pub fn ensure_free(address: SocketAddr) -> std::io::Result<()> {
    let probe = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&address.into())
}

/// A listening socket with SO_REUSEPORT, so every core can bind the port.
pub fn bind(address: SocketAddr, backlog: u32) -> std::io::Result<OwnedFd> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}
