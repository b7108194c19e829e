//! The page's doctor button: the walk of `pullgate doctor` for one upstream, its hops sent
//! as they finish (`POST /status/api/doctor/{upstream}`, one JSON object a line), or as a
//! page once it ends (`POST /status/doctor/{upstream}`, the form without JavaScript).
//! One walk runs at a time; it dials only the upstream's configured hosts.

use super::{StatusState, admit, html, plain};
use crate::http::AppState;
use crate::upstream::doctor::{self, Hop, Report};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use maud::html as markup;
use std::sync::Arc;

/// The end of a streamed walk.
#[derive(serde::Serialize)]
struct Done<'a> {
    done: bool,
    passed: bool,
    notes: &'a [String],
}

/// Admits the request and finds the upstream; `Err` is the answer otherwise.
async fn prepare(
    app: &AppState,
    headers: &HeaderMap,
    upstream: &str,
) -> Result<(Arc<StatusState>, tokio::sync::OwnedSemaphorePermit), Response> {
    let status = admit(app, headers).await?;
    if !status.doctor.contains_key(upstream) {
        return Err(plain(StatusCode::NOT_FOUND, "no such upstream in the configuration\n"));
    }
    let permit = status.doctor_running.clone().try_acquire_owned().map_err(|_| {
        plain(
            StatusCode::TOO_MANY_REQUESTS,
            "a doctor walk is running; try again when it has ended\n",
        )
    })?;
    Ok((status, permit))
}

/// Runs the walk of `upstream`, sending hops to `live`.
async fn walk(status: &StatusState, upstream: &str, live: Option<tokio::sync::mpsc::UnboundedSender<Hop>>) -> Report {
    let target = &status.doctor[upstream];
    doctor::walk_live(target.settings.clone(), target.probe(), target.policy.as_ref(), live).await
}

pub async fn stream(State(app): State<AppState>, Path(upstream): Path<String>, headers: HeaderMap) -> Response {
    let (status, permit) = match prepare(&app, &headers, &upstream).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Hop>();
    let (lines_tx, lines_rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    tokio::spawn(async move {
        let _permit = permit;
        let forward = {
            let lines_tx = lines_tx.clone();
            let mut rx = rx;
            tokio::spawn(async move {
                while let Some(hop) = rx.recv().await {
                    let mut line = serde_json::to_vec(&hop).unwrap_or_default();
                    line.push(b'\n');
                    let _ = lines_tx.send(Ok(Bytes::from(line))).await;
                }
            })
        };
        let report = walk(&status, &upstream, Some(tx)).await;
        let _ = forward.await;
        let done = Done {
            done: true,
            passed: report.passed(),
            notes: &report.notes,
        };
        let mut line = serde_json::to_vec(&done).unwrap_or_default();
        line.push(b'\n');
        let _ = lines_tx.send(Ok(Bytes::from(line))).await;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(lines_rx));
    let mut resp = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    super::secure(resp.headers_mut());
    resp
}

pub async fn page(State(app): State<AppState>, Path(upstream): Path<String>, headers: HeaderMap) -> Response {
    let (status, _permit) = match prepare(&app, &headers, &upstream).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let report = walk(&status, &upstream, None).await;
    html(markup! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "pullgate doctor: " (upstream) }
                link rel="stylesheet" href="/status/style.css";
            }
            body {
                main {
                    h1 { "Doctor: " (upstream) }
                    p { @if report.passed() { "Every hop passed." } @else { "A hop failed: its remedy says what to do." } }
                    ol.hops {
                        @for h in &report.hops {
                            li.passed[h.passed].failed[!h.passed] {
                                strong { (h.phase.as_str()) } " " code { (h.target) } ": " (h.detail)
                                @if let Some(r) = &h.remedy { br; span.remedy { (r) } }
                            }
                        }
                    }
                    @for n in &report.notes { p { (n) } }
                    p { a href="/status" { "Back to the status page" } }
                }
            }
        }
    })
}
