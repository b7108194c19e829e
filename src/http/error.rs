//! Every error a client sees, rendered once as OCI JSON with the spec's code and the
//! status its origin implies: client mistakes 4xx, upstream trouble 502/504, ours 500.

use crate::oci::error::{ErrorCode, error_body};
use crate::oci::range::RangeError;
use crate::oci::route::RouteError;
use crate::proxy::ProxyError;
use crate::upstream::UpstreamError;
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

    pub fn range_not_satisfiable(size: u64) -> Self {
        let mut e = ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::RangeInvalid,
            "requested range is not satisfiable",
        );
        e.content_range = Some(format!("bytes */{size}"));
        e
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

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        let msg = e.to_string();
        match e {
            UpstreamError::NotFound => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NameUnknown, msg),
            UpstreamError::Denied(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                "upstream refused access to this repository with pullgate's credentials",
            ),
            UpstreamError::TooManyRequests { retry_after } => {
                let mut a = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::Toomanyrequests,
                    "upstream rate limit reached; retry later",
                );
                a.retry_after = Some(retry_after.unwrap_or(60));
                a
            }
            UpstreamError::Timeout(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, ErrorCode::Unavailable, msg),
            UpstreamError::CircuitOpen { retry_after } => {
                let mut a = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, msg);
                a.retry_after = Some(retry_after);
                a
            }
            UpstreamError::Unreachable(_)
            | UpstreamError::Status(_)
            | UpstreamError::Protocol(_)
            | UpstreamError::RedirectRefused { .. }
            | UpstreamError::RealmRefused { .. } => ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::Unavailable, msg),
        }
    }
}

impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> Self {
        let msg = e.to_string();
        match e {
            ProxyError::NameUnknown(_) => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NameUnknown, msg),
            ProxyError::NameInvalid(_) => ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::NameInvalid, msg),
            ProxyError::ManifestUnknown(_) => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown, msg),
            ProxyError::BlobUnknown => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::BlobUnknown, msg),
            ProxyError::Denied(_) => ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Denied, msg),
            ProxyError::Upstream(u) => u.into(),
            ProxyError::Verification(_) => ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::Unavailable, msg),
            ProxyError::Cache(_) | ProxyError::Storage(_) => {
                tracing::error!(error = %msg, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Unavailable,
                    "internal storage error",
                )
            }
        }
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
