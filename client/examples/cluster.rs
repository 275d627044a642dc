//! Connects to a corecache cluster (three nodes by default, as README's
//! cluster example starts them), prints its node list, and runs a few calls.
//!
//!   cargo run -p corecache-client --example cluster -- 127.0.0.2:11211 127.0.0.3:11211 127.0.0.4:11211

use corecache_client::blocking::Client;
use corecache_client::{Config, Consistency};

fn main() -> Result<(), corecache_client::Error> {
    let mut seeds: Vec<String> = std::env::args().skip(1).collect();
    if seeds.is_empty() {
        seeds = ["127.0.0.2:11211", "127.0.0.3:11211", "127.0.0.4:11211"]
            .map(String::from)
            .to_vec();
    }
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let client = Client::cluster(&seeds, Config::default())?;
    let (epoch, nodes) = client.nodes();
    println!("node list epoch {epoch:?}");
    for (address, up) in nodes {
        println!("  {address} {}", if up { "up" } else { "down" });
    }
    client.set(b"example:greeting", b"hello", Consistency::Quorum)?;
    let value = client.get_quorum(b"example:greeting")?.expect("just written");
    println!(
        "example:greeting = {:?} (cas {})",
        String::from_utf8_lossy(&value.data),
        value.cas
    );
    let keys: Vec<Vec<u8>> = (0..5).map(|i| format!("example:{i}").into_bytes()).collect();
    let items: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (&k[..], &b"v"[..])).collect();
    client.set_many(&items, Default::default())?;
    let asked: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let found = client.get_many(&asked)?.iter().filter(|v| v.is_some()).count();
    println!("get_many: {found} of {} found", keys.len());
    Ok(())
}
