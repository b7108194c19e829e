//! The cache's side tables: manifests (inline, byte-exact, checked against their digest
//! when read from disk), tag mappings, tag-list pages, lookaside signatures, kept
//! referrers answers and small named values.

use super::keys::Kind;
use super::records::{decode, encode, manifest_meta, parse_manifest_meta};
use super::{
    Cache, CacheError, CacheResult, Inner, SignatureEntry, StoredManifest, StoredResponse, TagListPage, TagRecord,
    TxResult, add, committed, keys, now_ms, page, sub,
};
use crate::oci::Digest;
use bytes::Bytes;
use serde::Serialize;
use sled::transaction::Transactional;

impl Cache {
    /// A stored manifest, whose bytes hash to `digest`: checked when read from the
    /// database (a mismatch is [`CacheError::ManifestMismatch`]); the in-memory hot set
    /// holds only checked bytes (and those callers verified before `put_manifest`), so a
    /// hit there needs no re-hash.
    pub async fn manifest(&self, digest: &Digest) -> CacheResult<Option<StoredManifest>> {
        if let Some(m) = self.hot().manifest(digest) {
            return Ok(Some(m));
        }
        let d = digest.clone();
        let found = self
            .blocking(move |i| {
                i.manifests
                    .get(keys::digest(&d))?
                    .map(|v| StoredManifest::decode(&v))
                    .transpose()
            })
            .await?;
        match &found {
            Some(m) => {
                if Digest::of(&m.bytes) != *digest {
                    return Err(CacheError::ManifestMismatch(digest.clone()));
                }
                self.hot().put_manifest(digest, m);
                Ok(found)
            }
            None => {
                let d = digest.clone();
                self.blocking(move |i| i.adopt_manifest(&d)).await
            }
        }
    }

    /// Stores a manifest the caller has verified against `digest`.
    pub async fn put_manifest(&self, digest: &Digest, media_type: &str, bytes: Bytes) -> CacheResult<()> {
        let manifest = StoredManifest {
            media_type: media_type.replace('\n', ""),
            bytes,
        };
        self.hot().put_manifest(digest, &manifest);
        let d = digest.clone();
        let value = manifest.encode();
        self.blocking(move |i| {
            i.put_manifest(&d, value, now_ms())?;
            i.share_manifest(&d, &manifest.media_type, manifest.bytes);
            Ok(())
        })
        .await
    }

    pub async fn remove_manifest(&self, digest: &Digest) -> CacheResult<()> {
        self.hot().remove_manifest(digest);
        let d = digest.clone();
        self.blocking(move |i| i.remove_manifest(&d).map(|_| ())).await
    }

    /// Up to `limit` stored manifests' digests in order, after `after`.
    pub async fn manifests_page(&self, after: Option<Digest>, limit: usize) -> CacheResult<Vec<Digest>> {
        self.blocking(move |i| {
            let start = after.as_ref().map(|d| keys::digest(d).to_vec());
            let mut out = Vec::with_capacity(limit.min(1024));
            for k in page(&i.manifests, start).keys() {
                if let Some(d) = keys::parse_digest(&k?) {
                    out.push(d);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn tag(&self, upstream: &str, repo: &str, tag: &str) -> CacheResult<Option<TagRecord>> {
        let key = keys::scoped(upstream, repo, tag);
        if let Some(r) = self.hot().tag(&key) {
            return Ok(Some(r));
        }
        let k = key.clone();
        let (u, r, t) = (upstream.to_string(), repo.to_string(), tag.to_string());
        let found: Option<TagRecord> = self.blocking(move |i| decode(i.tags.get(k)?.as_deref())).await?;
        match &found {
            Some(rec) => {
                self.hot().put_tag(key, rec);
                Ok(found)
            }
            None => self.blocking(move |i| i.adopt_tag(&u, &r, &t)).await,
        }
    }

    pub async fn put_tag(&self, upstream: &str, repo: &str, tag: &str, record: TagRecord) -> CacheResult<()> {
        let key = keys::scoped(upstream, repo, tag);
        self.hot().put_tag(key.clone(), &record);
        let value = encode(&record)?;
        let (u, r, t) = (upstream.to_string(), repo.to_string(), tag.to_string());
        self.blocking(move |i| {
            if i.tags.insert(key, value)?.is_none() {
                add(&i.totals.tags, 1);
            }
            i.share_tag(&u, &r, &t, &record);
            Ok(())
        })
        .await
    }

    pub async fn remove_tag(&self, upstream: &str, repo: &str, tag: &str) -> CacheResult<()> {
        let key = keys::scoped(upstream, repo, tag);
        self.hot().remove_tag(&key);
        self.blocking(move |i| {
            if i.tags.remove(key)?.is_some() {
                sub(&i.totals.tags, 1);
            }
            Ok(())
        })
        .await
    }

    /// Up to `limit` tag mappings in (upstream, repository, tag) order, after the one
    /// `after` names: (upstream, repository, tag, record).
    pub async fn tags_page(
        &self,
        after: Option<(String, String, String)>,
        limit: usize,
    ) -> CacheResult<Vec<(String, String, String, TagRecord)>> {
        self.blocking(move |i| {
            let start = after.map(|(u, r, t)| keys::scoped(&u, &r, &t));
            let mut out = Vec::with_capacity(limit.min(1024));
            for item in page(&i.tags, start) {
                let (k, v) = item?;
                if let (Some((u, r, t)), Ok(rec)) = (keys::parse_scoped(&k), serde_json::from_slice::<TagRecord>(&v)) {
                    out.push((u, r, t, rec));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn tag_list(&self, upstream: &str, repo: &str, query: &str) -> CacheResult<Option<TagListPage>> {
        let key = keys::scoped(upstream, repo, query);
        self.blocking(move |i| decode(i.tag_lists.get(key)?.as_deref())).await
    }

    pub async fn put_tag_list(&self, upstream: &str, repo: &str, query: &str, page: TagListPage) -> CacheResult<()> {
        let key = keys::scoped(upstream, repo, query);
        let value = encode(&page)?;
        self.blocking(move |i| {
            i.tag_lists.insert(key, value)?;
            Ok(())
        })
        .await
    }

    pub async fn signature(
        &self,
        upstream: &str,
        repo: &str,
        digest: &Digest,
        index: u32,
    ) -> CacheResult<Option<SignatureEntry>> {
        let key = keys::signature(upstream, repo, digest, index);
        self.blocking(move |i| i.signatures.get(key)?.map(|v| SignatureEntry::decode(&v)).transpose())
            .await
    }

    pub async fn put_signature(
        &self,
        upstream: &str,
        repo: &str,
        digest: &Digest,
        index: u32,
        entry: SignatureEntry,
    ) -> CacheResult<()> {
        let key = keys::signature(upstream, repo, digest, index);
        let value = entry.encode();
        self.blocking(move |i| {
            i.signatures.insert(key, value)?;
            Ok(())
        })
        .await
    }

    /// The last referrers answer for `digest` asked with `query`.
    pub async fn referrers(
        &self,
        upstream: &str,
        repo: &str,
        digest: &Digest,
        query: &str,
    ) -> CacheResult<Option<StoredResponse>> {
        let key = keys::referrers(upstream, repo, digest, query);
        self.blocking(move |i| decode(i.responses.get(key)?.as_deref())).await
    }

    pub async fn put_referrers(
        &self,
        upstream: &str,
        repo: &str,
        digest: &Digest,
        query: &str,
        response: StoredResponse,
    ) -> CacheResult<()> {
        let key = keys::referrers(upstream, repo, digest, query);
        let value = encode(&response)?;
        self.blocking(move |i| {
            i.responses.insert(key, value)?;
            Ok(())
        })
        .await
    }

    /// A small JSON value kept under `name` (proxy statistics).
    pub async fn meta<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        name: &'static str,
    ) -> CacheResult<Option<T>> {
        self.blocking(move |i| decode(i.responses.get(keys::meta(name))?.as_deref()))
            .await
    }

    pub async fn put_meta<T: Serialize + Send + 'static>(&self, name: &'static str, value: T) -> CacheResult<()> {
        let bytes = encode(&value)?;
        self.blocking(move |i| {
            i.responses.insert(keys::meta(name), bytes)?;
            Ok(())
        })
        .await
    }
}

impl Inner {
    /// Stores a manifest with its meta and last-use entry in one transaction.
    pub(super) fn put_manifest(&self, d: &Digest, value: Vec<u8>, now: u64) -> CacheResult<()> {
        let key = keys::digest(d);
        let size = value.len() as u64;
        let replaced = committed((&self.manifests, &self.manifest_meta, &self.lru).transaction(
            |(manifests, meta, lru)| -> TxResult<_> {
                let old = meta.get(key)?.and_then(|m| parse_manifest_meta(&m));
                if let Some((_, at)) = old {
                    lru.remove(&keys::lru(at, Kind::Manifest, d)[..])?;
                }
                manifests.insert(key, value.as_slice())?;
                meta.insert(key, &manifest_meta(size, now)[..])?;
                lru.insert(&keys::lru(now, Kind::Manifest, d)[..], &size.to_be_bytes()[..])?;
                Ok(old.map(|(old_size, _)| old_size))
            },
        ))?;
        match replaced {
            Some(old_size) => sub(&self.totals.manifest_bytes, old_size),
            None => add(&self.totals.manifests, 1),
        }
        add(&self.totals.manifest_bytes, size);
        Ok(())
    }

    /// Removes a manifest, its meta and its last-use entry; returns its size if it was
    /// stored.
    pub(super) fn remove_manifest(&self, d: &Digest) -> CacheResult<Option<u64>> {
        let key = keys::digest(d);
        let removed = committed((&self.manifests, &self.manifest_meta, &self.lru).transaction(
            |(manifests, meta, lru)| -> TxResult<_> {
                let had = manifests.remove(key)?.is_some();
                let old = meta.remove(key)?.and_then(|m| parse_manifest_meta(&m));
                if let Some((_, at)) = old {
                    lru.remove(&keys::lru(at, Kind::Manifest, d)[..])?;
                }
                Ok(had.then(|| old.map_or(0, |(size, _)| size)))
            },
        ))?;
        if let Some(size) = removed {
            sub(&self.totals.manifests, 1);
            sub(&self.totals.manifest_bytes, size);
        }
        Ok(removed)
    }
}
