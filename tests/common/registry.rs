#![allow(dead_code)]
//! Real-client interop harness: [`DockerRegistry`], Debian's `docker-registry` (CNCF
//! distribution 2.8) started on a free loopback port with filesystem storage in a
//! tempdir, plus helpers that seed it through the registry HTTP API (blobs, manifests,
//! multi-arch OCI indexes and Docker manifest lists built from real, uncompressed tar
//! layers). The `skopeo` client is in `skopeo.rs`.
//!
//! Missing tools make tests panic loudly ([`require_tool`]); nothing is ever
//! skipped silently. Everything talks to 127.0.0.1 only.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Accept header listing every manifest type the seeding helpers produce.
pub const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Platforms seeded into every multi-arch image: (architecture, variant).
pub const PLATFORMS: [(&str, Option<&str>); 2] = [("amd64", None), ("arm64", Some("v8"))];

const START_ATTEMPTS: u32 = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const IDENTITY_HEADER: &str = "x-pullgate-harness";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Finds `name` on PATH or in the usual system directories; panics with an
/// install hint when it is missing (tests must never silently skip).
pub fn require_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(
        ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"]
            .iter()
            .map(PathBuf::from),
    );
    for dir in dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    // The Debian packages are named after the tools (skopeo, docker-registry).
    let package = name;
    panic!(
        "\n\n*** required tool `{name}` was not found on PATH nor in /usr/bin, /usr/sbin ***\n\
         *** the interop tests need it; install it with:                            ***\n\
         ***     apt-get install -y {package}\n\n"
    );
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A process-unique string (pid, time, counter); used as seed salt and as
/// the identity token of each started registry.
pub fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port on 127.0.0.1 that was free a moment ago (bind :0, read, drop).
pub fn pick_free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

fn http_client() -> reqwest::Client {
    // pullgate builds reqwest with `rustls-no-provider`: building a Client
    // panics unless a process-wide crypto provider is installed (only plain
    // http is used here, but the TLS config is built anyway). Losing the
    // race to another installer is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build reqwest client")
}

// ---------------------------------------------------------------------------
// Tar layers
// ---------------------------------------------------------------------------

/// Builds an uncompressed ustar archive in memory holding regular files
/// (`path`, `content`): 512-byte headers with correct checksums, content
/// padded to 512 bytes, two zero blocks at the end.
pub fn build_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, content) in files {
        out.extend_from_slice(&ustar_header(path, content.len() as u64));
        out.extend_from_slice(content);
        let pad = (512 - content.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn ustar_header(path: &str, size: u64) -> [u8; 512] {
    assert!(
        !path.is_empty() && path.len() < 100,
        "tar path must be 1..=99 bytes: {path:?}"
    );
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path.as_bytes());
    put_octal(&mut h[100..108], 0o644); // mode
    put_octal(&mut h[108..116], 0); // uid
    put_octal(&mut h[116..124], 0); // gid
    put_octal(&mut h[124..136], size); // size
    put_octal(&mut h[136..148], 1_700_000_000); // mtime
    h[148..156].fill(b' '); // checksum placeholder
    h[156] = b'0'; // regular file
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root"); // uname
    h[297..301].copy_from_slice(b"root"); // gname
    put_octal(&mut h[329..337], 0); // devmajor
    put_octal(&mut h[337..345], 0); // devminor
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    assert_eq!(text.len(), width, "value {value} does not fit the tar field");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

/// Deterministic pseudo-random bytes (sha256 chain over `seed`).
fn filler(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------
// docker-registry
// ---------------------------------------------------------------------------

/// Which media-type family a seeded multi-arch image uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexFlavor {
    /// OCI image index / OCI image manifests.
    Oci,
    /// Docker manifest list / Docker schema2 manifests.
    Docker,
}

impl IndexFlavor {
    pub fn index_type(self) -> &'static str {
        match self {
            IndexFlavor::Oci => OCI_INDEX,
            IndexFlavor::Docker => DOCKER_LIST,
        }
    }
    pub fn manifest_type(self) -> &'static str {
        match self {
            IndexFlavor::Oci => OCI_MANIFEST,
            IndexFlavor::Docker => DOCKER_MANIFEST,
        }
    }
    pub fn config_type(self) -> &'static str {
        match self {
            IndexFlavor::Oci => OCI_CONFIG,
            IndexFlavor::Docker => DOCKER_CONFIG,
        }
    }
    pub fn layer_type(self) -> &'static str {
        match self {
            IndexFlavor::Oci => OCI_LAYER_TAR,
            IndexFlavor::Docker => DOCKER_LAYER_TAR,
        }
    }
}

/// What a `push_*_index`/`push_docker_list` call stored in the registry.
#[derive(Clone, Debug)]
pub struct SeededIndex {
    /// Digest of the index / manifest list (`sha256:...`).
    pub digest: String,
    /// Exact bytes of the index / manifest list as pushed.
    pub bytes: Vec<u8>,
    /// (digest, exact bytes) of each per-platform manifest, in index order.
    pub children: Vec<(String, Vec<u8>)>,
    /// Every config and layer blob digest referenced by the children.
    pub blobs: Vec<String>,
    /// Media type of the index itself.
    pub media_type: &'static str,
}

/// A running `docker-registry serve` on 127.0.0.1 (no auth, plain http,
/// filesystem storage in a tempdir). Killed and cleaned up on drop.
pub struct DockerRegistry {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
    child: Child,
    log_path: PathBuf,
    client: reqwest::Client,
    // Declared last: removed after the process is gone.
    tempdir: TempDir,
}

impl DockerRegistry {
    /// Starts docker-registry on a free loopback port and waits until
    /// `GET /v2/` answers 200 (from *this* process: every response carries
    /// a per-instance identity header configured via `http.headers`).
    pub async fn start() -> DockerRegistry {
        let bin = require_tool("docker-registry");
        let tempdir = tempfile::Builder::new()
            .prefix("pullgate-docker-registry-")
            .tempdir()
            .expect("create docker-registry tempdir");
        let storage = tempdir.path().join("storage");
        fs::create_dir_all(&storage).expect("create storage dir");
        let client = http_client();
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = pick_free_port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let url = format!("http://{addr}");
            let token = unique_token();
            let config_path = tempdir.path().join(format!("config-{attempt}.yml"));
            fs::write(&config_path, registry_config(&storage, addr, &token)).expect("write docker-registry config");
            let log_path = tempdir.path().join(format!("registry-{attempt}.log"));
            let log = fs::File::create(&log_path).expect("create registry log");
            let mut cmd = Command::new(&bin);
            cmd.arg("serve")
                .arg(&config_path)
                .current_dir(tempdir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log);
            // REGISTRY_* variables would override the config file.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(key);
                }
            }
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!("failed to spawn {} serve: {e}", bin.display());
            });
            match wait_ready(&client, &url, &token, &mut child).await {
                Ok(()) => {
                    return DockerRegistry {
                        url,
                        addr,
                        child,
                        log_path,
                        client,
                        tempdir,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    failures.push(format!(
                        "attempt {attempt} on {addr}: {why}\n--- registry log ---\n{log}"
                    ));
                }
            }
        }
        panic!(
            "docker-registry did not start after {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// Everything the registry process logged so far (level warn and up).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kills the registry now (e.g. to simulate an unreachable upstream).
    /// The storage stays until drop.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Filesystem storage root of this registry.
    pub fn storage_dir(&self) -> PathBuf {
        self.tempdir.path().join("storage")
    }

    fn resolve_location(&self, repo: &str, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.url)
        } else {
            format!("{}/v2/{repo}/blobs/uploads/{location}", self.url)
        }
    }

    /// Uploads `bytes` as a blob of `repo` (POST upload, then PUT with
    /// `?digest=`) and returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let start_url = format!("{}/v2/{repo}/blobs/uploads/", self.url);
        let resp = self
            .client
            .post(&start_url)
            .header(reqwest::header::CONTENT_LENGTH, "0")
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {start_url}: {e}"));
        let status = resp.status();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status.as_u16(), 202, "POST {start_url} -> {status}: {body}");
        let location = location.unwrap_or_else(|| panic!("POST {start_url}: 202 without Location"));
        let mut put_url = self.resolve_location(repo, &location);
        put_url.push(if put_url.contains('?') { '&' } else { '?' });
        put_url.push_str("digest=");
        put_url.push_str(&digest.replace(':', "%3A"));
        let resp = self
            .client
            .put(&put_url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {put_url}: {e}"));
        let status = resp.status();
        let returned = header_string(&resp, "docker-content-digest");
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status.as_u16(), 201, "PUT {put_url} -> {status}: {body}");
        if let Some(returned) = returned {
            assert_eq!(returned, digest, "registry computed another blob digest");
        }
        digest
    }

    /// PUTs a manifest under `reference` (tag or digest) with Content-Type
    /// `media_type`; returns its digest.
    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.url);
        let resp = self
            .client
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        let status = resp.status();
        let returned = header_string(&resp, "docker-content-digest");
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status.as_u16(), 201, "PUT {url} ({media_type}) -> {status}: {body}");
        if let Some(returned) = returned {
            assert_eq!(returned, digest, "registry computed another manifest digest");
        }
        digest
    }

    /// GETs a manifest with [`ACCEPT_ALL_MANIFESTS`]; returns
    /// (status, Content-Type, body).
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> (u16, String, Vec<u8>) {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.url);
        let resp = self
            .client
            .get(&url)
            .header(reqwest::header::ACCEPT, ACCEPT_ALL_MANIFESTS)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        let content_type = header_string(&resp, "content-type").unwrap_or_default();
        let body = resp.bytes().await.expect("manifest body").to_vec();
        (status, content_type, body)
    }

    /// GETs a blob; returns (status, body).
    pub async fn get_blob(&self, repo: &str, digest: &str) -> (u16, Vec<u8>) {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.url);
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        let body = resp.bytes().await.expect("blob body").to_vec();
        (status, body)
    }

    /// Seeds `repo:tag` with an OCI image index of linux/amd64 and
    /// linux/arm64 images (fresh content on every call).
    pub async fn push_oci_index(&self, repo: &str, tag: &str) -> SeededIndex {
        self.push_multiarch(repo, tag, IndexFlavor::Oci, &unique_token()).await
    }

    /// A single-platform image: the linux/amd64 manifest of a seeded OCI index, tagged
    /// on its own as `repo:tag`. Returns its digest and bytes.
    pub async fn push_single_image(&self, repo: &str, tag: &str) -> (String, Vec<u8>) {
        let index = self.push_oci_index(repo, &format!("{tag}-index")).await;
        let (digest, bytes) = index.children[0].clone();
        self.push_manifest(repo, tag, OCI_MANIFEST, &bytes).await;
        (digest, bytes)
    }

    /// Same as [`Self::push_oci_index`] with Docker manifest-list media types.
    pub async fn push_docker_list(&self, repo: &str, tag: &str) -> SeededIndex {
        self.push_multiarch(repo, tag, IndexFlavor::Docker, &unique_token())
            .await
    }

    /// Seeds `repo:tag` with a two-platform index of `flavor`. Content is a
    /// pure function of (repo, tag, flavor, salt): the same salt reproduces
    /// the same digests.
    pub async fn push_multiarch(&self, repo: &str, tag: &str, flavor: IndexFlavor, salt: &str) -> SeededIndex {
        let mut children = Vec::new();
        let mut blobs = Vec::new();
        let mut index_entries = Vec::new();
        for (arch, variant) in PLATFORMS {
            let seed_text = format!(
                "pullgate interop seed\nrepo={repo}\ntag={tag}\nplatform=linux/{arch}\n\
                 flavor={flavor:?}\nsalt={salt}\n"
            );
            let payload = filler(&seed_text, 5000 + 700 * children.len());
            let layers = [
                build_tar(&[("etc/pullgate-seed.txt", seed_text.as_bytes())]),
                build_tar(&[
                    (&format!("usr/share/pullgate/{arch}.bin"), &payload),
                    ("usr/share/pullgate/README", seed_text.as_bytes()),
                ]),
            ];
            let mut layer_descs = Vec::new();
            let mut diff_ids = Vec::new();
            for layer in &layers {
                let digest = self.push_blob(repo, layer).await;
                diff_ids.push(digest.clone());
                layer_descs.push(json!({
                    "mediaType": flavor.layer_type(),
                    "digest": digest,
                    "size": layer.len(),
                }));
                push_unique(&mut blobs, digest);
            }
            let mut config = json!({
                "architecture": arch,
                "os": "linux",
                "created": "2024-01-01T00:00:00Z",
                "config": {
                    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                    "Cmd": ["/bin/sh"],
                    "Labels": {
                        "org.pullgate.seed.ref": format!("{repo}:{tag}"),
                        "org.pullgate.seed.salt": salt,
                    },
                },
                "rootfs": { "type": "layers", "diff_ids": diff_ids },
                "history": [
                    { "created": "2024-01-01T00:00:00Z", "created_by": "pullgate harness: seed" },
                    { "created": "2024-01-01T00:00:00Z", "created_by": "pullgate harness: payload" },
                ],
            });
            let mut platform = json!({ "architecture": arch, "os": "linux" });
            if let Some(variant) = variant {
                config["variant"] = json!(variant);
                platform["variant"] = json!(variant);
            }
            let config_bytes = serde_json::to_vec(&config).expect("serialize config");
            let config_digest = self.push_blob(repo, &config_bytes).await;
            push_unique(&mut blobs, config_digest.clone());
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": flavor.manifest_type(),
                "config": {
                    "mediaType": flavor.config_type(),
                    "digest": config_digest,
                    "size": config_bytes.len(),
                },
                "layers": layer_descs,
            });
            let manifest_bytes = serde_json::to_vec(&manifest).expect("serialize manifest");
            let digest = sha256_digest(&manifest_bytes);
            let pushed = self
                .push_manifest(repo, &digest, flavor.manifest_type(), &manifest_bytes)
                .await;
            assert_eq!(pushed, digest);
            index_entries.push(json!({
                "mediaType": flavor.manifest_type(),
                "digest": digest,
                "size": manifest_bytes.len(),
                "platform": platform,
            }));
            children.push((digest, manifest_bytes));
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": flavor.index_type(),
            "manifests": index_entries,
        });
        // Pretty-printed on purpose: a proxy that re-serializes instead of
        // passing bytes through changes the digest.
        let bytes = serde_json::to_vec_pretty(&index).expect("serialize index");
        let digest = self.push_manifest(repo, tag, flavor.index_type(), &bytes).await;
        SeededIndex {
            digest,
            bytes,
            children,
            blobs,
            media_type: flavor.index_type(),
        }
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn header_string(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub fn yaml_str(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::to_string(s).expect("quote string")
}

fn registry_config(storage: &Path, addr: SocketAddr, token: &str) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: false\n\
         \x20 cache:\n    blobdescriptor: inmemory\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: {secret}\n  headers:\n\
         \x20   X-Content-Type-Options: [nosniff]\n\
         \x20   X-Pullgate-Harness: [{token}]\n",
        root = yaml_str(&storage.to_string_lossy()),
        secret = yaml_str(token),
        token = yaml_str(token),
    )
}

async fn wait_ready(client: &reqwest::Client, url: &str, token: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let ping = format!("{url}/v2/");
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("docker-registry exited early with {status}"));
        }
        match client.get(&ping).timeout(Duration::from_secs(2)).send().await {
            Ok(resp) if resp.status().as_u16() == 200 => {
                return match header_string(&resp, IDENTITY_HEADER) {
                    Some(t) if t == token => Ok(()),
                    other => Err(format!(
                        "{ping} answered 200 but not from our process (identity {other:?})"
                    )),
                };
            }
            Ok(resp) => last = format!("GET {ping} -> {}", resp.status()),
            Err(e) => last = format!("GET {ping}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("not ready after {READY_TIMEOUT:?}: {last}"))
}
