//! `migrate`: bring the schema to `latest`, a version, or (in `cutover rollback`) the
//! requested target. Each migration runs in its own transaction and is recorded with its
//! checksum. The undo is chosen by `rollback:` — down migrations to the prior version, or a
//! restore of the backup taken earlier in the run.
//!
//! With `tool: command` the team's own migrator does the work instead: see
//! [`super::external_migrator`].

use std::time::Duration;

use tokio::time::Instant;

use super::RunState;
use crate::adapters::database::{BatchError, Commit};
use crate::config::pipeline::{MigrateRollback, MigrateWith};
use crate::fact::Fact;
use crate::migrate::MigrationFile;
use crate::place::Message;
use crate::run::compensation::{Compensation, MigrationRef};
use crate::run::context::Context;
use crate::run::error::StepError;
use crate::run::event::Event;
use crate::run::plan::PlanScratch;
use crate::run::plan::RollbackTarget;

/// Where a migrate step is going.
enum Target {
    Version(Option<i64>),
    Backup(String),
}

fn target(
    ctx: &Context,
    with: &MigrateWith,
    rollback: Option<&RollbackTarget>,
) -> Result<Target, String> {
    let Some(to) = &with.to else {
        return Ok(Target::Version(ctx.migrations.latest()));
    };
    match to.value.as_str() {
        "latest" => Ok(Target::Version(ctx.migrations.latest())),
        "target" => match rollback {
            Some(RollbackTarget::Version(v)) => Ok(Target::Version(*v)),
            Some(RollbackTarget::Backup(id)) => Ok(Target::Backup(id.clone())),
            None => Err(
                "`to: target` is only meaningful in `cutover rollback --to V | --backup ID`".into(),
            ),
        },
        v => {
            let v: i64 = v.parse().map_err(|_| {
                format!(
                    "`to: {v}` is not a version: expected `latest`, `target` or a migration version"
                )
            })?;
            if ctx.migrations.get(v).is_none() {
                return Err(format!(
                    "`to: {v}`: no migration with that version in {}",
                    ctx.migrations.dir.display()
                ));
            }
            Ok(Target::Version(Some(v)))
        }
    }
}

fn pending<'a>(ctx: &'a Context, applied: &[i64], to: Option<i64>) -> Vec<&'a MigrationFile> {
    let applied: std::collections::HashSet<i64> = applied.iter().copied().collect();
    ctx.migrations
        .migrations
        .iter()
        .filter(|m| !applied.contains(&m.version) && to.is_some_and(|t| m.version <= t))
        .collect()
}

fn above<'a>(
    ctx: &'a Context,
    applied: &[i64],
    to: Option<i64>,
) -> Result<Vec<&'a MigrationFile>, String> {
    let mut out = Vec::new();
    let mut versions: Vec<i64> = applied
        .iter()
        .copied()
        .filter(|v| to.is_none_or(|t| *v > t))
        .collect();
    versions.sort_unstable_by(|a, b| b.cmp(a));
    for v in versions {
        let file = ctx
            .migrations
            .get(v)
            .ok_or_else(|| format!("migration {v} is applied but its file is missing"))?;
        if !file.reversible() {
            return Err(format!(
                "migration {v} has no down file ({}); it cannot be reverted",
                file.up_path
                    .with_extension("")
                    .with_extension("down.sql")
                    .display()
            ));
        }
        out.push(file);
    }
    Ok(out)
}

fn down_path(m: &MigrationFile) -> String {
    let name = m
        .up_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let down = name
        .strip_suffix(".up.sql")
        .or_else(|| name.strip_suffix(".sql"))
        .unwrap_or(&name);
    m.up_path
        .with_file_name(format!("{down}.down.sql"))
        .display()
        .to_string()
}

/// How the undo of applying `pending` is chosen, for the plan: the action, and why.
struct Undo {
    action: Option<Compensation>,
    why: Option<String>,
}

/// What the rehearsal on a copy showed of the downs of the migrations a step applies.
enum Proof {
    /// Every down gave back the exact schema and rows on the copy.
    Lossless,
    /// Some did not: one line each.
    NotLossless(Vec<String>),
    /// No current rehearsal covers them, and why.
    Unproven(String),
}

/// What the rehearsal in `ctx` proves of the downs of `pending`.
fn proof(ctx: &Context, pending: &[&MigrationFile]) -> Proof {
    use crate::rehearsal_record::Standing;
    let rehearsal = match &ctx.rehearsal {
        Standing::Current(r) => r,
        Standing::Off => {
            return Proof::Unproven(
                "rehearsal is off for this environment (`rehearse: off`), so the down files are not proven lossless".into(),
            );
        }
        Standing::None => {
            return Proof::Unproven(
                "not rehearsed, so the down files are not proven lossless".into(),
            );
        }
        Standing::Stale { reason } => {
            return Proof::Unproven(format!(
                "the last rehearsal no longer applies ({reason}), so the down files are not proven lossless"
            ));
        }
    };
    let mut not = Vec::new();
    for m in pending {
        match rehearsal
            .migrations
            .iter()
            .find(|r| r.version == m.version && r.checksum == m.checksum_hex())
        {
            None => {
                return Proof::Unproven(format!(
                    "migration {} was not rehearsed, so its down is not proven lossless",
                    m.version
                ));
            }
            Some(r) if r.down.lossless() => {}
            Some(r) => not.push(format!("{}: {}", m.version, r.down.describe())),
        }
    }
    if not.is_empty() {
        Proof::Lossless
    } else {
        Proof::NotLossless(not)
    }
}

/// Chooses the undo of applying `pending`, given how the step wants to roll back.
///
/// `auto` uses the down files only when the rehearsal on a copy proved every one of them
/// lossless: a down can run cleanly and still not give the data back (a column folded
/// into another table and out again). Otherwise it restores the backup taken before,
/// which holds the data as it was; with no backup step, it reverts with unproven down
/// files (the comparison after the rollback says whether the data came back), unless the
/// rehearsal showed one loses data.
fn choose_undo(
    mode: MigrateRollback,
    pending: &[&MigrationFile],
    backup: Option<String>,
    proof: &Proof,
) -> Result<Undo, String> {
    if pending.is_empty() {
        return Ok(Undo {
            action: None,
            why: None,
        });
    }
    let irreversible: Vec<_> = pending.iter().filter(|m| !m.reversible()).collect();
    let revert = Compensation::RevertMigrations {
        migrations: pending
            .iter()
            .map(|m| MigrationRef {
                version: m.version,
                checksum: m.checksum_hex(),
            })
            .collect(),
    };
    let no_backup =
        || "`rollback: restore` needs a `backup` step earlier in the pipeline".to_owned();
    let chosen = |action, why: String| {
        Ok(Undo {
            action: Some(action),
            why: Some(why),
        })
    };
    match mode {
        MigrateRollback::None => Ok(Undo {
            action: None,
            why: None,
        }),
        MigrateRollback::Down => match irreversible.first() {
            Some(m) => Err(format!(
                "`rollback: down` but migration {} has no down file: expected {}",
                m.version,
                down_path(m)
            )),
            None => chosen(revert, "`rollback: down`".into()),
        },
        MigrateRollback::Restore => match backup {
            Some(backup) => chosen(
                Compensation::RestoreBackup {
                    backup,
                    snapshot: None,
                },
                "`rollback: restore`".into(),
            ),
            None => Err(no_backup()),
        },
        MigrateRollback::Auto => match (proof, backup) {
            (Proof::Lossless, _) if irreversible.is_empty() => chosen(
                revert,
                "`rollback: auto`: the rehearsal on a copy proved every down lossless".into(),
            ),
            (Proof::NotLossless(not), Some(backup)) => chosen(
                Compensation::RestoreBackup {
                    backup,
                    snapshot: None,
                },
                format!(
                    "`rollback: auto`: on the rehearsal's copy not every down gave the data back ({}); the backup holds it as it was",
                    not.join("; ")
                ),
            ),
            (Proof::Unproven(why), Some(backup)) => chosen(
                Compensation::RestoreBackup {
                    backup,
                    snapshot: None,
                },
                format!("`rollback: auto`: {why}; the backup holds the data as it was"),
            ),
            (_, Some(backup)) => chosen(
                Compensation::RestoreBackup {
                    backup,
                    snapshot: None,
                },
                "`rollback: auto`: the backup holds the data as it was".into(),
            ),
            (_, None) if !irreversible.is_empty() => Err(format!(
                "migration {} has no down file ({}) and no backup step runs before it, so a failure after it could not be undone; add the down file or a `backup` step",
                irreversible[0].version,
                down_path(irreversible[0])
            )),
            (Proof::NotLossless(not), None) => Err(format!(
                "on the rehearsal's copy not every down gave the data back ({}) and no backup step runs before the migrations, so a rollback would lose data; add a `backup` step before `migrate`, or write `rollback: down` to accept it",
                not.join("; ")
            )),
            (Proof::Unproven(why), None) => chosen(
                revert,
                format!(
                    "`rollback: auto` with no backup step before it: {why}; the state is compared after the rollback"
                ),
            ),
            (Proof::Lossless, None) => unreachable!("irreversible handled above"),
        },
    }
}

/// Pending migrations numbered below the applied head (a branch merged late): refused
/// unless the environment has `out_of_order: true`. Returns a note for the plan.
fn out_of_order(
    ctx: &Context,
    pending: &[&MigrationFile],
    head: Option<i64>,
) -> Result<Option<String>, String> {
    let Some(head) = head else { return Ok(None) };
    let late: Vec<&&MigrationFile> = pending.iter().filter(|m| m.version < head).collect();
    let Some(first) = late.first() else {
        return Ok(None);
    };
    let names = late
        .iter()
        .map(|m| format!("{} {}", m.version, m.description))
        .collect::<Vec<_>>()
        .join(", ");
    if !ctx.out_of_order {
        return Err(format!(
            "migration {} is numbered below the applied head {head}: applying it would run migrations out of order ({} late: {names}); give it a version above {head}, or allow this for environment `{}` with `out_of_order: true` in deploy.yaml",
            first.version,
            late.len(),
            ctx.environment
        ));
    }
    Ok(Some(format!(
        "out of order (`out_of_order: true`): {names} below the applied head {head}"
    )))
}

pub(crate) async fn plan(
    ctx: &Context,
    with: &MigrateWith,
    scratch: &mut PlanScratch<'_>,
) -> Result<(String, Option<String>), String> {
    if with.is_external() {
        return super::external_migrator::plan(ctx, with, scratch).await;
    }
    let current = scratch.version;
    match target(ctx, with, scratch.rollback_target)? {
        Target::Backup(id) => {
            scratch.version = None;
            Ok((
                format!("restore backup {id}"),
                scratch
                    .backup_before
                    .then(|| "restore the backup taken before it".to_owned()),
            ))
        }
        Target::Version(to) => {
            let applied: Vec<i64> = scratch.database.applied.iter().map(|m| m.version).collect();
            if to.is_some_and(|t| current.is_some_and(|c| t < c))
                || to.is_none() && current.is_some()
            {
                let revert = above(ctx, &applied, to)?;
                scratch.version = to;
                scratch.target_version = to;
                return Ok((
                    format!(
                        "migrate down to {}: revert {}",
                        to.map_or_else(|| "an empty schema".into(), |t| t.to_string()),
                        revert
                            .iter()
                            .map(|m| m.version.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    current.map(|c| format!("migrate up to {c}")),
                ));
            }
            let pending = pending(ctx, &applied, to);
            scratch.version = to;
            scratch.target_version = to;
            if pending.is_empty() {
                return Ok((
                    format!(
                        "nothing to migrate (at {})",
                        current.map_or("an empty schema".into(), |c| c.to_string())
                    ),
                    None,
                ));
            }
            let late = out_of_order(ctx, &pending, current)?;
            let mode = with.rollback.unwrap_or_default();
            let backup = scratch
                .backup_before
                .then(|| "the backup taken before it".to_owned());
            let proof = proof(ctx, &pending);
            let undo = choose_undo(mode, &pending, backup, &proof)?;
            if let Some(Compensation::RevertMigrations { migrations }) = &undo.action {
                scratch.reverts = migrations.iter().map(|m| m.version).collect();
            }
            if let (MigrateRollback::Down, Proof::NotLossless(not)) = (mode, &proof) {
                scratch.warnings.push(Message::plain(format!(
                    "`rollback: down` although on the rehearsal's copy not every down gave the data back: {}",
                    not.join("; ")
                )));
            }
            let method = match &undo.action {
                Some(Compensation::RestoreBackup { .. }) => "restore the backup",
                Some(_) => "down file",
                None => "none",
            };
            for m in &pending {
                scratch
                    .rollback_methods
                    .insert(m.version, method.to_owned());
            }
            if mode == MigrateRollback::None {
                scratch.warnings.push(Message::plain(format!(
                    "`rollback: none`: if a later step fails, the {} migration(s) stay applied",
                    pending.len()
                )));
            }
            let list = crate::units::summarise(
                &pending
                    .iter()
                    .map(|m| format!("{} {}", m.version, m.description))
                    .collect::<Vec<_>>(),
                "the plan's database section lists them all",
            );
            Ok((
                format!(
                    "apply {} migration(s): {list}{}",
                    pending.len(),
                    late.map(|l| format!("; {l}")).unwrap_or_default()
                ),
                undo.action.map(|u| {
                    let what = match u {
                        Compensation::RestoreBackup { .. } => {
                            "restore the backup taken before it".to_owned()
                        }
                        other => format!("{} with the down files", other.describe()),
                    };
                    match undo.why {
                        Some(why) => format!("{what} ({why})"),
                        None => what,
                    }
                }),
            ))
        }
    }
}

pub(crate) async fn prepare(
    ctx: &Context,
    with: &MigrateWith,
    state: &mut RunState,
) -> Result<Option<Compensation>, StepError> {
    let undo = prepare_undo(ctx, with, state).await?;
    Ok(undo.map(|c| with_snapshot(c, state)))
}

/// A restore of the backup swaps in the snapshot taken with it, while there is one.
pub(crate) fn with_snapshot(undo: Compensation, state: &RunState) -> Compensation {
    match undo {
        Compensation::RestoreBackup {
            backup,
            snapshot: None,
        } => Compensation::RestoreBackup {
            backup,
            snapshot: state.snapshot.clone(),
        },
        other => other,
    }
}

async fn prepare_undo(
    ctx: &Context,
    with: &MigrateWith,
    state: &RunState,
) -> Result<Option<Compensation>, StepError> {
    if with.is_external() {
        return super::external_migrator::prepare(ctx, with, state).await;
    }
    let db = ctx.database.state().await?;
    let applied: Vec<i64> = db.applied.iter().map(|m| m.version).collect();
    let current = db.version();
    let rollback_target = state.rollback_target.as_ref();
    match target(ctx, with, rollback_target).map_err(StepError::Failed)? {
        Target::Backup(_) => Ok(state
            .backup
            .clone()
            .map(|backup| Compensation::RestoreBackup {
                backup,
                snapshot: None,
            })),
        Target::Version(to) => {
            if to.is_some_and(|t| current.is_some_and(|c| t < c))
                || to.is_none() && current.is_some()
            {
                return Ok(current.map(|c| Compensation::MigrateUp { to: c }));
            }
            let pending = pending(ctx, &applied, to);
            out_of_order(ctx, &pending, current).map_err(StepError::Failed)?;
            choose_undo(
                with.rollback.unwrap_or_default(),
                &pending,
                state.backup.clone(),
                &proof(ctx, &pending),
            )
            .map(|undo| undo.action)
            .map_err(StepError::Failed)
        }
    }
}

pub(crate) async fn run(
    ctx: &Context,
    id: &str,
    with: &MigrateWith,
    state: &RunState,
) -> Result<String, StepError> {
    if with.is_external() {
        return super::external_migrator::run(ctx, id, with).await;
    }
    match target(ctx, with, state.rollback_target.as_ref()).map_err(StepError::Failed)? {
        Target::Backup(backup) => super::backup::restore(ctx, id, &backup).await,
        Target::Version(to) => {
            let current = ctx.database.state().await?.version();
            if to.is_some_and(|t| current.is_some_and(|c| t < c))
                || to.is_none() && current.is_some()
            {
                down_to(ctx, id, to).await
            } else {
                match to {
                    Some(to) => apply_up_to(ctx, id, to, with.warn_after()).await,
                    None => Ok("no migrations".into()),
                }
            }
        }
    }
}

/// Applies one migration, reporting it each time it passes `warn_after` while it runs.
async fn apply_watched(
    ctx: &Context,
    batch: &[&MigrationFile],
    commit: Commit,
    warn_after: Duration,
) -> Result<Vec<Duration>, BatchError> {
    let start = Instant::now();
    let apply = ctx.database.apply_batch(batch, commit);
    tokio::pin!(apply);
    let mut next = warn_after;
    let what = match batch {
        [m] => format!("migration {} {}", m.version, m.description),
        [first, .., last] => format!(
            "one of migrations {}..{} ({} sent together)",
            first.version,
            last.version,
            batch.len()
        ),
        [] => return Ok(Vec::new()),
    };
    loop {
        tokio::select! {
            took = &mut apply => return took,
            () = tokio::time::sleep_until(start + next) => {
                ctx.report(Event::Warning {
                    message: format!(
                        "{what} still running after {}: it may be waiting for a lock or rewriting a big table",
                        humantime::format_duration(Duration::from_secs(start.elapsed().as_secs()))
                    ),
                });
                next += warn_after;
            }
        }
    }
}

/// Applies every pending migration up to `to`, whether or not the run was cancelled: it is
/// also the undo of a migrate-down, which the rollback of a cancelled run must carry out.
pub(crate) async fn up_to(
    ctx: &Context,
    id: &str,
    to: i64,
    warn_after: Duration,
) -> Result<String, StepError> {
    up_to_unless(ctx, id, to, warn_after, None).await
}

/// The `migrate` step: applies pending migrations up to `to`, starting none after the run
/// was cancelled.
async fn apply_up_to(
    ctx: &Context,
    id: &str,
    to: i64,
    warn_after: Duration,
) -> Result<String, StepError> {
    up_to_unless(ctx, id, to, warn_after, Some(&ctx.cancel)).await
}

async fn up_to_unless(
    ctx: &Context,
    id: &str,
    to: i64,
    warn_after: Duration,
    cancel: Option<&tokio_util::sync::CancellationToken>,
) -> Result<String, StepError> {
    let db = ctx.database.state().await?;
    let applied: Vec<i64> = db.applied.iter().map(|m| m.version).collect();
    let pending = pending(ctx, &applied, Some(to));
    if pending.is_empty() {
        return Ok(format!(
            "nothing to migrate (at {})",
            db.version()
                .map_or("an empty schema".into(), |v| v.to_string())
        ));
    }
    let applied_note = |m: &MigrationFile, took: Duration| {
        ctx.fact(
            id,
            Fact::MigrationApplied {
                version: m.version,
                description: m.description.clone(),
                checksum: m.checksum_hex(),
                took_ms: crate::units::ms(took),
            },
        );
    };
    let mut done = 0;
    for batch in pending.chunks(ctx.database.batch_size().max(1)) {
        if cancel.is_some_and(tokio_util::sync::CancellationToken::is_cancelled) {
            return Err(StepError::Cancelled);
        }
        done += batch.len();
        // Only the step's last commit waits for the disk; it makes the others durable too.
        let commit = if done == pending.len() {
            Commit::Durable
        } else {
            Commit::Deferred
        };
        match apply_watched(ctx, batch, commit, warn_after).await {
            Ok(took) => {
                for (m, took) in batch.iter().zip(took) {
                    applied_note(m, took);
                }
            }
            Err(BatchError { took, error }) => {
                for (m, took) in batch.iter().zip(took) {
                    applied_note(m, took);
                }
                return Err(error.into());
            }
        }
    }
    Ok(format!(
        "applied {} migration(s); schema at {to}",
        pending.len()
    ))
}

/// Reverts `revert` in order, in batches, reporting each migration reverted; stops at the
/// first that fails.
async fn revert_files(ctx: &Context, id: &str, revert: &[&MigrationFile]) -> Result<(), StepError> {
    for batch in revert.chunks(ctx.database.batch_size().max(1)) {
        let failed = ctx.database.revert_batch(batch).await.err();
        let reverted = failed.as_ref().map_or(batch.len(), |f| f.took.len());
        for m in &batch[..reverted] {
            ctx.fact(
                id,
                Fact::MigrationReverted {
                    version: m.version,
                    description: m.description.clone(),
                },
            );
        }
        if let Some(BatchError { error, .. }) = failed {
            return Err(error.into());
        }
    }
    Ok(())
}

/// Reverts every applied migration above `to`, newest first.
pub(crate) async fn down_to(ctx: &Context, id: &str, to: Option<i64>) -> Result<String, StepError> {
    let db = ctx.database.state().await?;
    let applied: Vec<i64> = db.applied.iter().map(|m| m.version).collect();
    let revert = above(ctx, &applied, to).map_err(StepError::Failed)?;
    revert_files(ctx, id, &revert).await?;
    let at = to.map_or_else(|| "an empty schema".into(), |t| t.to_string());
    Ok(if revert.is_empty() {
        format!("nothing to revert (at {at})")
    } else {
        format!("reverted {} migration(s); schema at {at}", revert.len())
    })
}

/// Reverts exactly `migrations` (listed in the order they were applied), newest first,
/// skipping those not applied. One applied with another checksum is not this run's: it
/// stops the undo rather than revert someone else's migration. One recorded as unfinished
/// (dirty) is the one this run failed part-way (the plan refuses to start on a dirty
/// history): a migration outside a transaction leaves what its earlier statements did, so
/// its down file runs too, and removes the record.
pub(crate) async fn revert_exactly(
    ctx: &Context,
    id: &str,
    migrations: &[MigrationRef],
) -> Result<String, StepError> {
    let db = ctx.database.state().await?;
    let mut revert = Vec::new();
    // sqlx lists a dirty migration with the applied ones.
    for m in migrations.iter().rev() {
        let Some(applied) = db.applied.iter().find(|a| a.version == m.version) else {
            continue;
        };
        if hex::encode(&applied.checksum) != m.checksum {
            return Err(StepError::Failed(format!(
                "migration {} is applied with another checksum than the one this run applied; it is not this run's to revert",
                m.version
            )));
        }
        let file = ctx.migrations.get(m.version).ok_or_else(|| {
            StepError::Failed(format!(
                "migration {} is applied but its file is missing; it cannot be reverted",
                m.version
            ))
        })?;
        if !file.reversible() {
            return Err(StepError::Failed(format!(
                "migration {} has no down file ({}); it cannot be reverted",
                m.version,
                down_path(file)
            )));
        }
        revert.push(file);
    }
    revert_files(ctx, id, &revert).await?;
    Ok(if revert.is_empty() {
        "nothing to revert: none of the run's migrations is applied".to_owned()
    } else {
        format!(
            "reverted {} migration(s): {}",
            revert.len(),
            crate::units::summarise(
                &revert
                    .iter()
                    .map(|m| m.version.to_string())
                    .collect::<Vec<_>>(),
                "`cutover migrate status` shows each",
            )
        )
    })
}
