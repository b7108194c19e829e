//! The TLS case of `cargo bench --bench e2e` (phase `tls`), as the DMZ runs it: the
//! clients reach the proxy over TLS. pullgate (`files` store; rustls) and distribution's
//! proxy mode (Go's crypto/tls) serve the same certificate for 127.0.0.1 from a throwaway
//! CA, in front of the same upstream and CDN (plain HTTP, as the other phases). Measured:
//! cold GET by 1 client on a freshly started proxy (interleaved rounds, medians), then
//! warm GET by 1 client (interleaved rounds) and by 8, with the blob clients of the other
//! phases speaking TLS 1.3 (rustls). Besides GB/s, the CPU each server used per GB it
//! served (utime + stime from /proc around each measurement): over TLS every byte is
//! encrypted, so the CPU per GB is what decides how many clients one edge host carries.
//! And the TLS version and cipher suite each server agreed with the blob clients: CPU per
//! GB compares only on the same suite.

use super::tls::TestCa;
use super::*;

const PULLGATE_TLS: &str = "pullgate_files_tls";
const DISTRIBUTION_TLS: &str = "distribution_tls";

/// A proxy of `kind` (pullgate on `files`, or distribution) serving TLS.
async fn start(kind: Kind, root: &Path, n: usize, upstream: &str, (cert, key_file): (&Path, &Path)) -> ProxyUnderTest {
    let dir = root.join(format!("{}-tls-{n}", kind.key()));
    fs::create_dir_all(&dir).expect("proxy dir");
    if kind == Kind::PullgateFiles {
        let tables = format!(
            "[cache]\nblob_store = \"files\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key_file.display()
        );
        let started = start_pullgate(&dir, "pullgate (files, TLS)", upstream, &tables);
        ProxyUnderTest::new(kind, started, dir)
    } else {
        let storage = dir.join("storage");
        fs::create_dir_all(&storage).expect("registry storage dir");
        let http_tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key_file.display()
        );
        let started = start_registry_with(
            &dir,
            "distribution (proxy, TLS)",
            &filesystem_storage(&storage),
            &http_tls,
            &format!("proxy:\n  remoteurl: {upstream}\n"),
        )
        .await;
        ProxyUnderTest::new(kind, started, dir)
    }
}

/// Runs the phase; returns its results for the JSON after printing its table.
pub(crate) async fn run(
    root: &Path,
    up: shared_store::Upstream<'_>,
    cold_rounds: usize,
    rounds: usize,
    clients: usize,
) -> Value {
    let ca = TestCa::new("pullgate e2e CA");
    let (chain, key) = ca.server_cert(&["127.0.0.1"]);
    let (cert_file, key_file) = (root.join("tls.crt"), root.join("tls.key"));
    fs::write(&cert_file, chain).expect("write cert");
    fs::write(&key_file, key).expect("write key");
    trust_for_blob_clients(&ca.ca_pem);
    let size = up.size;
    let kinds = [
        (PULLGATE_TLS, Kind::PullgateFiles),
        (DISTRIBUTION_TLS, Kind::Distribution),
    ];
    let mut cold: Vec<Vec<Value>> = vec![Vec::new(); kinds.len()];
    let mut warm: Vec<ProxyUnderTest> = Vec::new();
    for round in 0..cold_rounds {
        for (k, (key, kind)) in kinds.into_iter().enumerate() {
            let mut p = start(kind, root, round * 2 + k, up.url, (&cert_file, &key_file)).await;
            let cpu = cpu_seconds(p.proc.pid());
            let (d, rss) = cold_get(&p.blob_url(up.digest), 1, size, p.proc.pid()).await;
            let cpu = cpu_seconds(p.proc.pid()) - cpu;
            p.wait_stored(up.hex, size).await;
            eprintln!(
                "e2e: {key:<18} cold GET over TLS, round {}: {:.2} GB/s, {:.2} CPU s per GB",
                round + 1,
                gbps(size, d),
                cpu / (size as f64 / 1e9)
            );
            cold[k].push(json!({
                "seconds": d.as_secs_f64(), "gbps": gbps(size, d), "peak_rss_kib": rss,
                "cpu_seconds_per_gb": cpu / (size as f64 / 1e9),
            }));
            if round + 1 == cold_rounds {
                warm.push(p);
            } else {
                p.proc.stop();
                let _ = fs::remove_dir_all(&p.dir);
            }
        }
    }
    let mut results = serde_json::Map::new();
    for (k, (key, _)) in kinds.into_iter().enumerate() {
        let per_gb: Vec<f64> = cold[k]
            .iter()
            .filter_map(|v| v["cpu_seconds_per_gb"].as_f64())
            .collect();
        let mut summary = summarize_cold(&cold[k]);
        summary["cpu_seconds_per_gb"] = json!(median(per_gb));
        results.insert(key.into(), json!({ "cold_1": summary }));
    }

    let targets: Vec<(String, u32)> = warm.iter().map(|p| (p.blob_url(up.digest), p.proc.pid())).collect();
    let suites: Vec<String> = targets.iter().map(|(url, _)| negotiated_tls(url)).collect();
    let cpu_before: Vec<f64> = warm.iter().map(|p| cpu_seconds(p.proc.pid())).collect();
    let figures = warm_gets(&targets, size, rounds, clients).await;
    // Each proxy is idle while the other is measured: its CPU over the whole run is what
    // serving its share took.
    let served_gb = ((rounds + 1) as u64 * size + 3 * clients as u64 * size) as f64 / 1e9;
    for (i, p) in warm.iter().enumerate() {
        let key = kinds[i].0;
        let per_gb = (cpu_seconds(p.proc.pid()) - cpu_before[i]) / served_gb;
        eprintln!(
            "e2e: {key:<18} warm GET over TLS: 1 client median {:.2} GB/s; {clients} clients median {:.2} GB/s; {per_gb:.2} CPU s per GB",
            median(figures.one[i].clone()),
            median(figures.many[i].clone()),
        );
        eprintln!("e2e: {key:<18} negotiated {} with the blob clients", suites[i]);
        if let Some(o) = results.get_mut(key).and_then(|v| v.as_object_mut()) {
            let mut entry = figures.json(i);
            entry["warm_cpu_seconds_per_gb"] = json!(per_gb);
            entry["tls"] = json!(suites[i]);
            o.extend(entry.as_object().cloned().unwrap_or_default());
        }
    }
    for mut p in warm.drain(..) {
        p.proc.stop();
    }
    let table = report(&results, clients);
    results.insert("table".into(), table);
    Value::Object(results)
}

/// Prints the phase's table; returns it for the JSON.
fn report(results: &serde_json::Map<String, Value>, clients: usize) -> Value {
    let get = |who: &str, path: &str| figure(results, who, path);
    let rows = [
        ("cold GET over TLS, 1 client, median (GB/s)", "cold_1.gbps", 2),
        ("cold GET over TLS: server CPU s per GB", "cold_1.cpu_seconds_per_gb", 2),
        ("warm GET over TLS, 1 client, median (GB/s)", "warm_1_gbps_median", 2),
        (
            "warm GET over TLS, 8 clients, aggregate, median (GB/s)",
            "warm_8_gbps_median",
            2,
        ),
        ("warm GET over TLS: server CPU s per GB", "warm_cpu_seconds_per_gb", 2),
    ];
    let mut out = String::from(
        "\n### Over TLS (phase `tls`)\n\n| measurement | pullgate (files, rustls) | distribution proxy (Go TLS) | pullgate/distribution |\n|---|---|---|---|\n",
    );
    let mut table = Vec::new();
    for (what, path, decimals) in rows {
        let what = what.replace('8', &clients.to_string());
        let (a, b) = (get(PULLGATE_TLS, path), get(DISTRIBUTION_TLS, path));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
            _ => "–".into(),
        };
        let show = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.decimals$}"));
        out.push_str(&format!("| {what} | {} | {} | {ratio} |\n", show(a), show(b)));
        table.push(json!({"measurement": what, "pullgate": a, "distribution": b}));
    }
    let suite = |who: &str| {
        results
            .get(who)
            .and_then(|v| v["tls"].as_str())
            .unwrap_or("–")
            .to_string()
    };
    out.push_str(&format!(
        "| negotiated with the blob clients (rustls, its default order) | {} | {} | |\n",
        suite(PULLGATE_TLS),
        suite(DISTRIBUTION_TLS)
    ));
    println!("{out}");
    json!(table)
}
