//! Parses a request path under `/v2/` into a typed route. Repository names contain `/`,
//! so the path is read from the right: the last segments say what is asked for, and
//! everything before them is the name.

/// Where the cluster's peer routes live: the registry API under this prefix, for the
/// replicas of one fleet only.
pub const PEER_PREFIX: &str = "/_pullgate/peer";
/// The cluster's shared secret, on every peer request.
pub const SECRET_HEADER: &str = "x-pullgate-cluster-secret";
/// Set on every request one replica sends another: the receiver answers it itself and
/// never forwards it again. Its value is the sender's URL, for logs.
pub const HOP_HEADER: &str = "x-pullgate-hop";

use super::digest::{Digest, DigestError};
use super::name::{NameError, Reference, ReferenceError, RepoName};

/// Longest request path pullgate looks at; anything longer is refused before parsing.
pub const MAX_PATH_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v2/`: the API version check.
    Base,
    Manifest {
        name: RepoName,
        reference: Reference,
    },
    Blob {
        name: RepoName,
        digest: Digest,
    },
    /// Any blob upload path: pullgate is read-only.
    BlobUpload {
        name: RepoName,
    },
    TagsList {
        name: RepoName,
    },
    Referrers {
        name: RepoName,
        digest: Digest,
    },
    Catalog,
    /// `GET /sigstore/<name>@sha256=<hex>/signature-<n>`: the signature lookaside.
    Sigstore {
        name: RepoName,
        digest: Digest,
        index: u32,
    },
    /// `GET /extensions/v2/<name>/signatures/<digest>`: the registry signature API.
    SignaturesExtension {
        name: RepoName,
        digest: Digest,
    },
}

/// Highest signature index pullgate looks up (`signature-1` … `signature-64`).
pub const MAX_SIGNATURES: u32 = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("not a registry API path")]
    NotFound,
    #[error("request path is too long")]
    PathTooLong,
    #[error("invalid repository name: {0}")]
    Name(#[from] NameError),
    #[error("invalid digest: {0}")]
    Digest(#[from] DigestError),
    #[error("invalid reference: {0}")]
    Reference(ReferenceError),
}

impl Route {
    /// The repository the request is about, if any (the access log names it, also when
    /// the request fails).
    pub fn name(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::BlobUpload { name }
            | Route::TagsList { name }
            | Route::Referrers { name, .. }
            | Route::Sigstore { name, .. }
            | Route::SignaturesExtension { name, .. } => Some(name),
        }
    }

    /// Parses a raw (still percent-encoded) request path. Percent-encoded bytes are never
    /// decoded: no valid name, tag or digest contains `%`, so they are simply invalid.
    pub fn parse(path: &str) -> Result<Route, RouteError> {
        if path.len() > MAX_PATH_LEN {
            return Err(RouteError::PathTooLong);
        }
        if let Some(rest) = path.strip_prefix("/sigstore/") {
            return Self::parse_sigstore(rest);
        }
        if let Some(rest) = path.strip_prefix("/extensions/v2/") {
            let (name, digest) = rest.rsplit_once("/signatures/").ok_or(RouteError::NotFound)?;
            return Ok(Route::SignaturesExtension {
                name: RepoName::parse(name)?,
                digest: Digest::parse(digest)?,
            });
        }
        let rest = match path.strip_prefix("/v2") {
            Some("") | Some("/") => return Ok(Route::Base),
            Some(rest) => rest.strip_prefix('/').ok_or(RouteError::NotFound)?,
            None => return Err(RouteError::NotFound),
        };
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let n = segments.len();
        let name_of = |upto: usize| RepoName::parse(&segments[..upto].join("/"));

        if n >= 3 && segments[n - 2] == "manifests" {
            let reference = Reference::parse(segments[n - 1]).map_err(|e| match e {
                ReferenceError::BadDigest(d) => RouteError::Digest(d),
                other => RouteError::Reference(other),
            })?;
            return Ok(Route::Manifest {
                name: name_of(n - 2)?,
                reference,
            });
        }
        if n >= 3 && segments[n - 2] == "tags" && segments[n - 1] == "list" {
            return Ok(Route::TagsList { name: name_of(n - 2)? });
        }
        if n >= 3 && segments[n - 2] == "referrers" {
            let digest = Digest::parse(segments[n - 1])?;
            return Ok(Route::Referrers {
                name: name_of(n - 2)?,
                digest,
            });
        }
        // `<name>/blobs/uploads/` and `<name>/blobs/uploads/<id>`.
        if let Some(i) = segments.iter().rposition(|s| *s == "uploads")
            && i >= 2
            && segments[i - 1] == "blobs"
            && n - i <= 2
        {
            return Ok(Route::BlobUpload { name: name_of(i - 1)? });
        }
        if n >= 3 && segments[n - 2] == "blobs" {
            let digest = Digest::parse(segments[n - 1])?;
            return Ok(Route::Blob {
                name: name_of(n - 2)?,
                digest,
            });
        }
        Err(RouteError::NotFound)
    }
}

impl Route {
    /// `<name>@sha256=<hex>/signature-<n>`, as containers/image builds lookaside paths.
    fn parse_sigstore(rest: &str) -> Result<Route, RouteError> {
        let (name, tail) = rest.rsplit_once('@').ok_or(RouteError::NotFound)?;
        let (digest, file) = tail.split_once('/').ok_or(RouteError::NotFound)?;
        let (algorithm, hex) = digest.split_once('=').ok_or(RouteError::NotFound)?;
        let digest = Digest::parse(&format!("{algorithm}:{hex}"))?;
        let n = file.strip_prefix("signature-").ok_or(RouteError::NotFound)?;
        if n.is_empty() || n.len() > 3 || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
            return Err(RouteError::NotFound);
        }
        let index: u32 = n.parse().map_err(|_| RouteError::NotFound)?;
        Ok(Route::Sigstore {
            name: RepoName::parse(name)?,
            digest,
            index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_routes() {
        assert_eq!(Route::parse("/v2/"), Ok(Route::Base));
        assert_eq!(Route::parse("/v2"), Ok(Route::Base));
        assert_eq!(Route::parse("/v2/_catalog"), Ok(Route::Catalog));
        match Route::parse("/v2/registry.redhat.io/ubi9/ubi/manifests/latest").unwrap() {
            Route::Manifest { name, reference } => {
                assert_eq!(name.as_str(), "registry.redhat.io/ubi9/ubi");
                assert_eq!(reference.to_string(), "latest");
            }
            other => panic!("{other:?}"),
        }
        match Route::parse(&format!("/v2/a/blobs/b/blobs/{D}")).unwrap() {
            Route::Blob { name, digest } => {
                assert_eq!(name.as_str(), "a/blobs/b");
                assert_eq!(digest.to_string(), D);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(Route::parse("/v2/a/b/tags/list"), Ok(Route::TagsList { .. })));
        assert!(matches!(
            Route::parse("/v2/a/blobs/uploads/"),
            Ok(Route::BlobUpload { .. })
        ));
        assert!(matches!(
            Route::parse("/v2/a/blobs/uploads/1234-abcd"),
            Ok(Route::BlobUpload { .. })
        ));
        assert!(matches!(
            Route::parse(&format!("/v2/a/referrers/{D}")),
            Ok(Route::Referrers { .. })
        ));
    }

    #[test]
    fn parses_signature_routes() {
        let hex = &D["sha256:".len()..];
        match Route::parse(&format!(
            "/sigstore/registry.redhat.io/ubi9/ubi@sha256={hex}/signature-12"
        ))
        .unwrap()
        {
            Route::Sigstore { name, digest, index } => {
                assert_eq!(name.as_str(), "registry.redhat.io/ubi9/ubi");
                assert_eq!(digest.to_string(), D);
                assert_eq!(index, 12);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Route::parse(&format!("/extensions/v2/a/b/signatures/{D}")),
            Ok(Route::SignaturesExtension { .. })
        ));
        for bad in [
            format!("/sigstore/a@sha256={hex}/signature-0"),
            format!("/sigstore/a@sha256={hex}/signature-01"),
            format!("/sigstore/a@sha256={hex}/signature-1000"),
            format!("/sigstore/a@sha256={hex}/other"),
            format!("/sigstore/a/sha256={hex}/signature-1"),
            "/sigstore/a@sha256=abc/signature-1".to_string(),
            format!("/sigstore/../a@sha256={hex}/signature-1"),
            "/extensions/v2/a/signatures/sha256:zz".to_string(),
        ] {
            assert!(Route::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Route::parse("/v3/"), Err(RouteError::NotFound));
        assert_eq!(Route::parse("/v2x"), Err(RouteError::NotFound));
        assert_eq!(Route::parse("/v2/a/b"), Err(RouteError::NotFound));
        assert!(matches!(
            Route::parse("/v2/../etc/manifests/latest"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(
            Route::parse("/v2/%2e%2e/manifests/latest"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(
            Route::parse("/v2/a/manifests/sha256:totallywrong"),
            Err(RouteError::Digest(_))
        ));
        assert!(matches!(
            Route::parse("/v2/a/blobs/sha256:ABC"),
            Err(RouteError::Digest(_))
        ));
        assert!(matches!(
            Route::parse("/v2/a/manifests/-bad"),
            Err(RouteError::Reference(_))
        ));
        assert!(matches!(
            Route::parse("/v2/manifests/latest"),
            Err(RouteError::NotFound)
        ));
        assert_eq!(
            Route::parse(&format!("/v2/{}", "a/".repeat(2000))),
            Err(RouteError::PathTooLong)
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "/v2/\\PC{0,200}") {
            let _ = Route::parse(&s);
        }

        #[test]
        fn parse_any_segments_never_panics(segs in proptest::collection::vec("(manifests|blobs|tags|list|uploads|referrers|a|\\.\\.|sha256:[0-9a-f]{64}|)", 0..8)) {
            let _ = Route::parse(&format!("/v2/{}", segs.join("/")));
        }
    }
}
