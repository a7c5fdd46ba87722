//! Makes a rehearsal: a copy of the data in a scratch database beside the real one, then
//! on the copy the pipeline's database part in order: each pending migration one by one,
//! timed, then its down, compared with a fingerprint taken before the up (a down that does
//! not give back the exact schema and rows of the tables it touches is lossy), then the up
//! again; the `sql` steps; the validation checks.
//!
//! The production database is only read (its newest backup, or a dump streamed straight
//! into the copy); the copy is dropped on every path, and one a killed process left is
//! dropped by the next rehearsal ([`super::leftover`]).

use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::leftover::{self, Claim};
use crate::adapters::database::{Commit, Database, DatabaseState};
use crate::config::Pipeline;
use crate::config::pipeline::StepWith;
use crate::config::rehearse::RehearseConfig;
use crate::engine::error::EngineError;
use crate::engine::verify::HISTORY;
use crate::fact::Fact;
use crate::fingerprint::{Fingerprint, Scope};
use crate::migrate::MigrationFile;
use crate::rehearsal_record::{
    self as record, Down, Failure, Rehearsal, RehearsedMigration, RehearsedStep, Standing,
};
use crate::run::context::Context;
use crate::run::event::Event;
use crate::steps::backup::ScratchGuard;
use crate::units::ms;

/// One part of the pipeline the rehearsal runs on the copy.
enum Part<'a> {
    /// A `migrate` step with cutover's own migrations, up to this version.
    Migrate {
        id: &'a str,
        to: Option<i64>,
    },
    Sql {
        id: &'a str,
        sql: String,
    },
    Validate {
        id: &'a str,
        queries: Vec<crate::steps::validate::Query>,
    },
}

/// The parts of `pipeline` the rehearsal runs in this environment, and the steps it
/// leaves out with why.
fn parts<'a>(ctx: &Context, pipeline: &'a Pipeline) -> (Vec<Part<'a>>, Vec<String>) {
    let mut parts = Vec::new();
    let mut left = Vec::new();
    for step in &pipeline.steps {
        if step
            .when
            .as_ref()
            .is_some_and(|w| !w.allows(&ctx.environment))
        {
            continue;
        }
        let id = step.id.as_str();
        let database_step = matches!(
            step.with,
            StepWith::Migrate(_) | StepWith::Sql(_) | StepWith::Validate(_)
        );
        if !step.rehearse {
            if database_step {
                left.push(format!("`{id}`: `rehearse: off`"));
            }
            continue;
        }
        match &step.with {
            StepWith::Migrate(w) if w.is_external() => left.push(format!(
                "`{id}`: the team's own migrator (`tool: command`) is not run on the copy"
            )),
            StepWith::Migrate(w) => {
                let to = match w.to.as_ref().map(|t| t.value.as_str()) {
                    None | Some("latest") => ctx.migrations.latest(),
                    Some(v) => match v.parse() {
                        Ok(v) => Some(v),
                        // `to: target` belongs to `cutover rollback`, which is not rehearsed.
                        Err(_) => continue,
                    },
                };
                parts.push(Part::Migrate { id, to });
            }
            StepWith::Sql(w) => match crate::steps::sql::scripts(ctx, w) {
                Ok(mut scripts) => parts.push(Part::Sql {
                    id,
                    sql: scripts.swap_remove(0),
                }),
                Err(e) => left.push(format!("`{id}`: {e}")),
            },
            StepWith::Validate(w) => match crate::steps::validate::queries(ctx, w) {
                Ok(queries) => parts.push(Part::Validate { id, queries }),
                Err(e) => left.push(format!("`{id}`: {e}")),
            },
            _ => {}
        }
    }
    (parts, left)
}

/// Migrations not applied in `state`, up to `to`, in order.
fn pending<'a>(ctx: &'a Context, state: &DatabaseState, to: Option<i64>) -> Vec<&'a MigrationFile> {
    ctx.migrations
        .migrations
        .iter()
        .filter(|m| !state.applied.iter().any(|a| a.version == m.version))
        .filter(|m| to.is_some_and(|t| m.version <= t))
        .collect()
}

/// Whether the pipeline gives the rehearsal anything to do against `state`: pending
/// migrations or `sql` steps. Validation checks alone prove nothing new on a copy.
pub(crate) fn has_work(ctx: &Context, pipeline: &Pipeline, state: &DatabaseState) -> bool {
    parts(ctx, pipeline).0.iter().any(|p| match p {
        Part::Migrate { to, .. } => !pending(ctx, state, *to).is_empty(),
        Part::Sql { .. } => true,
        Part::Validate { .. } => false,
    })
}

/// Digest of everything a rehearsal's result depends on (see [`Rehearsal::key`]).
pub(crate) fn key(ctx: &Context, pipeline: &Pipeline, state: &DatabaseState) -> String {
    let applied: Vec<_> = state
        .applied
        .iter()
        .map(|m| (m.version, hex::encode(&m.checksum)))
        .collect();
    let migrations: Vec<_> = ctx
        .migrations
        .migrations
        .iter()
        .map(|m| {
            (
                m.version,
                m.checksum_hex(),
                m.down_sql
                    .as_ref()
                    .map(|d| hex::encode(Sha256::digest(d.as_bytes()))),
            )
        })
        .collect();
    let (parts, left) = parts(ctx, pipeline);
    let parts: Vec<_> = parts
        .iter()
        .map(|p| match p {
            Part::Migrate { id, to } => serde_json::json!({"migrate": id, "to": to}),
            Part::Sql { id, sql } => serde_json::json!({"sql": id, "text": sql}),
            Part::Validate { id, queries } => serde_json::json!({
                "validate": id,
                "queries": queries.iter().map(|q| (&q.name, &q.sql, q.max)).collect::<Vec<_>>(),
            }),
        })
        .collect();
    let text = serde_json::json!({
        "environment": ctx.environment,
        "database": ctx.database.describe(),
        "pipeline": pipeline.name,
        "applied": applied,
        "migrations": migrations,
        "parts": parts,
        "left": left,
    })
    .to_string();
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// Where the environment's stored rehearsal stands for `pipeline` against `state`.
pub(crate) fn standing(
    ctx: &Context,
    config: RehearseConfig,
    pipeline: &Pipeline,
    state: &DatabaseState,
) -> Standing {
    if !config.enabled {
        return Standing::Off;
    }
    let Some(stored) = record::load(&ctx.state_dir, &ctx.environment) else {
        return Standing::None;
    };
    if let Some(failure) = &stored.failure {
        // The data may have been fixed since: a failed result is never reused.
        return Standing::Stale {
            reason: format!("the last rehearsal failed ({failure})"),
        };
    }
    if stored.pipeline != pipeline.name {
        return Standing::Stale {
            reason: format!(
                "the last rehearsal was of pipeline `{}`, not `{}`",
                stored.pipeline, pipeline.name
            ),
        };
    }
    if stored.key != key(ctx, pipeline, state) {
        let changed: Vec<String> = stored
            .migrations
            .iter()
            .filter(|r| {
                ctx.migrations
                    .get(r.version)
                    .is_none_or(|m| m.checksum_hex() != r.checksum)
            })
            .map(|r| r.version.to_string())
            .collect();
        return Standing::Stale {
            reason: if changed.is_empty() {
                "the migrations, the pipeline or the database changed since the last rehearsal"
                    .to_owned()
            } else {
                format!(
                    "migration(s) {} changed since the last rehearsal",
                    changed.join(", ")
                )
            },
        };
    }
    let age = Utc::now() - stored.at;
    if age.to_std().unwrap_or_default() > config.max_age.get() {
        return Standing::Stale {
            reason: format!(
                "the last rehearsal ran {} ago, longer ago than `max_age` ({})",
                humantime::format_duration(Duration::from_secs(
                    age.num_seconds().max(0).unsigned_abs()
                )),
                config.max_age
            ),
        };
    }
    Standing::Current(Box::new(stored))
}

/// Where the stored rehearsal stands now, reading the database's migrations (`plan`,
/// `--dry-run`: nothing is rehearsed).
pub(crate) async fn standing_now(
    ctx: &Context,
    config: RehearseConfig,
    pipeline: &Pipeline,
) -> Standing {
    match ctx.database.state().await {
        Ok(state) => standing(ctx, config, pipeline, &state),
        Err(_) if !config.enabled => Standing::Off,
        Err(_) => Standing::None,
    }
}

/// What `deploy` does before showing its plan (after a first plan found no bad input):
/// uses the stored rehearsal when it still applies, else rehearses now when there is
/// something to rehearse. A rehearsal that found a failure stops the deploy here, before
/// the window: exit 2, nothing on production touched.
pub(crate) async fn before_deploy(
    ctx: &Context,
    config: RehearseConfig,
    pipeline: &Pipeline,
    standing: Standing,
) -> Result<Standing, EngineError> {
    let rehearsal = match standing {
        Standing::Off => return Ok(Standing::Off),
        Standing::Current(r) => r,
        Standing::None | Standing::Stale { .. } => {
            let state = ctx
                .database
                .state()
                .await
                .map_err(|e| EngineError::Plan(format!("cannot read the database: {e}")))?;
            if !has_work(ctx, pipeline, &state) || !supported(ctx.database.as_ref()) {
                return Ok(standing);
            }
            Box::new(rehearse(ctx, config, pipeline).await?)
        }
    };
    match &rehearsal.failure {
        Some(failure) => Err(stopped(&rehearsal, failure)),
        None => Ok(Standing::Current(rehearsal)),
    }
}

/// The error a failed rehearsal stops a deploy with.
pub(crate) fn stopped(rehearsal: &Rehearsal, failure: &Failure) -> EngineError {
    EngineError::RehearsalFailed(format!(
        "the rehearsal on a copy of the data ({}) failed, so the deploy stops before the window opens and nothing on production was touched:\n  {failure}\nfix it and deploy again; `cutover rehearse -e {}` rehearses without deploying",
        rehearsal.source, rehearsal.environment
    ))
}

/// Whether rehearsals can run on this kind of database.
pub(crate) fn supported(database: &dyn Database) -> bool {
    // No scratch database on Azure SQL without a driver; see the README.
    database.kind() != "azure-sql"
}

/// Rehearses `pipeline` on a copy, stores the result, and returns it (a failure on the
/// copy is in [`Rehearsal::failure`]; an error is the rehearsal itself not running).
pub(crate) async fn rehearse(
    ctx: &Context,
    config: RehearseConfig,
    pipeline: &Pipeline,
) -> Result<Rehearsal, EngineError> {
    if !supported(ctx.database.as_ref()) {
        return Err(EngineError::Plan(format!(
            "rehearsal is not available yet for {} databases: it needs a scratch database beside the real one",
            ctx.database.kind()
        )));
    }
    for line in leftover::sweep(&ctx.state_dir, &ctx.environment, ctx.database.as_ref()).await {
        ctx.report(Event::Warning { message: line });
    }
    let started = Instant::now();
    let state = ctx
        .database
        .state()
        .await
        .map_err(|e| EngineError::Plan(format!("cannot read the database: {e}")))?;
    let key = key(ctx, pipeline, &state);
    let scratch = ctx.database.scratch().await.map_err(|e| {
        EngineError::Plan(format!(
            "cannot create a scratch database to rehearse on: {e}"
        ))
    })?;
    let claim = Claim::write(&ctx.state_dir, &ctx.environment, &scratch.name);
    let guard = ScratchGuard::new(scratch);
    let work = on_copy(ctx, config, pipeline, &state, guard.database());
    let outcome = tokio::select! {
        outcome = work => Some(outcome),
        () = ctx.cancel.cancelled() => None,
    };
    let name = guard.name().to_owned();
    match guard.discard().await {
        Ok(()) => {
            if let Ok(claim) = claim {
                claim.release();
            }
        }
        Err(e) => ctx.report(Event::Warning {
            message: format!(
                "the rehearsal's copy {name} is left behind ({e}); the next rehearsal drops it"
            ),
        }),
    }
    let Some(mut rehearsal) = outcome else {
        return Err(EngineError::NotConfirmed(
            "interrupted during the rehearsal; the copy was dropped and nothing on production was touched".into(),
        ));
    };
    rehearsal.key = key;
    rehearsal.total_ms = ms(started.elapsed());
    record::save(&ctx.state_dir, &rehearsal).map_err(|e| {
        EngineError::Plan(format!(
            "cannot keep the rehearsal's result in {}: {e}",
            record::path(&ctx.state_dir, &ctx.environment).display()
        ))
    })?;
    Ok(rehearsal)
}

/// The three passes on the copy.
async fn on_copy(
    ctx: &Context,
    config: RehearseConfig,
    pipeline: &Pipeline,
    state: &DatabaseState,
    copy: &dyn Database,
) -> Rehearsal {
    let (parts, not_rehearsed) = parts(ctx, pipeline);
    let mut out = Rehearsal {
        format: record::FORMAT,
        environment: ctx.environment.clone(),
        pipeline: pipeline.name.clone(),
        key: String::new(),
        at: Utc::now(),
        source: String::new(),
        copy_ms: 0,
        migrations: Vec::new(),
        steps: Vec::new(),
        not_rehearsed,
        failure: None,
        total_ms: 0,
    };
    let copied = Instant::now();
    match make_copy(ctx, config, state, copy).await {
        Ok(source) => out.source = source,
        Err(error) => {
            out.source = "no copy".into();
            out.failure = Some(Failure {
                step: "rehearsal".into(),
                what: "making the copy".into(),
                error,
            });
            return out;
        }
    }
    out.copy_ms = ms(copied.elapsed());
    fact(
        ctx,
        Fact::RehearsalCopied {
            source: out.source.clone(),
            took_ms: out.copy_ms,
        },
    );
    for part in &parts {
        let start = Instant::now();
        let (id, uses, result) =
            match part {
                Part::Migrate { id, to } => {
                    let now = match copy.state().await {
                        Ok(s) => s,
                        Err(e) => return failed(out, id, "reading the copy's migrations", &e),
                    };
                    for m in pending(ctx, &now, *to) {
                        if let Err(failure) = migration(ctx, copy, id, m, &mut out.migrations).await
                        {
                            out.failure = Some(failure);
                            return out;
                        }
                    }
                    continue;
                }
                Part::Sql { id, sql } => match copy.execute(sql).await {
                    Ok(rows) => (id, "sql", format!("{rows} row(s) changed")),
                    Err(e) => return failed(out, id, "its SQL", &e),
                },
                Part::Validate { id, queries } => {
                    // Reported under `rehearsal`: the run's own `validate` step reports its own.
                    let error =
                        match crate::steps::validate::check(ctx, "rehearsal", copy, queries, true)
                            .await
                        {
                            Ok(checked) if checked.failed.is_empty() => None,
                            Ok(checked) => Some(checked.failed.join("; ")),
                            Err(e) => Some(e.to_string()),
                        };
                    if let Some(error) = error {
                        out.failure = Some(Failure {
                            step: (*id).to_owned(),
                            what: "validation".into(),
                            error,
                        });
                        return out;
                    }
                    (id, "validate", format!("{} check(s) passed", queries.len()))
                }
            };
        out.steps.push(RehearsedStep {
            id: (*id).to_owned(),
            uses: uses.to_owned(),
            took_ms: ms(start.elapsed()),
            result,
        });
    }
    out
}

/// One migration on the copy: a fingerprint of what it touches, the up (timed), then its
/// down, compared with that fingerprint, then the up again, so the next one starts from
/// the state the real run gives it. Each down is tried right after its own up, as a
/// rollback with lossless newer downs would run it: a lossy newer down does not make an
/// older one look lossy.
async fn migration(
    ctx: &Context,
    copy: &dyn Database,
    step: &str,
    m: &MigrationFile,
    done: &mut Vec<RehearsedMigration>,
) -> Result<(), Failure> {
    let what = format!("migration {} {}", m.version, m.description);
    let fail = |what: &str, e: &crate::adapters::database::DatabaseError| Failure {
        step: step.to_owned(),
        what: what.to_owned(),
        error: e.to_string(),
    };
    let scope = scope(ctx, m);
    let before = copy
        .fingerprint(&scope, ctx.fingerprint_budget)
        .await
        .map_err(|e| fail("the fingerprint of the copy", &e))?;
    let kept = if m.reversible() {
        keep_rows(copy, &before).await
    } else {
        Vec::new()
    };
    let took = copy
        .apply(m, Commit::Durable)
        .await
        .map_err(|e| fail(&what, &e))?;
    let mut rehearsed = RehearsedMigration {
        version: m.version,
        description: m.description.clone(),
        checksum: m.checksum_hex(),
        up_ms: ms(took),
        down: Down::Missing,
        down_ms: None,
    };
    if m.reversible() {
        let start = Instant::now();
        if let Err(e) = copy.revert(m).await {
            rehearsed.down = Down::Failed {
                error: e.to_string(),
            };
        } else {
            rehearsed.down_ms = Some(ms(start.elapsed()));
            rehearsed.down = judge_down(ctx, copy, &scope, &before, &kept).await;
            copy.apply(m, Commit::Durable)
                .await
                .map_err(|e| fail(&format!("{what}, applied again after its down,"), &e))?;
        }
    }
    for (_, name) in &kept {
        // A leftover copy of rows in the scratch database harms nothing: it is dropped.
        let _ = copy
            .execute(&format!("DROP TABLE {}", quote(copy.kind(), name)))
            .await;
    }
    fact(
        ctx,
        Fact::MigrationRehearsed {
            version: m.version,
            description: m.description.clone(),
            took_ms: rehearsed.up_ms,
            down: rehearsed.down.clone(),
        },
    );
    done.push(rehearsed);
    Ok(())
}

/// Compares the copy after a down with `before`, its fingerprint from before the up.
async fn judge_down(
    ctx: &Context,
    copy: &dyn Database,
    scope: &Scope,
    before: &Fingerprint,
    kept: &[(String, String)],
) -> Down {
    let after = match copy.fingerprint(scope, ctx.fingerprint_budget).await {
        Ok(after) => after,
        Err(e) => {
            return Down::NotRun {
                reason: format!("no fingerprint after it: {e}"),
            };
        }
    };
    let mut comparison = before.compare(&after);
    // The rows kept for a sample are not the migration's doing.
    comparison
        .differences
        .retain(|d| !d.to_string().contains(KEPT_PREFIX));
    if comparison.same() {
        return Down::Lossless {
            covered: comparison.covered(),
        };
    }
    let mut differences = Vec::new();
    for d in &comparison.differences {
        let mut line = d.to_string();
        if let crate::fingerprint::Difference::Rows { table, .. } = d
            && let Some((_, kept)) = kept.iter().find(|(t, _)| t == table)
            && let Some(sample) = sample(copy, table, kept).await
        {
            line.push_str(&format!("; {sample}"));
        }
        differences.push(line);
    }
    Down::Lossy { differences }
}

/// Tables up to this many rows are copied before a migration's up, so that a lossy down
/// can be shown by a row that did not come back; bigger ones are compared by digest only.
const SAMPLE_MAX_ROWS: i64 = 100_000;

/// How the copies of those rows are named in the scratch database.
const KEPT_PREFIX: &str = "cutover_before_";

/// Copies the rows of the small tables in `print` (the tables a migration touches) beside
/// them; returns (table, copy) pairs. A table that cannot be copied is left out.
async fn keep_rows(copy: &dyn Database, print: &Fingerprint) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    for (i, (table, digest)) in print.tables.iter().enumerate() {
        if table.ends_with(HISTORY) || digest.rows > SAMPLE_MAX_ROWS {
            continue;
        }
        let name = format!("{KEPT_PREFIX}{i}");
        let sql = format!(
            "CREATE TABLE {} AS SELECT * FROM {}",
            quote(copy.kind(), &name),
            quote(copy.kind(), table)
        );
        if copy.execute(&sql).await.is_ok() {
            kept.push((table.clone(), name));
        }
    }
    kept
}

/// One row that differs between `table` now and its copy from before the up, as
/// `column=value` pairs: one that is gone or changed, else one that is new.
async fn sample(copy: &dyn Database, table: &str, kept: &str) -> Option<String> {
    let (t, k) = (quote(copy.kind(), table), quote(copy.kind(), kept));
    for (sql, what) in [
        (
            format!("SELECT * FROM {k} EXCEPT SELECT * FROM {t}"),
            "not as before",
        ),
        (
            format!("SELECT * FROM {t} EXCEPT SELECT * FROM {k}"),
            "not there before",
        ),
    ] {
        let Ok(found) = copy.issues(&sql).await else {
            // The columns differ (the down changed the table's shape): no row to show.
            return None;
        };
        if let Some(row) = found.rows.first() {
            let pairs: Vec<String> = found
                .columns
                .iter()
                .zip(row)
                .take(3)
                .map(|(c, v)| format!("{c}={v}"))
                .collect();
            return Some(format!("e.g. the row ({}) is {what}", pairs.join(", ")));
        }
    }
    None
}

/// `name` (maybe `schema.table`) quoted for `kind`'s SQL.
fn quote(kind: &str, name: &str) -> String {
    let q = if kind == "mysql" { '`' } else { '"' };
    name.split('.')
        .map(|part| format!("{q}{}{q}", part.replace(q, &format!("{q}{q}"))))
        .collect::<Vec<_>>()
        .join(".")
}

fn fact(ctx: &Context, fact: Fact) {
    ctx.report(Event::Fact {
        id: Some("rehearsal".into()),
        fact,
    });
}

fn failed(
    mut out: Rehearsal,
    step: &str,
    what: &str,
    error: &crate::adapters::database::DatabaseError,
) -> Rehearsal {
    out.failure = Some(Failure {
        step: step.to_owned(),
        what: what.to_owned(),
        error: error.to_string(),
    });
    out
}

/// The tables a migration touches (and the history table); every table when its SQL
/// cannot be parsed.
fn scope(ctx: &Context, m: &MigrationFile) -> Scope {
    let scripts = std::iter::once(m.up_sql.as_str()).chain(m.down_sql.as_deref());
    crate::engine::verify::touched_scope(ctx.database.kind(), scripts)
}

/// Fills `copy` with today's data: from the newest backup of this environment when it is
/// at the database's current migrations and at most `max_age` old, else from a dump of
/// the live database streamed straight into it (nothing stored). Returns where it came
/// from.
async fn make_copy(
    ctx: &Context,
    config: RehearseConfig,
    state: &DatabaseState,
    copy: &dyn Database,
) -> Result<String, String> {
    if !state.exists {
        return Ok("an empty database: the real one does not exist yet".into());
    }
    if let Some(source) = from_backup(ctx, config, state, copy).await {
        return Ok(source);
    }
    let (mut writer, mut reader) = tokio::io::duplex(1 << 20);
    let dump = async {
        let result = ctx.database.dump(&mut writer).await;
        drop(writer);
        result
    };
    let (dumped, restored) = tokio::join!(dump, copy.restore(&mut reader));
    dumped.map_err(|e| format!("cannot dump the live database: {e}"))?;
    restored.map_err(|e| format!("cannot restore the dump into the copy: {e}"))?;
    Ok("a dump of the live database, streamed into the copy".into())
}

/// Restores the newest fitting backup into `copy`; `None` when there is none, or it did
/// not restore to the database's current migrations.
async fn from_backup(
    ctx: &Context,
    config: RehearseConfig,
    state: &DatabaseState,
    copy: &dyn Database,
) -> Option<String> {
    let max_age = chrono::Duration::from_std(config.max_age.get()).ok()?;
    let newest = ctx
        .store
        .list()
        .await
        .ok()?
        .into_iter()
        .filter(|m| {
            m.environment == ctx.environment
                && m.database_kind == ctx.database.kind()
                && m.schema_version == state.version()
                && Utc::now() - m.created_at <= max_age
        })
        .max_by_key(|m| m.created_at)?;
    let mut reader = crate::steps::backup::open_dump(ctx, &newest.id, &newest)
        .await
        .ok()?;
    copy.restore(&mut reader).await.ok()?;
    let restored = copy.state().await.ok()?;
    if restored.applied != state.applied {
        return None;
    }
    Some(format!(
        "backup {} (taken {})",
        newest.id,
        newest.created_at.format("%Y-%m-%d %H:%M UTC")
    ))
}
