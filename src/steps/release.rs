//! `release`: put the new code version beside the live one without traffic (a Container
//! Apps revision at 0 %, the App Service staging slot, warmed); undone by putting the code
//! back exactly as it was, which removes what was staged.

use serde_saphyr::Spanned;

use crate::adapters::platform::Route;
use crate::config::pipeline::ReleaseWith;
use crate::fact::Fact;
use crate::run::compensation::Compensation;
use crate::run::context::Context;
use crate::run::error::StepError;
use crate::run::plan::PlanScratch;

pub(crate) fn plan(
    ctx: &Context,
    with: &ReleaseWith,
    scratch: &mut PlanScratch<'_>,
) -> Result<(String, Option<String>), String> {
    ctx.platform.code_actions().stage?;
    let version = version(ctx, with.version.as_ref())?;
    let code = scratch.code.get_or_insert_with(Default::default);
    let before = code.describe();
    if code.route(&version).is_none() {
        code.routes.push(Route {
            name: version.clone(),
            version: Some(version.clone()),
            weight: 0,
        });
    }
    Ok((
        format!("release {version} beside the live code, without traffic (now: {before})"),
        Some(format!("remove it: code and traffic back to {before}")),
    ))
}

pub(crate) async fn prepare(ctx: &Context) -> Result<Option<Compensation>, StepError> {
    Ok(Some(compensation(ctx).await?))
}

/// The undo of a `release` or `traffic` step: the exact code state before it.
pub(crate) async fn compensation(ctx: &Context) -> Result<Compensation, StepError> {
    let before = ctx
        .platform
        .code()
        .await?
        .map_or_else(|| "as it was".to_owned(), |c| c.describe());
    Ok(Compensation::Code {
        prior: ctx.platform.code_prior().await?,
        before,
    })
}

pub(crate) async fn run(ctx: &Context, id: &str, with: &ReleaseWith) -> Result<String, StepError> {
    let version = version(ctx, with.version.as_ref()).map_err(StepError::Failed)?;
    let note = ctx.platform.stage(&version).await?;
    let name = ctx
        .platform
        .code()
        .await?
        .and_then(|c| c.route(&version).map(|r| r.name.clone()));
    ctx.fact(id, Fact::CodeStaged { version, name });
    Ok(note)
}

/// The version a step names, `${env:NAME}` read from the environment, else
/// `--code-version`.
pub(crate) fn version(ctx: &Context, named: Option<&Spanned<String>>) -> Result<String, String> {
    let version = match named {
        Some(v) => match v
            .value
            .strip_prefix("${env:")
            .and_then(|r| r.strip_suffix('}'))
        {
            Some(name) => std::env::var(name).map_err(|_| {
                format!("`version: {}`: environment variable {name} is not set", v.value)
            })?,
            None => v.value.clone(),
        },
        None => ctx.code_version.clone().ok_or_else(|| {
            "no code version to release: name it with `with: { version: ... }` or `--code-version` (CUTOVER_CODE_VERSION)".to_owned()
        })?,
    };
    let version = version.trim().to_owned();
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
    {
        return Err(format!(
            "code version `{version}` must be letters, digits and . - _ + (an image tag)"
        ));
    }
    Ok(version)
}
