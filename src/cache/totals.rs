//! The cache's running totals (blobs, manifests, tags and their bytes), kept in atomics
//! as entries come and go so that stats and metrics never scan the database; loaded
//! from the clean-close marker or a startup scan.

use super::Totals;
use std::sync::atomic::{AtomicU64, Ordering};

/// The running totals, updated as entries come and go.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) blobs: AtomicU64,
    pub(super) blob_bytes: AtomicU64,
    pub(super) manifests: AtomicU64,
    pub(super) manifest_bytes: AtomicU64,
    pub(super) tags: AtomicU64,
}

pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub(super) fn sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
}

impl Counters {
    pub(super) fn load(&self, t: Totals) {
        self.blobs.store(t.blobs, Ordering::Relaxed);
        self.blob_bytes.store(t.blob_bytes, Ordering::Relaxed);
        self.manifests.store(t.manifests, Ordering::Relaxed);
        self.manifest_bytes.store(t.manifest_bytes, Ordering::Relaxed);
        self.tags.store(t.tags, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> Totals {
        Totals {
            blobs: self.blobs.load(Ordering::Relaxed),
            blob_bytes: self.blob_bytes.load(Ordering::Relaxed),
            manifests: self.manifests.load(Ordering::Relaxed),
            manifest_bytes: self.manifest_bytes.load(Ordering::Relaxed),
            tags: self.tags.load(Ordering::Relaxed),
        }
    }
}
