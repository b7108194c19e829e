//! The core pull path against the fake Red Hat upstream: token flow, CDN redirects,
//! verification, caching, ranges, routing and OCI errors.

mod common;

use common::fake_upstream::{MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST};
use common::{Harness, body_bytes, error_code};
use pullgate::metrics::fill_outcome;
use std::sync::atomic::Ordering::SeqCst;

const ALL_MANIFEST_TYPES: [&str; 4] = [MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST];

#[tokio::test]
async fn version_check_answers_200_with_api_header() {
    let h = Harness::start().await;
    let resp = h.get("/v2/").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["docker-distribution-api-version"], "registry/2.0");
    assert_eq!(resp.text().await.unwrap(), "{}");
}

#[tokio::test]
async fn pull_by_tag_uses_token_flow_and_full_accept_list() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[1000]);

    let resp = h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/latest").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], MT_OCI_MANIFEST);
    assert_eq!(resp.headers()["docker-content-digest"], img.manifest_digest.as_str());
    assert_eq!(resp.bytes().await.unwrap(), img.manifest);

    // Token request: the upstream repository scope, with Basic credentials.
    let tokens = h.fake.token_requests();
    assert!(!tokens.is_empty());
    assert!(
        tokens
            .iter()
            .all(|(scope, basic)| scope == "repository:ubi9/ubi:pull" && *basic),
        "{tokens:?}"
    );
    let account_sent = h
        .fake
        .registry_requests()
        .iter()
        .any(|r| r.path.contains("account=12345678%7Cpullgate"));
    assert!(account_sent, "token request carries account=");
    // Every manifest request asked for every manifest type.
    for req in h.fake.manifest_requests() {
        for mt in ALL_MANIFEST_TYPES {
            assert!(req.accepts(mt), "manifest request {req:?} lacks {mt}");
        }
    }
}

#[tokio::test]
async fn blob_follows_redirect_without_leaking_credentials_and_is_cached() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[300_000]);
    let layer = &img.layer_digests[0];
    let path = format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}");

    let resp = h.get(&path).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("location").is_none(), "no Location reaches clients");
    assert_eq!(resp.headers()["docker-content-digest"], layer.as_str());
    assert_eq!(resp.headers()["content-length"], "300000");
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    assert_eq!(body_bytes(resp).await.unwrap(), img.layers[0]);
    assert!(
        !h.fake.cdn_saw_authorization(),
        "Authorization must never reach the CDN"
    );
    assert_eq!(h.fake.cdn_gets(layer), 1);

    // The second GET is a hit: the CDN is not asked again.
    let resp = h.get(&path).await;
    assert_eq!(body_bytes(resp).await.unwrap(), img.layers[0]);
    assert_eq!(h.fake.cdn_gets(layer), 1);
}

#[tokio::test]
async fn head_requests_report_real_sizes_and_digests() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "9.4", &[5000]);
    let m = h
        .client
        .head(h.url("/v2/registry.redhat.io/ubi9/ubi/manifests/9.4"))
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    assert_eq!(m.headers()["content-length"], img.manifest.len().to_string().as_str());
    assert_eq!(m.headers()["docker-content-digest"], img.manifest_digest.as_str());
    let b = h
        .client
        .head(h.url(&format!(
            "/v2/registry.redhat.io/ubi9/ubi/blobs/{}",
            img.layer_digests[0]
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(b.status(), 200);
    assert_eq!(b.headers()["content-length"], "5000");
    assert_eq!(b.headers()["docker-content-digest"], img.layer_digests[0].as_str());
    let missing = h
        .client
        .head(h.url(&format!(
            "/v2/registry.redhat.io/ubi9/ubi/blobs/sha256:{}",
            "0".repeat(64)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn manifest_without_upstream_digest_header_gets_one_computed() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[10]);
    h.fake.omit_digest_header.store(true, SeqCst);
    let resp = h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/latest").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["docker-content-digest"], img.manifest_digest.as_str());
}

#[tokio::test]
async fn manifest_by_digest_is_verified_and_served_byte_exact() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[10]);
    let path = format!("/v2/registry.redhat.io/ubi9/ubi/manifests/{}", img.manifest_digest);
    // Digest requests are answered whatever the client accepts (Quay semantics).
    let resp = h
        .client
        .get(h.url(&path))
        .header("accept", MT_DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], MT_OCI_MANIFEST);
    assert_eq!(resp.bytes().await.unwrap(), img.manifest);
    // Upstream gone: still served from the cache.
    h.fake.stop();
    let resp = h.get(&path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), img.manifest);
}

/// An upstream that answers every manifest request with the same bytes, whatever
/// digest was asked for: a lying server.
async fn lying_upstream(body: &'static [u8]) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .fallback(move || async move { ([("content-type", MT_OCI_MANIFEST)], body).into_response() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_manifest_that_does_not_match_its_digest_is_refused_and_not_cached() {
    let upstream = lying_upstream(b"{\"schemaVersion\":2,\"lie\":true}").await;
    let dir = tempfile::tempdir().unwrap();
    let toml = common::config_toml(dir.path(), &upstream, "", "");
    let config = pullgate::config::Config::from_toml_str(&toml).unwrap();
    let server = pullgate::app::spawn(&config).await.unwrap();
    let client = common::client();
    let wanted = format!("sha256:{}", "ab".repeat(32));
    let url = format!("{}/v2/registry.redhat.io/ubi9/ubi/manifests/{wanted}", server.url());
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(error_code(resp).await, "UNAVAILABLE");
    assert!(!server.proxy.has_manifest(&wanted.parse().unwrap()).await.unwrap());
    // By tag, the computed digest is what clients get.
    let resp = client
        .get(format!(
            "{}/v2/registry.redhat.io/ubi9/ubi/manifests/latest",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    let body = resp.headers()["docker-content-digest"].to_str().unwrap().to_string();
    assert_eq!(
        body,
        pullgate::oci::Digest::of(b"{\"schemaVersion\":2,\"lie\":true}").to_string()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_blob_bytes_never_complete_and_are_never_cached() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[200_000]);
    let layer = &img.layer_digests[0];
    let path = format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}");
    h.fake.wrong_bytes.store(true, SeqCst);
    // A slightly slow CDN, so the response headers surely go out while the fill runs.
    h.fake.frame_delay_ms.store(20, SeqCst);
    let resp = h.get(&path).await;
    assert_eq!(resp.status(), 200, "headers go out before the body is verified");
    let body = body_bytes(resp).await;
    assert!(
        body.is_err(),
        "a body with bad bytes must end with an error, got {} clean bytes",
        body.map(|b| b.len()).unwrap_or(0)
    );
    assert_eq!(h.proxy().metrics().fills_ended(fill_outcome::VERIFICATION_FAILED), 1);
    assert!(
        !h.proxy().has_blob(&layer.parse().unwrap()).await.unwrap(),
        "bad bytes are not cached"
    );

    // Once upstream is healthy, the blob is fetched again and verified.
    h.fake.wrong_bytes.store(false, SeqCst);
    h.fake.frame_delay_ms.store(0, SeqCst);
    let resp = h.get(&path).await;
    assert_eq!(body_bytes(resp).await.unwrap(), img.layers[0]);
    assert_eq!(h.fake.cdn_gets(layer), 2);
}

#[tokio::test]
async fn a_cut_cdn_connection_resumes_with_range_from_a_fresh_redirect() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[500_000]);
    let layer = &img.layer_digests[0];
    h.fake.cut_after.store(150_000, SeqCst);
    h.fake.cut_times.store(1, SeqCst);
    let resp = h.get(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}")).await;
    assert_eq!(body_bytes(resp).await.unwrap(), img.layers[0]);
    assert_eq!(
        h.fake.registry_blob_redirects(layer),
        2,
        "a fresh redirect for the resume"
    );
    let ranges = h.fake.cdn_ranges();
    assert!(
        ranges.iter().any(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "resumed with Range: {ranges:?}"
    );
    assert!(
        h.fake.cdn_bytes_sent() <= 500_000 + 150_000,
        "no full refetch after the cut"
    );
}

#[tokio::test]
async fn a_connection_that_keeps_breaking_fails_cleanly() {
    let h = Harness::start().await;
    // Every response is cut after 100 kB: resuming cannot finish a 1 MB blob within
    // the bounded number of retries.
    let img = h.fake.add_image("ubi9/ubi", "latest", &[1_000_000]);
    let layer = &img.layer_digests[0];
    h.fake.cut_after.store(100_000, SeqCst);
    h.fake.cut_times.store(0, SeqCst);
    let resp = h.get(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}")).await;
    assert!(body_bytes(resp).await.is_err(), "the client sees a broken transfer");
    assert!(!h.proxy().has_blob(&layer.parse().unwrap()).await.unwrap());
}

#[tokio::test]
async fn response_headers_arrive_before_a_slow_body_finishes() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[64 * 1024 * 8]);
    h.fake.frame_delay_ms.store(250, SeqCst);
    let started = std::time::Instant::now();
    let resp = h
        .get(&format!(
            "/v2/registry.redhat.io/ubi9/ubi/blobs/{}",
            img.layer_digests[0]
        ))
        .await;
    let headers_after = started.elapsed();
    let body = body_bytes(resp).await.unwrap();
    let total = started.elapsed();
    assert_eq!(body, img.layers[0]);
    assert!(
        total >= std::time::Duration::from_millis(1500),
        "the body is slow ({total:?})"
    );
    assert!(
        headers_after * 3 < total,
        "headers ({headers_after:?}) came long before the end ({total:?})"
    );
}

#[tokio::test]
async fn stale_token_is_refreshed_once_and_the_retry_keeps_accept() {
    let h = Harness::start().await;
    h.fake.add_image("ubi9/ubi", "a", &[10]);
    h.fake.add_image("ubi9/ubi", "b", &[10]);
    assert_eq!(h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/a").await.status(), 200);
    let tokens_before = h.fake.token_requests().len();
    h.fake.revoke_all_tokens();
    assert_eq!(h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/b").await.status(), 200);
    assert_eq!(h.fake.token_requests().len(), tokens_before + 1, "exactly one refresh");
    let reqs = h.fake.manifest_requests();
    let for_b: Vec<_> = reqs.iter().filter(|r| r.reference == "b").collect();
    assert_eq!(for_b.len(), 2, "one 401, one retry: {for_b:?}");
    assert_eq!(for_b[0].status, 401);
    assert_eq!(for_b[1].status, 200);
    for mt in ALL_MANIFEST_TYPES {
        assert!(for_b[1].accepts(mt), "retry keeps Accept {mt}");
    }
}

#[tokio::test]
async fn wrong_credentials_give_denied_without_a_retry_storm() {
    let h = Harness::start().await;
    h.fake.add_image("ubi9/ubi", "latest", &[10]);
    std::fs::write(h.dir.path().join("registry-token"), "wrong").unwrap();
    // Credentials are read at startup.
    let mut h = h;
    h.restart().await;
    let resp = h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/latest").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(error_code(resp).await, "DENIED");
    assert!(h.fake.token_requests().len() <= 2, "{:?}", h.fake.token_requests());
}

#[tokio::test]
async fn rate_limit_on_a_miss_is_passed_on_and_a_hit_is_served() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[10]);
    let digest_path = format!("/v2/registry.redhat.io/ubi9/ubi/manifests/{}", img.manifest_digest);
    assert_eq!(h.get(&digest_path).await.status(), 200);
    *h.fake.too_many_requests.lock().unwrap() = Some(17);
    let miss = h
        .get(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{}", img.config_digest))
        .await;
    assert_eq!(miss.status(), 429);
    assert_eq!(miss.headers()["retry-after"], "17");
    assert_eq!(error_code(miss).await, "TOOMANYREQUESTS");
    assert_eq!(
        h.get(&digest_path).await.status(),
        200,
        "a hit is served during rate limiting"
    );
}

#[tokio::test]
async fn tags_revalidate_after_ttl_and_fall_back_to_last_known_when_upstream_fails() {
    let h = Harness::start_with("[cache]\ntag_ttl = \"0s\"", "").await;
    let first = h.fake.add_image("ubi9/ubi", "latest", &[10]);
    let path = "/v2/registry.redhat.io/ubi9/ubi/manifests/latest";
    assert_eq!(
        h.get(path).await.headers()["docker-content-digest"],
        first.manifest_digest.as_str()
    );

    // The tag moves upstream: a stale mapping is revalidated and the new digest served.
    let second = h.fake.add_image("ubi9/ubi", "latest", &[11]);
    assert_ne!(first.manifest_digest, second.manifest_digest);
    assert_eq!(
        h.get(path).await.headers()["docker-content-digest"],
        second.manifest_digest.as_str()
    );

    // 5xx: the last known mapping is served.
    h.fake.fail_all_5xx.store(true, SeqCst);
    let resp = h.get(path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["docker-content-digest"], second.manifest_digest.as_str());
    h.fake.fail_all_5xx.store(false, SeqCst);

    // 429: also served.
    *h.fake.too_many_requests.lock().unwrap() = Some(5);
    assert_eq!(h.get(path).await.status(), 200);
    *h.fake.too_many_requests.lock().unwrap() = None;

    // Upstream unreachable: also served.
    h.fake.stop();
    let resp = h.get(path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["docker-content-digest"], second.manifest_digest.as_str());
}

#[tokio::test]
async fn fresh_tags_are_served_without_asking_upstream() {
    let h = Harness::start().await; // tag_ttl defaults to 5m
    h.fake.add_image("ubi9/ubi", "latest", &[10]);
    let path = "/v2/registry.redhat.io/ubi9/ubi/manifests/latest";
    assert_eq!(h.get(path).await.status(), 200);
    let before = h.fake.manifest_requests().len();
    for _ in 0..5 {
        assert_eq!(h.get(path).await.status(), 200);
    }
    assert_eq!(h.fake.manifest_requests().len(), before);
}

#[tokio::test]
async fn clients_with_different_accept_sets_do_not_poison_each_other() {
    let h = Harness::start().await;
    let list = h.fake.add_docker_list("ubi9/ubi", "multi");
    let amd64 = list
        .children
        .iter()
        .find(|(p, _)| p == "linux/amd64")
        .unwrap()
        .1
        .clone();
    let path = h.url("/v2/registry.redhat.io/ubi9/ubi/manifests/multi");

    // A client that only takes single images gets the linux/amd64 child.
    let narrow = h
        .client
        .get(&path)
        .header("accept", MT_DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(narrow.status(), 200);
    assert_eq!(narrow.headers()["docker-content-digest"], amd64.as_str());
    assert_eq!(narrow.headers()["content-type"], MT_DOCKER_MANIFEST);

    // podman's six Accept lines: the list itself.
    let mut req = h.client.get(&path);
    for mt in [
        MT_OCI_MANIFEST,
        MT_DOCKER_MANIFEST,
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
        MT_DOCKER_LIST,
        MT_OCI_INDEX,
    ] {
        req = req.header(reqwest::header::ACCEPT, mt);
    }
    let full = req.send().await.unwrap();
    assert_eq!(full.headers()["docker-content-digest"], list.digest.as_str());
    assert_eq!(full.bytes().await.unwrap(), list.bytes);

    // And the narrow client still gets its child afterwards.
    let again = h
        .client
        .get(&path)
        .header("accept", MT_DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["docker-content-digest"], amd64.as_str());
}

#[tokio::test]
async fn an_oci_manifest_is_not_served_by_tag_to_a_client_that_does_not_accept_it() {
    let h = Harness::start().await;
    h.fake.add_image("ubi9/ubi", "oci", &[10]);
    let resp = h
        .client
        .get(h.url("/v2/registry.redhat.io/ubi9/ubi/manifests/oci"))
        .header("accept", MT_DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(error_code(resp).await, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn ranges_are_served_as_206_and_bad_ranges_get_416() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[100_000]);
    let layer = &img.layer_digests[0];
    let url = h.url(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}"));
    // A range while the blob is still cold starts the fill and answers the range.
    let r = h.client.get(&url).header("range", "bytes=1000-").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-99999/100000");
    assert_eq!(body_bytes(r).await.unwrap(), img.layers[0][1000..]);
    let r = h.client.get(&url).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-length"], "10");
    assert_eq!(body_bytes(r).await.unwrap(), img.layers[0][10..20]);
    let r = h.client.get(&url).header("range", "bytes=-5").send().await.unwrap();
    assert_eq!(body_bytes(r).await.unwrap(), img.layers[0][99_995..]);
    let r = h
        .client
        .get(&url)
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */100000");
    let r = h.client.get(&url).header("range", "bytes=50-10").send().await.unwrap();
    assert_eq!(r.status(), 416);
    let r = h.client.get(&url).header("range", "lines=1-2").send().await.unwrap();
    assert_eq!(r.status(), 416);
    // Several ranges: the whole body.
    let r = h
        .client
        .get(&url)
        .header("range", "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(body_bytes(r).await.unwrap(), img.layers[0]);
}

#[tokio::test]
async fn routing_by_ns_prefix_and_default_upstream() {
    let h = Harness::start_with("default_upstream = \"registry.redhat.io\"", "").await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[10]);
    for path in [
        "/v2/registry.redhat.io/ubi9/ubi/manifests/latest",
        "/v2/ubi9/ubi/manifests/latest?ns=registry.redhat.io",
        "/v2/registry.redhat.io/ubi9/ubi/manifests/latest?ns=registry.redhat.io",
        "/v2/ubi9/ubi/manifests/latest",
    ] {
        let resp = h.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.headers()["docker-content-digest"],
            img.manifest_digest.as_str(),
            "{path}"
        );
    }
    let ns = h.get("/v2/ubi9/ubi/manifests/latest?ns=registry.redhat.io").await;
    assert_eq!(ns.headers()["oci-namespace"], "registry.redhat.io");
    // Every upstream request used the upstream repository name, never a double prefix.
    assert!(h.fake.manifest_requests().iter().all(|r| r.repo == "ubi9/ubi"));
    // Deep names work.
    let deep = h.fake.add_image("a/b/c/d", "x", &[1]);
    let resp = h.get("/v2/registry.redhat.io/a/b/c/d/manifests/x").await;
    assert_eq!(resp.headers()["docker-content-digest"], deep.manifest_digest.as_str());
}

#[tokio::test]
async fn unknown_upstreams_are_name_unknown_and_never_dialed() {
    let h = Harness::start().await; // no default_upstream
    let before = h.fake.request_count();
    for path in [
        "/v2/ubi9/ubi/manifests/latest",
        "/v2/ubi9/ubi/manifests/latest?ns=evil.example.com",
        "/v2/ubi9/ubi/manifests/latest?ns=127.0.0.1:1",
    ] {
        let resp = h.get(path).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(error_code(resp).await, "NAME_UNKNOWN", "{path}");
    }
    assert_eq!(h.fake.request_count(), before);
}

#[tokio::test]
async fn redirects_to_unlisted_hosts_are_refused_and_not_dialed() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[1000]);
    let trap = tokio::net::TcpListener::bind("127.0.0.3:0").await.unwrap();
    let trap_addr = trap.local_addr().unwrap();
    *h.fake.redirect_to.lock().unwrap() = Some(format!("http://{trap_addr}"));
    let resp = h
        .get(&format!(
            "/v2/registry.redhat.io/ubi9/ubi/blobs/{}",
            img.layer_digests[0]
        ))
        .await;
    assert_eq!(resp.status(), 502);
    assert_eq!(error_code(resp).await, "UNAVAILABLE");
    let dialed = tokio::time::timeout(std::time::Duration::from_millis(200), trap.accept()).await;
    assert!(
        dialed.is_err(),
        "pullgate dialed a host that is not in allow_redirect_hosts"
    );
}

#[tokio::test]
async fn writes_are_unsupported() {
    let h = Harness::start().await;
    for (method, path) in [
        ("POST", "/v2/registry.redhat.io/ubi9/ubi/blobs/uploads/"),
        ("PATCH", "/v2/registry.redhat.io/ubi9/ubi/blobs/uploads/abc"),
        ("PUT", "/v2/registry.redhat.io/ubi9/ubi/manifests/latest"),
        ("DELETE", "/v2/registry.redhat.io/ubi9/ubi/manifests/latest"),
        (
            "DELETE",
            &format!("/v2/registry.redhat.io/ubi9/ubi/blobs/sha256:{}", "a".repeat(64)),
        ),
        ("GET", "/v2/registry.redhat.io/ubi9/ubi/blobs/uploads/abc"),
    ] {
        let resp = h
            .client
            .request(method.parse().unwrap(), h.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(error_code(resp).await, "UNSUPPORTED");
    }
}

#[tokio::test]
async fn malformed_input_gets_clear_4xx_errors() {
    let h = Harness::start().await;
    let long_name = format!("/v2/registry.redhat.io/{}/manifests/latest", "a".repeat(300));
    let cases: Vec<(String, u16, &str)> = vec![
        (
            "/v2/registry.redhat.io/UBI9/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/registry.redhat.io/../etc/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/registry.redhat.io/%2e%2e/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/registry.redhat.io/a%00b/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (long_name, 400, "NAME_INVALID"),
        (
            "/v2/registry.redhat.io/ubi9/manifests/sha256:totallywrong".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/registry.redhat.io/ubi9/blobs/sha256:{}", "A".repeat(64)),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/registry.redhat.io/ubi9/blobs/sha512:{}", "a".repeat(128)),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/registry.redhat.io/ubi9/manifests/-notatag".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        ("/v2/registry.redhat.io".into(), 404, "NAME_UNKNOWN"),
        ("/v2/registry.redhat.io/ubi9/manifests/".into(), 404, "MANIFEST_UNKNOWN"),
        ("/nothing".into(), 404, "NAME_UNKNOWN"),
    ];
    for (path, status, code) in cases {
        // Raw HTTP: a client library would normalise `..` away before sending.
        let (got_status, body) = common::raw_get(h.server.as_ref().unwrap().addr, &path).await;
        assert_eq!(got_status, status, "{path}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: JSON error body, got {body}"));
        assert_eq!(v["errors"][0]["code"], code, "{path}");
    }
    assert_eq!(h.fake.request_count(), 0, "nothing malformed reached upstream");
}

#[tokio::test]
async fn unknown_manifests_and_blobs_are_404_with_spec_codes() {
    let h = Harness::start().await;
    let resp = h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/nope").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_code(resp).await, "MANIFEST_UNKNOWN");
    let resp = h
        .get(&format!(
            "/v2/registry.redhat.io/ubi9/ubi/blobs/sha256:{}",
            "1".repeat(64)
        ))
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_code(resp).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn tag_lists_paginate_with_links_in_the_client_namespace_and_survive_outages() {
    let h = Harness::start().await;
    for t in ["a", "b", "c", "d", "e"] {
        h.fake.add_image("ubi9/ubi", t, &[1]);
    }
    let resp = h.get("/v2/registry.redhat.io/ubi9/ubi/tags/list?n=2").await;
    assert_eq!(resp.status(), 200);
    let link = resp.headers()["link"].to_str().unwrap().to_string();
    assert_eq!(
        link,
        "</v2/registry.redhat.io/ubi9/ubi/tags/list?last=b&n=2>; rel=\"next\""
    );
    let body = common::json(resp).await;
    assert_eq!(body["name"], "registry.redhat.io/ubi9/ubi");
    assert_eq!(body["tags"], serde_json::json!(["a", "b"]));

    let next = link.trim_start_matches('<').split('>').next().unwrap().to_string();
    let body = common::json(h.get(&next).await).await;
    assert_eq!(body["tags"], serde_json::json!(["c", "d"]));

    // containerd-style with ?ns=: the link keeps ns.
    let resp = h.get("/v2/ubi9/ubi/tags/list?n=4&ns=registry.redhat.io").await;
    assert_eq!(
        resp.headers()["link"],
        "</v2/ubi9/ubi/tags/list?last=d&n=4&ns=registry.redhat.io>; rel=\"next\""
    );

    // Upstream down: the last list is served.
    h.fake.stop();
    let body = common::json(h.get("/v2/registry.redhat.io/ubi9/ubi/tags/list?n=2").await).await;
    assert_eq!(body["tags"], serde_json::json!(["a", "b"]));
}

async fn sendfile_bytes(h: &Harness) -> f64 {
    let text = common::metrics_text(&h.url("")).await;
    common::metric_in(&text, "pullgate_sendfile_bytes_total", &[]).unwrap_or(0.0)
}

/// With `[server] sendfile = true`, a warm blob on a plain HTTP/1.1 connection goes from
/// the page cache to the socket with sendfile (src/zero_copy.rs): byte-exact whole, as
/// ranges, and back to back on one keep-alive connection; over HTTP/2 the same blob is
/// copied as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_blob_on_plain_http1_is_sent_by_the_kernel_byte_exact() {
    let h = Harness::start_with("[server]\nsendfile = true\n", "").await;
    let size = 3 * 1024 * 1024 + 12_345;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[size]);
    let layer = &img.layer_digests[0];
    let path = format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}");
    let resp = h.get(&path).await;
    assert_eq!(body_bytes(resp).await.unwrap(), img.layers[0], "the fill");
    assert_eq!(sendfile_bytes(&h).await, 0.0, "a fill is not sent by the kernel");

    for _ in 0..3 {
        let resp = h.get(&path).await;
        assert_eq!(resp.version(), reqwest::Version::HTTP_11);
        assert_eq!(resp.headers()["content-length"], size.to_string().as_str());
        assert!(body_bytes(resp).await.unwrap() == img.layers[0], "hit differs");
    }
    assert_eq!(sendfile_bytes(&h).await, (3 * size) as f64);
    for (first, last) in [(0, 0), (1_048_575, 1_048_577), (size - 10, size - 1), (5, size - 1)] {
        let resp = h
            .client
            .get(h.url(&path))
            .header("range", format!("bytes={first}-{last}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206);
        assert!(
            body_bytes(resp).await.unwrap() == img.layers[0][first..=last],
            "range {first}-{last} differs"
        );
    }

    let before = sendfile_bytes(&h).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = h2.get(h.url(&path)).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(body_bytes(resp).await.unwrap() == img.layers[0], "HTTP/2 differs");
    assert_eq!(sendfile_bytes(&h).await, before, "HTTP/2 copies");
}

/// sendfile is off unless configured (and `[server] sendfile = false` says so too): every
/// blob is read and copied, warm ones included (the same blob and GETs as the test above,
/// where the kernel sends them when asked to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendfile_is_off_by_default_and_can_be_turned_off() {
    for extra in ["", "[server]\nsendfile = false\n"] {
        let h = Harness::start_with(extra, "").await;
        let img = h.fake.add_image("ubi9/ubi", "latest", &[3 * 1024 * 1024 + 12_345]);
        let path = format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{}", img.layer_digests[0]);
        assert_eq!(body_bytes(h.get(&path).await).await.unwrap(), img.layers[0], "the fill");
        assert_eq!(sendfile_bytes(&h).await, 0.0, "a fill is not sent by the kernel");
        for _ in 0..3 {
            let resp = h.get(&path).await;
            assert_eq!(resp.version(), reqwest::Version::HTTP_11);
            assert!(body_bytes(resp).await.unwrap() == img.layers[0], "hit differs");
        }
        assert_eq!(sendfile_bytes(&h).await, 0.0, "config {extra:?}");
    }
}
