//! The client-facing HTTP surface (axum): one handler parses every `/v2/` path with the
//! tested route parser, dispatches to the proxy, and renders OCI responses and errors.

pub mod auth;
pub mod error;

use crate::oci::ErrorCode;
use crate::oci::media::AcceptSet;
use crate::oci::range::RangeSpec;
use crate::oci::route::{Route, RouteError};
use crate::proxy::{BlobAnswer, CacheStatus, Proxy, Target, read};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use error::ApiError;
use std::sync::Arc;
use std::time::Instant;
use tracing::info;

pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";

#[derive(Clone)]
pub struct AppState {
    pub proxy: Arc<Proxy>,
    /// Client authentication, when `[clients] htpasswd` is set.
    pub clients: Option<Arc<auth::ClientAuth>>,
}

pub fn router(state: AppState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// The query parameters pullgate reads; everything else is ignored.
#[derive(Default)]
struct Query {
    ns: Option<String>,
    n: Option<String>,
    last: Option<String>,
}

fn parse_query(uri: &Uri) -> Query {
    let mut q = Query::default();
    if let Some(raw) = uri.query() {
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            match k.as_ref() {
                "ns" => q.ns = Some(v.into_owned()),
                "n" => q.n = Some(v.into_owned()),
                "last" => q.last = Some(v.into_owned()),
                _ => {}
            }
        }
    }
    q
}

/// The route label for metrics and logs.
fn route_label(route: &Result<Route, RouteError>) -> &'static str {
    match route {
        Ok(Route::Base) => "base",
        Ok(Route::Manifest { .. }) => "manifest",
        Ok(Route::Blob { .. }) | Ok(Route::BlobUpload { .. }) => "blob",
        Ok(Route::TagsList { .. }) => "tags",
        Ok(Route::Referrers { .. }) => "referrers",
        Ok(Route::Sigstore { .. }) => "sigstore",
        Ok(Route::SignaturesExtension { .. }) => "signatures",
        Ok(Route::Catalog) => "catalog",
        Err(_) => "other",
    }
}

async fn dispatch(State(app): State<AppState>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let started = Instant::now();
    match uri.path() {
        "/healthz" => return (StatusCode::OK, "ok\n").into_response(),
        "/readyz" => return readiness(&app).await,
        "/metrics" => return metrics(&app).await,
        _ => {}
    }
    let parsed = Route::parse(uri.path());
    let route = route_label(&parsed);
    // The lookaside is read without credentials by every client (containers/image).
    let needs_auth = app.clients.is_some() && !uri.path().starts_with("/sigstore/");
    let authenticated = match (&app.clients, needs_auth) {
        (Some(clients), true) => clients.authenticate(&headers).await.is_some(),
        _ => true,
    };
    let result = if authenticated {
        handle(&app, parsed, &method, &uri, &headers).await
    } else {
        Err(ApiError::unauthorized())
    };
    let (mut resp, cache, name) = match result {
        Ok((resp, cache, name)) => (resp, cache, name),
        Err(e) => (e.into_response(), None, None),
    };
    resp.headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    let status = resp.status().as_u16();
    let metrics = &app.proxy.metrics;
    metrics.inc(
        "pullgate_http_requests_total",
        &[
            ("route", route),
            ("method", method.as_str()),
            ("status", &status.to_string()),
        ],
        1,
    );
    metrics.observe(
        "pullgate_http_request_duration_seconds",
        &[("route", route)],
        started.elapsed().as_secs_f64(),
    );
    if let Some(c) = cache {
        let kind = match route {
            "manifest" => "manifest",
            "blob" => "blob",
            "tags" => "tags_list",
            other => other,
        };
        metrics.inc(
            "pullgate_cache_lookups_total",
            &[("kind", kind), ("result", c.as_str())],
            1,
        );
    }
    let bytes = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    info!(
        target: "pullgate::access",
        method = %method,
        name = name.as_deref().unwrap_or("-"),
        route,
        status,
        bytes = %bytes,
        ms = started.elapsed().as_millis() as u64,
        cache = cache.map(CacheStatus::as_str).unwrap_or("-"),
        "request"
    );
    resp
}

/// `/readyz`: the database answers a write, blob storage takes a file, and pullgate is
/// not shutting down. (Upstream reachability is not required: the cache can serve.)
async fn readiness(app: &AppState) -> Response {
    match app.proxy.cache.probe().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response()
        }
    }
}

async fn metrics(app: &AppState) -> Response {
    let mut gauges: Vec<crate::metrics::Gauge> =
        vec![("pullgate_fills_in_flight", vec![], app.proxy.fills.in_flight() as f64)];
    if let Ok(stats) = app.proxy.cache.stats().await {
        gauges.push(("pullgate_cache_size_bytes", vec![], stats.total_bytes() as f64));
        gauges.push((
            "pullgate_cache_entries",
            vec![("kind", "blob".into())],
            stats.blobs as f64,
        ));
        gauges.push((
            "pullgate_cache_entries",
            vec![("kind", "manifest".into())],
            stats.manifests as f64,
        ));
        gauges.push((
            "pullgate_cache_entries",
            vec![("kind", "tag".into())],
            stats.tags as f64,
        ));
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        app.proxy.metrics.render(&gauges),
    )
        .into_response()
}

type Handled = (Response, Option<CacheStatus>, Option<String>);

async fn handle(
    app: &AppState,
    parsed: Result<Route, RouteError>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Handled, ApiError> {
    let route = parsed?;
    let query = parse_query(uri);
    let read_only = matches!(*method, Method::GET | Method::HEAD);
    match route {
        Route::BlobUpload { .. } => Err(ApiError::unsupported("uploading blobs")),
        _ if !read_only => Err(ApiError::unsupported(&format!("{method} requests"))),
        Route::Base => {
            let mut resp = ([(header::CONTENT_TYPE, "application/json")], "{}").into_response();
            if app.proxy.signatures_extension {
                resp.headers_mut()
                    .insert("x-registry-supports-signatures", HeaderValue::from_static("1"));
            }
            Ok((resp, None, None))
        }
        Route::Sigstore { name, digest, index } => {
            let target = app.proxy.resolve(&name, None)?;
            match app.proxy.signature(&target, &digest, index).await? {
                Some(bytes) => {
                    let resp = Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(header::CONTENT_LENGTH, bytes.len());
                    let body = if *method == Method::HEAD {
                        Body::empty()
                    } else {
                        Body::from(bytes)
                    };
                    Ok((resp.body(body).map_err(internal)?, None, Some(name.to_string())))
                }
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::ManifestUnknown,
                    "no such signature",
                )),
            }
        }
        Route::SignaturesExtension { name, digest } => {
            if !app.proxy.signatures_extension {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::Unsupported,
                    "the signature extension API is disabled",
                ));
            }
            let target = app.proxy.resolve(&name, query.ns.as_deref())?;
            let answer = app.proxy.extension_signatures(&target, &digest).await?;
            let body = serde_json::to_string(&answer)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unavailable, e.to_string()))?;
            let resp = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json");
            Ok((
                resp.body(Body::from(body)).map_err(internal)?,
                None,
                Some(name.to_string()),
            ))
        }
        Route::Catalog => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::Unsupported,
            "the catalog is not available through pullgate",
        )),
        Route::Referrers { name, digest } => {
            let target = app.proxy.resolve(&name, query.ns.as_deref())?;
            let artifact_type = uri.query().and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "artifactType")
                    .map(|(_, v)| v.into_owned())
            });
            let upstream_query = match &artifact_type {
                Some(t) => url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("artifactType", t)
                    .finish(),
                None => String::new(),
            };
            let answer = app.proxy.referrers(&target, &digest, &upstream_query).await?;
            let content_type = answer
                .content_type
                .unwrap_or_else(|| crate::oci::media::OCI_INDEX.to_string());
            let mut resp = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, content_type);
            resp = with_namespace(resp, query.ns.as_deref(), &target);
            let body = if *method == Method::HEAD {
                Body::empty()
            } else {
                Body::from(answer.body)
            };
            Ok((resp.body(body).map_err(internal)?, None, Some(name.to_string())))
        }
        Route::Manifest { name, reference } => {
            let target = app.proxy.resolve(&name, query.ns.as_deref())?;
            let accept =
                AcceptSet::from_header_values(headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()));
            let answer = app.proxy.manifest(&target, &reference, &accept).await?;
            let mut resp = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, answer.media_type.as_str())
                .header(header::CONTENT_LENGTH, answer.bytes.len())
                .header("docker-content-digest", answer.digest.to_string());
            resp = with_namespace(resp, query.ns.as_deref(), &target);
            let body = if *method == Method::HEAD {
                Body::empty()
            } else {
                Body::from(answer.bytes)
            };
            Ok((
                resp.body(body).map_err(internal)?,
                Some(answer.cache),
                Some(name.to_string()),
            ))
        }
        Route::Blob { name, digest } => {
            let target = app.proxy.resolve(&name, query.ns.as_deref())?;
            let range = match headers.get(header::RANGE) {
                Some(v) => {
                    Some(RangeSpec::parse(v.to_str().map_err(|_| {
                        ApiError::from(crate::oci::range::RangeError::Malformed)
                    })?)?)
                }
                None => None,
            };
            let resp = if *method == Method::HEAD {
                head_blob(app, &target, &digest, query.ns.as_deref()).await?
            } else {
                get_blob(app, &target, &digest, range, query.ns.as_deref()).await?
            };
            Ok((resp.0, Some(resp.1), Some(name.to_string())))
        }
        Route::TagsList { name } => {
            let target = app.proxy.resolve(&name, query.ns.as_deref())?;
            let upstream_query = {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                if let Some(n) = &query.n {
                    q.append_pair("n", n);
                }
                if let Some(last) = &query.last {
                    q.append_pair("last", last);
                }
                q.finish()
            };
            let (page, status) = app.proxy.tags_list(&target, &upstream_query).await?;
            let body = rename_tag_list(&page.body, name.as_str());
            let mut resp = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(next) = page
                .next
                .as_deref()
                .and_then(|n| client_link(n, name.as_str(), query.ns.as_deref()))
            {
                resp = resp.header(header::LINK, next);
            }
            resp = with_namespace(resp, query.ns.as_deref(), &target);
            let body = if *method == Method::HEAD {
                Body::empty()
            } else {
                Body::from(body)
            };
            Ok((resp.body(body).map_err(internal)?, Some(status), Some(name.to_string())))
        }
    }
}

fn internal(e: axum::http::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unavailable,
        format!("cannot build response: {e}"),
    )
}

fn with_namespace(
    resp: axum::http::response::Builder,
    ns: Option<&str>,
    target: &Target,
) -> axum::http::response::Builder {
    match ns {
        Some(_) => resp.header("oci-namespace", target.upstream.name.as_str()),
        None => resp,
    }
}

/// Upstream's tag list body with `name` set to the name the client used.
fn rename_tag_list(body: &str, client_name: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut v) => {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("name".into(), serde_json::Value::String(client_name.to_string()));
            }
            v.to_string()
        }
        Err(_) => body.to_string(),
    }
}

/// Rewrites upstream's next-page target into the client's namespace as an absolute path.
fn client_link(upstream_target: &str, client_name: &str, ns: Option<&str>) -> Option<String> {
    let query = upstream_target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "n" || k == "last" {
            out.append_pair(&k, &v);
        }
    }
    if let Some(ns) = ns {
        out.append_pair("ns", ns);
    }
    let q = out.finish();
    Some(format!("</v2/{client_name}/tags/list?{q}>; rel=\"next\""))
}

async fn head_blob(
    app: &AppState,
    target: &Target,
    digest: &crate::oci::Digest,
    ns: Option<&str>,
) -> Result<(Response, CacheStatus), ApiError> {
    let (size, status) = app.proxy.blob_size(target, digest).await?;
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", digest.to_string());
    if let Some(size) = size {
        resp = resp.header(header::CONTENT_LENGTH, size);
    }
    resp = with_namespace(resp, ns, target);
    Ok((resp.body(Body::empty()).map_err(internal)?, status))
}

async fn get_blob(
    app: &AppState,
    target: &Target,
    digest: &crate::oci::Digest,
    range: Option<RangeSpec>,
    ns: Option<&str>,
) -> Result<(Response, CacheStatus), ApiError> {
    let answer = app.proxy.blob(target, digest).await?;
    let (size, status) = match &answer {
        BlobAnswer::Cached { record, .. } => (Some(record.size), CacheStatus::Hit),
        BlobAnswer::Filling { fill, cache, .. } => {
            let mut p = fill.started().await;
            if p.size.is_none() && range.is_some() {
                // Without a Content-Length the range can only be resolved at the end.
                let mut rx = fill.progress();
                p = rx
                    .wait_for(|p| p.outcome.is_some())
                    .await
                    .map(|p| p.clone())
                    .unwrap_or(p);
                if let Some(Ok(r)) = &p.outcome {
                    p.size = Some(r.size);
                }
            }
            if let Some(Err(e)) = p.outcome {
                return Err(crate::proxy::ProxyError::from(e).into());
            }
            (p.size, *cache)
        }
    };
    let span = match (range, size) {
        (Some(r), Some(size)) => match r.resolve(size) {
            Ok(span) => span,
            Err(crate::oci::range::RangeError::Unsatisfiable) => return Err(ApiError::range_not_satisfiable(size)),
            Err(e) => return Err(e.into()),
        },
        _ => None,
    };
    let (first, end) = match (span, size) {
        (Some(s), _) => (s.first, s.last + 1),
        (None, Some(size)) => (0, size),
        (None, None) => (0, u64::MAX),
    };
    let body = match answer {
        BlobAnswer::Cached {
            digest,
            record,
            reading,
        } => Body::from_stream(read::published(
            app.proxy.metrics.clone(),
            app.proxy.cache.clone(),
            (digest, record, reading),
            first,
            end,
        )),
        BlobAnswer::Filling { fill, reading, .. } => Body::from_stream(read::filling(
            app.proxy.metrics.clone(),
            app.proxy.cache.clone(),
            (fill, reading),
            first,
            end,
        )),
    };
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", digest.to_string());
    resp = match (span, size) {
        (Some(s), Some(size)) => resp
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, s.content_range(size))
            .header(header::CONTENT_LENGTH, s.len()),
        (_, Some(size)) => resp.status(StatusCode::OK).header(header::CONTENT_LENGTH, size),
        _ => resp.status(StatusCode::OK),
    };
    resp = with_namespace(resp, ns, target);
    Ok((resp.body(body).map_err(internal)?, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_rewritten_to_the_client_name() {
        assert_eq!(
            client_link("/v2/ubi9/ubi/tags/list?last=b&n=2", "registry.redhat.io/ubi9/ubi", None).unwrap(),
            "</v2/registry.redhat.io/ubi9/ubi/tags/list?last=b&n=2>; rel=\"next\""
        );
        assert_eq!(
            client_link(
                "/v2/ubi9/ubi/tags/list?n=2&last=b&evil=x",
                "ubi9/ubi",
                Some("registry.redhat.io")
            )
            .unwrap(),
            "</v2/ubi9/ubi/tags/list?n=2&last=b&ns=registry.redhat.io>; rel=\"next\""
        );
    }

    #[test]
    fn tag_list_names_are_rewritten() {
        assert_eq!(
            rename_tag_list(r#"{"name":"ubi9/ubi","tags":["a"]}"#, "r/ubi9/ubi"),
            r#"{"name":"r/ubi9/ubi","tags":["a"]}"#
        );
    }
}
