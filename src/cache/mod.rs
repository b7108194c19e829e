//! The cache: sled is the database of record for blob records, manifests (inline,
//! byte-exact), tag mappings, tag lists and the fill journal; blob bytes live in a
//! [`BlobStore`]. Only this module names sled. sled calls block, so the async API runs
//! them on the blocking pool.

pub mod blob_store;
pub mod buffers;
pub mod eviction;
pub mod files;
pub mod sled_store;

pub use blob_store::{BlobLocation, BlobRead, BlobReader, BlobStore, StagedBlob};
pub use eviction::ReaderGuard;

use crate::config::BlobStoreKind;
use crate::oci::Digest;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("blob store I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A stored manifest whose bytes no longer hash to its digest.
    #[error("stored manifest {0} does not match its digest")]
    ManifestMismatch(Digest),
    #[error("blocking task failed: {0}")]
    Join(String),
}

pub type CacheResult<T> = Result<T, CacheError>;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A published, verified blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    pub location: BlobLocation,
    pub created_ms: u64,
    /// When a client last read it (kept in memory, written back at eviction and flush).
    #[serde(default)]
    pub last_access_ms: u64,
}

/// Entries kept in memory per kind before the hot set is cleared and refilled.
const HOT_ENTRIES: usize = 4096;

/// The in-memory hot set (see `Inner::hot`).
#[derive(Default)]
struct Hot {
    manifests: std::collections::HashMap<Digest, StoredManifest>,
    tags: std::collections::HashMap<Vec<u8>, TagRecord>,
}

impl Hot {
    fn put_manifest(&mut self, digest: &Digest, m: &StoredManifest) {
        if self.manifests.len() >= HOT_ENTRIES {
            self.manifests.clear();
        }
        self.manifests.insert(digest.clone(), m.clone());
    }

    fn put_tag(&mut self, key: Vec<u8>, record: &TagRecord) {
        if self.tags.len() >= HOT_ENTRIES {
            self.tags.clear();
        }
        self.tags.insert(key, record.clone());
    }
}

/// A manifest stored byte-exact with the media type it was served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    pub media_type: String,
    pub bytes: Bytes,
}

/// What a tag pointed at when pullgate last asked upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: String,
    pub media_type: String,
    pub fetched_ms: u64,
}

/// A page of an upstream tag list, kept to answer when upstream is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagListPage {
    pub body: String,
    /// The upstream `Link` target (path and query), if there was a next page.
    pub next: Option<String>,
}

/// What pullgate knows about one lookaside signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureEntry {
    /// The exact bytes upstream served.
    Present(Bytes),
    /// Upstream said there is no such signature, at this time.
    Absent { checked_ms: u64 },
}

/// A small upstream response kept to answer when upstream is down (referrers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub body: String,
    pub content_type: Option<String>,
}

struct Inner {
    db: sled::Db,
    /// Manifest digest → (size, stored at), for LRU eviction of manifests.
    manifest_meta: sled::Tree,
    /// Last reads not yet written back: "b:<hex>" / "m:<hex>" → ms.
    access: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Clients reading each blob now: never evicted under them.
    readers: std::sync::Mutex<std::collections::HashMap<Digest, usize>>,
    /// Sum of published blob sizes.
    blob_bytes: std::sync::atomic::AtomicU64,
    /// Recently used manifests and tag mappings, answered without a trip to the
    /// blocking pool (manifests are immutable by digest; tags are written through).
    hot: std::sync::Mutex<Hot>,
    signatures: sled::Tree,
    responses: sled::Tree,
    blobs: sled::Tree,
    manifests: sled::Tree,
    tags: sled::Tree,
    tag_lists: sled::Tree,
    fills: sled::Tree,
    store: Box<dyn BlobStore>,
}

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// Entry counts and sizes (`blob_bytes` counts blob files; the `sled` store's chunks are
/// part of `db_bytes`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub manifests: u64,
    pub tags: u64,
    pub db_bytes: u64,
}

impl CacheStats {
    pub fn total_bytes(&self) -> u64 {
        self.blob_bytes + self.db_bytes
    }
}

/// What startup repair found and fixed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    pub interrupted_fills: usize,
    pub records_without_data: usize,
    pub data_without_record: usize,
}

fn tag_key(upstream: &str, repo: &str, tag: &str) -> Vec<u8> {
    format!("{upstream}\n{repo}\n{tag}").into_bytes()
}

impl Cache {
    /// Opens (or creates) the database under `data_dir/db` and the chosen blob store,
    /// then repairs what a crash may have left behind.
    pub fn open(data_dir: &Path, kind: BlobStoreKind) -> CacheResult<(Cache, RepairReport)> {
        Self::open_wrapped(data_dir, kind, |store| store)
    }

    /// Like [`Cache::open`], with the blob store wrapped by `wrap` (fault injection in
    /// tests; instrumentation).
    pub fn open_wrapped(
        data_dir: &Path,
        kind: BlobStoreKind,
        wrap: impl FnOnce(Box<dyn BlobStore>) -> Box<dyn BlobStore>,
    ) -> CacheResult<(Cache, RepairReport)> {
        std::fs::create_dir_all(data_dir)?;
        let db = sled::Config::new()
            .path(data_dir.join("db"))
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()?;
        let store: Box<dyn BlobStore> = match kind {
            BlobStoreKind::Files => Box::new(files::FileBlobStore::open(data_dir)?),
            BlobStoreKind::Sled => Box::new(sled_store::SledBlobStore::open(&db)?),
        };
        let store = wrap(store);
        let inner = Inner {
            blobs: db.open_tree("blobs")?,
            manifests: db.open_tree("manifests")?,
            tags: db.open_tree("tags")?,
            tag_lists: db.open_tree("tag_lists")?,
            fills: db.open_tree("fills")?,
            signatures: db.open_tree("signatures")?,
            responses: db.open_tree("responses")?,
            manifest_meta: db.open_tree("manifest_meta")?,
            access: Default::default(),
            readers: Default::default(),
            blob_bytes: Default::default(),
            hot: Default::default(),
            db,
            store,
        };
        let report = inner.repair()?;
        let total: u64 = inner
            .blobs
            .iter()
            .values()
            .filter_map(|v| v.ok())
            .filter_map(|v| serde_json::from_slice::<BlobRecord>(&v).ok())
            .map(|r| r.size)
            .sum();
        inner.blob_bytes.store(total, std::sync::atomic::Ordering::Relaxed);
        Ok((Cache { inner: Arc::new(inner) }, report))
    }

    pub fn store_name(&self) -> &'static str {
        self.inner.store.name()
    }

    async fn blocking<T, F>(&self, f: F) -> CacheResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> CacheResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| CacheError::Join(e.to_string()))?
    }

    pub async fn blob(&self, digest: &Digest) -> CacheResult<Option<BlobRecord>> {
        let d = digest.clone();
        self.blocking(move |i| i.blob(&d)).await
    }

    /// Synchronous lookup, for the fill registry's double-check under its lock.
    pub fn blob_now(&self, digest: &Digest) -> CacheResult<Option<BlobRecord>> {
        self.inner.blob(digest)
    }

    pub async fn open_blob(&self, digest: &Digest, record: &BlobRecord, offset: u64) -> CacheResult<BlobReader> {
        let (d, loc) = (digest.clone(), record.location.clone());
        self.blocking(move |i| Ok(i.store.open(&d, &loc, offset)?)).await
    }

    pub async fn open_staged(&self, fill_id: u64, offset: u64) -> CacheResult<BlobReader> {
        self.blocking(move |i| Ok(i.store.open_staged(fill_id, offset)?)).await
    }

    /// Starts a fill: a journal entry (so a crash is cleaned up) and staged storage.
    pub async fn begin_fill(&self, digest: &Digest) -> CacheResult<(u64, Box<dyn StagedBlob>)> {
        let d = digest.clone();
        self.blocking(move |i| {
            let fill_id = i.db.generate_id()?;
            i.fills.insert(fill_id.to_be_bytes(), d.hex().as_bytes())?;
            let staged = i.store.begin(fill_id)?;
            Ok((fill_id, staged))
        })
        .await
    }

    /// Commits verified staged bytes and publishes the record with one compare-and-swap
    /// (absent → present). Returns the record now in force.
    pub async fn publish(
        &self,
        digest: &Digest,
        fill_id: u64,
        staged: Box<dyn StagedBlob>,
        size: u64,
    ) -> CacheResult<BlobRecord> {
        let d = digest.clone();
        self.blocking(move |i| {
            let location = staged.commit(&d)?;
            let record = BlobRecord {
                size,
                location,
                created_ms: now_ms(),
                last_access_ms: now_ms(),
            };
            let value = serde_json::to_vec(&record).map_err(|e| CacheError::Corrupt(e.to_string()))?;
            let swapped = i
                .blobs
                .compare_and_swap(d.hex().as_bytes(), None as Option<&[u8]>, Some(value))?;
            i.fills.remove(fill_id.to_be_bytes())?;
            i.db.flush()?;
            match swapped {
                Ok(()) => {
                    i.blob_bytes.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
                    Ok(record)
                }
                Err(current) => {
                    // Someone published first; keep theirs. Only remove ours when it
                    // lives elsewhere (a content-addressed file is the same file).
                    let existing: BlobRecord = decode(current.current.as_deref())?
                        .ok_or_else(|| CacheError::Corrupt("CAS conflict without a value".into()))?;
                    if existing.location != record.location {
                        i.store.remove(&d, &record.location)?;
                    }
                    Ok(existing)
                }
            }
        })
        .await
    }

    /// Throws away a fill's staged bytes (failed verification or upstream error).
    pub async fn abort_fill(&self, fill_id: u64, staged: Box<dyn StagedBlob>) -> CacheResult<()> {
        self.blocking(move |i| {
            staged.discard();
            i.fills.remove(fill_id.to_be_bytes())?;
            Ok(())
        })
        .await
    }

    /// Drops a record whose data turned out to be missing or wrong, and the data.
    pub async fn remove_blob(&self, digest: &Digest) -> CacheResult<()> {
        let d = digest.clone();
        self.blocking(move |i| {
            i.remove_blob(&d)?;
            Ok(())
        })
        .await
    }

    fn hot(&self) -> std::sync::MutexGuard<'_, Hot> {
        self.inner.hot.lock().unwrap_or_else(|p| p.into_inner())
    }

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
                let Some(v) = i.manifests.get(d.hex().as_bytes())? else {
                    return Ok(None);
                };
                let split = v
                    .iter()
                    .position(|b| *b == b'\n')
                    .ok_or_else(|| CacheError::Corrupt("manifest".into()))?;
                let media_type = String::from_utf8_lossy(&v[..split]).into_owned();
                Ok(Some(StoredManifest {
                    media_type,
                    bytes: Bytes::copy_from_slice(&v[split + 1..]),
                }))
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

    pub async fn remove_manifest(&self, digest: &Digest) -> CacheResult<()> {
        self.hot().manifests.remove(digest);
        let d = digest.clone();
        self.blocking(move |i| {
            i.manifests.remove(d.hex().as_bytes())?;
            i.manifest_meta.remove(d.hex().as_bytes())?;
            Ok(())
        })
        .await
    }

    /// Entry counts and sizes, for metrics and `cache stats`.
    pub async fn stats(&self) -> CacheResult<CacheStats> {
        // Counts and the running blob total, not a scan of every record (metrics scrape
        // this). The sled store's chunks are part of the database's size.
        let files_store = self.store_name() == "files";
        self.blocking(move |i| {
            Ok(CacheStats {
                blobs: i.blobs.len() as u64,
                blob_bytes: if files_store {
                    i.blob_bytes.load(std::sync::atomic::Ordering::Relaxed)
                } else {
                    0
                },
                manifests: i.manifests.len() as u64,
                tags: i.tags.len() as u64,
                db_bytes: i.db.size_on_disk()?,
            })
        })
        .await
    }

    /// Stores a manifest the caller has verified against `digest`.
    pub async fn put_manifest(&self, digest: &Digest, media_type: &str, bytes: Bytes) -> CacheResult<()> {
        self.hot().put_manifest(
            digest,
            &StoredManifest {
                media_type: media_type.replace('\n', ""),
                bytes: bytes.clone(),
            },
        );
        let d = digest.clone();
        let mut value = Vec::with_capacity(media_type.len() + 1 + bytes.len());
        value.extend_from_slice(media_type.replace('\n', "").as_bytes());
        value.push(b'\n');
        value.extend_from_slice(&bytes);
        self.blocking(move |i| {
            let meta = [(value.len() as u64).to_be_bytes(), now_ms().to_be_bytes()].concat();
            i.manifests.insert(d.hex().as_bytes(), value)?;
            i.manifest_meta.insert(d.hex().as_bytes(), meta)?;
            Ok(())
        })
        .await
    }

    pub async fn tag(&self, upstream: &str, repo: &str, tag: &str) -> CacheResult<Option<TagRecord>> {
        let key = tag_key(upstream, repo, tag);
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
        let key = tag_key(upstream, repo, tag);
        self.hot().put_tag(key.clone(), &record);
        self.blocking(move |i| {
            i.tags.insert(
                key,
                serde_json::to_vec(&record).map_err(|e| CacheError::Corrupt(e.to_string()))?,
            )?;
            Ok(())
        })
        .await
    }

    pub async fn tag_list(&self, upstream: &str, repo: &str, query: &str) -> CacheResult<Option<TagListPage>> {
        let key = tag_key(upstream, repo, query);
        self.blocking(move |i| decode(i.tag_lists.get(key)?.as_deref())).await
    }

    pub async fn put_tag_list(&self, upstream: &str, repo: &str, query: &str, page: TagListPage) -> CacheResult<()> {
        let key = tag_key(upstream, repo, query);
        self.blocking(move |i| {
            i.tag_lists.insert(
                key,
                serde_json::to_vec(&page).map_err(|e| CacheError::Corrupt(e.to_string()))?,
            )?;
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
        let key = tag_key(upstream, repo, &format!("{}/{index}", digest.hex()));
        self.blocking(move |i| {
            let Some(v) = i.signatures.get(key)? else {
                return Ok(None);
            };
            match v.split_first() {
                Some((1, bytes)) => Ok(Some(SignatureEntry::Present(Bytes::copy_from_slice(bytes)))),
                Some((0, ms)) if ms.len() == 8 => {
                    let checked_ms =
                        u64::from_be_bytes(ms.try_into().map_err(|_| CacheError::Corrupt("signature".into()))?);
                    Ok(Some(SignatureEntry::Absent { checked_ms }))
                }
                _ => Err(CacheError::Corrupt("signature entry".into())),
            }
        })
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
        let key = tag_key(upstream, repo, &format!("{}/{index}", digest.hex()));
        let value = match entry {
            SignatureEntry::Present(bytes) => [&[1u8][..], &bytes].concat(),
            SignatureEntry::Absent { checked_ms } => [&[0u8][..], &checked_ms.to_be_bytes()].concat(),
        };
        self.blocking(move |i| {
            i.signatures.insert(key, value)?;
            Ok(())
        })
        .await
    }

    pub async fn response(&self, key: &str) -> CacheResult<Option<StoredResponse>> {
        let key = key.as_bytes().to_vec();
        self.blocking(move |i| decode(i.responses.get(key)?.as_deref())).await
    }

    pub async fn put_response(&self, key: &str, response: StoredResponse) -> CacheResult<()> {
        let key = key.as_bytes().to_vec();
        self.blocking(move |i| {
            i.responses.insert(
                key,
                serde_json::to_vec(&response).map_err(|e| CacheError::Corrupt(e.to_string()))?,
            )?;
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
                let key = String::from_utf8_lossy(&k).into_owned();
                let mut parts = key.splitn(3, '\n');
                let (Some(u), Some(r), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                if let Ok(rec) = serde_json::from_slice::<TagRecord>(&v) {
                    out.push((u.to_string(), r.to_string(), t.to_string(), rec));
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn remove_tag(&self, upstream: &str, repo: &str, tag: &str) -> CacheResult<()> {
        let key = tag_key(upstream, repo, tag);
        self.hot().tags.remove(&key);
        self.blocking(move |i| {
            i.tags.remove(key)?;
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
                .filter_map(|k| std::str::from_utf8(&k).ok().and_then(|h| Digest::from_hex(h).ok()))
                .collect())
        })
        .await
    }

    /// Every published blob with its record.
    pub async fn list_blobs(&self) -> CacheResult<Vec<(Digest, BlobRecord)>> {
        self.blocking(|i| {
            let mut out = Vec::new();
            for item in i.blobs.iter() {
                let (k, v) = item?;
                let digest = std::str::from_utf8(&k).ok().and_then(|h| Digest::from_hex(h).ok());
                if let (Some(d), Ok(r)) = (digest, serde_json::from_slice::<BlobRecord>(&v)) {
                    out.push((d, r));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes everything: records, manifests, tags, lists, signatures and blob data.
    pub async fn purge(&self) -> CacheResult<u64> {
        *self.hot() = Hot::default();
        self.blocking(|i| {
            let mut removed = 0;
            for item in i.blobs.iter() {
                let (k, v) = item?;
                if let (Some(d), Ok(r)) = (
                    std::str::from_utf8(&k).ok().and_then(|h| Digest::from_hex(h).ok()),
                    serde_json::from_slice::<BlobRecord>(&v),
                ) {
                    i.store.remove(&d, &r.location)?;
                }
                removed += 1;
            }
            for tree in [
                &i.blobs,
                &i.manifests,
                &i.tags,
                &i.tag_lists,
                &i.signatures,
                &i.responses,
            ] {
                removed += if std::ptr::eq(tree, &i.blobs) {
                    0
                } else {
                    tree.len() as u64
                };
                tree.clear()?;
            }
            i.db.flush()?;
            Ok(removed)
        })
        .await
    }

    /// A small JSON value kept under `key` (proxy statistics).
    pub async fn meta<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> CacheResult<Option<T>> {
        self.blocking(move |i| decode(i.responses.get(format!("meta\n{key}"))?.as_deref()))
            .await
    }

    pub async fn put_meta<T: Serialize + Send + 'static>(&self, key: &'static str, value: T) -> CacheResult<()> {
        self.blocking(move |i| {
            let bytes = serde_json::to_vec(&value).map_err(|e| CacheError::Corrupt(e.to_string()))?;
            i.responses.insert(format!("meta\n{key}"), bytes)?;
            Ok(())
        })
        .await
    }

    /// Readiness: the database takes a write and the blob store takes a file.
    pub async fn probe(&self) -> CacheResult<()> {
        self.blocking(|i| {
            i.responses.insert("readiness-probe", now_ms().to_be_bytes().to_vec())?;
            i.db.flush()?;
            i.store.probe()?;
            Ok(())
        })
        .await
    }

    /// Writes everything to disk (shutdown, tests).
    pub async fn flush(&self) -> CacheResult<()> {
        self.blocking(|i| {
            i.db.flush()?;
            Ok(())
        })
        .await
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: Option<&[u8]>) -> CacheResult<Option<T>> {
    value
        .map(|v| serde_json::from_slice(v).map_err(|e| CacheError::Corrupt(e.to_string())))
        .transpose()
}

impl Inner {
    /// Removes a blob's record and then its bytes; returns the record it had.
    fn remove_blob(&self, d: &Digest) -> CacheResult<Option<BlobRecord>> {
        let Some(old) = self.blobs.remove(d.hex().as_bytes())? else {
            return Ok(None);
        };
        let record: Option<BlobRecord> = decode(Some(&old))?;
        if let Some(r) = &record {
            self.store.remove(d, &r.location)?;
            self.blob_bytes.fetch_sub(
                r.size.min(self.blob_bytes.load(std::sync::atomic::Ordering::Relaxed)),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok(record)
    }

    fn blob(&self, digest: &Digest) -> CacheResult<Option<BlobRecord>> {
        decode(self.blobs.get(digest.hex().as_bytes())?.as_deref())
    }

    /// sled is authoritative: interrupted fills are discarded, records whose data is
    /// missing or the wrong size are dropped (a miss), data nobody records is deleted.
    fn repair(&self) -> CacheResult<RepairReport> {
        let mut report = RepairReport::default();
        for item in self.fills.iter() {
            let (k, _) = item?;
            let fill_id = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| CacheError::Corrupt("fill key".into()))?,
            );
            self.store.discard_staged(fill_id)?;
            self.fills.remove(k)?;
            report.interrupted_fills += 1;
        }
        let mut live = std::collections::HashSet::new();
        for item in self.blobs.iter() {
            let (k, v) = item?;
            let digest = std::str::from_utf8(&k).ok().and_then(|h| Digest::from_hex(h).ok());
            let record: Option<BlobRecord> = serde_json::from_slice(&v).ok();
            let intact = match (&digest, &record) {
                (Some(d), Some(r)) => self.store.stored_size(d, &r.location)? == Some(r.size),
                _ => false,
            };
            if intact {
                if let (Some(d), Some(r)) = (digest, record) {
                    live.insert((d.hex().to_string(), r.location));
                }
            } else {
                self.blobs.remove(&k)?;
                if let (Some(d), Some(r)) = (digest, record) {
                    self.store.remove(&d, &r.location)?;
                }
                report.records_without_data += 1;
            }
        }
        for (digest, location) in self.store.list()? {
            let referenced = match (&digest, &location) {
                (Some(d), loc) => live.contains(&(d.hex().to_string(), loc.clone())),
                (None, loc) => live.iter().any(|(_, l)| l == loc),
            };
            if !referenced {
                let d = digest.unwrap_or_else(|| Digest::of(b""));
                self.store.remove(&d, &location)?;
                report.data_without_record += 1;
            }
        }
        self.db.flush()?;
        Ok(report)
    }
}
