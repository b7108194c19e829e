//! OpenShift's side tables: release signatures (present forever, absent with the time
//! the store said so) and update-graph answers by query (with their fetch time, so a
//! stale one can be served when the graph service is unreachable). Both live in the
//! database, so they survive a restart and serve an offline cluster.

use super::keys;
use super::{Cache, CacheError, CacheResult, SignatureEntry};
use crate::oci::Digest;
use bytes::Bytes;

/// An update-graph answer as the service sent it, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGraph {
    pub fetched_ms: u64,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl StoredGraph {
    /// `fetched_ms` (8 bytes, big-endian), the content type and a newline, the body:
    /// the body is megabytes of JSON and is stored as it came.
    fn encode(&self) -> Vec<u8> {
        let content_type = self.content_type.as_deref().unwrap_or_default().replace('\n', "");
        let mut v = Vec::with_capacity(8 + content_type.len() + 1 + self.body.len());
        v.extend_from_slice(&self.fetched_ms.to_be_bytes());
        v.extend_from_slice(content_type.as_bytes());
        v.push(b'\n');
        v.extend_from_slice(&self.body);
        v
    }

    fn decode(value: &[u8]) -> CacheResult<StoredGraph> {
        let corrupt = || CacheError::Corrupt("update graph entry".into());
        let (ms, rest) = value.split_at_checked(8).ok_or_else(corrupt)?;
        let newline = rest.iter().position(|b| *b == b'\n').ok_or_else(corrupt)?;
        let content_type = std::str::from_utf8(&rest[..newline]).map_err(|_| corrupt())?;
        Ok(StoredGraph {
            fetched_ms: u64::from_be_bytes(ms.try_into().map_err(|_| corrupt())?),
            content_type: (!content_type.is_empty()).then(|| content_type.to_string()),
            body: Bytes::copy_from_slice(&rest[newline + 1..]),
        })
    }
}

impl Cache {
    /// What is known of release signature `index` of the release image `digest`.
    pub async fn release_signature(&self, digest: &Digest, index: u32) -> CacheResult<Option<SignatureEntry>> {
        let key = keys::release_signature(digest, index);
        self.blocking(move |i| i.signatures.get(key)?.map(|v| SignatureEntry::decode(&v)).transpose())
            .await
    }

    pub async fn put_release_signature(&self, digest: &Digest, index: u32, entry: SignatureEntry) -> CacheResult<()> {
        let key = keys::release_signature(digest, index);
        let value = entry.encode();
        self.blocking(move |i| {
            i.signatures.insert(key, value)?;
            Ok(())
        })
        .await
    }

    /// The last answer to exactly this graph query (`channel`, `arch`, `id`, `version`).
    pub async fn update_graph(&self, query: [Option<String>; 4]) -> CacheResult<Option<StoredGraph>> {
        let key = keys::update_graph(&query);
        self.blocking(move |i| i.responses.get(key)?.map(|v| StoredGraph::decode(&v)).transpose())
            .await
    }

    /// The most recently fetched answer for `channel` and `arch`, whatever the cluster
    /// id and version it was asked with (an offline cluster asking for the first time).
    pub async fn latest_update_graph(
        &self,
        channel: Option<String>,
        arch: Option<String>,
    ) -> CacheResult<Option<StoredGraph>> {
        let prefix = keys::update_graph_prefix(channel.as_deref(), arch.as_deref());
        self.blocking(move |i| {
            let mut best: Option<StoredGraph> = None;
            for entry in i.responses.scan_prefix(prefix) {
                let (_, v) = entry?;
                let g = StoredGraph::decode(&v)?;
                if best.as_ref().is_none_or(|b| g.fetched_ms > b.fetched_ms) {
                    best = Some(g);
                }
            }
            Ok(best)
        })
        .await
    }

    pub async fn put_update_graph(&self, query: [Option<String>; 4], graph: StoredGraph) -> CacheResult<()> {
        let key = keys::update_graph(&query);
        let value = graph.encode();
        self.blocking(move |i| {
            i.responses.insert(key, value)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_entries_round_trip() {
        for (ct, body) in [(Some("application/json"), &b"{\"nodes\":[]}"[..]), (None, &b""[..])] {
            let g = StoredGraph {
                fetched_ms: 1_700_000_000_123,
                content_type: ct.map(str::to_string),
                body: Bytes::copy_from_slice(body),
            };
            assert_eq!(StoredGraph::decode(&g.encode()).unwrap(), g);
        }
        assert!(StoredGraph::decode(b"short").is_err());
        assert!(StoredGraph::decode(&[0u8; 9]).is_err());
    }
}
