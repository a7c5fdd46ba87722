//! Who put each migration of an environment's history there, read from its runs'
//! journals: the run, its user and host, and its command. The history table itself only
//! says when.

use std::collections::BTreeMap;
use std::path::Path;

use super::journal::{JournalError, Record, RunRecord, RunStatus, all_runs};
use crate::fact::Fact;

/// The run that applied (or baselined) a migration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Origin {
    pub run_id: String,
    /// `user@host` as the run's journal records them.
    pub by: String,
    /// The run's command (`deploy`, `migrate up`, `migrate baseline`, ...).
    pub command: String,
}

/// For each migration the runs of `environment` left applied, the run that applied it.
/// Runs that rolled back (or failed to) are left out: what they applied was undone, or
/// is not theirs to claim; a later revert removes the claim.
pub(crate) fn origins(
    state_dir: &Path,
    environment: &str,
) -> Result<BTreeMap<i64, Origin>, JournalError> {
    let mut out = BTreeMap::new();
    for run in all_runs(state_dir)? {
        if run.environment() != Some(environment)
            || matches!(
                run.status(),
                Some(RunStatus::RolledBack | RunStatus::RollbackFailed)
            )
        {
            continue;
        }
        claim(&run, &mut out);
    }
    Ok(out)
}

fn claim(run: &RunRecord, out: &mut BTreeMap<i64, Origin>) {
    let Some(Record::RunStarted {
        run_id,
        command,
        user,
        host,
        ..
    }) = run.records.first()
    else {
        return;
    };
    let origin = Origin {
        run_id: run_id.clone(),
        by: format!("{user}@{host}"),
        command: command.clone(),
    };
    for record in &run.records {
        let Record::Fact { fact, .. } = record else {
            continue;
        };
        match fact {
            Fact::MigrationApplied { version, .. } => {
                out.insert(*version, origin.clone());
            }
            Fact::MigrationsBaselined { versions, .. } => {
                for v in versions {
                    out.insert(*v, origin.clone());
                }
            }
            Fact::MigrationReverted { version, .. } => {
                out.remove(version);
            }
            _ => {}
        }
    }
}
