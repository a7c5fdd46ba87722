//! The run report: what one command did, gathered from its events, as one JSON document
//! (`--report FILE`, described in docs/report.md), a Markdown summary (the GitHub step
//! summary, the Azure DevOps uploaded summary) and the four CI outputs.
//!
//! A [`Recorder`] sees every event through [`Recording`], which wraps the chosen sink; the
//! CLI adds what events do not carry (the run's outcome, the backup manifest) and calls
//! [`Recorder::finish`] once, when the command ends, however it ends.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::{Event, Reporter};
use crate::fact::Fact;
use crate::place::Message;
use crate::run::plan::Plan;
use crate::run::window::OutsideWindow;
use crate::secret::Redactor;

mod document;
mod markdown;

pub(crate) use document::*;
pub(crate) use markdown::markdown;

/// Version of the report document, as `v` in `--output json` events.
pub(crate) const VERSION: u32 = 1;

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
    backups_pruned: Vec<String>,
    confirmed: Option<String>,
    code: Option<document::Code>,
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
pub(crate) struct Recorder {
    redactor: Redactor,
    started: DateTime<Utc>,
    state: Mutex<State>,
}

impl Recorder {
    pub(crate) fn new(redactor: Redactor) -> Self {
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
    pub(crate) fn set_config(&self, project: &str, state_dir: PathBuf) {
        let mut s = self.state();
        s.project = Some(project.to_owned());
        s.folder = Some(state_dir);
    }

    /// The environment acted on (as asked for, until it is known to exist).
    pub(crate) fn set_environment(&self, environment: &str) {
        self.state().environment = Some(environment.to_owned());
    }

    pub(crate) fn record(&self, event: &Event) {
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
                    Fact::Confirmed { how, by } => s.confirmed = Some(format!("{by}, {how}")),
                    Fact::BackupsPruned { deleted, .. } => {
                        s.backups_pruned.extend(deleted.iter().cloned());
                    }
                    Fact::CodeReleased {
                        version,
                        previous,
                        routes,
                        ..
                    } => {
                        s.code = Some(document::Code {
                            version: version.clone(),
                            previous: previous.clone(),
                            routes: routes.clone(),
                        });
                    }
                    Fact::FingerprintTaken { .. } => s.fingerprint = Some(fact.clone()),
                    Fact::StateCompared { .. } | Fact::StateNotCompared { .. } => {
                        s.rollback_check = Some(fact.clone());
                    }
                    // The plan in the report carries the rehearsal's result.
                    Fact::RowsChanged { .. }
                    | Fact::MigrationsBaselined { .. }
                    | Fact::SchemaRecorded { .. }
                    | Fact::ChecksumAccepted { .. }
                    | Fact::CodeStaged { .. }
                    | Fact::SnapshotTaken { .. }
                    | Fact::SnapshotDropped { .. }
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

    pub(crate) fn record_plan(&self, plan: &Plan) {
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
            s.warn(&w.to_string());
        }
    }

    pub(crate) fn record_result(&self, value: &Value) {
        self.state().result = Some(value.clone());
    }

    pub(crate) fn set_outcome(&self, outcome: Outcome) {
        self.state().outcome = Some(outcome);
    }

    /// The id of the backup the run took, if it took one.
    pub(crate) fn backup_id(&self) -> Option<String> {
        self.state().backup.as_ref().map(|b| b.id.clone())
    }

    pub(crate) fn set_backup(&self, backup: Backup) {
        self.state().backup = Some(backup);
    }

    /// Closes the report: the document, its Markdown and the outputs, all redacted.
    /// `problems`: the error as messages with their places (see [`Finished::problems`]).
    pub(crate) fn finish(
        &self,
        command: &str,
        exit_code: u8,
        error: Option<&str>,
        problems: &[Message],
    ) -> Finished {
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
            backups_pruned: s.backups_pruned.clone(),
            code: s.code.clone(),
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
            run_by: format!(
                "{}@{}",
                crate::adapters::state::username(),
                crate::adapters::state::hostname()
            ),
            confirmed: s.confirmed.clone(),
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
            problems: problems
                .iter()
                .map(|m| m.redacted(|t| self.redactor.redact(t)))
                .collect(),
            worth_summary: s.run_id.is_some() || exit_code != 0,
            run_id: s.run_id.clone(),
            state_dir: s.folder.clone(),
            document: value,
        }
    }
}

/// The status word for a command that ended without a run outcome.
pub(crate) fn status_for_exit(code: u8) -> &'static str {
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
pub(crate) fn redact_value(value: &mut Value, redactor: &Redactor) {
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

/// Wraps a sink: every event is recorded, then passed on.
pub(crate) struct Recording {
    inner: Arc<dyn Reporter>,
    recorder: Arc<Recorder>,
}

impl Recording {
    pub(crate) fn new(inner: Arc<dyn Reporter>, recorder: Arc<Recorder>) -> Self {
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
        let f = r.finish("deploy", 1, None, &[]);
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
