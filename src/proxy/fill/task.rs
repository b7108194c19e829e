//! The fill task: asks upstream for the blob (after a `max_concurrent_fills` slot),
//! feeds the body to the write/hash pipeline, resumes a broken body with `Range` from a
//! fresh redirect, verifies digest and size, publishes, and tells every reader the
//! outcome. Detached from any request; stopped only by shutdown.

use super::pipeline::{COALESCE_WAIT, Coalescer, Pipeline, Sink};
use super::{Fill, FillError, FillProgress, FillRegistry, RecentChunks};
use crate::cache::{BlobRecord, Cache, StagedBlob};
use crate::metrics::fill_outcome;
use crate::oci::{Digest, DigestHasher, RepoName};
use crate::upstream::{BlobBody, Upstream, UpstreamError};
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How many times a fill re-requests a blob after its body broke.
pub const MAX_RESUMES: usize = 5;
/// Extra attempts at the request that resumes a body, when upstream is briefly away.
const REOPEN_RETRIES: usize = 2;

/// Waits between attempts: 200 ms doubling to 6.4 s, each plus a random jitter of up to
/// itself, so fills that broke together do not come back together.
pub(in crate::proxy) fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_millis(6400))
        .with_jitter()
}

pub(super) struct FillTask {
    registry: Arc<FillRegistry>,
    cache: Cache,
    upstream: Arc<Upstream>,
    repo: RepoName,
    fill: Arc<Fill>,
    tx: Arc<watch::Sender<FillProgress>>,
    recent: Arc<RecentChunks>,
    /// Hosts that served the body, for the egress audit line.
    served_by: std::sync::Mutex<Vec<String>>,
    /// Bytes received from upstream, resumes included.
    fetched: std::sync::atomic::AtomicU64,
}

impl FillTask {
    pub(super) fn new(
        registry: Arc<FillRegistry>,
        cache: Cache,
        upstream: Arc<Upstream>,
        repo: RepoName,
        fill: Arc<Fill>,
        tx: watch::Sender<FillProgress>,
        recent: Arc<RecentChunks>,
    ) -> FillTask {
        FillTask {
            registry,
            cache,
            upstream,
            repo,
            fill,
            tx: Arc::new(tx),
            recent,
            served_by: std::sync::Mutex::default(),
            fetched: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn digest(&self) -> &Digest {
        &self.fill.digest
    }

    pub(super) async fn run(self, staged: Box<dyn StagedBlob>) {
        let mut sink = Some(Sink {
            staged,
            hasher: DigestHasher::new(),
        });
        let result = self.download(&mut sink).await;
        let outcome = match (result, sink) {
            (Ok(size), Some(sink)) => self.finish(sink, size).await,
            (Err(e), Some(sink)) => {
                let _ = self.cache.abort_fill(self.fill.fill_id, sink.staged).await;
                Err(e)
            }
            // A worker thread died and took the staged data with it.
            (Ok(_), None) | (Err(_), None) => Err(FillError::Lost),
        };
        let upstream = self.upstream.name.as_str();
        let digest = self.digest();
        let metrics = &self.registry.metrics;
        match &outcome {
            Ok(record) => {
                metrics.fill_ended(fill_outcome::PUBLISHED);
                info!(upstream, %digest, size = record.size, "blob verified and cached");
            }
            Err(FillError::Verification(why)) => {
                metrics.fill_ended(fill_outcome::VERIFICATION_FAILED);
                metrics.verification_failed(upstream);
                error!(upstream, %digest, %why, "blob failed verification; discarded");
            }
            Err(e) => {
                metrics.fill_ended(fill_outcome::FAILED);
                warn!(upstream, %digest, error = %e, "blob fill failed");
                if e.storage_full() {
                    // Said now rather than at the storage watch's next look: the
                    // client's retry is served through instead of failing the same way.
                    let needed = {
                        let p = self.tx.borrow();
                        p.size.unwrap_or(p.readable)
                    };
                    self.cache.disk_filled(&e.to_string(), needed);
                }
            }
        }
        let verified = match &outcome {
            Ok(_) => "ok",
            Err(FillError::Verification(_)) => "failed",
            Err(_) => "incomplete",
        };
        let cdn_hosts = self.served_by.lock().map(|h| h.join(",")).unwrap_or_default();
        info!(
            target: "pullgate::audit",
            upstream,
            upstream_host = self.upstream.host(),
            cdn_host = %cdn_hosts,
            repo = %self.repo,
            %digest,
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
        self.registry.finished(digest);
        self.registry.enforce_limit(&self.cache).await;
    }

    async fn finish(&self, sink: Sink, size: u64) -> Result<BlobRecord, FillError> {
        let actual = sink.hasher.clone().finish();
        if &actual != self.digest() {
            let _ = self.cache.abort_fill(self.fill.fill_id, sink.staged).await;
            return Err(FillError::Verification(format!("upstream bytes hash to {actual}")));
        }
        // Verified: release the held-back tail now rather than after the fsync and the
        // publish (the staged bytes stay readable through open handles and the rename).
        // On a shared store the publish completes the upload, which runs beside the
        // download: a client does not wait for the bucket (an upload failing this late
        // only leaves the blob uncached; one failing earlier has failed the fill).
        let visible = sink.staged.readable_len().min(size);
        self.tx.send_if_modified(|p| {
            let changed = p.readable < visible;
            p.readable = p.readable.max(visible);
            changed
        });
        Ok(self
            .cache
            .publish(self.digest(), self.fill.fill_id, sink.staged, size)
            .await?)
    }

    /// Streams the blob into the sink, resuming after broken bodies. Returns the size.
    async fn download(&self, sink: &mut Option<Sink>) -> Result<u64, FillError> {
        let shutdown = &self.registry.shutdown;
        let _slot = tokio::select! {
            slot = self.registry.slots.clone().acquire_owned() => slot.map_err(|_| FillError::Stopped)?,
            _ = shutdown.cancelled() => return Err(FillError::Stopped),
        };
        let mut body = tokio::select! {
            body = self.upstream.get_blob(&self.repo, self.digest(), 0) => body?,
            _ = shutdown.cancelled() => return Err(FillError::Stopped),
        };
        self.note_host(&body);
        let size = body.content_length;
        self.tx.send_modify(|p| {
            p.started = true;
            p.size = size;
        });
        let mut staged = sink.take().ok_or(FillError::Lost)?;
        if let Some(size) = size {
            staged.staged.reserve(size);
        }
        let pipe = Pipeline::start(staged, self.tx.clone(), self.recent.clone(), size);
        let received = self.receive(&mut body, size, &pipe).await;
        let (done, wrote) = pipe.close().await?;
        *sink = Some(done);
        let written = received?;
        wrote.map_err(|e| FillError::Write(Arc::new(e)))?;
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
        let shutdown = &self.registry.shutdown;
        let mut written: u64 = 0;
        let mut skip: u64 = 0;
        let mut resumes = 0usize;
        let mut delays = backoff().build();
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
                        _ = shutdown.cancelled() => return Err(FillError::Stopped),
                    }
                }
            };
            if shutdown.is_cancelled() {
                return Err(FillError::Stopped);
            }
            match next {
                Some(Ok(chunk)) => {
                    self.fetched
                        .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
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
                    if let Some(s) = size
                        && written > s
                    {
                        return Err(FillError::Verification(format!(
                            "upstream sent more than the {s} bytes it announced"
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
                    self.registry.metrics.fill_resumes.inc();
                    warn!(upstream = %self.upstream.name, digest = %self.digest(), offset = written, attempt = resumes, error = %e, "blob body broke; resuming");
                    if let Some(delay) = delays.next() {
                        tokio::time::sleep(delay).await;
                    }
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

    async fn reopen(&self, from: u64, size: Option<u64>) -> Result<BlobBody, FillError> {
        reopen(&self.upstream, &self.repo, self.digest(), from, size).await
    }
}

/// Asks the registry again for the blob from byte `from` (a fresh redirect: the signed
/// CDN URL may have expired), retrying while upstream is briefly unavailable; checks
/// that a 206 starts where asked and that the size did not change.
pub(in crate::proxy) async fn reopen(
    upstream: &Upstream,
    repo: &RepoName,
    digest: &Digest,
    from: u64,
    size: Option<u64>,
) -> Result<BlobBody, FillError> {
    let body = (|| upstream.get_blob(repo, digest, from))
        .retry(backoff().with_max_times(REOPEN_RETRIES))
        .sleep(tokio::time::sleep)
        .when(UpstreamError::is_transient)
        .await?;
    if body.status.as_u16() == 206 {
        if body.range_start != Some(from) {
            return Err(FillError::Upstream(UpstreamError::Protocol(
                "resumed at the wrong offset".into(),
            )));
        }
        if size.is_some() && body.range_total.is_some() && body.range_total != size {
            return Err(FillError::Verification("blob size changed between requests".into()));
        }
    }
    Ok(body)
}
