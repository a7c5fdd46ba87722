//! `lock status` and `lock release --force`.

use is_terminal::IsTerminal;
use serde_json::json;

use super::exit::Exit;
use super::session::Session;
use super::{Global, LockCommand};
use crate::config::deploy_file::LockKind;
use crate::engine::{EngineError, lock};

pub(crate) async fn lock(global: &Global, command: LockCommand) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let state_dir = session.config.state_dir();
    let env = &session.environment;
    let shared = session
        .config
        .environment(env)?
        .lock
        .as_ref()
        .is_some_and(|l| l.kind == Some(LockKind::AzureBlob));
    if shared {
        return shared_lock(&session, command).await;
    }
    match command {
        LockCommand::Status => {
            let holder = lock::read(&lock::lock_path(&state_dir, env))?;
            let text = match &holder {
                None => format!("`{env}` is not locked"),
                Some(h) if h.stale() => format!(
                    "`{env}` has a stale lock (its holder is gone; the next run takes it over): {}",
                    h.describe()
                ),
                Some(h) => format!("`{env}` is locked by {}", h.describe()),
            };
            session.result(&json!({"environment": env, "holder": holder, "stale": holder.as_ref().map(lock::LockInfo::stale)}), &text);
            Ok(Exit::Ok)
        }
        LockCommand::Release { force: _, yes } => {
            let Some(holder) = lock::read(&lock::lock_path(&state_dir, env))? else {
                session.result(
                    &json!({"environment": env, "released": null}),
                    &format!("`{env}` is not locked"),
                );
                return Ok(Exit::Ok);
            };
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(EngineError::NotConfirmed(format!(
                        "releasing `{env}`'s lock held by {} needs confirmation; without a terminal pass --yes",
                        holder.describe()
                    )));
                }
                let ok = dialoguer::Confirm::new()
                    .with_prompt(format!(
                        "Release the lock held by {}? If that run is alive, two runs could act at once",
                        holder.describe()
                    ))
                    .default(false)
                    .interact()
                    .unwrap_or(false);
                if !ok {
                    return Err(EngineError::NotConfirmed("lock not released".into()));
                }
            }
            let released = lock::force_release(&state_dir, env)?;
            session.result(
                &json!({"environment": env, "released": released}),
                &format!(
                    "released `{env}`'s lock; if that run died, run `cutover recover -e {env}` next"
                ),
            );
            Ok(Exit::Ok)
        }
    }
}

/// `lock status` and `lock release --force` for a lock in blob storage: the lease, and
/// the holder its blob names.
async fn shared_lock(session: &Session, command: LockCommand) -> Result<Exit, EngineError> {
    let env = &session.environment;
    let ctx = session.context(tokio_util::sync::CancellationToken::new())?;
    let shared = ctx
        .shared
        .as_ref()
        .expect("the environment has a blob lock");
    let holder = shared.current_holder().await?;
    match command {
        LockCommand::Status => {
            let text = match &holder {
                None => format!("`{env}` is not locked ({})", shared.describe()),
                Some(h) => format!(
                    "`{env}` is locked by {} (a lease in {})",
                    h.describe(),
                    shared.describe()
                ),
            };
            session.result(
                &json!({"environment": env, "holder": holder, "stale": holder.as_ref().map(|_| false)}),
                &text,
            );
            Ok(Exit::Ok)
        }
        LockCommand::Release { force: _, yes } => {
            let Some(holder) = holder else {
                session.result(
                    &json!({"environment": env, "released": null}),
                    &format!("`{env}` is not locked"),
                );
                return Ok(Exit::Ok);
            };
            if !yes {
                return Err(EngineError::NotConfirmed(format!(
                    "breaking `{env}`'s lease held by {} needs --yes: if that run is alive, it stops and rolls back",
                    holder.describe()
                )));
            }
            let released = shared.break_lock().await?;
            session.result(
                &json!({"environment": env, "released": released}),
                &format!(
                    "broke `{env}`'s lease; a live holder stops and rolls back; if it died, run `cutover recover -e {env}` next"
                ),
            );
            Ok(Exit::Ok)
        }
    }
}
