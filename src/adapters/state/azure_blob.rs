//! The deploy lock and the journal in an Azure Blob Storage container, for teams whose
//! runners are many machines (`lock: { kind: azure-blob, ... }`).
//!
//! The lock is a lease on the blob `cutover/<project>/<environment>/lock`, held for the
//! whole run and renewed by a heartbeat every third of the lease. The blob's content names
//! the holder (run, command, user, host, pid), so a refused runner can say who holds it.
//! A runner that dies stops renewing and the lease expires; a lease that cannot be renewed
//! (broken by an operator, expired while the runner was cut off) cancels the run, which
//! then rolls back as if interrupted.
//!
//! The journal stays a local file per run, and every record is also appended, before the
//! side effect it announces, to the append blob `cutover/<project>/<environment>/journal/
//! <run_id>.jsonl`. Before a command reads the journal (deploy, recover, history) the
//! container's runs are copied into the local journal folder, so another runner's
//! unfinished run blocks a deploy here and `recover` here finishes it.

use std::sync::Arc;
use std::time::Duration;

use azure_core::http::RequestContent;
use azure_storage_blob::BlobClient;
use azure_storage_blob::models::{
    AppendBlobClientCreateOptions, BlobClientAcquireLeaseOptions, BlobClientBreakLeaseOptions,
    BlobClientGetPropertiesResultHeaders, BlobClientUploadOptions,
    BlobContainerClientListBlobsOptions, LeaseState, StorageErrorCode,
};
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use super::{LockInfo, StateError, hostname, process_started, username};
use crate::adapters::azure_storage::{Container, error_code, is_code};

/// Where one environment's lock and journal live in blob storage.
/// Told why the lease was lost, just before the run is cancelled.
pub(crate) type Lost = Arc<dyn Fn(String) + Send + Sync>;

pub struct SharedState {
    container: Container,
    prefix: String,
    lease: Duration,
}

impl SharedState {
    pub fn new(container: Container, project: &str, environment: &str, lease: Duration) -> Self {
        Self {
            container,
            prefix: format!("cutover/{project}/{environment}/"),
            lease,
        }
    }

    pub fn describe(&self) -> String {
        self.container.describe()
    }

    fn lock_blob(&self) -> BlobClient {
        self.container
            .client
            .blob_client(&format!("{}lock", self.prefix))
    }

    fn journal_prefix(&self) -> String {
        format!("{}journal/", self.prefix)
    }

    fn fail(&self, what: &str, e: &azure_core::Error) -> StateError {
        StateError::Storage(self.container.error(what, e))
    }

    /// The holder named in the lock blob.
    async fn holder(&self) -> Option<LockInfo> {
        let body = self.lock_blob().download(None).await.ok()?;
        let bytes = body.body.collect().await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Refuses (exit 4, naming the holder) while another runner holds the lease.
    pub async fn ensure_free(&self) -> Result<(), StateError> {
        let props = match self.lock_blob().get_properties(None).await {
            Ok(p) => p,
            Err(e)
                if is_code(&e, &StorageErrorCode::BlobNotFound)
                    || is_code(&e, &StorageErrorCode::ContainerNotFound)
                    || e.http_status().is_some_and(|s| u16::from(s) == 404) =>
            {
                return Ok(());
            }
            Err(e) => return Err(self.fail("cannot read the deploy lock", &e)),
        };
        if matches!(props.lease_state(), Ok(Some(LeaseState::Leased))) {
            return Err(self.held().await);
        }
        Ok(())
    }

    /// The holder named in the lock blob, while its lease is held.
    pub async fn current_holder(&self) -> Result<Option<LockInfo>, StateError> {
        match self.ensure_free().await {
            Ok(()) => Ok(None),
            Err(StateError::Held(info)) => Ok(Some(*info)),
            Err(StateError::HeldInDatabase(_)) => Ok(Some(LockInfo {
                run_id: "unknown (not recorded yet)".into(),
                command: "unknown".into(),
                host: "unknown".into(),
                pid: 0,
                pid_started: None,
                user: "unknown".into(),
                acquired_at: chrono::Utc::now(),
                expires_at: chrono::Utc::now(),
            })),
            Err(e) => Err(e),
        }
    }

    async fn held(&self) -> StateError {
        match self.holder().await {
            Some(info) => StateError::Held(Box::new(info)),
            None => StateError::HeldInDatabase(format!(
                "another run holds the deploy lock in {} (its holder is not recorded yet)",
                self.describe()
            )),
        }
    }

    /// Takes the lease for the run, or says who holds it.
    pub async fn acquire(
        &self,
        run_id: &str,
        command: &str,
        cancel: CancellationToken,
        lost: Lost,
    ) -> Result<SharedLock, StateError> {
        let blob = self.lock_blob();
        // The blob must exist to be leased; an existing one (maybe leased) is fine.
        match blob
            .upload(
                RequestContent::from(b"{}".to_vec()),
                Some(BlobClientUploadOptions::default().if_not_exists()),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_code(&e, &StorageErrorCode::ContainerNotFound) => {
                match self.container.client.create(None).await {
                    Ok(_) => {}
                    Err(e) if is_code(&e, &StorageErrorCode::ContainerAlreadyExists) => {}
                    Err(e) => return Err(self.fail("cannot create the container", &e)),
                }
                return Box::pin(self.acquire(run_id, command, cancel, lost)).await;
            }
            Err(e)
                if matches!(
                    error_code(&e).as_deref(),
                    Some("BlobAlreadyExists" | "LeaseIdMissing" | "ConditionNotMet")
                ) => {}
            Err(e) => return Err(self.fail("cannot create the deploy lock", &e)),
        }
        let lease_id = uuid::Uuid::new_v4().to_string();
        let seconds = self.lease.as_secs() as i32;
        match blob
            .acquire_lease(
                seconds,
                Some(BlobClientAcquireLeaseOptions {
                    proposed_lease_id: Some(lease_id.clone()),
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_code(&e, &StorageErrorCode::LeaseAlreadyPresent) => {
                return Err(self.held().await);
            }
            Err(e) => return Err(self.fail("cannot take the deploy lock", &e)),
        }
        let now = chrono::Utc::now();
        let info = LockInfo {
            run_id: run_id.to_owned(),
            command: command.to_owned(),
            host: hostname(),
            pid: std::process::id(),
            pid_started: process_started(std::process::id()),
            user: username(),
            acquired_at: now,
            expires_at: now
                + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(60)),
        };
        let body = serde_json::to_vec_pretty(&info).expect("lock serializes");
        let blob = Arc::new(blob);
        let written = blob
            .upload(
                RequestContent::from(body),
                Some(BlobClientUploadOptions {
                    lease_id: Some(lease_id.clone()),
                    ..Default::default()
                }),
            )
            .await;
        if let Err(e) = written {
            blob.release_lease(lease_id.clone(), None).await.ok();
            return Err(self.fail("cannot record the deploy lock's holder", &e));
        }
        let heartbeat = tokio::spawn(heartbeat(
            blob.clone(),
            lease_id.clone(),
            self.lease,
            self.describe(),
            cancel,
            lost,
        ));
        Ok(SharedLock {
            blob,
            lease_id,
            heartbeat: Some(heartbeat),
        })
    }

    /// Breaks the lease whoever holds it (`cutover lock release --force`).
    pub async fn break_lock(&self) -> Result<Option<LockInfo>, StateError> {
        let holder = self.holder().await;
        match self
            .lock_blob()
            .break_lease(Some(BlobClientBreakLeaseOptions {
                break_period: Some(0),
                ..Default::default()
            }))
            .await
        {
            Ok(_) => Ok(holder),
            Err(e)
                if is_code(&e, &StorageErrorCode::LeaseNotPresentWithLeaseOperation)
                    || is_code(&e, &StorageErrorCode::BlobNotFound)
                    || is_code(&e, &StorageErrorCode::ContainerNotFound) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.fail("cannot break the deploy lock", &e)),
        }
    }

    /// Copies the environment's journals from the container into `dir`, where a local copy
    /// is missing or shorter.
    pub async fn pull_journals(&self, dir: &std::path::Path) -> Result<(), StateError> {
        let prefix = self.journal_prefix();
        let mut pager = self
            .container
            .client
            .list_blobs(Some(BlobContainerClientListBlobsOptions {
                prefix: Some(prefix.clone()),
                ..Default::default()
            }))
            .map_err(|e| self.fail("cannot list the journal", &e))?;
        let mut names = Vec::new();
        loop {
            match pager.try_next().await {
                Ok(Some(item)) => names.extend(item.name),
                Ok(None) => break,
                Err(e) if is_code(&e, &StorageErrorCode::ContainerNotFound) => return Ok(()),
                Err(e) => return Err(self.fail("cannot list the journal", &e)),
            }
        }
        for name in names {
            let Some(file) = name
                .strip_prefix(&prefix)
                .filter(|f| !f.contains('/') && f.ends_with(".jsonl"))
            else {
                continue;
            };
            let bytes = self
                .container
                .client
                .blob_client(&name)
                .download(None)
                .await
                .map_err(|e| self.fail(&format!("cannot read journal `{name}`"), &e))?
                .body
                .collect()
                .await
                .map_err(|e| self.fail(&format!("cannot read journal `{name}`"), &e))?;
            let path = dir.join(file);
            let local = std::fs::metadata(&path).map_or(0, |m| m.len());
            if (bytes.len() as u64) > local {
                let io = |source| StateError::Write {
                    path: path.clone(),
                    source,
                };
                std::fs::create_dir_all(dir).map_err(io)?;
                let tmp = path.with_extension("pulled");
                std::fs::write(&tmp, &bytes).map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
            }
        }
        Ok(())
    }

    /// The append blob that mirrors run `run_id`'s journal.
    pub async fn journal(&self, run_id: &str) -> Result<RemoteJournal, StateError> {
        let blob = self
            .container
            .client
            .blob_client(&format!("{}{run_id}.jsonl", self.journal_prefix()));
        let append = blob.append_blob_client();
        match append
            .create(Some(
                AppendBlobClientCreateOptions::default().if_not_exists(),
            ))
            .await
        {
            Ok(_) => {}
            Err(e) if is_code(&e, &StorageErrorCode::BlobAlreadyExists) => {}
            Err(e) if e.http_status().is_some_and(|s| u16::from(s) == 409) => {}
            Err(e) => {
                return Err(self.fail(&format!("cannot create the journal of run {run_id}"), &e));
            }
        }
        Ok(RemoteJournal {
            blob: append,
            what: format!(
                "journal blob `{}{run_id}.jsonl` in {}",
                self.journal_prefix(),
                self.describe()
            ),
        })
    }
}

/// The blob copy of one run's journal.
pub struct RemoteJournal {
    blob: azure_storage_blob::AppendBlobClient,
    what: String,
}

impl RemoteJournal {
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Appends one line (a journal record and its newline).
    pub async fn append(&self, line: Vec<u8>) -> Result<(), String> {
        let len = line.len() as u64;
        self.blob
            .append_block(RequestContent::from(line), len, None)
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "cannot append to {}: {}",
                    self.what,
                    crate::adapters::azure_storage::describe(&e)
                )
            })
    }
}

/// A held lease; released on drop, on every path.
pub struct SharedLock {
    blob: Arc<BlobClient>,
    lease_id: String,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl SharedLock {
    pub async fn release(mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        self.blob
            .release_lease(self.lease_id.clone(), None)
            .await
            .ok();
    }
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
            let blob = self.blob.clone();
            let lease_id = self.lease_id.clone();
            crate::adapters::database::finish_on_drop(async move {
                blob.release_lease(lease_id, None).await.ok();
            });
        }
    }
}

/// Renews the lease every third of its length. A renewal the service refuses, or no
/// successful renewal for two thirds of the lease (it may lapse before the next try),
/// means the lock is lost: the run is cancelled and rolls back.
async fn heartbeat(
    blob: Arc<BlobClient>,
    lease_id: String,
    lease: Duration,
    what: String,
    cancel: CancellationToken,
    lost: Lost,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let why = match blob.renew_lease(lease_id.clone(), None).await {
            Ok(_) => {
                last_ok = tokio::time::Instant::now();
                None
            }
            Err(e)
                if e.http_status()
                    .is_some_and(|s| matches!(u16::from(s), 409 | 412)) =>
            {
                Some(crate::adapters::azure_storage::describe(&e))
            }
            Err(e) if last_ok.elapsed() >= lease * 2 / 3 => Some(format!(
                "no renewal for {}s: {}",
                last_ok.elapsed().as_secs(),
                crate::adapters::azure_storage::describe(&e)
            )),
            Err(e) => {
                tracing::warn!(
                    "cannot renew the deploy lock: {}",
                    crate::adapters::azure_storage::describe(&e)
                );
                None
            }
        };
        if let Some(why) = why {
            lost(format!(
                "lost the deploy lock in {what} ({why}): another runner may take it, so this run stops here and rolls back"
            ));
            cancel.cancel();
            return;
        }
    }
}
