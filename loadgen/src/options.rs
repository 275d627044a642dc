//! The command line of `corecache-loadgen run`, validated into a Plan.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use thiserror::Error;

use crate::keys::{KeyFormat, KeyPattern};
use crate::protocol::{Codec, Protocol};
use crate::schedule::Arrivals;
use crate::workload::{Mix, ValueSize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PatternName {
    Uniform,
    Zipf,
    Sequential,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ArrivalName {
    Poisson,
    Even,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Server address
    #[arg(short = 's', long, default_value = "127.0.0.1:11211")]
    pub server: SocketAddr,
    /// Drive a cluster instead: seeds host:port,... asked for `cluster
    /// nodes` (plain memcached servers are taken as a ketama list); each
    /// request goes to its key's node, and the report counts requests per node
    #[arg(long, value_delimiter = ',', conflicts_with = "server")]
    pub cluster: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub protocol: Protocol,
    /// CPUs to pin the load threads to, one thread each (e.g. "1" or "1,2")
    #[arg(long, default_value = "1")]
    pub cpus: String,
    /// Connections per thread
    #[arg(short = 'c', long, default_value_t = 20)]
    pub connections: usize,
    /// Requests in flight per connection (closed loop)
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Open loop: total requests per second, sent on schedule whatever the server does
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrivals: ArrivalName,
    /// Measured seconds
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring (excluded from results)
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Stop after this many measured requests instead of --duration
    #[arg(long)]
    pub requests: Option<u64>,
    /// Store every key once before the run
    #[arg(long)]
    pub prefill: bool,
    /// Operation mix weights
    #[arg(long, default_value_t = 9)]
    pub get: u32,
    #[arg(long, default_value_t = 1)]
    pub set: u32,
    #[arg(long, default_value_t = 0)]
    pub delete: u32,
    #[arg(long, default_value_t = 0)]
    pub incr: u32,
    /// Number of distinct keys
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    #[arg(long, value_enum, default_value = "uniform")]
    pub key_pattern: PatternName,
    #[arg(long, default_value_t = 0.99)]
    pub zipf_exponent: f64,
    #[arg(long, default_value = "key:")]
    pub key_prefix: String,
    /// Key length in bytes (prefix + zero-padded number)
    #[arg(long, default_value_t = 20)]
    pub key_length: usize,
    /// Value size in bytes, or a range "MIN-MAX"
    #[arg(long, default_value = "32")]
    pub value_size: String,
    /// Keys per get (1 = single-key get)
    #[arg(long, default_value_t = 1)]
    pub multiget: usize,
    /// TTL of stored items in seconds (0 = none)
    #[arg(long, default_value_t = 0)]
    pub ttl: u32,
    /// Check every value a get returns against what was stored for its key
    #[arg(long)]
    pub verify: bool,
    /// Write the report as JSON to this file ("-" for stdout)
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write HdrHistogram interval logs to this file
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Error, PartialEq)]
pub enum OptionsError {
    #[error("--cpus '{0}': expected CPU numbers like 1 or 1,2")]
    Cpus(String),
    #[error("--value-size '{0}': expected a size or MIN-MAX")]
    ValueSize(String),
    #[error("the operation mix is empty: give --get, --set, --delete or --incr a weight")]
    EmptyMix,
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("--rate must be positive")]
    Rate,
    #[error("--cluster '{0}': expected host:port[:weight]")]
    Cluster(String),
}

/// Where the load goes.
#[derive(Clone, Debug)]
pub enum Servers {
    One(SocketAddr),
    /// Seeds of a cluster, or a ketama list.
    Cluster(Vec<String>),
}

/// A validated run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub servers: Servers,
    pub cpus: Vec<usize>,
    pub connections: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    pub arrivals: Arrivals,
    pub duration: Duration,
    pub warmup: Duration,
    pub requests: Option<u64>,
    pub prefill: bool,
    pub mix: Mix,
    pub keys: u64,
    pub pattern: KeyPattern,
    pub multiget: usize,
    pub codec: Codec,
    pub seed: u64,
}

impl Plan {
    pub fn total_connections(&self) -> usize {
        self.cpus.len() * self.connections
    }
}

impl RunArgs {
    pub fn plan(&self) -> Result<Plan, OptionsError> {
        let cpus = self
            .cpus
            .split(',')
            .map(|cpu| cpu.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| OptionsError::Cpus(self.cpus.clone()))?;
        let values = match self.value_size.split_once('-') {
            Some((min, max)) => (min.parse(), max.parse()),
            None => (self.value_size.parse(), self.value_size.parse()),
        };
        let (Ok(min), Ok(max)) = values else {
            return Err(OptionsError::ValueSize(self.value_size.clone()));
        };
        if min > max {
            return Err(OptionsError::ValueSize(self.value_size.clone()));
        }
        let mix = Mix {
            get: self.get,
            set: self.set,
            delete: self.delete,
            incr: self.incr,
        };
        if mix.get + mix.set + mix.delete + mix.incr == 0 {
            return Err(OptionsError::EmptyMix);
        }
        for (name, value) in [
            ("--connections", self.connections as u64),
            ("--pipeline", self.pipeline as u64),
            ("--keys", self.keys),
            ("--multiget", self.multiget as u64),
        ] {
            if value == 0 {
                return Err(OptionsError::Zero(name));
            }
        }
        if self.rate.is_some_and(|rate| rate.is_nan() || rate <= 0.0) {
            return Err(OptionsError::Rate);
        }
        let pattern = match self.key_pattern {
            PatternName::Uniform => KeyPattern::Uniform,
            PatternName::Zipf => KeyPattern::Zipf(self.zipf_exponent),
            PatternName::Sequential => KeyPattern::Sequential,
        };
        let servers = if self.cluster.is_empty() {
            Servers::One(self.server)
        } else {
            for seed in &self.cluster {
                corecache_client::topology::parse_address(seed).map_err(|_| OptionsError::Cluster(seed.clone()))?;
            }
            Servers::Cluster(self.cluster.clone())
        };
        Ok(Plan {
            servers,
            cpus,
            connections: self.connections,
            pipeline: self.pipeline,
            rate: self.rate,
            arrivals: match self.arrivals {
                ArrivalName::Poisson => Arrivals::Poisson,
                ArrivalName::Even => Arrivals::Even,
            },
            duration: Duration::from_secs_f64(self.duration.max(0.0)),
            warmup: Duration::from_secs_f64(self.warmup.max(0.0)),
            requests: self.requests,
            prefill: self.prefill,
            mix,
            keys: self.keys,
            pattern,
            multiget: self.multiget,
            codec: Codec {
                protocol: self.protocol,
                keys: KeyFormat {
                    prefix: self.key_prefix.clone(),
                    length: self.key_length,
                },
                counter_keys: KeyFormat {
                    prefix: format!("{}n:", self.key_prefix),
                    length: self.key_length + 2,
                },
                values: ValueSize { min, max },
                ttl: self.ttl,
                verify: self.verify,
            },
            seed: self.seed,
        })
    }
}
