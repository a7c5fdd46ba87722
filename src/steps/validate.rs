//! `validate`: SQL checks run after migrating. Each returns one row with an integer column
//! `issues`, or the offending rows; more issues than allowed fails the step.
//!
//! `backup` with `verify: restore` runs the same checks, of every `validate` step in the
//! pipeline, on the restored copy of the backup (see [`pipeline_checks`] and [`check`]).

use std::path::PathBuf;

use crate::adapters::database::{Database, DatabaseError};
use crate::config::Pipeline;
use crate::config::pipeline::{StepWith, ValidateWith};
use crate::engine::context::Context;
use crate::engine::error::StepError;
use crate::engine::plan::Plan;
use crate::report::Event;

/// One validation query, as loaded from a `validate` step.
#[derive(Debug, Clone)]
pub struct Query {
    pub name: String,
    pub sql: String,
    pub max: i64,
}

/// The checks of every `validate` step a run will run, loaded when the run starts, for
/// `backup` with `verify: restore`.
#[derive(Debug, Default)]
pub struct PipelineChecks {
    pub queries: Vec<Query>,
    /// Why some could not be loaded (a file that went missing since the plan).
    pub error: Option<String>,
}

/// Loads the checks of the pipeline's `validate` steps, leaving out those the plan skips
/// in this environment.
pub fn pipeline_checks(ctx: &Context, pipeline: &Pipeline, plan: &Plan) -> PipelineChecks {
    let mut out = PipelineChecks::default();
    for (index, step) in pipeline.steps.iter().enumerate() {
        let StepWith::Validate(with) = &step.with else {
            continue;
        };
        if plan.steps.get(index).is_some_and(|p| p.skipped.is_some()) {
            continue;
        }
        match queries(ctx, with) {
            Ok(q) => out.queries.extend(q),
            Err(e) => {
                out.error
                    .get_or_insert_with(|| format!("step `{}`: {e}", step.id));
            }
        }
    }
    out
}

/// What running checks found.
pub struct Checked {
    /// Checks that ran.
    pub ran: usize,
    /// One line per check with more issues than allowed: "`name` found N issue(s) ...".
    pub failed: Vec<String>,
    /// Checks whose query failed, with why, when errors do not stop the checks.
    pub errors: Vec<String>,
}

/// Runs `queries` against `database`, reporting each result under step `id`. A query that
/// fails stops with an error when `errors_fail`; otherwise it is listed in
/// [`Checked::errors`] and the others still run.
pub async fn check(
    ctx: &Context,
    id: &str,
    database: &dyn Database,
    queries: &[Query],
    errors_fail: bool,
) -> Result<Checked, StepError> {
    let mut checked = Checked {
        ran: 0,
        failed: Vec::new(),
        errors: Vec::new(),
    };
    for q in queries {
        let result = match database.issues(&q.sql).await {
            Ok(r) => r,
            Err(e) if errors_fail => {
                // A dropped connection stays transient, so the step's `retries:` apply.
                let message = format!("check `{}`: {e}", q.name);
                return Err(if e.is_transient() {
                    StepError::Transient(message)
                } else {
                    StepError::Failed(message)
                });
            }
            Err(e) => {
                // The database's own words are enough here ("no such table: users").
                let why = match &e {
                    DatabaseError::Sql {
                        source: sqlx::Error::Database(db),
                        ..
                    } => db.message().to_owned(),
                    other => other.to_string(),
                };
                checked.errors.push(format!("`{}` ({why})", q.name));
                continue;
            }
        };
        checked.ran += 1;
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
            checked.failed.push(format!(
                "`{}` found {issues} issue(s) (allowed {})",
                q.name, q.max
            ));
        }
    }
    Ok(checked)
}

pub fn queries(ctx: &Context, with: &ValidateWith) -> Result<Vec<Query>, String> {
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
    let checked = check(ctx, id, ctx.database.as_ref(), &queries, true).await?;
    if checked.failed.is_empty() {
        Ok(format!("{} check(s) passed", queries.len()))
    } else {
        Err(StepError::Failed(format!(
            "validation failed: {}",
            checked.failed.join("; ")
        )))
    }
}
