//! The cache: sled is the database of record for blob records, manifests (inline,
//! byte-exact), tag mappings, tag lists, the fill journal and the last-use index; blob
//! bytes live in a [`BlobStore`]. Only this module names sled. sled calls block, so the
//! async API runs them on the blocking pool. This file opens and closes the cache (a
//! clean close leaves a marker, so the next open scans nothing) and owns blob records:
//! fills staged, published by compare-and-swap, removed. The side tables, key formats,
//! hot set, startup repair and eviction have their own files.

pub mod blob_store;
pub mod buffers;
pub mod bulk;
pub mod eviction;
pub mod files;
pub mod fleet;
mod hot;
mod keys;
mod metadata;
mod openshift;
mod records;
mod repair;
pub mod s3;
mod shared;
pub mod sled_store;
mod storage;
mod totals;
mod verdicts;

pub use blob_store::{BlobLocation, BlobRead, BlobReader, BlobStore, StagedBlob};
pub use eviction::{Evicted, ReaderGuard};
pub use openshift::StoredGraph;
pub use records::{
    BlobRecord, CacheStats, RepairReport, SignatureEntry, StoredManifest, StoredResponse, TagListPage, TagRecord,
    Totals, now_ms,
};
pub use storage::is_full as storage_is_full;
pub use verdicts::VerdictKey;

use crate::oci::Digest;
use hot::Hot;
use keys::Kind;
use records::{decode, encode};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use totals::{Counters, add, sub};

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
    /// A published blob whose bytes are gone or not the recorded size: its record has
    /// been dropped, so the blob is a miss now.
    #[error("stored blob {0} is missing or truncated; its record was dropped")]
    BlobDataMissing(Digest),
    /// The shared blob store (the bucket) did not answer: the blob is neither served
    /// nor filled until it does.
    #[error("the shared blob store did not answer: {0}")]
    StoreUnavailable(io::Error),
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The data directory vanished, was replaced or turned read-only under pullgate.
    #[error("the cache's storage is gone: {0}")]
    StorageLost(String),
    /// The database stopped answering (sled stalled inside its log).
    #[error("the database is not answering: {0}")]
    Stalled(String),
    /// The data directory's disk has no room (the storage watch's probe file did not fit).
    #[error("the cache's disk is full: {0}")]
    DiskFull(String),
    /// The database could not be opened because its disk is full (sled writes as it
    /// opens): nothing is served until there is room again.
    #[error("the disk of {} is full: the database cannot be opened; free space there (or raise the volume's size) and start pullgate again", data_dir.display())]
    OpenOnFullDisk { data_dir: PathBuf },
}

impl CacheError {
    /// Whether the failure is the disk being full (or out of quota): the cache is not
    /// broken, it has no room.
    pub fn is_full(&self) -> bool {
        match self {
            CacheError::Io(e) => storage::is_full(e),
            CacheError::Db(sled::Error::Io(e)) => storage::is_full(e),
            CacheError::OpenOnFullDisk { .. } | CacheError::DiskFull(_) => true,
            _ => false,
        }
    }
}

pub type CacheResult<T> = Result<T, CacheError>;

/// A sled transaction's outcome as a cache result (the closures never abort).
fn committed<T>(result: Result<T, TransactionError<()>>) -> CacheResult<T> {
    result.map_err(|e| match e {
        TransactionError::Storage(e) => CacheError::Db(e),
        TransactionError::Abort(()) => CacheError::Corrupt("transaction aborted".into()),
    })
}

type TxResult<T> = Result<T, ConflictableTransactionError<()>>;

/// Where layer bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BlobStoreKind {
    #[default]
    Files,
    Sled,
    S3,
}

/// The blob store to open, with what it needs.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    Files,
    Sled,
    S3(Box<s3::S3Settings>),
}

impl From<BlobStoreKind> for StoreSettings {
    /// `S3` needs its settings: [`StoreSettings::S3`]; from the kind alone it is the
    /// `AWS_*` environment's bucket (`AWS_BUCKET`), which `open` refuses if unset.
    fn from(kind: BlobStoreKind) -> Self {
        match kind {
            BlobStoreKind::Files => StoreSettings::Files,
            BlobStoreKind::Sled => StoreSettings::Sled,
            BlobStoreKind::S3 => StoreSettings::S3(Box::new(s3::S3Settings {
                endpoint: std::env::var("AWS_ENDPOINT").ok(),
                bucket: std::env::var("AWS_BUCKET").unwrap_or_default(),
                region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
                prefix: String::new(),
                credentials: None,
                allow_http: false,
                ca_pem: None,
                part_size: 8 << 20,
                fleet: fleet::FleetSettings::default(),
            })),
        }
    }
}

/// How long opening waits for a sled lock that a handle of this same process is still
/// releasing (sled's I/O threads outlive the last handle for a moment).
const SLED_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The named value that marks a clean close, holding the totals at that moment.
const CLEAN_STOP: &str = "clean_stop";

struct Inner {
    db: sled::Db,
    /// Manifest digest → (size, last use), for eviction and the totals.
    manifest_meta: sled::Tree,
    /// The last-use index: (last use, kind, digest) → size, oldest first.
    lru: sled::Tree,
    /// Blob removals under way: digest → location, written with the record's removal
    /// and cleared once the data is gone, so a crash between the two is finished at the
    /// next start without looking at anything else.
    removals: sled::Tree,
    /// Last reads not yet written back.
    access: std::sync::Mutex<std::collections::HashMap<eviction::AccessKey, u64>>,
    /// Clients reading each blob now: never evicted under them.
    readers: std::sync::Mutex<std::collections::HashMap<Digest, usize>>,
    totals: Counters,
    /// Recently used manifests and tag mappings (see [`hot`]).
    hot: Hot,
    signatures: sled::Tree,
    /// Signature policy verdicts, and the platform manifests a verified index covers.
    verdicts: sled::Tree,
    responses: sled::Tree,
    blobs: sled::Tree,
    manifests: sled::Tree,
    tags: sled::Tree,
    tag_lists: sled::Tree,
    fills: sled::Tree,
    store: Box<dyn BlobStore>,
    /// The bucket other replicas share, when the store is `s3`: a local miss looks
    /// there before it is a miss (see [`shared`]).
    shared: Option<s3::S3BlobStore>,
    /// Keys recently looked up in the shared store and not found, until when: a miss
    /// costs at most one request to it.
    shared_misses: quick_cache::sync::Cache<Vec<u8>, Instant>,
    /// This replica's part in the fleet sharing the bucket (see [`fleet`]).
    fleet: Option<fleet::Fleet>,
    /// Whether the data directory is still there and writable.
    storage: storage::StorageWatch,
    /// `data_dir/lock`, held (flock) while the cache is open: a second process gets
    /// [`CacheError::Locked`]. Declared last, so it is released after the database.
    _lock: std::fs::File,
}

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// This data directory's replica id: random, made once and kept in the database.
fn replica_id(db: &sled::Db) -> CacheResult<String> {
    use std::hash::{BuildHasher, Hasher};
    let key = keys::meta("replica_id");
    let meta = db.open_tree("responses")?;
    if let Some(id) = meta.get(&key)? {
        return Ok(String::from_utf8_lossy(&id).into_owned());
    }
    // std's hasher keys are random per process: a random id without another crate.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    let id = format!("{:016x}", h.finish());
    meta.insert(&key, id.as_bytes())?;
    Ok(id)
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
    storage::remove_unfinished_snapshots(&data_dir.join("db"))?;
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
            Err(sled::Error::Io(e)) if storage::is_full(&e) => {
                return Err(CacheError::OpenOnFullDisk {
                    data_dir: data_dir.to_path_buf(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Cache {
    /// Opens (or creates) the database under `data_dir/db` and the chosen blob store.
    /// After a clean [`Cache::close`] nothing is scanned; otherwise startup repair runs.
    pub fn open(data_dir: &Path, store: impl Into<StoreSettings>) -> CacheResult<(Cache, RepairReport)> {
        Self::open_wrapped(data_dir, store, |store| store)
    }

    /// Like [`Cache::open`], with the blob store wrapped by `wrap` (fault injection in
    /// tests; instrumentation).
    pub fn open_wrapped(
        data_dir: &Path,
        store: impl Into<StoreSettings>,
        wrap: impl FnOnce(Box<dyn BlobStore>) -> Box<dyn BlobStore>,
    ) -> CacheResult<(Cache, RepairReport)> {
        std::fs::create_dir_all(data_dir)?;
        let lock = lock_data_dir(data_dir)?;
        let db = open_db(data_dir)?;
        let mut shared = None;
        let mut fleet = None;
        let store: Box<dyn BlobStore> = match store.into() {
            StoreSettings::Files => Box::new(files::FileBlobStore::open(data_dir)?),
            StoreSettings::Sled => Box::new(sled_store::SledBlobStore::open(&db)?),
            StoreSettings::S3(settings) => {
                if settings.bucket.is_empty() {
                    return Err(CacheError::Io(io::Error::other("the s3 blob store needs a bucket")));
                }
                let s3 = s3::S3BlobStore::open(data_dir, &db, &settings)?;
                shared = Some(s3.clone());
                fleet = Some(fleet::Fleet::new(replica_id(&db)?, settings.fleet.clone()));
                Box::new(s3)
            }
        };
        let store = wrap(store);
        let inner = Inner {
            blobs: db.open_tree("blobs")?,
            manifests: db.open_tree("manifests")?,
            tags: db.open_tree("tags")?,
            tag_lists: db.open_tree("tag_lists")?,
            fills: db.open_tree("fills")?,
            signatures: db.open_tree("signatures")?,
            verdicts: db.open_tree("verdicts")?,
            responses: db.open_tree("responses")?,
            manifest_meta: db.open_tree("manifest_meta")?,
            lru: db.open_tree("lru")?,
            removals: db.open_tree("removals")?,
            access: Default::default(),
            readers: Default::default(),
            totals: Counters::default(),
            hot: Hot::new(),
            shared,
            shared_misses: quick_cache::sync::Cache::new(4096),
            fleet,
            db,
            store,
            storage: storage::StorageWatch::new(data_dir)?,
            _lock: lock,
        };
        let marker: Option<Totals> = decode(inner.responses.get(keys::meta(CLEAN_STOP))?.as_deref())?;
        let report = match marker {
            Some(totals) => {
                // From here on a crash must repair: the marker goes before anything else.
                inner.responses.remove(keys::meta(CLEAN_STOP))?;
                inner.db.flush()?;
                inner.totals.load(totals);
                RepairReport::default()
            }
            // A database just created has nothing to repair.
            None if !inner.db.was_recovered() => RepairReport::default(),
            None => inner.repair()?,
        };
        Ok((Cache { inner: Arc::new(inner) }, report))
    }

    /// Writes back recorded reads, flushes, and leaves the clean-stop marker with the
    /// totals, so the next open scans nothing. Call it last: the cache should not be
    /// written after it.
    pub async fn close(&self) -> CacheResult<()> {
        self.blocking(|i| {
            i.write_back_access()?;
            i.db.flush()?;
            i.responses
                .insert(keys::meta(CLEAN_STOP), encode(&i.totals.snapshot())?)?;
            i.db.flush()?;
            Ok(())
        })
        .await
    }

    pub fn store_name(&self) -> &'static str {
        self.inner.store.name()
    }

    async fn blocking<T, F>(&self, f: F) -> CacheResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> CacheResult<T> + Send + 'static,
    {
        // With the data directory gone the database is not touched: sled would spin
        // writing into it, and nothing it answers can be trusted to last.
        if let Some(why) = self.inner.storage.lost() {
            return Err(CacheError::StorageLost(why));
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await?
    }

    fn hot(&self) -> &Hot {
        &self.inner.hot
    }

    /// The running totals (entries and bytes), without a look at the database.
    pub fn totals(&self) -> Totals {
        self.inner.totals.snapshot()
    }

    /// A published blob's record: local, or (with a shared store) adopted from what
    /// another replica published.
    pub async fn blob(&self, digest: &Digest) -> CacheResult<Option<BlobRecord>> {
        let d = digest.clone();
        self.blocking(move |i| match i.blob(&d)? {
            Some(r) => Ok(Some(r)),
            None => i.adopt_blob(&d),
        })
        .await
    }

    /// A blob recorded in this replica's database, without asking a shared store (the
    /// fill registry asks that once per digest, under its starting gate).
    pub async fn local_blob(&self, digest: &Digest) -> CacheResult<Option<BlobRecord>> {
        let d = digest.clone();
        self.blocking(move |i| i.blob(&d)).await
    }

    /// Synchronous lookup, for the fill registry's double-check under its lock.
    pub fn blob_now(&self, digest: &Digest) -> CacheResult<Option<BlobRecord>> {
        self.inner.blob(digest)
    }

    /// Opens a published blob to read `range` (see `BlobStore::open_checked`). Data that is gone or not the recorded size is
    /// [`CacheError::BlobDataMissing`], and its record is dropped on the way (repair at
    /// first read: the blob is a miss from now on, never served wrong).
    pub async fn open_blob(
        &self,
        digest: &Digest,
        record: &BlobRecord,
        range: std::ops::Range<u64>,
    ) -> CacheResult<BlobReader> {
        let (d, loc, size) = (digest.clone(), record.location.clone(), record.size);
        self.blocking(move |i| match i.store.open_checked(&d, &loc, range, size) {
            Ok(reader) => Ok(reader),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::InvalidData) => {
                tracing::warn!(digest = %d, error = %e, "stored blob is missing or truncated; dropping its record");
                i.remove_blob(&d)?;
                Err(CacheError::BlobDataMissing(d))
            }
            Err(e) => Err(i.store_failed(e)),
        })
        .await
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
            match i.store.begin_for(fill_id, &d) {
                Ok(staged) => Ok((fill_id, staged)),
                Err(e) => {
                    i.fills.remove(keys::fill(fill_id))?;
                    Err(i.store_failed(e))
                }
            }
        })
        .await
    }

    /// Commits verified staged bytes and publishes the record with one compare-and-swap
    /// (absent → present), in one transaction with its last-use entry and the end of its
    /// journal entry. Returns the record now in force.
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
            let now = now_ms();
            let record = BlobRecord {
                size,
                location,
                created_ms: now,
                last_access_ms: now,
            };
            let existing = i.insert_blob(&d, &record, Some(fill_id))?;
            i.db.flush()?;
            match existing {
                None => {
                    if let Some(fleet) = &i.fleet {
                        fleet.used(&d, now, size);
                    }
                    Ok(record)
                }
                Some(existing) => {
                    // Someone published first; keep theirs. Only remove ours when it
                    // lives elsewhere (a content-addressed file is the same file).
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

    /// How often the fleet's rounds are due, when the store is shared.
    pub fn fleet_report_interval(&self) -> Option<std::time::Duration> {
        self.inner.fleet.as_ref().map(|f| f.settings.report_interval)
    }

    /// Whether the blob store is shared with other replicas (the `s3` store).
    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// On a shared store, learns every blob in the bucket and every replica's reported
    /// uses (see `fleet`); returns the blobs this replica did not know.
    pub async fn learn_bucket(&self) -> CacheResult<u64> {
        self.blocking(|i| i.learn_bucket()).await
    }

    /// One round of the fleet's work when the store is shared (reports, heartbeat,
    /// merging, and on the evictor eviction beyond `max_size`); nothing otherwise.
    pub async fn fleet_round(
        &self,
        max_size: Option<u64>,
        protected: HashSet<Digest>,
    ) -> CacheResult<fleet::FleetRound> {
        if self.inner.fleet.is_none() {
            return Ok(fleet::FleetRound::default());
        }
        self.blocking(move |i| i.fleet_round(max_size, &protected)).await
    }

    /// Entry counts and sizes, for metrics and `cache stats`: the running totals and the
    /// database's size on disk, in constant time.
    pub async fn stats(&self) -> CacheResult<CacheStats> {
        // The sled store's chunks are part of the database's size.
        let blobs_outside_db = self.store_name() != "sled";
        let totals = self.totals();
        self.blocking(move |i| {
            Ok(CacheStats {
                blobs: totals.blobs,
                blob_bytes: if blobs_outside_db { totals.blob_bytes } else { 0 },
                manifests: totals.manifests,
                tags: totals.tags,
                db_bytes: i.db.size_on_disk()?,
            })
        })
        .await
    }

    /// Up to `limit` published blobs in digest order, after `after` (a page of a scan
    /// that never holds the whole cache).
    pub async fn blobs_page(&self, after: Option<Digest>, limit: usize) -> CacheResult<Vec<(Digest, BlobRecord)>> {
        self.blocking(move |i| {
            let start = after.as_ref().map(|d| keys::digest(d).to_vec());
            let mut out = Vec::with_capacity(limit.min(1024));
            for item in page(&i.blobs, start) {
                let (k, v) = item?;
                if let (Some(d), Ok(r)) = (keys::parse_digest(&k), serde_json::from_slice::<BlobRecord>(&v)) {
                    out.push((d, r));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Re-hashes stored blobs against their digests and sizes, in one trip to the
    /// blocking pool: for each, whether its bytes are intact.
    pub async fn rehash_blobs(&self, blobs: Vec<(Digest, BlobRecord)>) -> CacheResult<Vec<bool>> {
        self.blocking(move |i| {
            let mut buf = vec![0u8; 1 << 20];
            Ok(blobs
                .iter()
                .map(|(d, r)| i.rehash(d, r, &mut buf).unwrap_or(false))
                .collect())
        })
        .await
    }

    /// Removes everything: records, manifests, tags, lists, signatures and blob data.
    pub async fn purge(&self) -> CacheResult<u64> {
        self.hot().clear();
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
            for tree in [&i.manifests, &i.tags, &i.tag_lists, &i.signatures] {
                removed += tree.len() as u64;
                tree.clear()?;
            }
            for tree in [&i.manifest_meta, &i.lru, &i.removals, &i.responses, &i.verdicts] {
                tree.clear()?;
            }
            i.totals.load(Totals::default());
            i.db.flush()?;
            Ok(removed)
        })
        .await
    }

    /// Checks that the data directory is still the one opened and takes a file (the
    /// housekeeping does every few seconds; readiness every time).
    pub fn check_storage(&self) -> CacheResult<()> {
        self.inner.storage.refresh().map_err(|t| match t {
            storage::Trouble::Lost(why) => CacheError::StorageLost(why),
            storage::Trouble::Full(why) => CacheError::DiskFull(why),
        })
    }

    /// Whether the data directory's disk was full at the last look (the storage watch's,
    /// or a write's since): misses are then served through, not filled.
    pub fn disk_full(&self) -> bool {
        self.inner.storage.full()
    }

    /// A fill of a `needed`-byte blob found the disk full (said once): misses are
    /// served through until the disk has that much free.
    pub fn disk_filled(&self, reason: &str, needed: u64) {
        self.inner.storage.saw_full(reason, needed);
    }

    /// Readiness: the database takes a write and the blob store takes a file.
    pub async fn probe(&self) -> CacheResult<()> {
        self.check_storage()?;
        self.blocking(|i| {
            i.responses
                .insert(keys::meta("readiness-probe"), now_ms().to_be_bytes().to_vec())?;
            i.db.flush()?;
            i.store.probe()?;
            Ok(())
        })
        .await
    }

    /// Whether the database still takes a write: `Err` with sled's error when it does
    /// not. sled keeps an I/O error of its log (a write into a disk that filled up) for
    /// the life of the handle, so every later write fails even once there is room, and
    /// only opening the database again clears it. Cheap: one in-memory insert, no flush.
    pub async fn database_takes_writes(&self) -> Result<(), sled::Error> {
        let inserted = self
            .blocking(|i| {
                i.responses
                    .insert(keys::meta("housekeeping-probe"), now_ms().to_be_bytes().to_vec())?;
                Ok(())
            })
            .await;
        match inserted {
            Err(CacheError::Db(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes everything to disk (tests; shutdown uses [`Cache::close`]).
    pub async fn flush(&self) -> CacheResult<()> {
        self.blocking(|i| {
            i.db.flush()?;
            Ok(())
        })
        .await
    }
}

/// The entries of `tree` after `start` (exclusive), in key order.
fn page(tree: &sled::Tree, start: Option<Vec<u8>>) -> sled::Iter {
    match start {
        Some(k) => tree.range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
        None => tree.iter(),
    }
}

impl Inner {
    /// A blob store failure as the cache reports it: on a shared store, the bucket not
    /// answering (a client may retry); otherwise an I/O error of this machine.
    fn store_failed(&self, e: io::Error) -> CacheError {
        if self.store.shares_data() {
            CacheError::StoreUnavailable(e)
        } else {
            CacheError::Io(e)
        }
    }
}

impl Inner {
    /// Whether a stored blob's bytes hash to its digest and have its size.
    fn rehash(&self, d: &Digest, r: &BlobRecord, buf: &mut [u8]) -> io::Result<bool> {
        use std::io::Read as _;
        let mut reader = self.store.open_checked(d, &r.location, 0..r.size, r.size)?;
        let mut hasher = crate::oci::DigestHasher::new();
        loop {
            match reader.read(buf)? {
                0 => break,
                n => hasher.update(&buf[..n]),
            }
        }
        Ok(hasher.len() == r.size && &hasher.finish() == d)
    }

    fn blob(&self, digest: &Digest) -> CacheResult<Option<BlobRecord>> {
        decode(self.blobs.get(keys::digest(digest))?.as_deref())
    }

    /// Inserts a blob record and its last-use entry unless a record exists (returned
    /// then), ending the fill's journal entry in the same transaction.
    fn insert_blob(&self, d: &Digest, record: &BlobRecord, fill_id: Option<u64>) -> CacheResult<Option<BlobRecord>> {
        let key = keys::digest(d);
        let value = encode(record)?;
        let lru_key = keys::lru(record.last_access_ms, Kind::Blob, d);
        let existing = committed(
            (&self.blobs, &self.lru, &self.fills).transaction(|(blobs, lru, fills)| {
                if let Some(id) = fill_id {
                    fills.remove(&keys::fill(id))?;
                }
                if let Some(current) = blobs.get(key)? {
                    return Ok(Some(current));
                }
                blobs.insert(key, value.as_slice())?;
                lru.insert(&lru_key[..], &record.size.to_be_bytes()[..])?;
                Ok(None)
            }),
        )?;
        match existing {
            None => {
                add(&self.totals.blobs, 1);
                add(&self.totals.blob_bytes, record.size);
                Ok(None)
            }
            Some(current) => decode(Some(&current))?
                .map(Some)
                .ok_or_else(|| CacheError::Corrupt("CAS conflict without a value".into())),
        }
    }

    /// Removes a blob's record (with its last-use entry, leaving a tombstone) and then its
    /// bytes; returns the record it had.
    fn remove_blob(&self, d: &Digest) -> CacheResult<Option<BlobRecord>> {
        let key = keys::digest(d);
        let removed = committed((&self.blobs, &self.lru, &self.removals).transaction(
            |(blobs, lru, removals)| -> TxResult<_> {
                let Some(old) = blobs.remove(key)? else {
                    return Ok(None);
                };
                let record: Option<BlobRecord> = serde_json::from_slice(&old).ok();
                if let Some(r) = &record {
                    lru.remove(&keys::lru(r.last_access_ms, Kind::Blob, d)[..])?;
                    if let Ok(location) = serde_json::to_vec(&r.location) {
                        removals.insert(key, location)?;
                    }
                }
                Ok(Some(record))
            },
        ))?;
        let Some(record) = removed else { return Ok(None) };
        sub(&self.totals.blobs, 1);
        if let Some(r) = &record {
            sub(&self.totals.blob_bytes, r.size);
            self.store.remove(d, &r.location)?;
            self.removals.remove(key)?;
        }
        Ok(record)
    }
}
