//! A signature lookaside (sigstore) web server for tests, as Red Hat serves
//! `registry.redhat.io/containers/sigstore`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A lookaside web server: `files` by path; records requests and any Authorization.
#[derive(Default)]
pub struct Lookaside {
    pub files: Mutex<HashMap<String, Vec<u8>>>,
    pub requests: Mutex<Vec<String>>,
    pub saw_authorization: Mutex<bool>,
    pub html_for_missing: Mutex<bool>,
}

pub async fn start_lookaside() -> (Arc<Lookaside>, String, tokio::task::JoinHandle<()>) {
    let state = Arc::new(Lookaside::default());
    let app = axum::Router::new()
        .fallback(
            |State(s): State<Arc<Lookaside>>, uri: Uri, headers: HeaderMap| async move {
                s.requests.lock().unwrap().push(uri.path().to_string());
                if headers.contains_key("authorization") {
                    *s.saw_authorization.lock().unwrap() = true;
                }
                match s.files.lock().unwrap().get(uri.path()) {
                    Some(b) => (StatusCode::OK, b.clone()).into_response(),
                    None if *s.html_for_missing.lock().unwrap() => {
                        (StatusCode::OK, [("content-type", "text/html")], "<html>not here</html>").into_response()
                    }
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            },
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/containers/sigstore", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (state, url, task)
}

/// The lookaside path of signature `n` of `repo@digest`.
pub fn sig_path(repo: &str, digest: &str, n: u32) -> String {
    format!("/containers/sigstore/{repo}@{}/signature-{n}", digest.replace(':', "="))
}
