//! pullgate as `prefetch` reaches it: as a registry (manifests, blobs, and a blob HEAD
//! with `Cache-Control: only-if-cached` that says whether it is held without fetching
//! it), and its OpenShift routes (the update graph, release signatures). Every blob read
//! is hashed; a blob read as a stream for its contents (a release payload's or a
//! catalog's layers) is only trusted once its last byte matched the digest.

use crate::oci::media;
use crate::oci::{Digest, DigestHasher, RepoName};
use crate::upstream::{Credentials, Upstream, UpstreamSettings};
use bytes::Bytes;
use std::sync::Arc;

/// A manifest as pullgate served it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        media::is_index(&media::essence(&self.media_type))
    }
}

pub struct Pullgate {
    registry: Upstream,
    base: url::Url,
}

/// How many release signatures the store protocol numbers (1 to 9).
const RELEASE_SIGNATURES: u32 = 9;

impl Pullgate {
    pub fn new(base: url::Url, credentials: Option<Credentials>) -> Result<Pullgate, String> {
        let mut settings = UpstreamSettings::new("pullgate", base.clone());
        settings.credentials = credentials;
        settings.circuit_breaker = false;
        // Blob reads are paced by the fills behind pullgate, not by a deadline.
        settings.body_idle_timeout = std::time::Duration::from_secs(300);
        settings.response_timeout = std::time::Duration::from_secs(300);
        let registry = Upstream::new(settings, Arc::new(crate::metrics::Metrics::new())).map_err(|e| e.to_string())?;
        Ok(Pullgate { registry, base })
    }

    /// A manifest by tag or digest; by digest, its bytes must hash to it.
    pub async fn manifest(&self, name: &RepoName, reference: &str) -> Result<Manifest, String> {
        let fetched = self
            .registry
            .get_manifest(name, reference)
            .await
            .map_err(|e| format!("{name}:{reference}: {e}"))?;
        let digest = Digest::of(&fetched.bytes);
        if reference.contains(':') && digest.to_string() != reference {
            return Err(format!("{name}@{reference}: manifest does not match its digest"));
        }
        Ok(Manifest {
            digest,
            media_type: fetched.content_type.unwrap_or_default(),
            bytes: fetched.bytes,
        })
    }

    /// The blob's size when pullgate holds it (nothing is fetched), else `None`.
    pub async fn cached(&self, name: &RepoName, digest: &Digest) -> Result<Option<u64>, String> {
        self.registry
            .blob_cached(name, digest)
            .await
            .map_err(|e| format!("blob {digest}: {e}"))
    }

    /// Reads the whole blob through pullgate, verifying it; `progress` is told the
    /// bytes as they come. Returns the size.
    pub async fn fetch_blob(&self, name: &RepoName, digest: &Digest, progress: impl Fn(u64)) -> Result<u64, String> {
        let mut body = self
            .registry
            .get_blob(name, digest, 0)
            .await
            .map_err(|e| format!("blob {digest}: {e}"))?;
        let mut hasher = DigestHasher::new();
        while let Some(chunk) = body.next_chunk().await {
            let chunk = chunk.map_err(|e| format!("blob {digest}: {e}"))?;
            hasher.update(&chunk);
            progress(chunk.len() as u64);
        }
        let size = hasher.len();
        if &hasher.finish() != digest {
            return Err(format!("blob {digest}: bytes do not match the digest"));
        }
        Ok(size)
    }

    /// The blob as a blocking reader (for `spawn_blocking`): frames arrive through a
    /// small channel; the reader fails at the end if the bytes did not match the
    /// digest, so a caller that reads to the end knows what it parsed was verified.
    pub async fn blob_reader(&self, name: &RepoName, digest: &Digest) -> Result<BlobReader, String> {
        let mut body = self
            .registry
            .get_blob(name, digest, 0)
            .await
            .map_err(|e| format!("blob {digest}: {e}"))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(4);
        let digest = digest.clone();
        tokio::spawn(async move {
            let mut hasher = DigestHasher::new();
            while let Some(chunk) = body.next_chunk().await {
                let frame = chunk.map_err(|e| format!("blob {digest}: {e}"));
                if let Ok(bytes) = &frame {
                    hasher.update(bytes);
                }
                let failed = frame.is_err();
                if tx.send(frame).await.is_err() || failed {
                    return;
                }
            }
            if hasher.finish() != digest {
                let _ = tx
                    .send(Err(format!("blob {digest}: bytes do not match the digest")))
                    .await;
            }
        });
        Ok(BlobReader {
            rx,
            current: Bytes::new(),
        })
    }

    fn url(&self, path_and_query: &str) -> Result<url::Url, String> {
        let base = self.base.as_str().trim_end_matches('/');
        url::Url::parse(&format!("{base}{path_and_query}")).map_err(|e| e.to_string())
    }

    /// The update graph of `channel` for `arch`, as pullgate serves it (and caches it
    /// for the clusters that will ask the same).
    pub async fn update_graph(&self, channel: &str, arch: &str) -> Result<Bytes, String> {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("channel", channel)
            .append_pair("arch", arch)
            .finish();
        let url = self.url(&format!("/openshift/graph?{query}"))?;
        let document = self
            .registry
            .get_document(url, Some("application/json"), 64 << 20)
            .await
            .map_err(|e| format!("update graph of {channel} ({arch}): {e}"))?;
        match document.status {
            200 => Ok(document.body),
            404 => Err(format!(
                "update graph of {channel} ({arch}): pullgate has no [openshift] section, or the graph service does not know the channel"
            )),
            s => Err(format!(
                "update graph of {channel} ({arch}): pullgate answered HTTP {s}"
            )),
        }
    }

    /// Asks pullgate for every release signature of the release image `digest` (1, 2, …
    /// until the first missing one), so they are held for offline clusters. Returns how
    /// many there are.
    pub async fn release_signatures(&self, digest: &Digest) -> Result<u32, String> {
        Ok(self.release_signature_bytes(digest).await?.len() as u32)
    }

    /// Every release signature of `digest` that pullgate serves, in order.
    pub async fn release_signature_bytes(&self, digest: &Digest) -> Result<Vec<Bytes>, String> {
        let mut found = Vec::new();
        for n in 1..=RELEASE_SIGNATURES {
            let url = self.url(&format!("/openshift/signatures/sha256={}/signature-{n}", digest.hex()))?;
            let document = self
                .registry
                .get_document(url, None, 64 * 1024)
                .await
                .map_err(|e| format!("release signature {n} of {digest}: {e}"))?;
            match document.status {
                200 => found.push(document.body),
                404 => break,
                s => return Err(format!("release signature {n} of {digest}: pullgate answered HTTP {s}")),
            }
        }
        Ok(found)
    }

    /// A figure from pullgate's `/metrics` (a gauge without labels), if it exports it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let url = self.url("/metrics").ok()?;
        let document = self.registry.get_document(url, None, 16 << 20).await.ok()?;
        let text = std::str::from_utf8(&document.body).ok()?;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// A blob read as a blocking stream (see [`Pullgate::blob_reader`]).
pub struct BlobReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl std::io::Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl BlobReader {
    /// Reads what is left, so the digest check at the end runs: what was read before
    /// is only trusted when this succeeds.
    pub fn finish(mut self) -> std::io::Result<()> {
        std::io::copy(&mut self, &mut std::io::sink()).map(|_| ())
    }
}
