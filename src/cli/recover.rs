//! `recover`: finish every unfinished run of the environment from its journal.

use serde_json::json;

use super::exit::{Exit, eprint};
use super::session::Session;
use super::{Global, RecoverArgs};
use crate::engine::journal::{RunStatus, open_runs};
use crate::engine::liveness::{Holders, Liveness};
use crate::engine::window::Direction;
use crate::engine::{EngineError, cancel, lock, shared_state};

pub(crate) async fn recover(global: &Global, args: &RecoverArgs) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let cancel = cancel::on_signals();
    let mut ctx = session.context(cancel.clone())?;
    shared_state::sync(&ctx, false).await?;
    refuse_live(&ctx).await?;
    if let Some(shared) = &ctx.shared {
        shared.ensure_free().await?;
    }
    // Finishing a dead run only ever goes back (or closes it): never held by the window.
    ctx.outside_window = crate::app::guard::check_window(
        &session.config,
        &session.environment,
        "`recover`",
        Direction::Back,
        None,
    )?;
    let mut exit = recover_runs(&session, &ctx, false).await?;
    if args.fleet {
        let resolver = crate::adapters::reference::Resolver {
            config_path: &session.config.path,
            base_dir: &session.config.dir,
            redactor: &ctx.redactor,
            azure: session.config.environment(&ctx.environment)?.azure.as_ref(),
        };
        let targets =
            crate::app::fleet::resolve(&session.config, &ctx.environment, &resolver).await?;
        session.reporter.sync_secrets();
        let mut recovered = 0;
        for target in &targets {
            let dir = crate::app::fleet::target_state_dir(
                &session.config.state_dir(),
                &ctx.environment,
                &target.name,
            );
            if open_runs(&dir, &ctx.environment)?.is_empty() {
                continue;
            }
            recovered += 1;
            session.result(
                &json!({"environment": ctx.environment, "target": target.name}),
                &format!("target `{}`:", target.name),
            );
            let mut tctx = crate::app::build::target_context(
                &session.config,
                &ctx.environment,
                target,
                session.reporter.clone(),
                ctx.redactor.clone(),
                cancel.clone(),
            )?;
            refuse_live(&tctx).await?;
            tctx.outside_window.clone_from(&ctx.outside_window);
            let one = recover_runs(&session, &tctx, true).await?;
            exit = exit.worst(one);
        }
        session.result(
            &json!({"environment": ctx.environment, "targets_recovered": recovered}),
            &format!(
                "fleet targets of `{}`: {recovered} of {} had unfinished runs",
                ctx.environment,
                targets.len()
            ),
        );
    }
    Ok(exit)
}

/// Refuses (exit 4) while an unfinished-looking run is alive: it is running, not dead, and
/// says so in the words `status` and `history` use.
async fn refuse_live(ctx: &crate::engine::Context) -> Result<(), EngineError> {
    let runs = open_runs(&ctx.state_dir, &ctx.environment)?;
    if runs.is_empty() {
        return Ok(());
    }
    let holders = Holders::read_with_lease(ctx).await?;
    match runs
        .iter()
        .find_map(|run| Liveness::of(run, &holders).running().cloned())
    {
        Some(live) => Err(lock::LockError::Running(format!(
            "{} is running, not unfinished: there is nothing to recover while it lives; wait for it to finish (`cutover status -e {}` shows where it is)",
            live.describe(),
            ctx.environment
        ))
        .into()),
        None => Ok(()),
    }
}

/// Finishes the unfinished runs of one state folder (the environment's, or a target's).
async fn recover_runs(
    session: &Session,
    ctx: &crate::engine::Context,
    quiet: bool,
) -> Result<Exit, EngineError> {
    let runs = open_runs(&ctx.state_dir, &ctx.environment)?;
    if runs.is_empty() && quiet {
        return Ok(Exit::Ok);
    }
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
    let locks =
        lock::RunLocks::acquire(ctx, &crate::engine::journal::new_run_id(), "recover").await?;
    let mut exit = Exit::Ok;
    let mut recovered = Vec::new();
    for record in &runs {
        let outcome = crate::engine::recover::recover(ctx, record).await?;
        exit = exit.worst(crate::app::outcome::for_run(
            outcome.status,
            outcome.interrupted,
        ));
        let line = match outcome.status {
            RunStatus::Succeeded => {
                format!(
                    "run {}: every step had finished; closed as succeeded",
                    outcome.run_id
                )
            }
            RunStatus::RolledBack => {
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
                eprint(&format!(
                    "{}: run {}: rollback incomplete; still to undo: {}\nhint: follow runbooks/rollback-by-hand.md, then run `cutover recover -e {}` again",
                    super::exit::error_label(),
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
    locks.release().await;
    Ok(exit)
}
