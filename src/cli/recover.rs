//! `recover`: finish every unfinished run of the environment from its journal.

use serde_json::json;

use super::Global;
use super::exit::{Exit, eprint};
use super::session::Session;
use crate::engine::journal::{RunStatus, open_runs};
use crate::engine::{EngineError, cancel, lock, run};

pub async fn recover(global: &Global) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let ctx = session.context(cancel::on_signals())?;
    let runs = open_runs(&ctx.state_dir, &ctx.environment)?;
    if runs.is_empty() {
        let halted = crate::engine::journal::halted_runs(&ctx.state_dir, &ctx.environment)?;
        session.result(
            &json!({"environment": ctx.environment, "recovered": []}),
            &if let Some(run) = halted.first() {
                format!(
                    "nothing to recover in `{env}`; run {} is halted for a human: `cutover resume -e {env}` or `cutover rollback -e {env}`",
                    run.run_id(),
                    env = ctx.environment
                )
            } else {
                format!(
                    "nothing to recover in `{}`: every run is finished",
                    ctx.environment
                )
            },
        );
        return Ok(Exit::Ok);
    }
    // A lock left by a dead runner is taken over; a live holder is never overridden.
    let guard = lock::acquire(
        &ctx.state_dir,
        &ctx.environment,
        &crate::engine::journal::new_run_id(),
        "recover",
        ctx.lock_lease,
    )?;
    let db_lock = lock::acquire_in_database(&ctx).await?;
    let mut exit = Exit::Ok;
    let mut recovered = Vec::new();
    for record in &runs {
        let outcome = run::recover(&ctx, record).await?;
        let line = match outcome.status {
            RunStatus::Succeeded => {
                format!(
                    "run {}: every step had finished; closed as succeeded",
                    outcome.run_id
                )
            }
            RunStatus::RolledBack => {
                if exit == Exit::Ok {
                    exit = Exit::RolledBack;
                }
                format!(
                    "run {}: rolled back ({})",
                    outcome.run_id,
                    if outcome.undone.is_empty() {
                        "nothing needed undoing".to_owned()
                    } else {
                        outcome.undone.join("; ")
                    }
                )
            }
            RunStatus::Halted => {
                exit = Exit::RollbackIncomplete;
                let at = outcome.halted_at.clone().unwrap_or_default();
                eprint(&format!(
                    "run {}: rolled back to its point of no return ({}) and HALTED for a human at step `{at}`\nnext: `cutover resume -e {env}` continues at step `{at}`; `cutover rollback -e {env}` undoes the rest; see runbooks/halted-run.md",
                    outcome.run_id,
                    if outcome.undone.is_empty() {
                        "nothing needed undoing".to_owned()
                    } else {
                        outcome.undone.join("; ")
                    },
                    env = ctx.environment
                ));
                format!("run {}: halted at step `{at}`", outcome.run_id)
            }
            RunStatus::RollbackFailed => {
                exit = Exit::RollbackIncomplete;
                eprint(&format!(
                    "error: run {}: rollback incomplete; still to undo: {}\nhint: follow runbooks/rollback-by-hand.md, then run `cutover recover -e {}` again",
                    outcome.run_id,
                    outcome.left.join("; "),
                    ctx.environment
                ));
                format!("run {}: rollback incomplete", outcome.run_id)
            }
        };
        recovered.push(json!({"run_id": outcome.run_id, "status": outcome.status.as_str(), "undone": outcome.undone, "left": outcome.left}));
        session.result(
            &json!({"environment": ctx.environment, "run": recovered.last()}),
            &line,
        );
    }
    drop(db_lock);
    guard.release();
    Ok(exit)
}
