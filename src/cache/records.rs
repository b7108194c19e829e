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

/// What startup repair found and fixed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    pub interrupted_fills: usize,
    pub records_without_data: usize,
    pub data_without_record: usize,
}

pub(super) fn encode<T: Serialize>(value: &T) -> CacheResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| CacheError::Corrupt(e.to_string()))
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(value: Option<&[u8]>) -> CacheResult<Option<T>> {
    value
        .map(|v| serde_json::from_slice(v).map_err(|e| CacheError::Corrupt(e.to_string())))
        .transpose()
}
