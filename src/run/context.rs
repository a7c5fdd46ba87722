//! What a run works with: the environment's adapters, its migrations and where to report.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::event::{Event, Reporter};
use crate::adapters::database::Database;
use crate::adapters::platform::Platform;
use crate::adapters::store::BackupStore;
use crate::fact::Fact;
use crate::migrate::MigrationSet;
use crate::secret::Redactor;

/// The environment's health endpoint, resolved.
#[derive(Debug, Clone)]
pub struct HealthTarget {
    pub url: String,
    pub expect: u16,
    pub body: Option<String>,
    pub timeout: std::time::Duration,
    /// How long good answers must last, from the first of a streak to the last, before the
    /// `health` step passes.
    pub healthy_for: std::time::Duration,
    /// How many good answers in a row the `health` step needs.
    pub successes: u32,
}

pub struct Context {
    pub project: String,
    pub environment: String,
    /// Folder relative paths in the config resolve against.
    pub base_dir: PathBuf,
    pub state_dir: PathBuf,
    pub database: Box<dyn Database>,
    pub store: Arc<dyn BackupStore>,
    pub platform: Box<dyn Platform>,
    /// The environment's health endpoint; `Err` holds why its URL could not be resolved (an
    /// unset variable, say), which only a step that polls it reports.
    pub health: Option<Result<HealthTarget, String>>,
    pub migrations: MigrationSet,
    pub lock_lease: std::time::Duration,
    /// The lock and journal in blob storage (`lock: { kind: azure-blob, ... }`), shared by
    /// every runner of the environment.
    pub shared: Option<std::sync::Arc<crate::adapters::state::azure_blob::SharedState>>,
    pub reporter: Arc<dyn Reporter>,
    pub redactor: Redactor,
    pub cancel: CancellationToken,
    /// Set when the command goes on outside the environment's window: every run it starts
    /// or takes up again records it in its journal.
    pub outside_window: Option<super::window::OutsideWindow>,
    /// Built on first use by [`Context::http`]: loading the TLS roots costs tens of
    /// milliseconds that a run without a health check should not pay.
    pub http: std::sync::OnceLock<reqwest::Client>,
    /// Whether a migration numbered below the applied head may be applied
    /// (`out_of_order: true`).
    pub out_of_order: bool,
    /// What drift from the recorded schema does (`drift:`).
    pub drift: crate::config::deploy_file::DriftPolicy,
    /// Tables bigger than this (bytes) get no content digest in the run's fingerprint.
    pub fingerprint_budget: u64,
    /// Facts steps established, reported at once and journaled by the engine when the
    /// step ends.
    pub facts: std::sync::Mutex<Vec<(String, Fact)>>,
    /// Where the rehearsal on a copy stands for this run's plan; `rollback: auto` uses the
    /// down files only where it proved them lossless.
    pub rehearsal: crate::rehearsal_record::Standing,
    /// How a person confirmed this run (`typed CONFIRM`, `--confirm production`, an
    /// approved plan), when the environment asked; journaled with the run.
    pub confirmed: Option<String>,
    /// Who approved the `pause` step a halted run waits at (`resume --approve --by`).
    pub approved: Option<String>,
    /// `--code-version`: what `release` and `traffic` steps put live where they name no
    /// version.
    pub code_version: Option<String>,
    /// The backup a `backup` step with `snapshot: true` streams from its snapshot while
    /// the next steps run.
    pub background: tokio::sync::Mutex<Option<Background>>,
}

/// A backup on its way to the store from a snapshot, beside the steps that follow.
pub struct Background {
    /// The `backup` step that started it.
    pub step: String,
    pub backup: String,
    pub task: tokio::task::JoinHandle<Result<crate::adapters::store::Manifest, String>>,
}

impl Context {
    /// The environment's health endpoint, if it has one; an error when its URL names a
    /// reference that could not be resolved.
    pub fn health(&self) -> Result<Option<&HealthTarget>, String> {
        self.health
            .as_ref()
            .map(|h| h.as_ref().map_err(Clone::clone))
            .transpose()
    }
    pub fn report(&self, event: Event) {
        self.reporter.event(&event);
    }

    /// The HTTP client for health checks, built on first use.
    pub fn http(&self) -> Result<&reqwest::Client, String> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        Ok(self.http.get_or_init(|| client))
    }

    /// Reports a fact a step established and keeps it for the journal.
    pub fn fact(&self, id: &str, fact: Fact) {
        self.report(Event::Fact {
            id: Some(id.to_owned()),
            fact: fact.clone(),
        });
        self.facts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((id.to_owned(), fact));
    }

    /// The facts reported since the last call, oldest first.
    pub fn take_facts(&self) -> Vec<(String, Fact)> {
        std::mem::take(
            &mut *self
                .facts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Waits for the backup streaming from a snapshot, if one is: `Some((step, result))`.
    pub async fn finish_background(
        &self,
    ) -> Option<(String, Result<crate::adapters::store::Manifest, String>)> {
        let background = self.background.lock().await.take()?;
        let result = match background.task.await {
            Ok(r) => r,
            Err(e) => Err(format!("the backup task ended: {e}")),
        };
        Some((
            background.step,
            result.map_err(|e| {
                format!(
                    "backup {} (streamed from the snapshot) failed: {e}",
                    background.backup
                )
            }),
        ))
    }

    /// Stops the backup streaming from a snapshot, if one is still running (a rollback
    /// swaps the snapshot in, which needs no session on it); waits until its dump
    /// process is gone. A backup already complete is kept.
    pub async fn stop_background(&self) {
        if let Some(background) = self.background.lock().await.take() {
            background.task.abort();
            let _ = background.task.await;
        }
    }

    pub fn note(&self, id: &str, message: impl Into<String>) {
        self.report(Event::StepNote {
            id: id.to_owned(),
            message: message.into(),
        });
    }
}
