//! What a run tells its reporters, and the [`Reporter`] trait they implement: the run
//! emits events, the outputs (plain, tty, JSON, CI) render them.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::run::plan::Plan;

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
    /// What a failed step led to (`retry`, `rollback`, `halt`): by the pipeline's
    /// `on_failure`, or by the named user at the prompt (`asked`).
    Decision {
        id: String,
        choice: String,
        asked: bool,
        user: String,
    },
    /// The run stopped for a human; `cutover resume` continues at `step`, `cutover
    /// rollback` undoes it.
    RunHalted {
        run_id: String,
        step: String,
        reason: String,
    },
    /// A fleet target's run starts (`deploy --fleet`).
    TargetStarted {
        target: String,
        index: usize,
        total: usize,
    },
    /// A fleet target's run ended, with the fleet's progress so far.
    TargetFinished {
        target: String,
        status: String,
        run_id: Option<String>,
        failed_step: Option<String>,
        error: Option<String>,
        elapsed_ms: u64,
        done: usize,
        failed: usize,
        total: usize,
        eta_ms: u64,
    },
    Warning {
        message: String,
    },
    /// Something the run established, as data; `id`: the step it belongs to.
    Fact {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(flatten)]
        fact: crate::fact::Fact,
    },
    /// The run goes on outside its environment's window (the way back, or a forward run
    /// forced with a reason), as its journal records it.
    OutsideWindow(super::window::OutsideWindow),
}

impl Event {
    /// Whether `--quiet` still shows the event: failures, rollbacks and warnings.
    pub fn essential(&self) -> bool {
        matches!(
            self,
            Self::StepFailed { .. }
                | Self::RollbackStarted { .. }
                | Self::RunHalted { .. }
                | Self::Decision { .. }
                | Self::TargetFinished { error: Some(_), .. }
                | Self::CompensationFinished { error: Some(_), .. }
                | Self::Warning { .. }
                | Self::Fact {
                    fact: crate::fact::Fact::StateCompared { .. }
                        | crate::fact::Fact::StateNotCompared { .. },
                    ..
                }
                | Self::OutsideWindow(_)
        )
    }
}

/// Receives events. Implementations must not block for long.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
    /// Shows a plan (the whole output of `plan` and `--dry-run`).
    fn plan(&self, plan: &Plan);
    /// A command's final result (a table, a list, a message) for stdout.
    fn result(&self, value: &serde_json::Value, text: &str);
    /// Secret values may have been registered with the redactor (the config's references
    /// were just resolved): a CI sink tells the CI to mask them now, before anything else.
    fn sync_secrets(&self) {}
    /// The command is over: a CI sink writes its summary and outputs.
    fn finish(&self, _finished: &Finished) {}
}

/// Discards everything; for library callers that want no output.
pub(crate) struct Silent;

impl Reporter for Silent {
    fn event(&self, _: &Event) {}
    fn plan(&self, _: &Plan) {}
    fn result(&self, _: &serde_json::Value, _: &str) {}
}

/// What a command left behind, ready for the sinks: the document (as a value and as the
/// text `--report` writes), its Markdown rendering and the CI outputs. All redacted.
#[derive(Debug, Clone)]
pub struct Finished {
    pub document: Value,
    pub json: String,
    pub markdown: String,
    /// `run_id`, `result`, `backup_id`, `schema_version`, in that order.
    pub outputs: Vec<(&'static str, String)>,
    pub command: String,
    pub exit_code: u8,
    /// The error that stopped the command before or instead of a run (bad input, lock...),
    /// not a failed step: failed steps are reported as they happen.
    pub error: Option<String>,
    /// The same error as messages, each with the place in a file it is about when it is
    /// about one (a config value, a migration's line), for outputs that link to places.
    pub problems: Vec<crate::place::Message>,
    /// A pipeline ran, or the command failed: worth a summary and outputs.
    pub worth_summary: bool,
    pub run_id: Option<String>,
    /// The environment's state folder, when the config was read.
    pub state_dir: Option<PathBuf>,
}

impl Finished {
    pub fn failed(&self) -> bool {
        self.exit_code != 0
    }
}
