//! Fills: one detached upstream download per digest, however many clients ask. The
//! fill hashes and stages bytes as they arrive; clients that join read the staged bytes
//! (from the start, or from their Range offset) while it runs. The last byte is held
//! back until the digest and size are verified, so no client ever receives a complete,
//! clean response of bad bytes. A dropped upstream body resumes with `Range` from a
//! fresh redirect.

use crate::cache::{BlobRecord, Cache, StagedBlob, buffers};
use crate::metrics::Metrics;
use crate::oci::{Digest, DigestHasher, RepoName};
use crate::upstream::{BlobBody, Upstream, UpstreamError};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How many times a fill re-requests a blob after its body broke.
pub const MAX_RESUMES: u32 = 5;

/// Why a fill did not publish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FillError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("verification failed: {0}")]
    Verification(String),
    #[error("storage error: {0}")]
    Storage(String),
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

pub struct Fill {
    pub digest: Digest,
    pub fill_id: u64,
    progress: watch::Receiver<FillProgress>,
    recent: Arc<RecentChunks>,
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

impl Fill {
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
        let mut rx = self.progress.clone();
        let result = rx
            .wait_for(|p| p.started || p.outcome.is_some())
            .await
            .map(|p| p.clone());
        result.unwrap_or_else(|_| FillProgress {
            outcome: Some(Err(FillError::Storage("fill task ended unexpectedly".into()))),
            ..Default::default()
        })
    }
}

/// Counters a test or metrics endpoint can read.
#[derive(Debug, Default)]
pub struct FillStats {
    pub started: std::sync::atomic::AtomicU64,
    pub published: std::sync::atomic::AtomicU64,
    pub verification_failures: std::sync::atomic::AtomicU64,
    pub resumes: std::sync::atomic::AtomicU64,
}

/// The running fills, by digest.
pub struct FillRegistry {
    running: Mutex<HashMap<Digest, Arc<Fill>>>,
    pub stats: Arc<FillStats>,
    metrics: Arc<Metrics>,
    /// `max_concurrent_fills` slots: fills beyond them wait before asking upstream.
    slots: Arc<tokio::sync::Semaphore>,
    /// Cancelled at shutdown: running fills stop and discard their staged bytes.
    shutdown: tokio_util::sync::CancellationToken,
    /// `[cache] max_size`, enforced after every publish.
    max_size: Option<u64>,
    /// Every fill task, until it has finished and dropped what it holds (the cache
    /// among it), so shutdown can wait for them.
    tasks: tokio_util::task::TaskTracker,
}

pub enum Lookup {
    Cached(BlobRecord),
    /// A running fill, and whether this request joined one another request started.
    Filling(Arc<Fill>, bool),
}

impl FillRegistry {
    pub fn new(metrics: Arc<Metrics>, max_concurrent_fills: usize, max_size: Option<u64>) -> Self {
        FillRegistry {
            running: Mutex::default(),
            stats: Arc::default(),
            metrics,
            slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent_fills.max(1))),
            shutdown: tokio_util::sync::CancellationToken::new(),
            max_size,
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Digests being filled now (never evicted).
    pub fn running_digests(&self) -> std::collections::HashSet<Digest> {
        self.running().keys().cloned().collect()
    }

    /// Evicts least recently used content beyond `max_size`, if one is set.
    pub async fn enforce_limit(&self, cache: &Cache) {
        let Some(max) = self.max_size else { return };
        match cache.enforce_limit(max, self.running_digests()).await {
            Ok(e) if e.blobs + e.manifests > 0 => {
                self.metrics.inc("pullgate_evictions_total", &[], e.blobs + e.manifests);
                info!(
                    blobs = e.blobs,
                    manifests = e.manifests,
                    bytes = e.bytes,
                    "evicted least recently used content"
                );
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "eviction failed"),
        }
    }

    /// Stops every running fill (their staged bytes are discarded) and waits up to
    /// `deadline` for them to finish.
    pub async fn stop_all(&self, deadline: std::time::Duration) {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(deadline, self.tasks.wait()).await;
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Fill>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn in_flight(&self) -> usize {
        self.running().len()
    }

    /// Returns the published blob, the running fill, or a new fill started for it.
    pub async fn get_or_start(
        self: &Arc<Self>,
        cache: &Cache,
        upstream: Arc<Upstream>,
        repo: RepoName,
        digest: &Digest,
    ) -> Result<Lookup, FillError> {
        if let Some(fill) = self.running().get(digest).cloned() {
            return Ok(Lookup::Filling(fill, true));
        }
        let (fill_id, staged) = cache
            .begin_fill(digest)
            .await
            .map_err(|e| FillError::Storage(e.to_string()))?;
        let (tx, rx) = watch::channel(FillProgress::default());
        let recent = Arc::new(RecentChunks::default());
        let fill = Arc::new(Fill {
            digest: digest.clone(),
            fill_id,
            progress: rx,
            recent: recent.clone(),
        });
        {
            let mut running = self.running();
            if let Some(existing) = running.get(digest).cloned() {
                drop(running);
                let c = cache.clone();
                tokio::spawn(async move { c.abort_fill(fill_id, staged).await });
                return Ok(Lookup::Filling(existing, true));
            }
            // A fill may have published between the caller's cache check and now: it
            // publishes before it leaves this map, so this re-check under the lock sees it.
            if let Ok(Some(record)) = cache.blob_now(digest) {
                drop(running);
                let c = cache.clone();
                tokio::spawn(async move { c.abort_fill(fill_id, staged).await });
                return Ok(Lookup::Cached(record));
            }
            running.insert(digest.clone(), fill.clone());
        }
        self.stats.started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let task = FillTask {
            registry: self.clone(),
            cache: cache.clone(),
            upstream,
            repo,
            digest: digest.clone(),
            fill_id,
            tx: Arc::new(tx),
            recent,
            served_by: std::sync::Mutex::default(),
            fetched: std::sync::atomic::AtomicU64::new(0),
        };
        self.tasks.spawn(task.run(staged));
        Ok(Lookup::Filling(fill, false))
    }
}

struct FillTask {
    registry: Arc<FillRegistry>,
    cache: Cache,
    upstream: Arc<Upstream>,
    repo: RepoName,
    digest: Digest,
    fill_id: u64,
    tx: Arc<watch::Sender<FillProgress>>,
    recent: Arc<RecentChunks>,
    /// Hosts that served the body, for the egress audit line.
    served_by: std::sync::Mutex<Vec<String>>,
    /// Bytes received from upstream, resumes included.
    fetched: std::sync::atomic::AtomicU64,
}

/// Staged bytes and the running hash of a fill.
struct Sink {
    staged: Box<dyn StagedBlob>,
    hasher: DigestHasher,
}

/// Writing and hashing on two dedicated blocking threads, each fed the same chunks
/// through a bounded channel, so receiving, writing and hashing (the costliest step,
/// ~1.8 GB/s per core) overlap on different cores; readers see each chunk as soon as it
/// is written, from memory while it is among the fill's recent chunks.
struct Pipeline {
    to_writer: tokio::sync::mpsc::Sender<Bytes>,
    to_hasher: tokio::sync::mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<(Box<dyn StagedBlob>, std::io::Result<()>)>,
    hasher: tokio::task::JoinHandle<DigestHasher>,
}

/// Chunks queued between the receiving task and each worker (a few MiB).
const PIPELINE_DEPTH: usize = 16;

impl Pipeline {
    fn start(
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

    async fn send(&self, chunk: Bytes) -> Result<(), ()> {
        self.to_hasher.send(chunk.clone()).await.map_err(|_| ())?;
        self.to_writer.send(chunk).await.map_err(|_| ())
    }

    /// Waits for every queued chunk to be written and hashed; returns the sink and the
    /// write result (an error, and no sink, if a worker thread itself died).
    async fn close(self) -> Result<(Sink, std::io::Result<()>), FillError> {
        drop(self.to_writer);
        drop(self.to_hasher);
        let died = |e: tokio::task::JoinError| FillError::Storage(format!("fill worker failed: {e}"));
        let (staged, wrote) = self.writer.await.map_err(died)?;
        let hasher = self.hasher.await.map_err(died)?;
        Ok((Sink { staged, hasher }, wrote))
    }
}

/// How long the receiver waits for the next frame before it hands a partly filled buffer
/// to the pipeline.
const COALESCE_WAIT: Duration = Duration::from_millis(2);

/// Copies the upstream body's frames into pooled buffers of [`buffers::BUFFER_SIZE`].
/// The fill's chunks stay alive for a while (queued for the writer and the hasher, then
/// in the recent-chunks window); held as the HTTP client's own frames, each would pin a
/// fresh read buffer that the kernel must fault in and zero, while the pooled buffers
/// are recycled and the client's read buffer is free for reuse at once. Costs one copy,
/// cheaper than the page faults it saves.
struct Coalescer {
    buf: Vec<u8>,
    filled: usize,
}

impl Coalescer {
    fn new() -> Coalescer {
        Coalescer {
            buf: buffers::take(buffers::BUFFER_SIZE),
            filled: 0,
        }
    }

    /// Appends `data`; every buffer it fills is pushed to `full`.
    fn push(&mut self, mut data: &[u8], full: &mut Vec<Bytes>) {
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
    fn flush(&mut self) -> Option<Bytes> {
        if self.filled == 0 {
            return None;
        }
        let partial = Bytes::copy_from_slice(&self.buf[..self.filled]);
        self.filled = 0;
        Some(partial)
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << attempt.min(6);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 % base.max(1))
        .unwrap_or(0);
    Duration::from_millis(base + jitter)
}

impl FillTask {
    async fn run(self, staged: Box<dyn StagedBlob>) {
        let mut sink = Some(Sink {
            staged,
            hasher: DigestHasher::new(),
        });
        let result = self.download(&mut sink).await;
        let outcome = match (result, sink) {
            (Ok(size), Some(sink)) => self.finish(sink, size).await,
            (Err(e), Some(sink)) => {
                let _ = self.cache.abort_fill(self.fill_id, sink.staged).await;
                Err(e)
            }
            (Ok(_), None) | (Err(_), None) => Err(FillError::Storage("staged data lost in a failed write".into())),
        };
        match &outcome {
            Ok(record) => {
                self.registry
                    .stats
                    .published
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                info!(upstream = %self.upstream.name, digest = %self.digest, size = record.size, "blob verified and cached");
            }
            Err(FillError::Verification(why)) => {
                self.registry
                    .stats
                    .verification_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.registry.metrics.inc(
                    "pullgate_verification_failures_total",
                    &[("upstream", &self.upstream.name)],
                    1,
                );
                error!(upstream = %self.upstream.name, digest = %self.digest, %why, "blob failed verification; discarded");
            }
            Err(e) => warn!(upstream = %self.upstream.name, digest = %self.digest, error = %e, "blob fill failed"),
        }
        let verified = match &outcome {
            Ok(_) => "ok",
            Err(FillError::Verification(_)) => "failed",
            Err(_) => "incomplete",
        };
        let cdn_hosts = self.served_by.lock().map(|h| h.join(",")).unwrap_or_default();
        info!(
            target: "pullgate::audit",
            upstream = %self.upstream.name,
            upstream_host = self.upstream.host(),
            cdn_host = %cdn_hosts,
            repo = %self.repo,
            digest = %self.digest,
            bytes = self.fetched.load(std::sync::atomic::Ordering::Relaxed),
            verified,
            "egress"
        );
        let readable = outcome.as_ref().map(|r| r.size).unwrap_or(self.tx.borrow().readable);
        self.tx.send_modify(|p| {
            p.readable = readable;
            p.started = true;
            p.outcome = Some(outcome);
        });
        self.recent.clear();
        self.registry.running().remove(&self.digest);
        self.registry.enforce_limit(&self.cache).await;
    }

    async fn finish(&self, sink: Sink, size: u64) -> Result<BlobRecord, FillError> {
        let actual = sink.hasher.clone().finish();
        if actual != self.digest {
            let _ = self.cache.abort_fill(self.fill_id, sink.staged).await;
            return Err(FillError::Verification(format!("upstream bytes hash to {actual}")));
        }
        // Verified: release the held-back tail now rather than after the fsync and the
        // publish (the staged bytes stay readable through open handles and the rename).
        let visible = sink.staged.readable_len().min(size);
        self.tx.send_if_modified(|p| {
            let changed = p.readable < visible;
            p.readable = p.readable.max(visible);
            changed
        });
        self.cache
            .publish(&self.digest, self.fill_id, sink.staged, size)
            .await
            .map_err(|e| FillError::Storage(e.to_string()))
    }

    /// Streams the blob into the sink, resuming after broken bodies. Returns the size.
    async fn download(&self, sink: &mut Option<Sink>) -> Result<u64, FillError> {
        let cancelled = || FillError::Storage("pullgate is shutting down".into());
        let _slot = tokio::select! {
            slot = self.registry.slots.clone().acquire_owned() => slot.map_err(|_| cancelled())?,
            _ = self.registry.shutdown.cancelled() => return Err(cancelled()),
        };
        let mut body = tokio::select! {
            body = self.upstream.get_blob(&self.repo, &self.digest, 0) => body?,
            _ = self.registry.shutdown.cancelled() => return Err(cancelled()),
        };
        self.note_host(&body);
        let size = body.content_length;
        self.tx.send_modify(|p| {
            p.started = true;
            p.size = size;
        });
        let mut staged = sink.take().ok_or_else(|| FillError::Storage("no staged data".into()))?;
        if let Some(size) = size {
            staged.staged.reserve(size);
        }
        let pipe = Pipeline::start(staged, self.tx.clone(), self.recent.clone(), size);
        let received = self.receive(&mut body, size, &pipe).await;
        let (done, wrote) = pipe.close().await?;
        *sink = Some(done);
        let written = received?;
        wrote.map_err(|e| FillError::Storage(e.to_string()))?;
        if let Some(s) = size
            && written != s
        {
            return Err(FillError::Verification(format!("upstream sent {written} of {s} bytes")));
        }
        Ok(written)
    }

    /// Receives the body (resuming after breaks) and hands every chunk to the pipeline;
    /// returns how many bytes of the blob were received.
    async fn receive(&self, body: &mut BlobBody, size: Option<u64>, pipe: &Pipeline) -> Result<u64, FillError> {
        let cancelled = || FillError::Storage("pullgate is shutting down".into());
        let mut written: u64 = 0;
        let mut skip: u64 = 0;
        let mut resumes = 0u32;
        let mut coalescer = Coalescer::new();
        let mut full = Vec::new();
        loop {
            // Frames arriving back to back fill the current buffer; when the body pauses,
            // what is buffered goes to the pipeline so readers never wait on a quiet
            // upstream.
            let next = match tokio::time::timeout(COALESCE_WAIT, body.next_chunk()).await {
                Ok(next) => next,
                Err(_) => {
                    if let Some(partial) = coalescer.flush()
                        && pipe.send(partial).await.is_err()
                    {
                        return Ok(written);
                    }
                    tokio::select! {
                        next = body.next_chunk() => next,
                        _ = self.registry.shutdown.cancelled() => return Err(cancelled()),
                    }
                }
            };
            if self.registry.shutdown.is_cancelled() {
                return Err(cancelled());
            }
            match next {
                Some(Ok(chunk)) => {
                    self.fetched
                        .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    self.registry.metrics.inc(
                        "pullgate_upstream_bytes_total",
                        &[("upstream", &self.upstream.name)],
                        chunk.len() as u64,
                    );
                    let chunk = if skip > 0 {
                        let n = skip.min(chunk.len() as u64);
                        skip -= n;
                        chunk.slice(n as usize..)
                    } else {
                        chunk
                    };
                    if chunk.is_empty() {
                        continue;
                    }
                    written += chunk.len() as u64;
                    if size.is_some_and(|s| written > s) {
                        return Err(FillError::Verification(format!(
                            "upstream sent more than the {} bytes it announced",
                            size.unwrap_or(0)
                        )));
                    }
                    coalescer.push(&chunk, &mut full);
                    drop(chunk);
                    for chunk in full.drain(..) {
                        if pipe.send(chunk).await.is_err() {
                            // The writer stopped on an error; close() reports it.
                            return Ok(written);
                        }
                    }
                }
                None => {
                    if let Some(partial) = coalescer.flush() {
                        let _ = pipe.send(partial).await;
                    }
                    break;
                }
                Some(Err(e)) => {
                    resumes += 1;
                    if resumes > MAX_RESUMES {
                        return Err(e.into());
                    }
                    self.registry
                        .stats
                        .resumes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(upstream = %self.upstream.name, digest = %self.digest, offset = written, attempt = resumes, error = %e, "blob body broke; resuming");
                    tokio::time::sleep(backoff(resumes)).await;
                    *body = self.reopen(written, size).await?;
                    self.note_host(body);
                    skip = if body.status.as_u16() == 206 { 0 } else { written };
                }
            }
        }
        Ok(written)
    }

    fn note_host(&self, body: &BlobBody) {
        if let Ok(mut hosts) = self.served_by.lock()
            && !hosts.contains(&body.served_by)
        {
            hosts.push(body.served_by.clone());
        }
    }

    /// Asks the registry again (a fresh redirect: the signed CDN URL may have expired).
    async fn reopen(&self, from: u64, size: Option<u64>) -> Result<BlobBody, FillError> {
        let mut last = None;
        for attempt in 0..3 {
            match self.upstream.get_blob(&self.repo, &self.digest, from).await {
                Ok(body) => {
                    if body.status.as_u16() == 206 && body.range_start != Some(from) {
                        return Err(FillError::Upstream(UpstreamError::Protocol(
                            "resumed at the wrong offset".into(),
                        )));
                    }
                    if body.status.as_u16() == 206
                        && size.is_some()
                        && body.range_total.is_some()
                        && body.range_total != size
                    {
                        return Err(FillError::Verification("blob size changed between requests".into()));
                    }
                    return Ok(body);
                }
                Err(e) if e.is_transient() => {
                    last = Some(e);
                    tokio::time::sleep(backoff(attempt + 1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.unwrap_or(UpstreamError::Protocol("resume failed".into())).into())
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
