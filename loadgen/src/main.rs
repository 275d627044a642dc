use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use corecache_loadgen::options::RunArgs;
use corecache_loadgen::results::{Report, write_hdr_log};
use corecache_loadgen::runner::{self, Progress};

#[derive(Parser)]
#[command(
    name = "corecache-loadgen",
    version,
    about = "Load generator for memcached-protocol servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive a server and report latency percentiles and throughput
    Run(Box<RunArgs>),
    /// Draw latency-by-percentile SVG from JSON reports: LABEL=FILE ...
    Chart {
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value = "latency by percentile")]
        title: String,
        /// LABEL=report.json
        inputs: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Chart { output, title, inputs } => chart(&output, &title, &inputs),
    };
    if let Err(error) = result {
        eprintln!("corecache-loadgen: {error}");
        std::process::exit(1);
    }
}

fn run(args: &RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let plan = args.plan()?;
    let progress = Arc::new(Progress::default());
    let reporter = {
        let progress = progress.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut last = 0;
            while !progress.done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let now = progress.operations.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>4.0}s] {:>10} ops/s  {:>12} ops",
                    started.elapsed().as_secs_f64(),
                    now - last,
                    now
                );
                last = now;
            }
        })
    };
    let outcome = runner::run(&plan, progress.clone());
    progress.done.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    let (recorder, report) = outcome?;
    report.print_table(&mut std::io::stdout())?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        if path.as_os_str() == "-" {
            writeln!(std::io::stdout(), "{json}")?;
        } else {
            std::fs::write(path, json)?;
        }
    }
    if let Some(path) = &args.hdr_log {
        write_hdr_log(&recorder, report.seconds, path)?;
    }
    Ok(())
}

fn chart(output: &std::path::Path, title: &str, inputs: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let series = inputs
        .iter()
        .map(|input| {
            let (label, path) = input.split_once('=').ok_or("inputs are LABEL=FILE")?;
            let report: Report = serde_json::from_str(&std::fs::read_to_string(path)?)?;
            Ok::<_, Box<dyn std::error::Error>>((label.to_string(), report))
        })
        .collect::<Result<Vec<_>, _>>()?;
    corecache_loadgen::chart::draw(&series, title, output)
}
