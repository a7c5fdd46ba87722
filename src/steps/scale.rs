//! `scale`: set a target's replica count (background jobs to 0, say); undone by restoring
//! the count it had. `replicas: previous` means the count before this run first scaled it.

use super::RunState;
use crate::adapters::platform::Subject;
use crate::config::pipeline::{Replicas, ScaleWith};
use crate::run::compensation::Compensation;
use crate::run::context::Context;
use crate::run::error::StepError;
use crate::run::plan::PlanScratch;

pub(crate) fn plan(
    ctx: &Context,
    with: &ScaleWith,
    scratch: &mut PlanScratch<'_>,
) -> Result<(String, Option<String>), String> {
    let current = scratch.replicas.get(&with.target).copied();
    let known = ctx.platform.kind() == "none" || current.is_some();
    if !known {
        return Err(format!(
            "the platform reports no target `{}` (it reports: {})",
            with.target,
            if scratch.replicas.is_empty() {
                "none".to_owned()
            } else {
                scratch
                    .replicas
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
    }
    let replicas = match with.replicas {
        Replicas::Count(n) => n,
        Replicas::Previous => match scratch.first_replicas.get(&with.target) {
            Some(n) => *n,
            None if ctx.platform.kind() == "none" => 0,
            None => {
                return Err(format!(
                    "`replicas: previous` but no earlier step scales `{}`",
                    with.target
                ));
            }
        },
    };
    if let Some(current) = current {
        scratch
            .first_replicas
            .entry(with.target.clone())
            .or_insert(current);
        scratch.replicas.insert(with.target.clone(), replicas);
    }
    let summary = match current {
        Some(current) => format!("scale {} from {current} to {replicas}", with.target),
        None => format!("scale {} to {replicas}", with.target),
    };
    Ok((
        summary,
        current.map(|c| format!("scale {} back to {c}", with.target)),
    ))
}

pub(crate) async fn prepare(
    ctx: &Context,
    with: &ScaleWith,
    state: &mut RunState,
) -> Result<Option<Compensation>, StepError> {
    let current = ctx
        .platform
        .state()
        .await?
        .replicas
        .get(&with.target)
        .copied();
    let Some(replicas) = current else {
        return Ok(None);
    };
    state
        .first_replicas
        .entry(with.target.clone())
        .or_insert(replicas);
    let prior = ctx.platform.prior(Subject::Target(&with.target)).await?;
    Ok(Some(Compensation::Scale {
        target: with.target.clone(),
        replicas,
        prior,
    }))
}

pub(crate) async fn run(
    ctx: &Context,
    with: &ScaleWith,
    state: &RunState,
) -> Result<String, StepError> {
    let replicas = match with.replicas {
        Replicas::Count(n) => n,
        Replicas::Previous => state.first_replicas.get(&with.target).copied().unwrap_or(0),
    };
    Ok(ctx.platform.scale(&with.target, replicas).await?)
}
