//! The `BlobStore` interface: where layer bytes live while a fill stages them and
//! after they are published. Deliberately narrow (stage, commit, open at an offset,
//! remove, list) so that an object-store implementation can follow. Implementations
//! never decide what is a hit: only the record in sled does.

use crate::oci::Digest;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io::{self, Read};

/// Where a published blob's bytes are, as recorded in its sled record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "store", rename_all = "lowercase")]
pub enum BlobLocation {
    /// `data_dir/blobs/sha256/<2>/<hex>`, named by the digest.
    Files,
    /// Chunks in sled keyed by the fill that wrote them.
    Sled { fill_id: u64 },
    /// `<prefix>blobs/sha256/<hex>` in the S3 bucket, named by the digest.
    S3,
}

/// A reader positioned at some offset of a blob.
pub trait BlobRead: Read + Send {
    /// Reads up to `max` bytes only if that needs no wait for the disk (the bytes are in
    /// memory already), so an async task can read without a hop to the blocking pool;
    /// `Ok(None)` means the read would wait, and the caller reads with [`Read`] on the
    /// blocking pool instead. An empty `Bytes` is the end of the blob.
    fn read_now(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        let _ = max;
        Ok(None)
    }
    /// The open file and the offset reading is at, when the bytes are a plain file the
    /// kernel can send from (`crate::zero_copy`).
    fn file_at(&self) -> Option<(std::sync::Arc<std::fs::File>, u64)> {
        None
    }
}

pub type BlobReader = Box<dyn BlobRead>;

/// Bytes being written by one fill, readable by joiners while it runs.
pub trait StagedBlob: Send {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Says how many bytes will be written (upstream's `Content-Length`), so the store
    /// can allocate space up front; a hint only, it may fail silently.
    fn reserve(&mut self, size: u64) {
        let _ = size;
    }
    /// How many bytes a reader opened with [`BlobStore::open_staged`] can read now.
    fn readable_len(&self) -> u64;
    /// Makes the bytes durable and permanent (the caller has verified them) and says
    /// where they now live. Nothing is a hit until the caller publishes the record.
    fn commit(self: Box<Self>, digest: &Digest) -> io::Result<BlobLocation>;
    /// Throws the staged bytes away.
    fn discard(self: Box<Self>);
}

pub trait BlobStore: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Starts staging the bytes of fill `fill_id`.
    fn begin(&self, fill_id: u64) -> io::Result<Box<dyn StagedBlob>>;
    /// Starts staging the bytes of fill `fill_id` of `digest` (a store that writes to
    /// the final name as it goes needs it); the default is [`BlobStore::begin`].
    fn begin_for(&self, fill_id: u64, digest: &Digest) -> io::Result<Box<dyn StagedBlob>> {
        let _ = digest;
        self.begin(fill_id)
    }
    /// Whether other processes share this store's data (an object store several replicas
    /// use): then data this cache has no record of is not an orphan to remove.
    fn shares_data(&self) -> bool {
        false
    }
    /// Opens the staged bytes of a running fill at `offset`.
    fn open_staged(&self, fill_id: u64, offset: u64) -> io::Result<BlobReader>;
    /// Opens a published blob at `offset`.
    fn open(&self, digest: &Digest, location: &BlobLocation, offset: u64) -> io::Result<BlobReader>;
    /// Opens a published blob to read `range` (from its start; the reader may stop at
    /// its end, which a remote store asks for alone) when its bytes are there and `size`
    /// long (`NotFound` or `InvalidData` otherwise), where the store can tell cheaply;
    /// the default only opens it at the range's start.
    fn open_checked(
        &self,
        digest: &Digest,
        location: &BlobLocation,
        range: std::ops::Range<u64>,
        size: u64,
    ) -> io::Result<BlobReader> {
        let _ = size;
        self.open(digest, location, range.start)
    }
    /// The size of a published blob's bytes, `None` when they are missing.
    fn stored_size(&self, digest: &Digest, location: &BlobLocation) -> io::Result<Option<u64>>;
    fn remove(&self, digest: &Digest, location: &BlobLocation) -> io::Result<()>;
    /// Removes staged data of fills that will never finish (after a crash).
    fn discard_staged(&self, fill_id: u64) -> io::Result<()>;
    /// Stores `bytes` (whose digest the caller vouches for) at once, without making them
    /// durable yet ([`BlobStore::sync`] does): the bulk loader's path. The default
    /// stages and commits them as a fill would.
    fn import(&self, fill_id: u64, digest: &Digest, bytes: &[u8]) -> io::Result<BlobLocation> {
        let mut staged = self.begin(fill_id)?;
        staged.write(bytes)?;
        staged.commit(digest)
    }
    /// Makes everything imported durable.
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    /// Checks that bytes can be written now (readiness).
    fn probe(&self) -> io::Result<()>;
    /// Every published location with the digest it claims to hold, for orphan repair.
    fn list(&self) -> io::Result<Vec<(Option<Digest>, BlobLocation)>>;
    /// The same as [`BlobStore::list`], one at a time, without holding them all (the
    /// default collects [`BlobStore::list`] first). `f` may remove what it is given.
    fn for_each_stored(&self, f: &mut dyn FnMut(Option<Digest>, BlobLocation) -> io::Result<()>) -> io::Result<()> {
        for (digest, location) in self.list()? {
            f(digest, location)?;
        }
        Ok(())
    }
}
