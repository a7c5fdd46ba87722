//! `migrate status|up|down|new|verify`. `up` and `down` run through the engine, under
//! the lock and journal, like any release.

use std::path::PathBuf;

use serde_json::json;
use serde_saphyr::{Location, Spanned};

use super::confirm::Confirmation;
use super::deploy::{builtin, run_pipeline, step};
use super::exit::Exit;
use super::session::Session;
use super::{Global, MigrateCommand, Resolution};
use crate::config::Pipeline;
use crate::config::pipeline::{MigrateRollback, MigrateWith, StepWith};
use crate::engine::run::RollbackTarget;
use crate::engine::{EngineError, cancel, plan};

pub async fn migrate(global: &Global, command: MigrateCommand) -> Result<Exit, EngineError> {
    match command {
        MigrateCommand::New { name } => new(global, &name),
        MigrateCommand::Status => status(global, false).await,
        MigrateCommand::Verify => status(global, true).await,
        MigrateCommand::Resolve {
            version,
            resolution,
        } => resolve(global, version, resolution).await,
        MigrateCommand::Up { to } => {
            let session = Session::open(global)?;
            let rollback = {
                let ctx = session.context(cancel::on_signals())?;
                let state = ctx
                    .database
                    .state()
                    .await
                    .map_err(|e| EngineError::Plan(e.to_string()))?;
                let pending = plan::pending(&ctx, &state, to);
                // Undo a part-applied batch when every migration in it can be undone.
                if pending.iter().all(|p| p.reversible) {
                    MigrateRollback::Down
                } else {
                    MigrateRollback::None
                }
            };
            let to = to.map_or_else(|| "latest".to_owned(), |v| v.to_string());
            let pipeline = one_step(&to, rollback);
            run_pipeline(
                &session,
                &pipeline,
                &Confirmation::automatic(),
                "migrate up",
                None,
                false,
            )
            .await
        }
        MigrateCommand::Down { to } => {
            let session = Session::open(global)?;
            let target = RollbackTarget::Version((to != 0).then_some(to));
            let pipeline = super::deploy::database_pipeline(&target, "migrate down");
            run_pipeline(
                &session,
                &pipeline,
                &Confirmation::automatic(),
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
    let version = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
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
    for m in &ctx.migrations.migrations {
        let applied = state.applied.iter().find(|a| a.version == m.version);
        let status = match applied {
            Some(a) if a.checksum == m.checksum => "applied",
            Some(_) => "CHECKSUM MISMATCH",
            None => "pending",
        };
        rows.push(json!({"version": m.version, "description": m.description, "status": status, "reversible": m.reversible()}));
        if !verify_only {
            text.push_str(&format!(
                "{:<18} {:<8} {}{}\n",
                status,
                m.version,
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
                    "{:<18} {:<8} (file missing)\n",
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
    let guard = crate::engine::lock::acquire(
        &ctx.state_dir,
        &ctx.environment,
        &crate::engine::journal::new_run_id(),
        "migrate resolve",
        ctx.lock_lease,
    )?;
    let db_lock = crate::engine::lock::acquire_in_database(&ctx).await?;
    let applied = resolution == Resolution::Applied;
    let changed = ctx
        .database
        .resolve_dirty(version, applied)
        .await
        .map_err(|e| EngineError::Plan(e.to_string()))?;
    drop(db_lock);
    guard.release();
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
