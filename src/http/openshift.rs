//! The routes OpenShift clusters use besides the registry API, open to anonymous
//! clients (the cluster-version operator sends no credentials; both are public data):
//! `GET /openshift/signatures/sha256=<hex>/signature-<N>` (a ClusterVersion's
//! `signatureStores`) and `GET /openshift/graph?channel=…&arch=…&id=…&version=…` (its
//! `spec.upstream`). They render what the proxy decides.

use super::AppState;
use super::error::ApiError;
use super::routes::Served;
use crate::oci::{Digest, ErrorCode};
use crate::proxy::CacheStatus;
use crate::proxy::openshift::MAX_RELEASE_SIGNATURES;
use crate::upstream::openshift::GraphQuery;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// Where release signatures are served (a ClusterVersion's `signatureStores` URL).
pub const SIGNATURES_PREFIX: &str = "/openshift/signatures/";
/// Where the update graph is served (a ClusterVersion's `spec.upstream`).
pub const GRAPH_PATH: &str = "/openshift/graph";

/// `sha256=<hex>/signature-<N>` (after the prefix) → (digest, N); N from 1 to 9.
pub fn parse_signature_path(rest: &str) -> Option<(Digest, u32)> {
    let (digest, file) = rest.split_once('/')?;
    let hex = digest.strip_prefix("sha256=")?;
    let digest = Digest::parse(&format!("sha256:{hex}")).ok()?;
    let n = file.strip_prefix("signature-")?;
    if n.is_empty() || n.len() > 1 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = n.parse().ok()?;
    (1..=MAX_RELEASE_SIGNATURES).contains(&n).then_some((digest, n))
}

/// The graph query's parameters, each checked: a channel (`stable-4.16`), an
/// architecture (`amd64`, `multi`), a cluster id (a UUID) and a version (`4.16.3`).
/// Other parameters are dropped.
pub fn parse_graph_query(raw: Option<&str>) -> Result<GraphQuery, String> {
    let mut q = GraphQuery::default();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let (slot, allowed): (&mut Option<String>, fn(char) -> bool) = match k.as_ref() {
            "channel" => (&mut q.channel, |c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "arch" => (&mut q.arch, |c| c.is_ascii_alphanumeric() || c == '_'),
            "id" => (&mut q.id, |c| c.is_ascii_hexdigit() || c == '-'),
            "version" => (&mut q.version, |c| c.is_ascii_alphanumeric() || ".+-".contains(c)),
            _ => continue,
        };
        if v.is_empty() || v.len() > 128 || !v.chars().all(allowed) {
            return Err(format!("{k}={v:?} is not a valid {k}"));
        }
        *slot = Some(v.into_owned());
    }
    Ok(q)
}

fn served(route: &'static str, cache: Option<CacheStatus>) -> Served {
    Served {
        route,
        cache,
        ..Served::default()
    }
}

fn reply(method: &Method, content_type: &str, body: Bytes, served: Served) -> Response {
    let length = body.len();
    let body = if *method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    };
    let mut resp = (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        body,
    )
        .into_response();
    resp.extensions_mut().insert(served);
    resp
}

fn failed(e: ApiError, route: &'static str) -> Response {
    let mut resp = e.into_response();
    resp.extensions_mut().insert(served(route, None));
    resp
}

fn not_offered(route: &'static str) -> Response {
    failed(
        ApiError::not_found(ErrorCode::Unsupported, "this pullgate has no [openshift] section"),
        route,
    )
}

fn read_only(method: &Method) -> Option<ApiError> {
    (!matches!(*method, Method::GET | Method::HEAD)).then(|| ApiError::unsupported(&format!("{method} requests")))
}

/// `GET /openshift/signatures/sha256=<hex>/signature-<N>`
pub async fn signature(State(app): State<AppState>, req: Request) -> Response {
    const ROUTE: &str = "openshift-signature";
    if let Some(e) = read_only(req.method()) {
        return failed(e, ROUTE);
    }
    if !app.proxy.serves_openshift() {
        return not_offered(ROUTE);
    }
    let rest = req.uri().path().strip_prefix(SIGNATURES_PREFIX).unwrap_or_default();
    let Some((digest, index)) = parse_signature_path(rest) else {
        return failed(
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::ManifestUnknown,
                "expected /openshift/signatures/sha256=<hex>/signature-<1..9>",
            ),
            ROUTE,
        );
    };
    match app.proxy.release_signature(&digest, index).await {
        Ok(Some(bytes)) => reply(req.method(), "application/octet-stream", bytes, served(ROUTE, None)),
        Ok(None) => failed(
            ApiError::not_found(ErrorCode::ManifestUnknown, "no such signature"),
            ROUTE,
        ),
        Err(e) => failed(e.into(), ROUTE),
    }
}

/// `GET /openshift/graph?channel=…&arch=…&id=…&version=…`
pub async fn graph(State(app): State<AppState>, req: Request) -> Response {
    const ROUTE: &str = "openshift-graph";
    if let Some(e) = read_only(req.method()) {
        return failed(e, ROUTE);
    }
    if !app.proxy.serves_openshift() {
        return not_offered(ROUTE);
    }
    let query = match parse_graph_query(req.uri().query()) {
        Ok(q) => q,
        Err(why) => {
            return failed(
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, why),
                ROUTE,
            );
        }
    };
    match app.proxy.update_graph(&query).await {
        Ok(answer) => reply(
            req.method(),
            &answer.content_type,
            answer.body,
            served(ROUTE, Some(answer.cache)),
        ),
        Err(e) => failed(e.into(), ROUTE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_paths() {
        let hex = "a".repeat(64);
        let (d, n) = parse_signature_path(&format!("sha256={hex}/signature-3")).unwrap();
        assert_eq!((d.hex(), n), (hex.as_str(), 3));
        for bad in [
            format!("sha256={hex}/signature-0"),
            format!("sha256={hex}/signature-10"),
            format!("sha256={hex}/signature-"),
            format!("sha256={hex}/signature-+1"),
            format!("sha256={hex}/signature-1/x"),
            format!("sha256:{hex}/signature-1"),
            format!("sha256={}/signature-1", "z".repeat(64)),
            format!("sha256={hex}"),
            "../../etc/passwd".to_string(),
        ] {
            assert!(parse_signature_path(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn graph_queries() {
        let q = parse_graph_query(Some(
            "channel=stable-4.16&arch=amd64&id=0f3c2b5e-1a2b-4c3d-8e9f-001122334455&version=4.16.3&other=x",
        ))
        .unwrap();
        assert_eq!(q.channel.as_deref(), Some("stable-4.16"));
        assert_eq!(q.arch.as_deref(), Some("amd64"));
        assert_eq!(q.version.as_deref(), Some("4.16.3"));
        assert_eq!(
            q.to_query_string(),
            "channel=stable-4.16&arch=amd64&id=0f3c2b5e-1a2b-4c3d-8e9f-001122334455&version=4.16.3"
        );
        assert_eq!(parse_graph_query(None).unwrap(), GraphQuery::default());
        for bad in [
            "channel=a%0Ab",
            "channel=",
            "arch=x/y",
            "id=not-a-uuid!",
            &format!("channel={}", "a".repeat(129)),
        ] {
            assert!(parse_graph_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
