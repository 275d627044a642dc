//! Measurements: an HdrHistogram per operation type (nanoseconds), hits,
//! misses and errors by kind, and the reports made from them.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::protocol::Reply;
use crate::workload::OpKind;

/// Percentiles every report lists; the chart draws the same series.
pub const PERCENTILES: [f64; 10] = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999];
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// One thread's (or the whole run's) measurements.
#[derive(Clone, Debug)]
pub struct Recorder {
    pub latency: BTreeMap<OpKind, Histogram<u64>>,
    pub hits: u64,
    pub misses: u64,
    pub errors: BTreeMap<String, u64>,
    pub verify_failures: u64,
    /// Requests sent to each node for measured operations.
    pub requests_per_node: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            latency: OpKind::ALL
                .iter()
                .map(|&kind| {
                    (
                        kind,
                        Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("histogram bounds"),
                    )
                })
                .collect(),
            hits: 0,
            misses: 0,
            errors: BTreeMap::new(),
            verify_failures: 0,
            requests_per_node: BTreeMap::new(),
        }
    }
}

impl Recorder {
    pub fn record(&mut self, kind: OpKind, latency: Duration, reply: &Reply) {
        let nanos = (latency.as_nanos() as u64).clamp(1, MAX_LATENCY_NS);
        self.latency.get_mut(&kind).expect("every kind").saturating_record(nanos);
        self.hits += u64::from(reply.hits);
        self.misses += u64::from(reply.misses);
        self.verify_failures += u64::from(reply.verify_failures);
        if let Some(error) = &reply.error {
            self.error(error);
        }
    }

    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }

    pub fn requests_sent(&mut self, per_node: &BTreeMap<String, u64>) {
        for (node, count) in per_node {
            *self.requests_per_node.entry(node.clone()).or_insert(0) += count;
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (kind, histogram) in &other.latency {
            self.latency
                .get_mut(kind)
                .expect("every kind")
                .add(histogram)
                .expect("same bounds");
        }
        self.hits += other.hits;
        self.misses += other.misses;
        self.verify_failures += other.verify_failures;
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_insert(0) += count;
        }
        self.requests_sent(&other.requests_per_node);
    }

    pub fn operations(&self) -> u64 {
        self.latency.values().map(Histogram::len).sum()
    }

    /// All operation types in one histogram.
    pub fn all(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("histogram bounds");
        for histogram in self.latency.values() {
            all.add(histogram).expect("same bounds");
        }
        all
    }
}

/// Latency figures of one operation type, in microseconds.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
    /// (percentile, microseconds) for PERCENTILES, then 100 (max).
    pub percentiles: Vec<(f64, f64)>,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        let at = |p: f64| us(histogram.value_at_quantile(p / 100.0));
        let mut percentiles: Vec<(f64, f64)> = PERCENTILES.iter().map(|&p| (p, at(p))).collect();
        percentiles.push((100.0, us(histogram.max())));
        LatencySummary {
            count: histogram.len(),
            mean_us: histogram.mean() / 1000.0,
            p50_us: at(50.0),
            p90_us: at(90.0),
            p99_us: at(99.0),
            p999_us: at(99.9),
            p9999_us: at(99.99),
            max_us: us(histogram.max()),
            percentiles,
        }
    }
}

/// The machine-readable result of a run (`--json`).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Report {
    pub protocol: String,
    pub mode: String,
    pub threads: usize,
    pub connections: usize,
    pub pipeline: usize,
    pub target_rate: Option<f64>,
    pub seconds: f64,
    pub operations: u64,
    pub ops_per_sec: f64,
    pub hits: u64,
    pub misses: u64,
    pub hit_ratio: f64,
    pub errors: BTreeMap<String, u64>,
    pub verify_failures: u64,
    /// Requests sent to each node (a multi-key get split over nodes is a
    /// request to each) for the measured operations.
    #[serde(default)]
    pub requests_per_node: BTreeMap<String, u64>,
    /// The load generator's own CPU (user + system) per operation.
    pub loadgen_cpu_us_per_op: f64,
    pub latency: BTreeMap<String, LatencySummary>,
}

impl Report {
    /// The final table on stdout.
    pub fn print_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{} {} | {} threads x {} connections, pipeline {} | {:.1} s",
            self.protocol, self.mode, self.threads, self.connections, self.pipeline, self.seconds
        )?;
        writeln!(
            out,
            "{:>8} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "count", "ops/s", "p50 us", "p90 us", "p99 us", "p99.9", "p99.99", "max us"
        )?;
        for (name, summary) in &self.latency {
            if summary.count == 0 {
                continue;
            }
            writeln!(
                out,
                "{:>8} {:>10} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                name,
                summary.count,
                summary.count as f64 / self.seconds,
                summary.p50_us,
                summary.p90_us,
                summary.p99_us,
                summary.p999_us,
                summary.p9999_us,
                summary.max_us
            )?;
        }
        writeln!(
            out,
            "ops/s {:.0}  hit ratio {:.3}  loadgen CPU {:.2} us/op  verify failures {}",
            self.ops_per_sec, self.hit_ratio, self.loadgen_cpu_us_per_op, self.verify_failures
        )?;
        if self.requests_per_node.len() > 1 {
            let total: u64 = self.requests_per_node.values().sum();
            let mean = total as f64 / self.requests_per_node.len() as f64;
            for (node, count) in &self.requests_per_node {
                writeln!(
                    out,
                    "node {node}: {count} requests, {:.1}% ({:.2}x the mean)",
                    100.0 * *count as f64 / total.max(1) as f64,
                    *count as f64 / mean.max(1e-9)
                )?;
            }
        }
        for (kind, count) in &self.errors {
            writeln!(out, "error: {count} x {kind}")?;
        }
        Ok(())
    }
}

/// Writes each operation type's histogram to an HdrHistogram interval log.
pub fn write_hdr_log(recorder: &Recorder, seconds: f64, path: &std::path::Path) -> std::io::Result<()> {
    use hdrhistogram::serialization::V2Serializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    let mut file = std::fs::File::create(path)?;
    let mut serializer = V2Serializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("corecache-loadgen latency, nanoseconds")
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut file, &mut serializer)
        .map_err(std::io::Error::other)?;
    for (kind, histogram) in &recorder.latency {
        if histogram.is_empty() {
            continue;
        }
        log.write_histogram(
            histogram,
            Duration::ZERO,
            Duration::from_secs_f64(seconds),
            Tag::new(kind.name()),
        )
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_and_merging_keep_counts_and_percentiles() {
        let mut first = Recorder::default();
        let mut second = Recorder::default();
        let hit = Reply {
            hits: 1,
            ..Reply::default()
        };
        for micros in 1..=1000u64 {
            let recorder = if micros % 2 == 0 { &mut first } else { &mut second };
            recorder.record(OpKind::Get, Duration::from_micros(micros), &hit);
        }
        second.record(
            OpKind::Set,
            Duration::from_millis(5),
            &Reply {
                error: Some("SERVER_ERROR x".into()),
                ..Reply::default()
            },
        );
        first.merge(&second);
        assert_eq!(first.operations(), 1001);
        assert_eq!((first.hits, first.errors["SERVER_ERROR x"]), (1000, 1));
        let get = LatencySummary::of(&first.latency[&OpKind::Get]);
        assert_eq!(get.count, 1000);
        // 3 significant digits.
        assert!((get.p50_us - 500.0).abs() <= 1.0, "{}", get.p50_us);
        assert!((get.p99_us - 990.0).abs() <= 1.0, "{}", get.p99_us);
        assert!((get.max_us - 1000.0).abs() <= 1.0);
        let all = LatencySummary::of(&first.all());
        assert_eq!(all.count, 1001);
        assert!((all.max_us - 5000.0).abs() <= 5.0);
        assert_eq!(all.percentiles.last().unwrap().0, 100.0);
    }
}
