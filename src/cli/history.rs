//! `history`: past runs, newest first, from the journal.

use serde_json::json;

use super::exit::Exit;
use super::session::{Session, load_config};
use super::{Global, HistoryArgs, Output};
use tokio_util::sync::CancellationToken;

use crate::config::deploy_file::LockKind;
use crate::engine::journal::{Record, all_runs};
use crate::engine::liveness::{Holders, Liveness};
use crate::engine::{EngineError, shared_state};

pub(crate) async fn history(global: &Global, args: &HistoryArgs) -> Result<Exit, EngineError> {
    let mut global = global.clone();
    if args.json {
        global.output = Output::Json;
    }
    let config = load_config(&global)?;
    // A misspelt environment is an error, not an empty history.
    if let Some(name) = &global.env {
        config.environment(name)?;
    }
    let (reporter, _) = super::session::reporter(&global)?;
    // Environments whose journal lives in blob storage: their runs, from every runner,
    // are copied into the state folder first, and the blob lease names the live one.
    let mut leases = std::collections::BTreeMap::new();
    for (name, env) in &config.file.environments {
        let shared = env
            .lock
            .as_ref()
            .is_some_and(|l| l.kind == Some(LockKind::AzureBlob));
        if shared && global.env.as_deref().is_none_or(|e| e == name) {
            let mut one = global.clone();
            one.env = Some(name.clone());
            let ctx = Session::open(&one)?.context(CancellationToken::new())?;
            shared_state::sync(&ctx, false).await?;
            if args.target.is_none() {
                leases.insert(name.clone(), Holders::read_with_lease(&ctx).await?.lease);
            }
        }
    }
    let dir = match &args.target {
        Some(target) => {
            let env = match &global.env {
                Some(e) => e.clone(),
                None => config.default_environment()?.to_owned(),
            };
            crate::app::fleet::target_state_dir(&config.state_dir(), &env, target)
        }
        None => config.state_dir(),
    };
    let runs = all_runs(&dir)?;
    let mut holders = std::collections::BTreeMap::new();
    let mut rows = Vec::new();
    let mut text = String::new();
    for run in runs
        .iter()
        .rev()
        .filter(|r| {
            global
                .env
                .as_deref()
                .is_none_or(|e| r.environment() == Some(e))
        })
        .take(args.limit)
    {
        let (command, environment, user) = match run.records.first() {
            Some(Record::RunStarted {
                command,
                environment,
                user,
                host,
                ..
            }) => (
                command.clone(),
                environment.clone(),
                format!("{user}@{host}"),
            ),
            _ => ("?".into(), "?".into(), "?".into()),
        };
        let confirmed = run.records.iter().find_map(|r| match r {
            Record::Fact {
                fact: crate::fact::Fact::Confirmed { how, by },
                ..
            } => Some(format!("{by}, {how}")),
            _ => None,
        });
        let code = run.records.iter().rev().find_map(|r| match r {
            Record::Fact {
                fact:
                    crate::fact::Fact::CodeReleased {
                        version, previous, ..
                    },
                ..
            } => Some((version.clone(), previous.clone())),
            _ => None,
        });
        let failed = run.records.iter().find_map(|r| match r {
            Record::StepFailed { id, error, .. } => Some((id.clone(), error.clone())),
            _ => None,
        });
        let halted = run.halted().is_some();
        let live = if run.status().is_none() && !halted {
            if !holders.contains_key(&environment) {
                let mut h = Holders::read(&dir, &environment)?;
                h.lease = leases.get(&environment).cloned().flatten();
                holders.insert(environment.clone(), h);
            }
            Liveness::of(run, &holders[&environment]).running().cloned()
        } else {
            None
        };
        let status = if halted {
            "halted (`cutover resume` or `cutover rollback`)".to_owned()
        } else if let Some(live) = &live {
            live.short()
        } else {
            run.status()
                .map_or("unfinished (run `cutover recover`)", |s| s.as_str())
                .to_owned()
        };
        let started = run.started_at();
        let seconds = match (started, run.finished_at()) {
            (Some(a), Some(b)) => Some((b - a).num_milliseconds() as f64 / 1000.0),
            _ => None,
        };
        rows.push(json!({
            "run_id": run.run_id(), "environment": environment, "command": command,
            "status": if halted { Some("halted") } else if live.is_some() { Some("running") } else { run.status().map(super::super::engine::journal::RunStatus::as_str) }, "started_at": started,
            "step": live.as_ref().and_then(|l| l.activity.step()),
            "seconds": seconds, "failed_step": failed.as_ref().map(|f| &f.0), "error": failed.as_ref().map(|f| &f.1),
            "journal": run.path.display().to_string(), "user": user, "confirmed": confirmed,
            "code": code.as_ref().map(|(v, p)| json!({"version": v, "previous": p})),
        }));
        // A run that did not succeed put the code back (or left it for `recover`): the
        // version it released is not live because of it.
        let kept = run.status() == Some(crate::engine::journal::RunStatus::Succeeded);
        text.push_str(&row(
            [
                &run.run_id(),
                &environment,
                &command,
                &status,
                &user,
                &seconds.map_or_else(String::new, |s| format!("{s:.1}s")),
            ],
            &format!(
                "{}{}{}",
                code.as_ref().map_or_else(String::new, |(v, p)| format!(
                    "  code {v}{}{}",
                    p.as_ref()
                        .filter(|p| *p != v)
                        .map_or_else(String::new, |p| format!(" (was {p})")),
                    if kept { "" } else { ", not kept" }
                )),
                confirmed
                    .as_ref()
                    .map_or_else(String::new, |c| format!("  confirmed by {c}")),
                failed.map_or_else(String::new, |(id, e)| format!("  failed at `{id}`: {e}"))
            ),
        ));
    }
    if rows.is_empty() {
        text = "no runs yet".into();
    } else {
        text.insert_str(
            0,
            &row(
                ["RUN", "ENVIRONMENT", "COMMAND", "STATUS", "BY", "TIME"],
                "",
            ),
        );
    }
    reporter.result(&json!({"runs": rows}), &text);
    Ok(Exit::Ok)
}

/// One line of the table, the header included; `after`: what follows the last column.
fn row(columns: [&str; 6], after: &str) -> String {
    let [run, environment, command, status, by, time] = columns;
    format!("{run:<28} {environment:<12} {command:<14} {status:<12} {by:<16} {time}{after}\n")
}
