//! Backups in an Azure Blob Storage container: `<id>.dump` (a block blob) plus
//! `<id>.manifest.json`, written last.
//!
//! The dump streams in as blocks of 8 MiB, staged up to 4 at a time while the dump tool is
//! still writing, so memory stays near 6 blocks whatever the size. The block list is
//! committed only by [`Upload::commit`], which the backup step calls once the dump tool
//! exited 0 and the sha256 is known; then the manifest is written. A failed or killed
//! upload leaves only uncommitted blocks, which the service discards (after a week) and
//! no listing shows. Restores stream back with ranged reads, 4 at a time.

use std::num::NonZero;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use azure_core::http::RequestContent;
use azure_storage_blob::BlobClient;
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientUploadOptions, BlobContainerClientListBlobsOptions,
    BlockBlobClientCommitBlockListOptions, BlockLookupList, StorageErrorCode,
};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;

use super::{BackupStore, Compression, Manifest, StoreError, Upload, validate_id};
use crate::adapters::azure_storage::{Container, is_code};
use crate::config::deploy_file::Keep;

/// Size of a staged block; with [`IN_FLIGHT`] it bounds the memory an upload holds (4 MiB:
/// at most 50 000 blocks makes 195 GiB, far above any dump cutover streams).
const BLOCK_SIZE: usize = 4 << 20;
/// Blocks staged at once. Two keep the upload ahead of a dump on two cores; three cost
/// 4 MiB more for nothing measurable, and the backup's peak RSS must stay under 64 MB
/// (58 MiB with two, 62 with three: BENCHMARKS.md).
const IN_FLIGHT: usize = 2;

const DUMP_SUFFIX: &str = ".dump";
const MANIFEST_SUFFIX: &str = ".manifest.json";

pub(crate) struct AzureBlobStore {
    container: Container,
    keep: Option<Keep>,
    compression: Compression,
    /// Folder of this store's blobs in the container (`targets/<name>/` for a fleet
    /// target), empty for the environment's own backups.
    prefix: String,
}

impl AzureBlobStore {
    pub(crate) fn new(container: Container, keep: Option<Keep>, compression: Compression) -> Self {
        Self {
            container,
            keep,
            compression,
            prefix: String::new(),
        }
    }

    /// The store of one fleet target: its backups under `targets/<target>/`.
    #[must_use]
    pub(crate) fn within(mut self, target: &str) -> Self {
        self.prefix = format!("targets/{target}/");
        self
    }

    fn blob(&self, name: &str) -> BlobClient {
        self.container
            .client
            .blob_client(&format!("{}{name}", self.prefix))
    }

    fn fail(&self, what: &str, e: &azure_core::Error) -> StoreError {
        StoreError::Service(self.container.error(what, e))
    }

    async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        self.blob(name)
            .exists()
            .await
            .map_err(|e| self.fail(&format!("cannot look for blob `{name}`"), &e))
    }
}

#[async_trait]
impl BackupStore for AzureBlobStore {
    fn describe(&self) -> String {
        self.container.describe()
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        // A probe blob proves the credential may write and delete here. The container is
        // created when missing, as the local store's folder is by its first backup.
        let probe = self.blob(&format!(".cutover-probe-{}", uuid::Uuid::new_v4()));
        let body = || RequestContent::from(b"probe".to_vec());
        match probe.upload(body(), None).await {
            Ok(_) => {}
            Err(e) if is_code(&e, &StorageErrorCode::ContainerNotFound) => {
                match self.container.client.create(None).await {
                    Ok(_) => {}
                    Err(e) if is_code(&e, &StorageErrorCode::ContainerAlreadyExists) => {}
                    Err(e) => return Err(self.fail("cannot create the container", &e)),
                }
                probe
                    .upload(body(), None)
                    .await
                    .map_err(|e| self.fail("cannot write a probe blob", &e))?;
            }
            Err(e) => return Err(self.fail("cannot write a probe blob", &e)),
        }
        probe
            .delete(None)
            .await
            .map_err(|e| self.fail("cannot delete the probe blob", &e))?;
        Ok(())
    }

    async fn create(&self, id: &str) -> Result<Box<dyn Upload>, StoreError> {
        validate_id(id)?;
        let dump_name = format!("{id}{DUMP_SUFFIX}");
        let manifest_name = format!("{id}{MANIFEST_SUFFIX}");
        if self.exists(&manifest_name).await? || self.exists(&dump_name).await? {
            return Err(StoreError::Exists { id: id.to_owned() });
        }
        Ok(Box::new(BlobUpload::start(
            self.container.clone(),
            format!("{}{dump_name}", self.prefix),
            format!("{}{manifest_name}", self.prefix),
        )))
    }

    async fn list(&self) -> Result<Vec<Manifest>, StoreError> {
        let mut pager = self
            .container
            .client
            .list_blobs(Some(BlobContainerClientListBlobsOptions::default()))
            .map_err(|e| self.fail("cannot list backups", &e))?;
        let mut ids = Vec::new();
        loop {
            match pager.try_next().await {
                Ok(Some(item)) => {
                    if let Some(id) = item
                        .name
                        .as_deref()
                        .and_then(|n| n.strip_prefix(self.prefix.as_str()))
                        .and_then(|n| n.strip_suffix(MANIFEST_SUFFIX))
                        .filter(|id| validate_id(id).is_ok())
                    {
                        ids.push(id.to_owned());
                    }
                }
                Ok(None) => break,
                // No container yet: no backups yet.
                Err(e) if is_code(&e, &StorageErrorCode::ContainerNotFound) => break,
                Err(e) => return Err(self.fail("cannot list backups", &e)),
            }
        }
        let mut manifests = Vec::with_capacity(ids.len());
        for id in ids {
            manifests.push(self.manifest(&id).await?);
        }
        manifests.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(manifests)
    }

    async fn manifest(&self, id: &str) -> Result<Manifest, StoreError> {
        validate_id(id)?;
        let name = format!("{id}{MANIFEST_SUFFIX}");
        let body = match self.blob(&name).download(None).await {
            Ok(r) => r.body.collect().await,
            Err(e) => Err(e),
        };
        let bytes = match body {
            Ok(bytes) => bytes,
            Err(e)
                if is_code(&e, &StorageErrorCode::BlobNotFound)
                    || is_code(&e, &StorageErrorCode::ContainerNotFound) =>
            {
                return Err(StoreError::NotFound(id.to_owned()));
            }
            Err(e) => return Err(self.fail(&format!("cannot read blob `{name}`"), &e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Invalid(format!(
                "manifest `{name}` in {} is damaged: {e}",
                self.describe()
            ))
        })
    }

    async fn open(&self, id: &str) -> Result<Box<dyn AsyncRead + Unpin + Send>, StoreError> {
        self.manifest(id).await?;
        let name = format!("{id}{DUMP_SUFFIX}");
        let options = BlobClientDownloadOptions {
            parallel: NonZero::new(IN_FLIGHT),
            partition_size: NonZero::new(BLOCK_SIZE),
            ..Default::default()
        };
        let response = self
            .blob(&name)
            .download(Some(options))
            .await
            .map_err(|e| self.fail(&format!("cannot read blob `{name}`"), &e))?;
        let what = self.container.describe();
        let body = response.body.map_err(move |e| {
            std::io::Error::other(format!(
                "reading blob `{name}` in {what}: {}",
                crate::adapters::azure_storage::describe(&e)
            ))
        });
        Ok(Box::new(tokio_util::io::StreamReader::new(body)))
    }

    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        validate_id(id)?;
        // Manifest first: a half-deleted backup must not look usable.
        let manifest = format!("{id}{MANIFEST_SUFFIX}");
        match self.blob(&manifest).delete(None).await {
            Ok(_) => {}
            Err(e) if is_code(&e, &StorageErrorCode::BlobNotFound) => {
                return Err(StoreError::NotFound(id.to_owned()));
            }
            Err(e) => return Err(self.fail(&format!("cannot delete blob `{manifest}`"), &e)),
        }
        let dump = format!("{id}{DUMP_SUFFIX}");
        match self.blob(&dump).delete(None).await {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, &StorageErrorCode::BlobNotFound) => Ok(()),
            Err(e) => Err(self.fail(&format!("cannot delete blob `{dump}`"), &e)),
        }
    }

    fn keep(&self) -> Option<&Keep> {
        self.keep.as_ref()
    }

    fn compression(&self) -> Compression {
        self.compression
    }
}

/// A dump on its way into a block blob. Writes fill a block; full blocks go through a
/// one-slot channel to a task that stages up to [`IN_FLIGHT`] of them at once, so a slow
/// store slows the dump down rather than filling memory.
struct BlobUpload {
    container: Container,
    dump_name: String,
    manifest_name: String,
    block: BytesMut,
    sender: PollSender<Bytes>,
    stager: Option<JoinHandle<Result<Vec<Vec<u8>>, String>>>,
}

impl BlobUpload {
    fn start(container: Container, dump_name: String, manifest_name: String) -> Self {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        let blocks =
            std::sync::Arc::new(container.client.blob_client(&dump_name).block_blob_client());
        let stage_container = container.clone();
        let name = dump_name.clone();
        let stager = tokio::spawn(async move {
            futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|block| (block, rx))
            })
            .enumerate()
            .map(|(i, block)| {
                let blocks = blocks.clone();
                let container = stage_container.clone();
                let name = name.clone();
                async move {
                    // Fixed width: every block id of a blob must have the same length.
                    let id = format!("cutover-{i:010}").into_bytes();
                    let len = block.len() as u64;
                    blocks
                        .stage_block(&id, len, block.into(), None)
                        .await
                        .map_err(|e| {
                            container.error(&format!("cannot upload block {i} of `{name}`"), &e)
                        })?;
                    Ok(id)
                }
            })
            .buffered(IN_FLIGHT)
            .try_collect()
            .await
        });
        Self {
            container,
            dump_name,
            manifest_name,
            block: BytesMut::with_capacity(BLOCK_SIZE),
            sender: PollSender::new(tx),
            stager: Some(stager),
        }
    }

    /// Why staging stopped, once the stager has given up.
    fn poll_stager_error(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let Some(stager) = self.stager.as_mut() else {
            return Poll::Ready(std::io::Error::other("the upload was already finished"));
        };
        let result = ready!(Pin::new(stager).poll(cx));
        self.stager = None;
        Poll::Ready(std::io::Error::other(match result {
            Ok(Err(message)) => message,
            Ok(Ok(_)) => "the block upload stopped early".to_owned(),
            Err(e) => format!("the block upload task failed: {e}"),
        }))
    }

    /// Hands the current block to the stager.
    fn poll_send_block(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.block.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if ready!(self.sender.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(ready!(self.poll_stager_error(cx))));
        }
        let block = self.block.split().freeze();
        if self.sender.send_item(block).is_err() {
            return Poll::Ready(Err(ready!(self.poll_stager_error(cx))));
        }
        self.block.reserve(BLOCK_SIZE);
        Poll::Ready(Ok(()))
    }
}

use std::future::Future;

impl AsyncWrite for BlobUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.block.len() >= BLOCK_SIZE {
            ready!(this.poll_send_block(cx))?;
        }
        let n = buf.len().min(BLOCK_SIZE - this.block.len());
        this.block.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Nothing is durable before the block list is committed, so a flush has nothing
        // to wait for; the last partial block goes out with the commit.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Upload for BlobUpload {
    async fn commit(mut self: Box<Self>, manifest: &Manifest) -> Result<(), StoreError> {
        let failed =
            |what: String, message: String| StoreError::Service(format!("{what}: {message}"));
        std::future::poll_fn(|cx| self.poll_send_block(cx))
            .await
            .map_err(|e| failed(format!("cannot upload `{}`", self.dump_name), e.to_string()))?;
        self.sender.close();
        let Some(stager) = self.stager.take() else {
            return Err(failed(
                format!("cannot upload `{}`", self.dump_name),
                "the block upload had already failed".into(),
            ));
        };
        let ids = match stager.await {
            Ok(Ok(ids)) => ids,
            Ok(Err(message)) => return Err(StoreError::Service(message)),
            Err(e) => {
                return Err(failed(
                    format!("cannot upload `{}`", self.dump_name),
                    e.to_string(),
                ));
            }
        };
        let dump = self.container.client.blob_client(&self.dump_name);
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let list = RequestContent::try_from(list)
            .map_err(|e| StoreError::Service(format!("cannot encode the block list: {e}")))?;
        // A finished backup is never replaced.
        let options = BlockBlobClientCommitBlockListOptions {
            if_none_match: Some("*".into()),
            blob_content_type: Some("application/octet-stream".into()),
            ..Default::default()
        };
        dump.block_blob_client()
            .commit_block_list(list, Some(options))
            .await
            .map_err(|e| {
                StoreError::Service(
                    self.container
                        .error(&format!("cannot commit blob `{}`", self.dump_name), &e),
                )
            })?;
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
        self.container
            .client
            .blob_client(&self.manifest_name)
            .upload(
                RequestContent::from(json),
                Some(BlobClientUploadOptions::default().if_not_exists()),
            )
            .await
            .map_err(|e| {
                StoreError::Service(self.container.error(
                    &format!("cannot write manifest `{}`", self.manifest_name),
                    &e,
                ))
            })?;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        // Staged blocks that are never committed are discarded by the service.
        if let Some(stager) = self.stager.take() {
            stager.abort();
        }
    }
}

impl Drop for BlobUpload {
    fn drop(&mut self) {
        // Dropped half-way (Ctrl-C, a timeout): stop staging blocks nobody will commit.
        if let Some(stager) = self.stager.take() {
            stager.abort();
        }
    }
}
