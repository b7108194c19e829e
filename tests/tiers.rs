//! Tiered caches: a site pullgate whose upstream is the DMZ pullgate, itself in front of
//! the Red Hat-like fake. skopeo pulls through the site; manifests, blobs, tags and
//! signatures pass both tiers, verified at each; the site serves what it cached with the
//! DMZ stopped.

mod common;

use common::fake_upstream::{FakeRedHat, MT_OCI_MANIFEST};
use common::lookaside::{sig_path, start_lookaside};
use common::skopeo::{Skopeo, assert_success, inspect_dir_copy};
use common::{ServeProcess, body_bytes};
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The site's config, made by `client-config --for pullgate` from the DMZ's, with the
/// password file written where it says.
fn site_config(dmz_config: &Path, dmz_url: &str, site: &Path) -> std::path::PathBuf {
    let out = common::pullgate(&[
        "client-config",
        "--config",
        dmz_config.to_str().unwrap(),
        "--for",
        "pullgate",
        "--url",
        dmz_url,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let upstreams = String::from_utf8(out.stdout).unwrap();
    assert!(
        upstreams.contains("pullgate_upstream = \"registry.redhat.io\""),
        "{upstreams}"
    );
    let password = write(site, "dmz-password", "site-secret-password\n");
    let upstreams = upstreams
        .replace("\"site\"", "\"site-a\"")
        .replace("/etc/pullgate/upstream-password", password.to_str().unwrap());
    write(
        site,
        "pullgate.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{upstreams}",
            site.join("data").display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_pulls_through_the_dmz_and_serves_with_the_dmz_stopped() {
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[300_000, 40_000]);
    // A lookaside signature and a cosign signature tag for the image.
    let (lookaside, lookaside_url, _task) = start_lookaside().await;
    let signature = b"simple signing signature bytes".to_vec();
    lookaside
        .files
        .lock()
        .unwrap()
        .insert(sig_path("ubi9/ubi", &img.manifest_digest, 1), signature.clone());
    let cosign_tag = format!("{}.sig", img.manifest_digest.replace(':', "-"));
    let cosign = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
        img.config_digest,
        img.config.len()
    );
    let cosign_digest = fake.put_manifest("ubi9/ubi", Some(&cosign_tag), MT_OCI_MANIFEST, cosign.clone());

    // The DMZ pullgate: clients need a user of its htpasswd file.
    let root = tempfile::tempdir().unwrap();
    let (dmz_dir, site_dir) = (root.path().join("dmz"), root.path().join("site"));
    std::fs::create_dir_all(&dmz_dir).unwrap();
    std::fs::create_dir_all(&site_dir).unwrap();
    let htpasswd = write(
        &dmz_dir,
        "htpasswd",
        &format!("site-a:{}\n", bcrypt::hash("site-secret-password", 4).unwrap()),
    );
    let dmz_config = write(
        &dmz_dir,
        "pullgate.toml",
        &common::config_toml(
            &dmz_dir,
            &fake.registry_url,
            &format!("[clients]\nhtpasswd = \"{}\"", htpasswd.display()),
            &format!("sigstore = \"{lookaside_url}\""),
        ),
    );
    let dmz = ServeProcess::start(&dmz_config, &[]);
    let site = ServeProcess::start(&site_config(&dmz_config, &dmz.url(), &site_dir), &[]);

    let skopeo = Skopeo::new();
    let conf = skopeo.write_registries_conf(&format!(
        "unqualified-search-registries = []\n[[registry]]\nprefix = \"registry.redhat.io\"\nlocation = \"127.0.0.1:1\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{}/registry.redhat.io\"\ninsecure = true\n",
        site.addr
    ));
    let pull = || {
        let (skopeo, conf) = (&skopeo, &conf);
        async move {
            let out = tempfile::tempdir().unwrap();
            let dest = out.path().join("copy");
            let output = skopeo
                .copy_all_to_dir_async(conf, "docker://registry.redhat.io/ubi9/ubi:latest", &dest)
                .await;
            assert_success("skopeo copy through the site", &output);
            inspect_dir_copy(&dest)
        }
    };
    let client = common::client();
    let site_get = |path: String| {
        let client = client.clone();
        let url = format!("{}{path}", site.url());
        async move { client.get(url).send().await.unwrap() }
    };
    let check_signatures = async || {
        let sig = site_get(format!(
            "/sigstore/registry.redhat.io/ubi9/ubi@{}/signature-1",
            img.manifest_digest.replace(':', "=")
        ))
        .await;
        assert_eq!(sig.status(), 200, "the lookaside signature through both tiers");
        assert_eq!(body_bytes(sig).await.unwrap(), signature);
        let tag = site_get(format!("/v2/registry.redhat.io/ubi9/ubi/manifests/{cosign_tag}")).await;
        assert_eq!(tag.status(), 200, "the cosign signature tag through both tiers");
        assert_eq!(tag.headers()["docker-content-digest"], cosign_digest.as_str());
        assert_eq!(body_bytes(tag).await.unwrap(), cosign.as_bytes());
    };

    let first = pull().await;
    assert_eq!(
        first.manifest_digest, img.manifest_digest,
        "the digest through both tiers"
    );
    let mut expected_blobs: Vec<String> = img.layer_digests.clone();
    expected_blobs.push(img.config_digest.clone());
    expected_blobs.sort();
    assert_eq!(first.blobs, expected_blobs);
    check_signatures().await;
    let tags = site_get("/v2/registry.redhat.io/ubi9/ubi/tags/list".into()).await;
    let tags = common::json(tags).await;
    assert_eq!(tags["name"], "registry.redhat.io/ubi9/ubi");
    assert!(tags["tags"].as_array().unwrap().iter().any(|t| t == "latest"), "{tags}");
    for layer in &img.layer_digests {
        assert_eq!(fake.cdn_gets(layer), 1, "the DMZ fetched each layer once");
    }

    // The DMZ goes away: the site serves what it has, tags and signatures included.
    let (_, dmz_log) = dmz.stop();
    let again = pull().await;
    assert_eq!(again.manifest_digest, first.manifest_digest);
    assert_eq!(again.manifest, first.manifest, "byte-exact");
    assert_eq!(again.blobs, first.blobs);
    check_signatures().await;
    let (status, site_log) = site.stop();
    assert!(status.success());
    common::assert_no_secrets(&site_log, &["site-secret-password"]);
    common::assert_no_secrets(&dmz_log, &["site-secret-password"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_names_the_dmz_upstream_by_ns_too() {
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[70_000]);
    let root = tempfile::tempdir().unwrap();
    let (dmz_dir, site_dir) = (root.path().join("dmz"), root.path().join("site"));
    std::fs::create_dir_all(&dmz_dir).unwrap();
    std::fs::create_dir_all(&site_dir).unwrap();
    let dmz_config = write(
        &dmz_dir,
        "pullgate.toml",
        &common::config_toml(&dmz_dir, &fake.registry_url, "", ""),
    );
    let dmz = ServeProcess::start(&dmz_config, &[]);
    let site_config = write(
        &site_dir,
        "pullgate.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[upstream]]\nname = \"rh\"\nurl = \"{}\"\npullgate_upstream = \"registry.redhat.io\"\npullgate_upstream_by = \"ns\"\n",
            site_dir.join("data").display(),
            dmz.url()
        ),
    );
    let site = ServeProcess::start(&site_config, &[]);
    let client = common::client();
    let manifest = client
        .get(format!("{}/v2/rh/ubi9/ubi/manifests/latest", site.url()))
        .header("accept", MT_OCI_MANIFEST)
        .header("accept", "application/vnd.docker.distribution.manifest.v2+json")
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    assert_eq!(
        manifest.headers()["docker-content-digest"],
        img.manifest_digest.as_str()
    );
    let blob = client
        .get(format!("{}/v2/rh/ubi9/ubi/blobs/{}", site.url(), img.layer_digests[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(blob).await.unwrap(), img.layers[0]);
    assert_eq!(fake.cdn_gets(&img.layer_digests[0]), 1, "fetched through the DMZ");
    let (status, _) = dmz.stop();
    assert!(status.success());
}
