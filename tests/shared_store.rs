//! Replicas sharing one cache in an S3-compatible bucket, on a real Garage started by the
//! tests: skopeo pulls a multi-arch image through one `pullgate serve` and then through
//! another with the upstream gone; a pullgate killed in the middle of an upload leaves no
//! object; Garage stopped in the middle of a fill gives a clean error and nothing
//! half-visible, and serving resumes when it returns; a corrupting CDN never makes an
//! object.

mod common;

use common::fake_upstream::FakeRedHat;
use common::garage::{BUCKET, Garage};
use common::registry::{DockerRegistry, Skopeo, assert_success, inspect_dir_copy};
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
    let _ = a.stop();
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
    let img = fake.add_image("ubi9/ubi", "latest", &[12 << 20]);
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
    // A manifest held locally still serves.
    assert_eq!(
        get("/v2/registry.redhat.io/ubi9/ubi/manifests/cached".into())
            .await
            .status(),
        200
    );

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
    let _ = cached;
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
