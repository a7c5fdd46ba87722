//! `preflight`: before anything is touched, the running app is healthy, the database
//! answers and the backup store can be written.

use std::time::Duration;

use crate::config::pipeline::PreflightWith;
use crate::run::context::Context;
use crate::run::error::StepError;

async fn checks(ctx: &Context, with: &PreflightWith) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    ctx.database
        .ping()
        .await
        .map_err(|e| format!("the database is not ready: {e}"))?;
    done.push("database answers".to_owned());
    ctx.store
        .check_writable()
        .await
        .map_err(|e| format!("the backup store cannot be written: {e}"))?;
    done.push("backup store writable".to_owned());
    if with.health != Some(false) {
        if let Some(target) = ctx.health()? {
            super::health::probe(ctx, target, Duration::from_secs(10))
                .await
                .map_err(|e| {
                    format!(
                        "the running app is not healthy at {}: {e}",
                        ctx.redactor.redact(&target.url)
                    )
                })?;
            done.push("app healthy".to_owned());
        } else if with.health == Some(true) {
            return Err("`health: true` but the environment has no `health.url`".into());
        }
    }
    Ok(done)
}

pub(crate) async fn plan(
    ctx: &Context,
    with: &PreflightWith,
) -> Result<(String, Option<String>), String> {
    let done = checks(ctx, with).await?;
    Ok((format!("check: {}", done.join(", ")), None))
}

pub(crate) async fn run(ctx: &Context, with: &PreflightWith) -> Result<String, StepError> {
    let done = checks(ctx, with).await.map_err(StepError::Failed)?;
    Ok(done.join(", "))
}
