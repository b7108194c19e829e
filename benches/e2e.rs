//! End-to-end benchmark against distribution's proxy mode, outside the test suite:
//! `cargo bench --bench e2e`. Everything runs on loopback, in one temp dir:
//!
//! * **upstream**: Debian's `docker-registry` (distribution 2.8) with filesystem storage
//!   and its `redirect` storage middleware, so blob GETs answer 307 to a "CDN":
//! * **CDN**: `nginx` on 127.0.0.2 (`sendfile on`) whose root is the registry's storage
//!   root, so the redirect paths (`/docker/registry/v2/blobs/sha256/xx/<hex>/data`)
//!   resolve; its access log counts the CDN fetches of each blob;
//! * **pullgate** (this package's release binary), once with the `files` blob store and
//!   once with `sled`, with the CDN in `allow_redirect_hosts`;
//! * **distribution in proxy mode**: a second `docker-registry` with `proxy: remoteurl`;
//! * **nginx direct**: the same nginx serving the blob file (the sendfile limit).
//!
//! The upstream is seeded with one blob (512 MiB; `PULLGATE_E2E_BLOB_MIB`), a config blob
//! and an OCI manifest tagged `latest`. Measured: cold GET by 1 and by 8 clients (each on a
//! freshly started proxy with an empty cache, interleaved over the proxies for
//! `PULLGATE_E2E_COLD_ROUNDS` rounds, default 3, medians) with the CDN and registry
//! fetches they caused; warm GET by 1 client, interleaved over the proxies and nginx
//! (`PULLGATE_E2E_ROUNDS`, default 5, medians), and by 8 clients; manifest GET by tag and
//! by digest with 64 connections (`PULLGATE_E2E_CONNECTIONS`) for 5 s
//! (`PULLGATE_E2E_LOAD_SECS`), driven by `wrk`; peak RSS of each proxy. Blob clients are
//! minimal blocking HTTP/1.1 readers (1 MiB reads, length checked), the same for every
//! target. Prints a Markdown table and PASS/FAIL per target, and writes the same as JSON
//! to `target/bench-e2e.json`.
//!
//! Missing `docker-registry`, `nginx` or `wrk` are installed with `apt-get` (root). Every process
//! started here is killed and the temp dir removed on exit, on panic and on Ctrl-C.

#[path = "support/e2e_cluster.rs"]
mod cluster;
#[path = "../tests/common/garage.rs"]
#[allow(dead_code)]
mod garage;
#[path = "support/e2e_shared_store.rs"]
mod shared_store;
mod support;
#[path = "../tests/common/tls.rs"]
mod tls;
#[path = "support/e2e_tls.rs"]
mod tls_phase;

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const REPO: &str = "bench";
const MIB: u64 = 1 << 20;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";
const CDN_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

// ---------------------------------------------------------------------------
// HTTP clients and measurements
// ---------------------------------------------------------------------------

/// One client = one kept-alive connection; never follows redirects (a proxy that answered
/// with one would fail the status check instead of being measured as the CDN).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("build reqwest client")
}

/// How long a blob client waits for the next bytes before it calls the target stuck.
const STALLED_TARGET: Duration = Duration::from_secs(60);

/// A blob client as cheap as a client can be, so the servers rather than the client are
/// what is measured: one kept-alive HTTP/1.1 connection, blocking reads into a 1 MiB
/// buffer, bytes counted and the length checked against `Content-Length` (every server
/// here sends one; a response without it fails loudly). The same client for every target;
/// `https://` URLs speak TLS (rustls) trusting what [`trust_for_blob_clients`] was given.
struct BlobClient {
    host: String,
    tls: bool,
    stream: Option<Box<dyn Connection>>,
    buf: Vec<u8>,
}

trait Connection: std::io::Read + Write + Send {}
impl<T: std::io::Read + Write + Send> Connection for T {}

/// The TLS client configuration of the blob clients (phase `tls`).
static BLOB_CLIENT_TLS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();

/// Blob clients on `https://` URLs trust the CA `ca_pem`.
fn trust_for_blob_clients(ca_pem: &str) {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = BLOB_CLIENT_TLS.set(Arc::new(config));
}

impl BlobClient {
    fn new(url: &str) -> BlobClient {
        let (tls, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, Some(rest)),
            None => (false, url.strip_prefix("http://")),
        };
        let host = rest
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("bench URLs are http(s)://host:port/...: {url}"))
            .to_string();
        BlobClient {
            host,
            tls,
            stream: None,
            buf: vec![0; MIB as usize],
        }
    }

    fn connect(&mut self) -> &mut Box<dyn Connection> {
        if self.stream.is_none() {
            let s = std::net::TcpStream::connect(&self.host).unwrap_or_else(|e| panic!("connect {}: {e}", self.host));
            s.set_nodelay(true).expect("TCP_NODELAY");
            // A target that stops sending fails the run loudly (the read errors out)
            // instead of holding the bench, and an A/B run, for ever.
            s.set_read_timeout(Some(STALLED_TARGET)).expect("SO_RCVTIMEO");
            let stream: Box<dyn Connection> = if self.tls {
                let config = BLOB_CLIENT_TLS.get().expect("trust_for_blob_clients first").clone();
                let ip = self.host.rsplit_once(':').map_or(self.host.as_str(), |(h, _)| h);
                let name = rustls::pki_types::ServerName::try_from(ip.to_string()).expect("server name");
                let conn = rustls::ClientConnection::new(config, name).expect("TLS client");
                Box::new(rustls::StreamOwned::new(conn, s))
            } else {
                Box::new(s)
            };
            self.stream = Some(stream);
        }
        self.stream.as_mut().expect("connected")
    }

    /// GETs `url` and reads the whole body; the elapsed time from sending the request to
    /// the last byte.
    fn fetch(&mut self, url: &str, expect: u64) -> Duration {
        use std::io::Read;
        let path = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .and_then(|r| r.find('/').map(|i| &r[i..]))
            .unwrap_or("/")
            .to_string();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pullgate-e2e\r\n\r\n",
            self.host
        );
        let t = Instant::now();
        self.connect().write_all(request.as_bytes()).expect("send request");
        // The head: read until the blank line; whatever follows it is body.
        let mut head = Vec::with_capacity(1024);
        let body_start = loop {
            let n = self
                .stream
                .as_mut()
                .expect("connected")
                .read(&mut self.buf)
                .expect("read head");
            assert!(n > 0, "GET {url}: connection closed before the response head");
            head.extend_from_slice(&self.buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(head.len() < 64 * 1024, "GET {url}: response head too long");
        };
        let text = String::from_utf8_lossy(&head[..body_start]).to_string();
        let status = text.split_whitespace().nth(1).unwrap_or("");
        assert_eq!(status, "200", "GET {url}: {}", text.lines().next().unwrap_or(""));
        let length: u64 = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("GET {url}: no Content-Length in\n{text}"));
        assert_eq!(length, expect, "GET {url}: Content-Length");
        let mut got = (head.len() - body_start) as u64;
        let stream = self.stream.as_mut().expect("connected");
        while got < length {
            let n = stream
                .read(&mut self.buf)
                .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
            assert!(n > 0, "GET {url}: body ended after {got} of {length} bytes");
            got += n as u64;
        }
        assert_eq!(got, expect, "GET {url}: body length");
        t.elapsed()
    }
}

/// A cold GET by `clients` at once (one client: one fresh connection), timed, with the
/// peak RSS of `pid` meanwhile.
async fn cold_get(url: &str, clients: usize, size: u64, pid: u32) -> (Duration, u64) {
    let sampler = RssSampler::start(vec![pid]);
    let took = if clients == 1 {
        fetch(url, size).await
    } else {
        fetch_concurrent(url, clients, size).await
    };
    (took, sampler.finish()[0])
}

/// Warm GET figures of several targets, measured side by side.
struct WarmFigures {
    /// GB/s of each timed round, by target: one client.
    one: Vec<Vec<f64>>,
    one_peak_rss_kib: Vec<u64>,
    /// CPU seconds the target used per GB over its timed one-client rounds (`None` for a
    /// pid of 0).
    one_server_cpu_s_per_gb: Vec<Option<f64>>,
    /// The one client's CPU time over the wall time of its timed rounds, by target: near
    /// 1.0, the client is what limits (it copies every byte out of the socket).
    one_client_busy: Vec<f64>,
    /// GB/s aggregate of each of 3 rounds, by target: `clients` at once.
    many: Vec<Vec<f64>>,
    many_peak_rss_kib: Vec<u64>,
}

impl WarmFigures {
    /// Target `i`'s figures as they go into the results JSON.
    fn json(&self, i: usize) -> Value {
        json!({
            "warm_1_gbps_median": median(self.one[i].clone()), "warm_1_gbps": self.one[i],
            "warm_1_peak_rss_kib": self.one_peak_rss_kib[i],
            "warm_1_server_cpu_s_per_gb": self.one_server_cpu_s_per_gb[i],
            "warm_1_client_busy": self.one_client_busy[i],
            "warm_8_gbps_median": median(self.many[i].clone()), "warm_8_gbps": self.many[i],
            "warm_8_peak_rss_kib": self.many_peak_rss_kib[i],
        })
    }
}

/// Warm GET of each `(url, pid)`: one client, interleaved A B C … for `rounds` timed
/// rounds after one untimed; then `clients` at once, interleaved, 3 rounds. Peak RSS of
/// each pid is sampled meanwhile (a pid of 0 is not sampled), and over the timed
/// one-client rounds each pid's CPU and the client thread's.
async fn warm_gets(targets: &[(String, u32)], size: u64, rounds: usize, clients: usize) -> WarmFigures {
    let sampler = RssSampler::start(targets.iter().map(|t| t.1).collect());
    let urls: Vec<String> = targets.iter().map(|t| t.0.clone()).collect();
    let pids: Vec<u32> = targets.iter().map(|t| t.1).collect();
    let (one, server_cpu, client_cpu, wall) = tokio::task::spawn_blocking(move || {
        // One kept-alive client per target, as a browser-less puller would have.
        let mut conns: Vec<BlobClient> = urls.iter().map(|u| BlobClient::new(u)).collect();
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); urls.len()];
        let (mut server_cpu, mut client_cpu, mut wall) =
            (vec![0.0; urls.len()], vec![0.0; urls.len()], vec![0.0; urls.len()]);
        for round in 0..=rounds {
            for (i, url) in urls.iter().enumerate() {
                let (server_before, client_before) = (cpu_seconds(pids[i]), thread_cpu_seconds());
                let d = conns[i].fetch(url, size);
                if round > 0 {
                    samples[i].push(gbps(size, d));
                    server_cpu[i] += cpu_seconds(pids[i]) - server_before;
                    client_cpu[i] += thread_cpu_seconds() - client_before;
                    wall[i] += d.as_secs_f64();
                }
            }
        }
        (samples, server_cpu, client_cpu, wall)
    })
    .await
    .expect("warm rounds");
    let one_peak_rss_kib = sampler.finish();
    let timed_gb = rounds as f64 * size as f64 / 1e9;
    let one_server_cpu_s_per_gb = (0..targets.len())
        .map(|i| (targets[i].1 != 0).then(|| server_cpu[i] / timed_gb))
        .collect();
    let one_client_busy = (0..targets.len()).map(|i| client_cpu[i] / wall[i]).collect();
    let mut many: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut many_peak_rss_kib = vec![0u64; targets.len()];
    for _ in 0..3 {
        for (i, (url, pid)) in targets.iter().enumerate() {
            let sampler = RssSampler::start(vec![*pid]);
            let d = fetch_concurrent(url, clients, size).await;
            many_peak_rss_kib[i] = many_peak_rss_kib[i].max(sampler.finish()[0]);
            many[i].push(gbps(clients as u64 * size, d));
        }
    }
    WarmFigures {
        one,
        one_peak_rss_kib,
        one_server_cpu_s_per_gb,
        one_client_busy,
        many,
        many_peak_rss_kib,
    }
}

/// One GET on a fresh connection (its own thread).
async fn fetch(url: &str, expect: u64) -> Duration {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || BlobClient::new(&url).fetch(&url, expect))
        .await
        .expect("client thread")
}

/// `n` clients GET `url` at once (each on its own connection and thread, released by a
/// barrier); the wall time until the last one has its last byte.
async fn fetch_concurrent(url: &str, n: usize, expect: u64) -> Duration {
    fetch_spread(vec![url.to_string()], n, expect).await
}

/// `n` clients at once spread round-robin over `urls` (each on its own connection and
/// thread, released by a barrier); the wall time until the last one has its last byte.
async fn fetch_spread(urls: Vec<String>, n: usize, expect: u64) -> Duration {
    tokio::task::spawn_blocking(move || {
        let barrier = Arc::new(std::sync::Barrier::new(n + 1));
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (url, barrier) = (urls[i % urls.len()].clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut c = BlobClient::new(&url);
                    c.connect();
                    barrier.wait();
                    c.fetch(&url, expect)
                })
            })
            .collect();
        barrier.wait();
        let t = Instant::now();
        for thread in threads {
            thread.join().expect("client thread");
        }
        t.elapsed()
    })
    .await
    .expect("clients")
}

/// `conns` connections GET `url` (a manifest) in a closed loop for `secs`, driven by
/// `wrk` (`--latency`) with one thread: one core drives the load, the other is left to
/// the server under test (with two wrk threads the load generator preempts the server on
/// this 2-core machine and its own scheduling shows up as server latency). Requests/s
/// and the latency percentiles wrk reports. Errors are non-2xx answers plus socket errors.
async fn load(url: &str, conns: usize, secs: f64) -> LoadResult {
    let out = Command::new("wrk")
        .args(["-t1", "--latency", "-c"])
        .arg(conns.to_string())
        .arg("-d")
        .arg(format!("{}s", secs.ceil() as u64))
        .arg("-H")
        .arg(format!("Accept: {MANIFEST_ACCEPT}"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text).unwrap_or_else(|| panic!("could not read wrk's output:\n{text}"))
}

// ---------------------------------------------------------------------------
// The processes
// ---------------------------------------------------------------------------

/// The `storage:` driver section of a registry keeping its data in `dir`.
fn filesystem_storage(dir: &Path) -> String {
    format!("  filesystem:\n    rootdirectory: {}\n", dir.display())
}

fn registry_config(driver: &str, port: u16, (http, extra): (&str, &str), accesslog: bool) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: {disabled}\n\
         storage:\n{driver}  delete:\n    enabled: true\n\
         \x20 cache:\n    blobdescriptor: inmemory\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: pullgate-e2e-bench\n{http}\
         {extra}",
        disabled = !accesslog,
    )
}

/// `docker-registry serve` on a free 127.0.0.1 port, storing in `<dir>/storage`; its
/// stdout (access log) and stderr go to `<dir>/registry.log`. Waits for `GET /v2/` → 200.
async fn start_registry(dir: &Path, name: &str, extra: &str, accesslog: bool) -> (Proc, String) {
    let storage = dir.join("storage");
    fs::create_dir_all(&storage).expect("registry storage dir");
    start_registry_on(dir, name, &filesystem_storage(&storage), extra, accesslog).await
}

/// `docker-registry serve` with the given storage driver section.
async fn start_registry_on(dir: &Path, name: &str, driver: &str, extra: &str, accesslog: bool) -> (Proc, String) {
    start_registry_full(dir, name, driver, ("", extra), accesslog).await
}

/// [`start_registry_on`] with more of its `http:` section (`tls:`: then it serves
/// `https://`), no access log.
async fn start_registry_with(dir: &Path, name: &str, driver: &str, http: &str, extra: &str) -> (Proc, String) {
    start_registry_full(dir, name, driver, (http, extra), false).await
}

async fn start_registry_full(
    dir: &Path,
    name: &str,
    driver: &str,
    (http, extra): (&str, &str),
    accesslog: bool,
) -> (Proc, String) {
    let scheme = if http.contains("tls:") { "https" } else { "http" };
    // Its readiness only: the certificate is checked by the blob clients.
    let probe = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("probe client");
    for attempt in 1..=3 {
        let port = free_port(Ipv4Addr::LOCALHOST);
        let config = dir.join(format!("config-{attempt}.yml"));
        fs::write(&config, registry_config(driver, port, (http, extra), accesslog)).expect("write registry config");
        let log_path = dir.join("registry.log");
        let log = fs::File::create(&log_path).expect("registry log");
        let mut cmd = Command::new("/usr/bin/docker-registry");
        cmd.arg("serve")
            .arg(&config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        for (key, _) in std::env::vars_os() {
            // Its own configuration only: no REGISTRY_* overrides, and no AWS_* settings
            // of this machine for its S3 driver (an AWS_CA_BUNDLE makes it panic).
            let key_text = key.to_string_lossy();
            if key_text.starts_with("REGISTRY_") || key_text.starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        let mut proc = Proc::spawn(name, &mut cmd, false, log_path);
        let url = format!("{scheme}://127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if !matches!(proc.child.try_wait(), Ok(None)) {
                break;
            }
            if let Ok(r) = probe.get(format!("{url}/v2/")).send().await
                && r.status().as_u16() == 200
            {
                return (proc, url);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "e2e: {name} attempt {attempt} on port {port} did not come up:\n{}",
            proc.log_text()
        );
        proc.stop();
    }
    panic!("e2e: {name} did not start");
}

/// nginx as the CDN: one process (`master_process off`), `sendfile on`, root = the
/// upstream registry's storage root, access log in `dir`.
async fn start_nginx(dir: &Path, root: &Path) -> (Proc, u16, PathBuf) {
    fs::create_dir_all(dir.join("tmp")).expect("nginx dirs");
    let access_log = dir.join("access.log");
    for attempt in 1..=3 {
        let port = free_port(CDN_IP);
        let conf = dir.join("nginx.conf");
        let d = dir.display();
        fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log warn;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n\
                 \x20 access_log {log};\n\
                 \x20 sendfile on;\n  tcp_nopush on;\n  keepalive_requests 100000;\n\
                 \x20 default_type application/octet-stream;\n\
                 \x20 client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
                 \x20 fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
                 \x20 server {{\n    listen {ip}:{port};\n    root {root};\n    location / {{ }}\n  }}\n}}\n",
                log = access_log.display(),
                ip = CDN_IP,
                root = root.display(),
            ),
        )
        .expect("write nginx.conf");
        let log_path = dir.join("stderr.log");
        let log = fs::File::create(&log_path).expect("nginx log");
        let mut cmd = Command::new("/usr/sbin/nginx");
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let mut proc = Proc::spawn("nginx", &mut cmd, false, log_path);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && matches!(proc.child.try_wait(), Ok(None)) {
            if std::net::TcpStream::connect((CDN_IP, port)).is_ok() {
                return (proc, port, access_log);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "e2e: nginx attempt {attempt} on {CDN_IP}:{port} did not come up:\n{}{}",
            proc.log_text(),
            fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        proc.stop();
    }
    panic!("e2e: nginx did not start");
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    PullgateFiles,
    PullgateSled,
    Distribution,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::PullgateFiles => "pullgate_files",
            Kind::PullgateSled => "pullgate_sled",
            Kind::Distribution => "distribution",
        }
    }
}

/// A proxy under test, freshly started with an empty cache.
struct ProxyUnderTest {
    kind: Kind,
    base: String,
    /// The repository as clients name it through this proxy.
    repo_path: String,
    dir: PathBuf,
    proc: Proc,
}

impl ProxyUnderTest {
    /// The proxy `(proc, base)` of `kind`, in `dir`.
    fn new(kind: Kind, (proc, base): (Proc, String), dir: PathBuf) -> ProxyUnderTest {
        let repo_path = match kind {
            Kind::Distribution => REPO.to_string(),
            Kind::PullgateFiles | Kind::PullgateSled => format!("up/{REPO}"),
        };
        ProxyUnderTest {
            kind,
            base,
            repo_path,
            dir,
            proc,
        }
    }

    fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.repo_path)
    }

    fn manifest_url(&self, reference: &str) -> String {
        format!("{}/v2/{}/manifests/{reference}", self.base, self.repo_path)
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Waits until the proxy holds the whole blob locally (distribution stores it from a
    /// background fetch that may outlive the client's response).
    async fn wait_stored(&self, hex: &str, size: u64) {
        if self.kind != Kind::Distribution {
            return;
        }
        let data = self.dir.join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ));
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until {
            if fs::metadata(&data).map(|m| m.len() == size).unwrap_or(false) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("distribution never stored the blob in {}", data.display());
    }
}

async fn start_proxy(kind: Kind, root: &Path, n: usize, upstream: &str) -> ProxyUnderTest {
    let dir = root.join(format!("{}-{n}", kind.key()));
    fs::create_dir_all(&dir).expect("proxy dir");
    match kind {
        Kind::Distribution => {
            let started = start_registry(
                &dir,
                "distribution (proxy)",
                &format!("proxy:\n  remoteurl: {upstream}\n"),
                false,
            )
            .await;
            ProxyUnderTest::new(kind, started, dir)
        }
        Kind::PullgateFiles | Kind::PullgateSled => {
            let store = if kind == Kind::PullgateFiles { "files" } else { "sled" };
            let cache = format!("[cache]\nblob_store = \"{store}\"\n");
            let started = start_pullgate(&dir, &format!("pullgate ({store})"), upstream, &cache);
            ProxyUnderTest::new(kind, started, dir)
        }
    }
}

/// `pullgate serve` in `dir` with the `[cache]` section given, proxying `upstream` as
/// `up`; its log goes to `<dir>/pullgate.log`. Returns it and its base URL.
fn start_pullgate(dir: &Path, name: &str, upstream: &str, cache: &str) -> (Proc, String) {
    start_pullgate_on(dir, name, upstream, "127.0.0.1:0", cache)
}

/// [`start_pullgate`] listening on `listen`, with `tables` (`[cache]` and others).
fn start_pullgate_on(dir: &Path, name: &str, upstream: &str, listen: &str, cache: &str) -> (Proc, String) {
    let config = dir.join("pullgate.toml");
    fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\ndata_dir = \"{data}\"\n\n{cache}\n\
             [[upstream]]\nname = \"up\"\nurl = \"{upstream}\"\nallow_redirect_hosts = [\"{CDN_IP}\"]\n",
            data = dir.join("data").display(),
        ),
    )
    .expect("write pullgate.toml");
    let log_path = dir.join("pullgate.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pullgate"));
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env("PULLGATE_LOG", "warn,pullgate::server=info,pullgate::audit=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn(name, &mut cmd, true, log_path.clone());
    let stderr = proc.child.stderr.take().expect("pullgate stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut log = fs::File::create(&log_path).ok();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on ") {
                let url = line[i + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("");
                let _ = tx.send(url.to_string());
            }
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{name} did not say where it listens:\n{}", proc.log_text()));
    (proc, url)
}

// ---------------------------------------------------------------------------
// Seeding the upstream
// ---------------------------------------------------------------------------

/// A repeating 1 MiB pseudo-random pattern (xorshift64*) with the block index and a
/// per-run nonce stamped at the start of every MiB, so every run's digest is unique.
struct Pattern {
    block: Vec<u8>,
    nonce: u64,
}

impl Pattern {
    fn new(nonce: u64) -> Pattern {
        let mut x = nonce | 1;
        let mut block = Vec::with_capacity(MIB as usize);
        while block.len() < MIB as usize {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            block.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        Pattern { block, nonce }
    }

    fn mib(&self, i: u64) -> Vec<u8> {
        let mut b = self.block.clone();
        b[..8].copy_from_slice(&i.to_le_bytes());
        b[8..16].copy_from_slice(&self.nonce.to_le_bytes());
        b
    }
}

/// Monolithic upload: POST /blobs/uploads/, then PUT <location>&digest= with the body.
async fn push_blob(c: &reqwest::Client, registry: &str, digest: &str, len: u64, body: reqwest::Body) {
    let resp = c
        .post(format!("{registry}/v2/{REPO}/blobs/uploads/"))
        .header(CONTENT_LENGTH, "0")
        .send()
        .await
        .expect("start upload");
    assert_eq!(resp.status().as_u16(), 202, "POST blobs/uploads/");
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("upload Location")
        .to_string();
    let location = if location.starts_with('/') {
        format!("{registry}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let resp = c
        .put(format!("{location}{sep}digest={digest}"))
        .header(CONTENT_LENGTH, len.to_string())
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("PUT upload");
    let status = resp.status().as_u16();
    assert_eq!(
        status,
        201,
        "PUT upload of {digest}: {}",
        resp.text().await.unwrap_or_default()
    );
}

struct Seeded {
    digest: String,
    hex: String,
    size: u64,
    manifest_digest: String,
    /// The blob's first MiB, to check what the CDN serves.
    first_mib: Vec<u8>,
}

async fn seed(registry: &str, dir: &Path, size_mib: u64) -> Seeded {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let pattern = Pattern::new(nonce);
    let t = Instant::now();
    let file = dir.join("blob.bin");
    let mut hasher = Sha256::new();
    {
        let mut w = std::io::BufWriter::with_capacity(MIB as usize, fs::File::create(&file).expect("create seed file"));
        for i in 0..size_mib {
            let b = pattern.mib(i);
            hasher.update(&b);
            w.write_all(&b).expect("write seed file");
        }
        w.flush().expect("flush seed file");
    }
    let hex = hex::encode(hasher.finalize());
    let digest = format!("sha256:{hex}");
    let size = size_mib * MIB;
    eprintln!(
        "e2e: generated a {size_mib} MiB blob in {:.1} s: {digest}",
        t.elapsed().as_secs_f64()
    );

    let c = reqwest::Client::builder().no_proxy().build().expect("client");
    let t = Instant::now();
    let f = tokio::fs::File::open(&file).await.expect("open seed file");
    let stream = tokio_util::io::ReaderStream::with_capacity(f, MIB as usize);
    push_blob(&c, registry, &digest, size, reqwest::Body::wrap_stream(stream)).await;
    let _ = fs::remove_file(&file);
    eprintln!("e2e: pushed it to the upstream in {:.1} s", t.elapsed().as_secs_f64());

    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest]},
    }))
    .expect("config json");
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    push_blob(&c, registry, &config_digest, config.len() as u64, config.clone().into()).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest, "size": size}],
    }))
    .expect("manifest json");
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
    let resp = c
        .put(format!("{registry}/v2/{REPO}/manifests/latest"))
        .header(CONTENT_TYPE, OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(
        resp.status().as_u16(),
        201,
        "PUT manifest: {}",
        resp.text().await.unwrap_or_default()
    );
    Seeded {
        digest,
        hex,
        size,
        manifest_digest,
        first_mib: pattern.mib(0),
    }
}

/// The redirect chain: the registry answers a blob GET with a redirect to nginx on
/// 127.0.0.2 at the storage path, and nginx serves the stored bytes.
async fn verify_redirect_chain(registry: &str, cdn_port: u16, s: &Seeded) -> (u16, String) {
    let c = client();
    let resp = c
        .get(format!("{registry}/v2/{REPO}/blobs/{}", s.digest))
        .send()
        .await
        .expect("GET blob from the upstream");
    let status = resp.status().as_u16();
    assert!(
        resp.status().is_redirection(),
        "upstream blob GET answered {status}, not a redirect"
    );
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_string();
    let expected = format!(
        "http://{CDN_IP}:{cdn_port}/docker/registry/v2/blobs/sha256/{}/{}/data",
        &s.hex[..2],
        s.hex
    );
    assert_eq!(location, expected, "redirect target");
    let resp = c
        .get(&location)
        .header(RANGE, format!("bytes=0-{}", MIB - 1))
        .send()
        .await
        .expect("GET from nginx");
    assert_eq!(resp.status().as_u16(), 206, "nginx range GET");
    let range = resp
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(range, format!("bytes 0-{}/{}", MIB - 1, s.size), "nginx Content-Range");
    let body = resp.bytes().await.expect("nginx body");
    assert!(
        body.as_ref() == s.first_mib.as_slice(),
        "nginx served other bytes than were pushed"
    );
    (status, location)
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

/// Appends a `| what | a | b | a/b |` row to `out`; the ratio.
fn push_row(out: &mut String, what: &str, (a, b): (Option<f64>, Option<f64>), decimals: usize) -> Option<f64> {
    let r = ratio(a, b);
    out.push_str(&format!(
        "| {what} | {} | {} | {} |\n",
        fmt(a, decimals),
        fmt(b, decimals),
        r.map_or("–".into(), |v| format!("{v:.2}×"))
    ));
    r
}

/// Appends the targets' table to `out`, prints it and a PASS/FAIL line per target;
/// the targets as JSON.
fn print_targets(mut out: String, who: &str, targets: &[(String, String, bool)]) -> Value {
    out.push_str(&format!("\n| target | {who} | result |\n|---|---|---|\n"));
    for (name, value, pass) in targets {
        out.push_str(&format!(
            "| {name} | {value} | {} |\n",
            if *pass { "PASS" } else { "FAIL" }
        ));
    }
    println!("{out}");
    for (name, value, pass) in targets {
        println!("{} {name}: {value}", if *pass { "PASS" } else { "FAIL" });
    }
    Value::Array(
        targets
            .iter()
            .map(|(n, v, p)| json!({"target": n, "value": v, "pass": p}))
            .collect(),
    )
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".to_string(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        cleanup_on_signals();
        run().await;
    });
}

/// Whether a phase runs: all of them unless `PULLGATE_E2E_ONLY` lists some
/// (`cold`, `warm`, `manifests`, `s3`, `cluster`, `tls`, comma-separated; cold runs with warm or
/// manifests, which use the proxies it leaves). For iterating on one part; the full run
/// is what the targets use.
fn phase(name: &str) -> bool {
    match std::env::var("PULLGATE_E2E_ONLY") {
        Ok(list) => list.split(',').any(|p| p.trim() == name),
        Err(_) => true,
    }
}

async fn run() {
    let size_mib = env_num("PULLGATE_E2E_BLOB_MIB", 512).max(1);
    let rounds = env_num("PULLGATE_E2E_ROUNDS", 5).max(1) as usize;
    let cold_rounds = env_num("PULLGATE_E2E_COLD_ROUNDS", 3).max(1) as usize;
    let conns = env_num("PULLGATE_E2E_CONNECTIONS", 64).max(1) as usize;
    let load_secs = env_num("PULLGATE_E2E_LOAD_SECS", 5).max(1) as f64;
    const CLIENTS: usize = 8;

    ensure_installed("/usr/bin/docker-registry", "docker-registry");
    ensure_installed("/usr/sbin/nginx", "nginx");
    ensure_installed("/usr/bin/wrk", "wrk");

    // Created first, dropped last: every process below is stopped before it goes.
    let scratch = Scratch::new("pullgate-e2e-");
    let root = scratch.path().to_path_buf();
    eprintln!("e2e: working in {}", root.display());

    // Upstream: registry + CDN.
    let upstream_dir = root.join("upstream");
    let upstream_storage = upstream_dir.join("storage");
    fs::create_dir_all(&upstream_storage).expect("upstream storage");
    let (nginx, cdn_port, cdn_log) = start_nginx(&root.join("nginx"), &upstream_storage).await;
    let (upstream, upstream_url) = start_registry(
        &upstream_dir,
        "docker-registry (upstream)",
        &format!("middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: http://{CDN_IP}:{cdn_port}/\n"),
        true,
    )
    .await;
    let registry_log = upstream.log.clone();
    eprintln!("e2e: upstream {upstream_url}, CDN http://{CDN_IP}:{cdn_port}");

    let seeded = seed(&upstream_url, &root, size_mib).await;
    let (redirect_status, redirect_location) = verify_redirect_chain(&upstream_url, cdn_port, &seeded).await;
    eprintln!(
        "e2e: redirect chain ok: registry blob GET → {redirect_status} {redirect_location} → nginx 206 with the pushed bytes"
    );

    let size = seeded.size;
    let cdn_path = format!(
        "/docker/registry/v2/blobs/sha256/{}/{}/data",
        &seeded.hex[..2],
        seeded.hex
    );
    let cdn_needle = format!("\"GET {cdn_path} ");
    let reg_get = format!("\"GET /v2/{REPO}/blobs/{} ", seeded.digest);
    let reg_head = format!("\"HEAD /v2/{REPO}/blobs/{} ", seeded.digest);
    let counts = || {
        (
            count_lines(&cdn_log, &cdn_needle),
            count_lines(&registry_log, &reg_get),
            count_lines(&registry_log, &reg_head),
        )
    };

    let mut results = serde_json::Map::new();
    let kinds = [Kind::PullgateFiles, Kind::PullgateSled, Kind::Distribution];
    let mut warm: Vec<ProxyUnderTest> = Vec::new();
    let mut n = 0;

    // Cold GETs: every measurement on a freshly started proxy with an empty cache,
    // interleaved over the proxies for `cold_rounds` rounds (medians). The proxies of the
    // last round's 8-client measurement stay up for the warm measurements.
    let mut cold: Vec<(Vec<Value>, Vec<Value>)> = vec![(Vec::new(), Vec::new()); kinds.len()];
    let local_rounds = if phase("cold") || phase("warm") || phase("manifests") {
        cold_rounds
    } else {
        0
    };
    for round in 0..local_rounds {
        for (k, kind) in kinds.into_iter().enumerate() {
            for clients in [1, CLIENTS] {
                n += 1;
                let mut p = start_proxy(kind, &root, n, &upstream_url).await;
                let before = counts();
                let (d, rss) = cold_get(&p.blob_url(&seeded.digest), clients, size, p.pid()).await;
                p.wait_stored(&seeded.hex, size).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let after = counts();
                let fills = if kind == Kind::Distribution {
                    Value::Null
                } else {
                    json!(count_lines(&p.proc.log, "egress"))
                };
                let bytes = clients as u64 * size;
                eprintln!(
                    "e2e: {:<15} cold GET, {clients} client(s), round {}: {:.2} GB/s ({:.2} s), CDN fetches {}, registry GETs {}",
                    kind.key(),
                    round + 1,
                    gbps(bytes, d),
                    d.as_secs_f64(),
                    after.0 - before.0,
                    after.1 - before.1
                );
                let sample = json!({
                    "seconds": d.as_secs_f64(), "gbps": gbps(bytes, d),
                    "cdn_fetches": after.0 - before.0, "registry_gets": after.1 - before.1, "registry_heads": after.2 - before.2,
                    "pullgate_egress_lines": fills,
                    "peak_rss_kib": rss,
                });
                if clients == 1 {
                    cold[k].0.push(sample);
                } else {
                    cold[k].1.push(sample);
                }
                if clients == CLIENTS && round + 1 == cold_rounds {
                    warm.push(p);
                } else {
                    p.proc.stop();
                    let _ = fs::remove_dir_all(&p.dir);
                }
            }
        }
    }
    for (k, kind) in kinds.into_iter().enumerate().filter(|_| local_rounds > 0) {
        let (one, eight) = &cold[k];
        results.insert(
            kind.key().into(),
            json!({"cold_1": summarize_cold(one), "cold_8": summarize_cold(eight)}),
        );
    }

    if phase("warm") && local_rounds > 0 {
        // Warm GET, one client, interleaved A B C D … (one untimed round first).
        let cdn_url = format!("http://{CDN_IP}:{cdn_port}{cdn_path}");
        let mut targets: Vec<(String, String, Option<u32>)> = warm
            .iter()
            .map(|p| (p.kind.key().to_string(), p.blob_url(&seeded.digest), Some(p.pid())))
            .collect();
        targets.insert(2, ("nginx".to_string(), cdn_url.clone(), Some(nginx.pid())));
        let warm_of: Vec<(String, u32)> = targets.iter().map(|t| (t.1.clone(), t.2.unwrap_or(0))).collect();
        let figures = warm_gets(&warm_of, size, rounds, CLIENTS).await;
        for (i, (name, _, _)) in targets.iter().enumerate() {
            eprintln!(
                "e2e: {name:<15} warm GET, 1 client: median {:.2} GB/s of {:?} (server {} CPU s per GB, client busy {:.2}); {CLIENTS} clients: median {:.2} GB/s aggregate",
                median(figures.one[i].clone()),
                figures.one[i].iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>(),
                figures.one_server_cpu_s_per_gb[i].map_or("–".into(), |v| format!("{v:.2}")),
                figures.one_client_busy[i],
                median(figures.many[i].clone())
            );
            let entry = figures.json(i);
            match results.get_mut(name.as_str()).and_then(|v| v.as_object_mut()) {
                Some(o) => o.extend(entry.as_object().cloned().unwrap_or_default()),
                None => {
                    results.insert(name.clone(), entry);
                }
            }
        }
    }
    if phase("manifests") && local_rounds > 0 {
        // Manifest GETs under load: pullgate (files) and distribution, by tag then by digest.
        let manifest_needle = format!(" /v2/{REPO}/manifests/");
        for p in warm.iter().filter(|p| p.kind != Kind::PullgateSled) {
            let mut entry = serde_json::Map::new();
            for (what, reference) in [("tag", "latest"), ("digest", seeded.manifest_digest.as_str())] {
                let url = p.manifest_url(reference);
                let c = client();
                let r = c
                    .get(&url)
                    .header(ACCEPT, MANIFEST_ACCEPT)
                    .send()
                    .await
                    .expect("manifest GET");
                assert_eq!(r.status().as_u16(), 200, "GET {url}");
                let body = r.bytes().await.expect("manifest body");
                assert_eq!(
                    format!("sha256:{}", sha256_hex(&body)),
                    seeded.manifest_digest,
                    "manifest bytes through {}",
                    p.kind.key()
                );
                let upstream_before = count_lines(&registry_log, &manifest_needle);
                let sampler = RssSampler::start(vec![p.pid()]);
                let l = load(&url, conns, load_secs).await;
                let rss = sampler.finish()[0];
                let upstream_requests = count_lines(&registry_log, &manifest_needle) - upstream_before;
                eprintln!(
                    "e2e: {:<15} manifest by {what}, {conns} connections: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, {upstream_requests} upstream manifest requests",
                    p.kind.key(),
                    l.rps,
                    l.p50_ms,
                    l.p99_ms,
                    l.errors
                );
                entry.insert(format!("manifest_{what}"), {
                    let mut v = l.json();
                    v["upstream_manifest_requests"] = json!(upstream_requests);
                    v["peak_rss_kib"] = json!(rss);
                    v
                });
            }
            if let Some(o) = results.get_mut(p.kind.key()).and_then(|v| v.as_object_mut()) {
                o.extend(entry);
            }
        }

        // The limit for manifests: nginx serving the same manifest bytes as a static file
        // (distribution stores them as a blob, so the CDN root has them), same load.
        {
            let hex = seeded.manifest_digest.trim_start_matches("sha256:");
            let url = format!(
                "http://{CDN_IP}:{cdn_port}/docker/registry/v2/blobs/sha256/{}/{hex}/data",
                &hex[..2]
            );
            let l = load(&url, conns, load_secs).await;
            eprintln!(
                "e2e: {:<15} manifest bytes as a static file, {conns} connections: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                "nginx", l.rps, l.p50_ms, l.p99_ms, l.errors
            );
            // (The warm phase, when it ran, made nginx's entry; AB_PHASES=manifests did not.)
            if let Some(o) = results.entry("nginx").or_insert_with(|| json!({})).as_object_mut() {
                o.insert("manifest_digest".into(), l.json());
            }
        }
    }
    // VmHWM of each long-lived proxy (the instance that served cold 8, warm and manifests).
    for p in &warm {
        let hwm = status_kib(p.pid(), "VmHWM:");
        if let Some(o) = results.get_mut(p.kind.key()).and_then(|v| v.as_object_mut()) {
            o.insert("vmhwm_kib".into(), json!(hwm));
        }
    }
    for mut p in warm.drain(..) {
        p.proc.stop();
    }
    let up = || shared_store::Upstream {
        url: &upstream_url,
        digest: &seeded.digest,
        hex: &seeded.hex,
        size,
        counts: &counts,
    };
    if phase("s3") {
        let shared = shared_store::run(&root, up(), cold_rounds, rounds, CLIENTS).await;
        results.insert("shared_store".into(), shared);
    }
    if phase("cluster") {
        let fleet = cluster::run(&root, up(), cold_rounds, CLIENTS).await;
        results.insert("cluster".into(), fleet);
    }
    if phase("tls") {
        let over_tls = tls_phase::run(&root, up(), cold_rounds, rounds, CLIENTS).await;
        results.insert("tls".into(), over_tls);
    }
    drop(upstream);
    drop(nginx);

    report(
        &results,
        size,
        (cold_rounds, rounds),
        conns,
        load_secs,
        redirect_status,
        CLIENTS,
    );
    drop(scratch);
}

/// The median of the cold samples' throughput, with every sample kept, and the largest
/// fetch counts and RSS seen in any round (one extra upstream fetch in any round shows).
fn summarize_cold(samples: &[Value]) -> Value {
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let max = |k: &str| samples.iter().map(|v| num(v, k)).fold(0.0, f64::max);
    let gbps: Vec<f64> = samples.iter().map(|v| num(v, "gbps")).collect();
    let seconds: Vec<f64> = samples.iter().map(|v| num(v, "seconds")).collect();
    json!({
        "gbps": median(gbps.clone()), "gbps_samples": gbps,
        "seconds": median(seconds),
        "cdn_fetches": max("cdn_fetches"), "registry_gets": max("registry_gets"), "registry_heads": max("registry_heads"),
        "peak_rss_kib": max("peak_rss_kib"),
        "samples": samples,
    })
}

fn report(
    results: &serde_json::Map<String, Value>,
    size: u64,
    (cold_rounds, rounds): (usize, usize),
    conns: usize,
    load_secs: f64,
    redirect_status: u16,
    clients: usize,
) {
    let get = |who: &str, path: &str| -> Option<f64> {
        let mut v = results.get(who)?;
        for k in path.split('.') {
            v = v.get(k)?;
        }
        v.as_f64()
    };
    let mib = |v: Option<f64>| v.map(|k| k / 1024.0);
    let peak8 = |who: &str| -> Option<f64> {
        match (get(who, "cold_8.peak_rss_kib"), get(who, "warm_8_peak_rss_kib")) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    };
    struct Row {
        what: String,
        decimals: usize,
        pg: Option<f64>,
        sled: Option<f64>,
        dist: Option<f64>,
        nginx: Option<f64>,
    }
    let row = |what: &str, path: &str, decimals: usize, f: &dyn Fn(Option<f64>) -> Option<f64>| Row {
        what: what.to_string(),
        decimals,
        pg: f(get("pullgate_files", path)),
        sled: f(get("pullgate_sled", path)),
        dist: f(get("distribution", path)),
        nginx: f(get("nginx", path)),
    };
    let id = |v: Option<f64>| v;
    let rows = vec![
        row(
            &format!("cold GET, 1 client, median of {cold_rounds} (GB/s)"),
            "cold_1.gbps",
            2,
            &id,
        ),
        row("cold GET, 1 client: CDN fetches", "cold_1.cdn_fetches", 0, &id),
        row(
            &format!("cold GET, {clients} clients, aggregate, median of {cold_rounds} (GB/s)"),
            "cold_8.gbps",
            2,
            &id,
        ),
        row(
            &format!("cold GET, {clients} clients: CDN fetches (nginx log)"),
            "cold_8.cdn_fetches",
            0,
            &id,
        ),
        row(
            &format!("cold GET, {clients} clients: registry blob GETs"),
            "cold_8.registry_gets",
            0,
            &id,
        ),
        row(
            &format!("warm GET, 1 client, median of {rounds} (GB/s)"),
            "warm_1_gbps_median",
            2,
            &id,
        ),
        row(
            "warm GET, 1 client: server CPU s per GB",
            "warm_1_server_cpu_s_per_gb",
            2,
            &id,
        ),
        row(
            "warm GET, 1 client: the client's CPU / wall time",
            "warm_1_client_busy",
            2,
            &id,
        ),
        row(
            &format!("warm GET, {clients} clients, aggregate, median of 3 (GB/s)"),
            "warm_8_gbps_median",
            2,
            &id,
        ),
        row(
            &format!("manifest by tag, {conns} conns (req/s)"),
            "manifest_tag.rps",
            0,
            &id,
        ),
        row("manifest by tag, p99 (ms)", "manifest_tag.p99_ms", 2, &id),
        row(
            "manifest by tag: upstream manifest requests",
            "manifest_tag.upstream_manifest_requests",
            0,
            &id,
        ),
        row(
            &format!("manifest by digest, {conns} conns (req/s)"),
            "manifest_digest.rps",
            0,
            &id,
        ),
        row("manifest by digest, p99 (ms)", "manifest_digest.p99_ms", 2, &id),
        row("peak RSS, cold 1 client (MiB)", "cold_1.peak_rss_kib", 0, &mib),
        row(
            &format!("peak RSS, cold {clients} clients (MiB)"),
            "cold_8.peak_rss_kib",
            0,
            &mib,
        ),
        row(
            &format!("peak RSS, warm {clients} clients (MiB)"),
            "warm_8_peak_rss_kib",
            0,
            &mib,
        ),
        row("VmHWM at the end (MiB)", "vmhwm_kib", 0, &mib),
    ];
    let mut out = String::new();
    out.push_str(&format!(
        "\nblob {} MiB; warm 1-client medians of {rounds} interleaved rounds; manifest load {conns} connections × {load_secs} s\n\n",
        size / MIB
    ));
    out.push_str("| measurement | pullgate (files) | pullgate (sled) | distribution proxy | nginx direct | pullgate/distribution | pullgate/nginx |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    let mut table = Vec::new();
    for r in &rows {
        let rd = ratio(r.pg, r.dist);
        let rn = ratio(r.pg, r.nginx);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.what,
            fmt(r.pg, r.decimals),
            fmt(r.sled, r.decimals),
            fmt(r.dist, r.decimals),
            fmt(r.nginx, r.decimals),
            rd.map_or("–".into(), |v| format!("{v:.2}×")),
            rn.map_or("–".into(), |v| format!("{v:.2}×")),
        ));
        table.push(
            json!({"measurement": r.what, "pullgate_files": r.pg, "pullgate_sled": r.sled, "distribution": r.dist,
            "nginx": r.nginx, "pullgate_over_distribution": rd, "pullgate_over_nginx": rn}),
        );
    }

    let pg = |p: &str| get("pullgate_files", p);
    let dist = |p: &str| get("distribution", p);
    let ngx = |p: &str| get("nginx", p);
    let check = |name: String, value: String, pass: bool| (name, value, pass);
    let r = |a: Option<f64>, b: Option<f64>| ratio(a, b).unwrap_or(f64::NAN);
    let targets = vec![
        check(
            "cold GET, 1 client ≥ 1.5× distribution".into(),
            format!("{:.2}×", r(pg("cold_1.gbps"), dist("cold_1.gbps"))),
            r(pg("cold_1.gbps"), dist("cold_1.gbps")) >= 1.5,
        ),
        check(
            format!("cold GET, {clients} clients: exactly 1 upstream fetch"),
            format!(
                "{} CDN, {} registry GETs",
                fmt(pg("cold_8.cdn_fetches"), 0),
                fmt(pg("cold_8.registry_gets"), 0)
            ),
            pg("cold_8.cdn_fetches") == Some(1.0) && pg("cold_8.registry_gets") == Some(1.0),
        ),
        check(
            format!("cold GET, {clients} clients, aggregate ≥ 2.5× distribution"),
            format!("{:.2}×", r(pg("cold_8.gbps"), dist("cold_8.gbps"))),
            r(pg("cold_8.gbps"), dist("cold_8.gbps")) >= 2.5,
        ),
        check(
            "warm GET, 1 client ≥ 1.0× distribution".into(),
            format!("{:.2}×", r(pg("warm_1_gbps_median"), dist("warm_1_gbps_median"))),
            r(pg("warm_1_gbps_median"), dist("warm_1_gbps_median")) >= 1.0,
        ),
        check(
            "warm GET, 1 client ≥ 0.9× nginx".into(),
            format!("{:.2}×", r(pg("warm_1_gbps_median"), ngx("warm_1_gbps_median"))),
            r(pg("warm_1_gbps_median"), ngx("warm_1_gbps_median")) >= 0.9,
        ),
        check(
            format!("warm GET, {clients} clients ≥ 1.0× distribution"),
            format!("{:.2}×", r(pg("warm_8_gbps_median"), dist("warm_8_gbps_median"))),
            r(pg("warm_8_gbps_median"), dist("warm_8_gbps_median")) >= 1.0,
        ),
        check(
            "manifest by tag ≥ 3× distribution's req/s".into(),
            format!("{:.2}×", r(pg("manifest_tag.rps"), dist("manifest_tag.rps"))),
            r(pg("manifest_tag.rps"), dist("manifest_tag.rps")) >= 3.0,
        ),
        check(
            format!("manifest by digest p99 ≤ 2 ms at {conns} connections"),
            format!("{} ms", fmt(pg("manifest_digest.p99_ms"), 2)),
            pg("manifest_digest.p99_ms").is_some_and(|v| v <= 2.0),
        ),
        check(
            format!(
                "pullgate peak RSS ≤ 128 MiB serving {clients} clients the {} MiB blob",
                size / MIB
            ),
            format!("{} MiB", fmt(mib(peak8("pullgate_files")), 0)),
            mib(peak8("pullgate_files")).is_some_and(|v| v <= 128.0),
        ),
    ];
    out.push_str("\n| target | pullgate (files) | result |\n|---|---|---|\n");
    for (name, value, pass) in &targets {
        out.push_str(&format!(
            "| {name} | {value} | {} |\n",
            if *pass { "PASS" } else { "FAIL" }
        ));
    }
    // A run of the shared-store or cluster phase alone (PULLGATE_E2E_ONLY=s3,cluster) has no local figures
    // to judge: its own table was printed by the phase.
    let local_run = results.contains_key(Kind::PullgateFiles.key());
    let targets = if local_run { targets } else { Vec::new() };
    if local_run {
        println!("{out}");
    }
    for (name, value, pass) in &targets {
        println!("{} {name}: {value}", if *pass { "PASS" } else { "FAIL" });
    }

    let date = Command::new("date")
        .args(["-u", "+%FT%TZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let doc = json!({
        "date": date,
        "machine": {"cores": cores, "network": "loopback"},
        "blob_bytes": size,
        "clients": clients,
        "warm_rounds": rounds,
        "manifest_connections": conns,
        "manifest_seconds": load_secs,
        "upstream_redirect_status": redirect_status,
        "results": results,
        "table": table,
        "targets": targets.iter().map(|(n, v, p)| json!({"target": n, "value": v, "pass": p})).collect::<Vec<_>>(),
    });
    // target/ of this build: the bench binary is target/<profile>/deps/e2e-<hash>.
    let target_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(Path::to_path_buf))
        .filter(|p| p.file_name().is_some())
        .unwrap_or_else(|| PathBuf::from("target"));
    let path = target_dir.join("bench-e2e.json");
    match fs::write(&path, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => eprintln!("e2e: cannot write {}: {e}", path.display()),
    }
}
