//! Copies a killed rehearsal left behind. Before a rehearsal makes its copy it writes a
//! marker naming it, with its process; the marker goes once the copy is dropped. The next
//! rehearsal of the environment drops every copy whose marker names a process of this host
//! that is gone (`kill -9`, a power cut): a copy can never outlive two rehearsals.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::adapters::database::Database;
use crate::engine::lock::{hostname, process_started};

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    /// The scratch database (a file path for SQLite).
    name: String,
    pid: u32,
    pid_started: Option<u64>,
    host: String,
}

fn dir(state_dir: &Path, environment: &str) -> PathBuf {
    state_dir
        .join("rehearsals")
        .join(format!("{environment}.copies"))
}

/// Records that this process owns the copy `name`; dropping the returned guard's file
/// (by [`Claim::release`]) says the copy is gone.
pub(crate) struct Claim(PathBuf);

impl Claim {
    pub(crate) fn write(state_dir: &Path, environment: &str, name: &str) -> std::io::Result<Self> {
        let dir = dir(state_dir, environment);
        std::fs::create_dir_all(&dir)?;
        let pid = std::process::id();
        let marker = Marker {
            name: name.to_owned(),
            pid,
            pid_started: process_started(pid),
            host: hostname(),
        };
        let path = dir.join(format!("{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(
            &path,
            serde_json::to_string(&marker).expect("marker serializes"),
        )?;
        Ok(Self(path))
    }

    /// The copy is gone: forget it.
    pub(crate) fn release(self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Drops the copies of rehearsals whose process is gone; returns one line per copy
/// dropped, or left because it could not be.
pub(crate) async fn sweep(
    state_dir: &Path,
    environment: &str,
    database: &dyn Database,
) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir, environment)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let Some(marker) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Marker>(&t).ok())
        else {
            continue;
        };
        let gone = marker.host == hostname()
            && match (process_started(marker.pid), marker.pid_started) {
                (None, _) => true,
                (Some(now), Some(then)) => now != then,
                (Some(_), None) => false,
            };
        if !gone {
            continue;
        }
        match database.drop_scratch(&marker.name).await {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
                out.push(format!(
                    "dropped the copy {} a killed rehearsal (process {}) left behind",
                    marker.name, marker.pid
                ));
            }
            Err(e) => out.push(format!(
                "the copy {} a killed rehearsal left behind could not be dropped: {e}",
                marker.name
            )),
        }
    }
    out
}
