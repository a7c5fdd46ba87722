//! Running a compensation: each undo is carried out by the step that recorded it.

use crate::run::compensation::Compensation;
use crate::run::context::Context;
use crate::run::error::StepError;

/// Runs one compensation of step `step_id`; returns what it did, for humans.
pub(crate) async fn run(
    compensation: &Compensation,
    ctx: &Context,
    step_id: &str,
) -> Result<String, StepError> {
    match compensation {
        Compensation::Maintenance { enabled, prior } => Ok(ctx
            .platform
            .restore_maintenance(*enabled, prior.as_ref())
            .await?),
        Compensation::Scale {
            target,
            replicas,
            prior,
        } => Ok(ctx
            .platform
            .restore_scale(target, *replicas, prior.as_ref())
            .await?),
        Compensation::Code { prior, .. } => Ok(ctx.platform.restore_code(prior).await?),
        Compensation::MigrateDown { to } => super::migrate::down_to(ctx, step_id, *to).await,
        Compensation::RevertMigrations { migrations } => {
            super::migrate::revert_exactly(ctx, step_id, migrations).await
        }
        Compensation::MigrateUp { to } => {
            super::migrate::up_to(
                ctx,
                step_id,
                *to,
                crate::config::pipeline::DEFAULT_WARN_AFTER,
            )
            .await
        }
        Compensation::RestoreBackup { backup } => {
            super::backup::restore(ctx, step_id, backup).await
        }
        Compensation::Sql { sql } => {
            ctx.database.execute(sql).await?;
            Ok("undo SQL ran".into())
        }
        Compensation::Command { run } => {
            super::command::run_shell(ctx, run).await?;
            Ok(format!("`{run}` ran"))
        }
        Compensation::ExternalDown { run } => {
            super::external_migrator::down(ctx, step_id, run).await
        }
    }
}
