//! Facts a run establishes, as typed data: the journal records them, every reporter
//! receives them, and summaries are rendered from them. Nothing parses them back out of
//! a message.

use serde::{Deserialize, Serialize};

use crate::fingerprint::{Comparison, Fingerprint, Scope};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    /// A migration this run applied and recorded, in the order applied.
    MigrationApplied {
        version: i64,
        description: String,
        /// SHA-384 of the up file, hex (the history table's checksum).
        checksum: String,
        took_ms: u64,
    },
    /// A migration this run reverted with its down file.
    MigrationReverted { version: i64, description: String },
    /// A backup this run took and stored (the restore command's argument).
    BackupTaken { backup: String },
    /// How many rows a `sql` step's statements changed; its undo runs only when some were.
    RowsChanged { rows: u64 },
    /// The database before the run's first side effect.
    FingerprintTaken {
        scope: Scope,
        fingerprint: Fingerprint,
        took_ms: u64,
    },
    /// The database after the rollback, compared with the fingerprint from before.
    StateCompared {
        comparison: Comparison,
        took_ms: u64,
    },
    /// The state after the rollback could not be compared, and why.
    StateNotCompared { reason: String },
    /// Migrations recorded as applied without running them (`migrate baseline`): the
    /// database's schema was already at `version`.
    MigrationsBaselined {
        version: i64,
        versions: Vec<i64>,
        reason: Option<String>,
    },
    /// An applied migration's recorded checksum replaced by its file's (`migrate repair`),
    /// and what showed the edit harmless: the statements compared (`same_statements`) or a
    /// person's reason (`--force`).
    ChecksumAccepted {
        version: i64,
        old_checksum: String,
        new_checksum: String,
        how: String,
    },
    /// The schema (a digest per object) the run left the database in, at `version`:
    /// what drift is measured against. `reason`: why it was accepted as it is
    /// (`migrate accept-drift`).
    SchemaRecorded {
        version: Option<i64>,
        schema: std::collections::BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// How a person confirmed the run, and who ran it (the OS user or CI identity).
    Confirmed { how: String, by: String },
    /// Backups the retention (`keep:`) let go after the run succeeded.
    BackupsPruned {
        deleted: Vec<String>,
        /// The retention, in words (`the newest 10`).
        kept: String,
    },
    /// A code version put beside the live one without traffic (`release`).
    CodeStaged {
        version: String,
        /// The platform's name for it (a revision, a slot).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Traffic moved to a code version (`traffic`, or a rollback's `traffic` step):
    /// `previous` is the version that had the most traffic before.
    CodeReleased {
        version: String,
        previous: Option<String>,
        /// Where the traffic went, as the platform reported it afterwards.
        routes: Vec<crate::adapters::platform::Route>,
        /// The schema version the code went live on (migrations never follow a `traffic`
        /// step): what `cutover rollback --release` takes the database back to.
        #[serde(default)]
        schema_version: Option<i64>,
    },
    /// A snapshot of the database taken beside it (`backup` with `snapshot: true`), in
    /// `took_ms` of the window.
    SnapshotTaken { name: String, took_ms: u64 },
    /// The snapshot removed once the run succeeded and its backup was stored.
    SnapshotDropped { name: String },
    /// A rehearsal's copy of the data is ready.
    RehearsalCopied { source: String, took_ms: u64 },
    /// A migration applied on the rehearsal's copy, and what its down did there.
    MigrationRehearsed {
        version: i64,
        description: String,
        took_ms: u64,
        down: crate::rehearsal_record::Down,
    },
}

impl Fact {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Self::MigrationApplied {
                version,
                description,
                took_ms,
                ..
            } => format!("applied {version} {description} ({took_ms} ms)"),
            Self::MigrationReverted {
                version,
                description,
            } => format!("reverted {version} {description}"),
            Self::RowsChanged { rows } => format!("{rows} row(s) changed"),
            Self::BackupTaken { backup } => format!("backup {backup} stored"),
            Self::FingerprintTaken {
                fingerprint,
                took_ms,
                ..
            } => format!(
                "fingerprint of the database taken: schema ({} objects) and the rows of {} table(s){} in {took_ms} ms",
                fingerprint.schema.len(),
                fingerprint.tables.len(),
                if fingerprint.skipped.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; not digested (over the size budget): {}",
                        fingerprint
                            .skipped
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
            Self::StateCompared { comparison, .. } if comparison.same() => format!(
                "as before the run, checked: {} identical to before the run",
                comparison.covered()
            ),
            Self::StateCompared { comparison, .. } => format!(
                "NOT as before the run: {}",
                comparison
                    .differences
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Self::StateNotCompared { reason } => {
                format!("the state after the rollback was not verified: {reason}")
            }
            Self::MigrationsBaselined {
                version, versions, ..
            } => format!(
                "baseline at {version}: {} migration(s) recorded as applied without running them",
                versions.len()
            ),
            Self::ChecksumAccepted { version, how, .. } => {
                format!("migration {version}: the edited file's checksum accepted ({how})")
            }
            Self::SchemaRecorded {
                version,
                schema,
                reason,
            } => format!(
                "schema recorded at {}: {} object(s){}",
                version.map_or_else(|| "an empty history".to_owned(), |v| v.to_string()),
                schema.len(),
                reason
                    .as_ref()
                    .map_or_else(String::new, |r| format!(", accepted as it is: {r}"))
            ),
            Self::Confirmed { how, by } => format!("confirmed by {by} ({how})"),
            Self::BackupsPruned { deleted, kept } => format!(
                "{} old backup(s) pruned, keeping {kept} and any a halted or unfinished run names: {}",
                deleted.len(),
                crate::units::summarise(deleted, "the journal lists them all")
            ),
            Self::CodeStaged { version, name } => format!(
                "code {version} staged without traffic{}",
                name.as_ref()
                    .map_or_else(String::new, |n| format!(" as {n}"))
            ),
            Self::CodeReleased {
                version, previous, ..
            } => format!(
                "code {version} gets the traffic{}",
                previous
                    .as_ref()
                    .map_or_else(String::new, |p| format!(" (was {p})"))
            ),
            Self::SnapshotDropped { name } => {
                format!("snapshot {name} removed: the run succeeded and its backup is stored")
            }
            Self::SnapshotTaken { name, took_ms } => {
                format!("snapshot {name} taken in {took_ms} ms")
            }
            Self::RehearsalCopied { source, took_ms } => {
                format!("rehearsal: copy made from {source} in {took_ms} ms")
            }
            Self::MigrationRehearsed {
                version,
                description,
                took_ms,
                down,
            } => format!(
                "rehearsal: {version} {description}: {took_ms} ms on the copy; {}",
                down.describe()
            ),
        }
    }
}
