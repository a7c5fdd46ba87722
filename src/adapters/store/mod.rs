//! The backup store family: where dumps go, each with a manifest written last.
//!
//! A backup exists only once its manifest does. An upload that fails or is interrupted
//! leaves at most a partial object that `list` never shows.

pub(crate) mod azure_blob;
pub(crate) mod checked;
pub(crate) mod compression;
pub(crate) mod local;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::adapters::azure_storage;
use crate::adapters::build::BuildError;
use crate::adapters::build::Resolve;
use crate::config::deploy_file::{AzureBlobConfig, Keep, StoreConfig, Text};
pub(crate) use compression::Compression;

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
    /// A storage service refused or failed a request; the message says what and where.
    #[error("{0}")]
    Service(String),
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

/// Supplies the Azure credential for stores that authenticate with Entra ID.
pub(crate) type AzureCredential<'a> =
    &'a dyn Fn() -> Result<Arc<dyn azure_core::credentials::TokenCredential>, BuildError>;

/// Builds the store with its backups under `within` (a fleet target's name), so targets
/// sharing one configured store never share a backup id.
pub(crate) fn build_within(
    config: Option<&StoreConfig>,
    resolver: &dyn Resolve,
    base_dir: &Path,
    default_dir: &Path,
    within: Option<&str>,
    azure_credential: AzureCredential<'_>,
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
            let mut dir = base_dir.join(resolver.text(path)?);
            if let Some(within) = within {
                dir = dir.join("targets").join(within);
            }
            Ok(Box::new(local::LocalStore::new(
                dir,
                keep.clone(),
                compression.unwrap_or_default(),
            )))
        }
        Some(StoreConfig::AzureBlob(blob)) => {
            let container = azure_container(resolver, blob, azure_credential)?;
            let store = azure_blob::AzureBlobStore::new(
                container,
                blob.keep.clone(),
                blob.compression.unwrap_or_default(),
            );
            Ok(Box::new(match within {
                Some(target) => store.within(target),
                None => store,
            }))
        }
    }
}

/// Connects to the container an `azure-blob` section names, with the auth it gives.
pub(crate) fn azure_container(
    resolver: &dyn Resolve,
    config: &AzureBlobConfig,
    azure_credential: AzureCredential<'_>,
) -> Result<azure_storage::Container, BuildError> {
    azure_container_of(
        resolver,
        &config.account,
        &config.container,
        config.key.as_ref(),
        config.sas.as_ref(),
        azure_credential,
    )
}

/// Connects to a container given its account, name and (at most one of) key and SAS;
/// with neither, an Entra ID token.
pub(crate) fn azure_container_of(
    resolver: &dyn Resolve,
    account: &Text,
    container: &Text,
    key: Option<&Text>,
    sas: Option<&Text>,
    azure_credential: AzureCredential<'_>,
) -> Result<azure_storage::Container, BuildError> {
    let name = resolver.text(account)?;
    let account = azure_storage::Account::parse(&name).map_err(BuildError::Invalid)?;
    let auth = match (key, sas) {
        (Some(_), Some(_)) => {
            return Err(BuildError::Invalid(
                "`azure-blob`: give either `key:` or `sas:`, not both".into(),
            ));
        }
        (Some(key), None) => azure_storage::Auth::Key(resolver.credential(key)?),
        (None, Some(sas)) => {
            let sas = resolver.credential(sas)?;
            // The signature may show up percent-decoded in an error: mask that form too.
            if let Some(sig) =
                url::form_urlencoded::parse(sas.expose().trim_start_matches('?').as_bytes())
                    .find(|(k, _)| k == "sig")
                    .map(|(_, v)| v.into_owned())
            {
                resolver.redactor().register(&sig);
            }
            azure_storage::Auth::Sas(sas)
        }
        (None, None) => azure_storage::Auth::Token(azure_credential()?),
    };
    let container = resolver.text(container)?;
    azure_storage::Container::connect(account, &container, auth).map_err(BuildError::Invalid)
}

/// Backup ids name files and blobs: keep them to a safe alphabet.
pub(crate) fn validate_id(id: &str) -> Result<(), StoreError> {
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
