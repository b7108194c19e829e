//! A synthetic OpenShift world for tests and benchmarks: a fake quay.io (anonymous
//! tokens, CDN redirects) holding releases of N components that share a few base
//! layers, each release's payload with `release-manifests/image-references` in its last
//! layer (a real tar.gz), a fake registry.redhat.io holding an operator catalog (a
//! file-based catalog over two layers: a JSON-stream package, a YAML package, a
//! whiteout, an `.indexignore`) with its bundles and related images, and a fake
//! mirror.openshift.com + api.openshift.com: the release signature store and the
//! update graph, with switches and counters.
#![allow(dead_code)]

use super::fake_upstream::{FakeRedHat, MT_OCI_CONFIG, MT_OCI_LAYER, MT_OCI_MANIFEST, pseudo_random, sha256_digest};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const RELEASE_REPO: &str = "openshift-release-dev/ocp-release";
pub const COMPONENT_REPO: &str = "openshift-release-dev/ocp-v4.0-art-dev";
pub const CATALOG_REPO: &str = "redhat/redhat-operator-index";
pub const CATALOG_TAG: &str = "v4.16";
pub const CHANNEL: &str = "stable-4.16";
pub const SIGNATURES_PATH: &str = "/pub/openshift-v4/signatures/openshift/release";
pub const GRAPH_PATH: &str = "/api/upgrades_info/v1/graph";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A gzip-compressed tar of `files` (regular files; a path ending in `/` is a
/// directory).
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        if path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_mode(0o755);
        } else {
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
        }
        header.set_mtime(1_700_000_000);
        builder.append_data(&mut header, path, *content).expect("append to tar");
    }
    let tar = builder.into_inner().expect("finish tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// Stores an OCI image of `layers` (with a config carrying `labels`) in `repo` of
/// `fake`, tagged `tag` when given; returns its manifest digest.
pub fn put_image(
    fake: &FakeRedHat,
    repo: &str,
    tag: Option<&str>,
    layers: &[Bytes],
    labels: serde_json::Value,
) -> String {
    let layer_digests: Vec<String> = layers.iter().map(|l| fake.add_blob(l.clone())).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    });
    let config = Bytes::from(serde_json::to_vec(&config).expect("config"));
    let config_digest = fake.add_blob(config.clone());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers.iter().zip(&layer_digests).map(|(l, d)| serde_json::json!({
            "mediaType": MT_OCI_LAYER, "digest": d, "size": l.len(),
        })).collect::<Vec<_>>(),
    });
    fake.put_manifest(
        repo,
        tag,
        MT_OCI_MANIFEST,
        serde_json::to_vec_pretty(&manifest).expect("manifest"),
    )
}

/// The digests of an image's config and layers, as stored in `fake`.
pub fn image_blobs(fake: &FakeRedHat, digest: &str) -> Vec<String> {
    let manifest = manifest_bytes(fake, digest);
    let v: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest JSON");
    std::iter::once(&v["config"])
        .chain(v["layers"].as_array().into_iter().flatten())
        .map(|d| d["digest"].as_str().expect("digest").to_string())
        .collect()
}

fn manifest_bytes(fake: &FakeRedHat, digest: &str) -> Bytes {
    fake.manifest_by_digest(digest).expect("manifest stored")
}

/// One release of the world.
#[derive(Debug, Clone)]
pub struct FakeRelease {
    pub version: String,
    /// The payload manifest's digest.
    pub digest: String,
    /// `quay.io/openshift-release-dev/ocp-release@sha256:…`
    pub pullspec: String,
    /// Component pullspecs (`quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:…`).
    pub components: Vec<String>,
}

/// One bundle of the catalog.
#[derive(Debug, Clone)]
pub struct FakeBundle {
    pub package: String,
    pub name: String,
    pub version: String,
    /// `registry.redhat.io/…@sha256:…`
    pub image: String,
    pub related: Vec<String>,
}

/// How big the world is.
#[derive(Debug, Clone)]
pub struct WorldSize {
    pub components: usize,
    /// Versions on the channel, ascending (consecutive ones joined by an edge, and the
    /// first to the last when there are three or more).
    pub versions: Vec<String>,
    /// Base layers every component shares, and their size.
    pub base_layers: usize,
    pub base_layer_size: usize,
    /// Each component's own layer size.
    pub own_layer_size: usize,
    /// How many components each release after the first replaces.
    pub changed_per_release: usize,
}

impl Default for WorldSize {
    fn default() -> Self {
        WorldSize {
            components: 6,
            versions: vec!["4.16.0".into(), "4.16.1".into()],
            base_layers: 3,
            base_layer_size: 48 * 1024,
            own_layer_size: 6 * 1024,
            changed_per_release: 2,
        }
    }
}

/// Builds the releases in `quay`: components (some replaced in each later release) and
/// payloads tagged `<version>-x86_64`.
pub fn build_releases(quay: &FakeRedHat, size: &WorldSize) -> Vec<FakeRelease> {
    let base: Vec<Bytes> = (0..size.base_layers)
        .map(|i| pseudo_random(0xba5e_0000 + i as u64, size.base_layer_size))
        .collect();
    let component = |i: usize, generation: usize| {
        let mut layers = base.clone();
        layers.push(pseudo_random(
            ((generation as u64) << 32) | (i as u64 + 1),
            size.own_layer_size,
        ));
        let digest = put_image(
            quay,
            COMPONENT_REPO,
            None,
            &layers,
            serde_json::json!({"io.openshift.build.component": format!("component-{i}")}),
        );
        format!("quay.io/{COMPONENT_REPO}@{digest}")
    };
    let mut current: Vec<String> = (0..size.components).map(|i| component(i, 0)).collect();
    let mut releases = Vec::new();
    for (r, version) in size.versions.iter().enumerate() {
        if r > 0 {
            for k in 0..size.changed_per_release.min(size.components) {
                let i = (r * 7 + k) % size.components;
                current[i] = component(i, r);
            }
        }
        let tags: Vec<serde_json::Value> = current
            .iter()
            .enumerate()
            .map(|(i, image)| serde_json::json!({"name": format!("component-{i}"), "from": {"kind": "DockerImage", "name": image}}))
            .collect();
        let references = serde_json::json!({
            "kind": "ImageStream",
            "apiVersion": "image.openshift.io/v1",
            "metadata": {"name": version},
            "spec": {"tags": tags},
        });
        let references = serde_json::to_vec_pretty(&references).expect("image-references");
        let metadata = format!(r#"{{"kind":"cincinnati-metadata-v0","version":"{version}"}}"#);
        let last = tar_gz(&[
            ("release-manifests/", b""),
            (
                "release-manifests/0000_00_cluster-version-operator_00_namespace.yaml",
                b"kind: Namespace\n",
            ),
            ("release-manifests/image-references", &references),
            ("release-manifests/release-metadata", metadata.as_bytes()),
        ]);
        let mut layers = base.clone();
        layers.push(Bytes::from(last));
        let digest = put_image(
            quay,
            RELEASE_REPO,
            Some(&format!("{version}-x86_64")),
            &layers,
            serde_json::json!({"io.openshift.release": version}),
        );
        releases.push(FakeRelease {
            version: version.clone(),
            pullspec: format!("quay.io/{RELEASE_REPO}@{digest}"),
            digest,
            components: current.clone(),
        });
    }
    releases
}

/// The update graph of `releases` (Cincinnati JSON).
pub fn graph_json(releases: &[FakeRelease]) -> Bytes {
    let nodes: Vec<serde_json::Value> = releases
        .iter()
        .map(|r| serde_json::json!({"version": r.version, "payload": r.pullspec, "metadata": {"io.openshift.upgrades.graph.release.channels": CHANNEL}}))
        .collect();
    let mut edges: Vec<[usize; 2]> = (1..releases.len()).map(|i| [i - 1, i]).collect();
    if releases.len() >= 3 {
        edges.push([0, releases.len() - 1]);
    }
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({"nodes": nodes, "edges": edges, "conditionalEdges": []}))
            .expect("graph"),
    )
}

/// A bundle (and its operator image) in `rh`.
fn bundle(rh: &FakeRedHat, package: &str, version: &str) -> FakeBundle {
    let seed = u64::from_str_radix(&sha256_digest(format!("{package}{version}").as_bytes())[7..19], 16).unwrap_or(1);
    let operator = put_image(
        rh,
        &format!("ns/{package}-operator"),
        None,
        &[pseudo_random(seed, 3000)],
        serde_json::json!({}),
    );
    let bundle = put_image(
        rh,
        &format!("ns/{package}-bundle"),
        None,
        &[pseudo_random(seed ^ 0xb, 1500)],
        serde_json::json!({"operators.operatorframework.io.bundle.package.v1": package}),
    );
    let image = format!("registry.redhat.io/ns/{package}-bundle@{bundle}");
    FakeBundle {
        package: package.into(),
        name: format!("{package}.v{version}"),
        version: version.into(),
        related: vec![
            format!("registry.redhat.io/ns/{package}-operator@{operator}"),
            image.clone(),
        ],
        image,
    }
}

fn bundle_doc(b: &FakeBundle) -> serde_json::Value {
    serde_json::json!({
        "schema": "olm.bundle",
        "name": b.name,
        "package": b.package,
        "image": b.image,
        "properties": [
            {"type": "olm.package", "value": {"packageName": b.package, "version": b.version}},
            {"type": "olm.gvk", "value": {"group": "example.com", "kind": "Thing", "version": "v1"}},
        ],
        "relatedImages": [
            {"name": "operator", "image": b.related[0]},
            {"name": "", "image": b.related[1]},
        ],
    })
}

/// The catalog image: `alpha` as a JSON stream (channels stable 1.0.0 → 1.1.0 → 1.2.0
/// skipping 1.1.1, and fast 1.2.0 → 1.3.0), `beta` as YAML documents (stable 0.1.0 →
/// 0.2.0, candidate 0.2.0 → 0.3.0), `gamma` whited out by the second layer, and an
/// `.indexignore` that hides a file which would not parse.
pub fn build_catalog(rh: &FakeRedHat) -> Vec<FakeBundle> {
    let alpha: Vec<FakeBundle> = ["1.0.0", "1.1.0", "1.1.1", "1.2.0", "1.3.0"]
        .iter()
        .map(|v| bundle(rh, "alpha", v))
        .collect();
    let beta: Vec<FakeBundle> = ["0.1.0", "0.2.0", "0.3.0"]
        .iter()
        .map(|v| bundle(rh, "beta", v))
        .collect();
    let gamma = bundle(rh, "gamma", "9.0.0");
    let mut alpha_stream = String::new();
    for doc in [
        serde_json::json!({"schema": "olm.package", "name": "alpha", "defaultChannel": "stable"}),
        serde_json::json!({"schema": "olm.channel", "package": "alpha", "name": "stable", "entries": [
            {"name": "alpha.v1.0.0"},
            {"name": "alpha.v1.1.0", "replaces": "alpha.v1.0.0"},
            {"name": "alpha.v1.2.0", "replaces": "alpha.v1.1.0", "skips": ["alpha.v1.1.1"]},
        ]}),
        serde_json::json!({"schema": "olm.channel", "package": "alpha", "name": "fast", "entries": [
            {"name": "alpha.v1.2.0"},
            {"name": "alpha.v1.3.0", "replaces": "alpha.v1.2.0"},
        ]}),
    ]
    .into_iter()
    .chain(alpha.iter().map(bundle_doc))
    {
        alpha_stream.push_str(&serde_json::to_string_pretty(&doc).expect("json"));
        alpha_stream.push('\n');
    }
    let mut beta_yaml = String::from(
        "---\nschema: olm.package\nname: beta\ndefaultChannel: stable\n---\nschema: olm.channel\npackage: beta\nname: stable\nentries:\n- name: beta.v0.1.0\n- name: beta.v0.2.0\n  replaces: beta.v0.1.0\n---\nschema: olm.channel\npackage: beta\nname: candidate\nentries:\n- name: beta.v0.2.0\n- name: beta.v0.3.0\n  replaces: beta.v0.2.0\n",
    );
    for b in &beta {
        beta_yaml.push_str("---\n");
        beta_yaml.push_str(&serde_saphyr::to_string(&bundle_doc(b)).expect("yaml"));
    }
    let gamma_stream = format!(
        "{}\n{}\n{}\n",
        serde_json::json!({"schema": "olm.package", "name": "gamma", "defaultChannel": "stable"}),
        serde_json::json!({"schema": "olm.channel", "package": "gamma", "name": "stable", "entries": [{"name": "gamma.v9.0.0"}]}),
        bundle_doc(&gamma)
    );
    let lower = tar_gz(&[
        ("configs/", b""),
        ("configs/alpha/", b""),
        ("configs/alpha/catalog.json", alpha_stream.as_bytes()),
        ("configs/alpha/README.md", b"not a catalog file"),
        ("configs/gamma/", b""),
        ("configs/gamma/catalog.json", gamma_stream.as_bytes()),
        ("bin/opm", b"#!/bin/sh\n"),
    ]);
    let upper = tar_gz(&[
        ("configs/", b""),
        ("configs/.wh.gamma", b""),
        ("configs/beta/", b""),
        ("configs/beta/catalog.yaml", beta_yaml.as_bytes()),
        ("configs/beta/.indexignore", b"# not part of the catalog\nnotes.json\n"),
        ("configs/beta/notes.json", b"{\"this\": \"has no schema\"}"),
    ]);
    put_image(
        rh,
        CATALOG_REPO,
        Some(CATALOG_TAG),
        &[Bytes::from(lower), Bytes::from(upper)],
        serde_json::json!({"operators.operatorframework.io.index.configs.v1": "/configs"}),
    );
    alpha.into_iter().chain(beta).collect()
}

/// What the fake signature store and graph service hold and saw.
#[derive(Default)]
pub struct StoreState {
    /// (hex, n) → bytes
    pub signatures: Mutex<HashMap<(String, u32), Bytes>>,
    /// channel → graph JSON (for arch amd64 or multi; other arches get no nodes)
    pub graphs: Mutex<BTreeMap<String, Bytes>>,
    pub signature_gets: AtomicUsize,
    pub graph_gets: AtomicUsize,
    /// Every graph query string received.
    pub graph_queries: Mutex<Vec<String>>,
    /// Answer 503 to everything.
    pub failing: AtomicBool,
    /// Redirect signature requests to this base URL (the path is kept).
    pub redirect_signatures_to: Mutex<Option<String>>,
}

/// mirror.openshift.com and api.openshift.com in one server on 127.0.0.3.
pub struct FakeOpenShift {
    pub url: String,
    pub addr: SocketAddr,
    pub state: Arc<StoreState>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl FakeOpenShift {
    pub async fn start() -> FakeOpenShift {
        let listener = tokio::net::TcpListener::bind("127.0.0.3:0")
            .await
            .expect("bind 127.0.0.3");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(StoreState::default());
        let task = spawn_store(listener, state.clone());
        FakeOpenShift {
            url: format!("http://{addr}"),
            addr,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    pub fn signature_store(&self) -> String {
        format!("{}{SIGNATURES_PATH}", self.url)
    }

    pub fn update_graph(&self) -> String {
        format!("{}{GRAPH_PATH}", self.url)
    }

    /// Signatures 1..=n of a release (`sha256:<hex>`), deterministic bytes.
    pub fn sign(&self, digest: &str, n: u32) -> Vec<Bytes> {
        let hex = digest.trim_start_matches("sha256:");
        (1..=n)
            .map(|i| {
                let sig = Bytes::from(format!("\u{1}gpg-signature {i} of {hex}").into_bytes());
                lock(&self.state.signatures).insert((hex.to_string(), i), sig.clone());
                sig
            })
            .collect()
    }

    pub fn set_graph(&self, channel: &str, graph: Bytes) {
        lock(&self.state.graphs).insert(channel.to_string(), graph);
    }

    /// Closes the listener and drops connections (refused from now on).
    pub fn stop(&self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }

    pub async fn restart(&self) {
        if lock(&self.task).is_some() {
            return;
        }
        let mut listener = None;
        for _ in 0..50 {
            if let Ok(l) = tokio::net::TcpListener::bind(self.addr).await {
                listener = Some(l);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let listener = listener.expect("rebind the fake OpenShift services");
        *lock(&self.task) = Some(spawn_store(listener, self.state.clone()));
    }
}

impl Drop for FakeOpenShift {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_store(listener: tokio::net::TcpListener, state: Arc<StoreState>) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route(GRAPH_PATH, axum::routing::get(graph))
        .fallback(signature)
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

async fn graph(State(s): State<Arc<StoreState>>, Query(q): Query<HashMap<String, String>>, uri: Uri) -> Response {
    s.graph_gets.fetch_add(1, SeqCst);
    lock(&s.graph_queries).push(uri.query().unwrap_or_default().to_string());
    if s.failing.load(SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let Some(channel) = q.get("channel") else {
        return (StatusCode::BAD_REQUEST, "mandatory client parameters missing: channel").into_response();
    };
    let arch_ok = matches!(q.get("arch").map(String::as_str), Some("amd64" | "multi") | None);
    let body = match lock(&s.graphs).get(channel) {
        Some(g) if arch_ok => g.clone(),
        _ => Bytes::from_static(br#"{"nodes":[],"edges":[],"conditionalEdges":[]}"#),
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn signature(State(s): State<Arc<StoreState>>, uri: Uri) -> Response {
    s.signature_gets.fetch_add(1, SeqCst);
    if s.failing.load(SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if let Some(base) = lock(&s.redirect_signatures_to).clone() {
        return (StatusCode::FOUND, [(header::LOCATION, format!("{base}{}", uri.path()))]).into_response();
    }
    let found = uri
        .path()
        .strip_prefix(SIGNATURES_PATH)
        .and_then(|p| p.strip_prefix("/sha256="))
        .and_then(|p| p.split_once("/signature-"))
        .and_then(|(hex, n)| Some((hex.to_string(), n.parse::<u32>().ok()?)))
        .and_then(|key| lock(&s.signatures).get(&key).cloned());
    match found {
        Some(sig) => ([(header::CONTENT_TYPE, "application/octet-stream")], sig).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Everything at once: quay.io with the releases, registry.redhat.io with the catalog,
/// the signature store (two signatures per release) and the graph of [`CHANNEL`].
pub struct OpenShiftWorld {
    pub quay: FakeRedHat,
    pub rh: FakeRedHat,
    pub store: FakeOpenShift,
    pub releases: Vec<FakeRelease>,
    pub bundles: Vec<FakeBundle>,
}

impl OpenShiftWorld {
    pub async fn start(size: &WorldSize) -> OpenShiftWorld {
        let quay = FakeRedHat::start_anonymous().await;
        let rh = FakeRedHat::start().await;
        let store = FakeOpenShift::start().await;
        let releases = build_releases(&quay, size);
        for r in &releases {
            store.sign(&r.digest, 2);
        }
        store.set_graph(CHANNEL, graph_json(&releases));
        let bundles = build_catalog(&rh);
        OpenShiftWorld {
            quay,
            rh,
            store,
            releases,
            bundles,
        }
    }

    pub fn catalog_image(&self) -> String {
        format!("registry.redhat.io/{CATALOG_REPO}:{CATALOG_TAG}")
    }

    pub fn bundle(&self, name: &str) -> &FakeBundle {
        self.bundles
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no bundle {name}"))
    }

    /// A pullgate config: quay.io (anonymous) and registry.redhat.io upstreams with
    /// their CDNs, and `[openshift]` on the fake services. `extra_top` goes before the
    /// tables; `extra_openshift` into `[openshift]`.
    pub fn config_toml(&self, dir: &Path, extra_top: &str, extra_openshift: &str) -> String {
        let password_file = dir.join("registry-token");
        std::fs::write(&password_file, format!("{}\n", super::PASSWORD)).expect("password file");
        format!(
            r#"listen = "127.0.0.1:0"
data_dir = "{data}"
{extra_top}

[openshift]
signature_store = "{sigs}"
update_graph = "{graph}"
{extra_openshift}

[[upstream]]
name = "quay.io"
url = "{quay}"
allow_redirect_hosts = ["127.0.0.2"]
response_timeout = "5s"
body_idle_timeout = "5s"

[[upstream]]
name = "registry.redhat.io"
url = "{rh}"
username = "{user}"
password_file = "{pw}"
allow_redirect_hosts = ["127.0.0.2"]
response_timeout = "5s"
body_idle_timeout = "5s"
"#,
            data = dir.join("data").display(),
            sigs = self.store.signature_store(),
            graph = self.store.update_graph(),
            quay = self.quay.registry_url,
            rh = self.rh.registry_url,
            user = super::USERNAME,
            pw = password_file.display(),
        )
    }

    /// CDN GETs of both fakes.
    pub fn cdn_gets(&self) -> usize {
        self.quay.cdn_gets_total() + self.rh.cdn_gets_total()
    }

    pub fn stop_all(&self) {
        self.quay.stop();
        self.rh.stop();
        self.store.stop();
    }
}
