//! The journal: one append-only JSON-lines file per run, each record synced to disk before
//! the side effect it announces. It lives in the state folder, outside the database, so a
//! restore-from-backup rollback cannot erase the record of the run that asked for it.
//!
//! A run whose file has no `run_finished` record is *open*: the process died. `recover`
//! reads it back and finishes the job.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub(crate) use super::error::JournalError;
use crate::run::compensation::Compensation;
use crate::secret::Redactor;

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub(crate) enum Record {
    RunStarted {
        at: DateTime<Utc>,
        run_id: String,
        project: String,
        environment: String,
        /// `deploy`, `rollback`, `migrate`, ...
        command: String,
        pipeline: String,
        steps: Vec<String>,
        plan_digest: String,
        user: String,
        host: String,
    },
    /// Written before the step touches anything, with the action that undoes it.
    StepStarted {
        at: DateTime<Utc>,
        index: usize,
        id: String,
        uses: String,
        compensation: Option<Compensation>,
    },
    StepSkipped {
        at: DateTime<Utc>,
        index: usize,
        id: String,
    },
    StepFinished {
        at: DateTime<Utc>,
        index: usize,
        id: String,
        message: String,
    },
    StepFailed {
        at: DateTime<Utc>,
        index: usize,
        id: String,
        error: String,
    },
    RollbackStarted {
        at: DateTime<Utc>,
        reason: String,
    },
    CompensationStarted {
        at: DateTime<Utc>,
        index: usize,
        id: String,
    },
    CompensationFinished {
        at: DateTime<Utc>,
        index: usize,
        id: String,
        /// What the undo did and checked, in its own words (a platform's new release id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    CompensationFailed {
        at: DateTime<Utc>,
        index: usize,
        id: String,
        error: String,
    },
    RunFinished {
        at: DateTime<Utc>,
        status: RunStatus,
    },
    /// What was done about a failed step: by the pipeline's `on_failure`, or by a person
    /// asked at the terminal (`asked`), who is named.
    Decision {
        at: DateTime<Utc>,
        index: usize,
        id: String,
        choice: Choice,
        asked: bool,
        user: String,
    },
    /// The run stopped for a human, with what `cutover resume` needs to go on from
    /// `resume_from`. Nothing after it until `run_resumed` (or `cutover rollback`).
    RunHalted {
        at: DateTime<Utc>,
        resume_from: usize,
        /// The step it resumes at.
        id: String,
        reason: String,
        /// The backup this run took.
        backup: Option<String>,
        /// Replica counts before the run first scaled each target (`replicas: previous`).
        first_replicas: BTreeMap<String, u32>,
    },
    /// A step marked `point_of_no_return` finished: no rollback goes past it.
    PointOfNoReturn {
        at: DateTime<Utc>,
        index: usize,
        id: String,
    },
    /// `cutover resume` took a halted run over.
    RunResumed {
        at: DateTime<Utc>,
        from: usize,
        user: String,
        host: String,
    },
    /// Something the run established, as data (a migration applied, a fingerprint); the
    /// step it belongs to, when it belongs to one.
    Fact {
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(flatten)]
        fact: crate::fact::Fact,
    },
    /// Step `index` (or its undo) started a process group (a shell command), written as
    /// soon as it runs. `recover` makes sure none of these still runs before it undoes
    /// anything.
    ProcessStarted {
        at: DateTime<Utc>,
        index: usize,
        id: String,
        /// The process group id, also the pid of its leader.
        pgid: u32,
        /// The leader's start time (`/proc/PID/stat` field 22), which tells a recycled pid
        /// apart; absent where there is no `/proc`.
        start_time: Option<u64>,
        /// Where it runs: process ids mean nothing on another machine.
        host: String,
    },
    /// The run went on outside its environment's `window:`: going back (never held by the
    /// window), or forward by `--outside-window` with a reason. Written right after
    /// `run_started` (or `run_resumed`), or first when `recover` or `rollback` takes the
    /// run up again.
    OutsideWindow {
        at: DateTime<Utc>,
        window: String,
        forced: bool,
        #[serde(default)]
        reason: Option<String>,
        user: String,
    },
}

/// What happens after a step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Choice {
    /// Run the step again.
    Retry,
    /// Undo what the run did.
    Rollback,
    /// Stop and leave things as they are for a human.
    Halt,
    /// A person approved a `pause` step: the run goes on.
    Approve,
}

impl Choice {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Rollback => "rollback",
            Self::Halt => "halt",
            Self::Approve => "approve",
        }
    }
}

/// Where a halted run stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Halt {
    /// When it halted.
    pub at: DateTime<Utc>,
    pub resume_from: usize,
    pub step: String,
    pub reason: String,
    pub backup: Option<String>,
    pub first_replicas: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunStatus {
    Succeeded,
    RolledBack,
    RollbackFailed,
    /// Stopped for a human (`on_failure: halt`, a point of no return, a choice at the
    /// prompt); the journal stays open. Never written in `run_finished`.
    Halted,
}

impl RunStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::RolledBack => "rolled_back",
            Self::RollbackFailed => "rollback_failed",
            Self::Halted => "halted",
        }
    }
}

/// Counts records written by this process, for the crash-injection hook.
static RECORDS_WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Test hook: `CUTOVER_TEST_CRASH_AFTER_RECORD=N` aborts the process (no cleanup, no
/// unwinding, like kill -9) right after the Nth journal record of this process is on disk:
/// whether the record being written is that one.
fn crash_due() -> bool {
    std::env::var("CUTOVER_TEST_CRASH_AFTER_RECORD")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| RECORDS_WRITTEN.fetch_add(1, Ordering::SeqCst) + 1 == n)
}

/// An open journal file, appended to.
pub(crate) struct Journal {
    path: PathBuf,
    file: std::fs::File,
    redactor: Redactor,
    /// The copy in blob storage, appended after the local file (`lock: azure-blob`).
    remote: Option<crate::adapters::state::azure_blob::RemoteJournal>,
}

impl Journal {
    pub(crate) fn dir(state_dir: &Path) -> PathBuf {
        state_dir.join("journal")
    }

    /// Creates the journal of a new run.
    pub(crate) fn create(
        state_dir: &Path,
        run_id: &str,
        redactor: Redactor,
    ) -> Result<Self, JournalError> {
        let dir = Self::dir(state_dir);
        let path = dir.join(format!("{run_id}.jsonl"));
        let err = |source| JournalError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        Ok(Self {
            path,
            file,
            redactor,
            remote: None,
        })
    }

    /// Reopens an existing run's journal to append to it (recover).
    pub(crate) fn reopen(path: &Path, redactor: Redactor) -> Result<Self, JournalError> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| JournalError::Write {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            path: path.to_owned(),
            file,
            redactor,
            remote: None,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Also appends every record to `remote`, after the local file.
    pub(crate) fn mirror_to(&mut self, remote: crate::adapters::state::azure_blob::RemoteJournal) {
        self.remote = Some(remote);
    }

    /// Appends a record and syncs it to disk (and to the blob copy, when there is one).
    pub(crate) async fn write(&mut self, record: &Record) -> Result<(), JournalError> {
        self.write_all(std::slice::from_ref(record)).await
    }

    /// Appends records and syncs them to disk once (and to the blob copy, when there is
    /// one): a step's facts, one per migration, cost one sync, not one each.
    pub(crate) async fn write_all(&mut self, records: &[Record]) -> Result<(), JournalError> {
        let mut lines = String::new();
        for record in records {
            let line = serde_json::to_string(record).expect("journal records serialize");
            lines.push_str(&self.redactor.redact(&line));
            lines.push('\n');
            if crash_due() {
                self.append(&lines).await?;
                std::process::abort();
            }
        }
        if !lines.is_empty() {
            self.append(&lines).await?;
        }
        Ok(())
    }

    async fn append(&mut self, lines: &str) -> Result<(), JournalError> {
        let err = |source| JournalError::Write {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(lines.as_bytes()).map_err(err)?;
        self.file.sync_data().map_err(err)?;
        if let Some(remote) = &self.remote {
            // An append block holds at most 4 MiB: whole lines, in parts below that.
            for part in chunks_of_lines(lines, REMOTE_APPEND_MAX) {
                remote
                    .append(part.as_bytes().to_vec())
                    .await
                    .map_err(|m| err(std::io::Error::other(m)))?;
            }
        }
        Ok(())
    }
}

/// The most one append to the blob copy of a journal carries (Azure's append block limit
/// is 4 MiB).
const REMOTE_APPEND_MAX: usize = 4 << 20;

/// `text` cut after a newline into parts of at most `max` bytes (a longer line alone).
fn chunks_of_lines(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (i, _) in text.match_indices('\n') {
        if i + 1 - start > max && end > start {
            parts.push(&text[start..end]);
            start = end;
        }
        end = i + 1;
    }
    if end > start {
        parts.push(&text[start..end]);
    }
    if end < text.len() {
        parts.push(&text[end..]);
    }
    parts
}

/// A run read back from its journal.
#[derive(Debug, Clone)]
pub(crate) struct RunRecord {
    pub path: PathBuf,
    pub records: Vec<Record>,
}

impl RunRecord {
    pub(crate) fn read(path: &Path) -> Result<Self, JournalError> {
        let text = std::fs::read_to_string(path).map_err(|source| JournalError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut records = Vec::new();
        let lines: Vec<_> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(record) => records.push(record),
                // A torn last line is what a crash mid-write leaves: the side effect it
                // announced never started, so the line is ignored.
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => {
                    return Err(JournalError::Damaged {
                        path: path.to_owned(),
                        line: i + 1,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(Self {
            path: path.to_owned(),
            records,
        })
    }

    pub(crate) fn run_id(&self) -> String {
        match self.records.first() {
            Some(Record::RunStarted { run_id, .. }) => run_id.clone(),
            _ => self
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    pub(crate) fn environment(&self) -> Option<&str> {
        match self.records.first() {
            Some(Record::RunStarted { environment, .. }) => Some(environment),
            _ => None,
        }
    }

    /// The command that started the run (`deploy`, `rollback`, `migrate down`, ...).
    pub(crate) fn command(&self) -> Option<&str> {
        match self.records.first() {
            Some(Record::RunStarted { command, .. }) => Some(command),
            _ => None,
        }
    }

    pub(crate) fn started_at(&self) -> Option<DateTime<Utc>> {
        match self.records.first() {
            Some(Record::RunStarted { at, .. }) => Some(*at),
            _ => None,
        }
    }

    pub(crate) fn status(&self) -> Option<RunStatus> {
        self.records.iter().rev().find_map(|r| match r {
            Record::RunFinished { status, .. } => Some(*status),
            _ => None,
        })
    }

    pub(crate) fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.records.iter().rev().find_map(|r| match r {
            Record::RunFinished { at, .. } => Some(*at),
            _ => None,
        })
    }

    /// True when `recover` has work to do: the run is open (its process died), or its
    /// rollback stopped part-way (`rollback_failed`) and the rest is still to undo. A
    /// halted run waits for a human's `resume` or `rollback` instead.
    pub(crate) fn needs_recover(&self) -> bool {
        match self.status() {
            None => self.halted().is_none(),
            Some(status) => status == RunStatus::RollbackFailed,
        }
    }

    /// Where the run halted, while it is halted (not finished, not resumed since).
    pub(crate) fn halted(&self) -> Option<Halt> {
        if self.status().is_some() {
            return None;
        }
        self.records.iter().rev().find_map(|r| match r {
            Record::RunResumed { .. } => Some(None),
            Record::RunHalted {
                at,
                resume_from,
                id,
                reason,
                backup,
                first_replicas,
            } => Some(Some(Halt {
                at: *at,
                resume_from: *resume_from,
                step: id.clone(),
                reason: reason.clone(),
                backup: backup.clone(),
                first_replicas: first_replicas.clone(),
            })),
            _ => None,
        })?
    }

    /// The step ids the run was started with.
    pub(crate) fn steps(&self) -> Vec<String> {
        match self.records.first() {
            Some(Record::RunStarted { steps, .. }) => steps.clone(),
            _ => Vec::new(),
        }
    }
}

/// Every run in the journal folder, oldest first.
pub(crate) fn all_runs(state_dir: &Path) -> Result<Vec<RunRecord>, JournalError> {
    let dir = Journal::dir(state_dir);
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(JournalError::Read { path: dir, source }),
    };
    paths.sort();
    paths.iter().map(|p| read_once(p)).collect()
}

/// The journals this process has parsed, by path, with the length and modification time
/// they had: one command reads the folder several times (the plan, the lock, provenance,
/// the window forecast), and a journal only grows, so one that kept both is the same.
type Parsed = std::collections::HashMap<PathBuf, (u64, std::time::SystemTime, RunRecord)>;
static PARSED: std::sync::LazyLock<std::sync::Mutex<Parsed>> =
    std::sync::LazyLock::new(Default::default);

/// [`RunRecord::read`], parsed again only when the file changed since this process last
/// parsed it.
fn read_once(path: &Path) -> Result<RunRecord, JournalError> {
    let err = |source| JournalError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    let key = (meta.len(), meta.modified().map_err(err)?);
    let parsed = || {
        PARSED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some((len, modified, run)) = parsed().get(path)
        && (*len, *modified) == key
    {
        return Ok(run.clone());
    }
    let run = RunRecord::read(path)?;
    parsed().insert(path.to_owned(), (key.0, key.1, run.clone()));
    Ok(run)
}

/// Runs of an environment that never finished, or whose rollback is incomplete: each
/// blocks new runs until `recover` finishes it.
pub(crate) fn open_runs(
    state_dir: &Path,
    environment: &str,
) -> Result<Vec<RunRecord>, JournalError> {
    Ok(all_runs(state_dir)?
        .into_iter()
        .filter(|r| r.needs_recover() && r.environment().is_none_or(|e| e == environment))
        .collect())
}

/// Halted runs of an environment: each waits for `cutover resume` or `cutover rollback`,
/// and blocks new runs until then.
pub(crate) fn halted_runs(
    state_dir: &Path,
    environment: &str,
) -> Result<Vec<RunRecord>, JournalError> {
    Ok(all_runs(state_dir)?
        .into_iter()
        .filter(|r| r.halted().is_some() && r.environment().is_none_or(|e| e == environment))
        .collect())
}

/// A new run id: sortable by time, unique.
pub(crate) fn new_run_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", Utc::now().format("%Y%m%dT%H%M%S%3fZ"), &id[..6])
}

#[cfg(test)]
mod tests {
    use super::chunks_of_lines;

    #[test]
    fn appends_to_the_blob_copy_are_cut_after_whole_lines() {
        let text = "aaaa\nbb\ncccccc\nd\n";
        assert_eq!(chunks_of_lines(text, 8), ["aaaa\nbb\n", "cccccc\n", "d\n"]);
        // A line longer than the limit goes alone; nothing is lost or reordered.
        assert_eq!(
            chunks_of_lines(text, 3),
            ["aaaa\n", "bb\n", "cccccc\n", "d\n"]
        );
        assert_eq!(chunks_of_lines(text, 100), [text]);
        assert_eq!(chunks_of_lines("x\ny", 100), ["x\n", "y"]);
        assert!(chunks_of_lines("", 10).is_empty());
    }
}
