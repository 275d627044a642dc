use clap::Parser;

use corecache::config::{Args, Config};
use corecache::host;

/// `corecache check-host [--fixes] [server flags]`: the host check for the
/// layout those flags describe. Exit status 0 when the host is ready.
fn check_host(config: &Config, fixes: bool) -> ! {
    let checks = host::check_host(&config.host_layout());
    if fixes {
        for check in checks.iter().filter(|c| c.matters && c.verdict == host::Verdict::Change) {
            if let Some(fix) = &check.fix {
                println!("{fix}");
            }
        }
        std::process::exit(0);
    }
    print!("{}", host::render(&checks));
    std::process::exit(if host::is_ready(&checks) { 0 } else { 1 });
}

fn main() {
    let mut argv: Vec<String> = std::env::args().collect();
    let checking = argv.get(1).map(String::as_str) == Some("check-host");
    let fixes = argv.iter().any(|arg| arg == "--fixes");
    if checking {
        argv.remove(1);
        argv.retain(|arg| arg != "--fixes");
    }
    let config = match Args::parse_from(argv).validate() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("corecache: {error}");
            std::process::exit(64);
        }
    };
    if checking {
        check_host(&config, fixes);
    }
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
    // Warn about what hurts this layout (the full report: corecache check-host).
    for check in host::check_host(&config.host_layout()) {
        if check.matters && check.verdict == host::Verdict::Change {
            tracing::warn!(
                "host: {} is {} (recommended {})",
                check.name,
                check.current,
                check.recommended
            );
        }
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
