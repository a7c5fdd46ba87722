//! `validate`: SQL checks run after migrating. Each returns one row with one integer column
//! named as a count (`issues`, `IssueCount`, `orphan_count`, `COUNT(*)`: see
//! [`names_a_count`](crate::adapters::database::names_a_count)), or the offending rows; more
//! issues than allowed fails the step. At plan time each check must be exactly one
//! statement the database's SQL dialect parses.
//!
//! `backup` with `verify: restore` runs the same checks, of every `validate` step in the
//! pipeline, on the restored copy of the backup (see [`pipeline_checks`] and [`check`]).

use std::path::PathBuf;

use crate::adapters::database::{CheckResult, Database, DatabaseError};
use crate::config::Pipeline;
use crate::config::pipeline::{StepWith, ValidateWith};
use crate::run::context::Context;
use crate::run::error::StepError;
use crate::run::event::Event;
use crate::run::plan::Plan;

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
pub(crate) fn pipeline_checks(ctx: &Context, pipeline: &Pipeline, plan: &Plan) -> PipelineChecks {
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

/// One `validate` step's checks, for `cutover validate`.
pub(crate) struct StepChecks {
    pub id: String,
    pub queries: Vec<Query>,
}

/// The checks of every `validate` step that runs in the context's environment (its `when:`
/// allows it), each step's checks held to the same rules as at plan time: an error names
/// the step, its file and line, and the check file and line.
pub(crate) fn environment_checks(
    ctx: &Context,
    pipeline: &Pipeline,
) -> Result<Vec<StepChecks>, String> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for step in &pipeline.steps {
        let StepWith::Validate(with) = &step.with else {
            continue;
        };
        if step
            .when
            .as_ref()
            .is_some_and(|w| !w.allows(&ctx.environment))
        {
            continue;
        }
        match plan(ctx, with).and_then(|_| queries(ctx, with)) {
            Ok(queries) => out.push(StepChecks {
                id: step.id.clone(),
                queries,
            }),
            Err(e) => problems.push(format!(
                "step `{}` ({}:{}): {e}",
                step.id,
                pipeline.path.display(),
                step.line
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("\n"))
    }
}

/// Runs each query read-only (see [`Database::issues_read_only`]): what it found, or why
/// it could not run. A query that fails does not stop the others.
pub(crate) async fn check_read_only(
    database: &dyn Database,
    queries: &[Query],
) -> Vec<Result<CheckResult, DatabaseError>> {
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        out.push(database.issues_read_only(&q.sql).await);
    }
    out
}

/// What running checks found.
pub(crate) struct Checked {
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
pub(crate) async fn check(
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

pub(crate) fn queries(ctx: &Context, with: &ValidateWith) -> Result<Vec<Query>, String> {
    Ok(queries_with_files(ctx, with)?
        .into_iter()
        .map(|(q, _)| q)
        .collect())
}

/// The step's checks, each with the file it was read from (`None`: inline).
fn queries_with_files(
    ctx: &Context,
    with: &ValidateWith,
) -> Result<Vec<(Query, Option<PathBuf>)>, String> {
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
            out.push((
                Query {
                    name,
                    sql,
                    max: default_max,
                },
                Some(file),
            ));
        }
    }
    for check in &with.checks {
        out.push((
            Query {
                name: check.name.clone(),
                sql: check.sql.clone(),
                max: check.max_issues.unwrap_or(default_max),
            },
            None,
        ));
    }
    Ok(out)
}

/// Why `sql` cannot be a validation check in the dialect of database `kind` (`postgres`,
/// `mysql`, `sqlite`), with the line (from 1) it is about: it is empty, holds more than one
/// statement, or does not parse. `None` when it is one statement, or the dialect is one the
/// parser does not know.
pub(crate) fn statement_problem(kind: &str, sql: &str) -> Option<(u64, String)> {
    use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
    use sqlparser::parser::Parser;
    use sqlparser::tokenizer::{Token, Tokenizer};

    let dialect: Box<dyn Dialect> = match kind {
        "postgres" => Box::new(PostgreSqlDialect {}),
        "mysql" => Box::new(MySqlDialect {}),
        "sqlite" => Box::new(SQLiteDialect {}),
        _ => return None,
    };
    let tokens = match Tokenizer::new(dialect.as_ref(), sql).tokenize_with_location() {
        Ok(t) => t,
        Err(e) => return Some((e.location.line.max(1), e.message)),
    };
    let statements: Vec<_> = crate::migrate::lint::split(tokens)
        .into_iter()
        .filter(|s| s.iter().any(|t| !matches!(t.token, Token::Whitespace(_))))
        .collect();
    let first_line = |statement: &[sqlparser::tokenizer::TokenWithSpan]| {
        statement
            .iter()
            .find(|t| !matches!(t.token, Token::Whitespace(_)))
            .map_or(1, |t| t.span.start.line.max(1))
    };
    match statements.as_slice() {
        [] => Some((
            1,
            "the check is empty: it needs one query (comments alone are not a query)".into(),
        )),
        [statement] => {
            let mut parser =
                Parser::new(dialect.as_ref()).with_tokens_with_locations(statement.clone());
            let error = match parser.parse_statement() {
                Ok(_) if parser.peek_token_ref().token == Token::EOF => return None,
                Ok(_) => {
                    let next = parser.peek_token();
                    return Some((
                        next.span.start.line.max(1),
                        format!(
                            "unexpected {} at line {}, column {}",
                            next.token, next.span.start.line, next.span.start.column
                        ),
                    ));
                }
                Err(e) => e.to_string(),
            };
            let error = error.trim_start_matches("sql parser error: ").to_owned();
            // The parser says where as "at Line: L, Column: C".
            let line = error
                .rsplit_once("Line: ")
                .and_then(|(_, rest)| {
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .filter(|l| *l > 0)
                .unwrap_or_else(|| first_line(statement));
            Some((line, format!("cannot be parsed as {kind} SQL: {error}")))
        }
        [_, second, ..] => Some((
            first_line(second),
            format!(
                "holds {} statements; a check is exactly one query",
                statements.len()
            ),
        )),
    }
}

pub(crate) fn plan(ctx: &Context, with: &ValidateWith) -> Result<(String, Option<String>), String> {
    let loaded = queries_with_files(ctx, with)?;
    let kind = ctx.database.kind();
    let problems: Vec<String> = loaded
        .iter()
        .filter_map(|(q, file)| {
            let (line, why) = statement_problem(kind, &q.sql)?;
            Some(match file {
                Some(file) => format!("check {}:{line}: {why}", file.display()),
                None => format!("check `{}` (line {line} of its `sql:`): {why}", q.name),
            })
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let queries: Vec<Query> = loaded.into_iter().map(|(q, _)| q).collect();
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

pub(crate) async fn run(ctx: &Context, id: &str, with: &ValidateWith) -> Result<String, StepError> {
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

#[cfg(test)]
mod tests {
    use super::statement_problem;

    #[test]
    fn one_statement_in_each_dialect_is_fine() {
        for kind in ["postgres", "mysql", "sqlite"] {
            for sql in [
                "SELECT COUNT(*) AS issues FROM users",
                "-- why\nSELECT id FROM users WHERE email IS NULL;\n",
                "WITH d AS (SELECT 1 AS x) SELECT COUNT(*) AS cnt FROM d",
            ] {
                assert_eq!(statement_problem(kind, sql), None, "{kind}: {sql}");
            }
        }
        // A dialect the parser does not know is not judged.
        assert_eq!(statement_problem("azure-sql", ""), None);
    }

    #[test]
    fn empty_several_or_unparsable_name_the_line() {
        let (line, why) = statement_problem("postgres", "-- only a comment\n\n").unwrap();
        assert_eq!(line, 1);
        assert!(why.contains("empty"), "{why}");
        let (line, why) =
            statement_problem("sqlite", "SELECT 1 AS issues;\n\nDELETE FROM users;").unwrap();
        assert_eq!(line, 3);
        assert!(why.contains("holds 2 statements"), "{why}");
        let (line, why) =
            statement_problem("mysql", "SELECT COUNT(*) AS issues\nFROM users\nWHERE = 1").unwrap();
        assert_eq!(line, 3);
        assert!(why.starts_with("cannot be parsed as mysql SQL"), "{why}");
        let (line, _) = statement_problem("postgres", "SELECT 'unterminated\nFROM x").unwrap();
        assert_eq!(line, 1);
    }
}
