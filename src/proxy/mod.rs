//! The proxy logic between HTTP and the cache/upstream: which upstream a client name
//! means, hit / miss / revalidate for manifests and tags (stale-if-error), local
//! `Accept` negotiation, and blob lookups that start or join single-flight fills.

pub mod fill;
pub mod read;
pub mod signatures;

use crate::cache::{BlobRecord, Cache, CacheError, ReaderGuard, StoredManifest, TagListPage, TagRecord, now_ms};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::oci::media::{self, AcceptSet};
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::upstream::{Upstream, UpstreamError};
use bytes::Bytes;
use fill::{Fill, FillError, FillRegistry, Lookup};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("unknown upstream or repository: {0}")]
    NameUnknown(String),
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("blob unknown")]
    BlobUnknown,
    #[error("{0}")]
    Denied(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream content failed verification: {0}")]
    Verification(String),
    #[error("cache error: {0}")]
    Cache(#[from] CacheError),
    #[error("storage error: {0}")]
    Storage(String),
}

impl From<FillError> for ProxyError {
    fn from(e: FillError) -> Self {
        match e {
            FillError::Upstream(UpstreamError::NotFound) => ProxyError::BlobUnknown,
            FillError::Upstream(u) => ProxyError::Upstream(u),
            FillError::Verification(v) => ProxyError::Verification(v),
            FillError::Storage(s) => ProxyError::Storage(s),
        }
    }
}

pub type ProxyResult<T> = Result<T, ProxyError>;

/// How a response was produced, for logs and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Stale,
    Revalidated,
    FillJoin,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::FillJoin => "fill-join",
        }
    }
}

/// A client's repository name resolved to an upstream and the upstream's name for it.
#[derive(Clone)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    pub repo: RepoName,
}

pub struct ManifestAnswer {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
    pub cache: CacheStatus,
}

/// A blob to stream, with the reader registration that keeps eviction away from it
/// (taken before the lookup, so nothing found can be evicted before it is served).
pub enum BlobAnswer {
    Cached {
        digest: Digest,
        record: BlobRecord,
        reading: ReaderGuard,
    },
    Filling {
        fill: Arc<Fill>,
        cache: CacheStatus,
        reading: ReaderGuard,
    },
}

pub struct Proxy {
    upstreams: Vec<Arc<Upstream>>,
    default_upstream: Option<usize>,
    pub cache: Cache,
    tag_ttl: Duration,
    pub fills: Arc<FillRegistry>,
    /// Whether `/v2/` advertises the signature extension API.
    pub signatures_extension: bool,
    pub metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(config: &Config, cache: Cache) -> Result<Proxy, String> {
        let secrets = config.read_secrets().map_err(|e| e.to_string())?;
        let metrics = Arc::new(Metrics::default());
        let upstreams = config
            .upstreams
            .iter()
            .zip(secrets)
            .map(|(u, secret)| Upstream::new(u, secret, metrics.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let default_upstream = config
            .default_upstream
            .as_ref()
            .and_then(|d| upstreams.iter().position(|u| &u.name == d));
        Ok(Proxy {
            upstreams,
            default_upstream,
            cache,
            tag_ttl: config.cache.tag_ttl.0,
            fills: Arc::new(FillRegistry::new(
                metrics.clone(),
                config.cache.max_concurrent_fills,
                config.cache.max_size.map(|m| m.0),
            )),
            signatures_extension: config.signatures.extension_api,
            metrics,
        })
    }

    /// Routing: `?ns=` first (a path already prefixed with that upstream, or one of its
    /// aliases, is not prefixed twice), then the longest leading path prefix naming an
    /// upstream or alias, then `default_upstream`.
    /// Resolves `name` and applies the upstream's allow/deny patterns: a refused name is
    /// `DENIED` and never fetched or served.
    pub fn resolve(&self, name: &RepoName, ns: Option<&str>) -> ProxyResult<Target> {
        let target = self.route(name, ns)?;
        if !target.upstream.permits(&target.repo) {
            return Err(ProxyError::Denied(format!(
                "{} is not in the repositories allowed from {}",
                target.repo, target.upstream.name
            )));
        }
        Ok(target)
    }

    fn route(&self, name: &RepoName, ns: Option<&str>) -> ProxyResult<Target> {
        let prefixes = |u: &Arc<Upstream>| {
            std::iter::once(u.name.clone())
                .chain(u.aliases.iter().cloned())
                .collect::<Vec<_>>()
        };
        if let Some(ns) = ns {
            let upstream = self
                .upstreams
                .iter()
                .find(|u| prefixes(u).iter().any(|p| p.eq_ignore_ascii_case(ns)))
                .ok_or_else(|| {
                    ProxyError::NameUnknown(format!("no upstream named {:?} is configured", truncate(ns)))
                })?;
            let repo = prefixes(upstream)
                .iter()
                .find_map(|p| name.strip_prefix(p))
                .unwrap_or_else(|| name.clone());
            return Ok(Target {
                upstream: upstream.clone(),
                repo,
            });
        }
        let by_prefix = self
            .upstreams
            .iter()
            .flat_map(|u| prefixes(u).into_iter().map(move |p| (u, p)))
            .filter(|(_, p)| name.has_prefix(p))
            .max_by_key(|(_, p)| p.len());
        if let Some((upstream, prefix)) = by_prefix {
            let repo = name
                .strip_prefix(&prefix)
                .ok_or_else(|| ProxyError::NameInvalid(format!("{name} names an upstream but no repository in it")))?;
            return Ok(Target {
                upstream: upstream.clone(),
                repo,
            });
        }
        match self.default_upstream {
            Some(i) => Ok(Target {
                upstream: self.upstreams[i].clone(),
                repo: name.clone(),
            }),
            None => Err(ProxyError::NameUnknown(format!(
                "{name} does not start with a configured upstream name and no default_upstream is set"
            ))),
        }
    }

    // ---- manifests ----------------------------------------------------------------

    pub async fn manifest(
        &self,
        target: &Target,
        reference: &Reference,
        accept: &AcceptSet,
    ) -> ProxyResult<ManifestAnswer> {
        match reference {
            Reference::Digest(d) => self.manifest_by_digest(target, d).await,
            Reference::Tag(t) => {
                let (stored_digest, stored, status) = self.resolve_tag(target, t).await?;
                self.negotiate(target, stored_digest, stored, status, accept).await
            }
        }
    }

    /// A manifest by digest: the stored bytes whatever the client accepts (Quay's
    /// semantics), fetched and verified on a miss.
    async fn manifest_by_digest(&self, target: &Target, digest: &Digest) -> ProxyResult<ManifestAnswer> {
        if let Some(m) = self.stored_manifest(digest).await? {
            return Ok(ManifestAnswer {
                digest: digest.clone(),
                media_type: m.media_type,
                bytes: m.bytes,
                cache: CacheStatus::Hit,
            });
        }
        let fetched = match target.upstream.get_manifest(&target.repo, &digest.to_string()).await {
            Err(UpstreamError::NotFound) => return Err(ProxyError::ManifestUnknown(digest.to_string())),
            other => other?,
        };
        let actual = Digest::of(&fetched.bytes);
        if &actual != digest {
            warn!(upstream = %target.upstream.name, %digest, %actual, "manifest failed verification; discarded");
            self.metrics.inc(
                "pullgate_verification_failures_total",
                &[("upstream", &target.upstream.name)],
                1,
            );
            return Err(ProxyError::Verification(format!(
                "manifest {digest} hashes to {actual}"
            )));
        }
        let media_type = media::manifest_media_type(fetched.content_type.as_deref(), &fetched.bytes);
        self.cache
            .put_manifest(digest, &media_type, fetched.bytes.clone())
            .await?;
        Ok(ManifestAnswer {
            digest: digest.clone(),
            media_type,
            bytes: fetched.bytes,
            cache: CacheStatus::Miss,
        })
    }

    /// A stored manifest, re-checked against its digest (cheap: manifests are small).
    async fn stored_manifest(&self, digest: &Digest) -> ProxyResult<Option<StoredManifest>> {
        match self.cache.manifest(digest).await {
            Ok(Some(m)) => {
                self.cache.touch_manifest(digest);
                Ok(Some(m))
            }
            Err(CacheError::ManifestMismatch(_)) => {
                warn!(%digest, "stored manifest does not match its digest; dropping it and refetching");
                self.cache.remove_manifest(digest).await?;
                self.metrics.inc("pullgate_evictions_total", &[], 1);
                Ok(None)
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Resolves a tag: fresh mapping → local; stale → HEAD revalidation; upstream
    /// trouble → the last known mapping (stale-if-error).
    async fn resolve_tag(&self, target: &Target, tag: &Tag) -> ProxyResult<(Digest, StoredManifest, CacheStatus)> {
        let upstream_name = target.upstream.name.as_str();
        let repo = target.repo.as_str();
        let known = self.cache.tag(upstream_name, repo, tag.as_str()).await?;
        let known = match known {
            Some(rec) => {
                let digest = Digest::parse(&rec.digest).ok();
                let stored = match &digest {
                    Some(d) => self.stored_manifest(d).await?,
                    None => None,
                };
                digest.zip(stored).map(|(d, m)| (d, m, rec))
            }
            None => None,
        };
        if let Some((digest, stored, rec)) = &known {
            let age = now_ms().saturating_sub(rec.fetched_ms);
            if age < self.ttl_for(tag).as_millis() as u64 {
                return Ok((digest.clone(), stored.clone(), CacheStatus::Hit));
            }
            match target.upstream.head_manifest(&target.repo, tag.as_str()).await {
                Ok(head) if head.digest.as_ref() == Some(digest) => {
                    self.remember_tag(target, tag, digest, &stored.media_type).await?;
                    return Ok((digest.clone(), stored.clone(), CacheStatus::Revalidated));
                }
                Ok(_) => {} // moved, or no digest header: fetch it
                Err(e) if e.is_transient() => {
                    warn!(upstream = %upstream_name, repo, tag = %tag, error = %e, "upstream unavailable; serving the last known tag mapping");
                    return Ok((digest.clone(), stored.clone(), CacheStatus::Stale));
                }
                Err(UpstreamError::NotFound) => return Err(ProxyError::ManifestUnknown(format!("{repo}:{tag}"))),
                Err(e) => return Err(e.into()),
            }
        }
        match target.upstream.get_manifest(&target.repo, tag.as_str()).await {
            Ok(fetched) => {
                let digest = Digest::of(&fetched.bytes);
                if let Some(claimed) = fetched.digest_header.as_deref().and_then(|h| Digest::parse(h).ok())
                    && claimed != digest
                {
                    warn!(upstream = %upstream_name, repo, tag = %tag, %claimed, actual = %digest, "manifest does not match the digest upstream announced; discarded");
                    return Err(ProxyError::Verification(format!(
                        "manifest for {repo}:{tag} does not match Docker-Content-Digest"
                    )));
                }
                let media_type = media::manifest_media_type(fetched.content_type.as_deref(), &fetched.bytes);
                self.cache
                    .put_manifest(&digest, &media_type, fetched.bytes.clone())
                    .await?;
                self.remember_tag(target, tag, &digest, &media_type).await?;
                if known.as_ref().is_some_and(|(d, _, _)| d != &digest) {
                    info!(upstream = %upstream_name, repo, tag = %tag, %digest, "tag moved upstream");
                }
                Ok((
                    digest,
                    StoredManifest {
                        media_type,
                        bytes: fetched.bytes,
                    },
                    CacheStatus::Miss,
                ))
            }
            Err(e) if e.is_transient() => match known {
                Some((digest, stored, _)) => {
                    warn!(upstream = %upstream_name, repo, tag = %tag, error = %e, "upstream unavailable; serving the last known tag mapping");
                    Ok((digest, stored, CacheStatus::Stale))
                }
                None => Err(e.into()),
            },
            Err(UpstreamError::NotFound) => Err(ProxyError::ManifestUnknown(format!("{repo}:{tag}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// Signature and attestation tags (`sha256-<hex>.sig`, cosign's tag schema) change
    /// as signatures are added, so they are trusted for at most a minute.
    fn ttl_for(&self, tag: &Tag) -> Duration {
        if tag.as_str().starts_with("sha256-") {
            self.tag_ttl.min(Duration::from_secs(60))
        } else {
            self.tag_ttl
        }
    }

    async fn remember_tag(&self, target: &Target, tag: &Tag, digest: &Digest, media_type: &str) -> ProxyResult<()> {
        let record = TagRecord {
            digest: digest.to_string(),
            media_type: media_type.to_string(),
            fetched_ms: now_ms(),
        };
        Ok(self
            .cache
            .put_tag(&target.upstream.name, target.repo.as_str(), tag.as_str(), record)
            .await?)
    }

    /// Local negotiation for a tag: the stored manifest if the client accepts its type;
    /// for an index the client cannot take, the linux/amd64 image (as distribution does);
    /// else `MANIFEST_UNKNOWN`. Never a conversion.
    async fn negotiate(
        &self,
        target: &Target,
        digest: Digest,
        stored: StoredManifest,
        status: CacheStatus,
        accept: &AcceptSet,
    ) -> ProxyResult<ManifestAnswer> {
        if accept.accepts(&stored.media_type) {
            return Ok(ManifestAnswer {
                digest,
                media_type: stored.media_type,
                bytes: stored.bytes,
                cache: status,
            });
        }
        if media::is_index(&stored.media_type) && accept.accepts_image_manifest() {
            let child = media::index_entries(&stored.bytes).into_iter().find(|e| {
                e.os.as_deref() == Some("linux")
                    && e.architecture.as_deref() == Some("amd64")
                    && accept.accepts(&e.media_type)
            });
            if let Some(child) = child {
                let child_digest = Digest::parse(&child.digest)
                    .map_err(|_| ProxyError::Verification("index names an invalid child digest".into()))?;
                let mut answer = self.manifest_by_digest(target, &child_digest).await?;
                answer.cache = status;
                return Ok(answer);
            }
        }
        Err(ProxyError::ManifestUnknown(format!(
            "the manifest is {} and the client does not accept it",
            stored.media_type
        )))
    }

    // ---- blobs --------------------------------------------------------------------

    pub async fn blob(&self, target: &Target, digest: &Digest) -> ProxyResult<BlobAnswer> {
        let reading = self.cache.reading(digest);
        if let Some(record) = self.cache.blob(digest).await? {
            self.cache.touch_blob(digest);
            return Ok(BlobAnswer::Cached {
                digest: digest.clone(),
                record,
                reading,
            });
        }
        match self
            .fills
            .get_or_start(&self.cache, target.upstream.clone(), target.repo.clone(), digest)
            .await?
        {
            Lookup::Cached(record) => Ok(BlobAnswer::Cached {
                digest: digest.clone(),
                record,
                reading,
            }),
            Lookup::Filling(fill, joined) => {
                let progress = fill.started().await;
                if let Some(Err(e)) = progress.outcome {
                    return Err(e.into());
                }
                let cache = if joined {
                    CacheStatus::FillJoin
                } else {
                    CacheStatus::Miss
                };
                Ok(BlobAnswer::Filling { fill, cache, reading })
            }
        }
    }

    /// The size of a blob for HEAD: cached, being filled, or asked of upstream.
    pub async fn blob_size(&self, target: &Target, digest: &Digest) -> ProxyResult<(Option<u64>, CacheStatus)> {
        if let Some(record) = self.cache.blob(digest).await? {
            return Ok((Some(record.size), CacheStatus::Hit));
        }
        match target.upstream.head_blob(&target.repo, digest).await {
            Ok(size) => Ok((size, CacheStatus::Miss)),
            Err(UpstreamError::NotFound) => Err(ProxyError::BlobUnknown),
            Err(e) => Err(e.into()),
        }
    }

    // ---- tag lists ----------------------------------------------------------------

    /// One page of the tag list, from upstream or (when it is unavailable) as last seen.
    pub async fn tags_list(&self, target: &Target, query: &str) -> ProxyResult<(TagListPage, CacheStatus)> {
        let upstream_name = target.upstream.name.as_str();
        let repo = target.repo.as_str();
        match target.upstream.tags_list(&target.repo, query).await {
            Ok((body, next)) => {
                let body = String::from_utf8(body.to_vec())
                    .map_err(|_| ProxyError::Upstream(UpstreamError::Protocol("tag list is not UTF-8".into())))?;
                let page = TagListPage { body, next };
                self.cache
                    .put_tag_list(upstream_name, repo, query, page.clone())
                    .await?;
                Ok((page, CacheStatus::Miss))
            }
            Err(e) if e.is_transient() => match self.cache.tag_list(upstream_name, repo, query).await? {
                Some(page) => {
                    warn!(upstream = %upstream_name, repo, error = %e, "upstream unavailable; serving the last known tag list");
                    Ok((page, CacheStatus::Stale))
                }
                None => Err(e.into()),
            },
            Err(UpstreamError::NotFound) => Err(ProxyError::NameUnknown(format!("{repo} is not known upstream"))),
            Err(e) => Err(e.into()),
        }
    }
}

/// Counters a running proxy saves in the database for `pullgate cache stats`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ProxyStats {
    pub started_ms: u64,
    pub saved_ms: u64,
    /// Lookups answered from the cache (hit, revalidated, stale).
    pub hits: u64,
    /// Lookups that needed upstream (miss, fill-join).
    pub misses: u64,
    pub bytes_from_cache: u64,
    pub bytes_from_upstream: u64,
}

impl ProxyStats {
    pub fn hit_ratio(&self) -> Option<f64> {
        let total = self.hits + self.misses;
        (total > 0).then(|| self.hits as f64 / total as f64)
    }
}

impl Proxy {
    /// Saves this run's counters to the database.
    pub async fn save_stats(&self, started_ms: u64) -> ProxyResult<()> {
        let m = &self.metrics;
        let lookups = |result| m.counter_sum("pullgate_cache_lookups_total", &[("result", result)]);
        let stats = ProxyStats {
            started_ms,
            saved_ms: now_ms(),
            hits: lookups("hit") + lookups("revalidated") + lookups("stale"),
            misses: lookups("miss") + lookups("fill-join"),
            bytes_from_cache: m.counter("pullgate_served_bytes_total", &[("source", "cache")]),
            bytes_from_upstream: m.counter("pullgate_served_bytes_total", &[("source", "upstream")]),
        };
        Ok(self.cache.put_meta("proxy_stats", stats).await?)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
