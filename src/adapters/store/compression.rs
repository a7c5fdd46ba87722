//! How a dump is compressed on its way into a store, for every store alike.
//!
//! The database's tool dumps uncompressed (`pg_dump -Z0`, a copied SQLite file); cutover
//! compresses with zstd off the async runtime — a thread that reads the dump and hashes
//! the stored bytes as they pass, and zstd's own workers — so compressing runs on whatever
//! core the dump tool leaves while it keeps streaming. Memory stays flat whatever the
//! size: two 1 MiB pipes and zstd's buffers.
//!
//! The choice is recorded in the manifest (`compression`), and restores read it from
//! there: a manifest without the field, written before compression existed, is `none`.

use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;
use tokio_util::io::SyncIoBridge;

/// Bytes buffered between the dump, the compressor and the store, each way.
const PIPE: usize = 1 << 20;

pub(crate) use crate::config::compression::Compression;

/// What went into the store: its size and sha256, as the manifest records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub size: u64,
    pub sha256: String,
}

/// Counts and hashes bytes on their way to `inner`.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Copies `reader` to `writer` in large pieces (the pipes wake the other side per read).
fn pump(reader: &mut impl Read, writer: &mut impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 18];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => writer.write_all(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The compressor thread, started by [`encode`]. Await [`Encoding::finish`] once the
/// dump has been written into its input and its output copied into the store.
pub(crate) struct Encoding(JoinHandle<std::io::Result<Stored>>);

/// Starts the compressor thread (inside the tokio runtime). Returns the pipe to write the
/// dump into (shut it down or drop it at the end of the dump), the pipe of bytes to store
/// (drop it if the store fails, so the thread stops too), and the thread.
pub(crate) fn encode(compression: Compression) -> (DuplexStream, DuplexStream, Encoding) {
    let (input, raw) = tokio::io::duplex(PIPE);
    let (stored, output) = tokio::io::duplex(PIPE);
    let task = tokio::task::spawn_blocking(move || {
        let mut reader = SyncIoBridge::new(raw);
        let mut out = Hashing {
            inner: std::io::BufWriter::with_capacity(1 << 18, SyncIoBridge::new(stored)),
            hasher: Sha256::new(),
            size: 0,
        };
        match compression {
            Compression::None => pump(&mut reader, &mut out)?,
            Compression::Zstd { level } => {
                let mut encoder = zstd::stream::write::Encoder::new(&mut out, level)?;
                encoder.include_checksum(true)?;
                // Two workers: zstd compresses on whatever core is free while this thread
                // reads and hashes.
                encoder.multithread(2)?;
                pump(&mut reader, &mut encoder)?;
                encoder.finish()?;
            }
        }
        out.flush()?;
        let Hashing {
            inner,
            hasher,
            size,
        } = out;
        let mut bridge = inner
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        bridge.shutdown()?;
        Ok(Stored {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    });
    (input, output, Encoding(task))
}

impl Encoding {
    /// Waits for the compressor thread: the size and sha256 of what it produced.
    pub(crate) async fn finish(self) -> std::io::Result<Stored> {
        self.0
            .await
            .map_err(|e| std::io::Error::other(format!("the compressor thread failed: {e}")))?
    }
}

/// A stored dump as the database reads it back: decompressed per the manifest's
/// `compression`, in a thread of its own. A read error or damaged data surfaces as a read
/// error at the end, never as a quietly shortened dump.
pub(crate) fn decode(
    stored: Box<dyn AsyncRead + Unpin + Send>,
    compression: &str,
) -> Result<Box<dyn AsyncRead + Unpin + Send>, String> {
    if compression == "none" || compression.is_empty() {
        return Ok(stored);
    }
    if !compression.starts_with("zstd") {
        return Err(format!(
            "the backup is compressed with `{compression}`, which this version cannot read"
        ));
    }
    let (mut plain, reader) = tokio::io::duplex(PIPE);
    let task = tokio::task::spawn_blocking(move || {
        let mut source = SyncIoBridge::new(stored);
        let mut decoder = zstd::stream::read::Decoder::new(&mut source)?;
        let mut sink = SyncIoBridge::new(&mut plain);
        pump(&mut decoder, &mut sink)?;
        sink.shutdown()?;
        Ok(())
    });
    Ok(Box::new(Decoded {
        reader,
        task: Some(task),
    }))
}

struct Decoded {
    reader: DuplexStream,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl AsyncRead for Decoded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.reader).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before => {
                // End of the pipe: only a clean end of the decompressor is the end.
                let Some(task) = self.task.as_mut() else {
                    return Poll::Ready(Ok(()));
                };
                let done = std::task::ready!(Pin::new(task).poll(cx));
                self.task = None;
                Poll::Ready(match done {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(std::io::Error::new(
                        e.kind(),
                        format!("cannot decompress the backup: {e}"),
                    )),
                    Err(e) => Err(std::io::Error::other(format!(
                        "the decompressor thread failed: {e}"
                    ))),
                })
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn parses_what_the_config_may_say() {
        assert_eq!("none".parse(), Ok(Compression::None));
        assert_eq!("zstd".parse(), Ok(Compression::Zstd { level: 1 }));
        assert_eq!("zstd:19".parse(), Ok(Compression::Zstd { level: 19 }));
        for bad in ["zstd:0", "zstd:20", "gzip", "zstd:x", ""] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
        assert_eq!(Compression::Zstd { level: 1 }.to_string(), "zstd:1");
    }

    async fn round_trip(compression: Compression, data: &[u8]) -> (Vec<u8>, Stored) {
        let (mut input, mut output, encoding) = encode(compression);
        let write = async {
            input.write_all(data).await.unwrap();
            input.shutdown().await.unwrap();
            drop(input);
        };
        let read = async {
            let mut stored = Vec::new();
            output.read_to_end(&mut stored).await.unwrap();
            stored
        };
        let ((), stored) = tokio::join!(write, read);
        let info = encoding.finish().await.unwrap();
        assert_eq!(info.size, stored.len() as u64);
        assert_eq!(info.sha256, hex::encode(Sha256::digest(&stored)));
        let mut plain = Vec::new();
        decode(
            Box::new(std::io::Cursor::new(stored)),
            &compression.to_string(),
        )
        .unwrap()
        .read_to_end(&mut plain)
        .await
        .unwrap();
        (plain, info)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_goes_in_comes_back_out_and_the_hash_is_of_the_stored_bytes() {
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let (plain, zstd) = round_trip(Compression::Zstd { level: 3 }, &data).await;
        assert_eq!(plain, data);
        assert!(zstd.size < data.len() as u64 / 4, "{}", zstd.size);
        let (plain, none) = round_trip(Compression::None, &data).await;
        assert_eq!(plain, data);
        assert_eq!(none.size, data.len() as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damaged_data_is_a_read_error_not_a_short_dump() {
        let mut reader = decode(Box::new(std::io::Cursor::new(vec![7u8; 4096])), "zstd:3").unwrap();
        let mut plain = Vec::new();
        let err = reader.read_to_end(&mut plain).await.unwrap_err();
        assert!(err.to_string().contains("cannot decompress"), "{err}");
    }
}
