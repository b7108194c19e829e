//! The operator's status page, in a real browser (headless chromium through
//! chromedriver): recent pulls, a slow fill's bar moving with two clients joined, the
//! CDN down under Egress with its phase and remedy, the doctor's hops as they finish,
//! and htpasswd keeping others out; its JSON API; its configuration. Screenshots of each
//! state go to `target/tmp/status-page/`.

mod common;

use common::browser::Browser;
use common::fake_upstream::FakeRedHat;
use pullgate::config::Config;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";

async fn start(fake: &FakeRedHat, dir: &std::path::Path, extra_top: &str) -> pullgate::app::RunningServer {
    let toml = common::config_toml(dir, &fake.registry_url, extra_top, "");
    let config = Config::from_toml_str(&toml).expect("valid config");
    pullgate::app::spawn(&config).await.expect("pullgate starts")
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `script` is true when the element `css` exists and its text contains `text`.
fn shows(css: &str, text: &str) -> String {
    format!(
        "const e = document.querySelector({}); return !!e && e.textContent.includes({});",
        serde_json::to_string(css).unwrap(),
        serde_json::to_string(text).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_shows_pulls_a_moving_fill_a_failing_cdn_and_the_doctor() {
    let fake = FakeRedHat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&fake, dir.path(), "").await;
    let base = server.url();
    let client = common::client();
    let browser = Browser::start().await;

    // A pull shows in recent pulls.
    let image = fake.add_image("ubi9/ubi", "latest", &[20_000]);
    let r = client
        .get(format!("{base}/v2/registry.redhat.io/ubi9/ubi/manifests/latest"))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let layer = format!("{base}/v2/registry.redhat.io/ubi9/ubi/blobs/{}", image.layer_digests[0]);
    assert_eq!(client.get(&layer).send().await.unwrap().status(), 200);
    browser.goto(&format!("{base}/status")).await;
    assert_eq!(browser.client.title().await.unwrap(), "pullgate status");
    browser
        .until(
            "the pulled repository in recent pulls",
            Duration::from_secs(10),
            &shows("#pulls-body", "registry.redhat.io/ubi9/ubi"),
        )
        .await;
    assert!(browser.text("#pulls-body").await.contains("latest"));
    assert!(browser.text("#top-body").await.contains("registry.redhat.io/ubi9/ubi"));
    browser.screenshot("1-recent-pulls").await;

    // A slow fill, two clients: one starts it, the other joins; its bar moves.
    let slow = fake.add_image("ubi9/slow", "latest", &[4 << 20]);
    fake.frame_delay_ms.store(150, SeqCst);
    let url = format!("{base}/v2/registry.redhat.io/ubi9/slow/blobs/{}", slow.layer_digests[0]);
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(&url).send().await.unwrap().bytes().await.unwrap() })
        })
        .collect();
    let row = "#fills-body tr[data-digest]";
    browser
        .until(
            "the fill with two clients joined",
            Duration::from_secs(15),
            &format!(
                "const r = document.querySelector('{row}'); return !!r && r.querySelector('.clients').textContent.trim() === '2';"
            ),
        )
        .await;
    let progress = format!("return Number(document.querySelector('{row} progress').value);");
    let first = browser.eval(&progress).await.as_f64().unwrap_or(0.0);
    browser.screenshot("2-fill-in-flight").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = browser.eval(&progress).await.as_f64().unwrap_or(0.0);
    assert!(later > first, "the bar moved: {first} then {later}");
    assert!(browser.text("#fills-body").await.contains("ubi9/slow"));
    fake.frame_delay_ms.store(0, SeqCst);
    for p in pulls {
        assert_eq!(p.await.unwrap(), slow.layers[0], "both clients got the blob");
    }
    browser
        .until(
            "no fill left",
            Duration::from_secs(10),
            &shows("#fills-body", "No fill is running."),
        )
        .await;

    // The CDN goes down: its host, the phase and the remedy show under Egress.
    let dead = closed_port();
    *fake.redirect_to.lock().unwrap() = Some(format!("http://127.0.0.2:{dead}"));
    let cold = fake.add_image("ubi9/cold", "latest", &[30_000]);
    let r = client
        .get(format!(
            "{base}/v2/registry.redhat.io/ubi9/cold/blobs/{}",
            cold.layer_digests[0]
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let host_row = format!("#egress tr[data-host='127.0.0.2:{dead}']");
    browser
        .until(
            "the CDN host failing",
            Duration::from_secs(10),
            &shows(&format!("{host_row} td.phase"), "connect"),
        )
        .await;
    let remedy = browser.text(&format!("{host_row} td.remedy")).await;
    assert!(remedy.contains("egress"), "{remedy}");
    assert!(
        browser
            .text(&format!("{host_row} td.cause"))
            .await
            .contains("connection refused")
    );
    browser.screenshot("3-cdn-down").await;

    // The doctor's walk, hop by hop.
    browser
        .client
        .find(fantoccini::Locator::Css("form.doctor button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until(
            "the walk's end",
            Duration::from_secs(20),
            &shows("#hops-0", "Every hop passed."),
        )
        .await;
    let hops = browser
        .eval("return document.querySelectorAll('#hops-0 li.passed').length;")
        .await;
    assert!(hops.as_u64().unwrap_or(0) >= 3, "hops listed: {hops}");
    browser.screenshot("4-doctor").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_parses_and_names_what_the_page_shows() {
    let fake = FakeRedHat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&fake, dir.path(), "[cache]\nmax_size = \"64MiB\"\n").await;
    let base = server.url();
    let client = common::client();
    let image = fake.add_image("ubi9/ubi", "latest", &[10_000]);
    let blob = format!("{base}/v2/registry.redhat.io/ubi9/ubi/blobs/{}", image.layer_digests[0]);
    let r = client.get(&blob).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 10_000);
    let get = |part: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client.get(format!("{base}/status/api/{part}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{part}");
            assert_eq!(r.headers()["content-type"], "application/json");
            serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap()
        }
    };
    // The fill's record lands just after its last byte went out.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let summary = loop {
        let summary = get("summary").await;
        if summary["cache"]["blobs"] == 1 || std::time::Instant::now() > deadline {
            break summary;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(summary["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(summary["cache"]["max_size_bytes"], 64 << 20);
    assert_eq!(summary["cache"]["blobs"], 1);
    assert!(summary["cache"]["usage_bytes"].as_u64().unwrap() >= 10_000);
    assert_eq!(summary["history"].as_array().unwrap().len(), 1, "the first minute");
    // The gauges of what max_size limits say what the page says; disk use is its own.
    let metrics = common::metrics_text(&base).await;
    let gauge = |name: &str| -> u64 {
        let value = common::metric_in(&metrics, name, &[]);
        value.unwrap_or_else(|| panic!("{name} in /metrics:\n{metrics}")) as u64
    };
    assert_eq!(gauge("pullgate_cache_max_size_bytes"), 64 << 20);
    assert_eq!(
        gauge("pullgate_cache_usage_bytes"),
        summary["cache"]["usage_bytes"].as_u64().unwrap()
    );
    assert!(gauge("pullgate_cache_size_bytes") >= 10_000, "disk use");
    assert!(get("fills").await.as_array().unwrap().is_empty());
    let egress = get("egress").await;
    assert_eq!(egress[0]["name"], "registry.redhat.io");
    let hosts = egress[0]["hosts"].as_array().unwrap();
    assert!(
        hosts
            .iter()
            .any(|h| h["role"] == "registry" && h["last_success_ms"].is_u64())
    );
    assert!(
        hosts
            .iter()
            .any(|h| h["host"].as_str().unwrap().starts_with("127.0.0.2:")),
        "the CDN: {hosts:?}"
    );
    common::eventually("the pull listed", Duration::from_secs(5), async || {
        get("pulls").await["recent"][0]["reference"] == image.layer_digests[0]
    })
    .await;
    let pulls = get("pulls").await;
    assert_eq!(pulls["recent"][0]["cache"], "miss");
    assert_eq!(pulls["recent"][0]["client"], "127.0.0.1");
    assert_eq!(pulls["top_last_hour"][0]["name"], "registry.redhat.io/ubi9/ubi");
    assert_eq!(get("fleet").await["clustered"], false);
    let r = client.get(format!("{base}/status/api/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // The page: no secret, no signed URL; assets only from itself.
    let page = client.get(format!("{base}/status")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains(common::PASSWORD) && !html.contains("Signature="),
        "{html}"
    );
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no asset from elsewhere"
    );
    // Browsers asking for `/` are sent to the page; registry clients are not.
    let r = client
        .get(format!("{base}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/status");
    let r = client.get(format!("{base}/")).send().await.unwrap();
    assert_ne!(r.status(), 303);
}

fn htpasswd(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("htpasswd");
    let line = |u: &str| format!("{u}:{}\n", bcrypt::hash(format!("{u}-pw"), 4).unwrap());
    std::fs::write(&path, line("alice") + &line("bob")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_keeps_the_page_to_its_users() {
    let fake = FakeRedHat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = htpasswd(dir.path());
    let top = format!(
        "[clients]\nhtpasswd = \"{}\"\n[status]\nusers = [\"alice\"]\n",
        file.display()
    );
    let server = start(&fake, dir.path(), &top).await;
    let base = server.url();
    let client = common::client();
    let status = |user: Option<&'static str>, path: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let mut req = client.get(format!("{base}{path}"));
            if let Some(u) = user {
                req = req.basic_auth(u, Some(format!("{u}-pw")));
            }
            req.send().await.unwrap()
        }
    };
    let r = status(None, "/status").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(status(None, "/status/api/summary").await.status(), 401);
    assert_eq!(status(Some("bob"), "/status").await.status(), 403);
    assert_eq!(status(Some("bob"), "/status/api/egress").await.status(), 403);
    assert_eq!(status(Some("bob"), "/v2/").await.status(), 200, "bob may pull");
    assert_eq!(status(Some("alice"), "/status").await.status(), 200);

    let browser = Browser::start().await;
    let port = server.addr.port();
    browser
        .goto(&format!("http://alice:alice-pw@127.0.0.1:{port}/status"))
        .await;
    assert_eq!(browser.client.title().await.unwrap(), "pullgate status");
    browser
        .until(
            "a refresh from the API with alice's credentials",
            Duration::from_secs(10),
            "return !!document.body.dataset.refreshed;",
        )
        .await;
    browser.screenshot("5-signed-in").await;
    browser
        .goto(&format!("http://bob:bob-pw@127.0.0.1:{port}/status"))
        .await;
    assert!(browser.text("body").await.contains("not one of [status] users"));
    browser.close().await;
}

#[tokio::test]
async fn the_status_configuration_is_checked() {
    let fake = FakeRedHat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = |top: &str| common::config_toml(dir.path(), &fake.registry_url, top, "");
    let e = Config::from_toml_str(&toml("[status]\nusers = [\"alice\"]\n")).unwrap_err();
    assert!(e.to_string().contains("status.users"), "{e}");
    let file = htpasswd(dir.path());
    let config = Config::from_toml_str(&toml(&format!(
        "[clients]\nhtpasswd = \"{}\"\n[status]\nusers = [\"carol\"]\n",
        file.display()
    )))
    .unwrap();
    let e = pullgate::app::spawn(&config)
        .await
        .err()
        .expect("carol is not an htpasswd user");
    assert!(
        e.to_string().contains("\"carol\" is not a user of [clients] htpasswd"),
        "{e}"
    );
    let server = start(&fake, dir.path(), "[status]\nenabled = false\n").await;
    let r = common::client()
        .get(format!("{}/status", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
