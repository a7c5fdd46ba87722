//! Reading a backup and checking it in the same pass: the stored bytes are counted and
//! hashed on their way to the restore, and the end of the stream is only reported once
//! their size and sha256 match the manifest. A restore that changes nothing until its
//! source ends cleanly then needs no checksum pass of its own before it starts.

use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

/// A stored backup whose bytes are checked against `size` and `sha256` as they are read.
pub(crate) struct Checked {
    inner: Box<dyn AsyncRead + Unpin + Send>,
    id: String,
    size: u64,
    sha256: String,
    read: u64,
    hasher: Sha256,
    /// The end was read and matched: reading past it ends cleanly again.
    ended: bool,
}

impl Checked {
    pub(crate) fn new(
        inner: Box<dyn AsyncRead + Unpin + Send>,
        id: &str,
        size: u64,
        sha256: &str,
    ) -> Self {
        Self {
            inner,
            id: id.to_owned(),
            size,
            sha256: sha256.to_owned(),
            read: 0,
            hasher: Sha256::new(),
            ended: false,
        }
    }
}

/// The error a [`Checked`] stream ends with when its bytes do not match the manifest.
#[derive(Debug, thiserror::Error)]
#[error(
    "backup {id} is damaged: manifest says {size} bytes sha256 {sha256}, store holds {read} bytes sha256 {held}"
)]
struct Damaged {
    id: String,
    size: u64,
    sha256: String,
    read: u64,
    held: String,
}

/// What is wrong with the backup, when `error` is a [`Checked`] stream's mismatch
/// (and not a failure to read it).
pub(crate) fn damage(error: &std::io::Error) -> Option<String> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Damaged>())
        .map(ToString::to_string)
}

impl AsyncRead for Checked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() {
            self.hasher.update(fresh);
            self.read += fresh.len() as u64;
            return Poll::Ready(Ok(()));
        }
        if self.ended {
            return Poll::Ready(Ok(()));
        }
        // The end: only a stream that matches its manifest ends cleanly.
        let held = hex::encode(self.hasher.clone().finalize());
        if self.read != self.size || held != self.sha256 {
            let damaged = Damaged {
                id: self.id.clone(),
                size: self.size,
                sha256: self.sha256.clone(),
                read: self.read,
                held,
            };
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                damaged,
            )));
        }
        self.ended = true;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn checked(stored: &[u8], size: u64, sha256: &str) -> Checked {
        Checked::new(
            Box::new(std::io::Cursor::new(stored.to_vec())),
            "b1",
            size,
            sha256,
        )
    }

    #[tokio::test]
    async fn a_stream_that_matches_its_manifest_ends_cleanly() {
        let data = vec![42u8; 300_000];
        let sha = hex::encode(Sha256::digest(&data));
        let mut out = Vec::new();
        let mut reader = checked(&data, data.len() as u64, &sha);
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        // Read again at the end, it still ends cleanly.
        assert_eq!(reader.read(&mut [0u8; 16]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_changed_byte_a_short_or_a_long_stream_is_an_error_at_the_end() {
        let data = vec![42u8; 300_000];
        let sha = hex::encode(Sha256::digest(&data));
        let mut flipped = data.clone();
        flipped[150_000] ^= 1;
        let short = &data[..data.len() - 1];
        let mut long = data.clone();
        long.push(0);
        for bad in [&flipped[..], short, &long[..]] {
            let mut out = Vec::new();
            let err = checked(bad, data.len() as u64, &sha)
                .read_to_end(&mut out)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
            assert_eq!(damage(&err), Some(err.to_string()));
            assert!(
                err.to_string()
                    .starts_with("backup b1 is damaged: manifest says 300000 bytes"),
                "{err}"
            );
        }
    }
}
