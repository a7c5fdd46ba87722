//! The built-in steps. Each has three parts: `plan` (describe and check, no side effects),
//! `prepare` (read the prior state and return the compensation that restores it, before
//! anything is touched) and `run`.

pub(crate) mod backup;
pub(crate) mod command;
pub mod external_migrator;
pub(crate) mod health;
pub(crate) mod maintenance;
pub(crate) mod migrate;
pub(crate) mod pause;
pub(crate) mod preflight;
pub(crate) mod release;
pub(crate) mod restart;
pub(crate) mod scale;
pub(crate) mod sql;
pub(crate) mod traffic;
pub(crate) mod undo;
pub(crate) mod validate;

use std::collections::BTreeMap;

use crate::config::Step;
use crate::config::pipeline::StepWith;
use crate::run::compensation::Compensation;
use crate::run::context::Context;
use crate::run::error::StepError;
use crate::run::plan::PlanScratch;

/// What a run remembers between steps.
#[derive(Debug, Default)]
pub struct RunState {
    /// The backup taken by this run, if any.
    pub backup: Option<String>,
    /// The snapshot a `backup` step with `snapshot: true` took, and where a swap would
    /// keep the database it replaces.
    pub snapshot: Option<crate::adapters::database::SnapshotNames>,
    /// Replica counts before the first scale of each target in this run.
    pub first_replicas: BTreeMap<String, u32>,
    /// What `cutover rollback` was asked to go back to.
    pub rollback_target: Option<crate::run::plan::RollbackTarget>,
    /// The checks of the run's `validate` steps, loaded when it starts: `backup` with
    /// `verify: restore` runs them on the restored copy.
    pub validations: validate::PipelineChecks,
    /// Who approved the `pause` step the run is at (a person at the terminal, or
    /// `cutover resume --approve --by NAME`); the step takes it.
    pub approved: Option<String>,
}

/// Plans one step: a summary and the undo it will have, or why it cannot run.
pub async fn plan(
    ctx: &Context,
    step: &Step,
    scratch: &mut PlanScratch<'_>,
) -> Result<(String, Option<String>), String> {
    match &step.with {
        StepWith::Preflight(w) => preflight::plan(ctx, w).await,
        StepWith::Maintenance(w) => Ok(maintenance::plan(ctx, w, scratch)),
        StepWith::Scale(w) => scale::plan(ctx, w, scratch),
        StepWith::Backup(w) => backup::plan(ctx, w, scratch).await,
        StepWith::Migrate(w) => migrate::plan(ctx, w, scratch).await,
        StepWith::Validate(w) => validate::plan(ctx, w),
        StepWith::Sql(w) => sql::plan(ctx, w),
        StepWith::Command(w) => Ok(command::plan(w)),
        StepWith::Health(w) => health::plan(ctx, w),
        StepWith::Restart(_) => Ok(restart::plan(ctx)),
        StepWith::Pause(w) => Ok(pause::plan(w)),
        StepWith::Release(w) => release::plan(ctx, w, scratch),
        StepWith::Traffic(w) => traffic::plan(ctx, w, scratch),
    }
}

/// Reads the state a step is about to change and returns what would put it back.
pub async fn prepare(
    ctx: &Context,
    step: &Step,
    state: &mut RunState,
) -> Result<Option<Compensation>, StepError> {
    match &step.with {
        StepWith::Maintenance(_) => maintenance::prepare(ctx).await,
        StepWith::Scale(w) => scale::prepare(ctx, w, state).await,
        StepWith::Backup(w) => backup::prepare(ctx, w, state).await,
        StepWith::Migrate(w) => migrate::prepare(ctx, w, state).await,
        StepWith::Sql(w) => Ok(w.undo.clone().map(|sql| Compensation::Sql { sql })),
        StepWith::Command(w) => Ok(w.undo.clone().map(|run| Compensation::Command { run })),
        StepWith::Release(_) => release::prepare(ctx).await,
        StepWith::Traffic(_) => traffic::prepare(ctx).await,
        StepWith::Preflight(_)
        | StepWith::Validate(_)
        | StepWith::Health(_)
        | StepWith::Restart(_)
        | StepWith::Pause(_) => Ok(None),
    }
}

/// Runs a step; returns a one-line result.
pub async fn run(ctx: &Context, step: &Step, state: &mut RunState) -> Result<String, StepError> {
    match &step.with {
        StepWith::Preflight(w) => preflight::run(ctx, w).await,
        StepWith::Maintenance(w) => maintenance::run(ctx, w).await,
        StepWith::Scale(w) => scale::run(ctx, w, state).await,
        StepWith::Backup(w) => backup::run(ctx, &step.id, w, state).await,
        StepWith::Migrate(w) => migrate::run(ctx, &step.id, w, state).await,
        StepWith::Validate(w) => validate::run(ctx, &step.id, w).await,
        StepWith::Sql(w) => sql::run(ctx, &step.id, w).await,
        StepWith::Command(w) => command::run(ctx, &step.id, w).await,
        StepWith::Health(w) => health::run(ctx, &step.id, w).await,
        StepWith::Restart(_) => Ok(ctx.platform.restart().await?),
        StepWith::Pause(w) => pause::run(w, state),
        StepWith::Release(w) => release::run(ctx, &step.id, w).await,
        StepWith::Traffic(w) => traffic::run(ctx, &step.id, w).await,
    }
}
