//! What the cache stores, as values: blob records, manifests, tag mappings, tag-list
//! pages, signatures, kept upstream answers, and the figures `stats` and startup repair
//! report. Records are JSON in sled (small, readable with `sled` tooling, versionable
//! with `#[serde(default)]`).

use super::{BlobLocation, CacheError, CacheResult};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// A manifest stored byte-exact with the media type it was served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    pub media_type: String,
    pub bytes: Bytes,
}

impl StoredManifest {
    /// `<media type>\n<bytes>`: the manifest tree's value.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(self.media_type.len() + 1 + self.bytes.len());
        value.extend_from_slice(self.media_type.as_bytes());
        value.push(b'\n');
        value.extend_from_slice(&self.bytes);
        value
    }

    pub(super) fn decode(value: &[u8]) -> CacheResult<StoredManifest> {
        let split = value
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| CacheError::Corrupt("manifest".into()))?;
        Ok(StoredManifest {
            media_type: String::from_utf8_lossy(&value[..split]).into_owned(),
            bytes: Bytes::copy_from_slice(&value[split + 1..]),
        })
    }
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

impl SignatureEntry {
    /// `1` + bytes, or `0` + the check time (big-endian ms).
    pub(super) fn encode(&self) -> Vec<u8> {
        match self {
            SignatureEntry::Present(bytes) => [&[1u8][..], bytes].concat(),
            SignatureEntry::Absent { checked_ms } => [&[0u8][..], &checked_ms.to_be_bytes()].concat(),
        }
    }

    pub(super) fn decode(value: &[u8]) -> CacheResult<SignatureEntry> {
        match value.split_first() {
            Some((1, bytes)) => Ok(SignatureEntry::Present(Bytes::copy_from_slice(bytes))),
            Some((0, ms)) => {
                let ms: [u8; 8] = ms
                    .try_into()
                    .map_err(|_| CacheError::Corrupt("signature entry".into()))?;
                Ok(SignatureEntry::Absent {
                    checked_ms: u64::from_be_bytes(ms),
                })
            }
            _ => Err(CacheError::Corrupt("signature entry".into())),
        }
    }
}

/// A small upstream response kept to answer when upstream is down (referrers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub body: String,
    pub content_type: Option<String>,
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

/// What opening the cache found and fixed. After a clean stop nothing is scanned and
/// this is the default; after an unclean one every record and stored file is checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// Whether the records and the stored data were scanned (the last stop was unclean).
    pub scanned: bool,
    pub interrupted_fills: usize,
    /// Removals a crash cut between the record and the data (from their tombstones).
    pub interrupted_removals: usize,
    pub records_without_data: usize,
    pub data_without_record: usize,
    /// Entries put into a last-use index that was missing (a cache from before it).
    pub index_entries_restored: usize,
}

/// The cache's running totals: kept in memory, saved with the clean-stop marker, and
/// counted again by the scan after an unclean stop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub manifests: u64,
    pub manifest_bytes: u64,
    pub tags: u64,
}

impl Totals {
    /// What the cache holds as `max_size` counts it: blob bytes, manifest bytes, and an
    /// estimate of the database's own records (it shrinks as entries go, unlike the size
    /// of sled's files, which sled reuses rather than returns).
    pub fn usage(&self) -> u64 {
        self.blob_bytes + self.manifest_bytes + RECORD_OVERHEAD * (self.blobs + self.manifests + self.tags)
    }
}

/// Bytes of database per record beyond its content: the record itself, its index entry
/// and sled's per-entry overhead.
pub const RECORD_OVERHEAD: u64 = 256;

/// A manifest's entry beside its bytes: its size and when it was last used.
pub(super) fn manifest_meta(size: u64, last_use_ms: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&size.to_be_bytes());
    v[8..].copy_from_slice(&last_use_ms.to_be_bytes());
    v
}

pub(super) fn parse_manifest_meta(value: &[u8]) -> Option<(u64, u64)> {
    if value.len() != 16 {
        return None;
    }
    Some((super::keys::be_u64(&value[..8])?, super::keys::be_u64(&value[8..])?))
}

pub(super) fn encode<T: Serialize>(value: &T) -> CacheResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| CacheError::Corrupt(e.to_string()))
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(value: Option<&[u8]>) -> CacheResult<Option<T>> {
    value
        .map(|v| serde_json::from_slice(v).map_err(|e| CacheError::Corrupt(e.to_string())))
        .transpose()
}
