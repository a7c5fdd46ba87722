//! Commands that edit the migration history without running a pipeline (`migrate
//! baseline`, `migrate repair`): under the run locks, with a journal of their own that
//! says who did what and why, like any run. The edit is one transaction: it happened
//! (`succeeded`) or nothing changed (`rolled_back`).

use chrono::Utc;

use super::error::EngineError;
use super::journal::{Journal, Record, RunStatus, new_run_id};
use super::lock::{RunLocks, hostname, username};
use crate::fact::Fact;
use crate::run::context::Context;

/// Runs `edit` under the locks with a journal for `command`; on success journals and
/// reports `fact` (what the edit did). Returns the run id.
pub(crate) async fn journaled<F>(
    ctx: &Context,
    command: &str,
    fact: Fact,
    edit: F,
) -> Result<String, EngineError>
where
    F: std::future::Future<Output = Result<(), EngineError>>,
{
    let run_id = new_run_id();
    let locks = RunLocks::acquire(ctx, &run_id, command).await?;
    let result = async {
        let mut journal = Journal::create(&ctx.state_dir, &run_id, ctx.redactor.clone())?;
        if let Some(shared) = &ctx.shared {
            journal.mirror_to(shared.journal(&run_id).await?);
        }
        journal
            .write(&Record::RunStarted {
                at: Utc::now(),
                run_id: run_id.clone(),
                project: ctx.project.clone(),
                environment: ctx.environment.clone(),
                command: command.to_owned(),
                pipeline: command.to_owned(),
                steps: Vec::new(),
                plan_digest: String::new(),
                user: username(),
                host: hostname(),
            })
            .await?;
        let done = edit.await;
        if done.is_ok() {
            super::verify::record(ctx, &mut journal, fact).await?;
        }
        journal
            .write(&Record::RunFinished {
                at: Utc::now(),
                status: if done.is_ok() {
                    RunStatus::Succeeded
                } else {
                    RunStatus::RolledBack
                },
            })
            .await?;
        done
    }
    .await;
    locks.release().await;
    result.map(|()| run_id)
}
