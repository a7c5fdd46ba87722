//! The run report: what one command did, gathered from its events, as one JSON document
//! (`--report FILE`, described in docs/report.md), a Markdown summary (the GitHub step
//! summary, the Azure DevOps uploaded summary) and the four CI outputs.
//!
//! A [`Recorder`] sees every event through [`Recording`], which wraps the chosen sink; the
//! CLI adds what events do not carry (the run's outcome, the backup manifest) and calls
//! [`Recorder::finish`] once, when the command ends, however it ends.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Event, Reporter};
use crate::fact::Fact;
use crate::run::plan::Plan;
use crate::run::window::OutsideWindow;
use crate::secret::Redactor;

/// Version of the report document, as `v` in `--output json` events.
pub const VERSION: u32 = 1;

/// GitHub refuses step summaries over 1 MiB; stay well under it.
const MARKDOWN_LIMIT: usize = 900 * 1024;

/// How the run ended, as the CLI knows it once the engine returns.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// `succeeded`, `rolled_back` or `rollback_failed`.
    pub status: String,
    pub interrupted: bool,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    /// Undo actions that ran.
    pub undone: Vec<String>,
    /// Undo actions that failed or never ran.
    pub left: Vec<String>,
    pub journal: Option<String>,
    pub schema_before: Option<i64>,
    pub schema_after: Option<i64>,
}

/// The report document (`--report FILE`), field by field as docs/report.md describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    pub v: u32,
    /// Always `report`: the document is one more member of the `--output json` family.
    pub event: String,
    pub at: String,
    pub project: Option<String>,
    pub environment: Option<String>,
    pub command: String,
    pub run_id: Option<String>,
    pub pipeline: Option<String>,
    pub status: String,
    pub exit_code: u8,
    pub interrupted: bool,
    pub error: Option<Failure>,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub run_duration_ms: Option<u64>,
    pub schema_version: SchemaVersion,
    pub steps: Vec<Step>,
    pub migrations: Migrations,
    pub backup: Option<Backup>,
    /// The database's fingerprint before the run's first side effect.
    #[serde(default)]
    pub fingerprint: Option<Fact>,
    /// After a rollback: the database compared with that fingerprint.
    #[serde(default)]
    pub state_check: Option<Fact>,
    pub validations: Vec<Validation>,
    pub rollback: Option<Rollback>,
    pub warnings: Vec<String>,
    pub journal: Option<String>,
    pub result: Option<Value>,
    /// The run went on outside the environment's window (the way back, or forced).
    pub outside_window: Option<OutsideWindow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub step: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SchemaVersion {
    pub before: Option<i64>,
    pub after: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub index: Option<usize>,
    pub id: String,
    pub uses: String,
    pub summary: String,
    /// `succeeded`, `failed`, `skipped`, `not_run` or `running` (never finished).
    pub status: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub skipped_reason: Option<String>,
    pub retries: u32,
    pub notes: Vec<String>,
}

impl Step {
    fn new(id: &str) -> Self {
        Self {
            index: None,
            id: id.to_owned(),
            uses: String::new(),
            summary: String::new(),
            status: "not_run".into(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
            result: None,
            error: None,
            skipped_reason: None,
            retries: 0,
            notes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Migration {
    pub version: i64,
    pub description: String,
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Migrations {
    pub applied: Vec<Migration>,
    pub reverted: Vec<Migration>,
}

/// The backup a run took, from its manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backup {
    pub id: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Validation {
    pub step: String,
    pub check: String,
    pub issues: i64,
    pub max_issues: i64,
    pub passed: bool,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rollback {
    pub reason: String,
    pub planned_actions: usize,
    pub actions: Vec<RollbackAction>,
    pub undone: Vec<String>,
    pub left: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackAction {
    pub step: String,
    pub action: String,
    /// `succeeded` or `failed`.
    pub status: String,
    pub error: Option<String>,
}

pub use crate::run::event::Finished;

#[derive(Debug, Clone)]
struct PlannedStep {
    index: usize,
    id: String,
    uses: String,
    summary: String,
}

#[derive(Debug, Default)]
struct State {
    project: Option<String>,
    environment: Option<String>,
    folder: Option<PathBuf>,
    run_id: Option<String>,
    pipeline: Option<String>,
    run_elapsed_ms: Option<u64>,
    planned: Vec<PlannedStep>,
    steps: Vec<Step>,
    migrations: Migrations,
    validations: Vec<Validation>,
    rollback: Option<(String, usize)>,
    actions: Vec<RollbackAction>,
    warnings: Vec<String>,
    backup: Option<Backup>,
    fingerprint: Option<Fact>,
    rollback_check: Option<Fact>,
    outcome: Option<Outcome>,
    result: Option<Value>,
    outside_window: Option<OutsideWindow>,
}

impl State {
    fn step(&mut self, id: &str) -> &mut Step {
        if let Some(at) = self.steps.iter().rposition(|s| s.id == id) {
            return &mut self.steps[at];
        }
        let mut record = Step::new(id);
        if let Some(p) = self.planned.iter().find(|p| p.id == id) {
            record.index = Some(p.index);
            record.uses.clone_from(&p.uses);
            record.summary.clone_from(&p.summary);
        }
        self.steps.push(record);
        self.steps.last_mut().expect("just pushed")
    }

    fn warn(&mut self, message: &str) {
        if !self.warnings.iter().any(|w| w == message) {
            self.warnings.push(message.to_owned());
        }
    }
}

/// Gathers a command's events. One per process: one command, one report.
pub struct Recorder {
    redactor: Redactor,
    started: DateTime<Utc>,
    state: Mutex<State>,
}

impl Recorder {
    pub fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            started: Utc::now(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the session knows once the config is read.
    pub fn set_config(&self, project: &str, state_dir: PathBuf) {
        let mut s = self.state();
        s.project = Some(project.to_owned());
        s.folder = Some(state_dir);
    }

    /// The environment acted on (as asked for, until it is known to exist).
    pub fn set_environment(&self, environment: &str) {
        self.state().environment = Some(environment.to_owned());
    }

    pub fn record(&self, event: &Event) {
        let now = time(Utc::now());
        let mut s = self.state();
        match event {
            Event::RunStarted {
                run_id,
                environment,
                pipeline,
            } => {
                s.run_id = Some(run_id.clone());
                s.environment = Some(environment.clone());
                s.pipeline = Some(pipeline.clone());
            }
            Event::StepStarted {
                index,
                id,
                uses,
                summary,
                ..
            } => {
                let mut record = Step::new(id);
                record.index = Some(*index);
                record.uses.clone_from(uses);
                record.summary.clone_from(summary);
                record.status = "running".into();
                record.started_at = Some(now);
                s.steps.push(record);
            }
            Event::StepSkipped { id, reason } => {
                let step = s.step(id);
                step.status = "skipped".into();
                step.skipped_reason = Some(reason.clone());
            }
            Event::StepNote { id, message } => {
                if s.steps.iter().any(|st| st.id == *id) {
                    s.step(id).notes.push(message.clone());
                }
            }
            Event::Fact { id, fact } => {
                match fact {
                    Fact::MigrationApplied {
                        version,
                        description,
                        took_ms,
                        ..
                    } => s.migrations.applied.push(Migration {
                        version: *version,
                        description: description.clone(),
                        duration_ms: Some(*took_ms),
                    }),
                    Fact::MigrationReverted {
                        version,
                        description,
                    } => s.migrations.reverted.push(Migration {
                        version: *version,
                        description: description.clone(),
                        duration_ms: None,
                    }),
                    Fact::BackupTaken { backup } => {
                        s.backup = Some(Backup {
                            id: backup.clone(),
                            sha256: None,
                            size: None,
                        });
                    }
                    Fact::FingerprintTaken { .. } => s.fingerprint = Some(fact.clone()),
                    Fact::StateCompared { .. } | Fact::StateNotCompared { .. } => {
                        s.rollback_check = Some(fact.clone());
                    }
                    // The plan in the report carries the rehearsal's result.
                    Fact::RowsChanged { .. }
                    | Fact::RehearsalCopied { .. }
                    | Fact::MigrationRehearsed { .. } => {}
                }
                if let Some(id) = id
                    && s.steps.iter().any(|st| st.id == *id)
                    && !matches!(fact, Fact::FingerprintTaken { .. })
                {
                    s.step(id).notes.push(fact.describe());
                }
            }
            Event::CheckResult {
                id,
                check,
                issues,
                max_issues,
                columns,
                rows,
            } => s.validations.push(Validation {
                step: id.clone(),
                check: check.clone(),
                issues: *issues,
                max_issues: *max_issues,
                passed: issues <= max_issues,
                columns: columns.clone(),
                rows: rows.clone(),
            }),
            Event::StepRetry {
                id, attempt, error, ..
            } => {
                let step = s.step(id);
                step.retries = *attempt;
                step.notes.push(format!(
                    "retry {attempt} after a transient failure: {error}"
                ));
            }
            Event::StepFinished {
                id,
                elapsed_ms,
                message,
            } => {
                let step = s.step(id);
                step.status = "succeeded".into();
                step.finished_at = Some(now);
                step.duration_ms = Some(*elapsed_ms);
                step.result = Some(message.clone());
            }
            Event::StepFailed {
                id,
                elapsed_ms,
                error,
            } => {
                let step = s.step(id);
                step.status = "failed".into();
                step.finished_at = Some(now);
                step.duration_ms = Some(*elapsed_ms);
                step.error = Some(error.clone());
            }
            Event::RollbackStarted { reason, actions } => {
                s.rollback = Some((reason.clone(), *actions));
            }
            Event::StepProgress { .. }
            | Event::CompensationStarted { .. }
            | Event::Decision { .. }
            | Event::TargetStarted { .. }
            | Event::TargetFinished { .. } => {}
            Event::CompensationFinished { id, action, error } => {
                s.actions.push(RollbackAction {
                    step: id.clone(),
                    action: action.clone(),
                    status: if error.is_some() {
                        "failed"
                    } else {
                        "succeeded"
                    }
                    .into(),
                    error: error.clone(),
                });
            }
            Event::RunFinished {
                run_id, elapsed_ms, ..
            } => {
                s.run_id = Some(run_id.clone());
                s.run_elapsed_ms = Some(*elapsed_ms);
            }
            Event::RunHalted { run_id, .. } => s.run_id = Some(run_id.clone()),
            Event::Warning { message } => s.warn(message),
            Event::OutsideWindow(outside) => s.outside_window = Some(outside.clone()),
        }
    }

    pub fn record_plan(&self, plan: &Plan) {
        let mut s = self.state();
        s.project = Some(plan.project.clone());
        s.environment = Some(plan.environment.clone());
        s.pipeline = Some(plan.pipeline.clone());
        s.planned = plan
            .steps
            .iter()
            .map(|p| PlannedStep {
                index: p.index,
                id: p.id.clone(),
                uses: p.uses.clone(),
                summary: p.summary.clone(),
            })
            .collect();
        for w in &plan.warnings {
            s.warn(w);
        }
    }

    pub fn record_result(&self, value: &Value) {
        self.state().result = Some(value.clone());
    }

    pub fn set_outcome(&self, outcome: Outcome) {
        self.state().outcome = Some(outcome);
    }

    /// The id of the backup the run took, if it took one.
    pub fn backup_id(&self) -> Option<String> {
        self.state().backup.as_ref().map(|b| b.id.clone())
    }

    pub fn set_backup(&self, backup: Backup) {
        self.state().backup = Some(backup);
    }

    /// Closes the report: the document, its Markdown and the outputs, all redacted.
    pub fn finish(&self, command: &str, exit_code: u8, error: Option<&str>) -> Finished {
        let finished_at = Utc::now();
        let s = self.state();
        let outcome = s.outcome.clone().unwrap_or_default();
        let ran = s.outcome.is_some();
        let failure = match (&outcome.error, error) {
            (Some(message), _) => Some(Failure {
                step: outcome.failed_step.clone(),
                message: message.clone(),
            }),
            (None, Some(e)) => Some(Failure {
                step: None,
                message: e.to_owned(),
            }),
            _ => None,
        };
        let document = Document {
            v: VERSION,
            event: "report".into(),
            at: time(finished_at),
            project: s.project.clone(),
            environment: s.environment.clone(),
            command: command.to_owned(),
            run_id: s.run_id.clone(),
            pipeline: s.pipeline.clone(),
            status: if ran {
                outcome.status.clone()
            } else {
                status_for_exit(exit_code).to_owned()
            },
            exit_code,
            interrupted: outcome.interrupted,
            error: failure,
            started_at: time(self.started),
            finished_at: time(finished_at),
            duration_ms: u64::try_from((finished_at - self.started).num_milliseconds())
                .unwrap_or_default(),
            run_duration_ms: s.run_elapsed_ms,
            schema_version: SchemaVersion {
                before: outcome.schema_before,
                after: outcome.schema_after,
            },
            steps: steps_in_order(&s),
            migrations: s.migrations.clone(),
            backup: s.backup.clone(),
            fingerprint: s.fingerprint.clone(),
            state_check: s.rollback_check.clone(),
            validations: s.validations.clone(),
            rollback: s.rollback.as_ref().map(|(reason, planned)| Rollback {
                reason: reason.clone(),
                planned_actions: *planned,
                actions: s.actions.clone(),
                undone: outcome.undone.clone(),
                left: outcome.left.clone(),
            }),
            warnings: s.warnings.clone(),
            journal: outcome.journal.clone(),
            result: s.result.clone(),
            outside_window: s.outside_window.clone(),
        };
        let mut value = serde_json::to_value(&document).expect("the report serializes");
        redact_value(&mut value, &self.redactor);
        // Back into the struct, so the file keeps the documented field order.
        let document: Document =
            serde_json::from_value(value.clone()).expect("the redacted report reads back");
        let json = serde_json::to_string_pretty(&document).expect("the report serializes");
        let text = |v: &Value| match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let outputs = vec![
            ("run_id", text(&value["run_id"])),
            ("result", text(&value["status"])),
            ("backup_id", text(&value["backup"]["id"])),
            ("schema_version", text(&value["schema_version"]["after"])),
        ];
        Finished {
            markdown: markdown(&value),
            json,
            outputs,
            command: command.to_owned(),
            exit_code,
            error: error.map(|e| self.redactor.redact(e)),
            worth_summary: s.run_id.is_some() || exit_code != 0,
            run_id: s.run_id.clone(),
            state_dir: s.folder.clone(),
            document: value,
        }
    }
}

/// The status word for a command that ended without a run outcome.
pub fn status_for_exit(code: u8) -> &'static str {
    match code {
        0 => "succeeded",
        2 => "bad_input",
        3 => "incomplete",
        4 => "locked",
        5 => "not_confirmed",
        130 => "interrupted",
        _ => "failed",
    }
}

/// Steps in pipeline order; planned steps that never started are `not_run` once a run has
/// started.
fn steps_in_order(s: &State) -> Vec<Step> {
    if s.planned.is_empty() || s.run_id.is_none() {
        return s.steps.clone();
    }
    let mut out = Vec::new();
    for p in &s.planned {
        let mut records = s.steps.iter().filter(|r| r.id == p.id).peekable();
        if records.peek().is_some() {
            out.extend(records.cloned());
        } else {
            let mut record = Step::new(&p.id);
            record.index = Some(p.index);
            record.uses.clone_from(&p.uses);
            record.summary.clone_from(&p.summary);
            out.push(record);
        }
    }
    // Steps the plan did not name (none, unless the pipeline changed): keep them too.
    for step in &s.steps {
        if !s.planned.iter().any(|p| p.id == step.id) {
            out.push(step.clone());
        }
    }
    out
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Masks every string in a JSON value.
pub fn redact_value(value: &mut Value, redactor: &Redactor) {
    match value {
        Value::String(s) => {
            let masked = redactor.redact(s);
            if masked != *s {
                *s = masked;
            }
        }
        Value::Array(items) => {
            for item in items {
                redact_value(item, redactor);
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                redact_value(item, redactor);
            }
        }
        _ => {}
    }
}

/// `850 ms`, `12.3s`.
pub fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

fn human_size(bytes: u64) -> String {
    crate::units::human_bytes(bytes)
}

/// A Markdown table cell: one line, no column breaks.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace("\r\n", "<br>")
        .replace(['\n', '\r'], "<br>")
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn status_icon(status: &str) -> &'static str {
    match status {
        "succeeded" => "✅",
        "failed" | "rollback_failed" | "incomplete" => "❌",
        "rolled_back" | "interrupted" => "↩️",
        "skipped" | "not_run" => "⏭️",
        "running" => "⏳",
        _ => "⚠️",
    }
}

fn status_badge(status: &str) -> String {
    format!("{} {}", status_icon(status), status.replace('_', " "))
}

/// The document as Markdown: a heading with the result, the steps, migrations, backup,
/// validations, rollback and warnings.
pub fn markdown(doc: &Value) -> String {
    let mut md = String::new();
    let status = str_of(&doc["status"]);
    let mut scope = vec![str_of(&doc["project"]), str_of(&doc["environment"])];
    scope.retain(|s| !s.is_empty());
    let _ = writeln!(
        md,
        "### {} `cutover {}`{}: {}",
        status_icon(status),
        str_of(&doc["command"]),
        if scope.is_empty() {
            String::new()
        } else {
            format!(" — {}", scope.join(" / "))
        },
        status.replace('_', " ")
    );
    md.push('\n');
    md.push_str("| | |\n|---|---|\n");
    let _ = writeln!(
        md,
        "| Result | **{}** (exit {}) |",
        status, doc["exit_code"]
    );
    if let Some(run) = doc["run_id"].as_str() {
        let _ = writeln!(md, "| Run | `{run}` |");
    }
    if let Some(p) = doc["pipeline"].as_str() {
        let _ = writeln!(md, "| Pipeline | `{}` |", cell(p));
    }
    if let Some(ms) = doc["run_duration_ms"]
        .as_u64()
        .or_else(|| doc["duration_ms"].as_u64())
    {
        let _ = writeln!(md, "| Duration | {} |", duration_text(ms));
    }
    let version = |v: &Value| {
        v.as_i64()
            .map_or_else(|| "empty schema".to_owned(), |v| v.to_string())
    };
    if doc["run_id"].is_string() {
        let sv = &doc["schema_version"];
        let _ = writeln!(
            md,
            "| Schema version | {} → {} |",
            version(&sv["before"]),
            version(&sv["after"])
        );
    }
    if let Some(o) = doc["outside_window"].as_object() {
        let mut line = format!(
            "outside `{}`, {} by {}",
            cell(str_of(&o["window"])),
            if o["forced"] == true {
                "forced"
            } else {
                "going back or reading"
            },
            cell(str_of(&o["user"]))
        );
        if let Some(reason) = o["reason"].as_str() {
            let _ = write!(line, ": {}", cell(reason));
        }
        let _ = writeln!(md, "| Window | {line} |");
    }
    if let Some(b) = doc["backup"].as_object() {
        let mut line = format!("`{}`", str_of(&b["id"]));
        let mut details = Vec::new();
        if let Some(size) = b["size"].as_u64() {
            details.push(human_size(size));
        }
        if let Some(sha) = b["sha256"].as_str() {
            details.push(format!("sha256 `{sha}`"));
        }
        if !details.is_empty() {
            let _ = write!(line, " ({})", details.join(", "));
        }
        let _ = writeln!(md, "| Backup | {line} |");
    }
    if let Some(j) = doc["journal"].as_str() {
        let _ = writeln!(md, "| Journal | `{}` |", cell(j));
    }
    if let Some(e) = doc["error"].as_object() {
        let message = str_of(&e["message"]);
        let text = match e["step"].as_str() {
            Some(step) => format!("step `{step}` failed: {message}"),
            None => message.to_owned(),
        };
        let _ = writeln!(md, "| Error | {} |", cell(&text));
    }

    if let Some(steps) = doc["steps"].as_array().filter(|s| !s.is_empty()) {
        md.push_str("\n#### Steps\n\n| # | Step | Uses | Result | Duration | Details |\n|--:|---|---|---|--:|---|\n");
        for step in steps {
            let details = step["error"]
                .as_str()
                .or_else(|| step["result"].as_str())
                .or_else(|| step["skipped_reason"].as_str())
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                step["index"]
                    .as_u64()
                    .map_or(String::new(), |i| (i + 1).to_string()),
                cell(str_of(&step["id"])),
                cell(str_of(&step["uses"])),
                status_badge(str_of(&step["status"])),
                step["duration_ms"]
                    .as_u64()
                    .map_or(String::new(), duration_text),
                cell(details),
            );
        }
    }

    let migrations = |key: &str| {
        doc["migrations"][key]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let applied = migrations("applied");
    let reverted = migrations("reverted");
    if !applied.is_empty() {
        md.push_str("\n#### Migrations applied\n\n");
        for m in &applied {
            let _ = writeln!(
                md,
                "- `{}` {}{}",
                m["version"],
                cell(str_of(&m["description"])),
                m["duration_ms"]
                    .as_u64()
                    .map_or(String::new(), |ms| format!(" ({})", duration_text(ms)))
            );
        }
    }
    if !reverted.is_empty() {
        md.push_str("\n#### Migrations reverted\n\n");
        for m in &reverted {
            let _ = writeln!(
                md,
                "- `{}` {}",
                m["version"],
                cell(str_of(&m["description"]))
            );
        }
    }

    if let Some(checks) = doc["validations"].as_array().filter(|c| !c.is_empty()) {
        md.push_str(
            "\n#### Validation\n\n| Check | Issues | Allowed | Result |\n|---|--:|--:|---|\n",
        );
        for c in checks {
            let passed = c["passed"].as_bool().unwrap_or(false);
            // The same checks on the rehearsal's copy say where they ran.
            let check = match str_of(&c["step"]) {
                "rehearsal" => format!("{} (on the rehearsal's copy)", str_of(&c["check"])),
                _ => str_of(&c["check"]).to_owned(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                cell(&check),
                c["issues"],
                c["max_issues"],
                if passed { "✅ passed" } else { "❌ failed" }
            );
        }
    }

    if let Some(rb) = doc["rollback"].as_object() {
        let _ = writeln!(
            md,
            "\n#### Rollback\n\n{}\n",
            cell(&format!("Reason: {}", str_of(&rb["reason"])))
        );
        let actions = rb["actions"].as_array().cloned().unwrap_or_default();
        if actions.is_empty() {
            md.push_str("Nothing needed undoing.\n");
        } else {
            md.push_str("| Step | Undo action | Result |\n|---|---|---|\n");
            for a in &actions {
                let result = match a["error"].as_str() {
                    Some(e) => format!("❌ failed: {e}"),
                    None => "✅ done".to_owned(),
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    cell(str_of(&a["step"])),
                    cell(str_of(&a["action"])),
                    cell(&result)
                );
            }
        }
        if let Some(left) = rb["left"].as_array().filter(|l| !l.is_empty()) {
            md.push_str("\n**Still to undo — a human is needed:**\n\n");
            for l in left {
                let _ = writeln!(md, "- {}", cell(str_of(l)));
            }
        }
    }

    if let Some(warnings) = doc["warnings"].as_array().filter(|w| !w.is_empty()) {
        md.push_str("\n#### Warnings\n\n");
        for w in warnings {
            let _ = writeln!(md, "- {}", cell(str_of(w)));
        }
    }
    if md.len() > MARKDOWN_LIMIT {
        let mut cut = MARKDOWN_LIMIT;
        while !md.is_char_boundary(cut) {
            cut -= 1;
        }
        md.truncate(cut);
        md.push_str("\n\n… (cut short: the full report is in `--report`)\n");
    }
    md.push('\n');
    md
}

/// Wraps a sink: every event is recorded, then passed on.
pub struct Recording {
    inner: Arc<dyn Reporter>,
    recorder: Arc<Recorder>,
}

impl Recording {
    pub fn new(inner: Arc<dyn Reporter>, recorder: Arc<Recorder>) -> Self {
        Self { inner, recorder }
    }
}

impl Reporter for Recording {
    fn event(&self, event: &Event) {
        self.recorder.record(event);
        self.inner.event(event);
    }

    fn plan(&self, plan: &Plan) {
        self.recorder.record_plan(plan);
        self.inner.plan(plan);
    }

    fn result(&self, value: &Value, text: &str) {
        self.recorder.record_result(value);
        self.inner.result(value, text);
    }

    fn sync_secrets(&self) {
        self.inner.sync_secrets();
    }

    fn finish(&self, finished: &Finished) {
        self.inner.finish(finished);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_recorded_and_redacted() {
        let redactor = Redactor::default();
        redactor.register("hunter2-secret");
        let r = Recorder::new(redactor);
        r.record(&Event::RunStarted {
            run_id: "r1".into(),
            environment: "prod".into(),
            pipeline: "deploy".into(),
        });
        r.record(&Event::StepStarted {
            index: 0,
            total: 2,
            id: "migrate".into(),
            uses: "migrate".into(),
            summary: "apply".into(),
        });
        r.record(&Event::Fact {
            id: Some("migrate".into()),
            fact: Fact::MigrationApplied {
                version: 5,
                description: "add col".into(),
                checksum: "00".into(),
                took_ms: 2,
            },
        });
        r.record(&Event::StepFailed {
            id: "migrate".into(),
            elapsed_ms: 7,
            error: "boom hunter2-secret | x".into(),
        });
        let f = r.finish("deploy", 1, None);
        let doc = &f.document;
        assert_eq!(doc["v"], 1);
        assert_eq!(doc["status"], "failed");
        assert_eq!(doc["steps"][0]["error"], "boom *** | x");
        assert_eq!(doc["migrations"]["applied"][0]["version"], 5);
        assert!(f.markdown.contains("boom *** \\| x"), "{}", f.markdown);
        assert!(!f.markdown.contains("hunter2-secret"));
        assert_eq!(f.outputs[0], ("run_id", "r1".to_owned()));
        assert_eq!(f.outputs[1], ("result", "failed".to_owned()));
        assert!(f.worth_summary);
    }
}
