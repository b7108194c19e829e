//! `pullgate doctor` as an operator runs it, against the Red Hat-like fake (registry on
//! 127.0.0.1, CDN on 127.0.0.2) with one fault at a time: each failure names its phase
//! and host:port and gives the remedy; a healthy path exits 0. Also what `check-config
//! --online` prints.

mod common;

use common::fake_upstream::{FakeRedHat, PASSWORD, USERNAME};
use std::path::Path;
use std::process::{Command, Output};

/// An `[[upstream]]` named `rh` at `url`, with `extra` lines.
fn write_config(dir: &Path, url: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("pullgate.toml");
    let body = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[[upstream]]\nname = \"rh\"\nurl = \"{url}\"\nconnect_timeout = \"2s\"\nresponse_timeout = \"5s\"\n{extra}",
        dir.join("data").display()
    );
    std::fs::write(&path, body).unwrap();
    path
}

/// Credentials of the fake's service account (`password` in a file).
fn credentials(dir: &Path, password: &str) -> String {
    let pw = dir.join("password");
    std::fs::write(&pw, password).unwrap();
    format!("username = \"{USERNAME}\"\npassword_file = \"{}\"\n", pw.display())
}

fn doctor(config: &Path, args: &[&str]) -> (Output, String) {
    let out = Command::new(common::pullgate_bin())
        .args(["doctor", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("run pullgate doctor");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

/// The line of the first failing hop, and the remedy line under it.
fn failure(text: &str) -> (String, String) {
    let mut lines = text.lines();
    let fail = lines
        .by_ref()
        .find(|l| l.trim_start().starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no FAIL line in:\n{text}"))
        .to_string();
    let remedy = lines.next().unwrap_or_default().to_string();
    (fail, remedy)
}

/// `doctor --image ubi9/ubi-minimal:latest` on the fake with its service account and
/// `allow_redirect_hosts` set to `redirect_hosts` (a TOML list's inside).
async fn doctor_on_fake(fake: &FakeRedHat, redirect_hosts: &str) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}allow_redirect_hosts = [{redirect_hosts}]\n",
        credentials(dir.path(), PASSWORD)
    );
    let config = write_config(dir.path(), &fake.registry_url, &extra);
    tokio::task::spawn_blocking(move || doctor(&config, &["--image", "ubi9/ubi-minimal:latest"]))
        .await
        .unwrap()
}

/// A listener that never answers a connect: its accept queue (backlog 1, never
/// accepted) is filled first, and Linux then drops further SYNs without a reset, which
/// is what a firewall's DROP rule looks like from here. Keep both until done.
async fn unanswering_listener() -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = s.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    // Connect until one does not complete at once: the queue is then full.
    for _ in 0..16 {
        match tokio::time::timeout(
            std::time::Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(c)) => fillers.push(c),
            _ => break,
        }
    }
    (listener, fillers)
}

fn assert_exit(out: &Output, code: i32, text: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{text}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_path_passes_every_hop_and_shows_no_secret() {
    let fake = FakeRedHat::start().await;
    let image = fake.add_image("ubi9/ubi-minimal", "latest", &[3000]);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}allow_redirect_hosts = [\"127.0.0.2\"]\nprobe_image = \"ubi9/ubi-minimal:latest\"\n",
        credentials(dir.path(), PASSWORD)
    );
    let config = write_config(dir.path(), &fake.registry_url, &extra);
    let (out, text) = tokio::task::spawn_blocking(move || doctor(&config, &[])).await.unwrap();
    assert_exit(&out, 0, &text);
    let cdn = fake.cdn_addr.to_string();
    for expected in [
        format!("PASS dns       {}", fake.registry_addr),
        format!("PASS connect   {}", fake.registry_addr),
        "PASS http".to_string(),
        format!("PASS token     {}", fake.registry_addr),
        "PASS manifest  ubi9/ubi-minimal:latest".to_string(),
        format!("PASS redirect  {cdn}"),
        format!("PASS connect   {cdn}"),
        format!("PASS blob      {cdn}"),
        format!("config blob {}", image.config_digest),
        "sha256 verified".to_string(),
        "every hop passed".to_string(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains(PASSWORD), "the password is printed:\n{text}");
    assert!(!text.contains("Signature="), "a signed CDN URL is printed:\n{text}");
    assert_eq!(
        fake.cdn_gets(&image.config_digest),
        1,
        "the config blob came from the CDN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_carries_every_hop_and_the_verdict() {
    let fake = FakeRedHat::start().await;
    fake.add_image("ubi9/ubi-minimal", "latest", &[100]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake.registry_url, &credentials(dir.path(), PASSWORD));
    let (out, text) = tokio::task::spawn_blocking(move || {
        doctor(&config, &["--image", "ubi9/ubi-minimal:latest", "--format", "json"])
    })
    .await
    .unwrap();
    // No allow_redirect_hosts: the CDN redirect is the failing hop.
    assert_exit(&out, 1, &text);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(doc["passed"], false);
    let hops = doc["upstreams"][0]["hops"].as_array().expect("hops");
    let last = hops.last().unwrap();
    assert_eq!(last["phase"], "redirect", "{text}");
    assert_eq!(last["passed"], false);
    assert_eq!(last["target"], fake.cdn_addr.to_string());
    assert!(
        last["remedy"]
            .as_str()
            .unwrap()
            .contains("add \"127.0.0.2\" to allow_redirect_hosts of upstream rh"),
        "{text}"
    );
    assert!(hops[..hops.len() - 1].iter().all(|h| h["passed"] == true), "{text}");
}

#[test]
fn a_registry_name_that_does_not_resolve_is_a_dns_failure() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "https://registry.pullgate-test.invalid", "");
    let (out, text) = doctor(&config, &[]);
    assert_exit(&out, 1, &text);
    let (fail, remedy) = failure(&text);
    assert!(
        fail.contains("FAIL dns") && fail.contains("registry.pullgate-test.invalid:443"),
        "{text}"
    );
    assert!(
        remedy.contains("make registry.pullgate-test.invalid resolvable from this host"),
        "{text}"
    );
}

#[test]
fn a_refused_port_is_a_connect_failure_with_the_firewall_rule() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("http://127.0.0.1:{port}"), "");
    let (out, text) = doctor(&config, &[]);
    assert_exit(&out, 1, &text);
    let (fail, remedy) = failure(&text);
    assert!(
        fail.contains(&format!("FAIL connect   127.0.0.1:{port}")) && fail.contains("refused"),
        "{text}"
    );
    assert!(
        remedy.contains(&format!("allow outbound TCP {port} from this host to 127.0.0.1")),
        "{text}"
    );
}

#[test]
fn a_connect_that_gets_no_answer_is_a_timeout_not_a_refusal() {
    let socket = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (listener, fillers) = socket.block_on(unanswering_listener());
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("http://127.0.0.1:{port}"), "");
    let (out, text) = doctor(&config, &[]);
    drop((listener, fillers));
    assert_exit(&out, 1, &text);
    let (fail, remedy) = failure(&text);
    assert!(
        fail.contains("FAIL connect") && fail.contains("timed out after 2s"),
        "{text}"
    );
    assert!(remedy.contains("a firewall drops the packets"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_name_the_service_account_not_the_token() {
    let fake = FakeRedHat::start().await;
    fake.add_image("ubi9/ubi-minimal", "latest", &[100]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &fake.registry_url,
        &credentials(dir.path(), "wrong-token-value"),
    );
    let (out, text) = tokio::task::spawn_blocking(move || doctor(&config, &["--image", "ubi9/ubi-minimal:latest"]))
        .await
        .unwrap();
    assert_exit(&out, 1, &text);
    let (fail, remedy) = failure(&text);
    assert!(fail.contains("FAIL token"), "{text}");
    assert!(
        remedy.contains(&format!("the service account `{USERNAME}` was refused")),
        "{text}"
    );
    assert!(!text.contains("wrong-token-value"), "the password is printed:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_host_that_refuses_is_named_with_its_port() {
    let fake = FakeRedHat::start().await;
    fake.add_image("ubi9/ubi-minimal", "latest", &[100]);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
        l.local_addr().unwrap().port()
    };
    *fake.redirect_to.lock().unwrap() = Some(format!("http://127.0.0.3:{closed}"));
    let (out, text) = doctor_on_fake(&fake, "\"127.0.0.2\", \"127.0.0.3\"").await;
    assert_exit(&out, 1, &text);
    assert!(text.contains(&format!("PASS redirect  127.0.0.3:{closed}")), "{text}");
    let (fail, remedy) = failure(&text);
    assert!(fail.contains(&format!("FAIL connect   127.0.0.3:{closed}")), "{text}");
    assert!(
        remedy.contains(&format!("allow outbound TCP {closed} from this host to 127.0.0.3")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_serving_wrong_bytes_fails_the_blob_hop() {
    let fake = FakeRedHat::start().await;
    fake.add_image("ubi9/ubi-minimal", "latest", &[100]);
    fake.wrong_bytes.store(true, std::sync::atomic::Ordering::SeqCst);
    let (out, text) = doctor_on_fake(&fake, "\"127.0.0.2\"").await;
    assert_exit(&out, 1, &text);
    let (fail, remedy) = failure(&text);
    assert!(
        fail.contains(&format!("FAIL blob      {}", fake.cdn_addr)) && fail.contains("not to the digest"),
        "{text}"
    );
    assert!(remedy.contains("alters them"), "{text}");
}

/// A TLS listener that completes handshakes with `chain`/`key` and answers any request
/// with a registry's `200` to `/v2/`.
async fn tls_registry(chain_pem: &str, key_pem: &str) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject as _;
    pullgate::upstream::install_crypto_provider();
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_unknown_ca_is_named_and_ca_file_fixes_it() {
    let ca = common::tls::TestCa::new("Inspecting Egress Proxy CA");
    let (chain, key) = ca.server_cert(&["127.0.0.1"]);
    let addr = tls_registry(&chain, &key).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("https://{addr}"), "");
    let (out, text) = tokio::task::spawn_blocking(move || doctor(&config, &[])).await.unwrap();
    assert_exit(&out, 1, &text);
    let (fail, remedy) = failure(&text);
    assert!(
        fail.contains(&format!("FAIL tls       {addr}")) && fail.contains("issued by CN=Inspecting Egress Proxy CA"),
        "{text}"
    );
    assert!(remedy.contains("ca_file of upstream rh"), "{text}");

    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let config = write_config(
        dir.path(),
        &format!("https://{addr}"),
        &format!("ca_file = \"{}\"\n", ca_file.display()),
    );
    let (out, text) = tokio::task::spawn_blocking(move || doctor(&config, &[])).await.unwrap();
    assert!(text.contains(&format!("PASS tls       {addr}")), "{text}");
    assert!(text.contains("PASS http"), "{text}");
    assert!(text.contains("no probe image"), "{text}");
    assert_exit(&out, 0, &text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_online_walks_the_upstreams_too() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = write_config(dir.path(), &format!("http://127.0.0.1:{port}"), "");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(common::pullgate_bin())
            .args(["check-config", "--online", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("FAIL connect   127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:1", "");
    let (out, _) = doctor(&config, &["--upstream", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no upstream \"nowhere\""));
    let (out, _) = doctor(&config, &["--image", "no-tag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REPOSITORY:TAG"));
}

// Runtime diagnostics: what `pullgate serve` says when an upstream hop fails.

/// JSON log lines of a stopped server.
fn json_lines(log: &[String]) -> Vec<serde_json::Value> {
    log.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cdn_host_is_one_warn_line_a_labelled_metric_and_a_message_naming_it() {
    let fake = FakeRedHat::start().await;
    let image = fake.add_image("ubi9/ubi-minimal", "latest", &[100]);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
        l.local_addr().unwrap().port()
    };
    *fake.redirect_to.lock().unwrap() = Some(format!("http://127.0.0.3:{closed}"));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}allow_redirect_hosts = [\"127.0.0.2\", \"127.0.0.3\"]\n",
        credentials(dir.path(), PASSWORD)
    );
    let config = write_config(dir.path(), &fake.registry_url, &extra);
    let server = common::ServeProcess::start(&config, &["--log-format", "json"]);
    pullgate::upstream::install_crypto_provider();
    let client = reqwest::Client::new();
    let cdn = format!("127.0.0.3:{closed}");
    for _ in 0..3 {
        let r = client
            .get(format!(
                "{}/v2/rh/ubi9/ubi-minimal/blobs/{}",
                server.url(),
                image.config_digest
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        let body = r.text().await.unwrap();
        assert!(
            body.contains(&format!("upstream rh: {cdn} connection refused")),
            "the client's message names the upstream, the host and what happened: {body}"
        );
    }
    let metrics = common::metrics_text(&server.url()).await;
    let (status, log) = server.stop();
    assert!(status.success());
    let series = metrics
        .lines()
        .find(|l| l.starts_with("pullgate_upstream_errors_total{") && l.contains(&format!("host=\"{cdn}\"")))
        .unwrap_or_else(|| panic!("no error series for {cdn}:\n{metrics}"));
    for label in [
        "upstream=\"rh\"",
        "kind=\"unreachable\"",
        "phase=\"connect\"",
        "role=\"cdn\"",
    ] {
        assert!(series.contains(label), "{label} in {series}");
    }
    let lines = json_lines(&log);
    let warns: Vec<_> = lines
        .iter()
        .filter(|v| v["fields"]["message"] == "upstream request failed" || v["message"] == "upstream request failed")
        .collect();
    assert_eq!(
        warns.len(),
        1,
        "one WARN line for the host and phase within 30 s: {warns:?}"
    );
    let warn = warns[0].to_string();
    for part in [
        "\"WARN\"",
        "\"rh\"",
        &format!("\"{cdn}\""),
        "\"connect\"",
        "connection refused",
    ] {
        assert!(warn.contains(part), "{part} in {warn}");
    }
    let access: Vec<_> = lines
        .iter()
        .filter(|v| v["target"] == "pullgate::access" && v["status"] == 502)
        .collect();
    assert!(!access.is_empty(), "{lines:?}");
    assert!(
        access
            .iter()
            .all(|v| v["name"] == "rh/ubi9/ubi-minimal" || v["name"] == "ubi9/ubi-minimal"),
        "the access line names the repository of a failed request: {access:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_name_that_does_not_resolve_is_logged_as_dns() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://registry.pullgate-test.invalid", "");
    let server = common::ServeProcess::start(&config, &["--log-format", "json"]);
    pullgate::upstream::install_crypto_provider();
    let r = reqwest::get(format!("{}/v2/rh/ubi9/ubi/manifests/latest", server.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("upstream rh: registry.pullgate-test.invalid:80 does not resolve"),
        "{body}"
    );
    let (_, log) = server.stop();
    let lines = json_lines(&log);
    assert!(
        lines.iter().any(|v| {
            let s = v.to_string();
            s.contains("upstream request failed")
                && s.contains("\"dns\"")
                && s.contains("registry.pullgate-test.invalid:80")
        }),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_egress_proxy_the_proxy_hops_are_checked_and_said() {
    let (proxy, seen) = common::forward_proxy::start().await;
    let fake = FakeRedHat::start().await;
    fake.add_image("ubi9/ubi-minimal", "latest", &[100]);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}allow_redirect_hosts = [\"127.0.0.2\"]\negress_proxy = \"{proxy}\"\n",
        credentials(dir.path(), PASSWORD)
    );
    let config = write_config(dir.path(), &fake.registry_url, &extra);
    let (out, text) = tokio::task::spawn_blocking(move || doctor(&config, &["--image", "ubi9/ubi-minimal:latest"]))
        .await
        .unwrap();
    assert_exit(&out, 0, &text);
    let proxy_addr = proxy.trim_start_matches("http://");
    assert!(text.contains(&format!("through egress_proxy {proxy}")), "{text}");
    assert!(text.contains(&format!("PASS connect   {proxy_addr}")), "{text}");
    assert!(text.contains("sha256 verified"), "{text}");
    let lines = seen.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains(&fake.cdn_addr.to_string())),
        "the CDN was reached through the proxy: {lines:?}"
    );
}

/// `pullgate serve` with upstream `rh` at `url` (and `extra` lines): the 5xx a manifest
/// GET gets, its body, and the WARN line about it.
async fn served_failure(url: &str, extra: &str) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), url, extra);
    let server = common::ServeProcess::start(&config, &["--log-format", "json"]);
    pullgate::upstream::install_crypto_provider();
    let r = reqwest::get(format!("{}/v2/rh/ubi9/ubi/manifests/latest", server.url()))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let (_, log) = server.stop();
    let warn = json_lines(&log)
        .into_iter()
        .map(|v| v.to_string())
        .find(|s| s.contains("upstream request failed"))
        .unwrap_or_else(|| panic!("no WARN line: {log:?}"));
    (status, body, warn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_failures_name_their_phase_refused_tls_and_timeout() {
    // Refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (status, body, warn) = served_failure(&format!("http://127.0.0.1:{port}"), "").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&format!("upstream rh: 127.0.0.1:{port} connection refused")),
        "{body}"
    );
    assert!(
        warn.contains("\"connect\"") && warn.contains(&format!("127.0.0.1:{port}")),
        "{warn}"
    );

    // A certificate of an unknown CA.
    let ca = common::tls::TestCa::new("Inspecting Egress Proxy CA");
    let (chain, key) = ca.server_cert(&["127.0.0.1"]);
    let addr = tls_registry(&chain, &key).await;
    let (status, body, warn) = served_failure(&format!("https://{addr}"), "").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&format!("upstream rh: {addr} TLS handshake failed")),
        "{body}"
    );
    assert!(warn.contains("\"tls\"") && warn.contains("UnknownIssuer"), "{warn}");

    // No answer to the SYN: a connect timeout.
    let (listener, fillers) = unanswering_listener().await;
    let addr = listener.local_addr().unwrap();
    let (status, body, warn) = served_failure(&format!("http://{addr}"), "").await;
    drop((listener, fillers));
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&format!("upstream rh: {addr} connect timed out")),
        "{body}"
    );
    assert!(warn.contains("\"connect\""), "{warn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_token_refusals_and_broken_bodies_are_logged_with_their_phase() {
    // Refused credentials: the realm's host, phase status.
    let fake = FakeRedHat::start().await;
    let image = fake.add_image("ubi9/ubi-minimal", "latest", &[200_000]);
    let dir = tempfile::tempdir().unwrap();
    let (status, body, warn) = served_failure(&fake.registry_url, &credentials(dir.path(), "wrong-token-value")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        warn.contains("\"status\"") && warn.contains(&fake.registry_addr.to_string()),
        "{warn}"
    );
    assert!(!warn.contains("wrong-token-value"), "{warn}");

    // A CDN body cut short: phase body, on the CDN host (the fill resumes).
    fake.cut_after.store(50_000, std::sync::atomic::Ordering::SeqCst);
    fake.cut_times.store(1, std::sync::atomic::Ordering::SeqCst);
    let extra = format!(
        "{}allow_redirect_hosts = [\"127.0.0.2\"]\n",
        credentials(dir.path(), PASSWORD)
    );
    let config = write_config(dir.path(), &fake.registry_url, &extra);
    let server = common::ServeProcess::start(&config, &["--log-format", "json"]);
    pullgate::upstream::install_crypto_provider();
    let r = reqwest::get(format!(
        "{}/v2/rh/ubi9/ubi-minimal/blobs/{}",
        server.url(),
        image.layer_digests[0]
    ))
    .await
    .unwrap();
    assert_eq!(
        r.bytes().await.unwrap(),
        image.layers[0],
        "the fill resumed and verified"
    );
    let (_, log) = server.stop();
    let cdn = fake.cdn_addr.to_string();
    assert!(
        json_lines(&log)
            .iter()
            .map(|v| v.to_string())
            .any(|s| s.contains("upstream request failed") && s.contains("\"body\"") && s.contains(&cdn)),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_lookaside_is_checked_and_a_missing_signature_is_normal() {
    let fake = FakeRedHat::start().await;
    let signed = fake.add_image("ubi9/ubi-minimal", "latest", &[100]);
    fake.add_image("ubi9/ubi-minimal", "unsigned", &[100]);
    // The lookaside has signature-1 of the signed image only.
    let wanted = format!(
        "/containers/sigstore/ubi9/ubi-minimal@{}/signature-1",
        signed.manifest_digest.replace(':', "=")
    );
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let found = uri.path() == wanted;
        async move {
            match found {
                true => (axum::http::StatusCode::OK, "signature bytes"),
                false => (axum::http::StatusCode::NOT_FOUND, ""),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lookaside = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}allow_redirect_hosts = [\"127.0.0.2\"]\nsigstore = \"http://{lookaside}/containers/sigstore\"\n",
        credentials(dir.path(), PASSWORD)
    );
    let config = write_config(dir.path(), &fake.registry_url, &extra);
    for (tag, expected) in [
        ("latest", "signature-1 fetched"),
        ("unsigned", "a 404 is normal for unsigned images"),
    ] {
        let config = config.clone();
        let image = format!("ubi9/ubi-minimal:{tag}");
        let (out, text) = tokio::task::spawn_blocking(move || doctor(&config, &["--image", &image]))
            .await
            .unwrap();
        assert_exit(&out, 0, &text);
        assert!(
            text.contains(&format!("PASS signature {lookaside}")) && text.contains(expected),
            "{tag}: {text}"
        );
    }
}
