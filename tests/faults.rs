//! Faults pullgate meets unattended, each injected and checked for nothing lost or
//! corrupted: broken CDN connections (resume), SIGKILL at random moments, I/O errors and
//! full disks during fills, the size limit with LRU eviction, a failing upstream, hostile
//! request heads, many concurrent connections, and shutdown during fills. Each test
//! prints its figure (run with `--nocapture` to see them).

mod common;

use common::fake_upstream::FakeRedHat;
use common::{Harness, ServeProcess, body_bytes};
use pullgate::cache::{BlobLocation, BlobReader, BlobStore, Cache, StagedBlob};
use pullgate::config::{BlobStoreKind, Config};
use pullgate::oci::Digest;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

/// A small deterministic generator (xorshift64*), so every run cuts at the same offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_fills_cut_at_random_offsets_all_complete_with_little_refetching() {
    let h = Harness::start().await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let size = 1_000_000usize;
    let (mut fetched, mut total, mut ok) = (0u64, 0u64, 0);
    for i in 0..20 {
        let img = h.fake.add_image(&format!("cut/{i}"), "latest", &[size]);
        let layer = img.layer_digests[0].clone();
        let before = h.fake.cdn_bytes_sent();
        h.fake.cut_after.store(1 + rng.below(size as u64 - 1), SeqCst);
        h.fake.cut_times.store(1, SeqCst);
        let r = h.get(&format!("/v2/registry.redhat.io/cut/{i}/blobs/{layer}")).await;
        let body = body_bytes(r).await.expect("the client gets the whole blob");
        assert_eq!(pullgate::oci::Digest::of(&body).to_string(), layer);
        ok += 1;
        let used = h.fake.cdn_bytes_sent() - before;
        assert!(
            used as f64 <= 1.1 * size as f64,
            "fill {i}: {used} bytes fetched for a {size}-byte blob"
        );
        fetched += used;
        total += size as u64;
    }
    eprintln!(
        "FIGURE resume: {ok}/20 fills complete with correct digests; upstream bytes / blob bytes = {:.3}",
        fetched as f64 / total as f64
    );
    assert!(h.proxy().metrics().fill_resumes.get() >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_that_ignores_range_on_resume_is_handled() {
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[800_000]);
    h.fake.ignore_range.store(true, SeqCst);
    h.fake.cut_after.store(300_000, SeqCst);
    h.fake.cut_times.store(1, SeqCst);
    let r = h
        .get(&format!(
            "/v2/registry.redhat.io/ubi9/ubi/blobs/{}",
            img.layer_digests[0]
        ))
        .await;
    assert_eq!(
        body_bytes(r).await.unwrap(),
        img.layers[0],
        "the resent prefix is skipped, not appended"
    );
}

/// A blob store wrapper whose staged writes fail on demand (EIO or ENOSPC).
struct FaultyStore {
    inner: Box<dyn BlobStore>,
    fail_after: Arc<AtomicU64>,
    enospc: Arc<AtomicBool>,
}

struct FaultyStaged {
    inner: Box<dyn StagedBlob>,
    written: u64,
    fail_after: Arc<AtomicU64>,
    enospc: Arc<AtomicBool>,
}

impl StagedBlob for FaultyStaged {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let limit = self.fail_after.load(SeqCst);
        if limit > 0 && self.written + bytes.len() as u64 > limit {
            return Err(if self.enospc.load(SeqCst) {
                io::Error::from_raw_os_error(28) // ENOSPC
            } else {
                io::Error::from_raw_os_error(5) // EIO
            });
        }
        self.written += bytes.len() as u64;
        self.inner.write(bytes)
    }
    fn readable_len(&self) -> u64 {
        self.inner.readable_len()
    }
    fn commit(self: Box<Self>, digest: &Digest) -> io::Result<BlobLocation> {
        self.inner.commit(digest)
    }
    fn discard(self: Box<Self>) {
        self.inner.discard()
    }
}

impl BlobStore for FaultyStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn begin(&self, fill_id: u64) -> io::Result<Box<dyn StagedBlob>> {
        Ok(Box::new(FaultyStaged {
            inner: self.inner.begin(fill_id)?,
            written: 0,
            fail_after: self.fail_after.clone(),
            enospc: self.enospc.clone(),
        }))
    }
    fn open_staged(&self, fill_id: u64, offset: u64) -> io::Result<BlobReader> {
        self.inner.open_staged(fill_id, offset)
    }
    fn open(&self, d: &Digest, l: &BlobLocation, offset: u64) -> io::Result<BlobReader> {
        self.inner.open(d, l, offset)
    }
    fn stored_size(&self, d: &Digest, l: &BlobLocation) -> io::Result<Option<u64>> {
        self.inner.stored_size(d, l)
    }
    fn remove(&self, d: &Digest, l: &BlobLocation) -> io::Result<()> {
        self.inner.remove(d, l)
    }
    fn discard_staged(&self, fill_id: u64) -> io::Result<()> {
        self.inner.discard_staged(fill_id)
    }
    fn probe(&self) -> io::Result<()> {
        self.inner.probe()
    }
    fn list(&self) -> io::Result<Vec<(Option<Digest>, BlobLocation)>> {
        self.inner.list()
    }
}

async fn write_errors_fail_the_fill_cleanly(kind: BlobStoreKind, enospc: bool) {
    let fake = FakeRedHat::start().await;
    let cached = fake.add_image("ubi9/ubi", "cached", &[40_000]);
    let big = fake.add_image("ubi9/ubi", "big", &[600_000]);
    let dir = tempfile::tempdir().unwrap();
    let store_line = if kind == BlobStoreKind::Sled {
        "[cache]\nblob_store = \"sled\""
    } else {
        ""
    };
    let config = Config::from_toml_str(&common::config_toml(dir.path(), &fake.registry_url, store_line, "")).unwrap();
    let fail_after = Arc::new(AtomicU64::new(0));
    let enospc_flag = Arc::new(AtomicBool::new(enospc));
    let (fa, ef) = (fail_after.clone(), enospc_flag.clone());
    let (cache, _) = Cache::open_wrapped(&config.data_dir, kind, move |inner| {
        Box::new(FaultyStore {
            inner,
            fail_after: fa,
            enospc: ef,
        })
    })
    .unwrap();
    let server = pullgate::app::spawn_with_cache(&config, Some(cache.clone()))
        .await
        .unwrap();
    let client = common::client();
    let blob = |d: &str| format!("{}/v2/registry.redhat.io/ubi9/ubi/blobs/{d}", server.url());
    assert_eq!(
        body_bytes(client.get(blob(&cached.layer_digests[0])).send().await.unwrap())
            .await
            .unwrap(),
        cached.layers[0]
    );

    fake.frame_delay_ms.store(5, SeqCst);
    fail_after.store(200_000, SeqCst);
    common::assert_not_delivered(client.get(blob(&big.layer_digests[0])).send().await.unwrap()).await;
    assert!(
        cache
            .blob(&big.layer_digests[0].parse().unwrap())
            .await
            .unwrap()
            .is_none(),
        "nothing half-published"
    );
    // Cached content keeps being served while writes fail.
    assert_eq!(
        body_bytes(client.get(blob(&cached.layer_digests[0])).send().await.unwrap())
            .await
            .unwrap(),
        cached.layers[0]
    );
    // Space returns: the same blob is fetched and served correctly.
    fail_after.store(0, SeqCst);
    assert_eq!(
        body_bytes(client.get(blob(&big.layer_digests[0])).send().await.unwrap())
            .await
            .unwrap(),
        big.layers[0]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_io_error_during_a_fill_fails_it_cleanly_files_store() {
    write_errors_fail_the_fill_cleanly(BlobStoreKind::Files, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_during_a_fill_fails_it_cleanly_sled_store() {
    write_errors_fail_the_fill_cleanly(BlobStoreKind::Sled, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_real_filesystem_fails_the_fill_and_recovers_when_space_returns() {
    let disk = common::SmallDisk::mount("24m");
    let fake = FakeRedHat::start().await;
    let cached = fake.add_image("ubi9/ubi", "cached", &[100_000]);
    let big = fake.add_image("ubi9/ubi", "big", &[4_000_000]);
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[upstream]]\nname = \"r\"\nurl = \"{}\"\nallow_redirect_hosts = [\"127.0.0.2\"]\nusername = \"{}\"\npassword_file = \"{}\"\n",
        disk.0.join("data").display(),
        fake.registry_url,
        common::USERNAME,
        {
            let pw = disk.1.path().join("pw");
            std::fs::write(&pw, common::PASSWORD).unwrap();
            pw.display().to_string()
        }
    );
    let server = pullgate::app::spawn(&Config::from_toml_str(&toml).unwrap())
        .await
        .unwrap();
    let client = common::client();
    let blob = |d: &str| format!("{}/v2/r/ubi9/ubi/blobs/{d}", server.url());
    assert_eq!(
        body_bytes(client.get(blob(&cached.layer_digests[0])).send().await.unwrap())
            .await
            .unwrap(),
        cached.layers[0]
    );
    // Leave about 1 MB free.
    let filler = disk.0.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", filler.display()))
        .output();
    let avail = std::fs::metadata(&filler).unwrap().len();
    std::fs::write(&filler, vec![0u8; (avail as usize).saturating_sub(1_000_000)]).unwrap();

    common::assert_not_delivered(client.get(blob(&big.layer_digests[0])).send().await.unwrap()).await;
    assert!(
        !server
            .proxy
            .has_blob(&big.layer_digests[0].parse().unwrap())
            .await
            .unwrap()
    );
    let staging: Vec<_> = std::fs::read_dir(disk.0.join("data/blobs/staging")).unwrap().collect();
    assert!(staging.is_empty(), "the staged part was removed: {staging:?}");
    assert_eq!(
        body_bytes(client.get(blob(&cached.layer_digests[0])).send().await.unwrap())
            .await
            .unwrap(),
        cached.layers[0]
    );
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        body_bytes(client.get(blob(&big.layer_digests[0])).send().await.unwrap())
            .await
            .unwrap(),
        big.layers[0]
    );
    server.shutdown().await.unwrap();
}

/// Bytes of every file under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_size_keeps_disk_use_bounded_with_lru_eviction() {
    let max: u64 = 8 << 20;
    let h = Harness::start_with(&format!("[cache]\nmax_size = \"{}\"", max), "").await;
    let blob_size = 2 << 20;
    let mut images = Vec::new();
    let mut peak = 0;
    // 3 x max_size of distinct content, pulled one after the other.
    for i in 0..12 {
        let img = h.fake.add_image(&format!("lru/{i}"), "latest", &[blob_size]);
        let r = h
            .get(&format!(
                "/v2/registry.redhat.io/lru/{i}/blobs/{}",
                img.layer_digests[0]
            ))
            .await;
        assert_eq!(body_bytes(r).await.unwrap(), img.layers[0]);
        // The client has the verified bytes before the fill has published and run its
        // eviction pass: measure once the fill is done.
        common::fills_settle(h.proxy()).await;
        let used = disk_usage(&h.dir.path().join("data"));
        peak = peak.max(used);
        assert!(
            used <= max + blob_size as u64,
            "after pull {i}: {used} bytes on disk > max_size + one fill"
        );
        images.push((i, img));
    }
    let evictions = h.proxy().metrics().evictions.get();
    eprintln!(
        "FIGURE max_size: pulled {} MiB through an {} MiB cache; peak disk use {:.2} MiB (limit + one fill = {} MiB); {evictions} evictions",
        (12 * blob_size) >> 20,
        max >> 20,
        peak as f64 / (1 << 20) as f64,
        (max + blob_size as u64) >> 20
    );
    assert!(evictions >= 6);
    // Every image still pulls correctly (evicted ones are fetched again).
    for (i, img) in &images {
        let r = h
            .get(&format!(
                "/v2/registry.redhat.io/lru/{i}/blobs/{}",
                img.layer_digests[0]
            ))
            .await;
        assert_eq!(body_bytes(r).await.unwrap(), img.layers[0], "image {i}");
    }
    // Content larger than the limit still streams through.
    let huge = h.fake.add_image("lru/huge", "latest", &[12 << 20]);
    let r = h
        .get(&format!(
            "/v2/registry.redhat.io/lru/huge/blobs/{}",
            huge.layer_digests[0]
        ))
        .await;
    assert_eq!(body_bytes(r).await.unwrap(), huge.layers[0]);
    common::eventually(
        "the oversized blob to be evicted once its reader is done",
        Duration::from_secs(10),
        async || disk_usage(&h.dir.path().join("data")) <= max + blob_size as u64,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_being_read_is_never_evicted_under_its_reader() {
    let max: u64 = 4 << 20;
    let h = Harness::start_with(&format!("[cache]\nmax_size = \"{}\"\nblob_store = \"sled\"", max), "").await;
    let first = h.fake.add_image("lru/a", "latest", &[3 << 20]);
    let url = h.url(&format!(
        "/v2/registry.redhat.io/lru/a/blobs/{}",
        first.layer_digests[0]
    ));
    body_bytes(h.client.get(&url).send().await.unwrap()).await.unwrap();
    // A slow reader of the cached blob while other pulls push the cache over its limit.
    let mut slow = h.client.get(&url).send().await.unwrap();
    let mut got = slow.chunk().await.unwrap().unwrap().to_vec();
    for i in 0..3 {
        let img = h.fake.add_image(&format!("lru/b{i}"), "latest", &[3 << 20]);
        let r = h
            .get(&format!(
                "/v2/registry.redhat.io/lru/b{i}/blobs/{}",
                img.layer_digests[0]
            ))
            .await;
        assert_eq!(body_bytes(r).await.unwrap(), img.layers[0]);
    }
    while let Some(c) = slow.chunk().await.expect("the reader's blob was not removed under it") {
        got.extend_from_slice(&c);
    }
    assert_eq!(got, first.layers[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_never_leaves_wrong_bytes_or_broken_records() {
    let fake = FakeRedHat::start().await;
    let mut images = Vec::new();
    for i in 0..6 {
        images.push(fake.add_image(&format!("crash/{i}"), "latest", &[1_500_000]));
    }
    fake.frame_delay_ms.store(8, SeqCst);
    let dir = tempfile::tempdir().unwrap();
    // A small max_size so evictions run during the cycles too.
    let config = dir.path().join("pullgate.toml");
    std::fs::write(
        &config,
        common::config_toml(dir.path(), &fake.registry_url, "[cache]\nmax_size = \"6MiB\"", ""),
    )
    .unwrap();
    let config_s = config.to_str().unwrap().to_string();
    let mut rng = Rng(42);
    let (mut wrong, mut bad_records, mut complete, mut corrupted_cycles) = (0, 0, 0, 0);
    let cycles = 20;
    for cycle in 0..cycles {
        // Every third cycle the CDN serves corrupted bytes: a kill must never turn them
        // into a complete body or a record.
        let corrupt = cycle % 3 == 2;
        fake.wrong_bytes.store(corrupt, SeqCst);
        corrupted_cycles += u32::from(corrupt);
        let server = ServeProcess::start(&config, &[]);
        let client = common::client();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let i = rng.below(images.len() as u64) as usize;
            let (url, want) = (
                format!(
                    "{}/v2/registry.redhat.io/crash/{i}/blobs/{}",
                    server.url(),
                    images[i].layer_digests[0]
                ),
                images[i].layers[0].clone(),
            );
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => body_bytes(r).await.ok().map(|b| b == want),
                    _ => None,
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        server.signal("KILL");
        drop(server); // reaps the killed process
        for t in tasks {
            match t.await.unwrap() {
                Some(true) => complete += 1,
                Some(false) => wrong += 1, // a complete, clean body with wrong bytes
                None => {}
            }
        }
        // Every record must point at complete, correct data.
        let out = common::pullgate(&["cache", "verify", "--config", &config_s]);
        if !out.status.success() {
            bad_records += 1;
            eprintln!("cycle {cycle}: {}", String::from_utf8_lossy(&out.stdout));
        }
    }
    // Afterwards every blob is fetched again correctly.
    fake.wrong_bytes.store(false, SeqCst);
    let server = ServeProcess::start(&config, &[]);
    let client = common::client();
    for (i, img) in images.iter().enumerate() {
        let r = client
            .get(format!(
                "{}/v2/registry.redhat.io/crash/{i}/blobs/{}",
                server.url(),
                img.layer_digests[0]
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(
            body_bytes(r).await.unwrap(),
            img.layers[0],
            "blob {i} after the crashes"
        );
    }
    let _ = server.stop();
    eprintln!(
        "FIGURE crash: {cycles} SIGKILL/restart cycles ({corrupted_cycles} with a corrupting CDN); {wrong} responses with wrong bytes; {bad_records} cycles with records pointing at missing or partial data; {complete} bodies completed before a kill"
    );
    assert_eq!((wrong, bad_records), (0, 0));
    assert!(
        complete > 0,
        "some bodies completed between the kills (else the test saw no serving)"
    );
}

#[tokio::test]
async fn a_failing_upstream_is_not_hammered() {
    let h = Harness::start().await;
    h.fake.add_image("ubi9/ubi", "seed", &[10]);
    assert_eq!(
        h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/seed").await.status(),
        200
    );
    h.fake.fail_all_5xx.store(true, SeqCst);
    let before = h.fake.request_count();
    for i in 0..20 {
        let r = h
            .get(&format!("/v2/registry.redhat.io/ubi9/ubi/manifests/missing-{i}"))
            .await;
        assert!(r.status().is_server_error(), "{}", r.status());
    }
    let asked = h.fake.request_count() - before;
    eprintln!("FIGURE breaker: 20 client requests to a failing upstream -> {asked} upstream requests");
    assert!(
        asked <= 5,
        "the failing upstream was asked {asked} times for 20 client requests"
    );
    let paused = h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/missing-x").await;
    assert_eq!(paused.status(), 503);
    assert!(paused.headers().contains_key("retry-after"));
    // A cached tag is still served while the upstream is paused.
    assert_eq!(
        h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/seed").await.status(),
        200
    );
    // Once upstream recovers and the pause ends, requests go through again.
    h.fake.fail_all_5xx.store(false, SeqCst);
    h.fake.add_image("ubi9/ubi", "later", &[10]);
    common::eventually(
        "upstream to be asked again after the pause",
        Duration::from_secs(40),
        async || h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/later").await.status() == 200,
    )
    .await;
}

#[tokio::test]
async fn wrong_credentials_are_not_retried_for_every_client_request() {
    let mut h = Harness::start().await;
    h.fake.add_image("ubi9/ubi", "latest", &[10]);
    std::fs::write(h.dir.path().join("registry-token"), "wrong").unwrap();
    h.restart().await;
    for _ in 0..20 {
        let r = h.get("/v2/registry.redhat.io/ubi9/ubi/manifests/latest").await;
        assert_eq!(r.status(), 403);
    }
    let tokens = h.fake.token_requests().len();
    eprintln!("FIGURE denied: 20 client requests with wrong upstream credentials -> {tokens} token requests");
    assert!(tokens <= 2, "{tokens} token requests");
}

async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn hostile_request_heads_are_refused_without_harm() {
    let h = Harness::start().await;
    let addr = h.server.as_ref().unwrap().addr;
    let huge = format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200_000));
    let resp = raw(addr, huge.as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "a 200 kB header: {}",
        resp.lines().next().unwrap_or("")
    );
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = raw(addr, format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "500 headers: {}",
        resp.lines().next().unwrap_or("")
    );
    let resp = raw(
        addr,
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,2-3,4-5,6-7,8-9\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"));
    let resp = raw(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello").await;
    assert!(
        !resp.starts_with("HTTP/1.1 5"),
        "a TLS hello on plain HTTP is not a server error"
    );
    assert_eq!(h.get("/v2/").await.status(), 200, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_hold_connections_with_their_headers() {
    let h = Harness::start_with("[server]\nheader_read_timeout = \"500ms\"", "").await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(h.server.as_ref().unwrap().addr)
        .await
        .unwrap();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the slow client was cut off"
    );
    assert_eq!(h.get("/v2/").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_load_of_many_connections_is_served_without_errors() {
    // The long variant (1,000 connections for 60 s, peak RSS) is `cargo bench --bench load`.
    let h = Harness::start().await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[256 * 1024]);
    let blob = h.url(&format!(
        "/v2/registry.redhat.io/ubi9/ubi/blobs/{}",
        img.layer_digests[0]
    ));
    let manifest = h.url(&format!(
        "/v2/registry.redhat.io/ubi9/ubi/manifests/{}",
        img.manifest_digest
    ));
    body_bytes(h.client.get(&blob).send().await.unwrap()).await.unwrap();
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (blob, manifest, errors, done) = (blob.clone(), manifest.clone(), errors.clone(), done.clone());
        let want = img.layers[0].clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
            let until = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < until {
                let ok = if i % 2 == 0 {
                    match client.get(&blob).send().await {
                        Ok(r) => body_bytes(r).await.map(|b| b == want).unwrap_or(false),
                        Err(_) => false,
                    }
                } else {
                    client
                        .get(&manifest)
                        .send()
                        .await
                        .map(|r| r.status() == 200)
                        .unwrap_or(false)
                };
                if ok {
                    done.fetch_add(1, SeqCst)
                } else {
                    errors.fetch_add(1, SeqCst)
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "FIGURE short load: 200 connections for 3 s: {} requests, {} errors",
        done.load(SeqCst),
        errors.load(SeqCst)
    );
    assert_eq!(errors.load(SeqCst), 0);
    assert!(done.load(SeqCst) > 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_fill_stops_it_cleanly() {
    let mut h = Harness::start_with("[server]\ndrain_timeout = \"200ms\"", "").await;
    let img = h.fake.add_image("ubi9/ubi", "latest", &[2_000_000]);
    h.fake.frame_delay_ms.store(50, SeqCst);
    let url = h.url(&format!(
        "/v2/registry.redhat.io/ubi9/ubi/blobs/{}",
        img.layer_digests[0]
    ));
    // Headers arrive once upstream answered; the first bytes once the fill streams.
    let mut resp = h.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().expect("the fill streams");
    assert!(!first.is_empty());
    let reader = tokio::spawn(body_bytes(resp));
    let config = h.config.clone();
    let server = h.server.take().unwrap();
    server.shutdown().await.unwrap();
    assert!(
        reader.await.unwrap().is_err(),
        "the unfinished body ends with an error, never clean"
    );
    let staging: Vec<_> = std::fs::read_dir(h.dir.path().join("data/blobs/staging"))
        .unwrap()
        .collect();
    assert!(staging.is_empty(), "staged bytes discarded: {staging:?}");
    let (_, report) = common::reopen_cache(&config.data_dir, BlobStoreKind::Files).await;
    assert_eq!(report, Default::default(), "nothing left to repair after a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_bounds_the_connections_served_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start_with("[server]\nmax_connections = 1", "").await;
    let addr = h.server.as_ref().unwrap().addr;
    let request = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut buf = [0u8; 256];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The first connection stays open (keep-alive): a second one waits in the backlog.
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    second.write_all(request).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "the second connection was served while the first held the only slot"
    );
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("served once the slot frees")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_fills_queues_upstream_downloads() {
    let h = Harness::start_with("[cache]\nmax_concurrent_fills = 1", "").await;
    let a = h.fake.add_image("q/a", "latest", &[640 * 1024]);
    let b = h.fake.add_image("q/b", "latest", &[64 * 1024]);
    h.fake.frame_delay_ms.store(100, SeqCst); // a takes about 1 s
    let started = std::time::Instant::now();
    // a's headers arrive once its fill holds the only slot and upstream answered.
    let first = h
        .get(&format!("/v2/registry.redhat.io/q/a/blobs/{}", a.layer_digests[0]))
        .await;
    let url_b = h.url(&format!("/v2/registry.redhat.io/q/b/blobs/{}", b.layer_digests[0]));
    let client = h.client.clone();
    let second = tokio::spawn(async move { body_bytes(client.get(&url_b).send().await.unwrap()).await.unwrap() });
    common::eventually("b's fill to be registered", Duration::from_secs(5), async || {
        h.proxy().fills_in_flight() == 2
    })
    .await;
    // Both fills exist and a's is still running (b's cannot end before a's frees the
    // slot), yet upstream was never asked for b.
    assert_eq!(
        h.fake.registry_blob_redirects(&b.layer_digests[0]),
        0,
        "b waits for a's slot"
    );
    assert_eq!(h.proxy().fills_in_flight(), 2, "a's fill was still running");
    assert_eq!(body_bytes(first).await.unwrap(), a.layers[0]);
    assert_eq!(second.await.unwrap(), b.layers[0]);
    let b_done = started.elapsed();
    assert!(
        b_done >= Duration::from_millis(900),
        "b's fill waited for a's slot (done after {b_done:?})"
    );
}
