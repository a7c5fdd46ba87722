//! The deploy lock: one run per environment at a time.
//!
//! A lock file holds the holder's run id, host, pid and an expiry. A heartbeat pushes the
//! expiry forward while the run lives; a runner that dies stops renewing, and its lock can be
//! taken once expired (or at once when the holder was on this host and its process is gone).
//! Taking a stale lock renames it away first, so two takers cannot both win.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub run_id: String,
    pub command: String,
    pub host: String,
    pub pid: u32,
    pub user: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl LockInfo {
    pub fn expired(&self) -> bool {
        self.expires_at <= Utc::now()
    }

    /// True when the holder ran on this host and its process no longer exists.
    pub fn holder_dead(&self) -> bool {
        self.host == hostname()
            && !Path::new(&format!("/proc/{}", self.pid)).exists()
            && Path::new("/proc/self").exists()
    }

    pub fn stale(&self) -> bool {
        self.expired() || self.holder_dead()
    }

    pub fn describe(&self) -> String {
        format!(
            "run {} ({} by {} on {}, pid {}, since {}, lease until {})",
            self.run_id,
            self.command,
            self.user,
            self.host,
            self.pid,
            self.acquired_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.expires_at.format("%H:%M:%S UTC")
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another run holds the deploy lock: {}", .0.describe())]
    Held(Box<LockInfo>),
    #[error("lock file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn lock_path(state_dir: &Path, environment: &str) -> PathBuf {
    state_dir
        .join("locks")
        .join(format!("{environment}.lock.json"))
}

/// Reads the current lock, if any. A lock file that cannot be parsed (a crash mid-write)
/// reads as an expired lock held by nobody.
pub fn read(path: &Path) -> Result<Option<LockInfo>, LockError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).unwrap_or_else(|_| {
            LockInfo {
                run_id: "unknown (damaged lock file)".into(),
                command: "unknown".into(),
                host: "unknown".into(),
                pid: 0,
                user: "unknown".into(),
                acquired_at: DateTime::<Utc>::MIN_UTC,
                expires_at: DateTime::<Utc>::MIN_UTC,
            }
        }))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LockError::Io {
            path: path.to_owned(),
            source,
        }),
    }
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

fn write_new(path: &Path, info: &LockInfo) -> std::io::Result<bool> {
    use std::io::Write;
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    file.write_all(
        serde_json::to_string_pretty(info)
            .expect("lock serializes")
            .as_bytes(),
    )?;
    file.sync_all()?;
    Ok(true)
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
        match read(&path)? {
            None => {}
            Some(current) if current.stale() => {
                // Rename is atomic: of two runners stealing the same stale lock, one wins
                // the rename and the other finds the file gone and races on create_new.
                let aside = path.with_extension(format!("stale-{}", uuid::Uuid::new_v4()));
                if std::fs::rename(&path, &aside).is_ok() {
                    std::fs::remove_file(&aside).ok();
                }
            }
            Some(current) => return Err(LockError::Held(Box::new(current))),
        }
    }
    match read(&path)? {
        Some(current) => Err(LockError::Held(Box::new(current))),
        None => Err(io(std::io::Error::other("lock contention: try again"))),
    }
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
