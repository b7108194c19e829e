//! Keeping the cache under `[cache] max_size`: least-recently-used blobs and manifests
//! are evicted, never a blob a client is reading or a fill is writing. Reads are
//! recorded in memory and written back to the records in batches, so a hit costs no
//! database write.

use super::records::decode;
use super::{BlobRecord, Cache, CacheResult, Inner, keys, now_ms};
use crate::oci::Digest;
use std::collections::HashSet;
use std::sync::atomic::Ordering;

/// What one eviction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub blobs: u64,
    pub manifests: u64,
    pub bytes: u64,
}

/// A read not yet written back to its record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum AccessKey {
    Blob(Digest),
    Manifest(Digest),
}

/// Decrements a blob's reader count when a client stream ends.
pub struct ReaderGuard {
    cache: Cache,
    digest: Digest,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let mut readers = self.cache.inner.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = readers.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                readers.remove(&self.digest);
            }
        }
    }
}

impl Cache {
    pub fn touch_blob(&self, digest: &Digest) {
        self.touch(AccessKey::Blob(digest.clone()));
    }

    pub fn touch_manifest(&self, digest: &Digest) {
        self.touch(AccessKey::Manifest(digest.clone()));
    }

    fn touch(&self, key: AccessKey) {
        self.inner
            .access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, now_ms());
    }

    /// Marks a client as reading `digest` until the guard drops.
    pub fn reading(&self, digest: &Digest) -> ReaderGuard {
        *self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.clone())
            .or_default() += 1;
        ReaderGuard {
            cache: self.clone(),
            digest: digest.clone(),
        }
    }

    /// Bytes on disk: blob files plus the database (the `sled` store's chunks are in it).
    pub fn disk_usage(&self) -> CacheResult<u64> {
        let db = self.inner.db.size_on_disk()?;
        let files = self.inner.blob_bytes.load(Ordering::Relaxed);
        Ok(if self.store_name() == "files" { files + db } else { db })
    }

    /// Evicts least recently used entries until the cache fits in `max_size`, sparing
    /// `protected` digests (running fills) and blobs with readers.
    pub async fn enforce_limit(&self, max_size: u64, protected: HashSet<Digest>) -> CacheResult<Evicted> {
        let cache = self.clone();
        self.blocking(move |i| {
            let usage = cache.disk_usage()?;
            if usage <= max_size {
                return Ok(Evicted::default());
            }
            i.write_back_access()?;
            i.evict_lru(usage, max_size, &protected)
        })
        .await
    }

    /// Writes recorded reads back into the records (also done before eviction).
    pub async fn write_back_access(&self) -> CacheResult<()> {
        self.blocking(|i| i.write_back_access()).await
    }
}

enum Candidate {
    Blob(Digest, BlobRecord),
    Manifest(Digest, u64),
}

impl Inner {
    fn write_back_access(&self) -> CacheResult<()> {
        let pending = std::mem::take(&mut *self.access.lock().unwrap_or_else(|p| p.into_inner()));
        for (key, ms) in pending {
            match key {
                AccessKey::Blob(d) => {
                    self.blobs.fetch_and_update(keys::digest(&d), |old| {
                        let mut record: BlobRecord = old.and_then(|v| serde_json::from_slice(v).ok())?;
                        record.last_access_ms = record.last_access_ms.max(ms);
                        serde_json::to_vec(&record).ok()
                    })?;
                }
                AccessKey::Manifest(d) => {
                    if let Some(meta) = self.manifest_meta.get(keys::digest(&d))?
                        && meta.len() == 16
                    {
                        let updated = [&meta[..8], &ms.to_be_bytes()[..]].concat();
                        self.manifest_meta.insert(keys::digest(&d), updated)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn evict_lru(&self, usage: u64, max_size: u64, protected: &HashSet<Digest>) -> CacheResult<Evicted> {
        let readers: HashSet<Digest> = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut candidates: Vec<(u64, Candidate)> = Vec::new();
        for item in self.blobs.iter() {
            let (k, v) = item?;
            let record: Option<BlobRecord> = decode(Some(&v))?;
            if let (Some(d), Some(r)) = (keys::parse_digest(&k), record)
                && !protected.contains(&d)
                && !readers.contains(&d)
            {
                candidates.push((r.last_access_ms.max(r.created_ms), Candidate::Blob(d, r)));
            }
        }
        for item in self.manifest_meta.iter() {
            let (k, v) = item?;
            if let (Some(d), true) = (keys::parse_digest(&k), v.len() == 16) {
                let size = u64::from_be_bytes(v[..8].try_into().unwrap_or_default());
                let at = u64::from_be_bytes(v[8..].try_into().unwrap_or_default());
                candidates.push((at, Candidate::Manifest(d, size)));
            }
        }
        candidates.sort_by_key(|(at, _)| *at);
        let mut evicted = Evicted::default();
        let mut remaining = usage;
        for (_, candidate) in candidates {
            if remaining <= max_size {
                break;
            }
            let freed = match candidate {
                Candidate::Blob(d, r) => {
                    // Checked again, and held while removing: a client registers as a
                    // reader before it looks a blob up, so it either blocks here and then
                    // finds no record (a miss), or is seen and its blob spared.
                    let readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
                    if readers.contains_key(&d) {
                        continue;
                    }
                    self.remove_blob(&d)?;
                    drop(readers);
                    evicted.blobs += 1;
                    // For the sled store this is an estimate: its chunks are database
                    // pages that sled reuses rather than returns to the file system.
                    r.size
                }
                Candidate::Manifest(d, size) => {
                    self.hot.lock().unwrap_or_else(|p| p.into_inner()).manifests.remove(&d);
                    self.manifests.remove(keys::digest(&d))?;
                    self.manifest_meta.remove(keys::digest(&d))?;
                    evicted.manifests += 1;
                    size
                }
            };
            evicted.bytes += freed;
            remaining = remaining.saturating_sub(freed);
        }
        self.db.flush()?;
        Ok(evicted)
    }
}
