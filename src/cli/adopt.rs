//! `migrate baseline` and `migrate repair`: adopting a database whose schema is already
//! there, and accepting a harmless edit of an applied migration's file. Both edit only the
//! history table, under the lock, journaled with who did it and why.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha384};

use super::Global;
use super::exit::Exit;
use super::session::Session;
use crate::engine::history_edit::journaled;
use crate::engine::{EngineError, cancel};
use crate::fact::Fact;
use crate::migrate::MigrationFile;
use crate::migrate::equivalence::{Comparison, compare};

fn plan_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Plan(e.to_string())
}

pub(crate) async fn baseline(
    global: &Global,
    version: i64,
    reason: Option<String>,
) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let ctx = session.context(cancel::on_signals())?;
    if ctx.migrations.get(version).is_none() {
        let known = ctx
            .migrations
            .migrations
            .iter()
            .map(|m| m.version.to_string());
        return Err(plan_err(format!(
            "version {version} is not a migration of this project (`cutover migrate status` lists them){}",
            crate::suggest::did_you_mean(
                &version.to_string(),
                known.collect::<Vec<_>>().iter().map(String::as_str)
            )
        )));
    }
    let state = ctx.database.state().await.map_err(plan_err)?;
    if !state.applied.is_empty() {
        return Err(plan_err(format!(
            "the migration history of {} already holds {} migration(s); a baseline adopts a database with none (`cutover migrate status` shows them)",
            ctx.database.describe(),
            state.applied.len()
        )));
    }
    if ctx
        .database
        .schema()
        .await
        .map_err(plan_err)?
        .trim()
        .is_empty()
    {
        return Err(plan_err(format!(
            "{} has no schema objects: there is nothing to adopt; `cutover deploy` applies the migrations",
            ctx.database.describe()
        )));
    }
    let files: Vec<&MigrationFile> = ctx
        .migrations
        .migrations
        .iter()
        .filter(|m| m.version <= version)
        .collect();
    let fact = Fact::MigrationsBaselined {
        version,
        versions: files.iter().map(|m| m.version).collect(),
        reason: reason.clone(),
    };
    let run_id = journaled(&ctx, "migrate baseline", fact, async {
        ctx.database.baseline(&files).await.map_err(plan_err)
    })
    .await?;
    let later = ctx.migrations.migrations.len() - files.len();
    session.result(
        &json!({"baseline": version, "recorded": files.iter().map(|m| m.version).collect::<Vec<_>>(), "run_id": run_id}),
        &format!(
            "{} migration(s) up to {version} recorded as applied, without running them (run {run_id}); {}",
            files.len(),
            if later == 0 {
                "no migration comes after it".to_owned()
            } else {
                format!("the next deploy applies the {later} after it")
            }
        ),
    );
    Ok(Exit::Ok)
}

/// What was found about one edited migration.
struct Edited<'a> {
    file: &'a MigrationFile,
    recorded: Vec<u8>,
    /// How the edit was shown harmless, or why it could not be.
    verdict: Result<String, String>,
}

pub(crate) async fn repair(
    global: &Global,
    version: Option<i64>,
    force: bool,
    reason: Option<String>,
) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let ctx = session.context(cancel::on_signals())?;
    let state = ctx.database.state().await.map_err(plan_err)?;
    let mut edited = Vec::new();
    for applied in &state.applied {
        if version.is_some_and(|v| v != applied.version) {
            continue;
        }
        let Some(file) = ctx.migrations.get(applied.version) else {
            continue;
        };
        if file.checksum == applied.checksum {
            continue;
        }
        let verdict = match applied_text(&ctx.base_dir, &file.up_path, &applied.checksum) {
            None => Err("the applied text is not in this folder's git history, so the edit cannot be shown harmless".to_owned()),
            Some((commit, old)) => match compare(ctx.database.kind(), &old, &file.up_sql) {
                Comparison::Same => Ok(format!(
                    "same statements as the applied text (git {commit}); only comments, whitespace or case changed"
                )),
                Comparison::Differs { at, old, new } => Err(format!(
                    "statement {at} changed since it was applied (git {commit}): `{old}` is now `{new}`"
                )),
                Comparison::Unparsable(e) => Err(format!("{e}, so the edit cannot be shown harmless")),
            },
        };
        edited.push(Edited {
            file,
            recorded: applied.checksum.clone(),
            verdict,
        });
    }
    if edited.is_empty() {
        return Err(plan_err(match version {
            Some(v) if state.applied.iter().any(|a| a.version == v) => {
                format!("migration {v}'s file matches its recorded checksum: nothing to repair")
            }
            Some(v) => format!(
                "migration {v} is not applied (`cutover migrate status` lists them): nothing to repair"
            ),
            None => "every applied migration matches its file: nothing to repair".to_owned(),
        }));
    }
    let refused: Vec<String> = edited
        .iter()
        .filter_map(|e| {
            e.verdict
                .as_ref()
                .err()
                .map(|why| format!("{}: {why}", e.file.version))
        })
        .collect();
    if !refused.is_empty() && !force {
        return Err(plan_err(format!(
            "nothing repaired: {}; put the change in a new migration and restore the file, or accept it with `--force --reason \"...\"` (journaled)",
            refused.join("; ")
        )));
    }
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for e in &edited {
        let how = match &e.verdict {
            Ok(how) => how.clone(),
            Err(why) => format!(
                "forced: {why}; reason: {}",
                reason.as_deref().unwrap_or_default()
            ),
        };
        let fact = Fact::ChecksumAccepted {
            version: e.file.version,
            old_checksum: hex::encode(&e.recorded),
            new_checksum: e.file.checksum_hex(),
            how: how.clone(),
        };
        let run_id = journaled(&ctx, "migrate repair", fact, async {
            match ctx
                .database
                .accept_checksum(e.file.version, &e.file.checksum)
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => Err(plan_err(format!(
                    "migration {} is no longer recorded as applied; nothing repaired",
                    e.file.version
                ))),
                Err(err) => Err(plan_err(err)),
            }
        })
        .await?;
        lines.push(format!(
            "{}: checksum accepted ({how}); run {run_id}",
            e.file.version
        ));
        rows.push(json!({"version": e.file.version, "how": how, "run_id": run_id}));
    }
    session.result(&json!({"repaired": rows}), &lines.join("\n"));
    Ok(Exit::Ok)
}

/// The text `path` had when its SHA-384 was `checksum`, from the git history of the folder
/// it is in, with the commit (short) it was found in: the newest 200 commits that touched
/// it are searched. None when git, the repository or such a version is missing.
fn applied_text(base_dir: &Path, path: &Path, checksum: &[u8]) -> Option<(String, String)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(base_dir);
    let name = path.file_name()?.to_str()?;
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    };
    let log = git(&["log", "-n", "200", "--format=%h", "--", name])?;
    for commit in String::from_utf8_lossy(&log).lines() {
        let Some(text) = git(&["show", &format!("{commit}:./{name}")]) else {
            continue;
        };
        if Sha384::digest(&text).as_slice() == checksum {
            return Some((
                commit.to_owned(),
                String::from_utf8_lossy(&text).into_owned(),
            ));
        }
    }
    None
}
