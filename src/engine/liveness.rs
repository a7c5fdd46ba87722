//! Whether an open run's process is alive: the one answer `status`, `history` and `recover`
//! share, so none of them calls a live run dead (or a dead one live).
//!
//! A run is alive while the deploy lock names it and its holder is alive. On this host that
//! is checked on the process itself: the pid exists and started when the lock was taken (a
//! pid alone may since belong to another process). On another host nothing can be checked
//! from here but the lease: the holder's heartbeat renews it while the process lives, so an
//! unexpired lease is the evidence. Where the environment shares its state in blob storage,
//! a held blob lease is that evidence for its holder.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::journal::{Record, RunRecord};
use super::lock::LockInfo;

/// Who holds the environment's deploy lock now, as far as this runner can see.
#[derive(Debug, Clone, Default)]
pub(crate) struct Holders {
    /// The lock file in the state folder.
    pub file: Option<LockInfo>,
    /// The holder named in the blob lock, while its lease is held (`lock: azure-blob`).
    pub lease: Option<LockInfo>,
}

impl Holders {
    /// The lock file of `environment` in `state_dir`.
    pub(crate) fn read(
        state_dir: &std::path::Path,
        environment: &str,
    ) -> Result<Self, super::lock::LockError> {
        Ok(Self {
            file: super::lock::read(&super::lock::lock_path(state_dir, environment))?,
            lease: None,
        })
    }

    /// The lock file, and the blob lease when the environment shares its state.
    pub(crate) async fn read_with_lease(ctx: &super::Context) -> Result<Self, super::EngineError> {
        let mut holders = Self::read(&ctx.state_dir, &ctx.environment)?;
        if let Some(shared) = &ctx.shared {
            holders.lease = shared.current_holder().await?;
        }
        Ok(holders)
    }
}

/// How an open run's liveness was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evidence {
    /// On this host: its pid exists and started when the lock was taken.
    Process,
    /// On another host: its lock's lease, renewed by its heartbeat, has not expired.
    Lease,
    /// The blob lease (`lock: azure-blob`) is held in its name.
    SharedLease,
}

/// What a live run is doing, from its journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Activity {
    /// A step started and has not finished.
    Step(String),
    /// Undoing a step (its compensation started and has not finished).
    Undoing(String),
    /// Between steps, or not at its first step yet.
    Between,
}

impl Activity {
    /// The step it is at, whether doing or undoing it.
    pub(crate) fn step(&self) -> Option<&str> {
        match self {
            Self::Step(id) | Self::Undoing(id) => Some(id),
            Self::Between => None,
        }
    }

    /// Reads it from the journal: the last step or compensation started without a finish.
    pub(crate) fn of(run: &RunRecord) -> Self {
        let mut now = Self::Between;
        for record in &run.records {
            match record {
                Record::StepStarted { id, .. } => now = Self::Step(id.clone()),
                Record::CompensationStarted { id, .. } => now = Self::Undoing(id.clone()),
                Record::StepFinished { id, .. }
                | Record::StepFailed { id, .. }
                | Record::StepSkipped { id, .. }
                | Record::CompensationFinished { id, .. }
                | Record::CompensationFailed { id, .. }
                    if now.step() == Some(id.as_str()) =>
                {
                    now = Self::Between;
                }
                _ => {}
            }
        }
        now
    }
}

/// A run whose process is alive.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub run_id: String,
    pub activity: Activity,
    pub holder: LockInfo,
    pub evidence: Evidence,
}

impl Running {
    /// `run … at step `migrate` (pid 1234 on host, since …)`: the wording every command uses.
    pub(crate) fn describe(&self) -> String {
        let at = match &self.activity {
            Activity::Step(id) => format!("at step `{id}`"),
            Activity::Undoing(id) => format!("undoing step `{id}`"),
            Activity::Between => "between steps".to_owned(),
        };
        let h = &self.holder;
        let since = h.acquired_at.format("%Y-%m-%d %H:%M:%S UTC");
        let evidence = match self.evidence {
            Evidence::Process => format!("pid {} on {}, since {since}", h.pid, h.host),
            Evidence::Lease => format!(
                "pid {} on {}, since {since}; its lease is renewed until {}",
                h.pid,
                h.host,
                h.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Evidence::SharedLease => format!(
                "pid {} on {}, since {since}; it holds the blob lease",
                h.pid, h.host
            ),
        };
        format!("run {} {at} ({evidence})", self.run_id)
    }

    /// The short form for a table: `running (step migrate)`.
    pub(crate) fn short(&self) -> String {
        match &self.activity {
            Activity::Step(id) => format!("running (step {id})"),
            Activity::Undoing(id) => format!("running (undoing {id})"),
            Activity::Between => "running".to_owned(),
        }
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "run_id": self.run_id,
            "step": self.activity.step(),
            "undoing": matches!(self.activity, Activity::Undoing(_)),
            "pid": self.holder.pid,
            "host": self.holder.host,
            "since": self.holder.acquired_at,
            "lease_until": self.holder.expires_at,
            "evidence": match self.evidence {
                Evidence::Process => "process",
                Evidence::Lease => "lease",
                Evidence::SharedLease => "shared_lease",
            },
        })
    }
}

/// Whether an open run's process is alive.
#[derive(Debug, Clone)]
pub(crate) enum Liveness {
    Running(Box<Running>),
    /// Nothing alive holds the lock in its name: it died (or finished, or halted).
    Dead,
}

impl Liveness {
    /// The one decision. A finished or halted run is never running; an open one is while a
    /// live holder of the lock names it.
    pub(crate) fn of(run: &RunRecord, holders: &Holders) -> Self {
        if run.status().is_some() || run.halted().is_some() {
            return Self::Dead;
        }
        let run_id = run.run_id();
        let names_run = |h: &&LockInfo| h.run_id == run_id;
        let found = match holders.lease.as_ref().filter(names_run) {
            Some(h) => evidence(h, true, Utc::now()).map(|e| (h, e)),
            None => holders
                .file
                .as_ref()
                .filter(names_run)
                .and_then(|h| evidence(h, false, Utc::now()).map(|e| (h, e))),
        };
        match found {
            Some((holder, evidence)) => Self::Running(Box::new(Running {
                run_id,
                activity: Activity::of(run),
                holder: holder.clone(),
                evidence,
            })),
            None => Self::Dead,
        }
    }

    pub(crate) fn running(&self) -> Option<&Running> {
        match self {
            Self::Running(r) => Some(r),
            Self::Dead => None,
        }
    }
}

/// Why a lock's holder counts as alive, if it does. `leased`: the blob lease is held in its
/// name (a lock file's lease is its expiry). On this host the process itself decides, even
/// under a lease that a killed runner leaves held until it lapses.
fn evidence(holder: &LockInfo, leased: bool, now: DateTime<Utc>) -> Option<Evidence> {
    if holder.on_this_host() && std::path::Path::new("/proc/self").exists() {
        (!holder.holder_dead()).then_some(Evidence::Process)
    } else if leased {
        Some(Evidence::SharedLease)
    } else {
        (holder.expires_at > now).then_some(Evidence::Lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str]) -> RunRecord {
        let mut records = vec![Record::RunStarted {
            at: Utc::now(),
            run_id: "r1".into(),
            project: "p".into(),
            environment: "local".into(),
            command: "deploy".into(),
            pipeline: "deploy".into(),
            steps: vec!["a".into(), "b".into()],
            plan_digest: String::new(),
            user: "u".into(),
            host: "h".into(),
        }];
        for line in lines {
            let (kind, id) = line.split_once(' ').unwrap();
            let (at, index, id) = (Utc::now(), 0, (*id).to_owned());
            records.push(match kind {
                "started" => Record::StepStarted {
                    at,
                    index,
                    id,
                    uses: "command".into(),
                    compensation: None,
                },
                "finished" => Record::StepFinished {
                    at,
                    index,
                    id,
                    message: String::new(),
                },
                "undo" => Record::CompensationStarted { at, index, id },
                "undone" => Record::CompensationFinished {
                    at,
                    index,
                    id,
                    note: None,
                },
                other => panic!("{other}"),
            });
        }
        RunRecord {
            path: "r1.jsonl".into(),
            records,
        }
    }

    #[test]
    fn activity_is_the_last_step_started_without_a_finish() {
        assert_eq!(Activity::of(&run(&[])), Activity::Between);
        assert_eq!(
            Activity::of(&run(&["started a"])),
            Activity::Step("a".into())
        );
        assert_eq!(
            Activity::of(&run(&["started a", "finished a"])),
            Activity::Between
        );
        assert_eq!(
            Activity::of(&run(&["started a", "finished a", "started b"])),
            Activity::Step("b".into())
        );
        assert_eq!(
            Activity::of(&run(&["started a", "finished a", "undo a"])),
            Activity::Undoing("a".into())
        );
        assert_eq!(
            Activity::of(&run(&["started a", "finished a", "undo a", "undone a"])),
            Activity::Between
        );
    }

    #[test]
    fn another_hosts_run_lives_while_its_lease_does() {
        let now = Utc::now();
        let mut holder = LockInfo {
            run_id: "r1".into(),
            command: "deploy".into(),
            host: "not-this-host.invalid".into(),
            pid: 1,
            pid_started: Some(1),
            user: "u".into(),
            acquired_at: now,
            expires_at: now + chrono::Duration::seconds(30),
        };
        assert_eq!(evidence(&holder, false, now), Some(Evidence::Lease));
        assert_eq!(evidence(&holder, true, now), Some(Evidence::SharedLease));
        holder.expires_at = now - chrono::Duration::seconds(1);
        assert_eq!(evidence(&holder, false, now), None);
    }

    #[test]
    fn only_a_holder_naming_the_run_makes_it_running() {
        let now = Utc::now();
        let holder = |run_id: &str| LockInfo {
            run_id: run_id.into(),
            command: "deploy".into(),
            host: "not-this-host.invalid".into(),
            pid: 1,
            pid_started: None,
            user: "u".into(),
            acquired_at: now,
            expires_at: now + chrono::Duration::seconds(30),
        };
        let r = run(&["started a"]);
        let other = Holders {
            file: Some(holder("r2")),
            lease: None,
        };
        assert!(Liveness::of(&r, &other).running().is_none());
        let mine = Holders {
            file: Some(holder("r1")),
            lease: None,
        };
        let live = Liveness::of(&r, &mine);
        let running = live.running().expect("running");
        assert_eq!(running.short(), "running (step a)");
        assert!(
            running
                .describe()
                .starts_with("run r1 at step `a` (pid 1 on not-this-host.invalid, since "),
            "{}",
            running.describe()
        );
    }
}
