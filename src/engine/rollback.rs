//! The way back: the stack of compensations a run keeps, what a journal says about it, and
//! unwinding it newest first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;

use super::cancel::RollbackSignals;
use super::error::EngineError;
use super::journal::{Journal, Record, RunRecord, RunStatus};
use super::lock::hostname;
use crate::fact::Fact;
use crate::run::compensation::Compensation;
use crate::run::context::Context;
use crate::run::error::StepError;
use crate::run::event::Event;

/// A compensation on the stack: the undo of step `id` (at `index`).
pub(super) struct Pending {
    pub(super) index: usize,
    pub(super) id: String,
    pub(super) action: Compensation,
}

/// Runs compensations newest first. Stops at the first that fails: what is left (say,
/// maintenance still on) is the safe state for a human to take over from.
pub(super) async fn roll_back(
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
            r = journaling_processes(
                journal,
                pending.index,
                &pending.id,
                run_compensation(ctx, &pending),
            ) => r?,
            () = signals.abandoned(warn) => Err(StepError::Failed(
                "rollback abandoned by a signal while this action ran; it may be partly done and runs again from its start on `cutover recover`".into(),
            )),
        };
        match result {
            Ok(note) => {
                // What the undo did and checked goes to the journal and the report.
                let note = ctx.redactor.redact(&note);
                journal
                    .write(&Record::CompensationFinished {
                        at: Utc::now(),
                        index: pending.index,
                        id: pending.id.clone(),
                        note: (!note.is_empty()).then(|| note.clone()),
                    })
                    .await?;
                ctx.report(Event::CompensationFinished {
                    id: pending.id.clone(),
                    action: action.clone(),
                    error: None,
                });
                // Putting code back may make something new (Heroku's rollback is a new
                // release): the note that names it is shown and kept in the report.
                if matches!(pending.action, Compensation::Code { .. }) && !note.is_empty() {
                    ctx.report(Event::StepNote {
                        id: pending.id.clone(),
                        message: format!("undo: {note}"),
                    });
                }
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

/// Runs `work` (a step or an undo action) and journals every process group it starts,
/// as soon as it starts, so that `recover` finds what a dead run left running.
pub(super) async fn journaling_processes<T>(
    journal: &mut Journal,
    index: usize,
    id: &str,
    work: impl Future<Output = T>,
) -> Result<T, EngineError> {
    let (to, mut started) = tokio::sync::mpsc::unbounded_channel();
    // On the heap: a step's future is large, and this one lives inside the run's.
    let mut work = Box::pin(crate::shell::watched(to, work));
    let host = hostname();
    let record = |s: crate::shell::Spawned| Record::ProcessStarted {
        at: Utc::now(),
        index,
        id: id.to_owned(),
        pgid: s.pgid,
        start_time: s.start_time,
        host: host.clone(),
    };
    loop {
        tokio::select! {
            biased;
            Some(spawned) = started.recv() => journal.write(&record(spawned)).await?,
            out = &mut work => {
                while let Ok(spawned) = started.try_recv() {
                    journal.write(&record(spawned)).await?;
                }
                return Ok(out);
            }
        }
    }
}

/// Compensations are idempotent, so transient failures are retried a few times.
async fn run_compensation(ctx: &Context, pending: &Pending) -> Result<String, StepError> {
    let mut attempt = 0;
    loop {
        match crate::steps::undo::run(&pending.action, ctx, &pending.id).await {
            Err(e) if e.is_transient() && attempt < 3 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt as u32))).await;
            }
            other => return other,
        }
    }
}

/// What a run's journal says about its steps and their undo actions.
pub(super) struct Journaled {
    pub(super) run_id: String,
    /// Every started step's latest undo, by step, in start order.
    pub(super) started: Vec<(usize, String, Option<Compensation>)>,
    pub(super) steps_total: Option<usize>,
    pub(super) finished: HashSet<usize>,
    pub(super) skipped: HashSet<usize>,
    /// Steps whose last attempt failed.
    pub(super) failed: HashMap<usize, (String, String)>,
    pub(super) compensated: HashSet<usize>,
    pub(super) rollback_started: bool,
    pub(super) point_of_no_return: Option<(usize, String)>,
    /// The replica count of each target before the run first scaled it.
    pub(super) first_replicas: BTreeMap<String, u32>,
    /// Steps that reported changing no rows (a `sql` step whose undo must not run).
    pub(super) changed_nothing: HashSet<usize>,
    /// The backup the run stored, if any.
    pub(super) backup: Option<String>,
    /// Facts each step reported, by step.
    pub(super) facts: HashMap<usize, Vec<Fact>>,
    /// Every started step's kind, by step.
    pub(super) uses: HashMap<usize, String>,
}

impl Journaled {
    pub(super) fn read(run: &RunRecord) -> Self {
        let mut j = Self {
            run_id: run.run_id(),
            started: Vec::new(),
            steps_total: None,
            finished: HashSet::new(),
            skipped: HashSet::new(),
            failed: HashMap::new(),
            compensated: HashSet::new(),
            rollback_started: false,
            point_of_no_return: None,
            first_replicas: BTreeMap::new(),
            changed_nothing: HashSet::new(),
            backup: None,
            facts: HashMap::new(),
            uses: HashMap::new(),
        };
        for record in &run.records {
            match record {
                Record::RunStarted { steps, .. } => j.steps_total = Some(steps.len()),
                Record::StepStarted {
                    index,
                    id,
                    uses,
                    compensation,
                    ..
                } => {
                    j.uses.insert(*index, uses.clone());
                    if let Some(Compensation::Scale {
                        target, replicas, ..
                    }) = compensation
                    {
                        j.first_replicas.entry(target.clone()).or_insert(*replicas);
                    }
                    // A step started again (retry, resume) keeps one undo.
                    j.started.retain(|(i, _, _)| i != index);
                    j.started.push((*index, id.clone(), compensation.clone()));
                }
                Record::StepFinished { index, .. } => {
                    j.finished.insert(*index);
                    j.failed.remove(index);
                }
                Record::StepSkipped { index, .. } => {
                    j.skipped.insert(*index);
                }
                Record::StepFailed {
                    index, id, error, ..
                } => {
                    j.failed.insert(*index, (id.clone(), error.clone()));
                }
                Record::CompensationFinished { index, .. } => {
                    j.compensated.insert(*index);
                }
                Record::RollbackStarted { .. } => j.rollback_started = true,
                Record::Fact {
                    fact: Fact::BackupTaken { backup },
                    ..
                } => j.backup = Some(backup.clone()),
                Record::Fact {
                    index: Some(index),
                    fact: fact @ Fact::MigrationApplied { .. },
                    ..
                } => {
                    j.facts.entry(*index).or_default().push(fact.clone());
                }
                Record::Fact {
                    index: Some(index),
                    fact: fact @ Fact::RowsChanged { rows },
                    ..
                } => {
                    j.facts.entry(*index).or_default().push(fact.clone());
                    if *rows == 0 {
                        j.changed_nothing.insert(*index);
                    } else {
                        j.changed_nothing.remove(index);
                    }
                }
                Record::PointOfNoReturn { index, id, .. } => {
                    j.point_of_no_return = Some((*index, id.clone()));
                }
                _ => {}
            }
        }
        j
    }

    /// Steps whose changes stay by the pipeline's choice (see [`keeps_changes`]).
    pub(super) fn kept(&self) -> Vec<String> {
        self.started
            .iter()
            .filter(|(index, _, action)| {
                action.is_none()
                    && self.uses.get(index).is_some_and(|uses| {
                        keeps_changes(uses, self.facts.get(index).map_or(&[], Vec::as_slice))
                            || (self.failed.contains_key(index) && keeps_failed_changes(uses))
                    })
            })
            .map(|(_, id, _)| id.clone())
            .collect()
    }

    /// The undo actions still to run, oldest first; with a `floor`, only those of steps
    /// after it.
    pub(super) fn stack(&self, floor: Option<usize>) -> Vec<Pending> {
        self.started
            .iter()
            .filter(|(index, _, _)| !self.compensated.contains(index))
            .filter(|(index, _, _)| floor.is_none_or(|f| *index > f))
            .filter_map(|(index, id, action)| {
                let action = action.clone()?;
                // A step that reported its own failure is undone only when it may have acted.
                if self.failed.contains_key(index) && !action.undoes_failed_step() {
                    return None;
                }
                if self.changed_nothing.contains(index)
                    && matches!(action, Compensation::Sql { .. })
                {
                    return None;
                }
                Some(Pending {
                    index: *index,
                    id: id.clone(),
                    action,
                })
            })
            .collect()
    }
}

/// Whether a step of kind `uses` that has no undo left the database changed on purpose:
/// a migration applied under `rollback: none`, a `sql` step without `undo:` that changed
/// rows, a `command` step without `undo:` (it may have changed anything).
pub(super) fn keeps_changes(uses: &str, facts: &[Fact]) -> bool {
    match uses {
        "command" => true,
        "migrate" => facts
            .iter()
            .any(|f| matches!(f, Fact::MigrationApplied { .. })),
        "sql" => facts
            .iter()
            .any(|f| matches!(f, Fact::RowsChanged { rows } if *rows > 0)),
        _ => false,
    }
}

/// Whether a step of kind `uses` with no undo that failed may have left changes: a
/// migration that failed part-way (MySQL commits DDL as it goes), a command. A failed
/// `sql` step's transaction changed nothing.
pub(super) fn keeps_failed_changes(uses: &str) -> bool {
    matches!(uses, "migrate" | "command")
}
