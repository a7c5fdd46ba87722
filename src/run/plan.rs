//! The plan's data: everything a run will do, as `plan` prints it, the confirmation shows it
//! and the reporters receive it. Computed by `engine::plan`.

use serde::Serialize;

use crate::adapters::database::DatabaseState;
use crate::adapters::platform::PlatformState;

/// What `cutover rollback` goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTarget {
    /// A schema version (`None`: the empty schema).
    Version(Option<i64>),
    /// A backup id.
    Backup(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Version of this JSON shape.
    pub format: u32,
    pub project: String,
    pub environment: String,
    pub pipeline: String,
    pub database: DatabasePlan,
    pub platform: PlatformPlan,
    pub backups: String,
    pub health: Option<String>,
    pub steps: Vec<PlannedStep>,
    pub warnings: Vec<crate::place::Message>,
    /// What the rehearsal on a copy showed, and the window it predicts.
    pub rehearsal: RehearsalPlan,
    /// Hash of everything the plan depends on; equal digests mean the same plan.
    pub digest: String,
}

/// The rehearsal's part of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct RehearsalPlan {
    /// `current`, `stale`, `none`, `off`.
    pub status: String,
    /// One line for people: when and on what it ran, or why there is none.
    pub summary: String,
    /// Per pending migration: its time on the copy, its down, and how the run would roll
    /// it back.
    pub migrations: Vec<MigrationForecast>,
    /// Steps the rehearsal leaves out, and why.
    pub not_rehearsed: Vec<String>,
    /// The predicted window (absent when going down).
    pub window: Option<Forecast>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationForecast {
    pub version: i64,
    pub rehearsed_ms: Option<u64>,
    pub down: Option<crate::rehearsal_record::Down>,
    /// `down file`, `restore the backup`, `none`.
    pub rollback: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabasePlan {
    pub kind: String,
    pub target: String,
    pub exists: bool,
    pub current_version: Option<i64>,
    pub applied: usize,
    pub pending: Vec<PendingMigration>,
    pub target_version: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PendingMigration {
    pub version: i64,
    pub description: String,
    pub reversible: bool,
    pub checksum: String,
    /// With `plan --sql`: the SQL it runs, its file, and the down SQL when the plan's undo
    /// runs the down files. Filled after the digest, which it never changes.
    #[serde(flatten)]
    pub preview: MigrationPreview,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlatformPlan {
    pub kind: String,
    pub description: String,
    pub state: PlatformState,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub index: usize,
    pub id: String,
    pub uses: String,
    /// What the step will do.
    pub summary: String,
    /// What undoes it if a later step fails.
    pub undo: Option<String>,
    /// Why it will be skipped, if it will.
    pub skipped: Option<String>,
    /// With `plan --sql`: the SQL or command line the step runs. Filled after the digest,
    /// which it never changes.
    #[serde(flatten)]
    pub preview: StepPreview,
    /// Migrations whose down files the step's undo runs, in the order they were applied.
    #[serde(skip)]
    pub reverts: Vec<i64>,
}

/// What planning knows while walking the steps: the state as it will be after the
/// steps so far.
pub struct PlanScratch<'a> {
    pub database: &'a DatabaseState,
    pub platform: &'a PlatformState,
    /// Schema version once the migrate steps so far have run.
    pub version: Option<i64>,
    pub backup_before: bool,
    /// Maintenance flag once the steps so far have run.
    pub maintenance: Option<bool>,
    pub replicas: std::collections::BTreeMap<String, u32>,
    /// Replica counts before the first scale of each target.
    pub first_replicas: std::collections::BTreeMap<String, u32>,
    pub target_version: Option<i64>,
    pub rollback_target: Option<&'a RollbackTarget>,
    pub warnings: Vec<crate::place::Message>,
    /// How each migration a `migrate` step applies would be rolled back.
    pub rollback_methods: std::collections::BTreeMap<i64, String>,
    /// Migrations whose down files the step being planned would run as its undo.
    pub reverts: Vec<i64>,
    /// The code and its traffic once the steps so far have run (`release`, `traffic`).
    pub code: Option<crate::adapters::platform::CodeState>,
}

/// The predicted window (`engine::forecast`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Forecast {
    /// The sum of the steps' predictions.
    pub total_ms: u64,
    pub steps: Vec<StepForecast>,
    /// Steps with no prediction.
    pub unknown: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepForecast {
    pub id: String,
    pub ms: u64,
    /// Where the figure comes from: `rehearsal`, `run <id>`, `health settings`.
    pub from: String,
}

/// A pending migration's part of the preview.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MigrationPreview {
    /// The up file, relative to the config folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The up file's text, exactly as it is sent to the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Whether it runs outside a transaction (`-- cutover:no-transaction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_transaction: Option<bool>,
    /// The down file, when the plan's undo runs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_file: Option<String>,
    /// The down file's text, when the plan's undo runs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_sql: Option<String>,
}

/// A step's part of the preview.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepPreview {
    /// A `sql` step's SQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// A `sql` step's undo SQL (run on rollback only if the step changed rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo_sql: Option<String>,
    /// A `tool: command` migrator's command line, as it runs, secrets masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The folder that command runs in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// This step applies the pending migrations (the first migrate step with cutover's own
    /// migrations; `plan.database.pending` lists what all of them apply).
    #[serde(skip)]
    pub migrations: bool,
}

impl StepPreview {
    pub fn is_empty(&self) -> bool {
        self.sql.is_none() && self.command.is_none() && !self.migrations
    }
}
