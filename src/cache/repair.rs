//! Startup repair. sled is authoritative: interrupted fills are discarded, records
//! whose data is missing or the wrong size are dropped (a miss), and data nobody records
//! is deleted.

use super::{BlobRecord, CacheError, CacheResult, Inner, RepairReport, keys};
use crate::oci::Digest;

impl Inner {
    pub(super) fn repair(&self) -> CacheResult<RepairReport> {
        let mut report = RepairReport::default();
        for item in self.fills.iter() {
            let (k, _) = item?;
            let fill_id = keys::parse_fill(&k).ok_or_else(|| CacheError::Corrupt("fill key".into()))?;
            self.store.discard_staged(fill_id)?;
            self.fills.remove(k)?;
            report.interrupted_fills += 1;
        }
        let mut live = std::collections::HashSet::new();
        for item in self.blobs.iter() {
            let (k, v) = item?;
            let digest = keys::parse_digest(&k);
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
