//! The cluster case of `cargo bench --bench e2e` (phase `cluster`): three pullgate
//! replicas with `[cluster]` on one Garage bucket beside three distribution proxies on
//! one Garage bucket (the same root directory), with the upstream and CDN of the other
//! phases. Each round starts fresh fleets (a new prefix each) and sends 8 cold clients to
//! each replica at once (24 in all): the aggregate throughput and the upstream fetches
//! they caused. Then a round per fleet where one replica is SIGKILLed a quarter of the way
//! in (pullgate: the blob's owner; distribution: the first replica): every client hashes
//! its body, and a client cut off retries once on a live replica (as a load balancer
//! would send it); counted are the bodies that end correct, the retries and any wrong
//! body.

use super::garage::Garage;
use super::shared_store::{Upstream, distribution_s3_driver, observer_bucket, start_garage, wait_object};
use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};

const REPLICAS: usize = 3;
const PULLGATE: &str = "pullgate_cluster";
const DISTRIBUTION: &str = "distribution_shared";

/// Three replicas of one kind, their URLs (clients and peers) and where the blob lands.
struct Fleet {
    key: &'static str,
    procs: Vec<Proc>,
    /// `http://127.0.0.1:<port>` of each replica.
    bases: Vec<String>,
    repo_path: String,
    object: String,
    /// The replica killed in the failover round.
    victim: usize,
}

impl Fleet {
    fn blob_urls(&self, digest: &str) -> Vec<String> {
        self.bases
            .iter()
            .map(|b| format!("{b}/v2/{}/blobs/{digest}", self.repo_path))
            .collect()
    }

    fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    fn stop(&mut self) {
        for p in &mut self.procs {
            p.stop();
        }
    }
}

async fn start_fleet(key: &'static str, garage: &Garage, root: &Path, n: usize, up: &Upstream<'_>) -> Fleet {
    let prefix = format!("{key}-{n}");
    if key == DISTRIBUTION {
        let mut procs = Vec::new();
        let mut bases = Vec::new();
        for r in 0..REPLICAS {
            let dir = root.join(format!("{prefix}-{r}"));
            fs::create_dir_all(&dir).expect("replica dir");
            let (proc, base) = start_registry_on(
                &dir,
                "distribution (proxy, shared s3)",
                &distribution_s3_driver(garage, &prefix),
                &format!("proxy:\n  remoteurl: {}\n", up.url),
                false,
            )
            .await;
            procs.push(proc);
            bases.push(base);
        }
        return Fleet {
            key,
            procs,
            bases,
            repo_path: REPO.to_string(),
            object: format!(
                "{prefix}/docker/registry/v2/blobs/sha256/{}/{}/data",
                &up.hex[..2],
                up.hex
            ),
            victim: 0,
        };
    }
    let bases: Vec<String> = (0..REPLICAS)
        .map(|_| format!("http://127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST)))
        .collect();
    let secret = root.join(format!("{prefix}-secret"));
    fs::write(&secret, "a-secret-the-bench-fleet-shares\n").expect("secret file");
    let peers = bases.iter().map(|b| format!("\"{b}\"")).collect::<Vec<_>>().join(", ");
    let mut procs = Vec::new();
    for (r, base) in bases.iter().enumerate() {
        let dir = root.join(format!("{prefix}-{r}"));
        fs::create_dir_all(&dir).expect("replica dir");
        let tables = format!(
            "{}\n[cluster]\nself = \"{base}\"\npeers = [{peers}]\nsecret_file = \"{}\"\n",
            garage.cache_toml(&dir, &prefix, ""),
            secret.display()
        );
        let listen = base.trim_start_matches("http://");
        let (proc, _) = start_pullgate_on(&dir, "pullgate (cluster)", up.url, listen, &tables);
        procs.push(proc);
    }
    let owner = pullgate::cluster::rank(&bases, up.digest)[0];
    Fleet {
        key,
        procs,
        victim: bases.iter().position(|b| b == owner).expect("the owner is a replica"),
        bases,
        repo_path: format!("up/{REPO}"),
        object: format!("{prefix}/blobs/sha256/{}", up.hex),
    }
}

/// What the failover round saw.
#[derive(Default, serde::Serialize)]
struct Failover {
    clients: usize,
    /// Bodies that ended with every byte and the right digest (after a retry or not).
    correct: usize,
    retries: usize,
    /// Complete bodies whose digest was wrong: never acceptable.
    wrong: usize,
    /// Clients that failed even after their retry.
    failed: usize,
    cdn_fetches: usize,
    seconds: f64,
}

/// One GET of `url`, hashed; `Ok(true)` for the right bytes, `Ok(false)` for a complete
/// body with the wrong digest, `Err` when it was cut off.
async fn hashed_get(
    client: &reqwest::Client,
    url: &str,
    up: (&str, u64),
    received: &AtomicU64,
) -> Result<bool, String> {
    let mut resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        hasher.update(&chunk);
        got += chunk.len() as u64;
        received.fetch_add(chunk.len() as u64, SeqCst);
    }
    if got != up.1 {
        return Err(format!("body ended after {got} of {} bytes", up.1));
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())) == up.0)
}

/// 8 clients per replica; the victim is SIGKILLed once a quarter of all the bytes
/// arrived; a client cut off retries once on the next live replica.
async fn failover_round(fleet: &mut Fleet, up: &Upstream<'_>, per_replica: usize) -> Failover {
    let urls = fleet.blob_urls(up.digest);
    let n = urls.len() * per_replica;
    let received = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let victim = fleet.victim;
    let victim_pid = fleet.procs[victim].pid();
    let before = (up.counts)();
    let threshold = n as u64 * up.size / 4;
    let watcher = {
        let (received, killed) = (received.clone(), killed.clone());
        tokio::spawn(async move {
            while received.load(SeqCst) < threshold {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = Command::new("kill").args(["-KILL", &victim_pid.to_string()]).status();
            killed.store(true, SeqCst);
        })
    };
    let retries = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let clients = (0..n).map(|i| {
        let (urls, received, killed, retries) = (urls.clone(), received.clone(), killed.clone(), retries.clone());
        let (digest, size) = (up.digest.to_string(), up.size);
        async move {
            let client = client();
            let first = i % urls.len();
            match hashed_get(&client, &urls[first], (&digest, size), &received).await {
                Ok(right) => Some(right),
                Err(_) => {
                    retries.fetch_add(1, SeqCst);
                    // The load balancer sends the retry to a live replica.
                    let mut next = (first + 1) % urls.len();
                    if killed.load(SeqCst) && next == victim {
                        next = (next + 1) % urls.len();
                    }
                    hashed_get(&client, &urls[next], (&digest, size), &received).await.ok()
                }
            }
        }
    });
    let outcomes = futures_util::future::join_all(clients).await;
    let seconds = t.elapsed().as_secs_f64();
    watcher.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = (up.counts)();
    fleet.procs[victim].stop();
    Failover {
        clients: n,
        correct: outcomes.iter().filter(|o| **o == Some(true)).count(),
        retries: retries.load(SeqCst),
        wrong: outcomes.iter().filter(|o| **o == Some(false)).count(),
        failed: outcomes.iter().filter(|o| o.is_none()).count(),
        cdn_fetches: after.0 - before.0,
        seconds,
    }
}

/// Runs the phase: `rounds` interleaved cold rounds and one failover round per kind.
pub(crate) async fn run(root: &Path, up: Upstream<'_>, rounds: usize, per_replica: usize) -> Value {
    let (garage, nice) = start_garage();
    let bucket = observer_bucket(&garage);
    let kinds = [PULLGATE, DISTRIBUTION];
    let mut samples: Vec<Vec<Value>> = vec![Vec::new(); kinds.len()];
    let mut n = 0;
    let clients = REPLICAS * per_replica;
    for round in 0..rounds {
        for (k, kind) in kinds.into_iter().enumerate() {
            n += 1;
            let mut fleet = start_fleet(kind, &garage, root, n, &up).await;
            let before = (up.counts)();
            let sampler = RssSampler::start(fleet.pids());
            let d = fetch_spread(fleet.blob_urls(up.digest), clients, up.size).await;
            let rss = sampler.finish().into_iter().max().unwrap_or(0);
            wait_object(&bucket, fleet.key, &fleet.object, up.size).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = (up.counts)();
            eprintln!(
                "e2e: {kind:<20} cold GET, {REPLICAS} replicas × {per_replica} clients, round {}: {:.2} GB/s ({:.2} s), CDN fetches {}, registry GETs {}",
                round + 1,
                gbps(clients as u64 * up.size, d),
                d.as_secs_f64(),
                after.0 - before.0,
                after.1 - before.1,
            );
            samples[k].push(json!({
                "seconds": d.as_secs_f64(), "gbps": gbps(clients as u64 * up.size, d),
                "cdn_fetches": after.0 - before.0, "registry_gets": after.1 - before.1,
                "peak_rss_kib": rss,
            }));
            fleet.stop();
        }
    }
    let mut results = serde_json::Map::new();
    for (k, kind) in kinds.into_iter().enumerate() {
        n += 1;
        let mut fleet = start_fleet(kind, &garage, root, n, &up).await;
        let failover = failover_round(&mut fleet, &up, per_replica).await;
        eprintln!(
            "e2e: {kind:<20} failover (replica {} killed): {}/{} correct, {} retries, {} wrong, {} failed, CDN fetches {}, {:.1} s",
            fleet.victim,
            failover.correct,
            failover.clients,
            failover.retries,
            failover.wrong,
            failover.failed,
            failover.cdn_fetches,
            failover.seconds
        );
        fleet.stop();
        let summary = super::summarize_cold(&samples[k]);
        results.insert(kind.into(), json!({"cold": summary, "failover": failover}));
    }
    let (table, targets) = report(&results, up.size, rounds, per_replica);
    results.insert("garage_nice".into(), json!(nice));
    results.insert("table".into(), table);
    results.insert("targets".into(), targets);
    Value::Object(results)
}

/// Prints the phase's table and targets; returns them as JSON.
fn report(results: &serde_json::Map<String, Value>, size: u64, rounds: usize, per_replica: usize) -> (Value, Value) {
    let get = |who: &str, path: &str| figure(results, who, path);
    let clients = REPLICAS * per_replica;
    let rows: Vec<(String, &str, usize)> = vec![
        (
            format!("cold GET, {REPLICAS} replicas × {per_replica} clients, aggregate, median of {rounds} (GB/s)"),
            "cold.gbps",
            2,
        ),
        ("cold GET: CDN fetches (most in a round)".into(), "cold.cdn_fetches", 0),
        (
            "cold GET: registry blob GETs (most in a round)".into(),
            "cold.registry_gets",
            0,
        ),
        ("peak RSS of a replica, cold (MiB)".into(), "cold.peak_rss_kib", 0),
        (format!("failover: bodies correct of {clients}"), "failover.correct", 0),
        ("failover: retries".into(), "failover.retries", 0),
        ("failover: wrong bodies".into(), "failover.wrong", 0),
        ("failover: failed after a retry".into(), "failover.failed", 0),
        ("failover: CDN fetches".into(), "failover.cdn_fetches", 0),
    ];
    let mut out = format!(
        "\ncluster: {REPLICAS} replicas on one Garage bucket, blob {} MiB\n\n| measurement | pullgate ×{REPLICAS} ([cluster]) | distribution ×{REPLICAS} (shared bucket) | pullgate/distribution |\n|---|---|---|---|\n",
        size / MIB
    );
    let mut table = Vec::new();
    for (what, path, decimals) in &rows {
        let (mut pg, mut dist) = (get(PULLGATE, path), get(DISTRIBUTION, path));
        if path.ends_with("rss_kib") {
            (pg, dist) = (pg.map(|k| k / 1024.0), dist.map(|k| k / 1024.0));
        }
        let r = push_row(&mut out, what, (pg, dist), *decimals);
        table.push(json!({"measurement": what, "pullgate_cluster": pg, "distribution_shared": dist, "pullgate_over_distribution": r}));
    }
    let pg = |p: &str| get(PULLGATE, p);
    let dist = |p: &str| get(DISTRIBUTION, p);
    let speedup = ratio(pg("cold.gbps"), dist("cold.gbps")).unwrap_or(f64::NAN);
    let targets = [
        (
            format!(
                "cluster: {clients} cold clients over {REPLICAS} replicas → exactly 1 upstream fetch (distribution ≥ {REPLICAS})"
            ),
            format!(
                "{} CDN fetches (distribution {})",
                fmt(pg("cold.cdn_fetches"), 0),
                fmt(dist("cold.cdn_fetches"), 0)
            ),
            pg("cold.cdn_fetches") == Some(1.0),
        ),
        (
            "cluster: aggregate cold throughput ≥ 2× distribution's".to_string(),
            format!("{speedup:.2}×"),
            speedup >= 2.0,
        ),
        (
            "cluster: a replica killed mid-run → every client correct after at most one retry".to_string(),
            format!(
                "{} of {clients} correct, {} retries, {} wrong",
                fmt(pg("failover.correct"), 0),
                fmt(pg("failover.retries"), 0),
                fmt(pg("failover.wrong"), 0)
            ),
            pg("failover.correct") == Some(clients as f64) && pg("failover.wrong") == Some(0.0),
        ),
    ];
    (Value::Array(table), print_targets(out, "pullgate", &targets))
}
