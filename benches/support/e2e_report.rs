//! The report of `cargo bench --bench e2e`: the Markdown table, the PASS/FAIL targets
//! and the JSON written to `target/bench-e2e.json`.

use super::*;

/// The number at `path` (`cold_8.peak_rss_kib`: keys joined by dots) of target `who` in
/// the results, if it has one.
pub(crate) fn figure(results: &serde_json::Map<String, Value>, who: &str, path: &str) -> Option<f64> {
    let mut v = results.get(who)?;
    for k in path.split('.') {
        v = v.get(k)?;
    }
    v.as_f64()
}

/// Appends a `| what | a | b | a/b |` row to `out`; the ratio.
pub(crate) fn push_row(
    out: &mut String,
    what: &str,
    (a, b): (Option<f64>, Option<f64>),
    decimals: usize,
) -> Option<f64> {
    let r = ratio(a, b);
    out.push_str(&format!(
        "| {what} | {} | {} | {} |\n",
        fmt(a, decimals),
        fmt(b, decimals),
        r.map_or("–".into(), |v| format!("{v:.2}×"))
    ));
    r
}

/// Appends the targets' table to `out`, prints it and a PASS/FAIL line per target;
/// the targets as JSON.
pub(crate) fn print_targets(mut out: String, who: &str, targets: &[(String, String, bool)]) -> Value {
    out.push_str(&format!("\n| target | {who} | result |\n|---|---|---|\n"));
    for (name, value, pass) in targets {
        out.push_str(&format!(
            "| {name} | {value} | {} |\n",
            if *pass { "PASS" } else { "FAIL" }
        ));
    }
    println!("{out}");
    for (name, value, pass) in targets {
        println!("{} {name}: {value}", if *pass { "PASS" } else { "FAIL" });
    }
    Value::Array(
        targets
            .iter()
            .map(|(n, v, p)| json!({"target": n, "value": v, "pass": p}))
            .collect(),
    )
}

pub(crate) fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".to_string(),
    }
}

pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// A target that `a / b` is at least `min`: its name, the ratio as the table shows it, and
/// whether it holds (an unknown ratio does not).
pub(crate) fn ratio_target(name: String, a: Option<f64>, b: Option<f64>, min: f64) -> (String, String, bool) {
    let r = ratio(a, b).unwrap_or(f64::NAN);
    (name, format!("{r:.2}×"), r >= min)
}

/// The target "`name`: exactly 1 upstream fetch" from the largest CDN and registry blob
/// GET counts of any 8-client cold round.
pub(crate) fn one_fetch_target(
    name: String,
    cdn_fetches: Option<f64>,
    registry_gets: Option<f64>,
) -> (String, String, bool) {
    (
        name,
        format!("{} CDN, {} registry GETs", fmt(cdn_fetches, 0), fmt(registry_gets, 0)),
        cdn_fetches == Some(1.0) && registry_gets == Some(1.0),
    )
}

/// The median of the cold samples' throughput, with every sample kept, and the largest
/// fetch counts and RSS seen in any round (one extra upstream fetch in any round shows).
pub(crate) fn summarize_cold(samples: &[Value]) -> Value {
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let max = |k: &str| samples.iter().map(|v| num(v, k)).fold(0.0, f64::max);
    let gbps: Vec<f64> = samples.iter().map(|v| num(v, "gbps")).collect();
    let seconds: Vec<f64> = samples.iter().map(|v| num(v, "seconds")).collect();
    json!({
        "gbps": median(gbps.clone()), "gbps_samples": gbps,
        "seconds": median(seconds),
        "cdn_fetches": max("cdn_fetches"), "registry_gets": max("registry_gets"), "registry_heads": max("registry_heads"),
        "peak_rss_kib": max("peak_rss_kib"),
        "samples": samples,
    })
}

pub(crate) fn report(
    results: &serde_json::Map<String, Value>,
    size: u64,
    (cold_rounds, rounds): (usize, usize),
    conns: usize,
    load_secs: f64,
    redirect_status: u16,
    clients: usize,
) {
    let get = |who: &str, path: &str| figure(results, who, path);
    let mib = |v: Option<f64>| v.map(|k| k / 1024.0);
    let peak8 = |who: &str| -> Option<f64> {
        match (get(who, "cold_8.peak_rss_kib"), get(who, "warm_8_peak_rss_kib")) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    };
    struct Row {
        what: String,
        decimals: usize,
        pg: Option<f64>,
        sled: Option<f64>,
        dist: Option<f64>,
        nginx: Option<f64>,
    }
    let row = |what: &str, path: &str, decimals: usize, f: &dyn Fn(Option<f64>) -> Option<f64>| Row {
        what: what.to_string(),
        decimals,
        pg: f(get("pullgate_files", path)),
        sled: f(get("pullgate_sled", path)),
        dist: f(get("distribution", path)),
        nginx: f(get("nginx", path)),
    };
    let id = |v: Option<f64>| v;
    let rows = vec![
        row(
            &format!("cold GET, 1 client, median of {cold_rounds} (GB/s)"),
            "cold_1.gbps",
            2,
            &id,
        ),
        row("cold GET, 1 client: CDN fetches", "cold_1.cdn_fetches", 0, &id),
        row(
            &format!("cold GET, {clients} clients, aggregate, median of {cold_rounds} (GB/s)"),
            "cold_8.gbps",
            2,
            &id,
        ),
        row(
            &format!("cold GET, {clients} clients: CDN fetches (nginx log)"),
            "cold_8.cdn_fetches",
            0,
            &id,
        ),
        row(
            &format!("cold GET, {clients} clients: registry blob GETs"),
            "cold_8.registry_gets",
            0,
            &id,
        ),
        row(
            &format!("warm GET, 1 client, median of {rounds} (GB/s)"),
            "warm_1_gbps_median",
            2,
            &id,
        ),
        row(
            "warm GET, 1 client: server CPU s per GB",
            "warm_1_server_cpu_s_per_gb",
            2,
            &id,
        ),
        row(
            "warm GET, 1 client: the client's CPU / wall time",
            "warm_1_client_busy",
            2,
            &id,
        ),
        row(
            &format!("warm GET, {clients} clients, aggregate, median of 3 (GB/s)"),
            "warm_8_gbps_median",
            2,
            &id,
        ),
        row(
            &format!("manifest by tag, {conns} conns (req/s)"),
            "manifest_tag.rps",
            0,
            &id,
        ),
        row("manifest by tag, p99 (ms)", "manifest_tag.p99_ms", 2, &id),
        row(
            "manifest by tag: upstream manifest requests",
            "manifest_tag.upstream_manifest_requests",
            0,
            &id,
        ),
        row(
            &format!("manifest by digest, {conns} conns (req/s)"),
            "manifest_digest.rps",
            0,
            &id,
        ),
        row("manifest by digest, p99 (ms)", "manifest_digest.p99_ms", 2, &id),
        row("peak RSS, cold 1 client (MiB)", "cold_1.peak_rss_kib", 0, &mib),
        row(
            &format!("peak RSS, cold {clients} clients (MiB)"),
            "cold_8.peak_rss_kib",
            0,
            &mib,
        ),
        row(
            &format!("peak RSS, warm {clients} clients (MiB)"),
            "warm_8_peak_rss_kib",
            0,
            &mib,
        ),
        row("VmHWM at the end (MiB)", "vmhwm_kib", 0, &mib),
    ];
    let mut out = String::new();
    out.push_str(&format!(
        "\nblob {} MiB; warm 1-client medians of {rounds} interleaved rounds; manifest load {conns} connections × {load_secs} s\n\n",
        size / MIB
    ));
    out.push_str("| measurement | pullgate (files) | pullgate (sled) | distribution proxy | nginx direct | pullgate/distribution | pullgate/nginx |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    let mut table = Vec::new();
    for r in &rows {
        let rd = ratio(r.pg, r.dist);
        let rn = ratio(r.pg, r.nginx);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.what,
            fmt(r.pg, r.decimals),
            fmt(r.sled, r.decimals),
            fmt(r.dist, r.decimals),
            fmt(r.nginx, r.decimals),
            rd.map_or("–".into(), |v| format!("{v:.2}×")),
            rn.map_or("–".into(), |v| format!("{v:.2}×")),
        ));
        table.push(
            json!({"measurement": r.what, "pullgate_files": r.pg, "pullgate_sled": r.sled, "distribution": r.dist,
            "nginx": r.nginx, "pullgate_over_distribution": rd, "pullgate_over_nginx": rn}),
        );
    }

    let pg = |p: &str| get("pullgate_files", p);
    let dist = |p: &str| get("distribution", p);
    let ngx = |p: &str| get("nginx", p);
    let check = |name: String, value: String, pass: bool| (name, value, pass);
    let targets = vec![
        ratio_target(
            "cold GET, 1 client ≥ 1.5× distribution".into(),
            pg("cold_1.gbps"),
            dist("cold_1.gbps"),
            1.5,
        ),
        one_fetch_target(
            format!("cold GET, {clients} clients: exactly 1 upstream fetch"),
            pg("cold_8.cdn_fetches"),
            pg("cold_8.registry_gets"),
        ),
        ratio_target(
            format!("cold GET, {clients} clients, aggregate ≥ 2.5× distribution"),
            pg("cold_8.gbps"),
            dist("cold_8.gbps"),
            2.5,
        ),
        ratio_target(
            "warm GET, 1 client ≥ 1.0× distribution".into(),
            pg("warm_1_gbps_median"),
            dist("warm_1_gbps_median"),
            1.0,
        ),
        ratio_target(
            "warm GET, 1 client ≥ 0.9× nginx".into(),
            pg("warm_1_gbps_median"),
            ngx("warm_1_gbps_median"),
            0.9,
        ),
        ratio_target(
            format!("warm GET, {clients} clients ≥ 1.0× distribution"),
            pg("warm_8_gbps_median"),
            dist("warm_8_gbps_median"),
            1.0,
        ),
        ratio_target(
            "manifest by tag ≥ 3× distribution's req/s".into(),
            pg("manifest_tag.rps"),
            dist("manifest_tag.rps"),
            3.0,
        ),
        check(
            format!("manifest by digest p99 ≤ 2 ms at {conns} connections"),
            format!("{} ms", fmt(pg("manifest_digest.p99_ms"), 2)),
            pg("manifest_digest.p99_ms").is_some_and(|v| v <= 2.0),
        ),
        check(
            format!(
                "pullgate peak RSS ≤ 128 MiB serving {clients} clients the {} MiB blob",
                size / MIB
            ),
            format!("{} MiB", fmt(mib(peak8("pullgate_files")), 0)),
            mib(peak8("pullgate_files")).is_some_and(|v| v <= 128.0),
        ),
    ];
    out.push_str("\n| target | pullgate (files) | result |\n|---|---|---|\n");
    for (name, value, pass) in &targets {
        out.push_str(&format!(
            "| {name} | {value} | {} |\n",
            if *pass { "PASS" } else { "FAIL" }
        ));
    }
    // A run of the shared-store or cluster phase alone (PULLGATE_E2E_ONLY=s3,cluster) has no local figures
    // to judge: its own table was printed by the phase.
    let local_run = results.contains_key(Kind::PullgateFiles.key());
    let targets = if local_run { targets } else { Vec::new() };
    if local_run {
        println!("{out}");
    }
    for (name, value, pass) in &targets {
        println!("{} {name}: {value}", if *pass { "PASS" } else { "FAIL" });
    }

    let date = Command::new("date")
        .args(["-u", "+%FT%TZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let doc = json!({
        "date": date,
        "machine": {"cores": cores, "network": "loopback"},
        "blob_bytes": size,
        "clients": clients,
        "warm_rounds": rounds,
        "manifest_connections": conns,
        "manifest_seconds": load_secs,
        "upstream_redirect_status": redirect_status,
        "results": results,
        "table": table,
        "targets": targets.iter().map(|(n, v, p)| json!({"target": n, "value": v, "pass": p})).collect::<Vec<_>>(),
    });
    // target/ of this build: the bench binary is target/<profile>/deps/e2e-<hash>.
    let target_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(Path::to_path_buf))
        .filter(|p| p.file_name().is_some())
        .unwrap_or_else(|| PathBuf::from("target"));
    let path = target_dir.join("bench-e2e.json");
    match fs::write(&path, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => eprintln!("e2e: cannot write {}: {e}", path.display()),
    }
}
