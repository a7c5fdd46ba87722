//! A rehearsal's result, as stored in `<state_dir>/rehearsals/<environment>.json` and read
//! by the plan. Data only.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of the stored shape.
pub(crate) const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rehearsal {
    pub format: u32,
    pub environment: String,
    pub pipeline: String,
    /// Digest of everything the result depends on: the applied migrations, the pending
    /// ones (up and down files), the pipeline and the SQL its `sql` and `validate` steps
    /// run. A result whose key differs from today's is stale.
    pub key: String,
    pub at: DateTime<Utc>,
    /// Where the copy's data came from.
    pub source: String,
    /// How long making the copy took.
    pub copy_ms: u64,
    /// The migrations rehearsed, in the order applied.
    pub migrations: Vec<RehearsedMigration>,
    /// The `sql` and `validate` steps rehearsed after the migrations, in pipeline order.
    pub steps: Vec<RehearsedStep>,
    /// Steps the rehearsal could not run on the copy, and why.
    pub not_rehearsed: Vec<String>,
    /// What failed on the copy; a deploy does not start while this is set.
    pub failure: Option<Failure>,
    pub total_ms: u64,
}

/// One migration on the copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RehearsedMigration {
    pub version: i64,
    pub description: String,
    /// Of the up file, hex: a changed file makes the result stale.
    pub checksum: String,
    /// How long applying it took on the copy.
    pub up_ms: u64,
    pub down: Down,
    /// How long its down took on the copy, when it ran.
    pub down_ms: Option<u64>,
}

/// What running a migration's down on the copy showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Down {
    /// The schema and the rows of the tables it touches came back exactly.
    Lossless {
        /// What the comparison covered.
        covered: String,
    },
    /// It ran, and the database is not as before the up: what differs.
    Lossy { differences: Vec<String> },
    /// There is no down file.
    Missing,
    /// The down file failed on the copy.
    Failed { error: String },
    /// It was not tried: a newer migration's down was missing or failed first, or the
    /// rehearsal stopped before.
    NotRun { reason: String },
}

impl Down {
    pub fn lossless(&self) -> bool {
        matches!(self, Self::Lossless { .. })
    }

    /// A few words for the plan.
    pub fn describe(&self) -> String {
        match self {
            Self::Lossless { .. } => "down lossless".into(),
            Self::Lossy { differences } => format!("down LOSSY ({})", differences.join("; ")),
            Self::Missing => "no down file".into(),
            Self::Failed { error } => format!("down FAILS ({error})"),
            Self::NotRun { reason } => format!("down not rehearsed ({reason})"),
        }
    }
}

/// A `sql` or `validate` step on the migrated copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RehearsedStep {
    pub id: String,
    pub uses: String,
    pub took_ms: u64,
    pub result: String,
}

/// What failed on the copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The pipeline step it belongs to.
    pub step: String,
    /// `migration 20240101 add users`, `check \`orphans\``, `the copy`...
    pub what: String,
    pub error: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step `{}`: {} failed on the copy: {}",
            self.step, self.what, self.error
        )
    }
}

/// Where a rehearsal stands for the plan about to be made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Standing {
    /// No rehearsal result exists for this environment and pipeline.
    #[default]
    None,
    /// `rehearse: off` for the environment.
    Off,
    /// The stored result applies to this plan.
    Current(Box<Rehearsal>),
    /// The stored result no longer applies, and why.
    Stale { reason: String },
}

impl Standing {
    pub fn current(&self) -> Option<&Rehearsal> {
        match self {
            Self::Current(r) => Some(r),
            _ => None,
        }
    }
}

/// Where an environment's latest rehearsal is kept.
pub(crate) fn path(state_dir: &Path, environment: &str) -> PathBuf {
    state_dir
        .join("rehearsals")
        .join(format!("{environment}.json"))
}

/// The environment's latest rehearsal; `None` when there is none or it cannot be read
/// (a result that cannot be read proves nothing, and the next deploy rehearses again).
pub(crate) fn load(state_dir: &Path, environment: &str) -> Option<Rehearsal> {
    let text = std::fs::read_to_string(path(state_dir, environment)).ok()?;
    serde_json::from_str::<Rehearsal>(&text)
        .ok()
        .filter(|r| r.format == FORMAT)
}

/// Keeps `rehearsal` as the environment's latest (written whole, then renamed).
pub(crate) fn save(state_dir: &Path, rehearsal: &Rehearsal) -> std::io::Result<PathBuf> {
    let path = path(state_dir, &rehearsal.environment);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(rehearsal).expect("rehearsal serializes") + "\n",
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
