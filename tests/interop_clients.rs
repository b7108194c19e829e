//! Real clients with the configuration `pullgate client-config` prints: skopeo through
//! podman-style mirrors (all / digest-only / tag-only / blocked sources), OpenShift
//! IDMS/ITMS/ICSP rendered to registries.conf as the Machine Config Operator does
//! (including an aliased namespace mapping), signature verification end to end with a
//! GPG key (extension API and lookaside), and podman. Upstream: Debian's docker-registry.

mod common;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use common::registry::DockerRegistry;
use common::signing::GpgKey;
use common::skopeo::{Skopeo, assert_success, inspect_dir_copy};
use pullgate::app::RunningServer;
use pullgate::cli::client_config::{ClientKind, render, split_files};
use pullgate::config::Config;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

type Files = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// A static web server for signature files (the upstream's lookaside).
async fn serve_files(files: Files) -> String {
    let app = axum::Router::new()
        .fallback(|State(f): State<Files>, uri: Uri| async move {
            match f.lock().unwrap().get(uri.path()) {
                Some(b) => (StatusCode::OK, b.clone()).into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        })
        .with_state(files);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

struct Setup {
    registry: DockerRegistry,
    server: RunningServer,
    config: Config,
    _dir: tempfile::TempDir,
    skopeo: Skopeo,
}

async fn setup(extra_top: &str, sigstore: Option<&str>) -> Setup {
    let registry = DockerRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sigstore = sigstore.map(|s| format!("sigstore = \"{s}\"\n")).unwrap_or_default();
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{extra_top}\n[[upstream]]\nname = \"registry.redhat.io\"\nurl = \"{}\"\naliases = [\"rh\"]\n{sigstore}",
        dir.path().join("data").display(),
        registry.url
    );
    let config = Config::from_toml_str(&toml).expect("config");
    let server = pullgate::app::spawn(&config).await.expect("pullgate");
    Setup {
        registry,
        server,
        config,
        _dir: dir,
        skopeo: Skopeo::new(),
    }
}

impl Setup {
    fn url(&self) -> String {
        self.server.url()
    }

    /// `client-config --for podman`, with the primary pointed at a dead loopback port so
    /// a fallback can never leave the machine; its registries.d file installed.
    fn podman_conf(&self) -> PathBuf {
        let out = render(
            &self.config,
            ClientKind::Podman,
            &self.url(),
            Some("registry.redhat.io"),
        )
        .unwrap();
        let files = split_files(&out);
        let conf = files[0]
            .1
            .replace("location = \"registry.redhat.io\"", "location = \"127.0.0.1:1\"");
        assert!(conf.contains("location = \"127.0.0.1:1\""), "{conf}");
        std::fs::write(self.skopeo.workdir().join("registries.d/50-pullgate.yaml"), &files[1].1).unwrap();
        self.skopeo
            .write_registries_conf(&format!("unqualified-search-registries = []\n{conf}"))
    }

    async fn copy(&self, conf: &Path, reference: &str) -> (std::process::Output, PathBuf) {
        let dest = self
            .skopeo
            .workdir()
            .join(format!("out-{}", common::registry::unique_token()));
        let out = self
            .skopeo
            .copy_async(
                conf,
                &[&format!("docker://{reference}"), &format!("dir:{}", dest.display())],
            )
            .await;
        (out, dest)
    }

    async fn copy_ok(&self, conf: &Path, reference: &str, expect_digest: &str) {
        let (out, dest) = self.copy(conf, reference).await;
        assert_success(&format!("skopeo copy {reference}"), &out);
        assert_eq!(inspect_dir_copy(&dest).manifest_digest, expect_digest, "{reference}");
    }

    async fn copy_fails(&self, conf: &Path, reference: &str) -> String {
        let (out, _) = self.copy(conf, reference).await;
        assert!(!out.status.success(), "skopeo copy {reference} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn write_policy(&self, body: &str) {
        std::fs::write(self.skopeo.workdir().join("policy.json"), body).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_by_tag_and_digest_through_the_generated_podman_mirror() {
    let s = setup("", None).await;
    let (digest, _) = s.registry.push_single_image("ubi9/img", "9.4").await;
    let conf = s.podman_conf();
    s.copy_ok(&conf, "registry.redhat.io/ubi9/img:9.4", &digest).await;
    s.copy_ok(&conf, &format!("registry.redhat.io/ubi9/img@{digest}"), &digest)
        .await;
    // --all on a multi-arch image: every platform, the list digest preserved.
    let index = s.registry.push_docker_list("ubi9/multi", "latest").await;
    let dest = s.skopeo.workdir().join("all");
    let out = s
        .skopeo
        .copy_all_to_dir_async(&conf, "docker://registry.redhat.io/ubi9/multi:latest", &dest)
        .await;
    assert_success("skopeo copy --all", &out);
    let copy = inspect_dir_copy(&dest);
    assert_eq!(copy.manifest_digest, index.digest);
    assert_eq!(copy.instance_digests.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_only_tag_only_and_blocked_sources_behave_as_containers_image_says() {
    let s = setup("", None).await;
    let (digest, _) = s.registry.push_single_image("ubi9/img", "9.4").await;
    let mirror = format!("{}/registry.redhat.io", s.server.addr);
    let conf = |policy: &str, blocked: bool| {
        s.skopeo.write_registries_conf(&format!(
            "unqualified-search-registries = []\n[[registry]]\nprefix = \"registry.redhat.io\"\nlocation = \"127.0.0.1:1\"\nblocked = {blocked}\n[[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\npull-from-mirror = \"{policy}\"\n"
        ))
    };
    let by_tag = "registry.redhat.io/ubi9/img:9.4".to_string();
    let by_digest = format!("registry.redhat.io/ubi9/img@{digest}");

    let digest_only = conf("digest-only", false);
    s.copy_ok(&digest_only, &by_digest, &digest).await;
    let err = s.copy_fails(&digest_only, &by_tag).await;
    assert!(
        err.contains("127.0.0.1:1"),
        "a tag pull skips a digest-only mirror: {err}"
    );

    let tag_only = conf("tag-only", false);
    s.copy_ok(&tag_only, &by_tag, &digest).await;
    let err = s.copy_fails(&tag_only, &by_digest).await;
    assert!(
        err.contains("127.0.0.1:1"),
        "a digest pull skips a tag-only mirror: {err}"
    );

    // A blocked source (NeverContactSource) still pulls through its mirror.
    let blocked = conf("all", true);
    s.copy_ok(&blocked, &by_tag, &digest).await;
    s.copy_ok(&blocked, &by_digest, &digest).await;
}

/// (source, blocked, [(mirror, pull-from-mirror)]) in the order sources appear.
type MirrorsBySource = Vec<(String, bool, Vec<(String, &'static str)>)>;

/// Renders IDMS/ITMS/ICSP documents into registries.conf as openshift/runtime-utils
/// does: digest mirrors get `pull-from-mirror = "digest-only"`, tag mirrors
/// `"tag-only"`, `NeverContactSource` blocks the source.
fn render_like_mco(yaml: &str, source_location: impl Fn(&str) -> String) -> String {
    let mut by_source: MirrorsBySource = Vec::new();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).expect("YAML documents");
    for v in docs {
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let (list, policy) = match kind.as_str() {
            "ImageDigestMirrorSet" => (&v["spec"]["imageDigestMirrors"], "digest-only"),
            "ImageTagMirrorSet" => (&v["spec"]["imageTagMirrors"], "tag-only"),
            "ImageContentSourcePolicy" => (&v["spec"]["repositoryDigestMirrors"], "digest-only"),
            _ => continue,
        };
        for entry in list.as_array().expect("a list of mirrors") {
            let source = entry["source"].as_str().unwrap().to_string();
            let blocked = entry["mirrorSourcePolicy"].as_str() == Some("NeverContactSource");
            let mirrors: Vec<(String, &'static str)> = entry["mirrors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m.as_str().unwrap().to_string(), policy))
                .collect();
            match by_source.iter_mut().find(|(s, _, _)| s == &source) {
                Some((_, b, ms)) => {
                    *b |= blocked;
                    ms.extend(mirrors);
                }
                None => by_source.push((source, blocked, mirrors)),
            }
        }
    }
    let mut out = String::from("unqualified-search-registries = []\n");
    for (source, blocked, mirrors) in by_source {
        out.push_str(&format!(
            "[[registry]]\nprefix = \"{source}\"\nlocation = \"{}\"\nblocked = {blocked}\n",
            source_location(&source)
        ));
        for (m, policy) in mirrors {
            out.push_str(&format!(
                "[[registry.mirror]]\nlocation = \"{m}\"\ninsecure = true\npull-from-mirror = \"{policy}\"\n"
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openshift_mirror_sets_from_client_config_pull_by_digest_and_tag() {
    let s = setup("", None).await;
    let (digest, _) = s.registry.push_single_image("ubi9/img", "9.4").await;
    let yaml = render(&s.config, ClientKind::Openshift, &s.url(), None).unwrap();
    let conf = s
        .skopeo
        .write_registries_conf(&render_like_mco(&yaml, |_| "127.0.0.1:1".into()));
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains("blocked = true") && text.contains("digest-only") && text.contains("tag-only"),
        "{text}"
    );
    s.copy_ok(&conf, &format!("registry.redhat.io/ubi9/img@{digest}"), &digest)
        .await;
    s.copy_ok(&conf, "registry.redhat.io/ubi9/img:9.4", &digest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openshift_namespace_mapping_through_an_alias_pulls_by_digest() {
    let s = setup("", None).await;
    let (digest, _) = s.registry.push_single_image("ubi8/img", "8.10").await;
    // IDMS source registry.redhat.io/ubi8 mirrored to <pullgate>/rh/ubi8, as OpenShift
    // renders a namespace mapping; pullgate's alias "rh" maps it back.
    let yaml = format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: ns\nspec:\n  imageDigestMirrors:\n  - source: registry.redhat.io/ubi8\n    mirrors:\n    - {}/rh/ubi8\n    mirrorSourcePolicy: NeverContactSource\n",
        s.server.addr
    );
    let conf = s
        .skopeo
        .write_registries_conf(&render_like_mco(&yaml, |src| src.to_string()));
    s.copy_ok(&conf, &format!("registry.redhat.io/ubi8/img@{digest}"), &digest)
        .await;
    // registry.redhat.io/ubi8-minimal does not match the prefix: not mirrored, and blocked
    // is only for registry.redhat.io/ubi8, so the pull goes to the (unreachable) source.
    let err = s
        .copy_fails(&conf, &format!("registry.redhat.io/ubi8-minimal@{digest}"))
        .await;
    assert!(
        !err.contains(&s.server.addr.to_string()),
        "ubi8-minimal never reaches pullgate: {err}"
    );
}

fn signed_by_policy(key: &Path) -> String {
    format!(
        r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"registry.redhat.io":[{{"type":"signedBy","keyType":"GPGKeys","keyPath":"{}"}}]}},"dir":{{"":[{{"type":"insecureAcceptAnything"}}]}}}}}}"#,
        key.display()
    )
}

async fn signature_policy_is_enforced_through_the_mirror(extension_api: bool) {
    let files: Files = Arc::default();
    let lookaside = format!("{}/containers/sigstore", serve_files(files.clone()).await);
    let top = format!("[signatures]\nextension_api = {extension_api}\n");
    let s = setup(&top, Some(&lookaside)).await;
    let trusted = GpgKey::generate("trusted");
    let other = GpgKey::generate("other");
    let (signed, signed_bytes) = s.registry.push_single_image("ubi9/img", "signed").await;
    let (unsigned, _) = s.registry.push_single_image("ubi9/img", "unsigned").await;
    let (wrong, wrong_bytes) = s.registry.push_single_image("ubi9/img", "wrong").await;
    let publish = |digest: &str, sig: Vec<u8>| {
        let path = format!("/containers/sigstore/ubi9/img@{}/signature-1", digest.replace(':', "="));
        files.lock().unwrap().insert(path, sig);
    };
    publish(
        &signed,
        trusted.sign(&signed_bytes, "registry.redhat.io/ubi9/img:signed"),
    );
    publish(&wrong, other.sign(&wrong_bytes, "registry.redhat.io/ubi9/img:wrong"));
    let conf = s.podman_conf();
    s.write_policy(&signed_by_policy(&trusted.public_key));

    s.copy_ok(&conf, "registry.redhat.io/ubi9/img:signed", &signed).await;
    let err = s.copy_fails(&conf, "registry.redhat.io/ubi9/img:unsigned").await;
    assert!(
        err.contains("A signature was required, but no signature exists"),
        "{err}"
    );
    let err = s.copy_fails(&conf, "registry.redhat.io/ubi9/img:wrong").await;
    assert!(
        err.contains("Invalid GPG signature") || err.contains("not accepted"),
        "{err}"
    );
    let _ = unsigned;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_by_policy_passes_and_fails_correctly_via_the_extension_api() {
    signature_policy_is_enforced_through_the_mirror(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_by_policy_passes_and_fails_correctly_via_the_lookaside() {
    signature_policy_is_enforced_through_the_mirror(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pulls_through_the_generated_mirror() {
    let podman = common::registry::require_tool("podman");
    let s = setup("", None).await;
    let (digest, _) = s.registry.push_single_image("ubi9/img", "9.4").await;
    let conf = s.podman_conf();
    let root = tempfile::Builder::new().prefix("pullgate-podman-").tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(home.join(".config/containers/registries.d")).unwrap();
    std::fs::copy(
        s.skopeo.workdir().join("registries.d/50-pullgate.yaml"),
        home.join(".config/containers/registries.d/50-pullgate.yaml"),
    )
    .unwrap();
    let policy = root.path().join("policy.json");
    std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    let out = tokio::process::Command::new(podman)
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .env("HOME", &home)
        .arg("--root")
        .arg(root.path().join("root"))
        .arg("--runroot")
        .arg(root.path().join("runroot"))
        .args(["--storage-driver", "vfs", "pull", "--signature-policy"])
        .arg(&policy)
        .arg("registry.redhat.io/ubi9/img:9.4")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run podman");
    assert_success("podman pull registry.redhat.io/ubi9/img:9.4", &out);
    assert!(
        s.server.proxy.has_manifest(&digest.parse().unwrap()).await.unwrap(),
        "served by pullgate"
    );
}
