//! `traffic`: send the traffic to a released code version, in stages; each stage below
//! 100 % must stay healthy for `bake` (the sustained-health rule on the environment's
//! `health:`) before the next. Undone by putting the traffic back to the exact weights it
//! had before the step.

use crate::adapters::platform::Route;
use crate::config::pipeline::{HealthWith, TrafficWith};
use crate::fact::Fact;
use crate::run::compensation::Compensation;
use crate::run::context::Context;
use crate::run::error::StepError;
use crate::run::plan::PlanScratch;

/// How long after a bake the last health answer may come: the bake holds the health for
/// its whole length, plus this for the first answer.
const BAKE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn plan(
    ctx: &Context,
    with: &TrafficWith,
    scratch: &mut PlanScratch<'_>,
) -> Result<(String, Option<String>), String> {
    let actions = ctx.platform.code_actions();
    actions.traffic?;
    let stages = with.stages();
    if stages.len() > 1 && !actions.split {
        return Err(format!(
            "`stages: {stages:?}`: the `{}` platform moves all the traffic at once; use `stages: [100]`",
            ctx.platform.kind()
        ));
    }
    let version = super::release::version(ctx, with.version.as_ref())?;
    if stages.len() > 1 {
        super::health::plan(ctx, &bake(with)).map_err(|e| {
            format!("`stages:` bakes each stage on the environment's health check: {e}")
        })?;
    }
    let code = scratch.code.get_or_insert_with(Default::default);
    let before = code.describe();
    code.live = Some(version.clone());
    code.routes = vec![Route {
        name: code
            .route(&version)
            .map_or_else(|| version.clone(), |r| r.name.clone()),
        version: Some(version.clone()),
        weight: 100,
    }];
    let path = stages
        .iter()
        .map(|s| format!("{s}%"))
        .collect::<Vec<_>>()
        .join(&format!(
            " → healthy for {} → ",
            humantime::format_duration(with.bake())
        ));
    // Migrations the run applies before this step run while the earlier code still
    // serves: they must keep it working (expand only; `-- cutover:contract` marks one that
    // does not, which the plan refuses here).
    let expanded = scratch.version != scratch.database.version();
    Ok((
        format!(
            "send the traffic to {version}: {path} (now: {before}){}",
            if expanded {
                "; until then the code before it serves on the migrated schema"
            } else {
                ""
            }
        ),
        Some(format!("traffic back to {before}")),
    ))
}

pub(crate) async fn prepare(ctx: &Context) -> Result<Option<Compensation>, StepError> {
    Ok(Some(super::release::compensation(ctx).await?))
}

pub(crate) async fn run(ctx: &Context, id: &str, with: &TrafficWith) -> Result<String, StepError> {
    let version = super::release::version(ctx, with.version.as_ref()).map_err(StepError::Failed)?;
    let previous = ctx.platform.code().await?.and_then(|c| c.live);
    let stages = with.stages();
    for (i, percent) in stages.iter().enumerate() {
        let note = ctx.platform.route(&version, *percent).await?;
        ctx.note(id, note);
        if i + 1 < stages.len() {
            super::health::run(ctx, id, &bake(with))
                .await
                .map_err(|e| {
                    StepError::Failed(format!(
                        "{version} at {percent}% did not stay healthy for {}: {e}",
                        humantime::format_duration(with.bake())
                    ))
                })?;
        }
    }
    let routes = ctx
        .platform
        .code()
        .await?
        .map(|c| c.routes)
        .unwrap_or_default();
    let schema_version = ctx.database.state().await?.version();
    ctx.fact(
        id,
        Fact::CodeReleased {
            version: version.clone(),
            previous: previous.clone(),
            routes,
            schema_version,
        },
    );
    Ok(match previous {
        Some(p) if p != version => format!("{version} gets all the traffic (was {p})"),
        _ => format!("{version} gets all the traffic"),
    })
}

/// The health check a stage must pass: healthy from the first answer to the end of the
/// bake.
fn bake(with: &TrafficWith) -> HealthWith {
    HealthWith {
        healthy_for: Some(crate::config::duration::Duration(with.bake())),
        timeout: Some(crate::config::duration::Duration(with.bake() + BAKE_GRACE)),
        ..HealthWith::default()
    }
}
