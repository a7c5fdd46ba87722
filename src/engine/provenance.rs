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

/// The schema a code version ran on: `None` is an empty history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReleasedOn {
    pub schema: Option<i64>,
}

/// The schema version code `version` ran on, from the runs of `environment` that
/// released it: the newest succeeded run that sent the traffic to it, else the newest
/// that moved the traffic off it (its schema before that run's migrations: the highest
/// of `applied` below the first one it applied). `Ok(None)`: no run here released it.
pub(crate) fn release_schema(
    state_dir: &Path,
    environment: &str,
    version: &str,
    applied: &[i64],
) -> Result<Option<ReleasedOn>, JournalError> {
    let runs: Vec<RunRecord> = all_runs(state_dir)?
        .into_iter()
        .filter(|r| {
            r.environment() == Some(environment) && r.status() == Some(RunStatus::Succeeded)
        })
        .collect();
    let released = |run: &RunRecord| {
        run.records.iter().rev().find_map(|r| match r {
            Record::Fact {
                fact:
                    Fact::CodeReleased {
                        version,
                        previous,
                        schema_version,
                        ..
                    },
                ..
            } => Some((version.clone(), previous.clone(), *schema_version)),
            _ => None,
        })
    };
    for run in runs.iter().rev() {
        match released(run) {
            Some((v, _, schema)) if v == version => return Ok(Some(ReleasedOn { schema })),
            Some((_, Some(p), schema)) if p == version => {
                let first_applied = run.records.iter().find_map(|r| match r {
                    Record::Fact {
                        fact: Fact::MigrationApplied { version, .. },
                        ..
                    } => Some(*version),
                    _ => None,
                });
                let schema = match first_applied {
                    Some(first) => applied.iter().copied().filter(|v| *v < first).max(),
                    None => schema,
                };
                return Ok(Some(ReleasedOn { schema }));
            }
            _ => {}
        }
    }
    Ok(None)
}
