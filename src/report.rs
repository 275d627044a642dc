//! What each core reports for `stats` and the metrics endpoint: its
//! shard's report, its own counters, its command latencies. Plain data,
//! summed across cores (stats.rs writes it out; Global keeps the latest).

use hdrhistogram::Histogram;

use crate::request::KeyOp;
use crate::store::stats::ShardReport;

/// The command types whose server-side latency each core tracks.
pub const LATENCY_COMMANDS: [&str; 6] = ["get", "set", "delete", "incr", "touch", "other"];

/// Nanoseconds from parsing a request to its reply being written, per
/// command type (HdrHistogram, 3 significant digits).
#[derive(Clone, Debug)]
pub struct CommandLatency {
    pub histograms: Vec<Histogram<u64>>,
}

impl Default for CommandLatency {
    fn default() -> CommandLatency {
        CommandLatency {
            histograms: LATENCY_COMMANDS
                .iter()
                .map(|_| Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"))
                .collect(),
        }
    }
}

impl CommandLatency {
    /// The LATENCY_COMMANDS index of a key operation.
    pub fn command_of(op: &KeyOp<&[u8]>) -> usize {
        match op {
            KeyOp::Get { options, .. } if options.touch.is_none() => 0,
            KeyOp::Store { .. } => 1,
            KeyOp::Delete { .. } => 2,
            KeyOp::Arith { .. } => 3,
            KeyOp::Get { .. } | KeyOp::Touch { .. } => 4,
        }
    }

    pub fn record(&mut self, command: usize, nanos: u64) {
        self.histograms[command].saturating_record(nanos.max(1));
    }

    pub fn add(&mut self, other: &CommandLatency) {
        for (mine, theirs) in self.histograms.iter_mut().zip(&other.histograms) {
            let _ = mine.add(theirs);
        }
    }
}

/// One core's contribution to `stats`.
#[derive(Clone, Debug, Default)]
pub struct CoreReport {
    pub shard: ShardReport,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub cmd_flush: u64,
    pub conn_yields: u64,
    pub latency: CommandLatency,
}

impl CoreReport {
    pub fn add(&mut self, other: &CoreReport) {
        self.shard.add(&other.shard);
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.cmd_flush += other.cmd_flush;
        self.conn_yields += other.conn_yields;
        self.latency.add(&other.latency);
    }
}
