//! The tower layer around the registry API: stamps the API version header and records
//! each request's metrics and its access-log line, from what the handler says it served
//! (its route, name and cache status, as a response extension).

use super::API_VERSION_HEADER;
use super::routes::Served;
use super::status::activity::{Activity, Pull};
use crate::metrics::{LookupLabels, Metrics, RequestLabels, RouteLabels, method_label};
use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tracing::info;

/// Wraps the registry API's service in [`Observe`].
#[derive(Clone)]
pub struct ObserveLayer {
    pub metrics: Arc<Metrics>,
    /// Where manifest and blob GETs go for the status page, when it is enabled.
    pub activity: Option<Arc<Activity>>,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
            activity: self.activity.clone(),
        }
    }
}

/// The service of [`ObserveLayer`]: calls the inner service, then records.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
    activity: Option<Arc<Activity>>,
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let method = req.method().clone();
        let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let answer = self.inner.call(req);
        let metrics = self.metrics.clone();
        let activity = self.activity.clone();
        Box::pin(async move {
            let mut resp = answer.await?;
            record(&metrics, &method, started, &mut resp, (activity.as_deref(), client));
            Ok(resp)
        })
    }
}

/// The `kind` of `pullgate_cache_lookups_total` for a route label.
fn lookup_kind(route: &'static str) -> &'static str {
    match route {
        "tags" => "tags_list",
        other => other,
    }
}

/// Stamps the API version header, counts the request, writes its access-log line, and
/// hands a manifest or blob GET to the status page's activity.
fn record(
    m: &Metrics,
    method: &Method,
    started: Instant,
    resp: &mut Response,
    (activity, client): (Option<&Activity>, Option<IpAddr>),
) {
    resp.headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    let status = resp.status().as_u16();
    let served = resp.extensions_mut().remove::<Served>().unwrap_or(Served {
        route: "other",
        ..Served::default()
    });
    let route = served.route;
    m.http_requests
        .get_or_create(&RequestLabels {
            route,
            method: method_label(method),
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
        verdict = served.verdict.unwrap_or("-"),
        "request"
    );
    if let (Some(activity), Some(reference)) = (activity, served.reference) {
        activity.record(Pull {
            at_ms: crate::cache::now_ms(),
            name: served.name.unwrap_or_default(),
            reference,
            kind: if route == "manifest" { "manifest" } else { "blob" },
            client: client.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            user: served.user,
            cache: served.cache.map(|c| c.as_str()).unwrap_or("-"),
            status,
            bytes: bytes.parse().unwrap_or(0),
        });
    }
}
