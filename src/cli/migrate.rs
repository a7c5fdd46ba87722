//! `migrate status|up|down|new|verify|resolve|lint|test`. `up` and `down` run through the
//! engine, under the lock and journal, like any release; `lint` reads files only (and the
//! history with `--pending`); `test` works in a scratch database.

use std::path::PathBuf;

use serde_json::json;
use serde_saphyr::{Location, Spanned};

use super::confirm::Confirmation;
use super::deploy::{run_pipeline, run_pipeline_in};
use super::exit::Exit;
use super::session::Session;
use super::{Global, MigrateCommand, Resolution};
use crate::app::builtin::{builtin, step};
use crate::config::Pipeline;
use crate::config::deploy_file::LintLevel;
use crate::config::pipeline::{MigrateRollback, MigrateWith, StepWith};
use crate::engine::{EngineError, cancel, plan};
use crate::migrate::{MigrationFile, lint};
use crate::rehearsal::roundtrip;
use crate::run::event::Event;
use crate::run::plan::RollbackTarget;

pub(crate) async fn migrate(global: &Global, command: MigrateCommand) -> Result<Exit, EngineError> {
    match command {
        MigrateCommand::New { name } => new(global, &name),
        MigrateCommand::Status => status(global, false).await,
        MigrateCommand::Verify => status(global, true).await,
        MigrateCommand::Resolve {
            version,
            resolution,
        } => resolve(global, version, resolution).await,
        MigrateCommand::Baseline { version, reason } => {
            super::adopt::baseline(global, version, reason).await
        }
        MigrateCommand::Diff => super::drift::diff(global).await,
        MigrateCommand::AcceptDrift { reason } => super::drift::accept(global, reason).await,
        MigrateCommand::Repair {
            version,
            force,
            reason,
        } => super::adopt::repair(global, version, force, reason).await,
        MigrateCommand::Lint { rules: true, .. } => {
            print!("{}", lint::rules::markdown_table());
            Ok(Exit::Ok)
        }
        MigrateCommand::Lint { pending, .. } => lint(global, pending).await,
        MigrateCommand::Test => roundtrip(global).await,
        MigrateCommand::Fingerprint { tables } => fingerprint(global, tables).await,
        MigrateCommand::Up {
            to,
            confirm,
            window,
        } => {
            let session = Session::open(global)?;
            let ctx = session.context(cancel::on_signals())?;
            let state = ctx
                .database
                .state()
                .await
                .map_err(|e| EngineError::Plan(e.to_string()))?;
            // Undo a part-applied batch when every migration in it can be undone.
            let rollback = if plan::pending(&ctx, &state, to).iter().all(|p| p.reversible) {
                MigrateRollback::Down
            } else {
                MigrateRollback::None
            };
            let to = to.map_or_else(|| "latest".to_owned(), |v| v.to_string());
            let pipeline = one_step(&to, rollback);
            run_pipeline_in(
                &session,
                ctx,
                &pipeline,
                &Confirmation {
                    outside_window: window.reason,
                    ..Confirmation::automatic(confirm)
                },
                "migrate up",
                None,
                false,
            )
            .await
        }
        MigrateCommand::Down {
            to,
            confirm,
            window,
        } => {
            let session = Session::open(global)?;
            let target = RollbackTarget::Version((to != 0).then_some(to));
            let pipeline = crate::app::builtin::database_pipeline(&target, "migrate down");
            run_pipeline(
                &session,
                &pipeline,
                &Confirmation {
                    outside_window: window.reason,
                    ..Confirmation::automatic(confirm)
                },
                "migrate down",
                Some(target),
                false,
            )
            .await
        }
    }
}

fn one_step(to: &str, rollback: MigrateRollback) -> Pipeline {
    let to = Spanned::new(to.to_owned(), Location::UNKNOWN, Location::UNKNOWN);
    builtin(
        "migrate up",
        vec![step(
            "migrate",
            StepWith::Migrate(MigrateWith {
                to: Some(to),
                rollback: Some(rollback),
                warn_after: None,
                ..MigrateWith::default()
            }),
        )],
    )
}

fn new(global: &Global, name: &str) -> Result<Exit, EngineError> {
    let config = super::session::load_config(global)?;
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let slug = slug.trim_matches('_').to_owned();
    if slug.is_empty() {
        return Err(EngineError::Plan(format!(
            "invalid migration name `{name}`: use letters and digits"
        )));
    }
    let dir = config.migrations_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| EngineError::Plan(format!("cannot create {}: {e}", dir.display())))?;
    // A timestamp, after every migration already there: two `migrate new` in the same
    // second, or a clock behind a colleague's, must not share or precede a version.
    let now: i64 = chrono::Utc::now()
        .format("%Y%m%d%H%M%S")
        .to_string()
        .parse()
        .expect("digits");
    let newest = crate::migrate::source::read_dir(&dir)
        .ok()
        .and_then(|set| set.migrations.iter().map(|m| m.version).max());
    let version = match newest {
        Some(v) if v >= now => v + 1,
        _ => now,
    }
    .to_string();
    let up = dir.join(format!("{version}_{slug}.up.sql"));
    let down = dir.join(format!("{version}_{slug}.down.sql"));
    if up.exists() || down.exists() {
        return Err(EngineError::Plan(format!(
            "{} already exists; wait a second and try again",
            up.display()
        )));
    }
    let write = |path: &PathBuf, text: &str| {
        std::fs::write(path, text)
            .map_err(|e| EngineError::Plan(format!("cannot write {}: {e}", path.display())))
    };
    write(&up, &format!("-- {name}\n"))?;
    write(&down, &format!("-- Undo {name}\n"))?;
    println!("{}\n{}", up.display(), down.display());
    Ok(Exit::Ok)
}

async fn status(global: &Global, verify_only: bool) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let ctx = session.context(cancel::on_signals())?;
    let state = ctx
        .database
        .state()
        .await
        .map_err(|e| EngineError::Plan(e.to_string()))?;
    let problems = plan::check_history(&ctx, &state);
    let mut rows = Vec::new();
    let mut text = String::new();
    let head = state.version();
    let mut late = Vec::new();
    let any = !(ctx.migrations.migrations.is_empty() && state.applied.is_empty());
    // When and by whom: the history table says when, the journals which run.
    let installed = if state.applied.is_empty() {
        Vec::new()
    } else {
        ctx.database.installed().await.unwrap_or_default()
    };
    let origins = crate::engine::provenance::origins(&ctx.state_dir, &ctx.environment)?;
    let when = |v: i64| {
        let row = installed.iter().find(|i| i.version == v);
        let on = row
            .and_then(|i| i.on.as_deref())
            .map(|t| t.chars().take(19).collect::<String>());
        (on, row.and_then(|i| i.took))
    };
    if !verify_only && any {
        text.push_str(&format!(
            "{:<18} {:<14} {:<19}  {:<20} {:>9}  DESCRIPTION\n",
            "STATUS", "VERSION", "INSTALLED", "BY (RUN IN JOURNAL)", "TOOK"
        ));
    }
    for m in &ctx.migrations.migrations {
        let applied = state.applied.iter().find(|a| a.version == m.version);
        let status = match applied {
            Some(a) if a.checksum == m.checksum => "applied",
            Some(_) => "CHECKSUM MISMATCH",
            // Numbered below the newest applied one: a branch merged late.
            None if head.is_some_and(|h| m.version < h) => {
                late.push(m.version.to_string());
                "pending, OUT OF ORDER"
            }
            None => "pending",
        };
        let (on, took) = applied.map_or((None, None), |_| when(m.version));
        let origin = applied.and_then(|_| origins.get(&m.version));
        rows.push(json!({"version": m.version, "description": m.description, "status": status, "reversible": m.reversible(),
            "installed_on": on, "execution_ms": took.map(|t| t.as_secs_f64() * 1000.0), "installed_by": origin.map(|o| &o.by), "run_id": origin.map(|o| &o.run_id), "command": origin.map(|o| &o.command)}));
        if !verify_only {
            text.push_str(&format!(
                "{:<18} {:<14} {:<19}  {:<20} {:>9}  {}{}\n",
                status,
                m.version,
                on.unwrap_or_default(),
                origin.map_or_else(
                    || if applied.is_some() {
                        "(no run here)".to_owned()
                    } else {
                        String::new()
                    },
                    |o| if o.command == "migrate baseline" {
                        format!("{} (baseline)", o.by)
                    } else {
                        o.by.clone()
                    }
                ),
                took.map_or_else(String::new, |t| format!(
                    "{:.1} ms",
                    t.as_secs_f64() * 1000.0
                )),
                m.description,
                if m.reversible() { "" } else { " (no down)" }
            ));
        }
    }
    for a in &state.applied {
        if ctx.migrations.get(a.version).is_none() {
            rows.push(json!({"version": a.version, "status": "applied, file missing"}));
            if !verify_only {
                text.push_str(&format!(
                    "{:<18} {:<14} (file missing)\n",
                    "applied", a.version
                ));
            }
        }
    }
    if let Some(dirty) = state.dirty {
        text.push_str(&format!(
            "migration {dirty} is recorded as failed (dirty)\n"
        ));
    }
    if !late.is_empty() && !verify_only {
        text.push_str(&format!(
            "{} pending migration(s) numbered below the applied head {}: {}; a deploy refuses them unless the environment has `out_of_order: true`\n",
            late.len(),
            head.unwrap_or_default(),
            late.join(", ")
        ));
    }
    if verify_only {
        text = if problems.is_empty() {
            format!(
                "ok: {} applied migration(s) match their files",
                state.applied.len()
            )
        } else {
            problems.join("\n")
        };
    } else {
        text.push_str(&format!(
            "database {} at {}",
            ctx.database.describe(),
            state
                .version()
                .map_or_else(|| "an empty schema".into(), |v| v.to_string())
        ));
    }
    session.result(
        &json!({"migrations": rows, "problems": problems, "version": state.version()}),
        &text,
    );
    Ok(if problems.is_empty() {
        Exit::Ok
    } else {
        Exit::BadInput
    })
}

async fn resolve(
    global: &Global,
    version: i64,
    resolution: Resolution,
) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let ctx = session.context(cancel::on_signals())?;
    // Under the lock: nobody may migrate while the history is being corrected.
    let locks = crate::engine::lock::RunLocks::acquire(
        &ctx,
        &crate::engine::journal::new_run_id(),
        "migrate resolve",
    )
    .await?;
    let applied = resolution == Resolution::Applied;
    let changed = ctx
        .database
        .resolve_dirty(version, applied)
        .await
        .map_err(|e| EngineError::Plan(e.to_string()))?;
    locks.release().await;
    if !changed {
        return Err(EngineError::Plan(format!(
            "migration {version} is not recorded as dirty; nothing to resolve (see `cutover migrate status`)"
        )));
    }
    session.result(
        &json!({"version": version, "resolved_as": if applied { "applied" } else { "reverted" }}),
        &format!(
            "migration {version} is now recorded as {}",
            if applied {
                "applied"
            } else {
                "not applied; the next deploy runs it again"
            }
        ),
    );
    Ok(Exit::Ok)
}

async fn lint(global: &Global, pending_only: bool) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let ctx = session.context(cancel::on_signals())?;
    let kind = ctx.database.kind();
    let Some(db) = lint::Db::from_kind(kind) else {
        session.result(
            &json!({"database": kind, "files": 0, "findings": [], "allowed": [], "notes": [], "skipped": "the lint rules are for PostgreSQL and MySQL/MariaDB"}),
            &format!(
                "the lint rules are for PostgreSQL and MySQL/MariaDB; environment `{}` uses {kind}: nothing to lint",
                ctx.environment
            ),
        );
        return Ok(Exit::Ok);
    };
    let level = ctx.database.lint_level();
    if level == LintLevel::Off {
        session.result(
            &json!({"database": kind, "level": "off", "files": 0, "findings": [], "allowed": [], "notes": [], "skipped": "lint: off"}),
            &format!(
                "environment `{}` has `lint: off`: nothing linted",
                ctx.environment
            ),
        );
        return Ok(Exit::Ok);
    }
    let files: Vec<&MigrationFile> = if pending_only {
        let state = ctx
            .database
            .state()
            .await
            .map_err(|e| EngineError::Plan(e.to_string()))?;
        plan::pending(&ctx, &state, None)
            .iter()
            .filter_map(|p| ctx.migrations.get(p.version))
            .collect()
    } else {
        ctx.migrations.migrations.iter().collect()
    };
    let report = lint::lint(files, &ctx.base_dir, db);
    let errors = level == LintLevel::Error;
    let mut text = String::new();
    for f in &report.findings {
        text.push_str(&format!("{f}\n"));
    }
    for n in &report.notes {
        text.push_str(&format!("{n}\n"));
    }
    for a in &report.allowed {
        text.push_str(&format!(
            "{}:{}: allowed [{}] {}\n",
            a.file, a.line, a.rule, a.message
        ));
    }
    let which = if pending_only { "pending " } else { "" };
    text.push_str(&format!(
        "{} finding(s), {} allowed, {} note(s), in {} {which}migration(s)",
        report.findings.len(),
        report.allowed.len(),
        report.notes.len(),
        report.files
    ));
    let failed = errors && !report.findings.is_empty();
    if failed {
        text.push_str(
            "\nerror: environment has `lint: error`: plans stop on these findings until the migrations are changed",
        );
    }
    session.result(
        &json!({
            "database": kind,
            "level": if errors { "error" } else { "warning" },
            "pending_only": pending_only,
            "files": report.files,
            "findings": report.findings,
            "allowed": report.allowed,
            "notes": report.notes,
        }),
        &text,
    );
    Ok(if failed { Exit::BadInput } else { Exit::Ok })
}

async fn fingerprint(global: &Global, tables: Vec<String>) -> Result<Exit, EngineError> {
    use crate::fingerprint::Scope;
    let session = Session::open(global)?;
    let ctx = session.context(cancel::on_signals())?;
    let read = |e: crate::adapters::database::DatabaseError| EngineError::Plan(e.to_string());
    let started = std::time::Instant::now();
    let schema = ctx
        .database
        .fingerprint(&Scope::Tables(Vec::new()), ctx.fingerprint_budget)
        .await
        .map_err(read)?;
    let schema_ms = crate::units::ms(started.elapsed());
    let scope = if tables.is_empty() {
        Scope::All
    } else {
        Scope::Tables(tables.iter().map(|t| t.to_ascii_lowercase()).collect())
    };
    let started = std::time::Instant::now();
    let full = ctx
        .database
        .fingerprint(&scope, ctx.fingerprint_budget)
        .await
        .map_err(read)?;
    let total_ms = crate::units::ms(started.elapsed());
    let mut text = format!(
        "schema: {} objects in {schema_ms} ms\n",
        schema.schema.len()
    );
    for (table, digest) in &full.tables {
        text.push_str(&format!(
            "table {table}: {} rows, digest {}\n",
            digest.rows, digest.digest
        ));
    }
    for (table, why) in &full.skipped {
        text.push_str(&format!("table {table}: not digested ({why})\n"));
    }
    text.push_str(&format!(
        "schema and {} table(s) in {total_ms} ms",
        full.tables.len()
    ));
    session.result(
        &json!({"schema_ms": schema_ms, "total_ms": total_ms, "fingerprint": full}),
        &text,
    );
    Ok(Exit::Ok)
}

async fn roundtrip(global: &Global) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let cancel = cancel::on_signals();
    let ctx = session.context(cancel.clone())?;
    if ctx.migrations.migrations.is_empty() {
        session.result(
            &json!({"clean": true, "checked": [], "irreversible": [], "full_cycle": false, "failure": null}),
            &format!(
                "no migrations in {}: nothing to test",
                ctx.migrations.dir.display()
            ),
        );
        return Ok(Exit::Ok);
    }
    let scratch = ctx.database.scratch().await.map_err(|e| {
        EngineError::Plan(format!("cannot create a scratch database to test in: {e}"))
    })?;
    ctx.note(
        "migrate test",
        format!("scratch database {} created", scratch.name),
    );
    let progress = |line: &str| ctx.note("migrate test", line);
    let result = tokio::select! {
        r = roundtrip::run(scratch.database.as_ref(), &ctx.migrations, &ctx.base_dir, &progress) => Some(r),
        () = cancel.cancelled() => None,
    };
    let name = scratch.name.clone();
    if let Err(e) = scratch.discard().await {
        ctx.report(Event::Warning {
            message: format!("the scratch database {name} is left behind ({e}); remove it by hand"),
        });
    }
    let Some(result) = result else {
        eprintln!(
            "interrupted; the scratch database {name} was removed and nothing else was touched"
        );
        return Ok(Exit::Interrupted);
    };
    let outcome = result.map_err(|e| EngineError::Plan(format!("migrate test: {e}")))?;
    let mut text = String::new();
    match &outcome.failure {
        None => {
            text.push_str(&format!(
                "ok: every down undoes its up ({} migration(s) checked in scratch database {name}, since removed)",
                outcome.checked.len()
            ));
            if !outcome.irreversible.is_empty() {
                text.push_str(&format!(
                    "\nnot checked (no down file): {}",
                    outcome
                        .irreversible
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Some(f) => {
            text.push_str(&format!("FAILED: {}", f.message));
            for line in &f.diff {
                text.push_str(&format!("\n    {line}"));
            }
            text.push_str("\nthe scratch database was removed; the real database was not touched");
        }
    }
    session.result(
        &json!({
            "clean": outcome.clean(),
            "scratch": name,
            "checked": outcome.checked,
            "irreversible": outcome.irreversible,
            "full_cycle": outcome.full_cycle,
            "failure": outcome.failure,
        }),
        &text,
    );
    // Exit 1: a migration fails or a down does not undo its up.
    Ok(if outcome.clean() {
        Exit::Ok
    } else {
        Exit::RolledBack
    })
}
