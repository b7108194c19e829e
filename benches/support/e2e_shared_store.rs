//! The shared-store case of `cargo bench --bench e2e` (phase `s3`): pullgate with
//! `blob_store = "s3"` beside CNCF distribution's proxy mode on its own `s3` storage
//! driver, both writing to one Garage bucket (each run under a fresh prefix), with the
//! same upstream and CDN as the other phases. Measured, as for the local stores: cold GET
//! by 1 and by 8 clients on a freshly started proxy (interleaved rounds, medians) with
//! the upstream fetches they caused and the S3 requests each proxy made (Garage logs
//! every request, by key), warm GET by 1 client (interleaved rounds) and by 8, and peak
//! RSS. Garage runs at `nice` 19 unless PULLGATE_E2E_GARAGE_NICE says otherwise (0: normal
//! priority): on one machine it would otherwise take the CPU of the proxies it serves.

use super::garage::{self, Garage};
use super::*;
use object_store::ObjectStoreExt as _;

/// A proxy on the shared store: which, its base URL and repository path, its process.
struct SharedProxy {
    key: &'static str,
    base: String,
    repo_path: String,
    /// Its keys in the bucket start with this.
    prefix: String,
    /// Where the blob's object is once stored.
    object: String,
    proc: Proc,
}

impl SharedProxy {
    fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.repo_path)
    }
}

const PULLGATE_S3: &str = "pullgate_s3";
const DISTRIBUTION_S3: &str = "distribution_s3";

async fn start(key: &'static str, garage: &Garage, root: &Path, n: usize, upstream: &str, hex: &str) -> SharedProxy {
    let prefix = format!("{key}-{n}");
    let dir = root.join(&prefix);
    fs::create_dir_all(&dir).expect("proxy dir");
    if key == PULLGATE_S3 {
        let (proc, base) = start_pullgate(&dir, "pullgate (s3)", upstream, &garage.cache_toml(&dir, &prefix, ""));
        SharedProxy {
            key,
            base,
            repo_path: format!("up/{REPO}"),
            object: format!("{prefix}/blobs/sha256/{hex}"),
            prefix,
            proc,
        }
    } else {
        // Blobs served through distribution, not by redirect to the bucket: the clients
        // of a DMZ proxy reach the proxy only (and so pullgate serves them).
        let (proc, base) = start_registry_on(
            &dir,
            "distribution (proxy, s3)",
            &distribution_s3_driver(garage, &prefix),
            &format!("proxy:\n  remoteurl: {upstream}\n"),
            false,
        )
        .await;
        SharedProxy {
            key,
            base,
            repo_path: REPO.to_string(),
            object: format!("{prefix}/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]),
            prefix,
            proc,
        }
    }
}

/// distribution's `s3` storage driver section for Garage's bucket under `prefix`. Blobs
/// are served through distribution, not by redirect to the bucket: the clients of a DMZ
/// proxy reach the proxy only (and so pullgate serves them).
pub(crate) fn distribution_s3_driver(garage: &Garage, prefix: &str) -> String {
    format!(
        "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: garage\n    regionendpoint: {}\n    \
         bucket: {}\n    rootdirectory: /{prefix}\n    secure: false\n    v4auth: true\n    chunksize: 5242880\n\
         \x20 redirect:\n    disable: true\n",
        garage::ACCESS_KEY,
        garage::SECRET_KEY,
        garage.endpoint,
        garage::BUCKET,
    )
}

/// Garage for a phase, at `nice` 19 unless PULLGATE_E2E_GARAGE_NICE says otherwise:
/// it shares this machine's cores with the proxies, their clients and the CDN (a
/// production store runs on machines of its own), so at 19 it takes only the CPU they
/// leave. The bench's own key watches the bucket, so its requests are not counted.
pub(crate) fn start_garage() -> (Garage, u8) {
    let nice = std::env::var("PULLGATE_E2E_GARAGE_NICE")
        .ok()
        .and_then(|v| v.parse::<u8>().ok())
        .unwrap_or(19);
    let garage = if nice > 0 {
        Garage::start_niced(nice)
    } else {
        Garage::start()
    };
    garage.add_observer_key();
    eprintln!(
        "e2e: Garage at {} (nice {nice}, log {})",
        garage.endpoint,
        garage.log_path().display()
    );
    (garage, nice)
}

/// Waits until the blob's object is in the bucket, whole (distribution stores it from a
/// background fetch that may outlive the client's response).
async fn wait_stored(bucket: &object_store::aws::AmazonS3, p: &SharedProxy, size: u64) {
    wait_object(bucket, p.key, &p.object, size).await
}

/// Waits until `object` is in the bucket with `size` bytes; `who` stored it.
pub(crate) async fn wait_object(bucket: &object_store::aws::AmazonS3, who: &str, object: &str, size: u64) {
    let path = object_store::path::Path::from(object);
    let until = Instant::now() + Duration::from_secs(300);
    while Instant::now() < until {
        if bucket.head(&path).await.is_ok_and(|m| m.size == size) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{who} never stored the blob as {object}");
}

/// A client for the bucket with the bench's own key (its requests are not counted).
pub(crate) fn observer_bucket(garage: &Garage) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&garage.endpoint)
        .with_bucket_name(garage::BUCKET)
        .with_region("garage")
        .with_access_key_id(garage::OBSERVER_KEY)
        .with_secret_access_key(garage::OBSERVER_SECRET)
        .with_allow_http(true)
        .build()
        .expect("S3 client")
}

/// What the phase needs of the run: the seeded blob and the upstream's fetch counters.
pub(crate) struct Upstream<'a> {
    pub url: &'a str,
    pub digest: &'a str,
    pub hex: &'a str,
    pub size: u64,
    /// (CDN fetches, registry blob GETs, registry blob HEADs) so far.
    pub counts: &'a dyn Fn() -> (usize, usize, usize),
}

/// Runs the phase; returns its results (per proxy, and a `table` and `targets`) for the
/// JSON, after printing its Markdown table and PASS/FAIL lines.
pub(crate) async fn run(root: &Path, up: Upstream<'_>, cold_rounds: usize, rounds: usize, clients: usize) -> Value {
    let (garage, nice) = start_garage();
    let bucket = observer_bucket(&garage);
    let size = up.size;
    let kinds = [PULLGATE_S3, DISTRIBUTION_S3];
    let mut cold: Vec<(Vec<Value>, Vec<Value>)> = vec![(Vec::new(), Vec::new()); kinds.len()];
    let mut warm: Vec<SharedProxy> = Vec::new();
    let mut n = 0;
    for round in 0..cold_rounds {
        for (k, kind) in kinds.into_iter().enumerate() {
            for c in [1, clients] {
                n += 1;
                let mut p = start(kind, &garage, root, n, up.url, up.hex).await;
                let before = (up.counts)();
                let requests_before = garage.requests_under(&p.prefix);
                let (d, rss) = cold_get(&p.blob_url(up.digest), c, size, p.proc.pid()).await;
                wait_stored(&bucket, &p, size).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let after = (up.counts)();
                let mut requests = garage.requests_under(&p.prefix);
                for (op, v) in requests_before {
                    *requests.entry(op).or_default() -= v;
                }
                let s3_total: u64 = requests.values().sum();
                eprintln!(
                    "e2e: {kind:<15} cold GET, {c} client(s), round {}: {:.2} GB/s ({:.2} s), CDN fetches {}, registry GETs {}, S3 requests {s3_total} {requests:?}",
                    round + 1,
                    gbps(c as u64 * size, d),
                    d.as_secs_f64(),
                    after.0 - before.0,
                    after.1 - before.1,
                );
                let sample = json!({
                    "seconds": d.as_secs_f64(), "gbps": gbps(c as u64 * size, d),
                    "cdn_fetches": after.0 - before.0, "registry_gets": after.1 - before.1, "registry_heads": after.2 - before.2,
                    "s3_requests": s3_total, "s3_requests_by_operation": requests,
                    "peak_rss_kib": rss,
                });
                if c == 1 {
                    cold[k].0.push(sample);
                } else {
                    cold[k].1.push(sample);
                }
                if c == clients && round + 1 == cold_rounds {
                    warm.push(p);
                } else {
                    p.proc.stop();
                }
            }
        }
    }
    let mut results = serde_json::Map::new();
    for (k, kind) in kinds.into_iter().enumerate() {
        let (one, eight) = &cold[k];
        // The most S3 requests any round made, beside the local phases' figures.
        let with_requests = |samples: &[Value]| {
            let mut summary = summarize_cold(samples);
            let most = samples.iter().filter_map(|v| v["s3_requests"].as_u64()).max();
            summary["s3_requests"] = json!(most);
            summary
        };
        results.insert(
            kind.into(),
            json!({"cold_1": with_requests(one), "cold_8": with_requests(eight)}),
        );
    }

    // Warm GET, one client, interleaved (one untimed round first); then 8 clients.
    let targets: Vec<(String, u32)> = warm.iter().map(|p| (p.blob_url(up.digest), p.proc.pid())).collect();
    let figures = warm_gets(&targets, size, rounds, clients).await;
    for (i, p) in warm.iter().enumerate() {
        eprintln!(
            "e2e: {:<15} warm GET: 1 client median {:.2} GB/s of {:?}; {clients} clients median {:.2} GB/s",
            p.key,
            median(figures.one[i].clone()),
            figures.one[i].iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>(),
            median(figures.many[i].clone()),
        );
        if let Some(o) = results.get_mut(p.key).and_then(|v| v.as_object_mut()) {
            let mut entry = figures.json(i);
            entry["vmhwm_kib"] = json!(status_kib(targets[i].1, "VmHWM:"));
            o.extend(entry.as_object().cloned().unwrap_or_default());
        }
    }
    for mut p in warm.drain(..) {
        p.proc.stop();
    }
    let (table, targets) = report(&results, size, (cold_rounds, rounds), clients);
    results.insert("garage_nice".into(), json!(nice));
    results.insert("table".into(), table);
    results.insert("targets".into(), targets);
    Value::Object(results)
}

/// Prints the phase's table and targets; returns them as JSON.
fn report(
    results: &serde_json::Map<String, Value>,
    size: u64,
    (cold_rounds, rounds): (usize, usize),
    clients: usize,
) -> (Value, Value) {
    let get = |who: &str, path: &str| figure(results, who, path);
    let mib = |v: Option<f64>| v.map(|k| k / 1024.0);
    let rows: Vec<(String, &str, usize, bool)> = vec![
        (
            format!("cold GET, 1 client, median of {cold_rounds} (GB/s)"),
            "cold_1.gbps",
            2,
            false,
        ),
        ("cold GET, 1 client: CDN fetches".into(), "cold_1.cdn_fetches", 0, false),
        ("cold GET, 1 client: S3 requests".into(), "cold_1.s3_requests", 0, false),
        (
            format!("cold GET, {clients} clients, aggregate, median of {cold_rounds} (GB/s)"),
            "cold_8.gbps",
            2,
            false,
        ),
        (
            format!("cold GET, {clients} clients: CDN fetches"),
            "cold_8.cdn_fetches",
            0,
            false,
        ),
        (
            format!("cold GET, {clients} clients: registry blob GETs"),
            "cold_8.registry_gets",
            0,
            false,
        ),
        (
            format!("cold GET, {clients} clients: S3 requests"),
            "cold_8.s3_requests",
            0,
            false,
        ),
        (
            format!("warm GET, 1 client, median of {rounds} (GB/s)"),
            "warm_1_gbps_median",
            2,
            false,
        ),
        (
            format!("warm GET, {clients} clients, aggregate, median of 3 (GB/s)"),
            "warm_8_gbps_median",
            2,
            false,
        ),
        ("peak RSS, cold 1 client (MiB)".into(), "cold_1.peak_rss_kib", 0, true),
        (
            format!("peak RSS, cold {clients} clients (MiB)"),
            "cold_8.peak_rss_kib",
            0,
            true,
        ),
        (
            format!("peak RSS, warm {clients} clients (MiB)"),
            "warm_8_peak_rss_kib",
            0,
            true,
        ),
    ];
    let mut out = format!(
        "\nshared store (Garage, one bucket), blob {} MiB\n\n| measurement | pullgate (s3) | distribution proxy (s3) | pullgate/distribution |\n|---|---|---|---|\n",
        size / MIB
    );
    let mut table = Vec::new();
    for (what, path, decimals, in_mib) in &rows {
        let (pg, dist) = (get(PULLGATE_S3, path), get(DISTRIBUTION_S3, path));
        let (pg, dist) = if *in_mib { (mib(pg), mib(dist)) } else { (pg, dist) };
        let r = push_row(&mut out, what, (pg, dist), *decimals);
        table.push(
            json!({"measurement": what, "pullgate_s3": pg, "distribution_s3": dist, "pullgate_over_distribution": r}),
        );
    }
    let pg = |p: &str| get(PULLGATE_S3, p);
    let dist = |p: &str| get(DISTRIBUTION_S3, p);
    let peak = [
        pg("cold_1.peak_rss_kib"),
        pg("cold_8.peak_rss_kib"),
        pg("warm_8_peak_rss_kib"),
    ]
    .into_iter()
    .flatten()
    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let targets = [
        ratio_target(
            "shared store: cold GET, 1 client ≥ 1.0× distribution on S3".to_string(),
            pg("cold_1.gbps"),
            dist("cold_1.gbps"),
            1.0,
        ),
        ratio_target(
            "shared store: warm GET, 1 client ≥ 1.0× distribution on S3".to_string(),
            pg("warm_1_gbps_median"),
            dist("warm_1_gbps_median"),
            1.0,
        ),
        one_fetch_target(
            format!("shared store: {clients} cold clients on one replica → exactly 1 upstream fetch"),
            pg("cold_8.cdn_fetches"),
            pg("cold_8.registry_gets"),
        ),
        (
            "shared store: pullgate peak RSS ≤ 128 MiB".to_string(),
            format!("{} MiB", fmt(mib(peak), 0)),
            mib(peak).is_some_and(|v| v <= 128.0),
        ),
    ];
    (Value::Array(table), print_targets(out, "pullgate (s3)", &targets))
}
