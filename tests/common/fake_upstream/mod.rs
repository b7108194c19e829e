//! In-process fake of `registry.redhat.io` and of the CDN its blob downloads
//! are redirected to, for integration tests.
//!
//! [`FakeRedHat::start`] binds two axum servers:
//!
//! * the **registry** on `127.0.0.1:<random port>`: `/v2/`, the Red Hat SSO
//!   token realm, manifests, blobs (answered with a 302 to the CDN), tag
//!   lists and a referrers endpoint that answers 404;
//! * the **CDN** on `127.0.0.2:<random port>` (a second loopback address, so
//!   that a client leaking credentials across hosts can be detected): signed,
//!   expiring `/sha256/<2>/<hex>?Expires=..&Signature=..` URLs, byte ranges,
//!   bodies streamed in 64 KiB frames.
//!
//! Everything about the fake lives in [`FakeState`] (shared as an `Arc`):
//! contents (blobs, manifests, tags), fault switches that tests may flip at
//! any time, and counters / request logs. [`FakeRedHat`] dereferences to
//! [`FakeState`], so `fake.wrong_bytes.store(true, SeqCst)` and
//! `fake.cdn_gets(&digest)` both work.
//!
//! The fault switches are *not* applied to the token realm: a test that
//! breaks the registry still gets tokens, only the `/v2/...` endpoints fail.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod cdn;
mod registry;
mod reply;
mod server;

use cdn::*;
use registry::*;
use reply::*;
use server::*;

/// Customer Portal registry service account user name accepted by the realm.
pub const USERNAME: &str = "12345678|pullgate";
/// Password (token) of [`USERNAME`].
pub const PASSWORD: &str = "s3cret-token";
/// Path of the token realm on the registry server.
pub const REALM_PATH: &str = "/auth/realms/rhcc/protocol/redhat-docker-v2/auth";
/// `service` named in the challenges.
pub const SERVICE: &str = "docker-registry";
/// Secret the registry signs CDN URLs with (see [`cdn_signature`]).
pub const CDN_SECRET: &str = "fake-cdn-signing-secret";
/// Size of the frames CDN bodies are streamed in.
pub const CDN_FRAME: usize = 64 * 1024;

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

const UNAUTHORIZED_BODY: &str =
    r#"{"errors":[{"code":"UNAUTHORIZED","message":"Access to the requested resource is not authorized"}]}"#;
/// Red Hat answers unknown manifests (and unknown paths) with this
/// non-compliant body: the code is not one of the distribution error codes.
const RH_NOT_FOUND_BODY: &str = r#"{"errors":[{"code":"404","message":"Not Found"}]}"#;
const REALM_UNAUTHORIZED_BODY: &str =
    "unauthorized: Please login to the Red Hat Registry using your Customer Portal credentials.";

/// One request to `/v2/<repo>/manifests/<reference>`, as seen by the registry
/// (recorded whatever the answer was, including 401 / 429 / 503).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRequest {
    /// `"GET"` or `"HEAD"` (or whatever else was sent).
    pub method: String,
    pub repo: String,
    /// Tag or digest, as in the path.
    pub reference: String,
    /// Every `Accept` header line, verbatim, in order.
    pub accept: Vec<String>,
    /// Status the fake answered with.
    pub status: u16,
    /// Whether an `Authorization` header was present.
    pub had_authorization: bool,
}

impl ManifestRequest {
    /// All media types accepted, over all `Accept` lines, split on `,`, with
    /// parameters (`;q=...`) removed.
    pub fn accept_types(&self) -> Vec<String> {
        self.accept
            .iter()
            .flat_map(|line| line.split(','))
            .map(|part| part.split(';').next().unwrap_or("").trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Whether `media_type` is among [`Self::accept_types`].
    pub fn accepts(&self, media_type: &str) -> bool {
        self.accept_types().iter().any(|t| t == media_type)
    }
}

/// One request to the registry server (token realm included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRequest {
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    pub status: u16,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// An image made by [`FakeState::add_image`] (or a child of a list).
#[derive(Clone, Debug)]
pub struct FakeImage {
    pub manifest_digest: String,
    pub manifest: Bytes,
    pub media_type: String,
    pub config_digest: String,
    pub config: Bytes,
    pub layer_digests: Vec<String>,
    pub layers: Vec<Bytes>,
}

/// A manifest list made by [`FakeState::add_docker_list`].
#[derive(Clone, Debug)]
pub struct FakeIndex {
    pub digest: String,
    pub bytes: Bytes,
    /// `("linux/amd64", digest)`, `("linux/arm64", digest)`.
    pub children: Vec<(String, String)>,
    /// The child images, in the same order as `children`.
    pub child_images: Vec<FakeImage>,
}

struct TokenInfo {
    serial: u64,
    scopes: Vec<String>,
    expires_at: Instant,
}

#[derive(Default)]
struct Data {
    /// digest -> bytes; global, any repository serves any blob.
    blobs: HashMap<String, Bytes>,
    /// repo -> digest -> (media type, bytes)
    manifests: HashMap<String, HashMap<String, (String, Bytes)>>,
    /// repo -> tag -> digest
    tags: HashMap<String, BTreeMap<String, String>>,
    tokens: HashMap<String, TokenInfo>,
}

#[derive(Default)]
struct Log {
    registry_requests: Vec<RegistryRequest>,
    registry_blob_gets: HashMap<String, usize>,
    registry_blob_redirects: HashMap<String, usize>,
    cdn_gets: HashMap<String, usize>,
    cdn_ranges: Vec<String>,
    token_requests: Vec<(String, bool)>,
    manifest_requests: Vec<ManifestRequest>,
}

/// Contents, fault switches and counters of the fake. Every switch may be
/// changed at any time from a test (`SeqCst` is fine everywhere).
pub struct FakeState {
    /// `http://127.0.0.1:P` — base of the registry (and of the token realm).
    pub registry_url: String,
    /// `http://127.0.0.2:Q` — base of the CDN.
    pub cdn_url: String,

    /// The token realm issues tokens without credentials (like
    /// registry.access.redhat.com). Basic credentials, if sent, are ignored.
    pub anonymous: AtomicBool,

    /// CDN flips (XOR 0xff) the byte at offset `len / 2` of every blob it
    /// serves (same length, wrong digest). The offset is absolute in the blob,
    /// so a range that does not cover the middle is served intact.
    pub wrong_bytes: AtomicBool,
    /// If non-zero, CDN GET responses send only this many bytes of their body
    /// (after the headers, which announce the full `Content-Length`) and then
    /// abort the connection, so the client sees a truncated transfer. Bodies
    /// not longer than `cut_after` are not cut.
    pub cut_after: AtomicU64,
    /// How many responses to cut before behaving normally again; 0 = cut
    /// every response while `cut_after != 0`. When the budget runs out the
    /// fake resets `cut_after` to 0 itself.
    pub cut_times: AtomicU32,
    /// The CDN ignores `Range` and always answers 200 with the whole body.
    pub ignore_range: AtomicBool,
    /// The CDN answers every request with 503 while set.
    pub cdn_fail_5xx: AtomicBool,
    /// Sleep this long before each CDN body frame (the first one included;
    /// headers go out immediately). Read before every frame.
    pub frame_delay_ms: AtomicU64,
    /// Setting this to true is a deferred [`FakeState::revoke_all_tokens`]:
    /// the next registry request (token realm included) revokes every token
    /// issued so far and clears the flag.
    pub revoke_tokens: AtomicBool,
    /// The next N registry requests (token realm excluded) answer 503.
    pub fail_5xx: AtomicU32,
    /// Every registry request (token realm excluded) answers 503 while set.
    pub fail_all_5xx: AtomicBool,
    /// While `Some(secs)`, every registry request (token realm excluded)
    /// answers 429 with `Retry-After: secs` and a TOOMANYREQUESTS body.
    pub too_many_requests: Mutex<Option<u64>>,
    /// Manifest responses omit `Docker-Content-Digest`.
    pub omit_digest_header: AtomicBool,
    /// If set (e.g. `"http://127.0.0.3:1"`), blob GETs redirect to
    /// `<this>/sha256/<2>/<hex>?Expires=..&Signature=..` instead of the CDN.
    pub redirect_to: Mutex<Option<String>>,
    /// `expires_in` of issued tokens, in seconds (default 300). Tokens are
    /// really refused once that many seconds have passed (0 = born expired).
    pub token_expires_in: AtomicU64,
    /// Lifetime of signed CDN URLs, in seconds (default 600). A URL is refused
    /// (403) once `now >= Expires` (so 0 = born expired).
    pub cdn_url_ttl_secs: AtomicU64,
    /// Page size used for tag lists requested without `n` (0 = no limit,
    /// the default).
    pub default_tags_page: AtomicUsize,

    data: Mutex<Data>,
    log: Mutex<Log>,
    token_serial: AtomicU64,
    revoked_below: AtomicU64,
    image_serial: AtomicU64,
    request_count: AtomicUsize,
    cdn_bytes_sent: AtomicU64,
    cdn_saw_authorization: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `"sha256:<hex>"` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Signature the CDN expects: hex sha256 of `path + expires + CDN_SECRET`.
pub fn cdn_signature(path: &str, expires: u64) -> String {
    hex::encode(Sha256::digest(format!("{path}{expires}{CDN_SECRET}").as_bytes()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl FakeState {
    fn new(registry_url: String, cdn_url: String, anonymous: bool) -> Self {
        FakeState {
            registry_url,
            cdn_url,
            anonymous: AtomicBool::new(anonymous),
            wrong_bytes: AtomicBool::new(false),
            cut_after: AtomicU64::new(0),
            cut_times: AtomicU32::new(0),
            ignore_range: AtomicBool::new(false),
            frame_delay_ms: AtomicU64::new(0),
            cdn_fail_5xx: AtomicBool::new(false),
            revoke_tokens: AtomicBool::new(false),
            fail_5xx: AtomicU32::new(0),
            fail_all_5xx: AtomicBool::new(false),
            too_many_requests: Mutex::new(None),
            omit_digest_header: AtomicBool::new(false),
            redirect_to: Mutex::new(None),
            token_expires_in: AtomicU64::new(300),
            cdn_url_ttl_secs: AtomicU64::new(600),
            default_tags_page: AtomicUsize::new(0),
            data: Mutex::new(Data::default()),
            log: Mutex::new(Log::default()),
            token_serial: AtomicU64::new(1),
            revoked_below: AtomicU64::new(0),
            image_serial: AtomicU64::new(0),
            request_count: AtomicUsize::new(0),
            cdn_bytes_sent: AtomicU64::new(0),
            cdn_saw_authorization: AtomicBool::new(false),
        }
    }

    /// Full URL of the token realm.
    pub fn realm(&self) -> String {
        format!("{}{REALM_PATH}", self.registry_url)
    }

    // ----- contents -------------------------------------------------------

    /// Stores a blob (global: every repository serves it); returns its digest.
    pub fn add_blob(&self, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        lock(&self.data).blobs.insert(digest.clone(), bytes);
        digest
    }

    /// Forgets a blob (the registry then answers 404 BLOB_UNKNOWN).
    pub fn remove_blob(&self, digest: &str) {
        lock(&self.data).blobs.remove(digest);
    }

    /// The bytes of a stored blob.
    pub fn blob(&self, digest: &str) -> Option<Bytes> {
        lock(&self.data).blobs.get(digest).cloned()
    }

    /// Stores a manifest by digest in `repo`, points `tag` at it if given,
    /// and returns the digest.
    pub fn put_manifest(&self, repo: &str, tag: Option<&str>, media_type: &str, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        let mut data = lock(&self.data);
        data.manifests
            .entry(repo.to_string())
            .or_default()
            .insert(digest.clone(), (media_type.to_string(), bytes));
        let tags = data.tags.entry(repo.to_string()).or_default();
        if let Some(tag) = tag {
            tags.insert(tag.to_string(), digest.clone());
        }
        digest
    }

    /// The bytes of a manifest stored under `digest` in any repository.
    pub fn manifest_by_digest(&self, digest: &str) -> Option<Bytes> {
        lock(&self.data)
            .manifests
            .values()
            .find_map(|m| m.get(digest).map(|(_, b)| b.clone()))
    }

    /// The digest `tag` of `repo` points at.
    pub fn tag_digest(&self, repo: &str, tag: &str) -> Option<String> {
        lock(&self.data).tags.get(repo).and_then(|t| t.get(tag).cloned())
    }

    /// Points `tag` of `repo` at an already stored manifest digest.
    pub fn set_tag(&self, repo: &str, tag: &str, digest: &str) {
        lock(&self.data)
            .tags
            .entry(repo.to_string())
            .or_default()
            .insert(tag.to_string(), digest.to_string());
    }

    /// Removes a tag (the manifest stays reachable by digest).
    pub fn delete_tag(&self, repo: &str, tag: &str) {
        if let Some(tags) = lock(&self.data).tags.get_mut(repo) {
            tags.remove(tag);
        }
    }

    /// Removes a manifest (by digest) from `repo`, and the tags pointing at it.
    pub fn delete_manifest(&self, repo: &str, digest: &str) {
        let mut data = lock(&self.data);
        if let Some(m) = data.manifests.get_mut(repo) {
            m.remove(digest);
        }
        if let Some(tags) = data.tags.get_mut(repo) {
            tags.retain(|_, d| d != digest);
        }
    }

    /// Builds an OCI image (config + one pseudo-random layer per entry of
    /// `layer_sizes`; bytes deterministic for a given call order but unique
    /// per call), stores everything and tags the manifest `tag` in `repo`.
    pub fn add_image(&self, repo: &str, tag: &str, layer_sizes: &[usize]) -> FakeImage {
        self.build_image(
            repo,
            Some(tag),
            "amd64",
            layer_sizes,
            MT_OCI_MANIFEST,
            MT_OCI_CONFIG,
            MT_OCI_LAYER,
        )
    }

    /// Builds a Docker manifest list tagged `tag` in `repo`, with a
    /// linux/amd64 and a linux/arm64 child, each a Docker v2 schema 2 manifest
    /// (stored by digest only) with a config and one small layer.
    pub fn add_docker_list(&self, repo: &str, tag: &str) -> FakeIndex {
        let mut children = Vec::new();
        let mut child_images = Vec::new();
        let mut entries = Vec::new();
        for (i, arch) in ["amd64", "arm64"].into_iter().enumerate() {
            let img = self.build_image(
                repo,
                None,
                arch,
                &[1000 + 37 * i],
                MT_DOCKER_MANIFEST,
                MT_DOCKER_CONFIG,
                MT_DOCKER_LAYER,
            );
            entries.push(serde_json::json!({
                "mediaType": MT_DOCKER_MANIFEST,
                "digest": img.manifest_digest,
                "size": img.manifest.len(),
                "platform": {"architecture": arch, "os": "linux"},
            }));
            children.push((format!("linux/{arch}"), img.manifest_digest.clone()));
            child_images.push(img);
        }
        let list = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_LIST,
            "manifests": entries,
        });
        let bytes = Bytes::from(serde_json::to_vec_pretty(&list).expect("serialize list"));
        let digest = self.put_manifest(repo, Some(tag), MT_DOCKER_LIST, bytes.clone());
        FakeIndex {
            digest,
            bytes,
            children,
            child_images,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_image(
        &self,
        repo: &str,
        tag: Option<&str>,
        arch: &str,
        layer_sizes: &[usize],
        manifest_mt: &str,
        config_mt: &str,
        layer_mt: &str,
    ) -> FakeImage {
        let serial = self.image_serial.fetch_add(1, SeqCst);
        let base_seed = fnv1a(format!("{repo}\0{}\0{arch}\0{serial}", tag.unwrap_or("")).as_bytes());
        let layers: Vec<Bytes> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| pseudo_random(base_seed ^ ((i as u64 + 1) << 32), size))
            .collect();
        let layer_digests: Vec<String> = layers.iter().map(|l| self.add_blob(l.clone())).collect();
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Labels": {
                    "fake.pullgate/repo": repo,
                    "fake.pullgate/tag": tag.unwrap_or(""),
                    "fake.pullgate/serial": serial.to_string(),
                }
            },
            "rootfs": {"type": "layers", "diff_ids": layer_digests},
        });
        let config = Bytes::from(serde_json::to_vec(&config).expect("serialize config"));
        let config_digest = self.add_blob(config.clone());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_mt,
            "config": {"mediaType": config_mt, "digest": config_digest, "size": config.len()},
            "layers": layers.iter().zip(&layer_digests).map(|(l, d)| serde_json::json!({
                "mediaType": layer_mt, "digest": d, "size": l.len(),
            })).collect::<Vec<_>>(),
        });
        let manifest = Bytes::from(serde_json::to_vec_pretty(&manifest).expect("serialize"));
        let manifest_digest = self.put_manifest(repo, tag, manifest_mt, manifest.clone());
        FakeImage {
            manifest_digest,
            manifest,
            media_type: manifest_mt.to_string(),
            config_digest,
            config,
            layer_digests,
            layers,
        }
    }

    // ----- tokens ---------------------------------------------------------

    /// Every token issued so far becomes invalid (401 + challenge on next
    /// use); tokens issued afterwards work.
    pub fn revoke_all_tokens(&self) {
        self.revoked_below.store(self.token_serial.load(SeqCst), SeqCst);
    }

    fn apply_pending_revoke(&self) {
        if self.revoke_tokens.swap(false, SeqCst) {
            self.revoke_all_tokens();
        }
    }

    /// Whether `token` is known, unrevoked, unexpired and (if `repo` is
    /// given) grants `pull` on it.
    pub fn token_valid(&self, token: &str, repo: Option<&str>) -> bool {
        let data = lock(&self.data);
        let Some(info) = data.tokens.get(token) else {
            return false;
        };
        if info.serial < self.revoked_below.load(SeqCst) || Instant::now() >= info.expires_at {
            return false;
        }
        match repo {
            None => true,
            Some(repo) => info.scopes.iter().any(|s| scope_grants_pull(s, repo)),
        }
    }

    // ----- counters -------------------------------------------------------

    /// GET requests to `/v2/<any repo>/blobs/<digest>` (any answer: 302,
    /// 401, 404, 429, 503...).
    pub fn registry_blob_gets(&self, digest: &str) -> usize {
        lock(&self.log).registry_blob_gets.get(digest).copied().unwrap_or(0)
    }

    /// Blob GETs of `digest` that were answered with a 302.
    pub fn registry_blob_redirects(&self, digest: &str) -> usize {
        lock(&self.log)
            .registry_blob_redirects
            .get(digest)
            .copied()
            .unwrap_or(0)
    }

    /// CDN GETs of `digest` (any answer, including 403).
    pub fn cdn_gets(&self, digest: &str) -> usize {
        lock(&self.log).cdn_gets.get(digest).copied().unwrap_or(0)
    }

    /// Total CDN GETs, all digests.
    pub fn cdn_gets_total(&self) -> usize {
        lock(&self.log).cdn_gets.values().sum()
    }

    /// Body bytes the CDN handed to the connection (frames yielded).
    pub fn cdn_bytes_sent(&self) -> u64 {
        self.cdn_bytes_sent.load(SeqCst)
    }

    /// Every `Range` header line the CDN received, in order.
    pub fn cdn_ranges(&self) -> Vec<String> {
        lock(&self.log).cdn_ranges.clone()
    }

    /// Whether any CDN request ever carried an `Authorization` header.
    pub fn cdn_saw_authorization(&self) -> bool {
        self.cdn_saw_authorization.load(SeqCst)
    }

    /// `(scope, had_basic)` of every token realm request. `scope` is all
    /// `scope` parameters joined by a space ("" without any).
    pub fn token_requests(&self) -> Vec<(String, bool)> {
        lock(&self.log).token_requests.clone()
    }

    /// Every manifest request, any answer.
    pub fn manifest_requests(&self) -> Vec<ManifestRequest> {
        lock(&self.log).manifest_requests.clone()
    }

    /// Every registry request (token realm included), in completion order.
    pub fn registry_requests(&self) -> Vec<RegistryRequest> {
        lock(&self.log).registry_requests.clone()
    }

    /// Number of registry requests (token realm included) received.
    pub fn request_count(&self) -> usize {
        self.request_count.load(SeqCst)
    }

    /// Zeroes every counter and log (contents, tokens and switches stay).
    pub fn reset_counters(&self) {
        *lock(&self.log) = Log::default();
        self.request_count.store(0, SeqCst);
        self.cdn_bytes_sent.store(0, SeqCst);
        self.cdn_saw_authorization.store(false, SeqCst);
    }

    /// Consumes one unit of the cut budget if a body of `len` bytes must be
    /// cut; returns after how many bytes.
    fn take_cut(&self, len: u64) -> Option<usize> {
        let after = self.cut_after.load(SeqCst);
        if after == 0 || after >= len {
            return None;
        }
        if self.cut_times.fetch_update(SeqCst, SeqCst, |t| t.checked_sub(1)) == Ok(1) {
            let _ = self.cut_after.compare_exchange(after, 0, SeqCst, SeqCst);
        }
        usize::try_from(after).ok()
    }

    fn injected_fault(&self) -> Option<Response> {
        if let Some(secs) = *lock(&self.too_many_requests) {
            return Some(respond(
                StatusCode::TOO_MANY_REQUESTS,
                "application/json",
                &[("retry-after", secs.to_string())],
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"Too many requests","detail":"slow down"}]}"#,
            ));
        }
        if self.fail_all_5xx.load(SeqCst) || self.fail_5xx.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Some(respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/html",
                &[],
                "<html><body><h1>503 Service Unavailable</h1></body></html>",
            ));
        }
        None
    }
}

fn scope_grants_pull(scope: &str, repo: &str) -> bool {
    let Some(rest) = scope.strip_prefix("repository:") else {
        return false;
    };
    let Some((name, actions)) = rest.rsplit_once(':') else {
        return false;
    };
    name == repo && actions.split(',').any(|a| a == "pull" || a == "*")
}

// ----- the two servers ----------------------------------------------------------

struct Running {
    tasks: Vec<JoinHandle<()>>,
    kill: watch::Sender<bool>,
}

/// The fake registry + CDN. Dereferences to its [`FakeState`]. Dropping it
/// stops both servers.
pub struct FakeRedHat {
    /// `http://127.0.0.1:P`
    pub registry_url: String,
    pub registry_addr: SocketAddr,
    /// `http://127.0.0.2:Q`
    pub cdn_url: String,
    pub cdn_addr: SocketAddr,
    pub state: Arc<FakeState>,
    running: Mutex<Option<Running>>,
}

impl Deref for FakeRedHat {
    type Target = FakeState;
    fn deref(&self) -> &FakeState {
        &self.state
    }
}

impl FakeRedHat {
    /// Starts a fake whose realm requires [`USERNAME`] / [`PASSWORD`].
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// Starts a fake whose realm issues tokens to anyone (like
    /// registry.access.redhat.com).
    pub async fn start_anonymous() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(anonymous: bool) -> Self {
        let reg = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake registry on 127.0.0.1");
        let cdn = TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind fake CDN on 127.0.0.2");
        let registry_addr = reg.local_addr().expect("registry addr");
        let cdn_addr = cdn.local_addr().expect("cdn addr");
        let registry_url = format!("http://{registry_addr}");
        let cdn_url = format!("http://{cdn_addr}");
        let state = Arc::new(FakeState::new(registry_url.clone(), cdn_url.clone(), anonymous));
        let running = spawn_servers(&state, reg, cdn);
        FakeRedHat {
            registry_url,
            registry_addr,
            cdn_url,
            cdn_addr,
            state,
            running: Mutex::new(Some(running)),
        }
    }

    /// Full URL of the token realm.
    pub fn realm(&self) -> String {
        self.state.realm()
    }

    /// See [`FakeState::add_blob`].
    pub fn add_blob(&self, bytes: impl Into<Bytes>) -> String {
        self.state.add_blob(bytes)
    }

    /// See [`FakeState::put_manifest`].
    pub fn put_manifest(&self, repo: &str, tag: Option<&str>, media_type: &str, bytes: impl Into<Bytes>) -> String {
        self.state.put_manifest(repo, tag, media_type, bytes)
    }

    /// See [`FakeState::add_image`].
    pub fn add_image(&self, repo: &str, tag: &str, layer_sizes: &[usize]) -> FakeImage {
        self.state.add_image(repo, tag, layer_sizes)
    }

    /// See [`FakeState::add_docker_list`].
    pub fn add_docker_list(&self, repo: &str, tag: &str) -> FakeIndex {
        self.state.add_docker_list(repo, tag)
    }

    /// Stops the registry and the CDN: listeners are closed (new connections
    /// are refused) and open connections, idle or mid-transfer, are dropped.
    /// Idempotent.
    pub fn stop(&self) {
        if let Some(running) = lock(&self.running).take() {
            running.kill.send_replace(true);
            for task in running.tasks {
                task.abort();
            }
        }
    }

    /// Whether the servers are running (not stopped).
    pub fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// Starts the servers again on the same addresses after [`Self::stop`]
    /// (no-op if running). Contents, switches and counters are kept.
    pub async fn restart(&self) {
        if self.is_running() {
            return;
        }
        let mut reg = None;
        let mut cdn = None;
        for _ in 0..50 {
            if reg.is_none() {
                reg = TcpListener::bind(self.registry_addr).await.ok();
            }
            if cdn.is_none() {
                cdn = TcpListener::bind(self.cdn_addr).await.ok();
            }
            if reg.is_some() && cdn.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (Some(reg), Some(cdn)) = (reg, cdn) else {
            panic!(
                "fake upstream: cannot rebind {} / {}",
                self.registry_addr, self.cdn_addr
            );
        };
        let running = spawn_servers(&self.state, reg, cdn);
        *lock(&self.running) = Some(running);
    }
}

impl Drop for FakeRedHat {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `len` pseudo-random bytes (splitmix64) from `seed`.
pub fn pseudo_random(seed: u64, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed;
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}
