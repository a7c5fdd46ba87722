//! `lock status` and `lock release --force`.

use is_terminal::IsTerminal;
use serde_json::json;

use super::exit::Exit;
use super::session::Session;
use super::{Global, LockCommand};
use crate::engine::{EngineError, lock};

pub fn lock(global: &Global, command: LockCommand) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let state_dir = session.config.state_dir();
    let env = &session.environment;
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
