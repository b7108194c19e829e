//! What OpenShift clusters ask besides images, decided here: release signatures (a
//! signature once fetched is served forever, offline too; a missing one is asked again
//! after `missing_signature_ttl`), and the update graph (each query fresh for
//! `graph_ttl`, then asked again; served stale when the graph service cannot be
//! reached, from the same query or else the latest answer for the same channel and
//! architecture).

use super::{CacheStatus, Proxy, ProxyError, ProxyResult};
use crate::cache::{SignatureEntry, StoredGraph, now_ms};
use crate::oci::Digest;
use crate::upstream::openshift::{GraphQuery, OpenShiftClient};
use bytes::Bytes;
use std::time::Duration;
use tracing::warn;

/// Signatures per release image in the cluster-version operator's store protocol.
pub const MAX_RELEASE_SIGNATURES: u32 = 9;

/// `[openshift]` as the proxy uses it.
pub struct OpenShift {
    pub client: OpenShiftClient,
    pub graph_ttl: Duration,
    pub missing_signature_ttl: Duration,
}

/// An update graph for a client.
pub struct GraphAnswer {
    pub body: Bytes,
    pub content_type: String,
    pub cache: CacheStatus,
}

impl Proxy {
    /// Serves `[openshift]`'s signatures and graph.
    pub fn with_openshift(mut self, openshift: OpenShift) -> Proxy {
        self.openshift = Some(openshift);
        self
    }

    /// Whether `[openshift]` is configured.
    pub fn serves_openshift(&self) -> bool {
        self.openshift.is_some()
    }

    fn openshift(&self) -> ProxyResult<&OpenShift> {
        self.openshift
            .as_ref()
            .ok_or_else(|| ProxyError::NameUnknown("this pullgate has no [openshift] section".into()))
    }

    /// Release signature `index` (1 to 9) of the release image `digest`, byte-exact as
    /// the store sent it; `None` when there is none.
    pub async fn release_signature(&self, digest: &Digest, index: u32) -> ProxyResult<Option<Bytes>> {
        let openshift = self.openshift()?;
        if index == 0 || index > MAX_RELEASE_SIGNATURES {
            return Ok(None);
        }
        let cached = self.cache.release_signature(digest, index).await?;
        match &cached {
            Some(SignatureEntry::Present(bytes)) => return Ok(Some(bytes.clone())),
            Some(SignatureEntry::Absent { checked_ms })
                if now_ms().saturating_sub(*checked_ms) < openshift.missing_signature_ttl.as_millis() as u64 =>
            {
                return Ok(None);
            }
            _ => {}
        }
        match openshift.client.release_signature(digest, index).await {
            Ok(found) => {
                let entry = match &found {
                    Some(bytes) => SignatureEntry::Present(bytes.clone()),
                    None => SignatureEntry::Absent { checked_ms: now_ms() },
                };
                self.cache.put_release_signature(digest, index, entry).await?;
                Ok(found)
            }
            Err(e) if e.is_transient() && cached.is_some() => {
                warn!(%digest, index, error = %e, "release signature store unavailable; answering from what is known");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The update graph for `query`: fresh from the cache, else from the graph service,
    /// else stale.
    pub async fn update_graph(&self, query: &GraphQuery) -> ProxyResult<GraphAnswer> {
        let openshift = self.openshift()?;
        let key = [
            query.channel.clone(),
            query.arch.clone(),
            query.id.clone(),
            query.version.clone(),
        ];
        let cached = self.cache.update_graph(key.clone()).await?;
        if let Some(g) = &cached
            && now_ms().saturating_sub(g.fetched_ms) < openshift.graph_ttl.as_millis() as u64
        {
            return Ok(answer(g.clone(), CacheStatus::Hit));
        }
        match openshift.client.update_graph(query).await {
            Ok(document) => {
                let graph = StoredGraph {
                    fetched_ms: now_ms(),
                    content_type: document.content_type,
                    body: document.body,
                };
                self.cache.put_update_graph(key, graph.clone()).await?;
                Ok(answer(graph, CacheStatus::Miss))
            }
            // Whatever went wrong (unreachable, an error status, not JSON), an answer
            // known before is better for a cluster than none.
            Err(e) => {
                let stale = match cached {
                    Some(g) => Some(g),
                    None => {
                        self.cache
                            .latest_update_graph(query.channel.clone(), query.arch.clone())
                            .await?
                    }
                };
                match stale {
                    Some(g) => {
                        warn!(query = %query.to_query_string(), age_s = now_ms().saturating_sub(g.fetched_ms) / 1000, error = %e, "update graph service unavailable; serving the last answer");
                        Ok(answer(g, CacheStatus::Stale))
                    }
                    None => Err(e.into()),
                }
            }
        }
    }
}

fn answer(graph: StoredGraph, cache: CacheStatus) -> GraphAnswer {
    GraphAnswer {
        body: graph.body,
        // The cluster-version operator wants JSON; the service says so too.
        content_type: graph
            .content_type
            .filter(|t| t.starts_with("application/json"))
            .unwrap_or_else(|| "application/json".into()),
        cache,
    }
}
