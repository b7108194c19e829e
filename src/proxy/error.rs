//! What can go wrong answering a client, kept with its source, and the kind of failure
//! each error is: the one thing the HTTP layer needs to choose a status and an OCI code
//! (it never sees upstream or cache error types).

use super::fill::FillError;
use crate::cache::CacheError;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("unknown upstream or repository: {0}")]
    NameUnknown(String),
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("blob unknown")]
    BlobUnknown,
    #[error("{0}")]
    Denied(String),
    /// The upstream's signature policy refused the manifest.
    #[error("{message}")]
    PolicyRefused {
        message: String,
        verdict: crate::trust::Verdict,
    },
    #[error("requested range is not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream content failed verification: {0}")]
    Verification(String),
    #[error("cache error: {0}")]
    Cache(#[from] CacheError),
    /// A fill that could not stage, publish or run (not an upstream or content fault).
    #[error("blob fill failed: {0}")]
    Fill(#[source] FillError),
}

impl From<FillError> for ProxyError {
    fn from(e: FillError) -> Self {
        match e {
            FillError::Upstream(UpstreamError::NotFound) => ProxyError::BlobUnknown,
            FillError::Upstream(u) => ProxyError::Upstream(u),
            FillError::Verification(v) => ProxyError::Verification(v),
            other => ProxyError::Fill(other),
        }
    }
}

pub type ProxyResult<T> = Result<T, ProxyError>;

/// What the client is told was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Name,
    Manifest,
    Blob,
}

/// The kind of a failure, as a client should see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound(Missing),
    /// The client's request names something invalid.
    Invalid,
    /// Refused by policy (allow/deny) or by upstream with pullgate's credentials.
    Denied,
    /// The client asked for bytes outside the blob.
    RangeNotSatisfiable {
        size: u64,
    },
    RateLimited {
        retry_after: u64,
    },
    /// Upstream is paused after repeated failures: retry after this many seconds.
    Unavailable {
        retry_after: u64,
    },
    /// Upstream did not answer in time.
    UpstreamTimeout,
    /// Upstream failed, refused a redirect or sent bad content.
    UpstreamFailed,
    /// pullgate's own storage or state failed.
    Internal,
}

/// How long a client is told to wait when upstream gives no `Retry-After`.
const DEFAULT_RETRY_AFTER: u64 = 60;
/// Seconds a client is told to wait when the shared blob store does not answer.
const STORE_RETRY_AFTER: u64 = 10;

impl ProxyError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProxyError::NameUnknown(_) => ErrorKind::NotFound(Missing::Name),
            ProxyError::NameInvalid(_) => ErrorKind::Invalid,
            ProxyError::ManifestUnknown(_) => ErrorKind::NotFound(Missing::Manifest),
            ProxyError::BlobUnknown => ErrorKind::NotFound(Missing::Blob),
            ProxyError::Denied(_) | ProxyError::PolicyRefused { .. } => ErrorKind::Denied,
            ProxyError::RangeNotSatisfiable { size } => ErrorKind::RangeNotSatisfiable { size: *size },
            ProxyError::Upstream(u) => match u {
                UpstreamError::NotFound => ErrorKind::NotFound(Missing::Name),
                UpstreamError::Denied(_) => ErrorKind::Denied,
                UpstreamError::TooManyRequests { retry_after } => ErrorKind::RateLimited {
                    retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
                },
                UpstreamError::Timeout(_) => ErrorKind::UpstreamTimeout,
                UpstreamError::CircuitOpen { retry_after } => ErrorKind::Unavailable {
                    retry_after: *retry_after,
                },
                UpstreamError::Unreachable { .. }
                | UpstreamError::Status(_)
                | UpstreamError::Protocol(_)
                | UpstreamError::RedirectRefused { .. }
                | UpstreamError::RealmRefused { .. } => ErrorKind::UpstreamFailed,
            },
            ProxyError::Verification(_) => ErrorKind::UpstreamFailed,
            _ if self.store_unavailable() => ErrorKind::Unavailable {
                retry_after: STORE_RETRY_AFTER,
            },
            ProxyError::Cache(_) | ProxyError::Fill(_) => ErrorKind::Internal,
        }
    }

    /// The message a client may see: internal details stay in the log, and upstream's
    /// refusal is said in the client's terms.
    pub fn client_message(&self) -> String {
        match self {
            ProxyError::Upstream(UpstreamError::Denied(_)) => {
                "upstream refused access to this repository with pullgate's credentials".into()
            }
            ProxyError::Upstream(UpstreamError::TooManyRequests { .. }) => {
                "upstream rate limit reached; retry later".into()
            }
            ProxyError::Cache(CacheError::StorageLost(_) | CacheError::Stalled(_)) => {
                "the cache's storage is not available; retry later".into()
            }
            _ if self.storage_full() => "the cache's disk is full; retry later".into(),
            ProxyError::Fill(FillError::Cache(e)) if matches!(**e, CacheError::StorageLost(_)) => {
                "the cache's storage is not available; retry later".into()
            }
            _ if self.store_unavailable() => "the cache's shared blob store is not answering; retry later".into(),
            ProxyError::Cache(_) | ProxyError::Fill(_) => "internal storage error".into(),
            other => other.to_string(),
        }
    }

    /// The cache's storage cannot take a write now: its disk is full, it is gone, or its
    /// database refuses writes (sled keeps a log write's I/O error until it is opened
    /// again; the housekeeping then has pullgate started again).
    pub fn storage_cannot_write(&self) -> bool {
        self.storage_full()
            || matches!(
                self,
                ProxyError::Cache(CacheError::StorageLost(_) | CacheError::Db(sled::Error::Io(_)))
            )
    }

    /// The cache's disk has no room (directly, or for a fill).
    fn storage_full(&self) -> bool {
        match self {
            ProxyError::Cache(e) => e.is_full(),
            ProxyError::Fill(e) => e.storage_full(),
            _ => false,
        }
    }

    /// The shared blob store did not answer, the storage is gone or full (directly, or
    /// for a fill): the client may retry.
    fn store_unavailable(&self) -> bool {
        if self.storage_full() {
            return true;
        }
        match self {
            ProxyError::Cache(e) => matches!(
                e,
                CacheError::StoreUnavailable(_) | CacheError::StorageLost(_) | CacheError::Stalled(_)
            ),
            ProxyError::Fill(FillError::Cache(e)) => {
                matches!(**e, CacheError::StoreUnavailable(_) | CacheError::StorageLost(_))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_origin() {
        let kind = |e: ProxyError| e.kind();
        assert_eq!(kind(UpstreamError::NotFound.into()), ErrorKind::NotFound(Missing::Name));
        assert_eq!(
            kind(UpstreamError::TooManyRequests { retry_after: None }.into()),
            ErrorKind::RateLimited { retry_after: 60 }
        );
        assert_eq!(kind(UpstreamError::Timeout("x").into()), ErrorKind::UpstreamTimeout);
        assert_eq!(
            kind(FillError::Upstream(UpstreamError::NotFound).into()),
            ErrorKind::NotFound(Missing::Blob)
        );
        assert_eq!(kind(FillError::Stopped.into()), ErrorKind::Internal);
        let internal = ProxyError::Cache(CacheError::Corrupt("secret detail".into()));
        assert_eq!(internal.client_message(), "internal storage error");
    }
}
