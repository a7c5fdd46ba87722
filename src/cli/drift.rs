//! `migrate diff` and `migrate accept-drift`: the live schema against the one recorded
//! for the database's version (see `engine::drift`).

use serde_json::json;

use super::Global;
use super::exit::Exit;
use super::session::Session;
use crate::engine::drift::{compare, describe, live};
use crate::engine::history_edit::journaled;
use crate::engine::{EngineError, cancel};
use crate::fact::Fact;

fn version_text(version: Option<i64>) -> String {
    version.map_or_else(|| "an empty history".to_owned(), |v| format!("version {v}"))
}

pub(crate) async fn diff(global: &Global) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let ctx = session.context(cancel::on_signals())?;
    let state = ctx
        .database
        .state()
        .await
        .map_err(|e| EngineError::Plan(e.to_string()))?;
    let version = state.version();
    let Some((recorded, differences)) = compare(&ctx, version).await? else {
        session.result(
            &json!({"version": version, "recorded": null, "differences": []}),
            &format!(
                "no schema is recorded for {} of environment `{}`: cutover records it after each run that succeeds (or `cutover migrate accept-drift`), so there is nothing to compare with yet",
                version_text(version),
                ctx.environment
            ),
        );
        return Ok(Exit::Ok);
    };
    let lines = describe(&differences);
    let head = format!(
        "{} compared with the schema run {} recorded at {} ({}, {} object(s))",
        ctx.database.describe(),
        recorded.run_id,
        version_text(version),
        recorded.at.format("%Y-%m-%d %H:%M UTC"),
        recorded.schema.len()
    );
    let text = if lines.is_empty() {
        format!("{head}: no drift, every object as recorded")
    } else {
        format!(
            "{head}: {} difference(s)\n{}",
            lines.len(),
            lines
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    session.result(
        &json!({"version": version, "recorded": {"run_id": recorded.run_id, "at": recorded.at, "objects": recorded.schema.len()}, "differences": differences}),
        &text,
    );
    Ok(Exit::Ok)
}

pub(crate) async fn accept(global: &Global, reason: String) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let ctx = session.context(cancel::on_signals())?;
    if reason.trim().is_empty() {
        return Err(EngineError::Plan(
            "`--reason` is empty: say why the live schema is right, for the journal".into(),
        ));
    }
    let state = ctx
        .database
        .state()
        .await
        .map_err(|e| EngineError::Plan(e.to_string()))?;
    let version = state.version();
    let before = compare(&ctx, version).await?;
    let schema = live(&ctx).await.map_err(EngineError::Plan)?;
    let objects = schema.len();
    let fact = Fact::SchemaRecorded {
        version,
        schema,
        reason: Some(reason),
    };
    let run_id = journaled(&ctx, "migrate accept-drift", fact, async { Ok(()) }).await?;
    let accepted = before.map_or(0, |(_, d)| d.len());
    session.result(
        &json!({"version": version, "run_id": run_id, "objects": objects, "differences_accepted": accepted}),
        &format!(
            "the live schema ({objects} object(s)) is now the recorded one for {} (run {run_id}){}",
            version_text(version),
            if accepted > 0 {
                format!("; {accepted} difference(s) accepted")
            } else {
                String::new()
            }
        ),
    );
    Ok(Exit::Ok)
}
