//! Upstream variants beyond Red Hat's Bearer flow: anonymous token realms, Basic
//! challenges, a realm on a host that is not configured, and an upstream that never
//! answers (the response-header timeout).

mod common;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::fake_upstream::{FakeRedHat, MT_OCI_MANIFEST};
use common::{Harness, error_code};
use pullgate::config::Config;

fn config_for(dir: &std::path::Path, upstream_url: &str, upstream_extra: &str) -> Config {
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[upstream]]\nname = \"up\"\nurl = \"{upstream_url}\"\n{upstream_extra}\n",
        dir.join("data").display()
    );
    Config::from_toml_str(&toml).expect("config")
}

async fn serve_app(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn tokens_are_reused_per_scope_until_they_expire() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[10, 20]);
    assert_eq!(
        h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/latest").await.status(),
        200
    );
    for d in &img.layer_digests {
        assert_eq!(
            h.get(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{d}"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(h.fake.token_requests().len(), 1, "one token for one scope");
    let other = h.fake.add_image("rhel9/httpd", "latest", &[10]);
    let resp = h.get("/v2/registry.redhat.io/rhel9/httpd/manifests/latest").await;
    assert_eq!(resp.headers()["docker-content-digest"], other.manifest_digest.as_str());
    let scopes: Vec<String> = h.fake.token_requests().into_iter().map(|(s, _)| s).collect();
    assert_eq!(scopes, ["repository:ubi9/ubi:pull", "repository:rhel9/httpd:pull"]);
}

#[tokio::test]
async fn anonymous_upstreams_get_tokens_without_credentials() {
    let fake = FakeRedHat::start_anonymous().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[100]);
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path(), &fake.registry_url, "allow_redirect_hosts = [\"127.0.0.2\"]");
    let server = pullgate::app::spawn(&config).await.unwrap();
    let client = common::client();
    let resp = client
        .get(format!(
            "{}/v2/up/ubi9/ubi/blobs/{}",
            server.url(),
            img.layer_digests[0]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(common::body_bytes(resp).await.unwrap(), img.layers[0]);
    let tokens = fake.token_requests();
    assert!(
        !tokens.is_empty() && tokens.iter().all(|(_, basic)| !basic),
        "anonymous token requests: {tokens:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn basic_challenges_get_basic_credentials() {
    let manifest: &'static [u8] = b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\"}";
    let app = axum::Router::new().fallback(move |headers: HeaderMap| async move {
        // base64("user:pw")
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Basic dXNlcjpwdw==") {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"registry\"")],
                "",
            )
                .into_response();
        }
        ([("content-type", MT_OCI_MANIFEST)], manifest).into_response()
    });
    let url = serve_app(app).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw\n").unwrap();
    let extra = format!(
        "username = \"user\"\npassword_file = \"{}\"",
        dir.path().join("pw").display()
    );
    let server = pullgate::app::spawn(&config_for(dir.path(), &url, &extra))
        .await
        .unwrap();
    let resp = common::client()
        .get(format!("{}/v2/up/a/manifests/latest", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), manifest);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_token_realm_on_an_unconfigured_host_is_refused_and_not_dialed() {
    let trap = tokio::net::TcpListener::bind("127.0.0.3:0").await.unwrap();
    let realm = format!("http://{}/token", trap.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || {
        let challenge = format!("Bearer realm=\"{realm}\",service=\"evil\"");
        async move { (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)], "").into_response() }
    });
    let url = serve_app(app).await;
    let dir = tempfile::tempdir().unwrap();
    let server = pullgate::app::spawn(&config_for(dir.path(), &url, "")).await.unwrap();
    let resp = common::client()
        .get(format!("{}/v2/up/a/manifests/latest", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(error_code(resp).await, "UNAVAILABLE");
    let dialed = tokio::time::timeout(std::time::Duration::from_millis(200), trap.accept()).await;
    assert!(dialed.is_err(), "pullgate dialed a realm host that is not configured");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out_with_504() {
    // Accepts connections and never writes a byte.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", blackhole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = blackhole.accept().await {
            held.push(sock);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let server = pullgate::app::spawn(&config_for(dir.path(), &url, "response_timeout = \"500ms\""))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let resp = common::client()
        .get(format!("{}/v2/up/a/manifests/latest", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(error_code(resp).await, "UNAVAILABLE");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "bounded by response_timeout"
    );
    server.shutdown().await.unwrap();
}
