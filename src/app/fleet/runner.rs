//! Running the per-target part of a pipeline over the fleet: canaries first, then the rest
//! a few at a time, no new target after the failure budget is spent. Each target is a run
//! of the ordinary engine — plan, lock, journal, rollback — in the target's own state
//! folder; a target already at the version the pipeline would bring it to is skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Target;
use crate::app::build as setup;
use crate::config::deploy_file::FailureBudget;
use crate::config::{Config, Pipeline};
use crate::engine::decide::Nobody;
use crate::engine::journal::{RunStatus, halted_runs, new_run_id, open_runs};
use crate::engine::{lock, plan, run};
use crate::report::{Event, Reporter, Silent, ms};
use crate::secret::Redactor;

/// How the fleet runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FleetSettings {
    pub concurrency: usize,
    pub canary: usize,
    pub max_failures: FailureBudget,
}

impl FleetSettings {
    pub(crate) fn from_config(spec: &crate::config::deploy_file::TargetsConfig) -> Self {
        Self {
            concurrency: spec.concurrency.map_or(4, |c| c.max(1) as usize),
            canary: spec.canary.map_or(1, |c| c as usize),
            max_failures: spec.max_failures.unwrap_or(FailureBudget::Count(0)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TargetStatus {
    Succeeded,
    /// Already at the version the pipeline brings it to.
    Skipped,
    RolledBack,
    RollbackFailed,
    Halted,
    /// Could not start: plan error, lock held, unfinished run.
    Refused,
    /// Never started: the canary failed or the budget was spent.
    NotStarted,
}

impl TargetStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Skipped => "skipped",
            Self::RolledBack => "rolled_back",
            Self::RollbackFailed => "rollback_failed",
            Self::Halted => "halted",
            Self::Refused => "refused",
            Self::NotStarted => "not_started",
        }
    }

    pub(crate) fn failed(self) -> bool {
        matches!(
            self,
            Self::RolledBack | Self::RollbackFailed | Self::Halted | Self::Refused
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TargetOutcome {
    pub target: String,
    pub status: TargetStatus,
    pub run_id: Option<String>,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    pub schema_before: Option<i64>,
    pub schema_after: Option<i64>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct FleetOutcome {
    pub targets: Vec<TargetOutcome>,
    /// Why no new targets were started, if that happened.
    pub stopped: Option<String>,
}

impl FleetOutcome {
    pub(crate) fn count(&self, status: TargetStatus) -> usize {
        self.targets.iter().filter(|t| t.status == status).count()
    }

    pub(crate) fn failures(&self) -> usize {
        self.targets.iter().filter(|t| t.status.failed()).count()
    }

    /// One line for the fleet's journal and output.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} target(s): {} succeeded, {} skipped (already at the version), {} failed, {} not started",
            self.targets.len(),
            self.count(TargetStatus::Succeeded),
            self.count(TargetStatus::Skipped),
            self.failures(),
            self.count(TargetStatus::NotStarted),
        )
    }
}

/// What the targets running at once share.
struct Progress {
    total: usize,
    allowed: usize,
    failures: AtomicUsize,
    done: AtomicUsize,
    stop: AtomicBool,
    stopped: std::sync::Mutex<Option<String>>,
    started: Instant,
}

/// Runs the per-target pipeline over the targets.
pub(crate) struct Fleet<'a> {
    pub config: &'a Config,
    pub environment: &'a str,
    /// The per-target part of the pipeline.
    pub pipeline: &'a Pipeline,
    pub reporter: Arc<dyn Reporter>,
    pub redactor: Redactor,
    pub cancel: CancellationToken,
    pub settings: FleetSettings,
    /// The fleet run's id, recorded in each target's journal command.
    pub run_id: String,
}

impl Fleet<'_> {
    pub(crate) async fn run(&self, targets: &[Target]) -> FleetOutcome {
        let total = targets.len();
        let shared = Progress {
            total,
            allowed: self.settings.max_failures.allowed(total),
            failures: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            stopped: std::sync::Mutex::new(None),
            started: Instant::now(),
        };
        let canary = self.settings.canary.min(total);
        let concurrency = self.settings.concurrency.max(1);
        let mut outcomes = Vec::with_capacity(total);
        // The canaries, then the rest; within a stage at most `concurrency` at once.
        for (stage, canary_stage) in [(0..canary, true), (canary..total, false)] {
            let mut running = FuturesUnordered::new();
            for index in stage {
                if running.len() >= concurrency
                    && let Some(done) = running.next().await
                {
                    outcomes.push(done);
                }
                running.push(self.go(index, &targets[index], canary_stage, &shared));
            }
            while let Some(done) = running.next().await {
                outcomes.push(done);
            }
        }
        outcomes.sort_by_key(|(index, _)| *index);
        let outcomes: Vec<TargetOutcome> = outcomes.into_iter().map(|(_, o)| o).collect();
        FleetOutcome {
            targets: outcomes,
            stopped: shared
                .stopped
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    /// Starts one target unless the fleet stopped; then counts it and reports progress.
    async fn go(
        &self,
        index: usize,
        target: &Target,
        canary_stage: bool,
        p: &Progress,
    ) -> (usize, TargetOutcome) {
        if p.stop.load(Ordering::SeqCst) || self.cancel.is_cancelled() {
            return (index, not_started(target));
        }
        self.reporter.event(&Event::TargetStarted {
            target: target.name.clone(),
            index,
            total: p.total,
        });
        let outcome = self.one(target).await;
        let failed_now = if outcome.status.failed() {
            p.failures.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            p.failures.load(Ordering::SeqCst)
        };
        let finished = p.done.fetch_add(1, Ordering::SeqCst) + 1;
        let why = if canary_stage && outcome.status.failed() {
            Some(format!(
                "canary target `{}` failed; no other target was started",
                target.name
            ))
        } else if failed_now > p.allowed {
            Some(format!(
                "{failed_now} target(s) failed, more than `max_failures` allows ({}); no new target was started",
                p.allowed
            ))
        } else {
            None
        };
        if let Some(why) = why
            && !p.stop.swap(true, Ordering::SeqCst)
        {
            *p.stopped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
        }
        let elapsed = p.started.elapsed().as_secs_f64();
        let eta_ms = if finished < p.total {
            ms(std::time::Duration::from_secs_f64(
                elapsed / finished as f64 * (p.total - finished) as f64,
            ))
        } else {
            0
        };
        self.reporter.event(&Event::TargetFinished {
            target: outcome.target.clone(),
            status: outcome.status.as_str().to_owned(),
            run_id: outcome.run_id.clone(),
            failed_step: outcome.failed_step.clone(),
            error: outcome.error.clone(),
            elapsed_ms: outcome.elapsed_ms,
            done: finished,
            failed: failed_now,
            total: p.total,
            eta_ms,
        });
        (index, outcome)
    }

    /// One target: its own context, plan, lock, journal and rollback.
    async fn one(&self, target: &Target) -> TargetOutcome {
        let started = Instant::now();
        let mut outcome = TargetOutcome {
            target: target.name.clone(),
            status: TargetStatus::Refused,
            run_id: None,
            failed_step: None,
            error: None,
            schema_before: None,
            schema_after: None,
            elapsed_ms: 0,
        };
        let result = self.attempt(target, &mut outcome).await;
        if let Err(e) = result {
            outcome.status = TargetStatus::Refused;
            outcome.error = Some(self.redactor.redact(&e.to_string()));
        }
        outcome.elapsed_ms = ms(started.elapsed());
        outcome
    }

    async fn attempt(
        &self,
        target: &Target,
        outcome: &mut TargetOutcome,
    ) -> Result<(), crate::engine::EngineError> {
        use crate::engine::EngineError;
        // A target's step output is not printed (hundreds would interleave); its journal
        // and the fleet's per-target lines say what happened.
        let ctx = setup::target_context(
            self.config,
            self.environment,
            target,
            Arc::new(Silent),
            self.redactor.clone(),
            self.cancel.clone(),
        )?;
        if let Some(run) = open_runs(&ctx.state_dir, &ctx.environment)?.first() {
            return Err(EngineError::Plan(format!(
                "run {} of this target did not finish; `cutover recover -e {} --fleet` finishes it",
                run.run_id(),
                ctx.environment
            )));
        }
        if let Some(run) = halted_runs(&ctx.state_dir, &ctx.environment)?.first() {
            return Err(EngineError::Plan(format!(
                "run {} of this target is halted; resume or roll it back first",
                run.run_id()
            )));
        }
        let plan = plan::build(&ctx, self.pipeline, None).await?;
        outcome.schema_before = plan.database.current_version;
        outcome.schema_after = plan.database.current_version;
        if plan.database.pending.is_empty() {
            outcome.status = TargetStatus::Skipped;
            return Ok(());
        }
        let run_id = new_run_id();
        let (guard, db_lock) = lock::acquire_for_run(&ctx, &run_id, "deploy --fleet").await?;
        outcome.run_id = Some(run_id.clone());
        let command = format!("deploy --fleet (fleet run {})", self.run_id);
        let result =
            run::execute(&ctx, self.pipeline, &plan, &command, run_id, None, &Nobody).await;
        drop(db_lock);
        guard.release();
        let result = result?;
        outcome.status = match result.status {
            RunStatus::Succeeded => TargetStatus::Succeeded,
            RunStatus::RolledBack => TargetStatus::RolledBack,
            RunStatus::RollbackFailed => TargetStatus::RollbackFailed,
            RunStatus::Halted => TargetStatus::Halted,
        };
        if let Some((step, error)) = result.failure {
            outcome.failed_step = Some(step);
            outcome.error = Some(error);
        }
        outcome.schema_after = ctx
            .database
            .state()
            .await
            .ok()
            .and_then(|s| s.version())
            .or(match result.status {
                RunStatus::Succeeded => plan.database.target_version,
                _ => plan.database.current_version,
            });
        Ok(())
    }
}

fn not_started(target: &Target) -> TargetOutcome {
    TargetOutcome {
        target: target.name.clone(),
        status: TargetStatus::NotStarted,
        run_id: None,
        failed_step: None,
        error: None,
        schema_before: None,
        schema_after: None,
        elapsed_ms: 0,
    }
}
