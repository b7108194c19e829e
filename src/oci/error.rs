//! The OCI distribution-spec error codes and their JSON envelope.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BlobUnknown,
    DigestInvalid,
    ManifestUnknown,
    ManifestInvalid,
    NameInvalid,
    NameUnknown,
    RangeInvalid,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    Toomanyrequests,
    /// Not a spec code: upstream trouble (502/503/504) still gets a JSON body.
    Unavailable,
}

#[derive(Serialize)]
struct ErrorItem<'a> {
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    errors: [ErrorItem<'a>; 1],
}

/// `{"errors":[{"code":…,"message":…,"detail":…}]}`.
pub fn error_body(code: ErrorCode, message: &str, detail: Option<&serde_json::Value>) -> String {
    serde_json::to_string(&Envelope {
        errors: [ErrorItem { code, message, detail }],
    })
    .unwrap_or_else(|_| r#"{"errors":[{"code":"UNKNOWN","message":"error"}]}"#.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_spec_codes() {
        let body = error_body(ErrorCode::Toomanyrequests, "slow down", None);
        assert_eq!(body, r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#);
        assert!(error_body(ErrorCode::NameUnknown, "x", None).contains("NAME_UNKNOWN"));
        assert!(error_body(ErrorCode::BlobUnknown, "x", None).contains("BLOB_UNKNOWN"));
    }
}
