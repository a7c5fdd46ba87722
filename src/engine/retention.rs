//! Backup retention: which backups `keep:` lets go, and the prune that runs after a
//! successful run that stored a backup. A backup a run may still need is never a
//! candidate: the one the current run took, and those taken or named by runs that are
//! halted or unfinished (`resume`, `rollback` and `recover` restore from them).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::error::EngineError;
use super::journal::{Journal, Record, RunRecord, halted_runs, open_runs};
use crate::adapters::store::Manifest;
use crate::config::deploy_file::Keep;
use crate::fact::Fact;
use crate::run::context::Context;
use crate::run::event::Event;

/// Backups beyond the retention, given newest first, minus the protected ones. The
/// newest backup is always kept.
pub(crate) fn candidates(
    newest_first: &[Manifest],
    keep: &Keep,
    now: DateTime<Utc>,
    protected: &BTreeSet<String>,
) -> Vec<String> {
    newest_first
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(i, m)| match keep {
            Keep::Count(n) => *i >= (*n as usize).max(1),
            Keep::Age(age) => {
                chrono::Duration::from_std(age.get()).is_ok_and(|age| now - m.created_at > age)
            }
        })
        .filter(|(_, m)| !protected.contains(&m.id))
        .map(|(_, m)| m.id.clone())
        .collect()
}

/// The backups a run may still restore from: taken or named by one of `runs`.
fn named_by(runs: &[RunRecord]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for record in runs.iter().flat_map(|r| &r.records) {
        match record {
            Record::Fact {
                fact: Fact::BackupTaken { backup },
                ..
            }
            | Record::RunHalted {
                backup: Some(backup),
                ..
            } => {
                names.insert(backup.clone());
            }
            _ => {}
        }
    }
    names
}

/// The backups of `ctx`'s environment that halted or unfinished runs may still need.
pub(crate) fn protected(ctx: &Context) -> Result<BTreeSet<String>, EngineError> {
    let mut runs = halted_runs(&ctx.state_dir, &ctx.environment)?;
    runs.extend(open_runs(&ctx.state_dir, &ctx.environment)?);
    Ok(named_by(&runs))
}

/// After a run that succeeded and stored `taken`: deletes the backups `keep:` lets go,
/// journaled and reported as a fact. Retention is housekeeping: a failure is a warning
/// with the command to finish it, never a failed run.
pub(crate) async fn prune_after_run(
    ctx: &Context,
    journal: &mut Journal,
    taken: &str,
) -> Result<(), EngineError> {
    let Some(keep) = ctx.store.keep().cloned() else {
        return Ok(());
    };
    let warn = |reason: String| {
        ctx.report(Event::Warning {
            message: format!(
                "old backups were not pruned ({reason}); `cutover backup prune -e {}` finishes it",
                ctx.environment
            ),
        });
    };
    let mut protected = match protected(ctx) {
        Ok(p) => p,
        Err(e) => {
            warn(e.to_string());
            return Ok(());
        }
    };
    protected.insert(taken.to_owned());
    let list = match ctx.store.list().await {
        Ok(list) => list,
        Err(e) => {
            warn(ctx.redactor.redact(&e.to_string()));
            return Ok(());
        }
    };
    let doomed = candidates(&list, &keep, Utc::now(), &protected);
    if doomed.is_empty() {
        return Ok(());
    }
    let mut deleted = Vec::new();
    let mut failure = None;
    for id in doomed {
        match ctx.store.delete(&id).await {
            Ok(()) => deleted.push(id),
            Err(e) => {
                failure = Some(format!(
                    "deleting {id}: {}",
                    ctx.redactor.redact(&e.to_string())
                ));
                break;
            }
        }
    }
    if !deleted.is_empty() {
        let fact = Fact::BackupsPruned {
            deleted,
            kept: keep.to_string(),
        };
        super::verify::record(ctx, journal, fact).await?;
    }
    if let Some(reason) = failure {
        warn(reason);
    }
    Ok(())
}

/// The copies finished runs left beside the database: the databases a swap replaced, and
/// snapshots a killed run never removed. A run that is open, halted or whose rollback
/// failed keeps its copies: a human may still need them.
pub(crate) fn leftover_copies(ctx: &Context) -> Result<BTreeSet<String>, EngineError> {
    use super::journal::RunStatus;
    use crate::run::compensation::Compensation;
    let mut names = BTreeSet::new();
    for run in super::journal::all_runs(&ctx.state_dir)? {
        if run.environment() != Some(ctx.environment.as_str())
            || !matches!(
                run.status(),
                Some(RunStatus::Succeeded | RunStatus::RolledBack)
            )
        {
            continue;
        }
        for record in &run.records {
            match record {
                Record::StepStarted {
                    compensation:
                        Some(Compensation::RestoreBackup {
                            snapshot: Some(s), ..
                        }),
                    ..
                } => {
                    names.insert(s.snapshot.clone());
                    names.insert(s.replaced.clone());
                }
                Record::StepStarted {
                    compensation: Some(Compensation::DropSnapshot { name }),
                    ..
                } => {
                    names.insert(name.clone());
                }
                _ => {}
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str, hours_ago: i64) -> Manifest {
        Manifest {
            id: id.into(),
            project: "p".into(),
            environment: "e".into(),
            created_at: Utc::now() - chrono::Duration::hours(hours_ago),
            database_kind: "sqlite".into(),
            format: "sqlite".into(),
            schema_version: None,
            size: 1,
            sha256: "00".into(),
            compression: "none".into(),
            server_version: String::new(),
            dump_tool: String::new(),
            cutover_version: String::new(),
        }
    }

    #[test]
    fn the_newest_and_the_protected_stay() {
        let list: Vec<Manifest> = (0..5).map(|i| manifest(&format!("b{i}"), i)).collect();
        let none = BTreeSet::new();
        assert_eq!(
            candidates(&list, &Keep::Count(2), Utc::now(), &none),
            ["b2", "b3", "b4"]
        );
        let halted: BTreeSet<String> = ["b3".to_owned()].into();
        assert_eq!(
            candidates(&list, &Keep::Count(2), Utc::now(), &halted),
            ["b2", "b4"]
        );
        // `keep: 0` still keeps the newest.
        assert_eq!(
            candidates(&list, &Keep::Count(0), Utc::now(), &none),
            ["b1", "b2", "b3", "b4"]
        );
    }
}
