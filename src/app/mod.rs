//! The use cases above the engine: building a run's context from the config (the
//! composition root), the checks every run passes before it starts, and the pipelines
//! the one-off commands run.

pub mod build;
pub mod builtin;
pub mod fleet;
pub mod guard;
pub mod outcome;
