//! `command`: run a shell command (an EF Core bundle, Alembic, a seed script), with an
//! optional undo command run on rollback.

use crate::config::pipeline::CommandWith;
use crate::run::context::Context;
use crate::run::error::StepError;

pub(crate) fn plan(with: &CommandWith) -> (String, Option<String>) {
    (
        format!("run `{}`", with.run),
        // cutover cannot see what a command changed, so its undo runs whenever the step
        // ran; the plan says so, and the comparison after a rollback checks the database.
        with.undo.as_ref().map(|u| {
            format!("run `{u}` (unconditional: whether or not the command changed anything)")
        }),
    )
}

pub(crate) async fn run(ctx: &Context, id: &str, with: &CommandWith) -> Result<String, StepError> {
    let output = run_shell(ctx, &with.run).await?;
    for line in output.lines().filter(|l| !l.trim().is_empty()).take(50) {
        ctx.note(id, line);
    }
    Ok(format!("`{}` succeeded", with.run))
}

/// Runs `sh -c command` in the config folder; returns stdout, or an error with the tail of
/// the output. A timeout or cancellation kills everything the command started.
pub(crate) async fn run_shell(ctx: &Context, command: &str) -> Result<String, StepError> {
    let output = crate::shell::run(
        command,
        &ctx.base_dir,
        &[("CUTOVER_ENVIRONMENT", ctx.environment.as_str())],
    )
    .await
    .map_err(|e| StepError::Failed(format!("cannot run `{command}`: {e}")))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let tail = output.tail(10);
    Err(StepError::Failed(format!(
        "`{command}` failed ({}){}",
        output.status,
        if tail.is_empty() {
            String::new()
        } else {
            format!(":\n{tail}")
        }
    )))
}
