//! The run's vocabulary, below the steps and the engine: the context a run works with,
//! the events its reporters receive, a step's error, the compensations that undo steps,
//! and the plan's data. No I/O here.

pub(crate) mod compensation;
pub(crate) mod context;
pub(crate) mod error;
pub(crate) mod event;
pub(crate) mod plan;
pub(crate) mod window;
