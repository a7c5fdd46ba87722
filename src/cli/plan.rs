//! `plan`: the plan, touching nothing.

use super::exit::Exit;
use super::session::Session;
use super::{Global, Output, PlanArgs};
use crate::engine::{EngineError, cancel, plan, preview};

pub(crate) async fn plan(global: &Global, args: PlanArgs) -> Result<Exit, EngineError> {
    let mut global = global.clone();
    if args.json {
        global.output = Output::Json;
    }
    let session = Session::open(&global)?;
    let pipeline = session.pipeline(args.pipeline.as_deref())?;
    let mut ctx = session.context(cancel::on_signals())?;
    let config = session.config.environment(&session.environment)?.rehearse;
    ctx.rehearsal = crate::rehearsal::run::standing_now(&ctx, config, &pipeline).await;
    let mut plan = plan::build(&ctx, &pipeline, None).await?;
    if args.sql {
        preview::fill(&ctx, &pipeline, &mut plan).map_err(EngineError::Plan)?;
    }
    if let Some(out) = &args.out {
        let mut saved = serde_json::to_value(&plan).expect("plan serializes");
        let now = chrono::Utc::now();
        let expires = chrono::Duration::from_std(*args.expires_in)
            .map_err(|e| EngineError::Plan(format!("`--expires-in` is too long: {e}")))?;
        saved["approval"] = serde_json::json!({
            "by": args.approved_by.clone().unwrap_or_else(crate::adapters::state::username),
            "at": now,
            "expires_at": now + expires,
        });
        let text = super::exit::redactor()
            .redact(&serde_json::to_string_pretty(&saved).expect("plan serializes"));
        std::fs::write(out, text + "\n")
            .map_err(|e| EngineError::Plan(format!("cannot write {}: {e}", out.display())))?;
    }
    if args.json {
        // `plan --json` prints the plan alone, as one JSON document.
        println!(
            "{}",
            super::exit::redactor()
                .redact(&serde_json::to_string_pretty(&plan).expect("plan serializes"))
        );
    } else {
        session.reporter.plan(&plan);
        if args.sql && plan.steps.iter().all(|s| s.preview.is_empty()) {
            session.reporter.result(
                &serde_json::json!({ "sql": [] }),
                "\nSQL preview: no step runs SQL or a migrator command (no `migrate` or `sql` step will run)",
            );
        }
    }
    Ok(Exit::Ok)
}
