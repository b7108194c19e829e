//! Replicas sharing one cache in an S3-compatible bucket, on a real Garage started by the
//! tests: skopeo pulls a multi-arch image through one `pullgate serve` and then through
//! another with the upstream gone; a pullgate killed in the middle of an upload leaves no
//! object; Garage stopped in the middle of a fill gives a clean error and nothing
//! half-visible, and serving resumes when it returns; a corrupting CDN never makes an
//! object.

mod common;

use common::fake_upstream::FakeRedHat;
use common::garage::{BUCKET, Garage};
use common::registry::DockerRegistry;
use common::skopeo::{Skopeo, assert_success, inspect_dir_copy};
use common::{ServeProcess, body_bytes};
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

/// A client for the bucket, to look at what pullgate left there.
fn bucket(garage: &Garage) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&garage.endpoint)
        .with_bucket_name(BUCKET)
        .with_region("garage")
        .with_access_key_id(common::garage::ACCESS_KEY)
        .with_secret_access_key(common::garage::SECRET_KEY)
        .with_allow_http(true)
        .build()
        .expect("S3 client")
}

async fn object_exists(s3: &object_store::aws::AmazonS3, key: &str) -> bool {
    match s3.head(&object_store::path::Path::from(key)).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => panic!("HEAD {key}: {e}"),
    }
}

/// `pullgate serve` on its own data dir, sharing Garage's bucket under `prefix`.
fn replica(dir: &Path, upstream_url: &str, garage: &Garage, prefix: &str, extra_upstream: &str) -> ServeProcess {
    std::fs::create_dir_all(dir).unwrap();
    let toml = common::config_toml(dir, upstream_url, &garage.cache_toml(dir, prefix, ""), extra_upstream);
    let config = dir.join("pullgate.toml");
    std::fs::write(&config, toml).unwrap();
    ServeProcess::start(&config, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_what_another_cached_with_the_upstream_gone() {
    let garage = Garage::start();
    let mut registry = DockerRegistry::start().await;
    let seeded = registry.push_oci_index("ubi9/multi", "latest").await;
    let root = tempfile::tempdir().unwrap();
    let a = replica(&root.path().join("a"), &registry.url, &garage, "fleet", "");
    let b = replica(&root.path().join("b"), &registry.url, &garage, "fleet", "");
    let skopeo = Skopeo::new();
    let through = |server: &ServeProcess| {
        skopeo.write_registries_conf(&format!(
            "unqualified-search-registries = []\n[[registry]]\nprefix = \"registry.redhat.io\"\nlocation = \"127.0.0.1:1\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{}/registry.redhat.io\"\ninsecure = true\n",
            server.addr
        ))
    };
    let copy = |conf: std::path::PathBuf| {
        let skopeo = &skopeo;
        async move {
            let out = tempfile::tempdir().unwrap();
            let dest = out.path().join("copy");
            let output = skopeo
                .copy_all_to_dir_async(&conf, "docker://registry.redhat.io/ubi9/multi:latest", &dest)
                .await;
            assert_success("skopeo copy --all through a replica", &output);
            inspect_dir_copy(&dest)
        }
    };
    let via_a = copy(through(&a)).await;
    assert_eq!(via_a.manifest_digest, seeded.digest);
    // Replica A has published what it fetched before it logs the egress lines.
    common::eventually("A's fills to publish", Duration::from_secs(20), async || {
        a.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("blob verified and cached"))
            .count()
            >= seeded.blobs.len()
    })
    .await;

    registry.stop();
    let via_b = copy(through(&b)).await;
    assert_eq!(via_b.manifest_digest, seeded.digest, "the same image through B");
    assert_eq!(via_b.manifest, via_a.manifest, "byte-exact");
    assert_eq!(via_b.blobs, via_a.blobs);
    let (status, log) = b.stop();
    assert!(status.success());
    assert!(
        !log.iter()
            .any(|l| l.contains("egress") || l.contains("upstream unavailable")),
        "B asked nothing of the upstream: {log:?}"
    );
    common::assert_no_secrets(&log, &[common::garage::SECRET_KEY]);
    let (_, log) = a.stop();
    common::assert_no_secrets(&log, &[common::garage::SECRET_KEY]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pullgate_killed_during_an_upload_leaves_no_object_and_the_pull_succeeds_later() {
    let garage = Garage::start();
    let s3 = bucket(&garage);
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[12 << 20]);
    let layer = img.layer_digests[0].clone();
    let key = format!("killed/blobs/sha256/{}", &layer["sha256:".len()..]);
    fake.frame_delay_ms.store(20, SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let server = replica(dir.path(), &fake.registry_url, &garage, "killed", "");
    let url = format!("{}/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}", server.url());
    let client = common::client();
    let mut resp = client.get(&url).send().await.unwrap();
    let mut got = 0;
    // Past the first part (5 MiB … 8 MiB is one part in flight), then kill.
    while got < 7 << 20 {
        got += resp.chunk().await.unwrap().expect("bytes before the kill").len();
    }
    server.signal("KILL");
    drop(server);
    assert!(body_bytes(resp).await.is_err(), "the cut body ends with an error");
    assert!(
        !object_exists(&s3, &key).await,
        "no object for an upload that never completed"
    );

    fake.frame_delay_ms.store(0, SeqCst);
    let server = replica(dir.path(), &fake.registry_url, &garage, "killed", "");
    let body = body_bytes(
        client
            .get(format!("{}/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}", server.url()))
            .send()
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(body, img.layers[0]);
    common::eventually(
        "the object after the retried pull",
        Duration::from_secs(20),
        async || object_exists(&s3, &key).await,
    )
    .await;
    let _ = server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_stopped_during_a_fill_is_a_clean_error_and_serving_resumes() {
    let mut garage = Garage::start();
    let s3 = bucket(&garage);
    let fake = FakeRedHat::start().await;
    let cached = fake.add_image("ubi9/ubi", "cached", &[10_000]);
    // 24 MiB at one 64 KiB frame per 20 ms: the download outlasts the upload's retries.
    let img = fake.add_image("ubi9/ubi", "latest", &[24 << 20]);
    let layer = img.layer_digests[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let server = replica(dir.path(), &fake.registry_url, &garage, "outage", "");
    let client = common::client();
    let get = |path: String| {
        let (client, base) = (client.clone(), server.url());
        async move { client.get(format!("{base}{path}")).send().await.unwrap() }
    };
    assert_eq!(
        get("/v2/registry.redhat.io/ubi9/ubi/manifests/cached".into())
            .await
            .status(),
        200
    );
    let cached_blob = format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{}", cached.layer_digests[0]);
    assert_eq!(
        body_bytes(get(cached_blob.clone()).await).await.unwrap(),
        cached.layers[0]
    );
    assert_eq!(get("/readyz".into()).await.status(), 200);

    fake.frame_delay_ms.store(20, SeqCst);
    let mut resp = get(format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}")).await;
    resp.chunk().await.unwrap().expect("the fill streams");
    garage.stop();
    assert!(
        body_bytes(resp).await.is_err(),
        "the body ends with an error, never complete and clean"
    );
    common::eventually("/readyz to say not ready", Duration::from_secs(30), async || {
        get("/readyz".into()).await.status() == 503
    })
    .await;
    // A manifest held locally still serves; a blob, whose bytes are in the bucket, is a
    // 503 the client may retry (never a 500, never a refill that cannot be stored).
    assert_eq!(
        get("/v2/registry.redhat.io/ubi9/ubi/manifests/cached".into())
            .await
            .status(),
        200
    );
    let unavailable = get(cached_blob.clone()).await;
    assert_eq!(unavailable.status(), 503, "a cached blob with the store down");
    assert!(unavailable.headers().contains_key("retry-after"));
    let cold = format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{}", cached.config_digest);
    assert_eq!(get(cold).await.status(), 503, "a cold blob with the store down");

    garage.resume();
    let key = format!("outage/blobs/sha256/{}", &layer["sha256:".len()..]);
    assert!(!object_exists(&s3, &key).await, "nothing half-visible");
    common::eventually("/readyz to be ready again", Duration::from_secs(30), async || {
        get("/readyz".into()).await.status() == 200
    })
    .await;
    fake.frame_delay_ms.store(0, SeqCst);
    let body = body_bytes(get(format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}")).await).await;
    assert_eq!(body.unwrap(), img.layers[0], "serving resumes");
    assert_eq!(
        body_bytes(get(cached_blob).await).await.unwrap(),
        cached.layers[0],
        "the cached blob serves again"
    );
    let _ = server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupting_cdn_never_makes_an_object() {
    let garage = Garage::start();
    let s3 = bucket(&garage);
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[6 << 20, 1000]);
    fake.wrong_bytes.store(true, SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let server = replica(dir.path(), &fake.registry_url, &garage, "corrupt", "");
    for layer in &img.layer_digests {
        let resp = common::client()
            .get(format!("{}/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}", server.url()))
            .send()
            .await
            .unwrap();
        common::assert_not_delivered(resp).await;
        let key = format!("corrupt/blobs/sha256/{}", &layer["sha256:".len()..]);
        assert!(!object_exists(&s3, &key).await, "no object of bad bytes");
    }
    let _ = server.stop();
}

/// The fleet's evictor keeps the bucket under `max_size`, least recently used first, and
/// spares a blob that a client is streaming from another replica (the stream renews its
/// use, the replica reports it): the stream arrives whole and the blob stays, while the
/// blobs nobody used since go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_evicts_beyond_max_size_but_not_under_a_reader_on_another_replica() {
    let garage = Garage::start();
    let s3 = bucket(&garage);
    let fake = FakeRedHat::start().await;
    let streamed = fake.add_image("fleet/x", "latest", &[24 << 20]);
    let later: Vec<_> = (0..4)
        .map(|i| fake.add_image(&format!("fleet/y{i}"), "latest", &[4 << 20]))
        .collect();
    let root = tempfile::tempdir().unwrap();
    let cache = "max_size = \"30MiB\"";
    let knobs = "report_interval = \"200ms\"\neviction_grace = \"3s\"\n";
    let start = |name: &str| {
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let toml = common::config_toml(
            &dir,
            &fake.registry_url,
            &(garage.cache_toml(&dir, "fleet", cache) + knobs),
            "",
        );
        std::fs::write(dir.join("pullgate.toml"), toml).unwrap();
        ServeProcess::start(&dir.join("pullgate.toml"), &[])
    };
    let (a, b) = (start("a"), start("b"));
    let evictor_said = |p: &ServeProcess| {
        p.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("the fleet's evictor changed") && l.contains("evictor=true"))
    };
    common::eventually(
        "one replica to become the evictor",
        Duration::from_secs(20),
        async || evictor_said(&a) || evictor_said(&b),
    )
    .await;
    // Stream through the replica that is not the evictor: only reports can save the blob.
    let (evictor, reader) = if evictor_said(&a) { (&a, &b) } else { (&b, &a) };
    let client = common::client();
    let blob_url = |p: &ServeProcess, img: &common::fake_upstream::FakeImage, repo: &str| {
        format!(
            "{}/v2/registry.redhat.io/{repo}/blobs/{}",
            p.url(),
            img.layer_digests[0]
        )
    };
    // Cached first (through the evictor), then streamed slowly from the other replica.
    let whole = body_bytes(
        client
            .get(blob_url(evictor, &streamed, "fleet/x"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(whole, streamed.layers[0]);
    let x_key = format!("fleet/blobs/sha256/{}", &streamed.layer_digests[0]["sha256:".len()..]);
    common::eventually("the streamed blob in the bucket", Duration::from_secs(20), async || {
        object_exists(&s3, &x_key).await
    })
    .await;
    let mut slow = client.get(blob_url(reader, &streamed, "fleet/x")).send().await.unwrap();
    let mut got = Vec::new();
    // Push the bucket over max_size with newer blobs while the stream is under way.
    for (i, img) in later.iter().enumerate() {
        let body = body_bytes(
            client
                .get(blob_url(evictor, img, &format!("fleet/y{i}")))
                .send()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(body, img.layers[0]);
    }
    while let Some(chunk) = slow.chunk().await.expect("the streamed body is not cut") {
        got.extend_from_slice(&chunk);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(got, streamed.layers[0], "the stream arrived whole and correct");
    // The bucket comes back under max_size by evicting the least recently used blobs:
    // older than the stream's renewed use of the big one, which stays.
    let blob_bytes = async || {
        let mut total = 0;
        let mut listing = s3.list(Some(&object_store::path::Path::from("fleet/blobs")));
        while let Some(meta) = futures_util::StreamExt::next(&mut listing).await {
            total += meta.unwrap().size;
        }
        total
    };
    common::eventually("the bucket back under max_size", Duration::from_secs(30), async || {
        blob_bytes().await <= 30 << 20
    })
    .await;
    assert!(
        object_exists(&s3, &x_key).await,
        "the blob a client streamed last stays"
    );
    let mut gone = 0;
    for img in &later {
        let key = format!("fleet/blobs/sha256/{}", &img.layer_digests[0]["sha256:".len()..]);
        gone += usize::from(!object_exists(&s3, &key).await);
    }
    assert!(gone >= 2, "the least recently used blobs went ({gone} of 4)");
    let _ = a.stop();
    let _ = b.stop();
}

/// A bucket that does not exist, or credentials it refuses, stop `serve` at start with
/// an error naming the bucket; `check-config --online` reaches the bucket and says so,
/// and never prints the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_bucket_or_key_is_a_clear_error_at_start_and_check_config_online_reaches_the_bucket() {
    let garage = Garage::start();
    // A live upstream: `--online` walks its egress path too.
    let upstream = FakeRedHat::start_anonymous().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, cache: String| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            common::config_toml(dir.path(), &upstream.registry_url, &cache, ""),
        )
        .unwrap();
        path
    };
    let good = write("good.toml", garage.cache_toml(dir.path(), "checked", ""));
    let out = common::pullgate(&["check-config", "--config", good.to_str().unwrap(), "--online"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check-config --online on a good bucket: {stderr}");
    assert!(stderr.contains("reachable"), "it says the bucket was reached: {stderr}");

    let no_bucket = write(
        "no-bucket.toml",
        garage
            .cache_toml(dir.path(), "checked", "")
            .replace(&format!("bucket = \"{BUCKET}\""), "bucket = \"no-such-bucket\""),
    );
    let secret_file = dir.path().join("wrong-secret");
    std::fs::write(&secret_file, "not-the-secret-key-0123456789").unwrap();
    let wrong_key = write(
        "wrong-key.toml",
        garage.cache_toml(dir.path(), "checked", "").replace(
            &dir.path().join("s3-secret-key").display().to_string(),
            &secret_file.display().to_string(),
        ),
    );
    for (config, what, why) in [
        (&no_bucket, "no-such-bucket", "does not exist"),
        (&wrong_key, "pullgate", "refuses the credentials"),
    ] {
        let path = config.to_str().unwrap();
        let checked = common::pullgate(&["check-config", "--config", path, "--online"]);
        let served = std::process::Command::new(common::pullgate_bin())
            .args(["serve", "--config", path])
            .output()
            .expect("run pullgate serve");
        for (out, command) in [(&checked, "check-config --online"), (&served, "serve")] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command} with {path} must fail: {stderr}");
            assert!(
                stderr.contains(&format!("bucket \"{what}\"")),
                "{command}: the error names the bucket: {stderr}"
            );
            if command == "serve" {
                assert!(stderr.contains(why), "serve says why: {stderr}");
            }
            let lines: Vec<String> = stderr.lines().map(String::from).collect();
            common::assert_no_secrets(&lines, &[common::garage::SECRET_KEY, "not-the-secret-key-0123456789"]);
        }
    }
}

/// The store answering `503 SlowDown` to some writes (as S3 and RGW do under load) costs
/// retries with backoff, not fills: every pull succeeds and its objects are complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_says_slow_down_is_retried_with_backoff() {
    let garage = Garage::start();
    let s3 = bucket(&garage);
    let front = common::garage::SlowDownFront::start(&garage.endpoint, common::garage::Refuse::EveryNthWrite(3)).await;
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[12 << 20, 3000]);
    let dir = tempfile::tempdir().unwrap();
    let cache = garage
        .cache_toml(dir.path(), "slow", "")
        .replace(&garage.endpoint, &front.endpoint);
    let toml = common::config_toml(dir.path(), &fake.registry_url, &cache, "");
    std::fs::write(dir.path().join("pullgate.toml"), toml).unwrap();
    let server = ServeProcess::start(&dir.path().join("pullgate.toml"), &[]);
    let refused_at_start = front.refused.load(SeqCst);
    let client = common::client();
    for (layer, bytes) in img.layer_digests.iter().zip(&img.layers) {
        let url = format!("{}/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}", server.url());
        let body = body_bytes(client.get(url).send().await.unwrap()).await.unwrap();
        assert_eq!(&body[..], &bytes[..], "the pull succeeds");
        let key = format!("slow/blobs/sha256/{}", &layer["sha256:".len()..]);
        common::eventually("the blob's object", Duration::from_secs(20), async || {
            object_exists(&s3, &key).await
        })
        .await;
        let stored = s3
            .get(&object_store::path::Path::from(key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&stored[..], &bytes[..], "the object is complete");
    }
    assert!(
        front.refused.load(SeqCst) > refused_at_start,
        "the store said SlowDown during the fills"
    );
    let (_, log) = server.stop();
    assert!(
        !log.iter().any(|l| l.contains("blob fill failed")),
        "no fill failed: {log:?}"
    );
}

/// `cache stats`, `verify` and `evict` on a replica that never served act on the
/// fleet's bucket: they count what another replica cached, find and remove an object
/// whose bytes are wrong, and evict from the bucket, never printing the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_commands_act_on_the_shared_bucket() {
    let garage = Garage::start();
    let s3 = bucket(&garage);
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[300_000, 200_000, 1000]);
    let root = tempfile::tempdir().unwrap();
    let a = replica(&root.path().join("a"), &fake.registry_url, &garage, "cli", "");
    let client = common::client();
    for layer in &img.layer_digests {
        let url = format!("{}/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}", a.url());
        body_bytes(client.get(url).send().await.unwrap()).await.unwrap();
    }
    let (status, _) = a.stop();
    assert!(status.success());

    let b = root.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    let config = b.join("pullgate.toml");
    std::fs::write(
        &config,
        common::config_toml(&b, &fake.registry_url, &garage.cache_toml(&b, "cli", ""), ""),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = common::pullgate(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        common::assert_no_secrets(
            &text.lines().map(String::from).collect::<Vec<_>>(),
            &[common::garage::SECRET_KEY],
        );
        (out.status, text)
    };
    let (status, text) = run(&["cache", "stats", "--config", config]);
    assert!(status.success(), "{text}");
    assert!(text.contains("blob store: s3"), "{text}");
    assert!(
        text.contains("blobs:      3"),
        "B counts the three blobs A cached: {text}"
    );

    let bad = &img.layer_digests[1];
    let bad_key = object_store::path::Path::from(format!("cli/blobs/sha256/{}", &bad["sha256:".len()..]));
    s3.put(&bad_key, vec![0u8; 200_000].into()).await.unwrap();
    let (status, text) = run(&["cache", "verify", "--config", config]);
    assert_eq!(status.code(), Some(1), "verify finds the bad object: {text}");
    assert!(
        text.contains(&format!("blob {bad}: bytes do not match; removed")),
        "{text}"
    );
    assert!(
        !object_exists(&s3, bad_key.as_ref()).await,
        "the bad object is gone from the bucket"
    );
    for good in [&img.layer_digests[0], &img.layer_digests[2]] {
        let key = format!("cli/blobs/sha256/{}", &good["sha256:".len()..]);
        assert!(object_exists(&s3, &key).await, "verify keeps the good {good}");
    }

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, text) = run(&["cache", "evict", "--older-than", "1s", "--config", config]);
    assert!(status.success(), "{text}");
    assert!(text.contains("2 blobs"), "{text}");
    for layer in &img.layer_digests {
        let key = format!("cli/blobs/sha256/{}", &layer["sha256:".len()..]);
        assert!(!object_exists(&s3, &key).await, "evicted from the bucket: {layer}");
    }
}

/// An upload that fails after the download (the bucket refuses to complete it): the
/// client already has its verified body, but nothing is cached and nothing is visible —
/// the next pull fetches the blob from upstream again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_at_completion_leaves_nothing_cached() {
    let garage = Garage::start();
    let s3 = bucket(&garage);
    let front = common::garage::SlowDownFront::start(&garage.endpoint, common::garage::Refuse::Completions).await;
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[7 << 20]);
    let layer = &img.layer_digests[0];
    let dir = tempfile::tempdir().unwrap();
    let cache = garage
        .cache_toml(dir.path(), "refused", "")
        .replace(&garage.endpoint, &front.endpoint);
    std::fs::write(
        dir.path().join("pullgate.toml"),
        common::config_toml(dir.path(), &fake.registry_url, &cache, ""),
    )
    .unwrap();
    let server = ServeProcess::start(&dir.path().join("pullgate.toml"), &[]);
    let url = format!("{}/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}", server.url());
    let client = common::client();
    let body = body_bytes(client.get(&url).send().await.unwrap()).await.unwrap();
    assert_eq!(body, img.layers[0], "the client has its verified body");
    common::eventually("the fill to fail at completion", Duration::from_secs(30), async || {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("blob fill failed"))
    })
    .await;
    assert!(front.refused.load(SeqCst) > 0, "the completion was refused");
    let key = format!("refused/blobs/sha256/{}", &layer["sha256:".len()..]);
    assert!(!object_exists(&s3, &key).await, "no object");
    let body = body_bytes(client.get(&url).send().await.unwrap()).await.unwrap();
    assert_eq!(body, img.layers[0]);
    let (_, log) = server.stop();
    let egress = log.iter().filter(|l| l.contains("egress")).count();
    assert_eq!(
        egress, 2,
        "the blob was not cached, so the second pull fetched it again: {log:?}"
    );
}
