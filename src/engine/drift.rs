//! Drift: the live schema compared with the one cutover recorded after the last run that
//! left the database at its current version. A hot-fix made by hand (an index added, a
//! column dropped) shows up object by object before the next release builds on it.
//!
//! Every run that succeeds records the schema's fingerprint with the version it left
//! (a `schema_recorded` fact in its journal); `migrate accept-drift` records the live one
//! with a reason. Nothing recorded for the current version (a database another tool
//! migrated, a kind cutover cannot fingerprint): nothing to compare, and nothing claimed.

use std::collections::BTreeMap;

use chrono::Utc;

use super::error::EngineError;
use super::journal::{Journal, Record, RunStatus, all_runs};
use crate::fact::Fact;
use crate::fingerprint::{Difference, Fingerprint, Scope};
use crate::run::context::Context;

/// The schema recorded for a version, and by which run.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub run_id: String,
    pub at: chrono::DateTime<Utc>,
    pub schema: BTreeMap<String, String>,
}

/// The newest schema recorded for `version` by a run of the environment that succeeded.
pub(crate) fn recorded(
    ctx: &Context,
    version: Option<i64>,
) -> Result<Option<Recorded>, EngineError> {
    let mut found = None;
    for run in all_runs(&ctx.state_dir)? {
        if run.environment() != Some(ctx.environment.as_str())
            || run.status() != Some(RunStatus::Succeeded)
        {
            continue;
        }
        for record in &run.records {
            if let Record::Fact {
                at,
                fact:
                    Fact::SchemaRecorded {
                        version: v, schema, ..
                    },
                ..
            } = record
                && *v == version
            {
                found = Some(Recorded {
                    run_id: run.run_id(),
                    at: *at,
                    schema: schema.clone(),
                });
            }
        }
    }
    Ok(found)
}

/// The live schema's digests (no table contents).
pub(crate) async fn live(ctx: &Context) -> Result<BTreeMap<String, String>, String> {
    ctx.database
        .fingerprint(&Scope::Tables(Vec::new()), 0)
        .await
        .map(|f| f.schema)
        .map_err(|e| e.to_string())
}

/// How the live schema differs from the one recorded for `version`; `Ok(None)` when
/// nothing is recorded for it.
pub(crate) async fn compare(
    ctx: &Context,
    version: Option<i64>,
) -> Result<Option<(Recorded, Vec<Difference>)>, EngineError> {
    let Some(recorded) = recorded(ctx, version)? else {
        return Ok(None);
    };
    let now = live(ctx).await.map_err(|e| {
        EngineError::Plan(format!(
            "cannot read the schema to compare it with the recorded one: {e}"
        ))
    })?;
    let then = Fingerprint {
        schema: recorded.schema.clone(),
        ..Fingerprint::default()
    };
    let differences = then
        .compare(&Fingerprint {
            schema: now,
            ..Fingerprint::default()
        })
        .differences;
    Ok(Some((recorded, differences)))
}

/// One line per difference, in drift's words.
pub(crate) fn describe(differences: &[Difference]) -> Vec<String> {
    differences
        .iter()
        .map(|d| match d {
            Difference::Added { object } => {
                format!("{object}: in the database, not in the recorded schema")
            }
            Difference::Removed { object } => {
                format!("{object}: in the recorded schema, gone from the database")
            }
            Difference::Changed { object } => {
                format!("{object}: its definition differs from the recorded one")
            }
            Difference::Rows { table, .. } => format!("table {table}: rows differ"),
        })
        .collect()
}

/// After a run that succeeded: records the live schema with the version the database is
/// at. A database that cannot be read or fingerprinted records nothing (and drift is then
/// not checked for that version), said as a warning where it is unexpected.
pub(crate) async fn record_after_run(
    ctx: &Context,
    journal: &mut Journal,
) -> Result<(), EngineError> {
    if ctx.drift == crate::config::deploy_file::DriftPolicy::Off {
        return Ok(());
    }
    let Ok(state) = ctx.database.state().await else {
        return Ok(());
    };
    if !state.exists {
        return Ok(());
    }
    let Ok(schema) = live(ctx).await else {
        return Ok(());
    };
    let fact = Fact::SchemaRecorded {
        version: state.version(),
        schema,
        reason: None,
    };
    super::verify::record(ctx, journal, fact).await
}
