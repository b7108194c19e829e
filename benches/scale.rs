//! Scale benchmark, outside the test suite: `cargo bench --bench scale`. Whether every
//! cost of pullgate grows with the work done rather than with the size of the cache.
//!
//! For each size (`PULLGATE_SCALE_SIZES`, default `10000,100000,1000000` blobs) a data
//! directory is populated through pullgate's own cache API (`Cache::bulk_loader`: 1 KiB
//! blob files without a fsync each, plus 10% as many image manifests and tag mappings,
//! last uses spread over 100 days), then measured with the normal code, the release
//! `pullgate` binary:
//! * `pullgate serve` start until `/readyz` answers 200, after a clean stop (median of 3)
//!   and after a SIGKILL (then a few blobs are fetched and checked against their digests);
//! * RSS after start, and the peak (VmHWM) while serving everything below;
//! * manifest-by-digest GET latency under `wrk -t1 -c64`, and blob HEAD latency under an
//!   in-process closed loop of 64 connections on one thread (wrk cannot read HEAD
//!   answers), over random cached keys (`PULLGATE_SCALE_SECS`, default 5 s each);
//! * fills into a full cache (`max_size` = the cache's size): `PULLGATE_SCALE_FILLS`
//!   (default 600) new 1 KiB blobs from an in-process upstream by 4 clients; fills/s, the
//!   process's CPU time per fill, the eviction passes' time (from `/metrics`) and the
//!   bytes evicted against the bytes filled;
//! * `cache stats`, `cache ls --repo`, `cache evict --older-than`, `cache verify` (time,
//!   and whether verify reported progress).
//!
//! Prints a table of each figure by size with the growth ratio largest/smallest, and
//! writes JSON to `target/bench-scale.json`. Installs `wrk` with apt-get when missing.

mod support;

use pullgate::cache::{BlobStoreKind, Cache, TagRecord, now_ms};
use pullgate::oci::Digest;
use serde_json::{Value, json};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;

const BLOB_BYTES: usize = 1024;
const DAY_MS: u64 = 86_400_000;
const REPOS: usize = 1000;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The bytes of blob `i` (of the population `salt`): unique per index.
fn blob(salt: u64, i: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOB_BYTES];
    for (n, chunk) in b.chunks_mut(16).enumerate() {
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        chunk[8..16].copy_from_slice(&(salt ^ n as u64).to_le_bytes());
    }
    b
}

/// An OCI image manifest naming blobs `first..first+layers`.
fn manifest(digests: &[Digest], first: usize, layers: usize) -> Vec<u8> {
    let d = |i: usize| &digests[(first + i) % digests.len()];
    let layer_list: Vec<Value> = (1..=layers)
        .map(|i| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d(i).to_string(), "size": BLOB_BYTES}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(0).to_string(), "size": BLOB_BYTES},
        "layers": layer_list,
    }))
    .expect("manifest JSON")
}

/// What was loaded, for the requests that follow.
struct Population {
    /// Random samples of cached keys (paths under `/v2/up/`).
    manifest_paths: Vec<String>,
    blob_paths: Vec<String>,
    /// Blobs to fetch after a SIGKILL: (path, digest).
    checks: Vec<(String, Digest)>,
    usage: u64,
    seconds: f64,
}

fn populate(data: &Path, n: u64) -> Population {
    let started = Instant::now();
    let (cache, _) = Cache::open(data, BlobStoreKind::Files).expect("open the cache");
    let mut load = cache.bulk_loader();
    let now = now_ms();
    let span = 100 * DAY_MS;
    // Oldest first: blob i was last used at now - span * (n - i) / n.
    let last_use = |i: u64, of: u64| now - span * (of - i) / of;
    let mut digests = Vec::with_capacity(n as usize);
    for i in 0..n {
        let bytes = blob(n, i);
        let d = Digest::of(&bytes);
        load.blob(&d, &bytes, last_use(i, n)).expect("load a blob");
        digests.push(d);
    }
    let manifests = (n / 10).max(1);
    let mut manifest_digests = Vec::with_capacity(manifests as usize);
    for k in 0..manifests {
        let bytes = manifest(&digests, (k * 10) as usize, 9);
        let d = Digest::of(&bytes);
        load.manifest(&d, OCI_MANIFEST, bytes.into(), last_use(k, manifests))
            .expect("load a manifest");
        let record = TagRecord {
            digest: d.to_string(),
            media_type: OCI_MANIFEST.into(),
            fetched_ms: last_use(k, manifests),
        };
        load.tag(
            "up",
            &format!("scale/r{}", k as usize % REPOS),
            &format!("t{k}"),
            &record,
        )
        .expect("load a tag");
        manifest_digests.push(d);
    }
    load.finish().expect("finish loading");
    let usage = cache.totals().usage();
    drop(cache);
    // A fixed pseudo-random sample (xorshift), the same keys for every run.
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ n;
    let mut pick = |len: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % len as u64) as usize
    };
    let manifest_paths = (0..1000)
        .map(|_| {
            let k = pick(manifest_digests.len());
            format!("/v2/up/scale/r{}/manifests/{}", k % REPOS, manifest_digests[k])
        })
        .collect();
    let blob_paths = (0..1000)
        .map(|_| format!("/v2/up/scale/r0/blobs/{}", digests[pick(digests.len())]))
        .collect();
    let checks = (0..20)
        .map(|_| {
            let d = digests[pick(digests.len())].clone();
            (format!("/v2/up/scale/r0/blobs/{d}"), d)
        })
        .collect();
    Population {
        manifest_paths,
        blob_paths,
        checks,
        usage,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// An upstream serving fresh 1 KiB blobs by digest (anonymous; the fills' source).
struct Upstream {
    url: String,
    digests: Vec<Digest>,
    served: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

fn start_upstream(salt: u64, count: u64) -> Upstream {
    let mut blobs = std::collections::HashMap::new();
    let mut digests = Vec::new();
    for i in 0..count {
        let bytes = blob(salt, i);
        let d = Digest::of(&bytes);
        blobs.insert(d.to_string(), bytes::Bytes::from(bytes));
        digests.push(d);
    }
    let blobs = Arc::new(blobs);
    let served = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .expect("bind the upstream");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let counter = served.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (blobs, counter) = (blobs.clone(), counter.clone());
        async move {
            use axum::response::IntoResponse;
            let digest = uri.path().rsplit('/').next().unwrap_or("");
            match blobs.get(digest) {
                Some(b) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    ([("content-type", "application/octet-stream")], b.clone()).into_response()
                }
                None if uri.path() == "/v2/" => "{}".into_response(),
                None => axum::http::StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Upstream {
        url,
        digests,
        served,
        _runtime: runtime,
    }
}

/// `pullgate serve` on a free port; its log in `<dir>/serve-N.log`.
struct Serve {
    proc: Proc,
    base: String,
}

fn write_config(dir: &Path, upstream: &str, max_size: u64) -> std::path::PathBuf {
    let path = dir.join("pullgate.toml");
    fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[cache]\nmax_size = {max_size}\n\n[[upstream]]\nname = \"up\"\nurl = \"{upstream}\"\n",
            dir.join("data").display()
        ),
    )
    .expect("write the config");
    path
}

static STARTS: AtomicU64 = AtomicU64::new(0);

/// Starts pullgate and waits for `/readyz` 200; returns it and the time to ready.
fn serve(config: &Path, dir: &Path) -> (Serve, Duration) {
    let n = STARTS.fetch_add(1, Ordering::Relaxed);
    let log = dir.join(format!("serve-{n}.log"));
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pullgate"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("PULLGATE_LOG", "warn,pullgate::server=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn("pullgate", &mut cmd, true, log.clone());
    let stderr = proc.child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut file = fs::File::create(&log).ok();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let addr = line[i + "listening on http://".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let _ = tx.send(addr);
            }
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("pullgate did not start:\n{}", proc.log_text()));
    let base = format!("http://{addr}");
    loop {
        if http(&base, "GET", "/readyz").0 == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "not ready after 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    (Serve { proc, base }, started.elapsed())
}

/// One HTTP/1.1 request on a fresh connection: status and body.
fn http(base: &str, method: &str, path: &str) -> (u16, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, Vec::new());
    };
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(out.len(), |p| p + 4);
    let status = std::str::from_utf8(&out[..split.min(out.len())])
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out[split..].to_vec())
}

/// A metric's value from `/metrics` (the sum over its series).
fn metric(base: &str, name: &str) -> f64 {
    let (_, body) = http(base, "GET", "/metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// `wrk -t1 -c64` over `paths` chosen at random by a Lua script, for `secs`.
fn wrk(dir: &Path, base: &str, method: &str, paths: &[String], secs: u64) -> LoadResult {
    let script = dir.join(format!("{}.lua", method.to_lowercase()));
    let list = paths.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(",\n");
    fs::write(
        &script,
        format!(
            "local paths = {{\n{list}\n}}\nmath.randomseed(42)\nrequest = function()\n  return wrk.format(\"{method}\", paths[math.random(#paths)])\nend\n"
        ),
    )
    .expect("write the wrk script");
    let out = Command::new("wrk")
        .args(["-t1", "-c64", "--latency", "-d"])
        .arg(format!("{secs}s"))
        .arg("-s")
        .arg(&script)
        .arg(base)
        .stdin(Stdio::null())
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    parse_wrk(&text).unwrap_or_else(|| {
        let (status, body) = http(base, method, &paths[0]);
        panic!(
            "could not read wrk's output:\n{text}\n{method} {} → {status} {}",
            paths[0],
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    })
}

/// `conns` kept-alive connections sending `HEAD` for random `paths` in a closed loop
/// for `secs`, on one thread (as `wrk -t1`, which cannot read HEAD answers: it waits for
/// the body their `Content-Length` announces). Latency percentiles of every request.
fn head_load(base: &str, paths: &[String], conns: usize, secs: u64) -> LoadResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = base.trim_start_matches("http://").to_string();
    let paths = Arc::new(paths.to_vec());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (latencies, errors) = runtime.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..conns {
            let (addr, paths) = (addr.clone(), paths.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                    return (lat, 1);
                };
                let _ = s.set_nodelay(true);
                let mut buf = vec![0u8; 4096];
                let mut i = c * 7919;
                while Instant::now() < deadline {
                    i = (i * 1_103_515_245 + 12_345) % 1_000_003;
                    let path = &paths[i % paths.len()];
                    let started = Instant::now();
                    let req = format!("HEAD {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
                    if s.write_all(req.as_bytes()).await.is_err() {
                        return (lat, errors + 1);
                    }
                    let mut have = 0;
                    loop {
                        match s.read(&mut buf[have..]).await {
                            Ok(0) | Err(_) => return (lat, errors + 1),
                            Ok(n) => have += n,
                        }
                        if buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    if !buf.starts_with(b"HTTP/1.1 200") {
                        errors += 1;
                    }
                    lat.push(started.elapsed().as_micros() as u32);
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (lat, e) = t.await.expect("HEAD client");
            all.extend(lat);
            errors += e;
        }
        (all, errors)
    });
    let mut sorted = latencies;
    sorted.sort_unstable();
    let pct = |p: f64| {
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    LoadResult {
        requests: sorted.len() as u64,
        errors,
        rps: sorted.len() as f64 / secs as f64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

/// Runs `pullgate cache <args>`: seconds taken, stdout, stderr.
fn cache_command(config: &Path, args: &[&str]) -> (f64, String, String) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pullgate"))
        .arg("cache")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("run pullgate cache");
    let secs = started.elapsed().as_secs_f64();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "pullgate cache {args:?} failed: {stderr}"
    );
    (secs, stdout, stderr)
}

fn measure(n: u64, fills: u64, secs: u64) -> Value {
    let scratch = Scratch::new("pullgate-scale-");
    let dir = scratch.path();
    eprintln!("scale: {n} blobs: populating …");
    let pop = populate(&dir.join("data"), n);
    eprintln!(
        "scale: {n} blobs: populated in {:.1} s ({} MiB as max_size counts it)",
        pop.seconds,
        pop.usage >> 20
    );
    let upstream = start_upstream(n ^ 0xF111, fills);
    let config = write_config(dir, &upstream.url, pop.usage);

    // Start after a clean stop (the loader closes cleanly), three times.
    let mut clean = Vec::new();
    let mut rss_after_start = 0;
    for round in 0..3 {
        let (mut s, took) = serve(&config, dir);
        clean.push(took.as_secs_f64() * 1000.0);
        if round == 0 {
            rss_after_start = status_kib(s.proc.pid(), "VmRSS:");
        }
        s.proc.stop();
    }
    eprintln!("scale: {n} blobs: ready after a clean stop in {clean:?} ms");

    // Lookups, then fills into the full cache, on one process.
    let (mut s, _) = serve(&config, dir);
    // Three rounds of each; the median round (by p99) is reported.
    let median_round = |mut rounds: Vec<LoadResult>| {
        rounds.sort_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
        rounds[rounds.len() / 2]
    };
    let (mut manifest_rounds, mut head_rounds) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        manifest_rounds.push(wrk(dir, &s.base, "GET", &pop.manifest_paths, secs));
        head_rounds.push(head_load(&s.base, &pop.blob_paths, 64, secs));
    }
    let p99s = |r: &[LoadResult]| r.iter().map(|x| x.p99_ms).collect::<Vec<_>>();
    eprintln!(
        "scale: {n} blobs: manifest GET p99 of 3 rounds {:?} ms; blob HEAD p99 {:?} ms",
        p99s(&manifest_rounds),
        p99s(&head_rounds)
    );
    let (manifests, heads) = (median_round(manifest_rounds), median_round(head_rounds));
    let pid = s.proc.pid();
    let (passes0, pass_secs0, evicted0) = (
        metric(&s.base, "pullgate_eviction_pass_duration_seconds_count"),
        metric(&s.base, "pullgate_eviction_pass_duration_seconds_sum"),
        metric(&s.base, "pullgate_evicted_bytes_total"),
    );
    let cpu0 = cpu_seconds(pid);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (next, base, digests) = (next.clone(), s.base.clone(), upstream.digests.clone());
            std::thread::spawn(move || {
                let mut bad = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(d) = digests.get(i) else { return bad };
                    let (status, body) = http(&base, "GET", &format!("/v2/up/scale/fill/blobs/{d}"));
                    if status != 200 || Digest::of(&body) != *d {
                        bad += 1;
                    }
                }
            })
        })
        .collect();
    let bad_fills: u64 = clients.into_iter().map(|c| c.join().expect("fill client")).sum();
    let fill_secs = started.elapsed().as_secs_f64();
    // The last fills' eviction passes run after their clients have the bytes.
    std::thread::sleep(Duration::from_millis(300));
    let cpu = cpu_seconds(pid) - cpu0;
    let passes = metric(&s.base, "pullgate_eviction_pass_duration_seconds_count") - passes0;
    let pass_secs = metric(&s.base, "pullgate_eviction_pass_duration_seconds_sum") - pass_secs0;
    let evicted = metric(&s.base, "pullgate_evicted_bytes_total") - evicted0;
    let peak_rss = status_kib(pid, "VmHWM:");
    assert_eq!(bad_fills, 0, "every fill answered with the right bytes");
    assert_eq!(
        upstream.served.load(Ordering::Relaxed),
        fills,
        "one upstream fetch per fill"
    );
    let filled = fills * BLOB_BYTES as u64;
    eprintln!(
        "scale: {n} blobs: {fills} fills into the full cache in {fill_secs:.2} s ({:.0}/s), CPU {:.2} ms per fill, {passes} eviction passes ({:.3} ms each), evicted {evicted} bytes for {filled} filled",
        fills as f64 / fill_secs,
        cpu * 1000.0 / fills as f64,
        pass_secs * 1000.0 / passes.max(1.0)
    );
    s.proc.stop();

    // After a SIGKILL: ready again, and nothing wrong served.
    let (mut s, _) = serve(&config, dir);
    let _ = Command::new("kill").args(["-KILL", &s.proc.pid().to_string()]).status();
    s.proc.stop();
    let (mut s, after_kill) = serve(&config, dir);
    let repair_rss = status_kib(s.proc.pid(), "VmHWM:");
    let mut wrong = 0;
    for (path, d) in &pop.checks {
        let (status, body) = http(&s.base, "GET", path);
        if status == 200 && Digest::of(&body) != *d {
            wrong += 1;
        }
    }
    assert_eq!(wrong, 0, "nothing wrong served after a SIGKILL");
    eprintln!(
        "scale: {n} blobs: ready after a SIGKILL in {:.0} ms",
        after_kill.as_secs_f64() * 1000.0
    );
    s.proc.stop();

    // The cache tooling, on the stopped cache.
    let (stats_secs, _, _) = cache_command(&config, &["stats"]);
    let (ls_secs, ls_out, _) = cache_command(&config, &["ls", "--repo", "scale/r7*"]);
    let (evict_secs, evict_out, _) = cache_command(&config, &["evict", "--older-than", "90d"]);
    let (verify_secs, verify_out, verify_err) = cache_command(&config, &["verify"]);
    let progress_lines = verify_err.lines().filter(|l| l.starts_with("verifying:")).count();
    eprintln!(
        "scale: {n} blobs: cache stats {stats_secs:.2} s, ls {ls_secs:.2} s ({}), evict {evict_secs:.2} s ({}), verify {verify_secs:.1} s ({}; {progress_lines} progress lines)",
        ls_out.lines().last().unwrap_or(""),
        evict_out.trim(),
        verify_out.lines().last().unwrap_or("")
    );
    json!({
        "blobs": n,
        "populate_s": pop.seconds,
        "ready_clean_ms": median(clean.clone()),
        "ready_clean_samples_ms": clean,
        "ready_after_kill_ms": after_kill.as_secs_f64() * 1000.0,
        "repair_peak_rss_mib": repair_rss as f64 / 1024.0,
        "rss_after_start_mib": rss_after_start as f64 / 1024.0,
        "peak_rss_mib": peak_rss as f64 / 1024.0,
        "manifest": manifests.json(),
        "blob_head": heads.json(),
        "fills": fills,
        "fills_per_s": fills as f64 / fill_secs,
        "cpu_ms_per_fill": cpu * 1000.0 / fills as f64,
        "eviction_passes": passes,
        "eviction_ms_per_pass": pass_secs * 1000.0 / passes.max(1.0),
        "eviction_ms_per_fill": pass_secs * 1000.0 / fills as f64,
        "evicted_bytes": evicted,
        "filled_bytes": filled,
        "cache_stats_s": stats_secs,
        "cache_ls_s": ls_secs,
        "cache_evict_s": evict_secs,
        "cache_evict": evict_out.trim(),
        "cache_verify_s": verify_secs,
        "verify_progress_lines": progress_lines,
    })
}

fn main() {
    ctrlc_cleanup();
    ensure_installed("/usr/bin/wrk", "wrk");
    let sizes: Vec<u64> = std::env::var("PULLGATE_SCALE_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let fills = env_num("PULLGATE_SCALE_FILLS", 600);
    let secs = env_num("PULLGATE_SCALE_SECS", 5);
    let results: Vec<Value> = sizes.iter().map(|n| measure(*n, fills, secs)).collect();
    let rows: [(&str, &str, f64); 14] = [
        (
            "start to ready after a clean stop, median of 3 (ms)",
            "ready_clean_ms",
            0.0,
        ),
        ("start to ready after a SIGKILL (ms)", "ready_after_kill_ms", 0.0),
        (
            "peak RSS of that start, its scan included (MiB)",
            "repair_peak_rss_mib",
            0.0,
        ),
        ("RSS after start (MiB)", "rss_after_start_mib", 0.0),
        ("peak RSS while serving, filling, evicting (MiB)", "peak_rss_mib", 0.0),
        (
            "manifest by digest p99, 64 conns, median of 3 (ms)",
            "manifest.p99_ms",
            0.0,
        ),
        ("blob HEAD p99, 64 conns, median of 3 (ms)", "blob_head.p99_ms", 0.0),
        ("fills/s into the full cache (4 clients)", "fills_per_s", 0.0),
        ("CPU per fill into the full cache (ms)", "cpu_ms_per_fill", 0.0),
        ("eviction work per fill (ms)", "eviction_ms_per_fill", 0.0),
        ("evicted bytes / filled bytes", "evicted_bytes", 1.0),
        ("cache stats (s)", "cache_stats_s", 0.0),
        ("cache evict --older-than 90d (s)", "cache_evict_s", 0.0),
        ("cache verify (s)", "cache_verify_s", 0.0),
    ];
    let get = |r: &Value, path: &str| -> f64 { path.split('.').fold(r, |v, k| &v[k]).as_f64().unwrap_or(f64::NAN) };
    let mut table = String::from("| measurement |");
    for n in &sizes {
        table.push_str(&format!(" {n} blobs |"));
    }
    table.push_str(" growth largest/smallest |\n|---|");
    table.push_str(&"---|".repeat(sizes.len() + 1));
    table.push('\n');
    for (label, key, per_filled) in rows {
        let values: Vec<f64> = results
            .iter()
            .map(|r| {
                let v = get(r, key);
                if per_filled > 0.0 {
                    v / get(r, "filled_bytes")
                } else {
                    v
                }
            })
            .collect();
        table.push_str(&format!("| {label} |"));
        for v in &values {
            table.push_str(&format!(" {v:.2} |"));
        }
        let growth = values.last().copied().unwrap_or(f64::NAN) / values.first().copied().unwrap_or(f64::NAN);
        table.push_str(&format!(" {growth:.2}× |\n"));
    }
    println!("\n{table}");
    let out = json!({"date": now_ms(), "sizes": sizes, "results": results, "table": table});
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-scale.json");
    fs::write(&path, serde_json::to_string_pretty(&out).expect("JSON")).expect("write the JSON");
    println!("wrote {}", path.display());
}

/// SIGINT, SIGTERM or SIGHUP stops every process started here and removes the temp
/// dirs (see [`cleanup_on_signals`]); the bench itself runs without a runtime.
fn ctrlc_cleanup() {
    std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            cleanup_on_signals();
            std::future::pending::<()>().await;
        });
    });
}
