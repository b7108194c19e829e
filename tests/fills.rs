//! Single-flight fills and durability: many clients, one upstream fetch; detached
//! fills; serving with the upstream gone, also after a restart; both blob stores.

mod common;

use common::{Harness, body_bytes};
use std::sync::atomic::Ordering::SeqCst;

async fn sixteen_concurrent_cold_gets(h: &Harness) {
    let img = h.fake.add_image("ubi9/ubi", "latest", &[1_500_000]);
    let layer = img.layer_digests[0].clone();
    // Slow the CDN a little so the sixteen requests overlap the fill.
    h.fake.frame_delay_ms.store(5, SeqCst);
    let url = h.url(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}"));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url) = (h.client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            body_bytes(client.get(&url).send().await.unwrap()).await
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap().unwrap(),
            img.layers[0],
            "every client gets the right bytes"
        );
    }
    assert_eq!(h.fake.cdn_gets(&layer), 1, "exactly one upstream fetch for 16 clients");
    let lookups = |result| h.proxy().metrics().lookups("blob", result);
    assert_eq!(lookups("miss"), 1, "one request started the fill");
    assert_eq!(
        lookups("fill-join") + lookups("hit"),
        15,
        "the others joined it or found it published"
    );
    assert_eq!(
        h.fake.registry_blob_redirects(&layer),
        1,
        "one redirect asked of the registry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_cold_gets_make_one_upstream_fetch_files_store() {
    let h = Harness::start().await;
    sixteen_concurrent_cold_gets(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_cold_gets_make_one_upstream_fetch_sled_store() {
    let h = Harness::start_with("[cache]\nblob_store = \"sled\"", "").await;
    sixteen_concurrent_cold_gets(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_during_a_fill_get_the_right_bytes() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[1_000_000]);
    let layer = img.layer_digests[0].clone();
    h.fake.frame_delay_ms.store(20, SeqCst);
    let url = h.url(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}"));
    // The full GET starts the fill; its headers arrive once upstream has answered.
    let full = h.client.get(&url).send().await.unwrap();
    assert_eq!(h.proxy().fills_in_flight(), 1, "the fill is running");
    let ranges = [
        (0u64, 99u64),
        (500_000, 999_999),
        (999_990, 999_999),
        (123_456, 654_321),
    ];
    let mut readers = Vec::new();
    for (first, last) in ranges {
        let (c, u) = (h.client.clone(), url.clone());
        readers.push(tokio::spawn(async move {
            let r = c
                .get(&u)
                .header("range", format!("bytes={first}-{last}"))
                .send()
                .await
                .unwrap();
            (
                r.status(),
                r.headers()["content-range"].to_str().unwrap().to_string(),
                body_bytes(r).await,
            )
        }));
    }
    for ((first, last), reader) in ranges.into_iter().zip(readers) {
        let (status, content_range, body) = reader.await.unwrap();
        assert_eq!(status, 206);
        assert_eq!(content_range, format!("bytes {first}-{last}/1000000"));
        assert_eq!(body.unwrap(), img.layers[0][first as usize..=last as usize]);
    }
    assert_eq!(body_bytes(full).await.unwrap(), img.layers[0]);
    assert_eq!(h.fake.cdn_gets(&layer), 1);
    // Every range request joined the running fill (none was served from a finished one).
    let lookups = |result| h.proxy().metrics().lookups("blob", result);
    assert_eq!((lookups("miss"), lookups("fill-join"), lookups("hit")), (1, 4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_does_not_cancel_the_fill() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[1_000_000]);
    let layer = img.layer_digests[0].clone();
    h.fake.frame_delay_ms.store(20, SeqCst);
    let mut resp = h.get(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}")).await;
    let first = resp.chunk().await.unwrap().expect("some bytes");
    assert!(!first.is_empty());
    drop(resp); // the client goes away mid-blob
    let digest: pullgate::oci::Digest = layer.parse().unwrap();
    common::fills_settle(h.proxy()).await;
    assert!(
        h.proxy().has_blob(&digest).await.unwrap(),
        "the fill finished and published the blob"
    );
    // Served from the cache with upstream gone.
    h.fake.stop();
    let resp = h.get(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{layer}")).await;
    assert_eq!(body_bytes(resp).await.unwrap(), img.layers[0]);
    assert_eq!(h.fake.cdn_gets(&layer), 1);
}

async fn pull_image(h: &Harness, img: &common::fake_upstream::FakeImage) {
    let m = h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/latest").await;
    assert_eq!(m.status(), 200);
    for (d, bytes) in
        std::iter::once((&img.config_digest, &img.config)).chain(img.layer_digests.iter().zip(&img.layers))
    {
        let r = h.get(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{d}")).await;
        assert_eq!(r.status(), 200, "{d}");
        assert_eq!(&body_bytes(r).await.unwrap()[..], &bytes[..]);
    }
}

async fn cached_content_survives_outage_and_restart(extra: &str) {
    let mut h = Harness::start_with(extra, "").await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[70_000, 9_000, 1]);
    pull_image(&h, &img).await;

    h.fake.stop();
    pull_image(&h, &img).await;
    let by_digest = h
        .get(&format!(
            "/v2/registry.redhat.io/ubi9/ubi/manifests/{}",
            img.manifest_digest
        ))
        .await;
    assert_eq!(by_digest.status(), 200);

    h.restart().await;
    pull_image(&h, &img).await;
    let by_digest = h
        .get(&format!(
            "/v2/registry.redhat.io/ubi9/ubi/manifests/{}",
            img.manifest_digest
        ))
        .await;
    assert_eq!(by_digest.bytes().await.unwrap(), img.manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_content_is_served_with_upstream_down_and_after_restart_files_store() {
    // tag_ttl 0: every tag request tries upstream, so this also proves stale-if-error.
    cached_content_survives_outage_and_restart("[cache]\ntag_ttl = \"0s\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_content_is_served_with_upstream_down_and_after_restart_sled_store() {
    cached_content_survives_outage_and_restart("[cache]\ntag_ttl = \"0s\"\nblob_store = \"sled\"").await;
}
