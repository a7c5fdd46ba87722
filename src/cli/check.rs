//! `check`: config, pipeline, references, adapters and reachability, for one environment
//! or all of them. Touches nothing.

use serde_json::json;

use super::Global;
use super::exit::{Exit, eprint, report_error};
use super::session::{Session, load_config};
use crate::adapters::azure::identity;
use crate::adapters::reference::Resolver;
use crate::engine::{EngineError, cancel, plan};

pub(crate) async fn check(
    global: &Global,
    limit: std::time::Duration,
) -> Result<Exit, EngineError> {
    let config = load_config(global)?;
    let envs: Vec<String> = match &global.env {
        Some(e) => vec![e.clone()],
        None => config.file.environments.keys().cloned().collect(),
    };
    let mut exit = Exit::Ok;
    let mut results = Vec::new();
    for env in envs {
        let mut g = global.clone();
        g.env = Some(env.clone());
        let outcome = async {
            let session = Session::open(&g)?;
            let pipeline = session.pipeline(None)?;
            let ctx = session.context(cancel::on_signals())?;
            let plan = plan::build(&ctx, &pipeline, None).await?;
            // The `azure:` block is read without Key Vault: a sign-in setting read from
            // Key Vault would need a sign-in first.
            let resolver = Resolver {
                config_path: &session.config.path,
                base_dir: &session.config.dir,
                redactor: &ctx.redactor,
                azure: None,
            };
            let azure = identity::check_environment(&session.config, &env, &resolver)
                .await
                .map_err(|e| EngineError::Plan(format!("Azure sign-in: {e}")))?;
            Ok::<_, EngineError>((session, plan, azure))
        };
        // Remote reads can take seconds each: a terminal shows what is being waited on,
        // and the whole check of an environment has a limit.
        let waiting = crate::waiting::spinner(format!(
            "checking `{env}`: references, database, platform, backups"
        ));
        let outcome = match tokio::time::timeout(limit, outcome).await {
            Ok(outcome) => outcome,
            Err(_) => Err(EngineError::Plan(format!(
                "no answer within {}: a database, platform, backup store or vault of `{env}` cannot be reached (`--timeout` waits longer; `-v` shows the requests)",
                humantime::format_duration(limit)
            ))),
        };
        waiting.finish_and_clear();
        match outcome {
            Ok((session, plan, azure)) => {
                let signed_in = azure
                    .as_ref()
                    .map(|name| format!("; Azure credential: {name}"))
                    .unwrap_or_default();
                session.result(
                    &json!({"environment": env, "ok": true, "pending": plan.database.pending.len(), "azure_credential": azure}),
                    &format!(
                        "ok: `{env}` — config, pipeline `{}`, references, database, platform and backups check out ({} pending migration(s)){signed_in}",
                        plan.pipeline,
                        plan.database.pending.len()
                    ),
                );
                results.push(env);
            }
            Err(e) => {
                eprint(&format!("environment `{env}`:"));
                let code = report_error(&e, "check");
                if exit == Exit::Ok {
                    exit = code;
                }
            }
        }
    }
    Ok(exit)
}
