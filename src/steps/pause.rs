//! `pause`: the run waits for a person's approval. The engine asks at a terminal (continue
//! or roll back, within the step's timeout); without one the run halts here for
//! `cutover resume --approve --by NAME`. The step itself only passes once approved.

use super::RunState;
use crate::config::pipeline::PauseWith;
use crate::run::error::StepError;

pub(crate) fn plan(with: &PauseWith) -> (String, Option<String>) {
    (
        format!(
            "wait for a person's approval{}: at a terminal continue or roll back (no answer in {}: roll back); without one the run halts for `cutover resume --approve --by NAME`",
            with.message
                .as_ref()
                .map_or_else(String::new, |m| format!(" ({m})")),
            humantime::format_duration(with.timeout())
        ),
        None,
    )
}

pub(crate) fn run(with: &PauseWith, state: &mut RunState) -> Result<String, StepError> {
    match state.approved.take() {
        Some(by) => Ok(format!("approved by {by}")),
        None => Err(StepError::AwaitingApproval(
            with.message
                .clone()
                .unwrap_or_else(|| "a person's approval".into()),
        )),
    }
}
