//! Executing a plan: journal, steps, the compensation stack, and the rollback when a step
//! fails (`rollback.rs`); `recover.rs` finishes a run that died.

use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::instrument;

use super::decide::{self, Decider};
use super::error::EngineError;
use super::journal::{Choice, Journal, Record, RunRecord, RunStatus};
use super::lock::{hostname, username};
use super::rollback::{
    Journaled, Pending, journaling_processes, keeps_changes, keeps_failed_changes, roll_back,
};
use super::verify::{self, Before, StateCheck};
use crate::config::pipeline::OnFailure;
use crate::config::{Pipeline, Step};
use crate::fact::Fact;
use crate::run::compensation::Compensation;
use crate::run::context::Context;
use crate::run::error::StepError;
use crate::run::event::Event;
use crate::run::plan::{Plan, RollbackTarget};
use crate::steps::{self, RunState};
use crate::units::ms;

/// How a run ended.
#[derive(Debug, Clone)]
pub(crate) struct RunOutcome {
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
    /// The step a halted run resumes at.
    pub halted_at: Option<String>,
    /// After a complete rollback: the database compared with its fingerprint from before
    /// the run.
    pub state_check: Option<StateCheck>,
    /// The backup the run took, if it took one.
    pub backup: Option<String>,
    /// Steps that changed the database with no undo (`rollback: none`, a `sql` or
    /// `command` step without `undo:`): what they did stays, by the pipeline's choice.
    pub kept: Vec<String>,
}

/// Runs the pipeline the plan was made from.
#[instrument(skip_all, fields(environment = %ctx.environment))]
pub(crate) async fn execute(
    ctx: &Context,
    pipeline: &Pipeline,
    plan: &Plan,
    command: &str,
    run_id: String,
    rollback_target: Option<RollbackTarget>,
    decider: &dyn Decider,
) -> Result<RunOutcome, EngineError> {
    let mut journal = start(ctx, pipeline, plan, command, &run_id).await?;
    let scope = verify::scope(ctx, pipeline, rollback_target.as_ref()).await;
    let before = verify::before(ctx, &mut journal, scope).await?;
    let state = RunState {
        rollback_target,
        validations: steps::validate::pipeline_checks(ctx, pipeline, plan),
        ..RunState::default()
    };
    let run = Drive {
        ctx,
        pipeline,
        plan,
        decider,
        run_id,
        delegate: None,
        before,
        prunes: prunes(command),
    };
    run.drive(journal, state, Vec::new(), 0, None).await
}

/// Continues a halted run from the step it halted at, with the undo actions its journal
/// holds, in the same journal. The pipeline must have the steps the run started with.
#[instrument(skip_all, fields(environment = %ctx.environment))]
pub(crate) async fn resume(
    ctx: &Context,
    pipeline: &Pipeline,
    plan: &Plan,
    run: &RunRecord,
    decider: &dyn Decider,
) -> Result<RunOutcome, EngineError> {
    let Some(halt) = run.halted() else {
        return Err(EngineError::Plan(format!(
            "run {} is not halted; nothing to resume",
            run.run_id()
        )));
    };
    let ids: Vec<String> = pipeline.steps.iter().map(|s| s.id.clone()).collect();
    if ids != run.steps() {
        return Err(EngineError::Plan(format!(
            "pipeline `{}` has the steps [{}], but run {} was started with [{}]; resume it with the pipeline it started with (-p FILE), or undo it with `cutover rollback -e {}`",
            pipeline.name,
            ids.join(", "),
            run.run_id(),
            run.steps().join(", "),
            ctx.environment
        )));
    }
    let journaled = Journaled::read(run);
    let mut journal = Journal::reopen(&run.path, ctx.redactor.clone())?;
    if let Some(shared) = &ctx.shared {
        journal.mirror_to(shared.journal(&run.run_id()).await?);
    }
    journal
        .write(&Record::RunResumed {
            at: Utc::now(),
            from: halt.resume_from,
            user: username(),
            host: hostname(),
        })
        .await?;
    let run_id = run.run_id();
    ctx.report(Event::RunStarted {
        run_id: run_id.clone(),
        environment: ctx.environment.clone(),
        pipeline: pipeline.name.clone(),
    });
    outside_window(ctx, &mut journal).await?;
    let mut first_replicas = journaled.first_replicas.clone();
    first_replicas.extend(halt.first_replicas);
    if let Some(by) = &ctx.approved {
        decided(
            ctx,
            &mut journal,
            (halt.resume_from, &halt.step),
            Choice::Approve,
            true,
            by,
        )
        .await?;
    }
    let state = RunState {
        backup: halt.backup,
        first_replicas,
        validations: steps::validate::pipeline_checks(ctx, pipeline, plan),
        approved: ctx.approved.clone(),
        ..RunState::default()
    };
    let drive = Drive {
        ctx,
        pipeline,
        plan,
        decider,
        run_id,
        delegate: None,
        before: verify::journaled(&run.records),
        prunes: run.command().is_some_and(prunes),
    };
    let stack = journaled.stack(None);
    drive
        .drive(
            journal,
            state,
            stack,
            halt.resume_from,
            journaled.point_of_no_return,
        )
        .await
}

/// Work the engine hands a step over to: a fleet run's per-target phase, which stands in
/// the fleet's own run as one step with no undo of its own.
#[async_trait::async_trait]
pub(crate) trait Delegate: Send + Sync {
    /// Does the work; `Err` fails the step (and the run rolls back its own steps).
    async fn run(&self) -> Result<String, StepError>;
}

/// Opens a new run's journal (mirrored to the shared store when there is one) with its
/// `run_started` record, and reports the start.
async fn start(
    ctx: &Context,
    pipeline: &Pipeline,
    plan: &Plan,
    command: &str,
    run_id: &str,
) -> Result<Journal, EngineError> {
    let mut journal = Journal::create(&ctx.state_dir, run_id, ctx.redactor.clone())?;
    if let Some(shared) = &ctx.shared {
        journal.mirror_to(shared.journal(run_id).await?);
    }
    journal
        .write(&Record::RunStarted {
            at: Utc::now(),
            run_id: run_id.to_owned(),
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
        run_id: run_id.to_owned(),
        environment: ctx.environment.clone(),
        pipeline: pipeline.name.clone(),
    });
    if let Some(how) = &ctx.confirmed {
        let fact = Fact::Confirmed {
            how: how.clone(),
            by: username(),
        };
        verify::record(ctx, &mut journal, fact).await?;
    }
    outside_window(ctx, &mut journal).await?;
    Ok(journal)
}

/// Records, and reports, that the run goes on outside its environment's window, when the
/// command found it so.
pub(super) async fn outside_window(
    ctx: &Context,
    journal: &mut Journal,
) -> Result<(), EngineError> {
    let Some(outside) = &ctx.outside_window else {
        return Ok(());
    };
    journal
        .write(&Record::OutsideWindow {
            at: Utc::now(),
            window: outside.window.clone(),
            forced: outside.forced,
            reason: outside.reason.clone(),
            user: outside.user.clone(),
        })
        .await?;
    ctx.report(Event::OutsideWindow(outside.clone()));
    Ok(())
}

/// Runs a pipeline whose step `index` is done by `delegate` instead of the step itself.
#[instrument(skip_all, fields(environment = %ctx.environment))]
#[allow(clippy::too_many_arguments)]
pub(crate) async fn execute_delegating(
    ctx: &Context,
    pipeline: &Pipeline,
    plan: &Plan,
    command: &str,
    run_id: String,
    index: usize,
    delegate: &dyn Delegate,
) -> Result<RunOutcome, EngineError> {
    let journal = start(ctx, pipeline, plan, command, &run_id).await?;
    let state = RunState::default();
    let run = Drive {
        ctx,
        pipeline,
        plan,
        decider: &decide::Nobody,
        run_id,
        delegate: Some((index, delegate)),
        // The fleet's own run changes no database: each target's run checks its own.
        before: None,
        prunes: false,
    };
    run.drive(journal, state, Vec::new(), 0, None).await
}

/// Where the walk over the steps stopped, and what it leaves for the ending.
struct Walked {
    journal: Journal,
    state: RunState,
    stack: Vec<Pending>,
    point_of_no_return: Option<(usize, String)>,
    /// The step that failed for good, and why.
    failure: Option<(String, String)>,
    /// Set when the failed step's decision was to halt.
    halt_at: Option<usize>,
    results: Vec<(String, String)>,
    kept: Vec<String>,
}

/// One run of a pipeline's steps, from a given step on.
struct Drive<'a> {
    ctx: &'a Context,
    pipeline: &'a Pipeline,
    plan: &'a Plan,
    decider: &'a dyn Decider,
    run_id: String,
    delegate: Option<(usize, &'a dyn Delegate)>,
    /// The database before the run, to compare with after a rollback.
    before: Option<Before>,
    /// Whether the store's retention runs when the run succeeds.
    prunes: bool,
}

/// Deploys (a fleet's target runs and release phases included) apply the store's
/// retention when they succeed; a `backup create` or a rollback leaves it to
/// `backup prune`.
fn prunes(command: &str) -> bool {
    command == "release" || command == "deploy" || command.starts_with("deploy --fleet (")
}

impl Drive<'_> {
    /// Runs the steps from `from`; on a failure, does what the step's `on_failure` says.
    async fn drive(
        &self,
        journal: Journal,
        state: RunState,
        stack: Vec<Pending>,
        from: usize,
        point_of_no_return: Option<(usize, String)>,
    ) -> Result<RunOutcome, EngineError> {
        let started = Instant::now();
        let walked = self
            .walk(journal, state, stack, from, point_of_no_return, started)
            .await?;
        self.end(walked, started).await
    }

    /// Runs the steps from `from` until one fails for good (rollback or halt chosen) or
    /// every step has run.
    async fn walk(
        &self,
        mut journal: Journal,
        mut state: RunState,
        mut stack: Vec<Pending>,
        from: usize,
        mut point_of_no_return: Option<(usize, String)>,
        started: Instant,
    ) -> Result<Walked, EngineError> {
        let ctx = self.ctx;
        let deadline = self.pipeline.timeout.map(|t| started + t.get());
        let mut failure = None;
        let mut halt_at = None;
        let mut results = Vec::new();
        let mut kept: Vec<String> = Vec::new();
        let total = self.pipeline.steps.len();
        let mut index = from;
        while index < total {
            let step = &self.pipeline.steps[index];
            let planned = &self.plan.steps[index];
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
                index += 1;
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
            // The traffic comes back only once the backup streaming from a snapshot is
            // stored and verified: a failed one fails the run before it does.
            if brings_traffic_back(step)
                && let Err(e) = self.finish_background(&mut journal).await?
            {
                ctx.report(Event::StepFailed {
                    id: step.id.clone(),
                    elapsed_ms: 0,
                    error: e.clone(),
                });
                failure = Some((step.id.clone(), e));
                break;
            }
            let outcome = self
                .attempt(
                    &mut journal,
                    &mut state,
                    &mut stack,
                    &mut kept,
                    index,
                    step,
                    deadline,
                )
                .await?;
            match outcome {
                (Ok(message), compensation) => {
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
                    if step.point_of_no_return {
                        journal
                            .write(&Record::PointOfNoReturn {
                                at: Utc::now(),
                                index,
                                id: step.id.clone(),
                            })
                            .await?;
                        point_of_no_return = Some((index, step.id.clone()));
                    }
                    index += 1;
                }
                (Err(StepError::AwaitingApproval(what)), _) if !ctx.cancel.is_cancelled() => {
                    let crate::config::pipeline::StepWith::Pause(with) = &step.with else {
                        unreachable!("only a pause step waits for approval")
                    };
                    let pause = decide::Pause {
                        step: step.id.clone(),
                        message: what.clone(),
                        done: results.iter().map(|(id, _)| id.clone()).collect(),
                        undo: stack
                            .iter()
                            .rev()
                            .filter(|p| {
                                point_of_no_return
                                    .as_ref()
                                    .is_none_or(|(at, _)| p.index > *at)
                            })
                            .map(|p| format!("{} (step `{}`)", p.action.describe(), p.id))
                            .collect(),
                        timeout: with.timeout(),
                    };
                    let (choice, user, error) = match self.decider.approve(&pause).await {
                        Some(decide::Approval::Continue(by)) => (Choice::Approve, by, None),
                        Some(decide::Approval::RollBack(by)) => (
                            Choice::Rollback,
                            by.clone(),
                            Some(format!("not approved: {by} chose to roll back")),
                        ),
                        Some(decide::Approval::NoAnswer) => (
                            Choice::Rollback,
                            "nobody".to_owned(),
                            Some(format!(
                                "not approved: no answer within {}",
                                humantime::format_duration(pause.timeout)
                            )),
                        ),
                        None => (
                            Choice::Halt,
                            username(),
                            Some(format!(
                                "waiting for approval: {what}; `cutover resume -e {} --approve --by NAME` goes on (within {} of now), `cutover rollback -e {}` undoes the run",
                                ctx.environment,
                                humantime::format_duration(pause.timeout),
                                ctx.environment
                            )),
                        ),
                    };
                    let asked = choice != Choice::Halt;
                    decided(ctx, &mut journal, (index, &step.id), choice, asked, &user).await?;
                    match error {
                        None => state.approved = Some(user),
                        Some(error) => {
                            let failed = step_failed(
                                ctx,
                                &mut journal,
                                index,
                                &step.id,
                                step_start,
                                &StepError::Failed(error),
                            )
                            .await?;
                            failure = Some(failed);
                            if choice == Choice::Halt {
                                halt_at = Some(index);
                            }
                            break;
                        }
                    }
                }
                (Err(e), compensation) => {
                    let cancelled = matches!(e, StepError::Cancelled) || ctx.cancel.is_cancelled();
                    let failed =
                        step_failed(ctx, &mut journal, index, &step.id, step_start, &e).await?;
                    if let Some(action) = compensation.filter(Compensation::undoes_failed_step) {
                        stack.push(Pending {
                            index,
                            id: step.id.clone(),
                            action,
                        });
                    }
                    // An interrupted run rolls back: whoever interrupted it is not waiting
                    // at a prompt.
                    let choice = if cancelled {
                        Choice::Rollback
                    } else {
                        self.decide(
                            &mut journal,
                            index,
                            step,
                            &failed,
                            &results,
                            &stack,
                            point_of_no_return.as_ref(),
                        )
                        .await?
                    };
                    match choice {
                        // A failed step is never approved: `ask` offers retry instead.
                        Choice::Retry | Choice::Approve => {}
                        Choice::Rollback => {
                            failure = Some(failed);
                            break;
                        }
                        Choice::Halt => {
                            failure = Some(failed);
                            halt_at = Some(index);
                            break;
                        }
                    }
                }
            }
        }
        // A run whose steps all went through succeeds only with its backup stored; a
        // run that halts for a human keeps it for `resume`.
        if failure.is_none() || halt_at.is_some() {
            if let Err(e) = self.finish_background(&mut journal).await? {
                if failure.is_none() {
                    let step = self
                        .pipeline
                        .steps
                        .iter()
                        .rev()
                        .find(|s| matches!(s.with, crate::config::pipeline::StepWith::Backup(_)))
                        .map_or_else(|| "backup".to_owned(), |s| s.id.clone());
                    failure = Some((step, e));
                } else {
                    ctx.report(Event::Warning { message: e });
                }
            }
        }
        Ok(Walked {
            journal,
            state,
            stack,
            point_of_no_return,
            failure,
            halt_at,
            results,
            kept,
        })
    }

    /// Waits for the backup streaming from a snapshot, if one is, and journals it as the
    /// `backup` step's fact; `Err` says why it failed.
    async fn finish_background(
        &self,
        journal: &mut Journal,
    ) -> Result<Result<(), String>, EngineError> {
        let ctx = self.ctx;
        let Some((step, result)) = ctx.finish_background().await else {
            return Ok(Ok(()));
        };
        let index = self.pipeline.steps.iter().position(|s| s.id == step);
        Ok(match result {
            Ok(manifest) => {
                ctx.fact(
                    &step,
                    Fact::BackupTaken {
                        backup: manifest.id.clone(),
                    },
                );
                ctx.note(
                    &step,
                    format!(
                        "backup {} stored from the snapshot ({}, sha256 {}), checksum verified",
                        manifest.id,
                        crate::units::human_bytes(manifest.size),
                        &manifest.sha256[..16]
                    ),
                );
                journal_facts(ctx, journal, index.unwrap_or_default()).await?;
                Ok(())
            }
            Err(e) => Err(e),
        })
    }

    /// Prepares and runs step `index` (its undo captured and journaled first); returns
    /// the step's result and the undo that goes on the stack. Steps whose changes stay
    /// without an undo are added to `kept`.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        journal: &mut Journal,
        state: &mut RunState,
        stack: &mut Vec<Pending>,
        kept: &mut Vec<String>,
        index: usize,
        step: &Step,
        deadline: Option<Instant>,
    ) -> Result<(Result<String, StepError>, Option<Compensation>), EngineError> {
        let ctx = self.ctx;
        // A step run again (retry, resume) keeps the undo captured before its first
        // attempt: that is the state before the run touched it.
        let earlier = stack
            .iter()
            .position(|p| p.index == index)
            .map(|at| stack.remove(at).action);
        let prepared = if self.delegate.is_some_and(|(at, _)| at == index) {
            Ok(None)
        } else {
            steps::prepare(ctx, step, state).await
        };
        Ok(match prepared {
            Ok(prepared) => {
                let compensation = earlier.or(prepared);
                journal
                    .write(&Record::StepStarted {
                        at: Utc::now(),
                        index,
                        id: step.id.clone(),
                        uses: step.kind().name().to_owned(),
                        compensation: compensation.clone(),
                    })
                    .await?;
                let result = match self.delegate {
                    // Not raced against Ctrl-C: the delegate's own work sees the
                    // signal and winds down (a fleet's running targets roll back).
                    Some((at, delegate)) if at == index => delegate.run().await,
                    _ => {
                        let work = run_step(ctx, step, state, deadline);
                        journaling_processes(journal, index, &step.id, work).await?
                    }
                };
                let facts = journal_facts(ctx, journal, index).await?;
                // A `sql` step that changed no rows has nothing to undo: its undo
                // would remove rows that were there before the run.
                let changed_nothing = facts
                    .iter()
                    .any(|f| matches!(f, Fact::RowsChanged { rows: 0 }));
                let compensation = compensation
                    .filter(|c| !(changed_nothing && matches!(c, Compensation::Sql { .. })));
                let uses = step.kind().name();
                if compensation.is_none()
                    && (keeps_changes(uses, &facts)
                        || (result.is_err() && keeps_failed_changes(uses)))
                    && !kept.contains(&step.id)
                {
                    kept.push(step.id.clone());
                }
                (result, compensation)
            }
            Err(e) => {
                journal_facts(ctx, journal, index).await?;
                (Err(e), earlier)
            }
        })
    }

    /// After the walk: finishes a run that succeeded, halts one that asked to, or rolls
    /// back (never past a point of no return) and compares the database with before.
    async fn end(&self, walked: Walked, started: Instant) -> Result<RunOutcome, EngineError> {
        let ctx = self.ctx;
        let Walked {
            mut journal,
            state,
            mut stack,
            point_of_no_return,
            failure,
            halt_at,
            results,
            kept,
        } = walked;
        let interrupted = ctx.cancel.is_cancelled();
        let mut outcome = RunOutcome {
            run_id: self.run_id.clone(),
            status: RunStatus::Succeeded,
            journal: journal.path().to_owned(),
            failure: failure.clone(),
            interrupted,
            undone: Vec::new(),
            left: Vec::new(),
            results,
            halted_at: None,
            state_check: None,
            backup: state.backup.clone(),
            kept,
        };
        let Some((id, error)) = &failure else {
            if let Some(names) = &state.snapshot {
                drop_snapshot(ctx, &mut journal, &names.snapshot).await?;
            }
            super::drift::record_after_run(ctx, &mut journal).await?;
            if let Some(taken) = state.backup.as_ref().filter(|_| self.prunes) {
                super::retention::prune_after_run(ctx, &mut journal, taken).await?;
            }
            return finish(ctx, &mut journal, outcome, started).await;
        };
        let reason = format!("step `{id}` failed: {error}");
        // A backup still streaming from the snapshot stops: the rollback swaps the
        // snapshot in, which needs no session on it.
        ctx.stop_background().await;
        if let Some(index) = halt_at {
            halt(
                ctx,
                &mut journal,
                &state,
                index,
                &self.pipeline.steps[index].id,
                &reason,
            )
            .await?;
            outcome.status = RunStatus::Halted;
            outcome.halted_at = Some(self.pipeline.steps[index].id.clone());
            return Ok(outcome);
        }
        // A rollback never goes past a point of no return: it undoes what came after it,
        // then the run halts there for a human.
        let floor = point_of_no_return.as_ref().filter(|_| !interrupted);
        let below: Vec<Pending>;
        (below, stack) = match floor {
            Some((at, _)) => stack.into_iter().partition(|p| p.index <= *at),
            None => (Vec::new(), stack),
        };
        let (status, undone, left) = roll_back(ctx, &mut journal, stack, &reason).await?;
        outcome.undone = undone;
        outcome.left = left;
        outcome.status = status;
        if let Some((at, ponr)) = floor
            && status == RunStatus::RolledBack
        {
            drop(below);
            let resume_from = at + 1;
            let resume_id = self
                .pipeline
                .steps
                .get(resume_from)
                .map_or_else(|| "(end)".to_owned(), |s| s.id.clone());
            halt(
                ctx,
                &mut journal,
                &state,
                resume_from,
                &resume_id,
                &format!("{reason}; rolled back to the point of no return `{ponr}`"),
            )
            .await?;
            outcome.status = RunStatus::Halted;
            outcome.halted_at = Some(resume_id);
            return Ok(outcome);
        }
        check_state(ctx, &mut journal, self.before.as_ref(), &mut outcome).await?;
        finish(ctx, &mut journal, outcome, started).await
    }

    /// Decides what a failed step leads to, and records the decision.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        journal: &mut Journal,
        index: usize,
        step: &Step,
        failed: &(String, String),
        results: &[(String, String)],
        stack: &[Pending],
        point_of_no_return: Option<&(usize, String)>,
    ) -> Result<Choice, EngineError> {
        let (choice, asked) = match decide::policy(self.pipeline, step) {
            // The long-standing default needs no record: `rollback_started` follows.
            OnFailure::Rollback => return Ok(Choice::Rollback),
            OnFailure::Halt => (Choice::Halt, false),
            OnFailure::Ask => {
                let failure = decide::Failure {
                    step: failed.0.clone(),
                    error: failed.1.clone(),
                    done: results.iter().map(|(id, _)| id.clone()).collect(),
                    undo: stack
                        .iter()
                        .rev()
                        .filter(|p| point_of_no_return.is_none_or(|(at, _)| p.index > *at))
                        .map(|p| format!("{} (step `{}`)", p.action.describe(), p.id))
                        .collect(),
                    point_of_no_return: point_of_no_return.map(|(_, id)| id.clone()),
                };
                match self.decider.ask(&failure).await {
                    Some(choice) => (choice, true),
                    None => (decide::unattended(self.pipeline), false),
                }
            }
        };
        decided(
            self.ctx,
            journal,
            (index, &step.id),
            choice,
            asked,
            &username(),
        )
        .await?;
        Ok(choice)
    }
}

/// Journals and reports a decision about step `(index, id)` and who made it.
async fn decided(
    ctx: &Context,
    journal: &mut Journal,
    (index, id): (usize, &str),
    choice: Choice,
    asked: bool,
    user: &str,
) -> Result<(), EngineError> {
    journal
        .write(&Record::Decision {
            at: Utc::now(),
            index,
            id: id.to_owned(),
            choice,
            asked,
            user: user.to_owned(),
        })
        .await?;
    ctx.report(Event::Decision {
        id: id.to_owned(),
        choice: choice.as_str().to_owned(),
        asked,
        user: user.to_owned(),
    });
    Ok(())
}

/// Steps after which the app serves traffic again (maintenance off, traffic moved to the
/// new code): the backup from a snapshot must be stored before them.
fn brings_traffic_back(step: &Step) -> bool {
    use crate::config::pipeline::StepWith;
    match &step.with {
        StepWith::Maintenance(m) => !m.enabled,
        StepWith::Traffic(_) => true,
        _ => false,
    }
}

/// Removes the snapshot of a run that succeeded: its backup is in the store by then.
async fn drop_snapshot(
    ctx: &Context,
    journal: &mut Journal,
    name: &str,
) -> Result<(), EngineError> {
    match ctx.database.drop_snapshot(name).await {
        Ok(_) => {
            let fact = Fact::SnapshotDropped {
                name: name.to_owned(),
            };
            ctx.report(Event::Fact {
                id: None,
                fact: fact.clone(),
            });
            journal
                .write(&Record::Fact {
                    at: Utc::now(),
                    index: None,
                    id: None,
                    fact,
                })
                .await?;
        }
        Err(e) => ctx.report(Event::Warning {
            message: format!(
                "snapshot {name} is left beside the database ({e}); `cutover backup prune` removes it"
            ),
        }),
    }
    Ok(())
}

/// Journals the facts step `index` reported while it ran; returns them.
async fn journal_facts(
    ctx: &Context,
    journal: &mut Journal,
    index: usize,
) -> Result<Vec<Fact>, EngineError> {
    let (records, facts): (Vec<Record>, Vec<Fact>) = ctx
        .take_facts()
        .into_iter()
        .map(|(id, fact)| {
            let record = Record::Fact {
                at: Utc::now(),
                index: Some(index),
                id: Some(id),
                fact: fact.clone(),
            };
            (record, fact)
        })
        .unzip();
    journal.write_all(&records).await?;
    Ok(facts)
}

/// After a rollback that ran every undo action: compares the database with its
/// fingerprint from before the run. A difference, or a database that cannot be read to
/// compare, leaves the rollback incomplete: a human must look (exit 3). With no
/// fingerprint from before (the database kind has none), the outcome says it is not
/// verified and claims nothing.
pub(super) async fn check_state(
    ctx: &Context,
    journal: &mut Journal,
    before: Option<&Before>,
    outcome: &mut RunOutcome,
) -> Result<(), EngineError> {
    if outcome.status != RunStatus::RolledBack {
        return Ok(());
    }
    let check = verify::after(ctx, journal, before).await?;
    match &check {
        // The pipeline chose to keep those steps' changes: the differences are reported,
        // not claimed away, and they are not a failed rollback.
        StateCheck::Differs(_) if !outcome.kept.is_empty() => {}
        StateCheck::Differs(c) => {
            outcome.status = RunStatus::RollbackFailed;
            outcome.left.push(format!(
                "the database is NOT as before the run: {}",
                c.differences
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        StateCheck::NotCompared(reason) if before.is_some() => {
            outcome.status = RunStatus::RollbackFailed;
            outcome.left.push(format!(
                "the database could not be compared with before the run: {reason}"
            ));
        }
        StateCheck::Same(_) | StateCheck::NotCompared(_) => {}
    }
    outcome.state_check = Some(check);
    Ok(())
}

/// Closes the journal with the outcome's status.
pub(super) async fn finish(
    ctx: &Context,
    journal: &mut Journal,
    outcome: RunOutcome,
    started: Instant,
) -> Result<RunOutcome, EngineError> {
    journal
        .write(&Record::RunFinished {
            at: Utc::now(),
            status: outcome.status,
        })
        .await?;
    ctx.report(Event::RunFinished {
        run_id: outcome.run_id.clone(),
        status: outcome.status.as_str().into(),
        elapsed_ms: ms(started.elapsed()),
    });
    Ok(outcome)
}

/// Leaves the run halted at step `index`: recorded, reported, the journal left open.
pub(super) async fn halt(
    ctx: &Context,
    journal: &mut Journal,
    state: &RunState,
    index: usize,
    id: &str,
    reason: &str,
) -> Result<(), EngineError> {
    journal
        .write(&Record::RunHalted {
            at: Utc::now(),
            resume_from: index,
            id: id.to_owned(),
            reason: reason.to_owned(),
            backup: state.backup.clone(),
            first_replicas: state.first_replicas.clone(),
        })
        .await?;
    ctx.report(Event::RunHalted {
        run_id: journal
            .path()
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        step: id.to_owned(),
        reason: reason.to_owned(),
    });
    Ok(())
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
