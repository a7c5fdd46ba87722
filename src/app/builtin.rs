//! Pipelines made in code for the one-off commands (`backup create`, `migrate down`,
//! `rollback`), run through the same engine as a pipeline file.

use std::path::PathBuf;

use serde_saphyr::{Location, Spanned};

use crate::config::pipeline::{BackupWith, MigrateRollback, MigrateWith, StepWith};
use crate::config::{Pipeline, Step};
use crate::run::plan::RollbackTarget;

/// A step of a built-in pipeline.
pub(crate) fn step(id: &str, with: StepWith) -> Step {
    Step {
        id: id.into(),
        with,
        timeout: None,
        retries: 0,
        when: None,
        on_failure: None,
        point_of_no_return: false,
        rehearse: true,
        line: 0,
    }
}

/// A pipeline of just the database part of a rollback: a safety backup first when a
/// backup is restored, then the migrate step aimed at the target.
pub(crate) fn database_pipeline(target: &RollbackTarget, name: &str) -> Pipeline {
    let mut steps = Vec::new();
    if matches!(target, RollbackTarget::Backup(_)) {
        steps.push(step(
            "safety-backup",
            StepWith::Backup(BackupWith {
                name: Some("pre-restore-{timestamp}".into()),
                verify: None,
                snapshot: false,
            }),
        ));
    }
    steps.push(step(
        "database",
        StepWith::Migrate(MigrateWith {
            to: Some(Spanned::new(
                "target".into(),
                Location::UNKNOWN,
                Location::UNKNOWN,
            )),
            rollback: Some(MigrateRollback::Auto),
            warn_after: None,
            ..MigrateWith::default()
        }),
    ));
    builtin(name, steps)
}

/// A pipeline made in code for a one-off command, run through the same engine.
pub(crate) fn builtin(name: &str, steps: Vec<Step>) -> Pipeline {
    Pipeline {
        path: PathBuf::from("(built in)"),
        name: name.into(),
        timeout: None,
        on_failure: crate::config::pipeline::OnFailure::Rollback,
        unattended: crate::config::pipeline::Unattended::Rollback,
        steps,
    }
}
