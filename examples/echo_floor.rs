//! The floor for benchmarks: a minimal glommio server on the same socket
//! path as corecache that answers text `get` with a canned 32-byte VALUE
//! block and `set` with STORED, without parsing more than line ends or
//! touching a store. corecache's CPU per operation over this one's is the
//! cost of everything that is not I/O.
//!
//!   cargo run --release --example echo_floor -- 31800 0   # port, CPU

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

const HIT: &[u8] = b"VALUE key:0000000000000001 0 32\r\nabcdefghijklmnopqrstuvwxyzabcdef\r\nEND\r\n";

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(31800);
    let cpu: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .io_memory(1 << 20)
        .spawn(move || async move {
            let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
            loop {
                let Ok(mut stream) = listener.accept().await else { continue };
                glommio::spawn_local(async move {
                    let _ = stream.set_nodelay(true);
                    let mut input = vec![0u8; 16 * 1024];
                    let mut filled = 0;
                    let mut out = Vec::new();
                    let mut skip_data_line = false;
                    loop {
                        let Ok(read) = stream.read(&mut input[filled..]).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        filled += read;
                        let mut at = 0;
                        while let Some(end) = memchr::memchr(b'\n', &input[at..filled]) {
                            let line = &input[at..at + end];
                            at += end + 1;
                            if skip_data_line {
                                skip_data_line = false;
                                out.extend_from_slice(b"STORED\r\n");
                            } else if line.starts_with(b"set ") {
                                skip_data_line = true;
                            } else {
                                out.extend_from_slice(HIT);
                            }
                        }
                        input.copy_within(at..filled, 0);
                        filled -= at;
                        if !out.is_empty() {
                            if stream.write_all(&out).await.is_err() {
                                return;
                            }
                            out.clear();
                        }
                    }
                })
                .detach();
            }
        })
        .expect("executor")
        .join()
        .expect("join");
}
