//! The report document (`--report FILE`), field by field as docs/report.md describes it,
//! and the run's ending as the CLI knows it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fact::Fact;
use crate::run::window::OutsideWindow;

/// How the run ended, as the CLI knows it once the engine returns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
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
pub(crate) struct Document {
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
    /// Old backups the retention deleted after the run succeeded.
    #[serde(default)]
    pub backups_pruned: Vec<String>,
    /// The code version the run sent the traffic to, and the one before.
    #[serde(default)]
    pub code: Option<Code>,
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
    /// Who ran the command: `user@host` (the CI identity in GitHub Actions and Azure
    /// DevOps).
    #[serde(default)]
    pub run_by: String,
    /// Who confirmed the run and how (`typed CONFIRM`, `--confirm ENV`, an approved plan),
    /// where the environment asks.
    #[serde(default)]
    pub confirmed: Option<String>,
    pub result: Option<Value>,
    /// The run went on outside the environment's window (the way back, or forced).
    pub outside_window: Option<OutsideWindow>,
}

/// The code a run released: the version that got the traffic, the one that had it before,
/// and where the traffic went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Code {
    pub version: String,
    pub previous: Option<String>,
    pub routes: Vec<crate::adapters::platform::Route>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub step: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SchemaVersion {
    pub before: Option<i64>,
    pub after: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Step {
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
    pub(super) fn new(id: &str) -> Self {
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
pub(crate) struct Migration {
    pub version: i64,
    pub description: String,
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Migrations {
    pub applied: Vec<Migration>,
    pub reverted: Vec<Migration>,
}

/// The backup a run took, from its manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Backup {
    pub id: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Validation {
    pub step: String,
    pub check: String,
    pub issues: i64,
    pub max_issues: i64,
    pub passed: bool,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Rollback {
    pub reason: String,
    pub planned_actions: usize,
    pub actions: Vec<RollbackAction>,
    pub undone: Vec<String>,
    pub left: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RollbackAction {
    pub step: String,
    pub action: String,
    /// `succeeded` or `failed`.
    pub status: String,
    pub error: Option<String>,
}

pub(crate) use crate::run::event::Finished;
