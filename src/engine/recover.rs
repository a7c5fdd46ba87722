//! `recover` and the rollback of a halted run: finishing, from its journal alone, a run
//! that died or that waits for a human.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::error::EngineError;
use super::journal::{Journal, Record, RunRecord, RunStatus};
use super::lock::{hostname, username};
use super::rollback::{Journaled, roll_back};
use super::run::{RunOutcome, check_state, finish, halt, outside_window};
use super::verify;
use crate::run::context::Context;
use crate::run::event::Event;
use crate::steps::RunState;

/// How long `recover` waits for a killed process group of a dead run to go.
const LEFTOVER_WAIT: Duration = Duration::from_secs(10);

/// Makes sure no process the dead run started still runs before anything is undone:
/// every process group of its journal that still runs on this host is killed (SIGKILL to
/// the group), waited for, and reported.
async fn stop_leftover_processes(ctx: &Context, run: &RunRecord) -> Result<(), EngineError> {
    let here = hostname();
    let mut seen = HashSet::new();
    let mut elsewhere = Vec::new();
    for record in &run.records {
        let Record::ProcessStarted {
            id,
            pgid,
            start_time,
            host,
            ..
        } = record
        else {
            continue;
        };
        if !seen.insert((*pgid, *start_time, host.clone())) {
            continue;
        }
        if *host != here {
            elsewhere.push(format!("{pgid} (step `{id}`) on `{host}`"));
            continue;
        }
        let spawned = crate::shell::Spawned {
            pgid: *pgid,
            start_time: *start_time,
        };
        match crate::shell::kill_group(spawned, LEFTOVER_WAIT).await {
            Ok(false) => {}
            Ok(true) => ctx.report(Event::Warning {
                message: format!(
                    "run {}: process group {pgid} of step `{id}` was still running; killed it before undoing anything",
                    run.run_id()
                ),
            }),
            Err(e) => {
                return Err(EngineError::ProcessesLeft(format!(
                    "run {}: process group {pgid} of step `{id}` still runs and cannot be stopped ({e}), so nothing was undone; stop it (`kill -KILL -- -{pgid}`), then run `cutover recover -e {}` again",
                    run.run_id(),
                    ctx.environment
                )));
            }
        }
    }
    if !elsewhere.is_empty() {
        ctx.report(Event::Warning {
            message: format!(
                "run {}: process groups started on another host cannot be checked from `{here}`; make sure they no longer run: {}",
                run.run_id(),
                elsewhere.join(", ")
            ),
        });
    }
    Ok(())
}

/// Finishes a run that died: rolls back what it did (back to its point of no return, if it
/// passed one, where it then halts), or closes it if every step had finished. Running it on
/// a finished or halted run does nothing.
pub(crate) async fn recover(ctx: &Context, run: &RunRecord) -> Result<RunOutcome, EngineError> {
    // The recovery's own time, for its closing line.
    let started = Instant::now();
    let mut outcome = RunOutcome {
        run_id: run.run_id(),
        status: run.status().unwrap_or(RunStatus::RolledBack),
        journal: run.path.clone(),
        failure: None,
        interrupted: false,
        undone: Vec::new(),
        left: Vec::new(),
        results: Vec::new(),
        halted_at: None,
        state_check: None,
        backup: None,
        kept: Vec::new(),
    };
    if !run.needs_recover() {
        if let Some(halt) = run.halted() {
            outcome.status = RunStatus::Halted;
            outcome.halted_at = Some(halt.step);
        }
        return Ok(outcome);
    }
    stop_leftover_processes(ctx, run).await?;
    let j = Journaled::read(run);
    outcome.backup.clone_from(&j.backup);
    outcome.kept = j.kept();
    let mut journal = Journal::reopen(&run.path, ctx.redactor.clone())?;
    if let Some(shared) = &ctx.shared {
        journal.mirror_to(shared.journal(&run.run_id()).await?);
    }
    outside_window(ctx, &mut journal).await?;
    let all_done = j
        .steps_total
        .is_some_and(|n| j.finished.len() + j.skipped.len() == n);
    if all_done && j.failed.is_empty() && !j.rollback_started {
        journal
            .write(&Record::RunFinished {
                at: Utc::now(),
                status: RunStatus::Succeeded,
            })
            .await?;
        outcome.status = RunStatus::Succeeded;
        return Ok(outcome);
    }
    let reason = match j.failed.values().next() {
        Some((id, error)) => format!(
            "recovering run {}: step `{id}` had failed: {error}",
            j.run_id
        ),
        None => format!("recovering run {}: the process running it died", j.run_id),
    };
    let floor = j.point_of_no_return.clone();
    outcome.failure = Some(("(recover)".into(), reason.clone()));
    let stack = j.stack(floor.as_ref().map(|(at, _)| *at));
    let (status, undone, left) = roll_back(ctx, &mut journal, stack, &reason).await?;
    outcome.undone = undone;
    outcome.left = left;
    outcome.status = status;
    if let Some((at, ponr)) = floor
        && status == RunStatus::RolledBack
    {
        let steps = run.steps();
        let resume_id = steps
            .get(at + 1)
            .cloned()
            .unwrap_or_else(|| "(end)".to_owned());
        let state = RunState {
            first_replicas: j.first_replicas.clone(),
            ..RunState::default()
        };
        halt(
            ctx,
            &mut journal,
            &state,
            at + 1,
            &resume_id,
            &format!("{reason}; rolled back to the point of no return `{ponr}`"),
        )
        .await?;
        outcome.status = RunStatus::Halted;
        outcome.halted_at = Some(resume_id);
        return Ok(outcome);
    }
    let before = verify::journaled(&run.records);
    check_state(ctx, &mut journal, before.as_ref(), &mut outcome).await?;
    finish(ctx, &mut journal, outcome, started).await
}

/// Undoes a halted run, all of it (past a point of no return too: a person asked for it),
/// and closes it as rolled back, or `rollback_failed` when an undo action fails.
pub(crate) async fn roll_back_halted(
    ctx: &Context,
    run: &RunRecord,
) -> Result<RunOutcome, EngineError> {
    let started = Instant::now();
    let Some(halt) = run.halted() else {
        return Err(EngineError::Plan(format!(
            "run {} is not halted; nothing to roll back",
            run.run_id()
        )));
    };
    let j = Journaled::read(run);
    let mut journal = Journal::reopen(&run.path, ctx.redactor.clone())?;
    if let Some(shared) = &ctx.shared {
        journal.mirror_to(shared.journal(&run.run_id()).await?);
    }
    outside_window(ctx, &mut journal).await?;
    let reason = format!(
        "rolling back halted run {} on request of {}: {}",
        j.run_id,
        username(),
        halt.reason
    );
    let (status, undone, left) = roll_back(ctx, &mut journal, j.stack(None), &reason).await?;
    let mut outcome = RunOutcome {
        run_id: j.run_id.clone(),
        status,
        journal: run.path.clone(),
        failure: Some((halt.step, halt.reason)),
        interrupted: false,
        undone,
        left,
        results: Vec::new(),
        halted_at: None,
        state_check: None,
        backup: j.backup.clone().or(halt.backup),
        kept: j.kept(),
    };
    let before = verify::journaled(&run.records);
    check_state(ctx, &mut journal, before.as_ref(), &mut outcome).await?;
    finish(ctx, &mut journal, outcome, started).await
}
