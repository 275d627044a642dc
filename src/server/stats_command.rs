//! The `stats` command on a worker core: gathers every core's report
//! through the router, then writes the group with stats.rs (and runs
//! `stats detail`).

use super::Core;
use super::router::{self, ReplySlot};
use crate::stats::{self, Detail};

/// Writes a `stats` group with `write_stat`; false for an unknown group.
pub async fn write_group(
    out: &mut Vec<u8>,
    core: &Core,
    reply_slot: &ReplySlot,
    group: &[u8],
    write_stat: &mut dyn FnMut(&mut Vec<u8>, &str, &str),
) -> bool {
    let mut emit = |name: &str, value: &str| write_stat(out, name, value);
    match group {
        b"" => stats::general(&mut emit, &core.global, &router::report(core, reply_slot).await),
        b"settings" => stats::settings(&mut emit, &core.global, core.verbosity.get()),
        b"items" => stats::items(&mut emit, &router::report(core, reply_slot).await),
        b"slabs" => stats::slabs(&mut emit, &router::report(core, reply_slot).await),
        b"hotkeys" => stats::hot_keys(&mut emit, &router::report(core, reply_slot).await),
        b"replication" => stats::replication(&mut emit, &core.global),
        b"cluster" => {
            for (name, value) in stats::cluster(&core.global) {
                emit(&name, &value);
            }
        }
        _ => return false,
    }
    true
}

/// Runs on|off; returns the dump text for dump (memcached's format, END
/// included).
pub async fn run_detail(detail: Detail, core: &Core, reply_slot: &ReplySlot) -> Option<Vec<u8>> {
    match detail {
        Detail::On | Detail::Off => {
            router::set_detail(core, reply_slot, detail == Detail::On).await;
            None
        }
        Detail::Dump => {
            let mut text = Vec::new();
            for (prefix, counts) in router::prefix_stats(core, reply_slot).await {
                text.extend_from_slice(b"PREFIX ");
                text.extend_from_slice(&prefix);
                let line = format!(
                    " get {} hit {} set {} del {}\r\n",
                    counts.gets, counts.hits, counts.sets, counts.deletes
                );
                text.extend_from_slice(line.as_bytes());
            }
            text.extend_from_slice(b"END\r\n");
            Some(text)
        }
    }
}
