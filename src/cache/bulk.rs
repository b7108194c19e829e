//! Loading many entries at once, for benchmarks and imports: blobs, manifests and tag
//! mappings written in sled batches with their last-use entries, blob bytes without a
//! fsync per object. Nothing is durable until [`BulkLoader::finish`], which flushes and
//! closes the cache cleanly. Blocking: call it from a thread, not an async task.

use super::keys::{self, Kind};
use super::records::{encode, manifest_meta};
use super::{BlobRecord, Cache, CacheResult, StoredManifest, TagRecord, Totals, add};
use crate::oci::Digest;
use bytes::Bytes;

/// Entries per batch written to sled.
const BATCH: usize = 10_000;

pub struct BulkLoader {
    cache: Cache,
    blobs: sled::Batch,
    manifests: sled::Batch,
    manifest_meta: sled::Batch,
    tags: sled::Batch,
    lru: sled::Batch,
    pending: usize,
    added: Totals,
}

impl Cache {
    /// A loader for many entries at once (see [`BulkLoader`]).
    pub fn bulk_loader(&self) -> BulkLoader {
        BulkLoader {
            cache: self.clone(),
            blobs: sled::Batch::default(),
            manifests: sled::Batch::default(),
            manifest_meta: sled::Batch::default(),
            tags: sled::Batch::default(),
            lru: sled::Batch::default(),
            pending: 0,
            added: Totals::default(),
        }
    }
}

impl BulkLoader {
    /// A blob the caller vouches for (`digest` is the sha256 of `bytes`), last used at
    /// `last_use_ms`.
    pub fn blob(&mut self, digest: &Digest, bytes: &[u8], last_use_ms: u64) -> CacheResult<()> {
        let i = &self.cache.inner;
        let location = i.store.import(i.db.generate_id()?, digest, bytes)?;
        let size = bytes.len() as u64;
        let record = BlobRecord {
            size,
            location,
            created_ms: last_use_ms,
            last_access_ms: last_use_ms,
        };
        self.blobs.insert(keys::digest(digest), encode(&record)?);
        self.lru
            .insert(&keys::lru(last_use_ms, Kind::Blob, digest)[..], &size.to_be_bytes()[..]);
        self.added.blobs += 1;
        self.added.blob_bytes += size;
        self.step()
    }

    /// A manifest the caller vouches for, last used at `last_use_ms`.
    pub fn manifest(&mut self, digest: &Digest, media_type: &str, bytes: Bytes, last_use_ms: u64) -> CacheResult<()> {
        let value = StoredManifest {
            media_type: media_type.replace('\n', ""),
            bytes,
        }
        .encode();
        let size = value.len() as u64;
        self.manifests.insert(keys::digest(digest), value);
        self.manifest_meta
            .insert(keys::digest(digest), &manifest_meta(size, last_use_ms)[..]);
        self.lru.insert(
            &keys::lru(last_use_ms, Kind::Manifest, digest)[..],
            &size.to_be_bytes()[..],
        );
        self.added.manifests += 1;
        self.added.manifest_bytes += size;
        self.step()
    }

    pub fn tag(&mut self, upstream: &str, repo: &str, tag: &str, record: &TagRecord) -> CacheResult<()> {
        self.tags.insert(keys::scoped(upstream, repo, tag), encode(record)?);
        self.added.tags += 1;
        self.step()
    }

    fn step(&mut self) -> CacheResult<()> {
        self.pending += 1;
        if self.pending >= BATCH {
            self.apply()?;
        }
        Ok(())
    }

    fn apply(&mut self) -> CacheResult<()> {
        let i = &self.cache.inner;
        i.blobs.apply_batch(std::mem::take(&mut self.blobs))?;
        i.manifests.apply_batch(std::mem::take(&mut self.manifests))?;
        i.manifest_meta.apply_batch(std::mem::take(&mut self.manifest_meta))?;
        i.tags.apply_batch(std::mem::take(&mut self.tags))?;
        i.lru.apply_batch(std::mem::take(&mut self.lru))?;
        let t = &i.totals;
        add(&t.blobs, std::mem::take(&mut self.added.blobs));
        add(&t.blob_bytes, std::mem::take(&mut self.added.blob_bytes));
        add(&t.manifests, std::mem::take(&mut self.added.manifests));
        add(&t.manifest_bytes, std::mem::take(&mut self.added.manifest_bytes));
        add(&t.tags, std::mem::take(&mut self.added.tags));
        self.pending = 0;
        Ok(())
    }

    /// Writes what is pending, syncs the blob store, flushes, and closes the cache
    /// cleanly. Entries are new: loading a digest or tag twice counts it twice.
    pub fn finish(mut self) -> CacheResult<()> {
        self.apply()?;
        let i = &self.cache.inner;
        i.store.sync()?;
        i.db.flush()?;
        i.responses
            .insert(keys::meta(super::CLEAN_STOP), encode(&i.totals.snapshot())?)?;
        i.db.flush()?;
        Ok(())
    }
}
