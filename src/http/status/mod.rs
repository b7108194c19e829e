//! The operator's status page, `GET /status`, and its JSON API, `/status/api/*`: egress
//! health per upstream and host with the doctor's remedies (and a button that runs the
//! doctor's walk), the fills running now, what the cache holds and how it did over the
//! last hour, recent pulls, the fleet, signature verdicts, and what this pullgate is.
//!
//! It renders what the proxy and the metrics already know ([`snapshot`]); the page is
//! HTML from the server ([`page`], maud) that reads without JavaScript, and a few lines
//! of script refresh its live parts from the JSON every 2 s. It takes no lock a client
//! request takes: recent pulls reach it through a channel ([`activity`]). With
//! `[clients] htpasswd`, only `[status] users` may see it.

pub mod activity;
mod charts;
mod doctor;
mod format;
mod page;
pub mod snapshot;

use super::AppState;
use crate::upstream::UpstreamSettings;
use crate::upstream::doctor::ProbeImage;
use activity::Activity;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// What the page needs beyond the proxy.
pub struct StatusState {
    pub activity: Arc<Activity>,
    /// `[status] users` (checked only with `[clients] htpasswd`).
    pub users: Vec<String>,
    pub about: About,
    /// The doctor's walk for each upstream, by name.
    pub doctor: HashMap<String, DoctorTarget>,
    /// One walk at a time: each dials the upstream's hosts.
    pub doctor_running: Arc<tokio::sync::Semaphore>,
}

/// What a doctor walk of one upstream starts from.
pub struct DoctorTarget {
    pub settings: UpstreamSettings,
    pub probe: Option<String>,
    pub policy: Option<crate::trust::Policy>,
}

impl DoctorTarget {
    fn probe(&self) -> Option<ProbeImage> {
        self.probe.as_deref().and_then(|p| ProbeImage::parse(p).ok())
    }
}

/// What this pullgate is.
pub struct About {
    pub version: &'static str,
    /// The configured `listen`; the bound address once known.
    pub listen: String,
    pub bound: OnceLock<String>,
    /// The configuration as `check-config` prints it (paths to secrets, never secrets).
    pub config_toml: String,
}

impl About {
    pub fn listening_on(&self) -> &str {
        self.bound.get().map(String::as_str).unwrap_or(&self.listen)
    }
}

/// The page, its assets and its API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/status", get(page_handler))
        .route("/status/", get(page_handler))
        .route("/status/style.css", get(style))
        .route("/status/script.js", get(script))
        .route("/status/api/{part}", get(api))
        .route("/status/api/doctor/{upstream}", post(doctor::stream))
        .route("/status/doctor/{upstream}", post(doctor::page))
}

/// `/`: a browser is sent to the page; anything else is the registry's business.
pub fn wants_page(app: &AppState, headers: &HeaderMap) -> bool {
    app.status.is_some()
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// Whether the request may see the page: `Err` is the answer when it may not.
async fn admit(app: &AppState, headers: &HeaderMap) -> Result<Arc<StatusState>, Response> {
    let Some(status) = app.status.clone() else {
        return Err(plain(
            StatusCode::NOT_FOUND,
            "the status page is disabled ([status] enabled = false)\n",
        ));
    };
    if let Some(clients) = &app.clients {
        let Some(user) = clients.authenticate(headers).await else {
            let mut resp = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(super::auth::CHALLENGE),
            );
            return Err(resp);
        };
        if !status.users.contains(&user) {
            return Err(plain(
                StatusCode::FORBIDDEN,
                "this user may pull, but is not one of [status] users\n",
            ));
        }
    }
    Ok(status)
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut resp = (status, text).into_response();
    secure(resp.headers_mut());
    resp
}

/// The page's own assets only, no framing, nothing cached (it shows live state).
fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

fn html(markup: maud::Markup) -> Response {
    let mut resp = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    secure(resp.headers_mut());
    resp
}

async fn page_handler(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let status = match admit(&app, &headers).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    html(page::render(&snapshot::Snapshot::take(&app, &status), &status))
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/status.css"))
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("assets/status.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    secure(resp.headers_mut());
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    resp
}

/// `/status/api/{summary,fills,egress,pulls,fleet}`.
async fn api(State(app): State<AppState>, Path(part): Path<String>, headers: HeaderMap) -> Response {
    let status = match admit(&app, &headers).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let body = match part.as_str() {
        "summary" => serde_json::to_vec(&snapshot::summary(&app, &status)),
        "fills" => serde_json::to_vec(&app.proxy.fills_now()),
        "egress" => serde_json::to_vec(&app.proxy.upstream_statuses()),
        "pulls" => serde_json::to_vec(&snapshot::pulls(&status)),
        "fleet" => serde_json::to_vec(&snapshot::fleet(&app)),
        _ => {
            return plain(
                StatusCode::NOT_FOUND,
                "no such part: the API has summary, fills, egress, pulls and fleet\n",
            );
        }
    };
    match body {
        Ok(json) => {
            let mut resp = ([(header::CONTENT_TYPE, "application/json")], json).into_response();
            secure(resp.headers_mut());
            resp
        }
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render the status\n"),
    }
}
