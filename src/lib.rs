//! cutover runs production releases as a YAML pipeline of steps — maintenance on, jobs
//! scaled down, backup, migrations, validation, traffic back, health — and rolls back
//! whatever already happened when any step fails.
//!
//! The library never prints: it reports through a `Reporter`. Only the CLI and the output
//! sinks in `report` write to the terminal.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod adapters;
pub mod app;
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub mod cli;
pub mod config;
pub mod engine;
pub mod fact;
pub mod fingerprint;
pub mod migrate;
pub mod notify;
pub mod place;
pub mod rehearsal;
pub mod rehearsal_record;
pub mod report;
pub mod run;
pub mod secret;
pub mod shell;
pub mod steps;
pub mod units;
