//! Load soak, outside the test suite: `cargo bench --bench load`. Starts an in-process
//! upstream and `pullgate serve` as its own process, warms the cache, then holds N client
//! connections (default 1,000) for D seconds (default 60) — a mix of cached blob GETs,
//! manifest GETs and slow readers — and reports requests, errors and pullgate's peak RSS.
//! `PULLGATE_LOAD_CONNECTIONS` and `PULLGATE_LOAD_SECONDS` override N and D.

use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use sha2::{Digest as _, Sha256};
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

const BLOB_SIZE: usize = 1 << 20;

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let connections: usize = std::env::var("PULLGATE_LOAD_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seconds: u64 = std::env::var("PULLGATE_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let _ = rustls::crypto::ring::default_provider().install_default();

    // The upstream: one image with four 1 MiB layers, no auth.
    let blobs: Vec<Vec<u8>> = (0..4u8)
        .map(|i| (0..BLOB_SIZE).map(|j| (j as u8).wrapping_mul(31) ^ i).collect())
        .collect();
    let layers: Vec<String> = blobs.iter().map(|b| digest(b)).collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": layers[0], "size": BLOB_SIZE},
        "layers": layers.iter().map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": BLOB_SIZE})).collect::<Vec<_>>(),
    })
    .to_string();
    let manifest_digest = digest(manifest.as_bytes());
    let store: Arc<Vec<(String, Vec<u8>)>> = Arc::new(layers.iter().cloned().zip(blobs).collect());
    let m = manifest.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let (store, m) = (store.clone(), m.clone());
        async move {
            let path = uri.path().to_string();
            if path == "/v2/" {
                return StatusCode::OK.into_response();
            }
            if path.contains("/manifests/") {
                return ([("content-type", "application/vnd.oci.image.manifest.v1+json")], m).into_response();
            }
            for (d, b) in store.iter() {
                if path.ends_with(d.as_str()) {
                    return b.clone().into_response();
                }
            }
            StatusCode::NOT_FOUND.into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pullgate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[upstream]]\nname = \"up\"\nurl = \"{upstream}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pullgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("PULLGATE_LOG", "warn,pullgate::server=info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start pullgate");
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let _ = tx.send(
                    line[i + "listening on http://".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                );
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("pullgate address");
    let base = format!("http://{addr}");
    let warm = reqwest::Client::new();
    for d in &layers {
        let b = warm
            .get(format!("{base}/v2/up/img/blobs/{d}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(b.len(), BLOB_SIZE);
    }
    let rss_before = rss_kib(pid, "VmRSS:");

    let (requests, errors, bytes) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid, "VmRSS:"), Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..connections {
        let (base, layers, md) = (base.clone(), layers.clone(), manifest_digest.clone());
        let (requests, errors, bytes) = (requests.clone(), errors.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            // One kept-alive connection per client.
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
            let mut n = 0usize;
            while Instant::now() < until {
                n += 1;
                let ok = match i % 5 {
                    0 | 1 => {
                        let d = &layers[(i + n) % layers.len()];
                        match client.get(format!("{base}/v2/up/img/blobs/{d}")).send().await {
                            Ok(r) if r.status() == 200 => match r.bytes().await {
                                Ok(b) => {
                                    bytes.fetch_add(b.len() as u64, Relaxed);
                                    b.len() == BLOB_SIZE
                                }
                                Err(_) => false,
                            },
                            _ => false,
                        }
                    }
                    2 | 3 => match client.get(format!("{base}/v2/up/img/manifests/{md}")).send().await {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    },
                    _ => {
                        // A slow reader: 64 KiB every 100 ms.
                        let d = &layers[n % layers.len()];
                        match client.get(format!("{base}/v2/up/img/blobs/{d}")).send().await {
                            Ok(mut r) if r.status() == 200 => {
                                let mut got = 0;
                                let mut ok = true;
                                while Instant::now() < until {
                                    match r.chunk().await {
                                        Ok(Some(c)) => got += c.len(),
                                        Ok(None) => break,
                                        Err(_) => {
                                            ok = false;
                                            break;
                                        }
                                    }
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                bytes.fetch_add(got as u64, Relaxed);
                                ok
                            }
                            _ => false,
                        }
                    }
                };
                requests.fetch_add(1, Relaxed);
                if !ok {
                    errors.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    sampler.abort();
    let hwm = rss_kib(pid, "VmHWM:");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().unwrap();
    let (r, e, b) = (requests.load(Relaxed), errors.load(Relaxed), bytes.load(Relaxed));
    println!(
        "| connections | seconds | requests | errors | served MiB | pullgate RSS before | peak RSS (sampled) | VmHWM |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {connections} | {seconds} | {r} | {e} | {} | {} MiB | {} MiB | {} MiB |",
        b >> 20,
        rss_before / 1024,
        peak.load(Relaxed) / 1024,
        hwm / 1024
    );
    println!(
        "{}",
        serde_json::json!({"connections": connections, "seconds": seconds, "requests": r, "errors": e, "served_bytes": b,
            "rss_before_kib": rss_before, "peak_rss_kib": peak.load(Relaxed), "vmhwm_kib": hwm, "exit_ok": status.success()})
    );
}
