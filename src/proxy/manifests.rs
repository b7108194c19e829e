//! Manifests for clients: by digest (stored bytes, or fetched and verified), and by tag
//! (a fresh mapping served locally, a stale one revalidated with a HEAD, the last known
//! one when upstream is unavailable), negotiated locally against the client's `Accept`.

use super::owners::tag_key;
use super::{CacheStatus, Proxy, ProxyError, ProxyResult, Target};
use crate::cache::{CacheError, StoredManifest, TagRecord, now_ms};
use crate::oci::image::index_entries;
use crate::oci::media::{self, AcceptSet};
use crate::oci::{Digest, Reference, Tag};
use crate::upstream::{ManifestHead, UpstreamError};
use bytes::Bytes;
use std::time::Duration;
use tracing::{info, warn};

pub struct ManifestAnswer {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
    pub cache: CacheStatus,
    /// The signature policy's verdict, when the upstream has a policy.
    pub verdict: Option<crate::trust::Verdict>,
}

impl Proxy {
    pub async fn manifest(
        &self,
        target: &Target,
        reference: &Reference,
        accept: &AcceptSet,
    ) -> ProxyResult<ManifestAnswer> {
        match reference {
            Reference::Digest(d) => {
                let mut answer = self.manifest_by_digest(target, d).await?;
                answer.verdict = self
                    .apply_policy(target, None, &answer.digest, &answer.bytes, &answer.media_type)
                    .await?;
                Ok(answer)
            }
            Reference::Tag(t) => {
                let (stored_digest, stored, status) = self.resolve_tag(target, t).await?;
                // The tag's own manifest answers to the policy (an index covers the
                // platform manifest negotiation may choose).
                let verdict = self
                    .apply_policy(
                        target,
                        Some(t.as_str()),
                        &stored_digest,
                        &stored.bytes,
                        &stored.media_type,
                    )
                    .await?;
                let mut answer = self
                    .negotiate(target, stored_digest.clone(), stored, status, accept)
                    .await?;
                if answer.digest != stored_digest {
                    let child = self
                        .apply_policy(target, None, &answer.digest, &answer.bytes, &answer.media_type)
                        .await?;
                    answer.verdict = child.or(verdict);
                } else {
                    answer.verdict = verdict;
                }
                Ok(answer)
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
                verdict: None,
            });
        }
        let reference = digest.to_string();
        let fetched = match self.fetch_manifest(target, &reference, || reference.clone()).await {
            Err(UpstreamError::NotFound) => return Err(ProxyError::ManifestUnknown(digest.to_string())),
            other => other?,
        };
        let actual = Digest::of(&fetched.bytes);
        if &actual != digest {
            warn!(upstream = %target.upstream.name, %digest, %actual, "manifest failed verification; discarded");
            self.metrics.verification_failed(&target.upstream.name);
            return Err(ProxyError::Verification(format!(
                "manifest {digest} hashes to {actual}"
            )));
        }
        let media_type = media::manifest_media_type(fetched.content_type.as_deref(), &fetched.bytes);
        let kept = self
            .cache
            .put_manifest(digest, &media_type, fetched.bytes.clone())
            .await;
        served_if_not_kept(kept.map_err(ProxyError::from), digest)?;
        Ok(ManifestAnswer {
            digest: digest.clone(),
            media_type,
            bytes: fetched.bytes,
            cache: CacheStatus::Miss,
            verdict: None,
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
                self.metrics.evictions.inc();
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
            // Clustered, the tag's owner revalidates it: asked with a GET below.
            let revalidation = if self.peers_for(target, || tag_key(target, tag.as_str())).is_empty() {
                target.upstream.head_manifest(&target.repo, tag.as_str()).await
            } else {
                Ok(ManifestHead {
                    digest: None,
                    content_type: None,
                })
            };
            match revalidation {
                Ok(head) if head.digest.as_ref() == Some(digest) => {
                    served_if_not_kept(self.remember_tag(target, tag, digest, &stored.media_type).await, digest)?;
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
        match self
            .fetch_manifest(target, tag.as_str(), || tag_key(target, tag.as_str()))
            .await
        {
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
                let kept = match self
                    .cache
                    .put_manifest(&digest, &media_type, fetched.bytes.clone())
                    .await
                {
                    Ok(()) => self.remember_tag(target, tag, &digest, &media_type).await,
                    Err(e) => Err(e.into()),
                };
                served_if_not_kept(kept, &digest)?;
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
                verdict: None,
            });
        }
        if media::is_index(&stored.media_type) && accept.accepts_image_manifest() {
            let child = index_entries(&stored.bytes).into_iter().find(|e| {
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
}

/// A verified manifest the cache could not keep because its storage cannot write now (a
/// full disk, a database that refuses writes) is served all the same, without being
/// kept: the client gets verified bytes, the next request fetches again. Other failures
/// stay failures.
fn served_if_not_kept(kept: ProxyResult<()>, digest: &Digest) -> ProxyResult<()> {
    match kept {
        Err(e) if e.storage_cannot_write() => {
            tracing::debug!(%digest, error = %e, "the cache cannot write now; serving the verified manifest without keeping it");
            Ok(())
        }
        other => other,
    }
}
