//! A local folder of backups: `<id>.dump` plus `<id>.manifest.json`, written last.
//!
//! While a backup is written it is `<id>.dump.partial`; only a complete, synced dump is
//! renamed into place, and only then is the manifest written (atomically, by rename).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{BackupStore, Compression, Manifest, StoreError, Upload, validate_id};
use crate::config::deploy_file::Keep;

pub(crate) struct LocalStore {
    dir: PathBuf,
    keep: Option<Keep>,
    compression: Compression,
}

impl LocalStore {
    pub(crate) fn new(dir: PathBuf, keep: Option<Keep>, compression: Compression) -> Self {
        Self {
            dir,
            keep,
            compression,
        }
    }

    fn dump_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.dump"))
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.manifest.json"))
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { what, source }
}

#[async_trait]
impl BackupStore for LocalStore {
    fn describe(&self) -> String {
        format!("local folder {}", self.dir.display())
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let what = || format!("backup folder {} is not writable", self.dir.display());
        // The folder is created by the first backup, not by a check: probe the nearest
        // folder that exists (a probe file proves writes work, then goes).
        let mut existing = self.dir.as_path();
        while !existing.exists() {
            existing = existing
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
        }
        if !existing.is_dir() {
            return Err(StoreError::Io {
                what: what(),
                source: std::io::Error::other(format!("{} is not a folder", existing.display())),
            });
        }
        let probe = existing.join(format!(".cutover-probe-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&probe, b"probe")
            .await
            .map_err(io(what()))?;
        tokio::fs::remove_file(&probe).await.map_err(io(what()))?;
        Ok(())
    }

    async fn create(&self, id: &str) -> Result<Box<dyn Upload>, StoreError> {
        validate_id(id)?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(io(format!("cannot create {}", self.dir.display())))?;
        let final_path = self.dump_path(id);
        if final_path.exists() || self.manifest_path(id).exists() {
            return Err(StoreError::Exists { id: id.to_owned() });
        }
        let partial = self.dir.join(format!("{id}.dump.partial"));
        let file = tokio::fs::File::create(&partial)
            .await
            .map_err(io(format!("cannot create {}", partial.display())))?;
        Ok(Box::new(LocalUpload {
            file,
            partial,
            final_path,
            manifest_path: self.manifest_path(id),
        }))
    }

    async fn list(&self) -> Result<Vec<Manifest>, StoreError> {
        let mut manifests = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(manifests),
            Err(e) => return Err(io(format!("cannot list {}", self.dir.display()))(e)),
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io(format!("cannot list {}", self.dir.display())))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".manifest.json") {
                manifests.push(self.manifest(id).await?);
            }
        }
        manifests.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(manifests)
    }

    async fn manifest(&self, id: &str) -> Result<Manifest, StoreError> {
        validate_id(id)?;
        let path = self.manifest_path(id);
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(id.to_owned()));
            }
            Err(e) => return Err(io(format!("cannot read {}", path.display()))(e)),
        };
        serde_json::from_str(&text).map_err(|e| {
            StoreError::Invalid(format!("manifest {} is damaged: {e}", path.display()))
        })
    }

    async fn open(&self, id: &str) -> Result<Box<dyn AsyncRead + Unpin + Send>, StoreError> {
        self.manifest(id).await?;
        let path = self.dump_path(id);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(io(format!("cannot open {}", path.display())))?;
        Ok(Box::new(tokio::io::BufReader::with_capacity(1 << 16, file)))
    }

    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        validate_id(id)?;
        // Manifest first: a half-deleted backup must not look usable.
        let manifest = self.manifest_path(id);
        tokio::fs::remove_file(&manifest)
            .await
            .map_err(io(format!("cannot delete {}", manifest.display())))?;
        tokio::fs::remove_file(self.dump_path(id)).await.ok();
        Ok(())
    }

    fn keep(&self) -> Option<&Keep> {
        self.keep.as_ref()
    }

    fn compression(&self) -> Compression {
        self.compression
    }
}

struct LocalUpload {
    file: tokio::fs::File,
    partial: PathBuf,
    final_path: PathBuf,
    manifest_path: PathBuf,
}

#[async_trait]
impl Upload for LocalUpload {
    async fn commit(mut self: Box<Self>, manifest: &Manifest) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .flush()
            .await
            .map_err(io(format!("cannot write {}", self.partial.display())))?;
        self.file
            .sync_all()
            .await
            .map_err(io(format!("cannot sync {}", self.partial.display())))?;
        tokio::fs::rename(&self.partial, &self.final_path)
            .await
            .map_err(io(format!("cannot finish {}", self.final_path.display())))?;
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
        write_atomic(&self.manifest_path, &json).await
    }

    async fn abort(self: Box<Self>) {
        drop(self.file);
        tokio::fs::remove_file(&self.partial).await.ok();
    }
}

/// Writes a file so that readers see either nothing or all of it.
pub(crate) async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use tokio::io::AsyncWriteExt;
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(io(format!("cannot create {}", tmp.display())))?;
    file.write_all(bytes)
        .await
        .map_err(io(format!("cannot write {}", tmp.display())))?;
    file.sync_all()
        .await
        .map_err(io(format!("cannot sync {}", tmp.display())))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(io(format!("cannot write {}", path.display())))
}

impl AsyncWrite for LocalUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}
