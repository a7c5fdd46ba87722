//! `maintenance`: turn the platform's maintenance mode on or off; undone by restoring the
//! flag it had before (exactly, where the platform keeps more than a flag).

use crate::adapters::platform::Subject;
use crate::config::pipeline::MaintenanceWith;
use crate::run::compensation::Compensation;
use crate::run::context::Context;
use crate::run::error::StepError;
use crate::run::plan::PlanScratch;

fn word(enabled: bool) -> &'static str {
    if enabled { "on" } else { "off" }
}

pub(crate) fn plan(
    ctx: &Context,
    with: &MaintenanceWith,
    scratch: &mut PlanScratch<'_>,
) -> (String, Option<String>) {
    let summary = format!(
        "turn maintenance {} ({})",
        word(with.enabled),
        ctx.platform.kind()
    );
    let undo = scratch
        .maintenance
        .map(|before| format!("maintenance back {}", word(before)));
    if scratch.maintenance.is_some() {
        scratch.maintenance = Some(with.enabled);
    }
    (summary, undo)
}

pub(crate) async fn prepare(ctx: &Context) -> Result<Option<Compensation>, StepError> {
    let state = ctx.platform.state().await?;
    let Some(enabled) = state.maintenance else {
        return Ok(None);
    };
    let prior = ctx.platform.prior(Subject::Maintenance).await?;
    Ok(Some(Compensation::Maintenance { enabled, prior }))
}

pub(crate) async fn run(ctx: &Context, with: &MaintenanceWith) -> Result<String, StepError> {
    Ok(ctx.platform.set_maintenance(with.enabled).await?)
}
