//! `restart`: restart the app on its platform. Nothing to undo.

use crate::run::context::Context;

pub(crate) fn plan(ctx: &Context) -> (String, Option<String>) {
    (format!("restart the app ({})", ctx.platform.kind()), None)
}
