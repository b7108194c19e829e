//! Startup repair, after an unclean stop only (a clean close leaves a marker and the next
//! open scans nothing). sled is authoritative: interrupted fills (from their journal)
//! and interrupted removals (from their tombstones) are finished first; then every
//! record is checked against its stored size (a record whose data is missing or the
//! wrong size is dropped: a miss), data nobody records is deleted, the last-use index
//! gets back any entry it lacks, and the totals are counted again. Memory stays small:
//! the live set is a sorted list of 32-byte digests (or fill ids), not the records.

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
        BlobLocation::Files => {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(digest?.hex(), &mut raw).ok()?;
            Some(Stored::Digest(raw))
        }
        BlobLocation::Sled { fill_id } => Some(Stored::Fill(*fill_id)),
    }
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
        let mut totals = Totals::default();
        let mut live = Vec::new();
        for item in self.blobs.iter() {
            let (k, v) = item?;
            let digest = keys::parse_digest(&k);
            let record: Option<BlobRecord> = serde_json::from_slice(&v).ok();
            let intact = match (&digest, &record) {
                (Some(d), Some(r)) => self.store.stored_size(d, &r.location)? == Some(r.size),
                _ => false,
            };
            match (digest, record) {
                (Some(d), Some(r)) if intact => {
                    live.extend(stored(Some(&d), &r.location));
                    totals.blobs += 1;
                    totals.blob_bytes += r.size;
                    let entry = keys::lru(r.last_access_ms, Kind::Blob, &d);
                    if !self.lru.contains_key(entry)? {
                        self.lru.insert(entry, &r.size.to_be_bytes()[..])?;
                        report.index_entries_restored += 1;
                    }
                }
                (digest, record) => {
                    self.blobs.remove(&k)?;
                    if let (Some(d), Some(r)) = (digest, record) {
                        self.lru.remove(keys::lru(r.last_access_ms, Kind::Blob, &d))?;
                        self.store.remove(&d, &r.location)?;
                    }
                    report.records_without_data += 1;
                }
            }
        }
        live.sort_unstable();
        self.store.for_each_stored(&mut |digest, location| {
            let recorded = stored(digest.as_ref(), &location).is_some_and(|s| live.binary_search(&s).is_ok());
            if !recorded {
                let d = digest.unwrap_or_else(|| Digest::of(b""));
                self.store.remove(&d, &location)?;
                report.data_without_record += 1;
            }
            Ok(())
        })?;
        for item in self.manifest_meta.iter() {
            let (k, v) = item?;
            if let (Some(d), Some((size, at))) = (keys::parse_digest(&k), parse_manifest_meta(&v)) {
                totals.manifests += 1;
                totals.manifest_bytes += size;
                let entry = keys::lru(at, Kind::Manifest, &d);
                if !self.lru.contains_key(entry)? {
                    self.lru.insert(entry, &size.to_be_bytes()[..])?;
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
