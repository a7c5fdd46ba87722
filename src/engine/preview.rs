//! The SQL preview of `plan --sql`: the exact text each pending migration and `sql` step
//! sends to the database, the down SQL a rollback by the down files would run, and the
//! command line of a `tool: command` migrator, so an approver confirms statements rather
//! than names (Liquibase's `update-sql`).
//!
//! It is added to a finished plan and never enters the digest: the digest already covers
//! the migrations' checksums and the steps, so a plan approved with or without the preview
//! is the same plan.

use crate::config::Pipeline;
use crate::config::pipeline::StepWith;
use crate::run::context::Context;
use crate::run::plan::Plan;

/// `text` as one single-quoted shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A path as the user knows it: relative to the config folder when inside it.
fn shown_path(ctx: &Context, path: &std::path::Path) -> String {
    path.strip_prefix(&ctx.base_dir)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Adds the preview to `plan`, built from the same pipeline: what the steps that will run
/// send to the database, and the down files its undo would run.
pub(crate) fn fill(ctx: &Context, pipeline: &Pipeline, plan: &mut Plan) -> Result<(), String> {
    let mut applies_migrations = false;
    for (step, planned) in pipeline.steps.iter().zip(plan.steps.iter_mut()) {
        if planned.skipped.is_some() {
            continue;
        }
        match &step.with {
            StepWith::Sql(with) => {
                let mut scripts = crate::steps::sql::scripts(ctx, with)
                    .map_err(|e| format!("step `{}`: {e}", step.id))?
                    .into_iter();
                planned.preview.sql = scripts.next();
                planned.preview.undo_sql = scripts.next();
            }
            StepWith::Migrate(with) if with.is_external() => {
                // The URL is exported to the command; it never appears, even where a
                // command quotes it literally.
                ctx.redactor
                    .register(ctx.database.connection_url().expose());
                let up = with.up.as_deref().unwrap_or_default();
                planned.preview.command = Some(ctx.redactor.redact(&format!(
                    "DATABASE_URL=*** CUTOVER_ENVIRONMENT={} sh -c {}",
                    shell_quote(&ctx.environment),
                    shell_quote(up)
                )));
                let dir = std::path::absolute(&ctx.base_dir).unwrap_or(ctx.base_dir.clone());
                planned.preview.workdir = Some(dir.display().to_string());
            }
            StepWith::Migrate(_) if !applies_migrations => {
                applies_migrations = true;
                planned.preview.migrations = true;
            }
            _ => {}
        }
    }
    // A pipeline without a migrate step of cutover's own applies none of them.
    if !applies_migrations {
        return Ok(());
    }
    let reverted: std::collections::HashSet<i64> = plan
        .steps
        .iter()
        .flat_map(|s| s.reverts.iter().copied())
        .collect();
    for pending in &mut plan.database.pending {
        let file = ctx
            .migrations
            .get(pending.version)
            .ok_or_else(|| format!("migration {} has no file", pending.version))?;
        let preview = &mut pending.preview;
        preview.file = Some(shown_path(ctx, &file.up_path));
        preview.sql = Some(file.up_sql.clone());
        preview.no_transaction = Some(file.no_transaction);
        if reverted.contains(&pending.version) {
            preview.down_file = file.down_path.as_deref().map(|p| shown_path(ctx, p));
            preview.down_sql.clone_from(&file.down_sql);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_quote_keeps_the_text_one_word() {
        assert_eq!(
            shell_quote("alembic upgrade head"),
            "'alembic upgrade head'"
        );
        assert_eq!(shell_quote("echo 'a b'"), r"'echo '\''a b'\'''");
    }
}
