//! Signatures at the HTTP level: the sigstore lookaside and the registry extension API
//! fed from the upstream's lookaside, cosign `.sig` tags and the referrers API.

mod common;

use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine as _;
use common::fake_upstream::MT_OCI_MANIFEST;
use common::lookaside::{sig_path, start_lookaside};
use common::{Harness, error_code};

#[tokio::test]
async fn lookaside_and_extension_api_serve_upstream_signatures_and_keep_them() {
    let (lookaside, url, task) = start_lookaside().await;
    let h = Harness::start_with("", &format!("sigstore = \"{url}\"")).await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[10]);
    let d = img.manifest_digest.clone();
    let (sig1, sig2) = (b"\x89signature one".to_vec(), b"\x89signature two".to_vec());
    lookaside
        .files
        .lock()
        .unwrap()
        .insert(sig_path("ubi9/ubi", &d, 1), sig1.clone());
    lookaside
        .files
        .lock()
        .unwrap()
        .insert(sig_path("ubi9/ubi", &d, 2), sig2.clone());

    let v2 = h.get("/v2/").await;
    assert_eq!(v2.headers()["x-registry-supports-signatures"], "1");

    let client_path = |n: u32| {
        format!(
            "/sigstore/registry.redhat.io/ubi9/ubi@{}/signature-{n}",
            d.replace(':', "=")
        )
    };
    let r = h.get(&client_path(1)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), sig1);
    assert_eq!(h.get(&client_path(2)).await.bytes().await.unwrap(), sig2);
    assert_eq!(
        h.get(&client_path(3)).await.status(),
        404,
        "404 after the last signature"
    );
    assert_eq!(
        lookaside.requests.lock().unwrap()[0],
        sig_path("ubi9/ubi", &d, 1),
        "upstream repository path"
    );
    assert!(
        !*lookaside.saw_authorization.lock().unwrap(),
        "lookasides are read anonymously"
    );

    let ext = common::json(
        h.get(&format!("/extensions/v2/registry.redhat.io/ubi9/ubi/signatures/{d}"))
            .await,
    )
    .await;
    let sigs = ext["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 2);
    for (entry, raw) in sigs.iter().zip([&sig1, &sig2]) {
        assert_eq!(entry["schemaVersion"], 2);
        assert_eq!(entry["type"], "atomic");
        let content = base64::engine::general_purpose::STANDARD
            .decode(entry["content"].as_str().unwrap())
            .unwrap();
        assert_eq!(&content, raw);
    }

    // The lookaside goes away: what was fetched is still served.
    task.abort();
    let _ = task.await;
    assert_eq!(h.get(&client_path(1)).await.bytes().await.unwrap(), sig1);
    let ext = common::json(
        h.get(&format!("/extensions/v2/registry.redhat.io/ubi9/ubi/signatures/{d}"))
            .await,
    )
    .await;
    assert_eq!(ext["signatures"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn missing_signatures_are_404_or_an_empty_list_never_5xx() {
    let (lookaside, url, _task) = start_lookaside().await;
    *lookaside.html_for_missing.lock().unwrap() = true; // a web front end's 200 HTML page
    let h = Harness::start_with("", &format!("sigstore = \"{url}\"")).await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[10]);
    let d = img.manifest_digest.replace(':', "=");
    let r = h
        .get(&format!("/sigstore/registry.redhat.io/ubi9/ubi@{d}/signature-1"))
        .await;
    assert_eq!(r.status(), 404, "an HTML page is not a signature");
    let r = h
        .get(&format!(
            "/extensions/v2/registry.redhat.io/ubi9/ubi/signatures/{}",
            img.manifest_digest
        ))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"signatures":[]}"#);
}

#[tokio::test]
async fn without_a_configured_lookaside_there_are_no_signatures() {
    let h = Harness::start().await;
    let d = format!("sha256:{}", "c".repeat(64));
    let r = h
        .get(&format!(
            "/sigstore/registry.redhat.io/ubi9/ubi@sha256={}/signature-1",
            "c".repeat(64)
        ))
        .await;
    assert_eq!(r.status(), 404);
    let r = h
        .get(&format!("/extensions/v2/registry.redhat.io/ubi9/ubi/signatures/{d}"))
        .await;
    assert_eq!(r.text().await.unwrap(), r#"{"signatures":[]}"#);
    assert_eq!(h.fake.request_count(), 0, "nothing to ask upstream");
}

#[tokio::test]
async fn the_extension_api_can_be_turned_off() {
    let h = Harness::start_with("[signatures]\nextension_api = false", "").await;
    assert!(
        h.get("/v2/")
            .await
            .headers()
            .get("x-registry-supports-signatures")
            .is_none()
    );
    let r = h
        .get(&format!(
            "/extensions/v2/registry.redhat.io/ubi9/ubi/signatures/sha256:{}",
            "c".repeat(64)
        ))
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn cosign_signature_tags_pass_through_with_their_exact_media_type() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[10]);
    let sig_tag = format!("{}.sig", img.manifest_digest.replace(':', "-"));
    let sig_manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#;
    let sig_digest = h
        .fake
        .put_manifest("ubi9/ubi", Some(&sig_tag), MT_OCI_MANIFEST, &sig_manifest[..]);
    let r = h
        .get(&format!("/v2/registry.redhat.io/ubi9/ubi/manifests/{sig_tag}"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], MT_OCI_MANIFEST);
    assert_eq!(r.headers()["docker-content-digest"], sig_digest.as_str());
    let missing = format!("sha256-{}.sig", "d".repeat(64));
    let r = h
        .get(&format!("/v2/registry.redhat.io/ubi9/ubi/manifests/{missing}"))
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn referrers_are_404_when_upstream_lacks_the_api_so_clients_fall_back() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[10]);
    for path in [
        format!("/v2/registry.redhat.io/ubi9/ubi/referrers/{}", img.manifest_digest),
        format!("/v2/ubi9/ubi/referrers/{}?ns=registry.redhat.io", img.manifest_digest),
    ] {
        let r = h.get(&path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    }
}

#[tokio::test]
async fn referrers_pass_through_when_upstream_has_them() {
    let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let app = axum::Router::new().fallback(move |uri: Uri| async move {
        if uri.path().contains("/referrers/") {
            ([("content-type", "application/vnd.oci.image.index.v1+json")], index).into_response()
        } else {
            StatusCode::NOT_FOUND.into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let config = pullgate::config::Config::from_toml_str(&common::config_toml(dir.path(), &url, "", "")).unwrap();
    let server = pullgate::app::spawn(&config).await.unwrap();
    let path = format!(
        "{}/v2/registry.redhat.io/a/referrers/sha256:{}",
        server.url(),
        "e".repeat(64)
    );
    let r = common::client().get(&path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(r.text().await.unwrap(), index);
    task.abort();
    let _ = task.await;
    let r = common::client().get(&path).send().await.unwrap();
    assert_eq!(r.status(), 200, "the last answer is kept for when upstream is down");
    server.shutdown().await.unwrap();
}
