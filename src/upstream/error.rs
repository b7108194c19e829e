//! How an upstream request failed, as kinds the proxy can act on (stale-if-error, the
//! breaker, the client's status). Messages never carry a URL: a CDN's signed query
//! string is a credential.

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("not found upstream")]
    NotFound,
    #[error("upstream refused access: {0}")]
    Denied(String),
    #[error("upstream rate limit")]
    TooManyRequests { retry_after: Option<u64> },
    #[error("upstream answered {0}")]
    Status(u16),
    #[error("redirect to {host:?} refused: not in allow_redirect_hosts")]
    RedirectRefused { host: String },
    #[error("token realm on {host:?} refused: not the upstream host nor in allow_realm_hosts")]
    RealmRefused { host: String },
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("upstream keeps failing; not asking it again for {retry_after}s")]
    CircuitOpen { retry_after: u64 },
}

impl UpstreamError {
    /// Errors after which serving a stale tag mapping is right (stale-if-error).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unreachable(_)
                | UpstreamError::Timeout(_)
                | UpstreamError::TooManyRequests { .. }
                | UpstreamError::Status(500..=599)
                | UpstreamError::CircuitOpen { .. }
        )
    }

    /// The `kind` label of `pullgate_upstream_errors_total`; `None` for answers that are
    /// not failures of the upstream (a 404).
    pub fn metric_kind(&self) -> Option<&'static str> {
        Some(match self {
            UpstreamError::Unreachable(_) => "unreachable",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::NotFound => return None,
            UpstreamError::Denied(_) => "denied",
            UpstreamError::TooManyRequests { .. } => "rate_limited",
            UpstreamError::Status(_) => "status",
            UpstreamError::RedirectRefused { .. } | UpstreamError::RealmRefused { .. } | UpstreamError::Protocol(_) => {
                "protocol"
            }
            UpstreamError::CircuitOpen { .. } => "paused",
        })
    }
}

/// A reqwest failure as a kind; its Display may include the URL (a signed CDN query
/// string), so only the kind of failure is kept.
pub(super) fn classify(e: reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout("response")
    } else {
        let kind = if e.is_connect() {
            "connect failed"
        } else if e.is_body() {
            "body read failed"
        } else {
            "request failed"
        };
        UpstreamError::Unreachable(kind.to_string())
    }
}
