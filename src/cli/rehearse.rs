//! `rehearse`: the database part of a release on a copy of the data, now, whatever the
//! stored result; production is only read. Exit 0 when everything passed on the copy, 2
//! when something failed there (the deploy would stop before its window).

use serde_json::json;

use super::exit::Exit;
use super::session::Session;
use super::{Global, RehearseArgs};
use crate::engine::{EngineError, cancel};
use crate::rehearsal::run;

pub(crate) async fn rehearse(global: &Global, args: RehearseArgs) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let pipeline = session.pipeline(args.pipeline.as_deref())?;
    let ctx = session.context(cancel::on_signals())?;
    let mut config = session.config.environment(&session.environment)?.rehearse;
    // Asked for by name: it runs even where deploys skip it.
    config.enabled = true;
    let rehearsal = run::rehearse(&ctx, config, &pipeline).await?;
    if let Some(failure) = &rehearsal.failure {
        return Err(run::stopped(&rehearsal, failure));
    }
    let mut text = format!(
        "rehearsed `{}` for {} on a copy of {} in {} ms (copy {} ms); the copy is dropped",
        pipeline.name, ctx.environment, rehearsal.source, rehearsal.total_ms, rehearsal.copy_ms
    );
    if rehearsal.migrations.is_empty() {
        text.push_str("\nno pending migrations");
    }
    for m in &rehearsal.migrations {
        text.push_str(&format!(
            "\n  {} {}: {} ms; {}{}",
            m.version,
            m.description,
            m.up_ms,
            m.down.describe(),
            m.down_ms.map(|d| format!(" ({d} ms)")).unwrap_or_default()
        ));
    }
    for s in &rehearsal.steps {
        text.push_str(&format!(
            "\n  step `{}` ({}): {} ({} ms)",
            s.id, s.uses, s.result, s.took_ms
        ));
    }
    for left in &rehearsal.not_rehearsed {
        text.push_str(&format!("\n  not rehearsed: {left}"));
    }
    text.push_str(&format!(
        "\nresult kept in {}; `cutover plan -e {}` shows what it decides",
        crate::rehearsal_record::path(&ctx.state_dir, &ctx.environment).display(),
        ctx.environment
    ));
    session.result(&json!({ "rehearsal": rehearsal }), &text);
    Ok(Exit::Ok)
}
