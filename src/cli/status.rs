//! `status`: what needs attention in an environment — a run in progress, a halted run
//! waiting for a human, an unfinished run for `recover`, who holds the lock — and how the
//! last run ended.

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Global;
use super::exit::Exit;
use super::session::Session;
use crate::engine::EngineError;
use crate::engine::journal::{all_runs, halted_runs, open_runs};
use crate::engine::liveness::{Holders, Liveness};

pub(crate) async fn status(global: &Global) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let env = &session.environment;
    let state_dir = session.config.state_dir();
    // Where the state is shared, the blob lease tells whether another runner's run lives.
    let holders = if session
        .config
        .environment(env)?
        .lock
        .as_ref()
        .is_some_and(|l| l.kind == Some(crate::config::deploy_file::LockKind::AzureBlob))
    {
        Holders::read_with_lease(&session.context(CancellationToken::new())?).await?
    } else {
        Holders::read(&state_dir, env)?
    };
    let mut text = Vec::new();
    let mut halted = Vec::new();
    for run in halted_runs(&state_dir, env)? {
        let Some(halt) = run.halted() else { continue };
        let done: Vec<_> = run
            .records
            .iter()
            .filter_map(|r| match r {
                crate::engine::journal::Record::StepFinished { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect();
        text.push(format!(
            "HALTED: run {} at step `{}`: {}\n  steps done: {}\n  journal: {}\n  next: `cutover resume -e {env}` continues at step `{}`; `cutover rollback -e {env}` undoes the run",
            run.run_id(),
            halt.step,
            halt.reason,
            if done.is_empty() { "none".to_owned() } else { done.join(", ") },
            run.path.display(),
            halt.step,
        ));
        halted.push(json!({
            "run_id": run.run_id(), "resume_at": halt.step, "reason": halt.reason,
            "steps_done": done, "journal": run.path.display().to_string(),
        }));
    }
    let mut unfinished = Vec::new();
    let mut running = Vec::new();
    for run in open_runs(&state_dir, env)? {
        if let Some(live) = Liveness::of(&run, &holders).running() {
            text.push(format!("RUNNING: {}", live.describe()));
            running.push(live.to_json());
            continue;
        }
        text.push(format!(
            "UNFINISHED: run {} ({}); `cutover recover -e {env}` finishes it",
            run.run_id(),
            run.status()
                .map_or("its process died", |_| "its rollback is incomplete"),
        ));
        unfinished.push(json!({"run_id": run.run_id(), "status": run.status().map(crate::engine::journal::RunStatus::as_str), "journal": run.path.display().to_string()}));
    }
    // Fleet targets run in state folders of their own.
    let mut targets = Vec::new();
    for name in crate::app::fleet::known_targets(&state_dir, env) {
        let dir = crate::app::fleet::target_state_dir(&state_dir, env, &name);
        let target_holders = Holders::read(&dir, env)?;
        for run in open_runs(&dir, env)? {
            if let Some(live) = Liveness::of(&run, &target_holders).running() {
                text.push(format!("RUNNING: target `{name}` {}", live.describe()));
                let mut value = live.to_json();
                value["target"] = json!(name);
                value["status"] = json!("running");
                targets.push(value);
                continue;
            }
            text.push(format!(
                "UNFINISHED: target `{name}` run {}; `cutover recover -e {env} --fleet` finishes it",
                run.run_id()
            ));
            targets.push(json!({"target": name, "run_id": run.run_id(), "status": "unfinished"}));
        }
        for run in halted_runs(&dir, env)? {
            text.push(format!(
                "HALTED: target `{name}` run {}; `cutover history -e {env} --target {name}` shows it",
                run.run_id()
            ));
            targets.push(json!({"target": name, "run_id": run.run_id(), "status": "halted"}));
        }
    }
    let holder = holders.file.clone();
    if let Some(holder) = &holder {
        text.push(format!("lock: {}", holder.describe()));
    }
    let last = all_runs(&state_dir)?
        .into_iter()
        .rev()
        .find(|r| r.environment() == Some(env.as_str()));
    let last_status = last.as_ref().map(|r| {
        if r.halted().is_some() {
            "halted"
        } else if Liveness::of(r, &holders).running().is_some() {
            "running"
        } else {
            r.status().map_or("unfinished", |s| s.as_str())
        }
    });
    if let (Some(run), Some(status)) = (&last, last_status) {
        text.push(format!("last run: {} {status}", run.run_id()));
    }
    if halted.is_empty()
        && unfinished.is_empty()
        && running.is_empty()
        && targets.is_empty()
        && holder.is_none()
    {
        text.insert(0, format!("`{env}`: nothing needs attention"));
    }
    session.result(
        &json!({
            "environment": env,
            "running": running,
            "halted": halted,
            "unfinished": unfinished,
            "targets": targets,
            "lock": holder.as_ref().map(|h| json!({"run_id": h.run_id, "command": h.command, "host": h.host, "user": h.user, "expires_at": h.expires_at})),
            "last_run": last.as_ref().map(|r| json!({"run_id": r.run_id(), "status": last_status})),
        }),
        &text.join("\n"),
    );
    Ok(Exit::Ok)
}
