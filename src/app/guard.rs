//! What every run checks before it starts: no other run holds the lock, no earlier run is
//! unfinished or halted, and the environment's window admits it.

use crate::config::Config;
use crate::engine::journal::{halted_runs, open_runs};
use crate::engine::window::{self, Direction, OutsideWindow};
use crate::engine::{Context, EngineError, lock, shared_state};

/// Before the plan is shown: the shared journals copied in, and a refusal while another
/// run holds the lock (here or, with a blob lock, on another runner) or an earlier run is
/// unfinished or halted.
pub(crate) async fn before_plan(ctx: &Context) -> Result<(), EngineError> {
    shared_state::sync(ctx, true).await?;
    ensure_free(ctx)
}

/// Once confirmed: the run's id and its locks, taken; then, under them, the journals read
/// again so a run that another runner started meanwhile is seen (`unfinished`: refuse a
/// halted run too, as a new run must).
pub(crate) async fn lock_for_run(
    ctx: &Context,
    run_id: &str,
    command: &str,
    halted_too: bool,
) -> Result<lock::RunLocks, EngineError> {
    let locks = lock::RunLocks::acquire(ctx, run_id, command).await?;
    shared_state::sync(ctx, false).await?;
    if halted_too {
        ensure_not_halted(ctx)?;
    }
    ensure_none_open(ctx)?;
    Ok(locks)
}

/// Refuses to start while another run holds the lock or an earlier run is unfinished.
pub(crate) fn ensure_free(ctx: &Context) -> Result<(), EngineError> {
    let live_holder = || -> Result<Option<lock::LockInfo>, EngineError> {
        Ok(
            lock::read(&lock::lock_path(&ctx.state_dir, &ctx.environment))?
                .filter(|holder| !holder.stale()),
        )
    };
    if let Some(holder) = live_holder()? {
        return Err(lock::LockError::Held(Box::new(holder)).into());
    }
    match ensure_no_unfinished(ctx) {
        // A run that took the lock between the two reads has an open journal because it is
        // running, not because it died: say who holds the lock.
        Err(EngineError::Unfinished { .. }) if let Some(holder) = live_holder()? => {
            Err(lock::LockError::Held(Box::new(holder)).into())
        }
        other => other,
    }
}

pub(crate) fn ensure_no_unfinished(ctx: &Context) -> Result<(), EngineError> {
    ensure_not_halted(ctx)?;
    ensure_none_open(ctx)
}

fn ensure_not_halted(ctx: &Context) -> Result<(), EngineError> {
    if let Some(run) = halted_runs(&ctx.state_dir, &ctx.environment)?.first()
        && let Some(halt) = run.halted()
    {
        return Err(EngineError::Halted {
            run_id: run.run_id(),
            environment: ctx.environment.clone(),
            step: halt.step,
            reason: halt.reason,
        });
    }
    Ok(())
}

fn ensure_none_open(ctx: &Context) -> Result<(), EngineError> {
    match open_runs(&ctx.state_dir, &ctx.environment)?.first() {
        Some(run) => Err(EngineError::Unfinished {
            run_id: run.run_id(),
            environment: ctx.environment.clone(),
            path: run.path.display().to_string(),
        }),
        None => Ok(()),
    }
}

/// Applies the environment's `window:` to a command going `direction` (`what` names it):
/// refuses a forward run outside the window unless forced with a `reason`, and returns what
/// the run's journal records when it goes on outside the window.
pub(crate) fn check_window(
    config: &Config,
    environment: &str,
    what: &str,
    direction: Direction,
    reason: Option<&str>,
) -> Result<Option<OutsideWindow>, EngineError> {
    let env = config.environment(environment)?;
    window::admit(
        env.window.as_ref().map(|w| w.value.as_str()),
        environment,
        what,
        direction,
        reason,
        window::now(),
    )
    .map_err(EngineError::Plan)
}
