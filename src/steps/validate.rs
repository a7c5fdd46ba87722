//! `validate`: SQL checks run after migrating. Each returns one row with an integer column
//! `issues`, or the offending rows; more issues than allowed fails the step.

use std::path::PathBuf;

use crate::config::pipeline::ValidateWith;
use crate::engine::context::Context;
use crate::engine::error::StepError;
use crate::report::Event;

struct Query {
    name: String,
    sql: String,
    max: i64,
}

fn queries(ctx: &Context, with: &ValidateWith) -> Result<Vec<Query>, String> {
    let default_max = with.max_issues.unwrap_or(0);
    let mut out = Vec::new();
    if let Some(path) = &with.queries {
        let path = ctx.base_dir.join(&path.value);
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "sql"))
                .collect();
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        if files.is_empty() {
            return Err(format!("no .sql files in {}", path.display()));
        }
        for file in files {
            let sql = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(Query {
                name,
                sql,
                max: default_max,
            });
        }
    }
    for check in &with.checks {
        out.push(Query {
            name: check.name.clone(),
            sql: check.sql.clone(),
            max: check.max_issues.unwrap_or(default_max),
        });
    }
    Ok(out)
}

pub fn plan(ctx: &Context, with: &ValidateWith) -> Result<(String, Option<String>), String> {
    let queries = queries(ctx, with)?;
    Ok((
        format!(
            "run {} validation check(s): {}",
            queries.len(),
            queries
                .iter()
                .map(|q| q.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None,
    ))
}

pub async fn run(ctx: &Context, id: &str, with: &ValidateWith) -> Result<String, StepError> {
    let queries = queries(ctx, with).map_err(StepError::Failed)?;
    let mut failed = Vec::new();
    for q in &queries {
        let result = ctx
            .database
            .issues(&q.sql)
            .await
            .map_err(|e| StepError::Failed(format!("check `{}`: {e}", q.name)))?;
        let issues = result.issues;
        ctx.report(Event::CheckResult {
            id: id.to_owned(),
            check: q.name.clone(),
            issues,
            max_issues: q.max,
            columns: result.columns,
            rows: result.rows,
        });
        if issues > q.max {
            failed.push(format!(
                "`{}` found {issues} issue(s) (allowed {})",
                q.name, q.max
            ));
        }
    }
    if failed.is_empty() {
        Ok(format!("{} check(s) passed", queries.len()))
    } else {
        Err(StepError::Failed(format!(
            "validation failed: {}",
            failed.join("; ")
        )))
    }
}
