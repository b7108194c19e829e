//! The in-memory hot set: recently used manifests (immutable by digest, and only bytes
//! already checked against it) and tag mappings (written through), answered without a
//! trip to the blocking pool. Bounded in bytes, not entries: `quick_cache` evicts the
//! coldest entries (CLOCK-Pro) as it fills, instead of clearing everything at a count.

use super::{StoredManifest, TagRecord};
use crate::oci::Digest;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// Bytes of manifests kept in memory (a release payload's manifests are ~2–10 KiB each;
/// a single manifest may be up to 4 MiB).
pub const HOT_MANIFEST_BYTES: u64 = 48 << 20;
/// Bytes of tag mappings kept in memory.
pub const HOT_TAG_BYTES: u64 = 8 << 20;

/// What an entry costs in memory: its bytes plus a fixed share for the key, the map
/// slot and the allocation.
const ENTRY_OVERHEAD: u64 = 128;

#[derive(Clone)]
struct ManifestWeight;

impl Weighter<Digest, StoredManifest> for ManifestWeight {
    fn weight(&self, _: &Digest, m: &StoredManifest) -> u64 {
        ENTRY_OVERHEAD + m.bytes.len() as u64 + m.media_type.len() as u64
    }
}

#[derive(Clone)]
struct TagWeight;

impl Weighter<Vec<u8>, TagRecord> for TagWeight {
    fn weight(&self, key: &Vec<u8>, t: &TagRecord) -> u64 {
        ENTRY_OVERHEAD + (key.len() + t.digest.len() + t.media_type.len()) as u64
    }
}

pub struct Hot {
    manifests: Cache<Digest, StoredManifest, ManifestWeight>,
    tags: Cache<Vec<u8>, TagRecord, TagWeight>,
}

impl Hot {
    pub fn new() -> Hot {
        Hot {
            manifests: Cache::with_weighter(8192, HOT_MANIFEST_BYTES, ManifestWeight),
            tags: Cache::with_weighter(16384, HOT_TAG_BYTES, TagWeight),
        }
    }

    pub fn manifest(&self, digest: &Digest) -> Option<StoredManifest> {
        self.manifests.get(digest)
    }

    pub fn put_manifest(&self, digest: &Digest, m: &StoredManifest) {
        self.manifests.insert(digest.clone(), m.clone());
    }

    pub fn remove_manifest(&self, digest: &Digest) {
        self.manifests.remove(digest);
    }

    pub fn tag(&self, key: &[u8]) -> Option<TagRecord> {
        self.tags.get(key)
    }

    pub fn put_tag(&self, key: Vec<u8>, record: &TagRecord) {
        self.tags.insert(key, record.clone());
    }

    pub fn remove_tag(&self, key: &[u8]) {
        self.tags.remove(key);
    }

    pub fn clear(&self) {
        self.manifests.clear();
        self.tags.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn manifests_are_bounded_by_bytes_not_count() {
        let hot = Hot::new();
        let big = StoredManifest {
            media_type: "m".into(),
            bytes: Bytes::from(vec![0u8; 4 << 20]),
        };
        for i in 0..64u32 {
            hot.put_manifest(&Digest::of(&i.to_be_bytes()), &big);
        }
        assert!(
            hot.manifests.weight() <= HOT_MANIFEST_BYTES,
            "{}",
            hot.manifests.weight()
        );
        assert!(hot.manifests.len() <= (HOT_MANIFEST_BYTES / (4 << 20)) as usize);
        let small = StoredManifest {
            media_type: "m".into(),
            bytes: Bytes::from_static(b"{}"),
        };
        let d = Digest::of(b"small");
        hot.put_manifest(&d, &small);
        assert_eq!(hot.manifest(&d), Some(small));
    }
}
