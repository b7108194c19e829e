//! Startup repair, after an unclean stop only (a clean close leaves a marker and the next
//! open scans nothing). sled is authoritative: interrupted fills (from their journal)
//! and interrupted removals (from their tombstones) are finished first; then the stored
//! data is listed (names only, into a sorted list of 32-byte digests or fill ids) and
//! every record looked up in it: a record whose data is missing is dropped (a miss),
//! data nobody records is deleted, the totals are counted again, and the last-use index
//! is rebuilt if it is missing. A blob of the wrong size is caught when it is opened
//! (`BlobStore::open_checked`), not here: no stat per blob.

use super::keys::{self, Kind};
use super::records::parse_manifest_meta;
use super::{BlobLocation, BlobRecord, CacheError, CacheResult, Inner, RepairReport, Totals};
use crate::oci::Digest;

/// What identifies stored data: its digest (`files`) or the fill that wrote it (`sled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stored {
    Digest([u8; 32]),
    Fill(u64),
}

fn stored(digest: Option<&Digest>, location: &BlobLocation) -> Option<Stored> {
    match location {
        BlobLocation::Files | BlobLocation::S3 => Some(Stored::Digest(raw_digest(digest?.hex().as_bytes())?)),
        BlobLocation::Sled { fill_id } => Some(Stored::Fill(*fill_id)),
    }
}

/// A digest's 64 lowercase hex digits as its 32 bytes. Called twice per blob in the
/// scan, so by table rather than through the `hex` crate's general decoder (which was
/// a tenth of the scan's time).
fn raw_digest(hex: &[u8]) -> Option<[u8; 32]> {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => 0xff,
        }
    }
    const TABLE: [u8; 256] = {
        let mut t = [0xffu8; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = nibble(i as u8);
            i += 1;
        }
        t
    };
    let hex: &[u8; 64] = hex.try_into().ok()?;
    let mut raw = [0u8; 32];
    for (out, pair) in raw.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (TABLE[usize::from(pair[0])], TABLE[usize::from(pair[1])]);
        if (hi | lo) > 0xf {
            return None;
        }
        *out = (hi << 4) | lo;
    }
    Some(raw)
}

impl Inner {
    pub(super) fn repair(&self) -> CacheResult<RepairReport> {
        let mut report = RepairReport {
            scanned: true,
            ..Default::default()
        };
        for item in self.fills.iter() {
            let (k, _) = item?;
            let fill_id = keys::parse_fill(&k).ok_or_else(|| CacheError::Corrupt("fill key".into()))?;
            self.store.discard_staged(fill_id)?;
            self.fills.remove(k)?;
            report.interrupted_fills += 1;
        }
        for item in self.removals.iter() {
            let (k, v) = item?;
            if let (Some(d), Ok(location)) = (keys::parse_digest(&k), serde_json::from_slice::<BlobLocation>(&v))
                && self.blob(&d)?.is_none()
            {
                self.store.remove(&d, &location)?;
            }
            self.removals.remove(k)?;
            report.interrupted_removals += 1;
        }
        // The index is written in the same transactions as the records, so a crash leaves
        // it consistent; it is rebuilt only when it is missing (a cache from before it).
        let rebuild_index = self.lru.is_empty();
        // What is stored, as a sorted list (names only: no stat per blob; a wrong size is
        // caught when the blob is opened), then each record looked up in it.
        // A shared store's data is not all this cache's: nothing is listed, and every
        // record counts as present (one whose object went is a miss at its first read).
        let shared = self.store.shares_data();
        let mut stored_keys = Vec::new();
        if !shared {
            self.store.for_each_stored(&mut |digest, location| {
                stored_keys.extend(stored(digest.as_ref(), &location));
                Ok(())
            })?;
        }
        stored_keys.sort_unstable();
        stored_keys.dedup();
        let mut recorded = vec![false; stored_keys.len()];
        let mut totals = Totals::default();
        for item in self.blobs.iter() {
            let (k, v) = item?;
            let digest = keys::parse_digest(&k);
            let record: Option<BlobRecord> = serde_json::from_slice(&v).ok();
            let found = match (&digest, &record) {
                (Some(_), Some(_)) if shared => Some(None),
                (Some(d), Some(r)) => stored(Some(d), &r.location)
                    .and_then(|s| stored_keys.binary_search(&s).ok())
                    .map(Some),
                _ => None,
            };
            match (digest, record, found) {
                (Some(d), Some(r), Some(at)) => {
                    if let Some(at) = at {
                        recorded[at] = true;
                    }
                    totals.blobs += 1;
                    totals.blob_bytes += r.size;
                    if rebuild_index {
                        self.lru
                            .insert(keys::lru(r.last_access_ms, Kind::Blob, &d), &r.size.to_be_bytes()[..])?;
                        report.index_entries_restored += 1;
                    }
                }
                (digest, record, _) => {
                    self.blobs.remove(&k)?;
                    if let (Some(d), Some(r)) = (digest, record) {
                        self.lru.remove(keys::lru(r.last_access_ms, Kind::Blob, &d))?;
                    }
                    report.records_without_data += 1;
                }
            }
        }
        for (key, _) in stored_keys.iter().zip(&recorded).filter(|(_, r)| !**r) {
            let (digest, location) = match key {
                Stored::Digest(raw) => (Digest::from_hex(&hex::encode(raw)).ok(), BlobLocation::Files),
                Stored::Fill(fill_id) => (None, BlobLocation::Sled { fill_id: *fill_id }),
            };
            self.store
                .remove(&digest.unwrap_or_else(|| Digest::of(b"")), &location)?;
            report.data_without_record += 1;
        }
        for item in self.manifest_meta.iter() {
            let (k, v) = item?;
            if let (Some(d), Some((size, at))) = (keys::parse_digest(&k), parse_manifest_meta(&v)) {
                totals.manifests += 1;
                totals.manifest_bytes += size;
                if rebuild_index {
                    self.lru
                        .insert(keys::lru(at, Kind::Manifest, &d), &size.to_be_bytes()[..])?;
                    report.index_entries_restored += 1;
                }
            }
        }
        totals.tags = self.tags.len() as u64;
        self.totals.load(totals);
        self.db.flush()?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_digests_match_the_hex_crate() {
        let d = Digest::of(b"x");
        assert_eq!(
            raw_digest(d.hex().as_bytes()).map(hex::encode).as_deref(),
            Some(d.hex())
        );
        assert_eq!(raw_digest(&[b'g'; 64]), None);
        assert_eq!(raw_digest(b"ab"), None);
    }
}
