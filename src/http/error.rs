//! Every error a client sees, rendered once as OCI JSON with the spec's code and the
//! status its kind implies: client mistakes 4xx, upstream trouble 502/503/504, ours 500.
//! Proxy errors arrive as kinds ([`ErrorKind`]); this file never sees upstream or cache
//! error types.

use crate::oci::error::{ErrorCode, error_body};
use crate::oci::range::RangeError;
use crate::oci::route::RouteError;
use crate::proxy::{ErrorKind, Missing, ProxyError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
    pub content_range: Option<String>,
    /// Send the Basic challenge (`WWW-Authenticate`) with this 401.
    pub challenge: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            content_range: None,
            challenge: false,
        }
    }

    pub fn unsupported(what: &str) -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!("pullgate is a read-only pull-through cache: {what} is not supported"),
        )
    }

    pub fn unauthorized() -> Self {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "authentication required",
        );
        e.challenge = true;
        e
    }

    /// A peer route asked without the cluster's secret (no Basic challenge: no client
    /// credential opens these routes).
    pub fn peer_unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the peer routes need the cluster's shared secret",
        )
    }

    pub fn not_found(code: ErrorCode, message: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A response that could not be assembled (a header value the builder refused).
    pub fn internal(e: axum::http::Error) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable,
            format!("cannot build response: {e}"),
        )
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NameUnknown, "not a registry API path")
            }
            RouteError::PathTooLong => ApiError::new(StatusCode::URI_TOO_LONG, ErrorCode::NameInvalid, e.to_string()),
            RouteError::Name(_) => ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::NameInvalid, e.to_string()),
            RouteError::Digest(_) => ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid, e.to_string()),
            RouteError::Reference(_) => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown, e.to_string()),
        }
    }
}

impl From<RangeError> for ApiError {
    fn from(e: RangeError) -> Self {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::RangeInvalid,
            e.to_string(),
        )
    }
}

impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> Self {
        let kind = e.kind();
        let message = e.client_message();
        let (status, code) = match kind {
            ErrorKind::NotFound(Missing::Name) => (StatusCode::NOT_FOUND, ErrorCode::NameUnknown),
            ErrorKind::NotFound(Missing::Manifest) => (StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown),
            ErrorKind::NotFound(Missing::Blob) => (StatusCode::NOT_FOUND, ErrorCode::BlobUnknown),
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, ErrorCode::NameInvalid),
            ErrorKind::Denied => (StatusCode::FORBIDDEN, ErrorCode::Denied),
            ErrorKind::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, ErrorCode::RangeInvalid),
            ErrorKind::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::Toomanyrequests),
            ErrorKind::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            ErrorKind::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, ErrorCode::Unavailable),
            ErrorKind::UpstreamFailed => (StatusCode::BAD_GATEWAY, ErrorCode::Unavailable),
            ErrorKind::Internal => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unavailable)
            }
        };
        let mut api = ApiError::new(status, code, message);
        match kind {
            ErrorKind::RateLimited { retry_after } | ErrorKind::Unavailable { retry_after } => {
                api.retry_after = Some(retry_after)
            }
            ErrorKind::RangeNotSatisfiable { size } => api.content_range = Some(format!("bytes */{size}")),
            _ => {}
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, error_body(self.code, &self.message, None)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.challenge {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(super::auth::CHALLENGE),
            );
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(cr) = self.content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(header::CONTENT_RANGE, cr);
        }
        resp
    }
}
