//! The run's vocabulary, below the steps and the engine: the context a run works with,
//! the events its reporters receive, a step's error, the compensations that undo steps,
//! and the plan's data. No I/O here.

pub mod compensation;
pub mod context;
pub mod error;
pub mod event;
pub mod plan;
pub mod window;
