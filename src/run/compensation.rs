//! Compensations: the actions that undo completed steps, captured with the prior state
//! before each step touches anything. They are data, so the journal can hold them and
//! `recover` can run them in another process; each is idempotent, so running one that had
//! already run (or whose step never got to act) changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Compensation {
    /// Put maintenance mode back as it was. `prior`: the platform's exact earlier state
    /// (see `Platform::prior`); absent in journals written before it existed.
    Maintenance {
        enabled: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prior: Option<Value>,
    },
    /// Put a target's replica count back (exactly as `prior` says, where there is one).
    Scale {
        target: String,
        replicas: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prior: Option<Value>,
    },
    /// Revert migrations above `to` (`None`: revert all). Written by earlier versions for
    /// a `migrate` step; still run from their journals.
    MigrateDown { to: Option<i64> },
    /// Revert exactly the migrations the step applies, newest first, whatever their
    /// numbering: listed in the order the step applies them, with the checksums it
    /// applies. One the step never got to is not applied and is skipped.
    RevertMigrations { migrations: Vec<MigrationRef> },
    /// Re-apply migrations up to `to` (undoes a migrate-down).
    MigrateUp { to: i64 },
    /// Restore the database from a backup taken earlier in the run: by swapping in the
    /// `snapshot` taken with it, while that exists, else from the store.
    RestoreBackup {
        backup: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<crate::adapters::database::SnapshotNames>,
    },
    /// Remove the snapshot a `backup` step took, if it is still there (a rollback that
    /// swapped it in leaves nothing to remove).
    DropSnapshot { name: String },
    /// Run the undo SQL of a `sql` step.
    Sql { sql: String },
    /// Run the undo command of a `command` step.
    Command { run: String },
    /// Put the code and its traffic back exactly as `prior` (from `Platform::code_prior`)
    /// describes: the weights each revision had, the slot images, the release.
    /// `before`: that state in words, for people.
    Code { prior: Value, before: String },
    /// Run an external migrator's `down` command with the version from before the step
    /// filled in (`alembic downgrade 1a2b3c4d5e6f`). Going to a named version is
    /// idempotent: once there, running it again changes nothing.
    ExternalDown { run: String },
}

/// A migration a step applies: the undo reverts it only while it is applied with this
/// checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRef {
    pub version: i64,
    /// SHA-384 of the up file, hex.
    pub checksum: String,
}

impl Compensation {
    /// For humans: what the action does.
    pub fn describe(&self) -> String {
        match self {
            Self::Maintenance { enabled, .. } => {
                format!("maintenance back {}", if *enabled { "on" } else { "off" })
            }
            Self::Scale {
                target, replicas, ..
            } => format!("scale {target} back to {replicas}"),
            Self::MigrateDown { to: Some(v) } => format!("migrate down to {v}"),
            Self::MigrateDown { to: None } => "migrate down to an empty schema".into(),
            Self::MigrateUp { to } => format!("migrate up to {to}"),
            Self::RevertMigrations { migrations } => format!(
                "revert {}",
                migrations
                    .iter()
                    .rev()
                    .map(|m| m.version.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::RestoreBackup {
                backup,
                snapshot: None,
            } => format!("restore backup {backup}"),
            Self::RestoreBackup {
                backup,
                snapshot: Some(s),
            } => format!(
                "swap snapshot {} back in (else restore backup {backup})",
                s.snapshot
            ),
            Self::DropSnapshot { name } => format!("remove snapshot {name}"),
            Self::Sql { .. } => "run the step's undo SQL".into(),
            Self::Code { before, .. } => format!("code and traffic back to {before}"),
            Self::Command { run } | Self::ExternalDown { run } => format!("run `{run}`"),
        }
    }

    /// Whether to undo a step that failed part-way. A failed migration may have applied some
    /// of its migrations, so it is undone (an external migrator's `down` too: going back to
    /// the prior version is a no-op if nothing was applied); a failed command or SQL step is
    /// assumed to have changed nothing (SQL runs in a transaction), so its undo is not run.
    pub fn undoes_failed_step(&self) -> bool {
        !matches!(self, Self::Sql { .. } | Self::Command { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journals_from_before_prior_existed_still_read_and_none_is_not_written() {
        let old: Compensation =
            serde_json::from_str(r#"{"action":"scale","target":"jobs","replicas":3}"#).unwrap();
        assert_eq!(
            old,
            Compensation::Scale {
                target: "jobs".into(),
                replicas: 3,
                prior: None
            }
        );
        assert_eq!(
            serde_json::to_string(&Compensation::Maintenance {
                enabled: true,
                prior: None
            })
            .unwrap(),
            r#"{"action":"maintenance","enabled":true}"#
        );
    }
}
