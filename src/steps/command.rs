//! `command`: run a shell command (an EF Core bundle, Alembic, a seed script), with an
//! optional undo command run on rollback.

use crate::config::pipeline::CommandWith;
use crate::engine::context::Context;
use crate::engine::error::StepError;

pub fn plan(with: &CommandWith) -> (String, Option<String>) {
    (
        format!("run `{}`", with.run),
        with.undo.as_ref().map(|u| format!("run `{u}`")),
    )
}

pub async fn run(ctx: &Context, id: &str, with: &CommandWith) -> Result<String, StepError> {
    let output = run_shell(ctx, &with.run).await?;
    for line in output.lines().filter(|l| !l.trim().is_empty()).take(50) {
        ctx.note(id, line);
    }
    Ok(format!("`{}` succeeded", with.run))
}

/// Runs `sh -c command` in the config folder; returns stdout, or an error with the tail of
/// the output. The child is killed if the step is cancelled or times out.
pub async fn run_shell(ctx: &Context, command: &str) -> Result<String, StepError> {
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(&ctx.base_dir)
        .env("CUTOVER_ENVIRONMENT", &ctx.environment)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| StepError::Failed(format!("cannot run `{command}`: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().chain(stdout.lines()).collect();
    let tail = tail[tail.len().saturating_sub(10)..].join("\n");
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
