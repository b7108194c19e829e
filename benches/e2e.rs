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
//! to `target/bench-e2e.json`. `PULLGATE_E2E_SENDFILE=1` runs the local pullgates with
//! `[server] sendfile = true`, to weigh sendfile against the default copy.
//!
//! Missing `docker-registry`, `nginx` or `wrk` are installed with `apt-get` (root). Every process
//! started here is killed and the temp dir removed on exit, on panic and on Ctrl-C.

#[path = "support/e2e_clients.rs"]
mod clients;
#[path = "support/e2e_cluster.rs"]
mod cluster;
#[path = "../tests/common/garage.rs"]
#[allow(dead_code)]
mod garage;
#[path = "support/e2e_local.rs"]
mod local;
#[path = "support/e2e_report.rs"]
mod report;
#[path = "support/e2e_shared_store.rs"]
mod shared_store;
mod support;
#[path = "../tests/common/tls.rs"]
mod tls;
#[path = "support/e2e_tls.rs"]
mod tls_phase;

use clients::*;
use local::*;
use report::*;
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
/// Clients at once in the many-client measurements.
const CLIENTS: usize = 8;

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
            let mut cache = format!("[cache]\nblob_store = \"{store}\"\n");
            // Warm blobs by sendfile instead of the default copy, to measure the two on
            // the machine at hand (benches/README.md, "sendfile or copy").
            if std::env::var_os("PULLGATE_E2E_SENDFILE").is_some_and(|v| v == "1") {
                cache.push_str("[server]\nsendfile = true\n");
            }
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

    // Cold GETs; the proxies of the last round's 8-client measurement stay up for the
    // warm and manifest measurements.
    let local = phase("cold") || phase("warm") || phase("manifests");
    let warm = if local {
        let world = Local {
            root: &root,
            upstream_url: &upstream_url,
            seeded: &seeded,
            counts: &counts,
        };
        cold_phase(&mut results, &world, cold_rounds).await
    } else {
        Vec::new()
    };
    if phase("warm") && local {
        let cdn_url = format!("http://{CDN_IP}:{cdn_port}{cdn_path}");
        warm_phase(
            &mut results,
            &warm,
            (nginx.pid(), cdn_url),
            (&seeded.digest, size),
            rounds,
        )
        .await;
    }
    if phase("manifests") && local {
        manifest_phase(
            &mut results,
            &warm,
            &seeded,
            (&registry_log, cdn_port),
            (conns, load_secs),
        )
        .await;
    }
    stop_local(&mut results, warm);
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
