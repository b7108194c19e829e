//! Blobs for clients: a hit streams the published bytes; a miss starts a fill, or joins
//! the running one, and streams it as it arrives. Here the request's `Range` is resolved
//! against the size, the answer waits for upstream's first response (so headers carry
//! the size), and a fill that failed before that becomes the request's error. While the
//! cache's disk is full, a miss is served through ([`through`]) instead of filled.

use super::fill::{Fill, Lookup};
use super::owners::{FromPeer, Head};
use super::read::{self, BlobStream};
use super::through;
use super::{CacheStatus, Proxy, ProxyError, ProxyResult, Target};
use crate::cache::{BlobRecord, CacheError};
use crate::oci::Digest;
use crate::oci::range::{ByteSpan, RangeSpec};
use crate::upstream::UpstreamError;
use std::sync::Arc;

/// A blob answer: 200 with the whole size, or 206 with a `Content-Range`.
pub struct BlobAnswer {
    /// `Content-Length`, when known (a fill whose upstream sent none has no length).
    pub length: Option<u64>,
    /// `Content-Range` of a 206; `None` for a 200.
    pub content_range: Option<String>,
    pub cache: CacheStatus,
    /// The bytes; `None` for HEAD.
    pub body: Option<BlobStream>,
}

/// Where a blob's bytes come from.
enum Source {
    Published(BlobRecord),
    Filling(Arc<Fill>),
    /// Coming from the replica that owns the digest.
    Peer(Box<FromPeer>),
    /// A stream from a peer that another client of this replica leads.
    Joined {
        body: BlobStream,
        size: Option<u64>,
    },
    /// Streamed from upstream without being kept: the cache's disk is full.
    Through(Box<through::Through>),
}

impl Proxy {
    /// A blob GET, whole or the `range` the client asked for.
    pub async fn blob(
        self: &Arc<Self>,
        target: &Target,
        digest: &Digest,
        range: Option<RangeSpec>,
    ) -> ProxyResult<BlobAnswer> {
        match self.blob_once(target, digest, range).await {
            // The record's data was gone (the cache dropped the record): now a miss.
            Err(ProxyError::Cache(CacheError::BlobDataMissing(_))) => self.blob_once(target, digest, range).await,
            other => other,
        }
    }

    pub(super) async fn blob_once(
        self: &Arc<Self>,
        target: &Target,
        digest: &Digest,
        range: Option<RangeSpec>,
    ) -> ProxyResult<BlobAnswer> {
        // Registered as a reader before the lookup, so nothing found can be evicted
        // before it is served.
        let reading = self.cache.reading(digest);
        let (source, cache) = self.find_or_fill(target, digest, range.is_none()).await?;
        let size = match &source {
            Source::Published(record) => Some(record.size),
            Source::Filling(fill) => {
                let mut progress = fill.started().await;
                if progress.size.is_none() && range.is_some() {
                    // Without a Content-Length the range can only be resolved at the end.
                    progress = fill.finished().await;
                    if let Some(Ok(record)) = &progress.outcome {
                        progress.size = Some(record.size);
                    }
                }
                if let Some(Err(e)) = progress.outcome {
                    return Err(e.into());
                }
                progress.size
            }
            Source::Peer(from) => from.body.total,
            Source::Joined { size, .. } => *size,
            Source::Through(t) => match (t.size, range) {
                (Some(size), _) => Some(size),
                // A range of a blob of unknown size would have to wait for all of it.
                (None, Some(_)) => {
                    return Err(ProxyError::Cache(CacheError::DiskFull(
                        "a range of a blob served through".into(),
                    )));
                }
                (None, None) => None,
            },
        };
        let span = match (range, size) {
            (Some(r), Some(size)) => r.resolve(size).map_err(|_| ProxyError::RangeNotSatisfiable { size })?,
            _ => None,
        };
        let (first, end) = match (span, size) {
            (Some(s), _) => (s.first, s.last + 1),
            (None, Some(size)) => (0, size),
            (None, None) => (0, u64::MAX),
        };
        let body = match source {
            Source::Published(record) => read::published(
                self.metrics.served_from_cache.clone(),
                self.cache.open_blob(digest, &record, first..end).await?,
                (reading, target.kernel_copy.then(|| self.metrics.sendfile_bytes.clone())),
                first,
                end,
            ),
            Source::Filling(fill) => read::filling(
                self.metrics.served_from_upstream.clone(),
                self.cache.clone(),
                (fill, reading),
                first,
                end,
            ),
            Source::Peer(from) => {
                self.from_peer_stream((target.clone(), digest.clone()), *from, size, (first, end), reading)
            }
            Source::Joined { body, .. } => body,
            Source::Through(t) => {
                through::stream(*t, self.metrics.clone(), (target.clone(), digest.clone()), first, end)
            }
        };
        Ok(answer(span, size, cache, Some(body)))
    }

    /// A blob HEAD: the size of the published blob, or of the running fill once upstream
    /// answered it, else as upstream says.
    pub async fn blob_head(&self, target: &Target, digest: &Digest) -> ProxyResult<BlobAnswer> {
        if let Some(record) = self.cache.blob(digest).await? {
            return Ok(answer(None, Some(record.size), CacheStatus::Hit, None));
        }
        if let Some(fill) = self.fills.get(digest)
            && let Some(size) = fill.started().await.size
        {
            return Ok(answer(None, Some(size), CacheStatus::FillJoin, None));
        }
        let peers = self.peers_for(target, || digest.to_string());
        if let Some(size) = self.blob_size_from_peers(target, digest, &peers).await? {
            return Ok(answer(None, size, CacheStatus::Peer, None));
        }
        match target.upstream.head_blob(&target.repo, digest).await {
            Ok(size) => Ok(answer(None, size, CacheStatus::Miss, None)),
            Err(UpstreamError::NotFound) => Err(ProxyError::BlobUnknown),
            Err(e) => Err(e.into()),
        }
    }

    /// The size of a blob this cache (or the shared store) holds, without asking anyone
    /// else: a client's `Cache-Control: only-if-cached` (prefetch skips what is there).
    pub async fn blob_cached_size(&self, digest: &Digest) -> ProxyResult<Option<u64>> {
        Ok(self.cache.blob(digest).await?.map(|r| r.size))
    }

    /// The published blob, or the fill this request started or joined; fails when the
    /// fill failed before upstream answered.
    async fn find_or_fill(&self, target: &Target, digest: &Digest, whole: bool) -> ProxyResult<(Source, CacheStatus)> {
        // Only the local record here: a running fill is joined before the shared store
        // is asked, and the registry asks it once for all the requests that missed.
        if let Some(record) = self.cache.local_blob(digest).await? {
            self.cache.touch_blob(digest);
            return Ok((Source::Published(record), CacheStatus::Hit));
        }
        // Clustered: what another replica published, else the owner's stream (a fill
        // running here, as the next candidate for a dead owner, is joined below).
        let peers = self.peers_for(target, || digest.to_string());
        if !peers.is_empty() && self.fills.get(digest).is_none() {
            if let Some(record) = self.cache.blob(digest).await? {
                self.cache.touch_blob(digest);
                return Ok((Source::Published(record), CacheStatus::Hit));
            }
            if whole && let Some((body, mut head)) = self.peer_streams.join(digest) {
                let head = *head
                    .wait_for(|h| *h != Head::Pending)
                    .await
                    .map_err(|_| ProxyError::BlobUnknown)?;
                if let Head::Size(size) = head {
                    let body = BlobStream::new(body);
                    return Ok((Source::Joined { body, size }, CacheStatus::Peer));
                }
            }
            let lead = whole.then(|| self.peer_streams.lead(digest));
            if let Some(mut from) = self.blob_from_peers(target, digest, &peers, 0).await? {
                if let Some(lead) = lead {
                    lead.answered(from.body.total);
                    from.lead = Some(lead);
                }
                return Ok((Source::Peer(Box::new(from)), CacheStatus::Peer));
            }
        }
        // A full disk cannot take a fill: the blob goes through, verified, not kept (a
        // fill already running is joined: its bytes may fit).
        if self.cache.disk_full() && self.fills.get(digest).is_none() {
            let t = through::open(target, digest).await?;
            return Ok((Source::Through(Box::new(t)), CacheStatus::Miss));
        }
        let (fill, cache) = match self
            .fills
            .get_or_start(&self.cache, target.upstream.clone(), target.repo.clone(), digest)
            .await?
        {
            Lookup::Cached(record) => {
                self.cache.touch_blob(digest);
                return Ok((Source::Published(record), CacheStatus::Hit));
            }
            Lookup::Started(fill) => (fill, CacheStatus::Miss),
            Lookup::Joined(fill) => (fill, CacheStatus::FillJoin),
        };
        if let Some(Err(e)) = fill.started().await.outcome {
            return Err(e.into());
        }
        Ok((Source::Filling(fill), cache))
    }
}

fn answer(span: Option<ByteSpan>, size: Option<u64>, cache: CacheStatus, body: Option<BlobStream>) -> BlobAnswer {
    let (length, content_range) = match (span, size) {
        (Some(s), Some(size)) => (Some(s.len()), Some(s.content_range(size))),
        (_, size) => (size, None),
    };
    BlobAnswer {
        length,
        content_range,
        cache,
        body,
    }
}
