//! The predicted window: how long each step of a run will take, from the rehearsal on a
//! copy (migrations, `sql` and `validate` steps) and from the last successful run of the
//! environment in the journal (backup, health, platform steps). A step neither knows is
//! named as unknown rather than guessed.

use std::collections::BTreeMap;

use super::journal::{Record, RunStatus, all_runs};
use crate::rehearsal_record::Rehearsal;
use crate::run::context::Context;
use crate::run::plan::{Forecast, PendingMigration, PlannedStep, StepForecast};

/// How long each step of the environment's last successful deploy took, and its run id.
fn last_run(ctx: &Context) -> Option<(String, BTreeMap<String, u64>)> {
    let runs = all_runs(&ctx.state_dir).ok()?;
    let run = runs.iter().rev().find(|r| {
        r.environment() == Some(ctx.environment.as_str())
            && r.status() == Some(RunStatus::Succeeded)
            && matches!(r.command(), Some("deploy" | "release"))
    })?;
    let mut started = BTreeMap::new();
    let mut took = BTreeMap::new();
    for record in &run.records {
        match record {
            Record::StepStarted { at, id, .. } => {
                started.insert(id.clone(), *at);
            }
            Record::StepFinished { at, id, .. } => {
                if let Some(start) = started.get(id) {
                    let ms = (*at - *start).num_milliseconds().max(0).unsigned_abs();
                    took.insert(id.clone(), ms);
                }
            }
            _ => {}
        }
    }
    Some((run.run_id(), took))
}

/// Predicts the run of `steps` (as planned, applying `pending`).
pub(crate) fn forecast(
    ctx: &Context,
    steps: &[PlannedStep],
    pending: &[PendingMigration],
    rehearsal: Option<&Rehearsal>,
) -> Forecast {
    let last = last_run(ctx);
    let mut out = Forecast {
        total_ms: 0,
        steps: Vec::new(),
        unknown: Vec::new(),
    };
    let mut migrations_counted = false;
    for step in steps.iter().filter(|s| s.skipped.is_none()) {
        let from_rehearsal = rehearsal.and_then(|r| match step.uses.as_str() {
            "migrate" if !migrations_counted && !pending.is_empty() => {
                let times: Option<Vec<u64>> = pending
                    .iter()
                    .map(|p| {
                        r.migrations
                            .iter()
                            .find(|m| m.version == p.version && m.checksum == p.checksum)
                            .map(|m| m.up_ms)
                    })
                    .collect();
                times.map(|t| t.iter().sum())
            }
            "sql" | "validate" => r.steps.iter().find(|s| s.id == step.id).map(|s| s.took_ms),
            _ => None,
        });
        if step.uses == "migrate" && from_rehearsal.is_some() {
            migrations_counted = true;
        }
        let (ms, from) = if let Some(ms) = from_rehearsal {
            (ms, "rehearsal".to_owned())
        } else if let Some(ms) = last
            .as_ref()
            .and_then(|(_, took)| took.get(&step.id).copied())
        {
            (ms, format!("run {}", last.as_ref().map_or("", |l| &l.0)))
        } else if step.uses == "health"
            && let Ok(Some(h)) = ctx.health()
        {
            (
                crate::units::ms(h.healthy_for),
                "health settings (at least)".to_owned(),
            )
        } else {
            out.unknown.push(step.id.clone());
            continue;
        };
        out.total_ms += ms;
        out.steps.push(StepForecast {
            id: step.id.clone(),
            ms,
            from,
        });
    }
    out
}
