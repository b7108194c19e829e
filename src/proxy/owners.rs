//! Asking the replica that owns a digest or tag (`[cluster]`). A replica that misses a
//! blob it does not own streams the owner's answer to its client and into nothing else
//! (the owner's fill writes the shared store once). Every byte from a peer is hashed
//! and the last one is held until the digest matches, as for bytes from upstream. When
//! the owner breaks off, the same bytes are asked from the next candidate from where
//! they stopped, and then from a fill here: a dead replica costs the fleet at most one
//! more upstream fetch, and its clients' pulls go on.

use super::read::{self, BlobStream};
use super::{Proxy, ProxyError, ProxyResult, Target};
use crate::cache::ReaderGuard;
use crate::metrics::PeerRequestLabels;
use crate::oci::range::RangeSpec;
use crate::oci::{Digest, DigestHasher};
use crate::upstream::peer::{PeerBlob, PeerError};
use crate::upstream::{FetchedManifest, UpstreamError};
use bytes::Bytes;
use std::io;
use std::sync::Arc;
use tokio_stream::StreamExt as _;
use tracing::warn;

/// A blob body as a peer began to send it, and the peers to ask if it breaks off.
pub(super) struct FromPeer {
    pub body: PeerBlob,
    pub rest: Vec<String>,
}

/// Where the bytes of a blob asked from peers come from now.
enum Feed {
    Peer(PeerBlob),
    /// A fill (or the published blob) on this replica.
    Here(BlobStream),
}

impl Feed {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        match self {
            Feed::Peer(body) => body.next_chunk().await.map(|r| r.map_err(|e| e.to_string())),
            Feed::Here(stream) => stream.next().await.map(|r| r.map_err(|e| e.to_string())),
        }
    }
}

/// The cluster key of a tag: every replica revalidates it through the same owner.
pub(super) fn tag_key(target: &Target, tag: &str) -> String {
    format!("{}/{}:{tag}", target.upstream.name, target.repo)
}

impl Proxy {
    /// The peers to ask for `key` before doing the work here: none without `[cluster]`,
    /// for a request a peer sent (never forwarded twice), or when this replica is the
    /// first live candidate.
    pub(super) fn peers_for(&self, target: &Target, key: &str) -> Vec<String> {
        match &self.cluster {
            Some(cluster) if !target.from_peer => cluster.peers_to_ask(key),
            _ => Vec::new(),
        }
    }

    fn count_peer(&self, member: &str, outcome: &'static str) {
        self.metrics
            .peer_requests
            .get_or_create(&PeerRequestLabels {
                member: member.to_string(),
                outcome,
            })
            .inc();
    }

    /// What a peer's failure means: unreachable marks it down; an error answer is
    /// logged. Either way the next is asked.
    fn peer_failed(&self, member: &str, e: &PeerError) {
        let Some(cluster) = &self.cluster else { return };
        match e {
            PeerError::Unreachable { .. } => {
                self.count_peer(member, "unreachable");
                cluster.mark_down(member, &e.to_string());
            }
            _ => {
                self.count_peer(member, "refused");
                warn!(member, error = %e, "a cluster peer could not answer; asking the next");
            }
        }
    }

    /// Asks `peers` in order for the blob from byte `from` on. The first that answers
    /// gives the body; `Ok(None)` when none could (the caller does the work itself). A
    /// 404 from the owner is the answer: upstream has no such blob.
    pub(super) async fn blob_from_peers(
        &self,
        target: &Target,
        digest: &Digest,
        peers: &[String],
        from: u64,
    ) -> ProxyResult<Option<FromPeer>> {
        let Some(cluster) = &self.cluster else { return Ok(None) };
        for (i, member) in peers.iter().enumerate() {
            match cluster
                .client
                .get_blob(member, target.upstream_name(), &target.repo, digest, from)
                .await
            {
                Ok(body) => {
                    cluster.mark_up(member);
                    self.count_peer(member, "ok");
                    return Ok(Some(FromPeer {
                        body,
                        rest: peers[i + 1..].to_vec(),
                    }));
                }
                Err(PeerError::NotFound) if from == 0 => {
                    cluster.mark_up(member);
                    self.count_peer(member, "not_found");
                    return Err(ProxyError::BlobUnknown);
                }
                Err(e) => self.peer_failed(member, &e),
            }
        }
        Ok(None)
    }

    /// A blob's size from its owner; `Ok(None)` when no peer could say.
    pub(super) async fn blob_size_from_peers(
        &self,
        target: &Target,
        digest: &Digest,
        peers: &[String],
    ) -> ProxyResult<Option<Option<u64>>> {
        let Some(cluster) = &self.cluster else { return Ok(None) };
        for member in peers {
            match cluster
                .client
                .head_blob(member, target.upstream_name(), &target.repo, digest)
                .await
            {
                Ok(size) => {
                    cluster.mark_up(member);
                    self.count_peer(member, "ok");
                    return Ok(Some(size));
                }
                Err(PeerError::NotFound) => {
                    cluster.mark_up(member);
                    self.count_peer(member, "not_found");
                    return Err(ProxyError::BlobUnknown);
                }
                Err(e) => self.peer_failed(member, &e),
            }
        }
        Ok(None)
    }

    /// A manifest by tag or digest: from the owner of `key` when this replica is not
    /// it, else (or when no peer could answer) from upstream. The caller verifies it.
    pub(super) async fn fetch_manifest(
        &self,
        target: &Target,
        reference: &str,
        key: &str,
    ) -> Result<FetchedManifest, UpstreamError> {
        if let Some(cluster) = &self.cluster {
            for member in self.peers_for(target, key) {
                match cluster
                    .client
                    .get_manifest(&member, target.upstream_name(), &target.repo, reference)
                    .await
                {
                    Ok(m) => {
                        cluster.mark_up(&member);
                        self.count_peer(&member, "ok");
                        return Ok(m);
                    }
                    Err(PeerError::NotFound) => {
                        cluster.mark_up(&member);
                        self.count_peer(&member, "not_found");
                        return Err(UpstreamError::NotFound);
                    }
                    Err(e) => self.peer_failed(&member, &e),
                }
            }
        }
        target.upstream.get_manifest(&target.repo, reference).await
    }

    /// Bytes `first..end` of a blob coming from a peer, for a client. The whole blob is
    /// read and hashed (a range is cut out of it); the last byte goes out only once the
    /// digest matches. A body that breaks off resumes from the next peer, then here.
    pub(super) fn from_peer_stream(
        self: &Arc<Self>,
        (target, digest): (Target, Digest),
        from_peer: FromPeer,
        size: Option<u64>,
        (first, end): (u64, u64),
        reading: ReaderGuard,
    ) -> BlobStream {
        let proxy = self.clone();
        read::async_stream(move |tx| async move {
            let _reading = reading;
            let served = proxy.metrics.served_from_peer.clone();
            let mut hasher = DigestHasher::new();
            let mut held: Option<Bytes> = None;
            let mut rest = from_peer.rest;
            let mut feed = Feed::Peer(from_peer.body);
            let mut here_tried = false;
            loop {
                let broke = loop {
                    let chunk = match feed.next().await {
                        None => break None,
                        Some(Err(e)) => break Some(e),
                        Some(Ok(chunk)) => chunk,
                    };
                    let start = hasher.len();
                    hasher.update(&chunk);
                    let pos = hasher.len();
                    if size.is_some_and(|s| pos > s) {
                        return Err(io::Error::other("a peer sent more bytes than the blob has"));
                    }
                    let (lo, hi) = (first.max(start), end.min(pos));
                    if lo < hi {
                        let part = chunk.slice((lo - start) as usize..(hi - start) as usize);
                        if let Some(ready) = held.replace(part)
                            && !read::deliver(&served, &tx, ready).await
                        {
                            return Ok(());
                        }
                    }
                };
                let pos = hasher.len();
                if broke.is_none() && size.is_none_or(|s| pos == s) {
                    break;
                }
                let why = broke.unwrap_or_else(|| "the body ended early".into());
                if let Feed::Peer(body) = &feed {
                    let member = body.member().to_string();
                    self_failed(&proxy, &member, &why);
                }
                feed = match proxy.resume(&target, &digest, &mut rest, &mut here_tried, pos).await {
                    Some(next) => next,
                    None => {
                        return Err(io::Error::other(format!(
                            "the blob's bytes broke off at {pos} and no replica could go on: {why}"
                        )));
                    }
                };
            }
            let actual = hasher.finish();
            if actual != digest {
                warn!(upstream = %target.upstream.name, %digest, %actual, "blob from a cluster peer failed verification; not completed");
                proxy.metrics.verification_failed(&target.upstream.name);
                return Err(io::Error::other(format!(
                    "blob {digest} from a peer hashes to {actual}"
                )));
            }
            if let Some(last) = held {
                read::deliver(&served, &tx, last).await;
            }
            Ok(())
        })
    }

    /// The blob from byte `from` on, after a feed broke: the next peer that answers,
    /// else a fill here (once). `None` when nothing is left to try.
    async fn resume(
        self: &Arc<Self>,
        target: &Target,
        digest: &Digest,
        rest: &mut Vec<String>,
        here_tried: &mut bool,
        from: u64,
    ) -> Option<Feed> {
        self.metrics.fill_resumes.inc();
        let peers = std::mem::take(rest);
        if let Ok(Some(next)) = self.blob_from_peers(target, digest, &peers, from).await {
            *rest = next.rest;
            return Some(Feed::Peer(next.body));
        }
        if std::mem::replace(here_tried, true) {
            return None;
        }
        let mut here = target.clone();
        here.from_peer = true;
        let range = (from > 0).then_some(RangeSpec::FromTo {
            first: from,
            last: None,
        });
        let answer: std::pin::Pin<Box<dyn Future<Output = ProxyResult<super::BlobAnswer>> + Send + '_>> =
            Box::pin(self.blob_once(&here, digest, range));
        match answer.await {
            Ok(answer) => answer.body.map(Feed::Here),
            Err(e) => {
                warn!(%digest, error = %e, "cannot go on with a blob here after its owner broke off");
                None
            }
        }
    }
}

fn self_failed(proxy: &Proxy, member: &str, why: &str) {
    proxy.peer_failed(
        member,
        &PeerError::Unreachable {
            member: member.to_string(),
            cause: why.to_string(),
        },
    );
}
