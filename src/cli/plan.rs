//! `plan`: the plan, touching nothing.

use super::exit::Exit;
use super::session::Session;
use super::{Global, Output, PlanArgs};
use crate::engine::{EngineError, cancel, plan};

pub async fn plan(global: &Global, args: PlanArgs) -> Result<Exit, EngineError> {
    let mut global = global.clone();
    if args.json {
        global.output = Output::Json;
    }
    let session = Session::open(&global)?;
    let pipeline = session.pipeline(args.pipeline.as_deref())?;
    let mut ctx = session.context(cancel::on_signals())?;
    let config = session.config.environment(&session.environment)?.rehearse;
    ctx.rehearsal = crate::rehearsal::run::standing_now(&ctx, config, &pipeline).await;
    let plan = plan::build(&ctx, &pipeline, None).await?;
    if let Some(out) = &args.out {
        let text = super::exit::redactor()
            .redact(&serde_json::to_string_pretty(&plan).expect("plan serializes"));
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
    }
    Ok(Exit::Ok)
}
