//! Running `sh -c` commands (platform actions, `command` steps, external migrators).
//!
//! Each shell runs in its own process group, under a supervisor that is cutover's own
//! binary (`cutover __supervise -- sh -c CMD`, see [`supervise`]). The group is killed
//!
//! - when the future running it is dropped (the step timed out, the run was cancelled),
//!   so nothing the command started keeps changing the system while the rollback runs;
//! - when cutover dies for any reason, kill -9 included: the supervisor watches a pipe
//!   whose only writer is cutover, and the kernel closes it when cutover dies.
//!
//! Why a supervisor: `unsafe` is forbidden in this crate, so there is no `pre_exec` to set
//! `PR_SET_PDEATHSIG`; and a parent-death signal fires when the *thread* that forked
//! exits, which a tokio worker may do at any time. A pipe's end-of-file is delivered on
//! every kind of death and needs no privilege or external tool.
//!
//! Each group started inside [`watched`] is announced (its id and its leader's start
//! time) so the engine journals it before anything else happens, and `recover` can make
//! sure no process of a dead run still runs before it undoes that run's steps.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// What a finished command printed.
pub(crate) struct ShellOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ShellOutput {
    /// The last lines of stderr then stdout, for error messages.
    pub(crate) fn tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.stderr.lines().chain(self.stdout.lines()).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A process group [`run`] started: the group id (the supervisor's pid) and the leader's
/// start time in clock ticks after boot (`/proc/PID/stat` field 22), which tells a
/// recycled pid apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spawned {
    pub pgid: u32,
    pub start_time: Option<u64>,
}

tokio::task_local! {
    static SPAWNED: tokio::sync::mpsc::UnboundedSender<Spawned>;
}

/// Runs `work`, sending every process group [`run`] starts inside it to `to`.
pub(crate) async fn watched<F: Future>(
    to: tokio::sync::mpsc::UnboundedSender<Spawned>,
    work: F,
) -> F::Output {
    SPAWNED.scope(to, work).await
}

/// The hidden subcommand that runs [`supervise`].
pub(crate) const SUPERVISE: &str = "__supervise";

/// Runs `sh -c command` in `dir` with extra environment variables.
pub(crate) async fn run(
    command: &str,
    dir: &Path,
    env: &[(&str, &str)],
) -> std::io::Result<ShellOutput> {
    let mut child = tokio::process::Command::new(own_binary()?)
        .arg(SUPERVISE)
        .arg("--")
        .arg("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .envs(env.iter().copied())
        // The supervisor's watch pipe; the command itself gets /dev/null.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let mut group = KillGroupOnDrop(child.id());
    // Held until the command is done: closing it tells the supervisor to kill the group.
    let watch = child.stdin.take();
    if let Some(pgid) = child.id() {
        let spawned = Spawned {
            pgid,
            start_time: start_time(pgid),
        };
        // Outside `watched` (plan-time reads) nobody listens, and nothing needs to.
        let _ = SPAWNED.try_with(|to| to.send(spawned));
    }
    let output = child.wait_with_output().await?;
    drop(watch);
    group.0 = None;
    Ok(ShellOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// This very binary. On Linux `/proc/self/exe` still opens it after it was replaced or
/// deleted on disk (an upgrade during a run), where its path would not.
fn own_binary() -> std::io::Result<std::path::PathBuf> {
    if cfg!(target_os = "linux") {
        Ok("/proc/self/exe".into())
    } else {
        std::env::current_exe()
    }
}

/// Kills a process group unless disarmed (set to `None`) once the command has finished.
struct KillGroupOnDrop(Option<u32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(pid) {
            // Already gone is fine: the group ended on its own.
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
    }
}

fn pid(id: u32) -> Option<Pid> {
    i32::try_from(id).ok().and_then(Pid::from_raw)
}

/// Why the supervisor could not run its command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SuperviseError {
    #[error("`{SUPERVISE}` must lead its own process group (cutover starts it so)")]
    NotGroupLeader,
    #[error("`{SUPERVISE}` needs a command to run")]
    NoCommand,
    #[error("cannot run `{}`: {source}", program.to_string_lossy())]
    Spawn {
        program: OsString,
        #[source]
        source: std::io::Error,
    },
}

/// The supervisor (`cutover __supervise -- PROGRAM ARGS...`): runs the program with
/// /dev/null as its standard input and this process's standard output and error, in this
/// process's group, and returns its exit status (a signal that killed it is raised again
/// on this process, or reported as 128 + the signal). When this process's standard
/// input reaches end-of-file (cutover closed the pipe, or died), it SIGKILLs the whole
/// group, itself included.
pub(crate) fn supervise(argv: &[OsString]) -> Result<ExitStatus, SuperviseError> {
    let me = rustix::process::getpid();
    if rustix::process::getpgrp() != me {
        return Err(SuperviseError::NotGroupLeader);
    }
    let (program, args) = argv.split_first().ok_or(SuperviseError::NoCommand)?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| SuperviseError::Spawn {
            program: program.clone(),
            source,
        })?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 64];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() != std::io::ErrorKind::Interrupted => break,
                _ => {}
            }
        }
        let _ = rustix::process::kill_process_group(me, Signal::KILL);
    });
    child.wait().map_err(|source| SuperviseError::Spawn {
        program: program.clone(),
        source,
    })
}

/// Ends this process the way `status` says its command ended.
pub(crate) fn exit_like(status: ExitStatus) -> std::process::ExitCode {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return u8::try_from(code).map_or(std::process::ExitCode::FAILURE, Into::into);
    }
    let signal = status.signal().unwrap_or(0);
    if let Some(sig) = Signal::from_named_raw(signal) {
        let _ = rustix::process::kill_process(rustix::process::getpid(), sig);
    }
    // Still here: the signal is ignored in this process (SIGPIPE is, in Rust programs).
    u8::try_from(128 + signal).map_or(std::process::ExitCode::FAILURE, Into::into)
}

/// The start time of process `pid` in clock ticks after boot (`/proc/PID/stat` field
/// 22), where there is a `/proc`.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = stat(pid)?;
    stat.get(19)?.parse().ok()
}

/// `/proc/PID/stat` from field 3 (the state) on: field 2, the name, may hold spaces and
/// parentheses, so the fields start after the last `)`.
fn stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether process group `spawned` is still running (zombies, which no longer run, do not
/// count). A leader with another start time means the pid was recycled: a group id stays
/// taken while its group has members, so the recorded group is gone.
pub(crate) fn group_alive(spawned: Spawned) -> std::io::Result<bool> {
    if let (Some(then), Some(now)) = (spawned.start_time, start_time(spawned.pgid))
        && then != now
    {
        return Ok(false);
    }
    let Some(pgid) = pid(spawned.pgid) else {
        return Ok(false);
    };
    match rustix::process::test_kill_process_group(pgid) {
        Ok(()) => {}
        Err(rustix::io::Errno::SRCH) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    Ok(match running_members(spawned.pgid) {
        Some(members) => members > 0,
        // No /proc to tell zombies apart: the signal test is all there is.
        None => true,
    })
}

/// How many processes of group `pgid` are not zombies, from `/proc`.
fn running_members(pgid: u32) -> Option<usize> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let wanted = pgid.to_string();
    Some(
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(stat)
            // Field 3 is the state, field 5 the group.
            .filter(|f| {
                f.get(2) == Some(&wanted)
                    && !matches!(f.first().map(String::as_str), Some("Z" | "X" | "x"))
            })
            .count(),
    )
}

/// Kills process group `spawned` if it still runs and waits, at most `wait`, until no
/// process of it runs. `Ok(true)`: it was running and is now gone; `Ok(false)`: it had
/// already ended.
pub(crate) async fn kill_group(spawned: Spawned, wait: Duration) -> std::io::Result<bool> {
    if !group_alive(spawned)? {
        return Ok(false);
    }
    if let Some(pgid) = pid(spawned.pgid) {
        match rustix::process::kill_process_group(pgid, Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = Instant::now() + wait;
    while group_alive(spawned)? {
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "process group {} still runs {} after SIGKILL",
                spawned.pgid,
                humantime::format_duration(wait)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(true)
}

/// Whether `version` can be pasted into a shell command as is.
pub(crate) fn is_safe_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 200
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '+' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_this_process() {
        let me = std::process::id();
        let t = start_time(me).expect("a /proc on Linux");
        assert_eq!(start_time(me), Some(t));
        assert!(
            group_alive(Spawned {
                pgid: rustix::process::getpgrp()
                    .as_raw_nonzero()
                    .get()
                    .unsigned_abs(),
                start_time: None,
            })
            .unwrap()
        );
    }
}
