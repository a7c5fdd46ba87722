//! `backup list|create|verify|restore`.

use serde_json::json;

use super::confirm::Confirmation;
use super::deploy::{database_pipeline, run_pipeline};
use super::exit::Exit;
use super::session::Session;
use super::{BackupCommand, Global};
use crate::config::pipeline::{BackupWith, StepWith};
use crate::config::{Pipeline, Step};
use crate::engine::run::RollbackTarget;
use crate::engine::{EngineError, cancel};
use crate::steps::backup::{human_bytes, verify};

pub async fn backup(global: &Global, command: BackupCommand) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    match command {
        BackupCommand::List => {
            let ctx = session.context(cancel::on_signals())?;
            let list = ctx
                .store
                .list()
                .await
                .map_err(|e| EngineError::Plan(e.to_string()))?;
            let mut text = String::new();
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
        BackupCommand::Create { name } => {
            let pipeline = Pipeline {
                path: "(built in)".into(),
                name: "backup".into(),
                timeout: None,
                steps: vec![Step {
                    id: "backup".into(),
                    with: StepWith::Backup(BackupWith {
                        name: Some(name.unwrap_or_else(|| "manual-{timestamp}".into())),
                        verify: None,
                    }),
                    timeout: None,
                    retries: 0,
                    when: None,
                    line: 0,
                }],
            };
            run_pipeline(
                &session,
                &pipeline,
                &Confirmation {
                    named: None,
                    yes: true,
                    implied: false,
                },
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
        BackupCommand::Restore { id, confirm, yes } => {
            let target = RollbackTarget::Backup(id);
            let pipeline = database_pipeline(&target, "backup restore");
            run_pipeline(
                &session,
                &pipeline,
                &Confirmation {
                    named: confirm,
                    yes,
                    implied: false,
                },
                "backup restore",
                Some(target),
                false,
            )
            .await
        }
    }
}
