//! The engine's use of the shared lock and journal (`adapters::state::azure_blob`): copy
//! the journals in before a command reads them (the lease for a run is `engine::lock`'s).

use super::error::EngineError;

/// Before a command reads the journal: refuses while another runner holds the blob lock
/// (when `check_lock`), and copies the container's journals into the state folder.
pub(crate) async fn sync(ctx: &super::Context, check_lock: bool) -> Result<(), EngineError> {
    if let Some(shared) = &ctx.shared {
        if check_lock {
            shared.ensure_free().await?;
        }
        shared
            .pull_journals(&super::journal::Journal::dir(&ctx.state_dir))
            .await?;
    }
    Ok(())
}
