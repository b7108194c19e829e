//! Keeping the cache under `[cache] max_size`: least-recently-used blobs and manifests
//! are evicted, never a blob a client is reading or a fill is writing. Reads are
//! recorded in memory and written back in batches (a hit costs no database write); the
//! write-back moves each entry in the last-use index, so an eviction pass walks that
//! index from its oldest end and reads only what it evicts. The size compared with
//! `max_size` is the running [`Totals::usage`](super::Totals::usage), which shrinks as
//! entries go.

use super::keys::{self, Kind};
use super::records::{manifest_meta, parse_manifest_meta};
use super::{BlobRecord, Cache, CacheResult, Inner, TxResult, committed, now_ms};
use crate::oci::Digest;
use sled::transaction::Transactional;
use std::collections::{HashMap, HashSet};

/// What one eviction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub blobs: u64,
    pub manifests: u64,
    pub bytes: u64,
    /// How long the pass worked (from its start on the blocking pool, not counting the
    /// wait for a thread there).
    pub took: std::time::Duration,
}

/// A read not yet written back to its record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum AccessKey {
    Blob(Digest),
    Manifest(Digest),
}

/// Reads recorded before a write-back is started early (bounds the map's memory under
/// a load that touches many distinct entries between the periodic write-backs).
const ACCESS_BATCH: usize = 65_536;

/// Decrements a blob's reader count when a client stream ends.
pub struct ReaderGuard {
    cache: Cache,
    digest: Digest,
}

impl ReaderGuard {
    /// Renews the reader's use of the blob (a long stream keeps its blob recent, so a
    /// fleet's evictor sees it in use).
    pub fn touch(&self) {
        self.cache.touch_blob(&self.digest);
    }
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
        let full = {
            let mut access = self.inner.access.lock().unwrap_or_else(|p| p.into_inner());
            access.insert(key, now_ms());
            (access.len() >= ACCESS_BATCH).then(|| std::mem::take(&mut *access))
        };
        if let Some(pending) = full
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let inner = self.inner.clone();
            runtime.spawn_blocking(move || {
                if let Err(e) = inner.write_back(pending) {
                    tracing::warn!(error = %e, "writing back recorded reads failed");
                }
            });
        }
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

    /// Evicts least recently used entries until the cache fits in `max_size`, sparing
    /// `protected` digests (running fills) and blobs with readers.
    pub async fn enforce_limit(&self, max_size: u64, protected: HashSet<Digest>) -> CacheResult<Evicted> {
        // A shared bucket is kept in bounds by the fleet's evictor (`fleet_round`).
        if self.totals().usage() <= max_size || self.inner.fleet.is_some() {
            return Ok(Evicted::default());
        }
        // No flush: an eviction a crash undoes leaves records whose data is gone, which
        // the scan after an unclean stop, or the first read, drops.
        self.blocking(move |i| {
            let started = std::time::Instant::now();
            i.write_back_access()?;
            let mut evicted = i.evict_while(&protected, |i, _| i.totals.snapshot().usage() > max_size)?;
            evicted.took = started.elapsed();
            Ok(evicted)
        })
        .await
    }

    /// Evicts blobs and manifests last used before `cutoff_ms`, oldest first, sparing
    /// blobs with readers (`cache evict --older-than`).
    pub async fn evict_unused_since(&self, cutoff_ms: u64) -> CacheResult<Evicted> {
        self.blocking(move |i| {
            i.write_back_access()?;
            i.evict_while(&HashSet::new(), |_, last_use| last_use < cutoff_ms)
        })
        .await
    }

    /// Writes recorded reads back into the records and the last-use index (also done
    /// before eviction and at close).
    pub async fn write_back_access(&self) -> CacheResult<()> {
        self.blocking(|i| i.write_back_access()).await
    }

    /// Checks that the last-use index and the records agree: every blob and manifest has
    /// exactly the entry its last use says, and no entry lacks its record. Returns the
    /// disagreements found (none when consistent).
    pub async fn check_index(&self) -> CacheResult<Vec<String>> {
        self.blocking(|i| i.check_index()).await
    }
}

impl Inner {
    pub(super) fn write_back_access(&self) -> CacheResult<()> {
        let pending = std::mem::take(&mut *self.access.lock().unwrap_or_else(|p| p.into_inner()));
        self.write_back(pending)
    }

    /// Moves each read entry to its new place in the last-use index, with its record, in
    /// one transaction per entry.
    fn write_back(&self, pending: HashMap<AccessKey, u64>) -> CacheResult<()> {
        for (key, ms) in pending {
            match key {
                AccessKey::Blob(d) => {
                    let k = keys::digest(&d);
                    committed((&self.blobs, &self.lru).transaction(|(blobs, lru)| -> TxResult<_> {
                        let Some(mut record) = blobs
                            .get(k)?
                            .and_then(|v| serde_json::from_slice::<BlobRecord>(&v).ok())
                        else {
                            return Ok(None);
                        };
                        if record.last_access_ms >= ms {
                            return Ok(None);
                        }
                        lru.remove(&keys::lru(record.last_access_ms, Kind::Blob, &d)[..])?;
                        record.last_access_ms = ms;
                        if let Ok(value) = serde_json::to_vec(&record) {
                            blobs.insert(k, value)?;
                        }
                        lru.insert(&keys::lru(ms, Kind::Blob, &d)[..], &record.size.to_be_bytes()[..])?;
                        Ok(Some(record.size))
                    }))
                    .map(|moved| {
                        if let (Some(size), Some(fleet)) = (moved, &self.fleet) {
                            fleet.used(&d, ms, size);
                        }
                    })?;
                }
                AccessKey::Manifest(d) => {
                    let k = keys::digest(&d);
                    committed(
                        (&self.manifest_meta, &self.lru).transaction(|(meta, lru)| -> TxResult<_> {
                            let Some((size, at)) = meta.get(k)?.and_then(|m| parse_manifest_meta(&m)) else {
                                return Ok(());
                            };
                            if at >= ms {
                                return Ok(());
                            }
                            lru.remove(&keys::lru(at, Kind::Manifest, &d)[..])?;
                            meta.insert(k, &manifest_meta(size, ms)[..])?;
                            lru.insert(&keys::lru(ms, Kind::Manifest, &d)[..], &size.to_be_bytes()[..])?;
                            Ok(())
                        }),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Walks the last-use index from its oldest entry while `more(self, last_use)` says
    /// so, evicting each entry (blobs being filled or read are skipped).
    fn evict_while(
        &self,
        protected: &HashSet<Digest>,
        mut more: impl FnMut(&Inner, u64) -> bool,
    ) -> CacheResult<Evicted> {
        let started = std::time::Instant::now();
        let mut evicted = Evicted::default();
        for item in self.lru.iter() {
            let (key, value) = item?;
            let Some((last_use, kind, d)) = keys::parse_lru(&key) else {
                self.lru.remove(&key)?;
                continue;
            };
            if !more(self, last_use) {
                break;
            }
            let size = keys::be_u64(&value).unwrap_or(0);
            match kind {
                Kind::Blob => {
                    if protected.contains(&d) {
                        continue;
                    }
                    // Checked again, and held while removing: a client registers as a
                    // reader before it looks a blob up, so it either blocks here and then
                    // finds no record (a miss), or is seen and its blob spared.
                    let readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
                    if readers.contains_key(&d) {
                        continue;
                    }
                    match self.remove_blob(&d)? {
                        Some(_) => {
                            evicted.blobs += 1;
                            evicted.bytes += size;
                        }
                        // An entry without a record: drop it.
                        None => {
                            self.lru.remove(&key)?;
                        }
                    }
                    drop(readers);
                }
                Kind::Manifest => {
                    self.hot.remove_manifest(&d);
                    match self.remove_manifest(&d)? {
                        Some(_) => {
                            evicted.manifests += 1;
                            evicted.bytes += size;
                        }
                        None => {
                            self.lru.remove(&key)?;
                        }
                    }
                }
            }
        }
        evicted.took = started.elapsed();
        Ok(evicted)
    }

    fn check_index(&self) -> CacheResult<Vec<String>> {
        let mut problems = Vec::new();
        let mut indexed = 0u64;
        for item in self.lru.iter() {
            let (key, _) = item?;
            indexed += 1;
            let Some((at, kind, d)) = keys::parse_lru(&key) else {
                problems.push("an index entry that is not a key".to_string());
                continue;
            };
            let recorded = match kind {
                Kind::Blob => self.blob(&d)?.map(|r| r.last_access_ms),
                Kind::Manifest => self
                    .manifest_meta
                    .get(keys::digest(&d))?
                    .and_then(|m| parse_manifest_meta(&m))
                    .map(|(_, at)| at),
            };
            if recorded != Some(at) {
                problems.push(format!("index entry {kind:?} {d} at {at}, record says {recorded:?}"));
            }
        }
        let records = self.blobs.len() as u64 + self.manifest_meta.len() as u64;
        if records != indexed {
            problems.push(format!("{records} records but {indexed} index entries"));
        }
        Ok(problems)
    }
}
