//! The command line as users and scripts run it: `check-config` and `serve` (as a real
//! process: startup, SIGTERM drain with exit 0, restart serving what was cached).

mod common;

use common::fake_upstream::FakeRedHat;
use std::process::Command;

fn check_config(path: &std::path::Path) -> std::process::Output {
    Command::new(common::pullgate_bin())
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .expect("run pullgate")
}

#[test]
fn the_shipped_default_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pullgate.toml");
    let out = check_config(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("listen = \"0.0.0.0:5000\""), "{printed}");
    assert!(printed.contains("tag_ttl = \"5m\""), "{printed}");
}

#[test]
fn bad_configs_fail_with_a_message_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (body, expect) in [
        ("listen = \"127.0.0.1:0\"\nunknown_key = 1\n", "unknown_key"),
        ("[cache]\ntag_ttl = \"forever\"\n", "tag_ttl"),
        (
            "[[upstream]]\nname = \"r.io\"\nurl = \"https://r.io\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n",
            "password_file",
        ),
        ("default_upstream = \"nowhere\"\n", "default_upstream"),
        ("this is not toml", "invalid config"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, body).unwrap();
        let out = check_config(&path);
        assert_eq!(out.status.code(), Some(2), "{body}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expect),
            "{body}: stderr {stderr:?} should name {expect:?}"
        );
    }
    let out = check_config(&dir.path().join("missing.toml"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_drains_on_sigterm_and_a_restart_serves_the_cache_without_upstream() {
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[200_000]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pullgate.toml");
    std::fs::write(&config, common::config_toml(dir.path(), &fake.registry_url, "", "")).unwrap();
    let client = common::client();

    let server = common::ServeProcess::start(&config, &[]);
    let base = server.url();
    assert_eq!(client.get(format!("{base}/v2/")).send().await.unwrap().status(), 200);
    let m = client
        .get(format!("{base}/v2/registry.redhat.io/ubi9/ubi/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    let layer_url = format!("{base}/v2/registry.redhat.io/ubi9/ubi/blobs/{}", img.layer_digests[0]);
    let body = common::body_bytes(client.get(&layer_url).send().await.unwrap())
        .await
        .unwrap();
    assert_eq!(body, img.layers[0]);
    let (status, log1) = server.stop();
    assert!(status.success(), "SIGTERM exits 0");

    fake.stop();
    let server = common::ServeProcess::start(&config, &[]);
    let base = server.url();
    let client = common::client();
    let m = client
        .get(format!("{base}/v2/registry.redhat.io/ubi9/ubi/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200, "tag served from the cache with upstream down");
    assert_eq!(m.headers()["docker-content-digest"], img.manifest_digest.as_str());
    let layer_url = format!("{base}/v2/registry.redhat.io/ubi9/ubi/blobs/{}", img.layer_digests[0]);
    let body = common::body_bytes(client.get(&layer_url).send().await.unwrap())
        .await
        .unwrap();
    assert_eq!(body, img.layers[0]);
    let (status, log2) = server.stop();
    assert!(status.success());
    // The token flow, the signed CDN URL and the credentials never reach the logs.
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", common::USERNAME, common::PASSWORD),
    );
    common::assert_no_secrets(
        &[log1, log2].concat(),
        &[common::PASSWORD, &basic, "tok-", "Signature="],
    );
}

#[test]
fn check_config_reads_the_cluster_secret_and_needs_this_replicas_url() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster-secret");
    let config = |cluster: &str| {
        let path = dir.path().join("pullgate.toml");
        std::fs::write(
            &path,
            format!(
                "data_dir = \"{}\"\n[cluster]\nsecret_file = \"{}\"\n{cluster}",
                dir.path().join("data").display(),
                secret.display()
            ),
        )
        .unwrap();
        path
    };
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).to_string();
    let two = "self = \"http://10.0.0.1:5000\"\npeers = [\"http://10.0.0.1:5000\", \"http://10.0.0.2:5000\"]";
    let out = check_config(&config(two));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cluster.secret_file"), "{}", stderr(&out));
    std::fs::write(&secret, "short\n").unwrap();
    let out = check_config(&config(two));
    assert!(stderr(&out).contains("at least 16"), "{}", stderr(&out));
    std::fs::write(&secret, "a-secret-long-enough-for-the-fleet\n").unwrap();
    let out = check_config(&config(two));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("long-enough"),
        "the secret is never printed"
    );
    // Without `self`, PULLGATE_CLUSTER_SELF says who this replica is.
    let dns = "peers_dns = \"pullgate-headless.pullgate.svc:5000\"";
    let out = check_config(&config(dns));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("PULLGATE_CLUSTER_SELF"), "{}", stderr(&out));
    let out = Command::new(common::pullgate_bin())
        .args(["check-config", "--config"])
        .arg(config(dns))
        .env("PULLGATE_CLUSTER_SELF", "http://10.0.0.3:5000")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The soak found glibc's malloc letting a replica's RSS climb with every new peak of
/// concurrent fills (its dynamic mmap threshold sends large freed blocks into arenas that
/// are never given back); `pullgate` is built with jemalloc for that (src/main.rs). This
/// keeps the binary from going back to the system allocator unnoticed: jemalloc's
/// prefixed entry points are linked into it. The behaviour itself is the soak's RSS
/// invariant (`cargo bench --bench soak`).
#[test]
fn the_binary_allocates_with_jemalloc() {
    let binary = std::fs::read(common::pullgate_bin()).unwrap();
    let linked = |symbol: &[u8]| binary.windows(symbol.len()).any(|w| w == symbol);
    assert!(
        linked(b"_rjem_malloc") && linked(b"_rjem_je_arena_boot"),
        "pullgate is not linked with tikv-jemallocator"
    );
}
