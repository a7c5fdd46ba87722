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
/// the output. The shell runs in its own process group; if the step is cancelled or times
/// out, the whole group is killed, so nothing the command started keeps running during
/// the rollback.
pub async fn run_shell(ctx: &Context, command: &str) -> Result<String, StepError> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(&ctx.base_dir)
        .env("CUTOVER_ENVIRONMENT", &ctx.environment)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| StepError::Failed(format!("cannot run `{command}`: {e}")))?;
    let mut group = KillGroupOnDrop(child.id());
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| StepError::Failed(format!("cannot run `{command}`: {e}")))?;
    group.0 = None;
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

/// Kills a process group unless disarmed (set to `None`) once the command has finished.
struct KillGroupOnDrop(Option<u32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // `unsafe` is forbidden here, so no kill(2); the shell's `kill` takes a group.
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("kill -9 -{pgid} 2>/dev/null"))
                .stdin(std::process::Stdio::null())
                .status();
        }
    }
}
