//! `validate`: the pipeline's validation checks against the live database, read-only.
//!
//! Every check of the `validate` steps the environment runs goes through
//! [`Database::issues_read_only`](crate::adapters::database::Database::issues_read_only): a
//! read-only transaction (a read-only connection on SQLite), rolled back. No lock, no
//! journal, no backup: nothing is written. Exit 0 when every check passes, 1 when one finds
//! more issues than allowed or cannot run, 2 on bad input.

use serde_json::json;

use super::exit::{Exit, redactor};
use super::session::Session;
use super::{Global, Output, ValidateArgs};
use crate::engine::{EngineError, cancel};
use crate::report::plain::sample_rows;
use crate::steps::validate::{self, StepChecks};

pub(crate) async fn validate(global: &Global, args: ValidateArgs) -> Result<Exit, EngineError> {
    let mut global = global.clone();
    if args.json {
        global.output = Output::Json;
    }
    let session = Session::open(&global)?;
    let pipeline = session.pipeline(args.pipeline.as_deref())?;
    let ctx = session.context(cancel::on_signals())?;
    let steps = validate::environment_checks(&ctx, &pipeline).map_err(EngineError::Plan)?;
    let total: usize = steps.iter().map(|s| s.queries.len()).sum();
    if total == 0 {
        return Err(EngineError::Plan(format!(
            "pipeline `{}` has no validation checks that run in environment `{}`",
            pipeline.path.display(),
            ctx.environment
        )));
    }
    let mut checks = Vec::new();
    let mut lines = Vec::new();
    let mut failed = 0usize;
    for StepChecks { id, queries } in &steps {
        let results = validate::check_read_only(ctx.database.as_ref(), queries).await;
        for (q, result) in queries.iter().zip(results) {
            match result {
                Ok(r) => {
                    let passed = r.issues <= q.max;
                    if !passed {
                        failed += 1;
                    }
                    lines.push(format!(
                        "{id}/{}: {} issue(s), {} allowed — {}{}",
                        q.name,
                        r.issues,
                        q.max,
                        if passed { "ok" } else { "FAIL" },
                        sample_rows(&r.columns, &r.rows, r.issues, "    ")
                    ));
                    checks.push(json!({
                        "step": id,
                        "check": q.name,
                        "issues": r.issues,
                        "max_issues": q.max,
                        "passed": passed,
                        "columns": r.columns,
                        "rows": r.rows,
                    }));
                }
                Err(e) => {
                    // A check that cannot run has not passed.
                    failed += 1;
                    lines.push(format!("{id}/{}: ERROR — {e}", q.name));
                    checks.push(json!({
                        "step": id,
                        "check": q.name,
                        "issues": null,
                        "max_issues": q.max,
                        "passed": false,
                        "error": e.to_string(),
                    }));
                }
            }
        }
    }
    let verdict = if failed == 0 {
        format!(
            "all {total} check(s) passed against `{}` (read-only)",
            ctx.environment
        )
    } else {
        format!(
            "{failed} of {total} check(s) failed against `{}` (read-only)",
            ctx.environment
        )
    };
    let document = json!({
        "environment": ctx.environment,
        "database": ctx.database.describe(),
        "read_only": true,
        "passed": failed == 0,
        "failed": failed,
        "checks": checks,
    });
    ctx.database.disconnect().await;
    if args.json {
        // `validate --json` prints one JSON document, like `plan --json`.
        println!(
            "{}",
            redactor().redact(&serde_json::to_string_pretty(&document).expect("serializes"))
        );
    } else {
        session.result(&document, &format!("{}\n==> {verdict}", lines.join("\n")));
    }
    // Exit 1 as for a failed `migrate test`: a check failed, and nothing was changed.
    Ok(if failed == 0 {
        Exit::Ok
    } else {
        Exit::RolledBack
    })
}
