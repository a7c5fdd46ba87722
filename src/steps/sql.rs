//! `sql`: run SQL in one transaction (idempotent seed data, say), with optional undo SQL.

use crate::config::pipeline::SqlWith;
use crate::engine::context::Context;
use crate::engine::error::StepError;

fn text(ctx: &Context, with: &SqlWith) -> Result<String, String> {
    match (&with.sql, &with.file) {
        (Some(sql), _) => Ok(sql.clone()),
        (None, Some(file)) => {
            let path = ctx.base_dir.join(&file.value);
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        (None, None) => Err("`sql` needs `sql:` or `file:`".into()),
    }
}

pub fn plan(ctx: &Context, with: &SqlWith) -> Result<(String, Option<String>), String> {
    let sql = text(ctx, with)?;
    let first = sql
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let source = with
        .file
        .as_ref()
        .map_or_else(|| format!("`{}`", first.trim()), |f| f.value.clone());
    Ok((
        format!("run SQL {source}"),
        with.undo.as_ref().map(|_| "run the undo SQL".to_owned()),
    ))
}

pub async fn run(ctx: &Context, with: &SqlWith) -> Result<String, StepError> {
    let sql = text(ctx, with).map_err(StepError::Failed)?;
    ctx.database.execute(&sql).await?;
    Ok("SQL ran".into())
}
