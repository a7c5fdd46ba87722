//! `sql`: run SQL in one transaction (idempotent seed data, say), with optional undo SQL.
//!
//! The undo runs only when the step changed rows: an idempotent seed (`INSERT ... WHERE
//! NOT EXISTS`) that found its row already there changed nothing, and its undo (`DELETE`)
//! would remove a row the run did not add. The count of changed rows is a fact in the
//! journal, so `recover` decides the same way.

use crate::config::pipeline::SqlWith;
use crate::fact::Fact;
use crate::run::context::Context;
use crate::run::error::StepError;

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

/// The SQL the step may run: its statements and its undo.
pub(crate) fn scripts(ctx: &Context, with: &SqlWith) -> Result<Vec<String>, String> {
    let mut out = vec![text(ctx, with)?];
    out.extend(with.undo.clone());
    Ok(out)
}

pub(crate) fn plan(ctx: &Context, with: &SqlWith) -> Result<(String, Option<String>), String> {
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
        with.undo
            .as_ref()
            .map(|_| "run the undo SQL, only if the step changed rows".to_owned()),
    ))
}

pub(crate) async fn run(ctx: &Context, id: &str, with: &SqlWith) -> Result<String, StepError> {
    let sql = text(ctx, with).map_err(StepError::Failed)?;
    let rows = ctx.database.execute(&sql).await?;
    ctx.fact(id, Fact::RowsChanged { rows });
    Ok(match rows {
        0 if with.undo.is_some() => {
            "SQL ran and changed no rows; its undo will not run on rollback".into()
        }
        rows => format!("SQL ran; {rows} row(s) changed"),
    })
}
