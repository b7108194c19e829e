//! Real clients: Debian's skopeo copies multi-arch images (an OCI index and a Docker
//! manifest list) through pullgate, configured as a registries.conf mirror, from
//! Debian's docker-registry (distribution 2.8) as the upstream. The primary location is
//! a loopback port where nothing listens, so only the mirror can serve.

mod common;

use common::registry::{DockerRegistry, SeededIndex};
use common::skopeo::{Skopeo, assert_success, inspect_dir_copy};
use pullgate::config::Config;

async fn pullgate_in_front_of(
    registry: &DockerRegistry,
    dir: &std::path::Path,
    default_upstream: bool,
) -> pullgate::app::RunningServer {
    let top = if default_upstream {
        "default_upstream = \"registry.redhat.io\"\n"
    } else {
        ""
    };
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{top}\n[[upstream]]\nname = \"registry.redhat.io\"\nurl = \"{}\"\n",
        dir.join("data").display(),
        registry.url
    );
    let config = Config::from_toml_str(&toml).expect("config");
    pullgate::app::spawn(&config).await.expect("pullgate starts")
}

fn mirror_conf(skopeo: &Skopeo, mirror_location: &str) -> std::path::PathBuf {
    skopeo.write_registries_conf(&format!(
        r#"unqualified-search-registries = []

[[registry]]
prefix = "registry.redhat.io"
location = "127.0.0.1:1"
insecure = true

[[registry.mirror]]
location = "{mirror_location}"
insecure = true
"#
    ))
}

async fn copy_and_compare(skopeo: &Skopeo, conf: &std::path::Path, reference: &str, seeded: &SeededIndex) {
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("copy");
    let output = skopeo
        .copy_all_to_dir_async(conf, &format!("docker://{reference}"), &dest)
        .await;
    assert_success(&format!("skopeo copy --all {reference}"), &output);
    let copy = inspect_dir_copy(&dest);
    assert_eq!(
        copy.manifest_digest, seeded.digest,
        "{reference}: list digest equals the upstream's"
    );
    assert_eq!(copy.manifest, seeded.bytes, "{reference}: list bytes are byte-exact");
    let mut want: Vec<String> = seeded.children.iter().map(|(d, _)| d.clone()).collect();
    want.sort();
    assert_eq!(copy.instance_digests, want, "{reference}: every platform's manifest");
    let mut blobs = seeded.blobs.clone();
    blobs.sort();
    assert_eq!(copy.blobs, blobs, "{reference}: every config and layer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_multi_arch_images_through_a_prefixed_mirror() {
    let registry = DockerRegistry::start().await;
    let oci = registry.push_oci_index("ubi9/multi", "oci").await;
    let docker = registry.push_docker_list("ubi9/multi", "docker").await;
    let dir = tempfile::tempdir().unwrap();
    let server = pullgate_in_front_of(&registry, dir.path(), false).await;
    let skopeo = Skopeo::new();
    let conf = mirror_conf(&skopeo, &format!("{}/registry.redhat.io", server.addr));

    copy_and_compare(&skopeo, &conf, "registry.redhat.io/ubi9/multi:oci", &oci).await;
    copy_and_compare(&skopeo, &conf, "registry.redhat.io/ubi9/multi:docker", &docker).await;
    copy_and_compare(
        &skopeo,
        &conf,
        &format!("registry.redhat.io/ubi9/multi@{}", docker.digest),
        &docker,
    )
    .await;
    // pullgate served them: the manifests are in its cache now.
    for d in [&oci.digest, &docker.digest] {
        assert!(
            server.proxy.has_manifest(&d.parse().unwrap()).await.unwrap(),
            "{d} cached by pullgate"
        );
    }
    // Clients get verified bytes before the fill has published: let the fills finish.
    common::fills_settle(&server.proxy).await;
    assert!(
        server
            .proxy
            .metrics()
            .fills_ended(pullgate::metrics::fill_outcome::PUBLISHED)
            >= oci.blobs.len() as u64
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_through_a_host_only_mirror_with_default_upstream() {
    let registry = DockerRegistry::start().await;
    let oci = registry.push_oci_index("ubi9/multi", "oci").await;
    let docker = registry.push_docker_list("ubi9/multi", "docker").await;
    let dir = tempfile::tempdir().unwrap();
    let server = pullgate_in_front_of(&registry, dir.path(), true).await;
    let skopeo = Skopeo::new();
    let conf = mirror_conf(&skopeo, &server.addr.to_string());

    copy_and_compare(&skopeo, &conf, "registry.redhat.io/ubi9/multi:oci", &oci).await;
    copy_and_compare(&skopeo, &conf, "registry.redhat.io/ubi9/multi:docker", &docker).await;
    copy_and_compare(
        &skopeo,
        &conf,
        &format!("registry.redhat.io/ubi9/multi@{}", oci.digest),
        &oci,
    )
    .await;
    server.shutdown().await.unwrap();
}
