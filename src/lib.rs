//! cutover runs production releases as a YAML pipeline of steps — maintenance on, jobs
//! scaled down, backup, migrations, validation, traffic back, health — and rolls back
//! whatever already happened when any step fails.
//!
//! The library never prints: it reports through a `Reporter`. Only the CLI and the output
//! sinks in `report` write to the terminal.
#![deny(clippy::print_stdout, clippy::print_stderr)]
#![warn(unreachable_pub)]

pub mod adapters;
pub(crate) mod app;
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub mod cli;
pub mod config;
pub mod engine;
pub(crate) mod fact;
pub(crate) mod fingerprint;
pub(crate) mod migrate;
pub(crate) mod notify;
pub(crate) mod place;
pub(crate) mod rehearsal;
pub(crate) mod rehearsal_record;
pub(crate) mod report;
pub(crate) mod run;
pub mod secret;
pub(crate) mod shell;
pub mod steps;
pub(crate) mod suggest;
pub(crate) mod units;
pub(crate) mod waiting;
