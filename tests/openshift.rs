//! OpenShift through pullgate alone: quay.io as an upstream (anonymous tokens, CDN
//! redirects, digest pulls, mirror paths that keep the source layout), release
//! signatures and the update graph served and cached, `prefetch --imageset` warming
//! releases, catalogs and additional images once, and everything served offline
//! afterwards through skopeo with IDMS-style mirror configuration.

mod common;

use common::openshift::{CATALOG_REPO, CHANNEL, COMPONENT_REPO, OpenShiftWorld, RELEASE_REPO, WorldSize, image_blobs};
use common::skopeo::{Skopeo, assert_success, inspect_dir_copy};
use pullgate::config::Config;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `pullgate <args>` as a process, without blocking the runtime the fakes run on.
async fn pullgate(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(common::pullgate_bin())
        .args(args)
        .output()
        .await
        .expect("run pullgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn serve(config: &Path) -> pullgate::app::RunningServer {
    pullgate::app::spawn(&Config::load(config).unwrap()).await.unwrap()
}

/// The world of `size`, a temp dir and a pullgate config for it (`extra_top` before the
/// tables, `extra_openshift` in `[openshift]`).
async fn setup(
    size: &WorldSize,
    extra_top: &str,
    extra_openshift: &str,
) -> (OpenShiftWorld, tempfile::TempDir, PathBuf) {
    let world = OpenShiftWorld::start(size).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "pullgate.toml",
        &world.config_toml(dir.path(), extra_top, extra_openshift),
    );
    (world, dir, config)
}

fn digest_of(pullspec: &str) -> &str {
    pullspec.rsplit_once('@').unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quay_serves_release_images_by_digest_anonymously_through_its_cdn() {
    let (world, _dir, config) = setup(&WorldSize::default(), "", "").await;
    let server = serve(&config).await;
    let client = common::client();
    let component = &world.releases[0].components[0];
    let digest = digest_of(component);
    // The mirror path keeps the source layout: <pullgate>/quay.io/<namespace>/<repo>.
    for (path, query) in [
        (format!("/v2/quay.io/{COMPONENT_REPO}/manifests/{digest}"), ""),
        (format!("/v2/{COMPONENT_REPO}/manifests/{digest}"), "?ns=quay.io"),
    ] {
        let r = client
            .get(format!("{}{path}{query}", server.url()))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}{query}");
        assert_eq!(r.headers()["docker-content-digest"], digest);
    }
    for blob in image_blobs(&world.quay, digest) {
        let r = client
            .get(format!("{}/v2/quay.io/{COMPONENT_REPO}/blobs/{blob}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        assert_eq!(common::fake_upstream::sha256_digest(&body), blob);
        assert_eq!(world.quay.cdn_gets(&blob), 1, "{blob} came from the CDN once");
    }
    // Never pulled by tag: the component has no tag at all, and quay's tokens were
    // anonymous (no credentials sent anywhere).
    assert!(
        world
            .quay
            .token_requests()
            .iter()
            .all(|(_, with_credentials)| !with_credentials)
    );
    assert!(!world.quay.cdn_saw_authorization());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_signatures_are_served_kept_and_served_offline() {
    let (world, _dir, config) = setup(&WorldSize::default(), "", "missing_signature_ttl = \"1s\"").await;
    let mut server = serve(&config).await;
    let client = common::client();
    let release = &world.releases[0];
    let hex = release.digest.trim_start_matches("sha256:");
    let sig = |n: u32| format!("/openshift/signatures/sha256={hex}/signature-{n}");
    let get = |path: String, base: String| {
        let client = client.clone();
        async move { client.get(format!("{base}{path}")).send().await.unwrap() }
    };
    let expected = world.store.sign(&release.digest, 2);
    for n in 1..=2 {
        let r = get(sig(n), server.url()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), expected[n as usize - 1], "byte-exact");
    }
    // A missing one is 404, not asked again within the TTL, asked again after it.
    assert_eq!(get(sig(3), server.url()).await.status(), 404);
    let asked = world.store.state.signature_gets.load(SeqCst);
    assert_eq!(get(sig(3), server.url()).await.status(), 404);
    assert_eq!(
        world.store.state.signature_gets.load(SeqCst),
        asked,
        "a miss is remembered"
    );
    world.store.sign(&release.digest, 3);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get(sig(3), server.url()).await.status(),
        200,
        "asked again after the TTL"
    );
    // Outside 1..=9, or not a signature path: 404 without asking.
    for bad in [sig(0), sig(10), format!("/openshift/signatures/sha256={hex}/x")] {
        assert_eq!(get(bad, server.url()).await.status(), 404);
    }
    // Larger than 64 KiB: refused, never served.
    let big = format!("sha256:{}", "b".repeat(64));
    world
        .store
        .state
        .signatures
        .lock()
        .unwrap()
        .insert(("b".repeat(64), 1), bytes::Bytes::from(vec![7u8; 70 * 1024]));
    let r = get(
        format!("/openshift/signatures/sha256={}/signature-1", &big[7..]),
        server.url(),
    )
    .await;
    assert_eq!(r.status(), 502);
    // Offline, and after a restart: what was fetched is served.
    world.store.stop();
    server.shutdown().await.unwrap();
    server = serve(&config).await;
    for n in 1..=2 {
        let r = get(sig(n), server.url()).await;
        assert_eq!(r.status(), 200, "signature-{n} offline");
        assert_eq!(r.bytes().await.unwrap(), expected[n as usize - 1]);
    }
    server.shutdown().await.unwrap();
    // Without [openshift], the routes say so.
    let plain = common::Harness::start().await;
    let r = plain.get(&sig(1)).await;
    assert_eq!(r.status(), 404);
    assert_eq!(common::error_code(r).await, "UNSUPPORTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_graph_is_cached_for_its_ttl_and_served_stale() {
    let (world, _dir, config) = setup(&WorldSize::default(), "", "graph_ttl = \"1s\"").await;
    let mut server = serve(&config).await;
    let client = common::client();
    let expected = common::openshift::graph_json(&world.releases);
    let query = |id: &str| format!("channel={CHANNEL}&arch=amd64&id={id}&version=4.16.0");
    let id1 = "0f3c2b5e-1a2b-4c3d-8e9f-001122334455";
    let id2 = "11111111-2222-3333-4444-555555555555";
    let get = |q: String, base: String| {
        let client = client.clone();
        async move { client.get(format!("{base}/openshift/graph?{q}")).send().await.unwrap() }
    };
    let r = get(query(id1), server.url()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.bytes().await.unwrap(), expected);
    assert_eq!(
        world.store.state.graph_queries.lock().unwrap().last().unwrap(),
        &query(id1),
        "channel, arch, id and version passed through"
    );
    assert_eq!(get(query(id1), server.url()).await.status(), 200);
    assert_eq!(world.store.state.graph_gets.load(SeqCst), 1, "fresh for graph_ttl");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(query(id1), server.url()).await.status(), 200);
    assert_eq!(
        world.store.state.graph_gets.load(SeqCst),
        2,
        "asked again after graph_ttl"
    );
    // The service failing, then unreachable: the last answer, also for a cluster that
    // never asked (same channel and arch), also after a restart.
    world.store.state.failing.store(true, SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get(query(id1), server.url()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), expected, "stale while failing");
    world.store.stop();
    server.shutdown().await.unwrap();
    server = serve(&config).await;
    let r = get(query(id2), server.url()).await;
    assert_eq!(r.status(), 200, "another cluster, offline");
    assert_eq!(r.bytes().await.unwrap(), expected);
    // A channel nobody asked for while online is an error, not someone else's graph.
    let r = get("channel=fast-4.99&arch=amd64".into(), server.url()).await;
    assert_eq!(r.status(), 502);
    for bad in ["channel=a%20b", "arch=x/y", "id=not-a-uuid!"] {
        assert_eq!(get(bad.into(), server.url()).await.status(), 400, "{bad}");
    }
    server.shutdown().await.unwrap();
}

/// The image set of the tests: both releases of the channel, `alpha`'s default channel
/// head, `beta`'s `candidate` head, an additional image, `beta`'s operator blocked.
fn imageset(extra: &str) -> String {
    format!(
        r#"kind: ImageSetConfiguration
apiVersion: mirror.openshift.io/v2alpha1
mirror:
  platform:
    channels:
    - name: {CHANNEL}
      minVersion: 4.16.0
      maxVersion: 4.16.1
    graph: true
  operators:
  - catalog: registry.redhat.io/{CATALOG_REPO}:v4.16
    packages:
    - name: alpha
    - name: beta
      channels:
      - name: candidate
  additionalImages:
  - name: registry.redhat.io/ubi9/ubi:latest
{extra}  blockedImages:
  - name: ns/beta-operator
  helm: {{}}
"#
    )
}

/// The blobs `images` (pullspecs or `repo:tag` in `fake`) name.
fn blobs_of(world: &OpenShiftWorld, images: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for image in images {
        let fake = if image.starts_with("quay.io/") {
            &world.quay
        } else {
            &world.rh
        };
        let digest = match image.rsplit_once('@') {
            Some((_, d)) => d.to_string(),
            None => {
                let (name, tag) = image.rsplit_once(':').unwrap();
                let repo = name.split_once('/').unwrap().1;
                fake.tag_digest(repo, tag)
                    .unwrap_or_else(|| panic!("{image} is tagged"))
            }
        };
        out.extend(image_blobs(fake, &digest));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_imageset_warms_everything_once_then_nothing_and_serves_it_offline() {
    let (world, dir, config) = setup(&WorldSize::default(), "", "").await;
    let ubi = world.rh.add_image("ubi9/ubi", "latest", &[4000]);
    let set = write(dir.path(), "imageset.yaml", &imageset(""));
    let args = [
        "prefetch",
        "--config",
        config.to_str().unwrap(),
        "--imageset",
        set.to_str().unwrap(),
    ];

    // A dry run: the images and their total, only what planning must read fetched.
    let (code, out, err) = pullgate(&[&args[..], &["--dry-run"]].concat()).await;
    assert_eq!(code, 0, "{out}{err}");
    // Shown with --nocapture: the README and the issue quote it.
    eprintln!("--- prefetch --imageset --dry-run ---\n{out}");
    let alpha = world.bundle("alpha.v1.2.0");
    let beta = world.bundle("beta.v0.3.0");
    let mut expected: Vec<String> = world.releases.iter().map(|r| r.pullspec.clone()).collect();
    expected.extend(world.releases.iter().flat_map(|r| r.components.clone()));
    expected.push(world.catalog_image());
    expected.extend([alpha.image.clone(), alpha.related[0].clone(), beta.image.clone()]);
    expected.push("registry.redhat.io/ubi9/ubi:latest".into());
    let expected: Vec<String> = expected.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
    for image in &expected {
        assert!(out.contains(image.as_str()), "{image} is listed:\n{out}");
    }
    assert!(
        !out.contains(&beta.related[0]),
        "blockedImages left beta's operator out:\n{out}"
    );
    assert!(
        !out.contains(&world.bundle("alpha.v1.1.0").image),
        "only the head:\n{out}"
    );
    assert!(out.contains("mirror.platform.graph is ignored"), "{out}");
    assert!(out.contains("mirror.helm is ignored"), "{out}");
    let blobs = blobs_of(&world, &expected);
    let line = format!("{} images, ", expected.len());
    assert!(out.contains(&line), "{line}…\n{out}");
    assert!(out.contains(&format!("{} unique blobs", blobs.len())), "{out}");
    // Planning read each payload's last layer and the catalog's config and two layers.
    assert_eq!(world.cdn_gets(), world.releases.len() + 3, "{out}");

    // The run: every unique blob from the CDN exactly once.
    let (code, out, err) = pullgate(&args).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{} of {} images prefetched", expected.len(), expected.len())),
        "{out}"
    );
    for b in &blobs {
        let gets = world.quay.cdn_gets(b) + world.rh.cdn_gets(b);
        assert_eq!(gets, 1, "{b} fetched once");
    }
    assert_eq!(world.cdn_gets(), blobs.len(), "nothing else fetched");
    for b in image_blobs(&world.rh, digest_of(&beta.related[0])) {
        assert_eq!(world.rh.cdn_gets(&b), 0, "blocked images are not fetched");
    }
    assert!(ubi.layer_digests.iter().all(|d| world.rh.cdn_gets(d) == 1));

    // A re-run fetches nothing (HEADs only).
    world.quay.reset_counters();
    world.rh.reset_counters();
    let (code, out, err) = pullgate(&args).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(world.cdn_gets(), 0, "a re-run fetched nothing:\n{out}");
    assert!(
        out.contains(&format!("{} already cached, 0 fetched", blobs.len())),
        "{out}"
    );

    // Offline: every fake stopped, skopeo pulls by digest through IDMS-style mirrors.
    world.stop_all();
    let server = serve(&config).await;
    let skopeo = Skopeo::new();
    let conf = skopeo.write_registries_conf(&format!(
        "unqualified-search-registries = []\n\
         [[registry]]\nprefix = \"quay.io/{RELEASE_REPO}\"\nlocation = \"quay.io/{RELEASE_REPO}\"\nblocked = true\n\
         [[registry.mirror]]\nlocation = \"{addr}/quay.io/{RELEASE_REPO}\"\ninsecure = true\npull-from-mirror = \"digest-only\"\n\
         [[registry]]\nprefix = \"quay.io/{COMPONENT_REPO}\"\nlocation = \"quay.io/{COMPONENT_REPO}\"\nblocked = true\n\
         [[registry.mirror]]\nlocation = \"{addr}/quay.io/{COMPONENT_REPO}\"\ninsecure = true\npull-from-mirror = \"digest-only\"\n\
         [[registry]]\nprefix = \"registry.redhat.io\"\nlocation = \"registry.redhat.io\"\nblocked = true\n\
         [[registry.mirror]]\nlocation = \"{addr}/registry.redhat.io\"\ninsecure = true\npull-from-mirror = \"digest-only\"\n",
        addr = server.addr
    ));
    for image in [
        &world.releases[1].pullspec,
        &world.releases[0].components[0],
        &alpha.image,
    ] {
        let out_dir = tempfile::tempdir().unwrap();
        let dest = out_dir.path().join("copy");
        let output = skopeo
            .copy_all_to_dir_async(&conf, &format!("docker://{image}"), &dest)
            .await;
        assert_success(&format!("skopeo copy {image} offline"), &output);
        let copy = inspect_dir_copy(&dest);
        assert_eq!(copy.manifest_digest, digest_of(image));
    }
    let client = common::client();
    let hex = world.releases[1].digest.trim_start_matches("sha256:");
    let r = client
        .get(format!(
            "{}/openshift/signatures/sha256={hex}/signature-2",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "release signatures were warmed");
    let r = client
        .get(format!("{}/openshift/graph?channel={CHANNEL}&arch=amd64", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the graph was kept");
    server.shutdown().await.unwrap();
}

/// Each selection rule, by dry run: the listed images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imageset_selections_follow_oc_mirror() {
    let size = WorldSize {
        versions: vec!["4.16.0".into(), "4.16.1".into(), "4.16.2".into(), "4.16.3".into()],
        components: 3,
        ..WorldSize::default()
    };
    let (world, dir, config) = setup(&size, "", "").await;
    let dry = async |yaml: &str| {
        let set = write(dir.path(), "set.yaml", yaml);
        let (code, out, err) = pullgate(&[
            "prefetch",
            "--config",
            config.to_str().unwrap(),
            "--imageset",
            set.to_str().unwrap(),
            "--dry-run",
        ])
        .await;
        (code, out + &err)
    };
    let ok = |(code, out): (i32, String)| {
        assert_eq!(code, 0, "{out}");
        out
    };
    let release = |v: usize| world.releases[v].pullspec.as_str();
    let head = "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\nmirror:\n";
    let channel = |body: &str| format!("{head}  platform:\n    channels:\n    - name: {CHANNEL}\n{body}");
    // Heads only: the latest release.
    let out = ok(dry(&channel("")).await);
    assert!(
        out.contains(release(3)) && !out.contains(release(2)) && !out.contains(release(0)),
        "{out}"
    );
    // A range: every release in it.
    let out = ok(dry(&channel("      minVersion: 4.16.1\n      maxVersion: 4.16.2\n")).await);
    assert!(out.contains(release(1)) && out.contains(release(2)), "{out}");
    assert!(!out.contains(release(0)) && !out.contains(release(3)), "{out}");
    // The shortest path from 4.16.0 to 4.16.3 takes the edge that skips (0 → 3).
    let out = ok(dry(&channel(
        "      minVersion: 4.16.0\n      maxVersion: 4.16.3\n      shortestPath: true\n",
    ))
    .await);
    assert!(out.contains(release(0)) && out.contains(release(3)), "{out}");
    assert!(!out.contains(release(1)) && !out.contains(release(2)), "{out}");
    // full: every release of the channel.
    let out = ok(dry(&channel("      full: true\n")).await);
    assert!((0..4).all(|v| out.contains(release(v))), "{out}");
    // Catalogs: full takes every bundle; a package range takes the bundles in it; a
    // listed channel takes its head.
    let catalog = |body: &str| format!("{head}  operators:\n  - catalog: {}\n{body}", world.catalog_image());
    let out = ok(dry(&catalog("    full: true\n")).await);
    for b in &world.bundles {
        // alpha.v1.1.1 is in no channel (only skipped): OLM cannot install it.
        let wanted = b.name != "alpha.v1.1.1";
        assert_eq!(out.contains(&b.image), wanted, "full: {}\n{out}", b.name);
    }
    let out = ok(dry(&catalog(
        "    packages:\n    - name: alpha\n      minVersion: 1.1.0\n      maxVersion: 1.2.0\n",
    ))
    .await);
    for (name, wanted) in [
        ("alpha.v1.0.0", false),
        ("alpha.v1.1.0", true),
        ("alpha.v1.2.0", true),
        ("alpha.v1.3.0", false),
    ] {
        assert_eq!(out.contains(&world.bundle(name).image), wanted, "{name}\n{out}");
    }
    let out = ok(dry(&catalog(
        "    packages:\n    - name: alpha\n      channels:\n      - name: fast\n",
    ))
    .await);
    assert!(out.contains(&world.bundle("alpha.v1.3.0").image), "{out}");
    assert!(!out.contains(&world.bundle("alpha.v1.2.0").image), "{out}");
    // Whited out and ignored files are not part of the catalog.
    let (code, out) = dry(&catalog("    packages:\n    - name: gamma\n")).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED  catalog") && out.contains("gamma"),
        "the unknown package is named:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_image_does_not_stop_the_others() {
    let (world, dir, config) = setup(&WorldSize::default(), "", "").await;
    world.rh.add_image("ubi9/ubi", "latest", &[4000]);
    // A component whose layer the CDN lost: the release's other images still warm.
    let broken = world.releases[1].components.last().unwrap().clone();
    let lost = image_blobs(&world.quay, digest_of(&broken)).pop().unwrap();
    world.quay.remove_blob(&lost);
    let set = write(
        dir.path(),
        "imageset.yaml",
        &imageset("  - name: registry.redhat.io/nope/nope:1\n"),
    );
    let (code, out, err) = pullgate(&[
        "prefetch",
        "--config",
        config.to_str().unwrap(),
        "--imageset",
        set.to_str().unwrap(),
        "--jobs",
        "3",
    ])
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("FAILED  registry.redhat.io/nope/nope:1"), "{out}");
    assert!(out.contains(&format!("FAILED  {broken}")), "{out}");
    assert!(out.contains("2 failed:"), "{out}");
    assert!(
        out.contains(&format!("ok      {}", world.releases[0].pullspec)),
        "{out}"
    );
    assert!(out.contains("ok      registry.redhat.io/ubi9/ubi:latest"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_config_for_openshift_points_clusters_at_pullgate() {
    let (world, dir, config) = setup(&WorldSize::default(), "", "").await;
    let set = write(dir.path(), "imageset.yaml", &imageset(""));
    let (code, out, err) = pullgate(&[
        "client-config",
        "--for",
        "openshift",
        "--url",
        "https://pullgate.example:5000",
        "--config",
        config.to_str().unwrap(),
        "--imageset",
        set.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&out).expect("valid YAML");
    let of_kind = |kind: &str| docs.iter().filter(|d| d["kind"] == kind).collect::<Vec<_>>();
    let idms: Vec<(String, String)> = of_kind("ImageDigestMirrorSet")
        .iter()
        .flat_map(|d| d["spec"]["imageDigestMirrors"].as_array().unwrap().clone())
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_string(),
                e["mirrors"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for repo in [RELEASE_REPO, COMPONENT_REPO] {
        let source = format!("quay.io/{repo}");
        assert!(
            idms.contains(&(source.clone(), format!("pullgate.example:5000/{source}"))),
            "{source}: {idms:?}"
        );
    }
    let itms = of_kind("ImageTagMirrorSet");
    assert!(itms.iter().any(|d| {
        d["spec"]["imageTagMirrors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["source"] == format!("registry.redhat.io/{CATALOG_REPO}"))
    }));
    let cs = of_kind("CatalogSource");
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0]["metadata"]["namespace"], "openshift-marketplace");
    assert_eq!(
        cs[0]["spec"]["image"],
        format!("pullgate.example:5000/registry.redhat.io/{CATALOG_REPO}:v4.16")
    );
    let cv = of_kind("ClusterVersion");
    assert_eq!(
        cv[0]["spec"]["upstream"],
        "https://pullgate.example:5000/openshift/graph"
    );
    assert_eq!(
        cv[0]["spec"]["signatureStores"][0]["url"],
        "https://pullgate.example:5000/openshift/signatures"
    );

    // The signatures ConfigMap, read from a running pullgate.
    let server = serve(&config).await;
    let release = &world.releases[0];
    let expected = world.store.sign(&release.digest, 2);
    let (code, out, err) = pullgate(&[
        "client-config",
        "--for",
        "openshift-release-signatures",
        "--url",
        &server.url(),
        "--config",
        config.to_str().unwrap(),
        "--release",
        &release.pullspec,
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let cm: serde_json::Value = serde_saphyr::from_str(&out).expect("valid YAML");
    assert_eq!(cm["metadata"]["namespace"], "openshift-config-managed");
    assert_eq!(
        cm["metadata"]["labels"]["release.openshift.io/verification-signatures"],
        ""
    );
    use base64::Engine as _;
    let hex = release.digest.trim_start_matches("sha256:");
    for (n, sig) in expected.iter().enumerate() {
        let value = cm["binaryData"][format!("sha256-{hex}-{}", n + 1)].as_str().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(value).unwrap(),
            sig.to_vec()
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_larger_than_max_size_warns_before_it_starts() {
    let size = WorldSize {
        base_layer_size: 700 * 1024,
        ..WorldSize::default()
    };
    let (_world, dir, config) = setup(&size, "[cache]\nmax_size = \"1MiB\"", "").await;
    let set = write(
        dir.path(),
        "imageset.yaml",
        &format!(
            "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v1alpha2\nmirror:\n  platform:\n    channels:\n    - name: {CHANNEL}\n"
        ),
    );
    let (code, out, err) = pullgate(&[
        "prefetch",
        "--config",
        config.to_str().unwrap(),
        "--imageset",
        set.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let warning = err
        .lines()
        .find(|l| l.contains("warning:") && l.contains("free under [cache] max_size"))
        .unwrap_or_else(|| panic!("a warning on stderr:\n{err}"));
    assert!(warning.contains("to fetch"), "{warning}");
    assert!(out.contains("warning:"), "and in the summary:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_walks_both_openshift_hosts_and_names_the_one_that_fails() {
    let (world, _dir, config) = setup(&WorldSize::default(), "", &format!("probe_channel = \"{CHANNEL}\"")).await;
    let config = config.to_str().unwrap();
    let (code, out, err) = pullgate(&["doctor", "--config", config, "--upstream", "openshift"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("upstream openshift-signatures"), "{out}");
    assert!(out.contains("upstream openshift-graph"), "{out}");
    assert!(out.lines().any(|l| l.contains("PASS signature")), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("PASS graph") && l.contains("2 releases")),
        "{out}"
    );
    assert!(
        !out.contains("upstream quay.io"),
        "--upstream openshift walks only those:\n{out}"
    );
    world.store.stop();
    let (code, out, _) = pullgate(&["doctor", "--config", config, "--upstream", "openshift"]).await;
    assert_eq!(code, 1, "{out}");
    let fail = out.lines().find(|l| l.contains("FAIL")).unwrap_or_default();
    assert!(
        fail.contains("connect") && fail.contains(&world.store.addr.to_string()),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openshift_hosts_go_through_the_egress_proxy_and_redirect_nowhere_else() {
    let (proxy, seen) = common::forward_proxy::start().await;
    let (world, _dir, config) = setup(&WorldSize::default(), "", &format!("egress_proxy = \"{proxy}\"")).await;
    let server = serve(&config).await;
    let client = common::client();
    let r = client
        .get(format!("{}/openshift/graph?channel={CHANNEL}&arch=amd64", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let hex = world.releases[0].digest.trim_start_matches("sha256:");
    let sig = format!("{}/openshift/signatures/sha256={hex}/signature-1", server.url());
    assert_eq!(client.get(&sig).send().await.unwrap().status(), 200);
    let host = world.store.addr.to_string();
    let through: Vec<String> = seen.lock().unwrap().clone();
    assert!(
        through.iter().filter(|l| l.contains(&host)).count() >= 2,
        "both requests went through the egress proxy: {through:?}"
    );
    // A store that redirects to a host [openshift] does not name: refused, not dialled.
    *world.store.state.redirect_signatures_to.lock().unwrap() = Some(world.quay.cdn_url.clone());
    let sig2 = format!("{}/openshift/signatures/sha256={hex}/signature-2", server.url());
    assert_eq!(client.get(&sig2).send().await.unwrap().status(), 502);
    assert_eq!(world.quay.cdn_gets_total(), 0, "the other host was never asked");
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&world.quay.cdn_addr.to_string())),
        "nor through the proxy"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_imageset_goes_through_a_running_pullgate() {
    let port = common::registry::pick_free_port();
    let (world, dir, config) = setup(&WorldSize::default(), "", "").await;
    // The running pullgate holds the database; prefetch reaches it at its listen address.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    std::fs::write(&config, text).unwrap();
    let server = common::ServeProcess::start(&config, &[]);
    let set = write(dir.path(), "imageset.yaml", &imageset(""));
    world.rh.add_image("ubi9/ubi", "latest", &[4000]);
    let (code, out, err) = pullgate(&[
        "prefetch",
        "--config",
        config.to_str().unwrap(),
        "--imageset",
        set.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("of 15 images prefetched") && !out.contains("FAILED"),
        "{out}"
    );
    let (_, log) = server.stop();
    let prefetched = log.iter().filter(|l| l.contains("pullgate::access")).count();
    assert!(
        prefetched > 30,
        "the running pullgate served the prefetch ({prefetched} requests)"
    );
}
