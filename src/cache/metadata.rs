//! The cache's side tables: manifests (inline, byte-exact, checked against their digest
//! when read from disk), tag mappings, tag-list pages, lookaside signatures, kept
//! referrers answers and small named values.

use super::records::{decode, encode};
use super::{
    Cache, CacheError, CacheResult, SignatureEntry, StoredManifest, StoredResponse, TagListPage, TagRecord, keys,
    now_ms,
};
use crate::oci::Digest;
use bytes::Bytes;
use serde::Serialize;

impl Cache {
    /// A stored manifest, whose bytes hash to `digest`: checked when read from the
    /// database (a mismatch is [`CacheError::ManifestMismatch`]); the in-memory hot set
    /// holds only checked bytes (and those callers verified before `put_manifest`), so a
    /// hit there needs no re-hash.
    pub async fn manifest(&self, digest: &Digest) -> CacheResult<Option<StoredManifest>> {
        if let Some(m) = self.hot().manifests.get(digest).cloned() {
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
        if let Some(m) = &found {
            if Digest::of(&m.bytes) != *digest {
                return Err(CacheError::ManifestMismatch(digest.clone()));
            }
            self.hot().put_manifest(digest, m);
        }
        Ok(found)
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
            let meta = [(value.len() as u64).to_be_bytes(), now_ms().to_be_bytes()].concat();
            i.manifests.insert(keys::digest(&d), value)?;
            i.manifest_meta.insert(keys::digest(&d), meta)?;
            Ok(())
        })
        .await
    }

    pub async fn remove_manifest(&self, digest: &Digest) -> CacheResult<()> {
        self.hot().manifests.remove(digest);
        let d = digest.clone();
        self.blocking(move |i| {
            i.manifests.remove(keys::digest(&d))?;
            i.manifest_meta.remove(keys::digest(&d))?;
            Ok(())
        })
        .await
    }

    /// Every stored manifest's digest.
    pub async fn list_manifests(&self) -> CacheResult<Vec<Digest>> {
        self.blocking(|i| {
            Ok(i.manifests
                .iter()
                .keys()
                .filter_map(|k| k.ok())
                .filter_map(|k| keys::parse_digest(&k))
                .collect())
        })
        .await
    }

    pub async fn tag(&self, upstream: &str, repo: &str, tag: &str) -> CacheResult<Option<TagRecord>> {
        let key = keys::scoped(upstream, repo, tag);
        if let Some(r) = self.hot().tags.get(&key) {
            return Ok(Some(r.clone()));
        }
        let k = key.clone();
        let found: Option<TagRecord> = self.blocking(move |i| decode(i.tags.get(k)?.as_deref())).await?;
        if let Some(r) = &found {
            self.hot().put_tag(key, r);
        }
        Ok(found)
    }

    pub async fn put_tag(&self, upstream: &str, repo: &str, tag: &str, record: TagRecord) -> CacheResult<()> {
        let key = keys::scoped(upstream, repo, tag);
        self.hot().put_tag(key.clone(), &record);
        let value = encode(&record)?;
        self.blocking(move |i| {
            i.tags.insert(key, value)?;
            Ok(())
        })
        .await
    }

    pub async fn remove_tag(&self, upstream: &str, repo: &str, tag: &str) -> CacheResult<()> {
        let key = keys::scoped(upstream, repo, tag);
        self.hot().tags.remove(&key);
        self.blocking(move |i| {
            i.tags.remove(key)?;
            Ok(())
        })
        .await
    }

    /// Every tag mapping: (upstream, repository, tag, record).
    pub async fn list_tags(&self) -> CacheResult<Vec<(String, String, String, TagRecord)>> {
        self.blocking(|i| {
            let mut out = Vec::new();
            for item in i.tags.iter() {
                let (k, v) = item?;
                if let (Some((u, r, t)), Ok(rec)) = (keys::parse_scoped(&k), serde_json::from_slice::<TagRecord>(&v)) {
                    out.push((u, r, t, rec));
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
