//! The backup store family: where dumps go, each with a manifest written last.
//!
//! A backup exists only once its manifest does. An upload that fails or is interrupted
//! leaves at most a partial object that `list` never shows.

pub mod compression;
pub mod local;

use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::adapters::NotAvailable;
use crate::adapters::database::BuildError;
use crate::config::deploy_file::{Keep, StoreConfig};
use crate::config::reference::Resolver;
pub use compression::Compression;

/// What is known about a finished backup. Written as JSON beside the dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub project: String,
    pub environment: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub database_kind: String,
    pub format: String,
    /// Latest applied migration when the backup was taken.
    pub schema_version: Option<i64>,
    pub size: u64,
    pub sha256: String,
    /// How the stored bytes are compressed: `none` or `zstd:<level>`. Manifests written
    /// before cutover compressed have no such field: `none`.
    #[serde(default = "uncompressed")]
    pub compression: String,
    pub server_version: String,
    pub dump_tool: String,
    pub cutover_version: String,
}

fn uncompressed() -> String {
    "none".into()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("backup `{0}` not found")]
    NotFound(String),
    #[error("backup `{id}` already exists")]
    Exists { id: String },
    #[error("{0}")]
    Invalid(String),
}

/// A backup being written. Nothing is visible until [`Upload::commit`].
#[async_trait]
pub trait Upload: AsyncWrite + Unpin + Send {
    /// Makes the backup visible, writing its manifest last.
    async fn commit(self: Box<Self>, manifest: &Manifest) -> Result<(), StoreError>;
    /// Throws the partial upload away.
    async fn abort(self: Box<Self>);
}

#[async_trait]
pub trait BackupStore: Send + Sync {
    fn describe(&self) -> String;
    /// Proves a backup could be written now (creates and removes a probe).
    async fn check_writable(&self) -> Result<(), StoreError>;
    async fn create(&self, id: &str) -> Result<Box<dyn Upload>, StoreError>;
    /// Finished backups, newest first.
    async fn list(&self) -> Result<Vec<Manifest>, StoreError>;
    async fn manifest(&self, id: &str) -> Result<Manifest, StoreError>;
    async fn open(&self, id: &str) -> Result<Box<dyn AsyncRead + Unpin + Send>, StoreError>;
    async fn delete(&self, id: &str) -> Result<(), StoreError>;
    /// The configured retention.
    fn keep(&self) -> Option<&Keep>;
    /// How new backups are compressed (`compression:` in the store's config).
    fn compression(&self) -> Compression {
        Compression::default()
    }
}

pub fn build(
    config: Option<&StoreConfig>,
    resolver: &Resolver<'_>,
    base_dir: &Path,
    default_dir: &Path,
) -> Result<Box<dyn BackupStore>, BuildError> {
    match config {
        None => Ok(Box::new(local::LocalStore::new(
            default_dir.to_owned(),
            None,
            Compression::default(),
        ))),
        Some(StoreConfig::Local {
            path,
            keep,
            compression,
        }) => {
            let dir = base_dir.join(resolver.text(path)?);
            Ok(Box::new(local::LocalStore::new(
                dir,
                keep.clone(),
                compression.unwrap_or_default(),
            )))
        }
        Some(StoreConfig::AzureBlob { .. }) => Err(NotAvailable {
            family: "backup store",
            kind: "azure-blob",
            alternative: "`kind: local`",
        }
        .into()),
    }
}

/// Backup ids name files and blobs: keep them to a safe alphabet.
pub fn validate_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty()
        || id.len() > 200
        || id.starts_with('.')
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(StoreError::Invalid(format!(
            "invalid backup id `{id}`: use letters, digits, `-`, `_` and `.`"
        )));
    }
    Ok(())
}
