//! containerd and Pulp (Satellite, AAP hub) request sequences from protocol.md, replayed
//! at the HTTP level against pullgate in front of the fake Red Hat upstream. Each replay
//! reads its settings from `pullgate client-config` output, as an operator would.

mod common;

use common::fake_upstream::{MT_DOCKER_LIST, MT_OCI_MANIFEST};
use common::{Harness, body_bytes};
use pullgate::cli::client_config::{ClientKind, render, split_files};

/// containerd's resolve Accept: one comma-joined line ending in */* (resolver.go).
const CONTAINERD_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";
/// Pulp's Accept: one comma-joined line (pulp_container constants.py).
const PULP_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json,application/vnd.docker.distribution.manifest.v1+json,application/vnd.docker.distribution.manifest.v1+prettyjws,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json";

/// The API root containerd uses for a `[host."…"]` entry: with `override_path` the
/// host URL's path is the root, else `/v2` is appended (config/hosts.go).
fn containerd_roots(hosts_toml: &str) -> Vec<String> {
    let v: toml::Value = toml::from_str(hosts_toml).expect("hosts.toml is TOML");
    v["host"]
        .as_table()
        .expect("[host.…] tables")
        .iter()
        .map(|(url, t)| {
            let caps = t["capabilities"].as_array().unwrap();
            assert!(
                caps.iter().any(|c| c.as_str() == Some("pull")) && caps.iter().any(|c| c.as_str() == Some("resolve"))
            );
            if t.get("override_path").and_then(|o| o.as_bool()) == Some(true) {
                url.trim_end_matches('/').to_string()
            } else {
                format!("{}/v2", url.trim_end_matches('/'))
            }
        })
        .collect()
}

async fn containerd_pull(h: &Harness, root: &str, repo: &str, tag: &str) {
    let ns = "?ns=registry.redhat.io";
    // Resolve: HEAD by tag, needs Docker-Content-Digest and the real Content-Length.
    let head = h
        .client
        .head(format!("{root}/{repo}/manifests/{tag}{ns}"))
        .header("accept", CONTAINERD_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200, "{root}: HEAD {tag}");
    let digest = head.headers()["docker-content-digest"].to_str().unwrap().to_string();
    let length: usize = head.headers()["content-length"].to_str().unwrap().parse().unwrap();
    assert!(length > 0, "HEAD reports the real size, never 0");
    assert_eq!(head.headers()["oci-namespace"], "registry.redhat.io");
    // Fetch by digest: Accept = descriptor media type, */*.
    let media_type = head.headers()["content-type"].to_str().unwrap().to_string();
    let index = h
        .client
        .get(format!("{root}/{repo}/manifests/{digest}{ns}"))
        .header("accept", format!("{media_type}, */*"))
        .send()
        .await
        .unwrap();
    let index_bytes = index.bytes().await.unwrap();
    assert_eq!(index_bytes.len(), length);
    assert_eq!(pullgate::oci::Digest::of(&index_bytes).to_string(), digest);
    let entries = pullgate::oci::image::index_entries(&index_bytes);
    let child = entries
        .iter()
        .find(|e| e.architecture.as_deref() == Some("amd64"))
        .expect("amd64 child");
    let m = h
        .client
        .get(format!("{root}/{repo}/manifests/{}{ns}", child.digest))
        .header("accept", format!("{}, */*", child.media_type))
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    let manifest: serde_json::Value = serde_json::from_slice(&m.bytes().await.unwrap()).unwrap();
    // Referrers: 404 → fallback to the tag schema → 404 means none.
    let referrers = h
        .client
        .get(format!("{root}/{repo}/referrers/{}{ns}", child.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(referrers.status(), 404);
    let fallback = h
        .client
        .get(format!(
            "{root}/{repo}/manifests/{}{ns}",
            child.digest.replace(':', "-")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(fallback.status(), 404);
    // Layers in parallel Range chunks (containerd 2.x), reassembled and verified.
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap().to_string();
        let size = layer["size"].as_u64().unwrap() as usize;
        let chunk = size.div_ceil(4).max(1);
        let mut parts = Vec::new();
        for off in (0..size).step_by(chunk) {
            let (client, url) = (h.client.clone(), format!("{root}/{repo}/blobs/{digest}{ns}"));
            parts.push(tokio::spawn(async move {
                let r = client
                    .get(url)
                    .header("range", format!("bytes={off}-"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 206, "range from {off}");
                let mut bytes = body_bytes(r).await.unwrap();
                bytes.truncate(chunk);
                bytes
            }));
        }
        let mut blob = Vec::new();
        for p in parts {
            blob.extend(p.await.unwrap());
        }
        blob.truncate(size);
        assert_eq!(
            pullgate::oci::Digest::of(&blob).to_string(),
            digest,
            "reassembled layer verifies"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_sequences_work_with_the_generated_hosts_toml() {
    let h = Harness::start_with("default_upstream = \"registry.redhat.io\"", "").await;
    h.fake.add_docker_list("ubi9/ubi", "latest");
    let url = h.url("");
    let out = render(&h.config, ClientKind::Containerd, &url, Some("registry.redhat.io")).unwrap();
    let files = split_files(&out);
    assert_eq!(files[0].0, "/etc/containerd/certs.d/registry.redhat.io/hosts.toml");
    let roots = containerd_roots(&files[0].1);
    assert_eq!(
        roots,
        [format!("{url}/v2/registry.redhat.io")],
        "override_path: the same layout podman uses"
    );
    containerd_pull(&h, &roots[0], "ubi9/ubi", "latest").await;
    // The plain layout ([host."http://pullgate"]): /v2/<repo>?ns=.
    containerd_pull(&h, &format!("{url}/v2"), "ubi9/ubi", "latest").await;
    // Never prefixed twice upstream.
    assert!(h.fake.manifest_requests().iter().all(|r| r.repo == "ubi9/ubi"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulp_sync_sequence_works_with_the_generated_satellite_settings() {
    let h = Harness::start().await;
    let mut expected = Vec::new();
    for t in ["9.3", "9.4", "9.4-source", "9.5", "latest"] {
        expected.push((t, h.fake.add_image("ubi9/ubi", t, &[100, 200])));
    }
    h.fake.default_tags_page.store(2, std::sync::atomic::Ordering::SeqCst);
    let settings: toml::Value =
        toml::from_str(&render(&h.config, ClientKind::Satellite, &h.url(""), None).unwrap()).unwrap();
    let registry_url = settings["satellite"]["registry_url"].as_str().unwrap().to_string();
    let upstream_name = settings["satellite"]["repository"][0]["upstream_name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(upstream_name, "registry.redhat.io/ubi9/ubi");

    // 1. Signature source detection: unauthenticated GET /v2/, headers only.
    let v2 = h.client.get(format!("{registry_url}/v2/")).send().await.unwrap();
    assert_eq!(v2.headers()["x-registry-supports-signatures"], "1");
    // 2. The full tag list, following Link (urljoin with the registry URL).
    let mut tags: Vec<String> = Vec::new();
    let mut next = Some(format!("{registry_url}/v2/{upstream_name}/tags/list"));
    while let Some(url) = next.take() {
        let r = h.client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        next = r.headers().get("link").map(|l| {
            let target = l
                .to_str()
                .unwrap()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_string();
            assert!(target.starts_with("/v2/"), "an absolute path: {target}");
            url::Url::parse(&registry_url)
                .unwrap()
                .join(&target)
                .unwrap()
                .to_string()
        });
        let body = common::json(r).await;
        assert_eq!(body["name"].as_str(), Some(upstream_name.as_str()));
        tags.extend(
            body["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string()),
        );
    }
    assert_eq!(tags, ["9.3", "9.4", "9.4-source", "9.5", "latest"]);
    // Include 9.4*, exclude *-source, filtered client-side.
    let selected: Vec<&String> = tags
        .iter()
        .filter(|t| t.starts_with("9.4") && !t.ends_with("-source"))
        .collect();
    assert_eq!(selected, ["9.4"]);
    for tag in selected {
        // 3. HEAD by tag with one comma-joined Accept, then GET by the header's digest.
        let head = h
            .client
            .head(format!("{registry_url}/v2/{upstream_name}/manifests/{tag}"))
            .header("accept", PULP_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        let digest = head.headers()["docker-content-digest"].to_str().unwrap().to_string();
        let (_, img) = expected.iter().find(|(t, _)| t == tag).unwrap();
        assert_eq!(digest, img.manifest_digest);
        let m = h
            .client
            .get(format!("{registry_url}/v2/{upstream_name}/manifests/{digest}"))
            .header("accept", PULP_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(m.headers()["content-type"], MT_OCI_MANIFEST);
        assert_eq!(m.bytes().await.unwrap(), img.manifest);
        // 5. The config blob (layers come later, on demand).
        let config = h
            .client
            .get(format!("{registry_url}/v2/{upstream_name}/blobs/{}", img.config_digest))
            .send()
            .await
            .unwrap();
        assert_eq!(config.bytes().await.unwrap(), img.config);
        // 6. Signatures: extension API 200 (empty here), lookaside 404 when missing.
        let ext = h
            .client
            .get(format!(
                "{registry_url}/extensions/v2/{upstream_name}/signatures/{digest}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(ext.status(), 200);
        let lookaside = h
            .client
            .get(format!(
                "{registry_url}/sigstore/{upstream_name}@{}/signature-1",
                digest.replace(':', "=")
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(lookaside.status(), 404);
        // 7. Later, on demand: the layers are still served.
        for (d, bytes) in img.layer_digests.iter().zip(&img.layers) {
            let r = h
                .client
                .get(format!("{registry_url}/v2/{upstream_name}/blobs/{d}"))
                .send()
                .await
                .unwrap();
            assert_eq!(&body_bytes(r).await.unwrap()[..], &bytes[..]);
        }
    }
    // Katello's discovery: a clear OCI error, never 5xx.
    let catalog = h
        .client
        .get(format!("{registry_url}/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(catalog.status(), 404);
}

#[tokio::test]
async fn manifest_lists_by_tag_and_head_then_get_agree() {
    let h = Harness::start().await;
    let list = h.fake.add_docker_list("ubi9/ubi", "multi");
    let path = h.url("/v2/registry.redhat.io/ubi9/ubi/manifests/multi");
    for accept in [PULP_ACCEPT, CONTAINERD_ACCEPT] {
        let head = h.client.head(&path).header("accept", accept).send().await.unwrap();
        let get = h.client.get(&path).header("accept", accept).send().await.unwrap();
        assert_eq!(
            head.headers()["docker-content-digest"],
            get.headers()["docker-content-digest"]
        );
        assert_eq!(head.headers()["content-length"], get.headers()["content-length"]);
        assert_eq!(get.headers()["content-type"], MT_DOCKER_LIST);
        assert_eq!(get.bytes().await.unwrap(), list.bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_mid_layer_resumes_with_range_also_while_the_fill_runs() {
    // containers/image after a broken body: Range: bytes=N- and it requires 206 +
    // Content-Range (docker/body_reader.go).
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[2_000_000]);
    let layer = img.layer_digests[0].clone();
    h.fake.frame_delay_ms.store(10, std::sync::atomic::Ordering::SeqCst);
    let url = h.url(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}"));
    let mut first = h.client.get(&url).send().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 300_000 {
        got.extend_from_slice(&first.chunk().await.unwrap().expect("more bytes"));
    }
    drop(first); // the connection breaks
    let resumed = h
        .client
        .get(&url)
        .header("range", format!("bytes={}-", got.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 206);
    assert_eq!(
        resumed.headers()["content-range"],
        format!("bytes {}-1999999/2000000", got.len()).as_str()
    );
    got.extend(body_bytes(resumed).await.unwrap());
    assert_eq!(got, img.layers[0]);
    assert_eq!(
        h.fake.cdn_gets(&layer),
        1,
        "the resume was served from the running fill"
    );
}
