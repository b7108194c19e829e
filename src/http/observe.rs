//! The tower layer around the registry API: parses each request's route once (the
//! handler takes the parse from the request's extensions), stamps the API version
//! header, and records the request's metrics and its access-log line.

use super::routes::{ParsedRoute, Served};
use super::{API_VERSION_HEADER, AppState};
use crate::metrics::{LookupLabels, RequestLabels, RouteLabels, method_label};
use crate::oci::route::{Route, RouteError};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use tracing::info;

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

/// The `kind` of `pullgate_cache_lookups_total` for a route label.
fn lookup_kind(route: &'static str) -> &'static str {
    match route {
        "tags" => "tags_list",
        other => other,
    }
}

pub async fn observe(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let parsed = Route::parse(req.uri().path());
    let route = route_label(&parsed);
    req.extensions_mut().insert(ParsedRoute(parsed));
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    let status = resp.status().as_u16();
    let served = resp.extensions_mut().remove::<Served>().unwrap_or_default();
    let m = &app.metrics;
    m.http_requests
        .get_or_create(&RequestLabels {
            route,
            method: method_label(&method),
            status,
        })
        .inc();
    m.http_request_duration
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    if let Some(c) = served.cache {
        m.cache_lookups
            .get_or_create(&LookupLabels {
                kind: lookup_kind(route),
                result: c.as_str(),
            })
            .inc();
    }
    let bytes = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    info!(
        target: "pullgate::access",
        method = %method,
        name = served.name.as_deref().unwrap_or("-"),
        route,
        status,
        bytes = %bytes,
        ms = started.elapsed().as_millis() as u64,
        cache = served.cache.map(|c| c.as_str()).unwrap_or("-"),
        "request"
    );
    resp
}
