//! The cache shared with other replicas through the `s3` store's bucket: a local miss of
//! a blob, manifest or tag mapping looks there before it is a miss, and adopts what it
//! finds (a local record, the verified manifest, the mapping); what this replica stores
//! it also writes there (manifests byte-exact, tag mappings last writer wins). A shared
//! lookup that found nothing is not repeated for [`MISS_TTL`], so a miss costs at most
//! one request to the store. A failure of the store is logged and is a local miss:
//! upstream is asked, never an error served as content.

use super::keys;
use super::s3::S3BlobStore;
use super::{BlobLocation, BlobRecord, CacheResult, Inner, StoredManifest, TagRecord, now_ms};
use crate::oci::Digest;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// How long a shared lookup that found nothing is not repeated.
const MISS_TTL: Duration = Duration::from_secs(5);

impl Inner {
    /// Whether `key` may be looked up in the shared store now (it has not missed there
    /// within [`MISS_TTL`]).
    fn may_look_up(&self, key: &[u8]) -> bool {
        self.shared_misses.get(key).is_none_or(|until| until <= Instant::now())
    }

    /// Asks the shared store under the negative cache: `None` when there is no shared
    /// store, `key` missed there recently, the store has no such object (remembered) or
    /// did not answer (logged as `what`).
    fn look_up<T>(
        &self,
        key: Vec<u8>,
        what: &dyn std::fmt::Display,
        ask: impl FnOnce(&S3BlobStore) -> std::io::Result<Option<T>>,
    ) -> Option<T> {
        let shared = self.shared.as_ref()?;
        if !self.may_look_up(&key) {
            return None;
        }
        match ask(shared) {
            Ok(Some(found)) => Some(found),
            Ok(None) => {
                self.shared_misses.insert(key, Instant::now() + MISS_TTL);
                None
            }
            Err(e) => {
                tracing::warn!(lookup = %what, error = %e, "the shared store did not answer; a miss");
                None
            }
        }
    }

    /// A blob another replica published: recorded here (a local record pointing at the
    /// shared object) and returned.
    pub(super) fn adopt_blob(&self, d: &Digest) -> CacheResult<Option<BlobRecord>> {
        let key = [b"b", d.hex().as_bytes()].concat();
        let Some(size) = self.look_up(key, d, |shared| shared.blob_size(d)) else {
            return Ok(None);
        };
        let now = now_ms();
        let record = BlobRecord {
            size,
            location: BlobLocation::S3,
            created_ms: now,
            last_access_ms: now,
        };
        Ok(Some(self.insert_blob(d, &record, None)?.unwrap_or(record)))
    }

    /// A manifest another replica stored, checked against its digest and kept here.
    pub(super) fn adopt_manifest(&self, d: &Digest) -> CacheResult<Option<StoredManifest>> {
        let key = [b"m", d.hex().as_bytes()].concat();
        let Some((media_type, bytes)) = self.look_up(key, d, |shared| shared.manifest(d)) else {
            return Ok(None);
        };
        if &Digest::of(&bytes) != d {
            tracing::warn!(digest = %d, "a shared manifest does not match its digest; ignored");
            return Ok(None);
        }
        let manifest = StoredManifest {
            media_type: media_type.replace('\n', ""),
            bytes,
        };
        self.put_manifest(d, manifest.encode(), now_ms())?;
        self.hot.put_manifest(d, &manifest);
        Ok(Some(manifest))
    }

    /// Writes a verified manifest to the shared store (a failure only costs the other
    /// replicas an upstream request).
    pub(super) fn share_manifest(&self, d: &Digest, media_type: &str, bytes: Bytes) {
        if let Some(shared) = &self.shared
            && let Err(e) = shared.put_manifest(d, media_type, bytes)
        {
            tracing::warn!(digest = %d, error = %e, "could not write a manifest to the shared store");
        }
    }

    /// A tag mapping another replica recorded, kept here.
    pub(super) fn adopt_tag(&self, upstream: &str, repo: &str, tag: &str) -> CacheResult<Option<TagRecord>> {
        if self.shared.is_none() {
            return Ok(None);
        }
        let key = [b"t".as_slice(), &keys::scoped(upstream, repo, tag)].concat();
        let what = format!("{upstream}/{repo}:{tag}");
        let Some(record) = self.look_up(key, &what, |shared| shared.tag(upstream, repo, tag)) else {
            return Ok(None);
        };
        let local = keys::scoped(upstream, repo, tag);
        if self.tags.insert(&local, super::records::encode(&record)?)?.is_none() {
            super::add(&self.totals.tags, 1);
        }
        self.hot.put_tag(local, &record);
        Ok(Some(record))
    }

    pub(super) fn share_tag(&self, upstream: &str, repo: &str, tag: &str, record: &TagRecord) {
        if let Some(shared) = &self.shared
            && let Err(e) = shared.put_tag(upstream, repo, tag, record)
        {
            tracing::warn!(upstream, repo, tag, error = %e, "could not write a tag mapping to the shared store");
        }
    }
}
