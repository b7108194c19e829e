//! Operating pullgate: TLS (HTTP/2, SIGHUP reload) with real clients, client
//! authentication, allow/deny patterns, metrics, health and readiness, cache tooling,
//! prefetch, JSON logs without secrets, and the deployment files.
//!
//! Longer than ~800 lines on purpose: each file under tests/ is a binary of its own that
//! links pullgate and its dependencies again (CI time on 2 cores), and these
//! tests share nothing but the harness, so they read one by one as well here as apart.

mod common;

use common::fake_upstream::FakeRedHat;
use common::registry::DockerRegistry;
use common::skopeo::{Skopeo, assert_success, inspect_dir_copy};
use common::tls::TestCa;
use common::{Harness, ServeProcess, error_code};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::SeqCst;

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    pullgate::upstream::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .tls_info(true)
        .build()
        .unwrap()
}

fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http2_to_clients_and_skopeo_trusts_the_test_ca() {
    let registry = DockerRegistry::start().await;
    let (digest, _) = registry.push_single_image("ubi9/img", "9.4").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("pullgate test CA");
    let (chain, key) = ca.server_cert(&["127.0.0.1", "localhost"]);
    let cert = write(dir.path(), "tls.crt", &chain);
    let key = write(dir.path(), "tls.key", &key);
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n[[upstream]]\nname = \"registry.redhat.io\"\nurl = \"{}\"\n",
        dir.path().join("data").display(),
        cert.display(),
        key.display(),
        registry.url
    );
    let config = pullgate::config::Config::from_toml_str(&toml).unwrap();
    let server = pullgate::app::spawn(&config).await.unwrap();
    assert!(server.url().starts_with("https://"));
    let resp = https_client(&ca.ca_pem)
        .get(format!("{}/v2/", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "HTTP/2 by ALPN");

    // skopeo trusts the CA from a certs directory (no `insecure`).
    let skopeo = Skopeo::new();
    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("ca.crt"), &ca.ca_pem).unwrap();
    let conf = skopeo.write_registries_conf("unqualified-search-registries = []\n");
    let dest = dir.path().join("copy");
    let src = format!("docker://{}/registry.redhat.io/ubi9/img:9.4", server.addr);
    let out = skopeo
        .copy_async(
            &conf,
            &[
                "--src-cert-dir",
                certs.to_str().unwrap(),
                &src,
                &format!("dir:{}", dest.display()),
            ],
        )
        .await;
    assert_success("skopeo copy over TLS", &out);
    assert_eq!(inspect_dir_copy(&dest).manifest_digest, digest);
    // Without the CA, skopeo refuses the certificate.
    let out = skopeo
        .copy_async(&conf, &[&src, &format!("dir:{}", dir.path().join("no").display())])
        .await;
    assert!(!out.status.success(), "an untrusted certificate is refused");
    server.shutdown().await.unwrap();
}

/// The version and cipher suite a rustls client offering `suites` (in that order) and
/// `versions` agrees with the server at `addr`, which it trusts through `ca_pem`.
fn negotiate(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    suites: &[rustls::CipherSuite],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (rustls::ProtocolVersion, rustls::CipherSuite) {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = suites
        .iter()
        .map(|want| *provider.cipher_suites.iter().find(|s| s.suite() == *want).unwrap())
        .collect();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    (
        conn.protocol_version().unwrap(),
        conn.negotiated_cipher_suite().unwrap().suite(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_chooses_aes_128_gcm_whatever_order_the_client_lists() {
    use rustls::CipherSuite::*;
    use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRedHat::start().await;
    let ca = TestCa::new("pullgate test CA");
    let (chain, key) = ca.server_cert(&["127.0.0.1"]);
    let cert = write(dir.path(), "tls.crt", &chain);
    let key = write(dir.path(), "tls.key", &key);
    let extra = format!("[tls]\ncert = \"{}\"\nkey = \"{}\"", cert.display(), key.display());
    let toml = common::config_toml(dir.path(), &fake.registry_url, &extra, "");
    let config = pullgate::config::Config::from_toml_str(&toml).unwrap();
    let server = pullgate::app::spawn(&config).await.unwrap();
    let (addr, pem) = (server.addr, ca.ca_pem.clone());
    tokio::task::spawn_blocking(move || {
        let v13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        let v12: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        // OpenSSL's and rustls' order (AES-256 first): pullgate picks AES-128.
        let openssl_order = [
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
        ];
        assert_eq!(
            negotiate(addr, &pem, &openssl_order, v13),
            (TLSv1_3, TLS13_AES_128_GCM_SHA256)
        );
        // A client with one suite still gets it: the order chooses, it never refuses.
        for only in [TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256] {
            assert_eq!(negotiate(addr, &pem, &[only], v13), (TLSv1_3, only));
        }
        // TLS 1.2, ChaCha20 and AES-256 listed before AES-128 for both key types.
        let tls12_order = [
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ];
        let (version, suite) = negotiate(addr, &pem, &tls12_order, v12);
        assert_eq!(version, TLSv1_2);
        assert!(
            [
                TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            ]
            .contains(&suite),
            "{suite:?}"
        );
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRedHat::start().await;
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    let (chain, key) = old_ca.server_cert(&["127.0.0.1"]);
    let cert = write(dir.path(), "tls.crt", &chain);
    let key = write(dir.path(), "tls.key", &key);
    let extra = format!("[tls]\ncert = \"{}\"\nkey = \"{}\"", cert.display(), key.display());
    let config = write(
        dir.path(),
        "pullgate.toml",
        &common::config_toml(dir.path(), &fake.registry_url, &extra, ""),
    );
    let server = ServeProcess::start(&config, &[]);
    assert_eq!(server.scheme, "https");
    let old_client = https_client(&old_ca.ca_pem);
    let first = old_client.get(format!("{}/v2/", server.url())).send().await.unwrap();
    let first_cert = peer_cert(&first);

    let (chain, new_key) = new_ca.server_cert(&["127.0.0.1"]);
    std::fs::write(&cert, chain).unwrap();
    std::fs::write(&key, new_key).unwrap();
    server.signal("HUP");
    let new_client = https_client(&new_ca.ca_pem);
    let v2 = format!("{}/v2/", server.url());
    common::eventually(
        "the new certificate to be served after SIGHUP",
        std::time::Duration::from_secs(10),
        async || new_client.get(&v2).send().await.is_ok(),
    )
    .await;
    let second = new_client.get(&v2).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_ne!(peer_cert(&second), first_cert);
    // The connection opened before the reload keeps working.
    assert_eq!(
        old_client
            .get(format!("{}/v2/", server.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, log) = server.stop();
    assert!(status.success());
    assert!(log.iter().any(|l| l.contains("TLS certificate reloaded")), "{log:?}");
}

fn htpasswd_line(user: &str, password: &str) -> String {
    format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_clients_pull_with_credentials_and_anonymous_pulls_are_refused() {
    let registry = DockerRegistry::start().await;
    let (digest, _) = registry.push_single_image("ubi9/img", "9.4").await;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = write(dir.path(), "htpasswd", &htpasswd_line("alice", "wonderland"));
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[clients]\nhtpasswd = \"{}\"\n[[upstream]]\nname = \"registry.redhat.io\"\nurl = \"{}\"\n",
        dir.path().join("data").display(),
        htpasswd.display(),
        registry.url
    );
    let config = pullgate::config::Config::from_toml_str(&toml).unwrap();
    let server = pullgate::app::spawn(&config).await.unwrap();
    let client = common::client();
    let v2 = client.get(format!("{}/v2/", server.url())).send().await.unwrap();
    assert_eq!(v2.status(), 401);
    assert_eq!(v2.headers()["www-authenticate"], "Basic realm=\"pullgate\"");
    assert_eq!(error_code(v2).await, "UNAUTHORIZED");
    let m = client
        .get(format!("{}/v2/registry.redhat.io/ubi9/img/manifests/9.4", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 401, "repository endpoints need credentials too");
    assert!(m.headers().contains_key("www-authenticate"));
    let wrong = client
        .get(format!("{}/v2/", server.url()))
        .basic_auth("alice", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            client
                .get(format!("{}{open}", server.url()))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{open}"
        );
    }
    let lookaside = format!(
        "{}/sigstore/registry.redhat.io/ubi9/img@sha256={}/signature-1",
        server.url(),
        "a".repeat(64)
    );
    assert_eq!(
        client.get(lookaside).send().await.unwrap().status(),
        404,
        "the lookaside stays anonymous"
    );

    let skopeo = Skopeo::new();
    let conf = skopeo.write_registries_conf("unqualified-search-registries = []\n");
    let src = format!("docker://{}/registry.redhat.io/ubi9/img:9.4", server.addr);
    let dest = dir.path().join("copy");
    let out = skopeo
        .copy_async(
            &conf,
            &[
                "--src-tls-verify=false",
                "--src-creds",
                "alice:wonderland",
                &src,
                &format!("dir:{}", dest.display()),
            ],
        )
        .await;
    assert_success("skopeo copy --src-creds", &out);
    assert_eq!(inspect_dir_copy(&dest).manifest_digest, digest);
    let out = skopeo
        .copy_async(
            &conf,
            &[
                "--src-tls-verify=false",
                &src,
                &format!("dir:{}", dir.path().join("anon").display()),
            ],
        )
        .await;
    assert!(!out.status.success(), "an anonymous pull is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unauthorized") || err.contains("authentication required") || err.contains("401"),
        "{err}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn allow_and_deny_patterns_refuse_names_without_fetching_them() {
    let h = Harness::start_with("", "allow = [\"ubi9/*\", \"rhel9/httpd*\"]\ndeny = [\"ubi9/secret*\"]").await;
    let ok = h.fake.add_image("ubi9/ubi", "latest", &[10]);
    h.fake.add_image("ubi9/secret-thing", "latest", &[10]);
    h.fake.add_image("rhel8/postgres", "latest", &[10]);
    let r = h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/latest").await;
    assert_eq!(r.headers()["docker-content-digest"], ok.manifest_digest.as_str());
    let before = h.fake.request_count();
    for path in [
        "/v2/registry.redhat.io/rhel8/postgres/manifests/latest",
        "/v2/registry.redhat.io/ubi9/secret-thing/manifests/latest",
        "/v2/registry.redhat.io/ubi9/secret-thing/tags/list",
        &format!("/v2/registry.redhat.io/rhel8/postgres/blobs/{}", ok.config_digest),
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(error_code(r).await, "DENIED");
    }
    // A refused name is refused even for content already cached under another name.
    assert_eq!(h.fake.request_count(), before, "refused names never reach upstream");
}

#[tokio::test]
async fn metrics_parse_and_move_as_requests_are_served() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[100_000]);
    let scrape = || async {
        let text = h.get("/metrics").await.text().await.unwrap();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
    };
    let value = |s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]| -> f64 {
        s.samples
            .iter()
            .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let before = scrape().await;
    let layer = format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{}", img.layer_digests[0]);
    assert_eq!(
        h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/latest").await.status(),
        200
    );
    common::body_bytes(h.get(&layer).await).await.unwrap();
    // The client has every verified byte before the fill finishes publishing: wait for
    // the publish so the next GET is a hit rather than joining the fill.
    common::fills_settle(h.proxy()).await;
    common::body_bytes(h.get(&layer).await).await.unwrap();
    h.fake.wrong_bytes.store(true, SeqCst);
    common::assert_not_delivered(
        h.get(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{}", img.config_digest))
            .await,
    )
    .await;
    h.fake.wrong_bytes.store(false, SeqCst);
    *h.fake.redirect_to.lock().unwrap() = Some("http://127.0.0.3:9".into());
    let other = h.fake.add_blob(vec![7u8; 1000]);
    assert_eq!(
        h.get(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{other}"))
            .await
            .status(),
        502
    );

    let after = scrape().await;
    let delta = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    assert_eq!(
        delta(
            "pullgate_http_requests_total",
            &[("route", "manifest"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(delta("pullgate_http_requests_total", &[("route", "blob")]), 4.0);
    assert_eq!(
        delta("pullgate_cache_lookups_total", &[("kind", "blob"), ("result", "hit")]),
        1.0
    );
    assert_eq!(
        delta(
            "pullgate_cache_lookups_total",
            &[("kind", "manifest"), ("result", "miss")]
        ),
        1.0
    );
    assert_eq!(delta("pullgate_served_bytes_total", &[("source", "cache")]), 100_000.0);
    assert!(delta("pullgate_served_bytes_total", &[("source", "upstream")]) >= 100_000.0);
    assert!(delta("pullgate_upstream_bytes_total", &[("upstream", "registry.redhat.io")]) >= 100_000.0);
    assert_eq!(delta("pullgate_verification_failures_total", &[]), 1.0);
    assert_eq!(delta("pullgate_redirects_refused_total", &[("host", "127.0.0.3")]), 1.0);
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "pullgate_upstream_request_duration_seconds_count")
    );
    assert_eq!(value(&after, "pullgate_cache_entries", &[("kind", "blob")]), 1.0);
    assert!(value(&after, "pullgate_cache_size_bytes", &[]) >= 100_000.0);
    assert!(after.samples.iter().any(|s| s.metric == "pullgate_fills_in_flight"));
}

#[tokio::test]
async fn readyz_flips_when_storage_is_unavailable_and_back() {
    let h = Harness::start().await;
    assert_eq!(h.get("/healthz").await.status(), 200);
    assert_eq!(h.get("/readyz").await.status(), 200);
    let staging = h.dir.path().join("data/blobs/staging");
    std::fs::remove_dir_all(&staging).unwrap();
    std::fs::write(&staging, b"not a directory").unwrap(); // blob writes now fail
    let r = h.get("/readyz").await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("not ready"));
    assert_eq!(h.get("/healthz").await.status(), 200, "alive, just not ready");
    std::fs::remove_file(&staging).unwrap();
    std::fs::create_dir(&staging).unwrap();
    assert_eq!(h.get("/readyz").await.status(), 200);
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = common::pullgate(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_subcommands_work_on_a_populated_data_directory() {
    let mut h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[50_000, 60_000]);
    let other = h.fake.add_image("rhel9/httpd", "2.4", &[70_000]);
    for (repo, tag, image) in [("ubi9/ubi", "latest", &img), ("rhel9/httpd", "2.4", &other)] {
        assert_eq!(
            h.get(&format!("/v2/registry.redhat.io/{repo}/manifests/{tag}"))
                .await
                .status(),
            200
        );
        for d in std::iter::once(&image.config_digest).chain(&image.layer_digests) {
            common::body_bytes(h.get(&format!("/v2/registry.redhat.io/{repo}/blobs/{d}")).await)
                .await
                .unwrap();
        }
    }
    let config = write(
        h.dir.path(),
        "pullgate.toml",
        &common::config_toml(h.dir.path(), &h.fake.registry_url, "", ""),
    );
    let config = config.to_str().unwrap().to_string();

    // While pullgate runs, the tools refuse clearly.
    let (code, _, err) = run(&["cache", "stats", "--config", &config]);
    assert_eq!(code, 2);
    assert!(err.contains("in use by another pullgate"), "{err}");
    let server = h.server.take().unwrap();
    server.shutdown().await.unwrap();

    let (code, out, _) = run(&["cache", "stats", "--config", &config]);
    assert_eq!(code, 0);
    assert!(out.contains("blobs:      5"), "{out}");
    assert!(out.contains("manifests:  2"), "{out}");
    assert!(out.contains("hit ratio:"), "{out}");
    let (_, out, _) = run(&["cache", "ls", "--config", &config]);
    assert!(
        out.contains("registry.redhat.io/ubi9/ubi:latest") && out.contains("registry.redhat.io/rhel9/httpd:2.4"),
        "{out}"
    );
    let (_, out, _) = run(&["cache", "ls", "--config", &config, "--repo", "ubi9/*"]);
    assert!(out.contains("ubi9/ubi:latest") && !out.contains("httpd"), "{out}");

    // A blob corrupted on disk is found and removed by verify.
    let bad = &img.layer_digests[1];
    let hex = &bad["sha256:".len()..];
    let file = h.dir.path().join("data/blobs/sha256").join(&hex[..2]).join(hex);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let (code, out, _) = run(&["cache", "verify", "--config", &config]);
    assert_eq!(code, 1, "verify exits 1 when it found bad entries: {out}");
    assert!(
        out.contains(&format!("blob {bad}")) && out.contains("1 bad entries removed"),
        "{out}"
    );
    let (code, out, _) = run(&["cache", "verify", "--config", &config]);
    assert_eq!(code, 0, "{out}");

    let (code, out, _) = run(&[
        "cache",
        "evict",
        "--config",
        &config,
        "--repo",
        "registry.redhat.io/rhel9/*",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("evicted 1 tags, 1 manifests, 2 blobs"), "{out}");
    let (_, out, _) = run(&["cache", "stats", "--config", &config]);
    assert!(out.contains("blobs:      2"), "{out}");
    let (code, _, err) = run(&["cache", "evict", "--config", &config]);
    assert_eq!(code, 2, "evict needs a criterion: {err}");
    let (code, out, _) = run(&["cache", "evict", "--config", &config, "--older-than", "0s"]);
    assert_eq!(code, 0, "{out}");
    let (code, _, _) = run(&["cache", "purge", "--config", &config]);
    assert_eq!(code, 0);
    let (_, out, _) = run(&["cache", "stats", "--config", &config]);
    assert!(out.contains("blobs:      0") && out.contains("tags:       0"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_warms_every_platform_of_a_multi_arch_image() {
    let fake = FakeRedHat::start().await;
    let list = fake.add_docker_list("ubi9/ubi", "multi");
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "pullgate.toml",
        &common::config_toml(dir.path(), &fake.registry_url, "", ""),
    );
    let config = config.to_str().unwrap().to_string();
    let images = write(
        dir.path(),
        "images.txt",
        "# maintenance window\nregistry.redhat.io/ubi9/ubi:multi\n\n",
    );
    let (code, out, err) = run(&["prefetch", "--config", &config, "--file", images.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok      registry.redhat.io/ubi9/ubi:multi (2 image manifests)"),
        "{out}"
    );
    assert!(out.contains("1 of 1 images prefetched"), "{out}");

    // Everything is served with the upstream gone.
    fake.stop();
    let server = pullgate::app::spawn(&pullgate::config::Config::load(Path::new(&config)).unwrap())
        .await
        .unwrap();
    let client = common::client();
    for child in &list.child_images {
        for d in std::iter::once(&child.config_digest).chain(&child.layer_digests) {
            let r = client
                .get(format!("{}/v2/registry.redhat.io/ubi9/ubi/blobs/{d}", server.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{d} was prefetched");
        }
    }
    server.shutdown().await.unwrap();

    // A failing image: non-zero exit and a summary that says so.
    let (code, out, _) = run(&[
        "prefetch",
        "--config",
        &config,
        "registry.redhat.io/ubi9/ubi:multi",
        "registry.redhat.io/nope/nope:1",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED  registry.redhat.io/nope/nope:1") && out.contains("1 of 2 images prefetched"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_can_narrow_to_one_platform() {
    let fake = FakeRedHat::start().await;
    let list = fake.add_docker_list("ubi9/ubi", "multi");
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "pullgate.toml",
        &common::config_toml(dir.path(), &fake.registry_url, "", ""),
    );
    let (code, out, _) = run(&[
        "prefetch",
        "--config",
        config.to_str().unwrap(),
        "--platform",
        "linux/arm64",
        "registry.redhat.io/ubi9/ubi:multi",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(1 image manifest)"), "{out}");
    let arm = &list.child_images[1];
    let amd = &list.child_images[0];
    assert_eq!(fake.cdn_gets(&arm.layer_digests[0]), 1);
    assert_eq!(fake.cdn_gets(&amd.layer_digests[0]), 0, "other platforms are skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_and_carry_no_secret() {
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[100_000]);
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "pullgate.toml",
        &common::config_toml(dir.path(), &fake.registry_url, "", ""),
    );
    let server = ServeProcess::start(&config, &["--log-format", "json"]);
    let client = common::client();
    client
        .get(format!(
            "{}/v2/registry.redhat.io/ubi9/ubi/manifests/latest",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    let r = client
        .get(format!(
            "{}/v2/registry.redhat.io/ubi9/ubi/blobs/{}",
            server.url(),
            img.layer_digests[0]
        ))
        .send()
        .await
        .unwrap();
    common::body_bytes(r).await.unwrap();
    // The client has the bytes before the fill has published and logged its egress line.
    common::eventually(
        "the egress audit line",
        std::time::Duration::from_secs(10),
        async || server.log.lock().unwrap().iter().any(|l| l.contains("pullgate::audit")),
    )
    .await;
    let (status, log) = server.stop();
    assert!(status.success());
    let parsed: Vec<serde_json::Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<_> = parsed.iter().filter(|v| v["target"] == "pullgate::access").collect();
    assert!(
        access
            .iter()
            .any(|v| v["route"] == "blob" && v["status"] == 200 && v["cache"] == "miss" && v["bytes"] == "100000"),
        "{access:?}"
    );
    let audit: Vec<_> = parsed.iter().filter(|v| v["target"] == "pullgate::audit").collect();
    assert!(
        audit.iter().any(|v| v["digest"] == img.layer_digests[0].as_str()
            && v["cdn_host"] == "127.0.0.2"
            && v["verified"] == "ok"
            && v["bytes"] == 100_000),
        "{audit:?}"
    );
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", common::USERNAME, common::PASSWORD),
    );
    common::assert_no_secrets(&log, &[common::PASSWORD, &basic, "tok-", "Signature=", "Expires="]);
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let analyze = common::registry::require_tool("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/pullgate.service")).unwrap();
    // verify checks that ExecStart exists: point it at a binary that does.
    let path = write(
        dir.path(),
        "pullgate.service",
        &unit.replace("/usr/local/bin/pullgate", common::pullgate_bin().to_str().unwrap()),
    );
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
}

#[test]
fn the_kubernetes_and_monitoring_files_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut kinds = Vec::new();
    for dir in ["kubernetes", "kubernetes-shared-store", "monitoring"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            match path.extension().and_then(|e| e.to_str()) {
                Some("yaml") => {
                    let docs: Vec<serde_json::Value> =
                        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    for v in docs {
                        if let Some(k) = v["kind"].as_str() {
                            kinds.push(k.to_string());
                        }
                    }
                }
                Some("json") => {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                _ => {}
            }
        }
    }
    for k in [
        "StatefulSet",
        "Deployment",
        "Service",
        "Route",
        "ConfigMap",
        "PrometheusRule",
        "ObjectBucketClaim",
        "Secret",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.iter().any(|x| x == k), "a {k} is shipped: {kinds:?}");
    }
    // Each ConfigMap's pullgate.toml is a valid configuration; the shared-store one uses
    // the bucket.
    for dir in ["kubernetes", "kubernetes-shared-store"] {
        let cm = std::fs::read_to_string(root.join(dir).join("configmap.yaml")).unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&cm).unwrap();
        let toml = v["data"]["pullgate.toml"].as_str().expect("data.pullgate.toml");
        let config = pullgate::config::Config::from_toml_str(toml)
            .unwrap_or_else(|e| panic!("{dir}: the ConfigMap's config is invalid: {e}"));
        let shared = config.cache.blob_store == pullgate::config::BlobStoreKind::S3;
        assert_eq!(shared, dir == "kubernetes-shared-store", "{dir}: blob_store");
    }
    // Every file the kustomization names exists.
    for dir in ["kubernetes", "kubernetes-shared-store"] {
        let k = std::fs::read_to_string(root.join(dir).join("kustomization.yaml")).unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&k).unwrap();
        for r in v["resources"].as_array().expect("resources") {
            let name = r.as_str().unwrap();
            assert!(
                root.join(dir).join(name).is_file(),
                "{dir}/kustomization.yaml names {name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_proxy_carries_every_upstream_request() {
    let (proxy, seen) = common::forward_proxy::start().await;
    let h = Harness::start_with("", &format!("egress_proxy = \"{proxy}\"")).await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[50_000]);
    assert_eq!(
        h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/latest").await.status(),
        200
    );
    let r = h
        .get(&format!(
            "/v2/registry.redhat.io/ubi9/ubi/blobs/{}",
            img.layer_digests[0]
        ))
        .await;
    assert_eq!(common::body_bytes(r).await.unwrap(), img.layers[0]);
    let lines = seen.lock().unwrap().clone();
    let registry = h.fake.registry_addr.to_string();
    let cdn = h.fake.cdn_addr.to_string();
    // The proxy logs the first request of each connection (the realm and the registry
    // share one, kept alive).
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("GET http://") && l.contains(&registry)),
        "the registry: {lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains(&cdn)), "the CDN: {lines:?}");
    assert!(!h.fake.cdn_saw_authorization());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_behind_a_corporate_ca_is_trusted_with_ca_file() {
    // The upstream is another pullgate serving TLS with a test CA.
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[30_000]);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("corporate root");
    let (chain, key) = ca.server_cert(&["127.0.0.1"]);
    let cert = write(dir.path(), "tls.crt", &chain);
    let key = write(dir.path(), "tls.key", &key);
    let inner_dir = dir.path().join("inner");
    std::fs::create_dir_all(&inner_dir).unwrap();
    let extra = format!(
        "default_upstream = \"registry.redhat.io\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    );
    let inner_cfg =
        pullgate::config::Config::from_toml_str(&common::config_toml(&inner_dir, &fake.registry_url, &extra, ""))
            .unwrap();
    let inner = pullgate::app::spawn(&inner_cfg).await.unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.ca_pem);

    let outer = |ca: Option<&Path>| {
        let extra = ca.map(|p| format!("ca_file = \"{}\"", p.display())).unwrap_or_default();
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[upstream]]\nname = \"registry.redhat.io\"\nurl = \"{}\"\n{extra}\n",
            dir.path()
                .join(if ca.is_some() { "outer" } else { "outer-no-ca" })
                .display(),
            inner.url()
        )
    };
    let trusting = pullgate::app::spawn(&pullgate::config::Config::from_toml_str(&outer(Some(&ca_file))).unwrap())
        .await
        .unwrap();
    let client = common::client();
    let r = client
        .get(format!(
            "{}/v2/registry.redhat.io/ubi9/ubi/manifests/latest",
            trusting.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], img.manifest_digest.as_str());
    let untrusting = pullgate::app::spawn(&pullgate::config::Config::from_toml_str(&outer(None)).unwrap())
        .await
        .unwrap();
    let r = client
        .get(format!(
            "{}/v2/registry.redhat.io/ubi9/ubi/manifests/latest",
            untrusting.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "without ca_file the corporate certificate is refused");
    for s in [trusting, untrusting, inner] {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn upstream_credentials_can_come_from_a_containers_auth_json() {
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[10]);
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", common::USERNAME, common::PASSWORD),
    );
    let host = fake.registry_addr.to_string();
    let auth_file = write(
        dir.path(),
        "auth.json",
        &format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{auth}\"}}}}}}"),
    );
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[upstream]]\nname = \"registry.redhat.io\"\nurl = \"{}\"\nauth_file = \"{}\"\n",
        dir.path().join("data").display(),
        fake.registry_url,
        auth_file.display()
    );
    let server = pullgate::app::spawn(&pullgate::config::Config::from_toml_str(&toml).unwrap())
        .await
        .unwrap();
    let r = common::client()
        .get(format!(
            "{}/v2/registry.redhat.io/ubi9/ubi/manifests/latest",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], img.manifest_digest.as_str());
    assert!(
        fake.token_requests().iter().all(|(_, basic)| *basic),
        "the token request carried the auth.json credentials"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_database_disk_is_full() {
    let disk = common::SmallDisk::mount("64m");
    let fake = FakeRedHat::start_anonymous().await;
    let data = disk.0.join("data");
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[upstream]]\nname = \"r\"\nurl = \"{}\"\nallow_redirect_hosts = [\"127.0.0.2\"]\n",
        data.display(),
        fake.registry_url
    );
    let server = pullgate::app::spawn(&pullgate::config::Config::from_toml_str(&toml).unwrap())
        .await
        .unwrap();
    let client = common::client();
    let base = server.url();
    let ready = || common::readyz(&client, &base);
    assert_eq!(ready().await, 200);
    let cached = fake.add_image("ubi9/ubi", "cached", &[50_000]);
    let later = fake.add_image("ubi9/ubi", "later", &[2_000_000]);
    let blob = |d: &str| format!("{}/v2/r/ubi9/ubi/blobs/{d}", server.url());
    let got = client.get(blob(&cached.layer_digests[0])).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(
        got.bytes().await.unwrap() == cached.layers[0],
        "the first pull is the blob"
    );
    // Fill the disk.
    let filler = disk.0.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", filler.display()))
        .output();
    assert_eq!(ready().await, 503, "a full disk makes pullgate not ready");
    // What it holds is still served; a miss goes through, verified and not kept (a
    // fill could not keep it), never a 500.
    let got = client.get(blob(&cached.layer_digests[0])).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(
        got.bytes().await.unwrap() == cached.layers[0],
        "a hit is still the blob"
    );
    let r = client.get(blob(&later.layer_digests[0])).send().await.unwrap();
    assert_eq!(r.status(), 200, "a miss on a full disk is served through");
    assert!(
        common::body_bytes(r).await.unwrap() == later.layers[0],
        "the whole blob, verified"
    );
    let metrics = common::metrics_text(&base).await;
    assert_eq!(
        common::metric_in(&metrics, "pullgate_fills_total", &[r#"outcome="served_through""#]),
        Some(1.0),
        "it went through, not into the cache"
    );
    std::fs::remove_file(&filler).unwrap();
    common::eventually(
        "ready again once space returns",
        std::time::Duration::from_secs(10),
        async || ready().await == 200,
    )
    .await;
    server.shutdown().await.unwrap();
}
