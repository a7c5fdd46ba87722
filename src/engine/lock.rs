//! The deploy lock: one run per environment at a time.
//!
//! A lock file holds the holder's run id, host, pid (with the process's start time) and an
//! expiry. A heartbeat pushes the expiry forward while the run lives; a runner that dies
//! stops renewing, and its lock can be taken once expired (or at once when the holder was on
//! this host and its process is gone).
//! Taking a stale lock renames it away first, so two takers cannot both win.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio::task::JoinHandle;

use super::error::EngineError;
pub use super::error::LockError;
use crate::adapters::state::azure_blob::SharedLock;
pub use crate::adapters::state::{LockInfo, hostname, process_started, username};

pub fn lock_path(state_dir: &Path, environment: &str) -> PathBuf {
    state_dir
        .join("locks")
        .join(format!("{environment}.lock.json"))
}

/// Reads the current lock, if any. A lock file that cannot be parsed (a crash mid-write)
/// reads as an expired lock held by nobody.
pub fn read(path: &Path) -> Result<Option<LockInfo>, LockError> {
    Ok(read_raw(path)?.map(|bytes| parse(&bytes)))
}

fn read_raw(path: &Path) -> Result<Option<Vec<u8>>, LockError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LockError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse(bytes: &[u8]) -> LockInfo {
    serde_json::from_slice(bytes).unwrap_or_else(|_| LockInfo {
        run_id: "unknown (damaged lock file)".into(),
        command: "unknown".into(),
        host: "unknown".into(),
        pid: 0,
        pid_started: None,
        user: "unknown".into(),
        acquired_at: DateTime::<Utc>::MIN_UTC,
        expires_at: DateTime::<Utc>::MIN_UTC,
    })
}

/// A held lock; released on drop, on every path.
pub struct LockGuard {
    path: PathBuf,
    info: LockInfo,
    heartbeat: Option<JoinHandle<()>>,
}

impl LockGuard {
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Releases the lock now.
    pub fn release(mut self) {
        self.release_inner();
    }

    fn release_inner(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if let Ok(Some(current)) = read(&self.path)
            && current.run_id == self.info.run_id
        {
            std::fs::remove_file(&self.path).ok();
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.release_inner();
    }
}

/// Creates the lock file unless one exists. The lock appears whole or not at all: it is
/// written and synced under a temporary name, then hard-linked into place, which fails when
/// a lock is already there. Creating it in place would let a concurrent runner read it
/// empty, take it for a damaged (stale) lock and steal it.
fn write_new(path: &Path, info: &LockInfo) -> std::io::Result<bool> {
    use std::io::Write;
    let tmp = path.with_extension(format!("new-{}", uuid::Uuid::new_v4()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(
            serde_json::to_string_pretty(info)
                .expect("lock serializes")
                .as_bytes(),
        )?;
        file.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    std::fs::remove_file(&tmp).ok();
    result
}

fn rewrite(path: &Path, info: &LockInfo) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(info).expect("lock serializes"),
    )?;
    std::fs::rename(&tmp, path)
}

/// Takes the lock for `run_id`, or says who holds it.
pub fn acquire(
    state_dir: &Path,
    environment: &str,
    run_id: &str,
    command: &str,
    lease: Duration,
) -> Result<LockGuard, LockError> {
    let path = lock_path(state_dir, environment);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(path.parent().expect("lock path has a parent")).map_err(io)?;
    let lease_chrono = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
    let now = Utc::now();
    let info = LockInfo {
        run_id: run_id.to_owned(),
        command: command.to_owned(),
        host: hostname(),
        pid: std::process::id(),
        pid_started: process_started(std::process::id()),
        user: username(),
        acquired_at: now,
        expires_at: now + lease_chrono,
    };
    for _ in 0..3 {
        if write_new(&path, &info).map_err(io)? {
            let heartbeat = spawn_heartbeat(path.clone(), info.clone(), lease);
            return Ok(LockGuard {
                path,
                info,
                heartbeat: Some(heartbeat),
            });
        }
        match read_raw(&path)? {
            None => {}
            Some(seen) => {
                let current = parse(&seen);
                if !current.stale() {
                    return Err(LockError::Held(Box::new(current)));
                }
                remove_stale(&path, &seen);
            }
        }
    }
    match read(&path)? {
        Some(current) => Err(LockError::Held(Box::new(current))),
        None => Err(io(std::io::Error::other("lock contention: try again"))),
    }
}

/// Removes the stale lock `seen` (its bytes as read), unless another runner got to it
/// first. Renaming or deleting the path blindly could remove a fresh lock that a faster
/// runner had just put in its place. Instead the path is hard-linked to a claim named after
/// `seen`: the link fails for every other runner claiming the same stale lock, and the claim
/// is checked to be that lock before the path (which no one else may remove meanwhile) is
/// removed.
fn remove_stale(path: &Path, seen: &[u8]) {
    use sha2::{Digest, Sha256};
    let claim = path.with_extension(format!(
        "stale-{}",
        hex::encode(&Sha256::digest(seen)[..12])
    ));
    if std::fs::hard_link(path, &claim).is_err() {
        // Gone already, or another runner is removing it.
        return;
    }
    if std::fs::read(&claim).is_ok_and(|now| now == seen) {
        std::fs::remove_file(path).ok();
    }
    std::fs::remove_file(&claim).ok();
}

fn spawn_heartbeat(path: PathBuf, mut info: LockInfo, lease: Duration) -> JoinHandle<()> {
    let lease_chrono = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(lease / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            match read(&path) {
                Ok(Some(current)) if current.run_id == info.run_id => {
                    info.expires_at = Utc::now() + lease_chrono;
                    if let Err(e) = rewrite(&path, &info) {
                        tracing::warn!("cannot renew the deploy lock: {e}");
                    }
                }
                // Someone forced the lock away; nothing to renew.
                _ => return,
            }
        }
    })
}

/// Takes the database-side lock too (PostgreSQL advisory lock, MySQL `GET_LOCK`), for
/// runners on other machines that do not share this state folder.
pub async fn acquire_in_database(
    ctx: &super::Context,
) -> Result<Option<crate::adapters::database::DbLock>, EngineError> {
    use crate::adapters::database::DatabaseError;
    let name = format!("{}:{}", ctx.project, ctx.environment);
    match ctx.database.lock(&name).await {
        Ok(lock) => Ok(lock),
        Err(DatabaseError::Locked(holder)) => Err(LockError::HeldInDatabase(holder).into()),
        Err(e) => Err(EngineError::Plan(format!(
            "cannot take the database lock: {e}"
        ))),
    }
}

/// Takes a run's locks: this state folder's lock file (first: it names the holder), then
/// the database-side lock ([`acquire_in_database`]).
pub async fn acquire_for_run(
    ctx: &super::Context,
    run_id: &str,
    command: &str,
) -> Result<(LockGuard, Option<crate::adapters::database::DbLock>), EngineError> {
    let guard = acquire(
        &ctx.state_dir,
        &ctx.environment,
        run_id,
        command,
        ctx.lock_lease,
    )?;
    let db_lock = acquire_in_database(ctx).await?;
    Ok((guard, db_lock))
}

/// Every lock a run holds: this state folder's lock file and the database-side lock
/// ([`acquire_for_run`]), and the blob lease when the environment shares its state
/// (`lock: { kind: azure-blob }`).
pub struct RunLocks {
    guard: LockGuard,
    database: Option<crate::adapters::database::DbLock>,
    shared: Option<SharedLock>,
}

impl RunLocks {
    /// Takes them, in that order.
    pub async fn acquire(
        ctx: &super::Context,
        run_id: &str,
        command: &str,
    ) -> Result<Self, EngineError> {
        let (guard, database) = acquire_for_run(ctx, run_id, command).await?;
        let shared = acquire_shared(ctx, run_id, command).await?;
        Ok(Self {
            guard,
            database,
            shared,
        })
    }

    /// Lets them go, the other way round.
    pub async fn release(self) {
        release_shared(self.shared).await;
        drop(self.database);
        self.guard.release();
    }
}

/// Removes the lock whoever holds it (`cutover lock release --force`).
pub fn force_release(state_dir: &Path, environment: &str) -> Result<Option<LockInfo>, LockError> {
    let path = lock_path(state_dir, environment);
    let current = read(&path)?;
    if current.is_some() {
        std::fs::remove_file(&path).map_err(|source| LockError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(current)
}

/// Takes the blob lock for a run, when the environment has one.
async fn acquire_shared(
    ctx: &super::Context,
    run_id: &str,
    command: &str,
) -> Result<Option<SharedLock>, EngineError> {
    match &ctx.shared {
        Some(shared) => {
            let reporter = ctx.reporter.clone();
            let lost = std::sync::Arc::new(move |message: String| {
                reporter.event(&crate::run::event::Event::Warning { message });
            });
            Ok(Some(
                shared
                    .acquire(run_id, command, ctx.cancel.clone(), lost)
                    .await?,
            ))
        }
        None => Ok(None),
    }
}

/// Releases the blob lock, when one was taken.
async fn release_shared(lock: Option<SharedLock>) {
    if let Some(lock) = lock {
        lock.release().await;
    }
}
