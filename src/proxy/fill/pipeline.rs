//! A fill's write path: upstream frames copied into pooled buffers (the coalescer), then
//! written to the staged blob and hashed on two dedicated blocking threads, each chunk
//! published to readers (progress, recent chunks) as soon as it is written, with the
//! last byte held back until verification.

use super::{FillError, FillProgress, RecentChunks};
use crate::cache::{StagedBlob, buffers};
use crate::oci::DigestHasher;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Staged bytes and the running hash of a fill.
pub(super) struct Sink {
    pub staged: Box<dyn StagedBlob>,
    pub hasher: DigestHasher,
}

/// Writing and hashing on two dedicated blocking threads, each fed the same chunks
/// through a bounded channel, so receiving, writing and hashing (the costliest step,
/// ~1.8 GB/s per core) overlap on different cores; readers see each chunk as soon as it
/// is written, from memory while it is among the fill's recent chunks.
pub(super) struct Pipeline {
    to_writer: tokio::sync::mpsc::Sender<Bytes>,
    to_hasher: tokio::sync::mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<(Box<dyn StagedBlob>, std::io::Result<()>)>,
    hasher: tokio::task::JoinHandle<DigestHasher>,
}

/// Chunks queued between the receiving task and each worker (a few MiB).
const PIPELINE_DEPTH: usize = 16;

impl Pipeline {
    pub(super) fn start(
        sink: Sink,
        progress: Arc<watch::Sender<FillProgress>>,
        recent: Arc<RecentChunks>,
        size: Option<u64>,
    ) -> Pipeline {
        let Sink { staged, mut hasher } = sink;
        let (to_writer, mut chunks) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_DEPTH);
        let writer = tokio::task::spawn_blocking(move || {
            let mut staged = staged;
            let mut written: u64 = 0;
            while let Some(chunk) = chunks.blocking_recv() {
                if let Err(e) = staged.write(&chunk) {
                    return (staged, Err(e));
                }
                let offset = written;
                written += chunk.len() as u64;
                recent.push(offset, chunk);
                // Hold back the tail: readers never see the last byte before verification.
                let readable = staged.readable_len();
                let visible = match size {
                    Some(s) => readable.min(s.saturating_sub(1)),
                    None => readable.min(written.saturating_sub(1)),
                };
                progress.send_if_modified(|p| {
                    let changed = p.readable != visible;
                    p.readable = visible;
                    changed
                });
            }
            (staged, Ok(()))
        });
        let (to_hasher, mut chunks) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_DEPTH);
        let hasher = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = chunks.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher
        });
        Pipeline {
            to_writer,
            to_hasher,
            writer,
            hasher,
        }
    }

    pub(super) async fn send(&self, chunk: Bytes) -> Result<(), ()> {
        self.to_hasher.send(chunk.clone()).await.map_err(|_| ())?;
        self.to_writer.send(chunk).await.map_err(|_| ())
    }

    /// Waits for every queued chunk to be written and hashed; returns the sink and the
    /// write result (an error, and no sink, if a worker thread itself died).
    pub(super) async fn close(self) -> Result<(Sink, std::io::Result<()>), FillError> {
        drop(self.to_writer);
        drop(self.to_hasher);
        let died = |_: tokio::task::JoinError| FillError::Lost;
        let (staged, wrote) = self.writer.await.map_err(died)?;
        let hasher = self.hasher.await.map_err(died)?;
        Ok((Sink { staged, hasher }, wrote))
    }
}

/// How long the receiver waits for the next frame before it hands a partly filled buffer
/// to the pipeline.
pub(in crate::proxy) const COALESCE_WAIT: Duration = Duration::from_millis(2);

/// Copies the upstream body's frames into pooled buffers of [`buffers::BUFFER_SIZE`].
/// The fill's chunks stay alive for a while (queued for the writer and the hasher, then
/// in the recent-chunks window); held as the HTTP client's own frames, each would pin a
/// fresh read buffer that the kernel must fault in and zero, while the pooled buffers
/// are recycled and the client's read buffer is free for reuse at once. Costs one copy,
/// cheaper than the page faults it saves.
pub(in crate::proxy) struct Coalescer {
    buf: Vec<u8>,
    filled: usize,
}

impl Coalescer {
    pub(in crate::proxy) fn new() -> Coalescer {
        Coalescer {
            buf: buffers::take(buffers::BUFFER_SIZE),
            filled: 0,
        }
    }

    /// Appends `data`; every buffer it fills is pushed to `full`.
    pub(in crate::proxy) fn push(&mut self, mut data: &[u8], full: &mut Vec<Bytes>) {
        while !data.is_empty() {
            let n = (buffers::BUFFER_SIZE - self.filled).min(data.len());
            self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == buffers::BUFFER_SIZE {
                let done = std::mem::replace(&mut self.buf, buffers::take(buffers::BUFFER_SIZE));
                full.push(buffers::freeze(done, buffers::BUFFER_SIZE));
                self.filled = 0;
            }
        }
    }

    /// What is buffered so far, as an exact-size copy (a small chunk never pins a whole
    /// pooled buffer); the buffer is kept for what follows.
    pub(in crate::proxy) fn flush(&mut self) -> Option<Bytes> {
        if self.filled == 0 {
            return None;
        }
        let partial = Bytes::copy_from_slice(&self.buf[..self.filled]);
        self.filled = 0;
        Some(partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescer_keeps_bytes_in_order_across_buffers() {
        let size = buffers::BUFFER_SIZE;
        let data: Vec<u8> = (0..size * 2 + 1000).map(|i| (i * 7 % 251) as u8).collect();
        let mut c = Coalescer::new();
        let mut full = Vec::new();
        // Frames of odd sizes straddle the buffer boundaries.
        for frame in data.chunks(100_003) {
            c.push(frame, &mut full);
        }
        assert_eq!(full.len(), 2);
        assert!(full.iter().all(|b| b.len() == size));
        let tail = c.flush().expect("the rest");
        assert_eq!(tail.len(), 1000);
        assert!(c.flush().is_none(), "a flush empties it");
        let joined: Vec<u8> = full.iter().chain([&tail]).flat_map(|b| b.iter().copied()).collect();
        assert_eq!(joined, data);
    }
}
