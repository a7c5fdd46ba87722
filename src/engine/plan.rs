//! The plan: everything a run will do, computed with no side effects from the config, the
//! migration files and the live state of every adapter. It is printed as is by `plan` and
//! `--dry-run`, shown before a typed confirmation, and computed again once the lock is held
//! so a run never executes a plan other than the one shown.

use sha2::{Digest, Sha256};

use super::error::EngineError;
use crate::adapters::database::DatabaseState;
use crate::config::{Pipeline, Step};
use crate::place::{Message, Place};
use crate::run::context::Context;
use crate::run::plan::{
    DatabasePlan, MigrationForecast, PendingMigration, Plan, PlanScratch, PlannedStep,
    PlatformPlan, RehearsalPlan,
};
use crate::steps;

/// Computes the plan. Errors are problems that would make the run fail: nothing is touched.
pub(crate) async fn build(
    ctx: &Context,
    pipeline: &Pipeline,
    rollback_target: Option<&crate::run::plan::RollbackTarget>,
) -> Result<Plan, EngineError> {
    let database = ctx
        .database
        .state()
        .await
        .map_err(|e| EngineError::Plan(format!("cannot read the database: {e}")))?;
    let mut platform = ctx
        .platform
        .state()
        .await
        .map_err(|e| EngineError::Plan(format!("cannot read the platform state: {e}")))?;
    if pipeline.steps.iter().any(|s| {
        matches!(
            s.with,
            crate::config::pipeline::StepWith::Release(_)
                | crate::config::pipeline::StepWith::Traffic(_)
        )
    }) && ctx.platform.code_actions().traffic.is_ok()
    {
        platform.code = ctx
            .platform
            .code()
            .await
            .map_err(|e| EngineError::Plan(format!("cannot read the platform's code: {e}")))?;
    }
    let mut problems: Vec<Message> = check_history(ctx, &database)
        .into_iter()
        .map(Message::plain)
        .collect();
    if let Some(crate::run::plan::RollbackTarget::Version(Some(v))) = rollback_target
        && let Some(unknown) = unknown_version(ctx, &database, *v)
    {
        problems.push(Message::plain(unknown));
    }
    if rollback_target.is_none()
        && pipeline
            .steps
            .iter()
            .any(|s| matches!(s.with, crate::config::pipeline::StepWith::Migrate(_)))
        && let Some(gone) = vanished(ctx)
    {
        problems.push(Message::plain(gone));
    }
    let mut drift_warning = None;
    let drifted =
        if ctx.drift == crate::config::deploy_file::DriftPolicy::Off || database.dirty.is_some() {
            Ok(None)
        } else {
            super::drift::compare(ctx, database.version()).await
        };
    match drifted {
        Ok(Some((recorded, differences))) if !differences.is_empty() => {
            let text = format!(
                "the schema has drifted from the one run {} recorded at version {} ({}): {}; `cutover migrate diff -e {env}` shows it, `cutover migrate accept-drift -e {env} --reason \"...\"` accepts it as it is",
                recorded.run_id,
                database
                    .version()
                    .map_or_else(|| "none".to_owned(), |v| v.to_string()),
                recorded.at.format("%Y-%m-%d %H:%M UTC"),
                crate::units::summarise(
                    &super::drift::describe(&differences),
                    "`cutover migrate diff` lists them all"
                ),
                env = ctx.environment
            );
            // Only a run that would build on the schema (migrations, SQL) is refused: a
            // way back (rollback, restore) or a backup is never blocked by drift, it is
            // said.
            let builds_on_it = pipeline.steps.iter().any(|s| {
                matches!(
                    s.with,
                    crate::config::pipeline::StepWith::Migrate(_)
                        | crate::config::pipeline::StepWith::Sql(_)
                )
            });
            if ctx.drift == crate::config::deploy_file::DriftPolicy::Refuse
                && rollback_target.is_none()
                && builds_on_it
            {
                problems.push(Message::plain(format!("{text}, or set `drift: warn`")));
            } else {
                drift_warning = Some(Message::plain(text));
            }
        }
        Ok(_) => {}
        // The comparison is a safeguard, not a step: when it cannot be made, the plan
        // says so and claims nothing.
        Err(e) => {
            drift_warning = Some(Message::plain(format!("drift was not checked: {e}")));
        }
    }
    if let Some(crate::run::plan::RollbackTarget::Backup(id)) = rollback_target {
        match ctx.store.manifest(id).await {
            Ok(m) if m.database_kind != ctx.database.kind() => {
                problems.push(Message::plain(format!(
                    "backup {id} is a {} dump; this environment's database is {}",
                    m.database_kind,
                    ctx.database.kind()
                )));
            }
            Ok(_) => {}
            Err(e) => problems.push(Message::plain(format!(
                "cannot restore backup {id}: {e} (see `cutover backup list`)"
            ))),
        }
    }
    let mut scratch = PlanScratch {
        database: &database,
        platform: &platform,
        version: database.version(),
        backup_before: false,
        maintenance: platform.maintenance,
        replicas: platform.replicas.clone(),
        first_replicas: std::collections::BTreeMap::new(),
        target_version: None,
        rollback_target,
        warnings: drift_warning.into_iter().collect(),
        rollback_methods: std::collections::BTreeMap::new(),
        reverts: Vec::new(),
        code: platform.code.clone(),
    };
    let mut planned = Vec::with_capacity(pipeline.steps.len());
    for (index, step) in pipeline.steps.iter().enumerate() {
        let skipped = step
            .when
            .as_ref()
            .filter(|w| !w.allows(&ctx.environment))
            .map(|_| format!("`when` excludes environment `{}`", ctx.environment));
        let mut entry = PlannedStep {
            index,
            id: step.id.clone(),
            uses: step.kind().name().to_owned(),
            summary: String::new(),
            undo: None,
            skipped,
            preview: crate::run::plan::StepPreview::default(),
            reverts: Vec::new(),
        };
        if entry.skipped.is_none()
            && let Some(why) = unsupported_on(
                ctx.database.kind(),
                &step.with,
                matches!(
                    rollback_target,
                    Some(crate::run::plan::RollbackTarget::Backup(_))
                ),
            )
        {
            problems.push(step_problem(pipeline, step, &why));
        } else if entry.skipped.is_none() {
            match steps::plan(ctx, step, &mut scratch).await {
                Ok((summary, undo)) => {
                    entry.summary = summary;
                    entry.undo = undo;
                    entry.reverts = std::mem::take(&mut scratch.reverts);
                }
                Err(e) => problems.push(step_problem(pipeline, step, &e)),
            }
        }
        planned.push(entry);
    }
    if rollback_target.is_none() {
        // Lint findings on the migrations this run applies.
        let versions: Vec<i64> = pending(ctx, &database, scratch.target_version)
            .iter()
            .map(|p| p.version)
            .collect();
        let (errors, warnings) = crate::migrate::lint::plan_messages(
            ctx.database.kind(),
            ctx.database.lint_level(),
            &ctx.migrations,
            &versions,
            &ctx.base_dir,
        );
        problems.extend(errors);
        scratch.warnings.extend(warnings);
    }
    if rollback_target.is_none() {
        problems.extend(code_order(ctx, pipeline, &database, scratch.target_version));
    }
    if !problems.is_empty() {
        return Err(EngineError::Problems(problems));
    }
    // Going down (rollback, migrate down, restore) applies nothing.
    let going_down = match rollback_target {
        Some(crate::run::plan::RollbackTarget::Backup(_)) => true,
        Some(crate::run::plan::RollbackTarget::Version(v)) => {
            database.version().is_some_and(|c| v.is_none_or(|v| v < c))
        }
        None => false,
    };
    let pending = if going_down {
        Vec::new()
    } else {
        pending(ctx, &database, scratch.target_version)
    };
    let warnings = scratch.warnings;
    let target_version = scratch.target_version;
    let rehearsal = rehearsal_plan(
        ctx,
        &planned,
        &pending,
        &scratch.rollback_methods,
        going_down,
    );
    let mut plan = Plan {
        format: 1,
        project: ctx.project.clone(),
        environment: ctx.environment.clone(),
        pipeline: pipeline.name.clone(),
        database: DatabasePlan {
            kind: ctx.database.kind().to_owned(),
            target: ctx.database.describe(),
            exists: database.exists,
            current_version: database.version(),
            applied: database.applied.len(),
            pending,
            target_version,
        },
        platform: PlatformPlan {
            kind: ctx.platform.kind().to_owned(),
            description: ctx.platform.describe(),
            state: platform,
        },
        backups: ctx.store.describe(),
        health: ctx
            .health()
            .ok()
            .flatten()
            .map(|h| ctx.redactor.redact(&h.url)),
        steps: planned,
        warnings,
        rehearsal,
        digest: String::new(),
    };
    plan.digest = digest(&plan, &database);
    Ok(plan)
}

/// The order of code and schema, safe by construction: the new code gets traffic only
/// after the migrations it needs are applied, so a `traffic` step before a `migrate` step
/// is refused; and a migration marked `-- cutover:contract` (it removes what the old code
/// still uses) cannot be applied by a run that also moves the traffic, because the old
/// code serves until the traffic has moved: it waits for a later release.
fn code_order(
    ctx: &Context,
    pipeline: &Pipeline,
    database: &DatabaseState,
    target: Option<i64>,
) -> Vec<Message> {
    use crate::config::pipeline::StepWith;
    let runs = |s: &&Step| s.when.as_ref().is_none_or(|w| w.allows(&ctx.environment));
    let Some(traffic) = pipeline
        .steps
        .iter()
        .filter(runs)
        .find(|s| matches!(s.with, StepWith::Traffic(_)))
    else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let traffic_at = pipeline.steps.iter().position(|s| s.id == traffic.id);
    for (i, step) in pipeline.steps.iter().enumerate().filter(|(_, s)| runs(s)) {
        if matches!(step.with, StepWith::Migrate(_)) && Some(i) > traffic_at {
            problems.push(step_problem(
                pipeline,
                step,
                &format!(
                    "step `{}` sends traffic to the new code before this step applies its migrations: the new code would run on the old schema; move `{}` before `{}`",
                    traffic.id, step.id, traffic.id
                ),
            ));
        }
    }
    for p in pending(ctx, database, target) {
        if ctx.migrations.get(p.version).is_some_and(|m| m.contract) {
            problems.push(step_problem(
                pipeline,
                traffic,
                &format!(
                    "migration {} {} is marked `contract`: the old code, which serves until this step has moved the traffic, may still need what it removes; apply it in a later release (`migrate` with `to:` below {} here)",
                    p.version, p.description, p.version
                ),
            ));
        }
    }
    problems
}

/// The rehearsal's part of the plan, from `ctx.rehearsal`.
fn rehearsal_plan(
    ctx: &Context,
    steps: &[PlannedStep],
    pending: &[PendingMigration],
    methods: &std::collections::BTreeMap<i64, String>,
    going_down: bool,
) -> RehearsalPlan {
    use crate::rehearsal_record::Standing;
    let current = ctx.rehearsal.current();
    let (status, summary) = match &ctx.rehearsal {
        Standing::Current(r) => (
            "current",
            format!(
                "rehearsed {} on a copy of {} (copy {} ms, whole rehearsal {} ms)",
                r.at.format("%Y-%m-%d %H:%M UTC"),
                r.source,
                r.copy_ms,
                r.total_ms
            ),
        ),
        Standing::Off => (
            "off",
            "off for this environment (`rehearse: off`): migration times and rollback methods are unproven".to_owned(),
        ),
        Standing::None => (
            "none",
            "not rehearsed: migration times and rollback methods are unproven (`deploy` rehearses first; `cutover rehearse` rehearses alone)".to_owned(),
        ),
        Standing::Stale { reason } => (
            "stale",
            format!("stale: {reason}; `deploy` rehearses again first"),
        ),
    };
    let migrations = pending
        .iter()
        .map(|p| {
            let rehearsed = current.and_then(|r| {
                r.migrations
                    .iter()
                    .find(|m| m.version == p.version && m.checksum == p.checksum)
            });
            MigrationForecast {
                version: p.version,
                rehearsed_ms: rehearsed.map(|m| m.up_ms),
                down: rehearsed.map(|m| m.down.clone()),
                rollback: methods.get(&p.version).cloned(),
            }
        })
        .collect();
    RehearsalPlan {
        status: status.to_owned(),
        summary,
        migrations,
        not_rehearsed: current.map(|r| r.not_rehearsed.clone()).unwrap_or_default(),
        window: (!going_down).then(|| super::forecast::forecast(ctx, steps, pending, current)),
    }
}

/// Why a step cannot run on this kind of database, if it cannot: cutover has no SQL
/// Server driver, so on `azure-sql` only the team's own migrator changes the schema (a
/// `migrate` step restoring a backup, for `rollback --backup`, needs no driver).
fn unsupported_on(
    kind: &str,
    with: &crate::config::pipeline::StepWith,
    restoring: bool,
) -> Option<String> {
    use crate::config::pipeline::StepWith;
    if kind != "azure-sql" {
        return None;
    }
    match with {
        StepWith::Migrate(m) if !m.is_external() && !restoring => Some(
            "`migrate` on an `azure-sql` database needs `tool: command` (an EF Core bundle, say): cutover has no SQL Server driver for its own migrations (a `migrate` step only restores backups there, for `cutover rollback --backup`)".into(),
        ),
        StepWith::Validate(_) | StepWith::Sql(_) => Some(format!(
            "`{}` steps cannot run on an `azure-sql` database: cutover has no SQL Server driver (run sqlcmd in a `command` step instead)",
            if matches!(with, StepWith::Sql(_)) { "sql" } else { "validate" }
        )),
        _ => None,
    }
}

/// A step the plan cannot run, named with the line of the pipeline file that defines it.
fn step_problem(pipeline: &Pipeline, step: &Step, why: &dyn std::fmt::Display) -> Message {
    let file = pipeline.path.display().to_string();
    let text = format!("step `{}` ({file}:{}): {why}", step.id, step.line);
    Message::about(
        Place {
            file,
            line: step.line,
            column: None,
        },
        text,
    )
}

/// Applied migrations must still match their files, and none may be half-applied.
pub(crate) fn check_history(ctx: &Context, database: &DatabaseState) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(v) = database.dirty {
        problems.push(format!(
            "migration {v} failed part-way and is recorded as dirty in _sqlx_migrations; look at the schema, then either finish it by hand and run `cutover migrate resolve {v} --as applied`, or undo what it did and run `cutover migrate resolve {v} --as reverted`"
        ));
    }
    for applied in &database.applied {
        match ctx.migrations.get(applied.version) {
            None => problems.push(format!(
                "migration {} is applied to the database but its file is missing from {}",
                applied.version,
                ctx.migrations.dir.display()
            )),
            Some(file) if file.checksum != applied.checksum => problems.push(format!(
                "{} was edited after it was applied (checksum mismatch); restore the original file and put the change in a new migration (or, for a comment or whitespace edit, `cutover migrate repair {}` accepts it)",
                file.up_path.display(),
                file.version
            )),
            Some(_) => {}
        }
    }
    problems
}

/// Migrations that would be applied to reach `target` (all when `None`).
pub(crate) fn pending(
    ctx: &Context,
    database: &DatabaseState,
    target: Option<i64>,
) -> Vec<PendingMigration> {
    let applied: std::collections::HashSet<i64> =
        database.applied.iter().map(|m| m.version).collect();
    ctx.migrations
        .migrations
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .filter(|m| target.is_none_or(|t| m.version <= t))
        .map(|m| PendingMigration {
            version: m.version,
            description: m.description.clone(),
            reversible: m.reversible(),
            checksum: m.checksum_hex(),
            preview: crate::run::plan::MigrationPreview::default(),
        })
        .collect()
}

fn digest(plan: &Plan, database: &DatabaseState) -> String {
    let mut hasher = Sha256::new();
    let steps: Vec<_> = plan
        .steps
        .iter()
        .map(|s| (&s.id, &s.uses, &s.summary, &s.undo, &s.skipped))
        .collect();
    let applied: Vec<_> = database
        .applied
        .iter()
        .map(|m| (m.version, hex::encode(&m.checksum)))
        .collect();
    let key = serde_json::json!({
        "environment": plan.environment,
        "pipeline": plan.pipeline,
        "applied": applied,
        "pending": plan.database.pending,
        "platform": plan.platform.state,
        "steps": steps,
    });
    let text = key.to_string();
    hasher.update(text.as_bytes());
    hex::encode(&hasher.finalize()[..12])
}

/// Lists how two plans differ, for the "plan changed" error.
pub(crate) fn differences(shown: &Plan, now: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    if shown.database.current_version != now.database.current_version {
        out.push(format!(
            "schema version was {:?}, is now {:?}",
            shown.database.current_version, now.database.current_version
        ));
    }
    if shown.database.pending != now.database.pending {
        out.push(format!(
            "pending migrations were [{}], are now [{}]",
            list(&shown.database.pending),
            list(&now.database.pending)
        ));
    }
    if shown.platform.state != now.platform.state {
        out.push(format!(
            "platform state was {:?}, is now {:?}",
            shown.platform.state, now.platform.state
        ));
    }
    if out.is_empty() {
        out.push("the steps or their actions changed".into());
    }
    out
}

fn list(pending: &[PendingMigration]) -> String {
    pending
        .iter()
        .map(|p| p.version.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A database file that is gone after a run of this environment succeeded on it was moved
/// or deleted: migrating a new, empty one in its place would look like a first deploy.
/// Only with a journal of this machine: a shared one (`lock: { kind: azure-blob }`) holds
/// runs of other runners, whose files this one cannot see.
fn vanished(ctx: &Context) -> Option<String> {
    if ctx.shared.is_some() {
        return None;
    }
    let file = ctx.database.missing_file()?;
    let run = crate::engine::journal::all_runs(&ctx.state_dir)
        .unwrap_or_default()
        .into_iter()
        .rev()
        .find(|r| {
            r.environment() == Some(ctx.environment.as_str())
                && r.status() == Some(crate::engine::journal::RunStatus::Succeeded)
        })?;
    Some(format!(
        "the database file {} does not exist, but run {} deployed to it: was it moved or deleted? Restore it (`cutover backup list`, then `cutover backup restore`), or set `create: true` on the database to start again from an empty one",
        file.display(),
        run.run_id()
    ))
}

/// A version to go back to must be one this project has (a file, or a row of the history):
/// a typo in it (a digit short) would otherwise take back every migration above it.
fn unknown_version(ctx: &Context, database: &DatabaseState, version: i64) -> Option<String> {
    if ctx.migrations.get(version).is_some()
        || database.applied.iter().any(|a| a.version == version)
    {
        return None;
    }
    let known: Vec<String> = ctx
        .migrations
        .migrations
        .iter()
        .map(|m| m.version)
        .chain(database.applied.iter().map(|a| a.version))
        .map(|v| v.to_string())
        .collect();
    Some(format!(
        "version {version} is not a migration of this project (`cutover migrate status` lists them; `--to 0` goes back to an empty schema){}",
        crate::suggest::did_you_mean(&version.to_string(), known.iter().map(String::as_str))
    ))
}
