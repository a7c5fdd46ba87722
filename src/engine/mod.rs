//! The step engine: plan with no side effects, then execute under a lock with a journal
//! written ahead of every side effect and a stack of compensations that a failure unwinds.

pub mod cancel;
pub mod decide;
pub mod error;
pub mod forecast;
pub mod journal;
pub mod liveness;
pub mod lock;
pub mod plan;
pub mod preview;
pub mod recover;
pub mod rollback;
pub mod run;
pub mod shared_state;
pub mod verify;
pub mod window;

pub use crate::run::context::Context;
pub use crate::run::error::StepError;
pub use error::EngineError;
