//! The step engine: plan with no side effects, then execute under a lock with a journal
//! written ahead of every side effect and a stack of compensations that a failure unwinds.

pub(crate) mod cancel;
pub(crate) mod decide;
pub(crate) mod drift;
pub mod error;
pub(crate) mod forecast;
pub(crate) mod history_edit;
pub(crate) mod journal;
pub(crate) mod liveness;
pub mod lock;
pub(crate) mod plan;
pub(crate) mod preview;
pub(crate) mod provenance;
pub(crate) mod recover;
pub(crate) mod retention;
pub(crate) mod rollback;
pub(crate) mod run;
pub(crate) mod shared_state;
pub(crate) mod verify;
pub(crate) mod window;

pub(crate) use crate::run::context::Context;
pub use error::EngineError;
