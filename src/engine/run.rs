//! Executing a plan: journal, steps, compensation stack, rollback; and `recover`, which
//! finishes a run that died from its journal alone.

use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::instrument;

use super::cancel::RollbackSignals;
use super::compensation::Compensation;
use super::context::Context;
use super::error::{EngineError, StepError};
use super::journal::{Journal, Record, RunRecord, RunStatus};
use super::lock::{hostname, username};
use super::plan::Plan;
use crate::config::{Pipeline, Step};
use crate::report::{Event, ms};
use crate::steps::{self, RunState};

/// What `cutover rollback` goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTarget {
    /// A schema version (`None`: the empty schema).
    Version(Option<i64>),
    /// A backup id.
    Backup(String),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: RunStatus,
    pub journal: std::path::PathBuf,
    /// The step that failed and why.
    pub failure: Option<(String, String)>,
    /// True when the run stopped because of Ctrl-C or SIGTERM.
    pub interrupted: bool,
    /// Undo actions that ran.
    pub undone: Vec<String>,
    /// Undo actions that failed or never ran because an earlier one failed.
    pub left: Vec<String>,
    /// One line per step that finished.
    pub results: Vec<(String, String)>,
}

struct Pending {
    index: usize,
    id: String,
    action: Compensation,
}

/// Runs the pipeline the plan was made from.
#[instrument(skip_all, fields(environment = %ctx.environment))]
pub async fn execute(
    ctx: &Context,
    pipeline: &Pipeline,
    plan: &Plan,
    command: &str,
    run_id: String,
    rollback_target: Option<RollbackTarget>,
) -> Result<RunOutcome, EngineError> {
    let mut journal = Journal::create(&ctx.state_dir, &run_id, ctx.redactor.clone())?;
    if let Some(shared) = &ctx.shared {
        journal.mirror_to(shared.journal(&run_id).await?);
    }
    journal
        .write(&Record::RunStarted {
            at: Utc::now(),
            run_id: run_id.clone(),
            project: ctx.project.clone(),
            environment: ctx.environment.clone(),
            command: command.to_owned(),
            pipeline: pipeline.name.clone(),
            steps: pipeline.steps.iter().map(|s| s.id.clone()).collect(),
            plan_digest: plan.digest.clone(),
            user: username(),
            host: hostname(),
        })
        .await?;
    ctx.report(Event::RunStarted {
        run_id: run_id.clone(),
        environment: ctx.environment.clone(),
        pipeline: pipeline.name.clone(),
    });
    let started = Instant::now();
    let deadline = pipeline.timeout.map(|t| started + t.get());
    let mut state = RunState {
        rollback_target,
        validations: steps::validate::pipeline_checks(ctx, pipeline, plan),
        ..RunState::default()
    };
    let mut stack: Vec<Pending> = Vec::new();
    let mut failure = None;
    let mut results = Vec::new();
    let total = pipeline.steps.len();
    for (index, step) in pipeline.steps.iter().enumerate() {
        let planned = &plan.steps[index];
        if let Some(reason) = &planned.skipped {
            journal
                .write(&Record::StepSkipped {
                    at: Utc::now(),
                    index,
                    id: step.id.clone(),
                })
                .await?;
            ctx.report(Event::StepSkipped {
                id: step.id.clone(),
                reason: reason.clone(),
            });
            continue;
        }
        ctx.report(Event::StepStarted {
            index,
            total,
            id: step.id.clone(),
            uses: step.kind().name().to_owned(),
            summary: planned.summary.clone(),
        });
        let step_start = Instant::now();
        if ctx.cancel.is_cancelled() {
            failure = Some((step.id.clone(), StepError::Cancelled.to_string()));
            ctx.report(Event::StepFailed {
                id: step.id.clone(),
                elapsed_ms: 0,
                error: "interrupted before the step started".into(),
            });
            break;
        }
        let compensation = match steps::prepare(ctx, step, &mut state).await {
            Ok(c) => c,
            Err(e) => {
                failure =
                    Some(step_failed(ctx, &mut journal, index, &step.id, step_start, &e).await?);
                break;
            }
        };
        journal
            .write(&Record::StepStarted {
                at: Utc::now(),
                index,
                id: step.id.clone(),
                uses: step.kind().name().to_owned(),
                compensation: compensation.clone(),
            })
            .await?;
        let result = run_step(ctx, step, &mut state, deadline).await;
        match result {
            Ok(message) => {
                let message = ctx.redactor.redact(&message);
                journal
                    .write(&Record::StepFinished {
                        at: Utc::now(),
                        index,
                        id: step.id.clone(),
                        message: message.clone(),
                    })
                    .await?;
                ctx.report(Event::StepFinished {
                    id: step.id.clone(),
                    elapsed_ms: ms(step_start.elapsed()),
                    message: message.clone(),
                });
                results.push((step.id.clone(), message));
                if let Some(action) = compensation {
                    stack.push(Pending {
                        index,
                        id: step.id.clone(),
                        action,
                    });
                }
            }
            Err(e) => {
                failure =
                    Some(step_failed(ctx, &mut journal, index, &step.id, step_start, &e).await?);
                if let Some(action) = compensation.filter(Compensation::undoes_failed_step) {
                    stack.push(Pending {
                        index,
                        id: step.id.clone(),
                        action,
                    });
                }
                break;
            }
        }
    }
    let interrupted = ctx.cancel.is_cancelled();
    let (status, undone, left) = match &failure {
        None => (RunStatus::Succeeded, Vec::new(), Vec::new()),
        Some((id, error)) => {
            let reason = format!("step `{id}` failed: {error}");
            roll_back(ctx, &mut journal, stack, &reason).await?
        }
    };
    journal
        .write(&Record::RunFinished {
            at: Utc::now(),
            status,
        })
        .await?;
    ctx.report(Event::RunFinished {
        run_id: run_id.clone(),
        status: status.as_str().into(),
        elapsed_ms: ms(started.elapsed()),
    });
    Ok(RunOutcome {
        run_id,
        status,
        journal: journal.path().to_owned(),
        failure,
        interrupted,
        undone,
        left,
        results,
    })
}

/// Records and reports a step's failure; returns the step id and the masked error.
async fn step_failed(
    ctx: &Context,
    journal: &mut Journal,
    index: usize,
    id: &str,
    started: Instant,
    error: &StepError,
) -> Result<(String, String), EngineError> {
    let error = ctx.redactor.redact(&error.to_string());
    journal
        .write(&Record::StepFailed {
            at: Utc::now(),
            index,
            id: id.to_owned(),
            error: error.clone(),
        })
        .await?;
    ctx.report(Event::StepFailed {
        id: id.to_owned(),
        elapsed_ms: ms(started.elapsed()),
        error: error.clone(),
    });
    Ok((id.to_owned(), error))
}

/// Runs one step with its timeout, retries and cancellation.
async fn run_step(
    ctx: &Context,
    step: &Step,
    state: &mut RunState,
    deadline: Option<Instant>,
) -> Result<String, StepError> {
    let mut attempt = 0;
    loop {
        let limit = match (
            step.timeout
                .map(super::super::config::duration::Duration::get),
            deadline,
        ) {
            (Some(t), Some(d)) => Some(t.min(d.saturating_duration_since(Instant::now()))),
            (Some(t), None) => Some(t),
            (None, Some(d)) => Some(d.saturating_duration_since(Instant::now())),
            (None, None) => None,
        };
        let work = steps::run(ctx, step, state);
        let result = tokio::select! {
            r = async {
                match limit {
                    Some(limit) => tokio::time::timeout(limit, work)
                        .await
                        .unwrap_or_else(|_| Err(StepError::Timeout(limit.into()))),
                    None => work.await,
                }
            } => r,
            () = ctx.cancel.cancelled() => Err(StepError::Cancelled),
        };
        match result {
            Err(e) if e.is_transient() && attempt < step.retries => {
                attempt += 1;
                let wait = Duration::from_millis(500 * 2u64.pow(attempt.min(5)))
                    .min(Duration::from_secs(15));
                ctx.report(Event::StepRetry {
                    id: step.id.clone(),
                    attempt,
                    error: ctx.redactor.redact(&e.to_string()),
                    wait_ms: ms(wait),
                });
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = ctx.cancel.cancelled() => return Err(StepError::Cancelled),
                }
            }
            other => return other,
        }
    }
}

/// Runs compensations newest first. Stops at the first that fails: what is left (say,
/// maintenance still on) is the safe state for a human to take over from.
async fn roll_back(
    ctx: &Context,
    journal: &mut Journal,
    stack: Vec<Pending>,
    reason: &str,
) -> Result<(RunStatus, Vec<String>, Vec<String>), EngineError> {
    journal
        .write(&Record::RollbackStarted {
            at: Utc::now(),
            reason: reason.to_owned(),
        })
        .await?;
    ctx.report(Event::RollbackStarted {
        reason: reason.to_owned(),
        actions: stack.len(),
    });
    let mut undone = Vec::new();
    let mut left = Vec::new();
    let mut failed = false;
    let mut signals = RollbackSignals::start();
    let total = stack.len();
    for (done, pending) in stack.into_iter().rev().enumerate() {
        let action = pending.action.describe();
        if failed {
            left.push(format!("{action} (step `{}`, not attempted)", pending.id));
            continue;
        }
        journal
            .write(&Record::CompensationStarted {
                at: Utc::now(),
                index: pending.index,
                id: pending.id.clone(),
            })
            .await?;
        ctx.report(Event::CompensationStarted {
            id: pending.id.clone(),
            action: action.clone(),
        });
        // A signal during the rollback warns; the next one abandons it (see `cancel`).
        let warn = || {
            ctx.report(Event::Warning {
                message: format!(
                    "rollback in progress: {} undo action(s) left, now: {action}; send the signal again (Ctrl-C) to abandon the rollback and leave the rest to `cutover recover`",
                    total - done
                ),
            });
        };
        let result = tokio::select! {
            biased;
            r = run_compensation(ctx, &pending) => r,
            () = signals.abandoned(warn) => Err(StepError::Failed(
                "rollback abandoned by a signal while this action ran; it may be partly done and runs again from its start on `cutover recover`".into(),
            )),
        };
        match result {
            Ok(_) => {
                journal
                    .write(&Record::CompensationFinished {
                        at: Utc::now(),
                        index: pending.index,
                        id: pending.id.clone(),
                    })
                    .await?;
                ctx.report(Event::CompensationFinished {
                    id: pending.id.clone(),
                    action: action.clone(),
                    error: None,
                });
                undone.push(action);
            }
            Err(e) => {
                let error = ctx.redactor.redact(&e.to_string());
                journal
                    .write(&Record::CompensationFailed {
                        at: Utc::now(),
                        index: pending.index,
                        id: pending.id.clone(),
                        error: error.clone(),
                    })
                    .await?;
                ctx.report(Event::CompensationFinished {
                    id: pending.id.clone(),
                    action: action.clone(),
                    error: Some(error.clone()),
                });
                left.push(format!("{action} (step `{}`) FAILED: {error}", pending.id));
                failed = true;
            }
        }
    }
    let status = if failed {
        RunStatus::RollbackFailed
    } else {
        RunStatus::RolledBack
    };
    Ok((status, undone, left))
}

/// Compensations are idempotent, so transient failures are retried a few times.
async fn run_compensation(ctx: &Context, pending: &Pending) -> Result<String, StepError> {
    let mut attempt = 0;
    loop {
        match pending.action.run(ctx, &pending.id).await {
            Err(e) if e.is_transient() && attempt < 3 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt as u32))).await;
            }
            other => return other,
        }
    }
}

/// Finishes a run that died: rolls back what it did, or closes it if every step had
/// finished. Running it on a finished run does nothing.
pub async fn recover(ctx: &Context, run: &RunRecord) -> Result<RunOutcome, EngineError> {
    let run_id = run.run_id();
    let mut outcome = RunOutcome {
        run_id: run_id.clone(),
        status: run.status().unwrap_or(RunStatus::RolledBack),
        journal: run.path.clone(),
        failure: None,
        interrupted: false,
        undone: Vec::new(),
        left: Vec::new(),
        results: Vec::new(),
    };
    if !run.needs_recover() {
        return Ok(outcome);
    }
    let mut steps_total = None;
    let mut started: Vec<(usize, String, Option<Compensation>)> = Vec::new();
    let mut finished = std::collections::HashSet::new();
    let mut skipped = std::collections::HashSet::new();
    let mut failed = std::collections::HashMap::new();
    let mut compensated = std::collections::HashSet::new();
    let mut rollback_started = false;
    for record in &run.records {
        match record {
            Record::RunStarted { steps, .. } => steps_total = Some(steps.len()),
            Record::StepStarted {
                index,
                id,
                compensation,
                ..
            } => {
                started.push((*index, id.clone(), compensation.clone()));
            }
            Record::StepFinished { index, .. } => {
                finished.insert(*index);
            }
            Record::StepSkipped { index, .. } => {
                skipped.insert(*index);
            }
            Record::StepFailed {
                index, id, error, ..
            } => {
                failed.insert(*index, (id.clone(), error.clone()));
            }
            Record::CompensationFinished { index, .. } => {
                compensated.insert(*index);
            }
            Record::RollbackStarted { .. } => rollback_started = true,
            _ => {}
        }
    }
    let mut journal = Journal::reopen(&run.path, ctx.redactor.clone())?;
    if let Some(shared) = &ctx.shared {
        journal.mirror_to(shared.journal(&run.run_id()).await?);
    }
    let all_done = steps_total.is_some_and(|n| finished.len() + skipped.len() == n);
    if all_done && failed.is_empty() && !rollback_started {
        journal
            .write(&Record::RunFinished {
                at: Utc::now(),
                status: RunStatus::Succeeded,
            })
            .await?;
        outcome.status = RunStatus::Succeeded;
        return Ok(outcome);
    }
    let stack: Vec<Pending> = started
        .into_iter()
        .filter(|(index, _, _)| !compensated.contains(index))
        .filter_map(|(index, id, action)| {
            let action = action?;
            // A step that reported its own failure is undone only when it may have acted.
            if failed.contains_key(&index) && !action.undoes_failed_step() {
                return None;
            }
            Some(Pending { index, id, action })
        })
        .collect();
    let reason = match failed.values().next() {
        Some((id, error)) => format!("recovering run {run_id}: step `{id}` had failed: {error}"),
        None => format!("recovering run {run_id}: the process running it died"),
    };
    outcome.failure = Some(("(recover)".into(), reason.clone()));
    let (status, undone, left) = roll_back(ctx, &mut journal, stack, &reason).await?;
    journal
        .write(&Record::RunFinished {
            at: Utc::now(),
            status,
        })
        .await?;
    ctx.report(Event::RunFinished {
        run_id: run_id.clone(),
        status: status.as_str().into(),
        elapsed_ms: 0,
    });
    outcome.status = status;
    outcome.undone = undone;
    outcome.left = left;
    Ok(outcome)
}
