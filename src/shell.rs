//! Running `sh -c` commands (platform actions, `command` steps, external migrators).
//!
//! Each shell runs in its own process group. If the future running it is dropped — the
//! step timed out or the run was cancelled — the whole group is killed, so nothing the
//! command started keeps changing the system while the rollback runs.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

/// What a finished command printed.
pub struct ShellOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ShellOutput {
    /// The last lines of stderr then stdout, for error messages.
    pub fn tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.stderr.lines().chain(self.stdout.lines()).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Runs `sh -c command` in `dir` with extra environment variables.
pub async fn run(command: &str, dir: &Path, env: &[(&str, &str)]) -> std::io::Result<ShellOutput> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let mut group = KillGroupOnDrop(child.id());
    let output = child.wait_with_output().await?;
    group.0 = None;
    Ok(ShellOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Kills a process group unless disarmed (set to `None`) once the command has finished.
struct KillGroupOnDrop(Option<u32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let pid = self
            .0
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pgid) = pid {
            // Already gone is fine: the group ended on its own.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}
