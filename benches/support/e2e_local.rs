//! The local phases of `cargo bench --bench e2e` (cold, warm, manifests): pullgate on
//! both stores, distribution's proxy and nginx, measured against the seeded upstream.

use super::*;

/// What the local phases (cold, warm, manifests) measure against.
pub(crate) struct Local<'a> {
    pub(crate) root: &'a Path,
    pub(crate) upstream_url: &'a str,
    pub(crate) seeded: &'a Seeded,
    /// CDN fetches, registry blob GETs and HEADs of the seeded blob so far.
    pub(crate) counts: &'a dyn Fn() -> (usize, usize, usize),
}

/// Cold GETs by 1 and by [`CLIENTS`] clients, every measurement on a freshly started
/// proxy with an empty cache, interleaved over the proxies for `cold_rounds` rounds
/// (medians into `results`). Returns the proxies of the last round's 8-client
/// measurement, kept up for the warm and manifest measurements.
pub(crate) async fn cold_phase(
    results: &mut serde_json::Map<String, Value>,
    world: &Local<'_>,
    cold_rounds: usize,
) -> Vec<ProxyUnderTest> {
    let size = world.seeded.size;
    let kinds = [Kind::PullgateFiles, Kind::PullgateSled, Kind::Distribution];
    let mut warm: Vec<ProxyUnderTest> = Vec::new();
    let mut n = 0;
    let mut cold: Vec<(Vec<Value>, Vec<Value>)> = vec![(Vec::new(), Vec::new()); kinds.len()];
    for round in 0..cold_rounds {
        for (k, kind) in kinds.into_iter().enumerate() {
            for clients in [1, CLIENTS] {
                n += 1;
                let mut p = start_proxy(kind, world.root, n, world.upstream_url).await;
                let before = (world.counts)();
                let (d, rss) = cold_get(&p.blob_url(&world.seeded.digest), clients, size, p.pid()).await;
                p.wait_stored(&world.seeded.hex, size).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let after = (world.counts)();
                let fills = if kind == Kind::Distribution {
                    Value::Null
                } else {
                    json!(count_lines(&p.proc.log, "egress"))
                };
                let bytes = clients as u64 * size;
                eprintln!(
                    "e2e: {:<15} cold GET, {clients} client(s), round {}: {:.2} GB/s ({:.2} s), CDN fetches {}, registry GETs {}",
                    kind.key(),
                    round + 1,
                    gbps(bytes, d),
                    d.as_secs_f64(),
                    after.0 - before.0,
                    after.1 - before.1
                );
                let sample = json!({
                    "seconds": d.as_secs_f64(), "gbps": gbps(bytes, d),
                    "cdn_fetches": after.0 - before.0, "registry_gets": after.1 - before.1, "registry_heads": after.2 - before.2,
                    "pullgate_egress_lines": fills,
                    "peak_rss_kib": rss,
                });
                if clients == 1 {
                    cold[k].0.push(sample);
                } else {
                    cold[k].1.push(sample);
                }
                if clients == CLIENTS && round + 1 == cold_rounds {
                    warm.push(p);
                } else {
                    p.proc.stop();
                    let _ = fs::remove_dir_all(&p.dir);
                }
            }
        }
    }
    for (k, kind) in kinds.into_iter().enumerate() {
        let (one, eight) = &cold[k];
        results.insert(
            kind.key().into(),
            json!({"cold_1": summarize_cold(one), "cold_8": summarize_cold(eight)}),
        );
    }

    warm
}

/// Warm GET by 1 client (interleaved A B C D …, one untimed round first) and by
/// [`CLIENTS`] of the long-lived proxies and of nginx serving the blob file at `cdn_url`;
/// their figures into `results`.
pub(crate) async fn warm_phase(
    results: &mut serde_json::Map<String, Value>,
    warm: &[ProxyUnderTest],
    (nginx_pid, cdn_url): (u32, String),
    (digest, size): (&str, u64),
    rounds: usize,
) {
    let mut targets: Vec<(String, String, Option<u32>)> = warm
        .iter()
        .map(|p| (p.kind.key().to_string(), p.blob_url(digest), Some(p.pid())))
        .collect();
    targets.insert(2, ("nginx".to_string(), cdn_url, Some(nginx_pid)));
    let warm_of: Vec<(String, u32)> = targets.iter().map(|t| (t.1.clone(), t.2.unwrap_or(0))).collect();
    let figures = warm_gets(&warm_of, size, rounds, CLIENTS).await;
    for (i, (name, _, _)) in targets.iter().enumerate() {
        eprintln!(
            "e2e: {name:<15} warm GET, 1 client: median {:.2} GB/s of {:?} (server {} CPU s per GB, client busy {:.2}); {CLIENTS} clients: median {:.2} GB/s aggregate",
            median(figures.one[i].clone()),
            figures.one[i].iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>(),
            figures.one_server_cpu_s_per_gb[i].map_or("–".into(), |v| format!("{v:.2}")),
            figures.one_client_busy[i],
            median(figures.many[i].clone())
        );
        let entry = figures.json(i);
        match results.get_mut(name.as_str()).and_then(|v| v.as_object_mut()) {
            Some(o) => o.extend(entry.as_object().cloned().unwrap_or_default()),
            None => {
                results.insert(name.clone(), entry);
            }
        }
    }
}

/// Manifest GETs under load by tag and by digest on pullgate (`files`) and
/// distribution, and nginx serving the manifest's bytes as a static file (the limit);
/// their figures into `results`.
pub(crate) async fn manifest_phase(
    results: &mut serde_json::Map<String, Value>,
    warm: &[ProxyUnderTest],
    seeded: &Seeded,
    (registry_log, cdn_port): (&Path, u16),
    (conns, load_secs): (usize, f64),
) {
    // Manifest GETs under load: pullgate (files) and distribution, by tag then by digest.
    let manifest_needle = format!(" /v2/{REPO}/manifests/");
    for p in warm.iter().filter(|p| p.kind != Kind::PullgateSled) {
        let mut entry = serde_json::Map::new();
        for (what, reference) in [("tag", "latest"), ("digest", seeded.manifest_digest.as_str())] {
            let url = p.manifest_url(reference);
            let c = client();
            let r = c
                .get(&url)
                .header(ACCEPT, MANIFEST_ACCEPT)
                .send()
                .await
                .expect("manifest GET");
            assert_eq!(r.status().as_u16(), 200, "GET {url}");
            let body = r.bytes().await.expect("manifest body");
            assert_eq!(
                format!("sha256:{}", sha256_hex(&body)),
                seeded.manifest_digest,
                "manifest bytes through {}",
                p.kind.key()
            );
            let upstream_before = count_lines(registry_log, &manifest_needle);
            let sampler = RssSampler::start(vec![p.pid()]);
            let l = load(&url, conns, load_secs).await;
            let rss = sampler.finish()[0];
            let upstream_requests = count_lines(registry_log, &manifest_needle) - upstream_before;
            eprintln!(
                "e2e: {:<15} manifest by {what}, {conns} connections: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, {upstream_requests} upstream manifest requests",
                p.kind.key(),
                l.rps,
                l.p50_ms,
                l.p99_ms,
                l.errors
            );
            entry.insert(format!("manifest_{what}"), {
                let mut v = l.json();
                v["upstream_manifest_requests"] = json!(upstream_requests);
                v["peak_rss_kib"] = json!(rss);
                v
            });
        }
        if let Some(o) = results.get_mut(p.kind.key()).and_then(|v| v.as_object_mut()) {
            o.extend(entry);
        }
    }

    // The limit for manifests: nginx serving the same manifest bytes as a static file
    // (distribution stores them as a blob, so the CDN root has them), same load.
    {
        let hex = seeded.manifest_digest.trim_start_matches("sha256:");
        let url = format!(
            "http://{CDN_IP}:{cdn_port}/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        );
        let l = load(&url, conns, load_secs).await;
        eprintln!(
            "e2e: {:<15} manifest bytes as a static file, {conns} connections: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            "nginx", l.rps, l.p50_ms, l.p99_ms, l.errors
        );
        // (The warm phase, when it ran, made nginx's entry; AB_PHASES=manifests did not.)
        if let Some(o) = results.entry("nginx").or_insert_with(|| json!({})).as_object_mut() {
            o.insert("manifest_digest".into(), l.json());
        }
    }
}

/// Notes the VmHWM of each long-lived proxy (the instance that served cold 8, warm and
/// manifests) in `results`, then stops them.
pub(crate) fn stop_local(results: &mut serde_json::Map<String, Value>, warm: Vec<ProxyUnderTest>) {
    for mut p in warm {
        let hwm = status_kib(p.pid(), "VmHWM:");
        if let Some(o) = results.get_mut(p.kind.key()).and_then(|v| v.as_object_mut()) {
            o.insert("vmhwm_kib".into(), json!(hwm));
        }
        p.proc.stop();
    }
}
