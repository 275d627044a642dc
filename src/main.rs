use clap::Parser;

use corecache::config::Args;

fn main() {
    let args = Args::parse();
    let config = match args.validate() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("corecache: {error}");
            std::process::exit(64);
        }
    };
    let level = match config.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .init();
    for option in &config.ignored_options {
        tracing::warn!("ignoring unknown -o option '{option}'");
    }
    tracing::info!(
        "listening on port {} with {} cores {:?}, {} MB",
        config.port,
        config.threads(),
        config.cores,
        config.memory_limit >> 20
    );
    if let Err(error) = corecache::server::run(config) {
        eprintln!("corecache: {error}");
        std::process::exit(71);
    }
}
