//! The client-facing HTTP surface (axum): the router, one handler per registry route
//! ([`routes`]), OpenShift's signatures and update graph ([`openshift`]), the layer that
//! logs and measures every API request ([`observe`]), client authentication
//! ([`auth`]), OCI error rendering ([`error`]), the operator's status page ([`status`])
//! and the listener with TLS and graceful shutdown ([`server`]). It renders what the
//! proxy decides and never names cache types; of the upstream module it names only the
//! doctor's walk, which the status page's button runs.

pub mod auth;
pub mod error;
mod observe;
pub mod openshift;
mod routes;
pub mod server;
pub mod status;

use crate::metrics::Metrics;
use crate::proxy::Proxy;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use std::sync::Arc;

pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";

/// What the handlers read, behind one `Arc`: axum clones the state for every request,
/// and one reference count touched per request costs less than one per part (the
/// manifest path answers tens of thousands of requests a second on two cores).
#[derive(Clone)]
pub struct AppState(Arc<AppStateParts>);

impl AppState {
    pub fn new(parts: AppStateParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateParts;

    fn deref(&self) -> &AppStateParts {
        &self.0
    }
}

/// The parts of [`AppState`]: the proxy, client and peer authentication, the metrics and
/// the status page.
pub struct AppStateParts {
    pub proxy: Arc<Proxy>,
    /// Client authentication, when `[clients] htpasswd` is set.
    pub clients: Option<Arc<auth::ClientAuth>>,
    /// The cluster's shared secret, when `[cluster]` is set: it opens the peer routes.
    pub peers: Option<Arc<auth::PeerSecret>>,
    pub metrics: Arc<Metrics>,
    /// The operator's status page, unless `[status] enabled = false`.
    pub status: Option<Arc<status::StatusState>>,
}

/// The registry API (every path but the three below) and OpenShift's routes behind the
/// observing layer; the health and metrics endpoints, added after the layer, are neither
/// logged nor counted.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(openshift::GRAPH_PATH, any(openshift::graph))
        .route("/openshift/signatures/{*rest}", any(openshift::signature))
        .fallback(routes::registry_api)
        .layer(observe::ObserveLayer {
            metrics: state.metrics.clone(),
            activity: state.status.as_ref().map(|s| s.activity.clone()),
        })
        .route("/", any(root))
        .merge(status::routes())
        .route("/healthz", any(healthz))
        .route("/readyz", any(readyz))
        .route("/metrics", any(metrics))
        .with_state(state)
}

/// `/`: a browser goes to the status page; anything else is the registry API's.
async fn root(State(app): State<AppState>, req: axum::extract::Request) -> Response {
    if status::wants_page(&app, req.headers()) {
        return axum::response::Redirect::to("/status").into_response();
    }
    routes::registry_api(State(app), req).await
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// `/readyz`: the database answers a write, blob storage takes a file, and pullgate is
/// not shutting down. (Upstream reachability is not required: the cache can serve.)
async fn readyz(State(app): State<AppState>) -> Response {
    match app.proxy.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        app.proxy.render_metrics().await,
    )
        .into_response()
}
