//! "As before", checked: the run fingerprints the database before its first side effect
//! and, after a rollback, fingerprints it again and compares. Only a match is reported
//! as the state from before the run, with what the comparison covered; a difference, or
//! a comparison that could not be made, ends the run `rollback_failed`.

use std::time::Instant;

use chrono::Utc;

use super::error::EngineError;
use super::journal::{Journal, Record};
use crate::config::Pipeline;
use crate::config::pipeline::StepWith;
use crate::fact::Fact;
use crate::fingerprint::{Comparison, Fingerprint, Scope};
use crate::run::context::Context;
use crate::run::event::Event;
use crate::run::plan::RollbackTarget;
use crate::units::ms;

/// The history table is always digested: it says which migrations are applied.
pub(crate) const HISTORY: &str = "_sqlx_migrations";

/// The fingerprint from before the run, and the scope it was taken with.
#[derive(Debug, Clone)]
pub(crate) struct Before {
    pub scope: Scope,
    pub fingerprint: Fingerprint,
}

/// What the comparison after a rollback found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateCheck {
    /// Schema and the digested tables identical to before the run.
    Same(Comparison),
    /// Something differs.
    Differs(Comparison),
    /// No comparison was made, and why.
    NotCompared(String),
}

impl StateCheck {
    fn fact(&self, took_ms: u64) -> Fact {
        match self {
            Self::Same(c) | Self::Differs(c) => Fact::StateCompared {
                comparison: c.clone(),
                took_ms,
            },
            Self::NotCompared(reason) => Fact::StateNotCompared {
                reason: reason.clone(),
            },
        }
    }
}

/// Which tables the run may change: those named by the SQL of the migrations it may
/// apply or revert and of its `sql` steps. Every table when a step runs a command or the
/// team's own migrator, or when some SQL cannot be parsed.
pub(crate) async fn scope(
    ctx: &Context,
    pipeline: &Pipeline,
    rollback_target: Option<&RollbackTarget>,
) -> Scope {
    let mut scripts: Vec<String> = Vec::new();
    for step in &pipeline.steps {
        match &step.with {
            StepWith::Command(_) => return Scope::All,
            StepWith::Migrate(w) if w.is_external() => return Scope::All,
            StepWith::Sql(w) => match crate::steps::sql::scripts(ctx, w) {
                Ok(s) => scripts.extend(s),
                Err(_) => return Scope::All,
            },
            _ => {}
        }
    }
    let applied: Vec<i64> = match ctx.database.state().await {
        Ok(state) => state.applied.iter().map(|m| m.version).collect(),
        Err(_) => return Scope::All,
    };
    let floor = match rollback_target {
        Some(RollbackTarget::Version(v)) => *v,
        Some(RollbackTarget::Backup(_)) => return Scope::All,
        None => None,
    };
    for m in &ctx.migrations.migrations {
        let pending = !applied.contains(&m.version);
        let reverted = rollback_target.is_some() && floor.is_none_or(|f| m.version > f);
        if pending || reverted {
            scripts.push(m.up_sql.clone());
            scripts.extend(m.down_sql.clone());
        }
    }
    touched_scope(ctx.database.kind(), scripts.iter().map(String::as_str))
}

/// The tables `scripts` name, with the history table; every table when some SQL cannot be
/// parsed in the `kind` database's dialect.
pub(crate) fn touched_scope<'a>(kind: &str, scripts: impl IntoIterator<Item = &'a str>) -> Scope {
    match crate::migrate::tables::touched(kind, scripts) {
        Some(mut tables) => {
            tables.push(HISTORY.to_owned());
            tables.sort();
            tables.dedup();
            Scope::Tables(tables)
        }
        None => Scope::All,
    }
}

/// Takes the fingerprint before the first side effect, journals and reports it. `None`
/// (with a warning) when the database cannot be fingerprinted: the rollback then cannot
/// claim the state is as before.
pub(crate) async fn before(
    ctx: &Context,
    journal: &mut Journal,
    scope: Scope,
) -> Result<Option<Before>, EngineError> {
    let started = Instant::now();
    match ctx
        .database
        .fingerprint(&scope, ctx.fingerprint_budget)
        .await
    {
        Ok(fingerprint) => {
            record(
                ctx,
                journal,
                Fact::FingerprintTaken {
                    scope: scope.clone(),
                    fingerprint: fingerprint.clone(),
                    took_ms: ms(started.elapsed()),
                },
            )
            .await?;
            Ok(Some(Before { scope, fingerprint }))
        }
        Err(e) => {
            ctx.report(Event::Warning {
                message: ctx.redactor.redact(&format!(
                    "cannot fingerprint the database before the run, so a rollback cannot be verified: {e}"
                )),
            });
            Ok(None)
        }
    }
}

/// Compares the database now with `before`; journals and reports the result.
pub(crate) async fn after(
    ctx: &Context,
    journal: &mut Journal,
    before: Option<&Before>,
) -> Result<StateCheck, EngineError> {
    let started = Instant::now();
    let check = match before {
        None => StateCheck::NotCompared(
            "no fingerprint was taken before the run (see the warning at its start)".into(),
        ),
        Some(before) => match ctx
            .database
            .fingerprint(&before.scope, ctx.fingerprint_budget)
            .await
        {
            Ok(now) => {
                let comparison = before.fingerprint.compare(&now);
                if comparison.same() {
                    StateCheck::Same(comparison)
                } else {
                    StateCheck::Differs(comparison)
                }
            }
            Err(e) => StateCheck::NotCompared(ctx.redactor.redact(&format!(
                "cannot fingerprint the database after the rollback: {e}"
            ))),
        },
    };
    record(ctx, journal, check.fact(ms(started.elapsed()))).await?;
    Ok(check)
}

/// The fingerprint a run's journal holds from before its first side effect.
pub(crate) fn journaled(records: &[Record]) -> Option<Before> {
    records.iter().find_map(|r| match r {
        Record::Fact {
            fact: Fact::FingerprintTaken {
                scope, fingerprint, ..
            },
            ..
        } => Some(Before {
            scope: scope.clone(),
            fingerprint: fingerprint.clone(),
        }),
        _ => None,
    })
}

/// Journals a fact of the run as a whole (no step) and reports it.
pub(super) async fn record(
    ctx: &Context,
    journal: &mut Journal,
    fact: Fact,
) -> Result<(), EngineError> {
    journal
        .write(&Record::Fact {
            at: Utc::now(),
            index: None,
            id: None,
            fact: fact.clone(),
        })
        .await?;
    ctx.report(Event::Fact { id: None, fact });
    Ok(())
}
