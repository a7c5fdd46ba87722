//! The use cases above the engine: building a run's context from the config (the
//! composition root), the checks every run passes before it starts, and the pipelines
//! the one-off commands run.

pub(crate) mod build;
pub(crate) mod builtin;
pub(crate) mod fleet;
pub(crate) mod guard;
pub(crate) mod outcome;
