use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cutover::cli::Cli::parse();
    if let Some(code) = cutover::cli::supervise(&cli) {
        return code;
    }
    let level = match cli.global.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(cutover::cli::log_writer)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    // On a worker thread, not this one: a worker that finds a socket ready runs the task
    // itself, where the main thread would be woken by another thread for every round trip.
    let exit = match runtime.block_on(runtime.spawn(cutover::cli::run(cli))) {
        Ok(exit) => exit,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    // Everything the run owes is written by now (journal fsynced, report out). Dropping the
    // runtime would wait without limit for stray blocking work; a release tool must exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    ExitCode::from(exit)
}
