//! `migrate` with `tool: command`: the team's own migrator (Alembic, an EF Core bundle,
//! Django, ...) instead of cutover's, with the same backup, validation, rollback and health
//! around it.
//!
//! Three commands drive it, each run with `sh -c` in the config folder with
//! `DATABASE_URL` (the environment's database URL, as configured with its references
//! resolved, taken from the database adapter) and `CUTOVER_ENVIRONMENT` exported:
//!
//! - `status` prints the current version and changes nothing. It runs at plan time, before
//!   `up` (the version to come back to) and after it (the version reached).
//! - `up` applies the migrations.
//! - `down` goes back to `{version}`, the version `status` read before `up`. The filled-in
//!   command is the step's compensation, kept in the journal; going to a named version is
//!   idempotent, so running it twice (a `recover` after a crash mid-rollback) is harmless.
//!
//! Reading the version from `status`'s standard output (standard error is ignored: that is
//! where migrators log): with `version_pattern`, the first match of that regex — its first
//! capture group if it has one, else the whole match. Without, the first
//! whitespace-separated word that, once surrounding brackets, quotes and punctuation are
//! trimmed, consists of letters, digits, `_`, `.` and `-` and contains a digit or is
//! exactly 12 hex digits (an Alembic revision id): `1a2b3c4d5e6f (head)` gives
//! `1a2b3c4d5e6f`, `Current version: 20240101120000` gives `20240101120000`,
//! `20240101120000_AddUsers` is taken whole. Output with only whitespace means "no version
//! yet" (a database the migrator has not run on), and `{version}` then stands for
//! `base_version`. Output in which no version is found is an error, never "no version":
//! reading a version wrongly as none would make the undo go all the way down. A version
//! may only contain letters, digits and `_ . : + -`, since it is pasted into a shell
//! command.

use std::time::Duration;

use regex::Regex;

use super::RunState;
use crate::config::pipeline::{MigrateRollback, MigrateWith};
use crate::place::Message;
use crate::run::compensation::Compensation;
use crate::run::context::Context;
use crate::run::error::StepError;
use crate::run::event::Event;
use crate::run::plan::PlanScratch;
use crate::shell::ShellOutput;

/// How long `status` may take: it only reads, so a longer wait means it is stuck (an
/// unreachable database, a prompt).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(120);

/// Lines of standard error shown when a command fails.
const TAIL_LINES: usize = 20;

/// Output lines of one command reported as step notes.
const MAX_NOTES: usize = 500;

/// Reads the version from the standard output of `status` (see the module docs for the
/// rule). `Ok(None)`: it printed nothing, so the migrator has not run on this database.
pub fn extract_version(stdout: &str, pattern: Option<&Regex>) -> Result<Option<String>, String> {
    if stdout.trim().is_empty() {
        return Ok(None);
    }
    let found = match pattern {
        Some(re) => re.captures(stdout).map(|c| {
            c.get(1)
                .or_else(|| c.get(0))
                .map_or("", |m| m.as_str())
                .trim()
                .to_owned()
        }),
        None => stdout
            .split_whitespace()
            .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
            .find(|w| looks_like_version(w))
            .map(str::to_owned),
    };
    let shown = tail(stdout, 5);
    match found {
        None => Err(match pattern {
            Some(re) => format!(
                "`version_pattern` {} matches nothing in the output of `status`:\n{shown}",
                re.as_str()
            ),
            None => format!(
                "no version found in the output of `status` (a word with a digit, or a 12-digit hex revision id); set `version_pattern` to a regex that finds it:\n{shown}"
            ),
        }),
        Some(v) if v.is_empty() => Err(format!(
            "`version_pattern` matched an empty version in the output of `status`:\n{shown}"
        )),
        Some(v) if !crate::shell::is_safe_version(&v) => Err(format!(
            "version `{v}` read from `status` may only contain letters, digits and `_ . : + -` (it is put into the `down` command); adjust `version_pattern`"
        )),
        Some(v) => Ok(Some(v)),
    }
}

fn looks_like_version(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && (word.chars().any(|c| c.is_ascii_digit())
            || (word.len() == 12 && word.chars().all(|c| c.is_ascii_hexdigit())))
}

/// The last `n` non-empty lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `down` with `{version}` filled in: the version before the run, or `base_version` when
/// there was none.
pub fn fill_down(down: &str, version: Option<&str>, base: Option<&str>) -> Result<String, String> {
    let version = version.or(base).ok_or_else(|| {
        "`status` printed no version (the migrator has not run on this database yet), so `{version}` in `down` has nothing to stand for: set `base_version` (Alembic: `base`, EF Core: `0`) or use `rollback: restore` after a `backup` step".to_owned()
    })?;
    Ok(down.replace("{version}", version))
}

/// The environment's database URL, registered with the redactor before any command sees it.
fn database_url(ctx: &Context) -> String {
    let url = ctx.database.connection_url();
    ctx.redactor.register(url.expose());
    url.expose().to_owned()
}

/// Runs one of the migrator's commands; a failure carries the tail of its standard error
/// (or, when that is empty, of its output), redacted.
async fn shell(ctx: &Context, command: &str) -> Result<ShellOutput, String> {
    let url = database_url(ctx);
    let output = crate::shell::run(
        command,
        &ctx.base_dir,
        &[
            ("DATABASE_URL", url.as_str()),
            ("CUTOVER_ENVIRONMENT", ctx.environment.as_str()),
        ],
    )
    .await
    .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    if output.status.success() {
        return Ok(output);
    }
    let shown = if output.stderr.trim().is_empty() {
        tail(&output.stdout, TAIL_LINES)
    } else {
        tail(&output.stderr, TAIL_LINES)
    };
    Err(ctx.redactor.redact(&format!(
        "`{command}` failed ({}){}",
        output.status,
        if shown.is_empty() {
            String::new()
        } else {
            format!(":\n{shown}")
        }
    )))
}

fn pattern(with: &MigrateWith) -> Result<Option<Regex>, String> {
    with.version_pattern
        .as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| format!("invalid `version_pattern`: {e}"))
}

/// Runs `status` and reads the version from it.
async fn read_version(ctx: &Context, with: &MigrateWith) -> Result<Option<String>, String> {
    let status = with.status.as_deref().unwrap_or_default();
    let output = tokio::time::timeout(STATUS_TIMEOUT, shell(ctx, status))
        .await
        .map_err(|_| {
            format!(
                "`{status}` did not finish within {}",
                humantime::format_duration(STATUS_TIMEOUT)
            )
        })??;
    extract_version(&output.stdout, pattern(with)?.as_ref())
        .map_err(|e| ctx.redactor.redact(&format!("`{status}`: {e}")))
}

fn show(version: Option<&str>) -> String {
    version.map_or_else(|| "no version yet".to_owned(), str::to_owned)
}

/// What undoes the step.
enum Undo {
    /// Run this command (`down` filled in).
    Down(String),
    /// Restore the backup taken earlier in the run.
    Restore,
    None,
}

fn choose_undo(
    with: &MigrateWith,
    version: Option<&str>,
    backup_before: bool,
) -> Result<Undo, String> {
    let restore = |why: &str| {
        if backup_before {
            Ok(Undo::Restore)
        } else {
            Err(why.to_owned())
        }
    };
    let down = || {
        let down = with.down.as_deref().ok_or_else(|| {
            "`rollback: down` needs a `down` command, e.g. `alembic downgrade {version}`".to_owned()
        })?;
        fill_down(down, version, with.base_version.as_deref()).map(Undo::Down)
    };
    match with.rollback.unwrap_or_default() {
        MigrateRollback::None => Ok(Undo::None),
        MigrateRollback::Down => down(),
        MigrateRollback::Restore => {
            restore("`rollback: restore` needs a `backup` step earlier in the pipeline")
        }
        MigrateRollback::Auto if with.down.is_some() => down(),
        MigrateRollback::Auto => restore(
            "there is no `down` command and no `backup` step runs before this one, so a failure after it could not be undone; add `down:` (e.g. `alembic downgrade {version}`) or a `backup` step",
        ),
    }
}

pub async fn plan(
    ctx: &Context,
    with: &MigrateWith,
    scratch: &mut PlanScratch<'_>,
) -> Result<(String, Option<String>), String> {
    if scratch.rollback_target.is_some() {
        return Err(
            "`cutover rollback --to/--backup` goes back with cutover's own migrations or a backup; a `tool: command` step cannot aim at that target"
                .into(),
        );
    }
    let version = read_version(ctx, with).await?;
    let undo = choose_undo(with, version.as_deref(), scratch.backup_before)?;
    let up = with.up.as_deref().unwrap_or_default();
    let undo = match undo {
        Undo::Down(run) => Some(format!("`{run}`")),
        Undo::Restore => Some("restore the backup taken before it".to_owned()),
        Undo::None => {
            scratch.warnings.push(Message::plain(format!(
                "`rollback: none`: if a later step fails, what `{up}` changed stays applied"
            )));
            None
        }
    };
    Ok((
        format!(
            "external migrator: at {}; will run `{up}`",
            show(version.as_deref())
        ),
        undo,
    ))
}

pub async fn prepare(
    ctx: &Context,
    with: &MigrateWith,
    state: &RunState,
) -> Result<Option<Compensation>, StepError> {
    let version = read_version(ctx, with).await.map_err(StepError::Failed)?;
    Ok(
        match choose_undo(with, version.as_deref(), state.backup.is_some())
            .map_err(StepError::Failed)?
        {
            Undo::Down(run) => Some(Compensation::ExternalDown { run }),
            Undo::Restore => state
                .backup
                .clone()
                .map(|backup| Compensation::RestoreBackup {
                    backup,
                    snapshot: None,
                }),
            Undo::None => None,
        },
    )
}

/// Reports each output line of a command as a note.
fn notes(ctx: &Context, id: &str, text: &str) {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in lines.iter().take(MAX_NOTES) {
        ctx.note(id, *line);
    }
    if lines.len() > MAX_NOTES {
        ctx.note(id, format!("({} more lines)", lines.len() - MAX_NOTES));
    }
}

pub async fn run(ctx: &Context, id: &str, with: &MigrateWith) -> Result<String, StepError> {
    let up = with.up.as_deref().unwrap_or_default();
    let warn_after = with.warn_after();
    let start = tokio::time::Instant::now();
    let work = shell(ctx, up);
    tokio::pin!(work);
    let mut next = warn_after;
    let output = loop {
        tokio::select! {
            out = &mut work => break out.map_err(StepError::Failed)?,
            () = tokio::time::sleep_until(start + next) => {
                ctx.report(Event::Warning {
                    message: format!(
                        "`{up}` still running after {}: a migration may be waiting for a lock or rewriting a big table",
                        humantime::format_duration(Duration::from_secs(start.elapsed().as_secs()))
                    ),
                });
                next += warn_after;
            }
        }
    };
    notes(ctx, id, &output.stdout);
    notes(ctx, id, &output.stderr);
    let now = read_version(ctx, with)
        .await
        .map_err(|e| StepError::Failed(format!("`{up}` succeeded, but then {e}")))?;
    Ok(format!("`{up}` succeeded; now at {}", show(now.as_deref())))
}

/// The compensation: runs `down` as filled in before the step ran.
pub async fn down(ctx: &Context, id: &str, run: &str) -> Result<String, StepError> {
    let output = shell(ctx, run).await.map_err(StepError::Failed)?;
    notes(ctx, id, &output.stdout);
    notes(ctx, id, &output.stderr);
    Ok(format!("`{run}` ran"))
}
