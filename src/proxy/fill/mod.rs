//! Fills: one detached upstream download per digest, however many clients ask. This
//! file is what readers see of a fill (its progress, its outcome, its newest chunks in
//! memory); [`registry`] starts or joins fills, [`task`] downloads, resumes and
//! verifies, [`pipeline`] writes and hashes. The last byte is held back until the
//! digest and size are verified, so no client ever receives a complete, clean response
//! of bad bytes.

pub mod pipeline;
pub mod registry;
pub mod task;

pub use registry::{FillRegistry, Lookup};

use crate::cache::{BlobRecord, CacheError};
use crate::oci::Digest;
use crate::upstream::UpstreamError;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Why a fill did not publish. Cloned to every reader, so sources are shared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FillError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("verification failed: {0}")]
    Verification(String),
    #[error("storage error: {0}")]
    Cache(#[source] Arc<CacheError>),
    #[error("storage error: {0}")]
    Write(#[source] Arc<std::io::Error>),
    #[error("pullgate is shutting down")]
    Stopped,
    /// The fill task or one of its worker threads ended without an outcome (a panic).
    #[error("fill task ended unexpectedly")]
    Lost,
}

impl FillError {
    /// The cache's disk had no room for the fill.
    pub fn storage_full(&self) -> bool {
        match self {
            FillError::Cache(e) => e.is_full(),
            FillError::Write(e) => crate::cache::storage_is_full(e),
            _ => false,
        }
    }
}

impl From<CacheError> for FillError {
    fn from(e: CacheError) -> Self {
        FillError::Cache(Arc::new(e))
    }
}

/// What readers of a fill can see.
#[derive(Debug, Clone, Default)]
pub struct FillProgress {
    /// Upstream answered: `size` is as good as it gets.
    pub started: bool,
    /// The blob size from upstream's `Content-Length`, when it sent one.
    pub size: Option<u64>,
    /// Bytes readers may read from the staged data now.
    pub readable: u64,
    /// Set once: published, or failed.
    pub outcome: Option<Result<BlobRecord, FillError>>,
}

/// A running fill as its readers hold it.
pub struct Fill {
    pub digest: Digest,
    pub fill_id: u64,
    progress: watch::Receiver<FillProgress>,
    recent: Arc<RecentChunks>,
    /// The upstream and repository it is fetched from (for the status page).
    pub upstream: String,
    pub repo: crate::oci::RepoName,
    pub started: std::time::Instant,
    /// Client requests that started or joined it.
    clients: std::sync::atomic::AtomicUsize,
}

/// A running fill as the status page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FillView {
    pub upstream: String,
    pub repo: String,
    pub digest: String,
    /// From upstream's `Content-Length`, once it answered.
    pub size: Option<u64>,
    /// Bytes fetched, verified-so-far and readable.
    pub bytes: u64,
    pub seconds: f64,
    /// Bytes per second since the fill started.
    pub rate: u64,
    /// Client requests that started or joined it.
    pub clients: usize,
    /// The replica it is read from, when this replica is not the one filling it.
    pub from_peer: Option<String>,
}

impl Fill {
    /// One more client request reads this fill.
    pub(super) fn joined(&self) {
        self.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// What the status page shows of it.
    pub fn view(&self) -> FillView {
        let (size, bytes) = {
            let p = self.progress.borrow();
            (p.size, p.readable)
        };
        let seconds = self.started.elapsed().as_secs_f64();
        FillView {
            upstream: self.upstream.clone(),
            repo: self.repo.to_string(),
            digest: self.digest.to_string(),
            size,
            bytes,
            seconds,
            rate: if seconds > 0.0 {
                (bytes as f64 / seconds) as u64
            } else {
                0
            },
            clients: self.clients.load(std::sync::atomic::Ordering::Relaxed),
            from_peer: None,
        }
    }

    /// The next bytes at `pos` (below `limit`, which the caller took from the progress)
    /// if they are still in memory.
    pub fn recent(&self, pos: u64, limit: u64) -> Option<Bytes> {
        self.recent.get(pos, limit)
    }

    pub fn progress(&self) -> watch::Receiver<FillProgress> {
        self.progress.clone()
    }

    /// Waits until upstream answered (or the fill ended).
    pub async fn started(&self) -> FillProgress {
        self.wait_for(|p| p.started || p.outcome.is_some()).await
    }

    /// Waits until the fill has an outcome.
    pub async fn finished(&self) -> FillProgress {
        self.wait_for(|p| p.outcome.is_some()).await
    }

    async fn wait_for(&self, ready: impl FnMut(&FillProgress) -> bool) -> FillProgress {
        let mut rx = self.progress.clone();
        let result = rx.wait_for(ready).await.map(|p| p.clone());
        result.unwrap_or_else(|_| FillProgress {
            outcome: Some(Err(FillError::Lost)),
            ..Default::default()
        })
    }
}

/// The newest chunks a fill has written, kept as the same `Bytes` the upstream body
/// arrived in: readers that follow the fill closely (the usual case when many clients
/// pull one layer at once) take them from here instead of reading the staged bytes back
/// from storage. Bounded to [`RECENT_BYTES`] per fill; emptied when the fill ends.
#[derive(Default)]
pub struct RecentChunks {
    chunks: Mutex<RecentState>,
}

#[derive(Default)]
struct RecentState {
    /// `(offset in the blob, bytes)`, in order.
    chunks: std::collections::VecDeque<(u64, Bytes)>,
    bytes: usize,
}

/// How much of a fill's newest data stays in memory for its readers.
pub const RECENT_BYTES: usize = 4 << 20;

impl RecentChunks {
    fn state(&self) -> std::sync::MutexGuard<'_, RecentState> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, offset: u64, chunk: Bytes) {
        let mut s = self.state();
        s.bytes += chunk.len();
        s.chunks.push_back((offset, chunk));
        while s.bytes > RECENT_BYTES
            && let Some((_, old)) = s.chunks.pop_front()
        {
            s.bytes -= old.len();
        }
    }

    fn clear(&self) {
        let mut s = self.state();
        s.chunks.clear();
        s.bytes = 0;
    }

    /// Bytes from `pos` up to (not including) `limit`, if a kept chunk holds `pos`.
    fn get(&self, pos: u64, limit: u64) -> Option<Bytes> {
        let s = self.state();
        let i = s.chunks.partition_point(|(off, c)| off + c.len() as u64 <= pos);
        let (off, chunk) = s.chunks.get(i)?;
        if *off > pos || limit <= pos {
            return None;
        }
        let start = (pos - off) as usize;
        let end = ((limit - off) as usize).min(chunk.len());
        Some(chunk.slice(start..end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_chunks_slice_from_any_offset_up_to_the_limit_and_stay_bounded() {
        let recent = RecentChunks::default();
        recent.push(0, Bytes::from_static(b"abcd"));
        recent.push(4, Bytes::from_static(b"efgh"));
        assert_eq!(recent.get(0, 8).as_deref(), Some(&b"abcd"[..]));
        assert_eq!(recent.get(2, 8).as_deref(), Some(&b"cd"[..]));
        assert_eq!(recent.get(5, 7).as_deref(), Some(&b"fg"[..]));
        assert_eq!(recent.get(3, 3), None, "nothing below the limit");
        assert_eq!(recent.get(8, 9), None, "not written yet");
        let big = Bytes::from(vec![7u8; RECENT_BYTES]);
        recent.push(8, big);
        assert_eq!(recent.get(0, 100), None, "old chunks are dropped beyond the bound");
        assert_eq!(recent.get(8, 10).as_deref(), Some(&[7u8, 7][..]));
        recent.clear();
        assert_eq!(recent.get(8, 10), None);
    }
}
