//! The in-memory hot set: recently used manifests (immutable by digest, and only bytes
//! already checked against it) and tag mappings (written through), answered without a
//! trip to the blocking pool.

use super::{StoredManifest, TagRecord};
use crate::oci::Digest;
use std::collections::HashMap;

/// Entries kept in memory per kind before the hot set is cleared and refilled.
const HOT_ENTRIES: usize = 4096;

#[derive(Default)]
pub struct Hot {
    pub manifests: HashMap<Digest, StoredManifest>,
    pub tags: HashMap<Vec<u8>, TagRecord>,
}

impl Hot {
    pub fn put_manifest(&mut self, digest: &Digest, m: &StoredManifest) {
        if self.manifests.len() >= HOT_ENTRIES {
            self.manifests.clear();
        }
        self.manifests.insert(digest.clone(), m.clone());
    }

    pub fn put_tag(&mut self, key: Vec<u8>, record: &TagRecord) {
        if self.tags.len() >= HOT_ENTRIES {
            self.tags.clear();
        }
        self.tags.insert(key, record.clone());
    }
}
