//! Running a compensation: each undo is carried out by the step that recorded it.

use crate::adapters::database::Swap;
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
        Compensation::RestoreBackup { backup, snapshot } => {
            // Without its snapshot, the backup goes back into the database itself: a
            // swap would need the same sessions gone that kept the snapshot out.
            let in_place = snapshot.is_some();
            if let Some(names) = snapshot {
                // The snapshot's own backup stops: the swap needs no session on it.
                ctx.stop_background().await;
                match ctx
                    .database
                    .swap_in(&names.snapshot, &names.replaced)
                    .await
                {
                    Ok(Swap::Done { note }) => {
                        ctx.note(step_id, note.clone());
                        return Ok(format!("snapshot {} swapped back in", names.snapshot));
                    }
                    Ok(Swap::Gone) => ctx.note(
                        step_id,
                        format!(
                            "snapshot {} is gone: restoring backup {backup} from the store",
                            names.snapshot
                        ),
                    ),
                    Err(e) => ctx.note(
                        step_id,
                        format!(
                            "snapshot {} cannot be swapped in ({e}): restoring backup {backup} from the store instead",
                            names.snapshot
                        ),
                    ),
                }
            }
            super::backup::restore_as(ctx, step_id, backup, in_place).await
        }
        Compensation::DropSnapshot { name } => {
            ctx.stop_background().await;
            Ok(if ctx.database.drop_snapshot(name).await? {
                format!("snapshot {name} removed")
            } else {
                format!("snapshot {name} is not there (swapped in, or never taken)")
            })
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
