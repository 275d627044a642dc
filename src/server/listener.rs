//! Listening sockets and the connection limit (`-c`).

use std::rc::Rc;
use std::sync::atomic::Ordering;

use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};

use super::Core;
use super::connection;

/// memcached's answer when `-c` connections are already open.
const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";

/// Counts a connection as open until dropped.
pub struct ConnectionSlot(Rc<Core>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.global.curr_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a connection slot, or None when `-c` are already open.
fn admit(core: &Rc<Core>) -> Option<ConnectionSlot> {
    let global = &core.global;
    let max = global.config.max_connections;
    let admitted = global
        .curr_connections
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| (open < max).then_some(open + 1))
        .is_ok();
    if admitted {
        global.total_connections.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionSlot(core.clone()))
    } else {
        global.rejected_connections.fetch_add(1, Ordering::Relaxed);
        None
    }
}

pub async fn accept_loop(core: Rc<Core>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            // Stopping: the listener was shut down.
            Err(_) if core.global.stopping.load(Ordering::Relaxed) => return,
            Err(error) => {
                tracing::warn!("accept failed: {error}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        match admit(&core) {
            Some(slot) => {
                glommio::spawn_local(serve(core.clone(), stream, slot)).detach();
            }
            None => {
                glommio::spawn_local(refuse(stream)).detach();
            }
        }
    }
}

async fn serve(core: Rc<Core>, stream: TcpStream, slot: ConnectionSlot) {
    let _ = stream.set_nodelay(true);
    connection::serve(core, stream).await;
    drop(slot);
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream.write_all(TOO_MANY_CONNECTIONS).await;
    let _ = stream.close().await;
}
