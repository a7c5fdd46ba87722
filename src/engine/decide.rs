//! Guided failure: what a failed step leads to. The pipeline (or the step) says `rollback`,
//! `halt` or `ask`; `ask` hands the choice to a [`Decider`] — a person at a terminal, in
//! the CLI — and falls back to the pipeline's `unattended` choice when nobody can be asked,
//! so a run in CI never waits for an answer.

use async_trait::async_trait;

use super::journal::Choice;
use crate::config::pipeline::{OnFailure, Unattended};
use crate::config::{Pipeline, Step};

/// What the person deciding is shown.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub step: String,
    pub error: String,
    /// Steps that finished, in order.
    pub done: Vec<String>,
    /// What a rollback would undo, newest first.
    pub undo: Vec<String>,
    /// The step a rollback stops at, if a point of no return has passed.
    pub point_of_no_return: Option<String>,
}

/// What the person at a `pause` step is shown.
#[derive(Debug, Clone)]
pub(crate) struct Pause {
    pub step: String,
    pub message: String,
    /// Steps that finished, in order.
    pub done: Vec<String>,
    /// What a rollback would undo, newest first.
    pub undo: Vec<String>,
    /// How long the answer may take.
    pub timeout: std::time::Duration,
}

/// The answer at a `pause` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Approval {
    /// Go on; who said so.
    Continue(String),
    /// Undo the run; who said so.
    RollBack(String),
    /// Nobody answered within the timeout.
    NoAnswer,
}

/// Asks someone what to do about a failed step, or whether a paused run goes on.
#[async_trait]
pub(crate) trait Decider: Send + Sync {
    /// The choice, or `None` when nobody can be asked (no terminal).
    async fn ask(&self, failure: &Failure) -> Option<Choice>;
    /// The answer at a `pause` step, or `None` when nobody can be asked (no terminal):
    /// the run then halts for `cutover resume --approve`.
    async fn approve(&self, _pause: &Pause) -> Option<Approval> {
        None
    }
}

/// Nobody to ask: `ask` takes the pipeline's `unattended` choice.
pub(crate) struct Nobody;

#[async_trait]
impl Decider for Nobody {
    async fn ask(&self, _: &Failure) -> Option<Choice> {
        None
    }
}

/// The policy for a failed step: the step's own, else the pipeline's.
pub(crate) fn policy(pipeline: &Pipeline, step: &Step) -> OnFailure {
    step.on_failure.unwrap_or(pipeline.on_failure)
}

/// What `ask` becomes without anyone to ask.
pub(crate) fn unattended(pipeline: &Pipeline) -> Choice {
    match pipeline.unattended {
        Unattended::Rollback => Choice::Rollback,
        Unattended::Halt => Choice::Halt,
    }
}
