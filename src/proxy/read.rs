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

/// Bytes `first..end` of a published blob from `reader` (opened at `first`);
/// `reading` (the client's registration as a reader, which keeps eviction away) is held
/// until the stream ends.
pub fn published(served: Counter, reader: BlobReader, reading: ReaderGuard, first: u64, end: u64) -> BlobStream {
    async_stream(move |tx| async move {
        let mut reader = reader;
        let mut pos = first;
        let mut renewed = std::time::Instant::now();
        while pos < end {
            // A long stream keeps its blob in use (a fleet's evictor spares it).
            if renewed.elapsed() >= RENEW_USE_EVERY {
                reading.touch();
                renewed = std::time::Instant::now();
            }
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
