//! Where the deploy lock and the journal live when every runner of an environment must
//! see them (`lock: { kind: azure-blob, ... }`): the lock holder's record, and how the
//! shared store fails. The local lock file and journal are the engine's own.

pub(crate) mod azure_blob;

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why the shared store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The storage service failed; the text names the container and the operation.
    #[error("{0}")]
    Storage(String),
    /// Another runner holds the lease and its holder record could be read.
    #[error("another run holds the deploy lock: {}", .0.describe())]
    Held(Box<LockInfo>),
    /// Another runner holds the lease; the text says where.
    #[error("{0}")]
    HeldInDatabase(String),
    /// A journal copied from the store could not be written locally.
    #[error("cannot write journal {}: {source}", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub run_id: String,
    pub command: String,
    pub host: String,
    pub pid: u32,
    /// When the holder's process started, in clock ticks since boot (`/proc/PID/stat` field
    /// 22): a pid alone may have been recycled by another process since. Absent in lock
    /// files written before it was recorded, and where `/proc` is not there.
    #[serde(default)]
    pub pid_started: Option<u64>,
    pub user: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl LockInfo {
    pub fn expired(&self) -> bool {
        self.expires_at <= Utc::now()
    }

    /// True when the holder ran on this host.
    pub fn on_this_host(&self) -> bool {
        self.host == hostname()
    }

    /// True when the holder ran on this host and its process no longer exists: its pid is
    /// gone, or is now a process that started at another time than the holder.
    pub fn holder_dead(&self) -> bool {
        if !self.on_this_host() || !Path::new("/proc/self").exists() {
            return false;
        }
        match (process_started(self.pid), self.pid_started) {
            (None, _) => true,
            (Some(now), Some(then)) => now != then,
            // An older lock file without the start time: the pid is all there is to go by.
            (Some(_), None) => false,
        }
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
            self.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`);
/// `None` when there is no such process (or no `/proc`).
pub fn process_started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command name, is in parentheses and may itself hold spaces and
    // parentheses: the fields after it are counted from its last `)`.
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Who runs cutover: in a CI job the identity that started it (GitHub Actions' actor,
/// Azure DevOps' "requested for"), otherwise the OS user.
pub fn username() -> String {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let ci = if set("GITHUB_ACTIONS").as_deref() == Some("true") {
        set("GITHUB_ACTOR").map(|a| format!("github:{a}"))
    } else if set("TF_BUILD").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        set("BUILD_REQUESTEDFOR").map(|a| format!("azure-devops:{a}"))
    } else {
        None
    };
    ci.or_else(|| set("USER"))
        .or_else(|| set("USERNAME"))
        .unwrap_or_else(|| "unknown".into())
}
