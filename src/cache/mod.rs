//! The cache: sled is the database of record for blob records, manifests (inline,
//! byte-exact), tag mappings, tag lists and the fill journal; blob bytes live in a
//! [`BlobStore`]. Only this module names sled. sled calls block, so the async API runs
//! them on the blocking pool. This file opens the cache and owns blob records (fills
//! staged, published by compare-and-swap, removed); the side tables, key formats, hot
//! set, startup repair and eviction have their own files.

pub mod blob_store;
pub mod buffers;
pub mod eviction;
pub mod files;
mod hot;
mod keys;
mod metadata;
mod records;
mod repair;
pub mod sled_store;

pub use blob_store::{BlobLocation, BlobRead, BlobReader, BlobStore, StagedBlob};
pub use eviction::{Evicted, ReaderGuard};
pub use records::{
    BlobRecord, CacheStats, RepairReport, SignatureEntry, StoredManifest, StoredResponse, TagListPage, TagRecord,
    now_ms,
};

use crate::oci::Digest;
use hot::Hot;
use records::{decode, encode};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Another process holds the data directory (its lock file).
    #[error("the database in {} is in use by another pullgate process; stop it first", data_dir.display())]
    Locked { data_dir: PathBuf },
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
    Join(#[from] tokio::task::JoinError),
}

pub type CacheResult<T> = Result<T, CacheError>;

/// Where layer bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BlobStoreKind {
    #[default]
    Files,
    Sled,
}

/// How long opening waits for a sled lock that a handle of this same process is still
/// releasing (sled's I/O threads outlive the last handle for a moment).
const SLED_LOCK_WAIT: Duration = Duration::from_secs(5);

struct Inner {
    db: sled::Db,
    /// Manifest digest → (size, stored at), for LRU eviction of manifests.
    manifest_meta: sled::Tree,
    /// Last reads not yet written back.
    access: std::sync::Mutex<std::collections::HashMap<eviction::AccessKey, u64>>,
    /// Clients reading each blob now: never evicted under them.
    readers: std::sync::Mutex<std::collections::HashMap<Digest, usize>>,
    /// Sum of published blob sizes.
    blob_bytes: std::sync::atomic::AtomicU64,
    /// Recently used manifests and tag mappings (see [`hot`]).
    hot: std::sync::Mutex<Hot>,
    signatures: sled::Tree,
    responses: sled::Tree,
    blobs: sled::Tree,
    manifests: sled::Tree,
    tags: sled::Tree,
    tag_lists: sled::Tree,
    fills: sled::Tree,
    store: Box<dyn BlobStore>,
    /// `data_dir/lock`, held (flock) while the cache is open: a second process gets
    /// [`CacheError::Locked`]. Declared last, so it is released after the database.
    _lock: std::fs::File,
}

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// Takes `data_dir/lock` for this process, or says who has it.
fn lock_data_dir(data_dir: &Path) -> CacheResult<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("lock"))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(CacheError::Locked {
            data_dir: data_dir.to_path_buf(),
        }),
        Err(e) => Err(io::Error::from(e).into()),
    }
}

/// Opens sled under `data_dir/db`. This process holds `data_dir/lock`, so a sled lock
/// that is still taken belongs to a handle of this process that is shutting down
/// (sled reports it as an `Other` I/O error): wait for it, briefly.
fn open_db(data_dir: &Path) -> CacheResult<sled::Db> {
    let deadline = Instant::now() + SLED_LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(data_dir.join("db"))
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.kind() == io::ErrorKind::Other && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
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
        let lock = lock_data_dir(data_dir)?;
        let db = open_db(data_dir)?;
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
            _lock: lock,
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
        tokio::task::spawn_blocking(move || f(&inner)).await?
    }

    fn hot(&self) -> std::sync::MutexGuard<'_, Hot> {
        self.inner.hot.lock().unwrap_or_else(|p| p.into_inner())
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
            i.fills.insert(keys::fill(fill_id), d.hex().as_bytes())?;
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
            let value = encode(&record)?;
            let swapped = i
                .blobs
                .compare_and_swap(keys::digest(&d), None as Option<&[u8]>, Some(value))?;
            i.fills.remove(keys::fill(fill_id))?;
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
            i.fills.remove(keys::fill(fill_id))?;
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

    /// Every published blob with its record.
    pub async fn list_blobs(&self) -> CacheResult<Vec<(Digest, BlobRecord)>> {
        self.blocking(|i| {
            let mut out = Vec::new();
            for item in i.blobs.iter() {
                let (k, v) = item?;
                if let (Some(d), Ok(r)) = (keys::parse_digest(&k), serde_json::from_slice::<BlobRecord>(&v)) {
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
                if let (Some(d), Ok(r)) = (keys::parse_digest(&k), serde_json::from_slice::<BlobRecord>(&v)) {
                    i.store.remove(&d, &r.location)?;
                }
                removed += 1;
            }
            i.blobs.clear()?;
            i.blob_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
            i.manifest_meta.clear()?;
            for tree in [&i.manifests, &i.tags, &i.tag_lists, &i.signatures, &i.responses] {
                removed += tree.len() as u64;
                tree.clear()?;
            }
            i.db.flush()?;
            Ok(removed)
        })
        .await
    }

    /// Readiness: the database takes a write and the blob store takes a file.
    pub async fn probe(&self) -> CacheResult<()> {
        self.blocking(|i| {
            i.responses
                .insert(keys::meta("readiness-probe"), now_ms().to_be_bytes().to_vec())?;
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

impl Inner {
    /// Removes a blob's record and then its bytes; returns the record it had.
    fn remove_blob(&self, d: &Digest) -> CacheResult<Option<BlobRecord>> {
        let Some(old) = self.blobs.remove(keys::digest(d))? else {
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
        decode(self.blobs.get(keys::digest(digest))?.as_deref())
    }
}
