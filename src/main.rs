//! The `lake` binary: parse the command line, run it, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

// Parsing an export and running DataFusion allocate many small objects: under glibc's malloc
// an import spent about 29% of its CPU samples in malloc and free (perf). datafusion-cli uses
// mimalloc for the same reason.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = lake::cli::Cli::parse();
    let json = cli.global.log_format == lake::cli::LogFormat::Json;
    let default = if json {
        "off,lake=info"
    } else {
        "off,lake=warn"
    };
    let mut filter =
        EnvFilter::try_from_env("LAKE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // rspotify logs request headers, bearer tokens included, at debug level: never let it.
    for quiet in ["rspotify=off", "rspotify_http=off"] {
        filter = filter.add_directive(quiet.parse().expect("a valid directive"));
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lake::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", render(&err));
            match err.downcast_ref::<lake::commands::Exit>() {
                Some(exit) => ExitCode::from(exit.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// The error chain on one line, each cause once: an error either says its cause in its own
/// message or exposes it as its source, never both.
fn render(err: &anyhow::Error) -> String {
    format!("{err:#}")
}

/// `lake query ... | head` closes the pipe early; that is not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
