//! Shared test harness: the fake Red Hat upstream, Debian's docker-registry and skopeo,
//! and helpers to run pullgate in-process or as a process against them.
#![allow(dead_code)]

pub mod browser;
pub mod fake_upstream;
pub mod forward_proxy;
pub mod garage;
pub mod lookaside;
pub mod openshift;
pub mod registry;
pub mod signing;
pub mod skopeo;
pub mod tls;

use fake_upstream::FakeRedHat;
use pullgate::app::RunningServer;
use pullgate::config::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

pub use fake_upstream::{PASSWORD, USERNAME};

/// A pullgate config for tests: listens on 127.0.0.1:0, data in `dir`, one upstream
/// named `registry.redhat.io` pointing at `upstream_url` with the fake's credentials,
/// redirects allowed to 127.0.0.2 (the fake CDN). `extra` is appended verbatim.
pub fn config_toml(dir: &Path, upstream_url: &str, extra_top: &str, extra_upstream: &str) -> String {
    let password_file = dir.join("registry-token");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("write password file");
    format!(
        r#"listen = "127.0.0.1:0"
data_dir = "{data}"
{extra_top}

[[upstream]]
name = "registry.redhat.io"
url = "{upstream_url}"
username = "{USERNAME}"
password_file = "{pw}"
allow_redirect_hosts = ["127.0.0.2"]
response_timeout = "5s"
body_idle_timeout = "5s"
{extra_upstream}
"#,
        data = dir.join("data").display(),
        pw = password_file.display(),
    )
}

/// The fake upstream plus a pullgate in front of it.
pub struct Harness {
    pub fake: FakeRedHat,
    pub server: Option<RunningServer>,
    pub dir: TempDir,
    pub config: Config,
    pub client: reqwest::Client,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with("", "").await
    }

    /// Starts the fake and pullgate; `extra_top` goes before `[[upstream]]` (e.g. a
    /// `[cache]` table), `extra_upstream` inside it.
    pub async fn start_with(extra_top: &str, extra_upstream: &str) -> Harness {
        let fake = FakeRedHat::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = config_toml(dir.path(), &fake.registry_url, extra_top, extra_upstream);
        let config = Config::from_toml_str(&toml).expect("valid test config");
        let server = pullgate::app::spawn(&config).await.expect("pullgate starts");
        Harness {
            fake,
            server: Some(server),
            dir,
            config,
            client: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.as_ref().expect("server running").url())
    }

    pub fn proxy(&self) -> &pullgate::proxy::Proxy {
        &self.server.as_ref().expect("server running").proxy
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request to pullgate")
    }

    /// Stops pullgate (drain + flush) and starts it again on the same data directory.
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        // sled releases its lock when the last handle drops; give background work a moment.
        let mut last_err = String::new();
        for _ in 0..50 {
            match pullgate::app::spawn(&self.config).await {
                Ok(s) => {
                    self.server = Some(s);
                    return;
                }
                Err(e) => last_err = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("pullgate did not restart: {last_err}");
    }
}

/// A client that never follows redirects (pullgate must not send any).
pub fn client() -> reqwest::Client {
    pullgate::upstream::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Reads a whole body; `Err` when the transfer was cut or errored.
pub async fn body_bytes(resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut resp = resp;
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c),
            Ok(None) => return Ok(out),
            Err(e) => return Err(format!("{e}")),
        }
    }
}

/// The `/metrics` exposition of the pullgate at `url`.
pub async fn metrics_text(url: &str) -> String {
    client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The sum of the series of metric `name` (that name exactly) whose labels hold every one
/// of `labels` (`key="value"` fragments), read from `/metrics` text; `None` when no series
/// matches.
pub fn metric_in(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| labels.iter().all(|fragment| l.contains(fragment)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Parses an OCI error body and returns its first code.
pub async fn error_code(resp: reqwest::Response) -> String {
    let body = resp.bytes().await.expect("error body");
    let v: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("error body is JSON: {}", String::from_utf8_lossy(&body)));
    v["errors"][0]["code"].as_str().expect("errors[0].code").to_string()
}

/// Waits until `proxy` runs no fill (clients get the verified bytes before a fill has
/// published, so tests that look at published state wait for this), or fails after 30 s.
pub async fn fills_settle(proxy: &pullgate::proxy::Proxy) {
    tokio::time::timeout(Duration::from_secs(30), proxy.fills_idle())
        .await
        .expect("running fills finished within 30 s");
}

/// Waits until `check` answers true (asked every 50 ms), or fails after `timeout`
/// naming `what` it waited for.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn pullgate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pullgate"))
}

/// Sends `GET <path>` exactly as written (no client-side normalisation) and returns
/// the status and body.
pub async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: pullgate\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Parses a JSON body.
pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    let bytes = resp.bytes().await.expect("body");
    serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("JSON body, got {}", String::from_utf8_lossy(&bytes)))
}

/// `pullgate serve` as a real process, with its stderr captured line by line.
pub struct ServeProcess {
    pub child: std::process::Child,
    /// `127.0.0.1:PORT` as pullgate printed it.
    pub addr: String,
    pub scheme: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeProcess {
    pub fn start(config: &Path, extra_args: &[&str]) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(pullgate_bin())
            .args(["serve", "--config"])
            .arg(config)
            .args(extra_args)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn pullgate");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(i) = line.find("listening on ") {
                    let rest = &line[i + "listening on ".len()..];
                    let url = rest
                        .split(|c: char| c.is_whitespace() || c == '"')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send(url);
                    sent = true;
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("pullgate printed its address");
        let (scheme, addr) = url.split_once("://").expect("scheme://addr");
        ServeProcess {
            child,
            addr: addr.to_string(),
            scheme: scheme.to_string(),
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// SIGTERM (unless it has exited already), then waits for the exit status.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        if self.child.try_wait().unwrap().is_none() {
            self.signal("TERM");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50)); // let the reader drain stderr
                return (s, self.log.lock().unwrap().clone());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pullgate did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics if any log line holds one of `secrets`.
pub fn assert_no_secrets(lines: &[String], secrets: &[&str]) {
    for line in lines {
        for secret in secrets {
            assert!(
                !line.contains(secret),
                "a secret ({secret:?}) appears in a log line: {line}"
            );
        }
    }
}

/// Runs `pullgate <args>` to completion.
pub fn pullgate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(pullgate_bin())
        .args(args)
        .output()
        .expect("run pullgate")
}

/// Asserts that a response did not deliver a complete, clean body: either the status is
/// an error (the fill failed before headers went out) or the body ends with an error.
pub async fn assert_not_delivered(resp: reqwest::Response) {
    let status = resp.status();
    if status.is_success() {
        let body = body_bytes(resp).await;
        assert!(
            body.is_err(),
            "a {status} body with bad bytes must end with an error, got {} clean bytes",
            body.map(|b| b.len()).unwrap_or(0)
        );
    } else {
        assert_eq!(status, 502, "a failed fill before the headers is a 502");
    }
}

/// A tiny tmpfs for full-disk tests (mounting needs root, as CI runs), unmounted on drop.
/// Fields: the mount point, and the temp dir holding it (removed after the unmount).
/// The status `/readyz` of the pullgate at `base` answers.
pub async fn readyz(client: &reqwest::Client, base: &str) -> u16 {
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

pub struct SmallDisk(pub PathBuf, pub TempDir);

impl SmallDisk {
    pub fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(mnt, dir)
    }
}

impl SmallDisk {
    /// Fills the disk to its last page with a ballast file, returned for removal.
    pub fn fill_up(&self) -> PathBuf {
        let ballast = self.0.join("ballast");
        for bs in ["64k", "4k"] {
            let _ = std::process::Command::new("dd")
                .args(["if=/dev/zero", &format!("bs={bs}"), "oflag=append", "conv=notrunc"])
                .arg(format!("of={}", ballast.display()))
                .output();
        }
        ballast
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Opens a cache again after its previous handle was dropped. Tasks winding down (client
/// streams, sled's background I/O threads) can hold the database's file lock for a
/// moment after the last handle goes, which a restarted process never sees; a lock error
/// is retried for up to 5 s.
pub async fn reopen_cache(
    data_dir: &Path,
    store: impl Into<pullgate::cache::StoreSettings> + Clone,
) -> (pullgate::cache::Cache, pullgate::cache::RepairReport) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match pullgate::cache::Cache::open(data_dir, store.clone()) {
            Ok(opened) => return opened,
            // A handle of this process (a winding-down stream) still holds the lock.
            Err(pullgate::cache::CacheError::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("reopening the cache: {e}"),
        }
    }
}
