//! Byte streams for clients: a published blob read from the store, or a running fill
//! read as far as it has been staged, waiting for more. Reads are bounded chunks (from
//! the page cache inline, else on the blocking pool), so memory per client stays small
//! whatever the blob size.

use super::fill::{Fill, FillError};
use crate::cache::{BlobReader, Cache, ReaderGuard, buffers};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use std::io::{self, Read};
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;

/// A blob body for a client: chunks, and an error as the last item if the bytes could
/// not all be delivered (the HTTP layer then aborts the body).
pub type BlobStream = ReceiverStream<io::Result<Bytes>>;

use crate::cache::fleet::STREAM_RENEWS_USE_EVERY as RENEW_USE_EVERY;

/// Largest read handed to the client in one frame.
pub const READ_CHUNK: usize = buffers::BUFFER_SIZE;

async fn read_some(mut reader: BlobReader, max: usize) -> io::Result<(BlobReader, Bytes)> {
    if let Some(bytes) = reader.read_now(max)? {
        return Ok((reader, bytes));
    }
    tokio::task::spawn_blocking(move || {
        // Full-size reads: one or two syscalls per chunk (read_to_end's growing reads
        // would take six).
        let mut reader = reader;
        let mut buf = buffers::take(max);
        let mut filled = 0;
        while filled < max {
            let n = reader.read(&mut buf[filled..max])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok((reader, buffers::freeze(buf, filled)))
    })
    .await
    .map_err(io::Error::other)?
}

/// A client's registration as a reader of a published blob, renewed as a long stream
/// goes on, so a fleet's evictor spares the blob.
struct KeepInUse {
    reading: ReaderGuard,
    renewed: std::time::Instant,
}

impl KeepInUse {
    fn new(reading: ReaderGuard) -> KeepInUse {
        KeepInUse {
            reading,
            renewed: std::time::Instant::now(),
        }
    }

    fn tick(&mut self) {
        if self.renewed.elapsed() >= RENEW_USE_EVERY {
            self.reading.touch();
            self.renewed = std::time::Instant::now();
        }
    }
}

/// Bytes `first..end` of a published blob from `reader` (opened at `first`);
/// `reading` (the client's registration as a reader, which keeps eviction away) is held
/// until the stream ends. With `kernel` (the count of bytes sent by sendfile), a blob
/// that is a plain file goes out as placeholder frames ([`crate::zero_copy`]).
pub fn published(
    served: Counter,
    reader: BlobReader,
    (reading, kernel): (ReaderGuard, Option<Counter>),
    first: u64,
    end: u64,
) -> BlobStream {
    if let Some(sent_by_kernel) = kernel
        && let Some((file, at)) = reader.file_at()
        && at == first
    {
        return by_kernel((served, sent_by_kernel), file, reading, first, end);
    }
    async_stream(move |tx| async move {
        let mut reader = reader;
        let mut pos = first;
        let mut in_use = KeepInUse::new(reading);
        while pos < end {
            in_use.tick();
            let want = ((end - pos) as usize).min(READ_CHUNK);
            let (r, bytes) = read_some(reader, want).await?;
            reader = r;
            if bytes.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stored blob is shorter than its record",
                ));
            }
            pos += bytes.len() as u64;
            if !deliver(&served, &tx, bytes).await {
                return Ok(());
            }
        }
        Ok(())
    })
}

/// Bytes `first..end` of a published blob file as placeholder frames, each sent by the
/// connection's writer with sendfile. A range whose pages are not all in the page cache
/// (sendfile would wait for the disk on the connection's task) is read and copied on
/// the blocking pool instead, as is any frame when every placeholder slot is taken.
fn by_kernel(
    (served, sent_by_kernel): (Counter, Counter),
    file: Arc<std::fs::File>,
    reading: ReaderGuard,
    first: u64,
    end: u64,
) -> BlobStream {
    async_stream(move |tx| async move {
        let mut pos = first;
        let mut in_use = KeepInUse::new(reading);
        while pos < end {
            in_use.tick();
            let len = ((end - pos) as usize).min(crate::zero_copy::SLOT_SIZE);
            let placeholder = crate::zero_copy::resident(&file, pos, len)
                .then(|| crate::zero_copy::frame(&file, pos, len))
                .flatten();
            let bytes = match placeholder {
                Some(p) => {
                    sent_by_kernel.inc_by(len as u64);
                    p
                }
                None => read_at(file.clone(), pos, len.min(READ_CHUNK)).await?,
            };
            pos += bytes.len() as u64;
            if !deliver(&served, &tx, bytes).await {
                return Ok(());
            }
        }
        Ok(())
    })
}

/// Up to `len` bytes of `file` at `pos`, read on the blocking pool; an error when the
/// file ends first.
async fn read_at(file: Arc<std::fs::File>, pos: u64, len: usize) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt as _;
        let mut buf = buffers::take(len);
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut buf[filled..len], pos + filled as u64)? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stored blob is shorter than its record",
                    ));
                }
                n => filled += n,
            }
        }
        Ok(buffers::freeze(buf, filled))
    })
    .await
    .map_err(io::Error::other)?
}

/// Bytes `first..end` of a blob that a fill is writing; follows the fill as it grows
/// and ends with an error if the fill fails.
pub fn filling(
    served: Counter,
    cache: Cache,
    (fill, reading): (Arc<Fill>, ReaderGuard),
    first: u64,
    end: u64,
) -> BlobStream {
    async_stream(move |tx| async move {
        let _reading = reading;
        let mut progress = fill.progress();
        let mut reader: Option<BlobReader> = None;
        let mut pos = first;
        while pos < end {
            let snapshot = progress
                .wait_for(|p| p.readable > pos || p.outcome.is_some())
                .await
                .map_err(|_| io::Error::other("fill ended unexpectedly"))?
                .clone();
            match &snapshot.outcome {
                Some(Err(e)) => return Err(fill_failed(e)),
                Some(Ok(record)) if reader.is_none() => {
                    // Published before this reader opened anything: read the blob itself.
                    reader = Some(
                        cache
                            .open_blob(&fill.digest, record, pos..end)
                            .await
                            .map_err(io::Error::other)?,
                    );
                }
                _ => {}
            }
            if let Some(Ok(record)) = &snapshot.outcome
                && pos >= record.size
            {
                break;
            }
            if snapshot.outcome.is_none()
                && let Some(bytes) = fill.recent(pos, snapshot.readable.min(end))
            {
                // Still in memory: the same bytes the fill wrote, no read back. A reader
                // opened earlier is behind now; it is reopened at `pos` if needed.
                reader = None;
                pos += bytes.len() as u64;
                if !deliver(&served, &tx, bytes).await {
                    return Ok(());
                }
                continue;
            }
            if reader.is_none() {
                match cache.open_staged(fill.fill_id, pos).await {
                    Ok(r) => reader = Some(r),
                    Err(_) => {
                        // The staged file was renamed by a publish that raced this open.
                        let p = progress
                            .wait_for(|p| p.outcome.is_some())
                            .await
                            .map_err(|_| io::Error::other("fill ended unexpectedly"))?
                            .clone();
                        match p.outcome {
                            Some(Ok(record)) => {
                                reader = Some(
                                    cache
                                        .open_blob(&fill.digest, &record, pos..end)
                                        .await
                                        .map_err(io::Error::other)?,
                                )
                            }
                            Some(Err(e)) => return Err(fill_failed(&e)),
                            None => return Err(io::Error::other("fill ended unexpectedly")),
                        }
                    }
                }
            }
            let limit = snapshot.readable.min(end);
            if limit <= pos {
                continue;
            }
            let want = ((limit - pos) as usize).min(READ_CHUNK);
            let r = reader.take().ok_or_else(|| io::Error::other("no reader"))?;
            let (r, bytes) = read_some(r, want).await?;
            reader = Some(r);
            if bytes.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "staged blob is shorter than announced",
                ));
            }
            pos += bytes.len() as u64;
            if !deliver(&served, &tx, bytes).await {
                return Ok(());
            }
        }
        Ok(())
    })
}

/// Counts `bytes` as served and hands them to the client's body; false once the client
/// has gone.
pub(super) async fn deliver(served: &Counter, tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>, bytes: Bytes) -> bool {
    served.inc_by(bytes.len() as u64);
    tx.send(Ok(bytes)).await.is_ok()
}

fn fill_failed(e: &FillError) -> io::Error {
    io::Error::other(format!("upstream fill failed: {e}"))
}

/// A channel-backed stream: the producer runs as its own task and an error it returns
/// becomes the stream's last item, which aborts the HTTP body.
pub(super) fn async_stream<F, Fut>(producer: F) -> BlobStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<io::Result<Bytes>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = io::Result<()>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let err_tx = tx.clone();
    tokio::spawn(async move {
        if let Err(e) = producer(tx).await {
            let _ = err_tx.send(Err(e)).await;
        }
    });
    ReceiverStream::new(rx)
}
