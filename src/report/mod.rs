//! Output. The library never prints: it sends [`Event`]s to a [`Reporter`], and the CLI
//! picks a sink (progress bars on a TTY, plain lines, JSON lines). Every sink passes its
//! text through the redactor so no secret value can reach the terminal or a log.

pub mod json;
pub mod plain;
pub mod tty;

use serde::Serialize;

use crate::engine::plan::Plan;

/// Something that happened during a command, in the order it happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        environment: String,
        pipeline: String,
    },
    StepStarted {
        index: usize,
        total: usize,
        id: String,
        uses: String,
        summary: String,
    },
    StepSkipped {
        id: String,
        reason: String,
    },
    /// Bytes streamed so far by a backup or restore.
    StepProgress {
        id: String,
        bytes: u64,
    },
    StepNote {
        id: String,
        message: String,
    },
    /// A validation check's result, with the first offending rows when it returns rows.
    CheckResult {
        id: String,
        check: String,
        issues: i64,
        max_issues: i64,
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    StepRetry {
        id: String,
        attempt: u32,
        error: String,
        wait_ms: u64,
    },
    StepFinished {
        id: String,
        elapsed_ms: u64,
        message: String,
    },
    StepFailed {
        id: String,
        elapsed_ms: u64,
        error: String,
    },
    RollbackStarted {
        reason: String,
        actions: usize,
    },
    CompensationStarted {
        id: String,
        action: String,
    },
    CompensationFinished {
        id: String,
        action: String,
        error: Option<String>,
    },
    RunFinished {
        run_id: String,
        status: String,
        elapsed_ms: u64,
    },
    Warning {
        message: String,
    },
}

/// Receives events. Implementations must not block for long.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
    /// Shows a plan (the whole output of `plan` and `--dry-run`).
    fn plan(&self, plan: &Plan);
    /// A command's final result (a table, a list, a message) for stdout.
    fn result(&self, value: &serde_json::Value, text: &str);
}

/// Discards everything; for library callers that want no output.
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _: &Event) {}
    fn plan(&self, _: &Plan) {}
    fn result(&self, _: &serde_json::Value, _: &str) {}
}

/// Milliseconds, for events.
pub fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
