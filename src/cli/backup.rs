//! `backup list|create|verify|restore`.

use std::fmt::Write as _;

use serde_json::json;

use super::confirm::Confirmation;
use super::deploy::run_pipeline;
use super::exit::Exit;
use super::session::Session;
use super::{BackupCommand, Global};
use crate::app::builtin::{builtin, database_pipeline, step};
use crate::config::pipeline::{BackupWith, StepWith};
use crate::engine::{EngineError, cancel, retention};
use crate::run::plan::RollbackTarget;
use crate::steps::backup::verify;
use crate::units::human_bytes;

pub(crate) async fn backup(global: &Global, command: BackupCommand) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    match command {
        BackupCommand::List => {
            let ctx = session.context(cancel::on_signals())?;
            let list = ctx
                .store
                .list()
                .await
                .map_err(|e| EngineError::Plan(e.to_string()))?;
            let mut text = format!(
                "{:<44} {:<19}  {:>10}  {:<23} {}\n",
                "BACKUP", "CREATED (UTC)", "SIZE", "SCHEMA", "SHA256"
            );
            for m in &list {
                text.push_str(&format!(
                    "{:<44} {}  {:>10}  schema {:<16} sha256 {}\n",
                    m.id,
                    m.created_at.format("%Y-%m-%d %H:%M:%S"),
                    human_bytes(m.size),
                    m.schema_version
                        .map_or_else(|| "empty".into(), |v| v.to_string()),
                    &m.sha256[..16]
                ));
            }
            if list.is_empty() {
                text = format!("no backups in {}", ctx.store.describe());
            }
            session.result(&json!({"backups": list}), &text);
            Ok(Exit::Ok)
        }
        BackupCommand::Create { name, confirm } => {
            let with = BackupWith {
                name: Some(name.unwrap_or_else(|| "manual-{timestamp}".into())),
                verify: None,
                snapshot: false,
            };
            let pipeline = builtin("backup", vec![step("backup", StepWith::Backup(with))]);
            run_pipeline(
                &session,
                &pipeline,
                &Confirmation::automatic(confirm),
                "backup create",
                None,
                false,
            )
            .await
        }
        BackupCommand::Verify { id } => {
            let ctx = session.context(cancel::on_signals())?;
            let m = verify(&ctx, &id).await?;
            session.result(
                &json!({"backup": m, "verified": true}),
                &format!(
                    "backup {} is intact ({}, sha256 {}) and restores into a scratch database",
                    m.id,
                    human_bytes(m.size),
                    m.sha256
                ),
            );
            Ok(Exit::Ok)
        }
        BackupCommand::Prune { dry_run } => {
            let ctx = session.context(cancel::on_signals())?;
            // The copies swaps and snapshots left beside the database go first: they
            // are not backups, and `keep:` does not count them.
            let mut copies = Vec::new();
            for name in retention::leftover_copies(&ctx)? {
                let there = if dry_run {
                    copy_exists(&ctx, &name).await
                } else {
                    ctx.database
                        .drop_snapshot(&name)
                        .await
                        .map_err(|e| EngineError::Plan(format!("cannot remove {name}: {e}")))?
                };
                if there {
                    copies.push(name);
                }
            }
            let copies_text = copies.iter().fold(String::new(), |mut text, c| {
                let _ = writeln!(
                    text,
                    "{} copy {c} (kept beside the database by a swap or snapshot)",
                    if dry_run { "would remove" } else { "removed" }
                );
                text
            });
            let keep = ctx.store.keep().cloned();
            if keep.is_none() && !copies.is_empty() {
                session.result(
                    &json!({"copies_removed": if dry_run { Vec::new() } else { copies.clone() }, "copies_to_remove": if dry_run { copies.clone() } else { Vec::new() }}),
                    &format!("{copies_text}backups not pruned: environment `{}` has no `backups.keep:`", ctx.environment),
                );
                return Ok(Exit::Ok);
            }
            let keep = keep.ok_or_else(|| {
                EngineError::Plan(format!(
                    "environment `{}` has no `backups.keep:`; set a count (`keep: 10`) or an age (`keep: 35d`) to prune",
                    ctx.environment
                ))
            })?;
            let list = ctx
                .store
                .list()
                .await
                .map_err(|e| EngineError::Plan(e.to_string()))?;
            let protected = retention::protected(&ctx)?;
            let doomed = retention::candidates(&list, &keep, chrono::Utc::now(), &protected);
            let mut text = copies_text;
            for id in &doomed {
                if !dry_run {
                    ctx.store
                        .delete(id)
                        .await
                        .map_err(|e| EngineError::Step(e.into()))?;
                }
                text.push_str(&format!(
                    "{} {id}\n",
                    if dry_run { "would delete" } else { "deleted" }
                ));
            }
            let spared = list.iter().filter(|m| protected.contains(&m.id)).count();
            text.push_str(&format!(
                "{} backup(s) kept: {keep}{}",
                list.len() - doomed.len(),
                if spared > 0 {
                    format!(", and {spared} a halted or unfinished run may still restore")
                } else {
                    String::new()
                }
            ));
            session.result(&json!({"deleted": if dry_run { Vec::new() } else { doomed.clone() }, "would_delete": if dry_run { doomed.clone() } else { Vec::new() }, "copies_removed": if dry_run { Vec::new() } else { copies.clone() }, "copies_to_remove": if dry_run { copies } else { Vec::new() }}), &text);
            Ok(Exit::Ok)
        }
        BackupCommand::Restore { id, confirm, yes } => {
            let target = RollbackTarget::Backup(id);
            let pipeline = database_pipeline(&target, "backup restore");
            run_pipeline(
                &session,
                &pipeline,
                &Confirmation::asked(confirm, yes),
                "backup restore",
                Some(target),
                false,
            )
            .await
        }
    }
}

/// Whether a copy a swap or snapshot left is still there: its database answers.
async fn copy_exists(ctx: &crate::run::context::Context, name: &str) -> bool {
    match ctx.database.snapshot_database(name) {
        Ok(db) => {
            let there = db.ping().await.is_ok() && db.state().await.is_ok();
            db.disconnect().await;
            there
        }
        Err(_) => false,
    }
}
